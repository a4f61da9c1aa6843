//! CPU kernels of the forward pass.

use super::op::{Kind, NormOp};
use super::TASK_ELEMS;

use crate::cpu::simd::{sum, LANES};
use crate::cpu::{f32_row, par_tasks, round_into, Element, Isa, Kernel, Level};

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// Which parameter gradients the backward must produce.
#[derive(Debug, Clone, Copy)]
pub(super) struct Need {
    pub(super) dw: bool,
    pub(super) db: bool,
}

/// $\sum (a_i - m)^2$.
#[inline(always)]
pub(super) fn sum_sq_dev(a: &[f32], m: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let rest: f32 = ca.remainder().iter().map(|v| (v - m) * (v - m)).sum();
    for c in ca {
        for j in 0..LANES {
            let t = c[j] - m;
            acc[j] += t * t;
        }
    }
    acc.iter().sum::<f32>() + rest
}

#[inline(always)]
pub(super) fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb, cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let mut rest = 0f32;
    for ((x, y), z) in ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .zip(cc.remainder())
    {
        rest += x * y * z;
    }
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j] * z[j];
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// `(mean, 1 / sqrt(var + eps))` of a row (mean 0 and the mean square for RMS norm).
#[inline(always)]
pub(super) fn stats(kind: Kind, x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = match kind {
        Kind::Layer | Kind::Group => sum(x) / n,
        Kind::Rms => 0.0,
    };
    let var = sum_sq_dev(x, mean) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

#[inline(always)]
fn fwd_row(op: &NormOp, x: &[f32], w: Option<&[f32]>, b: Option<&[f32]>, y: &mut [f32]) {
    let (m, r) = stats(op.kind, x, op.eps);
    match (w, b) {
        (Some(w), Some(b)) => {
            for (((y, x), w), b) in y.iter_mut().zip(x).zip(w).zip(b) {
                *y = (x - m) * r * w + b;
            }
        }
        (Some(w), None) => {
            for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                *y = (x - m) * r * w;
            }
        }
        (None, Some(b)) => {
            for ((y, x), b) in y.iter_mut().zip(x).zip(b) {
                *y = (x - m) * r + b;
            }
        }
        (None, None) => {
            for (y, x) in y.iter_mut().zip(x) {
                *y = (x - m) * r;
            }
        }
    }
}

/// Per-worker scratch rows for f16/bf16 (unused for f32).
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) x: Vec<f32>,
    pub(super) g: Vec<f32>,
    pub(super) y: Vec<f32>,
}

/// Forward of statistics row `idx`: a layer / RMS norm row, or one (sample, group) block of a
/// group norm, whose per-channel parameters are the group's slice of `w` / `b`.
#[inline(always)]
fn fwd_any(
    op: &NormOp,
    idx: usize,
    x: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    y: &mut [f32],
) {
    if op.kind != Kind::Group {
        return fwd_row(op, x, w, b, y);
    }
    let cpg = op.d / op.groups;
    let c0 = (idx % op.groups) * cpg;
    let (w, b) = (w.map(|w| &w[c0..c0 + cpg]), b.map(|b| &b[c0..c0 + cpg]));
    let (m, r) = stats(op.kind, x, op.eps);
    let rows = x
        .chunks_exact(op.spatial)
        .zip(y.chunks_exact_mut(op.spatial));
    for (c, (xc, yc)) in rows.enumerate() {
        // y = (x - m)·r·w_c + b_c folded into one multiply-add per value.
        let a = r * w.map_or(1.0, |w| w[c]);
        let shift = b.map_or(0.0, |b| b[c]) - m * a;
        for (y, x) in yc.iter_mut().zip(xc) {
            *y = x * a + shift;
        }
    }
}

/// One forward task: a block of whole rows `x` (the first is row `row0`) into `out`.
struct FwdTask<'a, T> {
    op: &'a NormOp,
    row0: usize,
    x: &'a [T],
    w: Option<&'a [f32]>,
    b: Option<&'a [f32]>,
    out: &'a mut [T],
    scr: &'a mut Scratch,
}

impl<T: Element> Kernel for FwdTask<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let FwdTask {
            op,
            row0,
            x,
            w,
            b,
            out,
            scr,
        } = self;
        let d = op.row;
        let rows = x.chunks_exact(d).zip(out.chunks_exact_mut(d));
        for (k, (xr, yr)) in rows.enumerate() {
            let xf: &[f32] = f32_row(xr, &mut scr.x);
            match T::as_f32_mut(yr) {
                Some(yf) => fwd_any(op, row0 + k, xf, w, b, yf),
                None => {
                    scr.y.resize(d, 0.0);
                    fwd_any(op, row0 + k, xf, w, b, &mut scr.y);
                    round_into(yr, &scr.y);
                }
            }
        }
    }
}

pub(super) fn forward<T: Element>(
    op: &NormOp,
    x: &[T],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
) -> Vec<T> {
    let level = Level::detect();
    let chunk = (TASK_ELEMS / op.row).max(1) * op.row;
    let mut out = vec![T::from_f32(0.0); x.len()];
    par_tasks(&mut out, chunk, |i, out, scr: &mut Scratch| {
        let x = &x[i * chunk..i * chunk + out.len()];
        let row0 = i * chunk / op.row;
        level.run(FwdTask {
            op,
            row0,
            x,
            w,
            b,
            out,
            scr,
        })
    });
    out
}
