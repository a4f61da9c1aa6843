//! The CPU kernels: one binned reduction per plane, forward and backward, at the best SIMD
//! level.

use super::{Geom, PoolMode};
use crate::cpu::math::nan_max;
use crate::cpu::{items_per_task, par_tasks, try_zeros, Element, Isa, Kernel, Level};
use crate::Result;

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
#[inline(always)]
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

pub(super) fn forward<T: Element>(g: &Geom, mode: PoolMode, x: &[T]) -> Result<Vec<T>> {
    let (inp, outp) = (g.in_plane(), g.out_plane());
    let mut y = try_zeros::<T>("adaptive_pool", g.planes() * outp)?;
    let k = items_per_task(inp);
    let level = Level::detect();
    par_tasks(&mut y, k * outp, |i, y, acc: &mut Vec<f32>| {
        let x = &x[i * k * inp..];
        level.run(FwdPlanes { g, mode, x, y, acc })
    });
    Ok(y)
}

/// One forward task: the planes of `y` from those of `x`.
struct FwdPlanes<'a, T> {
    g: &'a Geom,
    mode: PoolMode,
    x: &'a [T],
    y: &'a mut [T],
    acc: &'a mut Vec<f32>,
}

impl<T: Element> Kernel for FwdPlanes<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let FwdPlanes { g, mode, x, y, acc } = self;
        let (inp, outp) = (g.in_plane(), g.out_plane());
        for (y, x) in y.chunks_exact_mut(outp).zip(x.chunks_exact(inp)) {
            forward_plane(g, mode, x, y, acc);
        }
    }
}

/// Gradient of one plane, accumulated in f32 into `gx` (zeroed here).
#[inline(always)]
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
#[inline(always)]
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
pub(super) fn backward<T: Element>(
    g: &Geom,
    mode: PoolMode,
    x: &[T],
    y: &[T],
    gy: &[T],
) -> Vec<f32> {
    let (inp, outp) = (g.in_plane(), g.out_plane());
    let mut gx = vec![0f32; g.planes() * inp];
    let k = items_per_task(inp);
    let level = Level::detect();
    par_tasks(&mut gx, k * inp, |i, gx, acc: &mut Vec<f32>| {
        let (x, y, gy) = (&x[i * k * inp..], &y[i * k * outp..], &gy[i * k * outp..]);
        level.run(BwdPlanes {
            g,
            mode,
            x,
            y,
            gy,
            gx,
            acc,
        })
    });
    gx
}

/// One backward task: the planes of `gx` from those of `x`, `y` and `gy`.
struct BwdPlanes<'a, T> {
    g: &'a Geom,
    mode: PoolMode,
    x: &'a [T],
    y: &'a [T],
    gy: &'a [T],
    gx: &'a mut [f32],
    acc: &'a mut Vec<f32>,
}

impl<T: Element> Kernel for BwdPlanes<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let BwdPlanes {
            g,
            mode,
            x,
            y,
            gy,
            gx,
            acc,
        } = self;
        let (inp, outp) = (g.in_plane(), g.out_plane());
        let planes = gx
            .chunks_exact_mut(inp)
            .zip(x.chunks_exact(inp))
            .zip(y.chunks_exact(outp).zip(gy.chunks_exact(outp)));
        for ((gx, x), (y, gy)) in planes {
            backward_plane(g, mode, x, y, gy, gx, acc);
        }
    }
}
