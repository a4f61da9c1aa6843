//! Bad input for the optimizers, clipping, accumulation, EMA and the loss scaler.

use super::*;

/// A state dict of `opt` after one step, with `key` replaced by `value` (or removed for `None`).
fn edited_state<O: Optimizer + OptimizerState>(
    opt: &mut O,
    g: &candle_core::backprop::GradStore,
    key: &str,
    value: Option<f64>,
) -> Result<HashMap<String, Tensor>, Got> {
    opt.step(g)?;
    let mut sd = opt.state_dict()?;
    if !sd.contains_key(key) {
        return Err(Got::Wrong(format!(
            "no `{key}` in the state dict: {:?}",
            sd.keys().collect::<Vec<_>>()
        )));
    }
    match value {
        Some(v) => {
            let old = &sd[key];
            let nt = Tensor::full(v, old.shape(), &cpu())?.to_dtype(old.dtype())?;
            sd.insert(key.to_string(), nt);
        }
        None => {
            sd.remove(key);
        }
    }
    Ok(sd)
}

macro_rules! optimizer_cases {
    ($c:ident, $T:ident, $C:ident, $name:literal, $bad_cfgs:expr $(,)?) => {{
        let name: &'static str = $name;
        let bad: Vec<(&str, $C)> = $bad_cfgs;
        for (what, cfg) in bad {
            $c.err(&format!("{name}: config {what}"), name, move || {
                let (w, _) = var_and_grads();
                $T::new(vec![w], cfg)?;
                Ok(())
            });
        }
        for (what, lr) in [("NaN", f64::NAN), ("Inf", f64::INFINITY), ("-1", -1.0)] {
            $c.err(
                &format!("{name}: set_learning_rate({what}) then step"),
                name,
                move || {
                    let (w, g) = var_and_grads();
                    let before = w.as_tensor().copy()?;
                    let mut o = $T::new(vec![w.clone()], $C::default())?;
                    o.set_learning_rate(lr);
                    let r = o.step(&g);
                    // Refused without touching the weights.
                    close("weights", w.as_tensor(), &before, 0.0)?;
                    r?;
                    Ok(())
                },
            );
            $c.err(
                &format!("{name}: try_set_learning_rate({what})"),
                name,
                move || {
                    let (w, _) = var_and_grads();
                    let mut o = $T::new(vec![w], $C::default())?;
                    o.try_set_learning_rate(lr)?;
                    Ok(())
                },
            );
        }
        $c.err(&format!("{name}: f64 parameter"), name, move || {
            let w = Var::from_tensor(&td((2, 2), DType::F64))?;
            $T::new(vec![w], $C::default())?;
            Ok(())
        });
        $c.err(&format!("{name}: u32 parameter"), name, move || {
            let w = Var::from_tensor(&td((2, 2), DType::U32))?;
            $T::new(vec![w], $C::default())?;
            Ok(())
        });
        $c.err(
            &format!("{name}: a var in two param groups"),
            name,
            move || {
                let (w, _) = var_and_grads();
                let groups = ParamGroups::new(vec![
                    ParamGroup::new(vec![w.clone()]),
                    ParamGroup::new(vec![w]).with_lr_mult(0.1),
                ]);
                $T::with_groups(groups, $C::default())?;
                Ok(())
            },
        );
        $c.err(
            &format!("{name}: param group lr_mult NaN"),
            name,
            move || {
                let (w, _) = var_and_grads();
                let groups =
                    ParamGroups::new(vec![ParamGroup::new(vec![w]).with_lr_mult(f64::NAN)]);
                $T::with_groups(groups, $C::default())?;
                Ok(())
            },
        );
        $c.err(
            &format!("{name}: load_state_dict with a missing step"),
            name,
            move || {
                let (w, g) = var_and_grads();
                let mut o = $T::new(vec![w], $C::default())?;
                let sd = edited_state(&mut o, &g, "0.step", None)?;
                o.load_state_dict(&sd)?;
                Ok(())
            },
        );
        $c.err(
            &format!("{name}: load_state_dict with a negative step"),
            name,
            move || {
                let (w, g) = var_and_grads();
                let mut o = $T::new(vec![w], $C::default())?;
                let sd = edited_state(&mut o, &g, "0.step", Some(-3.0))?;
                o.load_state_dict(&sd)?;
                Ok(())
            },
        );
        $c.err(
            &format!("{name}: load_state_dict with a NaN step"),
            name,
            move || {
                let (w, g) = var_and_grads();
                let mut o = $T::new(vec![w], $C::default())?;
                let sd = edited_state(&mut o, &g, "0.step", Some(f64::NAN))?;
                o.load_state_dict(&sd)?;
                Ok(())
            },
        );
        $c.err(
            &format!("{name}: load_state_dict from another model"),
            name,
            move || {
                let (w, g) = var_and_grads();
                let mut o = $T::new(vec![w], $C::default())?;
                o.step(&g)?;
                let sd = o.state_dict()?;
                let other = Var::from_tensor(&t((2, 3)))?;
                let other2 = Var::from_tensor(&t(5))?;
                let mut o2 = $T::new(vec![other, other2], $C::default())?;
                o2.load_state_dict(&sd)?;
                Ok(())
            },
        );
        $c.err(
            &format!("{name}: load_state_dict of an empty map"),
            name,
            move || {
                let (w, _) = var_and_grads();
                let mut o = $T::new(vec![w], $C::default())?;
                o.load_state_dict(&HashMap::new())?;
                Ok(())
            },
        );
        $c.err(&format!("{name}: NaN gradient"), name, move || {
            let (w, _) = var_and_grads();
            let g = (w.as_tensor() * f64::NAN)?.sum_all()?.backward()?;
            let mut o = $T::new(vec![w], $C::default())?;
            o.step(&g)?;
            Ok(())
        });
    }};
}

/// `set_momentum` with an out-of-range value and with NaN: refused, naming the optimizer.
macro_rules! momentum_cases {
    ($c:ident, $T:ident, $C:ident, $name:literal, $m:expr) => {{
        let name: &'static str = $name;
        let m: f64 = $m;
        $c.err(&format!("{name}: set_momentum({m})"), name, move || {
            let (w, _) = var_and_grads();
            let mut o = $T::new(vec![w], $C::default())?;
            Momentum::set_momentum(&mut o, m)?;
            Ok(())
        });
        $c.err(&format!("{name}: set_momentum(NaN)"), name, move || {
            let (w, _) = var_and_grads();
            let mut o = $T::new(vec![w], $C::default())?;
            Momentum::set_momentum(&mut o, f64::NAN)?;
            Ok(())
        });
    }};
}

pub(super) fn optim_cases() -> Vec<Case> {
    let mut c = Cases::new("optim");
    optimizer_cases!(
        c,
        Sgd,
        SgdConfig,
        "Sgd",
        vec![
            ("lr NaN", SgdConfig::default().with_lr(f64::NAN)),
            ("momentum -1", SgdConfig::default().with_momentum(-1.0)),
            (
                "dampening NaN",
                SgdConfig::default().with_dampening(f64::NAN)
            ),
            (
                "weight_decay -1",
                SgdConfig::default().with_weight_decay(-1.0)
            ),
            (
                "nesterov without momentum",
                SgdConfig::default().with_nesterov(true).with_momentum(0.0)
            ),
        ],
    );
    momentum_cases!(c, Sgd, SgdConfig, "Sgd", f64::INFINITY);
    optimizer_cases!(
        c,
        Adam,
        AdamConfig,
        "Adam",
        vec![
            ("beta1 1.0", AdamConfig::default().with_betas(1.0, 0.999)),
            ("beta2 NaN", AdamConfig::default().with_betas(0.9, f64::NAN)),
            ("eps 0", AdamConfig::default().with_eps(0.0)),
            ("eps -1", AdamConfig::default().with_eps(-1.0)),
        ],
    );
    momentum_cases!(c, Adam, AdamConfig, "Adam", 1.0);
    optimizer_cases!(
        c,
        AdamW,
        AdamWConfig,
        "AdamW",
        vec![
            ("lr Inf", AdamWConfig::default().with_lr(f64::INFINITY)),
            (
                "weight_decay NaN",
                AdamWConfig::default().with_weight_decay(f64::NAN)
            ),
            ("beta1 -0.1", AdamWConfig::default().with_betas(-0.1, 0.999)),
        ],
    );
    momentum_cases!(c, AdamW, AdamWConfig, "AdamW", 1.0);
    optimizer_cases!(
        c,
        RmsProp,
        RmsPropConfig,
        "RmsProp",
        vec![
            ("alpha 1.5", RmsPropConfig::default().with_alpha(1.5)),
            ("alpha NaN", RmsPropConfig::default().with_alpha(f64::NAN)),
            ("eps NaN", RmsPropConfig::default().with_eps(f64::NAN)),
            ("momentum -1", RmsPropConfig::default().with_momentum(-1.0)),
        ],
    );
    momentum_cases!(c, RmsProp, RmsPropConfig, "RmsProp", -0.5);
    optimizer_cases!(
        c,
        Adagrad,
        AdagradConfig,
        "Adagrad",
        vec![
            ("lr_decay -1", AdagradConfig::default().with_lr_decay(-1.0)),
            (
                "initial accumulator NaN",
                AdagradConfig::default().with_initial_accumulator_value(f64::NAN)
            ),
            ("eps 0", AdagradConfig::default().with_eps(0.0)),
        ],
    );
    optimizer_cases!(
        c,
        Lion,
        LionConfig,
        "Lion",
        vec![
            ("beta1 1.5", LionConfig::default().with_betas(1.5, 0.99)),
            ("beta2 NaN", LionConfig::default().with_betas(0.9, f64::NAN)),
            ("lr -1", LionConfig::default().with_lr(-1.0)),
        ],
    );
    momentum_cases!(c, Lion, LionConfig, "Lion", 1.5);
    // A momentum of exactly 1 never forgets (SGD) or zeroes Adam's bias correction
    // 1 - beta1^t: refused by every optimizer with a momentum.
    c.err("Sgd: set_momentum(1.0)", "Sgd", || {
        let (w, _) = var_and_grads();
        let mut o = Sgd::new(vec![w], SgdConfig::default())?;
        o.set_momentum(1.0)?;
        Ok(())
    });

    // clipping
    for (name, m) in [("NaN", f64::NAN), ("-1", -1.0), ("Inf", f64::INFINITY)] {
        c.err(
            &format!("clip_grad_norm: max_norm {name}"),
            "clip_grad_norm",
            move || {
                let (w, mut g) = var_and_grads();
                clip_grad_norm(&mut g, &[w], m)?;
                Ok(())
            },
        );
    }
    c.err(
        "clip_grad_norm_inf: max_norm NaN",
        "clip_grad_norm_inf",
        || {
            let (w, mut g) = var_and_grads();
            clip_grad_norm_inf(&mut g, &[w], f64::NAN)?;
            Ok(())
        },
    );
    c.err("clip_grad_value: clip -1", "clip_grad_value", || {
        let (w, mut g) = var_and_grads();
        clip_grad_value(&mut g, &[w], -1.0)?;
        Ok(())
    });
    c.err("agc: clipping -1", "agc", || {
        let (w, mut g) = var_and_grads();
        agc(&mut g, &[w], -1.0, 1e-3)?;
        Ok(())
    });
    c.err("agc: eps NaN", "agc", || {
        let (w, mut g) = var_and_grads();
        agc(&mut g, &[w], 0.01, f64::NAN)?;
        Ok(())
    });
    c.val(
        "clip_grad_norm: NaN gradient returns NaN, scales nothing",
        || {
            // Documented: the optimizer's NonFinite policy then sees the bad gradient.
            let (w, _) = var_and_grads();
            let mut g = (w.as_tensor() * f64::NAN)?.sum_all()?.backward()?;
            let n = clip_grad_norm(&mut g, std::slice::from_ref(&w), 1.0)?;
            ensure(n.is_nan(), format!("norm {n}"))
        },
    );
    c.val(
        "clip_grad_norm: returns the norm, clips to max_norm",
        || {
            let (w, mut g) = var_and_grads();
            let want = (w.as_tensor() * 2.0)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f32>()?
                .sqrt() as f64;
            let n = clip_grad_norm(&mut g, std::slice::from_ref(&w), 0.5)?;
            ensure(
                (n - want).abs() < 1e-4 * want,
                format!("norm {n} vs {want}"),
            )?;
            let after = g
                .get(w.as_tensor())
                .unwrap()
                .sqr()?
                .sum_all()?
                .to_scalar::<f32>()?
                .sqrt();
            ensure((after - 0.5).abs() < 1e-4, format!("clipped norm {after}"))
        },
    );

    // GradAccumulator, Ema, GradScaler
    c.err("GradAccumulator: n_micro 0", "GradAccumulator", || {
        let (w, _) = var_and_grads();
        GradAccumulator::new(vec![w], 0)?;
        Ok(())
    });
    c.err(
        "GradAccumulator: add past n_micro",
        "GradAccumulator",
        || {
            let (w, g) = var_and_grads();
            let mut a = GradAccumulator::new(vec![w], 1)?;
            a.add(&g)?;
            a.add(&g)?;
            Ok(())
        },
    );
    c.err(
        "GradAccumulator: take before any add",
        "GradAccumulator",
        || {
            let (w, _) = var_and_grads();
            GradAccumulator::new(vec![w], 2)?.take()?;
            Ok(())
        },
    );
    let ema = "Ema";
    for (name, cfg) in [
        ("decay 1.5", EmaConfig::default().with_decay(1.5)),
        ("decay NaN", EmaConfig::default().with_decay(f64::NAN)),
        ("min_decay -1", EmaConfig::default().with_min_decay(-1.0)),
    ] {
        c.err(&format!("Ema: {name}"), ema, move || {
            let (w, _) = var_and_grads();
            Ema::new(vec![("w".into(), w)], cfg)?;
            Ok(())
        });
    }
    c.err("Ema: update_with_decay(NaN)", ema, || {
        let (w, _) = var_and_grads();
        Ema::new(vec![("w".into(), w)], EmaConfig::default())?.update_with_decay(f64::NAN)?;
        Ok(())
    });
    c.err("Ema: load_state_dict of an empty map", ema, || {
        let (w, _) = var_and_grads();
        Ema::new(vec![("w".into(), w)], EmaConfig::default())?.load_state_dict(&HashMap::new())?;
        Ok(())
    });
    c.err(
        "Ema: load_state_dict with a wrong-shape shadow",
        ema,
        || {
            let (w, _) = var_and_grads();
            let mut e = Ema::new(vec![("w".into(), w)], EmaConfig::default())?;
            let mut sd = e.state_dict()?;
            for v in sd.values_mut() {
                if v.dims() == [2, 3] {
                    *v = t((3, 2));
                }
            }
            e.load_state_dict(&sd)?;
            Ok(())
        },
    );
    c.err("Ema: duplicate names", ema, || {
        let (w, _) = var_and_grads();
        Ema::new(
            vec![("w".into(), w.clone()), ("w".into(), w)],
            EmaConfig::default(),
        )?;
        Ok(())
    });
    let gs = "GradScaler";
    for (name, cfg) in [
        (
            "init_scale 0",
            GradScalerConfig::default().with_init_scale(0.0),
        ),
        (
            "init_scale NaN",
            GradScalerConfig::default().with_init_scale(f64::NAN),
        ),
        (
            "growth_factor 0.5",
            GradScalerConfig::default().with_growth_factor(0.5),
        ),
        (
            "backoff_factor 1.5",
            GradScalerConfig::default().with_backoff_factor(1.5),
        ),
        (
            "growth_interval 0",
            GradScalerConfig::default().with_growth_interval(0),
        ),
    ] {
        c.err(&format!("GradScaler: {name}"), gs, move || {
            GradScaler::new(cfg)?;
            Ok(())
        });
    }
    c.err("GradScaler: load_state_dict with a NaN scale", gs, || {
        let mut sc = GradScaler::new(GradScalerConfig::default())?;
        let mut sd = sc.state_dict()?;
        for v in sd.values_mut() {
            if v.dtype().is_float() {
                *v = Tensor::full(f64::NAN, v.shape(), &cpu())?.to_dtype(v.dtype())?;
            }
        }
        sc.load_state_dict(&sd)?;
        Ok(())
    });
    c.err("GradScaler: load_state_dict of an empty map", gs, || {
        GradScaler::new(GradScalerConfig::default())?.load_state_dict(&HashMap::new())?;
        Ok(())
    });
    c.err("GradScaler: scale an integer loss", gs, || {
        let sc = GradScaler::new(GradScalerConfig::default())?;
        sc.scale(&Tensor::new(3u32, &cpu())?)?;
        Ok(())
    });
    c.list
}
