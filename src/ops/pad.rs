//! Spatial padding with PyTorch's modes (`F.pad`): constant (zeros), reflect, replicate and
//! circular, 2-D and 3-D, forward **and** backward on CPU.
//!
//! # Shapes
//! - [`pad2d`]: input `(N, C, H, W)` or `(C, H, W)`, padding `[left, right, top, bottom]` (the
//!   last axis first, as `F.pad`), output `(…, H + top + bottom, W + left + right)`.
//! - [`pad3d`]: input `(N, C, D, H, W)` or `(C, D, H, W)`, padding
//!   `[left, right, top, bottom, front, back]`.
//! - Output index $o$ of an axis of length $n$ padded by $p_b$ before reads input
//!   $i = o - p_b$ when $0 \le i < n$; outside, [`PadMode::Reflect`] reads $-i$ or
//!   $2(n - 1) - i$ (the edge is not repeated, so each pad must be $< n$),
//!   [`PadMode::Replicate`] the nearest edge value, [`PadMode::Circular`] $i \bmod n$ (each
//!   pad $\le n$), and [`PadMode::Constant`] / [`PadMode::Zeros`] a constant.
//!
//! # Tip
//! Zero padding puts a dark frame around every feature map: a convolution at the border averages
//! real pixels with zeros, and image-to-image networks (style transfer, super-resolution,
//! CycleGAN, pix2pix) learn to paint visible dark or blurred borders. **Reflect** padding
//! continues the image into the border with its own mirrored content, so the statistics at the
//! edge match the interior; that is why CycleGAN's ResNet generator pads every 3×3 convolution
//! by reflection. **Replicate** is the choice when a mirror would invent structure (depth maps,
//! flow fields: extend the edge value); **circular** is exact for periodic data (panoramas
//! wrapped in longitude, simulations on a torus). The trade-off: non-zero modes cost an explicit
//! padded copy before the convolution (zero padding is free inside our convolution kernels) and
//! the borders' gradients fold back onto the input.
//!
//! The forward pass is one copy per output row: the interior as a block, the border through a
//! per-axis index table. The backward pass is its adjoint: every output gradient is added to the
//! input position it was read from, so with reflect, replicate and circular padding the values
//! near the edges collect the gradients of their mirrored, repeated or wrapped copies (asserted
//! below). Each input row's gradient is summed from the output rows that read it in a row-sized
//! accumulator and stored once, and neither pass zeroes its result first: the op is
//! memory-bound, and a zeroing pass cost as much as the copy. Tasks take whole `(N, C)` planes
//! (about 16 K values each), so no two tasks write the same input. f16 and bf16 are copied
//! through f32 exactly.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_tricks::ops::{pad2d, PadMode};
//! # fn main() -> candle_tricks::Result<()> {
//! let x = Var::from_tensor(&Tensor::new(&[[[1f32, 2., 3.]]], &Device::Cpu)?)?; // (1, 1, 3)
//! let row = |m| -> candle_tricks::Result<Vec<f32>> {
//!     Ok(pad2d(&x, [2, 2, 0, 0], m)?.flatten_all()?.to_vec1::<f32>()?)
//! };
//! assert_eq!(row(PadMode::Zeros)?, [0., 0., 1., 2., 3., 0., 0.]);
//! assert_eq!(row(PadMode::Constant(-1.0))?, [-1., -1., 1., 2., 3., -1., -1.]);
//! assert_eq!(row(PadMode::Reflect)?, [3., 2., 1., 2., 3., 2., 1.]);
//! assert_eq!(row(PadMode::Replicate)?, [1., 1., 1., 2., 3., 3., 3.]);
//! assert_eq!(row(PadMode::Circular)?, [2., 3., 1., 2., 3., 1., 2.]);
//! // The gradient of a reflect pad: each input value gets one per output position reading it.
//! let y = pad2d(&x, [2, 2, 0, 0], PadMode::Reflect)?;
//! let g = y.sum_all()?.backward()?;
//! let gx = g.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?;
//! assert_eq!(gx, [2., 3., 2.]);
//! // Reflection needs a pad smaller than the axis.
//! assert!(pad2d(&x, [3, 0, 0, 0], PadMode::Reflect).is_err());
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Zhu et al., *Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
//!   Networks* (CycleGAN), 2017, <https://arxiv.org/abs/1703.10593> (reflection padding in the
//!   generator)
//! - Liu et al., *Partial Convolution based Padding*, 2018, <https://arxiv.org/abs/1811.11718>
//!   (what zero padding does to the borders)

use crate::check;
use crate::cpu::{expect_shape, f32_view, items_per_task, par_filled, store};
use crate::ops::backend::{backend, upcast, Op};
use crate::ops::fused::{Fused, FusedOp, Grads, Operand, Output};
use crate::{Error, Result};
use candle_core::backend::BackendStorage;
use candle_core::{DType, Shape, Tensor};
use std::mem::MaybeUninit;

/// How [`pad2d`] / [`pad3d`] fill the border (PyTorch's `mode` of `F.pad` and `padding_mode`
/// of `nn.Conv2d`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum PadMode {
    /// Zeros (`"zeros"` / `"constant"` with value 0).
    #[default]
    Zeros,
    /// A constant value (`"constant"`, `value=v`).
    Constant(f64),
    /// The mirror image without repeating the edge (`"reflect"`); each pad < the axis length.
    Reflect,
    /// The edge value repeated (`"replicate"`).
    Replicate,
    /// The other end of the axis (`"circular"`); each pad <= the axis length.
    Circular,
}

impl PadMode {
    /// The value written where no input is read (`None`: every position reads the input).
    fn fill(self) -> Option<f32> {
        match self {
            PadMode::Zeros => Some(0.0),
            PadMode::Constant(v) => Some(v as f32),
            _ => None,
        }
    }

    /// The input index output `o` reads on an axis of `n` values padded by `before`, or
    /// `None` for the constant.
    fn source(self, o: usize, n: usize, before: usize) -> Option<usize> {
        let (i, n) = (o as i128 - before as i128, n as i128);
        let i = match self {
            PadMode::Zeros | PadMode::Constant(_) => {
                return (0..n).contains(&i).then_some(i as usize)
            }
            PadMode::Reflect if i < 0 => -i,
            PadMode::Reflect if i >= n => 2 * (n - 1) - i,
            PadMode::Replicate => i.clamp(0, n - 1),
            PadMode::Circular => i.rem_euclid(n),
            PadMode::Reflect => i,
        };
        Some(i as usize)
    }
}

/// The sizes of a pad: `planes` volumes of `n` (`(D, H, W)`, `D = 1` in 2-D) padded by `pad`
/// (`(before, after)` per axis) into `out`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PadGeom {
    planes: usize,
    n: [usize; 3],
    pad: [(usize, usize); 3],
    out: [usize; 3],
    mode: PadMode,
    spatial: usize,
    op: &'static str,
}

impl PadGeom {
    /// Per axis, the input index each output index reads (`None`: the constant).
    fn tables(&self) -> [Vec<Option<usize>>; 3] {
        std::array::from_fn(|a| {
            (0..self.out[a])
                .map(|o| self.mode.source(o, self.n[a], self.pad[a].0))
                .collect()
        })
    }

    fn shape(&self, dims: &[usize], sizes: [usize; 3]) -> Shape {
        let lead = &dims[..dims.len() - self.spatial];
        let mut v = lead.to_vec();
        v.extend(&sizes[3 - self.spatial..]);
        Shape::from(v)
    }
}

/// 2-D padding with our kernel (`F.pad(x, [left, right, top, bottom], mode)` on the last two
/// axes); differentiable wrt `x`.
///
/// Errors (naming `pad2d`) on a rank other than 3 or 4, a zero-sized dimension, an integer
/// dtype (f64 runs [`pad2d_reference`]), a reflect pad not smaller than its axis, a circular
/// pad larger than its axis, or an output size that overflows.
pub fn pad2d(x: &Tensor, pad: [usize; 4], mode: PadMode) -> Result<Tensor> {
    let [l, r, t, b] = pad;
    run("pad2d", x, [(0, 0), (t, b), (l, r)], mode, 2)
}

/// 3-D padding with our kernel (`F.pad(x, [left, right, top, bottom, front, back], mode)` on
/// the last three axes); as [`pad2d`] for inputs of rank 4 or 5, errors naming `pad3d`.
pub fn pad3d(x: &Tensor, pad: [usize; 6], mode: PadMode) -> Result<Tensor> {
    let [l, r, t, b, f, k] = pad;
    run("pad3d", x, [(f, k), (t, b), (l, r)], mode, 3)
}

/// [`pad2d`] composed from candle ops: `pad_with_zeros` (plus the constant times a padded mask
/// of ones), `pad_with_same`, or an `index_select` of the reflected / wrapped index list per
/// axis. Same checks (errors name `pad2d_reference`), f64 accepted; differentiable on every
/// device through candle autograd. For tests and as the path off CPU.
pub fn pad2d_reference(x: &Tensor, pad: [usize; 4], mode: PadMode) -> Result<Tensor> {
    let [l, r, t, b] = pad;
    let g = geom(
        "pad2d_reference",
        x,
        [(0, 0), (t, b), (l, r)],
        mode,
        2,
        true,
    )?;
    reference(x, &g)
}

/// [`pad3d`] composed from candle ops, as [`pad2d_reference`] (errors name `pad3d_reference`).
pub fn pad3d_reference(x: &Tensor, pad: [usize; 6], mode: PadMode) -> Result<Tensor> {
    let [l, r, t, b, f, k] = pad;
    let g = geom(
        "pad3d_reference",
        x,
        [(f, k), (t, b), (l, r)],
        mode,
        3,
        true,
    )?;
    reference(x, &g)
}

fn run(
    op: &'static str,
    x: &Tensor,
    pad: [(usize, usize); 3],
    mode: PadMode,
    spatial: usize,
) -> Result<Tensor> {
    let g = geom(op, x, pad, mode, spatial, true)?;
    if x.dtype() == DType::F64 || !backend(Op::Pad, x.device()).is_kernel() {
        return Ok(reference(&upcast(x)?, &g)?.to_dtype(x.dtype())?);
    }
    Ok(x.contiguous()?.apply_op1(Fused(PadOp { g }))?)
}

fn geom(
    op: &'static str,
    x: &Tensor,
    pad: [(usize, usize); 3],
    mode: PadMode,
    spatial: usize,
    allow_f64: bool,
) -> Result<PadGeom> {
    if x.rank() != spatial + 1 && x.rank() != spatial + 2 {
        let pattern = if spatial == 2 {
            "(N, C, H, W) or (C, H, W)"
        } else {
            "(N, C, D, H, W) or (C, D, H, W)"
        };
        return Err(Error::shape(op, "input", pattern, x.shape().clone()));
    }
    check::non_empty(op, "input", x)?;
    if !(allow_f64 && x.dtype() == DType::F64) {
        check::float_dtype(op, "input", x)?;
    }
    let dims = x.dims();
    let lead = dims.len() - spatial;
    let mut n = [1; 3];
    n[3 - spatial..].copy_from_slice(&dims[lead..]);
    let mut out = [1; 3];
    for a in 3 - spatial..3 {
        let (before, after) = pad[a];
        let axis = lead + a - (3 - spatial);
        let limit = match mode {
            PadMode::Reflect => Some((n[a] - 1, "smaller than")),
            PadMode::Circular => Some((n[a], "at most")),
            _ => None,
        };
        if let Some((max, rel)) = limit {
            if before.max(after) > max {
                return Err(Error::config(
                    op,
                    format!(
                        "{mode:?} padding ({before}, {after}) of axis {axis} must be {rel} \
                         the axis length {}",
                        n[a]
                    ),
                ));
            }
        }
        out[a] = n[a]
            .checked_add(before)
            .and_then(|v| v.checked_add(after))
            .ok_or_else(|| {
                Error::config(op, format!("padded length of axis {axis} overflows usize"))
            })?;
    }
    let mut out_dims = dims[..lead].to_vec();
    out_dims.extend(&out[3 - spatial..]);
    // Refused before anything is allocated when it cannot exist (also on the reference path).
    check::allocatable(op, "output", &out_dims, x.dtype())?;
    Ok(PadGeom {
        planes: dims[..lead].iter().product(),
        n,
        pad,
        out,
        mode,
        spatial,
        op,
    })
}

fn reference(x: &Tensor, g: &PadGeom) -> Result<Tensor> {
    let lead = x.rank() - g.spatial;
    let mut t = x.clone();
    for a in 3 - g.spatial..3 {
        let ax = lead + a - (3 - g.spatial);
        let (n, (lo, hi)) = (g.n[a], g.pad[a]);
        t = match g.mode {
            PadMode::Zeros => t.pad_with_zeros(ax, lo, hi)?,
            PadMode::Constant(v) => {
                let inside = t.ones_like()?.pad_with_zeros(ax, lo, hi)?;
                let fill = ((1.0 - inside)? * v)?;
                (t.pad_with_zeros(ax, lo, hi)? + fill)?
            }
            PadMode::Replicate => t.pad_with_same(ax, lo, hi)?,
            PadMode::Reflect | PadMode::Circular => {
                let idx: Vec<u32> = if g.mode == PadMode::Reflect {
                    // [lo, …, 1], 0..n, [n - 2, …, n - 1 - hi]
                    (1..=lo)
                        .rev()
                        .chain(0..n)
                        .chain((n - 1 - hi..n - 1).rev())
                        .map(|i| i as u32)
                        .collect()
                } else {
                    (n - lo..n)
                        .chain(0..n)
                        .chain(0..hi)
                        .map(|i| i as u32)
                        .collect()
                };
                t.index_select(&Tensor::new(idx.as_slice(), x.device())?, ax)?
            }
        };
    }
    Ok(t)
}

// ---------------------------------------------------------------------------------------------
// Custom ops and kernels
// ---------------------------------------------------------------------------------------------

/// `x -> padded x`.
struct PadOp {
    g: PadGeom,
}

/// `grad_y -> grad_x`, applied without a graph.
struct PadGradOp {
    g: PadGeom,
}

impl FusedOp<1> for PadOp {
    fn name(&self) -> &'static str {
        self.g.op
    }

    fn cpu(&self, [(s, l)]: [Operand<'_>; 1]) -> Output {
        let g = &self.g;
        let in_shape = g.shape(l.dims(), g.n);
        expect_shape(g.op, l, &in_shape)?;
        let x = f32_view(s, l, g.op)?;
        let y = forward(g, &x)?;
        Ok((store(s.dtype(), y, g.op)?, g.shape(l.dims(), g.out)))
    }

    fn grads(&self, _x: [&Tensor; 1], _res: &Tensor, grad: &Tensor) -> Grads<1> {
        let gx = grad
            .contiguous()?
            .apply_op1_no_bwd(&Fused(PadGradOp { g: self.g }))?;
        Ok([Some(gx)])
    }
}

impl FusedOp<1> for PadGradOp {
    fn name(&self) -> &'static str {
        self.g.op
    }

    fn cpu(&self, [(s, l)]: [Operand<'_>; 1]) -> Output {
        let g = &self.g;
        expect_shape(g.op, l, &g.shape(l.dims(), g.out))?;
        let gy = f32_view(s, l, g.op)?;
        let gx = backward(g, &gy)?;
        Ok((store(s.dtype(), gx, g.op)?, g.shape(l.dims(), g.n)))
    }
}

/// `dst = src`, element by element (a plain loop the compiler turns into vector copies).
#[inline(always)]
fn write_row(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    for (d, v) in dst.iter_mut().zip(src) {
        d.write(*v);
    }
}

fn forward(g: &PadGeom, x: &[f32]) -> Result<Vec<f32>> {
    let [td, th, tw] = g.tables();
    let (iv, ov) = (
        g.n.iter().product::<usize>(),
        g.out.iter().product::<usize>(),
    );
    let [_, h, w] = g.n;
    let (ow, (wl, _)) = (g.out[2], g.pad[2]);
    let fill = g.mode.fill().unwrap_or(0.0);
    let planes = items_per_task(ov);
    let write_plane = |p: usize, yv: &mut [MaybeUninit<f32>]| {
        let xv = &x[p * iv..(p + 1) * iv];
        for (z, sz) in td.iter().enumerate() {
            for (r, sy) in th.iter().enumerate() {
                let row = &mut yv[(z * th.len() + r) * ow..][..ow];
                let (Some(sz), Some(sy)) = (sz, sy) else {
                    row.fill(MaybeUninit::new(fill));
                    continue;
                };
                let src = &xv[(sz * h + sy) * w..][..w];
                // The interior is a block copy; only the borders look up the table.
                write_row(&mut row[wl..wl + w], src);
                for c in (0..wl).chain(wl + w..ow) {
                    row[c].write(tw[c].map_or(fill, |i| src[i]));
                }
            }
        }
    };
    // SAFETY: every task's part is whole output planes, and `write_plane` writes every row
    // of a plane in full (the interior, then each border column).
    unsafe {
        par_filled(g.op, g.planes * ov, planes * ov, |t, part, _: &mut ()| {
            for (j, yv) in part.chunks_mut(ov).enumerate() {
                write_plane(t * planes + j, yv);
            }
        })
    }
}

/// For every input index of each axis, the output indices that read it.
fn readers(table: &[Option<usize>], n: usize) -> Vec<Vec<usize>> {
    let mut inv = vec![Vec::new(); n];
    for (o, i) in table.iter().enumerate() {
        if let Some(i) = i {
            inv[*i].push(o);
        }
    }
    inv
}

fn backward(g: &PadGeom, gy: &[f32]) -> Result<Vec<f32>> {
    let [td, th, tw] = g.tables();
    let [d, h, w] = g.n;
    let (rd, rh) = (readers(&td, d), readers(&th, h));
    let (iv, ov) = (d * h * w, g.out.iter().product::<usize>());
    let (oh, ow, (wl, _)) = (g.out[1], g.out[2], g.pad[2]);
    let planes = items_per_task(iv);
    // Each input row is the sum of the output rows that read it (its own interior row plus,
    // at the edges, the border rows): summed in a row-sized accumulator in L1 and written
    // once, so the gradient is read once and written once, with no zeroed buffer.
    let write_plane = |p: usize, gxv: &mut [MaybeUninit<f32>], acc: &mut Vec<f32>| {
        let gyv = &gy[p * ov..(p + 1) * ov];
        acc.resize(w, 0.0);
        for (z_in, rows_d) in rd.iter().enumerate() {
            for (y_in, rows_h) in rh.iter().enumerate() {
                let mut first = true;
                for &z in rows_d {
                    for &r in rows_h {
                        let row = &gyv[(z * oh + r) * ow..][..ow];
                        if first {
                            acc.copy_from_slice(&row[wl..wl + w]);
                            first = false;
                        } else {
                            acc.iter_mut()
                                .zip(&row[wl..wl + w])
                                .for_each(|(a, v)| *a += v);
                        }
                        for c in (0..wl).chain(wl + w..ow) {
                            if let Some(i) = tw[c] {
                                acc[i] += row[c];
                            }
                        }
                    }
                }
                write_row(&mut gxv[(z_in * h + y_in) * w..][..w], acc);
            }
        }
    };
    // SAFETY: every task's part is whole input planes, and `write_plane` writes every row of
    // a plane: each input row has at least one reader (its interior output row), so `acc`
    // holds the row's full sum before it is written.
    unsafe {
        par_filled(g.op, g.planes * iv, planes * iv, |t, part, _: &mut ()| {
            let mut acc = Vec::new();
            for (j, gxv) in part.chunks_mut(iv).enumerate() {
                write_plane(t * planes + j, gxv, &mut acc);
            }
        })
    }
}
