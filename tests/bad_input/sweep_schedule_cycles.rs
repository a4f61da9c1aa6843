//! Bad input for the issue-17 schedules: `CyclicLr`, `PhasedOneCycle`, `Chained`, `PerGroup`
//! and the optimizers' per-group multipliers.

use super::*;
use candle_tricks::schedule::{
    Anneal, Chained, CyclicLr, CyclicLrConfig, CyclicMode, PerGroup, PhasedOneCycle, ScaleMode,
};

/// Two single-var groups under SGD with base rate 1.
fn two_group_sgd() -> Result<Sgd, Got> {
    let (a, _) = var_and_grads();
    let (b, _) = var_and_grads();
    let groups = ParamGroups::new(vec![ParamGroup::new(vec![a]), ParamGroup::new(vec![b])]);
    Ok(Sgd::with_groups(groups, SgdConfig::default().with_lr(1.0))?)
}

pub(super) fn schedule_cycles_cases() -> Vec<Case> {
    let mut c = Cases::new("schedule_cycles");
    let cy = |cfg: CyclicLrConfig| {
        move || -> Res {
            CyclicLr::new(cfg)?;
            Ok(())
        }
    };
    let base = || CyclicLrConfig::new(1e-3, 1e-2, 10);
    for (name, cfg) in [
        ("step_size_up 0", CyclicLrConfig::new(1e-3, 1e-2, 0)),
        ("step_size_down 0", base().with_step_size_down(0)),
        ("base_lr > max_lr", CyclicLrConfig::new(0.1, 0.01, 10)),
        ("base_lr NaN", CyclicLrConfig::new(f64::NAN, 0.01, 10)),
        ("max_lr Inf", CyclicLrConfig::new(1e-3, f64::INFINITY, 10)),
        ("base_lr -1", CyclicLrConfig::new(-1.0, 0.01, 10)),
        (
            "exp_range gamma 0",
            base().with_mode(CyclicMode::ExpRange { gamma: 0.0 }),
        ),
        (
            "exp_range gamma -0.5",
            base().with_mode(CyclicMode::ExpRange { gamma: -0.5 }),
        ),
        (
            "exp_range gamma NaN",
            base().with_mode(CyclicMode::ExpRange { gamma: f64::NAN }),
        ),
        ("max_momentum 1.5", base().with_momentum(0.8, 1.5)),
        ("base_momentum NaN", base().with_momentum(f64::NAN, 0.9)),
    ] {
        c.err(&format!("CyclicLr {name}"), "CyclicLr", cy(cfg));
    }
    c.val("CyclicLr huge step sizes stay finite", || {
        let s = CyclicLr::new(
            CyclicLrConfig::new(1e-3, 1e-2, usize::MAX).with_step_size_down(usize::MAX),
        )?;
        let lrs = [s.lr(0), s.lr(1), s.lr(usize::MAX)];
        ensure(
            s.cycle_len() == usize::MAX && lrs.iter().all(|l| l.is_finite() && *l >= 1e-3),
            format!("{lrs:?}"),
        )
    });
    c.val("CyclicLr base_lr == max_lr is a constant", || {
        let s = CyclicLr::new(CyclicLrConfig::new(0.01, 0.01, 3))?;
        ensure((0..20).all(|t| s.lr(t) == 0.01), "not constant")
    });
    c.err(
        "Scheduler over a CyclicLr whose scale_fn returns NaN",
        "Scheduler",
        || {
            let s = CyclicLr::new(CyclicLrConfig::new(1e-3, 1e-2, 4))?.with_scale_fn(
                |x| if x < 3.0 { 1.0 } else { f64::NAN },
                ScaleMode::Iterations,
            );
            let (w, _) = var_and_grads();
            let mut o = Sgd::new(vec![w], SgdConfig::default().with_momentum(0.9))?;
            let mut sched = Scheduler::new(s);
            for _ in 0..3 {
                sched.step_with_momentum(&mut o)?;
            }
            let before = (o.learning_rate(), o.momentum());
            let r = sched.step(&mut o);
            ensure(
                (o.learning_rate(), o.momentum()) == before,
                "the NaN reached the optimizer",
            )?;
            r?;
            Ok(())
        },
    );

    let ph = "PhasedOneCycle";
    c.err("PhasedOneCycle no phases", ph, || {
        PhasedOneCycle::new(0.1, &[], Anneal::Linear)?;
        Ok(())
    });
    for (name, phases) in [
        ("boundary 0", vec![(0, 0.1)]),
        ("boundaries not increasing", vec![(10, 0.1), (10, 0.2)]),
        ("boundaries decreasing", vec![(30, 0.1), (20, 0.2)]),
        ("negative rate", vec![(10, -0.1)]),
        ("NaN rate", vec![(10, 0.1), (20, f64::NAN)]),
    ] {
        c.err(&format!("PhasedOneCycle {name}"), ph, move || {
            PhasedOneCycle::new(0.1, &phases, Anneal::Cos)?;
            Ok(())
        });
    }
    c.err("PhasedOneCycle init_lr Inf", ph, || {
        PhasedOneCycle::new(f64::INFINITY, &[(5, 0.1)], Anneal::Cos)?;
        Ok(())
    });
    type Lin = (usize, f64, f64, f64, f64, f64);
    for (name, (t, peak, ps, pf, div, fdiv)) in [
        ("transition_steps 0", (0, 0.1, 0.3, 0.85, 25.0, 1e4)),
        ("peak NaN", (100, f64::NAN, 0.3, 0.85, 25.0, 1e4)),
        ("pct_start 1.5", (100, 0.1, 1.5, 0.85, 25.0, 1e4)),
        ("pct_final NaN", (100, 0.1, 0.3, f64::NAN, 25.0, 1e4)),
        ("pct_start > pct_final", (100, 0.1, 0.9, 0.5, 25.0, 1e4)),
        ("colliding boundaries", (100, 0.1, 0.5, 0.505, 25.0, 1e4)),
        (
            "pct_start rounds to step 0",
            (10, 0.1, 0.05, 0.85, 25.0, 1e4),
        ),
        ("div_factor 0", (100, 0.1, 0.3, 0.85, 0.0, 1e4)),
        (
            "final_div_factor Inf",
            (100, 0.1, 0.3, 0.85, 25.0, f64::INFINITY),
        ),
    ] as [(&str, Lin); 9]
    {
        c.err(
            &format!("PhasedOneCycle linear_onecycle {name}"),
            ph,
            move || {
                PhasedOneCycle::linear_onecycle(t, peak, ps, pf, div, fdiv)?;
                Ok(())
            },
        );
    }
    c.err("PhasedOneCycle cosine_onecycle pct_start 1", ph, || {
        PhasedOneCycle::cosine_onecycle(100, 0.1, 1.0, 25.0, 1e4)?;
        Ok(())
    });
    c.err("PhasedOneCycle cosine_onecycle div_factor -1", ph, || {
        PhasedOneCycle::cosine_onecycle(100, 0.1, 0.3, -1.0, 1e4)?;
        Ok(())
    });
    c.val("PhasedOneCycle holds its final rate past the end", || {
        let s = PhasedOneCycle::cosine_onecycle(100, 0.1, 0.3, 25.0, 1e4)?;
        ensure(
            s.lr(100) == s.lr(usize::MAX) && s.lr(100) > 0.0,
            format!("{} {}", s.lr(100), s.lr(usize::MAX)),
        )
    });

    c.err("Chained no links", "Chained", || {
        Chained::new(0.1, vec![])?;
        Ok(())
    });
    c.err("Chained base_lr NaN", "Chained", || {
        Chained::new(f64::NAN, vec![Box::new(Constant::new(1.0)?)])?;
        Ok(())
    });

    c.err("PerGroup no schedules", "PerGroup", || {
        PerGroup::new(vec![])?;
        Ok(())
    });
    c.err("PerGroup 3 schedules for 2 groups", "PerGroup", || {
        let mut o = two_group_sgd()?;
        let s: Vec<Box<dyn LrSchedule>> = (0..3)
            .map(|_| Box::new(Constant::new(0.1).unwrap()) as Box<dyn LrSchedule>)
            .collect();
        Scheduler::new(PerGroup::new(s)?).step_groups(&mut o)?;
        Ok(())
    });
    c.err("PerGroup schedule returning NaN", "Scheduler", || {
        let mut o = two_group_sgd()?;
        let mut s = Scheduler::new(PerGroup::new(vec![
            Box::new(Constant::new(0.5)?),
            Box::new(NanAfterStep0),
        ])?);
        s.step_groups(&mut o)?;
        let r = s.step_groups(&mut o);
        ensure(
            o.group_lr_mult(0) == Some(0.5) && o.group_lr_mult(1) == Some(1e-3),
            "a multiplier changed on the failed step",
        )?;
        r?;
        Ok(())
    });
    c.err("Sgd set_group_lr_mult of a missing group", "Sgd", || {
        two_group_sgd()?.set_group_lr_mult(2, 0.1)?;
        Ok(())
    });
    c.err("Sgd set_group_lr_mult NaN", "Sgd", || {
        two_group_sgd()?.set_group_lr_mult(0, f64::NAN)?;
        Ok(())
    });
    c.list
}

/// A custom schedule returning NaN after step 0.
struct NanAfterStep0;

impl LrSchedule for NanAfterStep0 {
    fn lr(&self, step: usize) -> f64 {
        if step == 0 {
            1e-3
        } else {
            f64::NAN
        }
    }
}
