//! Int8 inference layers against PyTorch (`tests/fixtures/gen_int8.py`): weight quantization,
//! dynamic (torch's `quantized.dynamic.Linear`) and static outputs, the convolution, the
//! composition path of other devices, storage round trips and bad input.

mod common;

use candle_core::{DType, Device, Module, Tensor};
use candle_tricks::compress::quantize::{
    InputQuant, QDType, QParams, QScheme, QuantizedConv2d, QuantizedLinear,
};
use candle_tricks::conv::Padding;
use candle_tricks::ops::{with_backend, Backend, Conv2dConfig};
use candle_tricks::Error;
use common::{field, fixtures, Fixtures, R};

fn scalar(f: &Fixtures, case: &str, what: &str) -> f32 {
    field(f, case, what)
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map(|v| v[0])
        .expect("scalar fixture")
}

/// The static parameters from the case's calibration range, checked against torch's.
fn static_input(f: &Fixtures, case: &str) -> InputQuant {
    let q = InputQuant::calibrated(scalar(f, case, "cal_min"), scalar(f, case, "cal_max"))
        .expect("calibrated");
    let InputQuant::Static(p) = &q else {
        panic!("static")
    };
    assert_eq!(
        p.scale[0],
        scalar(f, case, "x_scale"),
        "{case}: input scale"
    );
    assert_eq!(
        p.zero_point[0] as f32,
        scalar(f, case, "x_zero_point"),
        "{case}: zero point"
    );
    q
}

/// Max |a - b| / max |b|.
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let d = (a - b).and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>());
    let s = b.abs().and_then(|b| b.max_all()?.to_scalar::<f32>());
    d.expect("diff") / s.expect("scale")
}

fn int_weight(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<u8>())
        .expect("u8 weight")
        .into_iter()
        .map(|b| f32::from(b as i8))
        .collect()
}

fn linear_layer(f: &Fixtures, case: &str, input: InputQuant) -> QuantizedLinear {
    let bias = f.get(&format!("{case}.bias"));
    QuantizedLinear::new(field(f, case, "weight"), bias, input).expect("layer")
}

#[test]
fn weights_quantize_as_torch() -> R<()> {
    let f = fixtures("int8");
    for case in ["lin", "lin_m1", "lin_wide"] {
        let l = linear_layer(&f, case, InputQuant::Dynamic);
        assert_eq!(l.weight_int8().dtype(), DType::U8);
        let want = field(&f, case, "w_int").flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(int_weight(l.weight_int8()), want, "{case}: int8 weights");
        let (s, ws) = (l.weight_scale(), field(&f, case, "w_scale"));
        assert_eq!(s.to_vec1::<f32>()?, ws.to_vec1::<f32>()?, "{case}: scales");
    }
    for case in ["conv_s2", "conv_d2"] {
        let c = QuantizedConv2d::new(
            field(&f, case, "weight"),
            Some(field(&f, case, "bias")),
            Conv2dConfig::default(),
            InputQuant::Dynamic,
        )?;
        let want = field(&f, case, "w_int").flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(int_weight(c.weight_int8()), want, "{case}: int8 weights");
    }
    Ok(())
}

#[test]
fn linear_dynamic_matches_torch() -> R<()> {
    let f = fixtures("int8");
    for case in ["lin", "lin_m1", "lin_wide"] {
        let l = linear_layer(&f, case, InputQuant::Dynamic);
        let y = l.forward(field(&f, case, "x"))?;
        let e = rel(&y, field(&f, case, "y_dynamic"));
        assert!(e < 1e-5, "{case}: relative error {e}");
    }
    Ok(())
}

#[test]
fn linear_static_matches_torch() -> R<()> {
    let f = fixtures("int8");
    for case in ["lin", "lin_m1", "lin_wide"] {
        let l = linear_layer(&f, case, static_input(&f, case));
        let y = l.forward(field(&f, case, "x"))?;
        let e = rel(&y, field(&f, case, "y_static"));
        assert!(e < 1e-5, "{case}: relative error {e}");
    }
    Ok(())
}

fn conv_cfg(case: &str) -> Conv2dConfig {
    match case {
        "conv_s2" => Conv2dConfig::default()
            .with_stride(2)
            .with_padding(Padding::Explicit(1)),
        _ => Conv2dConfig::default()
            .with_dilation(2)
            .with_padding(Padding::Valid),
    }
}

#[test]
fn conv_matches_torch() -> R<()> {
    let f = fixtures("int8");
    for case in ["conv_s2", "conv_d2"] {
        let conv = candle_tricks::conv::Conv2d::new(
            field(&f, case, "weight").clone(),
            Some(field(&f, case, "bias").clone()),
            conv_cfg(case),
        )?;
        let x = field(&f, case, "x");
        for (input, want) in [
            (InputQuant::Dynamic, "y_dynamic"),
            (static_input(&f, case), "y_static"),
        ] {
            let q = QuantizedConv2d::from_conv2d(&conv, input)?;
            let y = q.forward(x)?;
            let e = rel(&y, field(&f, case, want));
            assert!(e < 1e-5, "{case} {want}: relative error {e}");
            // The composition path of the other devices computes the same formula.
            let r = with_backend(Backend::Composition, || q.forward(x))?;
            let e = rel(&r, field(&f, case, want));
            assert!(e < 1e-5, "{case} {want} composition: relative error {e}");
        }
    }
    Ok(())
}

#[test]
fn composition_path_matches_the_kernel() -> R<()> {
    let f = fixtures("int8");
    for case in ["lin", "lin_m1", "lin_wide"] {
        for input in [InputQuant::Dynamic, static_input(&f, case)] {
            let l = linear_layer(&f, case, input);
            let x = field(&f, case, "x");
            let y = l.forward(x)?;
            let r = with_backend(Backend::Composition, || l.forward(x))?;
            let e = rel(&r, &y);
            assert!(e < 1e-5, "{case}: relative error {e}");
        }
    }
    Ok(())
}

#[test]
fn stored_tensors_round_trip() -> R<()> {
    let f = fixtures("int8");
    let l = linear_layer(&f, "lin", InputQuant::Dynamic);
    let dir = std::env::temp_dir().join(format!("int8_round_trip_{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("lin.safetensors");
    candle_core::safetensors::save(&l.tensors(), &path)?;
    let t = candle_core::safetensors::load(&path, &Device::Cpu)?;
    std::fs::remove_dir_all(&dir)?;
    let back = QuantizedLinear::from_quantized(
        t["weight"].clone(),
        t["weight_scale"].clone(),
        t.get("bias").cloned(),
        InputQuant::Dynamic,
    )?;
    let x = field(&f, "lin", "x");
    let (a, b) = (l.forward(x)?, back.forward(x)?);
    assert_eq!(
        a.flatten_all()?.to_vec1::<f32>()?,
        b.flatten_all()?.to_vec1::<f32>()?
    );
    // Size: one byte per weight, 4 per scale and bias, against 4 per weight and bias.
    let (out, inp) = (21, 37);
    assert_eq!(l.size_bytes(), out * inp + 8 * out);
    assert_eq!(l.float_size_bytes(), 4 * out * inp + 4 * out);
    Ok(())
}

fn block_of(e: &candle_core::Error) -> Option<&'static str> {
    match Error::from_candle(e)? {
        Error::NonFinite { block, .. }
        | Error::ShapeMismatch { block, .. }
        | Error::UnsupportedDType { block, .. }
        | Error::InvalidConfig { block, .. } => Some(block),
        _ => None,
    }
}

#[test]
fn non_finite_input_is_an_error() -> R<()> {
    let f = fixtures("int8");
    let x = field(&f, "lin", "x").clone();
    let mut v = x.flatten_all()?.to_vec1::<f32>()?;
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        v[17] = bad;
        let xb = Tensor::from_vec(v.clone(), x.shape(), &Device::Cpu)?;
        for input in [InputQuant::Dynamic, static_input(&f, "lin")] {
            let l = linear_layer(&f, "lin", input);
            for composition in [false, true] {
                let r = if composition {
                    with_backend(Backend::Composition, || l.forward(&xb))
                } else {
                    l.forward(&xb)
                };
                let e = r.expect_err("non-finite input");
                assert!(
                    matches!(
                        Error::from_candle(&e),
                        Some(Error::NonFinite {
                            block: "QuantizedLinear",
                            ..
                        })
                    ),
                    "{bad}: {e}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn bad_input_is_a_clear_error() -> R<()> {
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 1., (6, 5), &dev)?;
    let l = QuantizedLinear::new(&w, None, InputQuant::Dynamic)?;
    // Wrong last dimension, wrong dtype.
    let e = l
        .forward(&Tensor::zeros((2, 4), DType::F32, &dev)?)
        .unwrap_err();
    assert_eq!(block_of(&e), Some("QuantizedLinear"), "{e}");
    let e = l
        .forward(&Tensor::zeros((2, 5), DType::F64, &dev)?)
        .unwrap_err();
    assert_eq!(block_of(&e), Some("QuantizedLinear"), "{e}");
    // Bias of the wrong shape, weight of the wrong rank or dtype.
    let b = Tensor::zeros(5, DType::F32, &dev)?;
    assert!(QuantizedLinear::new(&w, Some(&b), InputQuant::Dynamic).is_err());
    assert!(QuantizedLinear::new(&w.flatten_all()?, None, InputQuant::Dynamic).is_err());
    assert!(QuantizedLinear::new(&w.to_dtype(DType::F64)?, None, InputQuant::Dynamic).is_err());
    // A NaN weight.
    let nan = Tensor::new(&[[1f32, f32::NAN]], &dev)?;
    let e = QuantizedLinear::new(&nan, None, InputQuant::Dynamic).unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    // Scales ≤ 0, a weight that is not u8.
    let q = Tensor::zeros((6, 5), DType::U8, &dev)?;
    for s in [0f32, -1.0, f32::NAN] {
        let scale = Tensor::full(s, 6, &dev)?;
        let e = QuantizedLinear::from_quantized(q.clone(), scale, None, InputQuant::Dynamic)
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidConfig {
                    block: "QuantizedLinear",
                    ..
                }
            ),
            "{e}"
        );
    }
    let ones = Tensor::ones(6, DType::F32, &dev)?;
    let e = QuantizedLinear::from_quantized(w.clone(), ones.clone(), None, InputQuant::Dynamic)
        .unwrap_err();
    assert!(matches!(e, Error::UnsupportedDType { .. }), "{e}");
    let e = QuantizedLinear::from_quantized(
        q.clone(),
        ones.narrow(0, 0, 5)?,
        None,
        InputQuant::Dynamic,
    )
    .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    // Static parameters outside the reduced range, per channel, or with a bad scale.
    let full = QParams::from_min_max(
        &[-1.0],
        &[1.0],
        QScheme::PerTensorAffine,
        QDType::QUInt8,
        (0, 255),
        f32::EPSILON,
    )?;
    let e = QuantizedLinear::new(&w, None, InputQuant::Static(full)).unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { .. }), "{e}");
    let InputQuant::Static(mut p) = InputQuant::calibrated(-1.0, 1.0)? else {
        unreachable!()
    };
    p.scale[0] = 0.0;
    assert!(QuantizedLinear::new(&w, None, InputQuant::Static(p)).is_err());
    assert!(InputQuant::calibrated(f32::NAN, 1.0).is_err());
    // Convolution: groups, input channels.
    let wc = Tensor::randn(0f32, 1., (4, 2, 3, 3), &dev)?;
    let grouped = Conv2dConfig::default().with_groups(2);
    let e = QuantizedConv2d::new(&wc, None, grouped, InputQuant::Dynamic).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidConfig {
                block: "QuantizedConv2d",
                ..
            }
        ),
        "{e}"
    );
    let c = QuantizedConv2d::new(&wc, None, Conv2dConfig::default(), InputQuant::Dynamic)?;
    let e = c
        .forward(&Tensor::zeros((1, 3, 5, 5), DType::F32, &dev)?)
        .unwrap_err();
    assert_eq!(block_of(&e), Some("QuantizedConv2d"), "{e}");
    let e = c
        .forward(&Tensor::zeros((1, 2, 5), DType::F32, &dev)?)
        .unwrap_err();
    assert_eq!(block_of(&e), Some("QuantizedConv2d"), "{e}");
    Ok(())
}

#[test]
fn any_leading_shape_and_empty_batch() -> R<()> {
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 1., (6, 5), &dev)?;
    let l = QuantizedLinear::new(&w, None, InputQuant::Dynamic)?;
    let x = Tensor::randn(0f32, 1., (2, 3, 4, 5), &dev)?;
    let y = l.forward(&x)?;
    assert_eq!(y.dims(), &[2, 3, 4, 6]);
    let flat = l.forward(&x.reshape((24, 5))?)?;
    assert_eq!(
        y.flatten_all()?.to_vec1::<f32>()?,
        flat.flatten_all()?.to_vec1::<f32>()?
    );
    let rank1 = l.forward(&Tensor::randn(0f32, 1., 5, &dev)?)?;
    assert_eq!(rank1.dims(), &[6]);
    Ok(())
}

/// The int8 layers converted from calibrated QAT layers compute what the QAT layers simulate
/// with their parameters frozen: the same integers, so equal up to the f32 rounding of the
/// two evaluation orders.
#[test]
fn converted_qat_layers_equal_their_fake_quantized_forward() -> R<()> {
    use candle_tricks::compress::quantize::{QatConfig, QatConv2d, QatLinear, QatMode};
    let dev = Device::Cpu;
    let lin = candle_nn::Linear::new(
        Tensor::randn(0f32, 0.2, (24, 40), &dev)?,
        Some(Tensor::randn(0f32, 0.1, 24, &dev)?),
    );
    let mut qat = QatLinear::new(lin, QatConfig::default())?;
    qat.set_mode(QatMode::Calibrate);
    for _ in 0..3 {
        qat.forward(&Tensor::randn(0.5f32, 1.0, (16, 40), &dev)?.relu()?)?;
    }
    let int8 = QuantizedLinear::from_qat(&qat)?;
    qat.set_mode(QatMode::Frozen);
    let x = Tensor::randn(0.5f32, 1.0, (9, 40), &dev)?.relu()?;
    let (y, fake) = (int8.forward(&x)?, qat.forward(&x)?);
    assert!(rel(&y, &fake) < 1e-5, "linear: {}", rel(&y, &fake));

    let cfg = Conv2dConfig::default().with_padding(Padding::Explicit(1));
    let conv = candle_tricks::conv::Conv2d::new(
        Tensor::randn(0f32, 0.2, (6, 3, 3, 3), &dev)?,
        Some(Tensor::randn(0f32, 0.1, 6, &dev)?),
        cfg,
    )?;
    let mut qat = QatConv2d::new(conv, QatConfig::default())?;
    qat.set_mode(QatMode::Calibrate);
    qat.forward(&Tensor::randn(0f32, 1.0, (4, 3, 9, 9), &dev)?)?;
    let int8 = QuantizedConv2d::from_qat(&qat)?;
    qat.set_mode(QatMode::Frozen);
    let x = Tensor::randn(0f32, 1.0, (2, 3, 9, 9), &dev)?;
    let (y, fake) = (int8.forward(&x)?, qat.forward(&x)?);
    assert!(rel(&y, &fake) < 1e-5, "conv: {}", rel(&y, &fake));

    // Before any observing forward there is no input range to convert.
    let fresh = QatLinear::new(
        candle_nn::Linear::new(Tensor::ones((2, 3), DType::F32, &dev)?, None),
        QatConfig::default(),
    )?;
    assert!(QuantizedLinear::from_qat(&fresh).is_err());
    Ok(())
}
