//! Bad input for Muon, MuonWithAdamW, ScheduleFreeAdamW, Lookahead and SAM: out-of-range
//! hyper-parameters, parameters of the wrong rank or dtype, edited state dicts, stepping in the
//! wrong mode and non-finite gradients.

use candle_tricks::optim::{
    AdamWConfig, Lookahead, LookaheadConfig, Muon, MuonConfig, MuonWithAdamW, Sam, SamConfig,
    ScheduleFreeAdamW, ScheduleFreeAdamWConfig,
};

use super::*;

fn sgd_over(w: &Var) -> candle_core::Result<Sgd> {
    Sgd::new(vec![w.clone()], SgdConfig::default())
}

/// A state dict of `o` after one step with `key` set to `value` loads with an error.
fn edited_state<O: OptimizerState>(
    o: &mut O,
    key: &str,
    value: Tensor,
) -> std::result::Result<(), candle_tricks::Error> {
    let mut sd = o.state_dict()?;
    sd.insert(key.to_string(), value);
    o.load_state_dict(&sd)
}

fn muon_cases(c: &mut Cases) {
    let m = MuonConfig::default();
    for (what, cfg) in [
        ("lr -1", m.with_lr(-1.0)),
        ("momentum 1", m.with_momentum(1.0)),
        ("eps 0", m.with_eps(0.0)),
        ("ns_steps 100", m.with_ns_steps(100)),
        (
            "coefficient NaN",
            m.with_ns_coefficients([3.4, f64::NAN, 2.0]),
        ),
        ("weight_decay -0.1", m.with_weight_decay(-0.1)),
    ] {
        c.err(&format!("Muon: config {what}"), "Muon", move || {
            let (w, _) = var_and_grads();
            Muon::new(vec![w], cfg)?;
            Ok(())
        });
    }
    for dims in [vec![6], vec![2, 3, 1]] {
        c.err(
            &format!("Muon: {}-D parameter", dims.len()),
            "Muon",
            move || {
                let w = Var::zeros(dims, DType::F32, &cpu())?;
                Muon::new(vec![w], MuonConfig::default())?;
                Ok(())
            },
        );
    }
    c.err("Muon: f64 parameter", "Muon", || {
        let w = Var::from_tensor(&td((2, 2), DType::F64))?;
        Muon::new(vec![w], MuonConfig::default())?;
        Ok(())
    });
    c.err("Muon: NaN gradient", "Muon", || {
        let (w, _) = var_and_grads();
        let g = (w.as_tensor() * f64::NAN)?.sum_all()?.backward()?;
        let before = w.as_tensor().copy()?;
        let mut o = Muon::new(vec![w.clone()], MuonConfig::default())?;
        let r = o.try_step(&g);
        close("weights", w.as_tensor(), &before, 0.0)?;
        r?;
        Ok(())
    });
    for (key, value) in [
        ("__meta.adjust_lr_fn", 5.0),
        ("__meta.ns_steps", 2.5),
        ("__meta.momentum", 1.0),
        ("0.step", -1.0),
    ] {
        c.err(
            &format!("Muon: load_state_dict with {key} = {value}"),
            "Muon",
            move || {
                let (w, g) = var_and_grads();
                let mut o = Muon::new(vec![w], MuonConfig::default())?;
                o.try_step(&g)?;
                edited_state(&mut o, key, Tensor::new(value, &cpu())?)?;
                Ok(())
            },
        );
    }
    c.err("MuonWithAdamW: no parameters", "MuonWithAdamW", || {
        let varmap = VarMap::new();
        MuonWithAdamW::from_varmap(&varmap, MuonConfig::default(), AdamWConfig::default())?;
        Ok(())
    });
    c.err("MuonWithAdamW: predicate selects a bias", "Muon", || {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &cpu());
        let _fc = candle_nn::linear(3, 3, vb.pp("fc"))?;
        MuonWithAdamW::from_varmap_with(
            &varmap,
            MuonConfig::default(),
            AdamWConfig::default(),
            |_, _| true,
        )?;
        Ok(())
    });
    c.err("MuonWithAdamW: NaN gradient", "MuonWithAdamW", || {
        let (w, _) = var_and_grads();
        let g = (w.as_tensor() * f64::INFINITY)?.sum_all()?.backward()?;
        let mut o = <MuonWithAdamW as Optimizer>::new(
            vec![w],
            (MuonConfig::default(), AdamWConfig::default()),
        )?;
        o.try_step(&g)?;
        Ok(())
    });
}

fn schedule_free_cases(c: &mut Cases) {
    const SF: &str = "ScheduleFreeAdamW";
    let s = ScheduleFreeAdamWConfig::default();
    for (what, cfg) in [
        ("lr NaN", s.with_lr(f64::NAN)),
        ("beta1 0", s.with_betas(0.0, 0.999)),
        ("beta1 1", s.with_betas(1.0, 0.999)),
        ("beta2 -0.1", s.with_betas(0.9, -0.1)),
        ("eps 0", s.with_eps(0.0)),
        ("r -1", s.with_r(-1.0)),
        ("weight_lr_power Inf", s.with_weight_lr_power(f64::INFINITY)),
        ("weight_decay -1", s.with_weight_decay(-1.0)),
    ] {
        c.err(&format!("{SF}: config {what}"), SF, move || {
            let (w, _) = var_and_grads();
            ScheduleFreeAdamW::new(vec![w], cfg)?;
            Ok(())
        });
    }
    c.err(&format!("{SF}: step in eval mode"), SF, || {
        let (w, g) = var_and_grads();
        let mut o = ScheduleFreeAdamW::new(vec![w.clone()], ScheduleFreeAdamWConfig::default())?;
        o.try_step(&g)?;
        o.eval()?;
        let before = w.as_tensor().copy()?;
        let r = o.try_step(&g);
        close("weights", w.as_tensor(), &before, 0.0)?;
        r?;
        Ok(())
    });
    c.err(&format!("{SF}: NaN gradient"), SF, || {
        let (w, _) = var_and_grads();
        let g = (w.as_tensor() * f64::NAN)?.sum_all()?.backward()?;
        let mut o = ScheduleFreeAdamW::new(vec![w], ScheduleFreeAdamWConfig::default())?;
        o.try_step(&g)?;
        Ok(())
    });
    c.err(&format!("{SF}: f64 parameter"), SF, || {
        let w = Var::from_tensor(&td((2, 2), DType::F64))?;
        ScheduleFreeAdamW::new(vec![w], ScheduleFreeAdamWConfig::default())?;
        Ok(())
    });
    for (key, value) in [
        ("__meta.k", -1.0),
        ("__meta.group0.weight_sum", f64::NAN),
        ("__meta.warmup_steps", 0.5),
        ("__meta.beta1", 0.0),
        ("0.z", f64::NAN),
    ] {
        c.err(
            &format!("{SF}: load_state_dict with {key} = {value}"),
            SF,
            move || {
                let (w, g) = var_and_grads();
                let mut o =
                    ScheduleFreeAdamW::new(vec![w.clone()], ScheduleFreeAdamWConfig::default())?;
                o.try_step(&g)?;
                let t = if key == "0.z" {
                    Tensor::full(f32::NAN, w.shape(), &cpu())?
                } else {
                    Tensor::new(value, &cpu())?
                };
                edited_state(&mut o, key, t)?;
                Ok(())
            },
        );
    }
    c.err(
        &format!("{SF}: load_state_dict without train_mode"),
        SF,
        || {
            let (w, g) = var_and_grads();
            let mut o = ScheduleFreeAdamW::new(vec![w], ScheduleFreeAdamWConfig::default())?;
            o.try_step(&g)?;
            let mut sd = o.state_dict()?;
            sd.remove("__meta.train_mode");
            o.load_state_dict(&sd)?;
            Ok(())
        },
    );
}

fn wrapper_cases(c: &mut Cases) {
    let l = LookaheadConfig::default();
    for (what, cfg) in [
        ("k 0", l.with_k(0)),
        ("alpha -0.5", l.with_alpha(-0.5)),
        ("alpha 2", l.with_alpha(2.0)),
        ("alpha NaN", l.with_alpha(f64::NAN)),
    ] {
        c.err(
            &format!("Lookahead: config {what}"),
            "Lookahead",
            move || {
                let (w, _) = var_and_grads();
                Lookahead::new(sgd_over(&w)?, vec![w], cfg)?;
                Ok(())
            },
        );
    }
    c.err("Lookahead: no vars", "Lookahead", || {
        let (w, _) = var_and_grads();
        Lookahead::new(sgd_over(&w)?, vec![], LookaheadConfig::default())?;
        Ok(())
    });
    c.err("Lookahead: f64 var", "Lookahead", || {
        let (w, _) = var_and_grads();
        let v = Var::from_tensor(&td((2, 2), DType::F64))?;
        Lookahead::new(sgd_over(&w)?, vec![v], LookaheadConfig::default())?;
        Ok(())
    });
    for (what, key) in [
        ("slow weights of the wrong shape", "lookahead.0.slow"),
        ("NaN slow weights", "lookahead.0.slow"),
        ("step -1", "lookahead.__meta.step"),
        ("k 0", "lookahead.__meta.k"),
    ] {
        c.err(
            &format!("Lookahead: load_state_dict with {what}"),
            "Lookahead",
            move || {
                let (w, g) = var_and_grads();
                let mut o =
                    Lookahead::new(sgd_over(&w)?, vec![w.clone()], LookaheadConfig::default())?;
                o.try_step(&g)?;
                let t = match what {
                    "slow weights of the wrong shape" => Tensor::zeros(7, DType::F32, &cpu())?,
                    "NaN slow weights" => Tensor::full(f32::NAN, w.shape(), &cpu())?,
                    "step -1" => Tensor::new(-1.0f64, &cpu())?,
                    _ => Tensor::new(0.0f64, &cpu())?,
                };
                edited_state(&mut o, key, t)?;
                Ok(())
            },
        );
    }
    c.err(
        "Lookahead: load_state_dict without slow weights",
        "Lookahead",
        || {
            let (w, g) = var_and_grads();
            let mut o = Lookahead::new(sgd_over(&w)?, vec![w], LookaheadConfig::default())?;
            o.try_step(&g)?;
            let mut sd = o.state_dict()?;
            sd.remove("lookahead.0.slow");
            o.load_state_dict(&sd)?;
            Ok(())
        },
    );
    for rho in [-0.1, f64::NAN, f64::INFINITY] {
        c.err(&format!("Sam: rho {rho}"), "Sam", move || {
            let (w, _) = var_and_grads();
            Sam::new(sgd_over(&w)?, vec![w], SamConfig::default().with_rho(rho))?;
            Ok(())
        });
    }
    c.err("Sam: set_rho(-1)", "Sam", || {
        let (w, _) = var_and_grads();
        let mut o = Sam::new(sgd_over(&w)?, vec![w], SamConfig::default())?;
        o.set_rho(-1.0)?;
        Ok(())
    });
    c.err("Sam: no vars", "Sam", || {
        let (w, _) = var_and_grads();
        Sam::new(sgd_over(&w)?, vec![], SamConfig::default())?;
        Ok(())
    });
    c.err("Sam: NaN loss gradient", "Sam", || {
        let (w, _) = var_and_grads();
        let before = w.as_tensor().copy()?;
        let mut o = Sam::new(sgd_over(&w)?, vec![w.clone()], SamConfig::default())?;
        let r = o.step(|| (w.as_tensor() * f64::NAN)?.sum_all());
        close("weights", w.as_tensor(), &before, 0.0)?;
        r?;
        Ok(())
    });
}

pub(super) fn optim_wrappers_cases() -> Vec<Case> {
    let mut c = Cases::new("optim_wrappers");
    muon_cases(&mut c);
    schedule_free_cases(&mut c);
    wrapper_cases(&mut c);
    c.list
}
