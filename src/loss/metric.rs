//! Metric-learning losses on embeddings: [`contrastive`] (Hadsell et al. 2006, pairs),
//! [`triplet_margin`] (`F.triplet_margin_loss`) and [`batch_hard_triplet`] (Hermans et al.
//! 2017, triplets mined inside the batch).
//!
//! # Shapes
//! - embeddings `(N, D)` (pairs, triplets or a labelled batch); `same` `(N)` (1 for a similar
//!   pair, 0 for a dissimilar one); labels `(N)` class indices.
//!
//! # Tip
//! These losses shape a distance instead of fitting classes, so an embedding trained on some
//! identities separates unseen ones (faces, products, re-identification, one-shot learning by
//! nearest neighbour). Random triplets are mostly already satisfied (zero loss, zero gradient);
//! batch-hard mining takes, for every anchor, its farthest positive and nearest negative in the
//! batch, which keeps the gradient informative; batches of $P$ classes times $K$ examples make
//! sure every anchor has positives. The margin sets the scale of the embedding: with
//! L2-normalised embeddings a margin of 0.2 to 0.5 is typical.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::loss::{batch_hard_triplet, triplet_margin, TripletConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let a = Tensor::new(&[[0f32, 0.]], &dev)?;
//! let p = Tensor::new(&[[0.1f32, 0.]], &dev)?;
//! let n = Tensor::new(&[[3f32, 0.]], &dev)?;
//! // The negative is farther than the positive by more than the margin: no loss.
//! assert_eq!(triplet_margin(&a, &p, &n, &TripletConfig::default())?.to_scalar::<f32>()?, 0.0);
//! // Two well separated clusters: batch-hard mining finds nothing to fix either.
//! let emb = Tensor::new(&[[0f32, 0.], [0.1, 0.], [5., 5.], [5., 5.1]], &dev)?;
//! let l = batch_hard_triplet(&emb, &Tensor::new(&[0u32, 0, 1, 1], &dev)?, 1.0)?;
//! assert_eq!(l.to_scalar::<f32>()?, 0.0);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Hadsell, Chopra, LeCun, *Dimensionality Reduction by Learning an Invariant Mapping*, 2006
//! - Schroff, Kalenichenko, Philbin, *FaceNet*, 2015, <https://arxiv.org/abs/1503.03832>
//! - Hermans, Beyer, Leibe, *In Defense of the Triplet Loss for Person Re-Identification*,
//!   2017, <https://arxiv.org/abs/1703.07737>

use candle_core::{DType, Tensor, D};

use crate::loss::Reduction;
use crate::{Error, Result};

/// `F.pairwise_distance`'s default epsilon.
const PAIR_EPS: f64 = 1e-6;

fn margin_ok(block: &'static str, margin: f64) -> Result<()> {
    if !(margin.is_finite() && margin >= 0.0) {
        return Err(Error::config(
            block,
            format!("margin must be finite and >= 0, got {margin}"),
        ));
    }
    Ok(())
}

/// Checks that `others` are `(N, D)` like `first`.
fn embeddings(
    block: &'static str,
    first: &Tensor,
    others: &[(&'static str, &Tensor)],
) -> Result<()> {
    crate::check::rank(block, "embeddings", first, 2, "(N, D)")?;
    crate::check::non_empty(block, "embeddings", first)?;
    if !first.dtype().is_float() {
        return Err(Error::unsupported_dtype(
            block,
            "embeddings",
            "a float dtype",
            first.dtype(),
        ));
    }
    for (what, t) in others {
        if t.shape() != first.shape() {
            return Err(Error::shape(
                block,
                what,
                format!("{:?}", first.dims()),
                t.shape().clone(),
            ));
        }
        crate::check::same_dtype_device(block, what, first, t)?;
    }
    Ok(())
}

/// `F.pairwise_distance(x1, x2, p, eps)`: $\Vert x_1 - x_2 + \epsilon \Vert_p$ per row.
fn pairwise_distance(x1: &Tensor, x2: &Tensor, p: f64, eps: f64) -> Result<Tensor> {
    let d = ((x1 - x2)? + eps)?;
    Ok(if p == 2.0 {
        d.sqr()?.sum(D::Minus1)?.sqrt()?
    } else {
        d.abs()?.powf(p)?.sum(D::Minus1)?.powf(1.0 / p)?
    })
}

/// Hadsell's contrastive loss per pair,
/// $\frac{1}{2} [s \thinspace d^2 + (1-s) \max(0, m - d)^2]$ with the Euclidean distance $d$
/// (`F.pairwise_distance`) and $s = 1$ for similar pairs, reduced.
///
/// Errors (naming `contrastive`) on a negative margin, embeddings that are not both `(N, D)`,
/// `same` not `(N)`, and [`Reduction::BatchMean`].
pub fn contrastive(
    x1: &Tensor,
    x2: &Tensor,
    same: &Tensor,
    margin: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const OP: &str = "contrastive";
    margin_ok(OP, margin)?;
    let reduction = reduction.no_batchmean(OP)?;
    embeddings(OP, x1, &[("x2", x2)])?;
    let n = x1.dims()[0];
    if same.dims() != [n] {
        return Err(Error::shape(
            OP,
            "same",
            format!("({n})"),
            same.shape().clone(),
        ));
    }
    let same = same.to_dtype(x1.dtype())?;
    let d = pairwise_distance(x1, x2, 2.0, PAIR_EPS)?;
    let apart = d.affine(-1.0, margin)?.relu()?.sqr()?;
    let l = (((&same * d.sqr()?)? + (same.affine(-1.0, 1.0)? * apart)?)? * 0.5)?;
    reduction.apply_mean_all(&l)
}

/// The options of [`triplet_margin`] (PyTorch's arguments and defaults).
#[derive(Debug, Clone, Copy)]
pub struct TripletConfig {
    /// The margin $\ge 0$ (default 1).
    pub margin: f64,
    /// The norm degree $p > 0$ (default 2).
    pub p: f64,
    /// Added to the differences before the norm (default 1e-6).
    pub eps: f64,
    /// Use $\min(d(a, n), d(p, n))$ as the negative distance (default false).
    pub swap: bool,
    /// The reduction (default [`Reduction::Mean`]).
    pub reduction: Reduction,
}

impl Default for TripletConfig {
    fn default() -> Self {
        Self {
            margin: 1.0,
            p: 2.0,
            eps: 1e-6,
            swap: false,
            reduction: Reduction::Mean,
        }
    }
}

impl TripletConfig {
    /// Sets the margin.
    pub fn with_margin(mut self, margin: f64) -> Self {
        self.margin = margin;
        self
    }
    /// Sets the norm degree.
    pub fn with_p(mut self, p: f64) -> Self {
        self.p = p;
        self
    }
    /// Sets eps.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// Sets swap.
    pub fn with_swap(mut self, swap: bool) -> Self {
        self.swap = swap;
        self
    }
    /// Sets the reduction.
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }
}

/// `F.triplet_margin_loss`: $\max(0, d(a, p) - d(a, n) + m)$ per triplet, reduced.
///
/// Errors (naming `triplet_margin`) on a negative margin, $p \le 0$, a negative eps, inputs
/// that are not three `(N, D)` tensors of one dtype, and [`Reduction::BatchMean`].
pub fn triplet_margin(
    anchor: &Tensor,
    positive: &Tensor,
    negative: &Tensor,
    cfg: &TripletConfig,
) -> Result<Tensor> {
    const OP: &str = "triplet_margin";
    margin_ok(OP, cfg.margin)?;
    if !(cfg.p.is_finite() && cfg.p > 0.0 && cfg.eps.is_finite() && cfg.eps >= 0.0) {
        return Err(Error::config(
            OP,
            format!(
                "p must be > 0 and eps >= 0, got p {} and eps {}",
                cfg.p, cfg.eps
            ),
        ));
    }
    let reduction = cfg.reduction.no_batchmean(OP)?;
    embeddings(
        OP,
        anchor,
        &[("positive", positive), ("negative", negative)],
    )?;
    let d_ap = pairwise_distance(anchor, positive, cfg.p, cfg.eps)?;
    let mut d_an = pairwise_distance(anchor, negative, cfg.p, cfg.eps)?;
    if cfg.swap {
        d_an = d_an.minimum(&pairwise_distance(positive, negative, cfg.p, cfg.eps)?)?;
    }
    let l = ((d_ap - d_an)? + cfg.margin)?.relu()?;
    reduction.apply_mean_all(&l)
}

/// Batch-hard triplet loss (Hermans et al. 2017): for each anchor of the batch, the farthest
/// embedding of its class and the nearest of another class (Euclidean distances),
/// $\max(0, d_{ap} - d_{an} + m)$, averaged over the anchors. An anchor without a positive or
/// without a negative in the batch contributes 0.
///
/// Errors (naming `batch_hard_triplet`) on a negative margin, embeddings that are not `(N, D)`,
/// and labels that are not `(N)` class indices.
pub fn batch_hard_triplet(embeddings_: &Tensor, labels: &Tensor, margin: f64) -> Result<Tensor> {
    const OP: &str = "batch_hard_triplet";
    margin_ok(OP, margin)?;
    embeddings(OP, embeddings_, &[])?;
    let n = embeddings_.dims()[0];
    if labels.dims() != [n] || !matches!(labels.dtype(), DType::U8 | DType::U32 | DType::I64) {
        return Err(Error::shape(
            OP,
            "labels",
            format!("({n}) class indices"),
            labels.shape().clone(),
        ));
    }
    let dev = embeddings_.device();
    let diff = embeddings_
        .unsqueeze(1)?
        .broadcast_sub(&embeddings_.unsqueeze(0)?)?;
    // sqrt(d^2 + 1e-12): finite gradient on the diagonal (distance 0).
    let d = (diff.sqr()?.sum(D::Minus1)? + 1e-12)?.sqrt()?;
    let l = labels.to_dtype(DType::I64)?;
    let same = l.unsqueeze(1)?.broadcast_eq(&l.unsqueeze(0)?)?;
    let eye = Tensor::eye(n, DType::U8, dev)?;
    let positive = (same.to_dtype(DType::U8)? - &eye)?;
    let full = |v: f32| Tensor::full(v, (n, n), dev)?.to_dtype(d.dtype());
    let hardest_pos = positive
        .where_cond(&d, &full(f32::NEG_INFINITY)?)?
        .max(D::Minus1)?;
    let hardest_neg = same.where_cond(&full(f32::INFINITY)?, &d)?.min(D::Minus1)?;
    let l = ((hardest_pos - hardest_neg)? + margin)?.relu()?;
    Ok(l.mean_all()?)
}
