//! Adadelta (PyTorch's `torch.optim.Adadelta`): the step is the gradient scaled by the ratio
//! of two running RMS values, of past *updates* over past *gradients*, so it carries the units
//! of the parameter and needs no hand-set scale ($\gamma = 1$ by default). One fused in-place
//! pass per parameter.
//!
//! # Update
//! With gradient $g_t$ (negated when `maximize`), decay $\rho$, learning rate $\gamma$, weight
//! decay $\lambda$:
//!
//! $$g_t \leftarrow g_t + \lambda \theta_{t-1}, \qquad s_t = \rho s_{t-1} + (1 - \rho) g_t^2$$
//! $$\Delta_t = \frac{\sqrt{a_{t-1} + \epsilon}}{\sqrt{s_t + \epsilon}}\thinspace g_t, \qquad
//!   a_t = \rho a_{t-1} + (1 - \rho) \Delta_t^2, \qquad \theta_t = \theta_{t-1} - \gamma \Delta_t$$
//!
//! The first steps have size about $\sqrt{\epsilon}$ per coordinate whatever the gradient scale
//! (with the default $\epsilon = 10^{-6}$, about $10^{-3}$): $\epsilon$ is a step-size knob here,
//! not only a guard. State: `square_avg` ($s$), `acc_delta` ($a$), f32.
//!
//! # References
//! - Zeiler, *ADADELTA: An Adaptive Learning Rate Method*, 2012,
//!   <https://arxiv.org/abs/1212.5701>

use candle_core::Tensor;

use super::checkpoint::{check_lr, check_nonneg, grad_sign};
use super::fused::Kernel;
use super::optimizer::internal::{AlgorithmImpl, Hyper};
use super::optimizer::{Algorithm, Optim};
use super::slots::Slot;
use super::tensor_ops::{add, mul};
use super::NonFinite;
use crate::Result;

const NAME: &str = "Adadelta";

/// Configuration of [`Adadelta`]; `Default` is PyTorch's (lr 1.0, rho 0.9, eps 1e-6, weight
/// decay 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdadeltaConfig {
    /// Multiplier of the unit-free step (default 1.0).
    pub lr: f64,
    /// Decay $\rho$ of both running averages, in [0, 1] (default 0.9).
    pub rho: f64,
    /// Added inside both square roots (default 1e-6); sets the size of the first steps.
    pub eps: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
    /// What a NaN/Inf gradient does (default [`NonFinite::Error`]).
    pub non_finite: NonFinite,
}

impl Default for AdadeltaConfig {
    fn default() -> Self {
        Self {
            lr: 1.0,
            rho: 0.9,
            eps: 1e-6,
            weight_decay: 0.0,
            maximize: false,
            non_finite: NonFinite::Error,
        }
    }
}

impl AdadeltaConfig {
    /// Checks the values: lr and weight decay finite and >= 0, rho in [0, 1], eps finite
    /// and > 0.
    pub fn validate(&self) -> Result<()> {
        check_lr(NAME, self.lr)?;
        crate::check::unit_interval(NAME, "rho", self.rho)?;
        crate::check::eps(NAME, "eps", self.eps)?;
        check_nonneg(NAME, "weight_decay", self.weight_decay)
    }

    /// Sets the learning rate.
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    /// Sets rho.
    pub fn with_rho(mut self, rho: f64) -> Self {
        self.rho = rho;
        self
    }

    /// Sets eps.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
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

/// Adadelta; see the [module docs](self) for the update. The methods are [`Optim`]'s.
pub type Adadelta = Optim<AdadeltaConfig>;

struct AdadeltaKernel {
    gs: f32,
    wd: f32,
    rho: f32,
    w: f32,
    eps: f32,
    lr: f32,
}

impl Kernel for AdadeltaKernel {
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize) {
        let n = p.len();
        let (gs, wd, rho, w, eps, lr) = (self.gs, self.wd, self.rho, self.w, self.eps, self.lr);
        if let [sq, acc, ..] = s {
            let (sq, acc) = (&mut sq[off..off + n], &mut acc[off..off + n]);
            for (((p, &g), sq), acc) in p.iter_mut().zip(g).zip(sq.iter_mut()).zip(acc.iter_mut()) {
                let g = gs * g + wd * *p;
                let ns = *sq * rho + w * (g * g);
                let delta = (*acc + eps).sqrt() / (ns + eps).sqrt() * g;
                *sq = ns;
                *acc = *acc * rho + w * (delta * delta);
                *p -= lr * delta;
            }
        }
    }

    fn run_tensor(
        &self,
        p: &Tensor,
        g: &Tensor,
        s: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let [Some(sq), Some(acc), ..] = s else {
            return Err(candle_core::Error::Msg(
                "Adadelta: state buffers missing".into(),
            ));
        };
        let g = (mul(g, self.gs)? + mul(p, self.wd)?)?;
        let ns = (mul(sq, self.rho)? + mul(&g.sqr()?, self.w)?)?;
        let delta = ((add(acc, self.eps)?.sqrt()? / add(&ns, self.eps)?.sqrt()?)? * g)?;
        *acc = (mul(acc, self.rho)? + mul(&delta.sqr()?, self.w)?)?;
        *sq = ns;
        p - mul(&delta, self.lr)?
    }
}

impl Algorithm for AdadeltaConfig {
    const NAME: &'static str = NAME;
    const BUFFERS: &'static [&'static str] = &["square_avg", "acc_delta"];

    fn validate(&self) -> Result<()> {
        AdadeltaConfig::validate(self)
    }
}

impl AlgorithmImpl for AdadeltaConfig {
    fn hyper(&mut self) -> Hyper<'_> {
        Hyper {
            lr: &mut self.lr,
            weight_decay: &mut self.weight_decay,
            non_finite: &mut self.non_finite,
            options: vec![],
            values: vec![("rho", &mut self.rho), ("eps", &mut self.eps)],
            flags: vec![("maximize", &mut self.maximize)],
        }
    }

    fn kernel(&self, slot: &mut Slot, lr: f64, wd: f64) -> Result<Box<dyn Kernel>> {
        slot.ensure(0, 0.0)?;
        slot.ensure(1, 0.0)?;
        Ok(Box::new(AdadeltaKernel {
            gs: grad_sign(self.maximize),
            wd: wd as f32,
            rho: self.rho as f32,
            w: (1.0 - self.rho) as f32,
            eps: self.eps as f32,
            lr: lr as f32,
        }))
    }
}
