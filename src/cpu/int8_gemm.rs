//! The int8 matrix product of the quantized layers: $C = A \cdot B$ with $A$ unsigned 8-bit
//! activations `(M, K)`, $B$ signed 8-bit weights `(K, N)` and 32-bit integer accumulators,
//! dequantized to f32 in the same pass ([`Epilogue`]).
//!
//! # Layout
//! The weight is packed once, when a layer is built ([`PackedB::pack`]): panels of [`NR`] = 16
//! output columns; inside a panel, for every group of 4 consecutive `k`, the 4 bytes of column 0,
//! then of column 1, … (64 bytes, two AVX2 registers). `K` is padded to a multiple of 4 and `N`
//! to a multiple of 16 with zero weights, so the micro-kernel has no edge cases. The activation
//! rows are stored `kp` ([`PackedB::kp`]) bytes apart; their padding bytes meet zero weights.
//!
//! # Micro-kernel
//! A tile of [`MR`] = 4 rows × 16 columns lives in eight 8-lane i32 registers for a whole block
//! of [`KC`] `k` values. Per group of 4 `k`: the 4 activation bytes of a row are broadcast to
//! every lane, `vpmaddubsw` multiplies them with the 4 weight bytes of each column and sums
//! adjacent pairs into i16, `vpmaddwd` with ones sums the two pairs into i32, `vpaddd`
//! accumulates: 3 instructions for 32 multiply-adds, where f32 needs 4 FMAs. `vpmaddubsw`
//! saturates its i16 pair sums; activations in $[0, 127]$ (torch's `reduce_range`) times
//! weights in $[-128, 127]$ stay within $\pm 32512$, so it never does and the SIMD result is
//! exact, equal bit for bit to the scalar path. **Callers keep activations at most 127.**
//! There is no AVX-512 VNNI (`vpdpbusd`) path: the machine this was written and measured on has
//! no AVX-512, and an unmeasured path is not shipped; AVX-512 CPUs run the AVX2 kernel.
//!
//! # Blocking and threads
//! Each task of [`crate::cpu::par_fold`] owns [`MC`] rows × one 16-column panel: the panel's
//! `KC × 16` bytes (16 KiB) stay in L1 while every row tile of the block streams past, and the
//! block's `MC × KC` activation bytes stay in L2 for the next panels. Accumulators of a block
//! longer than `KC` go through a small i32 scratch between `k` blocks.

use super::simd::Level;
use super::{par_fold, SharedMut};

/// Rows per micro-tile.
pub(crate) const MR: usize = 4;
/// Columns per panel (two 8-lane i32 registers).
pub(crate) const NR: usize = 16;
/// `k` values per multiply group (`vpmaddubsw` pairs summed by `vpmaddwd`).
const KG: usize = 4;
/// `k` values per cache block (a multiple of [`KG`]).
const KC: usize = 1024;
/// Rows per task (whole tiles).
const MC: usize = 64;
const _: () = assert!(MC.is_multiple_of(MR) && KC.is_multiple_of(KG));

/// The weight `B`, packed for the micro-kernel, with its column sums.
#[derive(Debug, Clone)]
pub(crate) struct PackedB {
    n: usize,
    kp: usize,
    panels: Vec<i8>,
    colsum: Vec<i32>,
}

impl PackedB {
    /// Packs `w`, PyTorch's `(N, K)` = (out, in) row-major weight, i.e. $B = W^\top$.
    /// The caller checked that `n · k` is `w.len()`, `k ≤ MAX_K` and that the padded size fits
    /// memory.
    pub(crate) fn pack(w: &[i8], n: usize, k: usize) -> Self {
        let kp = k.div_ceil(KG) * KG;
        let np = n.div_ceil(NR);
        let mut panels = vec![0i8; np * kp * NR];
        for (p, panel) in panels.chunks_exact_mut(kp * NR).enumerate() {
            for (g, group) in panel.chunks_exact_mut(KG * NR).enumerate() {
                for c in 0..NR.min(n - p * NR) {
                    let row = &w[(p * NR + c) * k..][..k];
                    for j in 0..KG.min(k.saturating_sub(g * KG)) {
                        group[c * KG + j] = row[g * KG + j];
                    }
                }
            }
        }
        let colsum = w
            .chunks_exact(k.max(1))
            .map(|r| r.iter().map(|&v| i32::from(v)).sum())
            .collect();
        Self {
            n,
            kp,
            panels,
            colsum,
        }
    }

    /// The number of output columns `N`.
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// The row stride of the activations: `K` rounded up to a multiple of 4.
    pub(crate) fn kp(&self) -> usize {
        self.kp
    }
}

/// The dequantization fused into the store:
/// $y_{mn} = s_a s_w[n] \thinspace (c_{mn} - z_a \sum_k B_{kn}) + b_n$, with $c$ the i32 accumulators.
pub(crate) struct Epilogue<'a> {
    /// $s_a s_w[n]$ per column (computed in f32, as fbgemm does).
    pub(crate) scale: &'a [f32],
    /// The activations' zero point $z_a$.
    pub(crate) zero_point: i32,
    /// The bias $b_n$, if any.
    pub(crate) bias: Option<&'a [f32]>,
}

/// The longest reduction the i32 accumulators hold: $|\mathrm{acc} - z_a \sum_k B_{kn}|$ is at
/// most $2 \cdot 127 \cdot 128 \thinspace K$, which must stay below $2^{31}$.
pub(crate) const MAX_K: usize = (i32::MAX / (2 * 127 * 128)) as usize;

/// `out (M × N, row-major) = epilogue(a · b)`, `a` being `m` rows of `b.kp()` bytes (each at
/// most 127; the padding bytes are ignored), on candle's pool at the best SIMD level.
pub(crate) fn gemm_u8i8_f32(a: &[u8], m: usize, b: &PackedB, epi: &Epilogue, out: &mut [f32]) {
    gemm_at(Level::detect(), a, m, b, epi, out)
}

/// [`gemm_u8i8_f32`] at `level` (the tests compare the levels).
pub(crate) fn gemm_at(
    level: Level,
    a: &[u8],
    m: usize,
    b: &PackedB,
    epi: &Epilogue,
    out: &mut [f32],
) {
    let (n, kp) = (b.n, b.kp);
    assert!(a.len() >= m * kp && out.len() >= m * n && epi.scale.len() >= n);
    if m == 0 || n == 0 {
        return;
    }
    let panels = n.div_ceil(NR);
    let blocks = m.div_ceil(MC);
    let dst = SharedMut::new(out);
    par_fold(blocks * panels, |t, acc: &mut Vec<[i32; NR]>| {
        let (mb, p) = (t / panels, t % panels);
        let (row0, rows) = (mb * MC, MC.min(m - mb * MC));
        acc.resize(MC, [0; NR]);
        let panel = &b.panels[p * kp * NR..][..kp * NR];
        let mut k0 = 0;
        while k0 < kp {
            let kc = KC.min(kp - k0);
            let (tiles, _) = acc.as_chunks_mut::<MR>();
            for (t, tile) in tiles.iter_mut().take(rows.div_ceil(MR)).enumerate() {
                // Rows past the block's end repeat its last row; their results are dropped.
                let ptrs: [&[u8]; MR] = std::array::from_fn(|i| {
                    let row = row0 + (t * MR + i).min(rows - 1);
                    &a[row * kp + k0..][..kc]
                });
                tile_at(level, ptrs, &panel[k0 * NR..][..kc * NR], tile, k0 == 0);
            }
            k0 += kc;
        }
        let cols = NR.min(n - p * NR);
        let (col0, z) = (p * NR, epi.zero_point);
        let colsum = &b.colsum[col0..col0 + cols];
        let scale = &epi.scale[col0..col0 + cols];
        for (r, acc_row) in acc[..rows].iter().enumerate() {
            // SAFETY: row `row0 + r`, columns `col0 .. col0 + cols` lie inside the `m × n` output
            // (checked above), and each task owns its rows × panel block: no two tasks (and no
            // other reference) touch these elements while this slice lives.
            let dst_row = unsafe {
                std::slice::from_raw_parts_mut(dst.ptr().add((row0 + r) * n + col0), cols)
            };
            // No overflow: K ≤ MAX_K (checked when the weight is packed), so
            // |acc − z · colsum| < 2^31. f32 product then bias, as fbgemm rounds.
            let centred = acc_row
                .iter()
                .zip(colsum)
                .map(|(&a, &cs)| (a - z * cs) as f32);
            match epi.bias {
                Some(bias) => {
                    let bias = &bias[col0..col0 + cols];
                    for (((d, c), s), b) in dst_row.iter_mut().zip(centred).zip(scale).zip(bias) {
                        *d = c * s + b;
                    }
                }
                None => {
                    for ((d, c), s) in dst_row.iter_mut().zip(centred).zip(scale) {
                        *d = c * s;
                    }
                }
            }
        }
    });
}

/// One `MR × NR` tile over `kc` values of `k`: `acc (+)= a · panel`.
#[inline(always)]
fn tile_at(level: Level, a: [&[u8]; MR], panel: &[i8], acc: &mut [[i32; NR]; MR], first: bool) {
    match level.at_most_avx2() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token proves AVX2; the slices' lengths bound every access (see `tile_avx2`).
        Level::Avx2Fma(_) => unsafe { tile_avx2(a, panel, acc, first) },
        _ => tile_scalar(a, panel, acc, first),
    }
}

/// The portable tile: the same integer sums as the AVX2 kernel, exactly.
fn tile_scalar(a: [&[u8]; MR], panel: &[i8], acc: &mut [[i32; NR]; MR], first: bool) {
    if first {
        *acc = [[0; NR]; MR];
    }
    for (g, group) in panel.chunks_exact(KG * NR).enumerate() {
        for (row, acc_row) in a.iter().zip(acc.iter_mut()) {
            let x = &row[g * KG..][..KG];
            for (c, w) in group.chunks_exact(KG).enumerate() {
                let dot: i32 = x
                    .iter()
                    .zip(w)
                    .map(|(&x, &w)| i32::from(x) * i32::from(w))
                    .sum();
                acc_row[c] += dot;
            }
        }
    }
}

/// The AVX2 tile (see the module docs).
///
/// # Safety
/// The CPU has AVX2. Every row of `a` holds `panel.len() / NR` bytes (whole groups of 4), which
/// is all the kernel reads from it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2(a: [&[u8]; MR], panel: &[i8], acc: &mut [[i32; NR]; MR], first: bool) {
    use std::arch::x86_64::*;
    let groups = panel.len() / (KG * NR);
    debug_assert!(a.iter().all(|r| r.len() >= groups * KG));
    let ones = _mm256_set1_epi16(1);
    let mut c = [[_mm256_setzero_si256(); 2]; MR];
    if !first {
        for (cr, ar) in c.iter_mut().zip(acc.iter()) {
            // SAFETY: `ar` is 16 i32, two unaligned 256-bit loads.
            *cr = unsafe {
                [
                    _mm256_loadu_si256(ar.as_ptr().cast()),
                    _mm256_loadu_si256(ar.as_ptr().add(8).cast()),
                ]
            };
        }
    }
    let pb = panel.as_ptr();
    let pa = a.map(<[u8]>::as_ptr);
    for g in 0..groups {
        // SAFETY: group `g` of the panel is bytes `64 g .. 64 g + 64` of `panel`, and bytes
        // `4 g .. 4 g + 4` of every row (the contract above).
        unsafe {
            let b0 = _mm256_loadu_si256(pb.add(g * KG * NR).cast());
            let b1 = _mm256_loadu_si256(pb.add(g * KG * NR + 32).cast());
            for r in 0..MR {
                let x = _mm256_set1_epi32(pa[r].add(g * KG).cast::<i32>().read_unaligned());
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, b0), ones);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, b1), ones);
                c[r][0] = _mm256_add_epi32(c[r][0], p0);
                c[r][1] = _mm256_add_epi32(c[r][1], p1);
            }
        }
    }
    for (cr, ar) in c.iter().zip(acc.iter_mut()) {
        // SAFETY: `ar` is 16 i32, two unaligned 256-bit stores.
        unsafe {
            _mm256_storeu_si256(ar.as_mut_ptr().cast(), cr[0]);
            _mm256_storeu_si256(ar.as_mut_ptr().add(8).cast(), cr[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::simd::{with_cap, Cap};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// `out` of `a (m × k, values ≤ 127) · w (n × k)ᵀ` through the kernel at every level, with
    /// the activations' zero point `z`, against an exact i64 reference.
    fn check(m: usize, n: usize, k: usize, a: &[u8], w: &[i8], z: i32) {
        let b = PackedB::pack(w, n, k);
        let kp = b.kp();
        let mut ap = vec![0u8; m * kp];
        for i in 0..m {
            ap[i * kp..i * kp + k].copy_from_slice(&a[i * k..][..k]);
            // Padding bytes are arbitrary: they meet zero weights.
            ap[i * kp + k..(i + 1) * kp].fill(127);
        }
        let scale = vec![1f32; n];
        let epi = Epilogue {
            scale: &scale,
            zero_point: z,
            bias: None,
        };
        let mut results = Vec::new();
        for cap in [Cap::Scalar, Cap::All] {
            let mut out = vec![f32::NAN; m * n];
            with_cap(cap, || gemm_u8i8_f32(&ap, m, &b, &epi, &mut out));
            results.push(out);
        }
        for i in 0..m {
            for j in 0..n {
                let want: i64 = (0..k)
                    .map(|t| (i64::from(a[i * k + t]) - i64::from(z)) * i64::from(w[j * k + t]))
                    .sum();
                // |want| < 2^24 in these tests, so the f32 store is exact.
                assert_eq!(results[0][i * n + j], want as f32, "scalar ({i}, {j})");
            }
        }
        assert_eq!(results[0], results[1], "scalar and SIMD differ");
    }

    #[test]
    fn random_shapes_match_exact_reference() {
        let mut rng = StdRng::seed_from_u64(7);
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 17, 5),
            (3, 31, 7),
            (5, 16, 4),
            (67, 33, 1030),
            (130, 45, 2100),
            (4, 9, 3),
        ] {
            let a: Vec<u8> = (0..m * k).map(|_| rng.random_range(0..=127)).collect();
            let w: Vec<i8> = (0..n * k).map(|_| rng.random::<i8>()).collect();
            check(m, n, k, &a, &w, rng.random_range(0..=127));
        }
    }

    #[test]
    fn extreme_values_do_not_saturate() {
        // 127 × −128 and 127 × 127 on every pair: the largest i16 pair sums of vpmaddubsw.
        for &(m, n, k) in &[(2, 19, 1000), (1, 16, 4), (9, 3, 13)] {
            let a = vec![127u8; m * k];
            let w: Vec<i8> = (0..n * k)
                .map(|i| if (i / k) % 2 == 0 { -128 } else { 127 })
                .collect();
            check(m, n, k, &a, &w, 0);
            check(m, n, k, &a, &w, 127);
            let zeros = vec![0u8; m * k];
            check(m, n, k, &zeros, &w, 64);
        }
    }

    #[test]
    fn epilogue_scales_and_adds_bias() {
        let (m, n, k) = (2, 3, 5);
        let a: Vec<u8> = (0..m * k).map(|i| (i * 7 % 128) as u8).collect();
        let w: Vec<i8> = (0..n * k).map(|i| (i as i8) * 9 - 60).collect();
        let b = PackedB::pack(&w, n, k);
        let mut ap = vec![0u8; m * b.kp()];
        for i in 0..m {
            ap[i * b.kp()..][..k].copy_from_slice(&a[i * k..][..k]);
        }
        let (scale, bias) = ([0.5f32, 0.25, 2.0], [1f32, -2.0, 3.0]);
        let epi = Epilogue {
            scale: &scale,
            zero_point: 3,
            bias: Some(&bias),
        };
        let mut out = vec![0f32; m * n];
        gemm_u8i8_f32(&ap, m, &b, &epi, &mut out);
        for i in 0..m {
            for j in 0..n {
                let acc: i32 = (0..k)
                    .map(|t| (i32::from(a[i * k + t]) - 3) * i32::from(w[j * k + t]))
                    .sum();
                assert_eq!(out[i * n + j], acc as f32 * scale[j] + bias[j]);
            }
        }
    }
}
