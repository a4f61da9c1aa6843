//! The convolution plumbing the conv ops share: the backward of an `(x, w) -> y` op from two
//! gradient ops, and [`DirectConv`], a convolution straight from its definition for geometries
//! whose padded copy would dwarf the tensors.

use candle_core::Tensor;

use crate::cpu::{par_tasks, try_zeros};
use crate::ops::fused::{Fused, FusedOp, Grads};

/// The backward of a convolution op `(x, w) -> y` whose two gradients are themselves ops:
/// `grad_x = grad_input(grad_y, w)` and `grad_w = grad_weight(x, grad_y)`, applied on contiguous
/// tensors without a graph of their own (no second derivatives).
pub(crate) fn conv_bwd(
    x: &Tensor,
    w: &Tensor,
    grad_y: &Tensor,
    grad_input: impl FusedOp<2>,
    grad_weight: impl FusedOp<2>,
) -> Grads<2> {
    let grad = grad_y.contiguous()?;
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let gx = grad.apply_op2_no_bwd(&w, &Fused(grad_input))?;
    let gw = x.apply_op2_no_bwd(&grad, &Fused(grad_weight))?;
    Ok([Some(gx), Some(gw)])
}

/// Per-volume scratch, in elements, that a padded-copy kernel may use before a convolution
/// switches to [`DirectConv`]: four times the input plus output it already holds, plus 64 Ki
/// (so that small maps with ordinary padding always take the fast path).
pub(crate) fn padded_copy_fits(padded: Option<usize>, input: usize, output: usize) -> bool {
    let budget = input
        .saturating_add(output)
        .saturating_mul(4)
        .saturating_add(1 << 16);
    matches!(padded, Some(p) if p <= budget)
}

/// One spatial axis of a convolution: output `o` with tap `k` reads input `o·s + k·d − before`
/// when that lies in `[0, n)` (the padding is implicit, never materialized).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Axis {
    /// Input length.
    pub n: usize,
    /// Kernel taps.
    pub k: usize,
    /// Output length.
    pub o: usize,
    /// Stride (> 0).
    pub s: usize,
    /// Dilation (> 0).
    pub d: usize,
    /// Zeros padded before the input.
    pub before: usize,
}

impl Axis {
    /// The taps `lo..hi` of output `o` that read the input, and the input index of tap `lo`
    /// (tap `k` reads `first + (k − lo)·d`). Exact in i128 for any usize geometry.
    #[inline]
    fn taps(&self, o: usize) -> (usize, usize, usize) {
        let (s, d, k) = (self.s as i128, self.d.max(1) as i128, self.k as i128);
        let start = o as i128 * s - self.before as i128;
        // First k with start + k·d >= 0, last k with start + k·d <= n − 1.
        let lo = if start >= 0 { 0 } else { (-start + d - 1) / d };
        let hi = (self.n as i128 - 1 - start).div_euclid(d) + 1;
        let (lo, hi) = (lo.min(k), hi.clamp(0, k));
        if hi <= lo {
            return (0, 0, 0);
        }
        // In [0, n) by construction, so the casts are exact.
        (lo as usize, hi as usize, (start + lo * d) as usize)
    }
}

/// A grouped 3-D convolution (a 1-D or 2-D one has unit leading axes) computed straight from its
/// definition, without a padded copy of the input: memory is O(input + output) whatever the
/// padding, stride or dilation, and the work is one multiply-add per tap that reads the input.
/// The fast kernels fall back to it when their padded scratch would dwarf the tensors (a huge
/// stride, dilation or padding with a small output).
///
/// Layouts: input `(B, Cin, n0, n1, n2)`, weight `(Cout, Cin/groups, k0, k1, k2)`, output
/// `(B, Cout, o0, o1, o2)`, all f32 and contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirectConv {
    pub b: usize,
    pub cin: usize,
    pub cout: usize,
    pub groups: usize,
    pub axes: [Axis; 3],
}

impl DirectConv {
    /// `(input volume, output volume, taps per kernel, input channels per group, output
    /// channels per group)`.
    fn sizes(&self) -> (usize, usize, usize, usize, usize) {
        let vol = |f: fn(&Axis) -> usize| self.axes.iter().map(f).product::<usize>();
        let groups = self.groups.max(1);
        let (cig, cog) = (self.cin / groups, self.cout / groups);
        (vol(|a| a.n), vol(|a| a.o), vol(|a| a.k), cig, cog)
    }

    /// Calls `f(output index, input index, tap index)` for every tap of every output position of
    /// one volume that reads the input (flat indices within a volume / a kernel).
    #[inline]
    fn visit(&self, mut f: impl FnMut(usize, usize, usize)) {
        let [a0, a1, a2] = self.axes;
        for o0 in 0..a0.o {
            let (l0, h0, i0) = a0.taps(o0);
            for o1 in 0..a1.o {
                let (l1, h1, i1) = a1.taps(o1);
                for o2 in 0..a2.o {
                    let (l2, h2, i2) = a2.taps(o2);
                    let out = (o0 * a1.o + o1) * a2.o + o2;
                    for (j0, k0) in (l0..h0).enumerate() {
                        let x0 = i0 + j0 * a0.d;
                        for (j1, k1) in (l1..h1).enumerate() {
                            let x1 = i1 + j1 * a1.d;
                            let row = (x0 * a1.n + x1) * a2.n;
                            let tap = (k0 * a1.k + k1) * a2.k;
                            for (j2, k2) in (l2..h2).enumerate() {
                                f(out, row + i2 + j2 * a2.d, tap + k2);
                            }
                        }
                    }
                }
            }
        }
    }

    /// `y = conv(x, w)`.
    pub(crate) fn forward(&self, x: &[f32], w: &[f32]) -> crate::Result<Vec<f32>> {
        let (iv, ov, kk, cig, cog) = self.sizes();
        let mut y = try_zeros::<f32>("convolution", self.b * self.cout * ov)?;
        par_tasks(&mut y, ov, |i, yv, _: &mut ()| {
            let (bi, co) = (i / self.cout, i % self.cout);
            let c0 = co / cog * cig;
            for ci in 0..cig {
                let xv = &x[(bi * self.cin + c0 + ci) * iv..][..iv];
                let wk = &w[(co * cig + ci) * kk..][..kk];
                self.visit(|o, xi, t| yv[o] += wk[t] * xv[xi]);
            }
        });
        Ok(y)
    }

    /// `grad_x` from `grad_y` and `w`: one task per input volume, so writes never overlap.
    pub(crate) fn grad_input(&self, gy: &[f32], w: &[f32]) -> Vec<f32> {
        let (iv, ov, kk, cig, cog) = self.sizes();
        let mut gx = vec![0f32; self.b * self.cin * iv];
        par_tasks(&mut gx, iv, |i, gxv, _: &mut ()| {
            let (bi, ci) = (i / self.cin, i % self.cin);
            let (grp, cil) = (ci / cig, ci % cig);
            for co in grp * cog..(grp + 1) * cog {
                let gyv = &gy[(bi * self.cout + co) * ov..][..ov];
                let wk = &w[(co * cig + cil) * kk..][..kk];
                self.visit(|o, xi, t| gxv[xi] += gyv[o] * wk[t]);
            }
        });
        gx
    }

    /// `grad_w` from `x` and `grad_y`: one task per output channel, summed over the batch.
    pub(crate) fn grad_weight(&self, x: &[f32], gy: &[f32]) -> Vec<f32> {
        let (iv, ov, kk, cig, cog) = self.sizes();
        let mut gw = vec![0f32; self.cout * cig * kk];
        par_tasks(&mut gw, cig * kk, |co, gwc, _: &mut ()| {
            let c0 = co / cog * cig;
            for bi in 0..self.b {
                let gyv = &gy[(bi * self.cout + co) * ov..][..ov];
                for ci in 0..cig {
                    let xv = &x[(bi * self.cin + c0 + ci) * iv..][..iv];
                    let gk = &mut gwc[ci * kk..][..kk];
                    self.visit(|o, xi, t| gk[t] += gyv[o] * xv[xi]);
                }
            }
        });
        gw
    }
}
