//! The vector abstraction of the group kernels, in its own module so that its privacy enforces
//! [`Vf`]'s soundness invariant: nothing outside can build a vector register or a feature token
//! except through an `unsafe` constructor.

use super::kernel::{exp2_approx, hsum, Blk, EXP2_POLY};
use super::W;

/// Eight f32 lanes: the state block the group kernels work on. [`Portable`] is plain arrays;
/// [`Avx`] is one AVX2 register, [`Avx512`] one AVX-512 register (two blocks).
///
/// # Soundness
/// The methods are safe although [`Avx`] and [`Avx512`] run CPU-specific intrinsics: every
/// function that makes a vector out of nothing (`zero`, `splat`, `load`, and the static
/// `hsum_rows`) takes a [`Vf::Isa`] token, a zero-sized proof that the CPU has the features
/// ([`HasAvx2Fma`], [`HasAvx512`]; `()` for [`Portable`]). The tokens and the registers'
/// fields are private to this module, so outside it a vector exists only if a token did, and a
/// token only comes from an `unsafe` constructor whose caller vouches for the features (the
/// `#[target_feature]` kernels, dispatched after `detect_simd` / `use_avx512`). The methods that
/// take `self` need no token: the value is the proof.
pub(super) trait Vf: Copy {
    /// The proof that this implementor's instructions run on this CPU.
    type Isa: Copy;
    fn zero(isa: Self::Isa) -> Self;
    fn splat(isa: Self::Isa, v: f32) -> Self;
    /// State blocks per vector (1: 8 lanes, 2: 16 lanes).
    const K: usize;
    /// The first `K` blocks of `b`.
    fn load(isa: Self::Isa, b: &[Blk]) -> Self;
    /// Into the first `K` blocks of `b`.
    fn store(self, b: &mut [Blk]);
    /// The `K` blocks summed lane-wise into one.
    fn store_folded(self, b: &mut Blk);
    fn mul(self, o: Self) -> Self;
    /// `self * m + a`.
    fn mul_add(self, m: Self, a: Self) -> Self;
    /// [`exp2_approx`] on every lane.
    fn exp2(self) -> Self;
    /// `dst[t] += hsum(src[t])` for every row.
    #[inline(always)]
    fn hsum_rows(isa: Self::Isa, src: &[Blk], dst: &mut [f32]) {
        let _ = isa;
        for (d, s) in dst.iter_mut().zip(src) {
            *d += hsum(*s);
        }
    }
}

/// Portable lanes (what the compiler makes of the array loops).
#[derive(Clone, Copy)]
pub(super) struct Portable(pub(super) Blk);

impl Vf for Portable {
    type Isa = ();
    #[inline(always)]
    fn zero((): ()) -> Self {
        Portable([0.0; W])
    }
    #[inline(always)]
    fn splat((): (), v: f32) -> Self {
        Portable([v; W])
    }
    const K: usize = 1;
    #[inline(always)]
    fn load((): (), b: &[Blk]) -> Self {
        Portable(b[0])
    }
    #[inline(always)]
    fn store(self, b: &mut [Blk]) {
        b[0] = self.0;
    }
    #[inline(always)]
    fn store_folded(self, b: &mut Blk) {
        *b = self.0;
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Portable(std::array::from_fn(|q| self.0[q] * o.0[q]))
    }
    #[inline(always)]
    fn mul_add(self, m: Self, a: Self) -> Self {
        Portable(std::array::from_fn(|q| self.0[q] * m.0[q] + a.0[q]))
    }
    #[inline(always)]
    fn exp2(self) -> Self {
        Portable(std::array::from_fn(|q| exp2_approx(self.0[q])))
    }
}

/// Proof that the CPU has AVX2 and FMA (see [`Vf`]'s soundness notes).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct HasAvx2Fma(());

#[cfg(target_arch = "x86_64")]
impl HasAvx2Fma {
    /// The token, unchecked.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[inline(always)]
    pub(super) unsafe fn new_unchecked() -> Self {
        HasAvx2Fma(())
    }
}

/// Proof that the CPU has AVX-512F, AVX2 and FMA (see [`Vf`]'s soundness notes).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct HasAvx512(());

#[cfg(target_arch = "x86_64")]
impl HasAvx512 {
    /// The token, unchecked.
    ///
    /// # Safety
    /// The CPU supports AVX-512F, AVX2 and FMA.
    #[inline(always)]
    pub(super) unsafe fn new_unchecked() -> Self {
        HasAvx512(())
    }

    /// AVX-512F machines in this sense also have AVX2 and FMA.
    #[inline(always)]
    fn avx2(self) -> HasAvx2Fma {
        HasAvx2Fma(())
    }
}

/// One AVX2 register. Only made by the constructors, which take a [`HasAvx2Fma`], so a value
/// proves that AVX2 and FMA are available: that is the invariant every `SAFETY` below relies on.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Avx(std::arch::x86_64::__m256);

#[cfg(target_arch = "x86_64")]
impl Vf for Avx {
    type Isa = HasAvx2Fma;
    #[inline(always)]
    fn zero(_: HasAvx2Fma) -> Self {
        // SAFETY: the token proves AVX2 and FMA are available.
        unsafe { Avx(std::arch::x86_64::_mm256_setzero_ps()) }
    }
    #[inline(always)]
    fn splat(_: HasAvx2Fma, v: f32) -> Self {
        // SAFETY: the token proves AVX2 and FMA are available.
        unsafe { Avx(std::arch::x86_64::_mm256_set1_ps(v)) }
    }
    const K: usize = 1;
    #[inline(always)]
    fn load(_: HasAvx2Fma, b: &[Blk]) -> Self {
        // SAFETY: the token proves AVX2 is available; `b[0]` (bounds-checked) is 8 f32, the
        // 32 bytes an unaligned load reads.
        unsafe { Avx(std::arch::x86_64::_mm256_loadu_ps(b[0].as_ptr())) }
    }
    #[inline(always)]
    fn store(self, b: &mut [Blk]) {
        // SAFETY: `self` exists, so AVX2 is available (type docs); `b[0]` (bounds-checked) is
        // 8 writable f32, the 32 bytes an unaligned store writes.
        unsafe { std::arch::x86_64::_mm256_storeu_ps(b[0].as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn store_folded(self, b: &mut Blk) {
        // SAFETY: `self` exists, so AVX2 is available (type docs); `b` is 8 writable f32.
        unsafe { std::arch::x86_64::_mm256_storeu_ps(b.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        // SAFETY: `self` exists, so AVX2 is available (type docs).
        unsafe { Avx(std::arch::x86_64::_mm256_mul_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul_add(self, m: Self, a: Self) -> Self {
        // SAFETY: `self` exists, so AVX2 and FMA are available (type docs).
        unsafe { Avx(std::arch::x86_64::_mm256_fmadd_ps(self.0, m.0, a.0)) }
    }
    #[inline(always)]
    fn exp2(self) -> Self {
        use std::arch::x86_64::*;
        // The algorithm of `exp2_approx`, lane-wise.
        // SAFETY: `self` exists, so AVX2 and FMA are available (type docs); register-only
        // arithmetic, no memory access.
        unsafe {
            let x = self.0;
            // max/min return their second operand when one is NaN: NaN stays NaN.
            let v = _mm256_min_ps(
                _mm256_set1_ps(127.0),
                _mm256_max_ps(_mm256_set1_ps(-126.0), x),
            );
            let n = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            let f = _mm256_sub_ps(v, n);
            let mut p = _mm256_set1_ps(EXP2_POLY[6]);
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_POLY[5]));
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_POLY[4]));
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_POLY[3]));
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_POLY[2]));
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_POLY[1]));
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_POLY[0]));
            let k = _mm256_cvtps_epi32(n);
            let scale = _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_add_epi32(k, _mm256_set1_epi32(127)),
                23,
            ));
            let y = _mm256_mul_ps(p, scale);
            // Below -126 (and -inf): exactly 0, as `exp2_approx`.
            let under = _mm256_cmp_ps(x, _mm256_set1_ps(-126.0), _CMP_LT_OQ);
            // From 128 on (and +inf): +inf, not a clamped 2^127.
            let over = _mm256_cmp_ps(x, _mm256_set1_ps(128.0), _CMP_GE_OQ);
            let y = _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), over);
            Avx(_mm256_andnot_ps(under, y))
        }
    }
    #[inline(always)]
    fn hsum_rows(_: HasAvx2Fma, src: &[Blk], dst: &mut [f32]) {
        use std::arch::x86_64::*;
        let mut rows = src.chunks_exact(8);
        let mut outs = dst.chunks_exact_mut(8);
        for (v, d) in (&mut rows).zip(&mut outs) {
            // Eight horizontal sums at once: two rounds of pairwise adds, then the halves.
            // SAFETY: the token proves AVX2 is available; `v` is 8 blocks and `d` 8 f32
            // (`chunks_exact`), so each load reads one whole block `v[0..8]` and the load and
            // store of `d` cover exactly its 8 f32.
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
                let lo = _mm256_permute2f128_ps(h03, h47, 0x20);
                let hi = _mm256_permute2f128_ps(h03, h47, 0x31);
                let acc = _mm256_add_ps(_mm256_loadu_ps(d.as_ptr()), _mm256_add_ps(lo, hi));
                _mm256_storeu_ps(d.as_mut_ptr(), acc);
            }
        }
        for (d, s) in outs.into_remainder().iter_mut().zip(rows.remainder()) {
            *d += hsum(*s);
        }
    }
}

/// One AVX-512 register: two state blocks (16 lanes, all of `N = 16` at once). Only made by
/// the constructors, which take a [`HasAvx512`], so a value proves that AVX-512F, AVX2 and FMA
/// are available: that is the invariant every `SAFETY` below relies on.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Avx512(std::arch::x86_64::__m512);

#[cfg(target_arch = "x86_64")]
impl Vf for Avx512 {
    type Isa = HasAvx512;
    const K: usize = 2;
    #[inline(always)]
    fn zero(_: HasAvx512) -> Self {
        // SAFETY: the token proves AVX-512F is available.
        unsafe { Avx512(std::arch::x86_64::_mm512_setzero_ps()) }
    }
    #[inline(always)]
    fn splat(_: HasAvx512, v: f32) -> Self {
        // SAFETY: the token proves AVX-512F is available.
        unsafe { Avx512(std::arch::x86_64::_mm512_set1_ps(v)) }
    }
    #[inline(always)]
    fn load(_: HasAvx512, b: &[Blk]) -> Self {
        let b = &b[..2];
        // SAFETY: the token proves AVX-512F is available; `b` (bounds-checked) is two blocks,
        // 16 contiguous f32 (arrays have no padding), the 64 bytes an unaligned load reads.
        unsafe { Avx512(std::arch::x86_64::_mm512_loadu_ps(b.as_ptr().cast::<f32>())) }
    }
    #[inline(always)]
    fn store(self, b: &mut [Blk]) {
        let b = &mut b[..2];
        // SAFETY: `self` exists, so AVX-512F is available (type docs); `b` (bounds-checked) is
        // 16 contiguous writable f32, the 64 bytes an unaligned store writes.
        unsafe { std::arch::x86_64::_mm512_storeu_ps(b.as_mut_ptr().cast::<f32>(), self.0) }
    }
    #[inline(always)]
    fn store_folded(self, b: &mut Blk) {
        use std::arch::x86_64::*;
        // SAFETY: `self` exists, so AVX-512F and AVX2 are available (type docs); the store
        // writes the 8 f32 of `b`.
        unsafe {
            let lo = _mm512_castps512_ps256(self.0);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self.0)));
            _mm256_storeu_ps(b.as_mut_ptr(), _mm256_add_ps(lo, hi));
        }
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        // SAFETY: `self` exists, so AVX-512F is available (type docs).
        unsafe { Avx512(std::arch::x86_64::_mm512_mul_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul_add(self, m: Self, a: Self) -> Self {
        // SAFETY: `self` exists, so AVX-512F is available (type docs).
        unsafe { Avx512(std::arch::x86_64::_mm512_fmadd_ps(self.0, m.0, a.0)) }
    }
    #[inline(always)]
    fn exp2(self) -> Self {
        use std::arch::x86_64::*;
        // The algorithm of `exp2_approx`, lane-wise.
        // SAFETY: `self` exists, so AVX-512F is available (type docs); register-only
        // arithmetic, no memory access.
        unsafe {
            let x = self.0;
            let v = _mm512_min_ps(
                _mm512_set1_ps(127.0),
                _mm512_max_ps(_mm512_set1_ps(-126.0), x),
            );
            let magic = _mm512_set1_ps(12_582_912.0);
            let t = _mm512_add_ps(v, magic);
            let n = _mm512_sub_ps(t, magic);
            let f = _mm512_sub_ps(v, n);
            let mut p = _mm512_set1_ps(EXP2_POLY[6]);
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_POLY[5]));
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_POLY[4]));
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_POLY[3]));
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_POLY[2]));
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_POLY[1]));
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_POLY[0]));
            // The low mantissa bits of t hold n (+ 2^22); shifted into the exponent field
            // after adding the bias, only n + 127 survives.
            let k = _mm512_add_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(127));
            let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(k));
            let y = _mm512_mul_ps(p, scale);
            let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(-126.0));
            // From 128 on (and +inf): +inf, not a clamped 2^127.
            let over = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(128.0));
            let y = _mm512_mask_mov_ps(y, over, _mm512_set1_ps(f32::INFINITY));
            Avx512(_mm512_maskz_mov_ps(!under, y))
        }
    }
    #[inline(always)]
    fn hsum_rows(isa: HasAvx512, src: &[Blk], dst: &mut [f32]) {
        <Avx as Vf>::hsum_rows(isa.avx2(), src, dst)
    }
}
