//! Max and average pooling with PyTorch's options (stride, padding, dilation, `ceil_mode`,
//! `count_include_pad`, `divisor_override`), 2-D and 3-D, and adaptive 3-D pooling: one CPU
//! kernel, forward **and** backward.
//!
//! # Shapes
//! - 2-D: input `(B, C, H, W)`, output `(B, C, Ho, Wo)`; 3-D: `(B, C, D, H, W)` to
//!   `(B, C, Do, Ho, Wo)`.
//! - On each axis of length $n$ with kernel $k$, stride $s$ (default $k$), padding $p$ and
//!   dilation $d$: $n_o = \lfloor (n + 2p - d(k - 1) - 1) / s \rfloor + 1$, with the ceiling
//!   instead in `ceil_mode`, minus one if that last window would start at or past $n + p$
//!   (inside the right padding only). As in PyTorch, $p \le \lfloor k/2 \rfloor$ and
//!   $n_o \ge 1$ are required.
//! - Adaptive 3-D: output index $i$ of $m$ on an axis of length $n$ covers
//!   $[\lfloor i n / m \rfloor, \lceil (i + 1) n / m \rceil)$.
//!
//! # Tip
//! - **Max or average.** Max pooling keeps the strongest response of each window and sends
//!   the whole gradient to that one position (the first maximum, as PyTorch): good for sparse,
//!   detector-like features (edges, parts), and a little translation invariance. Average pooling
//!   keeps every position's contribution and spreads the gradient evenly: smoother, better
//!   before a classifier head or when the signal is dense. Scherer et al. found max pooling
//!   ahead on object recognition.
//! - **Strided convolution or pooling** (tip 5). A $3 \times 3$ stride-2 convolution learns
//!   its downsampling but costs $9 C_{in} C_{out}$ multiply-adds per output position; a pool
//!   costs $k^2 C$ comparisons there and no parameters, but throws away the detail it does not
//!   select. Springenberg et al. replaced every pool of a CNN by a strided convolution
//!   without losing accuracy; ResNet keeps one max pool in its stem, where the maps are large
//!   and cheap downsampling pays the most.
//! - **Odd sizes: padding and `ceil_mode` decide what the border gets.** A $2 \times 2$ pool of
//!   a $7 \times 7$ map drops the last row and column (output $3 \times 3$) unless `ceil_mode`
//!   adds a partial window (output $4 \times 4$); a $3 \times 3$ stride-2 pool without padding
//!   never centres a window on the border pixels. Padding of max pooling is $-\infty$ (never
//!   selected); for average pooling `count_include_pad` says whether the padding's zeros count
//!   in the divisor (PyTorch's default: yes, which darkens the borders).
//! - **3-D pools for volumes.** Medical scans (CT, MRI) are often anisotropic: slices 3–5 mm
//!   apart with sub-millimetre pixels. A kernel of $(1, 2, 2)$ halves the in-plane resolution
//!   and keeps every slice until the voxels are roughly isotropic, after which $(2, 2, 2)$
//!   pools follow.
//!
//! The kernel reduces, for each output row, the input rows of its window (the $d, h$ taps) into
//! one row buffer — a contiguous, vectorised max or sum over $W$ — and then the buffer's
//! column taps for each output; planes run on candle's worker pool. The backward pass needs no
//! saved indices: average pooling spreads $g / \text{divisor}$ back over each window, max
//! pooling finds the first element of the window equal to the pooled value (the last NaN when
//! it is NaN, PyTorch's choice) and routes the gradient there. f16 and bf16 are reduced in f32.
//! candle's own `max_pool2d` has no padding, dilation or `ceil_mode`, and its backward scales
//! the gradient instead of routing it.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_tricks::ops::{avg_pool2d, max_pool2d, Pool2dConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! // ResNet's stem pool: 3x3, stride 2, padding 1 halves 112 to 56.
//! let x = Tensor::randn(0f32, 1., (1, 4, 112, 112), &Device::Cpu)?;
//! let stem = Pool2dConfig::new([3, 3]).with_stride([2, 2]).with_padding([1, 1]);
//! assert_eq!(max_pool2d(&x, &stem)?.dims(), &[1, 4, 56, 56]);
//! // 7x7 with 2x2 pools: ceil_mode keeps the last row and column.
//! let x = Var::from_tensor(&Tensor::randn(0f32, 1., (1, 1, 7, 7), &Device::Cpu)?)?;
//! let cfg = Pool2dConfig::new([2, 2]);
//! assert_eq!(max_pool2d(&x, &cfg)?.dims(), &[1, 1, 3, 3]);
//! let y = max_pool2d(&x, &cfg.with_ceil_mode(true))?;
//! assert_eq!(y.dims(), &[1, 1, 4, 4]);
//! // Max pooling's gradient goes to one position per window: 16 ones.
//! let g = y.sum_all()?.backward()?;
//! let gx = g.get(&x).expect("gradient").sum_all()?.to_scalar::<f32>()?;
//! assert_eq!(gx, 16.0);
//! // Average pooling spreads it: each of the 9 outputs shares its 1 over its window.
//! let y = avg_pool2d(&x, &cfg)?;
//! let g = y.sum_all()?.backward()?;
//! let gx = g.get(&x).expect("gradient").sum_all()?.to_scalar::<f32>()?;
//! assert!((gx - 9.0).abs() < 1e-5);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Scherer, Müller, Behnke, *Evaluation of Pooling Operations in Convolutional Architectures
//!   for Object Recognition*, ICANN 2010,
//!   <https://doi.org/10.1007/978-3-642-15825-4_10>
//! - Springenberg, Dosovitskiy, Brox, Riedmiller, *Striving for Simplicity: The All
//!   Convolutional Net*, 2014, <https://arxiv.org/abs/1412.6806>
//! - PyTorch, `torch.nn.MaxPool2d`, `torch.nn.AvgPool2d`, `torch.nn.MaxPool3d`,
//!   <https://pytorch.org/docs/stable/generated/torch.nn.MaxPool2d.html>

mod cpu;
pub(crate) mod geometry;
mod op;
mod reference;

pub use reference::{
    adaptive_pool3d_reference, avg_pool2d_reference, avg_pool3d_reference, max_pool2d_reference,
    max_pool3d_reference,
};

use crate::check;
use crate::ops::adaptive_pool::PoolMode;
use crate::ops::backend::{backend, upcast, Op};
use crate::ops::fused::Fused;
use crate::{Error, Result};
use candle_core::{DType, Shape, Tensor};
use geometry::{adaptive_taps, Taps, Window};
use op::PoolFwd;

/// Options of a windowed pool over `N` spatial axes, with PyTorch's names and defaults
/// (`nn.MaxPool2d`, `nn.AvgPool2d`, their 3-D forms). `dilation` is for max pooling only
/// (average pooling requires 1); `count_include_pad` and `divisor_override` are for average
/// pooling only (max pooling ignores them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig<const N: usize> {
    /// Window size per axis.
    pub kernel_size: [usize; N],
    /// Step per axis; `None` means `kernel_size` (PyTorch's default).
    pub stride: Option<[usize; N]>,
    /// Implicit padding on both sides of each axis, at most `kernel_size / 2` ($-\infty$ for max
    /// pooling, zeros for average pooling).
    pub padding: [usize; N],
    /// Spacing of the window's taps (max pooling).
    pub dilation: [usize; N],
    /// Round the output size up: keep a last, partial window.
    pub ceil_mode: bool,
    /// Average pooling: count the padding in the divisor (PyTorch's default `true`).
    pub count_include_pad: bool,
    /// Average pooling: divide every window's sum by this instead.
    pub divisor_override: Option<usize>,
}

/// A 2-D pool's options: `(H, W)` per field.
pub type Pool2dConfig = PoolConfig<2>;
/// A 3-D pool's options: `(D, H, W)` per field.
pub type Pool3dConfig = PoolConfig<3>;

impl<const N: usize> Default for PoolConfig<N> {
    /// A 2-wide window on every axis, stride 2: the common halving pool.
    fn default() -> Self {
        Self::new([2; N])
    }
}

impl<const N: usize> PoolConfig<N> {
    /// A pool with `kernel_size` and PyTorch's defaults: stride = kernel, no padding, dilation
    /// 1, floor mode, `count_include_pad`, no divisor override.
    pub fn new(kernel_size: [usize; N]) -> Self {
        Self {
            kernel_size,
            stride: None,
            padding: [0; N],
            dilation: [1; N],
            ceil_mode: false,
            count_include_pad: true,
            divisor_override: None,
        }
    }

    /// Sets the stride.
    pub fn with_stride(mut self, stride: [usize; N]) -> Self {
        self.stride = Some(stride);
        self
    }

    /// Sets the padding.
    pub fn with_padding(mut self, padding: [usize; N]) -> Self {
        self.padding = padding;
        self
    }

    /// Sets the dilation (max pooling).
    pub fn with_dilation(mut self, dilation: [usize; N]) -> Self {
        self.dilation = dilation;
        self
    }

    /// Sets `ceil_mode`.
    pub fn with_ceil_mode(mut self, ceil_mode: bool) -> Self {
        self.ceil_mode = ceil_mode;
        self
    }

    /// Sets `count_include_pad` (average pooling).
    pub fn with_count_include_pad(mut self, count_include_pad: bool) -> Self {
        self.count_include_pad = count_include_pad;
        self
    }

    /// Sets `divisor_override` (average pooling).
    pub fn with_divisor_override(mut self, divisor: usize) -> Self {
        self.divisor_override = Some(divisor);
        self
    }

    /// The stride in effect: `stride`, or `kernel_size` when unset.
    pub fn strides(&self) -> [usize; N] {
        self.stride.unwrap_or(self.kernel_size)
    }

    /// Checks the options for `mode` (errors name `block`): kernel, stride and dilation > 0,
    /// padding at most half the kernel, dilation 1 and a divisor override > 0 for average
    /// pooling.
    pub fn validate(&self, block: &'static str, mode: PoolMode) -> Result<()> {
        for (i, &stride) in self.strides().iter().enumerate() {
            check::positive(block, &format!("kernel_size[{i}]"), self.kernel_size[i])?;
            check::positive(block, &format!("stride[{i}]"), stride)?;
            check::positive(block, &format!("dilation[{i}]"), self.dilation[i])?;
            if self.padding[i] > self.kernel_size[i] / 2 {
                return Err(Error::config(
                    block,
                    format!(
                        "padding[{i}] = {} must be at most half the kernel size ({} / 2)",
                        self.padding[i], self.kernel_size[i]
                    ),
                ));
            }
            if mode == PoolMode::Avg && self.dilation[i] != 1 {
                return Err(Error::config(
                    block,
                    format!(
                        "average pooling has no dilation: dilation[{i}] must be 1, got {}",
                        self.dilation[i]
                    ),
                ));
            }
        }
        if mode == PoolMode::Avg && self.divisor_override == Some(0) {
            return Err(Error::config(block, "divisor_override must be > 0, got 0"));
        }
        Ok(())
    }

    /// The window of axis `i`.
    fn window(&self, i: usize) -> Window {
        Window {
            kernel: self.kernel_size[i],
            stride: self.strides()[i],
            padding: self.padding[i],
            dilation: self.dilation[i],
        }
    }

    /// The output sizes for the spatial sizes `input`, or an error naming `block` when an
    /// axis has no window (the kernel's extent exceeds the padded input).
    pub fn output_size(&self, block: &'static str, input: [usize; N]) -> Result<[usize; N]> {
        let mut out = [0; N];
        for i in 0..N {
            let w = self.window(i);
            out[i] = w.output_size(input[i], self.ceil_mode).ok_or_else(|| {
                Error::config(
                    block,
                    format!(
                        "output size of spatial axis {i} is below 1: input {}, kernel {}, \
                         stride {}, padding {}, dilation {}, ceil_mode {}",
                        input[i], w.kernel, w.stride, w.padding, w.dilation, self.ceil_mode
                    ),
                )
            })?;
        }
        Ok(out)
    }
}

/// How an average window's sum is divided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Divisor {
    /// By the number of inputs read (no padding counted; adaptive bins).
    Count,
    /// By the window clipped to the padded input (`count_include_pad`).
    Span,
    /// By a fixed number (`divisor_override`).
    Fixed(usize),
}

/// Every size the kernels need: `b·c` volumes `input = (D, H, W)` pooled through the taps of
/// each axis. 2-D pools are volumes of depth 1.
#[derive(Debug, Clone)]
pub(crate) struct Geom {
    b: usize,
    c: usize,
    input: [usize; 3],
    axes: [Vec<Taps>; 3],
    mode: PoolMode,
    divisor: Divisor,
}

impl Geom {
    fn planes(&self) -> usize {
        self.b * self.c
    }
    fn in_plane(&self) -> usize {
        self.input.iter().product()
    }
    fn out_dims(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.axes[a].len())
    }
    fn out_plane(&self) -> usize {
        self.out_dims().iter().product()
    }
    fn x_shape(&self) -> Shape {
        let [d, h, w] = self.input;
        Shape::from((self.b, self.c, d, h, w))
    }
    fn y_shape(&self) -> Shape {
        let [d, h, w] = self.out_dims();
        Shape::from((self.b, self.c, d, h, w))
    }
    /// The divisor of the average window made of `taps` (one per axis); 0 for an empty one.
    /// In f32: a product of spans near `usize::MAX` must not wrap.
    #[inline(always)]
    fn divisor(&self, taps: [&Taps; 3]) -> f32 {
        match self.divisor {
            Divisor::Count => taps.iter().map(|t| t.count as f32).product(),
            Divisor::Span => taps.iter().map(|t| t.span as f32).product(),
            Divisor::Fixed(d) => d as f32,
        }
    }
}

/// Checks the input's rank, emptiness and dtype (f32, f16, bf16 or f64) and the output's
/// size; returns the spatial and the output sizes.
fn validate_input<const N: usize>(
    op: &'static str,
    x: &Tensor,
    out_spatial: impl FnOnce([usize; N]) -> Result<[usize; N]>,
) -> Result<([usize; N], [usize; N])> {
    let pattern = if N == 2 {
        "(B, C, H, W)"
    } else {
        "(B, C, D, H, W)"
    };
    check::rank(op, "input", x, N + 2, pattern)?;
    check::non_empty(op, "input", x)?;
    if x.dtype() != DType::F64 {
        check::float_dtype(op, "input", x)?;
    }
    let mut spatial = [0; N];
    spatial.copy_from_slice(&x.dims()[2..]);
    let out = out_spatial(spatial)?;
    let mut dims = x.dims()[..2].to_vec();
    dims.extend_from_slice(&out);
    check::numel(op, "output", &dims, x.dtype())?;
    Ok((spatial, out))
}

/// Runs the kernel on `x` as `(B, C, D, H, W)` volumes with the taps `axes`.
fn run_kernel(
    x: &Tensor,
    axes: [Vec<Taps>; 3],
    mode: PoolMode,
    divisor: Divisor,
    op: &'static str,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let (b, c) = (x.dims()[0], x.dims()[1]);
    let mut input = [1; 3];
    input[3 - (x.rank() - 2)..].copy_from_slice(&x.dims()[2..]);
    let x5 = x.reshape((b, c, input[0], input[1], input[2]))?;
    let g = Geom {
        b,
        c,
        input,
        axes,
        mode,
        divisor,
    };
    let y = x5.apply_op1(Fused(PoolFwd { g, op }))?;
    if x.rank() == 4 {
        Ok(y.squeeze(2)?)
    } else {
        Ok(y)
    }
}

/// The taps of every axis of a windowed pool, a leading depth of 1 for 2-D.
fn window_axes<const N: usize>(
    cfg: &PoolConfig<N>,
    input: [usize; N],
    out: [usize; N],
) -> [Vec<Taps>; 3] {
    let mut axes: [Vec<Taps>; 3] = [0, 1, 2].map(|_| vec![Taps::single(0)]);
    for i in 0..N {
        axes[3 - N + i] = cfg.window(i).taps(input[i], out[i]);
    }
    axes
}

fn windowed<const N: usize>(
    x: &Tensor,
    cfg: &PoolConfig<N>,
    mode: PoolMode,
    op: &'static str,
) -> Result<Tensor> {
    cfg.validate(op, mode)?;
    let (input, out) = validate_input::<N>(op, x, |s| cfg.output_size(op, s))?;
    // f64 (gradient checks) has no kernel of ours; the composition computes it exactly.
    if x.dtype() == DType::F64 || !backend(Op::Pool, x.device()).is_kernel() {
        let y = reference::windowed(&upcast(x)?, cfg, mode, op)?;
        return Ok(y.to_dtype(x.dtype())?);
    }
    let divisor = match (cfg.divisor_override, cfg.count_include_pad) {
        (Some(d), _) => Divisor::Fixed(d),
        (None, true) => Divisor::Span,
        (None, false) => Divisor::Count,
    };
    run_kernel(x, window_axes(cfg, input, out), mode, divisor, op)
}

const MAX2: &str = "max_pool2d";
const AVG2: &str = "avg_pool2d";
const MAX3: &str = "max_pool3d";
const AVG3: &str = "avg_pool3d";
const AMAX3: &str = "adaptive_max_pool3d";
const AAVG3: &str = "adaptive_avg_pool3d";

/// Max pooling of `(B, C, H, W)` with PyTorch's `F.max_pool2d` options; differentiable (the
/// gradient goes to the first maximum of each window, or its last NaN). f64 runs
/// [`max_pool2d_reference`].
///
/// Errors (naming `max_pool2d`) on a kernel, stride or dilation of 0, padding above half the
/// kernel, an output size below 1, a rank other than 4, a zero-sized dimension, a dtype other
/// than f32/f16/bf16/f64 or an output too large to exist.
pub fn max_pool2d(x: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    windowed(x, cfg, PoolMode::Max, MAX2)
}

/// Average pooling of `(B, C, H, W)` with PyTorch's `F.avg_pool2d` options (`count_include_pad`,
/// `divisor_override`, `ceil_mode`); differentiable.
///
/// Errors name `avg_pool2d`; see [`max_pool2d`], plus a dilation other than 1 and a divisor
/// override of 0.
pub fn avg_pool2d(x: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    windowed(x, cfg, PoolMode::Avg, AVG2)
}

/// Max pooling of `(B, C, D, H, W)` (`F.max_pool3d`); differentiable. Errors name
/// `max_pool3d`; see [`max_pool2d`].
pub fn max_pool3d(x: &Tensor, cfg: &Pool3dConfig) -> Result<Tensor> {
    windowed(x, cfg, PoolMode::Max, MAX3)
}

/// Average pooling of `(B, C, D, H, W)` (`F.avg_pool3d`); differentiable. Errors name
/// `avg_pool3d`; see [`avg_pool2d`].
pub fn avg_pool3d(x: &Tensor, cfg: &Pool3dConfig) -> Result<Tensor> {
    windowed(x, cfg, PoolMode::Avg, AVG3)
}

fn adaptive3d(x: &Tensor, output_size: [usize; 3], mode: PoolMode) -> Result<Tensor> {
    let op = match mode {
        PoolMode::Max => AMAX3,
        PoolMode::Avg => AAVG3,
    };
    let (input, out) = validate_input::<3>(op, x, |_| adaptive_out(op, output_size))?;
    if x.dtype() == DType::F64 || !backend(Op::AdaptivePool, x.device()).is_kernel() {
        let y = reference::adaptive3d(&upcast(x)?, out, mode)?;
        return Ok(y.to_dtype(x.dtype())?);
    }
    let axes = [0, 1, 2].map(|i| adaptive_taps(input[i], out[i]));
    run_kernel(x, axes, mode, Divisor::Count, op)
}

/// Checks adaptive output sizes (each > 0).
fn adaptive_out(op: &'static str, out: [usize; 3]) -> Result<[usize; 3]> {
    for (i, &o) in out.iter().enumerate() {
        check::positive(op, &format!("output_size[{i}]"), o)?;
    }
    Ok(out)
}

/// Adaptive average pooling of `(B, C, D, H, W)` to `output_size = (Do, Ho, Wo)` with
/// PyTorch's bins (`F.adaptive_avg_pool3d`); differentiable.
///
/// Errors (naming `adaptive_avg_pool3d`) on a rank other than 5, a zero-sized dimension, an
/// output size of 0 or a dtype other than f32/f16/bf16/f64 (f64 runs
/// [`adaptive_pool3d_reference`]). Outputs larger than the input are
/// allowed (inputs repeat).
pub fn adaptive_avg_pool3d(x: &Tensor, output_size: [usize; 3]) -> Result<Tensor> {
    adaptive3d(x, output_size, PoolMode::Avg)
}

/// Adaptive max pooling of `(B, C, D, H, W)` to `output_size` (`F.adaptive_max_pool3d`);
/// differentiable (gradient to the first maximum of each bin). Errors name
/// `adaptive_max_pool3d`; see [`adaptive_avg_pool3d`].
pub fn adaptive_max_pool3d(x: &Tensor, output_size: [usize; 3]) -> Result<Tensor> {
    adaptive3d(x, output_size, PoolMode::Max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn config_errors_name_the_op() {
        let bad = [
            (Pool2dConfig::new([0, 2]), "kernel_size[0]"),
            (Pool2dConfig::new([2, 2]).with_stride([2, 0]), "stride[1]"),
            (Pool2dConfig::new([3, 3]).with_padding([2, 1]), "padding[0]"),
            (Pool2dConfig::new([3, 3]).with_dilation([1, 2]), "dilation"),
            (
                Pool2dConfig::new([3, 3]).with_divisor_override(0),
                "divisor",
            ),
        ];
        let x = Tensor::zeros((1, 1, 8, 8), DType::F32, &Device::Cpu).expect("x");
        for (cfg, what) in bad {
            let e = avg_pool2d(&x, &cfg).expect_err(what).to_string();
            assert!(e.contains("avg_pool2d") && e.contains(what), "{e}");
        }
        // Max pooling takes a dilation.
        let y = max_pool2d(&x, &Pool2dConfig::new([3, 3]).with_dilation([1, 2]));
        assert_eq!(y.expect("max").dims(), &[1, 1, 2, 2]);
    }

    #[test]
    fn nan_propagates_and_gradient_goes_to_the_first_max() -> Result<()> {
        let x = Tensor::new(&[1f32, 3., 3., 0., f32::NAN, 2.], &Device::Cpu)?;
        let y = max_pool2d(&x.reshape((1, 1, 1, 6))?, &Pool2dConfig::new([1, 3]))?;
        let y = y.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(y[0], 3.0);
        assert!(y[1].is_nan());
        let v = candle_core::Var::from_tensor(&x.narrow(0, 0, 3)?.reshape((1, 1, 1, 3))?)?;
        let g = max_pool2d(v.as_tensor(), &Pool2dConfig::new([1, 3]))?
            .sum_all()?
            .backward()?;
        let gx = g.get(v.as_tensor()).expect("grad").flatten_all()?;
        assert_eq!(gx.to_vec1::<f32>()?, vec![0., 1., 0.]);
        Ok(())
    }
}
