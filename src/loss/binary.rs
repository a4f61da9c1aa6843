//! Losses of independent binary (multi-label) decisions from logits:
//! [`binary_cross_entropy_with_logits`] (`F.binary_cross_entropy_with_logits`) and
//! [`sigmoid_focal_loss`] (`torchvision.ops.sigmoid_focal_loss`).
//!
//! # Shapes
//! - logits $x$ and targets $t \in [0, 1]$: any shape, the same for both.
//! - `weight`, `pos_weight`: broadcastable to $x$ (PyTorch's rules, aligned on the right: a
//!   `pos_weight` of `(C)` weighs the last dimension, `(C, 1, 1)` the channels of `(N, C, H, W)`).
//!
//! # Tip
//! $-[t \log \sigma(x) + (1-t) \log(1-\sigma(x))]$ computed from $\sigma(x)$ overflows: for
//! $x = -100$, $\sigma(x)$ rounds to 0 and $\log 0 = -\infty$. The stable form used here is
//! $(1-t) x + l \thinspace (\log(1 + e^{-|x|}) + \max(-x, 0))$ with $l = 1 + (p-1) t$ for the
//! `pos_weight` $p$, whose exponent is never positive. A `pos_weight` of
//! $\mathrm{negatives}/\mathrm{positives}$ per class rebalances rare labels (recall up,
//! precision down); the focal loss instead scales each term by $(1-p_t)^\gamma$, so confidently
//! classified examples (the many easy negatives of dense detection) stop dominating the sum.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::loss::{
//!     binary_cross_entropy_with_logits, sigmoid_focal_loss, BceConfig, FocalConfig, Reduction,
//! };
//! # fn main() -> candle_tricks::Result<()> {
//! let x = Tensor::new(&[[-100f32, 3.0], [0.0, 100.0]], &Device::Cpu)?;
//! let t = Tensor::new(&[[1f32, 0.0], [1.0, 1.0]], &Device::Cpu)?;
//! let l = binary_cross_entropy_with_logits(&x, &t, &BceConfig::default())?.to_scalar::<f32>()?;
//! assert!(l.is_finite() && l > 25.0); // -log sigmoid(-100) = 100 for the first entry
//! // gamma = 0 and alpha < 0 make the focal loss plain BCE (torchvision's default reduction
//! // is None; take the mean).
//! let cfg = FocalConfig::default().with_alpha(-1.0).with_gamma(0.0);
//! let focal = sigmoid_focal_loss(&x, &t, &cfg.with_reduction(Reduction::Mean))?;
//! assert!((focal.to_scalar::<f32>()? - l).abs() < 1e-5);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Lin et al., *Focal Loss for Dense Object Detection*, 2017, <https://arxiv.org/abs/1708.02002>

use candle_core::Tensor;

use crate::loss::Reduction;
use crate::{Error, Result};

/// The options of [`binary_cross_entropy_with_logits`] (PyTorch's keyword arguments).
#[derive(Debug, Clone, Default)]
pub struct BceConfig {
    /// A factor per element, broadcast to the logits (default none).
    pub weight: Option<Tensor>,
    /// The weight of the positive term, broadcast to the logits (default none: 1).
    pub pos_weight: Option<Tensor>,
    /// The reduction (default [`Reduction::Mean`]).
    pub reduction: Reduction,
}

impl BceConfig {
    /// Sets `weight`.
    pub fn with_weight(mut self, weight: Tensor) -> Self {
        self.weight = Some(weight);
        self
    }
    /// Sets `pos_weight`.
    pub fn with_pos_weight(mut self, pos_weight: Tensor) -> Self {
        self.pos_weight = Some(pos_weight);
        self
    }
    /// Sets the reduction.
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }
}

/// The options of [`sigmoid_focal_loss`] (torchvision's arguments and defaults).
#[derive(Debug, Clone, Copy)]
pub struct FocalConfig {
    /// The weight of the positives, in `[0, 1]` (negatives get `1 - alpha`); negative: no
    /// weighting (default 0.25).
    pub alpha: f64,
    /// The focusing exponent $\gamma \ge 0$ (default 2; 0 is plain BCE).
    pub gamma: f64,
    /// The reduction (default [`Reduction::None`], torchvision's).
    pub reduction: Reduction,
}

impl Default for FocalConfig {
    fn default() -> Self {
        Self {
            alpha: 0.25,
            gamma: 2.0,
            reduction: Reduction::None,
        }
    }
}

impl FocalConfig {
    /// Sets `alpha`.
    pub fn with_alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }
    /// Sets `gamma`.
    pub fn with_gamma(mut self, gamma: f64) -> Self {
        self.gamma = gamma;
        self
    }
    /// Sets the reduction.
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }
}

const BCE: &str = "binary_cross_entropy_with_logits";
const FOCAL: &str = "sigmoid_focal_loss";

/// `F.binary_cross_entropy_with_logits`: the stable per-element loss, weighted and reduced
/// (`Mean` over every element).
///
/// Errors (naming `binary_cross_entropy_with_logits`) on targets of another shape than the
/// logits, a non-float input, a `weight` / `pos_weight` that does not broadcast to the logits,
/// and [`Reduction::BatchMean`].
pub fn binary_cross_entropy_with_logits(
    x: &Tensor,
    target: &Tensor,
    cfg: &BceConfig,
) -> Result<Tensor> {
    let reduction = cfg.reduction.no_batchmean(BCE)?;
    let l = elementwise(BCE, x, target, cfg.pos_weight.as_ref())?;
    let l = match &cfg.weight {
        Some(w) => (l * broadcast(BCE, "weight", w, x)?)?,
        None => l,
    };
    reduction.apply_mean_all(&l)
}

/// `torchvision.ops.sigmoid_focal_loss`: $\alpha_t (1-p_t)^\gamma \mathrm{BCE}(x, t)$ with
/// $p_t = p t + (1-p)(1-t)$, $p = \sigma(x)$ and $\alpha_t = \alpha t + (1-\alpha)(1-t)$.
///
/// Errors (naming `sigmoid_focal_loss`) as [`binary_cross_entropy_with_logits`], and on
/// `gamma` < 0 (or not finite) and `alpha` > 1.
pub fn sigmoid_focal_loss(x: &Tensor, target: &Tensor, cfg: &FocalConfig) -> Result<Tensor> {
    let reduction = cfg.reduction.no_batchmean(FOCAL)?;
    if !(cfg.gamma.is_finite() && cfg.gamma >= 0.0) {
        return Err(Error::config(
            FOCAL,
            format!("gamma must be finite and >= 0, got {}", cfg.gamma),
        ));
    }
    if cfg.alpha.is_nan() || cfg.alpha > 1.0 {
        return Err(Error::config(
            FOCAL,
            format!("alpha must be <= 1 (negative: off), got {}", cfg.alpha),
        ));
    }
    let mut l = elementwise(FOCAL, x, target, None)?;
    if cfg.gamma != 0.0 {
        let p = candle_nn::ops::sigmoid(x)?;
        // 1 - p_t = p + t - 2 p t
        let one_minus_pt = ((&p + target)? - (p * target)? * 2.0)?;
        l = (l * one_minus_pt.powf(cfg.gamma)?)?;
    }
    if cfg.alpha >= 0.0 {
        let alpha_t = ((target * (2.0 * cfg.alpha - 1.0))? + (1.0 - cfg.alpha))?;
        l = (l * alpha_t)?;
    }
    reduction.apply_mean_all(&l)
}

/// The stable per-element BCE with logits.
fn elementwise(
    block: &'static str,
    x: &Tensor,
    target: &Tensor,
    pos_weight: Option<&Tensor>,
) -> Result<Tensor> {
    if !x.dtype().is_float() {
        return Err(Error::unsupported_dtype(
            block,
            "input",
            "a float dtype",
            x.dtype(),
        ));
    }
    if target.shape() != x.shape() {
        return Err(Error::shape(
            block,
            "target",
            format!("{:?} (the input's shape)", x.dims()),
            target.shape().clone(),
        ));
    }
    crate::check::same_dtype_device(block, "target", x, target)?;
    // log(1 + e^{-|x|}) + max(-x, 0) = -log sigmoid(x)
    let softplus = ((x.abs()?.neg()?.exp()? + 1.0)?.log()? + x.neg()?.relu()?)?;
    let log_weight = match pos_weight {
        Some(pw) => {
            let pw = broadcast(block, "pos_weight", pw, x)?;
            ((target * (pw - 1.0)?)? + 1.0)?
        }
        None => return Ok(((target.affine(-1.0, 1.0)? * x)? + softplus)?),
    };
    Ok(((target.affine(-1.0, 1.0)? * x)? + (log_weight * softplus)?)?)
}

/// `w` broadcast to `x`'s shape and dtype, or an error naming `what`.
fn broadcast(block: &'static str, what: &'static str, w: &Tensor, x: &Tensor) -> Result<Tensor> {
    let fail = || {
        Error::shape(
            block,
            what,
            format!("broadcastable to {:?}", x.dims()),
            w.shape().clone(),
        )
    };
    if w.rank() > x.rank() {
        return Err(fail());
    }
    let w = w.to_dtype(x.dtype())?;
    w.broadcast_as(x.shape()).map_err(|_| fail())
}
