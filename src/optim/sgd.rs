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

use candle_core::Tensor;

use super::checkpoint::{check_beta, check_lr, check_nonneg, grad_sign};
use super::fused::Kernel;
use super::optimizer::internal::{AlgorithmImpl, Hyper, MomentumParam};
use super::optimizer::{Algorithm, Optim};
use super::slots::Slot;
use super::tensor_ops::mul;
use super::NonFinite;
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
/// momentum > 0. See the [module docs](self) for the update; the methods are [`Optim`]'s.
pub type Sgd = Optim<SgdConfig>;

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

    fn run_tensor(
        &self,
        p: &Tensor,
        g: &Tensor,
        s: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let g = (mul(g, self.gs)? + mul(p, self.wd)?)?;
        let d = match (self.momentum, s) {
            (true, [Some(b), ..]) => {
                let nb = (mul(b, self.bm)? + mul(&g, self.bg)?)?;
                let d = (mul(&g, self.dg)? + mul(&nb, self.db)?)?;
                *b = nb;
                d
            }
            _ => g,
        };
        p - mul(&d, self.lr)?
    }
}

impl Algorithm for SgdConfig {
    const NAME: &'static str = NAME;
    const BUFFERS: &'static [&'static str] = &["momentum_buffer"];

    fn validate(&self) -> Result<()> {
        SgdConfig::validate(self)
    }
}

impl AlgorithmImpl for SgdConfig {
    fn hyper(&mut self) -> Hyper<'_> {
        Hyper {
            lr: &mut self.lr,
            weight_decay: &mut self.weight_decay,
            non_finite: &mut self.non_finite,
            options: vec![],
            values: vec![
                ("momentum", &mut self.momentum),
                ("dampening", &mut self.dampening),
            ],
            flags: vec![
                ("nesterov", &mut self.nesterov),
                ("maximize", &mut self.maximize),
            ],
        }
    }

    fn kernel(&self, slot: &mut Slot, lr: f64, wd: f64) -> Result<Box<dyn Kernel>> {
        let mu = self.momentum;
        let momentum = mu != 0.0;
        let first = momentum && !slot.has(0);
        if momentum {
            slot.ensure(0, 0.0)?;
        }
        let (bm, bg) = if first {
            (0.0, 1.0)
        } else {
            (mu, 1.0 - self.dampening)
        };
        let (dg, db) = if self.nesterov { (1.0, mu) } else { (0.0, 1.0) };
        Ok(Box::new(SgdKernel {
            lr: lr as f32,
            gs: grad_sign(self.maximize),
            wd: wd as f32,
            momentum,
            bm: bm as f32,
            bg: bg as f32,
            dg,
            db: db as f32,
        }))
    }
}

impl MomentumParam for SgdConfig {
    fn momentum_mut(&mut self) -> &mut f64 {
        &mut self.momentum
    }
}
