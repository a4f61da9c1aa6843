//! Transformer encoder layer / stack against PyTorch's `nn.TransformerEncoderLayer`
//! (`tests/fixtures/gen_transformer.py`): pre-LN and post-LN, forward, gradients, causal mask,
//! a 2-layer encoder with a final norm; plus SwiGLU / LayerScale names and bad inputs.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::attention::{
    transformer_encoder, transformer_encoder_layer, FfnActivation, TransformerEncoderConfig,
    TransformerEncoderLayerConfig,
};
use candle_tricks::ops::AttentionMask;

fn fixture() -> HashMap<String, Tensor> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/transformer.safetensors"
    );
    candle_core::safetensors::load(path, &Device::Cpu).expect("fixture")
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The fixture's tensors under `prefix.`, as Vars, and a VarBuilder over them.
fn vars(f: &HashMap<String, Tensor>, prefix: &str) -> (VarMap, HashMap<String, Var>) {
    let varmap = VarMap::new();
    let mut out = HashMap::new();
    {
        let mut data = varmap.data().lock().unwrap();
        for (k, v) in f {
            if let Some(name) = k.strip_prefix(&format!("{prefix}.")) {
                let var = Var::from_tensor(v).unwrap();
                data.insert(name.to_string(), var.clone());
                out.insert(name.to_string(), var);
            }
        }
    }
    (varmap, out)
}

fn check_layer(tag: &str, norm_first: bool) {
    let f = fixture();
    let (varmap, v) = vars(&f, tag);
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = TransformerEncoderLayerConfig::new(4, 32).with_norm_first(norm_first);
    let layer = transformer_encoder_layer(16, cfg, vb).unwrap();
    let t = |k: &str| f[&format!("{tag}.{k}")].clone();
    let x = Var::from_tensor(&t("x")).unwrap();
    let y = layer
        .forward_t(x.as_tensor(), &AttentionMask::None, false)
        .unwrap();
    assert!(max_diff(&y, &t("y")) < 1e-5, "{tag}");
    let grads = (y * t("g")).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(max_diff(grads.get(x.as_tensor()).unwrap(), &t("dx")) < 1e-4);
    for n in [
        "self_attn.in_proj_weight",
        "linear1.weight",
        "norm1.weight",
        "norm2.bias",
    ] {
        let g = grads.get(v[n].as_tensor()).unwrap();
        assert!(max_diff(g, &t(&format!("d.{n}"))) < 1e-4, "{tag} {n}");
    }
    let y = layer
        .forward_t(&t("x"), &AttentionMask::Causal { kv_offset: 0 }, false)
        .unwrap();
    assert!(max_diff(&y, &t("y_causal")) < 1e-5, "{tag} causal");
}

#[test]
fn pre_ln_layer_matches_torch() {
    check_layer("pre", true);
}

#[test]
fn post_ln_layer_matches_torch() {
    check_layer("post", false);
}

#[test]
fn encoder_stack_matches_torch() {
    let f = fixture();
    let vb = VarBuilder::from_tensors(f.clone(), DType::F32, &Device::Cpu).pp("enc");
    let cfg = TransformerEncoderConfig::new(TransformerEncoderLayerConfig::new(4, 32), 2);
    assert!(cfg.final_norm);
    let enc = transformer_encoder(16, cfg, vb).unwrap();
    assert_eq!(enc.layers().len(), 2);
    let y = enc
        .forward_t(&f["enc.x"], &AttentionMask::None, false)
        .unwrap();
    assert!(max_diff(&y, &f["enc.y"]) < 1e-5);
}

#[test]
fn swiglu_layer_scale_names_and_training_mode() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let cfg = TransformerEncoderLayerConfig::new(2, 24)
        .with_activation(FfnActivation::SwiGlu)
        .with_layer_scale(Some(0.1))
        .with_dropout(0.1)
        .with_drop_path(0.2);
    let layer = transformer_encoder_layer(8, cfg, vb.pp("l")).unwrap();
    let data = varmap.data().lock().unwrap();
    let shape = |n: &str| data[n].as_tensor().dims().to_vec();
    assert_eq!(shape("l.linear1.weight"), [48, 8]);
    assert_eq!(shape("l.linear2.weight"), [8, 24]);
    assert_eq!(shape("l.ls1.gamma"), [8]);
    assert_eq!(shape("l.ls2.gamma"), [8]);
    assert_eq!(shape("l.self_attn.in_proj_weight"), [24, 8]);
    drop(data);
    let x = Tensor::randn(0f32, 1., (3, 7, 8), &dev).unwrap();
    // Eval is deterministic, training is not (dropout, drop path) but keeps the shape.
    let a = layer.forward_t(&x, &AttentionMask::None, false).unwrap();
    let b = layer.forward_t(&x, &AttentionMask::None, false).unwrap();
    assert_eq!(max_diff(&a, &b), 0.0);
    let c = layer.forward_t(&x, &AttentionMask::None, true).unwrap();
    assert_eq!(c.dims(), &[3, 7, 8]);
    let grads = c.sum_all().unwrap().backward().unwrap();
    assert!(varmap.all_vars().iter().any(|v| grads.get(v).is_some()));
}

#[test]
fn bad_inputs_error_and_name_the_block() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let layer = transformer_encoder_layer(8, TransformerEncoderLayerConfig::new(2, 16), vb.pp("a"))
        .unwrap();
    for x in [
        Tensor::zeros((7, 8), DType::F32, &dev).unwrap(),
        Tensor::zeros((2, 7, 6), DType::F32, &dev).unwrap(),
        Tensor::zeros((2, 0, 8), DType::F32, &dev).unwrap(),
        Tensor::zeros((2, 7, 8), DType::U8, &dev).unwrap(),
    ] {
        let e = layer
            .forward_t(&x, &AttentionMask::None, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("TransformerEncoderLayer"), "{e}");
    }
    let x = Tensor::zeros((2, 7, 8), DType::F64, &dev).unwrap();
    assert!(layer.forward_t(&x, &AttentionMask::None, false).is_err());
    // Heads not dividing the width.
    let e = transformer_encoder_layer(8, TransformerEncoderLayerConfig::new(3, 16), vb.pp("b"));
    assert!(e.is_err());
    let e = transformer_encoder(
        0,
        TransformerEncoderConfig::new(TransformerEncoderLayerConfig::new(2, 16), 1),
        vb.pp("c"),
    );
    assert!(e.is_err());
}
