//! `LayerNorm2d` (PyTorch fixtures for output and gradients, half precision, gradient flow, bad
//! input) and the `norm::create` factory (variants, parameter names, forward equal to the direct
//! block, bad specs).

mod common;

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::norm::{
    batch_norm, create, group_norm, instance_norm, layer_norm, layer_norm2d, rms_norm,
    BatchNormConfig, GroupNormConfig, InstanceNormConfig, LayerNorm2d, LayerNorm2dConfig,
    LayerNormConfig, Norm, RmsNormConfig,
};
use common::*;

/// `(case, affine, eps)` of the fixture file.
const CASES: [(&str, bool, f64); 4] = [
    ("ln2d", true, 1e-6),
    ("ln2d_odd", true, 1e-6),
    ("ln2d_noaffine", false, 1e-6),
    ("ln2d_eps", true, 1e-3),
];

fn ln2d_forward(ts: &[Tensor], eps: f64) -> candle_core::Result<Tensor> {
    let cfg = LayerNorm2dConfig::default()
        .with_eps(eps)
        .with_affine(ts.len() == 3);
    let c = ts[0].dims()[1];
    let ln = LayerNorm2d::new(c, ts.get(1).cloned(), ts.get(2).cloned(), cfg)?;
    ln.forward(&ts[0])
}

#[test]
fn layer_norm2d_matches_torch_with_gradients() -> R<()> {
    let f = fixtures("norm_factory");
    for (case, affine, eps) in CASES {
        let mut names = vec!["x"];
        if affine {
            names.extend(["w", "b"]);
        }
        let inputs: Vec<&Tensor> = names.iter().map(|n| field(&f, case, n)).collect();
        let gy = field(&f, case, "gy");
        let (y, gs) = fwd_bwd_n(&inputs, gy, |ts| ln2d_forward(ts, eps))?;
        assert_close(&format!("{case} y"), &y, field(&f, case, "y"), 1e-5);
        let grads = ["gx", "gw", "gb"];
        for (g, want) in gs.iter().zip(grads) {
            assert_close(&format!("{case} {want}"), g, field(&f, case, want), 1e-4);
        }
    }
    Ok(())
}

#[test]
fn layer_norm2d_half_precision_close_to_f32() -> R<()> {
    let f = fixtures("norm_factory");
    let ts: Vec<Tensor> = ["x", "w", "b"]
        .iter()
        .map(|n| field(&f, "ln2d_odd", n).clone())
        .collect();
    let want = ln2d_forward(&ts, 1e-6)?;
    for (dtype, tol) in [(DType::F16, 5e-3), (DType::BF16, 3e-2)] {
        let half = ts
            .iter()
            .map(|t| t.to_dtype(dtype))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let got = ln2d_forward(&half, 1e-6)?;
        assert_eq!(got.dtype(), dtype);
        assert_close(&format!("{dtype:?}"), &got, &want, tol);
    }
    Ok(())
}

#[test]
fn layer_norm2d_gradient_reaches_the_conv_before_it() -> R<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let conv = candle_nn::conv2d(3, 8, 3, Default::default(), vb.pp("conv"))?;
    let ln = layer_norm2d(8, LayerNorm2dConfig::default(), vb.pp("norm"))?;
    let x = Tensor::randn(0f32, 1., (2, 3, 7, 6), &dev)?;
    let c = Tensor::randn(0f32, 1., (2, 8, 5, 4), &dev)?;
    let y = ln.forward(&conv.forward(&x)?)?;
    let grads = (y * c)?.sum_all()?.backward()?;
    for v in varmap.all_vars() {
        let g = grads.get(&v).ok_or("a parameter got no gradient")?;
        assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
    }
    Ok(())
}

#[test]
fn layer_norm2d_bad_input_is_an_error() -> R<()> {
    let dev = Device::Cpu;
    let vb = VarBuilder::zeros(DType::F32, &dev);
    let ln = layer_norm2d(4, LayerNorm2dConfig::default(), vb.clone())?;
    let bad = [
        ("rank 3", Tensor::zeros((2, 4, 5), DType::F32, &dev)?),
        ("rank 5", Tensor::zeros((2, 4, 5, 5, 1), DType::F32, &dev)?),
        ("channels", Tensor::zeros((2, 3, 5, 5), DType::F32, &dev)?),
        ("zero-sized", Tensor::zeros((2, 4, 0, 5), DType::F32, &dev)?),
        ("int dtype", Tensor::zeros((2, 4, 5, 5), DType::I64, &dev)?),
        (
            "mixed dtype",
            Tensor::zeros((2, 4, 5, 5), DType::F16, &dev)?,
        ),
    ];
    for (what, x) in bad {
        assert_err(what, ln.forward(&x), &["LayerNorm2d"]);
    }
    let cfg = LayerNorm2dConfig::default();
    assert_err_names(layer_norm2d(0, cfg, vb.clone()), "LayerNorm2d", "channels");
    assert_err_names(layer_norm2d(4, cfg.with_eps(0.0), vb), "LayerNorm2d", "eps");
    let w = Tensor::ones(3, DType::F32, &dev)?;
    let r = LayerNorm2d::new(4, Some(w.clone()), Some(w.clone()), cfg);
    assert_err_names(r, "LayerNorm2d", "weight");
    let r = LayerNorm2d::new(3, Some(w), None, cfg);
    assert_err_names(r, "LayerNorm2d", "bias");
    Ok(())
}

/// Sorted names of the tensors in `varmap`.
fn names(varmap: &VarMap) -> Vec<String> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut n: Vec<String> = data.keys().cloned().collect();
    n.sort();
    n
}

/// Gives every tensor of `varmap` random values, so the comparison below is not trivial.
fn randomize(varmap: &VarMap) -> R<()> {
    let data = varmap.data().lock().map_err(|_| "varmap lock")?;
    for (name, var) in data.iter().filter(|(_, v)| v.dtype().is_float()) {
        let t = Tensor::rand(0.5f32, 1.5, var.shape(), &Device::Cpu)?;
        let t = if name.ends_with("running_mean") || name.ends_with("bias") {
            (t - 1.0)?
        } else {
            t
        };
        var.set(&t)?;
    }
    Ok(())
}

/// A block's forward with the train flag, for comparison with `Norm::forward_t`.
type Direct = Box<dyn Fn(&Tensor, bool) -> candle_core::Result<Tensor>>;

#[test]
fn create_builds_each_variant_equal_to_the_direct_block() -> R<()> {
    let dev = Device::Cpu;
    let c = 8;
    let x4 = Tensor::randn(0.5f32, 2., (2, c, 5, 3), &dev)?;
    let x3 = Tensor::randn(0.5f32, 2., (2, 7, c), &dev)?;
    let wb = ["weight", "bias"];
    let bn = [
        "bias",
        "num_batches_tracked",
        "running_mean",
        "running_var",
        "weight",
    ];
    // (spec, parameter names, input)
    let cases: [(&str, &[&str], &Tensor); 9] = [
        ("batch", &bn, &x4),
        ("group", &wb, &x4),
        ("group:4", &wb, &x4),
        (" Group : 2 ", &wb, &x4),
        ("layer", &wb, &x3),
        ("layer2d", &wb, &x4),
        ("rms", &["weight"], &x3),
        ("instance", &[], &x4),
        ("none", &[], &x4),
    ];
    for (spec, want_names, x) in cases {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev).pp("n");
        let norm = create(spec, c, vb.clone())?;
        let got_names = names(&varmap);
        let want: Vec<String> = want_names.iter().map(|n| format!("n.{n}")).collect();
        let mut want = want;
        want.sort();
        assert_eq!(got_names, want, "{spec}: parameter names");
        randomize(&varmap)?;
        // The direct block reads the same (now random) tensors back from the VarMap.
        let direct: Direct = match &norm {
            Norm::Batch(_) => {
                let b = batch_norm(c, BatchNormConfig::default(), vb)?;
                Box::new(move |x, t| b.forward_t(x, t))
            }
            Norm::Group(g) => {
                let want_groups = match spec {
                    "group" => 8,
                    "group:4" => 4,
                    _ => 2,
                };
                assert_eq!(g.num_groups(), want_groups, "{spec}");
                let b = group_norm(want_groups, c, GroupNormConfig::default(), vb)?;
                Box::new(move |x, _| b.forward(x))
            }
            Norm::Layer(_) => {
                let b = layer_norm(c, LayerNormConfig::default(), vb)?;
                Box::new(move |x, _| b.forward(x))
            }
            Norm::LayerNorm2d(_) => {
                let b = layer_norm2d(c, LayerNorm2dConfig::default(), vb)?;
                Box::new(move |x, _| b.forward(x))
            }
            Norm::Rms(_) => {
                let b = rms_norm(c, RmsNormConfig::default(), vb)?;
                Box::new(move |x, _| b.forward(x))
            }
            Norm::Instance(_) => {
                let b = instance_norm(c, InstanceNormConfig::default(), vb)?;
                Box::new(move |x, t| b.forward_t(x, t))
            }
            Norm::Identity => Box::new(|x, _| Ok(x.clone())),
        };
        let variant = format!("{norm:?}");
        let expect_prefix = match spec.trim().split(':').next().map(str::trim) {
            Some("batch") => "Batch",
            Some("layer") => "Layer(",
            Some("layer2d") => "LayerNorm2d",
            Some("rms") => "Rms",
            Some("instance") => "Instance",
            Some("none") => "Identity",
            _ => "Group",
        };
        assert!(variant.starts_with(expect_prefix), "{spec}: {variant}");
        for train in [false, true] {
            let got = norm.forward_t(x, train)?;
            let want = direct(x, train)?;
            assert_eq!(got.dims(), x.dims(), "{spec}");
            assert_close(&format!("{spec} train={train}"), &got, &want, 1e-6);
        }
    }
    Ok(())
}

#[test]
fn create_group_default_divides_the_channels() -> R<()> {
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    for (c, want) in [(64, 32), (32, 32), (48, 16), (24, 8), (7, 1), (1, 1)] {
        match create("group", c, vb.clone())? {
            Norm::Group(g) => assert_eq!(g.num_groups(), want, "{c} channels"),
            other => panic!("group spec gave {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn create_bad_specs_are_errors_naming_create() {
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let bad = [
        ("unknown", "btach", 8),
        ("empty", "", 8),
        ("arg on batch", "batch:2", 8),
        ("zero groups", "group:0", 8),
        ("negative groups", "group:-2", 8),
        ("text groups", "group:x", 8),
        ("empty groups", "group:", 8),
        ("not dividing", "group:3", 8),
        ("zero channels", "batch", 0),
    ];
    for (what, spec, c) in bad {
        let msg = assert_err(what, create(spec, c, vb.clone()), &["norm::create"]);
        if c > 0 {
            assert!(
                msg.contains("\"layer2d\""),
                "{what}: no list of specs: {msg}"
            );
        }
    }
}
