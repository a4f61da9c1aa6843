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
use crate::ops::backend::{backend, upcast, Op};
use crate::ops::fused::Fused;
use crate::{Error, Result};
use candle_core::{DType, Shape, Tensor};

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
    let y = x4.apply_op1(Fused(PoolFwd { g, mode, op }))?;
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
    let mode = PoolMode::Max;
    Ok(x.apply_op1(Fused(PoolFwd { g, mode, op: SAME }))?)
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

mod cpu;
mod op;
use op::PoolFwd;

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
