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
//! With one input channel per group (depthwise, `groups = Cin`, any channel multiplier) each
//! output value is only $k_d k_h k_w$ multiply-adds and a column matrix would be pure memory
//! traffic, so those convolutions take a direct kernel instead: one task per input volume and
//! the output volumes it feeds (forward and input gradient) or per output channel (weight
//! gradient), the inner loop an AXPY or dot product over a whole output row, compiled for
//! AVX2 + FMA when the CPU has it.
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
use crate::conv::{extent, Padding};
use crate::ops::backend::{backend, upcast, Op};
use crate::ops::cpu::{
    conv_bwd, expect_shape, f32_pair, padded_copy_fits, par_fold, par_tasks, store, try_zeros,
    Axis, DirectConv,
};
use crate::{Error, Result};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

const OP: &str = "conv3d";
const OP_REF: &str = "conv3d_reference";
const OP_GRAD_INPUT: &str = "conv3d_grad_input";
const OP_GRAD_WEIGHT: &str = "conv3d_grad_weight";

/// Column-matrix floats per task (512 KiB), the scratch bound of the dense path.
const COL_TARGET: usize = 1 << 17;
/// Fewest output positions per tile (below this a gemm call costs more than it computes).
const MIN_TILE: usize = 64;
/// Most output positions per tile.
const MAX_TILE: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// Stride, padding, dilation and groups of [`conv3d`] (the same on all three spatial axes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv3dConfig {
    /// Step between output positions, > 0. Default 1.
    pub stride: usize,
    /// How each spatial axis is padded with zeros. Default [`Padding::Same`].
    pub padding: Padding,
    /// Spacing between kernel taps, > 0 (1 = a dense kernel). Default 1.
    pub dilation: usize,
    /// Number of channel groups, > 0, dividing both channel counts (`Cin` = depthwise). Default 1.
    pub groups: usize,
}

impl Default for Conv3dConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: Padding::Same,
            dilation: 1,
            groups: 1,
        }
    }
}

impl Conv3dConfig {
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
struct Geom {
    b: usize,
    cin: usize,
    cout: usize,
    groups: usize,
    /// Input `(D, H, W)`.
    n: [usize; 3],
    /// Kernel `(kd, kh, kw)`.
    k: [usize; 3],
    /// Output `(Do, Ho, Wo)`.
    o: [usize; 3],
    /// Padding `(before, after)` per axis.
    pad: [(usize, usize); 3],
    stride: usize,
    dilation: usize,
    /// Compute with [`DirectConv`]: the padded input copy of the fast paths would be far larger
    /// than the tensors (a huge stride, dilation or padding with a small output).
    direct: bool,
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
    fn x_shape(&self) -> Shape {
        Shape::from((self.b, self.cin, self.n[0], self.n[1], self.n[2]))
    }
    fn w_shape(&self) -> Shape {
        Shape::from((self.cout, self.cig(), self.k[0], self.k[1], self.k[2]))
    }
    fn y_shape(&self) -> Shape {
        Shape::from((self.b, self.cout, self.o[0], self.o[1], self.o[2]))
    }
    /// Output positions per dense tile: columns within [`COL_TARGET`], and enough tiles to keep
    /// every thread busy.
    fn tile(&self) -> usize {
        let by_memory = (COL_TARGET / self.kg().max(1)).clamp(MIN_TILE, MAX_TILE);
        let want_tasks = 4 * crate::ops::cpu::num_threads();
        let per_volume = want_tasks.div_ceil(self.b * self.groups).max(1);
        let by_threads = self.out_vol().div_ceil(per_volume).max(MIN_TILE);
        by_memory.min(by_threads).min(self.out_vol()).max(1)
    }
}

/// Validates the arguments of [`conv3d`] / [`conv3d_reference`] and resolves the geometry.
fn geom(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    cfg: Conv3dConfig,
    allow_f64: bool,
) -> Result<Geom> {
    cfg.validate_for(op)?;
    check::rank(op, "input", x, 5, "(B, Cin, D, H, W)")?;
    check::rank(op, "weight", w, 5, "(Cout, Cin/groups, kd, kh, kw)")?;
    check::non_empty(op, "input", x)?;
    check::non_empty(op, "weight", w)?;
    if !(allow_f64 && x.dtype() == DType::F64) {
        check::float_dtype(op, "input", x)?;
    }
    check::same_dtype_device(op, "weight", x, w)?;
    let (b, cin, d, h, wd) = x.dims5()?;
    let (cout, cig, kd, kh, kw) = w.dims5()?;
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
                "({cout}, Cin/groups = {}, kd, kh, kw) for Cin = {cin}, groups = {groups}",
                cin / groups
            ),
            w.shape().clone(),
        ));
    }
    let (s, dl) = (cfg.stride, cfg.dilation);
    let n = [d, h, wd];
    let k = [kd, kh, kw];
    let mut o = [0; 3];
    let mut pad = [(0, 0); 3];
    for a in 0..3 {
        let (before, after, out) =
            check::fit_axis(op, x, ["D", "H", "W"][a], cfg.padding, n[a], k[a], s, dl)?;
        o[a] = out;
        pad[a] = (before, after);
    }
    check::numel(op, "output", &[b, cout, o[0], o[1], o[2]], x.dtype())?;
    // The fast paths copy every input volume into its padded, phased layout ([`padded`]).
    let padded_len = (0..3).try_fold(1usize, |acc, a| {
        let len = n[a].checked_add(pad[a].0)?.checked_add(pad[a].1)?;
        let len = if a == 2 {
            len.div_ceil(s).checked_mul(s)?
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
    Ok(Geom {
        b,
        cin,
        cout,
        groups,
        n,
        k,
        o,
        pad,
        stride: s,
        dilation: dl,
        direct,
    })
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
    let g = geom(OP, x, w, cfg, false)?;
    if !backend(Op::Conv3d, x.device()).is_kernel() {
        let y = conv3d_reference(&upcast(x)?, &upcast(w)?, cfg)?;
        return Ok(y.to_dtype(x.dtype())?);
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    Ok(x.apply_op2(
        &w,
        Conv3dOp {
            g,
            role: Role::Forward,
        },
    )?)
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
    let g = geom(OP_REF, x, w, cfg, true)?;
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

// ---------------------------------------------------------------------------------------------
// Custom ops
// ---------------------------------------------------------------------------------------------

/// What a [`Conv3dOp`] computes from its two operands.
#[derive(Clone, Copy)]
enum Role {
    /// `(x, w) -> y`.
    Forward,
    /// `(grad_y, w) -> grad_x`.
    GradInput,
    /// `(x, grad_y) -> grad_w`.
    GradWeight,
}

/// The convolution and its two gradients as one custom op. Only the forward has a backward;
/// the gradient roles are applied without a graph from it (no second derivatives).
struct Conv3dOp {
    g: Geom,
    role: Role,
}

impl CustomOp2 for Conv3dOp {
    fn name(&self) -> &'static str {
        match self.role {
            Role::Forward => OP,
            Role::GradInput => OP_GRAD_INPUT,
            Role::GradWeight => OP_GRAD_WEIGHT,
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, op) = (self.g, self.name());
        let (a, b, out) = match self.role {
            Role::Forward => (g.x_shape(), g.w_shape(), g.y_shape()),
            Role::GradInput => (g.y_shape(), g.w_shape(), g.x_shape()),
            Role::GradWeight => (g.x_shape(), g.y_shape(), g.w_shape()),
        };
        expect_shape(op, l1, &a)?;
        expect_shape(op, l2, &b)?;
        let (dtype, a, b) = f32_pair(s1, l1, s2, l2, op)?;
        // One input channel per group: direct loops; otherwise vol2col + gemm.
        let depthwise = g.cig() == 1;
        let v = match (self.role, depthwise) {
            _ if g.direct => {
                let conv = g.direct_conv();
                match self.role {
                    Role::Forward => conv.forward(&a, &b)?,
                    Role::GradInput => conv.grad_input(&a, &b),
                    Role::GradWeight => conv.grad_weight(&a, &b),
                }
            }
            (Role::Forward, true) => depthwise::forward(&g, &a, &b)?,
            (Role::Forward, false) => dense::forward(&g, &a, &b)?,
            (Role::GradInput, true) => depthwise::grad_input(&g, &a, &b),
            (Role::GradInput, false) => dense::grad_input(&g, &a, &b),
            (Role::GradWeight, true) => depthwise::grad_weight(&g, &a, &b)?,
            (Role::GradWeight, false) => dense::grad_weight(&g, &a, &b)?,
        };
        Ok((store(dtype, v, op)?, out))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = self.g;
        if !matches!(self.role, Role::Forward) {
            return Err(candle_core::Error::BackwardNotSupported { op: self.name() });
        }
        conv_bwd(
            x,
            w,
            grad_res,
            &Conv3dOp {
                g,
                role: Role::GradInput,
            },
            &Conv3dOp {
                g,
                role: Role::GradWeight,
            },
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Shared kernel pieces
// ---------------------------------------------------------------------------------------------

/// Sizes of the zero-padded input volume `(Dp, Hp, row)`: a padded row of `Wp` values is stored
/// as its `stride` phases (every `stride`-th value), each `ceil(Wp / stride)` long, so that a
/// kernel tap reads the inputs of consecutive outputs contiguously at any stride.
fn padded(g: &Geom) -> [usize; 3] {
    let [dp, hp, wp] = [0, 1, 2].map(|a| g.n[a] + g.pad[a].0 + g.pad[a].1);
    [dp, hp, g.stride * phase_len(wp, g.stride)]
}

/// Length of one phase of a padded row of `wp` values.
fn phase_len(wp: usize, stride: usize) -> usize {
    wp.div_ceil(stride)
}

/// Values in one padded input volume.
fn padded_vol(g: &Geom) -> usize {
    padded(g).iter().product()
}

/// Where, relative to the start of a padded row plus the output column, tap `kx` reads:
/// padded column `ox * s + kx * d` lives in phase `(kx d) mod s` at index `ox + (kx d) / s`.
fn tap_offsets(g: &Geom) -> Vec<usize> {
    let (s, dl) = (g.stride, g.dilation);
    let wq = padded(g)[2] / s;
    (0..g.k[2])
        .map(|kx| (kx * dl % s) * wq + kx * dl / s)
        .collect()
}

/// Visits the input row `src` (length `W`) and the positions its values take in a phased padded
/// row: calls `f(dst_start, src_start, count)` once per phase, the values being
/// `src[src_start + j * s]` at `dst_start + j`.
#[inline(always)]
fn for_row_phases(g: &Geom, w: usize, mut f: impl FnMut(usize, usize, usize)) {
    let (s, pw) = (g.stride, g.pad[2].0);
    let wq = padded(g)[2] / s;
    for phase in 0..s {
        // First padded column xx = x + pw >= pw with xx = phase (mod s).
        let xx0 = pw + (phase + s - pw % s) % s;
        if xx0 >= pw + w {
            continue;
        }
        let count = (pw + w - xx0).div_ceil(s);
        f(phase * wq + xx0 / s, xx0 - pw, count);
    }
}

/// Copies every `(B, C)` volume of `x` into a zero-padded volume (rows split into phases, see
/// [`padded`]), so that the kernels read whole contiguous runs without bounds logic (about 1.2
/// times the input for 3×3×3 on 32³, against 27 times for a full column matrix).
fn pad_input(g: &Geom, x: &[f32]) -> Result<Vec<f32>> {
    let [_, hp, row_len] = padded(g);
    let [d, h, w] = g.n;
    let (pd, ph, s) = (g.pad[0].0, g.pad[1].0, g.stride);
    let vol = d * h * w;
    let mut xp = try_zeros::<f32>(OP, g.b * g.cin * padded_vol(g))?;
    par_tasks(&mut xp, padded_vol(g), |i, dst, _: &mut ()| {
        let src = &x[i * vol..(i + 1) * vol];
        for (z, plane) in src.chunks_exact(h * w).enumerate() {
            for (y, row) in plane.chunks_exact(w).enumerate() {
                let at = ((z + pd) * hp + y + ph) * row_len;
                let drow = &mut dst[at..at + row_len];
                for_row_phases(g, w, |d0, s0, count| {
                    let out = &mut drow[d0..d0 + count];
                    if s == 1 {
                        out.copy_from_slice(&row[s0..s0 + count]);
                    } else {
                        for (o, v) in out.iter_mut().zip(row[s0..].iter().step_by(s)) {
                            *o = *v;
                        }
                    }
                });
            }
        }
    });
    Ok(xp)
}

/// Copies the interior of every padded `(B, C)` volume into an unpadded buffer (the adjoint of
/// [`pad_input`] for a gradient accumulated in padded coordinates: the padding is dropped).
fn crop_input(g: &Geom, xp: &[f32]) -> Vec<f32> {
    let [_, hp, row_len] = padded(g);
    let [d, h, w] = g.n;
    let (pd, ph, s) = (g.pad[0].0, g.pad[1].0, g.stride);
    let vol_p = padded_vol(g);
    let mut x = vec![0f32; g.b * g.cin * d * h * w];
    par_tasks(&mut x, d * h * w, |i, dst, _: &mut ()| {
        let src = &xp[i * vol_p..(i + 1) * vol_p];
        for (z, plane) in dst.chunks_exact_mut(h * w).enumerate() {
            for (y, row) in plane.chunks_exact_mut(w).enumerate() {
                let at = ((z + pd) * hp + y + ph) * row_len;
                let srow = &src[at..at + row_len];
                for_row_phases(g, w, |d0, s0, count| {
                    let vals = &srow[d0..d0 + count];
                    if s == 1 {
                        row[s0..s0 + count].copy_from_slice(vals);
                    } else {
                        for (o, v) in row[s0..].iter_mut().step_by(s).zip(vals) {
                            *o = *v;
                        }
                    }
                });
            }
        }
    });
    x
}

/// A raw pointer that parallel tasks may share; every use documents why the writes are disjoint.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: only used to hand disjoint regions of one buffer to parallel tasks (see each use);
// the buffer outlives the tasks, which `par_fold`/`par_tasks` join before returning.
unsafe impl Send for SharedMut {}
// SAFETY: as for `Send`: tasks sharing a `SharedMut` write disjoint regions only.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    #[inline(always)]
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Fused multiply-add when the kernel is compiled for FMA, separate otherwise.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Runs `$f::<FMA>($args)` compiled for AVX2 + FMA when the CPU has them.
macro_rules! with_simd {
    ($avx:ident, $f:ident ( $($arg:expr),* )) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                // SAFETY: the features the function is compiled for were detected above.
                unsafe { $avx($($arg),*) }
            } else {
                $f::<false>($($arg),*)
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            $f::<true>($($arg),*)
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            $f::<false>($($arg),*)
        }
    }};
}

// ---------------------------------------------------------------------------------------------
// Dense / grouped path: vol2col tiles + gemm
// ---------------------------------------------------------------------------------------------

mod dense {
    use super::*;
    use gemm::Parallelism;

    /// `dst = src` for short runs, in fixed 16-wide blocks the compiler inlines (a `memcpy`
    /// call per 32-value row costs as much as the copy).
    #[inline(always)]
    fn copy_run(dst: &mut [f32], src: &[f32]) {
        let mut d = dst.chunks_exact_mut(16);
        let mut s = src.chunks_exact(16);
        for (a, b) in (&mut d).zip(&mut s) {
            a.copy_from_slice(b);
        }
        for (a, b) in d.into_remainder().iter_mut().zip(s.remainder()) {
            *a = *b;
        }
    }

    /// Output position `p` as `(oz, oy, ox)`.
    #[inline(always)]
    fn decompose(g: &Geom, p: usize) -> (usize, usize, usize) {
        let [_, oh, ow] = g.o;
        (p / (oh * ow), (p / ow) % oh, p % ow)
    }

    /// The runs of output positions `p0 + i .. p0 + i + len` that lie on one output row, as
    /// `(i, len, row, ox0)`: `row` is the padded-volume offset of the input row that kernel taps
    /// `(kz, ky, ·)` read for it and `ox0` the run's first output column. An iterator rather
    /// than a callback, so that it inlines into the feature-specific copies of the loops.
    struct Runs {
        hp: usize,
        row_len: usize,
        oh: usize,
        ow: usize,
        s: usize,
        z_off: usize,
        y_off: usize,
        oz: usize,
        oy: usize,
        ox0: usize,
        i: usize,
        n: usize,
    }

    impl Runs {
        #[inline(always)]
        fn new(g: &Geom, p0: usize, n: usize, kz: usize, ky: usize) -> Self {
            let [_, hp, row_len] = padded(g);
            let [_, oh, ow] = g.o;
            let (oz, oy, ox0) = decompose(g, p0);
            Runs {
                hp,
                row_len,
                oh,
                ow,
                s: g.stride,
                z_off: kz * g.dilation,
                y_off: ky * g.dilation,
                oz,
                oy,
                ox0,
                i: 0,
                n,
            }
        }
    }

    impl Iterator for Runs {
        type Item = (usize, usize, usize, usize);

        #[inline(always)]
        fn next(&mut self) -> Option<Self::Item> {
            if self.i >= self.n {
                return None;
            }
            let (i, s) = (self.i, self.s);
            let len = (self.ow - self.ox0).min(self.n - i);
            let row =
                ((self.oz * s + self.z_off) * self.hp + self.oy * s + self.y_off) * self.row_len;
            let ox0 = self.ox0;
            self.i += len;
            self.ox0 = 0;
            self.oy += 1;
            if self.oy == self.oh {
                self.oy = 0;
                self.oz += 1;
            }
            Some((i, len, row, ox0))
        }
    }

    /// Unfolds output positions `p0..p0 + n` of one group into `col` (`kg` rows of `n`):
    /// `col[r][j]` is the padded-input value tap `r = (ci, kz, ky, kx)` reads for output `p0 + j`.
    fn vol2col(g: &Geom, xg: &[f32], p0: usize, n: usize, col: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected.
            return unsafe { vol2col_avx2(g, xg, p0, n, col) };
        }
        vol2col_body(g, xg, p0, n, col)
    }

    /// [`vol2col_body`] compiled with 32-byte loads and stores.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn vol2col_avx2(g: &Geom, xg: &[f32], p0: usize, n: usize, col: &mut [f32]) {
        vol2col_body(g, xg, p0, n, col)
    }

    #[inline(always)]
    fn vol2col_body(g: &Geom, xg: &[f32], p0: usize, n: usize, col: &mut [f32]) {
        let vol_p = padded_vol(g);
        let [kd, kh, kw] = g.k;
        let offs = tap_offsets(g);
        for ci in 0..g.cig() {
            let xc = &xg[ci * vol_p..(ci + 1) * vol_p];
            for kz in 0..kd {
                for ky in 0..kh {
                    let r0 = ((ci * kd + kz) * kh + ky) * kw;
                    let rows = &mut col[r0 * n..(r0 + kw) * n];
                    for (i, len, row, ox0) in Runs::new(g, p0, n, kz, ky) {
                        for (crow, off) in rows.chunks_exact_mut(n).zip(&offs) {
                            let start = row + off + ox0;
                            copy_run(&mut crow[i..i + len], &xc[start..start + len]);
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of [`vol2col`]: adds `col[r][j]` into the padded-input value tap `r` reads
    /// for output `p0 + j`.
    ///
    /// # Safety
    /// `gxg` points to one group's `cig` padded volumes, and no other thread touches the
    /// padded input depths that output depths of `p0..p0 + n` read while this runs.
    unsafe fn col2vol(g: &Geom, col: &[f32], p0: usize, n: usize, gxg: *mut f32) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected just above; the rest of `col2vol_avx2`'s contract is
            // this function's, which the caller upholds.
            return unsafe { col2vol_avx2(g, col, p0, n, gxg) };
        }
        // SAFETY: `col2vol_body` has this function's contract, which the caller upholds.
        unsafe { col2vol_body(g, col, p0, n, gxg) }
    }

    /// [`col2vol_body`] compiled with 32-byte loads and stores.
    ///
    /// # Safety
    /// As [`col2vol`], and the CPU supports AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn col2vol_avx2(g: &Geom, col: &[f32], p0: usize, n: usize, gxg: *mut f32) {
        // SAFETY: `col2vol_body` has `col2vol`'s contract, which our caller upholds.
        unsafe { col2vol_body(g, col, p0, n, gxg) }
    }

    /// # Safety
    /// As [`col2vol`].
    #[inline(always)]
    unsafe fn col2vol_body(g: &Geom, col: &[f32], p0: usize, n: usize, gxg: *mut f32) {
        let [_, _, row_len] = padded(g);
        let vol_p = padded_vol(g);
        let [kd, kh, kw] = g.k;
        let offs = tap_offsets(g);
        for ci in 0..g.cig() {
            for kz in 0..kd {
                for ky in 0..kh {
                    let r0 = ((ci * kd + kz) * kh + ky) * kw;
                    let rows = &col[r0 * n..(r0 + kw) * n];
                    for (i, len, row, ox0) in Runs::new(g, p0, n, kz, ky) {
                        // SAFETY: one padded input row of this group's volumes (`row` is a
                        // multiple of `row_len` below `vol_p`); only this task writes its depth
                        // (see the function contract).
                        let xrow = unsafe {
                            std::slice::from_raw_parts_mut(gxg.add(ci * vol_p + row), row_len)
                        };
                        for (crow, off) in rows.chunks_exact(n).zip(&offs) {
                            let dst = &mut xrow[off + ox0..off + ox0 + len];
                            for (d, v) in dst.iter_mut().zip(&crow[i..i + len]) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// `gemm`'s threads: none when our tasks already cover the pool. When they do not (a tiny
    /// problem with fewer tiles than threads) `gemm` splits each product on rayon's pool, the
    /// only parallelism it offers.
    fn parallelism(tasks: usize) -> Parallelism {
        let threads = crate::ops::cpu::num_threads();
        if tasks >= threads || threads == 1 {
            Parallelism::None
        } else {
            Parallelism::Rayon(threads)
        }
    }

    pub(super) fn forward(g: &Geom, x: &[f32], w: &[f32]) -> Result<Vec<f32>> {
        let (cig, cog, kg, p_vol) = (g.cig(), g.cog(), g.kg(), g.out_vol());
        let vol_p = padded_vol(g);
        let xp = pad_input(g, x)?;
        let nt = g.tile();
        let tiles = p_vol.div_ceil(nt);
        let tasks = g.b * g.groups * tiles;
        let par = parallelism(tasks);
        let mut y = try_zeros::<f32>(OP, g.b * g.cout * p_vol)?;
        let yp = SharedMut(y.as_mut_ptr());
        par_fold(tasks, |task, col: &mut Vec<f32>| {
            col.resize(kg * nt, 0.0);
            let (bg, tile) = (task / tiles, task % tiles);
            let (bi, gi) = (bg / g.groups, bg % g.groups);
            let p0 = tile * nt;
            let n = nt.min(p_vol - p0);
            let x0 = (bi * g.cin + gi * cig) * vol_p;
            vol2col(g, &xp[x0..x0 + cig * vol_p], p0, n, &mut col[..kg * n]);
            // SAFETY: dst is the (cog x n) block of rows `bi, gi * cog..` and columns
            // `p0..p0 + n` of y, written by this task only; lhs is the group's (cog x kg)
            // weight and rhs the (kg x n) column tile, all in bounds.
            unsafe {
                gemm::gemm(
                    cog,
                    n,
                    kg,
                    yp.ptr().add((bi * g.cout + gi * cog) * p_vol + p0),
                    1,
                    p_vol as isize,
                    false,
                    w.as_ptr().add(gi * cog * kg),
                    1,
                    kg as isize,
                    col.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            }
        });
        Ok(y)
    }

    pub(super) fn grad_input(g: &Geom, gy: &[f32], w: &[f32]) -> Vec<f32> {
        let (cig, cog, kg, p_vol) = (g.cig(), g.cog(), g.kg(), g.out_vol());
        let vol_p = padded_vol(g);
        let nt = g.tile();
        let plane = g.o[1] * g.o[2];
        // Slabs of `t` output depths: slab j reads padded depths up to (t(j+1) - 1)s + e - 1
        // and slab j + 2 starts at t(j+2)s, so they are disjoint once (t + 1)s >= e.
        let t = extent(g.k[0], g.dilation)
            .div_ceil(g.stride)
            .saturating_sub(1)
            .max(1);
        let slabs = g.o[0].div_ceil(t);
        let mut gxp = vec![0f32; g.b * g.cin * vol_p];
        let gxptr = SharedMut(gxp.as_mut_ptr());
        for phase in 0..2 {
            let per_bg = (slabs + 1 - phase) / 2;
            let tasks = g.b * g.groups * per_bg;
            let par = parallelism(tasks);
            // `par_fold` returns once every task of the phase is done, so the two phases
            // never overlap.
            par_fold(tasks, |task, gcol: &mut Vec<f32>| {
                gcol.resize(kg * nt, 0.0);
                let (bg, j) = (task / per_bg, 2 * (task % per_bg) + phase);
                let (bi, gi) = (bg / g.groups, bg % g.groups);
                let p_end = ((j + 1) * t).min(g.o[0]) * plane;
                let mut p0 = j * t * plane;
                while p0 < p_end {
                    let n = nt.min(p_end - p0);
                    let gcol = &mut gcol[..kg * n];
                    // SAFETY: lhs is the group's weight read transposed (kg x cog), rhs the
                    // (cog x n) block of grad_y, dst the task's own scratch; all in bounds.
                    unsafe {
                        gemm::gemm(
                            kg,
                            n,
                            cog,
                            gcol.as_mut_ptr(),
                            1,
                            n as isize,
                            false,
                            w.as_ptr().add(gi * cog * kg),
                            kg as isize,
                            1,
                            gy.as_ptr().add((bi * g.cout + gi * cog) * p_vol + p0),
                            1,
                            p_vol as isize,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            par,
                        );
                        // SAFETY: tasks of one phase hold slabs two apart, whose padded
                        // input depths are disjoint (see `t` above); different (b, group)
                        // pairs write different channels.
                        let base = gxptr.ptr().add((bi * g.cin + gi * cig) * vol_p);
                        col2vol(g, gcol, p0, n, base);
                    }
                    p0 += n;
                }
            });
        }
        crop_input(g, &gxp)
    }

    pub(super) fn grad_weight(g: &Geom, x: &[f32], gy: &[f32]) -> Result<Vec<f32>> {
        let (cig, cog, kg, p_vol) = (g.cig(), g.cog(), g.kg(), g.out_vol());
        let vol_p = padded_vol(g);
        let xp = pad_input(g, x)?;
        let nt = g.tile();
        let tiles = p_vol.div_ceil(nt);
        let tasks = g.b * g.groups * tiles;
        let par = parallelism(tasks);
        let total = g.cout * kg;
        let partials = par_fold(tasks, |task, (acc, col): &mut (Vec<f32>, Vec<f32>)| {
            acc.resize(total, 0.0);
            col.resize(kg * nt, 0.0);
            let (bg, tile) = (task / tiles, task % tiles);
            let (bi, gi) = (bg / g.groups, bg % g.groups);
            let p0 = tile * nt;
            let n = nt.min(p_vol - p0);
            let x0 = (bi * g.cin + gi * cig) * vol_p;
            vol2col(g, &xp[x0..x0 + cig * vol_p], p0, n, &mut col[..kg * n]);
            // SAFETY: dst is the group's (cog x kg) block of this fold's own
            // accumulator, stored column-major (see below), lhs the (cog x n) block of
            // grad_y, rhs the column tile read transposed (n x kg); all in bounds.
            unsafe {
                gemm::gemm(
                    cog,
                    kg,
                    n,
                    acc.as_mut_ptr().add(gi * cog * kg),
                    cog as isize,
                    1,
                    true,
                    gy.as_ptr().add((bi * g.cout + gi * cog) * p_vol + p0),
                    1,
                    p_vol as isize,
                    col.as_ptr(),
                    n as isize,
                    1,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            }
        });
        // One partial sum per worker that ran a task; add them up.
        let mut partials = partials.into_iter().map(|(acc, _)| acc);
        let mut acc_t = partials.next().unwrap_or_else(|| vec![0f32; total]);
        for p in partials {
            acc_t.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
        }
        // The accumulator holds each group's block transposed, `[r][co]`: with the reduction
        // along the column tile in that orientation `gemm` reads the tile in place instead of
        // repacking it. Put it back in the weight's `[co][r]` layout.
        let mut gw = vec![0f32; total];
        for (dst, src) in gw
            .chunks_exact_mut(cog * kg)
            .zip(acc_t.chunks_exact(cog * kg))
        {
            for (r, row) in src.chunks_exact(cog).enumerate() {
                for (co, v) in row.iter().enumerate() {
                    dst[co * kg + r] = *v;
                }
            }
        }
        Ok(gw)
    }
}

// ---------------------------------------------------------------------------------------------
// Depthwise path (one input channel per group): direct loops
// ---------------------------------------------------------------------------------------------

mod depthwise {
    use super::*;

    /// `y += a * x` over `y`.
    #[inline(always)]
    fn axpy<const FMA: bool>(y: &mut [f32], x: &[f32], a: f32) {
        let x = &x[..y.len()];
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi = madd::<FMA>(a, *xi, *yi);
        }
    }

    /// `sum_j y[j] * x[j]` with 8 independent partial sums.
    #[inline(always)]
    fn dot<const FMA: bool>(y: &[f32], x: &[f32]) -> f32 {
        let mut acc = [0f32; 8];
        let (yc, xc) = (y.chunks_exact(8), x[..y.len()].chunks_exact(8));
        let (yr, xr) = (yc.remainder(), xc.remainder());
        for (a, b) in yc.zip(xc) {
            for ((l, a), b) in acc.iter_mut().zip(a).zip(b) {
                *l = madd::<FMA>(*a, *b, *l);
            }
        }
        for (a, b) in yr.iter().zip(xr) {
            acc[0] = madd::<FMA>(*a, *b, acc[0]);
        }
        acc.iter().sum()
    }

    /// Offset in the padded volume of the input row that output row `(oz, oy)` reads at taps
    /// `(kz, ky, ·)`; tap `kx` then reads `tap_offsets(g)[kx]` further on, contiguously.
    #[inline(always)]
    fn row_base(g: &Geom, oz: usize, oy: usize, kz: usize, ky: usize) -> usize {
        let [_, hp, row_len] = padded(g);
        let (s, dl) = (g.stride, g.dilation);
        ((oz * s + kz * dl) * hp + oy * s + ky * dl) * row_len
    }

    /// Output columns `c0..c0 + L` of output row `(oz, oy)`, summed over all taps in `L`
    /// accumulators that stay in registers.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn fwd_block<const FMA: bool, const L: usize>(
        g: &Geom,
        offs: &[usize],
        xv: &[f32],
        wk: &[f32],
        oz: usize,
        oy: usize,
        c0: usize,
        out: &mut [f32],
    ) {
        let [kd, kh, _] = g.k;
        let mut acc = [0f32; L];
        for kz in 0..kd {
            for ky in 0..kh {
                let base = row_base(g, oz, oy, kz, ky) + c0;
                let wrow = &wk[(kz * kh + ky) * offs.len()..][..offs.len()];
                for (a, off) in wrow.iter().zip(offs) {
                    let x = &xv[base + off..base + off + L];
                    for (acc, x) in acc.iter_mut().zip(x) {
                        *acc = madd::<FMA>(*a, *x, *acc);
                    }
                }
            }
        }
        out[..L].copy_from_slice(&acc);
    }

    /// One output volume from one padded input volume: `yv = w ⋆ xv`, row by row in blocks of
    /// 32 and 8 columns held in registers, the rest through an AXPY per tap.
    #[inline(always)]
    fn fwd_volume<const FMA: bool>(
        g: &Geom,
        offs: &[usize],
        xv: &[f32],
        wk: &[f32],
        yv: &mut [f32],
    ) {
        let [od, oh, ow] = g.o;
        let [kd, kh, _] = g.k;
        for oz in 0..od {
            for oy in 0..oh {
                let yrow = &mut yv[(oz * oh + oy) * ow..(oz * oh + oy + 1) * ow];
                let mut c0 = 0;
                while c0 + 32 <= ow {
                    fwd_block::<FMA, 32>(g, offs, xv, wk, oz, oy, c0, &mut yrow[c0..]);
                    c0 += 32;
                }
                while c0 + 8 <= ow {
                    fwd_block::<FMA, 8>(g, offs, xv, wk, oz, oy, c0, &mut yrow[c0..]);
                    c0 += 8;
                }
                if c0 < ow {
                    let rest = &mut yrow[c0..];
                    for kz in 0..kd {
                        for ky in 0..kh {
                            let base = row_base(g, oz, oy, kz, ky) + c0;
                            let wrow = &wk[(kz * kh + ky) * offs.len()..][..offs.len()];
                            for (a, off) in wrow.iter().zip(offs) {
                                axpy::<FMA>(rest, &xv[base + off..], *a);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adds one output channel's contribution to one padded input-gradient volume:
    /// `gxv += w ⋆ᵀ gyv`.
    #[inline(always)]
    fn grad_input_volume<const FMA: bool>(
        g: &Geom,
        offs: &[usize],
        gyv: &[f32],
        wk: &[f32],
        gxv: &mut [f32],
    ) {
        let [od, oh, ow] = g.o;
        let [kd, kh, _] = g.k;
        for oz in 0..od {
            for oy in 0..oh {
                let gyrow = &gyv[(oz * oh + oy) * ow..(oz * oh + oy + 1) * ow];
                for kz in 0..kd {
                    for ky in 0..kh {
                        let base = row_base(g, oz, oy, kz, ky);
                        let wrow = &wk[(kz * kh + ky) * offs.len()..][..offs.len()];
                        for (a, off) in wrow.iter().zip(offs) {
                            axpy::<FMA>(&mut gxv[base + off..base + off + ow], gyrow, *a);
                        }
                    }
                }
            }
        }
    }

    /// One output channel's weight gradient from one batch item (padded input volume `xv`),
    /// accumulated in f64 across rows: `gw += gyv ⋆ xv`.
    #[inline(always)]
    fn grad_weight_volume<const FMA: bool>(
        g: &Geom,
        offs: &[usize],
        xv: &[f32],
        gyv: &[f32],
        gw: &mut [f64],
    ) {
        let [od, oh, ow] = g.o;
        let [kd, kh, _] = g.k;
        for oz in 0..od {
            for oy in 0..oh {
                let gyrow = &gyv[(oz * oh + oy) * ow..(oz * oh + oy + 1) * ow];
                for kz in 0..kd {
                    for ky in 0..kh {
                        let base = row_base(g, oz, oy, kz, ky);
                        let grow = &mut gw[(kz * kh + ky) * offs.len()..][..offs.len()];
                        for (acc, off) in grow.iter_mut().zip(offs) {
                            *acc += dot::<FMA>(gyrow, &xv[base + off..]) as f64;
                        }
                    }
                }
            }
        }
    }

    /// The `FMA = true` variant compiled for AVX2 and FMA.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA (`with_simd!` checks them before the call).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fwd_volume_avx2(g: &Geom, offs: &[usize], xv: &[f32], wk: &[f32], yv: &mut [f32]) {
        fwd_volume::<true>(g, offs, xv, wk, yv)
    }

    /// The `FMA = true` variant compiled for AVX2 and FMA.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA (`with_simd!` checks them before the call).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn grad_input_volume_avx2(
        g: &Geom,
        offs: &[usize],
        gyv: &[f32],
        wk: &[f32],
        gxv: &mut [f32],
    ) {
        grad_input_volume::<true>(g, offs, gyv, wk, gxv)
    }

    /// The `FMA = true` variant compiled for AVX2 and FMA.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA (`with_simd!` checks them before the call).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn grad_weight_volume_avx2(
        g: &Geom,
        offs: &[usize],
        xv: &[f32],
        gyv: &[f32],
        gw: &mut [f64],
    ) {
        grad_weight_volume::<true>(g, offs, xv, gyv, gw)
    }

    pub(super) fn forward(g: &Geom, x: &[f32], w: &[f32]) -> Result<Vec<f32>> {
        let (cog, taps, vol_p, p_vol) = (g.cog(), g.taps(), padded_vol(g), g.out_vol());
        let offs = tap_offsets(g);
        let xp = pad_input(g, x)?;
        let mut y = try_zeros::<f32>(OP, g.b * g.cout * p_vol)?;
        // One task per input volume and the `cog` output volumes it feeds (one input channel
        // per group: group = input channel).
        par_tasks(&mut y, cog * p_vol, |idx, ys, _: &mut ()| {
            let xv = &xp[idx * vol_p..(idx + 1) * vol_p];
            let ci = idx % g.cin;
            for (j, yv) in ys.chunks_exact_mut(p_vol).enumerate() {
                let co = ci * cog + j;
                let wk = &w[co * taps..(co + 1) * taps];
                with_simd!(fwd_volume_avx2, fwd_volume(g, &offs, xv, wk, yv));
            }
        });
        Ok(y)
    }

    pub(super) fn grad_input(g: &Geom, gy: &[f32], w: &[f32]) -> Vec<f32> {
        let (cog, taps, vol_p, p_vol) = (g.cog(), g.taps(), padded_vol(g), g.out_vol());
        let offs = tap_offsets(g);
        let mut gxp = vec![0f32; g.b * g.cin * vol_p];
        // One task per (padded) input volume: it gathers from the `cog` output channels it feeds.
        par_tasks(&mut gxp, vol_p, |idx, gxv, _: &mut ()| {
            let gys = &gy[idx * cog * p_vol..(idx + 1) * cog * p_vol];
            let ci = idx % g.cin;
            for (j, gyv) in gys.chunks_exact(p_vol).enumerate() {
                let co = ci * cog + j;
                let wk = &w[co * taps..(co + 1) * taps];
                with_simd!(
                    grad_input_volume_avx2,
                    grad_input_volume(g, &offs, gyv, wk, gxv)
                );
            }
        });
        crop_input(g, &gxp)
    }

    pub(super) fn grad_weight(g: &Geom, x: &[f32], gy: &[f32]) -> Result<Vec<f32>> {
        let (cog, taps, vol_p, p_vol) = (g.cog(), g.taps(), padded_vol(g), g.out_vol());
        let offs = tap_offsets(g);
        let xp = pad_input(g, x)?;
        let mut gw = vec![0f32; g.cout * taps];
        par_tasks(&mut gw, taps, |co, gwc, acc: &mut Vec<f64>| {
            let ci = co / cog;
            acc.clear();
            acc.resize(taps, 0.0);
            for bi in 0..g.b {
                let xv = &xp[(bi * g.cin + ci) * vol_p..(bi * g.cin + ci + 1) * vol_p];
                let gyv = &gy[(bi * g.cout + co) * p_vol..(bi * g.cout + co + 1) * p_vol];
                with_simd!(
                    grad_weight_volume_avx2,
                    grad_weight_volume(g, &offs, xv, gyv, acc)
                );
            }
            for (o, a) in gwc.iter_mut().zip(acc.iter()) {
                *o = *a as f32;
            }
        });
        Ok(gw)
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
    fn slabs_two_apart_read_disjoint_input_depths() {
        for k in 1..6 {
            for s in 1..4 {
                for d in 1..4 {
                    let e = extent(k, d);
                    let t = e.div_ceil(s).saturating_sub(1).max(1);
                    // Last input depth of slab 0 (pad 0) vs first of slab 2.
                    let last0 = (t - 1) * s + e - 1;
                    assert!(last0 < 2 * t * s, "k {k} s {s} d {d} t {t}");
                }
            }
        }
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
