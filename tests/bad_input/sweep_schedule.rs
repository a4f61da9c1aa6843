//! Bad input for the schedules and the `Scheduler`.

use super::*;

/// A custom schedule returning NaN from step 1.
struct NanAfterFirst;

impl LrSchedule for NanAfterFirst {
    fn lr(&self, step: usize) -> f64 {
        if step == 0 {
            1e-3
        } else {
            f64::NAN
        }
    }
}

/// A custom schedule whose momentum is out of range.
struct BadMomentum;

impl LrSchedule for BadMomentum {
    fn lr(&self, _: usize) -> f64 {
        1e-3
    }
    fn momentum(&self, _: usize) -> Option<f64> {
        Some(1.5)
    }
}

pub(super) fn schedule_cases() -> Vec<Case> {
    let mut c = Cases::new("schedule");
    macro_rules! bad {
        ($name:expr, $block:expr, $e:expr) => {
            c.err($name, $block, || {
                let _ = $e?;
                Ok(())
            });
        };
    }
    bad!("Constant(NaN)", "Constant", Constant::new(f64::NAN));
    bad!("Constant(-1)", "Constant", Constant::new(-1.0));
    bad!(
        "CosineAnnealing lr Inf",
        "CosineAnnealing",
        CosineAnnealing::new(f64::INFINITY, 10)
    );
    bad!(
        "CosineAnnealing t_max 0",
        "CosineAnnealing",
        CosineAnnealing::new(1e-3, 0)
    );
    bad!(
        "CosineAnnealing eta_min NaN",
        "CosineAnnealing",
        CosineAnnealing::new(1e-3, 10).and_then(|s| s.with_eta_min(f64::NAN))
    );
    bad!(
        "ExponentialLr gamma 0",
        "ExponentialLr",
        ExponentialLr::new(1e-3, 0.0)
    );
    bad!(
        "ExponentialLr gamma NaN",
        "ExponentialLr",
        ExponentialLr::new(1e-3, f64::NAN)
    );
    bad!(
        "MultiStepLr unsorted",
        "MultiStepLr",
        MultiStepLr::new(1e-3, [30, 10], 0.1)
    );
    bad!(
        "MultiStepLr gamma -1",
        "MultiStepLr",
        MultiStepLr::new(1e-3, [10], -1.0)
    );
    bad!("Noam d_model 0", "Noam", Noam::new(0, 100));
    bad!("Noam warmup 0", "Noam", Noam::new(512, 0));
    bad!(
        "Noam factor NaN",
        "Noam",
        Noam::new(512, 10).and_then(|n| n.with_factor(f64::NAN))
    );
    bad!("Noam from_peak NaN", "Noam", Noam::from_peak(f64::NAN, 10));
    bad!(
        "OneCycle total 0",
        "OneCycle",
        OneCycle::new(OneCycleConfig::new(1e-3, 0))
    );
    bad!(
        "OneCycle pct_start 1.5",
        "OneCycle",
        OneCycle::new(OneCycleConfig::new(1e-3, 100).with_pct_start(1.5))
    );
    bad!(
        "OneCycle div_factor 0",
        "OneCycle",
        OneCycle::new(OneCycleConfig::new(1e-3, 100).with_div_factors(0.0, 1e4))
    );
    bad!(
        "OneCycle momentum 1.5",
        "OneCycle",
        OneCycle::new(OneCycleConfig::new(1e-3, 100).with_momentum(0.85, 1.5))
    );
    bad!(
        "OneCycle max_lr NaN",
        "OneCycle",
        OneCycle::new(OneCycleConfig::new(f64::NAN, 100))
    );
    bad!(
        "Polynomial total 0",
        "Polynomial",
        Polynomial::new(1e-3, 0, 1.0)
    );
    bad!(
        "Polynomial power NaN",
        "Polynomial",
        Polynomial::new(1e-3, 10, f64::NAN)
    );
    bad!(
        "Polynomial end_lr -1",
        "Polynomial",
        Polynomial::new(1e-3, 10, 1.0).and_then(|p| p.with_end_lr(-1.0))
    );
    bad!(
        "Sequential milestone count",
        "Sequential",
        Sequential::new(vec![Box::new(Constant::new(1e-3)?)], vec![5])
    );
    bad!(
        "Sequential empty",
        "Sequential",
        Sequential::new(vec![], vec![])
    );
    bad!("StepLr step_size 0", "StepLr", StepLr::new(1e-3, 0, 0.1));
    bad!(
        "StepLr gamma Inf",
        "StepLr",
        StepLr::new(1e-3, 10, f64::INFINITY)
    );
    bad!(
        "CosineWarmRestarts t_0 0",
        "CosineWarmRestarts",
        CosineWarmRestarts::new(1e-3, 0, 1)
    );
    bad!(
        "CosineWarmRestarts t_mult 0",
        "CosineWarmRestarts",
        CosineWarmRestarts::new(1e-3, 10, 0)
    );
    bad!(
        "Warmup start_factor 2",
        "Warmup",
        Warmup::new(Constant::new(1e-3)?, 10, 2.0)
    );
    bad!(
        "Warmup start_factor NaN",
        "Warmup",
        Warmup::new(Constant::new(1e-3)?, 10, f64::NAN)
    );
    bad!(
        "Wsd from_fraction 1.5",
        "Wsd",
        WsdConfig::from_fraction(1e-3, 100, 10, 1.5)
    );
    c.either("Wsd: all phases 0 steps", "Wsd", || {
        let w = Wsd::new(WsdConfig::new(1e-3, 0, 0, 0))?;
        let lrs = [w.lr(0), w.lr(1), w.lr(100)];
        ensure(
            lrs.iter().all(|l| l.is_finite() && *l >= 0.0),
            format!("{lrs:?}"),
        )
    });
    bad!(
        "Wsd min_lr_ratio 2",
        "Wsd",
        Wsd::new(WsdConfig::new(1e-3, 1, 1, 1).with_min_lr_ratio(2.0))
    );
    bad!(
        "Wsd peak NaN",
        "Wsd",
        Wsd::new(WsdConfig::new(f64::NAN, 1, 1, 1))
    );
    c.err(
        "Scheduler over a schedule returning NaN",
        "Scheduler",
        || {
            let (w, _) = var_and_grads();
            let mut o = AdamW::new(vec![w], AdamWConfig::default())?;
            let mut s = Scheduler::new(NanAfterFirst);
            s.step(&mut o)?;
            let lr0 = o.learning_rate();
            let r = s.step(&mut o);
            ensure(o.learning_rate() == lr0, "the NaN lr reached the optimizer")?;
            r?;
            Ok(())
        },
    );
    // Refused by the optimizer's `set_momentum`, which names it.
    c.err("Scheduler momentum 1.5 from a schedule", "Sgd", || {
        let (w, _) = var_and_grads();
        let mut o = Sgd::new(vec![w], SgdConfig::default().with_momentum(0.9))?;
        Scheduler::new(BadMomentum).step_with_momentum(&mut o)?;
        Ok(())
    });
    c.err(
        "Scheduler load_state_dict of an empty map",
        "Scheduler",
        || {
            Scheduler::new(Constant::new(1e-3)?).load_state_dict(&HashMap::new())?;
            Ok(())
        },
    );
    c.err(
        "Scheduler load_state_dict with a negative step",
        "Scheduler",
        || {
            let mut s = Scheduler::new(Constant::new(1e-3)?);
            let mut sd = s.state_dict()?;
            for v in sd.values_mut() {
                *v = Tensor::full(-2.0f64, v.shape(), &cpu())?.to_dtype(v.dtype())?;
            }
            s.load_state_dict(&sd)?;
            Ok(())
        },
    );
    let rp = "ReduceLrOnPlateau";
    let pc = PlateauConfig::default;
    for (name, lr, cfg) in [
        ("initial lr NaN", f64::NAN, pc()),
        ("factor 1", 1e-3, pc().with_factor(1.0)),
        ("factor NaN", 1e-3, pc().with_factor(f64::NAN)),
        ("factor 0", 1e-3, pc().with_factor(0.0)),
        ("min_lr -1", 1e-3, pc().with_min_lr(-1.0)),
        (
            "threshold NaN",
            1e-3,
            pc().with_threshold(f64::NAN, Default::default()),
        ),
    ] {
        c.err(&format!("ReduceLrOnPlateau: {name}"), rp, move || {
            ReduceLrOnPlateau::new(lr, cfg)?;
            Ok(())
        });
    }
    c.err(
        "ReduceLrOnPlateau: load_state_dict of an empty map",
        rp,
        move || {
            ReduceLrOnPlateau::new(1e-3, pc())?.load_state_dict(&HashMap::new())?;
            Ok(())
        },
    );
    c.err(
        "ReduceLrOnPlateau: load_state_dict with NaN lr",
        rp,
        move || {
            let mut p = ReduceLrOnPlateau::new(1e-3, pc())?;
            let mut sd = p.state_dict()?;
            let key = sd.keys().find(|k| k.contains("lr")).cloned();
            let key = key.ok_or_else(|| Got::Wrong("no lr key".into()))?;
            sd.insert(key, Tensor::new(f64::NAN, &cpu())?);
            p.load_state_dict(&sd)?;
            Ok(())
        },
    );
    c.val(
        "ReduceLrOnPlateau: NaN metrics count as bad, lr stays finite",
        move || {
            let mut p = ReduceLrOnPlateau::new(1e-3, pc().with_patience(1))?;
            p.step(1.0);
            let mut lr = 0.0;
            for _ in 0..4 {
                lr = p.step(f64::NAN);
            }
            ensure(lr.is_finite() && lr < 1e-3 && lr > 0.0, format!("lr {lr}"))?;
            ensure(p.best() == 1.0, format!("best {}", p.best()))
        },
    );
    c.list
}
