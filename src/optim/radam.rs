//! RAdam (PyTorch's `torch.optim.RAdam`): Adam whose adaptive step is switched on only once
//! the second-moment estimate has enough samples to be trusted, and then scaled by a
//! variance-rectification factor; plain momentum SGD before that. Optionally decoupled weight
//! decay. One fused in-place pass per parameter.
//!
//! # Update
//! With gradient $g_t$ (negated when `maximize`), step $t$ counted per parameter, learning rate
//! $\gamma$, weight decay $\lambda$:
//!
//! $$\text{L2: } g_t \leftarrow g_t + \lambda \theta_{t-1} \qquad
//!   \text{decoupled: } \theta_{t-1} \leftarrow (1 - \gamma \lambda)\thinspace \theta_{t-1}$$
//! $$m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2,
//!   \qquad \hat m_t = m_t / (1 - \beta_1^t)$$
//! $$\rho_\infty = \frac{2}{1 - \beta_2} - 1, \qquad
//!   \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}$$
//! $$\rho_t > 5: \quad r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
//!   {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}}, \quad
//!   \theta_t = \theta_{t-1} - \gamma \hat m_t \frac{\sqrt{1 - \beta_2^t}}{\sqrt{v_t} + \epsilon}
//!   \thinspace r_t$$
//! $$\rho_t \le 5: \quad \theta_t = \theta_{t-1} - \gamma \hat m_t$$
//!
//! $\rho_t$ is the length of the simple moving average the exponential one approximates; with
//! $\beta_2 = 0.999$ it passes 5 at step 6, and $r_t$ climbs from about 0.03 towards 1 over the
//! first thousands of steps: a built-in warmup. State: `exp_avg` ($m$), `exp_avg_sq` ($v$), f32.
//!
//! # References
//! - Liu et al., *On the Variance of the Adaptive Learning Rate and Beyond*, ICLR 2020,
//!   <https://arxiv.org/abs/1908.03265>
//! - Loshchilov, Hutter, *Decoupled Weight Decay Regularization*, ICLR 2019,
//!   <https://arxiv.org/abs/1711.05101>

use candle_core::Tensor;

use super::adam::weight_decay_terms;
use super::checkpoint::{check_beta, check_lr, check_nonneg, grad_sign};
use super::fused::Kernel;
use super::optimizer::internal::{AlgorithmImpl, Hyper, MomentumParam};
use super::optimizer::{Algorithm, Optim};
use super::slots::Slot;
use super::tensor_ops::{add, diff_mul, div, mul};
use super::NonFinite;
use crate::Result;

const NAME: &str = "RAdam";

/// Configuration of [`RAdam`]; `Default` is PyTorch's (lr 1e-3, betas (0.9, 0.999), eps 1e-8,
/// weight decay 0, L2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RAdamConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay of the first-moment average (default 0.9).
    pub beta1: f64,
    /// Decay of the second-moment average; sets $\rho_\infty$ (default 0.999).
    pub beta2: f64,
    /// Added to the denominator for stability (default 1e-8).
    pub eps: f64,
    /// Weight decay: an L2 penalty added to the gradient, or with `decoupled_weight_decay` a
    /// shrink of the weights by `lr * weight_decay` per step (default 0).
    pub weight_decay: f64,
    /// Decoupled weight decay, as AdamW (PyTorch's `decoupled_weight_decay`; default false).
    pub decoupled_weight_decay: bool,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
    /// What a NaN/Inf gradient does (default [`NonFinite::Error`]).
    pub non_finite: NonFinite,
}

impl Default for RAdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
            non_finite: NonFinite::Error,
        }
    }
}

impl RAdamConfig {
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

    /// Makes the weight decay decoupled (true) or L2 (false).
    pub fn with_decoupled_weight_decay(mut self, decoupled: bool) -> Self {
        self.decoupled_weight_decay = decoupled;
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

    /// The rectification factor $r_t$ of step `t`, or `None` while $\rho_t \le 5$ (the
    /// variance of the adaptive step is not yet tractable: plain momentum step).
    pub fn rectification(&self, t: u64) -> Option<f64> {
        let t = t as f64;
        let b2t = self.beta2.powf(t);
        let rho_inf = 2.0 / (1.0 - self.beta2) - 1.0;
        let rho_t = rho_inf - 2.0 * t * b2t / (1.0 - b2t);
        (rho_t > 5.0).then(|| {
            ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                .sqrt()
        })
    }
}

/// RAdam; see the [module docs](self) for the update. The methods are [`Optim`]'s.
pub type RAdam = Optim<RAdamConfig>;

/// The fused RAdam update. `l2`: the L2 coefficient (0 when decoupled), `decay`: the decoupled
/// factor `1 - lr wd` (1 for L2); `rect`: $r_t$ and $\sqrt{1 - \beta_2^t}$ once rectified.
struct RAdamKernel {
    gs: f32,
    l2: f32,
    decay: f32,
    w1: f32,
    b2: f32,
    w2: f32,
    bc1: f32,
    lr: f32,
    eps: f32,
    rect: Option<(f32, f32)>,
}

impl Kernel for RAdamKernel {
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize) {
        let n = p.len();
        let (gs, l2, decay, w1, b2, w2) = (self.gs, self.l2, self.decay, self.w1, self.b2, self.w2);
        let (bc1, lr, eps) = (self.bc1, self.lr, self.eps);
        if let [m, v, ..] = s {
            let (m, v) = (&mut m[off..off + n], &mut v[off..off + n]);
            let it = p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut());
            match self.rect {
                Some((r, bc2_sqrt)) => {
                    for (((p, &g), m), v) in it {
                        let th = *p;
                        let g = gs * g + l2 * th;
                        let nm = *m + w1 * (g - *m);
                        let nv = b2 * *v + w2 * (g * g);
                        *m = nm;
                        *v = nv;
                        let adaptive = bc2_sqrt / (nv.sqrt() + eps);
                        *p = th * decay - (nm / bc1) * lr * adaptive * r;
                    }
                }
                None => {
                    for (((p, &g), m), v) in it {
                        let th = *p;
                        let g = gs * g + l2 * th;
                        let nm = *m + w1 * (g - *m);
                        *v = b2 * *v + w2 * (g * g);
                        *m = nm;
                        *p = th * decay - (nm / bc1) * lr;
                    }
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
        let [Some(m), Some(v), ..] = s else {
            return Err(candle_core::Error::Msg(
                "RAdam: state buffers missing".into(),
            ));
        };
        let g = (mul(g, self.gs)? + mul(p, self.l2)?)?;
        let nm = (&*m + diff_mul(&g, m, self.w1)?)?;
        let nv = (mul(v, self.b2)? + mul(&g.sqr()?, self.w2)?)?;
        let mut step = mul(&div(&nm, self.bc1)?, self.lr)?;
        if let Some((r, bc2_sqrt)) = self.rect {
            let den = add(&nv.sqrt()?, self.eps)?;
            let adaptive = Tensor::full(bc2_sqrt, (), den.device())?.broadcast_div(&den)?;
            step = mul(&(step * adaptive)?, r)?;
        }
        let new = (mul(p, self.decay)? - step)?;
        *m = nm;
        *v = nv;
        Ok(new)
    }
}

impl Algorithm for RAdamConfig {
    const NAME: &'static str = NAME;
    const BUFFERS: &'static [&'static str] = &["exp_avg", "exp_avg_sq"];

    fn validate(&self) -> Result<()> {
        RAdamConfig::validate(self)
    }
}

impl AlgorithmImpl for RAdamConfig {
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
            flags: vec![
                ("decoupled_weight_decay", &mut self.decoupled_weight_decay),
                ("maximize", &mut self.maximize),
            ],
        }
    }

    fn kernel(&self, slot: &mut Slot, lr: f64, wd: f64) -> Result<Box<dyn Kernel>> {
        slot.ensure(0, 0.0)?;
        slot.ensure(1, 0.0)?;
        let t = slot.step;
        let bc2 = 1.0 - self.beta2.powf(t as f64);
        let (l2, decay) = weight_decay_terms(self.decoupled_weight_decay, lr, wd);
        Ok(Box::new(RAdamKernel {
            gs: grad_sign(self.maximize),
            l2: l2 as f32,
            decay: decay as f32,
            w1: (1.0 - self.beta1) as f32,
            b2: self.beta2 as f32,
            w2: (1.0 - self.beta2) as f32,
            bc1: (1.0 - self.beta1.powf(t as f64)) as f32,
            lr: lr as f32,
            eps: self.eps as f32,
            rect: self.rectification(t).map(|r| (r as f32, bc2.sqrt() as f32)),
        }))
    }
}

impl MomentumParam for RAdamConfig {
    fn momentum_mut(&mut self) -> &mut f64 {
        &mut self.beta1
    }
}
