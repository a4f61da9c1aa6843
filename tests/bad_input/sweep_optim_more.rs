//! Bad input for Adafactor, LAMB and L-BFGS: out-of-range hyper-parameters at construction, through the
//! setters and in a loaded state dict, non-finite gradients and losses, a non-scalar loss and
//! broken parameter lists.

use candle_tricks::optim::{
    Adafactor, AdafactorConfig, Lamb, LambConfig, Lbfgs, LbfgsConfig, StrongWolfe,
};

use super::*;

/// A small L-BFGS problem: the parameter and the closure's loss.
fn lbfgs_problem() -> Var {
    Var::new(&[1.0f32, -2.0], &cpu()).unwrap()
}

fn adafactor_cases(c: &mut Cases) {
    let ada = AdafactorConfig::default();
    for (what, cfg) in [
        ("lr NaN", ada.with_lr(f64::NAN)),
        ("lr -1", ada.with_lr(-1.0)),
        ("beta2_decay 0.5", ada.with_beta2_decay(0.5)),
        ("beta2_decay -Inf", ada.with_beta2_decay(f64::NEG_INFINITY)),
        ("eps1 0", ada.with_eps(Some(0.0), 1e-3)),
        ("eps2 -1", ada.with_eps(None, -1.0)),
        ("d 0.5", ada.with_d(0.5)),
        ("weight_decay -1", ada.with_weight_decay(-1.0)),
    ] {
        c.err(
            &format!("Adafactor: config {what}"),
            "Adafactor",
            move || {
                let (w, _) = var_and_grads();
                Adafactor::with_groups(vec![w], cfg)?;
                Ok(())
            },
        );
    }
    for (key, value) in [
        ("__meta.beta2_decay", 1.0),
        ("__meta.d", 0.0),
        ("__meta.eps1", -1.0),
        ("0.row_var", f64::NAN),
    ] {
        c.err(
            &format!("Adafactor: load_state_dict with {key} = {value}"),
            "Adafactor",
            move || {
                let (w, g) = var_and_grads();
                let mut o = Adafactor::new(vec![w], AdafactorConfig::default())?;
                o.step(&g)?;
                let mut sd = o.state_dict()?;
                let t = if key.starts_with("__") {
                    Tensor::new(value, &cpu())?
                } else {
                    Tensor::full(value as f32, sd[key].shape().clone(), &cpu())?
                };
                sd.insert(key.to_string(), t);
                o.load_state_dict(&sd)?;
                Ok(())
            },
        );
    }
    c.err(
        "Adafactor: column statistic of the parameter's shape",
        "Adafactor",
        || {
            let (w, g) = var_and_grads();
            let mut o = Adafactor::new(vec![w.clone()], AdafactorConfig::default())?;
            o.step(&g)?;
            let mut sd = o.state_dict()?;
            sd.insert(
                "0.col_var".into(),
                Tensor::zeros(w.shape(), DType::F32, &cpu())?,
            );
            o.load_state_dict(&sd)?;
            Ok(())
        },
    );
    c.err("Adafactor: NaN gradient", "Adafactor", || {
        let (w, _) = var_and_grads();
        let g = (w.as_tensor() * f64::NAN)?.sum_all()?.backward()?;
        let mut o = Adafactor::new(vec![w], AdafactorConfig::default())?;
        o.step(&g)?;
        Ok(())
    });
}

fn lamb_cases(c: &mut Cases) {
    let lamb = LambConfig::default();
    for (what, cfg) in [
        ("lr -1", lamb.with_lr(-1.0)),
        ("lr NaN", lamb.with_lr(f64::NAN)),
        ("beta1 1.0", lamb.with_betas(1.0, 0.999)),
        ("beta2 -0.1", lamb.with_betas(0.9, -0.1)),
        ("eps 0", lamb.with_eps(0.0)),
        ("eps_root -1", lamb.with_eps_root(-1.0)),
        ("weight_decay NaN", lamb.with_weight_decay(f64::NAN)),
    ] {
        c.err(&format!("Lamb: config {what}"), "Lamb", move || {
            let (w, _) = var_and_grads();
            Lamb::with_groups(vec![w], cfg)?;
            Ok(())
        });
    }
    c.err("Lamb: set_learning_rate(NaN) then step", "Lamb", || {
        let (w, g) = var_and_grads();
        let before = w.as_tensor().copy()?;
        let mut o = Lamb::new(vec![w.clone()], LambConfig::default())?;
        o.set_learning_rate(f64::NAN);
        let r = o.step(&g);
        close("weights", w.as_tensor(), &before, 0.0)?;
        r?;
        Ok(())
    });
    for (key, value) in [
        ("__meta.beta2", 1.0),
        ("__meta.eps_root", -1.0),
        ("0.step", 0.5),
    ] {
        c.err(
            &format!("Lamb: load_state_dict with {key} = {value}"),
            "Lamb",
            move || {
                let (w, g) = var_and_grads();
                let mut o = Lamb::new(vec![w], LambConfig::default())?;
                o.step(&g)?;
                let mut sd = o.state_dict()?;
                sd.insert(key.to_string(), Tensor::new(value, &cpu())?);
                o.load_state_dict(&sd)?;
                Ok(())
            },
        );
    }
    c.err("Lamb: Inf gradient", "Lamb", || {
        let (w, _) = var_and_grads();
        let g = (w.as_tensor() * f64::INFINITY)?.sum_all()?.backward()?;
        let mut o = Lamb::new(vec![w], LambConfig::default())?;
        o.step(&g)?;
        Ok(())
    });
}

fn lbfgs_cases(c: &mut Cases) {
    let d = LbfgsConfig::default();
    for (what, cfg) in [
        ("lr 0", d.with_lr(0.0)),
        ("lr -1", d.with_lr(-1.0)),
        ("lr NaN", d.with_lr(f64::NAN)),
        ("history_size 0", d.with_history_size(0)),
        ("max_iter 0", d.with_max_iter(0)),
        ("max_eval 0", d.with_max_eval(0)),
        ("tolerance_grad NaN", d.with_tolerance_grad(f64::NAN)),
        ("tolerance_change -1", d.with_tolerance_change(-1.0)),
        (
            "wolfe c1 >= c2",
            d.with_line_search(Some(StrongWolfe { c1: 0.5, c2: 0.5 })),
        ),
        (
            "wolfe c2 1",
            d.with_line_search(Some(StrongWolfe { c1: 1e-4, c2: 1.0 })),
        ),
    ] {
        c.err(&format!("Lbfgs: config {what}"), "Lbfgs", move || {
            Lbfgs::new(vec![lbfgs_problem()], cfg)?;
            Ok(())
        });
    }
    c.err("Lbfgs: no parameters", "Lbfgs", || {
        Lbfgs::new(vec![], LbfgsConfig::default())?;
        Ok(())
    });
    c.err("Lbfgs: the same var twice", "Lbfgs", || {
        let p = lbfgs_problem();
        Lbfgs::new(vec![p.clone(), p], LbfgsConfig::default())?;
        Ok(())
    });
    c.err("Lbfgs: integer parameter", "Lbfgs", || {
        let p = Var::from_tensor(&Tensor::new(&[1u32, 2], &cpu())?)?;
        Lbfgs::new(vec![p], LbfgsConfig::default())?;
        Ok(())
    });
    c.err("Lbfgs: set lr -1", "Lbfgs", || {
        let mut o = Lbfgs::new(vec![lbfgs_problem()], LbfgsConfig::default())?;
        o.try_set_learning_rate(-1.0)?;
        Ok(())
    });
    c.err("Lbfgs: loss with two elements", "Lbfgs", || {
        let p = lbfgs_problem();
        let before = p.as_tensor().copy()?;
        let mut o = Lbfgs::new(vec![p.clone()], LbfgsConfig::default())?;
        let r = o.step(|| Ok(p.as_tensor().sqr()?));
        close("weights", p.as_tensor(), &before, 0.0)?;
        r?;
        Ok(())
    });
    c.err("Lbfgs: NaN loss", "Lbfgs", || {
        let p = lbfgs_problem();
        let before = p.as_tensor().copy()?;
        let mut o = Lbfgs::new(vec![p.clone()], LbfgsConfig::default())?;
        let r = o.step(|| Ok((p.as_tensor().sqr()?.sum_all()? * f64::NAN)?));
        close("weights", p.as_tensor(), &before, 0.0)?;
        r?;
        Ok(())
    });
    c.err("Lbfgs: Inf gradient", "Lbfgs", || {
        let p = Var::new(&[0.0f32, 1.0], &cpu())?;
        let mut o = Lbfgs::new(vec![p.clone()], LbfgsConfig::default())?;
        o.step(|| Ok(p.as_tensor().sqrt()?.sum_all()?))?;
        Ok(())
    });
    for (key, value) in [
        ("__meta.history_size", 0.0),
        ("__meta.lr", f64::NAN),
        ("__meta.numel", 3.0),
        ("n_iter", -1.0),
        ("t", f64::INFINITY),
    ] {
        c.err(
            &format!("Lbfgs: load_state_dict with {key} = {value}"),
            "Lbfgs",
            move || {
                let p = lbfgs_problem();
                let mut o = Lbfgs::new(vec![p.clone()], LbfgsConfig::default().with_max_iter(3))?;
                o.step(|| Ok(p.as_tensor().sqr()?.sum_all()?))?;
                let mut sd = o.state_dict()?;
                sd.insert(key.to_string(), Tensor::new(value, &cpu())?);
                o.load_state_dict(&sd)?;
                Ok(())
            },
        );
    }
    c.err(
        "Lbfgs: load_state_dict with a short direction",
        "Lbfgs",
        || {
            let p = lbfgs_problem();
            let mut o = Lbfgs::new(vec![p.clone()], LbfgsConfig::default())?;
            o.step(|| Ok(p.as_tensor().sqr()?.sum_all()?))?;
            let mut sd = o.state_dict()?;
            sd.insert("d".into(), Tensor::new(&[1.0f64], &cpu())?);
            o.load_state_dict(&sd)?;
            Ok(())
        },
    );
}

pub(super) fn optim_more_cases() -> Vec<Case> {
    let mut c = Cases::new("optim_more");
    adafactor_cases(&mut c);
    lamb_cases(&mut c);
    lbfgs_cases(&mut c);
    c.list
}
