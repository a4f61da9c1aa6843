//! Bad input for `tune::bayes_opt`.

use super::*;
use candle_tricks::tune::bayes_opt::{
    bayesian_optimization, Acquisition, BayesianOptimizationConfig, OutputWarp,
};
use candle_tricks::tune::gp::HyperPrior;
use candle_tricks::tune::{Observation, Sampler};

fn obs(point: Vec<f64>, value: f64) -> Observation {
    Observation { point, value }
}

pub(super) fn bayes_opt_cases() -> Vec<Case> {
    let mut c = Cases::new("bayes_opt");
    let block = "BayesianOptimization";
    let base = BayesianOptimizationConfig::default;
    for (name, cfg) in [
        ("bayes_opt: n_initial 0", base().with_n_initial(0)),
        (
            "bayes_opt: xi -0.1",
            base().with_acquisition(Acquisition::ExpectedImprovement { xi: -0.1 }),
        ),
        (
            "bayes_opt: xi NaN",
            base().with_acquisition(Acquisition::ExpectedImprovement { xi: f64::NAN }),
        ),
        (
            "bayes_opt: beta -1",
            base().with_acquisition(Acquisition::LowerConfidenceBound { beta: -1.0 }),
        ),
        (
            "bayes_opt: beta inf",
            base().with_acquisition(Acquisition::LowerConfidenceBound {
                beta: f64::INFINITY,
            }),
        ),
        ("bayes_opt: 0 candidates", base().with_candidates(0, 5)),
        ("bayes_opt: refit_every 0", base().with_gp_restarts(2, 0)),
        ("bayes_opt: alpha -1", base().with_alpha(-1.0)),
        (
            "bayes_opt: length-scale prior scale 0",
            base().with_priors(
                Some(HyperPrior::LogNormal {
                    loc: 0.0,
                    scale: 0.0,
                }),
                None,
            ),
        ),
        (
            "bayes_opt: signal prior rate NaN",
            base().with_priors(
                None,
                Some(HyperPrior::Gamma {
                    concentration: 2.0,
                    rate: f64::NAN,
                }),
            ),
        ),
        (
            "bayes_opt: length scale bounds (0, 1)",
            base().with_length_scale_bounds(0.0, 1.0),
        ),
        (
            "bayes_opt: length scale bounds (2, 1)",
            base().with_length_scale_bounds(2.0, 1.0),
        ),
        (
            "bayes_opt: length scale bound NaN",
            base().with_length_scale_bounds(0.1, f64::NAN),
        ),
        (
            "bayes_opt: log warp offset 0",
            base().with_output_warp(OutputWarp::Log { offset: 0.0 }),
        ),
        (
            "bayes_opt: log warp offset NaN",
            base().with_output_warp(OutputWarp::Log { offset: f64::NAN }),
        ),
    ] {
        c.err(name, block, move || {
            bayesian_optimization(cfg)?;
            Ok(())
        });
    }
    let suggest_err = |c: &mut Cases, name: &str, dims: usize, history: Vec<Observation>| {
        c.err(name, block, move || {
            bayesian_optimization(base())?.suggest(dims, &history)?;
            Ok(())
        });
    };
    suggest_err(&mut c, "bayes_opt: dims 0", 0, vec![]);
    suggest_err(&mut c, "bayes_opt: dims 2^40", 1 << 40, vec![]);
    suggest_err(
        &mut c,
        "bayes_opt: NaN value",
        2,
        vec![obs(vec![0.1, 0.2], 1.0), obs(vec![0.3, 0.4], f64::NAN)],
    );
    suggest_err(
        &mut c,
        "bayes_opt: infinite value",
        1,
        vec![obs(vec![0.5], f64::NEG_INFINITY)],
    );
    suggest_err(
        &mut c,
        "bayes_opt: point of 3 coordinates for 2 dims",
        2,
        vec![obs(vec![0.1, 0.2, 0.3], 1.0)],
    );
    suggest_err(
        &mut c,
        "bayes_opt: point outside the unit cube",
        2,
        vec![obs(vec![0.1, 1.5], 1.0)],
    );
    c.val(
        "bayes_opt: one observation per step stays in the cube",
        move || {
            let mut s = bayesian_optimization(base().with_n_initial(1))?;
            let mut history = Vec::new();
            for i in 0..4 {
                let point = s.suggest(3, &history)?;
                if point.len() != 3 || point.iter().any(|v| !(0.0..=1.0).contains(v)) {
                    return Err(Got::Wrong(format!("suggested {point:?}")));
                }
                history.push(obs(point, i as f64 * 0.5 - 1.0));
            }
            Ok(())
        },
    );
    c.list
}
