//! The backward kernel: `(dq, dk, dv)` from the saved log-sum-exp, one task per key tile.

use super::kernel::{exp_shifted, head_tiles, Problem};
use super::mask::{classify, Tile};
use super::{BBC, BBR};
use crate::cpu::gemm::{matmul, Parallelism, Strided};
use crate::cpu::{par_parts, par_tasks, Isa, Kernel, Level};

/// Per-worker state of the backward pass: scratch tiles and this worker's part of dq.
#[derive(Default)]
struct BwdScratch {
    s: Vec<f32>,
    dp: Vec<f32>,
    pz: Vec<f32>,
    dq: Vec<f32>,
}

/// Gradients `(dq, dk, dv)` from the inputs, the output `o`, its gradient `dout` and the saved
/// log-sum-exp.
pub(super) fn backward(
    p: &Problem,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    dout: &[f32],
    lse: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let g = p.g;
    let d = g.d;
    // D_i = sum_c dO_ic O_ic, per query row.
    let mut drow = vec![0f32; g.b * g.h * g.lq];
    par_tasks(&mut drow, 4096, |t, out, _: &mut ()| {
        for (r, x) in out.iter_mut().enumerate() {
            let i = t * 4096 + r;
            *x = crate::cpu::simd::dot(&dout[i * d..(i + 1) * d], &o[i * d..(i + 1) * d]);
        }
    });
    let nkt = g.lk.div_ceil(BBC);
    let mut dk = vec![0f32; g.b * g.hkv * g.lk * d];
    let mut dv = vec![0f32; g.b * g.hkv * g.lk * d];
    // Task (bkv, kt) owns key rows kt·BBC.. of kv head bkv: its tiles of dk and dv.
    let level = Level::detect();
    let n_q = q.len();
    let a = BwdArgs {
        q,
        k,
        v,
        dout,
        lse,
        drow: &drow,
    };
    let tiles = [&mut dk, &mut dv].map(|x| head_tiles(x, g.lk * d, BBC * d));
    let parts = par_parts(
        g.b * g.hkv * nkt,
        tiles,
        |t, [dk, dv], scr: &mut BwdScratch| {
            let (bkv, kt) = (t / nkt, t % nkt);
            let (j0, cols) = (kt * BBC, dk.len() / d);
            if scr.dq.len() != n_q {
                scr.dq = vec![0f32; n_q];
            }
            let a = &a;
            level.run(BwdTask {
                p,
                a,
                bkv,
                j0,
                cols,
                dk,
                dv,
                scr,
            })
        },
    );
    // dq = sum of the workers' parts.
    let mut parts: Vec<Vec<f32>> = parts.into_iter().map(|s| s.dq).collect();
    let mut dq = parts.pop().unwrap_or_else(|| vec![0f32; n_q]);
    if !parts.is_empty() {
        const CH: usize = 16 * 1024;
        par_tasks(&mut dq, CH, |t, out, _: &mut ()| {
            for part in &parts {
                for (x, y) in out.iter_mut().zip(&part[t * CH..]) {
                    *x += y;
                }
            }
        });
    }
    (dq, dk, dv)
}

/// Read-only inputs of a backward task.
struct BwdArgs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    dout: &'a [f32],
    lse: &'a [f32],
    drow: &'a [f32],
}

/// One backward task: key rows `j0..j0 + cols` of kv head `bkv = b * Hkv + hk`, against every
/// query row of the heads of its group that the mask lets attend them.
struct BwdTask<'a> {
    p: &'a Problem<'a>,
    a: &'a BwdArgs<'a>,
    bkv: usize,
    j0: usize,
    cols: usize,
    dk: &'a mut [f32],
    dv: &'a mut [f32],
    scr: &'a mut BwdScratch,
}

impl Kernel for BwdTask<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let BwdTask {
            p,
            a,
            bkv,
            j0,
            cols,
            dk,
            dv,
            scr,
        } = self;
        let g = p.g;
        let d = g.d;
        let (b, hk) = (bkv / g.hkv, bkv % g.hkv);
        let len = p.len(b);
        if j0 >= len {
            return;
        }
        let BwdScratch { s, dp, pz, dq } = scr;
        s.resize(BBR * BBC, 0.0);
        dp.resize(BBR * BBC, 0.0);
        let kt = &a.k[(bkv * g.lk + j0) * d..(bkv * g.lk + j0 + cols) * d];
        let vt = &a.v[(bkv * g.lk + j0) * d..(bkv * g.lk + j0 + cols) * d];
        let nqt = g.lq.div_ceil(BBR);
        for h in hk * g.groups()..(hk + 1) * g.groups() {
            let bh = b * g.h + h;
            for qt in 0..nqt {
                let i0 = qt * BBR;
                let rows = BBR.min(g.lq - i0);
                let tile = classify(&p.band, len as i64, i0, i0 + rows, j0, j0 + cols);
                if tile == Tile::Skip {
                    continue;
                }
                let at = (bh * g.lq + i0) * d;
                let qi = &a.q[at..at + rows * d];
                let doi = &a.dout[at..at + rows * d];
                let lse = &a.lse[bh * g.lq + i0..bh * g.lq + i0 + rows];
                let dr = &a.drow[bh * g.lq + i0..bh * g.lq + i0 + rows];
                // SAFETY: s holds BBR x BBC values (rows x cols written, stride BBC); q rows
                // i0..i0 + rows of head bh (stride d); k rows j0..j0 + cols read transposed.
                unsafe {
                    // S = scale Q Kᵀ.
                    matmul(
                        (rows, cols, d),
                        Strided::rows(s.as_mut_ptr(), BBC),
                        false,
                        Strided::rows(qi.as_ptr(), d),
                        Strided::cols(kt.as_ptr(), d),
                        p.scale,
                        Parallelism::None,
                    );
                }
                if tile == Tile::Partial || p.bias.is_some() {
                    p.mask_tile(s, BBC, tile, b, h, i0, rows, j0, cols);
                }
                // P = exp(S - lse); 0 on fully masked rows (lse = +inf), whatever their scores.
                for r in 0..rows {
                    let row = &mut s[r * BBC..r * BBC + cols];
                    if lse[r] == f32::INFINITY {
                        row.fill(0.0);
                    } else {
                        exp_shifted(row, lse[r]);
                    }
                }
                // With dropout, Z ∘ P (Z the dropout factors) is what multiplied V.
                let drop = p.dropout.active();
                if drop {
                    pz.resize(BBR * BBC, 0.0);
                    for r in 0..rows {
                        let row = &mut pz[r * BBC..r * BBC + cols];
                        row.copy_from_slice(&s[r * BBC..r * BBC + cols]);
                        p.dropout.apply_at(row, bh * g.lq + i0 + r, j0);
                    }
                }
                let pv = if drop { &pz[..] } else { &s[..] };
                // SAFETY: dv holds cols x d values (this task's key rows only); pv holds BBR x BBC
                // (rows x cols read transposed); dout rows i0..i0 + rows of head bh (stride d); dp
                // holds BBR x BBC; v rows j0..j0 + cols read transposed. All in bounds.
                unsafe {
                    // dV += (Z ∘ P)ᵀ dO.
                    matmul(
                        (cols, d, rows),
                        Strided::rows(dv.as_mut_ptr(), d),
                        true,
                        Strided::cols(pv.as_ptr(), BBC),
                        Strided::rows(doi.as_ptr(), d),
                        1.0,
                        Parallelism::None,
                    );
                    // dP = dO Vᵀ.
                    matmul(
                        (rows, cols, d),
                        Strided::rows(dp.as_mut_ptr(), BBC),
                        false,
                        Strided::rows(doi.as_ptr(), d),
                        Strided::cols(vt.as_ptr(), d),
                        1.0,
                        Parallelism::None,
                    );
                }
                // dS = P ∘ (Z ∘ dP - D) (Z = 1 without dropout), into dp.
                for r in 0..rows {
                    let dri = dr[r];
                    let (pr, dpr) = (
                        &s[r * BBC..r * BBC + cols],
                        &mut dp[r * BBC..r * BBC + cols],
                    );
                    if lse[r] == f32::INFINITY {
                        // Fully masked row: no gradient, even where dP is NaN (a NaN value).
                        dpr.fill(0.0);
                    } else if drop {
                        let pzr = &pz[r * BBC..r * BBC + cols];
                        for ((x, pv), pzv) in dpr.iter_mut().zip(pr).zip(pzr) {
                            *x = pzv * *x - pv * dri;
                        }
                    } else {
                        for (x, pv) in dpr.iter_mut().zip(pr) {
                            *x = pv * (*x - dri);
                        }
                    }
                }
                // SAFETY: dk holds cols x d values (this task's key rows only); dp holds BBR x BBC
                // (rows x cols read transposed); q rows i0..i0 + rows of head bh; dq is this
                // worker's own full-size copy of dq (`at` + rows x d is within it); k rows
                // j0..j0 + cols. All in bounds.
                unsafe {
                    // dK += scale dSᵀ Q.
                    matmul(
                        (cols, d, rows),
                        Strided::rows(dk.as_mut_ptr(), d),
                        true,
                        Strided::cols(dp.as_ptr(), BBC),
                        Strided::rows(qi.as_ptr(), d),
                        p.scale,
                        Parallelism::None,
                    );
                    // dQ += scale dS K.
                    matmul(
                        (rows, d, cols),
                        Strided::rows(dq.as_mut_ptr().add(at), d),
                        true,
                        Strided::rows(dp.as_ptr(), BBC),
                        Strided::rows(kt.as_ptr(), d),
                        p.scale,
                        Parallelism::None,
                    );
                }
            }
        }
    }
}
