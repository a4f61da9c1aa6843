//! Fused layer and RMS normalization over the last dimension, and group / instance
//! normalization over channel groups, forward **and** backward, on CPU.
//!
//! # Shapes
//! - input $x$ `(…, D)`: any number of leading dimensions (rank ≥ 1), normalized over the last
//!   one, row by row; the output has the shape of $x$.
//! - `weight` $\gamma$ and `bias` $\beta$ (both optional) are `(D)`, PyTorch's
//!   `normalized_shape = (D,)`.
//! - Layer norm: $y = (x - \mu) / \sqrt{\sigma^2 + \epsilon} \cdot \gamma + \beta$ with the
//!   row's mean $\mu$ and biased variance $\sigma^2$.
//! - RMS norm: $y = x / \sqrt{\overline{x^2} + \epsilon} \cdot \gamma$ with the row's mean
//!   square $\overline{x^2}$.
//! - Group norm ([`group_norm`]): input `(B, C, *)` (rank ≥ 2), `weight` / `bias` `(C)`; the
//!   statistics row is one sample's group of $C/G$ channels times all spatial positions
//!   (contiguous in memory), $\gamma_c$, $\beta_c$ per channel. Instance norm is $G = C$.
//!
//! # Tip
//! candle-nn's fused `layer_norm` / `rms_norm` are forward-only: they are applied without a
//! backward, so training through them silently stops every gradient upstream of the norm
//! (candle issues #2168 and #3569). The differentiable alternative, a composition of
//! mean/sub/sqr/div ops, walks the tensor a dozen times and keeps as many intermediates alive
//! for the backward pass. These ops do both directions in one pass per row: each task owns a
//! block of rows, a row of $D$ values stays in L1 while its statistics (in f32, two passes over
//! the cache-resident row) and its output are computed. The backward recomputes $\mu$ and
//! $1/\sigma$ from $x$ (cheaper than storing them) and gives, with $\hat x = (x-\mu)/\sigma$ and
//! $g = \partial L/\partial y \cdot \gamma$,
//! $\partial L/\partial x = (g - \overline{g} - \hat x\thinspace\overline{g \hat x}) / \sigma$
//! (without the $\overline{g}$ term for RMS norm); $\partial L/\partial \gamma$ and
//! $\partial L/\partial \beta$ are sums over rows, accumulated in per-worker partial sums and
//! reduced once. Group norm runs on the same kernels, one task per block of (sample, group)
//! rows: the row statistics are shared, the affine step and the backward work channel by
//! channel (one scalar $\gamma_c$ per channel, whose per-channel sums $\sum g$, $\sum g x$ also
//! give $\partial L/\partial \gamma_c$ and $\partial L/\partial \beta_c$). candle-nn's
//! `GroupNorm` is a composition of tensor ops, differentiable but several passes over the
//! activation in each direction. The loops are compiled for each SIMD level and the best one
//! the CPU has runs. f16 and bf16 rows are widened to f32 scratch and rounded once on store.
//! There are no second derivatives.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor, Var, D};
//! use candle_tricks::ops::{layer_norm, layer_norm_reference};
//! # fn main() -> candle_tricks::Result<()> {
//! let x = Var::from_tensor(&Tensor::randn(3f32, 2., (4, 5, 33), &Device::Cpu)?)?;
//! let w = Var::from_tensor(&Tensor::randn(1f32, 0.1, 33, &Device::Cpu)?)?;
//! let y = layer_norm(&x, Some(&w), None, 1e-5)?;
//! // Same values as the plain-tensor composition.
//! let r = layer_norm_reference(&x, Some(&w), None, 1e-5)?;
//! assert!((&y - &r)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
//! // Unlike candle_nn::ops::layer_norm, the gradient reaches x and the weight.
//! let c = Tensor::randn(0f32, 1., (4, 5, 33), &Device::Cpu)?;
//! let grads = (y * c)?.sum_all()?.backward()?;
//! let gx = grads.get(&x).expect("gradient wrt x");
//! assert!(gx.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
//! // A layer norm's input gradient sums to zero over each row (shifting x changes nothing).
//! let row_sums = gx.sum(D::Minus1)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(row_sums < 1e-4);
//! assert_eq!(grads.get(&w).expect("gradient wrt w").dims(), &[33]);
//!
//! // Group norm: 4 groups of 2 channels over (8, 8) positions, same values as the composition.
//! let x = Tensor::randn(1f32, 3., (2, 8, 8, 8), &Device::Cpu)?;
//! let y = candle_tricks::ops::group_norm(&x, 4, None, None, 1e-5)?;
//! let r = candle_tricks::ops::group_norm_reference(&x, 4, None, None, 1e-5)?;
//! assert!((&y - &r)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Ba, Kiros, Hinton, *Layer Normalization*, 2016, <https://arxiv.org/abs/1607.06450>
//! - Zhang, Sennrich, *Root Mean Square Layer Normalization*, 2019,
//!   <https://arxiv.org/abs/1910.07467>
//! - Wu, He, *Group Normalization*, 2018, <https://arxiv.org/abs/1803.08494>
//! - Ulyanov, Vedaldi, Lempitsky, *Instance Normalization: The Missing Ingredient for Fast
//!   Stylization*, 2016, <https://arxiv.org/abs/1607.08022>

use crate::check;
use crate::ops::backend::{backend, upcast, upcast_opt, Op};
use crate::ops::fused::Fused;
use crate::{Error, Result};
use candle_core::{DType, Tensor};

const OP_LN: &str = "layer_norm";
const OP_RMS: &str = "rms_norm";
const OP_GN: &str = "group_norm";

/// Values per forward/backward task (a block of whole rows, at least one).
const TASK_ELEMS: usize = 16 * 1024;

mod backward;
mod forward;
mod op;

use op::{Kind, NormOp};

// ---------------------------------------------------------------------------------------------
// Public ops
// ---------------------------------------------------------------------------------------------

/// Layer normalization over the last dimension with our fused kernel (`F.layer_norm(x, (D,),
/// weight, bias, eps)`); differentiable wrt `x`, `weight` and `bias`.
///
/// Errors (naming `layer_norm`) on rank 0, a zero-sized dimension, a dtype other than
/// f32/f16/bf16, a weight or bias not of shape `(D)` or of another dtype or device, or an `eps`
/// that is not finite and > 0.
pub fn layer_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let d = validate(OP_LN, x, weight, bias, eps, false)?;
    if !backend(Op::LayerNorm, x.device()).is_kernel() {
        let (w, b) = (upcast_opt(weight)?, upcast_opt(bias)?);
        let y = layer_norm_reference(&upcast(x)?, w.as_ref(), b.as_ref(), eps)?;
        return Ok(y.to_dtype(x.dtype())?);
    }
    apply(
        NormOp::new(Kind::Layer, d, eps, weight, bias),
        x,
        weight,
        bias,
    )
}

/// RMS normalization over the last dimension with our fused kernel
/// (`F.rms_norm(x, (D,), weight, eps)`); differentiable wrt `x` and `weight`.
///
/// Errors (naming `rms_norm`) as [`layer_norm`].
pub fn rms_norm(x: &Tensor, weight: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let d = validate(OP_RMS, x, weight, None, eps, false)?;
    if !backend(Op::RmsNorm, x.device()).is_kernel() {
        let w = upcast_opt(weight)?;
        let y = rms_norm_reference(&upcast(x)?, w.as_ref(), eps)?;
        return Ok(y.to_dtype(x.dtype())?);
    }
    apply(
        NormOp::new(Kind::Rms, d, eps, weight, None),
        x,
        weight,
        None,
    )
}

/// Group normalization with our fused kernel (`F.group_norm(x, num_groups, weight, bias, eps)`):
/// statistics per sample and group of `C / num_groups` channels over the channels and all the
/// spatial positions of `x` `(B, C, *)`, then a per-channel `weight` / `bias` `(C)`;
/// differentiable wrt `x`, `weight` and `bias`. Instance norm is the case `num_groups = C`.
///
/// Errors (naming `group_norm`) on rank < 2, a zero-sized dimension, a dtype other than
/// f32/f16/bf16, `num_groups` 0 or not dividing `C`, a weight or bias not of shape `(C)` or of
/// another dtype or device, or an `eps` that is not finite and > 0.
pub fn group_norm(
    x: &Tensor,
    num_groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let (c, spatial) = validate_group(x, num_groups, weight, bias, eps, false)?;
    if !backend(Op::GroupNorm, x.device()).is_kernel() {
        let (w, b) = (upcast_opt(weight)?, upcast_opt(bias)?);
        let y = group_norm_reference(&upcast(x)?, num_groups, w.as_ref(), b.as_ref(), eps)?;
        return Ok(y.to_dtype(x.dtype())?);
    }
    let mut op = NormOp::new(Kind::Group, c, eps, weight, bias);
    op.groups = num_groups;
    op.spatial = spatial;
    op.row = c / num_groups * spatial;
    apply(op, x, weight, bias)
}

/// Group normalization built from candle tensor ops (reshape to `(B, G, ·)`, mean, sub, sqr,
/// sqrt, div); same arguments, checks and result as [`group_norm`], except that f64 is accepted
/// too. Slow, for tests and benches.
pub fn group_norm_reference(
    x: &Tensor,
    num_groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let (c, _) = validate_group(x, num_groups, weight, bias, eps, true)?;
    let xg = x.reshape((x.dims()[0], num_groups, ()))?;
    let xc = xg.broadcast_sub(&xg.mean_keepdim(2)?)?;
    let var = xc.sqr()?.mean_keepdim(2)?;
    let y = xc
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape(x.shape())?;
    // Parameters as (C, 1, …, 1) so that they broadcast over the spatial dimensions.
    let mut pshape = vec![c];
    pshape.resize(x.rank() - 1, 1);
    let w = weight.map(|w| w.reshape(pshape.as_slice())).transpose()?;
    let b = bias.map(|b| b.reshape(pshape.as_slice())).transpose()?;
    affine_reference(y, w.as_ref(), b.as_ref())
}

/// Validates the arguments of group norm; returns `(C, spatial size)`.
fn validate_group(
    x: &Tensor,
    num_groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    allow_f64: bool,
) -> Result<(usize, usize)> {
    if x.rank() < 2 {
        return Err(Error::shape(
            OP_GN,
            "input",
            "(B, C, *), rank >= 2",
            x.shape().clone(),
        ));
    }
    let c = x.dims()[1];
    if num_groups == 0 || !c.is_multiple_of(num_groups) {
        return Err(Error::config(
            OP_GN,
            format!("num_groups must be > 0 and divide the {c} channels, got {num_groups}"),
        ));
    }
    check_common(OP_GN, x, c, weight, bias, eps, allow_f64)?;
    Ok((c, x.dims()[2..].iter().product()))
}

/// Layer normalization built from candle tensor ops (mean, sub, sqr, sqrt, div); same
/// arguments, checks and result as [`layer_norm`], except that f64 is accepted too (for
/// gradient checks). Slow, for tests and benches.
pub fn layer_norm_reference(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    validate(OP_LN, x, weight, bias, eps, true)?;
    let last = x.rank() - 1;
    let xc = x.broadcast_sub(&x.mean_keepdim(last)?)?;
    let var = xc.sqr()?.mean_keepdim(last)?;
    let y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    affine_reference(y, weight, bias)
}

/// RMS normalization built from candle tensor ops; same arguments, checks and result as
/// [`rms_norm`], except that f64 is accepted too. Slow, for tests and benches.
pub fn rms_norm_reference(x: &Tensor, weight: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    validate(OP_RMS, x, weight, None, eps, true)?;
    let last = x.rank() - 1;
    let ms = x.sqr()?.mean_keepdim(last)?;
    let y = x.broadcast_div(&(ms + eps)?.sqrt()?)?;
    affine_reference(y, weight, None)
}

fn affine_reference(y: Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Result<Tensor> {
    let y = match weight {
        Some(w) => y.broadcast_mul(w)?,
        None => y,
    };
    Ok(match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

/// Validates the arguments of a norm op; returns `D`.
fn validate(
    op: &'static str,
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    allow_f64: bool,
) -> Result<usize> {
    if x.rank() == 0 {
        return Err(Error::shape(
            op,
            "input",
            "(…, D), rank >= 1",
            x.shape().clone(),
        ));
    }
    let d = x.dims()[x.rank() - 1];
    check_common(op, x, d, weight, bias, eps, allow_f64)?;
    Ok(d)
}

/// Checks of every norm op: `eps`, a non-empty float input, parameters of shape `(d)` with the
/// input's dtype and device.
fn check_common(
    op: &'static str,
    x: &Tensor,
    d: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    allow_f64: bool,
) -> Result<()> {
    check::eps(op, "eps", eps)?;
    check::non_empty(op, "input", x)?;
    if !(allow_f64 && x.dtype() == DType::F64) {
        check::float_dtype(op, "input", x)?;
    }
    for (what, t) in [("weight", weight), ("bias", bias)] {
        if let Some(t) = t {
            check::same_dtype_device(op, what, x, t)?;
            if t.dims() != [d] {
                return Err(Error::shape(op, what, format!("({d})"), t.shape().clone()));
            }
        }
    }
    Ok(())
}

fn apply(op: NormOp, x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Result<Tensor> {
    let x = x.contiguous()?;
    Ok(match (weight, bias) {
        (None, None) => x.apply_op1(Fused(op))?,
        (Some(p), None) | (None, Some(p)) => x.apply_op2(&p.contiguous()?, Fused(op))?,
        (Some(w), Some(b)) => x.apply_op3(&w.contiguous()?, &b.contiguous()?, Fused(op))?,
    })
}
