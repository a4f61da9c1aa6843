//! Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay
//! (PyTorch's `torch.optim.SGD`), as one fused in-place pass per parameter.
//!
//! # Update
//! With gradient $g_t$ (negated when `maximize`), momentum $\mu$, dampening $\tau$, weight
//! decay $\lambda$ and learning rate $\gamma$:
//!
//! $$g_t \leftarrow g_t + \lambda \theta_{t-1}$$
//! $$b_t = \mu b_{t-1} + (1 - \tau) g_t \quad (b_1 = g_1)$$
//! $$d_t = g_t + \mu b_t \text{ (Nesterov) or } b_t$$
//! $$\theta_t = \theta_{t-1} - \gamma d_t$$
//!
//! Without momentum ($\mu = 0$) no buffer exists and $d_t = g_t$. The first momentum step
//! copies the gradient into the buffer, as PyTorch does (no dampening on that step).
//!
//! # References
//! - Sutskever, Martens, Dahl, Hinton, *On the importance of initialization and momentum in
//!   deep learning*, ICML 2013 (the Nesterov form used here).

use std::collections::HashMap;

use candle_core::backprop::GradStore;

use super::fused::{check_beta, check_lr, check_nonneg, grad_sign, optimizer_common, Core, Kernel};
use super::{Momentum, NonFinite, ParamGroups};
use crate::{Error, Result};

const NAME: &str = "Sgd";

/// Configuration of [`Sgd`]; `Default` is PyTorch's (`lr` 1e-3, everything else off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Momentum factor $\mu$ (default 0 = plain SGD).
    pub momentum: f64,
    /// Dampening $\tau$ of the gradient added to the momentum buffer (default 0).
    pub dampening: f64,
    /// L2 penalty $\lambda$ added to the gradient (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum (default false; needs momentum > 0 and dampening 0).
    pub nesterov: bool,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
    /// What a NaN/Inf gradient does (default [`NonFinite::Error`]).
    pub non_finite: NonFinite,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
            non_finite: NonFinite::Error,
        }
    }
}

impl SgdConfig {
    /// Checks the values: lr and weight decay finite and >= 0, momentum in [0, 1) (PyTorch
    /// also accepts momentum >= 1, with which the velocity never decays and training
    /// diverges), dampening finite, and Nesterov only with momentum > 0 and dampening 0.
    pub fn validate(&self) -> Result<()> {
        check_lr(NAME, self.lr)?;
        check_beta(NAME, "momentum", self.momentum)?;
        check_nonneg(NAME, "weight_decay", self.weight_decay)?;
        if !self.dampening.is_finite() {
            return Err(Error::config(
                NAME,
                format!("dampening must be finite, got {}", self.dampening),
            ));
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::config(
                NAME,
                format!(
                    "nesterov requires momentum > 0 and dampening = 0, got momentum {} and dampening {}",
                    self.momentum, self.dampening
                ),
            ));
        }
        Ok(())
    }

    /// Sets the learning rate.
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    /// Sets the momentum.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Sets the dampening.
    pub fn with_dampening(mut self, dampening: f64) -> Self {
        self.dampening = dampening;
        self
    }

    /// Sets the weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Turns Nesterov momentum on or off.
    pub fn with_nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
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

/// SGD with momentum (PyTorch semantics); state: one f32 momentum buffer per parameter when
/// momentum > 0. See the [module docs](self) for the update.
#[derive(Debug)]
pub struct Sgd {
    core: Core,
    cfg: SgdConfig,
}

/// The fused SGD update. `bm`, `bg`: the buffer update `b = bm b + bg g` (0, 1 on the first
/// step); `dg`, `db`: the direction `d = dg g + db b` (Nesterov: 1, mu; else 0, 1).
struct SgdKernel {
    lr: f32,
    gs: f32,
    wd: f32,
    momentum: bool,
    bm: f32,
    bg: f32,
    dg: f32,
    db: f32,
}

impl Kernel for SgdKernel {
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize) {
        let n = p.len();
        let (lr, gs, wd) = (self.lr, self.gs, self.wd);
        match (self.momentum, s) {
            (true, [b, ..]) => {
                let b = &mut b[off..off + n];
                let (bm, bg, dg, db) = (self.bm, self.bg, self.dg, self.db);
                for ((p, &g), b) in p.iter_mut().zip(g).zip(b.iter_mut()) {
                    let g = gs * g + wd * *p;
                    let nb = bm * *b + bg * g;
                    *b = nb;
                    *p -= lr * (dg * g + db * nb);
                }
            }
            _ => {
                for (p, &g) in p.iter_mut().zip(g) {
                    let g = gs * g + wd * *p;
                    *p -= lr * g;
                }
            }
        }
    }
}

impl Sgd {
    const HYPER: &'static [&'static str] = &[
        "momentum",
        "dampening",
        "weight_decay",
        "nesterov",
        "maximize",
    ];

    fn build(groups: ParamGroups, cfg: SgdConfig) -> Result<Self> {
        cfg.validate()?;
        let core = Core::new(NAME, &["momentum_buffer"], groups, cfg.lr, cfg.non_finite)?;
        Ok(Self { core, cfg })
    }

    fn hyper(&self) -> Vec<(&'static str, f64)> {
        let c = &self.cfg;
        vec![
            ("momentum", c.momentum),
            ("dampening", c.dampening),
            ("weight_decay", c.weight_decay),
            ("nesterov", c.nesterov as u8 as f64),
            ("maximize", c.maximize as u8 as f64),
        ]
    }

    fn apply_hyper(c: &mut SgdConfig, v: &HashMap<&'static str, f64>) {
        c.momentum = v["momentum"];
        c.dampening = v["dampening"];
        c.weight_decay = v["weight_decay"];
        c.nesterov = v["nesterov"] != 0.0;
        c.maximize = v["maximize"] != 0.0;
    }

    fn step_impl(&mut self, grads: &GradStore) -> Result<()> {
        let Some(list) = self.core.gather(grads)? else {
            return Ok(());
        };
        let c = self.cfg;
        let mu = c.momentum;
        let mut work = Vec::with_capacity(list.len());
        for (i, g) in list {
            let (lr, wd) = self.core.lr_wd(i, c.weight_decay);
            let slot = &mut self.core.slots[i];
            slot.step += 1;
            let momentum = mu != 0.0;
            let first = momentum && slot.bufs[0].is_empty();
            if momentum {
                slot.ensure(0, 0.0);
            }
            let (bm, bg) = if first {
                (0.0, 1.0)
            } else {
                (mu, 1.0 - c.dampening)
            };
            let (dg, db) = if c.nesterov { (1.0, mu) } else { (0.0, 1.0) };
            let k = SgdKernel {
                lr: lr as f32,
                gs: grad_sign(c.maximize),
                wd: wd as f32,
                momentum,
                bm: bm as f32,
                bg: bg as f32,
                dg,
                db: db as f32,
            };
            work.push((i, g, k));
        }
        self.core.apply_all(work)
    }
}

optimizer_common!(Sgd, SgdConfig);

impl Momentum for Sgd {
    fn momentum(&self) -> f64 {
        self.cfg.momentum
    }

    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        let cfg = SgdConfig {
            momentum,
            ..self.cfg
        };
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }
}
