//! Adagrad (PyTorch's `torch.optim.Adagrad`, dense gradients): per-coordinate step sizes that
//! shrink with the accumulated squared gradient, as one fused in-place pass per parameter.
//!
//! # Update
//! With gradient $g_t$ (negated when `maximize`), step $t$ counted per parameter, learning rate
//! $\gamma$, learning-rate decay $\eta$, weight decay $\lambda$:
//!
//! $$g_t \leftarrow g_t + \lambda \theta_{t-1}, \qquad
//!   \tilde\gamma_t = \frac{\gamma}{1 + (t - 1)\thinspace\eta}$$
//! $$s_t = s_{t-1} + g_t^2 \quad (s_0 = \text{initial accumulator value}), \qquad
//!   \theta_t = \theta_{t-1} - \tilde\gamma_t \frac{g_t}{\sqrt{s_t} + \epsilon}$$
//!
//! State: `sum` ($s$), f32, allocated when the optimizer is built (as PyTorch does).
//!
//! # References
//! - Duchi, Hazan, Singer, *Adaptive Subgradient Methods for Online Learning and Stochastic
//!   Optimization*, JMLR 2011, <https://jmlr.org/papers/v12/duchi11a.html>

use std::collections::HashMap;

use candle_core::backprop::GradStore;

use super::fused::{check_lr, check_nonneg, grad_sign, optimizer_common, Core, Kernel};
use super::{NonFinite, ParamGroups};
use crate::Result;

const NAME: &str = "Adagrad";

/// Configuration of [`Adagrad`]; `Default` is PyTorch's (lr 1e-2, eps 1e-10, the rest 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdagradConfig {
    /// Learning rate (default 1e-2).
    pub lr: f64,
    /// Learning-rate decay $\eta$: step $t$ uses `lr / (1 + (t - 1) lr_decay)` (default 0).
    pub lr_decay: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Starting value of the squared-gradient sum (default 0).
    pub initial_accumulator_value: f64,
    /// Added to the denominator for stability (default 1e-10).
    pub eps: f64,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
    /// What a NaN/Inf gradient does (default [`NonFinite::Error`]).
    pub non_finite: NonFinite,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            maximize: false,
            non_finite: NonFinite::Error,
        }
    }
}

impl AdagradConfig {
    /// Checks the values: lr, lr_decay, weight decay and initial accumulator finite and >= 0,
    /// eps > 0.
    pub fn validate(&self) -> Result<()> {
        check_lr(NAME, self.lr)?;
        check_nonneg(NAME, "lr_decay", self.lr_decay)?;
        check_nonneg(NAME, "weight_decay", self.weight_decay)?;
        check_nonneg(
            NAME,
            "initial_accumulator_value",
            self.initial_accumulator_value,
        )?;
        crate::check::eps(NAME, "eps", self.eps)
    }

    /// Sets the learning rate.
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    /// Sets the learning-rate decay.
    pub fn with_lr_decay(mut self, lr_decay: f64) -> Self {
        self.lr_decay = lr_decay;
        self
    }

    /// Sets the weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Sets the initial accumulator value.
    pub fn with_initial_accumulator_value(mut self, value: f64) -> Self {
        self.initial_accumulator_value = value;
        self
    }

    /// Sets eps.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
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

/// Adagrad (PyTorch semantics, dense); see the [module docs](self) for the update.
#[derive(Debug)]
pub struct Adagrad {
    core: Core,
    cfg: AdagradConfig,
}

struct AdagradKernel {
    clr: f32,
    gs: f32,
    wd: f32,
    eps: f32,
}

impl Kernel for AdagradKernel {
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize) {
        let n = p.len();
        let (clr, gs, wd, eps) = (self.clr, self.gs, self.wd, self.eps);
        if let [sum, ..] = s {
            let sum = &mut sum[off..off + n];
            for ((p, &g), sum) in p.iter_mut().zip(g).zip(sum.iter_mut()) {
                let g = gs * g + wd * *p;
                let ns = *sum + g * g;
                *sum = ns;
                *p -= clr * (g / (ns.sqrt() + eps));
            }
        }
    }
}

impl Adagrad {
    const HYPER: &'static [&'static str] = &[
        "lr_decay",
        "weight_decay",
        "initial_accumulator_value",
        "eps",
        "maximize",
    ];

    fn build(groups: ParamGroups, cfg: AdagradConfig) -> Result<Self> {
        cfg.validate()?;
        let mut core = Core::new(NAME, &["sum"], groups, cfg.lr, cfg.non_finite)?;
        for s in &mut core.slots {
            s.ensure(0, cfg.initial_accumulator_value as f32);
        }
        Ok(Self { core, cfg })
    }

    fn hyper(&self) -> Vec<(&'static str, f64)> {
        let c = &self.cfg;
        vec![
            ("lr_decay", c.lr_decay),
            ("weight_decay", c.weight_decay),
            ("initial_accumulator_value", c.initial_accumulator_value),
            ("eps", c.eps),
            ("maximize", c.maximize as u8 as f64),
        ]
    }

    fn apply_hyper(c: &mut AdagradConfig, v: &HashMap<&'static str, f64>) {
        c.lr_decay = v["lr_decay"];
        c.weight_decay = v["weight_decay"];
        c.initial_accumulator_value = v["initial_accumulator_value"];
        c.eps = v["eps"];
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
            slot.ensure(0, c.initial_accumulator_value as f32);
            let clr = lr / (1.0 + (slot.step - 1) as f64 * c.lr_decay);
            let k = AdagradKernel {
                clr: clr as f32,
                gs: grad_sign(c.maximize),
                wd: wd as f32,
                eps: c.eps as f32,
            };
            work.push((i, g, k));
        }
        self.core.apply_all(work)
    }
}

optimizer_common!(Adagrad, AdagradConfig);
