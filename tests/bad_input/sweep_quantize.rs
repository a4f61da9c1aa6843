//! Bad input for `compress::quantize` and the fake-quantization ops: NaN / ±∞ to observers,
//! fake-quant and export, scales ≤ 0, zero points outside the range, axes out of range,
//! `quant_min >= quant_max`, bad observer configs; legal edge cases checked by value.

use candle_core::quantized::GgmlDType;
use candle_tricks::compress::quantize::{
    quantize_tensor, write_gguf, FakeQuantize, Observer, ObserverConfig, ObserverKind, QDType,
    QParams, QScheme, QatConfig, QatLinear,
};
use candle_tricks::ops::{fake_quantize_per_channel_affine, fake_quantize_per_tensor_affine};

use super::*;

/// `t(shape)` with a NaN (or `v`) at its first element.
fn with_first(shape: (usize, usize), v: f32) -> Tensor {
    let mut data = t(shape).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    data[0] = v;
    Tensor::from_vec(data, shape, &cpu()).unwrap()
}

pub(super) fn quantize_cases() -> Vec<Case> {
    let mut c = Cases::new("quantize");
    let pt = "fake_quantize_per_tensor_affine";
    let pc = "fake_quantize_per_channel_affine";
    let obs = "Observer";
    let qp = "QParams";
    let gg = "gguf export";

    // Fake-quantization.
    c.err("fq: NaN input", pt, || {
        fake_quantize_per_tensor_affine(&with_first((3, 4), f32::NAN), 0.1, 0, -128, 127)?;
        Ok(())
    });
    c.err("fq per-channel: NaN input", pc, || {
        fake_quantize_per_channel_affine(
            &with_first((3, 4), f32::NAN),
            &[0.1; 3],
            &[0; 3],
            0,
            -128,
            127,
        )?;
        Ok(())
    });
    for (name, s) in [
        ("0", 0.0f32),
        ("-1", -1.0),
        ("NaN", f32::NAN),
        ("+Inf", f32::INFINITY),
        ("subnormal", 1e-45),
    ] {
        c.err(&format!("fq: scale {name}"), pt, move || {
            fake_quantize_per_tensor_affine(&t((3, 4)), s, 0, -128, 127)?;
            Ok(())
        });
        c.err(&format!("fq per-channel: scale {name}"), pc, move || {
            fake_quantize_per_channel_affine(&t((3, 4)), &[0.1, s, 0.1], &[0; 3], 0, -128, 127)?;
            Ok(())
        });
    }
    for (name, z) in [("above", 128), ("below", -129)] {
        c.err(&format!("fq: zero point {name} range"), pt, move || {
            fake_quantize_per_tensor_affine(&t((3, 4)), 0.1, z, -128, 127)?;
            Ok(())
        });
        c.err(
            &format!("fq per-channel: zero point {name} range"),
            pc,
            move || {
                fake_quantize_per_channel_affine(
                    &t((3, 4)),
                    &[0.1; 4],
                    &[0, z, 0, 0],
                    1,
                    -128,
                    127,
                )?;
                Ok(())
            },
        );
    }
    for (name, lo, hi) in [
        ("qmin = qmax", 0, 0),
        ("qmin > qmax", 5, -5),
        ("huge range", i32::MIN, i32::MAX),
    ] {
        c.err(&format!("fq: {name}"), pt, move || {
            fake_quantize_per_tensor_affine(&t((3, 4)), 0.1, 0, lo, hi)?;
            Ok(())
        });
    }
    c.err("fq per-channel: axis out of range", pc, || {
        fake_quantize_per_channel_affine(&t((3, 4)), &[0.1; 3], &[0; 3], 2, -128, 127)?;
        Ok(())
    });
    c.err("fq per-channel: wrong scale count", pc, || {
        fake_quantize_per_channel_affine(&t((3, 4)), &[0.1; 4], &[0; 4], 0, -128, 127)?;
        Ok(())
    });
    c.err(
        "fq per-channel: scale / zero point counts differ",
        pc,
        || {
            fake_quantize_per_channel_affine(&t((3, 4)), &[0.1; 3], &[0; 2], 0, -128, 127)?;
            Ok(())
        },
    );
    c.err("fq: empty input", pt, || {
        fake_quantize_per_tensor_affine(
            &Tensor::zeros((0, 4), DType::F32, &cpu())?,
            0.1,
            0,
            -128,
            127,
        )?;
        Ok(())
    });
    c.err("fq: integer input", pt, || {
        fake_quantize_per_tensor_affine(&td((3, 4), DType::U32), 0.1, 0, 0, 255)?;
        Ok(())
    });
    c.val("fq: ±Inf clips to the range ends", || {
        let x = Tensor::new(&[f32::INFINITY, f32::NEG_INFINITY], &cpu())?;
        let y = fake_quantize_per_tensor_affine(&x, 0.5, 1, 0, 7)?;
        ensure(y.to_vec1::<f32>()? == [3.0, -0.5], "Inf clips")
    });
    c.val("fq: non-contiguous input", || {
        let x = noncontig((3, 4));
        let y = fake_quantize_per_tensor_affine(&x, 0.1, 0, -128, 127)?;
        let want = fake_quantize_per_tensor_affine(&x.contiguous()?, 0.1, 0, -128, 127)?;
        close("non-contiguous", &y, &want, 0.0)
    });

    // Observers.
    for (name, v) in [
        ("NaN", f32::NAN),
        ("+Inf", f32::INFINITY),
        ("-Inf", f32::NEG_INFINITY),
    ] {
        c.err(&format!("observer: {name} input"), obs, move || {
            Observer::new(ObserverConfig::default())?.observe(&with_first((3, 4), v))?;
            Ok(())
        });
        c.err(
            &format!("observer per-channel: {name} input"),
            obs,
            move || {
                let cfg = ObserverConfig::weight();
                Observer::new(cfg)?.observe(&with_first((3, 4), v))?;
                Ok(())
            },
        );
    }
    c.err("observer: empty input", obs, || {
        Observer::new(ObserverConfig::default())?.observe(&Tensor::zeros(
            (0, 4),
            DType::F32,
            &cpu(),
        )?)?;
        Ok(())
    });
    c.err("observer: integer input", obs, || {
        Observer::new(ObserverConfig::default())?.observe(&td((3, 4), DType::U32))?;
        Ok(())
    });
    c.err("observer: axis out of range", obs, || {
        let cfg = ObserverConfig::default().with_scheme(QScheme::PerChannelAffine { axis: 2 });
        Observer::new(cfg)?.observe(&t((3, 4)))?;
        Ok(())
    });
    c.err("observer: channel count changes", obs, || {
        let mut o = Observer::new(ObserverConfig::weight())?;
        o.observe(&t((3, 4)))?;
        o.observe(&t((5, 4)))?;
        Ok(())
    });
    c.err("observer: qparams before observe", obs, || {
        Observer::new(ObserverConfig::default())?.qparams()?;
        Ok(())
    });
    for (name, cfg) in [
        ("eps 0", ObserverConfig::default().with_eps(0.0)),
        ("eps NaN", ObserverConfig::default().with_eps(f32::NAN)),
        (
            "averaging 0",
            ObserverConfig::default().with_kind(ObserverKind::MovingAverage {
                averaging_constant: 0.0,
            }),
        ),
        (
            "averaging 1.5",
            ObserverConfig::default().with_kind(ObserverKind::MovingAverage {
                averaging_constant: 1.5,
            }),
        ),
        (
            "qmin = qmax",
            ObserverConfig::default().with_quant_range(0, 0),
        ),
        (
            "qmin > qmax",
            ObserverConfig::default()
                .with_dtype(QDType::QInt8)
                .with_quant_range(5, -5),
        ),
        (
            "range without 0",
            ObserverConfig::default().with_quant_range(1, 15),
        ),
        (
            "range beyond dtype",
            ObserverConfig::default().with_quant_range(0, 300),
        ),
        (
            "symmetric quint8 reduce_range",
            ObserverConfig::default()
                .with_scheme(QScheme::PerTensorSymmetric)
                .with_reduce_range(true),
        ),
    ] {
        c.err(&format!("observer config: {name}"), obs, move || {
            Observer::new(cfg)?;
            Ok(())
        });
    }
    c.err("FakeQuantize: bad observer config", obs, || {
        FakeQuantize::new(ObserverConfig::default().with_eps(-1.0))?;
        Ok(())
    });
    c.err(
        "FakeQuantize: fake-quant before any observation",
        "FakeQuantize",
        || {
            let mut fq = FakeQuantize::new(ObserverConfig::default())?;
            fq.enable_observer(false);
            fq.forward(&t((3, 4)))?;
            Ok(())
        },
    );
    c.err("QatLinear: NaN input", obs, || {
        let lin = candle_nn::Linear::new(t((2, 4)), None);
        QatLinear::new(lin, QatConfig::default())?.forward(&with_first((3, 4), f32::NAN))?;
        Ok(())
    });
    c.err("QatLinear: 1-D weight", "QatLinear", || {
        QatLinear::new(candle_nn::Linear::new(t(4), None), QatConfig::default())?;
        Ok(())
    });

    // QParams.
    c.err("qparams: NaN bound", qp, || {
        QParams::from_min_max(
            &[f32::NAN],
            &[1.0],
            QScheme::PerTensorAffine,
            QDType::QUInt8,
            (0, 255),
            1e-7,
        )?;
        Ok(())
    });
    c.err("qparams: min above max", qp, || {
        QParams::from_min_max(
            &[2.0],
            &[1.0],
            QScheme::PerTensorAffine,
            QDType::QUInt8,
            (0, 255),
            1e-7,
        )?;
        Ok(())
    });
    c.err("qparams: qmin >= qmax", qp, || {
        QParams::from_min_max(
            &[0.0],
            &[1.0],
            QScheme::PerTensorAffine,
            QDType::QUInt8,
            (5, 5),
            1e-7,
        )?;
        Ok(())
    });
    c.err(
        "qparams: fake_quantize with a wrong channel count",
        pc,
        || {
            let q = QParams::from_min_max(
                &[0.0; 2],
                &[1.0; 2],
                QScheme::PerChannelAffine { axis: 0 },
                QDType::QUInt8,
                (0, 255),
                1e-7,
            )?;
            q.fake_quantize(&t((3, 4)))?;
            Ok(())
        },
    );

    // Export.
    c.err("gguf: NaN weight", gg, || {
        quantize_tensor(&with_first((2, 32), f32::NAN), GgmlDType::Q8_0)?;
        Ok(())
    });
    c.err("gguf: row not a multiple of 32", gg, || {
        quantize_tensor(&t((2, 33)), GgmlDType::Q8_0)?;
        Ok(())
    });
    c.err("gguf: rank 0", gg, || {
        quantize_tensor(&Tensor::new(1f32, &cpu())?, GgmlDType::Q8_0)?;
        Ok(())
    });
    c.err("gguf: integer tensor", gg, || {
        quantize_tensor(&td((2, 32), DType::U32), GgmlDType::Q8_0)?;
        Ok(())
    });
    c.err("gguf: NaN in a written tensor", gg, || {
        let mut sink = std::io::Cursor::new(Vec::new());
        write_gguf(
            &mut sink,
            &[("w", &with_first((2, 32), f32::NAN))],
            GgmlDType::Q8_0,
            &[],
        )?;
        Ok(())
    });
    c.err("gguf: duplicate names", gg, || {
        let mut sink = std::io::Cursor::new(Vec::new());
        let w = t((2, 32));
        write_gguf(&mut sink, &[("w", &w), ("w", &w)], GgmlDType::Q8_0, &[])?;
        Ok(())
    });
    c.list
}
