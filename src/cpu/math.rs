//! Vectorised math, written and error-tested once: $e^x$ and $2^x$ over any [`Lanes`] (plain
//! `f32`, which the compiler vectorises in loops, or a vector register of a [`super::simd`]
//! level), and the activations built on them.
//!
//! A libm call per value does not vectorise; these are a range reduction, a polynomial and
//! $2^n$ built in the exponent bits, with the edge cases of the real functions (0 below the
//! underflow point, `+inf` above the overflow point, NaN stays NaN).

use super::lanes::Lanes;

/// 1.5 · 2²³: adding it rounds to an integer (to nearest even) held in the low mantissa bits.
const MAGIC: f32 = 12_582_912.0;

/// Coefficients of $2^f$ on $f \in [-1/2, 1/2]$, degree 6 (a Chebyshev fit weighted for
/// relative error; $1.9 \cdot 10^{-9}$ in exact arithmetic, about $10^{-7}$ in f32).
const EXP2_POLY: [f32; 7] = [
    1.0,
    std::f32::consts::LN_2,
    0.240_226_46,
    0.055_503_29,
    0.009_618_52,
    0.001_339_986,
    0.000_153_375_77,
];

/// $e^x$ lane-wise. With $n = \mathrm{round}(x \log_2 e)$ and
/// $r = x - n \ln 2 \in [-\ln 2/2, \ln 2/2]$, $e^x = 2^n e^r$; $e^r$ is a degree-7 polynomial
/// (Cephes' `expf` coefficients). Relative error at most $2 \cdot 10^{-7}$ (unit test) for
/// $x \in [-87, 88]$; below $-87$ (where $e^x < 1.7 \cdot 10^{-38}$) it returns 0, `-inf`
/// included; NaN stays NaN. Inputs in $(88, \ln f32::MAX]$ (never reached in a softmax, where
/// $x \le 0$) give $e^{88}$, larger ones (`+inf` included) `+inf`, as `f32::exp` overflows.
#[inline(always)]
pub(crate) fn exp<V: Lanes>(x: V) -> V {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp_to(-87.0, 88.0);
    let t = xc
        .mul(x.splat_as(std::f32::consts::LOG2_E))
        .add(x.splat_as(MAGIC));
    let n = t.sub(x.splat_as(MAGIC));
    let r = xc
        .sub(n.mul(x.splat_as(LN2_HI)))
        .sub(n.mul(x.splat_as(LN2_LO)));
    let mut p = x.splat_as(1.987_569_2e-4);
    for k in [
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = p.mul_add(r, x.splat_as(k));
    }
    let er = p.mul(r).mul_add(r, r).add(x.splat_as(1.0));
    let y = er.mul(t.pow2_from_magic());
    let y = x.select_gt(88.722_84, x.splat_as(f32::INFINITY), y);
    x.select_lt(-87.0, x.splat_as(0.0), y)
}

/// $2^x$ lane-wise, from $x = n + f$, $n = \mathrm{round}(x)$: $2^n$ built in the exponent
/// bits times a polynomial in $f$. Relative error below $2 \cdot 10^{-7}$ (unit test) on
/// $[-126, 127]$; below $-126$ (and `-inf`) it returns 0, in $(127, 128)$ $2^{127}$, from 128
/// on (where $2^x$ overflows f32) `+inf`; NaN stays NaN. The selective scan gets $e^{\Delta A}$
/// as $2^{\Delta \cdot (A \log_2 e)}$ with $A \log_2 e$ computed once per channel (one multiply
/// per state and step less than a natural-base exponential).
#[inline(always)]
pub(crate) fn exp2<V: Lanes>(x: V) -> V {
    let v = x.clamp_to(-126.0, 127.0);
    let t = v.add(x.splat_as(MAGIC));
    let f = v.sub(t.sub(x.splat_as(MAGIC)));
    let mut p = x.splat_as(EXP2_POLY[6]);
    for k in EXP2_POLY[..6].iter().rev() {
        p = p.mul_add(f, x.splat_as(*k));
    }
    let y = p.mul(t.pow2_from_magic());
    // `x > pred(128)` is `x >= 128`: from 128 on (and +inf) +inf, not a clamped 2^127.
    let y = x.select_gt(127.999_99, x.splat_as(f32::INFINITY), y);
    x.select_lt(-126.0, x.splat_as(0.0), y)
}

/// Max that keeps NaN, as PyTorch's `val > max || isnan(val)`.
#[inline(always)]
pub(crate) fn nan_max(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

/// $1 / (1 + e^{-v})$.
#[inline(always)]
pub(crate) fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + exp(-v))
}

/// $\tanh v = \mathrm{sign}(v) \thinspace (1 - t)/(1 + t)$ with $t = e^{-2|v|} \in (0, 1]$: odd
/// by construction, exactly $\pm 1$ once $t$ underflows, branch-free so it vectorises in loops.
/// Absolute error at most $3 \cdot 10^{-7}$ (unit test; near 0 the relative error grows, as
/// $1 - t$ cancels, which the gates of a recurrent cell, bounded by 1, do not notice); NaN
/// stays NaN.
#[inline(always)]
pub(crate) fn tanh(v: f32) -> f32 {
    let t = exp(-2.0 * v.abs());
    ((1.0 - t) / (1.0 + t)).copysign(v)
}

/// $\ln(1 + e^v)$ as $\max(v, 0) + \ln(1 + e^{-|v|})$, the logarithm from
/// $\ln(1+e) = 2\thinspace\mathrm{atanh}(s)$, $s = e/(2+e) \le 1/3$, seven terms of the series
/// (relative error below $10^{-8}$ plus the exponential's $2 \cdot 10^{-7}$); branch-free so it
/// vectorises.
#[inline(always)]
pub(crate) fn softplus(v: f32) -> f32 {
    let e = exp(-v.abs());
    let s = e / (2.0 + e);
    let s2 = s * s;
    let mut p = 1.0 / 13.0;
    for k in [1.0 / 11.0, 1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0] {
        p = p * s2 + k;
    }
    v.max(0.0) + 2.0 * s * p
}

/// $\Phi(x)$, the standard normal CDF: $\tfrac12 \thinspace \mathrm{erfc}(|x|/\sqrt2)$, mirrored for
/// $x \ge 0$, with erfc from Abramowitz–Stegun 7.1.26 (a degree-5 polynomial in
/// $t = 1/(1 + p z)$ times $e^{-z^2}$; absolute error below $1.5 \cdot 10^{-7}$ in exact
/// arithmetic, below $3 \cdot 10^{-7}$ in f32 (unit test)). The negative tail is computed
/// directly, without the cancellation of $1 + \mathrm{erf}(x)$. Branch-free, so it vectorises
/// in loops; NaN stays NaN.
#[inline(always)]
pub(crate) fn normal_cdf(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let mut p = 1.061_405_4_f32;
    for k in [-1.453_152_1, 1.421_413_8, -0.284_496_72, 0.254_829_6] {
        p = p * t + k;
    }
    let half_erfc = 0.5 * p * t * exp(-z * z);
    if x < 0.0 {
        half_erfc
    } else {
        1.0 - half_erfc
    }
}

/// $\varphi(x) = e^{-x^2/2} / \sqrt{2\pi}$, the standard normal density.
#[inline(always)]
pub(crate) fn normal_pdf(x: f32) -> f32 {
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
    FRAC_1_SQRT_2PI * exp(-0.5 * x * x)
}

#[cfg(test)]
mod tests {
    use super::super::lanes::{Blk, Blocks};
    use super::super::simd::{with_cap, Cap, Isa, Kernel, Level};
    use super::{exp, exp2, normal_cdf, normal_pdf, sigmoid, softplus, tanh};

    /// `f` on every value of `xs` through the block vectors of the level [`Level::detect`]
    /// picks (values padded to whole vectors).
    struct OnBlocks<'a> {
        xs: &'a [f32],
        natural: bool,
    }

    impl Kernel for OnBlocks<'_> {
        type Output = Vec<f32>;
        #[inline(always)]
        fn run<S: Isa>(self, isa: S) -> Vec<f32> {
            let k = <S::Lanes as Blocks>::K;
            let mut blocks: Vec<Blk> = self
                .xs
                .chunks(8)
                .map(|c| {
                    let mut b = [0f32; 8];
                    b[..c.len()].copy_from_slice(c);
                    b
                })
                .collect();
            blocks.resize(blocks.len().div_ceil(k) * k, [0.0; 8]);
            for v in blocks.chunks_exact_mut(k) {
                let x = S::Lanes::load(isa, v);
                let y = if self.natural { exp(x) } else { exp2(x) };
                y.store(v);
            }
            blocks.into_iter().flatten().take(self.xs.len()).collect()
        }
    }

    /// Every level this CPU has, lowest first.
    fn caps() -> Vec<Cap> {
        vec![Cap::Scalar, Cap::Avx2, Cap::All]
    }

    /// Largest relative error of `f` (scalar and on every level's vectors) against `want` on
    /// `xs`, after checking that all levels agree on the special values.
    fn worst(xs: &[f32], natural: bool, want: impl Fn(f64) -> f64) -> f64 {
        let scalar: Vec<f32> = xs
            .iter()
            .map(|&x| if natural { exp(x) } else { exp2(x) })
            .collect();
        let mut worst = 0f64;
        for cap in caps() {
            let got = with_cap(cap, || Level::detect().run(OnBlocks { xs, natural }));
            for ((x, g), s) in xs.iter().zip(&got).zip(&scalar) {
                let w = want(*x as f64);
                worst = worst
                    .max((*g as f64 - w).abs() / w)
                    .max((*s as f64 - w).abs() / w);
            }
        }
        worst
    }

    /// The special values: exactly what the real function gives, at every level.
    fn specials(natural: bool, cases: &[(f32, f32)]) {
        let xs: Vec<f32> = cases.iter().map(|c| c.0).chain([f32::NAN]).collect();
        for cap in caps() {
            let got = with_cap(cap, || Level::detect().run(OnBlocks { xs: &xs, natural }));
            for ((x, want), g) in cases.iter().zip(&got) {
                assert_eq!(*g, *want, "{x} at {cap:?}");
            }
            assert!(got[cases.len()].is_nan(), "NaN at {cap:?}");
        }
    }

    #[test]
    fn exp_within_documented_error_at_every_level() {
        let n = 2_000_000;
        let xs: Vec<f32> = (0..=n)
            .map(|i| -87.0 + 175.0 * i as f32 / n as f32)
            .chain([0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 1.0, -1.0, 88.0, -87.0])
            .collect();
        let w = worst(&xs, true, f64::exp);
        assert!(w <= 2e-7, "exp max relative error {w:e}");
        let inf = f32::INFINITY;
        specials(
            true,
            &[
                (0.0, 1.0),
                (-inf, 0.0),
                (-1e4, 0.0),
                (inf, inf),
                (89.0, inf),
            ],
        );
    }

    #[test]
    fn exp2_within_documented_error_at_every_level() {
        let n = 2_000_000;
        let xs: Vec<f32> = (0..=n)
            .map(|i| -126.0 + 253.0 * i as f32 / n as f32)
            .collect();
        let w = worst(&xs, false, |x| 2f64.powf(x));
        assert!(w < 2e-7, "exp2 max relative error {w:e}");
        let inf = f32::INFINITY;
        specials(
            false,
            &[
                (0.0, 1.0),
                (1.0, 2.0),
                (-1.0, 0.5),
                (-inf, 0.0),
                (-200.0, 0.0),
                (128.0, inf),
                (inf, inf),
            ],
        );
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

    #[test]
    fn tanh_within_documented_absolute_error() {
        let mut worst = 0f64;
        for i in 0..=400_000 {
            let v = -20.0 + 40.0 * i as f32 / 400_000.0;
            worst = worst.max((tanh(v) as f64 - (v as f64).tanh()).abs());
        }
        assert!(worst <= 3e-7, "tanh max absolute error {worst:e}");
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert_eq!(tanh(0.0), 0.0);
        assert!(tanh(f32::NAN).is_nan());
    }

    #[test]
    fn normal_cdf_and_pdf_match_the_integrated_density() {
        // Reference: Phi by Simpson's rule on the f64 density from -40 (where Phi < 1e-300).
        let pdf = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let (lo, h) = (-40.0f64, 1e-3);
        let (mut x, mut cdf) = (lo, 0.0f64);
        let mut worst = (0f64, 0f64);
        while x < 12.0 {
            cdf += h / 6.0 * (pdf(x) + 4.0 * pdf(x + h / 2.0) + pdf(x + h));
            x += h;
            if x > -12.0 {
                let got = normal_cdf(x as f32) as f64;
                // f32 input rounding moves Phi by up to pdf(x)·|x|·2^-24.
                let slack = pdf(x) * x.abs() * 6e-8;
                worst.0 = worst.0.max((got - cdf).abs() - slack);
                let d = normal_pdf(x as f32) as f64 - pdf(x);
                worst.1 = worst.1.max(d.abs() - pdf(x) * (1e-6 + x * x * 2e-7));
            }
        }
        assert!(
            worst.0 < 3e-7,
            "normal_cdf max absolute error {:e}",
            worst.0
        );
        assert!(
            worst.1 <= 0.0,
            "normal_pdf error beyond 1e-6 relative: {:e}",
            worst.1
        );
        assert!(normal_cdf(f32::NAN).is_nan());
        assert_eq!(normal_cdf(f32::INFINITY), 1.0);
        assert_eq!(normal_cdf(f32::NEG_INFINITY), 0.0);
    }
}
