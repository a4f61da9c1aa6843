//! What the forward and backward kernels share: scalar math, the prepared inputs, the row
//! partition and the chunk buffers.

use std::sync::Mutex;

use super::{Geom, MAX_NB, TASK_STEPS, W};
use crate::ops::cpu::par_fold;
use crate::ops::softmax::exp_approx;

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

pub(super) type Blk = [f32; W];

/// $\ln(1 + e^v)$ as $\max(v, 0) + \ln(1 + e^{-|v|})$, the logarithm from
/// $\ln(1+e) = 2\thinspace\mathrm{atanh}(s)$, $s = e/(2+e) \le 1/3$, seven terms of the series
/// (relative error below $10^{-8}$ plus the exponential's $2 \cdot 10^{-7}$); branch-free so it
/// vectorises.
#[inline(always)]
pub(super) fn softplus(v: f32) -> f32 {
    let e = exp_approx(-v.abs());
    let s = e / (2.0 + e);
    let s2 = s * s;
    let mut p = 1.0 / 13.0;
    p = p * s2 + 1.0 / 11.0;
    p = p * s2 + 1.0 / 9.0;
    p = p * s2 + 1.0 / 7.0;
    p = p * s2 + 1.0 / 5.0;
    p = p * s2 + 1.0 / 3.0;
    p = p * s2 + 1.0;
    v.max(0.0) + 2.0 * s * p
}

/// Coefficients of $2^f$ on $f \in [-1/2, 1/2]$, degree 6 (a Chebyshev fit weighted for
/// relative error; $1.9 \cdot 10^{-9}$ in exact arithmetic, about $10^{-7}$ in f32).
pub(super) const EXP2_POLY: [f32; 7] = [
    1.0,
    std::f32::consts::LN_2,
    0.240_226_46,
    0.055_503_29,
    0.009_618_52,
    0.001_339_986,
    0.000_153_375_77,
];

/// $2^x$ from $x = n + f$, $n = \mathrm{round}(x)$: $2^n$ built in the exponent bits times a
/// polynomial in $f$. Relative error below $2 \cdot 10^{-7}$ (unit test) on $[-126, 127]$; below
/// $-126$ (and `-inf`) it returns 0, in $(127, 128)$ $2^{127}$, from 128 on (where $2^x$
/// overflows f32) `+inf`, so that an infinite $\Delta A$ stays infinite; NaN stays NaN. The kernels
/// get $e^{\Delta A}$ as $2^{\Delta \cdot (A \log_2 e)}$ with $A \log_2 e$ computed once per
/// channel (one multiply per state and step less than a natural-base exponential).
#[inline(always)]
pub(super) fn exp2_approx(x: f32) -> f32 {
    // 1.5 * 2^23: adding it rounds to an integer (to nearest even) held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let v = x.clamp(-126.0, 127.0);
    let n = (v + MAGIC) - MAGIC;
    let f = v - n;
    let mut p = EXP2_POLY[6];
    for c in EXP2_POLY[..6].iter().rev() {
        p = p * f + c;
    }
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -126.0 {
        0.0
    } else if x >= 128.0 {
        f32::INFINITY
    } else {
        p * scale
    }
}

/// $1 / (1 + e^{-v})$.
#[inline(always)]
pub(super) fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + exp_approx(-v))
}

/// Sum of the 8 lanes as a tree (vector shuffles, not a serial chain).
#[inline(always)]
pub(super) fn hsum(a: Blk) -> f32 {
    let s = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (s[0] + s[2]) + (s[1] + s[3])
}

/// The read-only inputs in kernel layout.
pub(super) struct Prepared<'a> {
    pub(super) u: &'a [f32],
    pub(super) delta: &'a [f32],
    pub(super) z: &'a [f32],
    pub(super) dskip: &'a [f32],
    pub(super) bias: &'a [f32],
    /// `a` and `a · log2(e)` as `(D, nbk)` blocks, zero-padded.
    pub(super) a: Vec<Blk>,
    pub(super) a2: Vec<Blk>,
    /// `b`, `c` transposed to `(B, G, L, nbk)` blocks, zero-padded.
    pub(super) bt: Vec<Blk>,
    pub(super) ct: Vec<Blk>,
}

/// `(B, G, N, L)` values → `(B, G, L, nbk)` blocks (states padded with zeros).
fn transpose_bc(gm: &Geom, v: &[f32]) -> Vec<Blk> {
    let (l, n, nbk) = (gm.l, gm.n, gm.nbk);
    let mut out = vec![[0f32; W]; gm.b * gm.g * l * nbk];
    for (src, dst) in v.chunks_exact(n * l).zip(out.chunks_exact_mut(l * nbk)) {
        for s in 0..n {
            let row = &src[s * l..(s + 1) * l];
            for (t, &val) in row.iter().enumerate() {
                dst[t * nbk + s / W][s % W] = val;
            }
        }
    }
    out
}

pub(super) fn prepare<'a>(
    gm: &Geom,
    u: &'a [f32],
    delta: &'a [f32],
    rest: &'a [f32],
) -> Prepared<'a> {
    let [zo, bo, co, ao, dof, bio, end] = gm.offsets();
    let (n, nbk) = (gm.n, gm.nbk);
    let mut a = vec![[0f32; W]; gm.d * nbk];
    for (ch, row) in rest[ao..dof].chunks_exact(n).enumerate() {
        for (s, &v) in row.iter().enumerate() {
            a[ch * nbk + s / W][s % W] = v;
        }
    }
    let a2 = a
        .iter()
        .map(|b| b.map(|v| v * std::f32::consts::LOG2_E))
        .collect();
    Prepared {
        u,
        delta,
        z: &rest[zo..bo],
        dskip: &rest[dof..bio],
        bias: &rest[bio..end],
        a,
        a2,
        bt: transpose_bc(gm, &rest[bo..co]),
        ct: transpose_bc(gm, &rest[co..ao]),
    }
}

/// Rows per task: about `TASK_STEPS` time steps, at least one row.
pub(super) fn rows_per_task(gm: &Geom) -> usize {
    (TASK_STEPS / gm.l).clamp(1, gm.rows().div_ceil(crate::ops::cpu::num_threads()).max(1))
}

/// Runs `f(first_row, outs, scratch)` over tasks of `per_task` rows; `outs[k]` is the task's
/// part of output `k`, which holds `stride_k` values per row (0: absent, an empty slice).
/// Returns the per-worker scratch states.
pub(super) fn par_rows<S: Default + Send, const K: usize>(
    rows: usize,
    per_task: usize,
    outs: [(&mut [f32], usize); K],
    f: impl Fn(usize, &mut [&mut [f32]; K], &mut S) + Sync + Send,
) -> Vec<S> {
    let tasks = rows.div_ceil(per_task);
    let mut iters: Vec<std::vec::IntoIter<&mut [f32]>> = outs
        .into_iter()
        .map(|(buf, stride)| {
            if stride == 0 {
                Vec::new().into_iter()
            } else {
                buf.chunks_mut(stride * per_task)
                    .collect::<Vec<_>>()
                    .into_iter()
            }
        })
        .collect();
    let slots: Vec<Mutex<[&mut [f32]; K]>> = (0..tasks)
        .map(|_| Mutex::new(std::array::from_fn(|k| iters[k].next().unwrap_or_default())))
        .collect();
    par_fold(tasks, |i, scr: &mut S| {
        let mut parts = slots[i].lock().unwrap_or_else(|e| e.into_inner());
        f(i * per_task, &mut parts, scr);
    })
}

/// Per-worker chunk buffers of the group kernels (`chunk · MAX_NB` blocks, `chunk` rows).
#[derive(Default)]
pub(super) struct ChunkScratch {
    pub(super) es: Vec<Blk>,
    pub(super) xs: Vec<Blk>,
    pub(super) accs: Vec<Blk>,
    pub(super) accs2: Vec<Blk>,
    pub(super) s1: Vec<f32>,
    pub(super) s2: Vec<f32>,
}

impl ChunkScratch {
    pub(super) fn size(&mut self, chunk: usize) {
        self.es.resize(chunk * MAX_NB, [0.0; W]);
        self.xs.resize(chunk * MAX_NB, [0.0; W]);
        self.accs.resize(chunk, [0.0; W]);
        self.accs2.resize(chunk, [0.0; W]);
        self.s1.resize(chunk, 0.0);
        self.s2.resize(chunk, 0.0);
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "x86_64")]
    use super::super::lanes::{Avx, Avx512, HasAvx2Fma, HasAvx512};
    use super::super::lanes::{Portable, Vf};
    use super::{exp2_approx, sigmoid, softplus};
    #[cfg(target_arch = "x86_64")]
    use crate::ops::simd::{detect_simd, Simd};

    #[test]
    fn exp2_within_documented_error() {
        let mut worst = 0f64;
        let check = |x: f32, got: f32, worst: &mut f64| {
            let want = 2f64.powf(x as f64);
            *worst = worst.max((got as f64 - want).abs() / want);
        };
        for i in 0..=2_000_000 {
            let x = -126.0 + 253.0 * i as f32 / 2_000_000.0;
            check(x, exp2_approx(x), &mut worst);
            check(x, Portable::splat((), x).exp2().0[3], &mut worst);
            #[cfg(target_arch = "x86_64")]
            if detect_simd() == Simd::Avx2Fma {
                // SAFETY: `detect_simd` found AVX2 and FMA.
                check(x, unsafe { avx_exp2(x) }, &mut worst);
            }
            #[cfg(target_arch = "x86_64")]
            if detect_simd() == Simd::Avx2Fma && is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX2, FMA (`detect_simd`) and AVX-512F were detected.
                check(x, unsafe { avx512_exp2(x) }, &mut worst);
            }
        }
        assert!(worst < 2e-7, "max relative error {worst:e}");
        assert_eq!(exp2_approx(0.0), 1.0);
        assert_eq!(exp2_approx(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp2_approx(-200.0), 0.0);
        assert!(exp2_approx(f32::NAN).is_nan());
        assert_eq!(exp2_approx(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp2_approx(128.0), f32::INFINITY);
        #[cfg(target_arch = "x86_64")]
        if detect_simd() == Simd::Avx2Fma {
            for x in [
                f32::NEG_INFINITY,
                -200.0,
                0.0,
                1.0,
                -1.0,
                128.0,
                f32::INFINITY,
            ] {
                // SAFETY: `detect_simd` found AVX2 and FMA (checked above).
                assert_eq!(unsafe { avx_exp2(x) }, exp2_approx(x), "{x}");
            }
            // SAFETY: as above.
            assert!(unsafe { avx_exp2(f32::NAN) }.is_nan());
        }
    }

    /// [`exp2_approx`] of `x` through [`Avx512`], lane 13.
    ///
    /// # Safety
    /// The CPU supports AVX-512F, AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512_exp2(x: f32) -> f32 {
        // SAFETY: this function's contract.
        let isa = unsafe { HasAvx512::new_unchecked() };
        let mut b = [[0f32; 8]; 2];
        Avx512::splat(isa, x).exp2().store(&mut b);
        b[1][5]
    }

    /// [`exp2_approx`] of `x` through [`Avx`], lane 5.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx_exp2(x: f32) -> f32 {
        // SAFETY: this function's contract.
        let isa = unsafe { HasAvx2Fma::new_unchecked() };
        let mut b = [0f32; 8];
        Avx::splat(isa, x).exp2().store_folded(&mut b);
        b[5]
    }

    #[test]
    fn softplus_and_sigmoid_match_libm() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let v = -60.0 + 120.0 * i as f32 / 200_000.0;
            let want = if v > 30.0 {
                v as f64
            } else {
                (v as f64).exp().ln_1p()
            };
            let got = softplus(v) as f64;
            worst = worst.max((got - want).abs() / want.abs().max(1e-30));
            let s = sigmoid(v) as f64;
            let sw = 1.0 / (1.0 + (-(v as f64)).exp());
            assert!(
                (s - sw).abs() <= 1e-6 * sw.max(1e-30) + 1e-37,
                "sigmoid({v})"
            );
        }
        assert!(worst < 1e-6, "softplus max relative error {worst:e}");
    }
}
