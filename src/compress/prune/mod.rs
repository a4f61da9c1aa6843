//! Magnitude and structured pruning with masks, as `torch.nn.utils.prune`.
//!
//! - [`l1_unstructured`]: the mask that zeroes the `amount` smallest-magnitude entries of one
//!   tensor.
//! - [`global_unstructured`]: the same ranking over several tensors at once, so layers with
//!   many small weights lose more of them.
//! - [`ln_structured`]: the mask that zeroes whole slices along `dim` (output channels of a
//!   conv or linear weight) with the smallest $L_n$ norm.
//! - [`Pruner`]: masks on named [`candle_core::Var`]s that stay in force through optimizer
//!   steps ([`Pruner::apply`] after each step), [`Pruner::make_permanent`], and a
//!   [`SparsityReport`].
//! - [`GradualPruning`]: the cubic sparsity schedule of Zhu & Gupta (2017).
//!
//! Masks are `u8` tensors of the weight's shape and device: 1 keeps an entry, 0 prunes it.
//!
//! # Shapes
//! Any weight shape and float dtype. [`ln_structured`] ranks the slices along `dim`
//! (`dim = 0`: output channels of a `(C_out, C_in, k_h, k_w)` conv or `(out, in)` linear
//! weight). Attention heads are slices too: view an `(H · d, in)` projection as
//! `(H, d, in)`, prune along dim 0 and reshape the mask back.
//!
//! # Tip
//! **What `amount` means.** A fraction in $[0, 1)$ prunes `round(amount · n)` entries (round
//! half to even, as Python's `round`); an integer count prunes exactly that many. In the
//! [`Pruner`] the amount is the *total* sparsity the tensor should reach, counting what is
//! already pruned (so a schedule's $s_t$ goes in as it is, and a mask never un-prunes),
//! whereas torch's repeated pruning takes a fraction of the entries still alive.
//!
//! **Ties.** Entries of equal magnitude are pruned in index order (lowest flat index first),
//! which matches torch whenever magnitudes are distinct; torch leaves the order of ties to its
//! `topk` kernel.
//!
//! **Why the weights stay zero.** An optimizer step moves pruned weights again: Adam's moments
//! carry old gradients, and any non-zero gradient reaches them. [`Pruner::apply`] after each
//! `opt.step()` zeroes them again, exactly; weight decay alone keeps a zero at zero. Masking
//! the gradients too ([`Pruner::mask_grads`], before the step) keeps the optimizer's moment
//! estimates of pruned weights at zero, which matters if a mask is ever removed.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_tricks::compress::prune::{l1_unstructured, Amount, Pruner};
//! # fn main() -> candle_tricks::Result<()> {
//! let w = Tensor::new(&[[0.5f32, -0.1, 2.0], [-3.0, 0.2, 0.05]], &Device::Cpu)?;
//! // The two smallest magnitudes (0.05 and -0.1) go.
//! let mask = l1_unstructured(&w, Amount::Count(2))?;
//! assert_eq!(mask.to_vec2::<u8>()?, [[1, 0, 1], [1, 1, 0]]);
//!
//! let mut pruner = Pruner::new([("fc.weight", Var::from_tensor(&w)?)])?;
//! pruner.l1_unstructured("fc.weight", 0.5)?; // 3 of 6 entries
//! let report = pruner.sparsity()?;
//! assert_eq!((report.zeros, report.total), (3, 6));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Zhu & Gupta, *To prune, or not to prune: exploring the efficacy of pruning for model
//!   compression*, 2017. <https://arxiv.org/abs/1710.01878>
//! - Han et al., *Learning both Weights and Connections for Efficient Neural Networks*, 2015.
//!   <https://arxiv.org/abs/1506.02626>
//! - Li et al., *Pruning Filters for Efficient ConvNets*, 2017 (channels by $L_1$ norm).
//!   <https://arxiv.org/abs/1608.08710>

mod pruner;
mod schedule;

use candle_core::{DType, Tensor};

use crate::{Error, Result};

pub use pruner::{sparsity_report, LayerSparsity, Pruner, SparsityReport};
pub use schedule::{GradualPruning, GradualPruningConfig};

/// How much to prune: a fraction of the entries (or slices) or an exact count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// A fraction in $[0, 1)$; `round(fraction · n)` entries are pruned.
    Fraction(f64),
    /// Exactly this many entries (at most `n`).
    Count(usize),
}

impl From<f64> for Amount {
    fn from(f: f64) -> Self {
        Amount::Fraction(f)
    }
}

impl From<usize> for Amount {
    fn from(n: usize) -> Self {
        Amount::Count(n)
    }
}

impl Amount {
    /// How many of `n` units to prune; an error naming `block` when the fraction is outside
    /// $[0, 1)$ (NaN included) or the count exceeds `n`.
    pub fn count_of(self, block: &'static str, n: usize) -> Result<usize> {
        match self {
            Amount::Fraction(f) => {
                if !(0.0..1.0).contains(&f) {
                    return Err(Error::config(
                        block,
                        format!("amount (a sparsity) must be in [0, 1), got {f}"),
                    ));
                }
                // f < 1, so the product rounds to at most n.
                Ok(((f * n as f64).round_ties_even() as usize).min(n))
            }
            Amount::Count(k) if k > n => Err(Error::config(
                block,
                format!("amount must be at most the number of units ({n}), got {k}"),
            )),
            Amount::Count(k) => Ok(k),
        }
    }
}

/// The values of `t` as f64 (exact for every float dtype), flattened.
fn values_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

/// A keep (1) / prune (0) vector with the `k` smallest `scores` pruned, ties by index.
fn keep_largest(scores: &[f64], k: usize) -> Vec<u8> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // total_cmp puts NaN last: a NaN score is never preferred for pruning over a number.
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let mut keep = vec![1u8; scores.len()];
    for &i in &order[..k] {
        keep[i] = 0;
    }
    keep
}

/// Checks that a weight is a non-empty float tensor.
fn check_weight(block: &'static str, w: &Tensor) -> Result<()> {
    if !w.dtype().is_float() {
        return Err(Error::unsupported_dtype(
            block,
            "weight",
            "a float dtype",
            w.dtype(),
        ));
    }
    if w.elem_count() == 0 {
        return Err(Error::shape(
            block,
            "weight",
            "at least one element",
            w.shape().clone(),
        ));
    }
    Ok(())
}

/// `u8` keep flags shaped and placed like `like`.
fn mask_like(keep: Vec<u8>, like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::from_vec(keep, like.shape(), like.device())?)
}

/// The mask pruning the `amount` entries of `weight` with the smallest magnitude, as
/// `torch.nn.utils.prune.l1_unstructured`. Errors on a non-float or empty weight and on an
/// amount outside $[0, 1)$ or above the element count.
pub fn l1_unstructured(weight: &Tensor, amount: impl Into<Amount>) -> Result<Tensor> {
    const BLOCK: &str = "l1_unstructured";
    check_weight(BLOCK, weight)?;
    let scores: Vec<f64> = values_f64(weight)?.iter().map(|v| v.abs()).collect();
    let k = amount.into().count_of(BLOCK, scores.len())?;
    mask_like(keep_largest(&scores, k), weight)
}

/// One mask per weight, pruning the `amount` smallest-magnitude entries over all of them
/// together, as `torch.nn.utils.prune.global_unstructured` with `L1Unstructured`. A count or
/// fraction refers to the total number of entries.
pub fn global_unstructured(weights: &[&Tensor], amount: impl Into<Amount>) -> Result<Vec<Tensor>> {
    const BLOCK: &str = "global_unstructured";
    if weights.is_empty() {
        return Err(Error::config(BLOCK, "no weights to prune"));
    }
    let mut scores = Vec::new();
    for w in weights {
        check_weight(BLOCK, w)?;
        scores.extend(values_f64(w)?.iter().map(|v| v.abs()));
    }
    let k = amount.into().count_of(BLOCK, scores.len())?;
    let keep = keep_largest(&scores, k);
    let mut start = 0;
    weights
        .iter()
        .map(|w| {
            let end = start + w.elem_count();
            let m = mask_like(keep[start..end].to_vec(), w);
            start = end;
            m
        })
        .collect()
}

/// The mask pruning the `amount` slices of `weight` along `dim` with the smallest $L_n$ norm
/// (taken over all other dims), as `torch.nn.utils.prune.ln_structured`. `n` is the norm's
/// order: finite and > 0, or `f64::INFINITY` for the max-norm. The amount counts slices.
pub fn ln_structured(
    weight: &Tensor,
    amount: impl Into<Amount>,
    n: f64,
    dim: usize,
) -> Result<Tensor> {
    const BLOCK: &str = "ln_structured";
    check_weight(BLOCK, weight)?;
    let dims = weight.dims();
    if dim >= dims.len() {
        return Err(Error::config(
            BLOCK,
            format!("dim must be < the weight's rank {}, got {dim}", dims.len()),
        ));
    }
    if n.is_nan() || n <= 0.0 {
        return Err(Error::config(
            BLOCK,
            format!("the norm order n must be > 0 (or infinity), got {n}"),
        ));
    }
    let slices = dims[dim];
    let k = amount.into().count_of(BLOCK, slices)?;
    // Move `dim` to the front so each slice is one contiguous row.
    let rows = weight
        .transpose(0, dim)?
        .contiguous()?
        .reshape((slices, ()))?;
    let scores: Vec<f64> = rows
        .to_dtype(DType::F64)?
        .to_vec2::<f64>()?
        .iter()
        .map(|row| lp_norm(row, n))
        .collect();
    let keep = keep_largest(&scores, k);
    let inner = weight.elem_count() / slices;
    let per_row: Vec<u8> = keep
        .iter()
        .flat_map(|&f| std::iter::repeat_n(f, inner))
        .collect();
    // Back to the weight's layout: rows had `dim` first.
    let mut moved = dims.to_vec();
    moved.swap(0, dim);
    let mask = Tensor::from_vec(per_row, moved, weight.device())?.transpose(0, dim)?;
    Ok(mask.contiguous()?)
}

/// $\lVert x \rVert_n$; the max-norm for `n = ∞`.
fn lp_norm(x: &[f64], n: f64) -> f64 {
    if n.is_infinite() {
        x.iter().fold(0.0, |m, v| m.max(v.abs()))
    } else {
        x.iter().map(|v| v.abs().powf(n)).sum::<f64>().powf(1.0 / n)
    }
}
