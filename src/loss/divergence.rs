//! Divergences between distributions: [`kl_div`] (`F.kl_div`) and the knowledge-distillation
//! loss [`distillation`] (Hinton et al. 2015).
//!
//! # Shapes
//! - [`kl_div`]: input (log-probabilities) and target (probabilities, or log-probabilities with
//!   `log_target`) of one shape; `BatchMean` divides by the first dimension.
//! - [`distillation`]: student and teacher logits `(N, C)`, labels `(N)` (class indices).
//!
//! # Tip
//! The distillation loss is
//! $\alpha \thinspace \mathrm{CE}(s, y) + (1-\alpha) T^2 \thinspace
//! \mathrm{KL}(\mathrm{softmax}(t/T) \Vert \mathrm{softmax}(s/T))$ for student logits $s$,
//! teacher logits $t$ and labels $y$. The temperature $T > 1$ flattens the teacher's
//! distribution so the student also learns the ranking of the wrong classes ("dark
//! knowledge": a 3 resembles an 8 more than a 1); the gradient of the soft term scales as
//! $1/T^2$, which the factor $T^2$ undoes, so $\alpha$ keeps its meaning across temperatures.
//! $T$ between 2 and 5 and $\alpha$ between 0.1 and 0.5 are the usual ranges. `F.kl_div`'s
//! `Mean` divides by every element (batch times classes) and is not the KL divergence per
//! sample; use `BatchMean`, as [`distillation`] does. Here the soft term runs as the fused
//! soft-target cross-entropy minus the teacher's (constant) entropy,
//! $\mathrm{KL}(p \Vert q) = H(p, q) - H(p)$.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::loss::{distillation, kl_div, DistillationConfig, Reduction};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let s = Tensor::randn(0f32, 1., (4, 10), &dev)?;
//! let y = Tensor::new(&[1u32, 0, 3, 9], &dev)?;
//! // A student that equals its teacher pays only the hard-label term.
//! let cfg = DistillationConfig::default().with_temperature(4.0).with_alpha(0.5);
//! let same = distillation(&s, &s, &y, &cfg)?.to_scalar::<f32>()?;
//! let ce = candle_tricks::loss::cross_entropy(&s, &y, &Default::default())?.to_scalar::<f32>()?;
//! assert!((same - 0.5 * ce).abs() < 1e-5);
//! // KL of a distribution with itself is 0.
//! let logp = candle_nn::ops::log_softmax(&s, 1)?;
//! let kl = kl_div(&logp, &logp.exp()?, Reduction::BatchMean, false)?.to_scalar::<f32>()?;
//! assert!(kl.abs() < 1e-6);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Hinton, Vinyals, Dean, *Distilling the Knowledge in a Neural Network*, 2015,
//!   <https://arxiv.org/abs/1503.02531>

use candle_core::{DType, Tensor, D};

use crate::loss::{cross_entropy, CrossEntropyConfig, Reduction};
use crate::{Error, Result};

const KL: &str = "kl_div";
const DISTILL: &str = "distillation";

/// `F.kl_div(input, target, reduction, log_target)`: per element
/// $t (\log t - x)$ (0 where $t = 0$), or $e^{t} (t - x)$ with `log_target`; `input` $x$ holds
/// log-probabilities. Differentiable wrt both.
///
/// Errors (naming `kl_div`) on shapes, dtypes or devices that differ, and a non-float input.
pub fn kl_div(
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    log_target: bool,
) -> Result<Tensor> {
    if !input.dtype().is_float() {
        return Err(Error::unsupported_dtype(
            KL,
            "input",
            "a float dtype",
            input.dtype(),
        ));
    }
    if target.shape() != input.shape() {
        return Err(Error::shape(
            KL,
            "target",
            format!("{:?} (the input's shape)", input.dims()),
            target.shape().clone(),
        ));
    }
    crate::check::same_dtype_device(KL, "target", input, target)?;
    let l = if log_target {
        (target.exp()? * (target - input)?)?
    } else {
        (target * (xlog(target)? - input)?)?
    };
    reduction.apply_mean_all(&l)
}

/// $\log t$ where $t > 0$ and 0 elsewhere (so $t \log t = 0$ at $t = 0$), with finite gradients.
fn xlog(t: &Tensor) -> Result<Tensor> {
    let positive = t.gt(0.0)?;
    Ok(positive.where_cond(t, &t.ones_like()?)?.log()?)
}

/// The options of [`distillation`].
#[derive(Debug, Clone, Copy)]
pub struct DistillationConfig {
    /// The softmax temperature $T > 0$ of both models (default 4).
    pub temperature: f64,
    /// The weight $\alpha \in [0, 1]$ of the hard-label cross-entropy (default 0.5).
    pub alpha: f64,
}

impl Default for DistillationConfig {
    fn default() -> Self {
        Self {
            temperature: 4.0,
            alpha: 0.5,
        }
    }
}

impl DistillationConfig {
    /// Sets the temperature.
    pub fn with_temperature(mut self, temperature: f64) -> Self {
        self.temperature = temperature;
        self
    }
    /// Sets alpha.
    pub fn with_alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }
}

/// Hinton's distillation loss
/// $\alpha \thinspace \mathrm{CE}(s, y) + (1-\alpha) T^2 \thinspace \mathrm{KL}$ (batch mean)
/// (see the module docs); the teacher is a constant (detached). Differentiable wrt the student.
///
/// Errors (naming `distillation`) on $T \le 0$ (or not finite), $\alpha \notin [0, 1]$, and
/// teacher logits of another shape than the student's; (naming `cross_entropy`) on bad labels.
pub fn distillation(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    cfg: &DistillationConfig,
) -> Result<Tensor> {
    let t = cfg.temperature;
    if !(t.is_finite() && t > 0.0) {
        return Err(Error::config(
            DISTILL,
            format!("temperature must be finite and > 0, got {t}"),
        ));
    }
    crate::check::unit_interval(DISTILL, "alpha", cfg.alpha)?;
    if teacher.shape() != student.shape() || student.rank() != 2 {
        return Err(Error::shape(
            DISTILL,
            "teacher",
            format!("{:?} (the student's (N, C))", student.dims()),
            teacher.shape().clone(),
        ));
    }
    let hard = cross_entropy(student, labels, &CrossEntropyConfig::default())?;
    let p = candle_nn::ops::softmax(&(teacher.detach() / t)?, D::Minus1)?;
    let n = student.dims()[0] as f64;
    // Entropy of the teacher, in f32 at least (a constant).
    let pf = p.to_dtype(DType::F32)?;
    let entropy = ((&pf * xlog(&pf)?)?.sum_all()? / -n)?;
    let cross = cross_entropy(&(student / t)?, &p, &CrossEntropyConfig::default())?;
    let kl = cross.to_dtype(DType::F32)?.sub(&entropy)?;
    let soft = (kl * ((1.0 - cfg.alpha) * t * t))?;
    Ok(((hard.to_dtype(DType::F32)? * cfg.alpha)? + soft)?.to_dtype(student.dtype())?)
}
