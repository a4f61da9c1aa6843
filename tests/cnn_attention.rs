//! Squeeze-excite and CBAM against PyTorch (`tests/fixtures/gen_cnn_attention.py`): forward and
//! gradients, plus bad-input errors.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::attention::SqueezeExciteConfig;
use candle_tricks::attention::{cbam, squeeze_excite, Cbam, CbamConfig, SqueezeExcite};

fn fixture() -> HashMap<String, Tensor> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cnn_attention.safetensors"
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

#[test]
fn squeeze_excite_matches_torch() {
    let f = fixture();
    let t = |k: &str| f[&format!("se.{k}")].clone();
    // Through a VarBuilder, to check the names too.
    let vb = VarBuilder::from_tensors(f.clone(), DType::F32, &Device::Cpu).pp("se");
    let cfg = SqueezeExciteConfig::default();
    let se = squeeze_excite(32, cfg, vb).unwrap();
    assert_eq!(se.reduced_channels(), 8);
    let x = Var::from_tensor(&t("x")).unwrap();
    let y = se.forward(x.as_tensor()).unwrap();
    assert!(max_diff(&y, &t("y")) < 1e-5);
    let grads = (y * t("g")).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(max_diff(grads.get(x.as_tensor()).unwrap(), &t("dx")) < 1e-5);

    // From raw tensors, as Vars, to check the weight gradients.
    let w1 = Var::from_tensor(&t("fc1.weight")).unwrap();
    let b2 = Var::from_tensor(&t("fc2.bias")).unwrap();
    let se = SqueezeExcite::new(
        w1.as_tensor().clone(),
        t("fc1.bias"),
        t("fc2.weight"),
        b2.as_tensor().clone(),
    )
    .unwrap();
    let y = se.forward(&t("x")).unwrap();
    let grads = (y * t("g")).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(max_diff(grads.get(w1.as_tensor()).unwrap(), &t("dfc1.weight")) < 1e-4);
    assert!(max_diff(grads.get(b2.as_tensor()).unwrap(), &t("dfc2.bias")) < 1e-4);
}

#[test]
fn cbam_matches_torch() {
    let f = fixture();
    let t = |k: &str| f[&format!("cbam.{k}")].clone();
    let vb = VarBuilder::from_tensors(f.clone(), DType::F32, &Device::Cpu).pp("cbam");
    let m = cbam(32, CbamConfig::default(), vb).unwrap();
    assert_eq!(m.reduced_channels(), 2);
    let x = Var::from_tensor(&t("x")).unwrap();
    let y = m.forward(x.as_tensor()).unwrap();
    assert!(max_diff(&y, &t("y")) < 1e-5);
    let grads = (y * t("g")).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(max_diff(grads.get(x.as_tensor()).unwrap(), &t("dx")) < 1e-4);

    let w1 = Var::from_tensor(&t("channel.fc1.weight")).unwrap();
    let ws = Var::from_tensor(&t("spatial.conv.weight")).unwrap();
    let m = Cbam::new(
        (w1.as_tensor().clone(), None),
        (t("channel.fc2.weight"), None),
        (ws.as_tensor().clone(), None),
    )
    .unwrap();
    let y = m.forward(&t("x")).unwrap();
    let grads = (y * t("g")).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(
        max_diff(
            grads.get(ws.as_tensor()).unwrap(),
            &t("dspatial.conv.weight")
        ) < 1e-3
    );
    assert!(
        max_diff(
            grads.get(w1.as_tensor()).unwrap(),
            &t("dchannel.fc1.weight")
        ) < 1e-4
    );
}

#[test]
fn bad_inputs_error_and_name_the_block() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let se = squeeze_excite(16, SqueezeExciteConfig::default(), vb.pp("se")).unwrap();
    let cb = cbam(16, CbamConfig::default(), vb.pp("cbam")).unwrap();
    let bad = [
        Tensor::zeros((16, 4, 4), DType::F32, &dev).unwrap(), // rank 3
        Tensor::zeros((1, 8, 4, 4), DType::F32, &dev).unwrap(), // channels
        Tensor::zeros((1, 16, 0, 4), DType::F32, &dev).unwrap(), // empty
        Tensor::zeros((1, 16, 4, 4), DType::F64, &dev).unwrap(), // dtype
        Tensor::zeros((1, 16, 4, 4), DType::U32, &dev).unwrap(), // dtype
    ];
    for x in &bad {
        let e = se.apply(x).unwrap_err().to_string();
        assert!(e.contains("SqueezeExcite"), "{e}");
        let e = cb.apply(x).unwrap_err().to_string();
        assert!(e.contains("Cbam"), "{e}");
    }
    // Constructors.
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &dev).unwrap();
    let e = SqueezeExcite::new(z(&[4, 16, 1, 1]), z(&[4]), z(&[16, 3, 1, 1]), z(&[16]));
    assert!(e.unwrap_err().to_string().contains("SqueezeExcite"));
    let e = SqueezeExcite::new(z(&[4, 16, 3, 3]), z(&[4]), z(&[16, 4, 1, 1]), z(&[16]));
    assert!(e.unwrap_err().to_string().contains("SqueezeExcite"));
    let e = Cbam::new(
        (z(&[4, 16, 1, 1]), None),
        (z(&[16, 4, 1, 1]), None),
        (z(&[1, 2, 6, 6]), None),
    );
    assert!(e.unwrap_err().to_string().contains("Cbam"));
    let e = Cbam::new(
        (z(&[4, 16, 1, 1]), None),
        (z(&[16, 4, 1, 1]), None),
        (z(&[1, 3, 7, 7]), None),
    );
    assert!(e.unwrap_err().to_string().contains("Cbam"));
    assert!(squeeze_excite(0, SqueezeExciteConfig::default(), vb.pp("x")).is_err());
    let e = cbam(8, CbamConfig::default().with_spatial_kernel(4), vb.pp("y"));
    assert!(e.unwrap_err().to_string().contains("Cbam"));
}

#[test]
fn half_precision_matches_f32_within_tolerance() {
    let f = fixture();
    for dt in [DType::F16, DType::BF16] {
        let half: HashMap<String, Tensor> = f
            .iter()
            .map(|(k, v)| (k.clone(), v.to_dtype(dt).unwrap()))
            .collect();
        let vb = VarBuilder::from_tensors(half.clone(), dt, &Device::Cpu);
        let se = squeeze_excite(32, SqueezeExciteConfig::default(), vb.pp("se")).unwrap();
        let y = se
            .forward(&half["se.x"])
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        assert!(max_diff(&y, &f["se.y"]) < 3e-2, "{dt:?}");
        let m = cbam(32, CbamConfig::default(), vb.pp("cbam")).unwrap();
        let y = m
            .forward(&half["cbam.x"])
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        assert!(max_diff(&y, &f["cbam.y"]) < 5e-2, "{dt:?}");
    }
}
