//! `tune::bayes_opt`: expected improvement and the confidence bound against scipy at fixed
//! Gaussian-process posteriors (`tests/fixtures/gen_bayes_opt.py`), the must-hold regret
//! comparison with random search on Branin and Hartmann-6, reproducibility and degenerate
//! histories.

mod common;

use candle_tricks::tune::bayes_opt::{
    acquisition_with_gradient, bayesian_optimization, expected_improvement, lower_confidence_bound,
    Acquisition, BayesianOptimization, BayesianOptimizationConfig, SuggestionKind,
};
use candle_tricks::tune::gp::{gaussian_process, GaussianProcessConfig};
use candle_tricks::tune::{Observation, Sampler};
use common::{fixtures, get, R};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BUDGET: usize = 30;
const SEEDS: u64 = 20;

/// Branin on its usual box `[-5, 10] x [0, 15]`, from unit coordinates; minimum 0.397887.
fn branin(u: &[f64]) -> f64 {
    let (x1, x2) = (-5.0 + 15.0 * u[0], 15.0 * u[1]);
    let pi = std::f64::consts::PI;
    let (b, c, t) = (5.1 / (4.0 * pi * pi), 5.0 / pi, 1.0 / (8.0 * pi));
    (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
}
const BRANIN_MIN: f64 = 0.397_887_357_729_738;

/// Hartmann-6 on `[0, 1]^6`; minimum -3.322368.
fn hartmann6(x: &[f64]) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    -(0..4)
        .map(|i| {
            let e: f64 = (0..6).map(|j| A[i][j] * (x[j] - P[i][j]).powi(2)).sum();
            ALPHA[i] * (-e).exp()
        })
        .sum::<f64>()
}
const HARTMANN6_MIN: f64 = -3.322_368_011_415_515;

/// The best value after `BUDGET` suggestions of `sampler` on `f`.
fn run(sampler: &mut dyn Sampler, dims: usize, f: fn(&[f64]) -> f64) -> f64 {
    let mut history: Vec<Observation> = Vec::new();
    for _ in 0..BUDGET {
        let point = sampler.suggest(dims, &history).unwrap();
        assert_eq!(point.len(), dims);
        assert!(point.iter().all(|v| (0.0..=1.0).contains(v)), "{point:?}");
        let value = f(&point);
        history.push(Observation { point, value });
    }
    history
        .iter()
        .map(|o| o.value)
        .fold(f64::INFINITY, f64::min)
}

/// Uniform random search, the baseline.
struct RandomSearch(StdRng);

impl Sampler for RandomSearch {
    fn suggest(&mut self, dims: usize, _: &[Observation]) -> candle_tricks::Result<Vec<f64>> {
        Ok((0..dims).map(|_| self.0.random::<f64>()).collect())
    }
}

fn bo(seed: u64) -> BayesianOptimization {
    bayesian_optimization(BayesianOptimizationConfig::default().with_seed(seed)).unwrap()
}

/// (lower quartile, median, upper quartile).
fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let pos = p * (v.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    };
    (q(0.25), q(0.5), q(0.75))
}

/// Simple regret of BO and random search over `SEEDS` seeds; asserts the median ratio.
fn must_hold(name: &str, dims: usize, f: fn(&[f64]) -> f64, minimum: f64, min_ratio: f64) {
    let start = std::time::Instant::now();
    let regrets = |make: &dyn Fn(u64) -> Box<dyn Sampler>| -> Vec<f64> {
        (0..SEEDS)
            .map(|s| run(make(s).as_mut(), dims, f) - minimum)
            .collect()
    };
    let bo_regret = regrets(&|s| Box::new(bo(s)));
    let rs_regret = regrets(&|s| Box::new(RandomSearch(StdRng::seed_from_u64(1000 + s))));
    let (b, r) = (quartiles(bo_regret), quartiles(rs_regret));
    let ratio = r.1 / b.1;
    println!(
        "{name} (d = {dims}, {BUDGET} evaluations, {SEEDS} seeds), simple regret:\n\
         | strategy | q25 | median | q75 |\n|---|---|---|---|\n\
         | random | {:.3e} | {:.3e} | {:.3e} |\n| BO | {:.3e} | {:.3e} | {:.3e} |\n\
         median ratio random / BO = {ratio:.1} ({:.1} s)",
        r.0,
        r.1,
        r.2,
        b.0,
        b.1,
        b.2,
        start.elapsed().as_secs_f64()
    );
    assert!(
        ratio >= min_ratio,
        "{name}: median regret ratio {ratio:.2} < {min_ratio}"
    );
}

#[test]
fn beats_random_search_tenfold_on_branin() {
    must_hold("Branin", 2, branin, BRANIN_MIN, 10.0);
}

/// Hartmann-6 in 30 evaluations is hard: its second-best basin is only 0.12 above the global
/// one, and a run must both find a good basin and converge inside it. A maximum-likelihood
/// surrogate with expected improvement reached 3.8x; the defaults (priors on the surrogate's
/// hyper-parameters, the confidence bound, d initial points; see the table in the module docs
/// of `tune::bayes_opt`) reach the 10x on these seeds and on nine other sets of 20.
#[test]
fn beats_random_search_tenfold_on_hartmann6() {
    must_hold("Hartmann-6", 6, hartmann6, HARTMANN6_MIN, 10.0);
}

fn vec(t: &candle_core::Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

fn close(ours: f64, theirs: f64, tol: f64, what: &str) {
    assert!(
        (ours - theirs).abs() <= tol * theirs.abs().max(1e-12) + 1e-15,
        "{what}: ours {ours} vs scipy {theirs}"
    );
}

#[test]
fn acquisitions_match_scipy_on_a_grid() {
    let f = fixtures("bayes_opt");
    let (mean, std) = (vec(get(&f, "grid.mean")), vec(get(&f, "grid.std")));
    for xi in ["0.0", "0.01", "0.5"] {
        let want = vec(get(&f, &format!("grid.ei.xi{xi}")));
        for i in 0..mean.len() {
            let ours = expected_improvement(mean[i], std[i], 0.3, xi.parse().unwrap());
            close(ours, want[i], 1e-9, &format!("EI xi {xi} at {i}"));
        }
    }
    for beta in ["0.0", "1.0", "4.0"] {
        let want = vec(get(&f, &format!("grid.lcb.beta{beta}")));
        for i in 0..mean.len() {
            let ours = lower_confidence_bound(mean[i], std[i], beta.parse().unwrap());
            close(ours, want[i], 1e-12, &format!("LCB beta {beta} at {i}"));
        }
    }
}

#[test]
fn acquisitions_match_scipy_at_a_fixed_posterior() -> R<()> {
    let f = fixtures("bayes_opt");
    let theta = vec(get(&f, "gp.theta"));
    let cfg = GaussianProcessConfig::default()
        .with_constant_value(theta[0])
        .with_length_scale(theta[1..].to_vec())
        .with_alpha(1e-6)
        .with_normalize_y(true)
        .with_optimize(false);
    let mut gp = gaussian_process(cfg)?;
    gp.fit(get(&f, "gp.x"), get(&f, "gp.y"))?;
    let (mean, std) = gp.predict_std(get(&f, "gp.x_query"))?;
    let (mean, std) = (vec(&mean), vec(&std));
    let best = vec(get(&f, "gp.y"))
        .into_iter()
        .fold(f64::INFINITY, f64::min);
    let (want_ei, want_lcb) = (vec(get(&f, "gp.ei")), vec(get(&f, "gp.lcb")));
    let ei = Acquisition::ExpectedImprovement { xi: 0.01 };
    let lcb = Acquisition::LowerConfidenceBound { beta: 2.0 };
    for i in 0..mean.len() {
        close(ei.score(mean[i], std[i], best), want_ei[i], 1e-6, "EI");
        close(-lcb.score(mean[i], std[i], best), want_lcb[i], 1e-6, "LCB");
    }
    Ok(())
}

#[test]
fn same_seed_same_points_and_first_points_fill_the_cube() {
    let points = |seed| {
        let mut s = bo(seed);
        let mut history = Vec::new();
        for _ in 0..8 {
            let point = s.suggest(2, &history).unwrap();
            let value = branin(&point);
            history.push(Observation { point, value });
        }
        history
    };
    let (a, b) = (points(3), points(3));
    assert_eq!(a, b);
    assert_ne!(a, points(4));
    // The d = 2 initial points are the start of a shifted Sobol sequence: one per half of
    // every axis.
    for k in 0..2 {
        let mut strata: Vec<usize> = a[..2].iter().map(|o| (o.point[k] * 2.0) as usize).collect();
        strata.sort();
        assert_eq!(strata, vec![0, 1]);
    }
}

#[test]
fn degenerate_histories_fall_back_to_random_points() {
    let mut s = bo(0);
    // All values equal: no model to fit.
    let flat: Vec<Observation> = (0..6)
        .map(|i| Observation {
            point: vec![i as f64 / 6.0, 0.5],
            value: 1.0,
        })
        .collect();
    let p = s.suggest(2, &flat).unwrap();
    assert_eq!(s.last_suggestion(), Some(SuggestionKind::RandomFallback));
    assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
    // Every point the same, values different: the jittered fit copes or the fallback does.
    let dup: Vec<Observation> = (0..6)
        .map(|i| Observation {
            point: vec![0.25, 0.75],
            value: i as f64,
        })
        .collect();
    let p = s.suggest(2, &dup).unwrap();
    assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_ne!(s.last_suggestion(), Some(SuggestionKind::Initial));
}

#[test]
fn confidence_bound_also_finds_the_branin_minimum() {
    let cfg = BayesianOptimizationConfig::default()
        .with_acquisition(Acquisition::LowerConfidenceBound { beta: 4.0 });
    let regret = run(&mut bayesian_optimization(cfg).unwrap(), 2, branin) - BRANIN_MIN;
    assert!(regret < 0.1, "LCB regret {regret}");
}

/// The analytic gradients of log-EI and of the bound against central differences, in the
/// tail where EI itself underflows too.
#[test]
fn acquisition_gradients_match_finite_differences() -> R<()> {
    let mut rng = StdRng::seed_from_u64(7);
    let x: Vec<f64> = (0..12 * 3).map(|_| rng.random::<f64>()).collect();
    let y: Vec<f64> = x.chunks(3).map(hartmann_like).collect();
    let cfg = GaussianProcessConfig::default()
        .with_constant_value(1.3)
        .with_length_scale(vec![0.3, 0.5, 0.8])
        .with_alpha(1e-6)
        .with_normalize_y(true)
        .with_optimize(false);
    let mut gp = gaussian_process(cfg)?;
    let dev = candle_core::Device::Cpu;
    gp.fit(
        &candle_core::Tensor::from_vec(x, (12, 3), &dev)?,
        &candle_core::Tensor::from_vec(y.clone(), 12, &dev)?,
    )?;
    let best = y.iter().copied().fold(f64::INFINITY, f64::min);
    let acqs = [
        Acquisition::ExpectedImprovement { xi: 0.01 },
        // A margin far beyond the data: EI underflows, its logarithm does not.
        Acquisition::ExpectedImprovement { xi: 40.0 },
        Acquisition::LowerConfidenceBound { beta: 2.0 },
    ];
    for acq in acqs {
        for _ in 0..20 {
            let p: Vec<f64> = (0..3).map(|_| 0.05 + 0.9 * rng.random::<f64>()).collect();
            let (v, g) = acquisition_with_gradient(acq, &gp, &p, best)?.unwrap();
            assert!(v.is_finite(), "{acq:?}: {v}");
            for k in 0..3 {
                let h = 1e-6;
                let (mut a, mut b) = (p.clone(), p.clone());
                a[k] += h;
                b[k] -= h;
                let fa = acquisition_with_gradient(acq, &gp, &a, best)?.unwrap().0;
                let fb = acquisition_with_gradient(acq, &gp, &b, best)?.unwrap().0;
                let fd = (fa - fb) / (2.0 * h);
                assert!(
                    (g[k] - fd).abs() <= 1e-5 * fd.abs().max(1.0),
                    "{acq:?} at {p:?}, axis {k}: analytic {} vs fd {fd}",
                    g[k]
                );
            }
        }
    }
    Ok(())
}

/// A smooth bumpy function of three inputs for the gradient check.
fn hartmann_like(p: &[f64]) -> f64 {
    -(-(10.0 * (p[0] - 0.3).powi(2) + 5.0 * (p[1] - 0.6).powi(2))).exp() + (4.0 * p[2]).sin()
}
