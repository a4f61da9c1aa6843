//! CPU kernels of the backward pass.

use super::forward::*;
use super::op::{Kind, NormOp};
use super::TASK_ELEMS;

use crate::cpu::simd::{dot, sum};
use crate::cpu::{f32_row, par_parts, round_into, Element, Isa, Kernel, Level};

// --- backward --------------------------------------------------------------------------------

/// One row of the backward: writes `dx` and adds this row's terms to `dw` / `db`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn bwd_row(
    op: &NormOp,
    x: &[f32],
    g: &[f32],
    w: Option<&[f32]>,
    need: Need,
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    let n = op.row as f32;
    let (m, r) = stats(op.kind, x, op.eps);
    // s_g = sum(g·w), s_gx = sum(g·w·x̂) = r·(sum(g·w·x) - m·s_g).
    let (s_g, s_gwx) = match w {
        Some(w) => (dot(g, w), dot3(g, w, x)),
        None => (sum(g), dot(g, x)),
    };
    let s_gx = r * (s_gwx - m * s_g);
    let c1 = match op.kind {
        Kind::Layer | Kind::Group => s_g / n,
        Kind::Rms => 0.0,
    };
    let c2 = s_gx / n;
    match w {
        Some(w) => {
            for (((dx, x), g), w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                *dx = r * (g * w - c1 - (x - m) * r * c2);
            }
        }
        None => {
            for ((dx, x), g) in dx.iter_mut().zip(x).zip(g) {
                *dx = r * (g - c1 - (x - m) * r * c2);
            }
        }
    }
    if need.dw {
        for ((dw, x), g) in dw.iter_mut().zip(x).zip(g) {
            *dw += g * (x - m) * r;
        }
    }
    if need.db {
        for (db, g) in db.iter_mut().zip(g) {
            *db += g;
        }
    }
}

/// Backward of statistics row `idx`: [`bwd_row`] for layer / RMS norm; for one (sample, group)
/// block of a group norm the same formula with one weight per channel, and the channel sums
/// $\sum g$ and $\sum g\thinspace x$ (one pass over the block) give both the row constants and this
/// block's `dw` / `db` terms.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn bwd_any(
    op: &NormOp,
    idx: usize,
    x: &[f32],
    g: &[f32],
    w: Option<&[f32]>,
    need: Need,
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    if op.kind != Kind::Group {
        return bwd_row(op, x, g, w, need, dx, dw, db);
    }
    let (n, s) = (op.row as f32, op.spatial);
    let cpg = op.d / op.groups;
    let c0 = (idx % op.groups) * cpg;
    let w = w.map(|w| &w[c0..c0 + cpg]);
    let (m, r) = stats(op.kind, x, op.eps);
    let (mut s_g, mut s_gwx) = (0f32, 0f32);
    for (c, (xc, gc)) in x.chunks_exact(s).zip(g.chunks_exact(s)).enumerate() {
        let (sg, sgx) = (sum(gc), dot(gc, xc));
        let wc = w.map_or(1.0, |w| w[c]);
        s_g += wc * sg;
        s_gwx += wc * sgx;
        if need.dw {
            dw[c0 + c] += r * (sgx - m * sg);
        }
        if need.db {
            db[c0 + c] += sg;
        }
    }
    let c1 = s_g / n;
    let c2 = r * (s_gwx - m * s_g) / n;
    let rows = x.chunks_exact(s).zip(g.chunks_exact(s));
    for (c, ((xc, gc), dxc)) in rows.zip(dx.chunks_exact_mut(s)).enumerate() {
        let wc = w.map_or(1.0, |w| w[c]);
        for ((dx, x), g) in dxc.iter_mut().zip(xc).zip(gc) {
            *dx = r * (g * wc - c1 - (x - m) * r * c2);
        }
    }
}

/// Per-worker state of the backward: partial parameter gradients and scratch rows.
#[derive(Default)]
struct BwdState {
    dw: Vec<f32>,
    db: Vec<f32>,
    scr: Scratch,
}

/// One backward task: a block of whole rows (the first is row `row0`).
struct BwdTask<'a, T> {
    op: &'a NormOp,
    row0: usize,
    x: &'a [T],
    g: &'a [T],
    w: Option<&'a [f32]>,
    need: Need,
    dx: &'a mut [T],
    st: &'a mut BwdState,
}

impl<T: Element> Kernel for BwdTask<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let BwdTask {
            op,
            row0,
            x,
            g,
            w,
            need,
            dx,
            st,
        } = self;
        let d = op.row;
        let BwdState { dw, db, scr } = st;
        let rows = x.chunks_exact(d).zip(g.chunks_exact(d));
        for (k, ((xr, gr), dxr)) in rows.zip(dx.chunks_exact_mut(d)).enumerate() {
            let xf: &[f32] = f32_row(xr, &mut scr.x);
            let gf: &[f32] = f32_row(gr, &mut scr.g);
            match T::as_f32_mut(dxr) {
                Some(o) => bwd_any(op, row0 + k, xf, gf, w, need, o, dw, db),
                None => {
                    scr.y.resize(d, 0.0);
                    bwd_any(op, row0 + k, xf, gf, w, need, &mut scr.y, dw, db);
                    round_into(dxr, &scr.y);
                }
            }
        }
    }
}

/// `(dx, dw, db)`; `dw` / `db` are zeros when not needed.
pub(super) fn backward<T: Element>(
    op: &NormOp,
    x: &[T],
    g: &[T],
    w: Option<&[f32]>,
    need: Need,
) -> (Vec<T>, Vec<f32>, Vec<f32>) {
    let level = Level::detect();
    let d = op.d;
    let chunk = (TASK_ELEMS / op.row).max(1) * op.row;
    let mut dx = vec![T::from_f32(0.0); x.len()];
    let chunks: Vec<&mut [T]> = dx.chunks_mut(chunk).collect();
    let states = par_parts(chunks.len(), [chunks], |i, [dx], st: &mut BwdState| {
        let (start, len) = (i * chunk, dx.len());
        let (x, g) = (&x[start..start + len], &g[start..start + len]);
        let row0 = start / op.row;
        if st.dw.len() != d {
            st.dw = vec![0.0; d];
            st.db = vec![0.0; d];
        }
        level.run(BwdTask {
            op,
            row0,
            x,
            g,
            w,
            need,
            dx,
            st,
        })
    });
    let mut dw = vec![0f32; d];
    let mut db = vec![0f32; d];
    for st in &states {
        for (a, b) in dw.iter_mut().zip(&st.dw) {
            *a += b;
        }
        for (a, b) in db.iter_mut().zip(&st.db) {
            *a += b;
        }
    }
    (dx, dw, db)
}
