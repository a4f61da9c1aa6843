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
//! activation in each direction. The loops are compiled twice and AVX2 + FMA is picked at run
//! time on x86-64. f16 and bf16 rows are widened to f32 scratch and rounded once on store.
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

use std::sync::Mutex;

use crate::check;
use crate::ops::backend::{backend, upcast, upcast_opt, Op};
use crate::ops::cpu::{contiguous, dispatch_float, dispatch_float_pair, par_fold, par_tasks};
use crate::ops::cpu::{f32_view, widen, Element};
use crate::ops::simd::{detect_simd, dot, sum, Simd, LANES};
use crate::{Error, Result};
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Shape, Storage, Tensor,
};

const OP_LN: &str = "layer_norm";
const OP_RMS: &str = "rms_norm";
const OP_GN: &str = "group_norm";

/// Values per forward/backward task (a block of whole rows, at least one).
const TASK_ELEMS: usize = 16 * 1024;

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
        (None, None) => x.apply_op1(op)?,
        (Some(p), None) | (None, Some(p)) => x.apply_op2(&p.contiguous()?, op)?,
        (Some(w), Some(b)) => x.apply_op3(&w.contiguous()?, &b.contiguous()?, op)?,
    })
}

// ---------------------------------------------------------------------------------------------
// Custom op
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Layer,
    Rms,
    /// Statistics per (sample, group) of `row / spatial` channels; parameters per channel.
    Group,
}

/// The fused norm: `x` alone, `(x, weight)` or `(x, bias)`, or `(x, weight, bias)`.
#[derive(Debug, Clone, Copy)]
struct NormOp {
    kind: Kind,
    /// Length of the parameters: `D`, or `C` for group norm.
    d: usize,
    /// Values per statistics row: `D`, or `C / G · spatial` for group norm.
    row: usize,
    /// Values per channel (group norm; `1` otherwise) and groups per sample.
    spatial: usize,
    groups: usize,
    eps: f32,
    has_w: bool,
    has_b: bool,
}

impl NormOp {
    fn new(kind: Kind, d: usize, eps: f64, w: Option<&Tensor>, b: Option<&Tensor>) -> Self {
        Self {
            kind,
            d,
            row: d,
            spatial: 1,
            groups: 1,
            eps: eps as f32,
            has_w: w.is_some(),
            has_b: b.is_some(),
        }
    }

    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Layer => OP_LN,
            Kind::Rms => OP_RMS,
            Kind::Group => OP_GN,
        }
    }

    fn check_param(&self, s: &CpuStorage, l: &Layout, x: &CpuStorage) -> candle_core::Result<()> {
        use candle_core::backend::BackendStorage;
        if s.dtype() != x.dtype() {
            return Err(candle_core::Error::DTypeMismatchBinaryOp {
                lhs: x.dtype(),
                rhs: s.dtype(),
                op: self.name(),
            });
        }
        if l.shape().dims() != [self.d] {
            return Err(candle_core::Error::ShapeMismatchBinaryOp {
                lhs: l.shape().clone(),
                rhs: Shape::from(self.d),
                op: self.name(),
            });
        }
        Ok(())
    }

    fn param_view<'a>(
        &self,
        p: Option<(&'a CpuStorage, &Layout)>,
        x: &CpuStorage,
    ) -> candle_core::Result<Option<std::borrow::Cow<'a, [f32]>>> {
        match p {
            Some((s, l)) => {
                self.check_param(s, l, x)?;
                Ok(Some(f32_view(s, l, self.name())?))
            }
            None => Ok(None),
        }
    }

    fn fwd(
        &self,
        x: (&CpuStorage, &Layout),
        w: Option<(&CpuStorage, &Layout)>,
        b: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (xs, xl) = x;
        let dims = xl.shape().dims();
        let ok = match self.kind {
            Kind::Group => {
                dims.len() >= 2
                    && dims[1] == self.d
                    && dims[2..].iter().product::<usize>() == self.spatial
            }
            _ => dims.last() == Some(&self.d),
        };
        if !ok {
            return Err(candle_core::Error::ShapeMismatchBinaryOp {
                lhs: xl.shape().clone(),
                rhs: Shape::from(self.d),
                op: name,
            });
        }
        let wv = self.param_view(w, xs)?;
        let bv = self.param_view(b, xs)?;
        let out = dispatch_float!(xs, name, |v: T| {
            let v = contiguous(v, xl, name)?;
            let y = forward::<T>(self, v, wv.as_deref(), bv.as_deref());
            Ok::<_, candle_core::Error>(<T as candle_core::WithDType>::to_cpu_storage_owned(y))
        })?;
        Ok((out, xl.shape().clone()))
    }

    /// `(grad_x, grad_weight if w is given, grad_bias if the op has a bias)`.
    fn bwd_impl(
        &self,
        x: &Tensor,
        w: Option<&Tensor>,
        grad: &Tensor,
    ) -> candle_core::Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let (dtype, d) = (x.dtype(), self.d);
        let x = x.contiguous()?;
        let grad = grad.contiguous()?;
        let wv = match w {
            Some(w) => Some(w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        let need = Need {
            dw: wv.is_some(),
            db: self.has_b,
        };
        let (gx, dw, db) = {
            let (xs, xl) = x.storage_and_layout();
            let (gs, gl) = grad.storage_and_layout();
            let (xc, gc) = match (&*xs, &*gs) {
                (Storage::Cpu(a), Storage::Cpu(b)) => (a, b),
                _ => candle_core::bail!("{name}: the backward pass runs on CPU only"),
            };
            if gl.shape() != xl.shape() {
                return Err(candle_core::Error::ShapeMismatchBinaryOp {
                    lhs: xl.shape().clone(),
                    rhs: gl.shape().clone(),
                    op: name,
                });
            }
            dispatch_float_pair!(xc, gc, name, |xv, gv: T| {
                let xv = contiguous(xv, xl, name)?;
                let gv = contiguous(gv, gl, name)?;
                let (gx, dw, db) = backward::<T>(self, xv, gv, wv.as_deref(), need);
                let gx = Tensor::from_vec(gx, xl.shape(), &Device::Cpu)?;
                Ok::<_, candle_core::Error>((gx, dw, db))
            })?
        };
        let param = |v: Vec<f32>| Tensor::from_vec(v, d, &Device::Cpu)?.to_dtype(dtype);
        let dw = if need.dw { Some(param(dw)?) } else { None };
        let db = if need.db { Some(param(db)?) } else { None };
        Ok((gx, dw, db))
    }
}

impl CustomOp1 for NormOp {
    fn name(&self) -> &'static str {
        NormOp::name(self)
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd((s, l), None, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (gx, _, _) = self.bwd_impl(x, None, grad_res)?;
        Ok(Some(gx))
    }
}

impl CustomOp2 for NormOp {
    fn name(&self) -> &'static str {
        NormOp::name(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if self.has_w {
            self.fwd((s1, l1), Some((s2, l2)), None)
        } else {
            self.fwd((s1, l1), None, Some((s2, l2)))
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        if self.has_w {
            let (gx, gw, _) = self.bwd_impl(x, Some(p), grad_res)?;
            Ok((Some(gx), gw))
        } else {
            let (gx, _, gb) = self.bwd_impl(x, None, grad_res)?;
            Ok((Some(gx), gb))
        }
    }
}

impl CustomOp3 for NormOp {
    fn name(&self) -> &'static str {
        NormOp::name(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd((s1, l1), Some((s2, l2)), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, gb) = self.bwd_impl(x, Some(w), grad_res)?;
        Ok((Some(gx), gw, gb))
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// Which parameter gradients the backward must produce.
#[derive(Debug, Clone, Copy)]
struct Need {
    dw: bool,
    db: bool,
}

/// $\sum (a_i - m)^2$.
#[inline(always)]
fn sum_sq_dev(a: &[f32], m: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let rest: f32 = ca.remainder().iter().map(|v| (v - m) * (v - m)).sum();
    for c in ca {
        for j in 0..LANES {
            let t = c[j] - m;
            acc[j] += t * t;
        }
    }
    acc.iter().sum::<f32>() + rest
}

#[inline(always)]
fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb, cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let mut rest = 0f32;
    for ((x, y), z) in ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .zip(cc.remainder())
    {
        rest += x * y * z;
    }
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j] * z[j];
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// `(mean, 1 / sqrt(var + eps))` of a row (mean 0 and the mean square for RMS norm).
#[inline(always)]
fn stats(kind: Kind, x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = match kind {
        Kind::Layer | Kind::Group => sum(x) / n,
        Kind::Rms => 0.0,
    };
    let var = sum_sq_dev(x, mean) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

#[inline(always)]
fn fwd_row(op: &NormOp, x: &[f32], w: Option<&[f32]>, b: Option<&[f32]>, y: &mut [f32]) {
    let (m, r) = stats(op.kind, x, op.eps);
    match (w, b) {
        (Some(w), Some(b)) => {
            for (((y, x), w), b) in y.iter_mut().zip(x).zip(w).zip(b) {
                *y = (x - m) * r * w + b;
            }
        }
        (Some(w), None) => {
            for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                *y = (x - m) * r * w;
            }
        }
        (None, Some(b)) => {
            for ((y, x), b) in y.iter_mut().zip(x).zip(b) {
                *y = (x - m) * r + b;
            }
        }
        (None, None) => {
            for (y, x) in y.iter_mut().zip(x) {
                *y = (x - m) * r;
            }
        }
    }
}

/// Per-worker scratch rows for f16/bf16 (unused for f32).
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    g: Vec<f32>,
    y: Vec<f32>,
}

/// Forward of statistics row `idx`: a layer / RMS norm row, or one (sample, group) block of a
/// group norm, whose per-channel parameters are the group's slice of `w` / `b`.
#[inline(always)]
fn fwd_any(
    op: &NormOp,
    idx: usize,
    x: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    y: &mut [f32],
) {
    if op.kind != Kind::Group {
        return fwd_row(op, x, w, b, y);
    }
    let cpg = op.d / op.groups;
    let c0 = (idx % op.groups) * cpg;
    let (w, b) = (w.map(|w| &w[c0..c0 + cpg]), b.map(|b| &b[c0..c0 + cpg]));
    let (m, r) = stats(op.kind, x, op.eps);
    let rows = x
        .chunks_exact(op.spatial)
        .zip(y.chunks_exact_mut(op.spatial));
    for (c, (xc, yc)) in rows.enumerate() {
        // y = (x - m)·r·w_c + b_c folded into one multiply-add per value.
        let a = r * w.map_or(1.0, |w| w[c]);
        let shift = b.map_or(0.0, |b| b[c]) - m * a;
        for (y, x) in yc.iter_mut().zip(xc) {
            *y = x * a + shift;
        }
    }
}

/// One forward task: a block of whole rows `x` (the first is row `row0`) into `out`.
#[inline(always)]
fn fwd_task<T: Element>(
    op: &NormOp,
    row0: usize,
    x: &[T],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    out: &mut [T],
    scr: &mut Scratch,
) {
    let d = op.row;
    let rows = x.chunks_exact(d).zip(out.chunks_exact_mut(d));
    for (k, (xr, yr)) in rows.enumerate() {
        let xf: &[f32] = match T::as_f32(xr) {
            Some(v) => v,
            None => {
                widen(xr, &mut scr.x);
                &scr.x
            }
        };
        match T::as_f32_mut(yr) {
            Some(yf) => fwd_any(op, row0 + k, xf, w, b, yf),
            None => {
                scr.y.resize(d, 0.0);
                fwd_any(op, row0 + k, xf, w, b, &mut scr.y);
                for (o, v) in yr.iter_mut().zip(&scr.y) {
                    *o = T::from_f32(*v);
                }
            }
        }
    }
}

/// [`fwd_task`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA (the caller checked `detect_simd() == Simd::Avx2Fma`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fwd_task_avx2<T: Element>(
    op: &NormOp,
    row0: usize,
    x: &[T],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    out: &mut [T],
    scr: &mut Scratch,
) {
    fwd_task::<T>(op, row0, x, w, b, out, scr)
}

fn forward<T: Element>(op: &NormOp, x: &[T], w: Option<&[f32]>, b: Option<&[f32]>) -> Vec<T> {
    let simd = detect_simd();
    let chunk = (TASK_ELEMS / op.row).max(1) * op.row;
    let mut out = vec![T::from_f32(0.0); x.len()];
    par_tasks(&mut out, chunk, |i, out, scr: &mut Scratch| {
        let x = &x[i * chunk..i * chunk + out.len()];
        let row0 = i * chunk / op.row;
        match simd {
            // SAFETY: `detect_simd` returned `Avx2Fma` only after detecting AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2Fma => unsafe { fwd_task_avx2::<T>(op, row0, x, w, b, out, scr) },
            Simd::Portable | Simd::Fma => fwd_task::<T>(op, row0, x, w, b, out, scr),
        }
    });
    out
}

// --- backward --------------------------------------------------------------------------------

/// One row of the backward: writes `dx` and adds this row's terms to `dw` / `db`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn bwd_row(
    op: &NormOp,
    x: &[f32],
    g: &[f32],
    w: Option<&[f32]>,
    need: Need,
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    let n = op.row as f32;
    let (m, r) = stats(op.kind, x, op.eps);
    // s_g = sum(g·w), s_gx = sum(g·w·x̂) = r·(sum(g·w·x) - m·s_g).
    let (s_g, s_gwx) = match w {
        Some(w) => (dot(g, w), dot3(g, w, x)),
        None => (sum(g), dot(g, x)),
    };
    let s_gx = r * (s_gwx - m * s_g);
    let c1 = match op.kind {
        Kind::Layer | Kind::Group => s_g / n,
        Kind::Rms => 0.0,
    };
    let c2 = s_gx / n;
    match w {
        Some(w) => {
            for (((dx, x), g), w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                *dx = r * (g * w - c1 - (x - m) * r * c2);
            }
        }
        None => {
            for ((dx, x), g) in dx.iter_mut().zip(x).zip(g) {
                *dx = r * (g - c1 - (x - m) * r * c2);
            }
        }
    }
    if need.dw {
        for ((dw, x), g) in dw.iter_mut().zip(x).zip(g) {
            *dw += g * (x - m) * r;
        }
    }
    if need.db {
        for (db, g) in db.iter_mut().zip(g) {
            *db += g;
        }
    }
}

/// Backward of statistics row `idx`: [`bwd_row`] for layer / RMS norm; for one (sample, group)
/// block of a group norm the same formula with one weight per channel, and the channel sums
/// $\sum g$ and $\sum g\thinspace x$ (one pass over the block) give both the row constants and this
/// block's `dw` / `db` terms.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn bwd_any(
    op: &NormOp,
    idx: usize,
    x: &[f32],
    g: &[f32],
    w: Option<&[f32]>,
    need: Need,
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    if op.kind != Kind::Group {
        return bwd_row(op, x, g, w, need, dx, dw, db);
    }
    let (n, s) = (op.row as f32, op.spatial);
    let cpg = op.d / op.groups;
    let c0 = (idx % op.groups) * cpg;
    let w = w.map(|w| &w[c0..c0 + cpg]);
    let (m, r) = stats(op.kind, x, op.eps);
    let (mut s_g, mut s_gwx) = (0f32, 0f32);
    for (c, (xc, gc)) in x.chunks_exact(s).zip(g.chunks_exact(s)).enumerate() {
        let (sg, sgx) = (sum(gc), dot(gc, xc));
        let wc = w.map_or(1.0, |w| w[c]);
        s_g += wc * sg;
        s_gwx += wc * sgx;
        if need.dw {
            dw[c0 + c] += r * (sgx - m * sg);
        }
        if need.db {
            db[c0 + c] += sg;
        }
    }
    let c1 = s_g / n;
    let c2 = r * (s_gwx - m * s_g) / n;
    let rows = x.chunks_exact(s).zip(g.chunks_exact(s));
    for (c, ((xc, gc), dxc)) in rows.zip(dx.chunks_exact_mut(s)).enumerate() {
        let wc = w.map_or(1.0, |w| w[c]);
        for ((dx, x), g) in dxc.iter_mut().zip(xc).zip(gc) {
            *dx = r * (g * wc - c1 - (x - m) * r * c2);
        }
    }
}

/// Per-worker state of the backward: partial parameter gradients and scratch rows.
#[derive(Default)]
struct BwdState {
    dw: Vec<f32>,
    db: Vec<f32>,
    scr: Scratch,
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn bwd_task<T: Element>(
    op: &NormOp,
    row0: usize,
    x: &[T],
    g: &[T],
    w: Option<&[f32]>,
    need: Need,
    dx: &mut [T],
    st: &mut BwdState,
) {
    let d = op.row;
    let BwdState { dw, db, scr } = st;
    let rows = x.chunks_exact(d).zip(g.chunks_exact(d));
    for (k, ((xr, gr), dxr)) in rows.zip(dx.chunks_exact_mut(d)).enumerate() {
        let xf: &[f32] = match T::as_f32(xr) {
            Some(v) => v,
            None => {
                widen(xr, &mut scr.x);
                &scr.x
            }
        };
        let gf: &[f32] = match T::as_f32(gr) {
            Some(v) => v,
            None => {
                widen(gr, &mut scr.g);
                &scr.g
            }
        };
        match T::as_f32_mut(dxr) {
            Some(o) => bwd_any(op, row0 + k, xf, gf, w, need, o, dw, db),
            None => {
                scr.y.resize(d, 0.0);
                bwd_any(op, row0 + k, xf, gf, w, need, &mut scr.y, dw, db);
                for (o, v) in dxr.iter_mut().zip(&scr.y) {
                    *o = T::from_f32(*v);
                }
            }
        }
    }
}

/// [`bwd_task`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA (the caller checked `detect_simd() == Simd::Avx2Fma`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn bwd_task_avx2<T: Element>(
    op: &NormOp,
    row0: usize,
    x: &[T],
    g: &[T],
    w: Option<&[f32]>,
    need: Need,
    dx: &mut [T],
    st: &mut BwdState,
) {
    bwd_task::<T>(op, row0, x, g, w, need, dx, st)
}

/// `(dx, dw, db)`; `dw` / `db` are zeros when not needed.
fn backward<T: Element>(
    op: &NormOp,
    x: &[T],
    g: &[T],
    w: Option<&[f32]>,
    need: Need,
) -> (Vec<T>, Vec<f32>, Vec<f32>) {
    let simd = detect_simd();
    let d = op.d;
    let chunk = (TASK_ELEMS / op.row).max(1) * op.row;
    let mut dx = vec![T::from_f32(0.0); x.len()];
    let states = {
        let slots: Vec<Mutex<&mut [T]>> = dx.chunks_mut(chunk).map(Mutex::new).collect();
        par_fold(slots.len(), |i, st: &mut BwdState| {
            let mut out = slots[i].lock().unwrap_or_else(|e| e.into_inner());
            let (start, len) = (i * chunk, out.len());
            let (x, g) = (&x[start..start + len], &g[start..start + len]);
            let row0 = start / op.row;
            if st.dw.len() != d {
                st.dw = vec![0.0; d];
                st.db = vec![0.0; d];
            }
            match simd {
                // SAFETY: `detect_simd` returned `Avx2Fma` only after detecting AVX2 and FMA.
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2Fma => unsafe {
                    bwd_task_avx2::<T>(op, row0, x, g, w, need, &mut out, st)
                },
                Simd::Portable | Simd::Fma => bwd_task::<T>(op, row0, x, g, w, need, &mut out, st),
            }
        })
    };
    let mut dw = vec![0f32; d];
    let mut db = vec![0f32; d];
    for st in &states {
        for (a, b) in dw.iter_mut().zip(&st.dw) {
            *a += b;
        }
        for (a, b) in db.iter_mut().zip(&st.db) {
            *a += b;
        }
    }
    (dx, dw, db)
}
