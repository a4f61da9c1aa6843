//! Adamax (PyTorch's `torch.optim.Adamax`): Adam with the second moment replaced by an
//! exponentially weighted infinity norm, $u_t = \max(\beta_2 u_{t-1}, |g_t|)$, which needs no
//! bias correction and cannot be inflated by a single huge gradient beyond that gradient's own
//! size. One fused in-place pass per parameter.
//!
//! # Update
//! With gradient $g_t$ (negated when `maximize`), step $t$ counted per parameter, learning rate
//! $\gamma$, weight decay $\lambda$:
//!
//! $$g_t \leftarrow g_t + \lambda \theta_{t-1}, \qquad m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t$$
//! $$u_t = \max(\beta_2 u_{t-1},\thinspace |g_t| + \epsilon), \qquad
//!   \theta_t = \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} \frac{m_t}{u_t}$$
//!
//! Note where $\epsilon$ goes (PyTorch's placement): inside the maximum, added to $|g_t|$, not
//! to the denominator as in Adam; $u_t \ge \epsilon$ after the first step, so the division is
//! always safe. State: `exp_avg` ($m$), `exp_inf` ($u$), f32.
//!
//! # References
//! - Kingma, Ba, *Adam: A Method for Stochastic Optimization*, 2014, section 7.1,
//!   <https://arxiv.org/abs/1412.6980>

use candle_core::Tensor;

use super::checkpoint::{check_beta, check_lr, check_nonneg, grad_sign};
use super::fused::Kernel;
use super::optimizer::internal::{AlgorithmImpl, Hyper, MomentumParam};
use super::optimizer::{Algorithm, Optim};
use super::slots::Slot;
use super::tensor_ops::{add, diff_mul, mul};
use super::NonFinite;
use crate::Result;

const NAME: &str = "Adamax";

/// Configuration of [`Adamax`]; `Default` is PyTorch's (lr 2e-3, betas (0.9, 0.999), eps 1e-8,
/// weight decay 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamaxConfig {
    /// Learning rate (default 2e-3).
    pub lr: f64,
    /// Decay of the first-moment average (default 0.9).
    pub beta1: f64,
    /// Decay of the infinity norm (default 0.999).
    pub beta2: f64,
    /// Added to $|g_t|$ inside the maximum (default 1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
    /// What a NaN/Inf gradient does (default [`NonFinite::Error`]).
    pub non_finite: NonFinite,
}

impl Default for AdamaxConfig {
    fn default() -> Self {
        Self {
            lr: 2e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            maximize: false,
            non_finite: NonFinite::Error,
        }
    }
}

impl AdamaxConfig {
    /// Checks the values: lr and weight decay finite and >= 0, betas in [0, 1), eps finite
    /// and > 0.
    pub fn validate(&self) -> Result<()> {
        check_lr(NAME, self.lr)?;
        check_beta(NAME, "beta1", self.beta1)?;
        check_beta(NAME, "beta2", self.beta2)?;
        crate::check::eps(NAME, "eps", self.eps)?;
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

/// Adamax; see the [module docs](self) for the update. The methods are [`Optim`]'s.
pub type Adamax = Optim<AdamaxConfig>;

struct AdamaxKernel {
    gs: f32,
    wd: f32,
    w1: f32,
    b2: f32,
    eps: f32,
    clr: f32,
}

impl Kernel for AdamaxKernel {
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize) {
        let n = p.len();
        let (gs, wd, w1, b2, eps, clr) = (self.gs, self.wd, self.w1, self.b2, self.eps, self.clr);
        if let [m, u, ..] = s {
            let (m, u) = (&mut m[off..off + n], &mut u[off..off + n]);
            for (((p, &g), m), u) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(u.iter_mut()) {
                let g = gs * g + wd * *p;
                let nm = *m + w1 * (g - *m);
                let nu = (*u * b2).max(g.abs() + eps);
                *m = nm;
                *u = nu;
                *p -= clr * (nm / nu);
            }
        }
    }

    fn run_tensor(
        &self,
        p: &Tensor,
        g: &Tensor,
        s: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let [Some(m), Some(u), ..] = s else {
            return Err(candle_core::Error::Msg(
                "Adamax: state buffers missing".into(),
            ));
        };
        let g = (mul(g, self.gs)? + mul(p, self.wd)?)?;
        let nm = (&*m + diff_mul(&g, m, self.w1)?)?;
        let nu = mul(u, self.b2)?.maximum(&add(&g.abs()?, self.eps)?)?;
        let new = (p - mul(&(&nm / &nu)?, self.clr)?)?;
        *m = nm;
        *u = nu;
        Ok(new)
    }
}

impl Algorithm for AdamaxConfig {
    const NAME: &'static str = NAME;
    const BUFFERS: &'static [&'static str] = &["exp_avg", "exp_inf"];

    fn validate(&self) -> Result<()> {
        AdamaxConfig::validate(self)
    }
}

impl AlgorithmImpl for AdamaxConfig {
    fn hyper(&mut self) -> Hyper<'_> {
        Hyper {
            lr: &mut self.lr,
            weight_decay: &mut self.weight_decay,
            non_finite: &mut self.non_finite,
            options: vec![],
            values: vec![
                ("beta1", &mut self.beta1),
                ("beta2", &mut self.beta2),
                ("eps", &mut self.eps),
            ],
            flags: vec![("maximize", &mut self.maximize)],
        }
    }

    fn kernel(&self, slot: &mut Slot, lr: f64, wd: f64) -> Result<Box<dyn Kernel>> {
        slot.ensure(0, 0.0)?;
        slot.ensure(1, 0.0)?;
        let bc1 = 1.0 - self.beta1.powf(slot.step as f64);
        Ok(Box::new(AdamaxKernel {
            gs: grad_sign(self.maximize),
            wd: wd as f32,
            w1: (1.0 - self.beta1) as f32,
            b2: self.beta2 as f32,
            eps: self.eps as f32,
            clr: (lr / bc1) as f32,
        }))
    }
}

impl MomentumParam for AdamaxConfig {
    fn momentum_mut(&mut self) -> &mut f64 {
        &mut self.beta1
    }
}
