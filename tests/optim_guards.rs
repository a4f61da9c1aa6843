//! Regression tests (issue 10) for the paths that set an optimizer's hyper-parameters after
//! construction, the dtypes it accepts and duplicate parameters: each is validated as the
//! constructor validates, and a refused value never changes a weight or the state.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use candle_tricks::optim::{
    Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig, Lion, LionConfig, Momentum,
    OptimizerState, ParamGroup, ParamGroups, RmsProp, RmsPropConfig, Sgd, SgdConfig,
};
use candle_tricks::schedule::{LrSchedule, Scheduler};

type R<T> = Result<T, Box<dyn std::error::Error>>;

/// What the tests do with every optimizer type.
trait Opt {
    fn name(&self) -> &'static str;
    fn set_lr(&mut self, lr: f64);
    fn try_set_lr(&mut self, lr: f64) -> candle_tricks::Result<()>;
    fn step_grads(&mut self, g: &GradStore) -> candle_tricks::Result<()>;
    fn state(&self) -> HashMap<String, Tensor>;
    fn load(&mut self, sd: &HashMap<String, Tensor>) -> candle_tricks::Result<()>;
    fn lr(&self) -> f64;
    /// `Some(result)` when the optimizer has a momentum coefficient.
    fn set_momentum(&mut self, m: f64) -> Option<candle_tricks::Result<()>>;
}

macro_rules! opt {
    ($T:ident, $name:literal, $momentum:expr) => {
        impl Opt for $T {
            fn name(&self) -> &'static str {
                $name
            }
            fn set_lr(&mut self, lr: f64) {
                self.set_learning_rate(lr)
            }
            fn try_set_lr(&mut self, lr: f64) -> candle_tricks::Result<()> {
                self.try_set_learning_rate(lr)
            }
            fn step_grads(&mut self, g: &GradStore) -> candle_tricks::Result<()> {
                self.try_step(g)
            }
            fn state(&self) -> HashMap<String, Tensor> {
                self.state_dict().expect("state_dict")
            }
            fn load(&mut self, sd: &HashMap<String, Tensor>) -> candle_tricks::Result<()> {
                self.load_state_dict(sd)
            }
            fn lr(&self) -> f64 {
                self.learning_rate()
            }
            fn set_momentum(&mut self, m: f64) -> Option<candle_tricks::Result<()>> {
                let f: fn(&mut Self, f64) -> Option<candle_tricks::Result<()>> = $momentum;
                f(self, m)
            }
        }
    };
}
opt!(Sgd, "Sgd", |o, m| Some(Momentum::set_momentum(o, m)));
opt!(Adam, "Adam", |o, m| Some(Momentum::set_momentum(o, m)));
opt!(AdamW, "AdamW", |o, m| Some(Momentum::set_momentum(o, m)));
opt!(RmsProp, "RmsProp", |o, m| Some(Momentum::set_momentum(
    o, m
)));
opt!(Lion, "Lion", |o, m| Some(Momentum::set_momentum(o, m)));
opt!(Adagrad, "Adagrad", |_, _| None);

/// Every optimizer over `groups` (momentum on where it exists, so its buffer is used).
fn all(groups: impl Fn() -> ParamGroups) -> candle_tricks::Result<Vec<Box<dyn Opt>>> {
    Ok(vec![
        Box::new(Sgd::with_groups(
            groups(),
            SgdConfig::default().with_lr(0.1).with_momentum(0.9),
        )?),
        Box::new(Adam::with_groups(groups(), AdamConfig::default())?),
        Box::new(AdamW::with_groups(groups(), AdamWConfig::default())?),
        Box::new(RmsProp::with_groups(
            groups(),
            RmsPropConfig::default().with_momentum(0.5),
        )?),
        Box::new(Lion::with_groups(groups(), LionConfig::default())?),
        Box::new(Adagrad::with_groups(groups(), AdagradConfig::default())?),
    ])
}

fn param() -> R<Var> {
    Ok(Var::new(&[1.0f32, -2.0, 3.0], &Device::Cpu)?)
}

fn grads(w: &Var) -> R<GradStore> {
    Ok((w.as_tensor() * 2.0)?.sqr()?.sum_all()?.backward()?)
}

fn bits(w: &Var) -> R<Vec<u32>> {
    Ok(w.as_tensor()
        .to_vec1::<f32>()?
        .iter()
        .map(|v| v.to_bits())
        .collect())
}

fn state_bits(sd: &HashMap<String, Tensor>) -> Vec<(String, Vec<u64>)> {
    let mut v: Vec<_> = sd
        .iter()
        .map(|(k, t)| {
            let vals = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
            let b = vals
                .to_vec1::<f64>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect();
            (k.clone(), b)
        })
        .collect();
    v.sort();
    v
}

fn assert_err_has<T: std::fmt::Debug>(r: candle_tricks::Result<T>, needles: &[&str]) {
    let msg = r.expect_err("expected an error").to_string();
    for n in needles {
        assert!(msg.contains(n), "`{msg}` lacks `{n}`");
    }
}

#[test]
fn invalid_learning_rate_is_refused_before_any_weight_changes() -> R<()> {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1e-3] {
        let w = param()?;
        for mut opt in all(|| vec![w.clone()].into())? {
            opt.step_grads(&grads(&w)?)?;
            let buffers = |o: &dyn Opt| {
                let mut sd = o.state();
                sd.remove("__meta.lr"); // holds the rate just set
                state_bits(&sd)
            };
            let before = (bits(&w)?, buffers(&*opt));
            // Checked at once by the fallible setter, the rate unchanged.
            let lr = opt.lr();
            assert_err_has(opt.try_set_lr(bad), &[opt.name(), "lr"]);
            assert_eq!(opt.lr(), lr);
            // candle's `set_learning_rate` cannot fail: the next step refuses the rate.
            opt.set_lr(bad);
            assert_err_has(opt.step_grads(&grads(&w)?), &[opt.name(), "lr"]);
            assert_eq!((bits(&w)?, buffers(&*opt)), before, "{}", opt.name());
            // A valid rate makes it usable again.
            opt.set_lr(1e-3);
            opt.step_grads(&grads(&w)?)?;
            assert!(bits(&w)? != before.0);
        }
    }
    Ok(())
}

/// A custom schedule with a bug.
struct Broken;
impl LrSchedule for Broken {
    fn lr(&self, step: usize) -> f64 {
        if step < 2 {
            0.1
        } else {
            f64::NAN
        }
    }
}

#[test]
fn a_schedule_returning_nan_is_an_error() -> R<()> {
    let w = param()?;
    let mut opt = AdamW::new(vec![w.clone()], AdamWConfig::default())?;
    let mut sched = Scheduler::new(Broken);
    assert_eq!(sched.step(&mut opt)?, 0.1);
    assert_eq!(sched.step(&mut opt)?, 0.1);
    assert_err_has(sched.step(&mut opt), &["Scheduler", "NaN", "step 2"]);
    assert_eq!(opt.learning_rate(), 0.1);
    assert_eq!(sched.current_step(), 2);
    Ok(())
}

#[test]
fn momentum_is_validated_like_the_constructor() -> R<()> {
    let w = param()?;
    for mut opt in all(|| vec![w.clone()].into())? {
        for bad in [1.0, 1.5, -0.1, f64::NAN] {
            if let Some(r) = opt.set_momentum(bad) {
                assert_err_has(r, &[opt.name()]);
            }
        }
        let before = bits(&w)?;
        opt.step_grads(&grads(&w)?)?;
        assert!(bits(&w)?.iter().zip(&before).all(|(a, b)| a != b));
        assert!(w
            .as_tensor()
            .to_vec1::<f32>()?
            .iter()
            .all(|v| v.is_finite()));
    }
    // The constructors refuse the same values (SGD's momentum is < 1, unlike PyTorch's check).
    assert!(Sgd::new(vec![param()?], SgdConfig::default().with_momentum(1.0)).is_err());
    assert!(RmsProp::new(vec![param()?], RmsPropConfig::default().with_momentum(1.0)).is_err());
    Ok(())
}

#[test]
fn load_state_dict_refuses_invalid_values_without_changes() -> R<()> {
    type Corrupt = fn(&mut HashMap<String, Tensor>);
    let cases: Vec<(&str, Corrupt, &[&str])> = vec![
        (
            "NaN lr",
            |m| {
                m.insert(
                    "__meta.lr".into(),
                    Tensor::new(f64::NAN, &Device::Cpu).unwrap(),
                );
            },
            &["lr"],
        ),
        (
            "negative lr",
            |m| {
                m.insert(
                    "__meta.lr".into(),
                    Tensor::new(-0.5f64, &Device::Cpu).unwrap(),
                );
            },
            &["lr"],
        ),
        (
            "negative step",
            |m| {
                m.insert("0.step".into(), Tensor::new(-3f64, &Device::Cpu).unwrap());
            },
            &["0.step"],
        ),
        (
            "fractional step",
            |m| {
                m.insert("0.step".into(), Tensor::new(2.5f64, &Device::Cpu).unwrap());
            },
            &["0.step"],
        ),
        (
            "NaN skipped count",
            |m| {
                m.insert(
                    "__meta.skipped_steps".into(),
                    Tensor::new(f64::NAN, &Device::Cpu).unwrap(),
                );
            },
            &["skipped_steps"],
        ),
        (
            "NaN lr_mult",
            |m| {
                m.insert(
                    "__meta.group0.lr_mult".into(),
                    Tensor::new(f64::NAN, &Device::Cpu).unwrap(),
                );
            },
            &["lr_mult"],
        ),
        (
            "bad policy",
            |m| {
                m.insert(
                    "__meta.non_finite".into(),
                    Tensor::new(7f64, &Device::Cpu).unwrap(),
                );
            },
            &["non_finite"],
        ),
        (
            "Inf in a state buffer",
            |m| {
                let key = m
                    .keys()
                    .find(|k| k.starts_with("0.") && !k.ends_with(".step"))
                    .cloned()
                    .expect("a state buffer");
                let t = &m[&key];
                let inf = Tensor::full(f32::INFINITY, t.shape(), &Device::Cpu).unwrap();
                m.insert(key, inf);
            },
            &["non-finite", "state buffer"],
        ),
    ];
    for (what, corrupt, needles) in cases {
        let w = param()?;
        for mut opt in all(|| vec![w.clone()].into())? {
            opt.step_grads(&grads(&w)?)?;
            let mut sd = opt.state();
            if what == "bad policy"
                || sd
                    .keys()
                    .any(|k| k.starts_with("0.") && !k.ends_with(".step"))
            {
                corrupt(&mut sd);
            } else {
                continue;
            }
            let before = state_bits(&opt.state());
            let r = opt.load(&sd);
            let msg = format!("{what} ({})", opt.name());
            assert!(r.is_err(), "{msg}: accepted");
            let mut needles = needles.to_vec();
            needles.push(opt.name());
            assert_err_has(r, &needles);
            assert_eq!(state_bits(&opt.state()), before, "{msg}: state changed");
            opt.step_grads(&grads(&w)?)?;
            assert!(
                w.as_tensor()
                    .to_vec1::<f32>()?
                    .iter()
                    .all(|v| v.is_finite()),
                "{msg}"
            );
        }
    }
    Ok(())
}

#[test]
fn f64_parameters_are_refused_loudly_never_skipped() -> R<()> {
    let w32 = param()?;
    let w64 = Var::new(&[1.0f64, 2.0], &Device::Cpu)?;
    // Mixed: used to update only the f32 one.
    let mixed = || -> ParamGroups {
        ParamGroups::new(vec![ParamGroup::named(vec![
            ("w32".into(), w32.clone()),
            ("w64".into(), w64.clone()),
        ])])
    };
    let only64 = || -> ParamGroups { vec![w64.clone()].into() };
    for make in [&mixed as &dyn Fn() -> ParamGroups, &only64] {
        let r = Sgd::with_groups(make(), SgdConfig::default());
        assert_err_has(
            r.map(|_| ()),
            &["Sgd", "unsupported dtype", "F64", "f32, f16 or bf16"],
        );
        assert_err_has(
            AdamW::with_groups(make(), AdamWConfig::default()).map(|_| ()),
            &["AdamW", "F64"],
        );
        assert_err_has(
            Adam::with_groups(make(), AdamConfig::default()).map(|_| ()),
            &["Adam", "F64"],
        );
        assert_err_has(
            RmsProp::with_groups(make(), RmsPropConfig::default()).map(|_| ()),
            &["RmsProp", "F64"],
        );
        assert_err_has(
            Adagrad::with_groups(make(), AdagradConfig::default()).map(|_| ()),
            &["Adagrad", "F64"],
        );
        assert_err_has(
            Lion::with_groups(make(), LionConfig::default()).map(|_| ()),
            &["Lion", "F64"],
        );
    }
    assert_err_has(
        Sgd::with_groups(mixed(), SgdConfig::default()).map(|_| ()),
        &["parameter w64"],
    );
    // Integer vars are buffers (no gradient exists for them): left out, as candle-nn does.
    let count = Var::zeros((), DType::I64, &Device::Cpu)?;
    let opt = AdamW::new(vec![w32.clone(), count], AdamWConfig::default())?;
    assert_eq!(opt.num_params(), 1);
    Ok(())
}

#[test]
fn a_parameter_in_two_groups_is_refused() -> R<()> {
    let (a, b) = (param()?, param()?);
    let two_groups = || {
        ParamGroups::new(vec![
            ParamGroup::named(vec![("a".into(), a.clone()), ("b".into(), b.clone())]),
            ParamGroup::named(vec![("a_again".into(), a.clone())]).with_lr_mult(0.1),
        ])
    };
    let err = |r: candle_tricks::Result<()>| r.expect_err("duplicate accepted").to_string();
    for msg in [
        err(Sgd::with_groups(two_groups(), SgdConfig::default()).map(|_| ())),
        err(AdamW::with_groups(two_groups(), AdamWConfig::default()).map(|_| ())),
        err(Lion::with_groups(two_groups(), LionConfig::default()).map(|_| ())),
    ] {
        assert!(
            msg.contains("a_again") && msg.contains("same var as a"),
            "{msg}"
        );
        assert!(msg.contains("group 1") && msg.contains("group 0"), "{msg}");
    }
    // Twice in one plain list, too.
    let r = Adam::new(vec![a.clone(), a.clone()], AdamConfig::default());
    assert!(r.is_err());
    // Distinct vars with equal values are fine.
    assert!(AdamW::new(vec![a, b], AdamWConfig::default()).is_ok());
    Ok(())
}

#[test]
fn set_learning_rate_reaches_the_state_dict() -> R<()> {
    let w = param()?;
    let mut opt = AdamW::new(vec![w.clone()], AdamWConfig::default())?;
    opt.try_set_learning_rate(0.25)?;
    opt.try_step(&grads(&w)?)?;
    let sd = opt.state_dict()?;
    assert_eq!(sd["__meta.lr"].to_scalar::<f64>()?, 0.25);
    assert_eq!(opt.config().lr, 0.25);
    Ok(())
}

#[test]
fn ema_refuses_a_non_finite_loaded_average() -> R<()> {
    use candle_tricks::optim::{Ema, EmaConfig};
    let w = param()?;
    let mut ema = Ema::new(vec![("w".into(), w.clone())], EmaConfig::default())?;
    ema.update(1)?;
    let mut sd = ema.state_dict()?;
    sd.insert(
        "ema.w".into(),
        Tensor::new(&[1f32, f32::NAN, 0.], &Device::Cpu)?,
    );
    assert_err_has(ema.load_state_dict(&sd), &["Ema", "non-finite", "ema.w"]);
    let avg = ema.weights()?;
    assert!(avg["w"].to_vec1::<f32>()?.iter().all(|v| v.is_finite()));
    Ok(())
}
