//! The one run-time SIMD dispatch: a kernel is written once, generically over an [`Isa`] token,
//! and [`Level::run`] compiles and runs it for the best instruction set this CPU has.
//!
//! A default build targets baseline x86-64 (SSE2) and users won't pass `-C target-cpu`, so the
//! wide instructions must be enabled per function. [`Level::run`] calls the kernel's
//! `#[inline(always)]` [`Kernel::run`] inside a `#[target_feature]` trampoline, so the whole body
//! (and every `#[inline(always)]` helper it calls, such as the reductions here) is compiled for that
//! level and the compiler vectorises plain loops to its width. Closures are compiled separately
//! and do not inherit the features: a kernel body calls no closure on its hot path.
//!
//! # Soundness
//! A token ([`Scalar`], [`Avx2Fma`], [`Avx512`], [`Neon`]) is a zero-sized *proof* that the
//! running CPU has its features: the fields are private and the only constructor, [`Level::detect`]
//! (through `try_new`), checks them. Code holding a token may therefore run that level's
//! intrinsics (the explicit vectors of [`super::lanes`] require one to be built), and the
//! trampolines' `unsafe` calls rely on nothing else.

use std::cell::Cell;

/// A zero-sized proof that this CPU runs one instruction-set level (see the module docs).
pub(crate) trait Isa: Copy + Send + Sync + 'static {
    /// Whether a fused multiply-add is one native instruction at this level.
    const FMA: bool;
    /// The explicit 8-lane block vectors of this level ([`super::lanes::Lanes`]).
    type Lanes: super::lanes::Blocks<Isa = Self>;

    /// `a * b + c`, fused where FMA is native (one rounding, and as fast as a multiply), as two
    /// operations elsewhere (a software fused multiply-add is a slow libm call). Needs no token:
    /// without the feature it is merely slow.
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        if Self::FMA {
            a.mul_add(b, c)
        } else {
            a * b + c
        }
    }
}

/// A kernel written once for every level: [`Level::run`] calls [`Kernel::run`] with the best
/// token. Implementations mark `run` `#[inline(always)]` so that its body is compiled inside the
/// level's `#[target_feature]` trampoline.
pub(crate) trait Kernel {
    /// What the kernel returns.
    type Output;
    /// The kernel body at the level `isa` proves.
    fn run<S: Isa>(self, isa: S) -> Self::Output;
}

/// Whatever the build's baseline target features give (SSE2 on x86-64).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scalar(());

impl Isa for Scalar {
    const FMA: bool = false;
    type Lanes = super::lanes::Portable;
}

/// Proof of AVX2 and FMA (x86-64).
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2Fma(());

#[cfg(target_arch = "x86_64")]
impl Isa for Avx2Fma {
    const FMA: bool = true;
    type Lanes = super::lanes::Avx;
}

/// Proof of AVX-512F, AVX2 and FMA (x86-64).
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512(());

#[cfg(target_arch = "x86_64")]
impl Isa for Avx512 {
    const FMA: bool = true;
    type Lanes = super::lanes::Avx512;
}

#[cfg(target_arch = "x86_64")]
impl Avx512 {
    /// AVX-512F machines in this sense also have AVX2 and FMA.
    #[inline(always)]
    pub(crate) fn avx2(self) -> Avx2Fma {
        Avx2Fma(())
    }
}

/// Proof of NEON with fused multiply-add (aarch64, where both are part of the baseline: the
/// plain loops already compile to NEON, the token only makes [`Isa::madd`] fused).
#[cfg(target_arch = "aarch64")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Neon(());

#[cfg(target_arch = "aarch64")]
impl Isa for Neon {
    const FMA: bool = true;
    type Lanes = super::lanes::Portable<Neon>;
}

/// The instruction-set level a kernel runs at, holding its token.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Level {
    /// Baseline only.
    Scalar(Scalar),
    /// AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma(Avx2Fma),
    /// AVX-512F (with AVX2 and FMA).
    #[cfg(target_arch = "x86_64")]
    Avx512(Avx512),
    /// NEON with FMA.
    #[cfg(target_arch = "aarch64")]
    Neon(Neon),
}

/// Which levels [`Level::detect`] may return (a test cap: see [`with_cap`]; builds other than
/// the tests always use [`Cap::All`]).
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Cap {
    /// [`Level::Scalar`] only.
    Scalar,
    /// Up to AVX2 + FMA (or NEON).
    Avx2,
    /// Everything the CPU has.
    All,
}

thread_local! {
    static CAP: Cell<Cap> = const { Cell::new(Cap::All) };
}

/// Runs `f` with [`Level::detect`] on this thread returning at most `cap` (kernels detect on the
/// calling thread before they split work, so the cap covers the whole op): the tests run every
/// kernel at every level this CPU has.
#[cfg(test)]
pub(crate) fn with_cap<R>(cap: Cap, f: impl FnOnce() -> R) -> R {
    let old = CAP.with(|c| c.replace(cap));
    let out = f();
    CAP.with(|c| c.set(old));
    out
}

impl Level {
    /// The best level this CPU runs (feature detection is cached by `std`).
    pub(crate) fn detect() -> Level {
        let cap = CAP.with(Cell::get);
        #[cfg(target_arch = "x86_64")]
        if cap >= Cap::Avx2 && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            if cap == Cap::All && is_x86_feature_detected!("avx512f") {
                return Level::Avx512(Avx512(()));
            }
            return Level::Avx2Fma(Avx2Fma(()));
        }
        #[cfg(target_arch = "aarch64")]
        if cap >= Cap::Avx2 && std::arch::is_aarch64_feature_detected!("neon") {
            return Level::Neon(Neon(()));
        }
        let _ = cap;
        Level::Scalar(Scalar(()))
    }

    /// This level without AVX-512 (for kernels whose data does not fill 16-lane registers).
    pub(crate) fn at_most_avx2(self) -> Level {
        match self {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512(t) => Level::Avx2Fma(t.avx2()),
            other => other,
        }
    }

    /// Runs `k` compiled for this level.
    #[inline(always)]
    pub(crate) fn run<K: Kernel>(self, k: K) -> K::Output {
        match self {
            Level::Scalar(t) => k.run(t),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the token exists, so the CPU has AVX2 and FMA (module docs).
            Level::Avx2Fma(t) => unsafe { run_avx2(t, k) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the token exists, so the CPU has AVX-512F, AVX2 and FMA (module docs).
            Level::Avx512(t) => unsafe { run_avx512(t, k) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: the token exists, so the CPU has NEON (module docs).
            Level::Neon(t) => unsafe { run_neon(t, k) },
        }
    }
}

/// [`Kernel::run`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA (the token proves it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(t: Avx2Fma, k: K) -> K::Output {
    k.run(t)
}

/// [`Kernel::run`] compiled for AVX-512F, AVX2 and FMA.
///
/// # Safety
/// The CPU supports AVX-512F, AVX2 and FMA (the token proves it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512<K: Kernel>(t: Avx512, k: K) -> K::Output {
    k.run(t)
}

/// [`Kernel::run`] compiled for NEON.
///
/// # Safety
/// The CPU supports NEON (the token proves it).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn run_neon<K: Kernel>(t: Neon, k: K) -> K::Output {
    k.run(t)
}

/// `y += a * x`, element-wise over equal-length slices (fused where the level has FMA);
/// vectorises.
#[inline(always)]
pub(crate) fn axpy<S: Isa>(y: &mut [f32], x: &[f32], a: f32) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = S::madd(a, *xi, *yi);
    }
}

/// Lanes of the vector accumulators of the reductions (one AVX-512 or two AVX2 registers).
pub(crate) const LANES: usize = 16;

/// $\sum_i a_i$ in `LANES` independent partial sums.
#[inline(always)]
pub(crate) fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let rest: f32 = ca.remainder().iter().sum();
    for c in ca {
        for j in 0..LANES {
            acc[j] += c[j];
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// $\sum_i a_i b_i$ in `LANES` independent partial sums.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// The maximum of `a` (`-inf` when empty or all `-inf`), in `LANES` independent lanes. NaN
/// entries are skipped: a softmax sees them through its exponentials (NaN), hence its row sum.
#[inline(always)]
pub(crate) fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let ca = a.chunks_exact(LANES);
    let mut m = f32::NEG_INFINITY;
    for &v in ca.remainder() {
        m = if v > m { v } else { m };
    }
    for c in ca {
        for j in 0..LANES {
            acc[j] = if c[j] > acc[j] { c[j] } else { acc[j] };
        }
    }
    for v in acc {
        m = if v > m { v } else { m };
    }
    m
}
