//! BatchNorm: PyTorch fixtures (three training steps with running-stat updates, then eval;
//! gradients in training mode), finite differences in f64, gradient flow to a parameter before
//! the norm, f16/bf16, running stats shared with a VarMap, and bad input.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::norm::{batch_norm, BatchNorm, BatchNormConfig};
use common::*;

const CASES: [&str; 6] = [
    "bn2d",
    "bn3d_noaffine",
    "bn4d",
    "bn5d",
    "bn_notrack",
    "bn2d_b2_m1",
];

fn cfg_of(f: &Fixtures, case: &str) -> R<BatchNormConfig> {
    let v = field(f, case, "cfg").to_vec1::<f64>()?;
    Ok(BatchNormConfig {
        eps: v[0],
        momentum: v[1],
        affine: v[2] != 0.0,
        track_running_stats: v[3] != 0.0,
    })
}

/// A VarBuilder with the case's state dict under PyTorch's names.
fn case_vb(f: &Fixtures, case: &str) -> VarBuilder<'static> {
    let names = [
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    ];
    let ts: HashMap<String, Tensor> = names
        .iter()
        .filter_map(|n| {
            f.get(&format!("{case}.{n}"))
                .map(|t| (n.to_string(), t.clone()))
        })
        .collect();
    VarBuilder::from_tensors(ts, DType::F32, &Device::Cpu)
}

fn nbt(f: &Fixtures, key: &str) -> R<u64> {
    Ok(get(f, key).flatten_all()?.to_vec1::<i64>()?[0] as u64)
}

#[test]
fn train_steps_then_eval_match_pytorch() -> R<()> {
    let f = fixtures("norm_batch");
    for case in CASES {
        let cfg = cfg_of(&f, case)?;
        let c = field(&f, case, "x0").dims()[1];
        let bn = batch_norm(c, cfg, case_vb(&f, case))?;
        if cfg.track_running_stats {
            assert_eq!(
                bn.num_batches_tracked().unwrap(),
                nbt(&f, &format!("{case}.num_batches_tracked"))?
            );
        } else {
            assert!(bn.running_mean().is_none() && bn.running_var().is_none());
        }
        for i in 0..3 {
            let y = bn.forward_t(field(&f, case, &format!("x{i}")), true)?;
            assert_close(
                &format!("{case} y{i}"),
                &y,
                field(&f, case, &format!("y{i}")),
                1e-5,
            );
            if cfg.track_running_stats {
                let rm = bn.running_mean().ok_or("running mean")?;
                let rv = bn.running_var().ok_or("running var")?;
                assert_close(
                    &format!("{case} rm{i}"),
                    rm,
                    field(&f, case, &format!("rm{i}")),
                    1e-5,
                );
                assert_close(
                    &format!("{case} rv{i}"),
                    rv,
                    field(&f, case, &format!("rv{i}")),
                    1e-5,
                );
                assert_eq!(
                    bn.num_batches_tracked().unwrap(),
                    nbt(&f, &format!("{case}.nbt{i}"))?
                );
            }
        }
        let ye = bn.forward_t(field(&f, case, "xe"), false)?;
        assert_close(&format!("{case} ye"), &ye, field(&f, case, "ye"), 1e-5);
    }
    Ok(())
}

/// A BatchNorm from the case's tensors with `weight` and `bias` taken from `wb` (when affine).
fn bn_with(f: &Fixtures, case: &str, wb: Option<(Tensor, Tensor)>, dt: DType) -> R<BatchNorm> {
    let cfg = cfg_of(f, case)?;
    let c = field(f, case, "x0").dims()[1];
    let running = if cfg.track_running_stats {
        Some((
            field(f, case, "running_mean").to_dtype(dt)?,
            field(f, case, "running_var").to_dtype(dt)?,
        ))
    } else {
        None
    };
    Ok(BatchNorm::new(c, wb, running, cfg)?)
}

#[test]
fn train_gradients_match_pytorch() -> R<()> {
    let f = fixtures("norm_batch");
    for case in CASES {
        let cfg = cfg_of(&f, case)?;
        let (x, gy) = (field(&f, case, "x0"), field(&f, case, "gy0"));
        if cfg.affine {
            let (w, b) = (field(&f, case, "weight"), field(&f, case, "bias"));
            let (y, g) = fwd_bwd_n(&[x, w, b], gy, |t| {
                let bn = bn_with(&f, case, Some((t[1].clone(), t[2].clone())), DType::F32)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                bn.forward_t(&t[0], true)
            })?;
            assert_close(&format!("{case} y0"), &y, field(&f, case, "y0"), 1e-5);
            assert_close(&format!("{case} gx0"), &g[0], field(&f, case, "gx0"), 1e-4);
            assert_close(&format!("{case} gw0"), &g[1], field(&f, case, "gw0"), 1e-4);
            assert_close(&format!("{case} gb0"), &g[2], field(&f, case, "gb0"), 1e-4);
        } else {
            let bn = bn_with(&f, case, None, DType::F32)?;
            let (y, gx) = fwd_bwd1(x, gy, |x| bn.forward_t(x, true))?;
            assert_close(&format!("{case} y0"), &y, field(&f, case, "y0"), 1e-5);
            assert_close(&format!("{case} gx0"), &gx, field(&f, case, "gx0"), 1e-4);
        }
    }
    Ok(())
}

/// Central finite differences in f64 of `sum(op(x) * gy)` wrt each element of `x`.
fn fd64(x: &Tensor, gy: &Tensor, op: impl Fn(&Tensor) -> R<Tensor>) -> R<Vec<f64>> {
    let xs = x.flatten_all()?.to_vec1::<f64>()?;
    let h = 1e-6;
    let loss = |v: Vec<f64>| -> R<f64> {
        let y = op(&Tensor::from_vec(v, x.shape(), x.device())?)?;
        Ok((y * gy)?.sum_all()?.to_scalar::<f64>()?)
    };
    let mut g = Vec::with_capacity(xs.len());
    for i in 0..xs.len() {
        let (mut p, mut m) = (xs.clone(), xs.clone());
        p[i] += h;
        m[i] -= h;
        g.push((loss(p)? - loss(m)?) / (2.0 * h));
    }
    Ok(g)
}

fn assert_vec_close(what: &str, got: &Tensor, want: &[f64], tol: f64) -> R<()> {
    let got = got.flatten_all()?.to_vec1::<f64>()?;
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() < tol * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs fd {w}"
        );
    }
    Ok(())
}

#[test]
fn train_gradients_match_finite_differences_f64() -> R<()> {
    let dev = Device::Cpu;
    for shape in [vec![5usize, 3], vec![3, 2, 4, 3]] {
        let c = shape[1];
        let x = Tensor::randn(1f64, 2., shape.as_slice(), &dev)?;
        let gy = Tensor::randn(0f64, 1., shape.as_slice(), &dev)?;
        let w = Tensor::rand(0.5f64, 1.5, c, &dev)?;
        let b = Tensor::randn(0f64, 1., c, &dev)?;
        let cfg = BatchNormConfig::default().with_track_running_stats(false);
        let run = |x: &Tensor, w: &Tensor, b: &Tensor| -> R<Tensor> {
            let bn = BatchNorm::new(c, Some((w.clone(), b.clone())), None, cfg)?;
            Ok(bn.forward_t(x, true)?)
        };
        let (_, g) = fwd_bwd_n(&[&x, &w, &b], &gy, |t| {
            run(&t[0], &t[1], &t[2]).map_err(|e| candle_core::Error::Msg(e.to_string()))
        })?;
        assert_vec_close("dx", &g[0], &fd64(&x, &gy, |x| run(x, &w, &b))?, 1e-6)?;
        assert_vec_close("dw", &g[1], &fd64(&w, &gy, |w| run(&x, w, &b))?, 1e-6)?;
        assert_vec_close("db", &g[2], &fd64(&b, &gy, |b| run(&x, &w, b))?, 1e-6)?;
        // The sum over the batch of dL/dx is zero per channel (the mean is subtracted), which
        // a forward with detached statistics would not give.
        let per_c = g[0].transpose(0, 1)?.flatten_from(1)?.sum(1)?;
        let m = per_c.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(m < 1e-9, "sum of dx per channel {m}");
    }
    Ok(())
}

#[test]
fn gradient_flows_to_a_parameter_before_the_norm() -> R<()> {
    // y = BN(x · Wᵀ) in training mode; the gradient wrt W must be non-zero and match finite
    // differences (it would differ if the batch statistics were treated as constants).
    let dev = Device::Cpu;
    let x = Tensor::randn(0f64, 1., (6, 4), &dev)?;
    let w0 = Tensor::randn(0f64, 1., (3, 4), &dev)?;
    let gy = Tensor::randn(0f64, 1., (6, 3), &dev)?;
    let bn = BatchNorm::new(
        3,
        Some((
            Tensor::ones(3, DType::F64, &dev)?,
            Tensor::zeros(3, DType::F64, &dev)?,
        )),
        Some((
            Tensor::zeros(3, DType::F64, &dev)?,
            Tensor::ones(3, DType::F64, &dev)?,
        )),
        BatchNormConfig::default(),
    )?;
    let w = Var::from_tensor(&w0)?;
    let y = bn.forward_t(&x.matmul(&w.as_tensor().t()?)?, true)?;
    let grads = (y * &gy)?.sum_all()?.backward()?;
    let gw = grads.get(w.as_tensor()).ok_or("no gradient for W")?;
    assert!(gw.abs()?.max_all()?.to_scalar::<f64>()? > 1e-3);
    let fd = fd64(&w0, &gy, |w| Ok(bn.forward_t(&x.matmul(&w.t()?)?, true)?))?;
    assert_vec_close("dW", gw, &fd, 1e-6)?;
    Ok(())
}

#[test]
fn half_precision_close_to_f32() -> R<()> {
    let f = fixtures("norm_batch");
    for case in ["bn4d", "bn3d_noaffine"] {
        let cfg = cfg_of(&f, case)?;
        for (dt, tol) in [(DType::F16, 5e-3), (DType::BF16, 3e-2)] {
            let x = field(&f, case, "x0").to_dtype(dt)?;
            let gy = field(&f, case, "gy0").to_dtype(dt)?;
            let run = |d: DType| -> R<(Tensor, Tensor, Tensor, Tensor)> {
                let wb = if cfg.affine {
                    Some((
                        field(&f, case, "weight").to_dtype(dt)?.to_dtype(d)?,
                        field(&f, case, "bias").to_dtype(dt)?.to_dtype(d)?,
                    ))
                } else {
                    None
                };
                let bn = bn_with(&f, case, wb, d)?;
                let (y, gx) =
                    fwd_bwd1(&x.to_dtype(d)?, &gy.to_dtype(d)?, |x| bn.forward_t(x, true))?;
                let rm = bn.running_mean().ok_or("rm")?.clone();
                let rv = bn.running_var().ok_or("rv")?.clone();
                Ok((y, gx, rm, rv))
            };
            let half = run(dt)?;
            assert_eq!(
                (half.0.dtype(), half.1.dtype(), half.2.dtype()),
                (dt, dt, dt)
            );
            let full = run(DType::F32)?;
            for (what, h, w) in [
                ("y", &half.0, &full.0),
                ("gx", &half.1, &full.1),
                ("rm", &half.2, &full.2),
                ("rv", &half.3, &full.3),
            ] {
                assert_close(&format!("{case} {dt:?} {what}"), h, w, tol);
            }
        }
    }
    Ok(())
}

#[test]
fn varmap_holds_and_updates_running_stats() -> R<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let bn = batch_norm(2, BatchNormConfig::default(), vb.pp("bn"))?;
    assert_eq!(varmap.all_vars().len(), 5); // weight, bias and the three buffers
    let x = Tensor::randn(3f32, 1., (8, 2, 3), &dev)?;
    bn.forward_t(&x, true)?;
    let data = varmap.data().lock().map_err(|e| e.to_string())?;
    let rm = data
        .get("bn.running_mean")
        .ok_or("running_mean in the map")?;
    assert_close(
        "shared running mean",
        rm.as_tensor(),
        bn.running_mean().ok_or("rm")?,
        0.0,
    );
    assert!(rm.as_tensor().min_all()?.to_scalar::<f32>()? > 0.1);
    // A clone shares the running stats and the counter.
    let bn2 = bn.clone();
    bn2.forward_t(&x, true)?;
    assert_eq!(bn.num_batches_tracked().unwrap(), 2);
    Ok(())
}

#[test]
fn bad_input_is_an_error_naming_the_block() -> R<()> {
    let dev = Device::Cpu;
    let vb = || VarBuilder::zeros(DType::F32, &dev);
    let d = BatchNormConfig::default();
    // Config.
    for cfg in [
        d.with_eps(0.0),
        d.with_eps(-1.0),
        d.with_eps(f64::NAN),
        d.with_momentum(-0.1),
        d.with_momentum(1.5),
        d.with_momentum(f64::NAN),
    ] {
        assert_err_names(batch_norm(3, cfg, vb()), "BatchNorm", "invalid config");
        assert_err_names(cfg.validate(), "BatchNorm", "invalid config");
    }
    assert_err_names(batch_norm(0, d, vb()), "BatchNorm", "channels");
    // Constructor tensors.
    let t = |n: usize| Tensor::zeros(n, DType::F32, &dev);
    assert_err_names(
        BatchNorm::new(3, Some((t(4)?, t(3)?)), Some((t(3)?, t(3)?)), d),
        "BatchNorm",
        "weight",
    );
    assert_err_names(
        BatchNorm::new(3, None, Some((t(3)?, t(3)?)), d),
        "BatchNorm",
        "weight",
    );
    assert_err_names(
        BatchNorm::new(3, Some((t(3)?, t(3)?)), None, d),
        "BatchNorm",
        "running_mean",
    );
    assert_err_names(
        BatchNorm::new(3, Some((t(3)?, t(3)?)), Some((t(3)?, t(2)?)), d),
        "BatchNorm",
        "running_var",
    );
    // Inputs.
    let bn = batch_norm(3, d, vb())?;
    let notrack = batch_norm(3, d.with_track_running_stats(false), vb())?;
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &dev);
    for (what, x, train) in [
        ("rank 1", z(&[3])?, true),
        ("rank 6", z(&[2, 3, 1, 1, 1, 2])?, true),
        ("channels", z(&[2, 4])?, true),
        ("channels 4d", z(&[2, 2, 3, 3])?, false),
        ("zero batch", z(&[0, 3])?, true),
        ("zero spatial", z(&[2, 3, 0])?, false),
        ("batch of 1 (2d)", z(&[1, 3])?, true),
        ("batch of 1 (4d, 1x1)", z(&[1, 3, 1, 1])?, true),
        ("dtype u32", Tensor::zeros((2, 3), DType::U32, &dev)?, true),
        (
            "dtype f16 vs f32 weight",
            Tensor::zeros((2, 3), DType::F16, &dev)?,
            true,
        ),
    ] {
        let r = bn.forward_train_eval(&x, train);
        assert!(r.is_err(), "{what}: expected an error");
        assert_err(what, r, &["BatchNorm"]);
        // Through ModuleT too.
        assert_err(what, bn.forward_t(&x, train), &["BatchNorm"]);
    }
    let one = z(&[1, 3, 1])?;
    assert_err(
        "1 value per channel",
        bn.forward_t(&one, true),
        &["BatchNorm", "more than 1 value per channel"],
    );
    // Without running stats even eval uses batch statistics, so it needs > 1 value too.
    assert_err(
        "notrack eval",
        notrack.forward_t(&one, false),
        &["BatchNorm"],
    );
    // Eval with running stats is fine on a single value per channel.
    assert!(bn.forward_t(&one, false).is_ok());
    // A failed train step must not touch the running stats.
    assert_eq!(bn.num_batches_tracked().unwrap(), 0);
    Ok(())
}

/// `(y, gx, gw, gb, running_mean, running_var)` of one training step of a fresh tracked,
/// affine BatchNorm in `dt`, through the fused path or the composition.
fn train_step(
    x: &Tensor,
    gy: &Tensor,
    wb: (&Tensor, &Tensor),
    dt: DType,
    fused: bool,
) -> R<Vec<Tensor>> {
    let c = x.dims()[1];
    let up = |t: &Tensor| t.to_dtype(dt);
    let running = (
        Tensor::zeros(c, dt, x.device())?,
        Tensor::ones(c, dt, x.device())?,
    );
    let cell = std::cell::RefCell::new(None);
    let (y, g) = fwd_bwd_n(&[&up(x)?, &up(wb.0)?, &up(wb.1)?], &up(gy)?, |t| {
        let bn = BatchNorm::new(
            c,
            Some((t[1].clone(), t[2].clone())),
            Some(running.clone()),
            BatchNormConfig::default().with_momentum(0.25),
        )
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let y = if fused {
            bn.forward_t(&t[0], true)
        } else {
            bn.forward_reference(&t[0], true)
                .map_err(candle_core::Error::from)
        };
        *cell.borrow_mut() = Some(bn);
        y
    })?;
    let bn = cell.into_inner().ok_or("bn")?;
    let mut out = vec![y];
    out.extend(g);
    out.push(bn.running_mean().ok_or("rm")?.clone());
    out.push(bn.running_var().ok_or("rv")?.clone());
    Ok(out)
}

#[test]
fn fused_kernel_matches_f64_composition_on_larger_inputs() -> R<()> {
    // Large enough that the kernel splits the work into several tasks; odd sizes.
    let dev = Device::Cpu;
    for shape in [vec![20011usize, 3], vec![6, 5, 33, 29], vec![3, 4, 5, 6, 7]] {
        let c = shape[1];
        let x = Tensor::randn(2f32, 3., shape.as_slice(), &dev)?;
        let gy = Tensor::randn(0f32, 1., shape.as_slice(), &dev)?;
        let w = Tensor::rand(0.5f32, 1.5, c, &dev)?;
        let b = Tensor::randn(0f32, 1., c, &dev)?;
        let got = train_step(&x, &gy, (&w, &b), DType::F32, true)?;
        let want = train_step(&x, &gy, (&w, &b), DType::F64, false)?;
        for (i, what) in ["y", "gx", "gw", "gb", "rm", "rv"].iter().enumerate() {
            assert_close(&format!("{shape:?} {what}"), &got[i], &want[i], 2e-5);
        }
    }
    // A large mean against a small spread: the kernel subtracts the mean first.
    let x = Tensor::randn(1000f32, 0.5, (64, 3, 10), &dev)?;
    let gy = Tensor::randn(0f32, 1., (64, 3, 10), &dev)?;
    let (w, b) = (
        Tensor::ones(3, DType::F32, &dev)?,
        Tensor::zeros(3, DType::F32, &dev)?,
    );
    let got = train_step(&x, &gy, (&w, &b), DType::F32, true)?;
    let want = train_step(&x, &gy, (&w, &b), DType::F64, false)?;
    assert_close("large mean y", &got[0], &want[0], 1e-3);
    assert_close("large mean gx", &got[1], &want[1], 1e-3);
    Ok(())
}

#[test]
fn fused_backward_matches_finite_differences() -> R<()> {
    let dev = Device::Cpu;
    let (x, gy) = (
        Tensor::randn(1f32, 2., (4, 3, 5), &dev)?,
        Tensor::randn(0f32, 1., (4, 3, 5), &dev)?,
    );
    let w = Tensor::rand(0.5f32, 1.5, 3, &dev)?;
    let b = Tensor::randn(0f32, 1., 3, &dev)?;
    let cfg = BatchNormConfig::default().with_track_running_stats(false);
    let bn = BatchNorm::new(3, Some((w, b)), None, cfg)?;
    let (_, gx) = fwd_bwd1(&x, &gy, |x| bn.forward_t(x, true))?;
    let fd = finite_diff(&x, &gy, 1e-2, |x| bn.forward_t(x, true))?;
    assert_matches_fd("fused dx", &gx, &fd, 1e-2)
}

#[test]
fn gradient_flows_through_the_fused_kernel_to_a_parameter_before_it() -> R<()> {
    // f32, (B, C, H, W): y = BN(x · s) with a per-channel scale parameter s before the norm.
    // BN removes the scale, so dL/ds is exactly 0 in the limit; use a shift *and* a square to
    // give s a real effect: y = BN((x + s)²).
    let dev = Device::Cpu;
    // Fixed inputs (candle's CPU RNG cannot be seeded: random ones made the threshold flaky).
    let wave = |f: f64| -> R<Tensor> {
        Ok(Tensor::arange(0f32, 96., &dev)?
            .affine(f, 0.3)?
            .sin()?
            .reshape((3, 2, 4, 4))?)
    };
    let (x, gy) = (wave(0.37)?, wave(1.91)?);
    let s0 = Tensor::new(&[0.7f32, -0.4], &dev)?;
    let pre = |x: &Tensor, s: &Tensor| x.broadcast_add(&s.reshape((1, 2, 1, 1))?)?.sqr();
    let run = |s: &Tensor, dt: DType, fused: bool| -> R<Tensor> {
        let (x, gy, s) = (
            x.to_dtype(dt)?,
            gy.to_dtype(dt)?,
            Var::from_tensor(&s.to_dtype(dt)?)?,
        );
        let bn = BatchNorm::new(
            2,
            None,
            None,
            BatchNormConfig::default()
                .with_affine(false)
                .with_track_running_stats(false),
        )?;
        let h = pre(&x, s.as_tensor())?;
        let y = if fused {
            bn.forward_t(&h, true)?
        } else {
            bn.forward_reference(&h, true)?
        };
        let grads = (y * gy)?.sum_all()?.backward()?;
        Ok(grads.get(s.as_tensor()).ok_or("no gradient for s")?.clone())
    };
    let got = run(&s0, DType::F32, true)?;
    let want = run(&s0, DType::F64, false)?;
    assert!(
        got.abs()?.min_all()?.to_scalar::<f32>()? > 1e-2,
        "gradient {got}"
    );
    assert_close("ds", &got, &want, 1e-4);
    Ok(())
}

/// Regression (issue 10): in eval mode the running statistics entered the graph undetached,
/// so they received gradients and an optimizer built from the var map moved them.
#[test]
fn running_stats_get_no_gradient_and_no_optimizer_step() -> R<()> {
    use candle_nn::Optimizer;
    use candle_tricks::optim::{AdamW, AdamWConfig, ParamGroups};
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let bn = batch_norm(3, BatchNormConfig::default(), vb.pp("bn"))?;
    let x = Tensor::randn(0f32, 1., (4, 3, 5), &dev)?;
    let var = |name: &str| -> R<Var> {
        let data = varmap.data().lock().map_err(|e| e.to_string())?;
        Ok(data.get(name).ok_or(format!("{name} in the map"))?.clone())
    };
    let (rm, rv) = (var("bn.running_mean")?, var("bn.running_var")?);
    for train in [false, true] {
        let loss = bn.forward_t(&x, train)?.sqr()?.sum_all()?;
        let grads = loss.backward()?;
        assert!(
            grads.get(rm.as_tensor()).is_none(),
            "train={train}: grad on running_mean"
        );
        assert!(
            grads.get(rv.as_tensor()).is_none(),
            "train={train}: grad on running_var"
        );
        assert!(
            grads.get(var("bn.weight")?.as_tensor()).is_some(),
            "train={train}: grad on weight"
        );
    }
    // The var-map constructors leave the buffers out.
    let groups = ParamGroups::from_varmap(&varmap);
    let names: Vec<_> = groups.groups()[0]
        .vars
        .iter()
        .map(|(n, _)| n.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["bn.bias", "bn.weight"]);
    let nd = ParamGroups::no_decay_for_bias_and_norm(&varmap, 0.1);
    assert_eq!(nd.groups().iter().map(|g| g.len()).sum::<usize>(), 2);
    // Eval-mode steps with weight decay leave the running statistics exactly as they were.
    let before = (
        rm.as_tensor().to_vec1::<f32>()?,
        rv.as_tensor().to_vec1::<f32>()?,
    );
    let mut opt = AdamW::with_groups(groups, AdamWConfig::default().with_weight_decay(0.5))?;
    for _ in 0..3 {
        opt.backward_step(&bn.forward_t(&x, false)?.sqr()?.sum_all()?)?;
    }
    let after = (
        rm.as_tensor().to_vec1::<f32>()?,
        rv.as_tensor().to_vec1::<f32>()?,
    );
    assert_eq!(before, after);
    Ok(())
}

/// Regression (issue 10): `num_batches_tracked` lives in the var map as PyTorch's i64 scalar, so
/// a saved map has every key of PyTorch's state dict, and it round-trips through a file.
#[test]
fn num_batches_tracked_is_saved_and_loaded() -> R<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let bn = batch_norm(
        2,
        BatchNormConfig::default(),
        VarBuilder::from_varmap(&varmap, DType::F32, &dev).pp("bn"),
    )?;
    let x = Tensor::randn(0f32, 1., (4, 2, 3), &dev)?;
    for _ in 0..3 {
        bn.forward_t(&x, true)?;
    }
    let path = std::env::temp_dir().join(format!("bn_nbt_{}.safetensors", std::process::id()));
    varmap.save(&path)?;
    let file = candle_core::safetensors::load(&path, &dev)?;
    let mut keys: Vec<_> = file.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "bn.bias",
            "bn.num_batches_tracked",
            "bn.running_mean",
            "bn.running_var",
            "bn.weight"
        ]
    );
    let nbt = &file["bn.num_batches_tracked"];
    assert_eq!((nbt.dtype(), nbt.dims()), (DType::I64, &[][..]));
    assert_eq!(nbt.to_scalar::<i64>()?, 3);
    // Load into a fresh model through a file-backed VarBuilder and through VarMap::load.
    // SAFETY: the file was written by this test under a process-unique name and nothing
    // modifies it while it is mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &dev)? };
    assert_eq!(
        batch_norm(2, BatchNormConfig::default(), vb.pp("bn"))?.num_batches_tracked()?,
        3
    );
    let mut fresh = VarMap::new();
    let bn2 = batch_norm(
        2,
        BatchNormConfig::default(),
        VarBuilder::from_varmap(&fresh, DType::F32, &dev).pp("bn"),
    )?;
    fresh.load(&path)?;
    assert_eq!(bn2.num_batches_tracked()?, 3);
    std::fs::remove_file(&path)?;
    // A checkpoint without the counter (candle-nn's) still loads, counting from 0.
    let mut ts = HashMap::new();
    for (k, v) in [
        ("weight", 1f32),
        ("bias", 0.),
        ("running_mean", 0.),
        ("running_var", 1.),
    ] {
        ts.insert(format!("bn.{k}"), Tensor::full(v, 2, &dev)?);
    }
    let vb = VarBuilder::from_tensors(ts, DType::F32, &dev);
    assert_eq!(
        batch_norm(2, BatchNormConfig::default(), vb.pp("bn"))?.num_batches_tracked()?,
        0
    );
    Ok(())
}
