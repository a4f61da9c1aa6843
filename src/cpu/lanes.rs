//! Explicit vectors: [`Lanes`], the element-wise primitives the vectorised math
//! ([`super::math`]) is written over once, and [`Blocks`], 8-lane state blocks in registers.
//!
//! # Soundness
//! The methods are safe although [`Avx`] and [`Avx512`] run CPU-specific intrinsics: a vector
//! is only made from nothing by a [`Blocks`] constructor (`zero`, `splat`, `load`, the static
//! `hsum_rows`), which takes the level's token ([`super::simd`]), a zero-sized proof that the
//! CPU has the features. The registers' fields are private to this module, so a vector exists
//! only if a token did; the methods that take `self` need no token: the value is the proof.

use std::marker::PhantomData;

use super::simd::{Isa, Scalar};

/// Eight f32: one state block.
pub(crate) type Blk = [f32; 8];

/// Element-wise f32 arithmetic on one or more lanes: `f32` itself (what the compiler
/// vectorises in loops) or a vector register.
pub(crate) trait Lanes: Copy {
    /// `v` in every lane.
    fn splat_as(self, v: f32) -> Self;
    /// `self + o`.
    fn add(self, o: Self) -> Self;
    /// `self - o`.
    fn sub(self, o: Self) -> Self;
    /// `self * o`.
    fn mul(self, o: Self) -> Self;
    /// `self * m + a`, fused where the level has FMA.
    fn mul_add(self, m: Self, a: Self) -> Self;
    /// `self` clamped to `[lo, hi]`; NaN stays NaN.
    fn clamp_to(self, lo: f32, hi: f32) -> Self;
    /// $2^n$ from `self` $= n + 1.5 \cdot 2^{23}$ (an integer $n \in [-126, 127]$ held in the
    /// low mantissa bits), built in the exponent bits.
    fn pow2_from_magic(self) -> Self;
    /// Lane-wise `if self < lim { then } else { other }` (NaN takes `other`).
    fn select_lt(self, lim: f32, then: Self, other: Self) -> Self;
    /// Lane-wise `if self > lim { then } else { other }` (NaN takes `other`).
    fn select_gt(self, lim: f32, then: Self, other: Self) -> Self;
}

/// Vectors of `K` 8-lane state blocks.
pub(crate) trait Blocks: Lanes {
    /// The level whose token proves these instructions run.
    type Isa: Isa;
    /// State blocks per vector (1: 8 lanes, 2: 16 lanes).
    const K: usize;
    /// Zeros.
    fn zero(isa: Self::Isa) -> Self;
    /// `v` in every lane.
    fn splat(isa: Self::Isa, v: f32) -> Self;
    /// The first `K` blocks of `b`.
    fn load(isa: Self::Isa, b: &[Blk]) -> Self;
    /// Into the first `K` blocks of `b`.
    fn store(self, b: &mut [Blk]);
    /// The `K` blocks summed lane-wise into one.
    fn store_folded(self, b: &mut Blk);
    /// `dst[t] += hsum(src[t])` for every row.
    #[inline(always)]
    fn hsum_rows(isa: Self::Isa, src: &[Blk], dst: &mut [f32]) {
        let _ = isa;
        for (d, s) in dst.iter_mut().zip(src) {
            *d += hsum(*s);
        }
    }
}

/// Sum of the 8 lanes as a tree (vector shuffles, not a serial chain).
#[inline(always)]
pub(crate) fn hsum(a: Blk) -> f32 {
    let s = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (s[0] + s[2]) + (s[1] + s[3])
}

impl Lanes for f32 {
    #[inline(always)]
    fn splat_as(self, v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self - o
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self * o
    }
    /// Not fused: a software fused multiply-add is a libm call, and plain arithmetic
    /// vectorises in the callers' loops.
    #[inline(always)]
    fn mul_add(self, m: Self, a: Self) -> Self {
        self * m + a
    }
    #[inline(always)]
    fn clamp_to(self, lo: f32, hi: f32) -> Self {
        self.clamp(lo, hi)
    }
    #[inline(always)]
    fn pow2_from_magic(self) -> Self {
        f32::from_bits(self.to_bits().wrapping_add(127) << 23)
    }
    #[inline(always)]
    fn select_lt(self, lim: f32, then: Self, other: Self) -> Self {
        if self < lim {
            then
        } else {
            other
        }
    }
    #[inline(always)]
    fn select_gt(self, lim: f32, then: Self, other: Self) -> Self {
        if self > lim {
            then
        } else {
            other
        }
    }
}

/// Portable blocks: plain arrays (what the compiler makes of the array loops at the level `S`).
#[derive(Clone, Copy)]
pub(crate) struct Portable<S = Scalar>(pub(crate) Blk, PhantomData<S>);

impl<S> Portable<S> {
    #[inline(always)]
    fn map(self, f: impl Fn(f32) -> f32) -> Self {
        Portable(self.0.map(f), PhantomData)
    }
    #[inline(always)]
    fn zip(self, o: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        Portable(std::array::from_fn(|q| f(self.0[q], o.0[q])), PhantomData)
    }
}

impl<S: Isa> Lanes for Portable<S> {
    #[inline(always)]
    fn splat_as(self, v: f32) -> Self {
        Portable([v; 8], PhantomData)
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self.zip(o, |a, b| a + b)
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self.zip(o, |a, b| a - b)
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self.zip(o, |a, b| a * b)
    }
    #[inline(always)]
    fn mul_add(self, m: Self, a: Self) -> Self {
        let fused = |x: f32, y: f32, z: f32| if S::FMA { x.mul_add(y, z) } else { x * y + z };
        Portable(
            std::array::from_fn(|q| fused(self.0[q], m.0[q], a.0[q])),
            PhantomData,
        )
    }
    #[inline(always)]
    fn clamp_to(self, lo: f32, hi: f32) -> Self {
        self.map(|v| v.clamp_to(lo, hi))
    }
    #[inline(always)]
    fn pow2_from_magic(self) -> Self {
        self.map(Lanes::pow2_from_magic)
    }
    #[inline(always)]
    fn select_lt(self, lim: f32, then: Self, other: Self) -> Self {
        Portable(
            std::array::from_fn(|q| self.0[q].select_lt(lim, then.0[q], other.0[q])),
            PhantomData,
        )
    }
    #[inline(always)]
    fn select_gt(self, lim: f32, then: Self, other: Self) -> Self {
        Portable(
            std::array::from_fn(|q| self.0[q].select_gt(lim, then.0[q], other.0[q])),
            PhantomData,
        )
    }
}

impl<S: Isa<Lanes = Self>> Blocks for Portable<S> {
    type Isa = S;
    const K: usize = 1;
    #[inline(always)]
    fn zero(_: S) -> Self {
        Portable([0.0; 8], PhantomData)
    }
    #[inline(always)]
    fn splat(_: S, v: f32) -> Self {
        Portable([v; 8], PhantomData)
    }
    #[inline(always)]
    fn load(_: S, b: &[Blk]) -> Self {
        Portable(b[0], PhantomData)
    }
    #[inline(always)]
    fn store(self, b: &mut [Blk]) {
        b[0] = self.0;
    }
    #[inline(always)]
    fn store_folded(self, b: &mut Blk) {
        *b = self.0;
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{hsum, Blk, Blocks, Lanes};
    use crate::cpu::simd::{Avx2Fma, Avx512 as HasAvx512};

    /// One AVX2 register. Only made by the constructors, which take an [`Avx2Fma`] token, so a
    /// value proves that AVX2 and FMA are available: the invariant every `SAFETY` below uses.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx(__m256);

    /// One AVX-512 register: two state blocks. Only made by the constructors, which take an
    /// AVX-512 token, so a value proves that AVX-512F, AVX2 and FMA are available: the
    /// invariant every `SAFETY` below uses.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(__m512);

    impl Lanes for Avx {
        #[inline(always)]
        fn splat_as(self, v: f32) -> Self {
            // SAFETY: `self` exists, so AVX2 is available (type docs).
            unsafe { Avx(_mm256_set1_ps(v)) }
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            // SAFETY: `self` exists, so AVX2 is available (type docs).
            unsafe { Avx(_mm256_add_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            // SAFETY: `self` exists, so AVX2 is available (type docs).
            unsafe { Avx(_mm256_sub_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: `self` exists, so AVX2 is available (type docs).
            unsafe { Avx(_mm256_mul_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn mul_add(self, m: Self, a: Self) -> Self {
            // SAFETY: `self` exists, so AVX2 and FMA are available (type docs).
            unsafe { Avx(_mm256_fmadd_ps(self.0, m.0, a.0)) }
        }
        #[inline(always)]
        fn clamp_to(self, lo: f32, hi: f32) -> Self {
            // max/min return their second operand when one is NaN: NaN stays NaN.
            // SAFETY: `self` exists, so AVX2 is available (type docs).
            unsafe {
                Avx(_mm256_min_ps(
                    _mm256_set1_ps(hi),
                    _mm256_max_ps(_mm256_set1_ps(lo), self.0),
                ))
            }
        }
        #[inline(always)]
        fn pow2_from_magic(self) -> Self {
            // SAFETY: `self` exists, so AVX2 is available (type docs).
            unsafe {
                let k = _mm256_add_epi32(_mm256_castps_si256(self.0), _mm256_set1_epi32(127));
                Avx(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(k)))
            }
        }
        #[inline(always)]
        fn select_lt(self, lim: f32, then: Self, other: Self) -> Self {
            // SAFETY: `self` exists, so AVX2 is available (type docs).
            unsafe {
                let m = _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, _mm256_set1_ps(lim));
                Avx(_mm256_blendv_ps(other.0, then.0, m))
            }
        }
        #[inline(always)]
        fn select_gt(self, lim: f32, then: Self, other: Self) -> Self {
            // SAFETY: `self` exists, so AVX2 is available (type docs).
            unsafe {
                let m = _mm256_cmp_ps::<_CMP_GT_OQ>(self.0, _mm256_set1_ps(lim));
                Avx(_mm256_blendv_ps(other.0, then.0, m))
            }
        }
    }

    impl Blocks for Avx {
        type Isa = Avx2Fma;
        const K: usize = 1;
        #[inline(always)]
        fn zero(_: Avx2Fma) -> Self {
            // SAFETY: the token proves AVX2 is available.
            unsafe { Avx(_mm256_setzero_ps()) }
        }
        #[inline(always)]
        fn splat(_: Avx2Fma, v: f32) -> Self {
            // SAFETY: the token proves AVX2 is available.
            unsafe { Avx(_mm256_set1_ps(v)) }
        }
        #[inline(always)]
        fn load(_: Avx2Fma, b: &[Blk]) -> Self {
            // SAFETY: the token proves AVX2 is available; `b[0]` (bounds-checked) is 8 f32,
            // the 32 bytes an unaligned load reads.
            unsafe { Avx(_mm256_loadu_ps(b[0].as_ptr())) }
        }
        #[inline(always)]
        fn store(self, b: &mut [Blk]) {
            // SAFETY: `self` exists, so AVX2 is available (type docs); `b[0]` (bounds-checked)
            // is 8 writable f32, the 32 bytes an unaligned store writes.
            unsafe { _mm256_storeu_ps(b[0].as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn store_folded(self, b: &mut Blk) {
            // SAFETY: `self` exists, so AVX2 is available (type docs); `b` is 8 writable f32.
            unsafe { _mm256_storeu_ps(b.as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn hsum_rows(_: Avx2Fma, src: &[Blk], dst: &mut [f32]) {
            let mut rows = src.chunks_exact(8);
            let mut outs = dst.chunks_exact_mut(8);
            for (v, d) in (&mut rows).zip(&mut outs) {
                // Eight horizontal sums at once: two rounds of pairwise adds, then the halves.
                // SAFETY: the token proves AVX2 is available; `v` is 8 blocks and `d` 8 f32
                // (`chunks_exact`), so each load reads one whole block and the load and store
                // of `d` cover exactly its 8 f32.
                unsafe {
                    let h01 = _mm256_hadd_ps(
                        _mm256_loadu_ps(v[0].as_ptr()),
                        _mm256_loadu_ps(v[1].as_ptr()),
                    );
                    let h23 = _mm256_hadd_ps(
                        _mm256_loadu_ps(v[2].as_ptr()),
                        _mm256_loadu_ps(v[3].as_ptr()),
                    );
                    let h45 = _mm256_hadd_ps(
                        _mm256_loadu_ps(v[4].as_ptr()),
                        _mm256_loadu_ps(v[5].as_ptr()),
                    );
                    let h67 = _mm256_hadd_ps(
                        _mm256_loadu_ps(v[6].as_ptr()),
                        _mm256_loadu_ps(v[7].as_ptr()),
                    );
                    let h03 = _mm256_hadd_ps(h01, h23);
                    let h47 = _mm256_hadd_ps(h45, h67);
                    let lo = _mm256_permute2f128_ps::<0x20>(h03, h47);
                    let hi = _mm256_permute2f128_ps::<0x31>(h03, h47);
                    let acc = _mm256_add_ps(_mm256_loadu_ps(d.as_ptr()), _mm256_add_ps(lo, hi));
                    _mm256_storeu_ps(d.as_mut_ptr(), acc);
                }
            }
            for (d, s) in outs.into_remainder().iter_mut().zip(rows.remainder()) {
                *d += hsum(*s);
            }
        }
    }

    impl Lanes for Avx512 {
        #[inline(always)]
        fn splat_as(self, v: f32) -> Self {
            // SAFETY: `self` exists, so AVX-512F is available (type docs).
            unsafe { Avx512(_mm512_set1_ps(v)) }
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            // SAFETY: `self` exists, so AVX-512F is available (type docs).
            unsafe { Avx512(_mm512_add_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            // SAFETY: `self` exists, so AVX-512F is available (type docs).
            unsafe { Avx512(_mm512_sub_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: `self` exists, so AVX-512F is available (type docs).
            unsafe { Avx512(_mm512_mul_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn mul_add(self, m: Self, a: Self) -> Self {
            // SAFETY: `self` exists, so AVX-512F is available (type docs).
            unsafe { Avx512(_mm512_fmadd_ps(self.0, m.0, a.0)) }
        }
        #[inline(always)]
        fn clamp_to(self, lo: f32, hi: f32) -> Self {
            // max/min return their second operand when one is NaN: NaN stays NaN.
            // SAFETY: `self` exists, so AVX-512F is available (type docs).
            unsafe {
                Avx512(_mm512_min_ps(
                    _mm512_set1_ps(hi),
                    _mm512_max_ps(_mm512_set1_ps(lo), self.0),
                ))
            }
        }
        #[inline(always)]
        fn pow2_from_magic(self) -> Self {
            // SAFETY: `self` exists, so AVX-512F is available (type docs).
            unsafe {
                let k = _mm512_add_epi32(_mm512_castps_si512(self.0), _mm512_set1_epi32(127));
                Avx512(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(k)))
            }
        }
        #[inline(always)]
        fn select_lt(self, lim: f32, then: Self, other: Self) -> Self {
            // SAFETY: `self` exists, so AVX-512F is available (type docs).
            unsafe {
                let m = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, _mm512_set1_ps(lim));
                Avx512(_mm512_mask_mov_ps(other.0, m, then.0))
            }
        }
        #[inline(always)]
        fn select_gt(self, lim: f32, then: Self, other: Self) -> Self {
            // SAFETY: `self` exists, so AVX-512F is available (type docs).
            unsafe {
                let m = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, _mm512_set1_ps(lim));
                Avx512(_mm512_mask_mov_ps(other.0, m, then.0))
            }
        }
    }

    impl Blocks for Avx512 {
        type Isa = HasAvx512;
        const K: usize = 2;
        #[inline(always)]
        fn zero(_: HasAvx512) -> Self {
            // SAFETY: the token proves AVX-512F is available.
            unsafe { Avx512(_mm512_setzero_ps()) }
        }
        #[inline(always)]
        fn splat(_: HasAvx512, v: f32) -> Self {
            // SAFETY: the token proves AVX-512F is available.
            unsafe { Avx512(_mm512_set1_ps(v)) }
        }
        #[inline(always)]
        fn load(_: HasAvx512, b: &[Blk]) -> Self {
            let b = &b[..2];
            // SAFETY: the token proves AVX-512F is available; `b` (bounds-checked) is two
            // blocks, 16 contiguous f32 (arrays have no padding), the 64 bytes an unaligned
            // load reads.
            unsafe { Avx512(_mm512_loadu_ps(b.as_ptr().cast::<f32>())) }
        }
        #[inline(always)]
        fn store(self, b: &mut [Blk]) {
            let b = &mut b[..2];
            // SAFETY: `self` exists, so AVX-512F is available (type docs); `b`
            // (bounds-checked) is 16 contiguous writable f32, the 64 bytes an unaligned store
            // writes.
            unsafe { _mm512_storeu_ps(b.as_mut_ptr().cast::<f32>(), self.0) }
        }
        #[inline(always)]
        fn store_folded(self, b: &mut Blk) {
            // SAFETY: `self` exists, so AVX-512F and AVX2 are available (type docs); the store
            // writes the 8 f32 of `b`.
            unsafe {
                let lo = _mm512_castps512_ps256(self.0);
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self.0)));
                _mm256_storeu_ps(b.as_mut_ptr(), _mm256_add_ps(lo, hi));
            }
        }
        #[inline(always)]
        fn hsum_rows(isa: HasAvx512, src: &[Blk], dst: &mut [f32]) {
            <Avx as Blocks>::hsum_rows(isa.avx2(), src, dst)
        }
    }
}
