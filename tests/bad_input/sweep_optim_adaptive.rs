//! Bad input for NAdam, RAdam, Adamax and Adadelta: out-of-range hyper-parameters at
//! construction, through the setters and in a loaded state dict, and non-finite gradients.

use candle_tricks::optim::{
    Adadelta, AdadeltaConfig, Adamax, AdamaxConfig, NAdam, NAdamConfig, RAdam, RAdamConfig,
};

use super::*;

/// The cases every one of the four optimizers shares: each bad config refused at
/// construction, a bad learning rate set later refused at the step without touching the
/// weights, an edited state dict refused, a NaN gradient refused.
macro_rules! adaptive_cases {
    ($c:ident, $T:ident, $C:ident, $name:literal, $bad_cfgs:expr $(,)?) => {{
        let name: &'static str = $name;
        let bad: Vec<(&str, $C)> = $bad_cfgs;
        for (what, cfg) in bad {
            $c.err(&format!("{name}: config {what}"), name, move || {
                let (w, _) = var_and_grads();
                $T::with_groups(vec![w], cfg)?;
                Ok(())
            });
        }
        for (what, lr) in [("NaN", f64::NAN), ("-1", -1.0)] {
            $c.err(
                &format!("{name}: set_learning_rate({what}) then step"),
                name,
                move || {
                    let (w, g) = var_and_grads();
                    let before = w.as_tensor().copy()?;
                    let mut o = $T::with_groups(vec![w.clone()], $C::default())?;
                    o.set_learning_rate(lr);
                    let r = o.step(&g);
                    close("weights", w.as_tensor(), &before, 0.0)?;
                    r?;
                    Ok(())
                },
            );
        }
        for (key, value) in [("__meta.beta1", 1.0), ("__meta.eps", 0.0), ("0.step", -1.0)] {
            $c.err(
                &format!("{name}: load_state_dict with {key} = {value}"),
                name,
                move || {
                    let (w, g) = var_and_grads();
                    let mut o = $T::with_groups(vec![w], $C::default())?;
                    o.step(&g)?;
                    let mut sd = o.state_dict()?;
                    // Adadelta has no beta1: its rho goes out of range instead.
                    let key = if sd.contains_key(key) {
                        key
                    } else {
                        "__meta.rho"
                    };
                    let value = if key == "__meta.rho" { 2.0 } else { value };
                    sd.insert(key.to_string(), Tensor::new(value, &cpu())?);
                    o.load_state_dict(&sd)?;
                    Ok(())
                },
            );
        }
        $c.err(
            &format!("{name}: load_state_dict with a NaN state buffer"),
            name,
            move || {
                let (w, g) = var_and_grads();
                let mut o = $T::with_groups(vec![w], $C::default())?;
                o.step(&g)?;
                let mut sd = o.state_dict()?;
                let key = sd
                    .keys()
                    .find(|k| k.starts_with("0.") && *k != "0.step")
                    .cloned()
                    .ok_or_else(|| Got::Wrong("no state buffer".into()))?;
                let shape = sd[&key].shape().clone();
                sd.insert(key, Tensor::full(f32::NAN, shape, &cpu())?);
                o.load_state_dict(&sd)?;
                Ok(())
            },
        );
        $c.err(&format!("{name}: NaN gradient"), name, move || {
            let (w, _) = var_and_grads();
            let g = (w.as_tensor() * f64::NAN)?.sum_all()?.backward()?;
            let mut o = $T::with_groups(vec![w], $C::default())?;
            o.step(&g)?;
            Ok(())
        });
        $c.err(&format!("{name}: f64 parameter"), name, move || {
            let w = Var::from_tensor(&td((2, 2), DType::F64))?;
            $T::with_groups(vec![w], $C::default())?;
            Ok(())
        });
    }};
}

pub(super) fn optim_adaptive_cases() -> Vec<Case> {
    let mut c = Cases::new("optim_adaptive");
    let nadam = NAdamConfig::default();
    adaptive_cases!(
        c,
        NAdam,
        NAdamConfig,
        "NAdam",
        vec![
            ("lr -1", nadam.with_lr(-1.0)),
            ("beta1 1.0", nadam.with_betas(1.0, 0.999)),
            ("beta2 -0.1", nadam.with_betas(0.9, -0.1)),
            ("eps 0", nadam.with_eps(0.0)),
            ("eps NaN", nadam.with_eps(f64::NAN)),
            ("momentum_decay -1", nadam.with_momentum_decay(-1.0)),
            ("weight_decay Inf", nadam.with_weight_decay(f64::INFINITY)),
        ],
    );
    let radam = RAdamConfig::default();
    adaptive_cases!(
        c,
        RAdam,
        RAdamConfig,
        "RAdam",
        vec![
            ("lr NaN", radam.with_lr(f64::NAN)),
            ("beta1 -0.5", radam.with_betas(-0.5, 0.999)),
            ("beta2 1.0", radam.with_betas(0.9, 1.0)),
            ("eps -1e-8", radam.with_eps(-1e-8)),
            ("weight_decay -0.1", radam.with_weight_decay(-0.1)),
        ],
    );
    let adamax = AdamaxConfig::default();
    adaptive_cases!(
        c,
        Adamax,
        AdamaxConfig,
        "Adamax",
        vec![
            ("lr Inf", adamax.with_lr(f64::INFINITY)),
            ("beta1 1.5", adamax.with_betas(1.5, 0.999)),
            ("beta2 NaN", adamax.with_betas(0.9, f64::NAN)),
            ("eps 0", adamax.with_eps(0.0)),
        ],
    );
    let adadelta = AdadeltaConfig::default();
    adaptive_cases!(
        c,
        Adadelta,
        AdadeltaConfig,
        "Adadelta",
        vec![
            ("lr -1", adadelta.with_lr(-1.0)),
            ("rho 1.5", adadelta.with_rho(1.5)),
            ("rho -0.1", adadelta.with_rho(-0.1)),
            ("rho NaN", adadelta.with_rho(f64::NAN)),
            ("eps 0", adadelta.with_eps(0.0)),
            ("weight_decay NaN", adadelta.with_weight_decay(f64::NAN)),
        ],
    );
    c.list
}
