//! Bad input for the int8 layers (`compress::quantize`): NaN / Inf inputs and weights, weight
//! and bias shape mismatches, wrong dtypes, scales ≤ 0, static input parameters outside the
//! reduced range, grouped convolutions; legal edge cases (non-contiguous input, one row)
//! checked against the float layer.

use candle_tricks::compress::quantize::{
    InputQuant, QDType, QParams, QScheme, QuantizedConv2d, QuantizedLinear,
};
use candle_tricks::ops::Conv2dConfig;

use super::*;

fn lin(input: InputQuant) -> QuantizedLinear {
    QuantizedLinear::new(&t((6, 5)), Some(&t(6)), input).unwrap()
}

fn with_value(shape: (usize, usize), v: f32) -> Tensor {
    let x = t(shape).flatten_all().unwrap();
    let mut data = x.to_vec1::<f32>().unwrap();
    data[3] = v;
    Tensor::from_vec(data, shape, &cpu()).unwrap()
}

pub(super) fn int8_cases() -> Vec<Case> {
    let mut c = Cases::new("int8");
    let ql = "QuantizedLinear";
    let qc = "QuantizedConv2d";
    for (name, v) in [
        ("NaN", f32::NAN),
        ("+Inf", f32::INFINITY),
        ("-Inf", f32::NEG_INFINITY),
    ] {
        c.err(&format!("linear dynamic: {name} input"), ql, move || {
            lin(InputQuant::Dynamic).forward(&with_value((3, 5), v))?;
            Ok(())
        });
        c.err(&format!("linear static: {name} input"), ql, move || {
            let q = InputQuant::calibrated(-1.0, 1.0)?;
            lin(q).forward(&with_value((3, 5), v))?;
            Ok(())
        });
        c.err(&format!("linear: {name} weight"), ql, move || {
            QuantizedLinear::new(&with_value((6, 5), v), None, InputQuant::Dynamic)?;
            Ok(())
        });
        c.err(&format!("conv: {name} input"), qc, move || {
            let conv = QuantizedConv2d::new(
                &t((2, 1, 2, 2)),
                None,
                Conv2dConfig::default(),
                InputQuant::Dynamic,
            )?;
            conv.forward(&with_value((4, 4), v).reshape((1, 1, 4, 4))?)?;
            Ok(())
        });
    }
    c.err("linear: bias shape", ql, || {
        QuantizedLinear::new(&t((6, 5)), Some(&t(5)), InputQuant::Dynamic)?;
        Ok(())
    });
    c.err("linear: weight rank 3", ql, || {
        QuantizedLinear::new(&t((6, 5, 1)), None, InputQuant::Dynamic)?;
        Ok(())
    });
    c.err("linear: empty weight", ql, || {
        QuantizedLinear::new(&t((0, 5)), None, InputQuant::Dynamic)?;
        Ok(())
    });
    c.err("linear: f16 weight", ql, || {
        QuantizedLinear::new(&td((6, 5), DType::F16), None, InputQuant::Dynamic)?;
        Ok(())
    });
    c.err("linear: input features", ql, || {
        lin(InputQuant::Dynamic).forward(&t((3, 4)))?;
        Ok(())
    });
    c.err("linear: rank-0 input", ql, || {
        lin(InputQuant::Dynamic).forward(&Tensor::new(1f32, &cpu())?)?;
        Ok(())
    });
    c.err("linear: f64 input", ql, || {
        lin(InputQuant::Dynamic).forward(&td((3, 5), DType::F64))?;
        Ok(())
    });
    for s in [0f32, -0.5, f32::NAN, f32::INFINITY] {
        c.err(&format!("linear: weight scale {s}"), ql, move || {
            let q = Tensor::zeros((6, 5), DType::U8, &cpu())?;
            QuantizedLinear::from_quantized(
                q,
                Tensor::full(s, 6, &cpu())?,
                None,
                InputQuant::Dynamic,
            )?;
            Ok(())
        });
    }
    c.err("linear: f32 quantized weight", ql, || {
        QuantizedLinear::from_quantized(t((6, 5)), t(6).abs()?, None, InputQuant::Dynamic)?;
        Ok(())
    });
    c.err("linear: weight_scale shape", ql, || {
        let q = Tensor::zeros((6, 5), DType::U8, &cpu())?;
        QuantizedLinear::from_quantized(
            q,
            Tensor::ones(5, DType::F32, &cpu())?,
            None,
            InputQuant::Dynamic,
        )?;
        Ok(())
    });
    c.err("linear: static full quint8 range", ql, || {
        let p = QParams::from_min_max(
            &[-1.0],
            &[1.0],
            QScheme::PerTensorAffine,
            QDType::QUInt8,
            (0, 255),
            f32::EPSILON,
        )?;
        QuantizedLinear::new(&t((6, 5)), None, InputQuant::Static(p))?;
        Ok(())
    });
    c.err("linear: static per-channel", ql, || {
        let p = QParams::from_min_max(
            &[-1.0, 0.0],
            &[1.0, 1.0],
            QScheme::PerChannelAffine { axis: 0 },
            QDType::QUInt8,
            (0, 127),
            f32::EPSILON,
        )?;
        QuantizedLinear::new(&t((6, 5)), None, InputQuant::Static(p))?;
        Ok(())
    });
    for s in [0f32, -1.0, f32::NAN] {
        c.err(&format!("linear: static scale {s}"), ql, move || {
            let InputQuant::Static(mut p) = InputQuant::calibrated(-1.0, 1.0)? else {
                return Err(Got::Wrong("calibrated is static".into()));
            };
            p.scale[0] = s;
            QuantizedLinear::new(&t((6, 5)), None, InputQuant::Static(p))?;
            Ok(())
        });
    }
    c.err("conv: groups 2", qc, || {
        QuantizedConv2d::new(
            &t((4, 2, 3, 3)),
            None,
            Conv2dConfig::default().with_groups(2),
            InputQuant::Dynamic,
        )?;
        Ok(())
    });
    c.err("conv: stride 0", qc, || {
        QuantizedConv2d::new(
            &t((4, 2, 3, 3)),
            None,
            Conv2dConfig::default().with_stride(0),
            InputQuant::Dynamic,
        )?;
        Ok(())
    });
    c.err("conv: weight rank 3", qc, || {
        QuantizedConv2d::new(
            &t((4, 2, 3)),
            None,
            Conv2dConfig::default(),
            InputQuant::Dynamic,
        )?;
        Ok(())
    });
    c.err("conv: input channels", qc, || {
        let conv = QuantizedConv2d::new(
            &t((4, 2, 3, 3)),
            None,
            Conv2dConfig::default(),
            InputQuant::Dynamic,
        )?;
        conv.forward(&t((1, 3, 5, 5)))?;
        Ok(())
    });
    c.err("conv: kernel larger than input", qc, || {
        let cfg = Conv2dConfig::default().with_padding(Padding::Valid);
        let conv = QuantizedConv2d::new(&t((4, 2, 3, 3)), None, cfg, InputQuant::Dynamic)?;
        conv.forward(&t((1, 2, 2, 5)))?;
        Ok(())
    });
    c.val("linear: non-contiguous input, close to f32", || {
        let l = lin(InputQuant::Dynamic);
        let x = noncontig((4, 5));
        let y = l.forward(&x)?;
        let r = x.matmul(&t((6, 5)).t()?)?.broadcast_add(&t(6))?;
        let err = (&y - &r)?.abs()?.max_all()?.to_scalar::<f32>()?;
        if err > 0.05 {
            return Err(Got::Wrong(format!("max error {err}")));
        }
        Ok(())
    });
    c.list
}
