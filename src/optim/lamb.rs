//! LAMB (Layer-wise Adaptive Moments for Batch training, You et al. 2019): Adam's step plus
//! decoupled weight decay, rescaled per parameter tensor by the trust ratio
//! $\lVert\theta\rVert / \lVert u\rVert$, so every layer moves by the same fraction of its
//! norm. Semantics of `optax.lamb` (the reference of the fixtures), as a two-pass fused kernel:
//! the first pass updates the moments and reduces the two norms, the second applies the step.
//!
//! # Update
//! With gradient $g_t$, step $t$ counted per parameter, learning rate $\gamma$, weight decay
//! $\lambda$:
//!
//! $$m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2$$
//! $$u_t = \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t) + \epsilon_{root}} + \epsilon} +
//!   \lambda\theta_{t-1}$$
//! $$r_t = \frac{\lVert\theta_{t-1}\rVert_2}{\lVert u_t\rVert_2}
//!   \text{ (1 when either norm is 0)}, \qquad \theta_t = \theta_{t-1} - \gamma\thinspace r_t u_t$$
//!
//! The norms are over the whole parameter tensor (the "layer"). The paper scales by
//! $\phi(\lVert\theta\rVert) / \lVert u\rVert$ with $\phi$ a clipping function (e.g.
//! $\min(\max(z, \gamma_l), \gamma_u)$); optax, and this module, take $\phi(z) = z$ and fall
//! back to 1 instead of clipping, which is what BERT-scale recipes use in practice.
//!
//! State per parameter: `exp_avg` ($m$) and `exp_avg_sq` ($v$), f32. On the tensor path each
//! parameter reads its two norms to the host once per step.
//!
//! # Tip
//! **LAMB for very large batches.** Growing the batch lets one raise the learning rate, until
//! some layer's step outgrows its weights and training diverges; warmup only delays that. The
//! trust ratio makes the step of each tensor $\gamma$ times its own norm whatever the gradient
//! scale, so one learning rate suits every layer: You et al. trained BERT with batches of 32K
//! (64K in a second phase) in 76 minutes where AdamW failed beyond 16K. At ordinary batch sizes
//! it brings little over AdamW and costs one extra pass per step; biases and norm weights
//! (small norms) are usually given `weight_decay = 0` and often excluded from the ratio.
//!
//! # Example
//! Every parameter tensor moves by $\gamma\lVert\theta\rVert$ on its first step, however large
//! its gradient:
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_nn::Optimizer;
//! use candle_tricks::optim::{Lamb, LambConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let small = Var::new(&[3.0f32, 4.0], &dev)?; // norm 5
//! let large = Var::new(&[30.0f32, 40.0], &dev)?; // norm 50
//! let mut opt = Lamb::new(vec![small.clone(), large.clone()], LambConfig::default().with_lr(0.01))?;
//! // Gradients of very different scales: 1e-3 and 1e3.
//! let loss = ((small.as_tensor() * 1e-3)?.sum_all()? + (large.as_tensor() * 1e3)?.sum_all()?)?;
//! opt.backward_step(&loss)?;
//! let moved = |v: &Var, init: [f32; 2]| -> candle_core::Result<f32> {
//!     let d = (v.as_tensor() - Tensor::new(&init, &dev)?)?;
//!     d.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()
//! };
//! assert!((moved(&small, [3.0, 4.0])? - 0.05).abs() < 1e-5);
//! assert!((moved(&large, [30.0, 40.0])? - 0.5).abs() < 1e-4);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - You et al., *Large Batch Optimization for Deep Learning: Training BERT in 76 minutes*,
//!   ICLR 2020, <https://arxiv.org/abs/1904.00962>
//! - optax, `optax.lamb` (the reference implementation of the fixtures)

use std::sync::Mutex;

use candle_core::{DType, Tensor};

use super::checkpoint::{check_beta, check_lr, check_nonneg};
use super::fused::Kernel;
use super::optimizer::internal::{AlgorithmImpl, Hyper, MomentumParam};
use super::optimizer::{Algorithm, Optim};
use super::slots::Slot;
use super::tensor_ops::{add, mul, read};
use super::NonFinite;
use crate::Result;

const NAME: &str = "Lamb";

/// LAMB; see the [module docs](self). The methods are [`Optim`]'s.
pub type Lamb = Optim<LambConfig>;

/// Configuration of [`Lamb`]; `Default`: lr 1e-3, betas (0.9, 0.999), eps 1e-6, eps_root 0,
/// weight decay 0 (optax's, which has no default learning rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LambConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay of the first-moment average (default 0.9).
    pub beta1: f64,
    /// Decay of the second-moment average (default 0.999).
    pub beta2: f64,
    /// Added to the denominator, outside the square root (default 1e-6).
    pub eps: f64,
    /// Added inside the square root (default 0).
    pub eps_root: f64,
    /// Decoupled weight decay, added to the update before the trust ratio (default 0).
    pub weight_decay: f64,
    /// What a NaN/Inf gradient does (default [`NonFinite::Error`]).
    pub non_finite: NonFinite,
}

impl Default for LambConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-6,
            eps_root: 0.0,
            weight_decay: 0.0,
            non_finite: NonFinite::Error,
        }
    }
}

impl LambConfig {
    /// Checks the values: lr, eps_root and weight decay finite and >= 0, betas in [0, 1), eps
    /// finite and > 0.
    pub fn validate(&self) -> Result<()> {
        check_lr(NAME, self.lr)?;
        check_beta(NAME, "beta1", self.beta1)?;
        check_beta(NAME, "beta2", self.beta2)?;
        crate::check::eps(NAME, "eps", self.eps)?;
        check_nonneg(NAME, "eps_root", self.eps_root)?;
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

    /// Sets eps (outside the square root).
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Sets eps_root (inside the square root).
    pub fn with_eps_root(mut self, eps_root: f64) -> Self {
        self.eps_root = eps_root;
        self
    }

    /// Sets the weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Sets the non-finite gradient policy.
    pub fn with_non_finite(mut self, non_finite: NonFinite) -> Self {
        self.non_finite = non_finite;
        self
    }
}

/// The per-step constants of both passes.
#[derive(Debug, Clone, Copy)]
struct Terms {
    b1: f32,
    w1: f32,
    b2: f32,
    w2: f32,
    /// $1 / (1 - \beta_1^t)$ and $1 / (1 - \beta_2^t)$: multiplied, so each element costs one
    /// division and one square root, as in Adam.
    inv_bc1: f32,
    inv_bc2: f32,
    eps: f32,
    eps_root: f32,
    wd: f32,
    lr: f32,
}

impl Terms {
    /// The direction $u$ of one element from the updated moments.
    #[inline]
    fn direction(&self, th: f32, m: f32, v: f32) -> f32 {
        (m * self.inv_bc1) / ((v * self.inv_bc2 + self.eps_root).sqrt() + self.eps) + self.wd * th
    }

    /// [`Terms::direction`] as tensor ops.
    fn direction_tensor(&self, p: &Tensor, m: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
        let den = add(
            &add(&mul(v, self.inv_bc2)?, self.eps_root)?.sqrt()?,
            self.eps,
        )?;
        mul(m, self.inv_bc1)? / den + mul(p, self.wd)?
    }
}

/// Pass 1: updates the moments and reduces $\lVert\theta\rVert^2$ and $\lVert u\rVert^2$; the
/// parameter is left unchanged.
struct LambMoments {
    t: Terms,
    /// Partial sums `(|θ|², |u|²)` of the blocks this pass ran over.
    sums: Mutex<Vec<(f64, f64)>>,
}

impl LambMoments {
    fn push(&self, part: (f64, f64)) {
        self.sums
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(part);
    }
}

impl Kernel for LambMoments {
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize) {
        let [m, v, ..] = s else { return };
        let n = p.len();
        let t = &self.t;
        let (m, v) = (&mut m[off..off + n], &mut v[off..off + n]);
        // Runs of SPAN elements summed in f32 over LANES lanes (fixed-size chunks, so the loop
        // vectorises), each run's sums flushed into f64: exact enough, one pass's speed.
        const LANES: usize = 8;
        const SPAN: usize = 1024;
        let (mut pp, mut uu) = (0f64, 0f64);
        let one = |th: f32, g: f32, m: &mut f32, v: &mut f32| -> (f32, f32) {
            *m = t.b1 * *m + t.w1 * g;
            *v = t.b2 * *v + t.w2 * (g * g);
            let u = t.direction(th, *m, *v);
            (th * th, u * u)
        };
        let runs = p.chunks(SPAN).zip(g.chunks(SPAN));
        for ((p, g), (m, v)) in runs.zip(m.chunks_mut(SPAN).zip(v.chunks_mut(SPAN))) {
            let (mut pl, mut ul) = ([0f32; LANES], [0f32; LANES]);
            let (pc, gc) = (p.chunks_exact(LANES), g.chunks_exact(LANES));
            let (p_tail, g_tail) = (pc.remainder(), gc.remainder());
            let (mut mc, mut vc) = (m.chunks_exact_mut(LANES), v.chunks_exact_mut(LANES));
            for (((p, g), m), v) in pc.zip(gc).zip(mc.by_ref()).zip(vc.by_ref()) {
                for k in 0..LANES {
                    let (a, b) = one(p[k], g[k], &mut m[k], &mut v[k]);
                    pl[k] += a;
                    ul[k] += b;
                }
            }
            let tail = p_tail.iter().zip(g_tail);
            for ((&th, &g), (m, v)) in
                tail.zip(mc.into_remainder().iter_mut().zip(vc.into_remainder()))
            {
                let (a, b) = one(th, g, m, v);
                pl[0] += a;
                ul[0] += b;
            }
            pp += pl.iter().map(|&x| f64::from(x)).sum::<f64>();
            uu += ul.iter().map(|&x| f64::from(x)).sum::<f64>();
        }
        self.push((pp, uu));
    }

    fn run_tensor(
        &self,
        p: &Tensor,
        g: &Tensor,
        s: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let [Some(m), Some(v), ..] = s else {
            return Err(candle_core::Error::Msg(
                "Lamb: state buffers missing".into(),
            ));
        };
        *m = (mul(m, self.t.b1)? + mul(g, self.t.w1)?)?;
        *v = (mul(v, self.t.b2)? + mul(&g.sqr()?, self.t.w2)?)?;
        let u = self.t.direction_tensor(p, m, v)?;
        let sq = |x: &Tensor| -> candle_core::Result<f64> {
            read::<f64>(&x.to_dtype(DType::F64)?.sqr()?.sum_all()?)
                .map_err(candle_core::Error::wrap)
        };
        self.push((sq(p)?, sq(&u)?));
        Ok(p.clone())
    }

    fn then(&self) -> Option<Box<dyn Kernel>> {
        let mut parts = std::mem::take(&mut *self.sums.lock().unwrap_or_else(|e| e.into_inner()));
        // Summed in a fixed order whatever order the parallel blocks finished in: a resumed
        // run stays bit-identical.
        parts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let (pp, uu) = parts
            .iter()
            .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
        let (pn, un) = (pp.sqrt(), uu.sqrt());
        let ratio = if pn == 0.0 || un == 0.0 { 1.0 } else { pn / un };
        Some(Box::new(LambApply {
            t: self.t,
            step: (ratio * f64::from(self.t.lr)) as f32,
        }))
    }
}

/// Pass 2: $\theta \leftarrow \theta - \gamma r u$, $u$ recomputed from the updated moments.
struct LambApply {
    t: Terms,
    /// $\gamma r$.
    step: f32,
}

impl Kernel for LambApply {
    fn run(&self, p: &mut [f32], _g: &[f32], s: &mut [&mut [f32]], off: usize) {
        let [m, v, ..] = s else { return };
        let n = p.len();
        let (m, v) = (&m[off..off + n], &v[off..off + n]);
        for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
            *p -= self.step * self.t.direction(*p, m, v);
        }
    }

    fn run_tensor(
        &self,
        p: &Tensor,
        _g: &Tensor,
        s: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let [Some(m), Some(v), ..] = s else {
            return Err(candle_core::Error::Msg(
                "Lamb: state buffers missing".into(),
            ));
        };
        p - mul(&self.t.direction_tensor(p, m, v)?, self.step)?
    }
}

impl Algorithm for LambConfig {
    const NAME: &'static str = NAME;
    const BUFFERS: &'static [&'static str] = &["exp_avg", "exp_avg_sq"];

    fn validate(&self) -> Result<()> {
        LambConfig::validate(self)
    }
}

impl AlgorithmImpl for LambConfig {
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
                ("eps_root", &mut self.eps_root),
            ],
            flags: vec![],
        }
    }

    fn kernel(&self, slot: &mut Slot, lr: f64, wd: f64) -> Result<Box<dyn Kernel>> {
        slot.ensure(0, 0.0)?;
        slot.ensure(1, 0.0)?;
        let t = slot.step as f64;
        Ok(Box::new(LambMoments {
            t: Terms {
                b1: self.beta1 as f32,
                w1: (1.0 - self.beta1) as f32,
                b2: self.beta2 as f32,
                w2: (1.0 - self.beta2) as f32,
                inv_bc1: (1.0 / (1.0 - self.beta1.powf(t))) as f32,
                inv_bc2: (1.0 / (1.0 - self.beta2.powf(t))) as f32,
                eps: self.eps as f32,
                eps_root: self.eps_root as f32,
                wd: wd as f32,
                lr: lr as f32,
            },
            sums: Mutex::new(Vec::new()),
        }))
    }
}

impl MomentumParam for LambConfig {
    fn momentum_mut(&mut self) -> &mut f64 {
        &mut self.beta1
    }
}
