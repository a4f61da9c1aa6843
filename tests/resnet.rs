//! ResNet v1.5 blocks against torchvision semantics (fixtures from
//! `tests/fixtures/gen_resnet.py`): train-mode output and gradients, running statistics after
//! three training batches, eval output; plus bad input, gradient flow, zero-init, drop path
//! and the group-norm variant.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::blocks::{basic_block, bottleneck, ResBlockConfig};
use candle_tricks::norm::Norm;
use common::{assert_close, assert_err_names, field, fixtures, Fixtures, R};

const TOL: f64 = 1e-4;
const GRAD_WEIGHTS: [&str; 4] = [
    "conv1.weight",
    "bn1.weight",
    "conv2.weight",
    "downsample.0.weight",
];

/// The case's state dict (`<case>.w.<name>` → `<name>`), float tensors as Vars so their
/// gradients can be read back.
fn state_dict(f: &Fixtures, case: &str) -> R<HashMap<String, Tensor>> {
    let prefix = format!("{case}.w.");
    let mut sd = HashMap::new();
    for (k, v) in f {
        if let Some(name) = k.strip_prefix(&prefix) {
            let t = if v.dtype() == DType::F32 {
                Var::from_tensor(v)?.as_tensor().clone()
            } else {
                v.clone()
            };
            sd.insert(name.to_string(), t);
        }
    }
    Ok(sd)
}

/// Runs `case` (train step with gradients, two more train steps, eval) through `block` built
/// from the fixture's state dict, and compares everything with PyTorch.
fn check_case<B: ModuleT>(case: &str, build: impl FnOnce(VarBuilder) -> R<B>) -> R<()> {
    let f = fixtures("resnet");
    let sd = state_dict(&f, case)?;
    let vb = VarBuilder::from_tensors(sd.clone(), DType::F32, &Device::Cpu);
    let block = build(vb)?;

    let x = Var::from_tensor(field(&f, case, "x"))?;
    let gy = field(&f, case, "gy");
    let y = block.forward_t(x.as_tensor(), true)?;
    assert_close(
        &format!("{case} y_train"),
        &y,
        field(&f, case, "y_train"),
        TOL,
    );
    let grads = (&y * gy)?.sum_all()?.backward()?;
    let gx = grads.get(x.as_tensor()).ok_or("no gradient for x")?;
    assert_close(&format!("{case} gx"), gx, field(&f, case, "gx"), TOL);
    for name in GRAD_WEIGHTS {
        let Some(want) = f.get(&format!("{case}.g.{name}")) else {
            continue;
        };
        let got = grads
            .get(&sd[name])
            .ok_or(format!("{case}: no gradient for {name}"))?;
        assert_close(&format!("{case} grad {name}"), got, want, TOL);
    }

    // Two more training batches, as the generator: x * (1.5 + i) + (0.5 - i).
    for i in 0..2 {
        let xi = x.as_tensor().affine(1.5 + i as f64, 0.5 - i as f64)?;
        block.forward_t(&xi, true)?;
    }
    let y_eval = block.forward_t(x.as_tensor(), false)?;
    assert_close(
        &format!("{case} y_eval"),
        &y_eval,
        field(&f, case, "y_eval"),
        TOL,
    );
    Ok(())
}

/// The running statistics of every batch norm of a block, by torchvision name.
fn running_stats(norms: &[(&str, &Norm)]) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    for (name, n) in norms {
        if let Norm::Batch(bn) = n {
            let (m, v) = (bn.running_mean(), bn.running_var());
            out.push((format!("{name}.running_mean"), m.expect("tracked").clone()));
            out.push((format!("{name}.running_var"), v.expect("tracked").clone()));
        }
    }
    out
}

fn assert_running(f: &Fixtures, case: &str, stats: Vec<(String, Tensor)>) {
    assert!(!stats.is_empty());
    for (name, got) in stats {
        let want = field(f, case, &format!("after.{name}"));
        assert_close(&format!("{case} {name}"), &got, want, TOL);
    }
}

#[test]
fn basic_block_stride1_matches_torchvision() -> R<()> {
    check_case("basic_s1", |vb| {
        let b = basic_block(8, 8, ResBlockConfig::default(), vb)?;
        assert!(b.downsample().is_none());
        Ok(b)
    })
}

#[test]
fn basic_block_stride2_downsample_matches_torchvision() -> R<()> {
    let f = fixtures("resnet");
    let mut kept = None;
    check_case("basic_s2", |vb| {
        let b = basic_block(8, 16, ResBlockConfig::default().with_stride(2), vb)?;
        assert!(b.downsample().is_some());
        kept = Some(b.clone()); // clones share the running statistics
        Ok(b)
    })?;
    let b = kept.ok_or("block")?;
    let ds = b.downsample().ok_or("downsample")?;
    let stats = running_stats(&[
        ("bn1", b.conv1().1),
        ("bn2", b.conv2().1),
        ("downsample.1", ds.1),
    ]);
    assert_running(&f, "basic_s2", stats);
    Ok(())
}

#[test]
fn resnext_bottleneck_stride2_groups2_matches_torchvision() -> R<()> {
    let f = fixtures("resnet");
    let mut kept = None;
    let cfg = ResBlockConfig::default().with_stride(2).with_groups(2, 48);
    check_case("bottleneck_s2_g2", |vb| {
        let b = bottleneck(16, 8, cfg.clone(), vb)?;
        assert_eq!((b.width(), b.out_channels()), (12, 32));
        kept = Some(b.clone());
        Ok(b)
    })?;
    let b = kept.ok_or("block")?;
    let ds = b.downsample().ok_or("downsample")?;
    let stats = running_stats(&[
        ("bn1", b.conv1().1),
        ("bn2", b.conv2().1),
        ("bn3", b.conv3().1),
        ("downsample.1", ds.1),
    ]);
    assert_running(&f, "bottleneck_s2_g2", stats);
    Ok(())
}

#[test]
fn dilated_bottleneck_matches_torchvision() -> R<()> {
    check_case("bottleneck_d2", |vb| {
        let b = bottleneck(32, 8, ResBlockConfig::default().with_dilation(2), vb)?;
        assert!(b.downsample().is_none());
        Ok(b)
    })
}

#[test]
fn fresh_init_names_and_zero_init_last() -> R<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let b = bottleneck(16, 8, ResBlockConfig::default().with_stride(2), vb)?;
    let data = varmap.data().lock().map_err(|e| e.to_string())?;
    let mut names: Vec<&str> = data.keys().map(String::as_str).collect();
    names.sort();
    let mut want = vec![
        "conv1.weight",
        "conv2.weight",
        "conv3.weight",
        "downsample.0.weight",
    ];
    for bn in ["bn1", "bn2", "bn3", "downsample.1"] {
        for p in [
            "bias",
            "num_batches_tracked",
            "running_mean",
            "running_var",
            "weight",
        ] {
            want.push(Box::leak(format!("{bn}.{p}").into_boxed_str()));
        }
    }
    want.sort();
    assert_eq!(names, want);
    let sum_abs = |n: &str| -> R<f32> { Ok(data[n].as_tensor().abs()?.sum_all()?.to_scalar()?) };
    assert_eq!(sum_abs("bn3.weight")?, 0.0);
    assert_eq!(sum_abs("bn2.weight")?, 8.0);
    assert_eq!(sum_abs("downsample.1.weight")?, 32.0);
    // Kaiming-normal fan-out: std sqrt(2 / (32 * 1 * 1)) = 0.25 for conv3.
    let w = data["conv3.weight"].as_tensor();
    let std = w.sqr()?.mean_all()?.to_scalar::<f32>()?.sqrt();
    assert!((std - 0.25).abs() < 0.05, "conv3 std {std}");
    drop(data);

    // Eval at init: relu(x + downsample(x)), the branch is exactly 0.
    let x = Tensor::randn(0f32, 1., (2, 16, 6, 6), &dev)?;
    let (c, n) = b.downsample().ok_or("downsample")?;
    let want = n.forward_t(&x.apply(c)?, false)?.relu()?;
    assert_close("zero init", &b.forward_t(&x, false)?, &want, 1e-6);

    // Without zero_init_last the branch contributes.
    let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
    let cfg = ResBlockConfig::default().with_zero_init_last(false);
    let b = basic_block(16, 16, cfg, vb)?;
    let gap = (b.forward_t(&x, false)? - x.relu()?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert!(gap > 1e-2);
    Ok(())
}

#[test]
fn gradient_reaches_parameter_before_block() -> R<()> {
    let dev = Device::Cpu;
    let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
    let blocks = [
        basic_block(4, 4, ResBlockConfig::default(), vb.pp("0"))?,
        basic_block(4, 8, ResBlockConfig::default().with_stride(2), vb.pp("1"))?,
    ];
    // A per-channel gain before the blocks: its gradient has to cross both of them.
    let gain = Var::from_tensor(&Tensor::ones((1, 4, 1, 1), DType::F32, &dev)?)?;
    let x = Tensor::randn(0f32, 1., (4, 4, 8, 8), &dev)?;
    let mut h = x.broadcast_mul(gain.as_tensor())?;
    for b in &blocks {
        h = b.forward_t(&h, true)?;
    }
    let loss = h.sqr()?.mean_all()?;
    let grads = loss.backward()?;
    let g = grads
        .get(gain.as_tensor())
        .ok_or("no gradient for the gain")?;
    let norm = g.abs()?.sum_all()?.to_scalar::<f32>()?;
    assert!(norm.is_finite() && norm > 1e-4, "gradient {norm}");
    Ok(())
}

#[test]
fn group_norm_variant_builds_and_trains() -> R<()> {
    let dev = Device::Cpu;
    for spec in ["group:4", "group", "layer2d", "none"] {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let cfg = ResBlockConfig::default().with_norm(spec).with_stride(2);
        let b = bottleneck(8, 4, cfg, vb)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 8, 5, 5), &dev)?)?;
        let y = b.forward_t(x.as_tensor(), true)?;
        assert_eq!(y.dims(), &[2, 16, 3, 3], "{spec}");
        let grads = y.sum_all()?.backward()?;
        assert!(grads.get(x.as_tensor()).is_some(), "{spec}");
        let data = varmap.data().lock().map_err(|e| e.to_string())?;
        assert!(!data.keys().any(|k| k.contains("running")), "{spec}");
        if spec != "none" {
            assert_eq!(
                data["bn3.weight"]
                    .as_tensor()
                    .abs()?
                    .sum_all()?
                    .to_scalar::<f32>()?,
                0.0
            );
        }
    }
    Ok(())
}

#[test]
fn drop_path_drops_whole_branches_in_training_only() -> R<()> {
    let dev = Device::Cpu;
    let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
    let cfg = ResBlockConfig::default()
        .with_drop_path(0.9)
        .with_zero_init_last(false);
    let b = basic_block(4, 4, cfg, vb)?;
    let x = Tensor::randn(0f32, 1., (16, 4, 5, 5), &dev)?;
    let y = b.forward_t(&x, true)?;
    let rx = x.relu()?;
    // A dropped sample is relu(x) exactly; with p = 0.9 over 16 samples some are dropped.
    let dropped = (0..16)
        .filter(|&i| {
            let d = (y.get(i).and_then(|t| t - rx.get(i)?)).and_then(|t| t.abs()?.max_all());
            d.and_then(|t| t.to_scalar::<f32>())
                .map(|v| v == 0.0)
                .unwrap_or(false)
        })
        .count();
    assert!(
        dropped > 0 && dropped < 16 || dropped == 16,
        "dropped {dropped}"
    );
    assert!(dropped > 0);
    // Eval: deterministic, no branch dropped.
    let e1 = b.forward_t(&x, false)?;
    let e2 = b.forward_t(&x, false)?;
    assert_close("eval", &e1, &e2, 0.0);
    assert!((e1 - &rx)?.abs()?.max_all()?.to_scalar::<f32>()? > 1e-2);
    Ok(())
}

#[test]
fn bad_input_and_config_are_errors() -> R<()> {
    let dev = Device::Cpu;
    let vb = || VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
    let basic = basic_block(8, 8, ResBlockConfig::default(), vb())?;
    let bottle = bottleneck(8, 4, ResBlockConfig::default(), vb())?;
    let inputs = [
        Tensor::zeros((2, 4, 6, 6), DType::F32, &dev)?, // channel mismatch
        Tensor::zeros((2, 8, 6), DType::F32, &dev)?,    // rank 3
        Tensor::zeros((0, 8, 6, 6), DType::F32, &dev)?, // empty batch
        Tensor::zeros((2, 8, 6, 6), DType::F64, &dev)?, // dtype differs from the weights
    ];
    for x in &inputs {
        assert_err_names(basic.apply(x, true), "BasicBlock", "input");
        assert_err_names(bottle.apply(x, false), "Bottleneck", "input");
        // Through ModuleT too, no panic.
        assert!(basic.forward_t(x, true).is_err());
    }
    let msg = basic.apply(&inputs[0], true).unwrap_err().to_string();
    assert!(
        msg.contains("(B, 8, H, W)") && msg.contains("[2, 4, 6, 6]"),
        "{msg}"
    );

    let d = ResBlockConfig::default;
    let bad_basic = [
        (d().with_stride(0), "stride"),
        (d().with_dilation(0), "dilation"),
        (d().with_groups(2, 64), "groups"),
        (d().with_groups(1, 32), "base_width"),
        (d().with_drop_path(1.0), "[0, 1)"),
        (d().with_norm("btach"), "btach"),
        (d().with_norm("layer"), "layer2d"),
        (d().with_norm("group:3"), "group:N"),
    ];
    for (cfg, needle) in bad_basic {
        assert_err_names(basic_block(8, 8, cfg, vb()), "BasicBlock", needle);
    }
    assert_err_names(basic_block(0, 8, d(), vb()), "BasicBlock", "in_ch");
    assert_err_names(basic_block(8, 0, d(), vb()), "BasicBlock", "out_ch");
    let bad_bottle = [
        (d().with_groups(0, 4), "groups"),
        (d().with_groups(32, 0), "base_width"),
        (d().with_groups(2, 8), "inner width"), // floor(4 * 8 / 64) = 0
        (d().with_stride(0), "stride"),
    ];
    for (cfg, needle) in bad_bottle {
        assert_err_names(bottleneck(8, 4, cfg, vb()), "Bottleneck", needle);
    }
    assert_err_names(bottleneck(8, 0, d(), vb()), "Bottleneck", "planes");
    // A checkpoint with a wrong shape is an error, not a panic.
    let ts = HashMap::from([(
        "conv1.weight".to_string(),
        Tensor::zeros((8, 8, 1, 1), DType::F32, &dev)?,
    )]);
    let vb = VarBuilder::from_tensors(ts, DType::F32, &dev);
    assert!(basic_block(8, 8, d(), vb).is_err());
    Ok(())
}

#[test]
fn f16_close_to_f32() -> R<()> {
    // f16 only: candle's CPU matmul (under its convolutions) has no bf16 path.
    let f = fixtures("resnet");
    let case = "bottleneck_s2_g2";
    let dtype = DType::F16;
    // The VarBuilder converts the weights to f16.
    let vb = VarBuilder::from_tensors(state_dict(&f, case)?, dtype, &Device::Cpu);
    let cfg = ResBlockConfig::default().with_stride(2).with_groups(2, 48);
    let b = bottleneck(16, 8, cfg, vb)?;
    let x = field(&f, case, "x").to_dtype(dtype)?;
    let y = b.forward_t(&x, true)?;
    assert_eq!(y.dtype(), dtype);
    assert_close("f16 y_train", &y, field(&f, case, "y_train"), 1e-2);
    assert_eq!(b.forward_t(&x, false)?.dtype(), dtype);
    Ok(())
}
