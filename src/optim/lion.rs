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

use candle_core::Tensor;

use super::checkpoint::{check_beta, check_lr, check_nonneg, grad_sign};
use super::fused::Kernel;
use super::optimizer::internal::{AlgorithmImpl, Hyper, MomentumParam};
use super::optimizer::{Algorithm, Optim};
use super::slots::Slot;
use super::tensor_ops::mul;
use super::NonFinite;
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

/// Lion; see the [module docs](self) for the update. The methods are [`Optim`]'s.
pub type Lion = Optim<LionConfig>;

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

    fn run_tensor(
        &self,
        p: &Tensor,
        g: &Tensor,
        s: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let [Some(m), ..] = s else {
            return Err(candle_core::Error::Msg("Lion: state buffer missing".into()));
        };
        let g = mul(g, self.gs)?;
        let c = (mul(m, self.b1)? + mul(&g, self.w1)?)?;
        let new = (mul(p, self.decay)? - mul(&c.sign()?, self.lr)?)?;
        *m = (mul(m, self.b2)? + mul(&g, self.w2)?)?;
        Ok(new)
    }
}

impl Algorithm for LionConfig {
    const NAME: &'static str = NAME;
    const BUFFERS: &'static [&'static str] = &["exp_avg"];

    fn validate(&self) -> Result<()> {
        LionConfig::validate(self)
    }
}

impl AlgorithmImpl for LionConfig {
    fn hyper(&mut self) -> Hyper<'_> {
        Hyper {
            lr: &mut self.lr,
            weight_decay: &mut self.weight_decay,
            non_finite: &mut self.non_finite,
            options: vec![],
            values: vec![("beta1", &mut self.beta1), ("beta2", &mut self.beta2)],
            flags: vec![("maximize", &mut self.maximize)],
        }
    }

    fn kernel(&self, slot: &mut Slot, lr: f64, wd: f64) -> Result<Box<dyn Kernel>> {
        slot.ensure(0, 0.0)?;
        Ok(Box::new(LionKernel {
            lr: lr as f32,
            gs: grad_sign(self.maximize),
            decay: (1.0 - lr * wd) as f32,
            b1: self.beta1 as f32,
            w1: (1.0 - self.beta1) as f32,
            b2: self.beta2 as f32,
            w2: (1.0 - self.beta2) as f32,
        }))
    }
}

impl MomentumParam for LionConfig {
    fn momentum_mut(&mut self) -> &mut f64 {
        &mut self.beta1
    }
}
