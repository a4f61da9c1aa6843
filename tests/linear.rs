//! The fused linear op: PyTorch fixtures (output and the gradients of input, weight and bias,
//! ranks 1 to 4, with and without bias), products of several tiles against the f64 composition,
//! finite differences, f16/bf16, non-contiguous input, the composition path, frozen operands and
//! bad input.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_tricks::ops::{self, linear, linear_reference, with_backend, Backend};
use common::*;

const CASES: [&str; 5] = ["rank1", "rank2", "rank3_no_bias", "rank4", "odd"];

fn randn(shape: &[usize]) -> R<Tensor> {
    Ok(Tensor::randn(0f32, 1., shape, &Device::Cpu)?)
}

/// `linear` on `[x, w]` or `[x, w, b]`.
fn apply(t: &[Tensor]) -> candle_tricks::Result<Tensor> {
    linear(&t[0], &t[1], t.get(2))
}

fn apply_reference(t: &[Tensor]) -> candle_tricks::Result<Tensor> {
    linear_reference(&t[0], &t[1], t.get(2))
}

/// The fixture's inputs `[x, w(, b)]` and `gy` of `case`.
fn inputs(f: &Fixtures, case: &str) -> (Vec<Tensor>, Tensor) {
    let mut ts = vec![field(f, case, "x").clone(), field(f, case, "w").clone()];
    if let Some(b) = f.get(&format!("{case}.b")) {
        ts.push(b.clone());
    }
    (ts, field(f, case, "gy").clone())
}

/// Compares `y` and the gradients `[gx, gw(, gb)]` with the fixture's.
fn assert_matches_fixture(what: &str, f: &Fixtures, case: &str, y: &Tensor, gs: &[Tensor]) {
    assert_close(&format!("{what} {case} y"), y, field(f, case, "y"), 1e-5);
    for (g, name) in gs.iter().zip(["gx", "gw", "gb"]) {
        let want = field(f, case, name);
        assert_close(&format!("{what} {case} {name}"), g, want, 1e-5);
    }
}

#[test]
fn fixtures_match_pytorch() -> R<()> {
    let f = fixtures("linear");
    for case in CASES {
        let (ts, gy) = inputs(&f, case);
        let refs: Vec<&Tensor> = ts.iter().collect();
        let (y, gs) = fwd_bwd_n(&refs, &gy, apply)?;
        assert_eq!(gs.len(), ts.len());
        assert_matches_fixture("kernel", &f, case, &y, &gs);
        let (y, gs) = fwd_bwd_n(&refs, &gy, apply_reference)?;
        assert_matches_fixture("reference", &f, case, &y, &gs);
        // The forced composition is the reference.
        let (y, gs) = with_backend(Backend::Composition, || fwd_bwd_n(&refs, &gy, apply))?;
        assert_matches_fixture("composition", &f, case, &y, &gs);
    }
    Ok(())
}

#[test]
fn non_contiguous_input() -> R<()> {
    let f = fixtures("linear");
    for case in ["rank2", "rank4"] {
        let (mut ts, gy) = inputs(&f, case);
        // The same values with transposed strides.
        let x = &ts[0];
        let last = x.rank() - 1;
        let strided = x.transpose(0, last)?.contiguous()?.transpose(0, last)?;
        assert!(!strided.is_contiguous());
        ts[0] = strided;
        let refs: Vec<&Tensor> = ts.iter().collect();
        let (y, gs) = fwd_bwd_n(&refs, &gy, apply)?;
        assert_matches_fixture("strided", &f, case, &y, &gs);
    }
    // A strided upstream gradient (the output transposed before the loss).
    let (x, w, b) = (randn(&[13, 6])?, randn(&[9, 6])?, randn(&[9])?);
    let c = randn(&[9, 13])?;
    let grads = |op: fn(&[Tensor]) -> candle_tricks::Result<Tensor>, dt: DType| -> R<Vec<Tensor>> {
        let vars = [&x, &w, &b]
            .map(|t| t.to_dtype(dt).and_then(|t| Var::from_tensor(&t)))
            .into_iter()
            .collect::<candle_core::Result<Vec<_>>>()?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let loss = (op(&ts)?.t()? * c.to_dtype(dt)?)?.sum_all()?;
        let g = loss.backward()?;
        Ok(ts
            .iter()
            .map(|t| g.get(t).cloned())
            .collect::<Option<Vec<_>>>()
            .ok_or("no gradient")?)
    };
    let got = grads(apply, DType::F32)?;
    let want = grads(apply_reference, DType::F64)?;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(&format!("strided grad {i}"), g, w, 1e-5);
    }
    Ok(())
}

/// Products split into several tiles (rows, and rows and columns of the weight gradient) and
/// bias sums over several blocks of rows, against the f64 composition.
#[test]
fn matches_f64_reference_multi_tile() -> R<()> {
    for (x_shape, out, bias) in [
        (&[300, 64][..], 96, true),
        (&[2, 130, 40], 33, false),
        (&[5, 1, 700], 200, true),
        (&[4100, 3], 40, true),
        (&[3, 4096], 2, true),
    ] {
        let inp = x_shape[x_shape.len() - 1];
        let mut ts = vec![
            randn(x_shape)?,
            (randn(&[out, inp])? / (inp as f64).sqrt())?,
        ];
        if bias {
            ts.push(randn(&[out])?);
        }
        let mut y_shape = x_shape.to_vec();
        *y_shape.last_mut().unwrap() = out;
        let gy = randn(&y_shape)?;
        let refs: Vec<&Tensor> = ts.iter().collect();
        let (y, gs) = fwd_bwd_n(&refs, &gy, apply)?;
        let up: Vec<Tensor> = ts
            .iter()
            .map(|t| t.to_dtype(DType::F64))
            .collect::<candle_core::Result<_>>()?;
        let up_refs: Vec<&Tensor> = up.iter().collect();
        let (yr, gr) = fwd_bwd_n(&up_refs, &gy.to_dtype(DType::F64)?, apply_reference)?;
        let what = format!("{x_shape:?} -> {out}");
        assert_close(&format!("{what} y"), &y, &yr, 1e-5);
        for (i, (g, r)) in gs.iter().zip(&gr).enumerate() {
            assert_eq!(g.dtype(), DType::F32);
            assert_close(&format!("{what} grad {i}"), g, r, 1e-5);
        }
    }
    Ok(())
}

/// The loss is bilinear in `(x, w)` and linear in `b`, so central differences are exact up to
/// rounding: a tight check of every gradient.
#[test]
fn finite_differences() -> R<()> {
    let (x, w, b) = (randn(&[2, 3, 5])?, randn(&[4, 5])?, randn(&[4])?);
    let gy = randn(&[2, 3, 4])?;
    let (_, gs) = fwd_bwd_n(&[&x, &w, &b], &gy, apply)?;
    let fd = [
        finite_diff(&x, &gy, 1e-2, |x| linear(x, &w, Some(&b)))?,
        finite_diff(&w, &gy, 1e-2, |w| linear(&x, w, Some(&b)))?,
        finite_diff(&b, &gy, 1e-2, |b| linear(&x, &w, Some(b)))?,
    ];
    for ((g, fd), name) in gs.iter().zip(&fd).zip(["dx", "dw", "db"]) {
        assert_matches_fd(&format!("linear {name}"), g, fd, 1e-3)?;
    }
    Ok(())
}

#[test]
fn half_precision_within_tolerance() -> R<()> {
    for (x_shape, out) in [(&[4, 5, 70][..], 24), (&[260, 64], 96)] {
        let inp = x_shape[x_shape.len() - 1];
        let ts = [
            randn(x_shape)?,
            (randn(&[out, inp])? * 0.1)?,
            randn(&[out])?,
        ];
        let mut y_shape = x_shape.to_vec();
        *y_shape.last_mut().unwrap() = out;
        let gy = randn(&y_shape)?;
        for (dtype, tol) in [(DType::F16, 2e-3), (DType::BF16, 1e-2)] {
            let half: Vec<Tensor> = ts
                .iter()
                .map(|t| t.to_dtype(dtype))
                .collect::<candle_core::Result<_>>()?;
            let refs: Vec<&Tensor> = half.iter().collect();
            let (y, gs) = fwd_bwd_n(&refs, &gy.to_dtype(dtype)?, apply)?;
            assert_eq!(y.dtype(), dtype);
            let full: Vec<Tensor> = half
                .iter()
                .map(|t| t.to_dtype(DType::F32))
                .collect::<candle_core::Result<_>>()?;
            let full_refs: Vec<&Tensor> = full.iter().collect();
            let gyf = gy.to_dtype(dtype)?.to_dtype(DType::F32)?;
            let (yf, gf) = fwd_bwd_n(&full_refs, &gyf, apply)?;
            let what = format!("{dtype:?} {x_shape:?}");
            assert_close(&format!("{what} y"), &y, &yf, tol);
            for (i, (g, f)) in gs.iter().zip(&gf).enumerate() {
                assert_eq!(g.dtype(), dtype);
                assert_close(&format!("{what} grad {i}"), g, f, tol);
            }
        }
    }
    Ok(())
}

/// f64 takes the composition on CPU too (for gradient checks) and still matches PyTorch.
#[test]
fn f64_runs_the_composition() -> R<()> {
    let f = fixtures("linear");
    let (ts, gy) = inputs(&f, "rank4");
    let up: Vec<Tensor> = ts
        .iter()
        .map(|t| t.to_dtype(DType::F64))
        .collect::<candle_core::Result<_>>()?;
    let refs: Vec<&Tensor> = up.iter().collect();
    let (y, gs) = fwd_bwd_n(&refs, &gy.to_dtype(DType::F64)?, apply)?;
    assert_eq!(y.dtype(), DType::F64);
    assert_matches_fixture("f64", &f, "rank4", &y, &gs);
    Ok(())
}

/// Operands that need no gradient get none (the input gradient of the first layer is skipped),
/// and the others are unchanged.
#[test]
fn frozen_operands_get_no_gradient() -> R<()> {
    let (x, w, b) = (randn(&[7, 5])?, randn(&[3, 5])?, randn(&[3])?);
    let wv = Var::from_tensor(&w)?;
    let grads = linear(&x, &wv, Some(&b))?.sum_all()?.backward()?;
    assert!(grads.get(&x).is_none() && grads.get(&b).is_none());
    let gw = grads.get(&wv).ok_or("no weight gradient")?;
    // d sum(x wᵀ) / dw = column sums of x, for every output.
    let want = x.sum_keepdim(0)?.broadcast_as((3, 5))?;
    assert_close("frozen x: gw", gw, &want, 1e-6);
    let xv = Var::from_tensor(&x)?;
    let grads = linear(&xv, &w, None)?.sum_all()?.backward()?;
    assert!(grads.get(&w).is_none());
    let gx = grads.get(&xv).ok_or("no input gradient")?;
    let want = w.sum_keepdim(0)?.broadcast_as((7, 5))?;
    assert_close("frozen w: gx", gx, &want, 1e-6);
    Ok(())
}

/// Empty dimensions give what the composition gives (an empty output, or zeros for `in = 0`).
#[test]
fn empty_dimensions_follow_the_composition() -> R<()> {
    let dev = Device::Cpu;
    for (x_shape, (out, inp)) in [
        (&[0, 4][..], (3, 4)),
        (&[2, 0, 4], (3, 4)),
        (&[2, 4], (0, 4)),
    ] {
        let x = Tensor::zeros(x_shape, DType::F32, &dev)?;
        let w = Tensor::zeros((out, inp), DType::F32, &dev)?;
        let y = linear(&x, &w, None)?;
        let r = linear_reference(&x, &w, None)?;
        assert_eq!(y.dims(), r.dims());
    }
    Ok(())
}

#[test]
fn bad_input_is_an_error_naming_the_op() -> R<()> {
    let dev = Device::Cpu;
    let x = randn(&[2, 5])?;
    let w = randn(&[3, 5])?;
    let b = randn(&[3])?;
    let scalar = Tensor::new(1f32, &dev)?;
    type LinearFn = fn(&Tensor, &Tensor, Option<&Tensor>) -> candle_tricks::Result<Tensor>;
    for f in [linear as LinearFn, ops::linear_reference] {
        assert_err(
            "rank-0 input",
            f(&scalar, &w, None),
            &["linear", "input", "(…, 5)"],
        );
        assert_err(
            "1-D weight",
            f(&x, &b, None),
            &["linear", "weight", "(out, in)"],
        );
        let wide = randn(&[3, 6])?;
        assert_err(
            "in mismatch",
            f(&x, &wide, None),
            &["linear", "input", "(…, 6)"],
        );
        let b4 = randn(&[4])?;
        assert_err(
            "bias shape",
            f(&x, &w, Some(&b4)),
            &["linear", "bias", "(3)"],
        );
        let b16 = b.to_dtype(DType::F16)?;
        assert_err(
            "bias dtype",
            f(&x, &w, Some(&b16)),
            &["linear", "bias", "F16"],
        );
        let x16 = x.to_dtype(DType::F16)?;
        assert_err(
            "input dtype",
            f(&x16, &w, None),
            &["linear", "input", "F16"],
        );
    }
    Ok(())
}
