//! The forward kernel: output and log-sum-exp per query row, one task per query tile.

use super::kernel::{exp_shifted, head_tiles, Problem};
use super::mask::{classify, Tile};
use super::{FBC, FBR};
use crate::cpu::gemm::{matmul, Parallelism, Strided};
use crate::cpu::math::exp;
use crate::cpu::simd::max;
use crate::cpu::{par_parts, Isa, Kernel, Level};

/// Per-worker scratch of the forward pass.
#[derive(Default)]
struct FwdScratch {
    s: Vec<f32>,
    acc: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

/// Output and log-sum-exp of the forward pass.
pub(super) fn forward(p: &Problem, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let g = p.g;
    let nqt = g.lq.div_ceil(FBR);
    let mut o = vec![0f32; g.b * g.h * g.lq * g.d];
    let mut lse = vec![0f32; g.b * g.h * g.lq];
    // Task (bh, qt) owns query rows qt·FBR.. of head bh: its tile of o and of lse.
    let level = Level::detect();
    let tiles = [
        head_tiles(&mut o, g.lq * g.d, FBR * g.d),
        head_tiles(&mut lse, g.lq, FBR),
    ];
    par_parts(
        g.b * g.h * nqt,
        tiles,
        |t, [o, lse], scr: &mut FwdScratch| {
            let (bh, qt) = (t / nqt, t % nqt);
            let (i0, rows) = (qt * FBR, lse.len());
            level.run(FwdTask {
                p,
                q,
                k,
                v,
                bh,
                i0,
                rows,
                o,
                lse,
                scr,
            })
        },
    );
    (o, lse)
}

/// One forward task: query rows `i0..i0 + rows` of head `bh = b * H + h`.
struct FwdTask<'a> {
    p: &'a Problem<'a>,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    bh: usize,
    i0: usize,
    rows: usize,
    o: &'a mut [f32],
    lse: &'a mut [f32],
    scr: &'a mut FwdScratch,
}

impl Kernel for FwdTask<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let FwdTask {
            p,
            q,
            k,
            v,
            bh,
            i0,
            rows,
            o,
            lse,
            scr,
        } = self;
        let g = p.g;
        let d = g.d;
        let (b, h) = (bh / g.h, bh % g.h);
        let bkv = b * g.hkv + h / g.groups();
        let len = p.len(b);
        let FwdScratch { s, acc, m, l } = scr;
        s.resize(FBR * FBC, 0.0);
        acc.clear();
        acc.resize(rows * d, 0.0);
        m.clear();
        m.resize(rows, f32::NEG_INFINITY);
        l.clear();
        l.resize(rows, 0.0);
        let qt = &q[(bh * g.lq + i0) * d..(bh * g.lq + i0 + rows) * d];
        let kh = &k[bkv * g.lk * d..(bkv + 1) * g.lk * d];
        let vh = &v[bkv * g.lk * d..(bkv + 1) * g.lk * d];
        // Key tiles the band can reach (all with global tokens, the skipped ones cost O(1) each).
        let (lo, hi) = if p.band.global > 0 {
            (0, len as i64 - 1)
        } else {
            let (lo, _) = p.band.range(i0 as i64, len as i64);
            let (_, hi) = p.band.range((i0 + rows - 1) as i64, len as i64);
            (lo, hi)
        };
        if hi >= lo {
            for kt in (lo as usize / FBC)..=(hi as usize / FBC) {
                let j0 = kt * FBC;
                let cols = FBC.min(g.lk - j0);
                let tile = classify(&p.band, len as i64, i0, i0 + rows, j0, j0 + cols);
                if tile == Tile::Skip {
                    continue;
                }
                // SAFETY: s holds FBR x FBC values; q rows (stride d), k rows j0.. (read transposed).
                unsafe {
                    matmul(
                        (rows, cols, d),
                        Strided::rows(s.as_mut_ptr(), FBC),
                        false,
                        Strided::rows(qt.as_ptr(), d),
                        Strided::cols(kh.as_ptr().add(j0 * d), d),
                        p.scale,
                        Parallelism::None,
                    );
                }
                if tile == Tile::Partial || p.bias.is_some() {
                    p.mask_tile(s, FBC, tile, b, h, i0, rows, j0, cols);
                }
                // Online softmax: new row maxima, rescale the running sums, exponentiate.
                for r in 0..rows {
                    let row = &mut s[r * FBC..r * FBC + cols];
                    let mx = max(row);
                    let m_new = if mx > m[r] { mx } else { m[r] };
                    if m_new == f32::NEG_INFINITY {
                        // Every score so far is -inf (masked, or -inf from the data) or NaN: the
                        // tile adds nothing to the sums, but a NaN score must still poison the row
                        // (`max` skipped it). Rare (mostly masked tiles), so checked here rather
                        // than in `max`.
                        if row.iter().any(|x| x.is_nan()) {
                            l[r] = f32::NAN;
                        }
                        row.fill(0.0);
                        continue;
                    }
                    exp_shifted(row, m_new);
                    let sum = crate::cpu::simd::sum(row);
                    if m_new > m[r] {
                        let alpha = exp(m[r] - m_new);
                        l[r] *= alpha;
                        for a in acc[r * d..(r + 1) * d].iter_mut() {
                            *a *= alpha;
                        }
                        m[r] = m_new;
                    }
                    l[r] += sum;
                    if p.dropout.active() {
                        p.dropout.apply_at(row, bh * g.lq + i0 + r, j0);
                    }
                }
                // acc += P V.
                // SAFETY: acc holds rows x d; s rows x cols (stride FBC); v rows j0..j0 + cols.
                unsafe {
                    matmul(
                        (rows, d, cols),
                        Strided::rows(acc.as_mut_ptr(), d),
                        true,
                        Strided::rows(s.as_ptr(), FBC),
                        Strided::rows(vh.as_ptr().add(j0 * d), d),
                        1.0,
                        Parallelism::None,
                    );
                }
            }
        }
        for r in 0..rows {
            let orow = &mut o[r * d..(r + 1) * d];
            if p.row_live(b, h, i0 + r) {
                // NaN/inf scores or values propagate: a NaN sum gives a NaN row, and a row whose
                // visible scores are all -inf (l = 0) gives 0 * inf = NaN, as softmax does.
                let inv = 1.0 / l[r];
                for (o, a) in orow.iter_mut().zip(&acc[r * d..(r + 1) * d]) {
                    *o = a * inv;
                }
                lse[r] = m[r] + l[r].ln();
            } else {
                // Fully masked row (by the mask): output 0; the backward pass reads the +inf
                // log-sum-exp as "no probabilities" (a live row's is finite, -inf or NaN).
                orow.fill(0.0);
                lse[r] = f32::INFINITY;
            }
        }
    }
}
