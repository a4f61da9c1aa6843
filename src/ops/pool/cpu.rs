//! The CPU kernels: per `(D, H, W)` volume, each output row reduces the input rows of its
//! window into one row buffer (contiguous, vectorised), then the buffer's column taps; the
//! backward pass mirrors it. Compiled for the best SIMD level.

use super::geometry::Taps;
use super::Geom;
use crate::cpu::math::nan_max;
use crate::cpu::{items_per_task, par_tasks, try_zeros, Element, Isa, Kernel, Level};
use crate::ops::adaptive_pool::PoolMode;
use crate::Result;

/// Folds the input rows of the window `(td, th)` into `acc` (max or sum, in f32); false when
/// the window holds no input row.
#[inline(always)]
fn reduce_rows<T: Element>(
    g: &Geom,
    x: &[T],
    (td, th): (&Taps, &Taps),
    acc: &mut Vec<f32>,
) -> bool {
    let [_, h, w] = g.input;
    let mut filled = false;
    for d in td.indices() {
        for r in th.indices() {
            let row = &x[(d * h + r) * w..(d * h + r + 1) * w];
            if !filled {
                acc.clear();
                acc.extend(row.iter().map(|v| v.to_f32()));
                filled = true;
                continue;
            }
            match g.mode {
                PoolMode::Max => {
                    for (a, v) in acc.iter_mut().zip(row) {
                        *a = nan_max(*a, v.to_f32());
                    }
                }
                PoolMode::Avg => {
                    for (a, v) in acc.iter_mut().zip(row) {
                        *a += v.to_f32();
                    }
                }
            }
        }
    }
    filled
}

/// Pools one volume `x` into `y`.
#[inline(always)]
fn forward_volume<T: Element>(g: &Geom, x: &[T], y: &mut [T], acc: &mut Vec<f32>) {
    let [ad, ah, aw] = &g.axes;
    let mut out_rows = y.chunks_exact_mut(aw.len());
    for td in ad {
        for th in ah {
            let Some(yrow) = out_rows.next() else {
                return;
            };
            if !reduce_rows(g, x, (td, th), acc) {
                // A window inside the padding only: -inf (max) or 0 (average), as PyTorch.
                let empty = match g.mode {
                    PoolMode::Max => f32::NEG_INFINITY,
                    PoolMode::Avg => 0.0,
                };
                yrow.fill(T::from_f32(empty));
                continue;
            }
            for (tw, out) in aw.iter().zip(yrow.iter_mut()) {
                let v = match g.mode {
                    PoolMode::Max => tw
                        .indices()
                        .fold(f32::NEG_INFINITY, |m, i| nan_max(m, acc[i])),
                    PoolMode::Avg => match g.divisor([td, th, tw]) {
                        0.0 => 0.0,
                        div => tw.indices().map(|i| acc[i]).sum::<f32>() / div,
                    },
                };
                *out = T::from_f32(v);
            }
        }
    }
}

/// The pooled output of every volume of `x`.
pub(super) fn forward<T: Element>(g: &Geom, x: &[T]) -> Result<Vec<T>> {
    let (inp, outp) = (g.in_plane(), g.out_plane());
    let mut y = try_zeros::<T>("pool", g.planes() * outp)?;
    let k = items_per_task(inp);
    let level = Level::detect();
    par_tasks(&mut y, k * outp, |i, y, acc: &mut Vec<f32>| {
        let x = &x[i * k * inp..];
        level.run(FwdTask { g, x, y, acc })
    });
    Ok(y)
}

/// One forward task: the volumes of `y` from those of `x`.
struct FwdTask<'a, T> {
    g: &'a Geom,
    x: &'a [T],
    y: &'a mut [T],
    acc: &'a mut Vec<f32>,
}

impl<T: Element> Kernel for FwdTask<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let FwdTask { g, x, y, acc } = self;
        let (inp, outp) = (g.in_plane(), g.out_plane());
        for (y, x) in y.chunks_exact_mut(outp).zip(x.chunks_exact(inp)) {
            forward_volume(g, x, y, acc);
        }
    }
}

/// Index in the volume of the element PyTorch's max pooling picks in the window `taps` whose
/// pooled value is `m`: the first (row-major) element equal to `m`, or the last NaN when `m`
/// is NaN; `None` for a window without inputs.
#[inline(always)]
fn argmax<T: Element>(g: &Geom, x: &[T], [td, th, tw]: [&Taps; 3], m: f32) -> Option<usize> {
    let [_, h, w] = g.input;
    if m.is_nan() {
        for d in td.indices().rev() {
            for r in th.indices().rev() {
                let base = (d * h + r) * w;
                if let Some(c) = tw.indices().rev().find(|&c| x[base + c].to_f32().is_nan()) {
                    return Some(base + c);
                }
            }
        }
    } else {
        for d in td.indices() {
            for r in th.indices() {
                let base = (d * h + r) * w;
                if let Some(c) = tw.indices().find(|&c| x[base + c].to_f32() == m) {
                    return Some(base + c);
                }
            }
        }
    }
    None
}

/// Gradient of one volume, accumulated in f32 into `gx` (zeros on entry).
#[inline(always)]
fn backward_volume<T: Element>(
    g: &Geom,
    (x, y, gy): (&[T], &[T], &[T]),
    gx: &mut [f32],
    acc: &mut Vec<f32>,
) {
    let [ad, ah, aw] = &g.axes;
    let [_, h, w] = g.input;
    let wo = aw.len();
    let mut rows = gy.chunks_exact(wo).zip(y.chunks_exact(wo));
    for td in ad {
        for th in ah {
            let Some((grow, yrow)) = rows.next() else {
                return;
            };
            match g.mode {
                PoolMode::Max => {
                    for ((tw, gv), yv) in aw.iter().zip(grow).zip(yrow) {
                        if let Some(i) = argmax(g, x, [td, th, tw], yv.to_f32()) {
                            gx[i] += gv.to_f32();
                        }
                    }
                }
                PoolMode::Avg => {
                    // Spread each output's share over its columns once, then add that row to
                    // every input row of the window.
                    acc.clear();
                    acc.resize(w, 0.0);
                    for (tw, gv) in aw.iter().zip(grow) {
                        let div = g.divisor([td, th, tw]);
                        if div == 0.0 {
                            continue;
                        }
                        let share = gv.to_f32() / div;
                        for c in tw.indices() {
                            acc[c] += share;
                        }
                    }
                    for d in td.indices() {
                        for r in th.indices() {
                            let row = &mut gx[(d * h + r) * w..(d * h + r + 1) * w];
                            for (dst, a) in row.iter_mut().zip(acc.iter()) {
                                *dst += a;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The input gradient in f32 (the f32 op returns it as is; f16/bf16 round it once).
pub(super) fn backward<T: Element>(g: &Geom, x: &[T], y: &[T], gy: &[T]) -> Result<Vec<f32>> {
    let (inp, outp) = (g.in_plane(), g.out_plane());
    let mut gx = try_zeros::<f32>("pool_grad", g.planes() * inp)?;
    let k = items_per_task(inp);
    let level = Level::detect();
    par_tasks(&mut gx, k * inp, |i, gx, acc: &mut Vec<f32>| {
        let x = &x[i * k * inp..];
        let (y, gy) = (&y[i * k * outp..], &gy[i * k * outp..]);
        level.run(BwdTask {
            g,
            x,
            y,
            gy,
            gx,
            acc,
        })
    });
    Ok(gx)
}

/// One backward task: the volumes of `gx` from those of `x`, `y` and `gy`.
struct BwdTask<'a, T> {
    g: &'a Geom,
    x: &'a [T],
    y: &'a [T],
    gy: &'a [T],
    gx: &'a mut [f32],
    acc: &'a mut Vec<f32>,
}

impl<T: Element> Kernel for BwdTask<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let BwdTask {
            g,
            x,
            y,
            gy,
            gx,
            acc,
        } = self;
        let (inp, outp) = (g.in_plane(), g.out_plane());
        let volumes = gx
            .chunks_exact_mut(inp)
            .zip(x.chunks_exact(inp))
            .zip(y.chunks_exact(outp).zip(gy.chunks_exact(outp)));
        for ((gx, x), (y, gy)) in volumes {
            backward_volume(g, (x, y, gy), gx, acc);
        }
    }
}
