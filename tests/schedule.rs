//! Learning-rate schedules against torch.optim.lr_scheduler (fixtures from
//! tests/fixtures/gen_schedule.py), state save/load, and config validation.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use candle_nn::Optimizer;
use candle_tricks::optim::{Momentum, ParamGroup, ParamGroups, Sgd, SgdConfig};
use candle_tricks::schedule::*;
use common::{fixtures, get, Fixtures, R};

fn seq(f: &Fixtures, key: &str) -> Vec<f64> {
    get(f, key).to_vec1::<f64>().expect("f64 sequence")
}

/// Every step within `rel` relative error (exact zeros must match exactly).
fn assert_seq(name: &str, ours: &[f64], reference: &[f64], rel: f64) {
    assert_eq!(ours.len(), reference.len(), "{name}: length");
    for (t, (&a, &b)) in ours.iter().zip(reference).enumerate() {
        let ok = if a.is_nan() || b.is_nan() {
            a.is_nan() && b.is_nan()
        } else if a.is_infinite() || b.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= rel * a.abs().max(b.abs())
        };
        assert!(ok, "{name}: step {t}: ours {a:e}, reference {b:e}");
    }
}

fn check(f: &Fixtures, case: &str, s: &dyn LrSchedule) {
    let r = seq(f, &format!("{case}.lr"));
    let ours: Vec<f64> = (0..r.len()).map(|t| s.lr(t)).collect();
    assert_seq(case, &ours, &r, 1e-12);
}

#[test]
fn closed_form_schedules_match_torch() -> R<()> {
    let f = fixtures("schedule");
    check(&f, "step", &StepLr::new(0.1, 30, 0.5)?);
    check(
        &f,
        "multistep",
        &MultiStepLr::new(0.1, [50, 120, 120, 200], 0.3)?,
    );
    check(&f, "exponential", &ExponentialLr::new(0.1, 0.99)?);
    check(&f, "polynomial", &Polynomial::new(0.1, 200, 2.0)?);
    check(
        &f,
        "polynomial_end",
        &Polynomial::new(0.1, 200, 1.5)?.with_end_lr(1e-3)?,
    );
    check(
        &f,
        "cosine",
        &CosineAnnealing::new(0.1, 100)?.with_eta_min(1e-3)?,
    );
    check(&f, "cosine_zero", &CosineAnnealing::new(0.1, 250)?);
    Ok(())
}

#[test]
fn warm_restarts_match_torch() -> R<()> {
    let f = fixtures("schedule");
    let s = CosineWarmRestarts::new(0.1, 10, 2)?.with_eta_min(1e-4)?;
    check(&f, "restarts_mult2", &s);
    // Restarts at 10, 30, 70, 150, 310, 630: cycles double.
    assert_eq!(s.cycle_position(629), (319, 320));
    assert_eq!(s.cycle_position(630), (0, 640));
    assert_eq!(s.lr(630), 0.1);
    check(
        &f,
        "restarts_mult1",
        &CosineWarmRestarts::new(0.1, 37, 1)?.with_eta_min(1e-4)?,
    );
    Ok(())
}

fn check_one_cycle(f: &Fixtures, case: &str, cfg: OneCycleConfig) -> R<()> {
    let s = OneCycle::new(cfg)?;
    check(f, case, &s);
    let m = seq(f, &format!("{case}.momentum"));
    let ours: Vec<f64> = (0..m.len()).map(|t| s.momentum(t).unwrap()).collect();
    assert_seq(&format!("{case} momentum"), &ours, &m, 1e-12);
    // Past the end: holds the final values.
    let n = cfg.total_steps;
    assert_eq!(s.lr(n + 5), s.lr(n - 1));
    assert_eq!(s.momentum(n + 5), s.momentum(n - 1));
    Ok(())
}

#[test]
fn one_cycle_matches_torch() -> R<()> {
    let f = fixtures("schedule");
    check_one_cycle(&f, "onecycle_cos", OneCycleConfig::new(0.5, 500))?;
    check_one_cycle(
        &f,
        "onecycle_linear",
        OneCycleConfig::new(0.2, 400)
            .with_pct_start(0.25)
            .with_anneal(Anneal::Linear)
            .with_div_factors(10.0, 100.0)
            .with_momentum(0.8, 0.9),
    )?;
    check_one_cycle(
        &f,
        "onecycle_three",
        OneCycleConfig::new(1.0, 600).with_three_phase(true),
    )?;
    check_one_cycle(
        &f,
        "onecycle_three_linear",
        OneCycleConfig::new(0.3, 333)
            .with_three_phase(true)
            .with_pct_start(0.2)
            .with_anneal(Anneal::Linear),
    )?;
    let no_m = OneCycle::new(OneCycleConfig::new(0.5, 500).without_momentum())?;
    assert_eq!(no_m.momentum(10), None);
    Ok(())
}

#[test]
fn noam_and_wsd_match_references() -> R<()> {
    let f = fixtures("schedule");
    let noam = Noam::new(512, 400)?;
    check(&f, "noam", &noam);
    assert_eq!(noam.lr(0), noam.lr(1));
    check(&f, "noam_factor", &Noam::new(256, 100)?.with_factor(2.0)?);
    let peak = Noam::from_peak(1e-3, 4000)?;
    assert!((peak.peak_lr() - 1e-3).abs() < 1e-15);
    assert!((peak.lr(16000) - 0.5e-3).abs() < 1e-15);
    for (case, decay) in [
        ("wsd_linear", WsdDecay::Linear),
        ("wsd_cosine", WsdDecay::Cosine),
        ("wsd_1_sqrt", WsdDecay::OneMinusSqrt),
    ] {
        let cfg = WsdConfig::new(0.01, 50, 150, 100)
            .with_min_lr_ratio(0.1)
            .with_decay(decay);
        check(&f, case, &Wsd::new(cfg)?);
    }
    let frac = WsdConfig::from_fraction(0.01, 300, 50, 1.0 / 3.0)?;
    assert_eq!(
        (frac.warmup_steps, frac.stable_steps, frac.decay_steps),
        (50, 150, 100)
    );
    Ok(())
}

#[test]
fn composition_matches_torch_sequential_lr() -> R<()> {
    let f = fixtures("schedule");
    let warm = Warmup::new(
        CosineAnnealing::new(0.1, 250)?.with_eta_min(1e-5)?,
        50,
        0.01,
    )?;
    check(&f, "warmup_cosine", &warm);
    let seq3 = Sequential::new(
        vec![
            Box::new(ExponentialLr::new(0.1, 0.98)?),
            Box::new(StepLr::new(0.1, 20, 0.5)?),
            Box::new(CosineAnnealing::new(0.1, 80)?),
        ],
        vec![60, 150],
    )?;
    check(&f, "sequential", &seq3);
    // No warmup: the inner schedule unchanged.
    let c = CosineAnnealing::new(0.1, 50)?;
    let none = Warmup::new(c, 0, 0.0)?;
    assert!((0..120).all(|t| none.lr(t) == c.lr(t)));
    // Warmup in front of one-cycle delays the momentum cycle with the rate.
    let oc = OneCycle::new(OneCycleConfig::new(0.5, 100))?;
    let w = Warmup::new(oc.clone(), 10, 0.0)?;
    assert_eq!(w.momentum(3), oc.momentum(0));
    assert_eq!((w.lr(40), w.momentum(40)), (oc.lr(30), oc.momentum(30)));
    Ok(())
}

fn plateau_cfg(case: &str) -> PlateauConfig {
    let d = PlateauConfig::default();
    match case {
        "plateau_min_rel" => d
            .with_factor(0.5)
            .with_patience(5)
            .with_threshold(1e-2, ThresholdMode::Rel)
            .with_cooldown(3)
            .with_min_lr(1e-4),
        "plateau_min_abs" => d
            .with_factor(0.3)
            .with_patience(3)
            .with_threshold(0.01, ThresholdMode::Abs),
        "plateau_max_rel" => d
            .with_mode(PlateauMode::Max)
            .with_factor(0.7)
            .with_patience(4)
            .with_threshold(1e-3, ThresholdMode::Rel)
            .with_cooldown(2),
        "plateau_max_abs" => d
            .with_mode(PlateauMode::Max)
            .with_factor(0.3)
            .with_patience(2)
            .with_threshold(0.005, ThresholdMode::Abs)
            .with_cooldown(5)
            .with_min_lr(0.02),
        _ => unreachable!(),
    }
}

const PLATEAU_CASES: [&str; 4] = [
    "plateau_min_rel",
    "plateau_min_abs",
    "plateau_max_rel",
    "plateau_max_abs",
];

fn plateau_metric(f: &Fixtures, case: &str) -> Vec<f64> {
    let sign = if case.starts_with("plateau_max") {
        -1.0
    } else {
        1.0
    };
    seq(f, "plateau.metric").iter().map(|m| sign * m).collect()
}

#[test]
fn plateau_matches_torch() -> R<()> {
    let f = fixtures("schedule");
    for case in PLATEAU_CASES {
        let mut p = ReduceLrOnPlateau::new(0.1, plateau_cfg(case))?;
        let (mut lrs, mut bad, mut best) = (vec![], vec![], vec![]);
        for m in plateau_metric(&f, case) {
            lrs.push(p.step(m));
            bad.push(p.num_bad_epochs() as f64);
            best.push(p.best());
        }
        assert_seq(case, &lrs, &seq(&f, &format!("{case}.lr")), 1e-12);
        assert_seq(case, &bad, &seq(&f, &format!("{case}.num_bad_epochs")), 0.0);
        assert_seq(case, &best, &seq(&f, &format!("{case}.best")), 0.0);
    }
    Ok(())
}

/// A stand-in optimizer that records the rate and momentum it is given.
struct Probe {
    lr: f64,
    momentum: f64,
}

impl Optimizer for Probe {
    type Config = f64;
    fn new(_vars: Vec<Var>, lr: f64) -> candle_core::Result<Self> {
        Ok(Self { lr, momentum: 0.0 })
    }
    fn step(&mut self, _grads: &candle_core::backprop::GradStore) -> candle_core::Result<()> {
        Ok(())
    }
    fn learning_rate(&self) -> f64 {
        self.lr
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr
    }
}

impl Momentum for Probe {
    fn momentum(&self) -> f64 {
        self.momentum
    }
    fn set_momentum(&mut self, momentum: f64) -> candle_tricks::Result<()> {
        self.momentum = momentum;
        Ok(())
    }
}

#[test]
fn scheduler_drives_optimizers_and_momentum() -> R<()> {
    let f = fixtures("schedule");
    let var = Var::zeros(4, candle_core::DType::F32, &Device::Cpu)?;
    let mut sgd = candle_nn::SGD::new(vec![var], 1.0)?;
    let mut sched = Scheduler::new(CosineWarmRestarts::new(0.1, 10, 2)?.with_eta_min(1e-4)?);
    let reference = seq(&f, "restarts_mult2.lr");
    for (t, &r) in reference.iter().enumerate() {
        assert_eq!(sched.current_step(), t);
        let lr = sched.step(&mut sgd)?;
        assert_eq!(lr, sgd.learning_rate());
        assert!((lr - r).abs() <= 1e-12 * r, "step {t}");
    }

    let mut probe = Probe::new(vec![], 0.0)?;
    let mut sched: Scheduler =
        Scheduler::new(Box::new(OneCycle::new(OneCycleConfig::new(0.5, 500))?));
    let (lrs, ms) = (seq(&f, "onecycle_cos.lr"), seq(&f, "onecycle_cos.momentum"));
    for t in 0..500 {
        let (lr, m) = sched.step_with_momentum(&mut probe)?;
        assert_eq!((probe.lr, Some(probe.momentum)), (lr, m));
        assert!((lr - lrs[t]).abs() <= 1e-12 * lrs[t] && (probe.momentum - ms[t]).abs() < 1e-12);
    }
    // A schedule without momentum leaves it alone.
    probe.momentum = 0.42;
    let mut plain = Scheduler::new(Constant::new(0.3)?);
    assert_eq!(plain.step_with_momentum(&mut probe)?, (0.3, None));
    assert_eq!(probe.momentum, 0.42);
    Ok(())
}

fn save_and_reload(state: &HashMap<String, Tensor>) -> R<HashMap<String, Tensor>> {
    let path =
        std::env::temp_dir().join(format!("schedule_state_{}.safetensors", std::process::id()));
    // Next to an "optimizer" tensor, as in a real checkpoint.
    let mut all = state.clone();
    all.insert(
        "optim.exp_avg".into(),
        Tensor::ones(3, candle_core::DType::F32, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&all, &path)?;
    let back = candle_core::safetensors::load(&path, &Device::Cpu)?;
    std::fs::remove_file(&path)?;
    Ok(back)
}

#[test]
fn state_dict_resume_is_bit_identical() -> R<()> {
    let make = || -> R<Sequential> {
        Ok(Sequential::new(
            vec![
                Box::new(Warmup::new(CosineWarmRestarts::new(0.1, 10, 2)?, 20, 0.1)?),
                Box::new(Wsd::new(
                    WsdConfig::new(0.05, 0, 100, 50).with_decay(WsdDecay::OneMinusSqrt),
                )?),
            ],
            vec![200],
        )?)
    };
    let mut probe = Probe::new(vec![], 0.0)?;
    let mut full = Scheduler::new(make()?);
    let straight: Vec<f64> = (0..400).map(|_| full.step(&mut probe).unwrap()).collect();

    let mut first = Scheduler::new(make()?);
    let mut resumed: Vec<f64> = (0..137).map(|_| first.step(&mut probe).unwrap()).collect();
    let state = save_and_reload(&first.state_dict()?)?;
    let mut second = Scheduler::new(make()?);
    second.load_state_dict(&state)?;
    assert_eq!(second.current_step(), 137);
    resumed.extend((137..400).map(|_| second.step(&mut probe).unwrap()));
    assert_eq!(straight, resumed);

    // Plateau: every counter survives the round trip.
    let f = fixtures("schedule");
    for case in PLATEAU_CASES {
        let metric = plateau_metric(&f, case);
        let mut whole = ReduceLrOnPlateau::new(0.1, plateau_cfg(case))?;
        let straight: Vec<f64> = metric.iter().map(|&m| whole.step(m)).collect();
        for cut in [3, 101, 140, 299] {
            let mut a = ReduceLrOnPlateau::new(0.1, plateau_cfg(case))?;
            let mut lrs: Vec<f64> = metric[..cut].iter().map(|&m| a.step(m)).collect();
            let mut b = ReduceLrOnPlateau::new(0.5, plateau_cfg(case))?;
            b.load_state_dict(&save_and_reload(&a.state_dict()?)?)?;
            assert_eq!(a, b);
            lrs.extend(metric[cut..].iter().map(|&m| b.step(m)));
            assert_eq!(straight, lrs, "{case} cut at {cut}");
        }
    }
    let mut p = ReduceLrOnPlateau::new(0.1, PlateauConfig::default())?;
    let mut probe = Probe::new(vec![], 0.0)?;
    assert_eq!(p.step_optimizer(1.0, &mut probe), 0.1);
    assert_eq!(probe.lr, 0.1);
    Ok(())
}

#[test]
fn bad_state_dicts_error() -> R<()> {
    let mut s = Scheduler::new(Constant::new(0.1)?);
    let t = |v: f64| Tensor::new(v, &Device::Cpu).unwrap();
    for (state, what) in [
        (HashMap::new(), "no `scheduler.step`"),
        (
            HashMap::from([("scheduler.step".to_string(), t(-1.0))]),
            "whole number",
        ),
        (
            HashMap::from([("scheduler.step".to_string(), t(1.5))]),
            "whole number",
        ),
        (
            HashMap::from([(
                "scheduler.step".to_string(),
                Tensor::new(&[1.0f64, 2.0], &Device::Cpu)?,
            )]),
            "scalar",
        ),
    ] {
        let e = s.load_state_dict(&state).unwrap_err().to_string();
        assert!(e.contains("Scheduler") && e.contains(what), "{e}");
    }
    let mut p = ReduceLrOnPlateau::new(0.1, PlateauConfig::default())?;
    let mut st = p.state_dict()?;
    st.remove("plateau.best");
    let e = p.load_state_dict(&st).unwrap_err().to_string();
    assert!(
        e.contains("ReduceLrOnPlateau") && e.contains("plateau.best"),
        "{e}"
    );
    Ok(())
}

fn expect_err<T: std::fmt::Debug>(r: candle_tricks::Result<T>, block: &str, what: &str) {
    match r {
        Ok(v) => panic!("{block}: expected an error about {what}, got {v:?}"),
        Err(e) => {
            let m = e.to_string();
            assert!(m.contains(block) && m.contains(what), "{m}");
        }
    }
}

#[test]
fn bad_configs_error() -> R<()> {
    expect_err(Constant::new(-0.1), "Constant", "lr");
    expect_err(Constant::new(f64::NAN), "Constant", "lr");
    expect_err(StepLr::new(0.1, 0, 0.5), "StepLr", "step_size");
    expect_err(StepLr::new(0.1, 10, 0.0), "StepLr", "gamma");
    expect_err(StepLr::new(0.1, 10, -0.5), "StepLr", "gamma");
    expect_err(
        MultiStepLr::new(0.1, [30, 10], 0.1),
        "MultiStepLr",
        "sorted",
    );
    expect_err(
        ExponentialLr::new(0.1, f64::INFINITY),
        "ExponentialLr",
        "gamma",
    );
    expect_err(ExponentialLr::new(-1.0, 0.9), "ExponentialLr", "base_lr");
    expect_err(Polynomial::new(0.1, 0, 1.0), "Polynomial", "total_steps");
    expect_err(Polynomial::new(0.1, 10, 0.0), "Polynomial", "power");
    expect_err(
        Polynomial::new(0.1, 10, 1.0)?.with_end_lr(-1.0),
        "Polynomial",
        "end_lr",
    );
    expect_err(CosineAnnealing::new(0.1, 0), "CosineAnnealing", "t_max");
    expect_err(
        CosineAnnealing::new(0.1, 10)?.with_eta_min(-1.0),
        "CosineAnnealing",
        "eta_min",
    );
    expect_err(
        CosineWarmRestarts::new(0.1, 0, 2),
        "CosineWarmRestarts",
        "t_0",
    );
    expect_err(
        CosineWarmRestarts::new(0.1, 10, 0),
        "CosineWarmRestarts",
        "t_mult",
    );
    expect_err(
        Warmup::new(Constant::new(0.1)?, 10, 1.5),
        "Warmup",
        "start_factor",
    );
    expect_err(Noam::new(0, 10), "Noam", "d_model");
    expect_err(Noam::new(512, 0), "Noam", "warmup_steps");
    expect_err(Noam::new(512, 10)?.with_factor(0.0), "Noam", "factor");
    expect_err(
        WsdConfig::from_fraction(0.1, 100, 90, 0.2),
        "Wsd",
        "exceed total_steps",
    );
    expect_err(
        WsdConfig::from_fraction(0.1, 100, 10, 1.2),
        "Wsd",
        "decay_fraction",
    );
    expect_err(Wsd::new(WsdConfig::new(-0.1, 1, 1, 1)), "Wsd", "peak_lr");
    expect_err(
        Wsd::new(WsdConfig::new(0.1, 1, 1, 1).with_min_lr_ratio(2.0)),
        "Wsd",
        "min_lr_ratio",
    );
    let oc = |c: OneCycleConfig| OneCycle::new(c);
    expect_err(oc(OneCycleConfig::new(0.1, 0)), "OneCycle", "total_steps");
    expect_err(oc(OneCycleConfig::new(-0.1, 100)), "OneCycle", "max_lr");
    expect_err(
        oc(OneCycleConfig::new(0.1, 100).with_pct_start(1.5)),
        "OneCycle",
        "pct_start",
    );
    expect_err(
        oc(OneCycleConfig::new(0.1, 100).with_pct_start(1.0)),
        "OneCycle",
        "empty phase",
    );
    expect_err(
        oc(OneCycleConfig::new(0.1, 10).with_pct_start(0.1)),
        "OneCycle",
        "empty phase",
    );
    expect_err(
        oc(OneCycleConfig::new(0.1, 100)
            .with_pct_start(0.6)
            .with_three_phase(true)),
        "OneCycle",
        "empty phase",
    );
    expect_err(
        oc(OneCycleConfig::new(0.1, 100).with_div_factors(0.0, 1e4)),
        "OneCycle",
        "div_factor",
    );
    expect_err(
        oc(OneCycleConfig::new(0.1, 100).with_momentum(0.85, 1.5)),
        "OneCycle",
        "max_momentum",
    );
    let boxed = || -> Vec<Box<dyn LrSchedule>> {
        vec![
            Box::new(Constant::new(0.1).unwrap()),
            Box::new(Constant::new(0.2).unwrap()),
        ]
    };
    expect_err(Sequential::new(boxed(), vec![]), "Sequential", "milestones");
    expect_err(
        Sequential::new(boxed(), vec![0]),
        "Sequential",
        "milestones",
    );
    expect_err(
        Sequential::new(vec![], vec![]),
        "Sequential",
        "at least one",
    );
    let mut three = boxed();
    three.push(Box::new(Constant::new(0.3)?));
    expect_err(
        Sequential::new(three, vec![20, 10]),
        "Sequential",
        "strictly increasing",
    );
    let p = |c: PlateauConfig| ReduceLrOnPlateau::new(0.1, c);
    expect_err(
        p(PlateauConfig::default().with_factor(1.0)),
        "ReduceLrOnPlateau",
        "factor",
    );
    expect_err(
        p(PlateauConfig::default().with_factor(0.0)),
        "ReduceLrOnPlateau",
        "factor",
    );
    expect_err(
        p(PlateauConfig::default().with_threshold(-1e-4, ThresholdMode::Rel)),
        "ReduceLrOnPlateau",
        "threshold",
    );
    expect_err(
        p(PlateauConfig::default().with_min_lr(-1.0)),
        "ReduceLrOnPlateau",
        "min_lr",
    );
    expect_err(
        ReduceLrOnPlateau::new(-0.1, PlateauConfig::default()),
        "ReduceLrOnPlateau",
        "initial_lr",
    );
    Ok(())
}

fn check_momentum(f: &Fixtures, case: &str, s: &dyn LrSchedule) {
    let m = seq(f, &format!("{case}.momentum"));
    let ours: Vec<f64> = (0..m.len()).map(|t| s.momentum(t).unwrap()).collect();
    assert_seq(&format!("{case} momentum"), &ours, &m, 1e-12);
}

#[test]
fn cyclic_matches_torch() -> R<()> {
    let f = fixtures("schedule");
    let cases = [
        ("cyclic_triangular", CyclicLrConfig::new(0.01, 0.1, 20)),
        (
            "cyclic_triangular2",
            CyclicLrConfig::new(0.001, 0.05, 15)
                .with_step_size_down(25)
                .with_mode(CyclicMode::Triangular2)
                .with_momentum(0.85, 0.95),
        ),
        (
            "cyclic_exp_range",
            CyclicLrConfig::new(0.002, 0.2, 10)
                .with_step_size_down(30)
                .with_mode(CyclicMode::ExpRange { gamma: 0.995 }),
        ),
        (
            "cyclic_down1",
            CyclicLrConfig::new(0.0, 1.0, 9).with_step_size_down(1),
        ),
    ];
    for (case, cfg) in cases {
        let s = CyclicLr::new(cfg)?;
        check(&f, case, &s);
        check_momentum(&f, case, &s);
    }
    let custom = CyclicLr::new(CyclicLrConfig::new(0.01, 0.1, 7).with_step_size_down(13))?
        .with_scale_fn(
            |x| 0.5 * (1.0 + (x * std::f64::consts::PI / 2.0).sin()),
            ScaleMode::Cycle,
        );
    check(&f, "cyclic_custom_cycle", &custom);
    check_momentum(&f, "cyclic_custom_cycle", &custom);
    let iters = CyclicLr::new(CyclicLrConfig::new(0.01, 0.1, 25).without_momentum())?
        .with_scale_fn(|x| (-x / 150.0).exp(), ScaleMode::Iterations);
    check(&f, "cyclic_custom_iterations", &iters);
    assert_eq!(iters.momentum(3), None);
    // Triangular: the cycle repeats exactly, peak at step_size_up.
    let tri = CyclicLr::new(CyclicLrConfig::new(0.01, 0.1, 20))?;
    assert_eq!(tri.cycle_len(), 40);
    assert_eq!((tri.lr(20), tri.lr(60)), (0.1, 0.1));
    assert_eq!(
        (tri.lr(0), tri.lr(40), tri.momentum(20)),
        (0.01, 0.01, Some(0.8))
    );
    Ok(())
}

#[test]
fn phased_one_cycle_matches_optax() -> R<()> {
    let f = fixtures("schedule");
    let lin = PhasedOneCycle::linear_onecycle(500, 0.4, 0.3, 0.85, 25.0, 1e4)?;
    assert_eq!(lin.boundaries(), &[0, 150, 425, 500]);
    check(&f, "optax_linear_onecycle", &lin);
    check(
        &f,
        "optax_linear_onecycle_custom",
        &PhasedOneCycle::linear_onecycle(333, 1.5, 0.2, 0.7, 10.0, 100.0)?,
    );
    check(
        &f,
        "optax_cosine_onecycle",
        &PhasedOneCycle::cosine_onecycle(600, 0.25, 0.3, 25.0, 1e4)?,
    );
    check(
        &f,
        "optax_cosine_onecycle_custom",
        &PhasedOneCycle::cosine_onecycle(257, 3e-3, 0.45, 5.0, 1e3)?,
    );
    // optax's piecewise_interpolate_schedule: the rates are running products of the scales.
    let v1 = 0.1 * 3.0;
    let v2 = v1 * 0.5;
    let v3 = v2 * 0.1;
    let v4 = v3 * 0.2;
    let phases = [(40, v1), (100, v2), (101, v3), (250, v4)];
    for (case, anneal) in [
        ("optax_piecewise_linear", Anneal::Linear),
        ("optax_piecewise_cosine", Anneal::Cos),
    ] {
        check(&f, case, &PhasedOneCycle::new(0.1, &phases, anneal)?);
    }
    Ok(())
}

#[test]
fn chained_matches_torch_chained_scheduler() -> R<()> {
    let f = fixtures("schedule");
    let chained = Chained::new(
        0.1,
        vec![
            Box::new(Warmup::new(Constant::new(1.0)?, 30, 0.1)?),
            Box::new(StepLr::new(1.0, 50, 0.5)?),
            Box::new(ExponentialLr::new(1.0, 0.995)?),
        ],
    )?;
    check(&f, "chained", &chained);
    assert_eq!(chained.momentum(5), None);
    let constant_lr = Sequential::new(
        vec![
            Box::new(Constant::new(0.25)?),
            Box::new(Constant::new(1.0)?),
        ],
        vec![20],
    )?;
    check(
        &f,
        "chained_multistep_constant",
        &Chained::new(
            0.05,
            vec![
                Box::new(MultiStepLr::new(1.0, [40, 90, 160], 0.3)?),
                Box::new(constant_lr),
            ],
        )?,
    );
    Ok(())
}

fn per_group_schedules() -> R<PerGroup> {
    Ok(PerGroup::new(vec![
        Box::new(StepLr::new(0.1, 30, 0.5)?),
        // (t + 1) / 50 up to 1: a warmup of 49 steps from 1/50.
        Box::new(Warmup::new(Constant::new(0.01)?, 49, 1.0 / 50.0)?),
        Box::new(Sequential::new(
            vec![
                Box::new(CosineAnnealing::new(0.5, 200)?),
                Box::new(Constant::new(0.0)?),
            ],
            vec![200],
        )?),
    ])?)
}

#[test]
fn per_group_matches_torch_lambda_lr() -> R<()> {
    let f = fixtures("schedule");
    let refs: Vec<Vec<f64>> = (0..3)
        .map(|j| seq(&f, &format!("per_group.g{j}.lr")))
        .collect();
    let vars: Vec<Var> = (0..3)
        .map(|_| Var::zeros(2, candle_core::DType::F32, &Device::Cpu))
        .collect::<Result<_, _>>()?;
    let groups = ParamGroups::new(vars.into_iter().map(|v| ParamGroup::new(vec![v])).collect());
    // Base rate 1: each group's rate is exactly its schedule's value.
    let mut opt = Sgd::with_groups(groups, SgdConfig::default().with_lr(1.0))?;
    let mut sched = Scheduler::new(per_group_schedules()?);
    let mut ours = vec![vec![]; 3];
    for _ in 0..refs[0].len() {
        let mults = sched.step_groups(&mut opt)?;
        for (j, m) in mults.iter().enumerate() {
            assert_eq!(opt.group_lr_mult(j), Some(*m));
            ours[j].push(opt.learning_rate() * m);
        }
    }
    for j in 0..3 {
        assert_seq(&format!("per_group g{j}"), &ours[j], &refs[j], 1e-12);
    }

    // Resume mid-run through the state dict: the same multipliers from there on.
    let mut again = Scheduler::new(per_group_schedules()?);
    again.load_state_dict(&save_and_reload(&sched.state_dict()?)?)?;
    assert_eq!(again.current_step(), refs[0].len());
    assert_eq!(again.step_groups(&mut opt)?, sched.step_groups(&mut opt)?);

    // A group count that does not match is an error, and nothing changes.
    let one = ParamGroups::from(vec![Var::zeros(2, candle_core::DType::F32, &Device::Cpu)?]);
    let mut small = Sgd::with_groups(one, SgdConfig::default())?;
    let e = sched.step_groups(&mut small).unwrap_err().to_string();
    assert!(
        e.contains("PerGroup") && e.contains("3 parameter groups"),
        "{e}"
    );
    assert_eq!(small.group_lr_mult(0), Some(1.0));

    // The multipliers reach the update: group 0 frozen, group 1 at half the base rate.
    let (a, b) = (
        Var::zeros(3, candle_core::DType::F32, &Device::Cpu)?,
        Var::zeros(2, candle_core::DType::F32, &Device::Cpu)?,
    );
    let groups = ParamGroups::new(vec![
        ParamGroup::new(vec![a.clone()]),
        ParamGroup::new(vec![b.clone()]),
    ]);
    let mut opt = Sgd::with_groups(groups, SgdConfig::default().with_lr(1.0))?;
    let frozen_and_half = PerGroup::new(vec![
        Box::new(Constant::new(0.0)?),
        Box::new(Constant::new(0.5)?),
    ])?;
    Scheduler::new(frozen_and_half).step_groups(&mut opt)?;
    let loss = (a.as_tensor().sum_all()? + b.as_tensor().sum_all()?)?;
    opt.step(&loss.backward()?)?;
    assert_eq!(a.as_tensor().to_vec1::<f32>()?, vec![0.0; 3]);
    assert_eq!(b.as_tensor().to_vec1::<f32>()?, vec![-0.5; 2]);
    Ok(())
}

#[test]
fn new_schedules_resume_bit_identical() -> R<()> {
    let make = || -> R<Chained> {
        Ok(Chained::new(
            1.0,
            vec![
                Box::new(CyclicLr::new(
                    CyclicLrConfig::new(0.01, 0.1, 13).with_mode(CyclicMode::Triangular2),
                )?),
                Box::new(PhasedOneCycle::cosine_onecycle(300, 1.0, 0.3, 25.0, 1e4)?),
            ],
        )?)
    };
    let mut probe = Probe::new(vec![], 0.0)?;
    let mut full = Scheduler::new(make()?);
    let straight: Vec<f64> = (0..320).map(|_| full.step(&mut probe).unwrap()).collect();
    let mut first = Scheduler::new(make()?);
    let mut resumed: Vec<f64> = (0..111).map(|_| first.step(&mut probe).unwrap()).collect();
    let mut second = Scheduler::new(make()?);
    second.load_state_dict(&save_and_reload(&first.state_dict()?)?)?;
    resumed.extend((111..320).map(|_| second.step(&mut probe).unwrap()));
    assert_eq!(straight, resumed);

    // CyclicLr cycles the optimizer's momentum through the Scheduler.
    let f = fixtures("schedule");
    let cfg = CyclicLrConfig::new(0.01, 0.1, 20);
    let mut sched = Scheduler::new(CyclicLr::new(cfg)?);
    let ms = seq(&f, "cyclic_triangular.momentum");
    for m in ms {
        let (_, got) = sched.step_with_momentum(&mut probe)?;
        assert_eq!(got, Some(probe.momentum));
        assert!((probe.momentum - m).abs() <= 1e-12 * m);
    }
    Ok(())
}
