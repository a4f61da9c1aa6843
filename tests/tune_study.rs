//! `tune::{space, random, sobol, study, study_file, asha}`: Sobol points against scipy, ASHA's
//! decisions against Optuna's `SuccessiveHalvingPruner` (`tests/fixtures/gen_tune.py`), the
//! space's maps, failed trials, save → load → continue, and ASHA's savings on a synthetic
//! learning-curve problem.

mod common;

use std::cell::Cell;
use std::rc::Rc;

use candle_core::Tensor;
use candle_tricks::tune::{
    Asha, AshaConfig, Config, Decision, Direction, Observation, Outcome, RandomSampler, Reporter,
    Sampler, SobolSampler, Space, Study, TrialState,
};
use candle_tricks::{Error, Result};
use common::{fixtures, get, R};

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec2()
        .unwrap()
}

#[test]
fn sobol_matches_scipy_unscrambled() -> R<()> {
    let f = fixtures("tune");
    for d in [6, 21, 64] {
        let want = rows(get(&f, &format!("sobol.d{d}")));
        let mut s = SobolSampler::new();
        for (i, w) in want.iter().enumerate() {
            let p = s.suggest(d, &[])?;
            assert_eq!(&p, w, "d = {d}, point {i}");
        }
    }
    Ok(())
}

#[test]
fn shifted_sobol_keeps_its_balance_and_is_seeded() -> R<()> {
    let draw = |seed| -> Result<Vec<Vec<f64>>> {
        let mut s = SobolSampler::with_shift(seed);
        (0..16).map(|_| s.suggest(5, &[])).collect()
    };
    let (a, b, c) = (draw(3)?, draw(3)?, draw(4)?);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(a[0], vec![0.0; 5]); // the shift moves the origin
                                    // A digital shift permutes the elementary intervals: 16 points, one in each 1/16 of every
                                    // coordinate.
    for d in 0..5 {
        let mut cells: Vec<usize> = a.iter().map(|p| (p[d] * 16.0) as usize).collect();
        cells.sort_unstable();
        assert_eq!(cells, (0..16).collect::<Vec<_>>(), "coordinate {d}");
    }
    // The sampler keeps the dimension of its first call.
    let mut s = SobolSampler::new();
    s.suggest(3, &[])?;
    assert!(s.suggest(4, &[]).is_err());
    Ok(())
}

#[test]
fn random_sampler_is_seeded() -> R<()> {
    let draw = |seed| -> Result<Vec<Vec<f64>>> {
        let mut s = RandomSampler::new(seed);
        (0..5).map(|_| s.suggest(3, &[])).collect()
    };
    assert_eq!(draw(1)?, draw(1)?);
    assert_ne!(draw(1)?, draw(2)?);
    Ok(())
}

fn sgd_adam_space() -> Result<Space> {
    Space::builder()
        .log_uniform("lr", 1e-5, 1e-1)
        .categorical("optimizer", &["sgd", "adam", "rmsprop"])
        .uniform("momentum", 0.0, 0.99)
        .only_if("optimizer", &["sgd", "rmsprop"])
        .categorical("nesterov", &["yes", "no"])
        .only_if("optimizer", &["sgd"])
        .int("warmup", 0, 10, false)
        .only_if("nesterov", &["yes"])
        .int("width", 16, 512, true)
        .build()
}

#[test]
fn space_maps_points_both_ways_with_conditions() -> R<()> {
    let space = sgd_adam_space()?;
    let mut s = RandomSampler::new(0);
    let (mut below, n) = (0, 4000);
    let mut widths = [0usize; 2];
    for _ in 0..n {
        let p = s.suggest(space.len(), &[])?;
        let cfg = space.config(&p)?;
        // The centre of the cell decodes to the same config.
        assert_eq!(space.config(&space.point(&cfg)?)?, cfg);
        let opt = cfg.str("optimizer")?;
        assert_eq!(cfg.get("momentum").is_some(), opt != "adam");
        assert_eq!(cfg.get("nesterov").is_some(), opt == "sgd");
        // Nested: warmup needs nesterov, which needs sgd.
        let nesterov = cfg.get("nesterov").is_some() && cfg.str("nesterov")? == "yes";
        assert_eq!(cfg.get("warmup").is_some(), nesterov);
        let lr = cfg.f64("lr")?;
        assert!((1e-5..=1e-1).contains(&lr));
        below += usize::from(lr < 1e-3);
        let w = cfg.i64("width")?;
        assert!((16..=512).contains(&w));
        widths[usize::from(w >= 91)] += 1; // 90.5 = sqrt(15.5 * 528.5) splits the log range
    }
    // Log scale: half the draws below the middle decade, half the widths below ~90.
    assert!((below as f64 / n as f64 - 0.5).abs() < 0.03, "{below}");
    assert!(
        (widths[0] as f64 / n as f64 - 0.5).abs() < 0.03,
        "{widths:?}"
    );
    // The ends of the unit interval reach the bounds.
    let lo = space.config(&[0.0; 6])?;
    let hi = space.config(&[1.0; 6])?;
    assert_eq!(
        lo.to_string(),
        "lr=1e-5, optimizer=sgd, momentum=0, nesterov=yes, warmup=0, width=16"
    );
    assert_eq!(
        hi.to_string(),
        "lr=0.1, optimizer=rmsprop, momentum=0.99, width=512"
    );
    // Typed getters refuse the wrong type and absent parameters.
    assert!(hi.i64("lr").is_err());
    assert!(hi.str("width").is_err());
    assert!(hi.f64("nesterov").is_err());
    assert!(hi.f64("warmup").is_err());
    assert!(space.config(&[0.5; 5]).is_err());
    assert!(space.config(&[0.5, 0.5, 0.5, 0.5, 0.5, 1.5]).is_err());
    Ok(())
}

/// A sampler that records how much history it was shown.
struct Spy {
    inner: RandomSampler,
    seen: Rc<Cell<usize>>,
}

impl Sampler for Spy {
    fn suggest(&mut self, dims: usize, history: &[Observation]) -> Result<Vec<f64>> {
        assert!(history.iter().all(|o| o.value.is_finite()));
        self.seen.set(history.len());
        self.inner.suggest(dims, history)
    }
}

#[test]
fn failed_trials_are_recorded_and_never_reach_the_sampler() -> R<()> {
    let space = Space::builder().uniform("x", 0.0, 1.0).build()?;
    let seen = Rc::new(Cell::new(0));
    let spy = Spy {
        inner: RandomSampler::new(5),
        seen: seen.clone(),
    };
    let mut study = Study::new(space, Direction::Maximize, Box::new(spy));
    let mut i = 0;
    study.optimize(6, |cfg| {
        i += 1;
        match i {
            2 => Ok(f64::NAN),
            3 => Ok(f64::NEG_INFINITY),
            4 => Err(Error::config("objective", "out of memory")),
            _ => Ok(cfg.f64("x")?),
        }
    })?;
    let t = study.trials();
    assert_eq!(t.len(), 6);
    let states: Vec<TrialState> = t.iter().map(|t| t.state()).collect();
    use TrialState::{Complete as C, Failed as F};
    assert_eq!(states, [C, F, F, F, C, C]);
    match &t[3].outcome {
        Outcome::Failed { message } => assert!(message.contains("out of memory"), "{message}"),
        o => panic!("{o:?}"),
    }
    match &t[1].outcome {
        Outcome::Failed { message } => assert!(message.contains("NaN"), "{message}"),
        o => panic!("{o:?}"),
    }
    assert_eq!(seen.get(), 2); // the sixth trial saw the two completed ones
                               // Maximising: the best is the largest x; the curve never goes down.
    let xs: Vec<f64> = [0, 4, 5].iter().map(|&k| t[k].value().unwrap()).collect();
    let top = xs.iter().cloned().fold(f64::MIN, f64::max);
    let best = study.best().unwrap();
    assert_eq!(best.value(), Some(top));
    assert_eq!(
        best.number,
        [0, 4, 5][xs.iter().position(|&x| x == top).unwrap()]
    );
    let curve = study.best_so_far();
    assert_eq!(curve[0], Some(xs[0]));
    assert_eq!(curve[3], Some(xs[0]));
    assert_eq!(curve[5], Some(top));
    assert!(study.optimize(0, |_| Ok(0.0)).is_err());
    Ok(())
}

/// A sampler breaking the contract is an error, not a trial.
struct OutOfRange;

impl Sampler for OutOfRange {
    fn suggest(&mut self, dims: usize, _: &[Observation]) -> Result<Vec<f64>> {
        Ok(vec![1.5; dims])
    }
}

#[test]
fn a_broken_sampler_stops_the_study() -> R<()> {
    let space = Space::builder().uniform("x", 0.0, 1.0).build()?;
    let mut study = Study::new(space, Direction::Minimize, Box::new(OutOfRange));
    let e = study.optimize(1, |_| Ok(0.0)).unwrap_err();
    assert!(e.to_string().contains("Study"), "{e}");
    assert!(study.trials().is_empty());
    Ok(())
}

/// A curve problem: `loss(t) = q + speed / (t + 1)` with `q` a quadratic in the config and
/// `speed` in [0.2, 1.2] decided by a second parameter, so early ranks only roughly predict the
/// final ones.
fn curve_loss(cfg: &Config, t: u64) -> Result<f64> {
    let q = (cfg.f64("lr")?.log10() + 2.5).powi(2) / 4.0 + (cfg.f64("x")? - 0.3).powi(2);
    let speed = 0.2 + cfg.f64("speed")?;
    Ok(q + speed / (t as f64 + 1.0))
}

fn curve_space() -> Result<Space> {
    Space::builder()
        .log_uniform("lr", 1e-5, 1.0)
        .uniform("x", -1.0, 1.0)
        .uniform("speed", 0.0, 1.0)
        .build()
}

/// Runs the curve problem with ASHA, pruning after `n1` trials for a save/load check.
fn curve_objective(spent: &mut u64) -> impl FnMut(&Config, &mut Reporter<'_>) -> Result<f64> + '_ {
    move |cfg, r| {
        let mut loss = 0.0;
        for t in 1..=27 {
            *spent += 1;
            loss = curve_loss(cfg, t)?;
            if r.report(t, loss) == Decision::Prune {
                break;
            }
        }
        Ok(loss)
    }
}

#[test]
fn asha_finds_a_top_config_with_a_fraction_of_the_budget() -> R<()> {
    let (n, steps) = (81usize, 27u64);
    let asha = Asha::new(AshaConfig::default().with_reduction_factor(3))?;
    let mut study = Study::new(
        curve_space()?,
        Direction::Minimize,
        Box::new(RandomSampler::new(11)),
    )
    .with_pruner(asha);
    let mut spent = 0;
    study.optimize_pruned(n, curve_objective(&mut spent))?;
    // Every trial run to the end, for comparison: the same configs (same seed).
    let finals: Vec<f64> = study
        .trials()
        .iter()
        .map(|t| curve_loss(&t.config, steps))
        .collect::<Result<_>>()?;
    let mut sorted = finals.clone();
    sorted.sort_by(f64::total_cmp);
    let best = study.best().unwrap();
    let full = n as u64 * steps;
    println!(
        "ASHA: {spent} of {full} steps ({:.1} %), best final {:.4} (rank {} of {n}), optimum {:.4}",
        100.0 * spent as f64 / full as f64,
        best.value().unwrap(),
        sorted
            .iter()
            .position(|&v| v == finals[best.number])
            .unwrap()
            + 1,
        sorted[0]
    );
    assert!(spent * 4 <= full, "ASHA spent {spent} of {full}");
    assert!(
        best.value().unwrap() <= sorted[2],
        "not in the top 3 of {n}"
    );
    let pruned = study
        .trials()
        .iter()
        .filter(|t| t.state() == TrialState::Pruned)
        .count();
    assert!(pruned > n / 2);
    Ok(())
}

#[test]
fn asha_decisions_match_optuna() -> R<()> {
    let f = fixtures("tune");
    for name in ["eta3", "eta2_rate1_max", "eta4"] {
        let curves = rows(get(&f, &format!("asha.{name}.curves")));
        let params: Vec<i64> = get(&f, &format!("asha.{name}.params")).to_vec1()?;
        let want: Vec<i64> = get(&f, &format!("asha.{name}.pruned_at")).to_vec1()?;
        let asha = Asha::new(
            AshaConfig::default()
                .with_min_resource(params[0] as u64)
                .with_reduction_factor(params[1] as u64)
                .with_min_early_stopping_rate(params[2] as u32),
        )?;
        let direction = if params[3] == 1 {
            Direction::Maximize
        } else {
            Direction::Minimize
        };
        let space = Space::builder().uniform("unused", 0.0, 1.0).build()?;
        let mut study =
            Study::new(space, direction, Box::new(RandomSampler::new(0))).with_pruner(asha);
        let mut trial = 0;
        study.optimize_pruned(curves.len(), |_, r| {
            let row = &curves[trial];
            trial += 1;
            for (step, &v) in row.iter().enumerate() {
                if r.report(step as u64, v) == Decision::Prune {
                    break;
                }
            }
            Ok(*row.last().unwrap())
        })?;
        let got: Vec<i64> = study
            .trials()
            .iter()
            .map(|t| match t.outcome {
                Outcome::Pruned { step, value } => {
                    assert_eq!(value, curves[t.number][step as usize]);
                    step as i64
                }
                _ => -1,
            })
            .collect();
        assert_eq!(got, want, "{name}");
    }
    Ok(())
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("candle_tricks_{}_{name}", std::process::id()))
}

/// A quadratic that fails on a band of `x`, to put failed trials in the file.
fn quadratic(cfg: &Config) -> Result<f64> {
    let x = cfg.f64("x")?;
    if (0.40..0.45).contains(&x) {
        return Err(Error::config("objective", "diverged\tat\nx"));
    }
    if cfg.str("kind")? == "b" {
        return Ok(f64::NAN);
    }
    Ok((x - 0.3).powi(2) + cfg.i64("n")? as f64 / 10.0)
}

fn quadratic_space() -> Result<Space> {
    Space::builder()
        .uniform("x", 0.0, 1.0)
        .categorical("kind", &["a", "b", "a c\\d"])
        .int("n", 1, 64, true)
        .only_if("kind", &["a"])
        .build()
}

#[test]
fn save_load_continue_equals_an_uninterrupted_run() -> R<()> {
    type Make = fn() -> Box<dyn Sampler>;
    let makers: [(&str, Make); 3] = [
        ("random", || Box::new(RandomSampler::new(9))),
        ("sobol", || Box::new(SobolSampler::new())),
        ("sobol-shift", || Box::new(SobolSampler::with_shift(2))),
    ];
    for (name, make) in makers {
        let mut whole = Study::new(quadratic_space()?, Direction::Minimize, make());
        whole.optimize(40, quadratic)?;
        let mut first = Study::new(quadratic_space()?, Direction::Minimize, make());
        first.optimize(17, quadratic)?;
        let path = temp(name);
        first.save(&path)?;
        let mut resumed = Study::load(&path, quadratic_space()?, make())?;
        std::fs::remove_file(&path)?;
        assert_eq!(resumed.trials(), first.trials(), "{name}: loaded");
        resumed.optimize(23, quadratic)?;
        assert_eq!(resumed.trials(), whole.trials(), "{name}: continued");
        let states: Vec<TrialState> = whole.trials().iter().map(|t| t.state()).collect();
        assert!(states.contains(&TrialState::Failed), "{name}");
    }
    // With ASHA, maximising: pruned trials, curves and rung values survive the file.
    let asha = Asha::new(AshaConfig::default().with_reduction_factor(3))?;
    let make = || -> Result<Study> {
        Ok(Study::new(
            curve_space()?,
            Direction::Maximize,
            Box::new(RandomSampler::new(4)),
        )
        .with_pruner(asha))
    };
    let score = |cfg: &Config, r: &mut Reporter<'_>| -> Result<f64> {
        let mut score = 0.0;
        for t in 1..=27 {
            score = -curve_loss(cfg, t)?;
            if r.report(t, score) == Decision::Prune {
                break;
            }
        }
        Ok(score)
    };
    let mut whole = make()?;
    whole.optimize_pruned(30, score)?;
    let mut first = make()?;
    first.optimize_pruned(12, score)?;
    let path = temp("asha");
    first.save(&path)?;
    let mut resumed =
        Study::load(&path, curve_space()?, Box::new(RandomSampler::new(4)))?.with_pruner(asha);
    std::fs::remove_file(&path)?;
    assert_eq!(resumed.direction(), Direction::Maximize);
    resumed.optimize_pruned(18, score)?;
    assert_eq!(resumed.trials(), whole.trials(), "asha");
    assert!(whole
        .trials()
        .iter()
        .any(|t| t.state() == TrialState::Pruned));
    Ok(())
}

#[test]
fn loading_a_mismatched_or_corrupt_file_is_an_error() -> R<()> {
    let mut study = Study::new(
        quadratic_space()?,
        Direction::Minimize,
        Box::new(RandomSampler::new(1)),
    );
    study.optimize(5, quadratic)?;
    let text = study.to_text();
    let load = |text: &str, space: Space| {
        Study::from_text(text, space, Box::new(RandomSampler::new(1))).map(|_| ())
    };
    load(&text, quadratic_space()?)?;
    let other = Space::builder()
        .uniform("x", 0.0, 2.0)
        .categorical("kind", &["a", "b", "a c\\d"])
        .int("n", 1, 64, true)
        .only_if("kind", &["a"])
        .build()?;
    let renamed = Space::builder().uniform("y", 0.0, 1.0).build()?;
    let lines: Vec<&str> = text.lines().collect();
    let without = |i: usize| {
        let mut l = lines.clone();
        l.remove(i);
        l.join("\n")
    };
    let replace = |from: &str, to: &str| text.replacen(from, to, 1);
    let cases: Vec<(&str, String, Space)> = vec![
        ("other bounds", text.clone(), other),
        ("other names", text.clone(), renamed),
        ("empty", String::new(), quadratic_space()?),
        ("bad magic", replace("v1", "v9"), quadratic_space()?),
        (
            "truncated",
            text[..text.len() / 2].to_string(),
            quadratic_space()?,
        ),
        ("no end", without(lines.len() - 1), quadratic_space()?),
        (
            "a trial missing",
            without(lines.len() - 2),
            quadratic_space()?,
        ),
        (
            "bad state",
            replace("\tcomplete\t", "\tdone\t"),
            quadratic_space()?,
        ),
        (
            "bad direction",
            replace("minimize", "sideways"),
            quadratic_space()?,
        ),
        (
            "bad escape",
            replace("trial\t0\t", "trial\t0\\q\t"),
            quadratic_space()?,
        ),
        ("garbage", format!("{text}junk\n"), quadratic_space()?),
    ];
    for (name, text, space) in cases {
        let e = load(&text, space).unwrap_err();
        assert!(
            matches!(e, Error::InvalidConfig { block: "Study", .. }),
            "{name}: {e}"
        );
        println!("{name}: {e}");
    }
    let e = Study::load(
        temp("missing"),
        quadratic_space()?,
        Box::new(SobolSampler::new()),
    )
    .unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
    Ok(())
}
