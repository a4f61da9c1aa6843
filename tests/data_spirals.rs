//! `data::spirals`: geometry, balance, seeding and bad input.

use candle_core::Device;
use candle_tricks::data::{spirals, SpiralsConfig};
use candle_tricks::Error;
use rand::rngs::StdRng;
use rand::SeedableRng;

type R<T> = Result<T, Box<dyn std::error::Error>>;

/// Without noise every point lies exactly on its class's arm: its angle is
/// $2 \pi (T r + c / K)$ modulo a full turn, and its radius is in $[r_0, 1]$.
#[test]
fn noiseless_points_lie_on_their_arm() -> R<()> {
    let cfg = SpiralsConfig::default()
        .with_classes(5)
        .with_turns(2.0)
        .with_noise(0.0);
    let (x, y) = spirals(&mut StdRng::seed_from_u64(3), 2000, &cfg, &Device::Cpu)?;
    assert_eq!(x.dims(), &[2000, 2]);
    assert_eq!(y.dims(), &[2000]);
    let (x, y) = (x.to_vec2::<f32>()?, y.to_vec1::<u32>()?);
    let mut counts = [0usize; 5];
    for (p, &c) in x.iter().zip(&y) {
        counts[c as usize] += 1;
        let r = p[0].hypot(p[1]) as f64;
        assert!(
            (cfg.inner_radius as f64 - 1e-5..=1.0 + 1e-5).contains(&r),
            "radius {r}"
        );
        let want = std::f64::consts::TAU * (2.0 * r + c as f64 / 5.0);
        let got = (p[1] as f64).atan2(p[0] as f64);
        // The angular distance, modulo a full turn.
        let diff = (got - want).rem_euclid(std::f64::consts::TAU);
        let off = diff.min(std::f64::consts::TAU - diff);
        assert!(off < 1e-3, "angle off by {off}");
    }
    // Classes uniform at random: 400 expected each, 4 standard deviations is ±72.
    assert!(
        counts.iter().all(|&n| (328..=472).contains(&n)),
        "{counts:?}"
    );
    Ok(())
}

/// The noise has the configured standard deviation, seen in the mean squared radius.
#[test]
fn noise_has_the_configured_spread() -> R<()> {
    let cfg = SpiralsConfig::default().with_noise(0.05);
    let (x, _) = spirals(&mut StdRng::seed_from_u64(1), 20_000, &cfg, &Device::Cpu)?;
    // Per-coordinate noise variance 0.05^2 adds 2 * 0.05^2 to the mean squared radius, whose
    // noiseless value for r = sqrt(u), u uniform in [r0^2, 1] is (1 + r0^2) / 2.
    let r0_sq = (cfg.inner_radius * cfg.inner_radius) as f64;
    let mean_sq = x.sqr()?.sum(1)?.mean_all()?.to_scalar::<f32>()? as f64;
    let want = (1.0 + r0_sq) / 2.0 + 2.0 * 0.05f64.powi(2);
    assert!(
        (mean_sq - want).abs() < 0.01,
        "mean squared radius {mean_sq} vs {want}"
    );
    Ok(())
}

#[test]
fn same_seed_same_points_other_seed_other_points() -> R<()> {
    let cfg = SpiralsConfig::default();
    let draw = |seed| spirals(&mut StdRng::seed_from_u64(seed), 64, &cfg, &Device::Cpu);
    let (a, la) = draw(7)?;
    let (b, lb) = draw(7)?;
    let (c, _) = draw(8)?;
    assert_eq!(a.to_vec2::<f32>()?, b.to_vec2::<f32>()?);
    assert_eq!(la.to_vec1::<u32>()?, lb.to_vec1::<u32>()?);
    assert_ne!(a.to_vec2::<f32>()?, c.to_vec2::<f32>()?);
    Ok(())
}

#[test]
fn bad_input_is_a_clear_error() {
    let ok = SpiralsConfig::default();
    let cases = [
        (0, ok, "n ≥ 1"),
        (10, ok.with_classes(1), "classes"),
        (10, ok.with_turns(0.0), "turns"),
        (10, ok.with_turns(f32::NAN), "turns"),
        (10, ok.with_noise(-0.1), "noise"),
        (10, ok.with_noise(f32::INFINITY), "noise"),
        (10, ok.with_inner_radius(1.0), "inner_radius"),
        (10, ok.with_inner_radius(-0.5), "inner_radius"),
        (usize::MAX / 2, ok, "spirals"),
    ];
    for (n, cfg, needle) in cases {
        let err = spirals(&mut StdRng::seed_from_u64(0), n, &cfg, &Device::Cpu)
            .expect_err("bad input must be an error");
        let msg = err.to_string();
        assert!(msg.contains("spirals") && msg.contains(needle), "{msg}");
        assert!(!matches!(err, Error::Candle(_)), "{msg}");
    }
}
