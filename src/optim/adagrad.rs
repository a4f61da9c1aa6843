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

use candle_core::Tensor;

use super::checkpoint::{check_lr, check_nonneg, grad_sign};
use super::fused::Kernel;
use super::optimizer::internal::{AlgorithmImpl, Hyper};
use super::optimizer::{Algorithm, Optim};
use super::slots::Slot;
use super::tensor_ops::{add, mul};
use super::NonFinite;
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

/// Adagrad (PyTorch semantics, dense); see the [module docs](self) for the update. The methods
/// are [`Optim`]'s.
pub type Adagrad = Optim<AdagradConfig>;

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

    fn run_tensor(
        &self,
        p: &Tensor,
        g: &Tensor,
        s: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let [Some(sum), ..] = s else {
            return Err(candle_core::Error::Msg(
                "Adagrad: state buffer missing".into(),
            ));
        };
        let g = (mul(g, self.gs)? + mul(p, self.wd)?)?;
        let ns = (&*sum + g.sqr()?)?;
        let step = (&g / add(&ns.sqrt()?, self.eps)?)?;
        *sum = ns;
        p - mul(&step, self.clr)?
    }
}

impl Algorithm for AdagradConfig {
    const NAME: &'static str = NAME;
    const BUFFERS: &'static [&'static str] = &["sum"];

    fn validate(&self) -> Result<()> {
        AdagradConfig::validate(self)
    }
}

impl AlgorithmImpl for AdagradConfig {
    fn hyper(&mut self) -> Hyper<'_> {
        Hyper {
            lr: &mut self.lr,
            weight_decay: &mut self.weight_decay,
            non_finite: &mut self.non_finite,
            options: vec![],
            values: vec![
                ("lr_decay", &mut self.lr_decay),
                (
                    "initial_accumulator_value",
                    &mut self.initial_accumulator_value,
                ),
                ("eps", &mut self.eps),
            ],
            flags: vec![("maximize", &mut self.maximize)],
        }
    }

    fn kernel(&self, slot: &mut Slot, lr: f64, wd: f64) -> Result<Box<dyn Kernel>> {
        slot.ensure(0, self.initial_accumulator_value as f32)?;
        let clr = lr / (1.0 + (slot.step - 1) as f64 * self.lr_decay);
        Ok(Box::new(AdagradKernel {
            clr: clr as f32,
            gs: grad_sign(self.maximize),
            wd: wd as f32,
            eps: self.eps as f32,
        }))
    }
}
