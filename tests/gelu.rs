//! Exact GELU (`ops::gelu_erf`): outputs and derivatives against the C library's erfc
//! (`tests/fixtures/gen_gelu.py`, the definition PyTorch's `F.gelu` uses), the gradient against
//! finite differences, and bad input.
mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_tricks::ops::{gelu_erf, gelu_erf_reference};
use common::{fixtures, get, R};

#[test]
fn outputs_and_derivatives_match_erfc() -> R<()> {
    let f = fixtures("gelu");
    let x = Var::from_tensor(get(&f, "x"))?;
    let y = gelu_erf(&x)?;
    let gx = y.sum_all()?.backward()?;
    let gx = gx.get(&x).expect("gradient").to_vec1::<f32>()?;
    let xs = get(&f, "x").to_vec1::<f32>()?;
    let (want_y, want_dy) = (
        get(&f, "y").to_vec1::<f32>()?,
        get(&f, "dy").to_vec1::<f32>()?,
    );
    for (i, ((x, y), dy)) in xs.iter().zip(y.to_vec1::<f32>()?).zip(gx).enumerate() {
        // Phi is within 3e-7 absolute: y within |x|·3e-7, the derivative within 5e-7.
        let tol_y = 3e-7 * (1.0 + x.abs()) + 1e-6 * want_y[i].abs();
        assert!(
            (y - want_y[i]).abs() <= tol_y,
            "gelu({x}) = {y}, want {}",
            want_y[i]
        );
        let tol_dy = 5e-7 + 1e-6 * want_dy[i].abs();
        assert!(
            (dy - want_dy[i]).abs() <= tol_dy,
            "gelu'({x}) = {dy}, want {}",
            want_dy[i]
        );
    }
    Ok(())
}

#[test]
fn gradient_matches_finite_differences_and_halves_follow_f32() -> R<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f64, 2.0, 257, &dev)?;
    let xv = Var::from_tensor(&x.to_dtype(DType::F32)?)?;
    let gx = gelu_erf(&xv)?.sum_all()?.backward()?;
    let gx = gx.get(&xv).expect("gradient").to_vec1::<f32>()?;
    let h = 1e-4;
    let up = gelu_erf_reference(&(&x + h)?)?.to_vec1::<f64>()?;
    let down = gelu_erf_reference(&(&x - h)?)?.to_vec1::<f64>()?;
    for ((g, u), d) in gx.iter().zip(&up).zip(&down) {
        let fd = (u - d) / (2.0 * h);
        assert!(
            (*g as f64 - fd).abs() < 1e-5,
            "{g} vs finite difference {fd}"
        );
    }
    for dt in [DType::F16, DType::BF16] {
        let half = gelu_erf(&x.to_dtype(dt)?)?.to_dtype(DType::F32)?;
        let full = gelu_erf(&x.to_dtype(dt)?.to_dtype(DType::F32)?)?;
        let diff = (half - full)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 0.02, "{dt:?}: {diff}");
    }
    Ok(())
}

#[test]
fn bad_input_names_the_op() -> R<()> {
    let dev = Device::Cpu;
    let empty = Tensor::zeros((2, 0), DType::F32, &dev)?;
    let ints = Tensor::zeros(3, DType::U32, &dev)?;
    for t in [empty, ints] {
        let msg = gelu_erf(&t).expect_err("bad input").to_string();
        assert!(msg.contains("gelu_erf"), "{msg}");
    }
    Ok(())
}
