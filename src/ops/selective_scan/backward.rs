//! The backward kernel: `(grad u, grad delta, grad of the packed rest)` from the forward's
//! state checkpoints.

use super::forward::{decays_and_inputs, level_for, recur, step_sizes, GroupFwd};
use super::kernel::{par_rows, prepare, rows_per_task, ChunkScratch, Prepared};
use super::{Geom, MAX_NB, W};
use crate::cpu::lanes::{Blk, Blocks};
use crate::cpu::math::sigmoid;
use crate::cpu::simd::{dot, sum};
use crate::cpu::{Isa, Kernel};

/// Per-worker scratch and partial sums of the backward.
#[derive(Default)]
struct BwdScratch {
    dt: Vec<f32>,
    du: Vec<f32>,
    go: Vec<f32>,
    gdt: Vec<f32>,
    y: Vec<f32>,
    ck: ChunkScratch,
    /// Partial gradients of B and C in the `(B, G, L, nbk)` block layout.
    gb: Vec<Blk>,
    gc: Vec<Blk>,
}

/// Backward over all rows; returns `(grad u, grad delta, grad of the packed rest)`.
pub(super) fn backward(
    gm: &Geom,
    u: &[f32],
    delta: &[f32],
    rest: &[f32],
    g: &[f32],
    ckpt: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let p = prepare(gm, u, delta, rest);
    let level = level_for(gm);
    let (gy, gs) = g.split_at(gm.bdl());
    let rows = gm.rows();
    let mut gu = vec![0f32; gm.bdl()];
    let mut gdelta = vec![0f32; gm.bdl()];
    let z_stride = if gm.has_z { gm.l } else { 0 };
    let mut gz = vec![0f32; rows * z_stride];
    let mut ga = vec![0f32; rows * gm.nbk * W];
    let mut gd = vec![0f32; rows];
    let mut gbias = vec![0f32; rows];
    let ck_stride = gm.nck() * gm.nbk * W;
    let per = rows_per_task(gm);
    let ctx = BwdCtx {
        gm,
        p: &p,
        gy,
        gs,
        ckpt,
        ck_stride,
    };
    let states = par_rows(
        rows,
        per,
        [
            (&mut gu, gm.l),
            (&mut gdelta, gm.l),
            (&mut gz, z_stride),
            (&mut ga, gm.nbk * W),
            (&mut gd, 1),
            (&mut gbias, 1),
        ],
        |r0, outs, scr: &mut BwdScratch| {
            let c = &ctx;
            level.run(BwdRows { c, r0, outs, scr })
        },
    );
    // Reduce the per-worker B/C gradients and the per-row channel parameters.
    let (n, l, nbk) = (gm.n, gm.l, gm.nbk);
    let [zo, bo, co, ao, dof, bio, end] = gm.offsets();
    let mut grest = vec![0f32; end];
    grest[zo..bo].copy_from_slice(&gz);
    for (dst, pick) in [(bo, 0usize), (co, 1)] {
        let out = &mut grest[dst..dst + gm.bc_len()];
        for st in &states {
            let src = if pick == 0 { &st.gb } else { &st.gc };
            if src.is_empty() {
                continue;
            }
            for (o, blocks) in out.chunks_exact_mut(n * l).zip(src.chunks_exact(l * nbk)) {
                for s in 0..n {
                    let orow = &mut o[s * l..(s + 1) * l];
                    for (t, v) in orow.iter_mut().enumerate() {
                        *v += blocks[t * nbk + s / W][s % W];
                    }
                }
            }
        }
    }
    for row in 0..rows {
        let di = row % gm.d;
        for s in 0..n {
            grest[ao + di * n + s] += ga[row * nbk * W + s];
        }
        if gm.has_d {
            grest[dof + di] += gd[row];
        }
        if gm.has_bias {
            grest[bio + di] += gbias[row];
        }
    }
    (gu, gdelta, grest)
}

/// What every backward task reads.
struct BwdCtx<'a> {
    gm: &'a Geom,
    p: &'a Prepared<'a>,
    /// Gradient of the output `(B, D, L)`.
    gy: &'a [f32],
    /// Gradient of the last state `(B, D, N)`, or empty.
    gs: &'a [f32],
    ckpt: &'a [f32],
    ck_stride: usize,
}

/// [`bwd_rows`] at the best level.
struct BwdRows<'a, 'b> {
    c: &'a BwdCtx<'a>,
    r0: usize,
    outs: &'a mut [&'b mut [f32]; 6],
    scr: &'a mut BwdScratch,
}

impl Kernel for BwdRows<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, isa: S) {
        let BwdRows { c, r0, outs, scr } = self;
        bwd_rows::<S::Lanes>(isa, c, r0, outs, scr)
    }
}

/// The backward of the rows `r0..`; `outs` = the rows' grad u, grad delta, grad z (or empty),
/// partial grad a (`nbk·W` per row), partial grad d and grad delta_bias (one per row).
#[inline(always)]
fn bwd_rows<V: Blocks>(
    isa: V::Isa,
    c: &BwdCtx,
    r0: usize,
    outs: &mut [&mut [f32]; 6],
    scr: &mut BwdScratch,
) {
    let gm = c.gm;
    let p = c.p;
    let (l, n, nbk) = (gm.l, gm.n, gm.nbk);
    let [gu, gdl, gz, ga, gd, gbias] = outs;
    let count = gu.len() / l;
    let dg = gm.d / gm.g;
    let chunk = gm.chunk;
    if scr.gb.is_empty() {
        scr.gb = vec![[0f32; W]; gm.b * gm.g * l * nbk];
        scr.gc = vec![[0f32; W]; gm.b * gm.g * l * nbk];
    }
    scr.dt.resize(l, 0.0);
    scr.du.resize(l, 0.0);
    scr.go.resize(l, 0.0);
    scr.gdt.resize(l, 0.0);
    scr.y.resize(l, 0.0);
    scr.ck.size(chunk);
    for i in 0..count {
        let row = r0 + i;
        let (bi, di) = (row / gm.d, row % gm.d);
        let gi = di / dg;
        let rl = row * l..(row + 1) * l;
        let u = &p.u[rl.clone()];
        let delta = &p.delta[rl.clone()];
        let gy = &c.gy[rl.clone()];
        let bias = if gm.has_bias { p.bias[di] } else { 0.0 };
        let dd = if gm.has_d { p.dskip[di] } else { 0.0 };
        step_sizes(gm.softplus, bias, delta, u, &mut scr.dt, &mut scr.du);
        // Gradient reaching y (before the gate).
        if gm.has_z {
            let z = &p.z[rl.clone()];
            for ((o, &g), &zv) in scr.go.iter_mut().zip(gy).zip(z) {
                *o = g * zv * sigmoid(zv);
            }
        } else {
            scr.go.copy_from_slice(gy);
        }
        let gur = &mut gu[i * l..(i + 1) * l];
        gur.fill(0.0);
        scr.gdt.fill(0.0);
        scr.y.fill(0.0);
        let bg = (bi * gm.g + gi) * l * nbk;
        let gs = if c.gs.is_empty() {
            &[][..]
        } else {
            &c.gs[row * n..(row + 1) * n]
        };
        let gar = &mut ga[i * nbk * W..(i + 1) * nbk * W];
        let mut g0 = 0;
        while g0 < nbk {
            let nb = (nbk - g0).min(MAX_NB);
            let args = GroupBwd {
                f: GroupFwd {
                    dt: &scr.dt,
                    du: &scr.du,
                    a: &p.a[di * nbk + g0..di * nbk + g0 + nb],
                    a2: &p.a2[di * nbk + g0..di * nbk + g0 + nb],
                    bt: &p.bt[bg..bg + l * nbk],
                    ct: &p.ct[bg..bg + l * nbk],
                    nbk,
                    g0,
                    chunk,
                },
                u,
                go: &scr.go,
                ck: &c.ckpt[row * c.ck_stride..(row + 1) * c.ck_stride],
                gs,
                n,
                want_y: gm.has_z,
            };
            let acc = GroupAcc {
                gb: &mut scr.gb[bg..bg + l * nbk],
                gc: &mut scr.gc[bg..bg + l * nbk],
                ga: gar,
                gu: gur,
                gdt: &mut scr.gdt,
                y: &mut scr.y,
                scr: &mut scr.ck,
            };
            match nb {
                1 => bwd_group::<V, 1>(isa, &args, acc),
                2 => bwd_group::<V, 2>(isa, &args, acc),
                3 => bwd_group::<V, 3>(isa, &args, acc),
                _ => bwd_group::<V, 4>(isa, &args, acc),
            }
            g0 += nb;
        }
        // Skip connection, gate, softplus and bias (zipped loops so that they vectorize).
        for (gv, &o) in gur.iter_mut().zip(&scr.go) {
            *gv += o * dd;
        }
        gd[i] = dot(&scr.go, u);
        if gm.has_z {
            let z = &p.z[rl];
            let gzr = &mut gz[i * l..(i + 1) * l];
            let vals = z.iter().zip(&scr.y).zip(u).zip(gy);
            for (g, (((&zv, &yv), &uv), &gv)) in gzr.iter_mut().zip(vals) {
                let s = sigmoid(zv);
                *g = gv * (yv + dd * uv) * s * (1.0 + zv * (1.0 - s));
            }
        }
        let gdr = &mut gdl[i * l..(i + 1) * l];
        if gm.softplus {
            for ((g, &gt), &dv) in gdr.iter_mut().zip(&scr.gdt).zip(delta) {
                *g = gt * sigmoid(dv + bias);
            }
        } else {
            gdr.copy_from_slice(&scr.gdt);
        }
        gbias[i] = sum(gdr);
    }
}

/// The inputs of one group's backward.
struct GroupBwd<'a> {
    f: GroupFwd<'a>,
    u: &'a [f32],
    /// Gradient reaching y (after the gate's factor).
    go: &'a [f32],
    /// The row's checkpoints.
    ck: &'a [f32],
    /// The row's last-state gradient (N values) or empty.
    gs: &'a [f32],
    n: usize,
    /// Accumulate the group's part of y (needed for the gate's gradient).
    want_y: bool,
}

/// Where one group's backward accumulates, and its chunk buffers.
struct GroupAcc<'a> {
    gb: &'a mut [Blk],
    gc: &'a mut [Blk],
    ga: &'a mut [f32],
    gu: &'a mut [f32],
    gdt: &'a mut [f32],
    y: &'a mut [f32],
    scr: &'a mut ChunkScratch,
}

/// The adjoint recurrence of `NB` state blocks, chunk by chunk from the end: recompute the
/// chunk's states and decays from its checkpoint, then walk it backwards.
#[inline(always)]
fn bwd_group<V: Blocks, const NB: usize>(isa: V::Isa, p: &GroupBwd, acc: GroupAcc) {
    let f = &p.f;
    let GroupAcc {
        gb,
        gc,
        ga,
        gu,
        gdt,
        y,
        scr,
    } = acc;
    let l_len = f.dt.len();
    let mut a = [V::zero(isa); NB];
    let mut a2 = [V::zero(isa); NB];
    for j in 0..NB / V::K {
        a[j] = V::load(isa, &f.a[j * V::K..]);
        a2[j] = V::load(isa, &f.a2[j * V::K..]);
    }
    // h = dL/dx_t, starting from the last state's gradient.
    let mut h = [V::zero(isa); NB];
    if !p.gs.is_empty() {
        let mut blks = [[0f32; W]; NB];
        let s0 = f.g0 * W;
        let gs = &p.gs[s0.min(p.n)..(s0 + NB * W).min(p.n)];
        for (dst, v) in blks.iter_mut().flatten().zip(gs) {
            *dst = *v;
        }
        for (j, hv) in h.iter_mut().take(NB / V::K).enumerate() {
            *hv = V::load(isa, &blks[j * V::K..]);
        }
    }
    let mut gaa = [V::zero(isa); NB];
    let nck = l_len.div_ceil(f.chunk);
    for k in (0..nck).rev() {
        let l0 = k * f.chunk;
        let l1 = (l0 + f.chunk).min(l_len);
        let steps = l1 - l0;
        let mut x0 = [[0f32; W]; NB];
        for (j, xb) in x0.iter_mut().enumerate() {
            let o = (k * f.nbk + f.g0 + j) * W;
            xb.copy_from_slice(&p.ck[o..o + W]);
        }
        // Recompute the chunk's decays e^{dt A} and states x_t.
        let mut x = [V::zero(isa); NB];
        for (j, xv) in x.iter_mut().take(NB / V::K).enumerate() {
            *xv = V::load(isa, &x0[j * V::K..]);
        }
        let n = steps * NB;
        decays_and_inputs::<V, NB>(isa, f, &a2, l0, l1, &mut scr.es, &mut scr.xs);
        let accs: &mut [Blk] = if p.want_y {
            &mut scr.accs[..steps]
        } else {
            &mut []
        };
        recur::<V, NB>(
            isa,
            f,
            l0,
            &mut x,
            &scr.es[..n],
            &mut scr.xs[..n],
            accs,
            true,
        );
        if p.want_y {
            V::hsum_rows(isa, &scr.accs[..steps], &mut y[l0..l1]);
        }
        // Walk back through the chunk; the per-step lane sums of h·B and of
        // h·x_{t-1}·e·A go to `accs` / `accs2` and are reduced after the walk.
        let (es, xs) = (&scr.es[..n], &scr.xs[..n]);
        let (sbs, sxs) = (&mut scr.accs[..steps], &mut scr.accs2[..steps]);
        let r = l0 * f.nbk..l1 * f.nbk;
        let (bts, cts) = (&f.bt[r.clone()], &f.ct[r.clone()]);
        let (gbs, gcs) = (&mut gb[r.clone()], &mut gc[r]);
        let (dus, gos, dts) = (&f.du[l0..l1], &p.go[l0..l1], &f.dt[l0..l1]);
        for i in (0..steps).rev() {
            let (du, gy, dt) = (
                V::splat(isa, dus[i]),
                V::splat(isa, gos[i]),
                V::splat(isa, dts[i]),
            );
            let o = i * f.nbk + f.g0..i * f.nbk + f.g0 + NB;
            let (bl, cl) = (&bts[o.clone()], &cts[o.clone()]);
            let (gbl, gcl) = (&mut gbs[o.clone()], &mut gcs[o]);
            let xt = &xs[i * NB..(i + 1) * NB];
            let et = &es[i * NB..(i + 1) * NB];
            let xp: &[Blk] = if i > 0 {
                &xs[(i - 1) * NB..i * NB]
            } else {
                &x0[..]
            };
            let mut sb = V::zero(isa);
            let mut sx = V::zero(isa);
            for j in 0..NB / V::K {
                let jb = j * V::K;
                let e = V::load(isa, &et[jb..]);
                let hv = gy.mul_add(V::load(isa, &cl[jb..]), h[j]);
                gy.mul_add(V::load(isa, &xt[jb..]), V::load(isa, &gcl[jb..]))
                    .store(&mut gcl[jb..]);
                du.mul_add(hv, V::load(isa, &gbl[jb..]))
                    .store(&mut gbl[jb..]);
                let w = hv.mul(V::load(isa, &xp[jb..])).mul(e);
                gaa[j] = w.mul_add(dt, gaa[j]);
                sx = w.mul_add(a[j], sx);
                sb = hv.mul_add(V::load(isa, &bl[jb..]), sb);
                h[j] = hv.mul(e);
            }
            sb.store_folded(&mut sbs[i]);
            sx.store_folded(&mut sxs[i]);
        }
        let (s1, s2) = (&mut scr.s1[..steps], &mut scr.s2[..steps]);
        s1.fill(0.0);
        s2.fill(0.0);
        V::hsum_rows(isa, sbs, s1);
        V::hsum_rows(isa, sxs, s2);
        let (gus, gdts, us) = (&mut gu[l0..l1], &mut gdt[l0..l1], &p.u[l0..l1]);
        for ((((gu, gd), &dt), &uv), (&a1, &a2)) in gus
            .iter_mut()
            .zip(gdts.iter_mut())
            .zip(dts)
            .zip(us)
            .zip(s1.iter().zip(s2.iter()))
        {
            *gu += dt * a1;
            *gd += a2 + uv * a1;
        }
    }
    let mut blks = [[0f32; W]; NB];
    for (j, gv) in gaa.iter().take(NB / V::K).enumerate() {
        gv.store(&mut blks[j * V::K..]);
    }
    let s0 = f.g0 * W;
    for (dst, v) in ga[s0..s0 + NB * W].iter_mut().zip(blks.iter().flatten()) {
        *dst += v;
    }
}
