//! Adaptive average and max pooling (PyTorch's bins), and the stride-1 "same" max pool of SPPF,
//! as one binned-pooling kernel with a backward pass, on CPU.
//!
//! # Shapes
//! - 2-D: input `(B, C, H, W)` or `(C, H, W)`, output `(B, C, Ho, Wo)` (or `(C, Ho, Wo)`).
//! - 1-D: input `(B, C, L)` or `(C, L)`, output `(B, C, Lo)` (or `(C, Lo)`).
//! - Output bin $i$ of an axis of length $n$ pooled to $m$ bins covers the inputs
//!   $[\lfloor i n / m \rfloor, \lceil (i + 1) n / m \rceil)$, exactly as PyTorch's
//!   `adaptive_{avg,max}_pool{1,2}d`. Bins overlap when $m$ does not divide $n$, and $m > n$ is
//!   allowed (inputs are repeated).
//! - [`max_pool2d_same`]: input `(B, C, H, W)`, odd kernel $k$, output `(B, C, H, W)`; output
//!   $i$ covers $[i - \lfloor k/2 \rfloor, i + \lfloor k/2 \rfloor]$ clipped to the input, which is
//!   PyTorch's `MaxPool2d(k, stride=1, padding=k // 2)` (its padding is $-\infty$).
//!
//! # Tip
//! Every op here is the same kernel: each output value reduces a rectangle of its input plane,
//! described by one `[start, end)` interval per output row and one per output column. The
//! forward pass first reduces the rows of a bin into a single row buffer (a contiguous,
//! vectorisable sum or max over $W$ values per input row), then reduces that buffer over each
//! column interval: each input value is read once per output row whose bin holds it (once in
//! all when the bins do not overlap), not once per output value, and global pooling reduces the
//! contiguous plane directly. Planes of the `B·C` batch run on candle's CPU worker pool.
//! Averages divide by the bin's area; maxima propagate NaN like PyTorch (a bin containing NaN
//! yields NaN).
//!
//! The backward pass needs no saved indices: average pooling spreads $g / |bin|$ over the bin,
//! and max pooling recomputes each bin's arg-max from the input — the first element (row-major)
//! equal to the pooled maximum, or the last NaN, which is the element PyTorch picks — and routes
//! the whole gradient there. Searching for the known maximum stops early instead of tracking a
//! running arg-max over the whole bin. The gradient op itself has no backward (no second
//! derivatives). f16 and bf16 are read into f32, reduced in f32 and rounded once on store. The
//! kernels are CPU-only; on another device the op runs its composition (the `*_reference`
//! functions, see [`crate::ops::backend()`]).
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::ops::{adaptive_avg_pool2d, adaptive_avg_pool2d_reference};
//! # fn main() -> candle_tricks::Result<()> {
//! let x = Tensor::randn(0f32, 1., (2, 3, 7, 5), &Device::Cpu)?;
//! // 7 rows into 3 bins: [0, 3), [2, 5), [4, 7) — overlapping, as in PyTorch.
//! let y = adaptive_avg_pool2d(&x, (3, 2))?;
//! assert_eq!(y.dims(), &[2, 3, 3, 2]);
//! let r = adaptive_avg_pool2d_reference(&x, (3, 2))?;
//! let diff = (y - r)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(diff < 1e-6);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - PyTorch, `torch.nn.AdaptiveAvgPool2d` and `torch.nn.AdaptiveMaxPool2d`,
//!   <https://pytorch.org/docs/stable/generated/torch.nn.AdaptiveAvgPool2d.html>
//! - He et al., *Spatial Pyramid Pooling in Deep Convolutional Networks for Visual Recognition*,
//!   2014, <https://arxiv.org/abs/1406.4729>

use crate::check;
use crate::cpu::{contiguous, dispatch_float, expect_shape, par_tasks, store, try_zeros, Element};
use crate::ops::backend::{backend, upcast, Op};
use crate::{Error, Result};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Tensor, WithDType};
use half::{bf16, f16};

const AVG2: &str = "adaptive_avg_pool2d";
const MAX2: &str = "adaptive_max_pool2d";
const AVG1: &str = "adaptive_avg_pool1d";
const MAX1: &str = "adaptive_max_pool1d";
const SAME: &str = "max_pool2d_same";
const OP_GRAD: &str = "pool2d_grad";

/// How a pooling bin is reduced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PoolMode {
    /// The largest value of the bin (NaN if the bin holds a NaN). The default.
    #[default]
    Max,
    /// The mean of the bin.
    Avg,
}

impl PoolMode {
    fn adaptive_op(self, rank1: bool) -> &'static str {
        match (self, rank1) {
            (PoolMode::Avg, false) => AVG2,
            (PoolMode::Max, false) => MAX2,
            (PoolMode::Avg, true) => AVG1,
            (PoolMode::Max, true) => MAX1,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry
// ---------------------------------------------------------------------------------------------

/// The bins of one axis: `[start, end)` input interval of every output index.
type Bins = Vec<(usize, usize)>;

/// PyTorch's adaptive bins: `[floor(i·n/m), ceil((i+1)·n/m))`.
fn adaptive_bins(n: usize, m: usize) -> Bins {
    // In u128: `i·n` overflows usize for a large input and output; the bounds are <= n.
    let (nw, mw) = (n as u128, m as u128);
    (0..m as u128)
        .map(|i| {
            (
                ((i * nw) / mw) as usize,
                ((i + 1) * nw).div_ceil(mw) as usize,
            )
        })
        .collect()
}

/// Stride-1 window of odd size `k` centred on each input, clipped to `[0, n)`.
fn same_bins(n: usize, k: usize) -> Bins {
    let p = k / 2;
    (0..n)
        .map(|i| {
            (
                i.saturating_sub(p),
                i.saturating_add(p).saturating_add(1).min(n),
            )
        })
        .collect()
}

/// Every size the kernels need: `planes = B·C` planes of `h × w` pooled to `rows × cols` bins.
#[derive(Debug, Clone)]
struct Geom {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    rows: Bins,
    cols: Bins,
}

impl Geom {
    fn planes(&self) -> usize {
        self.b * self.c
    }
    fn in_plane(&self) -> usize {
        self.h * self.w
    }
    fn out_plane(&self) -> usize {
        self.rows.len() * self.cols.len()
    }
    fn x_shape(&self) -> Shape {
        Shape::from((self.b, self.c, self.h, self.w))
    }
    fn y_shape(&self) -> Shape {
        Shape::from((self.b, self.c, self.rows.len(), self.cols.len()))
    }
}

/// Validates an input of rank `rank` (or `rank - 1` without the batch) and the output sizes.
fn validate(
    op: &'static str,
    x: &Tensor,
    rank: usize,
    pattern: &str,
    sizes: &[usize],
    allow_f64: bool,
) -> Result<()> {
    if x.rank() != rank && x.rank() != rank - 1 {
        return Err(Error::shape(op, "input", pattern, x.shape().clone()));
    }
    check::non_empty(op, "input", x)?;
    if !(allow_f64 && x.dtype() == DType::F64) {
        check::float_dtype(op, "input", x)?;
    }
    for &s in sizes {
        check::positive(op, "output_size", s)?;
    }
    // The output (and the bins, one per output index) before anything is allocated.
    let mut out = x.dims()[..x.rank() - sizes.len()].to_vec();
    out.extend_from_slice(sizes);
    check::numel(op, "output", &out, x.dtype())?;
    Ok(())
}

/// `x` as `(B, C, H, W)`: adds the batch dimension when missing (and, for 1-D, `H = 1`).
fn as_4d(x: &Tensor, rank: usize) -> Result<Tensor> {
    let x = if x.rank() < rank {
        x.unsqueeze(0)?
    } else {
        x.clone()
    };
    Ok(if rank == 3 { x.unsqueeze(2)? } else { x })
}

/// Undoes [`as_4d`] on the result.
fn from_4d(y: Tensor, rank: usize, batched: bool) -> Result<Tensor> {
    let y = if rank == 3 { y.squeeze(2)? } else { y };
    Ok(if batched { y } else { y.squeeze(0)? })
}

fn adaptive(x: &Tensor, out: (usize, usize), mode: PoolMode, rank: usize) -> Result<Tensor> {
    let op = mode.adaptive_op(rank == 3);
    let (pattern, sizes): (_, &[usize]) = if rank == 4 {
        ("(B, C, H, W) or (C, H, W)", &[out.0, out.1])
    } else {
        ("(B, C, L) or (C, L)", &[out.1])
    };
    validate(op, x, rank, pattern, sizes, false)?;
    if !backend(Op::AdaptivePool, x.device()).is_kernel() {
        let xc = upcast(x)?;
        let y = if rank == 4 {
            adaptive_pool2d_reference(&xc, out, mode)?
        } else {
            adaptive_pool1d_reference(&xc, out.1, mode)?
        };
        return Ok(y.to_dtype(x.dtype())?);
    }
    let batched = x.rank() == rank;
    let x4 = as_4d(&x.contiguous()?, rank)?;
    let (b, c, h, w) = x4.dims4()?;
    let g = Geom {
        b,
        c,
        h,
        w,
        rows: adaptive_bins(h, out.0),
        cols: adaptive_bins(w, out.1),
    };
    let y = x4.apply_op1(PoolFwd { g, mode, op })?;
    from_4d(y, rank, batched)
}

// ---------------------------------------------------------------------------------------------
// Public ops
// ---------------------------------------------------------------------------------------------

/// Adaptive average pooling of `(B, C, H, W)` (or `(C, H, W)`) to `output_size = (Ho, Wo)`
/// with PyTorch's bins; differentiable.
///
/// Errors (naming `adaptive_avg_pool2d`) on a wrong rank, a zero-sized dimension, an output size
/// of 0 or a dtype other than f32/f16/bf16. Outputs larger than the input are allowed.
pub fn adaptive_avg_pool2d(x: &Tensor, output_size: (usize, usize)) -> Result<Tensor> {
    adaptive(x, output_size, PoolMode::Avg, 4)
}

/// Adaptive max pooling of `(B, C, H, W)` (or `(C, H, W)`) to `output_size = (Ho, Wo)` with
/// PyTorch's bins; differentiable (the gradient goes to the first maximum of each bin).
///
/// Errors name `adaptive_max_pool2d`; see [`adaptive_avg_pool2d`].
pub fn adaptive_max_pool2d(x: &Tensor, output_size: (usize, usize)) -> Result<Tensor> {
    adaptive(x, output_size, PoolMode::Max, 4)
}

/// Adaptive average pooling of `(B, C, L)` (or `(C, L)`) to `output_size` bins; differentiable.
///
/// Errors name `adaptive_avg_pool1d`; see [`adaptive_avg_pool2d`].
pub fn adaptive_avg_pool1d(x: &Tensor, output_size: usize) -> Result<Tensor> {
    adaptive(x, (1, output_size), PoolMode::Avg, 3)
}

/// Adaptive max pooling of `(B, C, L)` (or `(C, L)`) to `output_size` bins; differentiable.
///
/// Errors name `adaptive_max_pool1d`; see [`adaptive_avg_pool2d`].
pub fn adaptive_max_pool1d(x: &Tensor, output_size: usize) -> Result<Tensor> {
    adaptive(x, (1, output_size), PoolMode::Max, 3)
}

/// Adaptive 2-D pooling with the reduction chosen by `mode`: [`adaptive_max_pool2d`] or
/// [`adaptive_avg_pool2d`].
pub fn adaptive_pool2d(x: &Tensor, output_size: (usize, usize), mode: PoolMode) -> Result<Tensor> {
    adaptive(x, output_size, mode, 4)
}

/// $k \times k$ max pooling with stride 1 and padding $\lfloor k/2 \rfloor$ on `(B, C, H, W)`,
/// padded with $-\infty$ so the output keeps the input size and the borders match PyTorch's
/// `nn.MaxPool2d(k, 1, k // 2)`; differentiable (gradient to the first maximum of each window).
/// This is the pooling inside [`crate::pool::Sppf`].
///
/// Errors (naming `max_pool2d_same`) on a rank other than 4, a zero-sized dimension, a dtype
/// other than f32/f16/bf16, or a kernel size that is 0 or even.
pub fn max_pool2d_same(x: &Tensor, kernel_size: usize) -> Result<Tensor> {
    check::rank(SAME, "input", x, 4, "(B, C, H, W)")?;
    check::non_empty(SAME, "input", x)?;
    check::float_dtype(SAME, "input", x)?;
    if kernel_size.is_multiple_of(2) {
        return Err(Error::config(
            SAME,
            format!(
                "kernel_size must be odd (so the output keeps the input size), got {kernel_size}"
            ),
        ));
    }
    if !backend(Op::MaxPool2dSame, x.device()).is_kernel() {
        let y = max_pool2d_same_reference(&upcast(x)?, kernel_size)?;
        return Ok(y.to_dtype(x.dtype())?);
    }
    let x = x.contiguous()?;
    let (b, c, h, w) = x.dims4()?;
    let g = Geom {
        b,
        c,
        h,
        w,
        rows: same_bins(h, kernel_size),
        cols: same_bins(w, kernel_size),
    };
    Ok(x.apply_op1(PoolFwd {
        g,
        mode: PoolMode::Max,
        op: SAME,
    })?)
}

// ---------------------------------------------------------------------------------------------
// Plain-tensor references (slow, for tests)
// ---------------------------------------------------------------------------------------------

/// Pools the bins of `x` (4-D) with candle's `narrow` + `mean`/`max`, then concatenates.
fn reference_4d(x: &Tensor, rows: &Bins, cols: &Bins, mode: PoolMode) -> Result<Tensor> {
    let mut out_rows = Vec::with_capacity(rows.len());
    for &(r0, r1) in rows {
        let band = x.narrow(2, r0, r1 - r0)?;
        let mut cells = Vec::with_capacity(cols.len());
        for &(c0, c1) in cols {
            let cell = band.narrow(3, c0, c1 - c0)?;
            cells.push(match mode {
                PoolMode::Avg => cell.mean_keepdim(3)?.mean_keepdim(2)?,
                PoolMode::Max => {
                    // NaN when the window holds one (torch; candle's max skips NaN).
                    let m = cell.max_keepdim(3)?.max_keepdim(2)?;
                    let nan = cell.ne(&cell)?.max_keepdim(3)?.max_keepdim(2)?;
                    nan.where_cond(
                        &Tensor::full(f32::NAN, m.shape(), m.device())?.to_dtype(m.dtype())?,
                        &m,
                    )?
                }
            });
        }
        out_rows.push(Tensor::cat(&cells, 3)?);
    }
    Ok(Tensor::cat(&out_rows, 2)?)
}

/// Adaptive 2-D pooling built from candle's `narrow`, `mean` / `max` and `cat`, one bin at a
/// time. Same arguments, checks and result as [`adaptive_pool2d`] (f64 accepted too, for
/// gradient checks; a max over a window holding a NaN is NaN, as in torch, but its gradient
/// is 0 where torch routes it to the NaN element); slow, for tests.
pub fn adaptive_pool2d_reference(
    x: &Tensor,
    output_size: (usize, usize),
    mode: PoolMode,
) -> Result<Tensor> {
    let (op, rank) = (mode.adaptive_op(false), 4);
    let sizes = [output_size.0, output_size.1];
    validate(op, x, rank, "(B, C, H, W) or (C, H, W)", &sizes, true)?;
    let batched = x.rank() == rank;
    let x4 = as_4d(x, rank)?;
    let (_, _, h, w) = x4.dims4()?;
    let rows = adaptive_bins(h, output_size.0);
    let cols = adaptive_bins(w, output_size.1);
    from_4d(reference_4d(&x4, &rows, &cols, mode)?, rank, batched)
}

/// Reference for [`adaptive_avg_pool2d`]; see [`adaptive_pool2d_reference`] (slow, for tests).
pub fn adaptive_avg_pool2d_reference(x: &Tensor, output_size: (usize, usize)) -> Result<Tensor> {
    adaptive_pool2d_reference(x, output_size, PoolMode::Avg)
}

/// Reference for [`adaptive_max_pool2d`]; see [`adaptive_pool2d_reference`] (slow, for tests).
pub fn adaptive_max_pool2d_reference(x: &Tensor, output_size: (usize, usize)) -> Result<Tensor> {
    adaptive_pool2d_reference(x, output_size, PoolMode::Max)
}

/// Adaptive 1-D pooling from plain candle ops, `(B, C, L)` or `(C, L)`; same checks as
/// [`adaptive_avg_pool1d`] (f64 accepted too); slow, for tests.
pub fn adaptive_pool1d_reference(x: &Tensor, output_size: usize, mode: PoolMode) -> Result<Tensor> {
    let (op, rank) = (mode.adaptive_op(true), 3);
    validate(op, x, rank, "(B, C, L) or (C, L)", &[output_size], true)?;
    let batched = x.rank() == rank;
    let x4 = as_4d(x, rank)?;
    let (_, _, _, l) = x4.dims4()?;
    let cols = adaptive_bins(l, output_size);
    from_4d(
        reference_4d(&x4, &vec![(0, 1)], &cols, mode)?,
        rank,
        batched,
    )
}

/// [`max_pool2d_same`] composed from candle tensor ops, one axis at a time (a $k \times k$ max is
/// a max over $k$ columns of a max over $k$ rows): the input padded with $-\infty$, its $k$
/// shifted copies stacked, `argmax` and `gather`. Differentiable through candle's autograd on
/// every device, with the gradient on the first maximum of each window in row-major order, as
/// the kernel; the path of [`max_pool2d_same`] where our kernel does not run (see
/// [`crate::ops::backend()`]). A window holding a NaN may give a different value than the
/// kernel (which propagates it). Slow, for tests.
pub fn max_pool2d_same_reference(x: &Tensor, kernel_size: usize) -> Result<Tensor> {
    check::rank(SAME, "input", x, 4, "(B, C, H, W)")?;
    check::non_empty(SAME, "input", x)?;
    if kernel_size.is_multiple_of(2) {
        return Err(Error::config(
            SAME,
            format!("kernel_size must be odd, got {kernel_size}"),
        ));
    }
    // Columns first, then rows: the first row holding the window's maximum, and in it the first
    // column, is the row-major first maximum.
    let y = max_same_axis(x, 3, kernel_size)?;
    max_same_axis(&y, 2, kernel_size)
}

/// The maximum over windows of `k` (odd) along `axis` of the rank-4 `x`, padded with
/// $-\infty$ by `k / 2` on both sides; the gradient goes to the first maximum of each window.
fn max_same_axis(x: &Tensor, axis: usize, k: usize) -> Result<Tensor> {
    if k == 1 {
        return Ok(x.clone());
    }
    let n = x.dim(axis)?;
    let mut pad_shape = x.dims().to_vec();
    pad_shape[axis] = k / 2;
    let pad = Tensor::full(f32::NEG_INFINITY, pad_shape, x.device())?.to_dtype(x.dtype())?;
    let xp = Tensor::cat(&[&pad, x, &pad], axis)?;
    let shifted = (0..k)
        .map(|i| xp.narrow(axis, i, n))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let stacked = Tensor::stack(&shifted, 4)?.contiguous()?; // (B, C, H, W, k)
    let first = stacked.argmax_keepdim(4)?;
    Ok(stacked.gather(&first, 4)?.squeeze(4)?)
}

// ---------------------------------------------------------------------------------------------
// Custom ops
// ---------------------------------------------------------------------------------------------

/// Forward: `x -> y`.
struct PoolFwd {
    g: Geom,
    mode: PoolMode,
    op: &'static str,
}

/// Gradient wrt the input: `(x, y, grad_y) -> grad_x`. Max pooling finds each bin's arg-max in
/// the input as the first element equal to the pooled value `y` (the last NaN when `y` is NaN),
/// which is PyTorch's choice; average pooling reads only `grad_y`. No backward of its own;
/// applied only from [`PoolFwd::bwd`].
struct PoolGrad {
    g: Geom,
    mode: PoolMode,
}

impl CustomOp1 for PoolFwd {
    fn name(&self) -> &'static str {
        self.op
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        expect_shape(self.op, l, &self.g.x_shape())?;
        let out = dispatch_float!(s, self.op, |x: T| {
            let x = contiguous(x, l, self.op)?;
            Ok::<_, candle_core::Error>(T::to_cpu_storage_owned(forward::<T>(
                &self.g, self.mode, x,
            )?))
        })?;
        Ok((out, self.g.y_shape()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad_res.contiguous()?;
        let x = arg.contiguous()?;
        let y = res.contiguous()?;
        let op = PoolGrad {
            g: self.g.clone(),
            mode: self.mode,
        };
        Ok(Some(x.apply_op3_no_bwd(&y, &grad, &op)?))
    }
}

impl CustomOp3 for PoolGrad {
    fn name(&self) -> &'static str {
        OP_GRAD
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
        let g = &self.g;
        expect_shape(OP_GRAD, l1, &g.x_shape())?;
        expect_shape(OP_GRAD, l2, &g.y_shape())?;
        expect_shape(OP_GRAD, l3, &g.y_shape())?;
        macro_rules! run {
            ($x:expr, $y:expr, $gy:expr, $T:ty) => {{
                let x = contiguous($x, l1, OP_GRAD)?;
                let y = contiguous($y, l2, OP_GRAD)?;
                let gy = contiguous($gy, l3, OP_GRAD)?;
                let gx = backward::<$T>(g, self.mode, x, y, gy);
                store(<$T as WithDType>::DTYPE, gx, OP_GRAD)?
            }};
        }
        use CpuStorage::{BF16, F16, F32};
        let out = match (s1, s2, s3) {
            (F32(x), F32(y), F32(gy)) => run!(x, y, gy, f32),
            (F16(x), F16(y), F16(gy)) => run!(x, y, gy, f16),
            (BF16(x), BF16(y), BF16(gy)) => run!(x, y, gy, bf16),
            (a, _, b) if a.dtype() != b.dtype() => {
                return Err(candle_core::Error::DTypeMismatchBinaryOp {
                    lhs: a.dtype(),
                    rhs: b.dtype(),
                    op: OP_GRAD,
                })
            }
            (a, _, _) => {
                return Err(candle_core::Error::UnsupportedDTypeForOp(
                    a.dtype(),
                    OP_GRAD,
                ))
            }
        };
        Ok((out, g.x_shape()))
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// Planes handled by one task, so tiny planes (global pooling of 7×7 maps) do not
/// pay one task each.
fn min_planes(plane_len: usize) -> usize {
    (16 * 1024 / plane_len.max(1)).max(1)
}

/// Max that keeps NaN, as PyTorch's `val > max || isnan(val)`.
#[inline(always)]
fn nan_max(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

/// Independent accumulators of the lane reductions, so the loops vectorise.
const LANES: usize = 8;

/// Sum of `v` in f32 (lane-wise, then the lanes).
#[inline(always)]
fn sum_f32<T: Element>(v: &[T]) -> f32 {
    if v.len() < 2 * LANES {
        return v.iter().map(|x| x.to_f32()).sum();
    }
    let mut lanes = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += x.to_f32();
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().map(|x| x.to_f32()).sum::<f32>()
}

/// Maximum of `v` in f32, NaN if `v` holds a NaN.
#[inline(always)]
fn max_f32<T: Element>(v: &[T]) -> f32 {
    if v.len() < 2 * LANES {
        return v
            .iter()
            .fold(f32::NEG_INFINITY, |m, x| nan_max(m, x.to_f32()));
    }
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l = nan_max(*l, x.to_f32());
        }
    }
    let m = lanes.iter().fold(f32::NEG_INFINITY, |m, &l| nan_max(m, l));
    rest.iter().fold(m, |m, x| nan_max(m, x.to_f32()))
}

#[inline(always)]
fn reduce<T: Element>(mode: PoolMode, v: &[T]) -> f32 {
    match mode {
        PoolMode::Avg => sum_f32(v),
        PoolMode::Max => max_f32(v),
    }
}

/// Whether the column bins are one bin over the whole width: every output bin is then a
/// contiguous run of whole input rows.
fn whole_rows(g: &Geom) -> bool {
    g.cols.len() == 1 && g.cols[0] == (0, g.w)
}

/// Pools one plane: for every output row, reduce its input rows into `acc` (length `w`), then
/// reduce `acc` over each column bin. Global and row-wise pooling reduce the contiguous input
/// directly.
fn forward_plane<T: Element>(g: &Geom, mode: PoolMode, x: &[T], y: &mut [T], acc: &mut Vec<f32>) {
    let w = g.w;
    if whole_rows(g) {
        for (&(r0, r1), out) in g.rows.iter().zip(y.iter_mut()) {
            let v = reduce(mode, &x[r0 * w..r1 * w]);
            *out = T::from_f32(match mode {
                PoolMode::Avg => v / ((r1 - r0) * w) as f32,
                PoolMode::Max => v,
            });
        }
        return;
    }
    let wo = g.cols.len();
    acc.clear();
    acc.resize(w, 0.0);
    for (&(r0, r1), yrow) in g.rows.iter().zip(y.chunks_exact_mut(wo)) {
        let first = &x[r0 * w..(r0 + 1) * w];
        for (a, v) in acc.iter_mut().zip(first) {
            *a = v.to_f32();
        }
        for r in r0 + 1..r1 {
            let row = &x[r * w..(r + 1) * w];
            match mode {
                PoolMode::Avg => {
                    for (a, v) in acc.iter_mut().zip(row) {
                        *a += v.to_f32();
                    }
                }
                PoolMode::Max => {
                    for (a, v) in acc.iter_mut().zip(row) {
                        *a = nan_max(*a, v.to_f32());
                    }
                }
            }
        }
        let nr = (r1 - r0) as f32;
        for (&(c0, c1), out) in g.cols.iter().zip(yrow.iter_mut()) {
            let v = reduce(mode, &acc[c0..c1]);
            *out = T::from_f32(match mode {
                PoolMode::Avg => v / (nr * (c1 - c0) as f32),
                PoolMode::Max => v,
            });
        }
    }
}

fn forward<T: Element>(g: &Geom, mode: PoolMode, x: &[T]) -> Result<Vec<T>> {
    let (inp, outp) = (g.in_plane(), g.out_plane());
    let mut y = try_zeros::<T>("adaptive_pool", g.planes() * outp)?;
    let k = min_planes(inp);
    par_tasks(&mut y, k * outp, |i, ys, acc: &mut Vec<f32>| {
        let xs = &x[i * k * inp..];
        for (y, x) in ys.chunks_exact_mut(outp).zip(xs.chunks_exact(inp)) {
            forward_plane(g, mode, x, y, acc);
        }
    });
    Ok(y)
}

/// Gradient of one plane, accumulated in f32 into `gx` (zeroed here).
fn backward_plane<T: Element>(
    g: &Geom,
    mode: PoolMode,
    x: &[T],
    y: &[T],
    gy: &[T],
    gx: &mut [f32],
    acc: &mut Vec<f32>,
) {
    let w = g.w;
    let wo = g.cols.len();
    gx.fill(0.0);
    match mode {
        PoolMode::Avg if whole_rows(g) => {
            for (&(r0, r1), gv) in g.rows.iter().zip(gy) {
                let share = gv.to_f32() / ((r1 - r0) * w) as f32;
                for d in &mut gx[r0 * w..r1 * w] {
                    *d += share;
                }
            }
        }
        PoolMode::Avg => {
            acc.clear();
            acc.resize(w, 0.0);
            for (&(r0, r1), grow) in g.rows.iter().zip(gy.chunks_exact(wo)) {
                // Spread each output's share over its columns once, then add that row to every
                // input row of the bin.
                acc.fill(0.0);
                let nr = (r1 - r0) as f32;
                for (&(c0, c1), gv) in g.cols.iter().zip(grow) {
                    let share = gv.to_f32() / (nr * (c1 - c0) as f32);
                    for a in &mut acc[c0..c1] {
                        *a += share;
                    }
                }
                for r in r0..r1 {
                    for (d, a) in gx[r * w..(r + 1) * w].iter_mut().zip(acc.iter()) {
                        *d += a;
                    }
                }
            }
        }
        PoolMode::Max => {
            let rows = g
                .rows
                .iter()
                .zip(gy.chunks_exact(wo).zip(y.chunks_exact(wo)));
            for (&(r0, r1), (grow, yrow)) in rows {
                for ((&(c0, c1), gv), yv) in g.cols.iter().zip(grow).zip(yrow) {
                    let best = argmax(x, w, (r0, r1), (c0, c1), yv.to_f32());
                    gx[best] += gv.to_f32();
                }
            }
        }
    }
}

/// Index in the plane of the element PyTorch's max pooling picks in a bin whose pooled value is
/// `m`: the first (row-major) element equal to `m`, or the last NaN when `m` is NaN. Finding it
/// by equality stops at the maximum instead of tracking a running arg-max.
fn argmax<T: Element>(
    x: &[T],
    w: usize,
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
    m: f32,
) -> usize {
    if m.is_nan() {
        for r in (r0..r1).rev() {
            if let Some(i) = x[r * w + c0..r * w + c1]
                .iter()
                .rposition(|v| v.to_f32().is_nan())
            {
                return r * w + c0 + i;
            }
        }
    } else {
        for r in r0..r1 {
            if let Some(i) = x[r * w + c0..r * w + c1]
                .iter()
                .position(|v| v.to_f32() == m)
            {
                return r * w + c0 + i;
            }
        }
    }
    // Unreachable when `m` was pooled from this bin; the bin's first element otherwise.
    r0 * w + c0
}

/// The input gradient in f32 (the f32 op returns it as is; f16/bf16 round it once).
fn backward<T: Element>(g: &Geom, mode: PoolMode, x: &[T], y: &[T], gy: &[T]) -> Vec<f32> {
    let (inp, outp) = (g.in_plane(), g.out_plane());
    let mut gx = vec![0f32; g.planes() * inp];
    let k = min_planes(inp);
    par_tasks(&mut gx, k * inp, |i, gxs, acc: &mut Vec<f32>| {
        let (xs, ys, gys) = (&x[i * k * inp..], &y[i * k * outp..], &gy[i * k * outp..]);
        let planes = gxs
            .chunks_exact_mut(inp)
            .zip(xs.chunks_exact(inp))
            .zip(ys.chunks_exact(outp).zip(gys.chunks_exact(outp)));
        for ((gx, x), (y, gy)) in planes {
            backward_plane(g, mode, x, y, gy, gx, acc);
        }
    });
    gx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_bins_match_pytorch_formula() {
        assert_eq!(adaptive_bins(7, 3), vec![(0, 3), (2, 5), (4, 7)]);
        assert_eq!(adaptive_bins(10, 4), vec![(0, 3), (2, 5), (5, 8), (7, 10)]);
        assert_eq!(adaptive_bins(2, 3), vec![(0, 1), (0, 2), (1, 2)]);
        assert_eq!(adaptive_bins(5, 1), vec![(0, 5)]);
        for n in 1..20 {
            for m in 1..20 {
                for (s, e) in adaptive_bins(n, m) {
                    assert!(s < e && e <= n);
                }
            }
        }
    }

    #[test]
    fn same_bins_clip_at_the_borders() {
        assert_eq!(same_bins(4, 5), vec![(0, 3), (0, 4), (0, 4), (1, 4)]);
        assert_eq!(same_bins(3, 1), vec![(0, 1), (1, 2), (2, 3)]);
    }

    #[test]
    fn nan_propagates_and_first_max_wins() -> Result<()> {
        let x = Tensor::new(
            &[[[1f32, 3., 3., f32::NAN, 2., 0.]]],
            &candle_core::Device::Cpu,
        )?;
        let y = adaptive_max_pool1d(&x, 2)?.to_vec3::<f32>()?;
        assert_eq!(y[0][0][0], 3.0);
        assert!(y[0][0][1].is_nan());
        let v = candle_core::Var::from_tensor(&x.narrow(2, 0, 3)?)?;
        let y = adaptive_max_pool1d(v.as_tensor(), 1)?;
        let g = y.sum_all()?.backward()?;
        let gx = g.get(v.as_tensor()).map(|t| t.to_vec3::<f32>());
        assert_eq!(gx.transpose()?, Some(vec![vec![vec![0., 1., 0.]]]));
        Ok(())
    }
}
