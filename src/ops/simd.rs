//! Runtime SIMD selection and the vector reductions the row kernels share.
//!
//! A default build targets baseline x86-64 (SSE2), and users won't pass `-C target-cpu`, so each
//! kernel is compiled twice — once plain, once inside an `#[target_feature(enable = "avx2,fma")]`
//! function — and [`detect_simd`] picks one at run time. The reductions here are
//! `#[inline(always)]` so they inherit the caller's target features and vectorise to its width.
//! (Pass them no closures from an AVX2 function: a closure is compiled without the feature.)

/// Which compiled variant of a kernel to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Simd {
    /// Whatever the build's target features give, separate multiply and add.
    Portable,
    /// Fused multiply-add is part of the baseline (aarch64).
    Fma,
    /// x86-64 with AVX2 and FMA detected at run time.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

/// The best variant this CPU runs.
pub(crate) fn detect_simd() -> Simd {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        return Simd::Avx2Fma;
    }
    if cfg!(target_arch = "aarch64") {
        Simd::Fma
    } else {
        Simd::Portable
    }
}

/// Lanes of the vector accumulators (two AVX2 registers).
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
