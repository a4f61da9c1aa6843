//! Transposed convolution, 2-D and 3-D (`F.conv_transpose2d`, `F.conv_transpose3d`), forward
//! **and** backward on CPU, with stride, padding, `output_padding`, dilation and groups.
//!
//! # Shapes
//! - input $x$ `(B, Cin, n…)`, weight `(Cin, Cout/groups, k…)` (PyTorch's layout: the
//!   *input* channels first, the transpose of a convolution's), optional bias `(Cout)`, output
//!   `(B, Cout, N…)`; `n…` and `k…` are `(H, W)` / `(kh, kw)` or `(D, H, W)` / `(kd, kh, kw)`.
//! - Each spatial axis: $N = (n - 1)s - 2p + d(k - 1) + p_{out} + 1$ for stride $s$, padding
//!   $p$, dilation $d$ and output padding $p_{out}$, which must be smaller than the stride or
//!   the dilation (as PyTorch requires).
//!
//! # Tip
//! A transposed convolution is the gradient of a convolution: the convolution with the same
//! weight, stride, padding and dilation maps `(B, Cout, N…)` to `(B, Cin, n…)`, and this op is
//! its adjoint, $y = C^\top x$. That makes it the *learnable* upsampling of decoders (U-Net,
//! FCN) and GAN generators (DCGAN): each input value stamps a weighted $k \times k$ patch into
//! the output, patches $s$ apart. Two things to know:
//!
//! - **Checkerboard artifacts**: when the stride does not divide the kernel (k = 3, s = 2) the
//!   patches overlap unevenly, so some output pixels sum more contributions than their
//!   neighbours and a grid pattern appears, even from a constant input (asserted below). Use
//!   $k$ divisible by $s$ (k = 4, s = 2, p = 1, or k = s = 2), or resize-then-convolve
//!   ([`crate::ops::upsample_bilinear2d()`] or nearest, then a 3×3 convolution), or
//!   [`crate::conv::pixel_shuffle()`].
//! - **`output_padding` disambiguates the size**: a stride-$s$ convolution maps $s$ different
//!   input lengths to the same output length ($\lfloor (N + 2p - e)/s \rfloor + 1$ is constant
//!   over $s$ consecutive $N$), so its transpose cannot know which one to produce. It picks the
//!   smallest; `output_padding` adds up to $s - 1$ to reach the one the encoder had (the extra
//!   positions get only the bias).
//!
//! The kernel computes exactly the convolution's input gradient: per group, a GEMM of the
//! transposed weight $W_g^\top$ with a tile of the input, then col2im, the scatter-add of the columns into the output (the transpose of im2col),
//! on the [`crate::ops::conv3d()`] machinery (tiles in L2, `gemm` micro-kernels, depth slabs
//! scattered in two waves without locks). Its backward is the convolution itself for the input
//! gradient and the convolution's weight gradient for the weight gradient, all matrix products,
//! where candle's `conv_transpose2d` runs its forward as a direct loop and has no groups or 3-D
//! form. On decoder shapes (one thread per side, `docs/PERFORMANCE.md`) forward + backward runs
//! about 5 times faster than `Tensor::conv_transpose2d` and 70 times faster than the 3-D
//! zero-insertion composition, and faster than PyTorch's CPU kernels. f16 and bf16 are widened
//! to f32 once and rounded on store.
//!
//! The common decoder choice $k = s$ without padding (k = s = 2) has its own path: the patches
//! do not overlap, so every output value comes from exactly one input position and one tap.
//! The forward is then, per (batch item, group) and tile, one GEMM into a cache-sized scratch
//! whose values are interleaved straight into the output, each written once (no zeroed scatter
//! target, no accumulation, no crop), and the backward reads the gradient's $k \times k$
//! blocks in place (no padded copy) for both of its GEMMs. Other devices run [`conv_transpose2d_reference`] / [`conv_transpose3d_reference`].
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_tricks::ops::{conv_transpose2d, conv_transpose2d_reference, ConvTranspose2dConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! // k = 4, s = 2, p = 1 doubles the size exactly (the DCGAN / U-Net decoder choice).
//! let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 8, 5, 7), &dev)?)?;
//! let w = Var::from_tensor(&Tensor::randn(0f32, 1., (8, 3, 4, 4), &dev)?)?;
//! let cfg = ConvTranspose2dConfig::default().with_stride(2).with_padding(1);
//! let y = conv_transpose2d(&x, &w, None, &cfg)?;
//! assert_eq!(y.dims(), &[2, 3, 10, 14]);
//! // Same values and gradients as the plain-candle composition.
//! let r = conv_transpose2d_reference(&x, &w, None, &cfg)?;
//! assert!((&y - &r)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
//! let g = y.sqr()?.sum_all()?.backward()?;
//! let gr = r.sqr()?.sum_all()?.backward()?;
//! let d = (g.get(&x).unwrap() - gr.get(&x).unwrap())?.abs()?.max_all()?;
//! assert!(d.to_scalar::<f32>()? < 1e-2);
//!
//! // A stride-2 convolution maps sizes 9 and 10 to 5: output_padding picks 10.
//! let cfg = ConvTranspose2dConfig::default().with_stride(2).with_padding(1);
//! let w3 = Tensor::ones((8, 1, 3, 3), candle_core::DType::F32, &dev)?;
//! let ones = Tensor::ones((1, 8, 5, 5), candle_core::DType::F32, &dev)?;
//! assert_eq!(conv_transpose2d(&ones, &w3, None, &cfg)?.dims(), &[1, 1, 9, 9]);
//! let y = conv_transpose2d(&ones, &w3, None, &cfg.with_output_padding(1))?;
//! assert_eq!(y.dims(), &[1, 1, 10, 10]);
//! // Checkerboard: k = 3 at s = 2 on a constant input gives 1, 2 or 4 overlapping taps.
//! let row = y.get(0)?.get(0)?.get(3)?.to_vec1::<f32>()?;
//! assert_eq!(&row[3..7], &[32.0, 16.0, 32.0, 16.0]);
//! // k = 4 at s = 2 covers every interior pixel evenly.
//! let w4 = Tensor::ones((8, 1, 4, 4), candle_core::DType::F32, &dev)?;
//! let y = conv_transpose2d(&ones, &w4, None, &cfg)?;
//! let row = y.get(0)?.get(0)?.get(4)?.to_vec1::<f32>()?;
//! assert!(row[1..9].iter().all(|&v| v == 32.0));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Dumoulin & Visin, *A guide to convolution arithmetic for deep learning*, 2016 (§4, the
//!   transposed convolution and its output size), <https://arxiv.org/abs/1603.07285>
//! - Odena, Dumoulin & Olah, *Deconvolution and Checkerboard Artifacts*, Distill, 2016,
//!   <https://distill.pub/2016/deconv-checkerboard/>
//! - Radford, Metz & Chintala, *Unsupervised Representation Learning with Deep Convolutional
//!   Generative Adversarial Networks* (DCGAN), 2015, <https://arxiv.org/abs/1511.06434>

use crate::check;
use crate::geometry::checked_extent;
use crate::ops::backend::{backend, upcast, upcast_opt, Op};
use crate::ops::conv3d::Geom;
use crate::ops::fused::Fused;
use crate::ops::{conv2d_reference, conv3d_reference, ConvConfig};
use crate::{Error, Result};
use candle_core::{DType, Tensor};

mod op;

use op::ConvTransposeOp;

const NAMES_2D: [&str; 3] = [
    "conv_transpose2d_grad_input",
    "conv_transpose2d",
    "conv_transpose2d_grad_weight",
];
const NAMES_3D: [&str; 3] = [
    "conv_transpose3d_grad_input",
    "conv_transpose3d",
    "conv_transpose3d_grad_weight",
];

/// Stride, padding, output padding, dilation and groups of a transposed convolution, the same
/// on every spatial axis (PyTorch's arguments and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvTransposeConfig {
    /// Step between the input's patches in the output, > 0. Default 1.
    pub stride: usize,
    /// Zeros the convolution being transposed pads with: the output loses `padding` positions
    /// on both sides of every spatial axis. Default 0.
    pub padding: usize,
    /// Positions added after the end of every spatial axis, smaller than the stride or the
    /// dilation. Default 0.
    pub output_padding: usize,
    /// Spacing between kernel taps, > 0. Default 1.
    pub dilation: usize,
    /// Channel groups, > 0, dividing `Cin` (and, with the weight's `Cout/groups`, `Cout`).
    /// Default 1.
    pub groups: usize,
}

/// The configuration of [`conv_transpose2d`].
pub type ConvTranspose2dConfig = ConvTransposeConfig;
/// The configuration of [`conv_transpose3d`].
pub type ConvTranspose3dConfig = ConvTransposeConfig;

impl Default for ConvTransposeConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            output_padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
}

impl ConvTransposeConfig {
    /// Sets the stride.
    pub fn with_stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the padding.
    pub fn with_padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }

    /// Sets the output padding.
    pub fn with_output_padding(mut self, output_padding: usize) -> Self {
        self.output_padding = output_padding;
        self
    }

    /// Sets the dilation.
    pub fn with_dilation(mut self, dilation: usize) -> Self {
        self.dilation = dilation;
        self
    }

    /// Sets the number of groups.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Checks that stride, dilation and groups are non-zero and that the output padding is
    /// smaller than the stride or the dilation.
    pub fn validate(&self) -> Result<()> {
        self.validate_for("conv_transpose")
    }

    pub(crate) fn validate_for(&self, block: &'static str) -> Result<()> {
        check::stride_dilation(block, self.stride, self.dilation)?;
        check::positive(block, "groups", self.groups)?;
        let op = self.output_padding;
        if op >= self.stride && op >= self.dilation {
            return Err(Error::config(
                block,
                format!(
                    "output_padding {op} must be smaller than the stride {} or the dilation {}",
                    self.stride, self.dilation
                ),
            ));
        }
        Ok(())
    }
}

/// Output length of one spatial axis of a transposed convolution,
/// `(n - 1)·s - 2p + d·(k - 1) + output_padding + 1`, or `None` when it overflows or is not
/// positive.
pub fn conv_transpose_output_size(n: usize, k: usize, cfg: &ConvTransposeConfig) -> Option<usize> {
    let full = n
        .checked_sub(1)?
        .checked_mul(cfg.stride)?
        .checked_add(checked_extent(k, cfg.dilation)?)?
        .checked_add(cfg.output_padding)?;
    full.checked_sub(cfg.padding.checked_mul(2)?)
        .filter(|&n| n > 0)
}

/// Validates a transposed convolution over `spatial` axes and resolves the geometry of the
/// convolution it transposes.
fn geom(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvTransposeConfig,
    allow_f64: bool,
    spatial: usize,
) -> Result<Geom> {
    cfg.validate_for(op)?;
    let (x_pattern, w_pattern) = if spatial == 3 {
        ("(B, Cin, D, H, W)", "(Cin, Cout/groups, kd, kh, kw)")
    } else {
        ("(B, Cin, H, W)", "(Cin, Cout/groups, kh, kw)")
    };
    check::rank(op, "input", x, spatial + 2, x_pattern)?;
    check::rank(op, "weight", w, spatial + 2, w_pattern)?;
    check::non_empty(op, "input", x)?;
    check::non_empty(op, "weight", w)?;
    if !(allow_f64 && x.dtype() == DType::F64) {
        check::float_dtype(op, "input", x)?;
    }
    check::same_dtype_device(op, "weight", x, w)?;
    let (xd, wd) = (x.dims(), w.dims());
    let (b, cin, groups) = (xd[0], xd[1], cfg.groups);
    if wd[0] != cin {
        return Err(Error::shape(
            op,
            "weight",
            format!("({cin}, Cout/groups, k…): dim 0 = the input's {cin} channels"),
            w.shape().clone(),
        ));
    }
    if !cin.is_multiple_of(groups) {
        return Err(Error::config(
            op,
            format!("input channels {cin} are not divisible by groups {groups}"),
        ));
    }
    let Some(cout) = wd[1].checked_mul(groups) else {
        return Err(Error::config(op, "output channels overflow usize"));
    };
    check::bias(op, w, bias, cout)?;
    let (mut n, mut k, mut o) = ([1; 3], [1; 3], [1; 3]);
    let mut pad = [(0, 0); 3];
    for a in 0..spatial {
        let at = 3 - spatial + a;
        let (len, taps) = (xd[2 + a], wd[2 + a]);
        let Some(out) = conv_transpose_output_size(len, taps, cfg) else {
            return Err(Error::shape(
                op,
                "input",
                format!(
                    "spatial axis {a} giving a positive output size (n - 1)·stride - 2·padding \
                     + dilation·(k - 1) + output_padding + 1 within usize (k {taps}, stride {}, \
                     padding {}, dilation {}, output_padding {})",
                    cfg.stride, cfg.padding, cfg.dilation, cfg.output_padding
                ),
                x.shape().clone(),
            ));
        };
        // The transposed convolution's input is the convolution's output and vice versa.
        (n[at], k[at], o[at], pad[at]) = (out, taps, len, (cfg.padding, cfg.padding));
    }
    check::numel(op, "output", &[b, cout, n[0], n[1], n[2]], x.dtype())?;
    // Refuse an output that cannot exist (an impossible size, or one past the memory limit)
    // before anything is allocated. The kernel's padded scratch is at most a few times larger:
    // beyond that it switches to the direct loops (see `Geom::resolved`).
    check::allocatable(op, "output", &[b, cout, n[0], n[1], n[2]], DType::F32)?;
    let (s, d) = (cfg.stride, cfg.dilation);
    if spatial == 2 {
        Ok(Geom::resolved(NAMES_2D, (b, cout, cin, groups), n, k, o, pad, s, d).flat())
    } else {
        Ok(Geom::resolved(
            NAMES_3D,
            (b, cout, cin, groups),
            n,
            k,
            o,
            pad,
            s,
            d,
        ))
    }
}

/// The public ops' body: our kernel where [`backend`] says so, the composition otherwise.
fn run(
    names: [&'static str; 3],
    op_kind: Op,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvTransposeConfig,
    spatial: usize,
) -> Result<Tensor> {
    let g = geom(names[1], x, w, bias, cfg, true, spatial)?;
    if x.dtype() == DType::F64 || !backend(op_kind, x.device()).is_kernel() {
        let (x32, w32, b32) = (upcast(x)?, upcast(w)?, upcast_opt(bias)?);
        let y = reference(names[1], &x32, &w32, b32.as_ref(), cfg, spatial)?;
        return Ok(y.to_dtype(x.dtype())?);
    }
    // A 2-D op runs as a 3-D one of depth 1 (a flat geometry: on the 4-D tensors as they are).
    let y = x
        .contiguous()?
        .apply_op2(&w.contiguous()?, Fused(ConvTransposeOp { g }))?;
    add_bias(y, bias, spatial)
}

fn add_bias(y: Tensor, bias: Option<&Tensor>, spatial: usize) -> Result<Tensor> {
    Ok(match bias {
        Some(b) => {
            let shape: Vec<usize> = [1, b.dim(0)?]
                .into_iter()
                .chain([1; 3])
                .take(2 + spatial)
                .collect();
            y.broadcast_add(&b.reshape(shape)?)?
        }
        None => y,
    })
}

/// 2-D transposed convolution with our kernels (`F.conv_transpose2d(x, w, bias, stride,
/// padding, output_padding, groups, dilation)`); differentiable wrt input, weight and bias.
///
/// `x` is `(B, Cin, H, W)`, `w` `(Cin, Cout/groups, kh, kw)`, `bias` `(Cout)`; the result
/// `(B, Cout, Ho, Wo)` (see the module docs); f64 runs [`conv_transpose2d_reference`]. Errors
/// (naming `conv_transpose2d`) on a wrong rank, a zero-sized dimension, an integer dtype, mixed
/// dtypes or devices, stride, dilation or groups 0, an output padding not smaller than the
/// stride or the dilation, `w.dim(0) != Cin`, `Cin` not divisible by `groups`, a bias not
/// `(Cout)`, or an output size that is not positive or overflows.
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvTranspose2dConfig,
) -> Result<Tensor> {
    run(NAMES_2D, Op::ConvTranspose2d, x, w, bias, cfg, 2)
}

/// 3-D transposed convolution with our kernels (`F.conv_transpose3d`): as
/// [`conv_transpose2d`] with `x` `(B, Cin, D, H, W)` and `w` `(Cin, Cout/groups, kd, kh, kw)`;
/// errors name `conv_transpose3d`, and f64 runs [`conv_transpose3d_reference`].
pub fn conv_transpose3d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvTranspose3dConfig,
) -> Result<Tensor> {
    run(NAMES_3D, Op::ConvTranspose3d, x, w, bias, cfg, 3)
}

/// [`conv_transpose2d`] composed from candle ops: zeros inserted between the input values
/// (stride), zero padding of `d·(k - 1) - p` (cropping where negative, `output_padding` more
/// after), then a stride-1 convolution ([`conv2d_reference`]) with the weight's channel axes
/// swapped per group and its taps flipped. Same arguments, checks and result (errors name
/// `conv_transpose2d_reference`), f64 accepted; differentiable through candle autograd on every
/// device. Slow: the bench baseline and the path on devices without our kernel.
pub fn conv_transpose2d_reference(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvTranspose2dConfig,
) -> Result<Tensor> {
    const OP_REF: &str = "conv_transpose2d_reference";
    geom(OP_REF, x, w, bias, cfg, true, 2)?;
    reference(OP_REF, x, w, bias, cfg, 2)
}

/// [`conv_transpose3d`] composed from candle ops, as [`conv_transpose2d_reference`] with
/// [`conv3d_reference`] for the stride-1 convolution (errors name
/// `conv_transpose3d_reference`).
pub fn conv_transpose3d_reference(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvTranspose3dConfig,
) -> Result<Tensor> {
    const OP_REF: &str = "conv_transpose3d_reference";
    geom(OP_REF, x, w, bias, cfg, true, 3)?;
    reference(OP_REF, x, w, bias, cfg, 3)
}

/// The composition behind the `*_reference` functions, on validated arguments.
fn reference(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvTransposeConfig,
    spatial: usize,
) -> Result<Tensor> {
    let (s, p, d, groups) = (cfg.stride, cfg.padding, cfg.dilation, cfg.groups);
    let mut t = x.clone();
    for a in 0..spatial {
        let ax = 2 + a;
        let n = t.dim(ax)?;
        if s > 1 {
            // Each value followed by s - 1 zeros, the trailing ones dropped.
            let mut dims = t.dims().to_vec();
            dims[ax] = n * s;
            t = t
                .unsqueeze(ax + 1)?
                .pad_with_zeros(ax + 1, 0, s - 1)?
                .reshape(dims)?
                .narrow(ax, 0, (n - 1) * s + 1)?;
        }
        // The full transposed convolution pads e - 1 on both sides; `padding` crops.
        let full = (d * (w.dim(ax)? - 1)) as i128;
        let (lo, hi) = (
            full - p as i128,
            full - p as i128 + cfg.output_padding as i128,
        );
        let len = t.dim(ax)? as i128;
        let crop_lo = (-lo).max(0);
        let crop_hi = (-hi).max(0);
        if crop_lo + crop_hi >= len {
            return Err(Error::shape(
                op,
                "input",
                "a positive output size",
                x.shape().clone(),
            ));
        }
        t = t.narrow(ax, crop_lo as usize, (len - crop_lo - crop_hi) as usize)?;
        t = t.pad_with_zeros(ax, lo.max(0) as usize, hi.max(0) as usize)?;
    }
    // (Cin, Cout/g, k…) -> (Cout, Cin/g, k…), taps reversed.
    let (cin, cog) = (w.dim(0)?, w.dim(1)?);
    let k: Vec<usize> = w.dims()[2..].to_vec();
    let mut grouped = vec![groups, cin / groups, cog];
    grouped.extend(&k);
    let mut swapped = vec![groups * cog, cin / groups];
    swapped.extend(&k);
    let mut wt = w.reshape(grouped)?.transpose(1, 2)?.reshape(swapped)?;
    for (a, &len) in k.iter().enumerate() {
        let rev: Vec<u32> = (0..len as u32).rev().collect();
        let idx = Tensor::new(rev.as_slice(), w.device())?;
        wt = wt.index_select(&idx, 2 + a)?;
    }
    let conv = ConvConfig::default()
        .with_padding(crate::geometry::Padding::Valid)
        .with_dilation(d)
        .with_groups(groups);
    let y = if spatial == 2 {
        conv2d_reference(&t, &wt, conv)?
    } else {
        conv3d_reference(&t, &wt, conv)?
    };
    add_bias(y, bias, spatial)
}
