//! RMSProp (PyTorch's `torch.optim.RMSprop`): divide the gradient by a running root mean
//! square, optionally centered and with momentum, as one fused in-place pass per parameter.
//!
//! # Update
//! With gradient $g_t$ (negated when `maximize`), smoothing $\alpha$, weight decay $\lambda$:
//!
//! $$g_t \leftarrow g_t + \lambda \theta_{t-1}, \qquad s_t = \alpha s_{t-1} + (1 - \alpha) g_t^2$$
//! $$\text{centered: } a_t = \alpha a_{t-1} + (1 - \alpha) g_t, \quad
//!   r_t = \sqrt{s_t - a_t^2} + \epsilon \qquad \text{else } r_t = \sqrt{s_t} + \epsilon$$
//! $$\text{momentum } \mu > 0: b_t = \mu b_{t-1} + g_t / r_t, \quad \theta_t = \theta_{t-1} - \gamma b_t
//!   \qquad \text{else } \theta_t = \theta_{t-1} - \gamma g_t / r_t$$
//!
//! State: `square_avg` ($s$), `momentum_buffer` ($b$, with momentum) and `grad_avg` ($a$,
//! centered), f32.
//!
//! # References
//! - Hinton, *Neural Networks for Machine Learning*, lecture 6e (2012), the original RMSProp.
//! - Graves, *Generating Sequences With Recurrent Neural Networks*, 2013 (the centered form),
//!   <https://arxiv.org/abs/1308.0850>

use candle_core::Tensor;

use super::checkpoint::{check_beta, check_lr, check_nonneg, grad_sign};
use super::fused::Kernel;
use super::optimizer::internal::{AlgorithmImpl, Hyper, MomentumParam};
use super::optimizer::{Algorithm, Optim};
use super::slots::Slot;
use super::tensor_ops::{add, diff_mul, mul};
use super::NonFinite;
use crate::Result;

const NAME: &str = "RmsProp";

/// Configuration of [`RmsProp`]; `Default` is PyTorch's (lr 1e-2, alpha 0.99, eps 1e-8).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsPropConfig {
    /// Learning rate (default 1e-2).
    pub lr: f64,
    /// Smoothing constant $\alpha$ of the squared-gradient average (default 0.99).
    pub alpha: f64,
    /// Added to the denominator for stability (default 1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Momentum factor (default 0).
    pub momentum: f64,
    /// Normalize by the estimated variance instead of the raw second moment (default false).
    pub centered: bool,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
    /// What a NaN/Inf gradient does (default [`NonFinite::Error`]).
    pub non_finite: NonFinite,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            maximize: false,
            non_finite: NonFinite::Error,
        }
    }
}

impl RmsPropConfig {
    /// Checks the values: lr and weight decay finite and >= 0, momentum in [0, 1), alpha in
    /// [0, 1], eps > 0.
    pub fn validate(&self) -> Result<()> {
        check_lr(NAME, self.lr)?;
        crate::check::unit_interval(NAME, "alpha", self.alpha)?;
        crate::check::eps(NAME, "eps", self.eps)?;
        check_nonneg(NAME, "weight_decay", self.weight_decay)?;
        check_beta(NAME, "momentum", self.momentum)
    }

    /// Sets the learning rate.
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    /// Sets alpha.
    pub fn with_alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
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

    /// Sets the momentum.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Turns the centered variant on or off.
    pub fn with_centered(mut self, centered: bool) -> Self {
        self.centered = centered;
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

/// RMSProp (PyTorch semantics); see the [module docs](self) for the update. The methods are
/// [`Optim`]'s.
pub type RmsProp = Optim<RmsPropConfig>;

struct RmsKernel {
    lr: f32,
    gs: f32,
    wd: f32,
    alpha: f32,
    w: f32,
    eps: f32,
    mu: f32,
    centered: bool,
    momentum: bool,
}

impl Kernel for RmsKernel {
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize) {
        let n = p.len();
        let (lr, gs, wd, al, w, eps, mu) = (
            self.lr, self.gs, self.wd, self.alpha, self.w, self.eps, self.mu,
        );
        match (self.centered, self.momentum, s) {
            (false, false, [sq, ..]) => {
                let sq = &mut sq[off..off + n];
                for ((p, &g), sq) in p.iter_mut().zip(g).zip(sq.iter_mut()) {
                    let g = gs * g + wd * *p;
                    let s = al * *sq + w * (g * g);
                    *sq = s;
                    *p -= lr * (g / (s.sqrt() + eps));
                }
            }
            (false, true, [sq, b, ..]) => {
                let (sq, b) = (&mut sq[off..off + n], &mut b[off..off + n]);
                for (((p, &g), sq), b) in p.iter_mut().zip(g).zip(sq.iter_mut()).zip(b.iter_mut()) {
                    let g = gs * g + wd * *p;
                    let s = al * *sq + w * (g * g);
                    *sq = s;
                    let nb = mu * *b + g / (s.sqrt() + eps);
                    *b = nb;
                    *p -= lr * nb;
                }
            }
            (true, false, [sq, _, a, ..]) => {
                let (sq, a) = (&mut sq[off..off + n], &mut a[off..off + n]);
                for (((p, &g), sq), a) in p.iter_mut().zip(g).zip(sq.iter_mut()).zip(a.iter_mut()) {
                    let g = gs * g + wd * *p;
                    let s = al * *sq + w * (g * g);
                    let na = *a + w * (g - *a);
                    *sq = s;
                    *a = na;
                    *p -= lr * (g / ((s - na * na).sqrt() + eps));
                }
            }
            (true, true, [sq, b, a, ..]) => {
                let (sq, b, a) = (
                    &mut sq[off..off + n],
                    &mut b[off..off + n],
                    &mut a[off..off + n],
                );
                let it = p.iter_mut().zip(g).zip(sq.iter_mut()).zip(b.iter_mut());
                for ((((p, &g), sq), b), a) in it.zip(a.iter_mut()) {
                    let g = gs * g + wd * *p;
                    let s = al * *sq + w * (g * g);
                    let na = *a + w * (g - *a);
                    *sq = s;
                    *a = na;
                    let nb = mu * *b + g / ((s - na * na).sqrt() + eps);
                    *b = nb;
                    *p -= lr * nb;
                }
            }
            _ => {}
        }
    }

    fn run_tensor(
        &self,
        p: &Tensor,
        g: &Tensor,
        s: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let [Some(sq), b, a, ..] = s else {
            return Err(candle_core::Error::Msg(
                "RmsProp: state buffers missing".into(),
            ));
        };
        let g = (mul(g, self.gs)? + mul(p, self.wd)?)?;
        let ns = (mul(sq, self.alpha)? + mul(&g.sqr()?, self.w)?)?;
        let den = match (self.centered, a) {
            (true, Some(a)) => {
                let na = (&*a + diff_mul(&g, a, self.w)?)?;
                let den = (&ns - na.sqr()?)?.sqrt()?;
                *a = na;
                den
            }
            _ => ns.sqrt()?,
        };
        let step = (&g / add(&den, self.eps)?)?;
        *sq = ns;
        let d = match (self.momentum, b) {
            (true, Some(b)) => {
                let nb = (mul(b, self.mu)? + step)?;
                *b = nb.clone();
                nb
            }
            _ => step,
        };
        p - mul(&d, self.lr)?
    }
}

impl Algorithm for RmsPropConfig {
    const NAME: &'static str = NAME;
    const BUFFERS: &'static [&'static str] = &["square_avg", "momentum_buffer", "grad_avg"];

    fn validate(&self) -> Result<()> {
        RmsPropConfig::validate(self)
    }
}

impl AlgorithmImpl for RmsPropConfig {
    fn hyper(&mut self) -> Hyper<'_> {
        Hyper {
            lr: &mut self.lr,
            weight_decay: &mut self.weight_decay,
            non_finite: &mut self.non_finite,
            options: vec![],
            values: vec![
                ("alpha", &mut self.alpha),
                ("eps", &mut self.eps),
                ("momentum", &mut self.momentum),
            ],
            flags: vec![
                ("centered", &mut self.centered),
                ("maximize", &mut self.maximize),
            ],
        }
    }

    fn kernel(&self, slot: &mut Slot, lr: f64, wd: f64) -> Result<Box<dyn Kernel>> {
        let momentum = self.momentum > 0.0;
        slot.ensure(0, 0.0)?;
        if momentum {
            slot.ensure(1, 0.0)?;
        }
        if self.centered {
            slot.ensure(2, 0.0)?;
        }
        Ok(Box::new(RmsKernel {
            lr: lr as f32,
            gs: grad_sign(self.maximize),
            wd: wd as f32,
            alpha: self.alpha as f32,
            w: (1.0 - self.alpha) as f32,
            eps: self.eps as f32,
            mu: self.momentum as f32,
            centered: self.centered,
            momentum,
        }))
    }
}

impl MomentumParam for RmsPropConfig {
    fn momentum_mut(&mut self) -> &mut f64 {
        &mut self.momentum
    }
}
