//! Fused depthwise convolution: one pass per channel plane, forward and backward, on CPU.
//!
//! # Shapes
//! - 2-D: input $x$ `(B, C, H, W)`, weight `(C·m, 1, kh, kw)` (PyTorch's layout for
//!   `groups = C`), output `(B, C·m, Ho, Wo)`. Output channel $o$ reads input channel
//!   $\lfloor o / m \rfloor$, where the channel multiplier is $m = $ `w.dim(0) / C`.
//! - 1-D: input `(B, C, L)`, weight `(C·m, 1, k)`, output `(B, C·m, Lo)`.
//! - $Ho, Wo$ follow [`crate::conv::Padding`]: with padding $p_b + p_a$ on an axis of length
//!   $n$, kernel $k$, stride $s$ and dilation $d$,
//!   $n_{out} = \lfloor (n + p_b + p_a - d(k-1) - 1)/s \rfloor + 1$. `Same` padding may be
//!   asymmetric (the odd zero goes after); the kernel supports any `(before, after)` pair.
//!
//! # Tip
//! A depthwise convolution does only $k_h k_w$ multiply-adds per output value (9 for 3×3), so it
//! is bound by memory traffic, not arithmetic. A generic grouped convolution (im2col + one small
//! matrix product per group) writes and re-reads a $k_h k_w$ times larger buffer and pays its
//! per-group overhead $C$ times, which is why candle's `Tensor::conv2d(.., groups = C)` is one to
//! two orders of magnitude slower than this kernel on MobileNet shapes. Here one task owns one
//! input plane and the $m$ output planes it feeds: it copies the plane into an L1/L2-resident
//! scratch with its zero padding (and, for stride $s > 1$, each row split into its $s$ phases so
//! that every tap reads contiguous memory), then computes each output row in blocks of 32 (or 8)
//! columns whose partial sums over all taps stay in registers and are stored once. The loops are
//! compiled for each SIMD level (AVX-512, AVX2 + FMA, NEON, scalar) and the best one the CPU has
//! runs (no `-C target-cpu` needed).
//! Tasks run on candle's own CPU worker pool.
//!
//! The backward pass is two more kernels in the same layout: the input gradient scatters
//! $g_{out} \cdot w$ into each padded input plane (one task per input plane, so no two threads
//! write the same value) and the weight gradient sums, per output channel and over the batch,
//! the products of $g_{out}$ with the shifted input, in vector partial sums. Neither has a
//! backward of its own: second derivatives are not supported.
//!
//! f16 and bf16 planes are widened to f32 scratch, computed in f32 and rounded once on store.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::conv::Padding;
//! use candle_tricks::ops::{depthwise_conv2d, depthwise_conv2d_reference, DepthwiseConv2dConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let x = Tensor::randn(0f32, 1., (2, 8, 13, 11), &dev)?;
//! let w = Tensor::randn(0f32, 1., (16, 1, 3, 3), &dev)?; // channel multiplier 2
//! let cfg = DepthwiseConv2dConfig::default().with_stride(2);
//! let y = depthwise_conv2d(&x, &w, cfg)?;
//! // `Same` padding: ceil(13 / 2) x ceil(11 / 2).
//! assert_eq!(y.dims(), &[2, 16, 7, 6]);
//! // Same values as the composition of candle ops (the path on devices without our kernel).
//! let r = depthwise_conv2d_reference(&x, &w, cfg)?;
//! let diff = (y - r)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(diff < 1e-4);
//! // Explicit padding 1 with a 3x3 kernel keeps the size at stride 1.
//! let cfg = DepthwiseConv2dConfig::default().with_padding(Padding::Explicit(1));
//! assert_eq!(depthwise_conv2d(&x, &w, cfg)?.dims(), &[2, 16, 13, 11]);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Howard et al., *MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
//!   Applications*, 2017, <https://arxiv.org/abs/1704.04861>
//! - Chollet, *Xception: Deep Learning with Depthwise Separable Convolutions*, 2016,
//!   <https://arxiv.org/abs/1610.02357>

use crate::check;
use crate::geometry::Padding;
use crate::ops::backend::{backend, upcast, Op};
use crate::ops::direct_conv::{padded_copy_fits, Axis, DirectConv};
use crate::ops::fused::Fused;
use crate::{Error, Result};
use candle_core::{DType, Shape, Tensor};

mod backward;
mod forward;
mod op;

use op::DepthwiseOp;

const OP2: &str = "depthwise_conv2d";
const OP1: &str = "depthwise_conv1d";
const OP_GRAD_INPUT: &str = "depthwise_conv_grad_input";
const OP_GRAD_WEIGHT: &str = "depthwise_conv_grad_weight";

// ---------------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------------

/// Stride, padding and dilation of [`depthwise_conv2d`] (the same on both spatial axes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthwiseConv2dConfig {
    /// Step between output positions, > 0. Default 1.
    pub stride: usize,
    /// How each spatial axis is padded with zeros. Default [`Padding::Same`].
    pub padding: Padding,
    /// Spacing between kernel taps, > 0 (1 = a dense kernel). Default 1.
    pub dilation: usize,
}

impl Default for DepthwiseConv2dConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: Padding::Same,
            dilation: 1,
        }
    }
}

impl DepthwiseConv2dConfig {
    check::conv_config_setters!();

    /// Checks that stride and dilation are non-zero.
    pub fn validate(&self) -> Result<()> {
        self.validate_for(OP2)
    }

    pub(crate) fn validate_for(&self, block: &'static str) -> Result<()> {
        check::stride_dilation(block, self.stride, self.dilation)
    }
}

/// Stride, padding and dilation of [`depthwise_conv1d`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthwiseConv1dConfig {
    /// Step between output positions, > 0. Default 1.
    pub stride: usize,
    /// How the sequence is padded with zeros. Default [`Padding::Same`]; a causal convolution
    /// uses `Padding::Explicit(k - 1)` and keeps the first `L` outputs.
    pub padding: Padding,
    /// Spacing between kernel taps, > 0. Default 1.
    pub dilation: usize,
}

impl Default for DepthwiseConv1dConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: Padding::Same,
            dilation: 1,
        }
    }
}

impl DepthwiseConv1dConfig {
    check::conv_config_setters!();

    /// Checks that stride and dilation are non-zero.
    pub fn validate(&self) -> Result<()> {
        self.validate_for(OP1)
    }

    pub(crate) fn validate_for(&self, block: &'static str) -> Result<()> {
        check::stride_dilation(block, self.stride, self.dilation)
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry and validation
// ---------------------------------------------------------------------------------------------

/// Every size a kernel needs, fixed by the public function once the input is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geom {
    b: usize,
    c: usize,
    m: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    sy: usize,
    sx: usize,
    dy: usize,
    dx: usize,
    pt: usize,
    pb: usize,
    pl: usize,
    pr: usize,
    /// Compute with [`DirectConv`]: the padded, phased scratch plane of [`Plan`] would be far
    /// larger than the tensors (a huge stride, dilation or padding with a small output).
    direct: bool,
}

impl Geom {
    /// Resolves `direct` once every other size is known, and checks the output's size.
    fn finish(mut self, op: &'static str, dtype: DType) -> Result<Self> {
        check::numel(op, "output", &[self.b, self.cm(), self.ho, self.wo], dtype)?;
        let padded = (|| {
            let hp = self.pt.checked_add(self.h)?.checked_add(self.pb)?;
            let wp = self.pl.checked_add(self.w)?.checked_add(self.pr)?;
            hp.checked_mul(wp.div_ceil(self.sx).checked_mul(self.sx)?)
        })();
        self.direct = !padded_copy_fits(padded, self.in_plane(), self.m * self.out_plane());
        Ok(self)
    }
    fn direct_conv(&self) -> DirectConv {
        let unit = Axis {
            n: 1,
            k: 1,
            o: 1,
            s: 1,
            d: 1,
            before: 0,
        };
        DirectConv {
            b: self.b,
            cin: self.c,
            cout: self.cm(),
            groups: self.c,
            axes: [
                unit,
                Axis {
                    n: self.h,
                    k: self.kh,
                    o: self.ho,
                    s: self.sy,
                    d: self.dy,
                    before: self.pt,
                },
                Axis {
                    n: self.w,
                    k: self.kw,
                    o: self.wo,
                    s: self.sx,
                    d: self.dx,
                    before: self.pl,
                },
            ],
        }
    }
    fn cm(&self) -> usize {
        self.c * self.m
    }
    fn in_plane(&self) -> usize {
        self.h * self.w
    }
    fn out_plane(&self) -> usize {
        self.ho * self.wo
    }
    fn taps(&self) -> usize {
        self.kh * self.kw
    }
    fn x_shape(&self) -> Shape {
        Shape::from((self.b, self.c, self.h, self.w))
    }
    fn w_shape(&self) -> Shape {
        Shape::from((self.cm(), 1, self.kh, self.kw))
    }
    fn y_shape(&self) -> Shape {
        Shape::from((self.b, self.cm(), self.ho, self.wo))
    }
}

/// Validates rank, sizes, dtypes and config shared by the 1-D and 2-D ops; returns `(C, m)`.
fn validate_common(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    rank: usize,
    x_pattern: &str,
    w_pattern: &str,
    allow_f64: bool,
) -> Result<(usize, usize)> {
    check::rank(op, "input", x, rank, x_pattern)?;
    check::rank(op, "weight", w, rank, w_pattern)?;
    check::non_empty(op, "input", x)?;
    check::non_empty(op, "weight", w)?;
    if !(allow_f64 && x.dtype() == DType::F64) {
        check::float_dtype(op, "input", x)?;
    }
    check::same_dtype_device(op, "weight", x, w)?;
    let c = x.dim(1)?;
    let (cm, one) = (w.dim(0)?, w.dim(1)?);
    if one != 1 || cm % c != 0 {
        return Err(Error::shape(
            op,
            "weight",
            format!("{w_pattern} with C = {c} (a non-zero multiple of C, then 1)"),
            w.shape().clone(),
        ));
    }
    Ok((c, cm / c))
}

fn geom2d(x: &Tensor, w: &Tensor, cfg: DepthwiseConv2dConfig, allow_f64: bool) -> Result<Geom> {
    let (c, m) = validate_common(OP2, x, w, 4, "(B, C, H, W)", "(C·m, 1, kh, kw)", allow_f64)?;
    cfg.validate_for(OP2)?;
    let (b, _, h, wd) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let (s, d) = (cfg.stride, cfg.dilation);
    let (pt, pb, ho) = check::fit_axis(OP2, x, "H", cfg.padding, h, kh, s, d)?;
    let (pl, pr, wo) = check::fit_axis(OP2, x, "W", cfg.padding, wd, kw, s, d)?;
    Geom {
        b,
        c,
        m,
        h,
        w: wd,
        kh,
        kw,
        ho,
        wo,
        sy: s,
        sx: s,
        dy: d,
        dx: d,
        pt,
        pb,
        pl,
        pr,
        direct: false,
    }
    .finish(OP2, x.dtype())
}

fn geom1d(x: &Tensor, w: &Tensor, cfg: DepthwiseConv1dConfig, allow_f64: bool) -> Result<Geom> {
    let (c, m) = validate_common(OP1, x, w, 3, "(B, C, L)", "(C·m, 1, k)", allow_f64)?;
    cfg.validate_for(OP1)?;
    let (b, _, l) = x.dims3()?;
    let (_, _, k) = w.dims3()?;
    let (s, d) = (cfg.stride, cfg.dilation);
    let (pl, pr, lo) = check::fit_axis(OP1, x, "L", cfg.padding, l, k, s, d)?;
    Geom {
        b,
        c,
        m,
        h: 1,
        w: l,
        kh: 1,
        kw: k,
        ho: 1,
        wo: lo,
        sy: 1,
        sx: s,
        dy: 1,
        dx: d,
        pt: 0,
        pb: 0,
        pl,
        pr,
        direct: false,
    }
    .finish(OP1, x.dtype())
}

// ---------------------------------------------------------------------------------------------
// Public ops
// ---------------------------------------------------------------------------------------------

/// Depthwise 2-D convolution (`groups = C`) with our fused kernel; differentiable wrt input and
/// weight.
///
/// `x` is `(B, C, H, W)`, `w` is `(C·m, 1, kh, kw)` and the result `(B, C·m, Ho, Wo)`. Errors
/// (naming `depthwise_conv2d`) on a wrong rank, a weight whose first dimension is not a multiple
/// of `C` or whose second is not 1, a zero-sized dimension, a dtype other than f32/f16/bf16, mixed
/// dtypes or devices, stride or dilation 0, or a kernel larger than the padded input.
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, cfg: DepthwiseConv2dConfig) -> Result<Tensor> {
    let g = geom2d(x, w, cfg, false)?;
    if !backend(Op::DepthwiseConv2d, x.device()).is_kernel() {
        let y = depthwise_conv2d_reference(&upcast(x)?, &upcast(w)?, cfg)?;
        return Ok(y.to_dtype(x.dtype())?);
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    Ok(x.apply_op2(&w, Fused(DepthwiseOp::forward(g)))?)
}

/// Depthwise 1-D convolution (`groups = C`) with the same kernel as [`depthwise_conv2d`] (a
/// single row); differentiable wrt input and weight.
///
/// `x` is `(B, C, L)`, `w` is `(C·m, 1, k)` and the result `(B, C·m, Lo)`. A causal convolution
/// (Mamba) is `Padding::Explicit(k - 1)` followed by `narrow(2, 0, L)`. Errors name
/// `depthwise_conv1d`.
pub fn depthwise_conv1d(x: &Tensor, w: &Tensor, cfg: DepthwiseConv1dConfig) -> Result<Tensor> {
    let g = geom1d(x, w, cfg, false)?;
    if !backend(Op::DepthwiseConv1d, x.device()).is_kernel() {
        let y = depthwise_conv1d_reference(&upcast(x)?, &upcast(w)?, cfg)?;
        return Ok(y.to_dtype(x.dtype())?);
    }
    let x = x.contiguous()?.unsqueeze(2)?;
    let w = w.contiguous()?.unsqueeze(2)?;
    Ok(x.apply_op2(&w, Fused(DepthwiseOp::forward(g)))?
        .squeeze(2)?)
}

/// Depthwise 2-D convolution composed from candle tensor ops: the input is zero-padded
/// (explicitly, so asymmetric `Same` padding works) and, for each of the `kh·kw` taps, the
/// shifted and strided slice it reads is multiplied by that tap's per-channel weight and summed.
/// Same arguments, checks and result as [`depthwise_conv2d`], except that f64 is accepted too
/// (for gradient checks); differentiable through candle's autograd on every device, and the
/// path of [`depthwise_conv2d`] where our kernel does not run (see [`crate::ops::backend()`]).
/// Slow: `kh·kw` passes over the output.
pub fn depthwise_conv2d_reference(
    x: &Tensor,
    w: &Tensor,
    cfg: DepthwiseConv2dConfig,
) -> Result<Tensor> {
    let g = geom2d(x, w, cfg, true)?;
    taps_reference(x, w, &g)
}

/// Depthwise 1-D convolution composed from candle tensor ops (the 1-D case of
/// [`depthwise_conv2d_reference`]). Same arguments, checks and result as [`depthwise_conv1d`],
/// except that f64 is accepted too; slow, and the path of [`depthwise_conv1d`] where our kernel
/// does not run.
pub fn depthwise_conv1d_reference(
    x: &Tensor,
    w: &Tensor,
    cfg: DepthwiseConv1dConfig,
) -> Result<Tensor> {
    let g = geom1d(x, w, cfg, true)?;
    let y = taps_reference(&x.unsqueeze(2)?, &w.unsqueeze(2)?, &g)?;
    Ok(y.squeeze(2)?)
}

/// Elements `start + o·step` for `o < count` along `dim` (all inside `t`, as the output size
/// guarantees): a narrow for unit steps or one element, otherwise an `index_select` (no
/// intermediate sized by the step, so a huge stride costs nothing).
fn strided(t: &Tensor, dim: usize, start: usize, count: usize, step: usize) -> Result<Tensor> {
    if step == 1 || count == 1 {
        return Ok(t.narrow(dim, start, count)?);
    }
    let idx = (0..count)
        .map(|o| u32::try_from(start + o * step))
        .collect::<std::result::Result<Vec<u32>, _>>()
        .map_err(|_| Error::config(OP2, "reference: an index beyond u32"))?;
    Ok(t.contiguous()?
        .index_select(&Tensor::new(idx, t.device())?, dim)?)
}

/// The depthwise convolution of `x` `(B, C, H, W)` with `w` `(C·m, 1, kh, kw)` as a sum over the
/// taps of `slice · w[:, 0, i, j]`, with plain candle ops (pad, narrow, reshape, broadcast_mul).
fn taps_reference(x: &Tensor, w: &Tensor, g: &Geom) -> Result<Tensor> {
    let cm = g.cm();
    let xp = x
        .pad_with_zeros(2, g.pt, g.pb)?
        .pad_with_zeros(3, g.pl, g.pr)?;
    let xp = if g.m > 1 {
        // Output channel c·m + j reads input channel c.
        let (hp, wp) = (xp.dim(2)?, xp.dim(3)?);
        xp.unsqueeze(2)?
            .broadcast_as((g.b, g.c, g.m, hp, wp))?
            .reshape((g.b, cm, hp, wp))?
    } else {
        xp
    };
    let mut acc: Option<Tensor> = None;
    for i in 0..g.kh {
        for j in 0..g.kw {
            // Rows i·dy + oy·sy for oy < Ho and columns j·dx + ox·sx for ox < Wo.
            let s = strided(&xp, 2, i * g.dy, g.ho, g.sy)?;
            let s = strided(&s, 3, j * g.dx, g.wo, g.sx)?;
            let tap = w.narrow(2, i, 1)?.narrow(3, j, 1)?.reshape((1, cm, 1, 1))?;
            let y = s.broadcast_mul(&tap)?;
            acc = Some(match acc {
                None => y,
                Some(a) => (a + y)?,
            });
        }
    }
    acc.ok_or_else(|| Error::shape(OP2, "weight", "kh, kw > 0", w.shape().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let cfg = DepthwiseConv2dConfig::default();
        assert_eq!(
            (cfg.stride, cfg.padding, cfg.dilation),
            (1, Padding::Same, 1)
        );
        assert!(cfg.validate().is_ok());
        let err = cfg.with_stride(0).validate().unwrap_err().to_string();
        assert!(
            err.contains("depthwise_conv2d") && err.contains("stride"),
            "{err}"
        );
        let err = DepthwiseConv1dConfig::default()
            .with_dilation(0)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("depthwise_conv1d") && err.contains("dilation"),
            "{err}"
        );
    }
}
