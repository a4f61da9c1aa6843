//! The tensor path (the update candle ops run on a non-CPU parameter's device) against the fused
//! CPU kernels: with the tensor path forced on the CPU (`optim::path::force_tensor_path`), every
//! optimizer and option combination gives the same weights and state over 10 steps, the same
//! NaN/Inf policy behaviour, and a state saved on one path resumes identically on the other;
//! likewise clipping, EMA, the loss scaler and the gradient accumulator. The dispatch decision
//! sends every non-CPU device kind to the tensor path.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, DeviceLocation, Tensor, Var};
use candle_tricks::optim::path::{force_tensor_path, path_for, update_path, UpdatePath};
use candle_tricks::optim::{
    clip_grad_norm, clip_grad_norm_inf, grad_norm, Adagrad, AdagradConfig, Adam, AdamConfig, AdamW,
    AdamWConfig, Algorithm, Ema, EmaConfig, EmaWarmup, GradAccumulator, GradAccumulatorConfig,
    GradReduction, GradScaler, GradScalerConfig, Lion, LionConfig, NonFinite, Optim,
    OptimizerState, ParamGroup, ParamGroups, RmsProp, RmsPropConfig, Sgd, SgdConfig,
};

type R<T> = candle_tricks::Result<T>;

const DEV: Device = Device::Cpu;
const STEPS: u64 = 10;
/// f32 tolerance (on the CPU the two paths agree to the bit; 1e-6 leaves room for vendor
/// math libraries).
const STATE_TOL: f64 = 1e-6;

/// A deterministic tensor of `shape` with values in [-1, 1) (scaled by `scale`).
fn det(shape: &[usize], seed: u64, scale: f64) -> R<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n as u64)
        .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32) / 500.0 - 1.0)
        .collect();
    Ok(Tensor::from_vec(v, shape, &DEV)?.affine(scale, 0.0)?)
}

/// Three parameters (a matrix, a vector, a 3-D tensor) of `dtype`.
fn params(dtype: DType) -> R<Vec<Var>> {
    let shapes: [&[usize]; 3] = [&[5, 7], &[7], &[2, 3, 4]];
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(Var::from_tensor(
                &det(s, 100 + i as u64, 1.0)?.to_dtype(dtype)?,
            )?)
        })
        .collect()
}

/// The gradients of step `t`; parameter 1 has none at step 3 (its step count must not move).
fn grads(vars: &[Var], t: u64) -> R<GradStore> {
    let mut g = GradStore::default();
    for (i, v) in vars.iter().enumerate() {
        if i == 1 && t == 3 {
            continue;
        }
        let d = det(v.dims(), 7 * t + i as u64, 0.5)?.to_dtype(v.dtype())?;
        g.insert(v.as_tensor(), d);
    }
    Ok(g)
}

/// Copies of `vars` (fresh storage, same values).
fn clone_vars(vars: &[Var]) -> R<Vec<Var>> {
    vars.iter()
        .map(|v| Ok(Var::from_tensor(&v.as_tensor().copy()?)?))
        .collect()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .expect("values")
}

/// Elementwise `|a - b| <= tol (1 + |b|)`.
fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let (va, vb) = (values(a), values(b));
    for (k, (x, y)) in va.iter().zip(&vb).enumerate() {
        assert!(
            x == y || (x - y).abs() <= tol * (1.0 + y.abs()) || (x.is_nan() && y.is_nan()),
            "{what}[{k}]: {x} vs {y}"
        );
    }
}

fn assert_same_vars(a: &[Var], b: &[Var], tol: f64, what: &str) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.dtype(), y.dtype());
        assert_close(
            x.as_tensor(),
            y.as_tensor(),
            tol,
            &format!("{what}: var {i}"),
        );
    }
}

fn assert_same_state(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>, what: &str) {
    let mut ka: Vec<_> = a.keys().collect();
    let mut kb: Vec<_> = b.keys().collect();
    ka.sort();
    kb.sort();
    assert_eq!(ka, kb, "{what}: state keys");
    for (k, t) in a {
        assert_eq!(t.dtype(), b[k].dtype(), "{what}: {k} dtype");
        assert_eq!(t.device().location(), DeviceLocation::Cpu, "{what}: {k}");
        assert_close(t, &b[k], STATE_TOL, &format!("{what}: {k}"));
    }
}

/// Runs steps `from..to` of `opt` on the fused or the forced tensor path.
fn run<C: Algorithm>(opt: &mut Optim<C>, vars: &[Var], from: u64, to: u64, tensor: bool) -> R<()> {
    let _guard = tensor.then(force_tensor_path);
    for t in from..to {
        opt.try_step(&grads(vars, t)?)?;
    }
    Ok(())
}

/// The weight tolerance of a dtype: f32 tight; half weights are roundings of (tightly equal)
/// f32 master copies, so at most one unit in the last place apart.
fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 1e-3,
        DType::BF16 => 8e-3,
        _ => STATE_TOL,
    }
}

/// Both paths over `STEPS` steps from the same start: same weights, same state dict, same
/// per-parameter step counts.
fn check_paths<C: Algorithm>(
    name: &str,
    dtype: DType,
    make: &dyn Fn(Vec<Var>) -> R<Optim<C>>,
) -> R<()> {
    let what = format!("{name} {dtype:?}");
    let va = params(dtype)?;
    let vb = clone_vars(&va)?;
    let (mut a, mut b) = (make(va.clone())?, make(vb.clone())?);
    run(&mut a, &va, 0, STEPS, false)?;
    run(&mut b, &vb, 0, STEPS, true)?;
    assert_same_vars(&va, &vb, tol(dtype), &what);
    assert_same_state(&a.state_dict()?, &b.state_dict()?, &what);
    for i in 0..a.num_params() {
        assert_eq!(a.param_step(i), b.param_step(i), "{what}");
    }
    Ok(())
}

/// A state saved after 4 steps on one path, loaded into a fresh optimizer over fresh vars on
/// the other path, continues exactly as an uninterrupted run; so does switching paths in the
/// middle of one optimizer's life.
fn check_resume<C: Algorithm>(
    name: &str,
    dtype: DType,
    make: &dyn Fn(Vec<Var>) -> R<Optim<C>>,
) -> R<()> {
    let vr = params(dtype)?;
    let mut reference = make(vr.clone())?;
    run(&mut reference, &vr, 0, STEPS, false)?;
    for first_tensor in [false, true] {
        let what = format!("{name} {dtype:?} resume (first on tensor path: {first_tensor})");
        let v1 = params(dtype)?;
        let mut o1 = make(v1.clone())?;
        run(&mut o1, &v1, 0, 4, first_tensor)?;
        let sd = o1.state_dict()?;
        let v2 = clone_vars(&v1)?;
        let mut o2 = make(v2.clone())?;
        {
            let _guard = (!first_tensor).then(force_tensor_path);
            o2.load_state_dict(&sd)?;
        }
        run(&mut o2, &v2, 4, STEPS, !first_tensor)?;
        assert_same_vars(&vr, &v2, tol(dtype), &what);
        assert_same_state(&reference.state_dict()?, &o2.state_dict()?, &what);
        // The same optimizer switching paths (its state moves between host and "device").
        run(&mut o1, &v1, 4, STEPS, !first_tensor)?;
        assert_same_vars(&vr, &v1, tol(dtype), &what);
        assert_same_state(&reference.state_dict()?, &o1.state_dict()?, &what);
    }
    Ok(())
}

fn check_all<C: Algorithm>(name: &str, make: impl Fn(Vec<Var>) -> R<Optim<C>>) -> R<()> {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        check_paths(name, dtype, &make)?;
    }
    check_resume(name, DType::F32, &make)?;
    check_resume(name, DType::BF16, &make)
}

#[test]
fn the_dispatch_sends_every_non_cpu_device_to_the_tensor_path() {
    for gpu_id in [0, 1, 7] {
        assert_eq!(
            path_for(DeviceLocation::Cuda { gpu_id }),
            UpdatePath::Tensor
        );
        assert_eq!(
            path_for(DeviceLocation::Metal { gpu_id }),
            UpdatePath::Tensor
        );
    }
    assert_eq!(path_for(DeviceLocation::Cpu), UpdatePath::Fused);
    assert_eq!(update_path(&Device::Cpu), UpdatePath::Fused);
    {
        let _a = force_tensor_path();
        let _b = force_tensor_path();
        assert_eq!(update_path(&Device::Cpu), UpdatePath::Tensor);
        drop(_b);
        assert_eq!(update_path(&Device::Cpu), UpdatePath::Tensor);
        // Other threads are not affected.
        let other = std::thread::spawn(|| update_path(&Device::Cpu)).join();
        assert_eq!(other.ok(), Some(UpdatePath::Fused));
    }
    assert_eq!(update_path(&Device::Cpu), UpdatePath::Fused);
}

#[test]
fn sgd_tensor_path_matches_fused() -> R<()> {
    let c = SgdConfig::default().with_lr(0.05);
    let cases = [
        ("sgd", c),
        ("sgd_momentum", c.with_momentum(0.9)),
        ("sgd_dampening", c.with_momentum(0.9).with_dampening(0.5)),
        ("sgd_nesterov", c.with_momentum(0.9).with_nesterov(true)),
        ("sgd_wd", c.with_momentum(0.8).with_weight_decay(0.1)),
        ("sgd_maximize", c.with_momentum(0.9).with_maximize(true)),
    ];
    for (name, cfg) in cases {
        check_all(name, |v| Sgd::with_groups(v, cfg))?;
    }
    Ok(())
}

#[test]
fn adam_tensor_path_matches_fused() -> R<()> {
    let c = AdamConfig::default().with_lr(0.01);
    let cases = [
        ("adam", c),
        ("adam_amsgrad", c.with_amsgrad(true)),
        ("adam_wd", c.with_weight_decay(0.1)),
        ("adam_maximize", c.with_betas(0.8, 0.99).with_maximize(true)),
    ];
    for (name, cfg) in cases {
        check_all(name, |v| Adam::with_groups(v, cfg))?;
    }
    Ok(())
}

#[test]
fn adamw_tensor_path_matches_fused_with_groups() -> R<()> {
    let c = AdamWConfig::default().with_lr(0.01);
    check_all("adamw", |v| AdamW::with_groups(v, c))?;
    let ams = c.with_weight_decay(0.1).with_amsgrad(true);
    check_all("adamw_amsgrad", |v| AdamW::with_groups(v, ams))?;
    check_all("adamw_groups", |v: Vec<Var>| {
        let groups = vec![
            ParamGroup::new(vec![v[0].clone(), v[2].clone()]).with_weight_decay(0.1),
            ParamGroup::new(vec![v[1].clone()])
                .with_weight_decay(0.0)
                .with_lr_mult(0.5),
        ];
        AdamW::with_groups(groups, c)
    })
}

#[test]
fn rmsprop_tensor_path_matches_fused() -> R<()> {
    let c = RmsPropConfig::default().with_lr(0.01);
    let cases = [
        ("rmsprop", c),
        ("rmsprop_momentum", c.with_momentum(0.9)),
        ("rmsprop_centered", c.with_centered(true)),
        (
            "rmsprop_all",
            c.with_alpha(0.9)
                .with_momentum(0.5)
                .with_centered(true)
                .with_weight_decay(0.1),
        ),
        ("rmsprop_maximize", c.with_maximize(true)),
    ];
    for (name, cfg) in cases {
        check_all(name, |v| RmsProp::with_groups(v, cfg))?;
    }
    Ok(())
}

#[test]
fn adagrad_tensor_path_matches_fused() -> R<()> {
    let c = AdagradConfig::default().with_lr(0.1);
    let cases = [
        ("adagrad", c),
        ("adagrad_lr_decay", c.with_lr_decay(0.1)),
        (
            "adagrad_wd_init",
            c.with_weight_decay(0.1).with_initial_accumulator_value(0.1),
        ),
        ("adagrad_maximize", c.with_maximize(true)),
    ];
    for (name, cfg) in cases {
        check_all(name, |v| Adagrad::with_groups(v, cfg))?;
    }
    Ok(())
}

#[test]
fn lion_tensor_path_matches_fused() -> R<()> {
    let c = LionConfig::default().with_lr(1e-3);
    check_all("lion", |v| Lion::with_groups(v, c))?;
    let wd = c.with_betas(0.95, 0.98).with_weight_decay(0.5);
    check_all("lion_wd", |v| Lion::with_groups(v, wd))?;
    check_paths("lion_maximize", DType::F32, &|v| {
        Lion::with_groups(ParamGroups::from(v), c.with_maximize(true))
    })
}

/// A gradient store with a NaN (or Inf) in parameter 2.
fn bad_grads(vars: &[Var], bad: f32) -> R<GradStore> {
    let mut g = grads(vars, 1)?;
    let d = vars[2].dims().to_vec();
    let mut v = values(&det(&d, 9, 0.5)?)
        .into_iter()
        .map(|x| x as f32)
        .collect::<Vec<_>>();
    v[5] = bad;
    let t = Tensor::from_vec(v, d, &DEV)?.to_dtype(vars[2].dtype())?;
    g.insert(vars[2].as_tensor(), t);
    Ok(g)
}

#[test]
fn the_non_finite_policy_is_the_same_on_both_paths() -> R<()> {
    for dtype in [DType::F32, DType::BF16] {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for tensor in [false, true] {
                let _guard = tensor.then(force_tensor_path);
                let what = format!("{dtype:?} {bad} tensor path {tensor}");
                // Error: names the parameter, changes nothing.
                let v = params(dtype)?;
                let named = ParamGroup::named(
                    v.iter()
                        .enumerate()
                        .map(|(i, v)| (format!("w{i}"), v.clone()))
                        .collect(),
                );
                let cfg = AdamWConfig::default().with_lr(0.01);
                let mut opt = AdamW::with_groups(vec![named], cfg)?;
                opt.try_step(&grads(&v, 0)?)?;
                let (before_w, before_s) = (clone_vars(&v)?, opt.state_dict()?);
                let err = opt.try_step(&bad_grads(&v, bad)?).expect_err(&what);
                let msg = err.to_string();
                assert!(msg.contains("w2") && msg.contains("AdamW"), "{what}: {msg}");
                assert_same_vars(&before_w, &v, 0.0, &what);
                assert_same_state(&before_s, &opt.state_dict()?, &what);
                // Skip: counts the step, changes nothing else.
                let mut opt = Sgd::with_groups(
                    v.clone(),
                    SgdConfig::default()
                        .with_momentum(0.9)
                        .with_non_finite(NonFinite::Skip),
                )?;
                opt.try_step(&grads(&v, 0)?)?;
                let (before_w, before_s) = (clone_vars(&v)?, opt.state_dict()?);
                opt.try_step(&bad_grads(&v, bad)?)?;
                assert_eq!(opt.skipped_steps(), 1, "{what}");
                assert_same_vars(&before_w, &v, 0.0, &what);
                let mut after = opt.state_dict()?;
                after.insert(
                    "__meta.skipped_steps".into(),
                    before_s["__meta.skipped_steps"].clone(),
                );
                assert_same_state(&before_s, &after, &what);
            }
        }
    }
    Ok(())
}

#[test]
fn a_half_parameter_changed_from_outside_reseeds_its_master_copy_on_both_paths() -> R<()> {
    let make = |v: Vec<Var>| Adam::with_groups(v, AdamConfig::default().with_lr(0.01));
    let mut out = Vec::new();
    for tensor in [false, true] {
        let v = params(DType::BF16)?;
        let mut opt = make(v.clone())?;
        run(&mut opt, &v, 0, 3, tensor)?;
        v[0].set(&v[0].as_tensor().affine(0.5, 0.25)?)?;
        run(&mut opt, &v, 3, 6, tensor)?;
        out.push((v, opt.state_dict()?));
    }
    assert_same_vars(&out[0].0, &out[1].0, tol(DType::BF16), "reseed");
    assert_same_state(&out[0].1, &out[1].1, "reseed");
    Ok(())
}

/// Gradients of `vars` for clipping: large, so that the norm clips.
fn clip_grads(vars: &[Var], inf: bool) -> R<GradStore> {
    let mut g = GradStore::default();
    for (i, v) in vars.iter().enumerate() {
        let mut t = det(v.dims(), 40 + i as u64, 30.0)?;
        if inf && i == 1 {
            t = t.broadcast_add(&Tensor::new(f32::INFINITY, &DEV)?)?;
        }
        g.insert(v.as_tensor(), t.to_dtype(v.dtype())?);
    }
    Ok(g)
}

#[test]
fn clipping_tensor_path_matches_fused() -> R<()> {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let v = params(dtype)?;
        let mut results = Vec::new();
        for tensor in [false, true] {
            let _guard = tensor.then(force_tensor_path);
            let mut g = clip_grads(&v, false)?;
            let norm = grad_norm(&g, &v)?;
            let clipped = clip_grad_norm(&mut g, &v, 1.0)?;
            let after = grad_norm(&g, &v)?;
            let mut gi = clip_grads(&v, false)?;
            let inf_norm = clip_grad_norm_inf(&mut gi, &v, 0.5)?;
            let mut bad = clip_grads(&v, true)?;
            let bad_inf = clip_grad_norm_inf(&mut bad, &v, 0.5)?;
            let bad_l2 = clip_grad_norm(&mut bad, &v, 0.5)?;
            let gs: Vec<Tensor> = v
                .iter()
                .flat_map(|x| [g.get(x.as_tensor()), gi.get(x.as_tensor())])
                .map(|t| t.expect("gradient").clone())
                .collect();
            results.push((norm, clipped, after, inf_norm, bad_inf, bad_l2, gs));
        }
        let (a, b) = (&results[0], &results[1]);
        let what = format!("clip {dtype:?}");
        for (x, y) in [(a.0, b.0), (a.1, b.1), (a.2, b.2), (a.3, b.3)] {
            assert!(
                (x - y).abs() <= 1e-6 * (1.0 + y.abs()),
                "{what}: {x} vs {y}"
            );
        }
        assert!(a.1 > 1.0 && (a.2 - 1.0).abs() < 1e-2, "{what}: clipped");
        assert_eq!(
            (a.4, b.4),
            (f64::INFINITY, f64::INFINITY),
            "{what}: inf norm"
        );
        assert_eq!(
            (a.5, b.5),
            (f64::INFINITY, f64::INFINITY),
            "{what}: l2 of Inf"
        );
        for (k, (x, y)) in a.6.iter().zip(&b.6).enumerate() {
            assert_close(x, y, tol(dtype), &format!("{what}: grad {k}"));
        }
    }
    // A NaN gives NaN on both paths.
    let v = params(DType::F32)?;
    for tensor in [false, true] {
        let _guard = tensor.then(force_tensor_path);
        let mut g = bad_grads(&v, f32::NAN)?;
        assert!(clip_grad_norm_inf(&mut g, &v, 1.0)?.is_nan());
        assert!(clip_grad_norm(&mut g, &v, 1.0)?.is_nan());
    }
    Ok(())
}

/// Runs `f` on the forced tensor path (`tensor`) or the fused one.
fn on<T>(tensor: bool, f: impl FnOnce() -> R<T>) -> R<T> {
    let _guard = tensor.then(force_tensor_path);
    f()
}

#[test]
fn ema_tensor_path_matches_fused_and_resumes_across_paths() -> R<()> {
    let cfg = EmaConfig::default()
        .with_decay(0.99)
        .with_warmup(EmaWarmup::power());
    let named = |v: &[Var]| -> Vec<(String, Var)> {
        v.iter()
            .enumerate()
            .map(|(i, v)| (format!("p{i}"), v.clone()))
            .collect()
    };
    for dtype in [DType::F32, DType::BF16] {
        let what = format!("ema {dtype:?}");
        let mut runs = Vec::new();
        for tensor in [false, true] {
            let v = params(dtype)?;
            let mut ema = on(tensor, || Ema::new(named(&v), cfg))?;
            for step in 1..=6u64 {
                for (i, x) in v.iter().enumerate() {
                    let d = det(x.dims(), step * 3 + i as u64, 0.1)?.to_dtype(dtype)?;
                    x.set(&(x.as_tensor() + d)?)?;
                }
                on(tensor, || ema.update(step))?;
            }
            let sd = ema.state_dict()?;
            // Resumed on the other path, one more update on each.
            let other = on(!tensor, || {
                let mut e = Ema::new(named(&v), cfg)?;
                e.load_state_dict(&sd)?;
                e.update(7)?;
                e.weights()
            })?;
            on(tensor, || ema.update(7))?;
            runs.push((ema.weights()?, sd, other, ema.state_dict()?));
        }
        let (a, b) = (&runs[0], &runs[1]);
        for (k, t) in &a.0 {
            assert_eq!(t.dtype(), dtype);
            assert_close(t, &b.0[k], tol(dtype), &format!("{what}: {k}"));
            assert_close(t, &a.2[k], tol(dtype), &format!("{what}: resumed {k}"));
            assert_close(t, &b.2[k], tol(dtype), &format!("{what}: resumed {k}"));
        }
        assert_same_state(&a.1, &b.1, &what);
        assert_same_state(&a.3, &b.3, &what);
    }
    Ok(())
}

#[test]
fn scaler_tensor_path_matches_fused() -> R<()> {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let what = format!("scaler {dtype:?}");
        let mut runs = Vec::new();
        for tensor in [false, true] {
            let _guard = tensor.then(force_tensor_path);
            let v = params(DType::F32)?;
            let mut opt = Sgd::with_groups(v.clone(), SgdConfig::default().with_lr(0.1))?;
            let cfg = GradScalerConfig::default()
                .with_init_scale(1024.0)
                .with_growth_interval(2);
            let mut scaler = GradScaler::new(cfg)?;
            let mut log = Vec::new();
            for t in 0..5u64 {
                let mut g = GradStore::default();
                for (i, x) in v.iter().enumerate() {
                    let mut d = det(x.dims(), t * 5 + i as u64, 1000.0)?;
                    if t == 2 && i == 2 {
                        d = d.broadcast_mul(&Tensor::new(f32::INFINITY, &DEV)?)?;
                    }
                    g.insert(x.as_tensor(), d.to_dtype(dtype)?);
                }
                let found = scaler.unscale(&mut g, &v)?;
                let unscaled: Vec<Tensor> = v
                    .iter()
                    .map(|x| g.get(x.as_tensor()).expect("grad").clone())
                    .collect();
                // The optimizer steps on f32 gradients.
                let mut g32 = GradStore::default();
                for (x, u) in v.iter().zip(&unscaled) {
                    g32.insert(x.as_tensor(), u.to_dtype(DType::F32)?);
                }
                let stepped = scaler.step(&mut opt, &mut g32, &v)?;
                scaler.update()?;
                log.push((found, stepped, scaler.get_scale(), unscaled));
            }
            runs.push((log, v, scaler.state_dict()?));
        }
        let (a, b) = (&runs[0], &runs[1]);
        for (t, (x, y)) in a.0.iter().zip(&b.0).enumerate() {
            assert_eq!((x.0, x.1, x.2), (y.0, y.1, y.2), "{what}: step {t}");
            assert_eq!(x.0, t == 2, "{what}: step {t}");
            for (k, (p, q)) in x.3.iter().zip(&y.3).enumerate() {
                assert_eq!(p.dtype(), dtype);
                assert_close(p, q, 0.0, &format!("{what}: step {t} grad {k}"));
            }
        }
        assert_same_vars(&a.1, &b.1, 1e-6, &what);
        assert_same_state(&a.2, &b.2, &what);
    }
    Ok(())
}

#[test]
fn accumulator_tensor_path_matches_fused() -> R<()> {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for reduction in [GradReduction::Mean, GradReduction::Sum] {
            let what = format!("accumulator {dtype:?} {reduction:?}");
            let mut runs = Vec::new();
            for tensor in [false, true] {
                let _guard = tensor.then(force_tensor_path);
                let v = params(dtype)?;
                let cfg = GradAccumulatorConfig::default()
                    .with_n_micro(3)
                    .with_reduction(reduction);
                let mut acc = GradAccumulator::with_config(v.clone(), cfg)?;
                let mut outs = Vec::new();
                for t in 0..7u64 {
                    // Parameter 1 misses micro-batch 3 (a zero gradient for it).
                    if let Some(g) = acc.accumulate(grads(&v, t)?)? {
                        outs.push(g);
                    }
                }
                // A short last cycle.
                outs.push(acc.take()?);
                let got: Vec<Tensor> = outs
                    .iter()
                    .flat_map(|g| v.iter().map(move |x| g.get(x.as_tensor())))
                    .map(|t| t.expect("accumulated gradient").clone())
                    .collect();
                runs.push(got);
            }
            assert_eq!(runs[0].len(), runs[1].len(), "{what}");
            for (k, (x, y)) in runs[0].iter().zip(&runs[1]).enumerate() {
                assert_eq!((x.dtype(), y.dtype()), (dtype, dtype), "{what}");
                assert_close(x, y, tol(dtype), &format!("{what}: {k}"));
            }
        }
    }
    Ok(())
}
