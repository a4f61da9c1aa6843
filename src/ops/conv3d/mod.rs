//! 3-D convolution (candle has none): vol2col + `gemm` for dense and grouped filters, a direct
//! loop kernel for depthwise ones, forward and backward, multi-threaded on CPU.
//!
//! # Shapes
//! - input $x$ `(B, Cin, D, H, W)`, weight `(Cout, Cin/groups, kd, kh, kw)` (PyTorch's layout),
//!   output `(B, Cout, Do, Ho, Wo)`. Output channel $o$ of group $g = \lfloor o / (Cout/groups)
//!   \rfloor$ reads the input channels $g \cdot Cin/groups \dots (g+1) \cdot Cin/groups - 1$.
//! - Each spatial axis of length $n$ with kernel $k$, stride $s$, dilation $d$ and padding
//!   $p_b + p_a$ from [`crate::conv::Padding`] gives $n_{out} = \lfloor (n + p_b + p_a - d(k-1) -
//!   1)/s \rfloor + 1$. `Same` may pad asymmetrically (the odd zero goes after).
//!
//! # Tip
//! A 3-D convolution is a matrix product in disguise: unfolding every receptive field of a
//! group into a column ("vol2col") turns it into $W_g \cdot \mathrm{col}$ with $W_g$ of size
//! $C_{out}/G \times K$, $K = (C_{in}/G)\thinspace k_d k_h k_w$, and the column matrix $K \times
//! D_o H_o W_o$. The column matrix is $k_d k_h k_w$ times larger than the input (27 times for
//! 3×3×3), so it is never built whole: the output positions are cut into tiles whose columns
//! fit in L2 (about 512 KiB), and each task (on candle's CPU worker pool) unfolds one tile and multiplies it with the
//! `gemm` crate (runtime-dispatched SIMD micro-kernels, as in candle's matmul). The input is
//! first copied into a zero-padded buffer (about 1.2 times the input for 3×3×3 on 32³), so any
//! padding, asymmetric `Same` included, costs nothing in the inner loops, which copy whole rows.
//! Measured on 2 cores (3×3×3, 16 → 16 channels, 32³), the forward pass runs at about 100
//! GFLOP/s, close to what `gemm` reaches on a large square product, and forward + backward is
//! about 12 times faster than the composition of per-depth-tap 2-D convolutions
//! ([`conv3d_reference`]).
//!
//! The backward pass reuses the same pieces: the weight gradient is
//! $\sum_{tiles} g_{out} \cdot \mathrm{col}^\top$ (a per-thread accumulator, summed at the end);
//! the input gradient is $\mathrm{col2vol}(W_g^\top \cdot g_{out})$, a scatter-add. Two tiles
//! scatter into the same input only if their output depths are closer than the kernel's depth
//! extent, so the output depth axis is cut into slabs at least that thick and the even slabs
//! run in parallel, then the odd ones: no locks, no atomics, no per-thread copy of the input
//! gradient. The two gradient ops have no backward of their own (no second derivatives).
//!
//! A non-overlapping convolution (kernel = stride on every axis, no padding or dilation, the
//! input tiled exactly: a ViT patch embedding) skips the padded copy, its column tiles being
//! read straight from the input, and its input gradient writes each value once instead of
//! scatter-adding into a zeroed buffer (the forward of a k = s transposed convolution).
//!
//! With one input channel per group (depthwise, `groups = Cin`, any channel multiplier) each
//! output value is only $k_d k_h k_w$ multiply-adds and a column matrix would be pure memory
//! traffic, so those convolutions take a direct kernel instead: one task per input volume and
//! the output volumes it feeds (forward and input gradient) or per output channel (weight
//! gradient), the inner loop an AXPY or dot product over a whole output row, compiled for
//! the best SIMD level the CPU has.
//!
//! f16 and bf16 tensors are widened to f32 once, computed in f32 and rounded on store.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::conv::Padding;
//! use candle_tricks::ops::{conv3d, conv3d_reference, Conv3dConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let x = Tensor::randn(0f32, 1., (2, 4, 7, 9, 5), &dev)?;
//! let w = Tensor::randn(0f32, 1., (6, 2, 3, 3, 3), &dev)?; // groups = 2
//! let cfg = Conv3dConfig::default().with_stride(2).with_groups(2);
//! let y = conv3d(&x, &w, cfg)?;
//! // `Same` padding: ceil(n / 2) on every axis.
//! assert_eq!(y.dims(), &[2, 6, 4, 5, 3]);
//! // The same values as the plain-candle composition.
//! let r = conv3d_reference(&x, &w, cfg)?;
//! let diff = (y - r)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(diff < 1e-4);
//! // Valid padding shrinks every axis by the kernel extent minus one.
//! let cfg = Conv3dConfig::default().with_padding(Padding::Valid).with_groups(2);
//! assert_eq!(conv3d(&x, &w, cfg)?.dims(), &[2, 6, 5, 7, 3]);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Tran et al., *Learning Spatiotemporal Features with 3D Convolutional Networks* (C3D), 2015,
//!   <https://arxiv.org/abs/1412.0767>
//! - Chellapilla, Puri & Simard, *High Performance Convolutional Neural Networks for Document
//!   Processing*, 2006 (the unfold-then-multiply formulation),
//!   <https://inria.hal.science/inria-00112631>

use crate::check;
use crate::cpu::{par_fold, par_tasks, try_zeros};
use crate::geometry::{extent, Padding};
use crate::ops::backend::{backend, upcast, Op};
use crate::ops::direct_conv::{padded_copy_fits, Axis, DirectConv};
use crate::ops::fused::Fused;
use crate::{Error, Result};
use candle_core::{DType, Shape, Tensor};

mod cpu;
mod dense;
mod depthwise;
mod op;
mod patches;

pub(crate) use op::{Conv3dOp, Role};

const OP: &str = "conv3d";
const OP_REF: &str = "conv3d_reference";
/// The kernel's op names (forward, input gradient, weight gradient) by spatial axes.
const NAMES_3D: [&str; 3] = [OP, "conv3d_grad_input", "conv3d_grad_weight"];
const NAMES_2D: [&str; 3] = ["conv2d", "conv2d_grad_input", "conv2d_grad_weight"];

/// Column-matrix floats per task (512 KiB), the scratch bound of the dense path.
const COL_TARGET: usize = 1 << 17;
/// Fewest output positions per tile (below this a gemm call costs more than it computes).
const MIN_TILE: usize = 64;
/// Most output positions per tile.
const MAX_TILE: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// Stride, padding, dilation and groups of a convolution, the same on every spatial axis:
/// [`conv3d`] (as [`Conv3dConfig`]) and [`crate::ops::conv2d()`] (as
/// [`crate::ops::Conv2dConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvConfig {
    /// Step between output positions, > 0. Default 1.
    pub stride: usize,
    /// How each spatial axis is padded with zeros. Default [`Padding::Same`].
    pub padding: Padding,
    /// Spacing between kernel taps, > 0 (1 = a dense kernel). Default 1.
    pub dilation: usize,
    /// Number of channel groups, > 0, dividing both channel counts (`Cin` = depthwise). Default 1.
    pub groups: usize,
}

/// The configuration of [`conv3d`].
pub type Conv3dConfig = ConvConfig;

impl Default for ConvConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: Padding::Same,
            dilation: 1,
            groups: 1,
        }
    }
}

impl ConvConfig {
    check::conv_config_setters!();

    /// Sets the number of groups.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Checks that stride, dilation and groups are non-zero.
    pub fn validate(&self) -> Result<()> {
        self.validate_for(OP)
    }

    pub(crate) fn validate_for(&self, block: &'static str) -> Result<()> {
        check::stride_dilation(block, self.stride, self.dilation)?;
        check::positive(block, "groups", self.groups)
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry and validation
// ---------------------------------------------------------------------------------------------

/// Every size the kernels need, fixed by the public function once the input is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geom {
    /// The op names of the [`op::Role`]s (forward, input gradient, weight gradient), in errors.
    names: [&'static str; 3],
    b: usize,
    cin: usize,
    cout: usize,
    groups: usize,
    /// Input `(D, H, W)`.
    n: [usize; 3],
    /// Kernel `(kd, kh, kw)`.
    pub(super) k: [usize; 3],
    /// Output `(Do, Ho, Wo)`.
    pub(super) o: [usize; 3],
    /// Padding `(before, after)` per axis.
    pub(super) pad: [(usize, usize); 3],
    stride: usize,
    dilation: usize,
    /// Compute with [`DirectConv`]: the padded input copy of the fast paths would be far larger
    /// than the tensors (a huge stride, dilation or padding with a small output).
    direct: bool,
    /// The op's tensors are 2-D ones, `(B, C, H, W)`: the unit depth axis is left out of the
    /// shapes it checks and returns (no reshape nodes around it in the autograd graph).
    flat: bool,
}

impl Geom {
    fn direct_conv(&self) -> DirectConv {
        let axis = |a: usize| Axis {
            n: self.n[a],
            k: self.k[a],
            o: self.o[a],
            s: self.stride,
            d: self.dilation,
            before: self.pad[a].0,
        };
        DirectConv {
            b: self.b,
            cin: self.cin,
            cout: self.cout,
            groups: self.groups,
            axes: [axis(0), axis(1), axis(2)],
        }
    }
    /// The geometry of a convolution whose sizes are already validated and resolved: `n` the
    /// input, `k` the kernel, `o` the output and `pad` the `(before, after)` zeros of each
    /// spatial axis (a 2-D convolution has a unit depth axis). `o` may be smaller than what
    /// the padded input allows (the transposed convolution's `output_padding` leaves input
    /// values no output reads). `names` are the op names of the three roles, in errors.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn resolved(
        names: [&'static str; 3],
        (b, cin, cout, groups): (usize, usize, usize, usize),
        n: [usize; 3],
        k: [usize; 3],
        o: [usize; 3],
        pad: [(usize, usize); 3],
        stride: usize,
        dilation: usize,
    ) -> Geom {
        // The fast paths copy every input volume into its padded, phased layout ([`padded`]).
        let padded_len = (0..3).try_fold(1usize, |acc, a| {
            let len = n[a].checked_add(pad[a].0)?.checked_add(pad[a].1)?;
            let len = if a == 2 {
                len.div_ceil(stride).checked_mul(stride)?
            } else {
                len
            };
            acc.checked_mul(len)
        });
        let direct = !padded_copy_fits(
            padded_len,
            n.iter().product(),
            cout / groups * o.iter().product::<usize>(),
        );
        Geom {
            names,
            b,
            cin,
            cout,
            groups,
            n,
            k,
            o,
            pad,
            stride,
            dilation,
            direct,
            flat: false,
        }
    }

    /// The same geometry on 2-D tensors (see `flat`); its depth axis must be the unit one.
    pub(crate) fn flat(self) -> Geom {
        Geom { flat: true, ..self }
    }

    /// The op names of [`op::Role`]s for this geometry's public op.
    fn names(&self) -> [&'static str; 3] {
        self.names
    }
    /// A 1×1(×1) kernel at stride 1 without padding: the column matrix is the input itself.
    fn pointwise(&self) -> bool {
        self.taps() == 1 && self.stride == 1 && self.pad.iter().all(|&p| p == (0, 0))
    }
    fn cig(&self) -> usize {
        self.cin / self.groups
    }
    fn cog(&self) -> usize {
        self.cout / self.groups
    }
    fn out_vol(&self) -> usize {
        self.o[0] * self.o[1] * self.o[2]
    }
    fn taps(&self) -> usize {
        self.k[0] * self.k[1] * self.k[2]
    }
    /// Rows of a group's column matrix (the gemm reduction length).
    fn kg(&self) -> usize {
        self.cig() * self.taps()
    }
    /// `(a, b, spatial…)`, without the depth axis when `flat`.
    fn shape(&self, a: usize, b: usize, [d, h, w]: [usize; 3]) -> Shape {
        if self.flat {
            Shape::from((a, b, h, w))
        } else {
            Shape::from((a, b, d, h, w))
        }
    }
    fn x_shape(&self) -> Shape {
        self.shape(self.b, self.cin, self.n)
    }
    fn w_shape(&self) -> Shape {
        self.shape(self.cout, self.cig(), self.k)
    }
    fn y_shape(&self) -> Shape {
        self.shape(self.b, self.cout, self.o)
    }
    /// Output positions per dense tile: columns within [`COL_TARGET`], and enough tiles to keep
    /// every thread busy.
    fn tile(&self) -> usize {
        let by_memory = (COL_TARGET / self.kg().max(1)).clamp(MIN_TILE, MAX_TILE);
        let want_tasks = 4 * crate::cpu::num_threads();
        let per_volume = want_tasks.div_ceil(self.b * self.groups).max(1);
        let by_threads = self.out_vol().div_ceil(per_volume).max(MIN_TILE);
        by_memory.min(by_threads).min(self.out_vol()).max(1)
    }
}

/// Validates the arguments of a convolution over `spatial` axes (3: [`conv3d`]; 2:
/// [`crate::ops::conv2d()`], resolved as depth 1 with a 1-deep kernel) and resolves the geometry.
pub(super) fn geom(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    cfg: ConvConfig,
    allow_f64: bool,
    spatial: usize,
) -> Result<Geom> {
    cfg.validate_for(op)?;
    let (x_pattern, w_pattern, taps) = if spatial == 3 {
        (
            "(B, Cin, D, H, W)",
            "(Cout, Cin/groups, kd, kh, kw)",
            "kd, kh, kw",
        )
    } else {
        ("(B, Cin, H, W)", "(Cout, Cin/groups, kh, kw)", "kh, kw")
    };
    check::rank(op, "input", x, spatial + 2, x_pattern)?;
    check::rank(op, "weight", w, spatial + 2, w_pattern)?;
    check::non_empty(op, "input", x)?;
    check::non_empty(op, "weight", w)?;
    if !(allow_f64 && x.dtype() == DType::F64) {
        check::float_dtype(op, "input", x)?;
    }
    check::same_dtype_device(op, "weight", x, w)?;
    // A 2-D convolution is a 3-D one of depth 1 with a 1-deep kernel.
    let with_depth = |dims: &[usize]| {
        let mut v = dims.to_vec();
        if spatial == 2 {
            v.insert(2, 1);
        }
        v
    };
    let (xd, wd) = (with_depth(x.dims()), with_depth(w.dims()));
    let (b, cin, n) = (xd[0], xd[1], [xd[2], xd[3], xd[4]]);
    let (cout, cig, k) = (wd[0], wd[1], [wd[2], wd[3], wd[4]]);
    let groups = cfg.groups;
    if !cin.is_multiple_of(groups) {
        return Err(Error::config(
            op,
            format!("input channels {cin} are not divisible by groups {groups}"),
        ));
    }
    if !cout.is_multiple_of(groups) {
        return Err(Error::config(
            op,
            format!("output channels {cout} (weight dim 0) are not divisible by groups {groups}"),
        ));
    }
    if cig != cin / groups {
        return Err(Error::shape(
            op,
            "weight",
            format!(
                "({cout}, Cin/groups = {}, {taps}) for Cin = {cin}, groups = {groups}",
                cin / groups
            ),
            w.shape().clone(),
        ));
    }
    let (s, dl) = (cfg.stride, cfg.dilation);
    let mut o = [1; 3];
    let mut pad = [(0, 0); 3];
    for a in 3 - spatial..3 {
        let (before, after, out) =
            check::fit_axis(op, x, ["D", "H", "W"][a], cfg.padding, n[a], k[a], s, dl)?;
        o[a] = out;
        pad[a] = (before, after);
    }
    check::numel(op, "output", &[b, cout, o[0], o[1], o[2]], x.dtype())?;
    if spatial == 2 {
        Ok(Geom::resolved(NAMES_2D, (b, cin, cout, groups), n, k, o, pad, s, dl).flat())
    } else {
        Ok(Geom::resolved(
            NAMES_3D,
            (b, cin, cout, groups),
            n,
            k,
            o,
            pad,
            s,
            dl,
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Public ops
// ---------------------------------------------------------------------------------------------

/// 3-D convolution with our kernels; differentiable wrt input and weight.
///
/// `x` is `(B, Cin, D, H, W)`, `w` is `(Cout, Cin/groups, kd, kh, kw)` and the result
/// `(B, Cout, Do, Ho, Wo)`. Errors (naming `conv3d`) on a wrong rank, a zero-sized dimension, a
/// dtype other than f32/f16/bf16, mixed dtypes or devices, stride, dilation or groups 0, channel
/// counts not divisible by `groups`, `w.dim(1) != Cin / groups`, or a kernel larger than the
/// padded input. Bias is not part of the op (see [`crate::conv::Conv3d`]).
pub fn conv3d(x: &Tensor, w: &Tensor, cfg: Conv3dConfig) -> Result<Tensor> {
    let g = geom(OP, x, w, cfg, false, 3)?;
    if !backend(Op::Conv3d, x.device()).is_kernel() {
        let y = conv3d_reference(&upcast(x)?, &upcast(w)?, cfg)?;
        return Ok(y.to_dtype(x.dtype())?);
    }
    forward_kernel(x, w, g)
}

/// Our kernel on `(B, Cin, D, H, W)` and `(Cout, Cin/groups, kd, kh, kw)` tensors (without the
/// depth axes for a 2-D geometry) of the validated geometry `g`, differentiable wrt both.
pub(super) fn forward_kernel(x: &Tensor, w: &Tensor, g: Geom) -> Result<Tensor> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let role = Role::Forward;
    Ok(x.apply_op2(&w, Fused(Conv3dOp { g, role }))?)
}

/// 3-D convolution composed from candle ops: for every depth tap, the matching (strided) depth
/// slices are folded into the batch and convolved with that tap's 2-D kernel by
/// `Tensor::conv2d` (groups included), and the taps are summed; padding is explicit zeros.
///
/// Same arguments, checks and result as [`conv3d`] (errors name `conv3d_reference`), except that
/// f64 is accepted too; differentiable through candle autograd on every device, and the path of
/// [`conv3d`] where our kernel does not run (see [`crate::ops::backend()`]). Slow, for tests and
/// as the bench baseline.
pub fn conv3d_reference(x: &Tensor, w: &Tensor, cfg: Conv3dConfig) -> Result<Tensor> {
    let g = geom(OP_REF, x, w, cfg, true, 3)?;
    let (s, dl) = (g.stride, g.dilation);
    let [(d0, d1), (h0, h1), (w0, w1)] = g.pad;
    // `s` extra zeros at the end of the depth axis let a strided pick be narrow + reshape.
    let xp = x
        .pad_with_zeros(2, d0, d1 + s)?
        .pad_with_zeros(3, h0, h1)?
        .pad_with_zeros(4, w0, w1)?;
    let [od, oh, ow] = g.o;
    // Keep only the rows and columns the kernel reaches, so that candle's conv2d backward (one
    // output padding for both axes) sees no remainder on either axis.
    let hp = (oh - 1) * s + extent(g.k[1], dl);
    let wp = (ow - 1) * s + extent(g.k[2], dl);
    let xp = xp.narrow(3, 0, hp)?.narrow(4, 0, wp)?;
    let mut acc: Option<Tensor> = None;
    for kz in 0..g.k[0] {
        // Depth slices kz * dl + oz * s for oz in 0..od.
        let xs = xp.narrow(2, kz * dl, od * s)?;
        let xs = if s > 1 {
            xs.reshape((g.b, g.cin, od, s, hp, wp))?
                .narrow(3, 0, 1)?
                .squeeze(3)?
        } else {
            xs
        };
        let xs = xs
            .permute((0, 2, 1, 3, 4))?
            .reshape((g.b * od, g.cin, hp, wp))?;
        let wk = w.narrow(2, kz, 1)?.squeeze(2)?.contiguous()?;
        let y = xs.conv2d(&wk, 0, s, dl, g.groups)?;
        let y = y
            .reshape((g.b, od, g.cout, oh, ow))?
            .permute((0, 2, 1, 3, 4))?;
        acc = Some(match acc {
            None => y,
            Some(a) => (a + y)?,
        });
    }
    match acc {
        Some(a) => Ok(a.contiguous()?),
        None => Err(Error::shape(OP_REF, "weight", "kd > 0", w.shape().clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn config_validation_names_the_op() {
        for cfg in [
            Conv3dConfig::default().with_stride(0),
            Conv3dConfig::default().with_dilation(0),
            Conv3dConfig::default().with_groups(0),
        ] {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains("conv3d"), "{e}");
        }
        assert!(Conv3dConfig::default().validate().is_ok());
    }

    #[test]
    fn tiny_dense_matches_reference() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (1, 3, 4, 5, 6), &dev)?;
        let w = Tensor::randn(0f32, 1., (2, 3, 2, 3, 3), &dev)?;
        let cfg = Conv3dConfig::default();
        let y = conv3d(&x, &w, cfg)?;
        let r = conv3d_reference(&x, &w, cfg)?;
        let diff = (y - r)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "{diff}");
        Ok(())
    }
}
