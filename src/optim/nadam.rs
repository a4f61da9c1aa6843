//! NAdam (PyTorch's `torch.optim.NAdam`): Adam with Nesterov momentum, the step taken from
//! where the momentum is about to carry the weights, with Dozat's warming momentum schedule
//! and optionally decoupled weight decay; one fused in-place pass per parameter.
//!
//! # Update
//! With gradient $g_t$ (negated when `maximize`), step $t$ counted per parameter, learning rate
//! $\gamma$, weight decay $\lambda$, momentum decay $\psi$:
//!
//! $$\text{L2: } g_t \leftarrow g_t + \lambda \theta_{t-1} \qquad
//!   \text{decoupled: } \theta_{t-1} \leftarrow (1 - \gamma \lambda)\thinspace \theta_{t-1}$$
//! $$\mu_t = \beta_1 \left(1 - \tfrac{1}{2}\thinspace 0.96^{t \psi}\right), \qquad
//!   \Pi_t = \prod_{i=1}^{t} \mu_i$$
//! $$m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2,
//!   \qquad d_t = \sqrt{v_t / (1 - \beta_2^t)} + \epsilon$$
//! $$\theta_t = \theta_{t-1} - \frac{\gamma (1 - \mu_t)}{1 - \Pi_t} \frac{g_t}{d_t} -
//!   \frac{\gamma \mu_{t+1}}{1 - \Pi_{t+1}} \frac{m_t}{d_t}$$
//!
//! State per parameter: `exp_avg` ($m$) and `exp_avg_sq` ($v$), f32. PyTorch also stores the
//! running product $\Pi_t$ (`mu_product`, an f32 scalar); here it is recomputed from the step
//! count with the same f32 rounding (a short loop: once the product is below $10^{-20}$ it no
//! longer changes the update), so the state dict and a resume need nothing more.
//! For the same reason `beta1` is not exposed to momentum schedules ([`Momentum`] is not
//! implemented): changing it would rewrite the past factors of $\Pi_t$.
//!
//! [`Momentum`]: super::Momentum
//!
//! # References
//! - Dozat, *Incorporating Nesterov Momentum into Adam*, ICLR 2016 workshop,
//!   <https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ>
//! - Kingma, Ba, *Adam: A Method for Stochastic Optimization*, 2014,
//!   <https://arxiv.org/abs/1412.6980>
//! - Loshchilov, Hutter, *Decoupled Weight Decay Regularization*, ICLR 2019,
//!   <https://arxiv.org/abs/1711.05101>

use candle_core::Tensor;

use super::adam::weight_decay_terms;
use super::checkpoint::{check_beta, check_lr, check_nonneg, grad_sign};
use super::fused::Kernel;
use super::optimizer::internal::{AlgorithmImpl, Hyper};
use super::optimizer::{Algorithm, Optim};
use super::slots::Slot;
use super::tensor_ops::{add, diff_mul, div, mul};
use super::NonFinite;
use crate::Result;

const NAME: &str = "NAdam";

/// Below this (and above 0) the running product no longer changes the update: $1 - x$ is 1 in
/// f64 for $x < 2^{-54}$. With the default betas it is reached within about 60 steps, so the
/// product costs a short loop per parameter and step.
const NEGLIGIBLE: f32 = 1e-20;

/// Configuration of [`NAdam`]; `Default` is PyTorch's (lr 2e-3, betas (0.9, 0.999), eps 1e-8,
/// momentum decay 4e-3, weight decay 0, L2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NAdamConfig {
    /// Learning rate (default 2e-3).
    pub lr: f64,
    /// Decay of the first-moment average, the top of the momentum schedule (default 0.9).
    pub beta1: f64,
    /// Decay of the second-moment average (default 0.999).
    pub beta2: f64,
    /// Added to the denominator for stability (default 1e-8).
    pub eps: f64,
    /// Weight decay: an L2 penalty added to the gradient, or with `decoupled_weight_decay` a
    /// shrink of the weights by `lr * weight_decay` per step (default 0).
    pub weight_decay: f64,
    /// Momentum decay $\psi$ of the schedule $\mu_t$ (default 4e-3).
    pub momentum_decay: f64,
    /// Decoupled weight decay, as AdamW (PyTorch's `decoupled_weight_decay`, "NAdamW";
    /// default false).
    pub decoupled_weight_decay: bool,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
    /// What a NaN/Inf gradient does (default [`NonFinite::Error`]).
    pub non_finite: NonFinite,
}

impl Default for NAdamConfig {
    fn default() -> Self {
        Self {
            lr: 2e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum_decay: 4e-3,
            decoupled_weight_decay: false,
            maximize: false,
            non_finite: NonFinite::Error,
        }
    }
}

impl NAdamConfig {
    /// Checks the values: lr, weight decay and momentum decay finite and >= 0, betas in
    /// [0, 1), eps finite and > 0.
    pub fn validate(&self) -> Result<()> {
        check_lr(NAME, self.lr)?;
        check_beta(NAME, "beta1", self.beta1)?;
        check_beta(NAME, "beta2", self.beta2)?;
        crate::check::eps(NAME, "eps", self.eps)?;
        check_nonneg(NAME, "weight_decay", self.weight_decay)?;
        check_nonneg(NAME, "momentum_decay", self.momentum_decay)
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

    /// Sets the momentum decay $\psi$.
    pub fn with_momentum_decay(mut self, momentum_decay: f64) -> Self {
        self.momentum_decay = momentum_decay;
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

    /// $\mu_t$ of the momentum schedule, in f64 as PyTorch computes it.
    fn mu(&self, t: u64) -> f64 {
        self.beta1 * (1.0 - 0.5 * 0.96f64.powf(t as f64 * self.momentum_decay))
    }

    /// $\Pi_t$ as PyTorch accumulates it: an f32 scalar multiplied by each $\mu_i$ in turn,
    /// stopped once below `NEGLIGIBLE` (then $1 - \Pi$ and $1 - \Pi \mu$ round to 1 in f64,
    /// as they do for the product of all the factors: the update is the same to the bit).
    fn mu_product(&self, t: u64) -> f32 {
        let mut prod = 1.0f32;
        for i in 1..=t {
            prod *= self.mu(i) as f32;
            if prod < NEGLIGIBLE {
                break;
            }
        }
        prod
    }
}

/// NAdam; see the [module docs](self) for the update. The methods are [`Optim`]'s.
pub type NAdam = Optim<NAdamConfig>;

/// The fused NAdam update. `l2`: the L2 coefficient (0 when decoupled), `decay`: the decoupled
/// factor `1 - lr wd` (1 for L2); `cg`, `cm`: the (negative) coefficients of `g / d` and `m / d`.
struct NAdamKernel {
    gs: f32,
    l2: f32,
    decay: f32,
    w1: f32,
    b2: f32,
    w2: f32,
    bc2: f32,
    eps: f32,
    cg: f32,
    cm: f32,
}

impl Kernel for NAdamKernel {
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize) {
        let n = p.len();
        let (gs, l2, decay, w1, b2, w2) = (self.gs, self.l2, self.decay, self.w1, self.b2, self.w2);
        let (bc2, eps, cg, cm) = (self.bc2, self.eps, self.cg, self.cm);
        if let [m, v, ..] = s {
            let (m, v) = (&mut m[off..off + n], &mut v[off..off + n]);
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                let th = *p;
                let g = gs * g + l2 * th;
                let nm = *m + w1 * (g - *m);
                let nv = b2 * *v + w2 * (g * g);
                *m = nm;
                *v = nv;
                let d = (nv / bc2).sqrt() + eps;
                // Two separate additions, as PyTorch's two `addcdiv_`.
                let th = th * decay + cg * (g / d);
                *p = th + cm * (nm / d);
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
                "NAdam: state buffers missing".into(),
            ));
        };
        let g = (mul(g, self.gs)? + mul(p, self.l2)?)?;
        let nm = (&*m + diff_mul(&g, m, self.w1)?)?;
        let nv = (mul(v, self.b2)? + mul(&g.sqr()?, self.w2)?)?;
        let d = add(&div(&nv, self.bc2)?.sqrt()?, self.eps)?;
        let th = (mul(p, self.decay)? + mul(&(&g / &d)?, self.cg)?)?;
        let new = (th + mul(&(&nm / &d)?, self.cm)?)?;
        *m = nm;
        *v = nv;
        Ok(new)
    }
}

impl Algorithm for NAdamConfig {
    const NAME: &'static str = NAME;
    const BUFFERS: &'static [&'static str] = &["exp_avg", "exp_avg_sq"];

    fn validate(&self) -> Result<()> {
        NAdamConfig::validate(self)
    }
}

impl AlgorithmImpl for NAdamConfig {
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
                ("momentum_decay", &mut self.momentum_decay),
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
        let (mu, mu_next) = (self.mu(t), self.mu(t + 1));
        let prod = f64::from(self.mu_product(t));
        // PyTorch reads the f32 product back as a double before multiplying by mu_next.
        let prod_next = prod * mu_next;
        let (l2, decay) = weight_decay_terms(self.decoupled_weight_decay, lr, wd);
        Ok(Box::new(NAdamKernel {
            gs: grad_sign(self.maximize),
            l2: l2 as f32,
            decay: decay as f32,
            w1: (1.0 - self.beta1) as f32,
            b2: self.beta2 as f32,
            w2: (1.0 - self.beta2) as f32,
            bc2: (1.0 - self.beta2.powf(t as f64)) as f32,
            eps: self.eps as f32,
            cg: (-lr * (1.0 - mu) / (1.0 - prod)) as f32,
            cm: (-lr * mu_next / (1.0 - prod_next)) as f32,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The truncated product gives the same update coefficients as the full one, for the
    /// default betas and for a slow schedule where the product shrinks slowly.
    #[test]
    fn truncated_mu_product_changes_nothing() {
        let slow = NAdamConfig::default()
            .with_betas(0.99, 0.999)
            .with_momentum_decay(0.5);
        for cfg in [NAdamConfig::default(), slow] {
            let mut full = 1.0f32;
            for t in 1..3000u64 {
                full *= cfg.mu(t) as f32;
                let (a, b) = (f64::from(full), f64::from(cfg.mu_product(t)));
                assert_eq!((1.0 - a).to_bits(), (1.0 - b).to_bits(), "step {t}");
                let next = cfg.mu(t + 1);
                assert_eq!((1.0 - a * next).to_bits(), (1.0 - b * next).to_bits());
            }
        }
    }
}
