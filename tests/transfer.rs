//! Transfer-learning helpers: partial loads with a report (a torchvision ResNet-18 layout with a
//! replaced head, fixture from `tests/fixtures/gen_transfer.py`).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::blocks::{basic_block, ResBlockConfig};
use candle_tricks::norm::{batch_norm, BatchNormConfig};
use candle_tricks::transfer::{load_safetensors, load_state_dict, LoadReport};
use common::{fixtures, Fixtures, R};

/// The keys under `prefix.` with their stored shapes.
fn shapes(f: &Fixtures, prefix: &str) -> HashMap<String, Vec<usize>> {
    f.iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(prefix)?.strip_prefix('.')?;
            let dims: Vec<i64> = v.to_vec1().ok()?;
            Some((
                name.to_string(),
                dims.into_iter().map(|d| d as usize).collect(),
            ))
        })
        .collect()
}

/// The sorted keys under `expected.<what>.`.
fn expected(f: &Fixtures, what: &str) -> Vec<String> {
    let prefix = format!("expected.{what}.");
    let mut v: Vec<String> = f
        .keys()
        .filter_map(|k| Some(k.strip_prefix(&prefix)?.to_string()))
        .collect();
    v.sort();
    v
}

/// A checkpoint of zeros (ones for `running_var`) with the fixture's `ckpt.` layout; the
/// integer `num_batches_tracked` entries are i64 as in PyTorch.
fn checkpoint(f: &Fixtures) -> R<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (name, dims) in shapes(f, "ckpt") {
        let t = if name.ends_with("num_batches_tracked") {
            Tensor::new(7i64, &Device::Cpu)?
        } else {
            Tensor::full(0.5f32, dims, &Device::Cpu)?
        };
        out.insert(name, t);
    }
    Ok(out)
}

/// torchvision's ResNet-18 from the crate's blocks, under torchvision's names.
fn resnet18(num_classes: usize, vb: VarBuilder) -> R<()> {
    vb.get_with_hints(
        (64, 3, 7, 7),
        "conv1.weight",
        candle_nn::init::DEFAULT_KAIMING_NORMAL,
    )?;
    batch_norm(64, BatchNormConfig::default(), vb.pp("bn1"))?;
    let mut cin = 64;
    for (i, cout) in [64, 128, 256, 512].into_iter().enumerate() {
        let stride = if i == 0 { 1 } else { 2 };
        let layer = vb.pp(format!("layer{}", i + 1));
        basic_block(
            cin,
            cout,
            ResBlockConfig::default().with_stride(stride),
            layer.pp("0"),
        )?;
        basic_block(cout, cout, ResBlockConfig::default(), layer.pp("1"))?;
        cin = cout;
    }
    candle_nn::linear(512, num_classes, vb.pp("fc"))?;
    Ok(())
}

fn names(r: &LoadReport) -> Vec<String> {
    r.mismatched.iter().map(|m| m.name.clone()).collect()
}

#[test]
fn resnet18_names_match_torchvision() -> R<()> {
    let f = fixtures("transfer");
    let varmap = VarMap::new();
    resnet18(
        10,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let ours: HashMap<String, Vec<usize>> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    assert_eq!(ours, shapes(&f, "model"));
    Ok(())
}

#[test]
fn partial_load_report_is_exact_on_resnet18_with_new_head() -> R<()> {
    let f = fixtures("transfer");
    let ckpt = checkpoint(&f)?;
    let varmap = VarMap::new();
    resnet18(
        10,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let data = varmap.data().lock().unwrap().clone();
    let fc_before = data["fc.weight"].as_tensor().copy()?;

    // Strict: refused, listing every offending key, nothing loaded.
    let err = load_state_dict(&varmap, &ckpt, true)
        .unwrap_err()
        .to_string();
    for key in [
        "layer4.1.bn2.running_mean",
        "aux.weight",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(err.contains(key), "{err}");
    }
    assert!(err.contains("load_state_dict"), "{err}");
    let w = data["layer1.0.conv1.weight"].as_tensor();
    assert!(w.flatten_all()?.to_vec1::<f32>()?.iter().any(|&v| v != 0.5));

    // Lenient: the report is exactly PyTorch's key sets.
    let report = load_state_dict(&varmap, &ckpt, false)?;
    assert_eq!(report.missing, expected(&f, "missing"));
    assert_eq!(report.unexpected, expected(&f, "unexpected"));
    assert_eq!(names(&report), expected(&f, "mismatched"));
    assert_eq!(names(&report), ["fc.bias", "fc.weight"]);
    let fc = &report.mismatched[1];
    assert_eq!(
        (fc.expected.dims(), fc.actual.dims()),
        (&[10, 512][..], &[1000, 512][..])
    );
    assert_eq!(report.loaded.len(), data.len() - 3);

    // Loaded vars hold the checkpoint (cast to their dtype); the rest is untouched.
    let w = data["layer1.0.conv1.weight"].as_tensor();
    assert!(w.flatten_all()?.to_vec1::<f32>()?.iter().all(|&v| v == 0.5));
    let n = data["layer3.1.bn1.num_batches_tracked"].as_tensor();
    assert_eq!(n.to_scalar::<i64>()?, 7);
    let fc_after = data["fc.weight"].as_tensor();
    assert_eq!(
        fc_after.flatten_all()?.to_vec1::<f32>()?,
        fc_before.flatten_all()?.to_vec1::<f32>()?
    );
    Ok(())
}

#[test]
fn exact_checkpoint_loads_strictly_from_safetensors() -> R<()> {
    let dev = Device::Cpu;
    let src = VarMap::new();
    let vb = VarBuilder::from_varmap(&src, DType::F32, &dev);
    candle_nn::linear(4, 3, vb.pp("head"))?;
    let path =
        std::env::temp_dir().join(format!("transfer_load_{}.safetensors", std::process::id()));
    src.save(&path)?;

    let dst = VarMap::new();
    let vb = VarBuilder::from_varmap(&dst, DType::F64, &dev);
    candle_nn::linear(4, 3, vb.pp("head"))?;
    let report = load_safetensors(&dst, &path, true)?;
    std::fs::remove_file(&path)?;
    assert!(report.is_exact());
    assert_eq!(report.loaded, ["head.bias", "head.weight"]);
    let got = dst.data().lock().unwrap()["head.weight"]
        .as_tensor()
        .to_dtype(DType::F32)?;
    let want = src.data().lock().unwrap()["head.weight"]
        .as_tensor()
        .clone();
    assert_eq!(got.to_vec2::<f32>()?, want.to_vec2::<f32>()?);
    Ok(())
}

#[test]
fn training_step_leaves_frozen_weights_bit_identical() -> R<()> {
    use candle_core::Module;
    use candle_nn::Optimizer;
    use candle_tricks::optim::{AdamW, AdamWConfig};
    use candle_tricks::transfer::{freeze, unfreeze};
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let backbone = candle_nn::linear(6, 8, vb.pp("backbone"))?;
    let head = candle_nn::linear(8, 2, vb.pp("head"))?;
    let snapshot = |names: &[&str]| -> R<Vec<Vec<f32>>> {
        let data = varmap.data().lock().unwrap();
        names
            .iter()
            .map(|n| Ok(data[*n].as_tensor().flatten_all()?.to_vec1::<f32>()?))
            .collect()
    };
    let frozen = ["backbone.weight", "backbone.bias"];
    let trained = ["head.weight", "head.bias"];
    let (f0, t0) = (snapshot(&frozen)?, snapshot(&trained)?);
    let trainable = freeze(&varmap, &["backbone"])?;
    assert_eq!(trainable.len(), 2);
    assert_eq!(unfreeze(&varmap, &["head"])?.len(), 2);
    let cfg = AdamWConfig {
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(trainable, cfg)?;
    let x = Tensor::randn(0f32, 1.0, (4, 6), &dev)?;
    for _ in 0..3 {
        let loss = head
            .forward(&backbone.forward(&x)?.relu()?)?
            .sqr()?
            .mean_all()?;
        opt.backward_step(&loss)?;
    }
    assert_eq!(snapshot(&frozen)?, f0);
    assert_ne!(snapshot(&trained)?, t0);
    Ok(())
}

#[test]
fn layer_decay_follows_the_beit_rule() -> R<()> {
    use candle_tricks::transfer::{layer_decay_groups, layer_id};
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    vb.get((1, 1, 4), "cls_token")?;
    candle_nn::linear(4, 4, vb.pp("patch_embed.proj"))?;
    for i in 0..3 {
        candle_nn::linear(4, 4, vb.pp(format!("blocks.{i}.attn.qkv")))?;
        candle_nn::layer_norm(4, 1e-6, vb.pp(format!("blocks.{i}.norm1")))?;
    }
    candle_nn::layer_norm(4, 1e-6, vb.pp("norm"))?;
    candle_nn::linear(4, 5, vb.pp("head"))?;
    assert_eq!(layer_id("encoder.layers.2.mlp.weight", 3)?, 3);
    assert!(layer_id("blocks.3.attn.qkv.weight", 3).is_err());
    let groups = layer_decay_groups(&varmap, 3, 0.75, 0.05)?;
    let mut seen = 0;
    for g in groups.groups() {
        for (name, _) in &g.vars {
            let name = name.as_deref().unwrap();
            let l = layer_id(name, 3)?;
            assert_eq!(g.lr_mult, 0.75f64.powi(4 - l as i32), "{name}");
            let no_decay = name.ends_with("bias") || name.contains("norm") || name == "cls_token";
            assert_eq!(
                g.weight_decay,
                Some(if no_decay { 0.0 } else { 0.05 }),
                "{name}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, varmap.all_vars().len());
    Ok(())
}

#[test]
fn folded_conv_equals_conv_then_batch_norm_in_eval() -> R<()> {
    use candle_core::Module;
    use candle_tricks::transfer::{fold_batch_norm, FrozenBatchNorm2d, FrozenBatchNorm2dConfig};
    let f = fixtures("transfer");
    let g = |k: &str| common::field(&f, "fold", k).clone();
    let cfg = FrozenBatchNorm2dConfig::default().with_eps(1e-3);
    let bn = FrozenBatchNorm2d::new(
        &g("bn_weight"),
        &g("bn_bias"),
        &g("running_mean"),
        &g("running_var"),
        cfg,
    )?;
    let (w, b) = (g("conv_weight"), g("conv_bias"));
    let x = g("x");
    let unfolded = bn.forward(
        &x.conv2d(&w, 1, 1, 1, 1)?
            .broadcast_add(&b.reshape((1, 6, 1, 1))?)?,
    )?;
    common::assert_close("frozen bn", &unfolded, &g("y"), 1e-5);
    let (wf, bf) = fold_batch_norm(&w, Some(&b), &bn)?;
    let folded = x
        .conv2d(&wf, 1, 1, 1, 1)?
        .broadcast_add(&bf.reshape((1, 6, 1, 1))?)?;
    common::assert_close("folded conv", &folded, &g("y"), 1e-5);
    assert!(fold_batch_norm(&w.narrow(0, 0, 5)?, None, &bn).is_err());
    Ok(())
}
