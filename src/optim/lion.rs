//! Lion (EvoLved Sign Momentum, Chen et al. 2023): the update is the *sign* of an
//! interpolation between the momentum and the gradient, so every coordinate moves by exactly
//! the learning rate; one state buffer instead of Adam's two. Semantics of optax's `lion` and
//! lion-pytorch, with decoupled weight decay, as one fused in-place pass per parameter.
//!
//! # Update
//! With gradient $g_t$ (negated when `maximize`), learning rate $\gamma$, weight decay
//! $\lambda$:
//!
//! $$c_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t$$
//! $$\theta_t = (1 - \gamma\lambda)\thinspace\theta_{t-1} - \gamma \operatorname{sign}(c_t)$$
//! $$m_t = \beta_2 m_{t-1} + (1 - \beta_2) g_t$$
//!
//! with $\operatorname{sign}(0) = 0$. Because $|\operatorname{sign}| = 1$ the update is larger
//! than Adam's per coordinate: the paper uses a learning rate 3–10× smaller than AdamW's and a
//! weight decay 3–10× larger (same product $\gamma\lambda$). State: `exp_avg` ($m$), f32.
//!
//! # References
//! - Chen et al., *Symbolic Discovery of Optimization Algorithms*, 2023,
//!   <https://arxiv.org/abs/2302.06675>

use std::collections::HashMap;

use candle_core::backprop::GradStore;

use super::fused::{check_beta, check_lr, check_nonneg, grad_sign, optimizer_common, Core, Kernel};
use super::{Momentum, NonFinite, ParamGroups};
use crate::Result;

const NAME: &str = "Lion";

/// Configuration of [`Lion`]; `Default`: lr 1e-4, betas (0.9, 0.99), weight decay 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LionConfig {
    /// Learning rate (default 1e-4).
    pub lr: f64,
    /// Interpolation used for the update direction (default 0.9).
    pub beta1: f64,
    /// Decay of the momentum average (default 0.99).
    pub beta2: f64,
    /// Decoupled weight decay (default 0).
    pub weight_decay: f64,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
    /// What a NaN/Inf gradient does (default [`NonFinite::Error`]).
    pub non_finite: NonFinite,
}

impl Default for LionConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.99,
            weight_decay: 0.0,
            maximize: false,
            non_finite: NonFinite::Error,
        }
    }
}

impl LionConfig {
    /// Checks the values: lr and weight decay finite and >= 0, betas in [0, 1).
    pub fn validate(&self) -> Result<()> {
        check_lr(NAME, self.lr)?;
        check_beta(NAME, "beta1", self.beta1)?;
        check_beta(NAME, "beta2", self.beta2)?;
        check_nonneg(NAME, "weight_decay", self.weight_decay)
    }

    /// Sets the learning rate.
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    /// Sets both betas.
    pub fn with_betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }

    /// Sets the weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Maximizes instead of minimizing.
    pub fn with_maximize(mut self, maximize: bool) -> Self {
        self.maximize = maximize;
        self
    }

    /// Sets the non-finite gradient policy.
    pub fn with_non_finite(mut self, non_finite: NonFinite) -> Self {
        self.non_finite = non_finite;
        self
    }
}

/// Lion; see the [module docs](self) for the update.
#[derive(Debug)]
pub struct Lion {
    core: Core,
    cfg: LionConfig,
}

struct LionKernel {
    lr: f32,
    gs: f32,
    decay: f32,
    b1: f32,
    w1: f32,
    b2: f32,
    w2: f32,
}

impl Kernel for LionKernel {
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize) {
        let n = p.len();
        let (lr, gs, decay, b1, w1, b2, w2) = (
            self.lr, self.gs, self.decay, self.b1, self.w1, self.b2, self.w2,
        );
        if let [m, ..] = s {
            let m = &mut m[off..off + n];
            for ((p, &g), m) in p.iter_mut().zip(g).zip(m.iter_mut()) {
                let g = gs * g;
                let c = b1 * *m + w1 * g;
                // sign with sign(0) = 0, branch-free.
                let sign = f32::from(u8::from(c > 0.0)) - f32::from(u8::from(c < 0.0));
                *p = *p * decay - lr * sign;
                *m = b2 * *m + w2 * g;
            }
        }
    }
}

impl Lion {
    const HYPER: &'static [&'static str] = &["beta1", "beta2", "weight_decay", "maximize"];

    fn build(groups: ParamGroups, cfg: LionConfig) -> Result<Self> {
        cfg.validate()?;
        let core = Core::new(NAME, &["exp_avg"], groups, cfg.lr, cfg.non_finite)?;
        Ok(Self { core, cfg })
    }

    fn hyper(&self) -> Vec<(&'static str, f64)> {
        let c = &self.cfg;
        vec![
            ("beta1", c.beta1),
            ("beta2", c.beta2),
            ("weight_decay", c.weight_decay),
            ("maximize", c.maximize as u8 as f64),
        ]
    }

    fn apply_hyper(c: &mut LionConfig, v: &HashMap<&'static str, f64>) {
        c.beta1 = v["beta1"];
        c.beta2 = v["beta2"];
        c.weight_decay = v["weight_decay"];
        c.maximize = v["maximize"] != 0.0;
    }

    fn step_impl(&mut self, grads: &GradStore) -> Result<()> {
        let Some(list) = self.core.gather(grads)? else {
            return Ok(());
        };
        let c = self.cfg;
        let mut work = Vec::with_capacity(list.len());
        for (i, g) in list {
            let (lr, wd) = self.core.lr_wd(i, c.weight_decay);
            let slot = &mut self.core.slots[i];
            slot.step += 1;
            slot.ensure(0, 0.0);
            let k = LionKernel {
                lr: lr as f32,
                gs: grad_sign(c.maximize),
                decay: (1.0 - lr * wd) as f32,
                b1: c.beta1 as f32,
                w1: (1.0 - c.beta1) as f32,
                b2: c.beta2 as f32,
                w2: (1.0 - c.beta2) as f32,
            };
            work.push((i, g, k));
        }
        self.core.apply_all(work)
    }
}

optimizer_common!(Lion, LionConfig);

impl Momentum for Lion {
    fn momentum(&self) -> f64 {
        self.cfg.beta1
    }

    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        let cfg = LionConfig {
            beta1: momentum,
            ..self.cfg
        };
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }
}
