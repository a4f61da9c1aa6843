//! `ops::hardtanh` / `ops::relu6`: outputs and gradients against PyTorch, the kinks included
//! (`tests/fixtures/gen_hardtanh.py`), the composition, finite differences away from the kinks,
//! half precision, NaN, `ops::activation`, and bad input.
mod common;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::Activation;
use candle_tricks::ops::{activation, hardtanh, hardtanh_reference, relu6};
use common::{assert_err, field, fixtures, R};

type UnaryOp<'a> = dyn Fn(&Tensor) -> candle_tricks::Result<Tensor> + 'a;

/// The output and `x`'s gradient of `sum(f(x) * gy)`.
fn fwd_bwd(
    x: &Tensor,
    gy: &Tensor,
    f: impl Fn(&Tensor) -> candle_tricks::Result<Tensor>,
) -> R<(Tensor, Tensor)> {
    let x = Var::from_tensor(x)?;
    let y = f(&x)?;
    let g = (y.to_dtype(DType::F32)? * gy)?.sum_all()?.backward()?;
    let gx = g.get(&x).ok_or("no gradient")?.clone();
    Ok((y, gx))
}

#[test]
fn matches_pytorch_at_and_around_the_kinks() -> R<()> {
    let f = fixtures("hardtanh");
    let cases: [(&str, f64, f64); 2] = [("relu6", 0.0, 6.0), ("hardtanh", -1.5, 2.0)];
    for (case, lo, hi) in cases {
        let (x, gy) = (field(&f, case, "x"), field(&f, case, "gy"));
        let ops: [(&str, &UnaryOp<'_>); 2] = [
            ("kernel", &|x| hardtanh(x, lo, hi)),
            ("reference", &|x| hardtanh_reference(x, lo, hi)),
        ];
        for (path, op) in ops {
            let (y, gx) = fwd_bwd(x, gy, op)?;
            // Piecewise identity or constant: exact, the gradient is gy or 0.
            for (what, got, want) in [("y", &y, "y"), ("gx", &gx, "gx")] {
                let d = (got - field(&f, case, want))?.abs()?.max_all()?;
                assert_eq!(d.to_scalar::<f32>()?, 0.0, "{case} {path} {what}");
            }
        }
    }
    let (x, gy) = (field(&f, "relu6", "x"), field(&f, "relu6", "gy"));
    let (y, gx) = fwd_bwd(x, gy, relu6)?;
    assert_eq!(
        (y - field(&f, "relu6", "y"))?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?,
        0.0
    );
    assert_eq!(
        (gx - field(&f, "relu6", "gx"))?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?,
        0.0
    );
    Ok(())
}

#[test]
fn backward_matches_finite_differences_away_from_the_kinks() -> R<()> {
    let dev = Device::Cpu;
    // Values at least 0.05 from both kinks, so a step of 1e-2 never crosses one.
    let xs: Vec<f64> = (0..200).map(|i| -3.0 + 0.0473 * i as f64).collect();
    let xs: Vec<f64> = xs
        .into_iter()
        .filter(|x| (x - 0.0).abs() > 0.05 && (x - 6.0).abs() > 0.05)
        .collect();
    let x = Tensor::new(xs.as_slice(), &dev)?.to_dtype(DType::F32)?;
    let gy = Tensor::randn(0f32, 1., x.dims(), &dev)?;
    let (_, gx) = fwd_bwd(&x, &gy, relu6)?;
    let (gx, gy) = (gx.to_vec1::<f32>()?, gy.to_vec1::<f32>()?);
    let h = 1e-2f64;
    for (i, &xi) in xs.iter().enumerate() {
        let f = |v: f64| v.clamp(0.0, 6.0);
        let fd = (f(xi + h) - f(xi - h)) / (2.0 * h) * gy[i] as f64;
        assert!(
            (fd - gx[i] as f64).abs() < 1e-4,
            "x = {xi}: {} vs {fd}",
            gx[i]
        );
    }
    Ok(())
}

#[test]
fn half_precision_nan_and_activation() -> R<()> {
    let dev = Device::Cpu;
    let x = (Tensor::randn(0f32, 4., (5, 77), &dev)?).to_dtype(DType::F32)?;
    let want = relu6(&x)?;
    for dt in [DType::F16, DType::BF16] {
        let y = relu6(&x.to_dtype(dt)?)?;
        assert_eq!(y.dtype(), dt);
        let d = (y.to_dtype(DType::F32)? - &want)?.abs()?.max_all()?;
        assert!(d.to_scalar::<f32>()? < 0.05, "{dt:?}");
    }
    // NaN stays NaN, as in PyTorch.
    let y = hardtanh(&Tensor::new(&[f32::NAN, 1.0], &dev)?, -1.0, 2.0)?;
    assert!(y.to_vec1::<f32>()?[0].is_nan());
    // `activation` runs the fused ops for Relu6 and Gelu, candle-nn for the rest.
    for act in [Activation::Relu6, Activation::Gelu, Activation::Silu] {
        let d = (activation(&x, &act)? - act.forward(&x)?)?
            .abs()?
            .max_all()?;
        assert!(d.to_scalar::<f32>()? < 1e-5, "{act:?}");
    }
    Ok(())
}

#[test]
fn bad_input_is_an_error_naming_the_op() -> R<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3), DType::F32, &dev)?;
    for (what, lo, hi) in [
        ("min = max", 1.0, 1.0),
        ("min > max", 2.0, 1.0),
        ("NaN min", f64::NAN, 1.0),
        ("NaN max", 0.0, f64::NAN),
    ] {
        assert_err(what, hardtanh(&x, lo, hi), &["hardtanh", "min_val"]);
        assert_err(what, hardtanh_reference(&x, lo, hi), &["hardtanh"]);
    }
    let empty = Tensor::zeros((2, 0), DType::F32, &dev)?;
    assert_err("empty", relu6(&empty), &["hardtanh"]);
    assert_err("integer", relu6(&x.to_dtype(DType::U32)?), &["hardtanh"]);
    assert_err("f64", relu6(&x.to_dtype(DType::F64)?), &["hardtanh"]);
    assert!(hardtanh_reference(&x.to_dtype(DType::F64)?, 0.0, 6.0).is_ok());
    Ok(())
}
