//! Bad input for search spaces, samplers, studies, their files and ASHA (issue 16): empty
//! spaces, duplicate names, reversed / non-finite / non-positive-for-log bounds, empty
//! categoricals, conditions on unknown parents or values, `n_trials` 0, broken pruner configs,
//! Sobol dimensions out of range, corrupt study files, and objectives that fail.

use super::*;
use candle_tricks::tune::{
    Asha, AshaConfig, Direction, RandomSampler, Sampler, Sobol, SobolSampler, Space, SpaceBuilder,
    Study, TrialState, SOBOL_MAX_DIMS,
};

const SPACE: &str = "Space";

fn space_err(c: &mut Cases, name: &str, b: impl FnOnce() -> SpaceBuilder + 'static) {
    c.err(name, SPACE, move || {
        b().build()?;
        Ok(())
    });
}

/// A fresh builder (short: the cases chain on it).
fn b() -> SpaceBuilder {
    Space::builder()
}

fn one_dim() -> Space {
    Space::builder().uniform("x", 0.0, 1.0).build().unwrap()
}

pub(super) fn tune_cases() -> Vec<Case> {
    let mut c = Cases::new("tune");
    space_err(&mut c, "space: empty", b);
    space_err(&mut c, "space: duplicate name", || {
        b().uniform("x", 0.0, 1.0).int("x", 0, 3, false)
    });
    space_err(&mut c, "space: empty name", || b().uniform("", 0.0, 1.0));
    space_err(&mut c, "space: uniform reversed", || {
        b().uniform("x", 1.0, 0.0)
    });
    space_err(&mut c, "space: uniform low == high", || {
        b().uniform("x", 1.0, 1.0)
    });
    space_err(&mut c, "space: uniform NaN", || {
        b().uniform("x", f64::NAN, 1.0)
    });
    space_err(&mut c, "space: uniform Inf", || {
        b().uniform("x", 0.0, f64::INFINITY)
    });
    space_err(&mut c, "space: log low 0", || {
        b().log_uniform("lr", 0.0, 1.0)
    });
    space_err(&mut c, "space: log low negative", || {
        b().log_uniform("lr", -1e-3, 1.0)
    });
    space_err(&mut c, "space: log reversed", || {
        b().log_uniform("lr", 1.0, 1e-3)
    });
    space_err(&mut c, "space: log NaN", || {
        b().log_uniform("lr", 1e-3, f64::NAN)
    });
    space_err(&mut c, "space: int reversed", || b().int("n", 5, 1, false));
    space_err(&mut c, "space: log int low 0", || b().int("n", 0, 8, true));
    space_err(&mut c, "space: int range overflows", || {
        b().int("n", i64::MIN, i64::MAX, false)
    });
    space_err(&mut c, "space: empty categorical", || {
        b().categorical("opt", &[])
    });
    space_err(&mut c, "space: duplicate choice", || {
        b().categorical("opt", &["sgd", "sgd"])
    });
    space_err(&mut c, "space: condition before any dimension", || {
        b().only_if("opt", &["sgd"]).uniform("m", 0.0, 1.0)
    });
    space_err(&mut c, "space: condition on unknown parent", || {
        b().uniform("m", 0.0, 1.0).only_if("opt", &["sgd"])
    });
    space_err(&mut c, "space: condition on a later parent", || {
        b().uniform("m", 0.0, 1.0)
            .only_if("opt", &["sgd"])
            .categorical("opt", &["sgd", "adam"])
    });
    space_err(&mut c, "space: condition on unknown value", || {
        b().categorical("opt", &["sgd", "adam"])
            .uniform("m", 0.0, 1.0)
            .only_if("opt", &["sgdd"])
    });
    space_err(&mut c, "space: condition with no value", || {
        b().categorical("opt", &["sgd", "adam"])
            .uniform("m", 0.0, 1.0)
            .only_if("opt", &[])
    });
    space_err(&mut c, "space: condition on a numeric parent", || {
        b().uniform("x", 0.0, 1.0)
            .uniform("m", 0.0, 1.0)
            .only_if("x", &["1"])
    });
    c.err("space: point of the wrong length", SPACE, || {
        one_dim().config(&[0.5, 0.5])?;
        Ok(())
    });
    c.err("space: point out of [0, 1]", SPACE, || {
        one_dim().config(&[-0.1])?;
        Ok(())
    });
    c.err("space: NaN point", SPACE, || {
        one_dim().config(&[f64::NAN])?;
        Ok(())
    });
    c.err("config: unknown parameter", "Config", || {
        one_dim().config(&[0.5])?.f64("y")?;
        Ok(())
    });
    c.err("config: wrong type", "Config", || {
        one_dim().config(&[0.5])?.str("x")?;
        Ok(())
    });
    c.err("study: n_trials 0", "Study", || {
        Study::new(
            one_dim(),
            Direction::Minimize,
            Box::new(RandomSampler::new(0)),
        )
        .optimize(0, |_| Ok(0.0))?;
        Ok(())
    });
    c.val(
        "study: NaN, Inf and Err objectives are failed trials",
        || {
            let mut study = Study::new(
                one_dim(),
                Direction::Minimize,
                Box::new(SobolSampler::new()),
            );
            let mut i = 0;
            study.optimize(3, |_| {
                i += 1;
                match i {
                    1 => Ok(f64::NAN),
                    2 => Ok(f64::INFINITY),
                    _ => Err(Error::config("objective", "boom")),
                }
            })?;
            if study
                .trials()
                .iter()
                .any(|t| t.state() != TrialState::Failed)
                || study.best().is_some()
            {
                return Err(Got::Wrong(format!("{:?}", study.trials())));
            }
            Ok(())
        },
    );
    c.val("study: a NaN report fails the trial", || {
        let asha = Asha::new(AshaConfig::default())?;
        let mut study = Study::new(
            one_dim(),
            Direction::Minimize,
            Box::new(SobolSampler::new()),
        )
        .with_pruner(asha);
        study.optimize_pruned(2, |_, r| {
            r.report(1, f64::NAN);
            Ok(1.0)
        })?;
        if study
            .trials()
            .iter()
            .any(|t| t.state() != TrialState::Failed)
        {
            return Err(Got::Wrong(format!("{:?}", study.trials())));
        }
        Ok(())
    });
    c.err("study: load a corrupt file", "Study", || {
        Study::from_text(
            "candle-tricks study v1\ndirection\tminimize\ndim\tx\tuniform\t0\t1\ntrial\t0\tcomplete\tNaN\t0.5\t\t\tx=0.5\nend\t1\n",
            one_dim(),
            Box::new(RandomSampler::new(0)),
        )?;
        Ok(())
    });
    c.err("study: load a point out of range", "Study", || {
        Study::from_text(
            "candle-tricks study v1\ndirection\tminimize\ndim\tx\tuniform\t0\t1\ntrial\t0\tcomplete\t1\t7\t\t\tx=7\nend\t1\n",
            one_dim(),
            Box::new(RandomSampler::new(0)),
        )?;
        Ok(())
    });
    c.err("asha: reduction_factor 1", "Asha", || {
        Asha::new(AshaConfig::default().with_reduction_factor(1))?;
        Ok(())
    });
    c.err("asha: min_resource 0", "Asha", || {
        Asha::new(AshaConfig::default().with_min_resource(0))?;
        Ok(())
    });
    c.err("sobol: 0 dimensions", "Sobol", || {
        Sobol::new(0)?;
        Ok(())
    });
    c.err("sobol: too many dimensions", "Sobol", || {
        SobolSampler::new().suggest(SOBOL_MAX_DIMS + 1, &[])?;
        Ok(())
    });
    c.val("asha: huge rung steps do not overflow", || {
        let asha = Asha::new(AshaConfig::default().with_min_resource(u64::MAX / 2))?;
        if asha.rung_step(1).is_some() {
            return Err(Got::Wrong("rung 1 should overflow".into()));
        }
        Ok(())
    });
    c.list
}
