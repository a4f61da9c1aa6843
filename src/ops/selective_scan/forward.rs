//! The forward kernel: outputs, last state and the backward's state checkpoints.

use super::kernel::{par_rows, prepare, rows_per_task, ChunkScratch, Prepared};
use super::{Geom, MAX_NB, W};
use crate::cpu::lanes::{Blk, Blocks};
use crate::cpu::math::{exp2, sigmoid, softplus};
use crate::cpu::{Isa, Kernel, Level};

/// Per-worker scratch of the forward.
#[derive(Default)]
struct FwdScratch {
    dt: Vec<f32>,
    du: Vec<f32>,
    ck: ChunkScratch,
}

/// Forward over all rows: returns the flat output (`[y | last state]`) and, if `want_ckpt`,
/// the state checkpoints `(B·D, nck, nbk·W)`.
pub(super) fn forward(
    gm: &Geom,
    u: &[f32],
    delta: &[f32],
    rest: &[f32],
    want_ckpt: bool,
) -> (Vec<f32>, Vec<f32>) {
    let p = prepare(gm, u, delta, rest);
    let level = level_for(gm);
    let mut out = vec![0f32; gm.out_len()];
    let ck_stride = if want_ckpt { gm.nck() * gm.nbk * W } else { 0 };
    let mut ckpt = vec![0f32; gm.rows() * ck_stride];
    let (y, last) = out.split_at_mut(gm.bdl());
    let last_stride = if gm.last { gm.n } else { 0 };
    let per = rows_per_task(gm);
    par_rows(
        gm.rows(),
        per,
        [(y, gm.l), (last, last_stride), (&mut ckpt, ck_stride)],
        |r0, outs, scr: &mut FwdScratch| {
            let [y, last, ck] = outs;
            let p = &p;
            level.run(FwdRows {
                gm,
                p,
                r0,
                y,
                last,
                ck,
                scr,
            })
        },
    );
    (out, ckpt)
}

/// The SIMD level of the group kernels: AVX-512 only when the states fill whole 16-lane
/// registers (`N` padded to a multiple of 16).
pub(super) fn level_for(gm: &Geom) -> Level {
    let level = Level::detect();
    if gm.nbk.is_multiple_of(2) {
        level
    } else {
        level.at_most_avx2()
    }
}

/// [`fwd_rows`] at the best level.
struct FwdRows<'a> {
    gm: &'a Geom,
    p: &'a Prepared<'a>,
    r0: usize,
    y: &'a mut [f32],
    last: &'a mut [f32],
    ck: &'a mut [f32],
    scr: &'a mut FwdScratch,
}

impl Kernel for FwdRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, isa: S) {
        let FwdRows {
            gm,
            p,
            r0,
            y,
            last,
            ck,
            scr,
        } = self;
        fwd_rows::<S::Lanes>(isa, gm, p, r0, y, last, ck, scr)
    }
}

/// The forward of the rows `r0..` whose outputs `y` (L per row), `last` (N per row or empty)
/// and `ck` (checkpoints per row or empty) are given.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fwd_rows<V: Blocks>(
    isa: V::Isa,
    gm: &Geom,
    p: &Prepared,
    r0: usize,
    y: &mut [f32],
    last: &mut [f32],
    ck: &mut [f32],
    scr: &mut FwdScratch,
) {
    let (l, n, nbk) = (gm.l, gm.n, gm.nbk);
    let count = y.len() / l;
    let ck_stride = ck.len() / count;
    let dg = gm.d / gm.g;
    scr.dt.resize(l, 0.0);
    scr.du.resize(l, 0.0);
    scr.ck.size(gm.chunk);
    for i in 0..count {
        let row = r0 + i;
        let (bi, di) = (row / gm.d, row % gm.d);
        let gi = di / dg;
        let u = &p.u[row * l..(row + 1) * l];
        let delta = &p.delta[row * l..(row + 1) * l];
        let bias = if gm.has_bias { p.bias[di] } else { 0.0 };
        step_sizes(gm.softplus, bias, delta, u, &mut scr.dt, &mut scr.du);
        let yr = &mut y[i * l..(i + 1) * l];
        yr.fill(0.0);
        let ckr = &mut ck[i * ck_stride..(i + 1) * ck_stride];
        let bg = (bi * gm.g + gi) * l * nbk;
        let (bt, ct) = (&p.bt[bg..bg + l * nbk], &p.ct[bg..bg + l * nbk]);
        let a = &p.a[di * nbk..(di + 1) * nbk];
        let a2 = &p.a2[di * nbk..(di + 1) * nbk];
        let mut xlast = [[0f32; W]; MAX_NB];
        let mut g0 = 0;
        while g0 < nbk {
            let nb = (nbk - g0).min(MAX_NB);
            let args = GroupFwd {
                dt: &scr.dt,
                du: &scr.du,
                a: &a[g0..g0 + nb],
                a2: &a2[g0..g0 + nb],
                bt,
                ct,
                nbk,
                g0,
                chunk: gm.chunk,
            };
            match nb {
                1 => fwd_group::<V, 1>(isa, &args, yr, ckr, &mut xlast, &mut scr.ck),
                2 => fwd_group::<V, 2>(isa, &args, yr, ckr, &mut xlast, &mut scr.ck),
                3 => fwd_group::<V, 3>(isa, &args, yr, ckr, &mut xlast, &mut scr.ck),
                _ => fwd_group::<V, 4>(isa, &args, yr, ckr, &mut xlast, &mut scr.ck),
            }
            if !last.is_empty() {
                // The group's states, without the padding lanes past N.
                let lr = &mut last[i * n..(i + 1) * n];
                let states = xlast[..nb].iter().flatten();
                for (dst, v) in lr[g0 * W..].iter_mut().zip(states) {
                    *dst = *v;
                }
            }
            g0 += nb;
        }
        // Skip connection and gate.
        let dd = if gm.has_d { p.dskip[di] } else { 0.0 };
        for (yv, uv) in yr.iter_mut().zip(u) {
            *yv += dd * uv;
        }
        if gm.has_z {
            let z = &p.z[row * l..(row + 1) * l];
            for (yv, &zv) in yr.iter_mut().zip(z) {
                *yv *= zv * sigmoid(zv);
            }
        }
    }
}

/// `dt = softplus(delta + bias)` (or `delta + bias`) and `du = dt * u`.
#[inline(always)]
pub(super) fn step_sizes(
    sp: bool,
    bias: f32,
    delta: &[f32],
    u: &[f32],
    dt: &mut [f32],
    du: &mut [f32],
) {
    if sp {
        for (t, &v) in dt.iter_mut().zip(delta) {
            *t = softplus(v + bias);
        }
    } else {
        for (t, &v) in dt.iter_mut().zip(delta) {
            *t = v + bias;
        }
    }
    for ((w, &t), &uv) in du.iter_mut().zip(dt.iter()).zip(u) {
        *w = t * uv;
    }
}

/// The inputs of one group of state blocks of one row.
pub(super) struct GroupFwd<'a> {
    pub(super) dt: &'a [f32],
    pub(super) du: &'a [f32],
    /// This group's blocks of `a` and of `a · log2(e)`.
    pub(super) a: &'a [Blk],
    pub(super) a2: &'a [Blk],
    /// The row's `(L, nbk)` blocks of B and C.
    pub(super) bt: &'a [Blk],
    pub(super) ct: &'a [Blk],
    pub(super) nbk: usize,
    /// First block of the group.
    pub(super) g0: usize,
    pub(super) chunk: usize,
}

/// Phase one of a chunk, free of the recurrence (so it pipelines): for the steps `l0..l1`
/// and the group's `NB` blocks, `es = 2^(dt · A log2 e) = e^(dt A)` and `us = du · B`.
#[inline(always)]
pub(super) fn decays_and_inputs<V: Blocks, const NB: usize>(
    isa: V::Isa,
    p: &GroupFwd,
    a2: &[V; NB],
    l0: usize,
    l1: usize,
    es: &mut [Blk],
    us: &mut [Blk],
) {
    let (dts, dus) = (&p.dt[l0..l1], &p.du[l0..l1]);
    let bts = &p.bt[l0 * p.nbk..l1 * p.nbk];
    let es = &mut es[..(l1 - l0) * NB];
    let us = &mut us[..(l1 - l0) * NB];
    // One block at a time over the chunk: few live registers besides the constants.
    for (j, &aj) in a2.iter().take(NB / V::K).enumerate() {
        let (jb, col) = (j * V::K, p.g0 + j * V::K);
        let steps = es
            .chunks_exact_mut(NB)
            .zip(us.chunks_exact_mut(NB))
            .zip(dts.iter().zip(dus))
            .zip(bts.chunks_exact(p.nbk));
        for (((eo, uo), (&dt, &du)), bl) in steps {
            exp2(V::splat(isa, dt).mul(aj)).store(&mut eo[jb..]);
            V::splat(isa, du)
                .mul(V::load(isa, &bl[col..]))
                .store(&mut uo[jb..]);
        }
    }
}

/// Phase two of a chunk: the recurrence `x = e · x + u` over the steps of `es`/`xs`, `NB`
/// blocks at a time, overwriting `xs` (the inputs `u`) with the states when `keep`; with
/// `accs` non-empty, `accs[i] = Σ_j x_j · C_j` (lane-wise; the lanes are summed later).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn recur<V: Blocks, const NB: usize>(
    isa: V::Isa,
    p: &GroupFwd,
    l0: usize,
    x: &mut [V; NB],
    es: &[Blk],
    xs: &mut [Blk],
    accs: &mut [Blk],
    keep: bool,
) {
    let steps = es.len() / NB;
    let cts = &p.ct[l0 * p.nbk..(l0 + steps) * p.nbk];
    for (i, (eo, xo)) in es.chunks_exact(NB).zip(xs.chunks_exact_mut(NB)).enumerate() {
        for (j, xj) in x.iter_mut().take(NB / V::K).enumerate() {
            let jb = j * V::K;
            *xj = V::load(isa, &eo[jb..]).mul_add(*xj, V::load(isa, &xo[jb..]));
            if keep {
                xj.store(&mut xo[jb..]);
            }
        }
        if !accs.is_empty() {
            let cl = &cts[i * p.nbk + p.g0..i * p.nbk + p.g0 + NB];
            let mut acc = V::zero(isa);
            for j in 0..NB / V::K {
                acc = x[j].mul_add(V::load(isa, &cl[j * V::K..]), acc);
            }
            acc.store_folded(&mut accs[i]);
        }
    }
}

/// Runs `NB` state blocks over the whole sequence: adds their contribution to `y`, stores
/// their checkpoints in `ck` (unless empty) and their final state in `xlast[..NB]`.
#[inline(always)]
fn fwd_group<V: Blocks, const NB: usize>(
    isa: V::Isa,
    p: &GroupFwd,
    y: &mut [f32],
    ck: &mut [f32],
    xlast: &mut [Blk; MAX_NB],
    scr: &mut ChunkScratch,
) {
    let l_len = p.dt.len();
    let mut a2 = [V::zero(isa); NB];
    for (j, av) in a2.iter_mut().take(NB / V::K).enumerate() {
        *av = V::load(isa, &p.a2[j * V::K..]);
    }
    let mut x = [V::zero(isa); NB];
    let mut l0 = 0;
    let mut k = 0;
    while l0 < l_len {
        let l1 = (l0 + p.chunk).min(l_len);
        if !ck.is_empty() {
            let mut blks = [[0f32; W]; NB];
            for (j, xv) in x.iter().take(NB / V::K).enumerate() {
                xv.store(&mut blks[j * V::K..]);
            }
            let o = (k * p.nbk + p.g0) * W;
            for (dst, v) in ck[o..o + NB * W].iter_mut().zip(blks.iter().flatten()) {
                *dst = *v;
            }
        }
        let n = (l1 - l0) * NB;
        decays_and_inputs::<V, NB>(isa, p, &a2, l0, l1, &mut scr.es, &mut scr.xs);
        let accs = &mut scr.accs[..l1 - l0];
        recur::<V, NB>(
            isa,
            p,
            l0,
            &mut x,
            &scr.es[..n],
            &mut scr.xs[..n],
            accs,
            false,
        );
        V::hsum_rows(isa, accs, &mut y[l0..l1]);
        l0 = l1;
        k += 1;
    }
    for (j, xv) in x.iter().take(NB / V::K).enumerate() {
        xv.store(&mut xlast[j * V::K..]);
    }
}
