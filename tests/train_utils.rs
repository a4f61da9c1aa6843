//! Training utilities: gradient accumulation against full-batch gradients, the weight EMA
//! against timm's `ModelEmaV3` and the loss scaler against `torch.amp.GradScaler` (fixtures
//! from tests/fixtures/gen_train_utils.py), exact resume, and bad configs.

mod common;

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, VarMap};
use candle_tricks::optim::{
    Adam, AdamConfig, Ema, EmaConfig, EmaWarmup, GradAccumulator, GradAccumulatorConfig,
    GradReduction, GradScaler, GradScalerConfig, OptimizerState, Sgd, SgdConfig,
};
use common::{assert_close, assert_err_names, fixtures, get, Fixtures, R};

const DEV: Device = Device::Cpu;

/// A deterministic tensor of `shape` with values in [-1, 1).
fn det(shape: &[usize], seed: u64) -> R<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n as u64)
        .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32) / 500.0 - 1.0)
        .collect();
    Ok(Tensor::from_vec(v, shape, &DEV)?)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

fn assert_same_state(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    assert_eq!(a.len(), b.len());
    for (k, ta) in a {
        let tb = b.get(k).unwrap_or_else(|| panic!("missing {k}"));
        let (ta, tb) = (
            ta.to_dtype(DType::F64).unwrap(),
            tb.to_dtype(DType::F64).unwrap(),
        );
        let (va, vb) = (
            ta.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            tb.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
        );
        let same = va
            .iter()
            .zip(&vb)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()));
        assert!(same && va.len() == vb.len(), "{k} differs");
    }
}

// ------------------------------------------------------------------ accumulation

/// A small model: MLP (tanh) on x -> 2 outputs, a large vector `emb` (> one kernel chunk)
/// whose gradient is `u * mean(s)`, and an optional `extra` var used only when `use_extra`.
struct Model {
    w1: Var,
    b1: Var,
    w2: Var,
    emb: Var,
    extra: Var,
    unused: Var,
    u: Tensor,
}

impl Model {
    fn new(dtype: DType) -> R<Self> {
        let var = |shape: &[usize], seed| -> R<Var> {
            Ok(Var::from_tensor(
                &(det(shape, seed)? * 0.5)?.to_dtype(dtype)?,
            )?)
        };
        Ok(Self {
            w1: var(&[6, 8], 1)?,
            b1: var(&[8], 2)?,
            w2: var(&[8, 2], 3)?,
            emb: var(&[150_000], 4)?,
            extra: var(&[3, 3], 5)?,
            unused: var(&[4], 6)?,
            u: det(&[150_000], 7)?.to_dtype(dtype)?,
        })
    }

    fn vars(&self) -> Vec<Var> {
        [
            &self.w1,
            &self.b1,
            &self.w2,
            &self.emb,
            &self.extra,
            &self.unused,
        ]
        .iter()
        .map(|v| (*v).clone())
        .collect()
    }

    /// Mean loss of a batch `(x, y, s)`.
    fn loss(&self, x: &Tensor, y: &Tensor, s: &Tensor, use_extra: bool) -> R<Tensor> {
        let h = x
            .matmul(self.w1.as_tensor())?
            .broadcast_add(self.b1.as_tensor())?
            .tanh()?;
        let out = h.matmul(self.w2.as_tensor())?;
        let mse = (out - y)?.sqr()?.mean_all()?;
        let emb = (self.emb.as_tensor() * &self.u)?
            .sum_all()?
            .broadcast_mul(&s.mean_all()?)?;
        let mut loss = (mse + (emb * 1e-3)?)?;
        if use_extra {
            loss = (loss + self.extra.as_tensor().sqr()?.sum_all()?)?;
        }
        Ok(loss)
    }
}

fn batch(dtype: DType) -> R<(Tensor, Tensor, Tensor)> {
    Ok((
        det(&[12, 6], 11)?.to_dtype(dtype)?,
        det(&[12, 2], 12)?.to_dtype(dtype)?,
        det(&[12], 13)?.to_dtype(dtype)?,
    ))
}

#[test]
fn accumulation_equals_full_batch_gradient() -> R<()> {
    let m = Model::new(DType::F32)?;
    let (x, y, s) = batch(DType::F32)?;
    let full = m.loss(&x, &y, &s, false)?.backward()?;
    for (n_micro, reduction) in [
        (4, GradReduction::Mean),
        (3, GradReduction::Mean),
        (2, GradReduction::Sum),
    ] {
        let cfg = GradAccumulatorConfig::default()
            .with_n_micro(n_micro)
            .with_reduction(reduction);
        let mut acc = GradAccumulator::with_config(m.vars(), cfg)?;
        let b = 12 / n_micro;
        let mut out = None;
        for k in 0..n_micro {
            assert!(out.is_none());
            let nar = |t: &Tensor| t.narrow(0, k * b, b);
            let g = m.loss(&nar(&x)?, &nar(&y)?, &nar(&s)?, false)?.backward()?;
            assert_eq!(acc.micro_batches(), k);
            out = acc.accumulate(g)?;
        }
        let got = out.expect("ready after n_micro micro-batches");
        assert_eq!((acc.micro_batches(), acc.cycles()), (0, 1));
        let factor = if reduction == GradReduction::Sum {
            n_micro as f64
        } else {
            1.0
        };
        for v in [&m.w1, &m.b1, &m.w2, &m.emb] {
            let want = (full.get(v.as_tensor()).unwrap() * factor)?;
            let g = got.get(v.as_tensor()).unwrap();
            assert_eq!((g.dtype(), g.dims()), (DType::F32, v.dims()));
            assert_close(&format!("n_micro {n_micro} {reduction:?}"), g, &want, 1e-5);
        }
        // No gradient in any micro-batch: left out, so the optimizer skips it.
        assert!(got.get(m.extra.as_tensor()).is_none());
        assert!(got.get(m.unused.as_tensor()).is_none());
    }
    Ok(())
}

#[test]
fn accumulated_step_equals_full_batch_step() -> R<()> {
    let (x, y, s) = batch(DType::F32)?;
    let (ma, mb) = (Model::new(DType::F32)?, Model::new(DType::F32)?);
    let cfg = AdamConfig::default().with_lr(1e-2);
    let mut oa = Adam::new(ma.vars(), cfg)?;
    let mut ob = Adam::new(mb.vars(), cfg)?;
    let mut acc = GradAccumulator::new(mb.vars(), 4)?;
    for _ in 0..3 {
        oa.step(&ma.loss(&x, &y, &s, false)?.backward()?)?;
        for k in 0..4 {
            let nar = |t: &Tensor| t.narrow(0, 3 * k, 3);
            let g = mb
                .loss(&nar(&x)?, &nar(&y)?, &nar(&s)?, false)?
                .backward()?;
            if let Some(g) = acc.accumulate(g)? {
                ob.step(&g)?;
            }
        }
    }
    for (a, b) in ma.vars().iter().zip(mb.vars()) {
        assert_close(
            "Adam after 3 accumulated steps",
            b.as_tensor(),
            a.as_tensor(),
            1e-4,
        );
    }
    Ok(())
}

#[test]
fn accumulation_missing_grads_half_and_partial_cycles() -> R<()> {
    // `extra` only gets a gradient in micro-batches 0 and 2 of 4: those count as zero, as for
    // the mean loss over the batch: (2 · 2 extra) / 4.
    let m = Model::new(DType::F32)?;
    let (x, y, s) = batch(DType::F32)?;
    let mut acc = GradAccumulator::new(m.vars(), 4)?;
    let mut out = None;
    for k in 0..4 {
        let nar = |t: &Tensor| t.narrow(0, 3 * k, 3);
        let g = m
            .loss(&nar(&x)?, &nar(&y)?, &nar(&s)?, k % 2 == 0)?
            .backward()?;
        out = acc.accumulate(g)?;
    }
    let got = out.unwrap();
    let want = m.extra.as_tensor().affine(2.0 * 2.0 / 4.0, 0.0)?;
    assert_close("extra", got.get(m.extra.as_tensor()).unwrap(), &want, 1e-6);

    // A short cycle (end of an epoch) averages over what was added.
    let (g1, g2) = (det(&[3, 3], 20)?, det(&[3, 3], 21)?);
    let store = |g: &Tensor| {
        let mut s = GradStore::default();
        s.insert(m.extra.as_tensor(), g.clone());
        s
    };
    acc.add(&store(&g1))?;
    acc.add(&store(&g2))?;
    assert!(!acc.ready());
    let got = acc.take()?;
    let want = ((&g1 + &g2)? * 0.5)?;
    assert_close(
        "partial",
        got.get(m.extra.as_tensor()).unwrap(),
        &want,
        1e-7,
    );
    assert_eq!(acc.cycles(), 2);
    // reset() drops a started cycle.
    acc.add(&store(&g1))?;
    acc.reset();
    assert_eq!(acc.micro_batches(), 0);

    // f16 parameters: f32 buffers, f16 result close to the f32 computation.
    let h = Model::new(DType::F16)?;
    let (xh, yh, sh) = batch(DType::F16)?;
    let mut acc = GradAccumulator::new(h.vars(), 3)?;
    let mut out = None;
    for k in 0..3 {
        let nar = |t: &Tensor| t.narrow(0, 4 * k, 4);
        out = acc.accumulate(
            h.loss(&nar(&xh)?, &nar(&yh)?, &nar(&sh)?, false)?
                .backward()?,
        )?;
    }
    let got = out.unwrap();
    let full32 = m.loss(&x, &y, &s, false)?.backward()?;
    for (vh, v32) in [(&h.w1, &m.w1), (&h.w2, &m.w2), (&h.emb, &m.emb)] {
        let g = got.get(vh.as_tensor()).unwrap();
        assert_eq!(g.dtype(), DType::F16);
        let want = full32.get(v32.as_tensor()).unwrap();
        assert_close("f16 accumulation", &g.to_dtype(DType::F32)?, want, 2e-2);
    }
    Ok(())
}

#[test]
fn accumulation_errors() -> R<()> {
    let w = Var::new(&[1f32, 2.0], &DEV)?;
    assert_err_names(
        GradAccumulator::new(vec![w.clone()], 0),
        "GradAccumulator",
        "n_micro",
    );
    let mut acc = GradAccumulator::new(vec![w.clone()], 1)?;
    assert_err_names(acc.take(), "GradAccumulator", "no micro-batch");
    let mut bad = GradStore::default();
    bad.insert(w.as_tensor(), Tensor::new(&[1f32, 2.0, 3.0], &DEV)?);
    assert_err_names(acc.add(&bad), "GradAccumulator", "shape");
    assert_eq!(acc.micro_batches(), 0);
    let mut bad = GradStore::default();
    bad.insert(w.as_tensor(), Tensor::new(&[1u32, 2], &DEV)?);
    assert_err_names(acc.add(&bad), "GradAccumulator", "dtype");
    let mut ok = GradStore::default();
    ok.insert(w.as_tensor(), Tensor::new(&[1f32, 2.0], &DEV)?);
    acc.add(&ok)?;
    assert!(acc.ready());
    assert_err_names(acc.add(&ok), "GradAccumulator", "take()");
    Ok(())
}

// ------------------------------------------------------------------ EMA

const NAMES: [&str; 3] = ["bn.running_mean", "fc.bias", "fc.weight"];

fn ema_vars(f: &Fixtures, dtype: DType) -> R<Vec<(String, Var)>> {
    NAMES
        .iter()
        .map(|n| {
            let t = get(f, &format!("ema.init.{n}")).to_dtype(dtype)?;
            Ok((n.to_string(), Var::from_tensor(&t)?))
        })
        .collect()
}

fn ema_case(name: &str) -> EmaConfig {
    let c = EmaConfig::default();
    match name {
        "warm" => c
            .with_decay(0.999)
            .with_min_decay(0.1)
            .with_update_after_step(2)
            .with_warmup(EmaWarmup::power()),
        "warm34" => c.with_decay(0.99).with_warmup(EmaWarmup::Power {
            gamma: 2.0,
            power: 0.75,
        }),
        "const" => c.with_decay(0.9),
        "ratio" => c.with_decay(0.95).with_warmup(EmaWarmup::Ratio),
        "avgbuf" => c
            .with_decay(0.8)
            .with_warmup(EmaWarmup::power())
            .with_average_buffers(true),
        _ => unreachable!(),
    }
}

#[test]
fn ema_matches_timm_v3() -> R<()> {
    let f = fixtures("train_utils");
    for case in ["warm", "warm34", "const", "ratio", "avgbuf"] {
        for (dtype, tol) in [(DType::F32, 1e-6), (DType::F16, 2e-3), (DType::BF16, 1e-2)] {
            let vars = ema_vars(&f, dtype)?;
            let mut ema = Ema::new(vars.clone(), ema_case(case))?;
            let decays = get(&f, &format!("ema.{case}.decay")).to_vec1::<f64>()?;
            for (t, want_d) in decays.iter().enumerate() {
                for (n, v) in &vars {
                    let w = get(&f, &format!("ema.seq.{n}")).get(t)?.to_dtype(dtype)?;
                    v.set(&w)?;
                }
                let d = ema.update(t as u64 + 1)?;
                assert!(
                    (d - want_d).abs() < 1e-12,
                    "{case} step {t}: decay {d} vs {want_d}"
                );
                let weights = ema.weights()?;
                for n in NAMES {
                    let want = get(&f, &format!("ema.{case}.{n}")).get(t)?;
                    let got = weights[n].to_dtype(DType::F32)?;
                    assert_close(&format!("{case} {dtype:?} {n} step {t}"), &got, &want, tol);
                }
            }
            assert_eq!(ema.updates(), decays.len() as u64);
        }
    }
    Ok(())
}

#[test]
fn ema_large_param_swap_copy_to_and_resume() -> R<()> {
    // A parameter larger than one kernel chunk, decay 0.5 per update: closed form.
    let w = Var::from_tensor(&det(&[100_003], 30)?)?;
    let b = Var::from_tensor(&det(&[5], 31)?)?;
    let rm = Var::from_tensor(&det(&[5], 32)?)?;
    let named = vec![
        ("w".to_string(), w.clone()),
        ("b".to_string(), b.clone()),
        ("bn.running_mean".to_string(), rm.clone()),
    ];
    let cfg = EmaConfig::default().with_decay(0.5);
    let mut ema = Ema::new(named.clone(), cfg)?;
    let mut want = w.as_tensor().copy()?;
    for step in 1..=4u64 {
        w.set(&w.as_tensor().affine(1.0, 0.25)?)?;
        rm.set(&rm.as_tensor().affine(1.0, 1.0)?)?;
        ema.update(step)?;
        let d = if step == 1 { 0.0 } else { 0.5 };
        want = ((want * d)? + (w.as_tensor() * (1.0 - d))?)?;
    }
    let weights = ema.weights()?;
    assert_close("large EMA", &weights["w"], &want, 1e-6);
    // The buffer is a copy of the live one.
    assert_eq!(bits(&weights["bn.running_mean"]), bits(rm.as_tensor()));

    // swap -> the model holds the EMA weights; swap again -> exactly the live weights.
    let live = (bits(w.as_tensor()), bits(b.as_tensor()));
    ema.swap()?;
    assert!(ema.is_swapped());
    assert_eq!(bits(w.as_tensor()), bits(&weights["w"]));
    assert_err_names(ema.update(5), "Ema", "swap");
    ema.swap()?;
    assert_eq!((bits(w.as_tensor()), bits(b.as_tensor())), live);

    // copy_to / to_varmap.
    let vm = VarMap::new();
    {
        let mut data = vm.data().lock().unwrap();
        for (n, v) in &named {
            data.insert(n.clone(), Var::zeros(v.shape(), v.dtype(), &DEV)?);
        }
    }
    ema.copy_to(&vm)?;
    let other = ema.to_varmap()?;
    for (n, _) in &named {
        let a = vm.data().lock().unwrap()[n].as_tensor().clone();
        let c = other.data().lock().unwrap()[n].as_tensor().clone();
        assert_eq!(bits(&a), bits(&weights[n]));
        assert_eq!(bits(&c), bits(&weights[n]));
    }
    let small = VarMap::new();
    small
        .data()
        .lock()
        .unwrap()
        .insert("w".into(), Var::zeros(100_003, DType::F32, &DEV)?);
    assert_err_names(ema.copy_to(&small), "Ema", "no var");

    // Save -> load into a fresh EMA -> continue: bit-identical to the uninterrupted one.
    let path = std::env::temp_dir().join("candle_tricks_test_ema_state.safetensors");
    candle_core::safetensors::save(&ema.state_dict()?, &path)?;
    let mut resumed = Ema::new(named.clone(), cfg.with_decay(0.5))?;
    resumed.load_state_dict(&candle_core::safetensors::load(&path, &DEV)?)?;
    std::fs::remove_file(&path).ok();
    assert_eq!(resumed.updates(), 4);
    for step in 5..=8u64 {
        w.set(&w.as_tensor().affine(0.9, 0.1)?)?;
        ema.update(step)?;
        resumed.update(step)?;
    }
    assert_same_state(&ema.state_dict()?, &resumed.state_dict()?);
    let (a, c) = (ema.weights()?, resumed.weights()?);
    for (n, _) in &named {
        assert_eq!(bits(&a[n]), bits(&c[n]));
    }

    // A state dict of other vars is refused and changes nothing.
    let mut sd = ema.state_dict()?;
    sd.insert("ema.w".into(), Tensor::zeros(7, DType::F32, &DEV)?);
    assert_err_names(resumed.load_state_dict(&sd), "Ema", "shape");
    sd.remove("ema.w");
    assert_err_names(resumed.load_state_dict(&sd), "Ema", "ema.w");
    assert_eq!(bits(&resumed.weights()?["w"]), bits(&a["w"]));
    Ok(())
}

#[test]
fn ema_bad_configs() -> R<()> {
    let v = vec![("w".to_string(), Var::new(&[1f32], &DEV)?)];
    for (cfg, needle) in [
        (EmaConfig::default().with_decay(1.5), "decay"),
        (EmaConfig::default().with_decay(-0.1), "decay"),
        (EmaConfig::default().with_decay(f64::NAN), "decay"),
        (EmaConfig::default().with_min_decay(2.0), "min_decay"),
        (
            EmaConfig::default().with_warmup(EmaWarmup::Power {
                gamma: 0.0,
                power: 0.5,
            }),
            "gamma",
        ),
        (
            EmaConfig::default().with_warmup(EmaWarmup::Power {
                gamma: 1.0,
                power: -1.0,
            }),
            "power",
        ),
    ] {
        assert_err_names(Ema::new(v.clone(), cfg), "Ema", needle);
    }
    let dup = vec![v[0].clone(), v[0].clone()];
    assert_err_names(Ema::new(dup, EmaConfig::default()), "Ema", "duplicate");
    let mut ema = Ema::new(v, EmaConfig::default())?;
    assert_err_names(ema.update_with_decay(1.1), "Ema", "decay");
    Ok(())
}

// ------------------------------------------------------------------ loss scaler

#[test]
fn scaler_matches_torch_grad_scaler() -> R<()> {
    let f = fixtures("train_utils");
    let p = Var::from_tensor(get(&f, "scaler.p0"))?;
    let coef = get(&f, "scaler.coef");
    let scales = get(&f, "scaler.scales").to_vec1::<f64>()?;
    let stepped = get(&f, "scaler.stepped").to_vec1::<f64>()?;
    let params = get(&f, "scaler.params");
    let mut opt = Sgd::new(vec![p.clone()], SgdConfig::default().with_lr(0.1))?;
    let cfg = GradScalerConfig::default()
        .with_init_scale(1024.0)
        .with_growth_interval(3);
    let mut scaler = GradScaler::new(cfg)?;
    for t in 0..stepped.len() {
        assert_eq!(scaler.get_scale(), scales[t], "scale before step {t}");
        let loss = (p.as_tensor() * coef.get(t)?)?.sum_all()?;
        let mut grads = scaler.scale(&loss)?.backward()?;
        let before = bits(p.as_tensor());
        let did = scaler.step(&mut opt, &mut grads, std::slice::from_ref(&p))?;
        scaler.update()?;
        assert_eq!(did, stepped[t] == 1.0, "stepped at {t}");
        if !did {
            assert_eq!(bits(p.as_tensor()), before, "weights touched at {t}");
        }
        assert_close(
            &format!("p after {t}"),
            p.as_tensor(),
            &params.get(t)?,
            1e-6,
        );
    }
    assert_eq!(scaler.get_scale(), *scales.last().unwrap());
    let tracker = get(&f, "scaler.final_tracker").to_scalar::<f64>()?;
    assert_eq!(scaler.growth_tracker() as f64, tracker);
    let skipped = stepped.iter().filter(|&&s| s == 0.0).count() as u64;
    assert_eq!(scaler.skipped_steps(), skipped);
    assert_eq!(scaler.steps(), stepped.len() as u64 - skipped);
    Ok(())
}

#[test]
fn scaler_skips_overflow_without_touching_weights_or_state() -> R<()> {
    // Adam, f32 weights, one gradient larger than a kernel chunk with the Inf in its last
    // chunk, one f16 gradient.
    let n = 150_001;
    let w = Var::from_tensor(&det(&[n], 40)?)?;
    let h = Var::from_tensor(&det(&[6], 41)?.to_dtype(DType::F16)?)?;
    let vars = [w.clone(), h.clone()];
    let mut opt = Adam::new(vars.to_vec(), AdamConfig::default().with_lr(1e-2))?;
    let mut scaler = GradScaler::new(GradScalerConfig::default())?;
    let loss = |scaler: &GradScaler| -> R<GradStore> {
        let l = (w.as_tensor().sqr()?.sum_all()? * 1e-3)?
            .add(&h.as_tensor().to_dtype(DType::F32)?.sum_all()?)?;
        Ok(scaler.scale(&l)?.backward()?)
    };
    // With the default scale 2^16 the f16 gradient itself overflows (65504 is f16's max):
    // the first step is skipped and the scale halves, as with torch.
    let mut g = loss(&scaler)?;
    assert!(g.get(h.as_tensor()).unwrap().dtype() == DType::F16);
    assert!(!scaler.step(&mut opt, &mut g, &vars)?);
    scaler.update()?;
    assert_eq!(scaler.get_scale(), 32768.0);
    // A clean step, so the optimizer has state to protect.
    let mut g = loss(&scaler)?;
    assert!(scaler.step(&mut opt, &mut g, &vars)?);
    scaler.update()?;
    let gh = g.get(h.as_tensor()).unwrap().to_dtype(DType::F32)?;
    assert_close("unscaled f16 grad", &gh, &gh.ones_like()?, 1e-3);

    for (what, bad) in [("inf", f32::INFINITY), ("nan", f32::NAN)] {
        let mut g = loss(&scaler)?;
        let mut gw = g.get(w.as_tensor()).unwrap().to_vec1::<f32>()?;
        gw[n - 1] = bad;
        g.insert(w.as_tensor(), Tensor::from_vec(gw, n, &DEV)?);
        let (before_w, before_h) = (bits(w.as_tensor()), bits(h.as_tensor()));
        let state = opt.state_dict()?;
        let scale = scaler.get_scale();
        // Unscale by hand (as before clipping), then step.
        assert!(scaler.unscale(&mut g, &vars)?, "{what} not found");
        assert!(!scaler.step(&mut opt, &mut g, &vars)?);
        scaler.update()?;
        assert_eq!(bits(w.as_tensor()), before_w, "{what}: weights touched");
        assert_eq!(bits(h.as_tensor()), before_h, "{what}: weights touched");
        assert_same_state(&opt.state_dict()?, &state);
        assert_eq!(scaler.get_scale(), scale * 0.5);
        assert_eq!(scaler.growth_tracker(), 0);
    }
    // An Inf in an f16 gradient is found too.
    let mut g = loss(&scaler)?;
    g.insert(
        h.as_tensor(),
        Tensor::new(&[1f32, 2., f32::NEG_INFINITY, 0., 0., 0.], &DEV)?.to_dtype(DType::F16)?,
    );
    assert!(scaler.unscale(&mut g, &vars)?);

    // Order of calls.
    assert_err_names(scaler.unscale(&mut g, &vars), "GradScaler", "already");
    assert!(!scaler.step(&mut opt, &mut g, &vars)?);
    assert_err_names(
        scaler.step(&mut opt, &mut g, &vars),
        "GradScaler",
        "already",
    );
    assert_err_names(scaler.unscale(&mut g, &vars), "GradScaler", "after step");
    scaler.update()?;
    assert_err_names(scaler.update(), "GradScaler", "no inf checks");

    // Disabled: a pass-through that always steps.
    let mut off = GradScaler::new(GradScalerConfig::default().with_enabled(false))?;
    let l = w.as_tensor().sum_all()?;
    assert_eq!(bits(&off.scale(&l)?), bits(&l));
    let mut g = l.backward()?;
    assert!(!off.unscale(&mut g, &vars)?);
    assert!(off.step(&mut opt, &mut g, &vars)?);
    assert!(off.state_dict()?.is_empty());
    Ok(())
}

#[test]
fn scaler_state_resume_is_bit_identical() -> R<()> {
    let cfg = GradScalerConfig::default()
        .with_init_scale(256.0)
        .with_growth_interval(4)
        .with_growth_factor(3.0)
        .with_backoff_factor(0.25);
    let p = Var::new(&[0.5f32, -0.25, 1.0], &DEV)?;
    let mut opt = Sgd::new(vec![p.clone()], SgdConfig::default().with_lr(1e-3))?;
    let mut a = GradScaler::new(cfg)?;
    let grads = |s: &GradScaler, i: usize| -> R<GradStore> {
        let c = if i % 7 == 3 { f32::INFINITY } else { i as f32 };
        let l = (p.as_tensor() * Tensor::new(&[1f32, c, -2.0], &DEV)?)?.sum_all()?;
        Ok(s.scale(&l)?.backward()?)
    };
    let mut run = |s: &mut GradScaler, i: usize| -> R<()> {
        let mut g = grads(s, i)?;
        s.step(&mut opt, &mut g, std::slice::from_ref(&p))?;
        s.update()?;
        Ok(())
    };
    for i in 0..10 {
        run(&mut a, i)?;
    }
    let path = std::env::temp_dir().join("candle_tricks_test_scaler_state.safetensors");
    candle_core::safetensors::save(&a.state_dict()?, &path)?;
    let mut b = GradScaler::new(GradScalerConfig::default())?;
    b.load_state_dict(&candle_core::safetensors::load(&path, &DEV)?)?;
    std::fs::remove_file(&path).ok();
    assert_eq!(b.config().growth_factor, 3.0);
    assert_eq!(b.config().backoff_factor, 0.25);
    assert_eq!(b.config().growth_interval, 4);
    for i in 10..30 {
        run(&mut a, i)?;
        run(&mut b, i)?;
        assert_eq!(a.get_scale().to_bits(), b.get_scale().to_bits());
    }
    assert_same_state(&a.state_dict()?, &b.state_dict()?);

    // Bad states are refused and change nothing.
    let mut sd = a.state_dict()?;
    sd.insert("scaler.backoff_factor".into(), Tensor::new(1.5f64, &DEV)?);
    assert_err_names(b.load_state_dict(&sd), "GradScaler", "backoff_factor");
    sd.remove("scaler.backoff_factor");
    assert_err_names(
        b.load_state_dict(&sd),
        "GradScaler",
        "scaler.backoff_factor",
    );
    assert_err_names(b.load_state_dict(&HashMap::new()), "GradScaler", "empty");
    assert_same_state(&a.state_dict()?, &b.state_dict()?);
    Ok(())
}

#[test]
fn scaler_bad_configs_and_half_loss() -> R<()> {
    let d = GradScalerConfig::default();
    for (cfg, needle) in [
        (d.with_growth_factor(1.0), "growth_factor"),
        (d.with_growth_factor(0.5), "growth_factor"),
        (d.with_backoff_factor(0.0), "backoff_factor"),
        (d.with_backoff_factor(1.0), "backoff_factor"),
        (d.with_backoff_factor(1.5), "backoff_factor"),
        (d.with_init_scale(0.0), "scale"),
        (d.with_init_scale(f64::INFINITY), "scale"),
        (d.with_growth_interval(0), "growth_interval"),
    ] {
        assert_err_names(GradScaler::new(cfg), "GradScaler", needle);
    }
    // An f16 loss is scaled in f32 (2^16 is not an f16 value).
    let s = GradScaler::new(d)?;
    let l = Tensor::new(0.5f32, &DEV)?.to_dtype(DType::F16)?;
    let scaled = s.scale(&l)?;
    assert_eq!(scaled.dtype(), DType::F32);
    assert_eq!(scaled.to_scalar::<f32>()?, 32768.0);
    assert_err_names(s.scale(&Tensor::new(1u32, &DEV)?), "GradScaler", "loss");
    Ok(())
}
