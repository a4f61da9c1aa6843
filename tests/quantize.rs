//! `compress::quantize` and `ops::fake_quantize_*` against torch.ao.quantization
//! (`tests/fixtures/gen_quantize.py`): observers' parameters, fake-quantization forward
//! (bit-equal, ties and clamp edges included) and its straight-through gradient, f16/bf16, the
//! composition, QAT layers after several batches, QAT training, GGUF export, and errors.
mod common;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul};
use candle_core::{DType, Device, Module, Tensor, Var, D};
use candle_nn::{Linear, Optimizer, VarBuilder, VarMap};
use candle_tricks::compress::quantize::{
    qat_linear, quantize_tensor, write_gguf, FakeQuantize, Observer, ObserverConfig, ObserverKind,
    QDType, QParams, QScheme, QatConfig, QatConv2d, QatLinear, QatMode,
};
use candle_tricks::conv::Conv2d;
use candle_tricks::ops::{
    fake_quantize_per_channel_affine, fake_quantize_per_channel_affine_reference,
    fake_quantize_per_tensor_affine, fake_quantize_per_tensor_affine_reference, with_backend,
    Backend, Conv2dConfig,
};
use candle_tricks::Error;
use common::{fixtures, get, Fixtures, R};

fn vec1(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .expect("vec1")
}

/// Asserts bit equality (after widening to f32; -0 and +0 count as equal).
fn assert_bits(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtypes");
    let (g, w) = (vec1(got), vec1(want));
    let bad: Vec<_> = g
        .iter()
        .zip(&w)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .take(5)
        .collect();
    assert!(bad.is_empty(), "{what}: differs at {bad:?}");
}

/// The output and `x`'s gradient of `sum(f(x) * gy)`.
fn fwd_bwd(
    x: &Tensor,
    gy: &Tensor,
    f: impl Fn(&Tensor) -> candle_tricks::Result<Tensor>,
) -> R<(Tensor, Tensor)> {
    let x = Var::from_tensor(x)?;
    let y = f(&x)?;
    let g = (y.to_dtype(DType::F32)? * gy.to_dtype(DType::F32)?)?
        .sum_all()?
        .backward()?;
    let gx = g.get(&x).ok_or("no gradient")?.clone();
    Ok((y, gx))
}

fn qdtype(name: &str) -> QDType {
    match name {
        "qint8" => QDType::QInt8,
        _ => QDType::QUInt8,
    }
}

/// Scales within one f32 ulp, zero points exact.
fn assert_qparams(what: &str, qp: &QParams, f: &Fixtures, key: &str) {
    let scale = vec1(get(f, &format!("{key}.scale")));
    let zp = vec1(get(f, &format!("{key}.zero_point")));
    assert_eq!(qp.scale.len(), scale.len(), "{what}: channels");
    for (c, (&got, &want)) in qp.scale.iter().zip(&scale).enumerate() {
        let ulps = (got.to_bits() as i64 - want.to_bits() as i64).abs();
        assert!(ulps <= 1, "{what}: scale[{c}] {got} vs torch {want}");
    }
    let got: Vec<f32> = qp.zero_point.iter().map(|&z| z as f32).collect();
    assert_eq!(got, zp, "{what}: zero points");
}

#[test]
fn observers_match_torch() -> R<()> {
    let f = fixtures("quantize");
    let batches: Vec<Tensor> = (0..3)
        .map(|i| get(&f, &format!("obs.x{i}")).clone())
        .collect();
    let run = |cfg: ObserverConfig| -> R<QParams> {
        let mut obs = Observer::new(cfg)?;
        for x in &batches {
            obs.observe(x)?;
        }
        Ok(obs.qparams()?)
    };
    let mut cases = 0;
    for (kind_name, kind) in [
        ("mm", ObserverKind::MinMax),
        (
            "ma",
            ObserverKind::MovingAverage {
                averaging_constant: 0.01,
            },
        ),
    ] {
        for (sname, scheme) in [
            ("pta", QScheme::PerTensorAffine),
            ("pts", QScheme::PerTensorSymmetric),
            ("pca", QScheme::PerChannelAffine { axis: 1 }),
            ("pcs", QScheme::PerChannelSymmetric { axis: 1 }),
        ] {
            for dname in ["qint8", "quint8"] {
                for rr in [false, true] {
                    let cfg = ObserverConfig::default()
                        .with_kind(kind)
                        .with_scheme(scheme)
                        .with_dtype(qdtype(dname))
                        .with_reduce_range(rr);
                    let key = format!("obs.{kind_name}.{sname}.{dname}.{}", rr as u8);
                    if rr && dname == "quint8" && scheme.is_symmetric() {
                        // torch refuses this configuration; so do we.
                        assert!(Observer::new(cfg).is_err(), "{key}");
                        continue;
                    }
                    assert_qparams(&key, &run(cfg)?, &f, &key);
                    cases += 1;
                }
            }
        }
    }
    for (dname, (lo, hi)) in [("qint8", (-8, 7)), ("quint8", (0, 15))] {
        for rr in [false, true] {
            let cfg = ObserverConfig::default()
                .with_dtype(qdtype(dname))
                .with_quant_range(lo, hi)
                .with_reduce_range(rr);
            let key = format!("obs.custom.{dname}.{}", rr as u8);
            assert_qparams(&key, &run(cfg)?, &f, &key);
            cases += 1;
        }
    }
    let cfg = ObserverConfig::default()
        .with_scheme(QScheme::PerTensorSymmetric)
        .with_quant_range(0, 15);
    assert_qparams("customsym", &run(cfg)?, &f, "obs.customsym.quint8.0");
    assert_eq!(cases + 1, 5 + 28);
    Ok(())
}

#[test]
fn observer_rejects_non_finite_input_without_poisoning_its_state() -> R<()> {
    let dev = Device::Cpu;
    for scheme in [
        QScheme::PerTensorAffine,
        QScheme::PerChannelAffine { axis: 1 },
    ] {
        let mut obs = Observer::new(ObserverConfig::default().with_scheme(scheme))?;
        obs.observe(&Tensor::new(&[[-1f32, 2.0], [0.5, 1.0]], &dev)?)?;
        let before = obs.qparams()?;
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let x = Tensor::new(&[[0f32, bad], [1.0, 2.0]], &dev)?;
            let e = obs.observe(&x).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::NonFinite {
                        block: "Observer",
                        ..
                    }
                ),
                "{e}"
            );
            assert_eq!(obs.qparams()?, before);
        }
        // f16 input works the same.
        obs.observe(&Tensor::new(&[[0f32, 1.0], [1.0, 2.0]], &dev)?.to_dtype(DType::F16)?)?;
    }
    // A 1-D tensor per channel (a bias): one value per channel.
    let mut obs = Observer::new(ObserverConfig::weight())?;
    obs.observe(&Tensor::new(&[-1f32, 0.5, 2.0], &dev)?)?;
    let v = [-1f32, 0.5, 2.0];
    assert_eq!(obs.min_max(), Some((&v[..], &v[..])));
    assert_eq!(
        obs.qparams()?.scale,
        [1.0 / 127.5, 0.5 / 127.5, 2.0 / 127.5]
    );
    let obs = Observer::new(ObserverConfig::default())?;
    assert!(obs.qparams().is_err(), "qparams before observing");
    let mut obs = Observer::new(ObserverConfig::default())?;
    let empty = Tensor::zeros((0, 3), DType::F32, &dev)?;
    assert!(obs.observe(&empty).is_err());
    Ok(())
}

#[test]
fn fake_quantize_per_tensor_is_bit_equal_to_torch() -> R<()> {
    let f = fixtures("quantize");
    for case in [
        "pt_u8",
        "pt_i8",
        "pt_rr",
        "pt_odd",
        "pt_u8_f16",
        "pt_u8_bf16",
    ] {
        // The f16 / bf16 cases share pt_u8's parameters.
        let base = case.trim_end_matches("_f16").trim_end_matches("_bf16");
        let p = vec1(get(&f, &format!("fq.{base}.params")));
        let (s, z, lo, hi) = (p[0], p[1] as i32, p[2] as i32, p[3] as i32);
        let x = get(&f, &format!("fq.{case}.x"));
        let gy = get(&f, &format!("fq.{case}.gy"));
        for (path, backend) in [
            ("kernel", Backend::CpuKernel),
            ("composition", Backend::Composition),
        ] {
            let (y, gx) = with_backend(backend, || {
                fwd_bwd(x, gy, |x| fake_quantize_per_tensor_affine(x, s, z, lo, hi))
            })?;
            assert_bits(
                &format!("{case} {path} y"),
                &y,
                get(&f, &format!("fq.{case}.y")),
            );
            let want_gx = get(&f, &format!("fq.{case}.gx")).to_dtype(DType::F32)?;
            assert_bits(
                &format!("{case} {path} gx"),
                &gx.to_dtype(DType::F32)?,
                &want_gx,
            );
        }
        if x.dtype() == DType::F32 {
            let (y, _) = fwd_bwd(x, gy, |x| {
                fake_quantize_per_tensor_affine_reference(x, s, z, lo, hi)
            })?;
            assert_bits(
                &format!("{case} reference y"),
                &y,
                get(&f, &format!("fq.{case}.y")),
            );
        }
    }
    Ok(())
}

#[test]
fn fake_quantize_per_channel_is_bit_equal_to_torch() -> R<()> {
    let f = fixtures("quantize");
    for case in ["pc_axis0", "pc_axis1"] {
        let meta = vec1(get(&f, &format!("fq.{case}.meta")));
        let (axis, lo, hi) = (meta[0] as usize, meta[1] as i32, meta[2] as i32);
        let scale = vec1(get(&f, &format!("fq.{case}.scale")));
        let zp: Vec<i32> = vec1(get(&f, &format!("fq.{case}.zero_point")))
            .iter()
            .map(|&z| z as i32)
            .collect();
        let x = get(&f, &format!("fq.{case}.x"));
        let gy = get(&f, &format!("fq.{case}.gy"));
        for (path, backend) in [
            ("kernel", Backend::CpuKernel),
            ("composition", Backend::Composition),
        ] {
            let (y, gx) = with_backend(backend, || {
                fwd_bwd(x, gy, |x| {
                    fake_quantize_per_channel_affine(x, &scale, &zp, axis, lo, hi)
                })
            })?;
            assert_bits(
                &format!("{case} {path} y"),
                &y,
                get(&f, &format!("fq.{case}.y")),
            );
            assert_bits(
                &format!("{case} {path} gx"),
                &gx,
                get(&f, &format!("fq.{case}.gx")),
            );
        }
        let (y, _) = fwd_bwd(x, gy, |x| {
            fake_quantize_per_channel_affine_reference(x, &scale, &zp, axis, lo, hi)
        })?;
        assert_bits(
            &format!("{case} reference y"),
            &y,
            get(&f, &format!("fq.{case}.y")),
        );
    }
    Ok(())
}

#[test]
fn straight_through_mask_and_large_inputs() -> R<()> {
    // Many tasks, and channel runs that straddle the task boundaries: kernel = composition.
    let dev = Device::Cpu;
    let x = (Tensor::randn(0f32, 3., (3, 7, 61, 67), &dev)?).contiguous()?;
    let gy = Tensor::randn(0f32, 1., x.dims(), &dev)?;
    let scale: Vec<f32> = (0..7).map(|c| 0.01 + 0.007 * c as f32).collect();
    let zp: Vec<i32> = (0..7).map(|c| 10 * c - 20).collect();
    let op = |x: &Tensor| fake_quantize_per_channel_affine(x, &scale, &zp, 1, -128, 127);
    let (y, gx) = fwd_bwd(&x, &gy, op)?;
    let (yr, gxr) = with_backend(Backend::Composition, || fwd_bwd(&x, &gy, op))?;
    assert_bits("large y", &y, &yr);
    assert_bits("large gx", &gx, &gxr);
    // The gradient is gy exactly where round(x / s) + z lies in range, zero elsewhere.
    let (xs, gs, gys) = (vec1(&x), vec1(&gx), vec1(&gy));
    let inner = 61 * 67;
    let mut clipped = 0;
    for (i, ((&xv, &g), &gyv)) in xs.iter().zip(&gs).zip(&gys).enumerate() {
        let c = (i / inner) % 7;
        let q = (xv * (1.0 / scale[c])).round_ties_even() + zp[c] as f32;
        let inside = (-128.0..=127.0).contains(&q);
        clipped += usize::from(!inside);
        assert_eq!(g, if inside { gyv } else { 0.0 }, "element {i}");
    }
    assert!(
        clipped > 100,
        "the test should clip some values ({clipped})"
    );
    Ok(())
}

#[test]
fn fake_quantize_bad_input_is_an_error() -> R<()> {
    let dev = Device::Cpu;
    let x = Tensor::new(&[[0.5f32, f32::NAN], [1.0, 2.0]], &dev)?;
    for backend in [Backend::CpuKernel, Backend::Composition] {
        let e = with_backend(backend, || {
            fake_quantize_per_tensor_affine(&x, 0.1, 0, -128, 127)
        });
        assert!(
            matches!(e, Err(Error::NonFinite { .. })),
            "{backend:?}: {e:?}"
        );
        let e = with_backend(backend, || {
            fake_quantize_per_channel_affine(&x, &[0.1, 0.2], &[0, 0], 0, -128, 127)
        });
        assert!(
            matches!(e, Err(Error::NonFinite { .. })),
            "{backend:?}: {e:?}"
        );
    }
    // ±∞ clips to the range ends.
    let inf = Tensor::new(&[f32::INFINITY, f32::NEG_INFINITY], &dev)?;
    let y = fake_quantize_per_tensor_affine(&inf, 0.5, 0, -4, 3)?;
    assert_eq!(y.to_vec1::<f32>()?, [1.5, -2.0]);
    let x = Tensor::ones((2, 3), DType::F32, &dev)?;
    let bad: Vec<(&str, candle_tricks::Result<Tensor>)> = vec![
        (
            "scale 0",
            fake_quantize_per_tensor_affine(&x, 0.0, 0, -128, 127),
        ),
        (
            "scale < 0",
            fake_quantize_per_tensor_affine(&x, -1.0, 0, -128, 127),
        ),
        (
            "scale NaN",
            fake_quantize_per_tensor_affine(&x, f32::NAN, 0, -128, 127),
        ),
        (
            "zp above",
            fake_quantize_per_tensor_affine(&x, 0.1, 128, -128, 127),
        ),
        (
            "qmin = qmax",
            fake_quantize_per_tensor_affine(&x, 0.1, 0, 0, 0),
        ),
        (
            "axis",
            fake_quantize_per_channel_affine(&x, &[0.1; 3], &[0; 3], 2, -128, 127),
        ),
        (
            "len",
            fake_quantize_per_channel_affine(&x, &[0.1; 2], &[0; 2], 1, -128, 127),
        ),
        (
            "int dtype",
            fake_quantize_per_tensor_affine(&x.to_dtype(DType::U32)?, 0.1, 0, 0, 9),
        ),
    ];
    for (what, r) in bad {
        let e = r.expect_err(what).to_string();
        assert!(e.contains("fake_quantize_per_"), "{what}: {e}");
    }
    Ok(())
}

/// A torch QAT layer's fixture tensors.
fn qat_case<'a>(f: &'a Fixtures, name: &str, what: &str) -> &'a Tensor {
    get(f, &format!("{name}.{what}"))
}

/// Runs the three fixture batches through `layer` (train mode) and checks outputs, gradients
/// and final parameters against torch's.
fn check_qat_layer(
    f: &Fixtures,
    name: &str,
    layer: &dyn Module,
    params: (&Var, &Var),
    qparams: impl Fn() -> candle_tricks::Result<(QParams, QParams)>,
) -> R<()> {
    let mut x_last = None;
    let mut y_last = None;
    for i in 0..3 {
        let x = Var::from_tensor(qat_case(f, name, &format!("x{i}")))?;
        let y = layer.forward(&x)?;
        let want = qat_case(f, name, &format!("y{i}"));
        let d = (&y - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "{name} y{i}: max diff {d}");
        x_last = Some(x);
        y_last = Some(y);
    }
    let (x, y) = (x_last.ok_or("x")?, y_last.ok_or("y")?);
    let grads = (y * qat_case(f, name, "gy"))?.sum_all()?.backward()?;
    for (what, t) in [
        ("gx", x.as_tensor()),
        ("gw", params.0.as_tensor()),
        ("gb", params.1.as_tensor()),
    ] {
        let g = grads.get(t).ok_or(what)?;
        let want = qat_case(f, name, what);
        let d = (g - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let m = want.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d <= 1e-5 * (1.0 + m), "{name} {what}: max diff {d}");
    }
    let (input, weight) = qparams()?;
    assert_qparams(
        &format!("{name} input"),
        &input,
        f,
        &format!("{name}.input"),
    );
    assert_qparams(
        &format!("{name} weight"),
        &weight,
        f,
        &format!("{name}.weight"),
    );
    Ok(())
}

#[test]
fn qat_linear_matches_torch() -> R<()> {
    let f = fixtures("quantize");
    let w = Var::from_tensor(qat_case(&f, "qat_linear", "weight"))?;
    let b = Var::from_tensor(qat_case(&f, "qat_linear", "bias"))?;
    let linear = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
    let layer = QatLinear::new(linear, QatConfig::default())?;
    check_qat_layer(&f, "qat_linear", &layer, (&w, &b), || {
        Ok((layer.input_qparams()?, layer.weight_qparams()?))
    })
}

#[test]
fn qat_conv2d_matches_torch() -> R<()> {
    let f = fixtures("quantize");
    let w = Var::from_tensor(qat_case(&f, "qat_conv", "weight"))?;
    let b = Var::from_tensor(qat_case(&f, "qat_conv", "bias"))?;
    let cfg = Conv2dConfig::default().with_padding(candle_tricks::conv::Padding::Explicit(1));
    let conv = Conv2d::new(w.as_tensor().clone(), Some(b.as_tensor().clone()), cfg)?;
    let layer = QatConv2d::new(conv, QatConfig::default())?;
    check_qat_layer(&f, "qat_conv", &layer, (&w, &b), || {
        Ok((layer.input_qparams()?, layer.weight_qparams()?))
    })
}

#[test]
fn calibration_and_frozen_modes() -> R<()> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let mut layer = qat_linear(16, 4, QatConfig::default(), vb)?;
    // Before any forward: the weight's parameters come from the weight itself.
    assert_eq!(layer.weight_qparams()?.scale.len(), 4);
    assert!(layer.input_qparams().is_err());
    layer.set_mode(QatMode::Calibrate);
    let x = Tensor::randn(0f32, 1., (8, 16), &dev)?;
    // Calibration computes in float.
    let float = layer.linear().forward(&x)?;
    let d = (layer.forward(&x)? - &float)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert_eq!(d, 0.0);
    let calibrated = layer.input_qparams()?;
    assert_eq!((calibrated.quant_min, calibrated.quant_max), (0, 127));
    layer.set_mode(QatMode::Frozen);
    let _ = layer.forward(&(x * 10.0)?)?;
    assert_eq!(
        layer.input_qparams()?,
        calibrated,
        "frozen parameters do not move"
    );
    // A FakeQuantize with both switches off is the identity.
    let mut fq = FakeQuantize::new(ObserverConfig::default())?;
    fq.enable_fake_quant(false);
    fq.enable_observer(false);
    let t = Tensor::new(&[0.123f32], &dev)?;
    assert_eq!(fq.forward(&t)?.to_vec1::<f32>()?, [0.123]);
    fq.enable_fake_quant(true);
    assert!(fq.forward(&t).is_err(), "fake-quant before any observation");
    Ok(())
}

#[test]
fn qat_training_converges() -> R<()> {
    // A linear regression target y = x A^T; a QAT layer fits it through the STE.
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(7);
    let mut randn =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
    let a = Tensor::from_vec(randn(4 * 16), (4, 16), &dev)?;
    let x = Tensor::from_vec(randn(64 * 16), (64, 16), &dev)?;
    let y = x.matmul(&a.t()?)?;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let layer = qat_linear(16, 4, QatConfig::default(), vb)?;
    let mut opt = candle_nn::AdamW::new_lr(vm.all_vars(), 0.02)?;
    let mut losses = vec![];
    for _ in 0..150 {
        let loss = (layer.forward(&x)? - &y)?.sqr()?.mean_all()?;
        losses.push(loss.to_scalar::<f32>()?);
        opt.backward_step(&loss)?;
    }
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(last < first * 0.05, "loss {first} -> {last}");
    Ok(())
}

#[test]
fn gguf_q8_0_round_trip_and_qmatmul() -> R<()> {
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 1., (24, 64), &dev)?;
    let bias = Tensor::randn(0f32, 1., 24, &dev)?;
    let mut buf = std::io::Cursor::new(Vec::new());
    let meta = gguf_file::Value::String("candle-tricks test".into());
    write_gguf(
        &mut buf,
        &[("fc.weight", &w), ("fc.bias", &bias)],
        GgmlDType::Q8_0,
        &[("general.name", &meta)],
    )?;
    buf.set_position(0);
    let content = gguf_file::Content::read(&mut buf)?;
    assert!(content.metadata.contains_key("general.name"));
    let qw = content.tensor(&mut buf, "fc.weight", &dev)?;
    assert_eq!(qw.dtype(), GgmlDType::Q8_0);
    assert_eq!(qw.shape().dims(), [24, 64]);
    let qb = content.tensor(&mut buf, "fc.bias", &dev)?;
    assert_eq!(qb.dtype(), GgmlDType::F32);
    let d = (qb.dequantize(&dev)? - &bias)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert_eq!(d, 0.0, "biases stay f32");

    // QMatMul quantizes the activations to Q8_0 too: per block of 32, each side is off by at
    // most (0.5 + 127 · 2^-11) · amax / 127 (rounding, plus the f16 block scale).
    let x = Tensor::randn(0f32, 1., (5, 64), &dev)?;
    let got = QMatMul::from_qtensor(qw)?.forward(&x)?;
    let want = x.matmul(&w.t()?)?;
    let block_err = |t: &Tensor| -> candle_core::Result<Tensor> {
        let (r, c) = t.dims2()?;
        let amax = t.abs()?.reshape((r, c / 32, 32))?.max_keepdim(D::Minus1)?;
        (amax * ((0.5 + 127.0 / 2048.0) / 127.0))?
            .broadcast_as((r, c / 32, 32))?
            .reshape((r, c))
    };
    let (ew, ex) = (block_err(&w)?, block_err(&x)?);
    // |x w - x' w'| <= |x| e_w + |w| e_x + e_x e_w, summed over the reduction.
    let bound =
        ((x.abs()?.matmul(&ew.t()?)? + ex.matmul(&w.abs()?.t()?)?)? + ex.matmul(&ew.t()?)?)?;
    let err = (&got - &want)?.abs()?;
    let slack = (err.broadcast_sub(&bound)?).max_all()?.to_scalar::<f32>()?;
    assert!(slack <= 1e-4, "Q8_0 error exceeds its bound by {slack}");
    let rel = err.max_all()?.to_scalar::<f32>()? / want.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(rel < 0.02, "relative error {rel}");

    // Errors: a row length that is not a multiple of 32, NaN, a duplicate name.
    let odd = Tensor::randn(0f32, 1., (4, 48), &dev)?;
    assert!(quantize_tensor(&odd, GgmlDType::Q8_0).is_err());
    let nan = Tensor::new(&[[f32::NAN; 32]], &dev)?;
    assert!(matches!(
        quantize_tensor(&nan, GgmlDType::Q8_0),
        Err(Error::NonFinite { .. })
    ));
    let mut sink = std::io::Cursor::new(Vec::new());
    assert!(write_gguf(&mut sink, &[("a", &w), ("a", &w)], GgmlDType::Q8_0, &[]).is_err());
    Ok(())
}
