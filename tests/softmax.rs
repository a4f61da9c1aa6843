//! Fused softmax over the last dimension: PyTorch fixtures (outputs and gradients, odd row
//! lengths, large logits, masked entries), f64 autograd of the reference, finite differences,
//! f16/bf16, gradient flow to parameters before the softmax, and bad input.

mod common;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_tricks::ops;
use common::*;

const CASES: [&str; 7] = ["d1", "d7", "d33", "d1000", "rank1", "large", "masked"];

fn randn(shape: &[usize], mean: f32, std: f32) -> R<Tensor> {
    Ok(Tensor::randn(mean, std, shape, &Device::Cpu)?)
}

#[test]
fn fixtures_match_pytorch() -> R<()> {
    let f = fixtures("softmax");
    for case in CASES {
        let x = field(&f, case, "x");
        let (y, gx) = fwd_bwd1(x, field(&f, case, "gy"), ops::softmax_last_dim)?;
        assert_close(&format!("{case} y"), &y, field(&f, case, "y"), 1e-6);
        assert_close(&format!("{case} gx"), &gx, field(&f, case, "gx"), 1e-5);
        let r = ops::softmax_last_dim_reference(x)?;
        assert_close(
            &format!("{case} reference y"),
            &r,
            field(&f, case, "y"),
            1e-6,
        );
    }
    // Large logits stay finite.
    let y = ops::softmax_last_dim(field(&f, "large", "x"))?;
    let finite = y
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .all(|v| v.is_finite());
    assert!(finite, "large logits give a non-finite probability");
    Ok(())
}

/// A row of only `-inf` has no softmax: PyTorch gives NaN for its output and its gradient and
/// so do we; the other rows are unaffected.
#[test]
fn fully_masked_row_is_nan_like_pytorch() -> R<()> {
    let f = fixtures("softmax");
    let case = "all_masked";
    let (y, gx) = fwd_bwd1(field(&f, case, "x"), field(&f, case, "gy"), |x| {
        ops::softmax_last_dim(x)
    })?;
    for (name, got, want) in [
        ("y", &y, field(&f, case, "y")),
        ("gx", &gx, field(&f, case, "gx")),
    ] {
        for row in [0, 2] {
            assert_close(
                &format!("{case} {name} row {row}"),
                &got.get(row)?,
                &want.get(row)?,
                1e-5,
            );
        }
        let masked = got.get(1)?.to_vec1::<f32>()?;
        assert!(masked.iter().all(|v| v.is_nan()), "{name}: {masked:?}");
        let torch = want.get(1)?.to_vec1::<f32>()?;
        assert!(torch.iter().all(|v| v.is_nan()));
    }
    Ok(())
}

/// Our f32 op against the f64 autograd of the reference, on shapes that split into several
/// tasks (long rows, many short rows, rows of one).
#[test]
fn matches_f64_reference_multi_task() -> R<()> {
    for shape in [
        &[100, 400][..],
        &[7, 3001],
        &[9000, 3],
        &[20000, 1],
        &[2, 3, 197],
    ] {
        let x = randn(shape, 0.5, 3.0)?;
        let gy = randn(shape, 0.0, 1.0)?;
        let (y, gx) = fwd_bwd1(&x, &gy, ops::softmax_last_dim)?;
        let up = |t: &Tensor| t.to_dtype(DType::F64);
        let (yr, gr) = fwd_bwd1(&up(&x)?, &up(&gy)?, ops::softmax_last_dim_reference)?;
        assert_close(&format!("{shape:?} y"), &y, &yr, 5e-6);
        assert_close(&format!("{shape:?} gx"), &gx, &gr, 1e-5);
    }
    Ok(())
}

#[test]
fn finite_differences() -> R<()> {
    let x = randn(&[3, 9], 0.5, 1.5)?;
    let gy = randn(&[3, 9], 0.0, 1.0)?;
    let (_, gx) = fwd_bwd1(&x, &gy, ops::softmax_last_dim)?;
    let fd = finite_diff(&x, &gy, 1e-2, ops::softmax_last_dim)?;
    assert_matches_fd("softmax dx", &gx, &fd, 1e-2)?;
    Ok(())
}

#[test]
fn half_precision_within_tolerance() -> R<()> {
    // Rows of 70 (single task) and 1000 x 33 (several tasks).
    for shape in [[4, 5, 70], [1, 1000, 33]] {
        let x = randn(&shape, 0.5, 2.0)?;
        let gy = randn(&shape, 0.0, 1.0)?;
        for (dtype, tol) in [(DType::F16, 2e-3), (DType::BF16, 1e-2)] {
            let (xh, gyh) = (x.to_dtype(dtype)?, gy.to_dtype(dtype)?);
            let (y, gx) = fwd_bwd1(&xh, &gyh, ops::softmax_last_dim)?;
            assert_eq!((y.dtype(), gx.dtype()), (dtype, dtype));
            let up = |t: &Tensor| t.to_dtype(DType::F32);
            let (yf, gxf) = fwd_bwd1(&up(&xh)?, &up(&gyh)?, ops::softmax_last_dim)?;
            assert_close(&format!("{dtype:?} {shape:?} y"), &y, &yf, tol);
            assert_close(&format!("{dtype:?} {shape:?} gx"), &gx, &gxf, tol);
        }
    }
    Ok(())
}

#[test]
fn non_contiguous_input() -> R<()> {
    let x = randn(&[13, 6], 0.0, 1.0)?.t()?; // (6, 13), strided
    let y = ops::softmax_last_dim(&x)?;
    let r = ops::softmax_last_dim_reference(&x.contiguous()?)?;
    assert_close("strided", &y, &r, 1e-6);
    // A strided upstream gradient (the output transposed before the loss).
    let c = randn(&[13, 6], 0.0, 1.0)?;
    let grad = |f: fn(&Tensor) -> candle_tricks::Result<Tensor>, dtype: DType| -> R<Tensor> {
        let v = Var::from_tensor(&x.contiguous()?.to_dtype(dtype)?)?;
        let loss = (f(&v)?.t()? * c.to_dtype(dtype)?)?.sum_all()?;
        Ok(loss.backward()?.get(&v).ok_or("no gradient")?.clone())
    };
    let got = grad(ops::softmax_last_dim, DType::F32)?;
    let want = grad(ops::softmax_last_dim_reference, DType::F64)?;
    assert_close("strided grad", &got, &want, 1e-5);
    Ok(())
}

/// A Linear layer before the softmax gets a non-zero gradient, equal to the one through the
/// reference composition in f64; through candle-nn's fused op it gets none.
#[test]
fn gradient_flows_to_parameters_before_the_softmax() -> R<()> {
    let (n, din, d) = (6, 10, 24);
    let x = randn(&[n, din], 0.0, 1.0)?;
    let lin = randn(&[d, din], 0.0, 0.4)?;
    let c = randn(&[n, d], 0.0, 1.0)?;
    type SoftmaxFn = fn(&Tensor) -> candle_tricks::Result<Tensor>;
    let grad_lin = |dtype: DType, f: SoftmaxFn| -> R<Tensor> {
        let v = Var::from_tensor(&lin.to_dtype(dtype)?)?;
        let h = x.to_dtype(dtype)?.matmul(&v.as_tensor().t()?)?;
        let grads = (f(&h)? * c.to_dtype(dtype)?)?.sum_all()?.backward()?;
        Ok(grads
            .get(&v)
            .ok_or("no gradient for the Linear weight")?
            .clone())
    };
    let got = grad_lin(DType::F32, ops::softmax_last_dim)?;
    let want = grad_lin(DType::F64, ops::softmax_last_dim_reference)?;
    let norm = got.abs()?.sum_all()?.to_scalar::<f32>()?;
    assert!(norm > 1e-3, "gradient is zero");
    assert_close("Linear weight grad", &got, &want, 1e-5);
    // A softmax's input gradient sums to zero over each row.
    let v = Var::from_tensor(&lin)?;
    let h = x.matmul(&v.as_tensor().t()?)?;
    let hv = Var::from_tensor(&h)?;
    let grads = (ops::softmax_last_dim(&hv)? * &c)?.sum_all()?.backward()?;
    let gh = grads.get(&hv).ok_or("no gradient for h")?;
    let row_sums = gh.sum(D::Minus1)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(row_sums < 1e-6, "row sums {row_sums}");
    // candle-nn's fused forward-only op stops the gradient (the bug this op works around).
    let y = candle_nn::ops::softmax_last_dim(&h)?;
    let grads = (y * &c)?.sum_all()?.backward()?;
    assert!(grads.get(&v).is_none());
    Ok(())
}

#[test]
fn bad_input_is_an_error_naming_the_op() -> R<()> {
    let dev = Device::Cpu;
    let op = "softmax_last_dim";
    let scalar = Tensor::new(1f32, &dev)?;
    assert_err_names(ops::softmax_last_dim(&scalar), op, "rank");
    assert_err_names(ops::softmax_last_dim_reference(&scalar), op, "rank");
    for shape in [&[2usize, 0][..], &[0, 3], &[0], &[4, 0, 2]] {
        let empty = Tensor::zeros(shape, DType::F32, &dev)?;
        assert_err_names(ops::softmax_last_dim(&empty), op, "non-zero");
        assert_err_names(ops::softmax_last_dim_reference(&empty), op, "non-zero");
    }
    for dtype in [DType::U8, DType::U32, DType::I64, DType::F64] {
        let x = Tensor::zeros((2, 5), dtype, &dev)?;
        assert_err_names(ops::softmax_last_dim(&x), op, "dtype");
    }
    let xi = Tensor::zeros((2, 5), DType::U32, &dev)?;
    assert_err_names(ops::softmax_last_dim_reference(&xi), op, "dtype");
    // The reference accepts f64 (for gradient checks).
    let x64 = Tensor::zeros((2, 5), DType::F64, &dev)?;
    assert!(ops::softmax_last_dim_reference(&x64).is_ok());
    Ok(())
}
