//! Mixup and CutMix with timm's semantics: one $\lambda \sim \mathrm{Beta}(\alpha, \alpha)$ per
//! batch, each image paired with its mirror in the batch (`x.flip(0)`), soft targets with
//! optional label smoothing, and a per-batch switch between the two.
//!
//! # Tip
//! Mixup trains on convex combinations $\tilde{x} = \lambda x_i + (1 - \lambda) x_j$ with the
//! same mix of the labels; CutMix pastes a box of $x_j$ into $x_i$ and weighs the labels by the
//! pasted area, $\lambda = 1 - \text{box area} / \text{image area}$ (recomputed after the box is
//! clipped to the image). Both are regularisers rather than label-preserving augmentations: the
//! label changes with the input, so train with soft-target cross-entropy. They smooth the
//! decision boundary and improve calibration, at the cost of slower convergence: expect to
//! train longer (timm recipes use them for hundreds of epochs). $\alpha = 0.2$ to 1 for Mixup
//! and 1 for CutMix are the usual values.
//!
//! # Example
//! ```
//! # fn main() -> candle_tricks::Result<()> {
//! use candle_core::{Device, Tensor};
//! use candle_tricks::augment::{Mixup, MixupConfig};
//! let mix = Mixup::new(MixupConfig::new(10).with_cutmix_alpha(1.0))?;
//! let x = Tensor::rand(0f32, 1.0, (4, 3, 8, 8), &Device::Cpu)?;
//! let y = Tensor::new(&[1u32, 2, 3, 4], &Device::Cpu)?;
//! let out = mix.apply(&x, &y, 0)?;
//! // Soft targets: each row sums to 1.
//! for s in out.target.sum(1)?.to_vec1::<f32>()? {
//!     assert!((s - 1.0).abs() < 1e-6);
//! }
//! if let Some([yl, yh, xl, xh]) = out.cutmix_box {
//!     assert_eq!(out.lam, 1.0 - ((yh - yl) * (xh - xl)) as f64 / 64.0);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Zhang et al., *mixup: Beyond Empirical Risk Minimization*, 2017,
//!   <https://arxiv.org/abs/1710.09412>
//! - Yun et al., *CutMix: Regularization Strategy to Train Strong Classifiers with Localizable
//!   Features*, 2019, <https://arxiv.org/abs/1905.04899>

use candle_core::{DType, Tensor};

use super::ImageRng;
use crate::{check, Error, Result};

const OP: &str = "Mixup";

/// Configuration of [`Mixup`], timm's `Mixup` arguments (mode `batch`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixupConfig {
    /// Beta parameter of Mixup's $\lambda$ (0 turns Mixup off; 1.0 by default).
    pub mixup_alpha: f64,
    /// Beta parameter of CutMix's $\lambda$ (0 turns CutMix off, the default).
    pub cutmix_alpha: f64,
    /// Probability of mixing a batch at all (1.0 by default).
    pub prob: f64,
    /// Probability of CutMix rather than Mixup when both are on (0.5 by default).
    pub switch_prob: f64,
    /// Recompute CutMix's $\lambda$ from the clipped box (true by default).
    pub correct_lam: bool,
    /// Label smoothing of the soft targets (0.1 by default, as timm).
    pub label_smoothing: f64,
    /// Number of classes of the targets.
    pub num_classes: usize,
}

impl MixupConfig {
    /// timm's defaults for `num_classes` classes.
    pub fn new(num_classes: usize) -> Self {
        Self {
            mixup_alpha: 1.0,
            cutmix_alpha: 0.0,
            prob: 1.0,
            switch_prob: 0.5,
            correct_lam: true,
            label_smoothing: 0.1,
            num_classes,
        }
    }

    /// Sets Mixup's alpha.
    pub fn with_mixup_alpha(mut self, alpha: f64) -> Self {
        self.mixup_alpha = alpha;
        self
    }

    /// Sets CutMix's alpha.
    pub fn with_cutmix_alpha(mut self, alpha: f64) -> Self {
        self.cutmix_alpha = alpha;
        self
    }

    /// Sets the probability of mixing a batch.
    pub fn with_prob(mut self, prob: f64) -> Self {
        self.prob = prob;
        self
    }

    /// Sets the probability of CutMix when both are on.
    pub fn with_switch_prob(mut self, switch_prob: f64) -> Self {
        self.switch_prob = switch_prob;
        self
    }

    /// Sets the label smoothing.
    pub fn with_label_smoothing(mut self, label_smoothing: f64) -> Self {
        self.label_smoothing = label_smoothing;
        self
    }

    /// Sets whether CutMix's lambda follows the clipped box.
    pub fn with_correct_lam(mut self, correct_lam: bool) -> Self {
        self.correct_lam = correct_lam;
        self
    }

    /// Checks the values (alphas finite, ≥ 0 and not both 0; probabilities in [0, 1];
    /// smoothing in [0, 1); at least one class).
    pub fn validate(&self) -> Result<()> {
        for (name, a) in [
            ("mixup_alpha", self.mixup_alpha),
            ("cutmix_alpha", self.cutmix_alpha),
        ] {
            if !(a >= 0.0 && a.is_finite()) {
                return Err(Error::config(
                    OP,
                    format!("{name} must be finite and >= 0, got {a}"),
                ));
            }
        }
        if self.mixup_alpha == 0.0 && self.cutmix_alpha == 0.0 {
            return Err(Error::config(
                OP,
                "mixup_alpha and cutmix_alpha are both 0: nothing to mix",
            ));
        }
        check::unit_interval(OP, "prob", self.prob)?;
        check::unit_interval(OP, "switch_prob", self.switch_prob)?;
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(Error::config(
                OP,
                format!(
                    "label_smoothing must be in [0, 1), got {}",
                    self.label_smoothing
                ),
            ));
        }
        check::positive(OP, "num_classes", self.num_classes)
    }
}

/// A mixed batch.
#[derive(Debug, Clone)]
pub struct MixOutput {
    /// The mixed images, the input's shape and dtype.
    pub x: Tensor,
    /// Soft targets `(B, num_classes)`, f32, rows summing to 1.
    pub target: Tensor,
    /// The weight of each image's own label (1 when the batch was not mixed).
    pub lam: f64,
    /// CutMix's box `[y_low, y_high, x_low, x_high]` (half-open), `None` for Mixup.
    pub cutmix_box: Option<[usize; 4]>,
}

/// timm's `Mixup` (mode `batch`): see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixup {
    cfg: MixupConfig,
}

impl Mixup {
    /// Validates `cfg`.
    pub fn new(cfg: MixupConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { cfg })
    }

    /// The configuration.
    pub fn config(&self) -> &MixupConfig {
        &self.cfg
    }

    /// Mixes the batch `x` `(B, …)` (CutMix needs `(B, C, H, W)`), B even, with class indices
    /// `target` `(B)`; the batch's draws come from `ImageRng::new(seed, u64::MAX)`.
    pub fn apply(&self, x: &Tensor, target: &Tensor, seed: u64) -> Result<MixOutput> {
        let cfg = &self.cfg;
        let b = validate_batch(x, target)?;
        let mut rng = ImageRng::new(seed, u64::MAX);
        let (mut lam, mut use_cutmix) = (1.0, false);
        if rng.bernoulli(cfg.prob) {
            let alpha = if cfg.mixup_alpha > 0.0 && cfg.cutmix_alpha > 0.0 {
                use_cutmix = rng.bernoulli(cfg.switch_prob);
                if use_cutmix {
                    cfg.cutmix_alpha
                } else {
                    cfg.mixup_alpha
                }
            } else if cfg.mixup_alpha > 0.0 {
                cfg.mixup_alpha
            } else {
                use_cutmix = true;
                cfg.cutmix_alpha
            };
            lam = rng.beta(alpha, alpha);
        }
        if use_cutmix && x.rank() != 4 {
            return Err(Error::shape(
                OP,
                "input",
                "(B, C, H, W) for CutMix",
                x.shape().clone(),
            ));
        }
        let mut out = MixOutput {
            x: x.clone(),
            target: target.clone(),
            lam,
            cutmix_box: None,
        };
        if lam != 1.0 {
            let rev: Vec<u32> = (0..b as u32).rev().collect();
            let rev = Tensor::new(rev.as_slice(), x.device())?;
            let flipped = x.index_select(&rev, 0)?;
            if use_cutmix {
                let (h, w) = (x.dims()[2], x.dims()[3]);
                let (bx, corrected) = cutmix_box(&mut rng, h, w, lam);
                if cfg.correct_lam {
                    out.lam = corrected;
                }
                let [yl, yh, xl, xh] = bx;
                if yh > yl && xh > xl {
                    let c = x.dims()[1];
                    let ranges = [0..b, 0..c, yl..yh, xl..xh];
                    let patch = flipped.narrow(2, yl, yh - yl)?.narrow(3, xl, xh - xl)?;
                    out.x = x.slice_assign(&ranges, &patch)?;
                }
                out.cutmix_box = Some(bx);
            } else {
                out.x = ((x * lam)? + (flipped * (1.0 - lam))?)?;
            }
        }
        out.target = mixup_target(target, cfg.num_classes, out.lam, cfg.label_smoothing)?;
        Ok(out)
    }
}

/// Checks `x` `(B, …)` with B even and `target` `(B)` of integer class indices; returns B.
fn validate_batch(x: &Tensor, target: &Tensor) -> Result<usize> {
    if x.rank() == 0 {
        return Err(Error::shape(OP, "input", "(B, ...)", x.shape().clone()));
    }
    check::non_empty(OP, "input", x)?;
    check::float_dtype(OP, "input", x)?;
    let b = x.dims()[0];
    if !b.is_multiple_of(2) {
        return Err(Error::shape(
            OP,
            "input",
            "(B, ...) with B even (pairs by flipping)",
            x.shape().clone(),
        ));
    }
    if target.dims() != [b] {
        return Err(Error::shape(
            OP,
            "target",
            format!("({b})"),
            target.shape().clone(),
        ));
    }
    Ok(b)
}

/// timm's `rand_bbox` for an `h` by `w` image: a box of side $\sqrt{1 - \lambda}$ of the image
/// centred uniformly, clipped to the image. Returns `[y_low, y_high, x_low, x_high]` and the
/// corrected $\lambda = 1 - \text{area} / (h w)$.
pub fn cutmix_box(rng: &mut ImageRng, h: usize, w: usize, lam: f64) -> ([usize; 4], f64) {
    let ratio = (1.0 - lam).max(0.0).sqrt();
    let (cut_h, cut_w) = ((h as f64 * ratio) as usize, (w as f64 * ratio) as usize);
    let cy = rng.int(0, h);
    let cx = rng.int(0, w);
    let yl = cy.saturating_sub(cut_h / 2);
    let yh = (cy + cut_h / 2).min(h);
    let xl = cx.saturating_sub(cut_w / 2);
    let xh = (cx + cut_w / 2).min(w);
    let area = ((yh - yl) * (xh - xl)) as f64;
    ([yl, yh, xl, xh], 1.0 - area / (h * w) as f64)
}

/// timm's `mixup_target`: one-hot rows of `target` `(B)` with smoothing (off value
/// `smoothing / num_classes`), mixed as `lam * y + (1 - lam) * y.flip(0)`; f32 `(B, num_classes)`.
pub fn mixup_target(
    target: &Tensor,
    num_classes: usize,
    lam: f64,
    smoothing: f64,
) -> Result<Tensor> {
    check::positive(OP, "num_classes", num_classes)?;
    if target.rank() != 1 {
        return Err(Error::shape(OP, "target", "(B)", target.shape().clone()));
    }
    if target.dtype().is_float() {
        return Err(Error::unsupported_dtype(
            OP,
            "target",
            "an integer dtype (class indices)",
            target.dtype(),
        ));
    }
    if !(0.0..1.0).contains(&smoothing) || !(0.0..=1.0).contains(&lam) {
        return Err(Error::config(
            OP,
            format!("need smoothing in [0, 1) and lam in [0, 1], got {smoothing} and {lam}"),
        ));
    }
    let b = target.dims()[0];
    let n = check::numel(OP, "target", &[b, num_classes], DType::F32)?;
    let idx = target.to_dtype(DType::I64)?.to_vec1::<i64>()?;
    if let Some(bad) = idx
        .iter()
        .find(|&&i| i < 0 || i as u64 >= num_classes as u64)
    {
        return Err(Error::config(
            OP,
            format!("class index {bad} out of range for {num_classes} classes"),
        ));
    }
    let off = smoothing / num_classes as f64;
    let on = 1.0 - smoothing + off;
    let mut y = vec![0f32; n];
    for (i, row) in y.chunks_mut(num_classes).enumerate() {
        let (own, other) = (idx[i] as usize, idx[b - 1 - i] as usize);
        for (k, v) in row.iter_mut().enumerate() {
            let y1 = if k == own { on } else { off };
            let y2 = if k == other { on } else { off };
            *v = (y1 * lam + y2 * (1.0 - lam)) as f32;
        }
    }
    Ok(Tensor::from_vec(y, (b, num_classes), target.device())?)
}
