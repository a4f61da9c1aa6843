//! `ops::upsample_bilinear2d` against PyTorch's `F.interpolate(mode="bilinear")` (fixtures from
//! `tests/fixtures/gen_upsample.py`), its pixel-by-pixel reference, finite differences, half
//! precision and bad input.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_tricks::ops::{upsample_bilinear2d, upsample_bilinear2d_reference};
use common::*;

const CASES: [&str; 6] = ["x2", "odd", "ratio", "down", "mixed", "one"];

/// `(name, align_corners)` of every fixture case.
fn cases() -> Vec<(String, bool)> {
    let mut v = Vec::new();
    for c in CASES {
        v.push((format!("{c}_pc"), false));
        v.push((format!("{c}_ac"), true));
    }
    v
}

fn out_size(gy: &Tensor) -> (usize, usize) {
    let d = gy.dims();
    (d[2], d[3])
}

#[test]
fn matches_pytorch_forward_and_backward() -> R<()> {
    let f = fixtures("upsample");
    for (case, ac) in cases() {
        let (x, gy) = (field(&f, &case, "x"), field(&f, &case, "gy"));
        let (oh, ow) = out_size(gy);
        let (y, gx) = fwd_bwd1(x, gy, |x| upsample_bilinear2d(x, oh, ow, ac))?;
        assert_close(&format!("{case} y"), &y, field(&f, &case, "y"), 1e-5);
        assert_close(&format!("{case} gx"), &gx, field(&f, &case, "gx"), 1e-5);
        // The pixel-by-pixel reference agrees too (f64 autograd).
        let up = |t: &Tensor| t.to_dtype(DType::F64);
        let (yr, gxr) = fwd_bwd1(&up(x)?, &up(gy)?, |x| {
            upsample_bilinear2d_reference(x, oh, ow, ac)
        })?;
        assert_close(&format!("{case} ref y"), &yr, field(&f, &case, "y"), 1e-5);
        assert_close(
            &format!("{case} ref gx"),
            &gxr,
            field(&f, &case, "gx"),
            1e-5,
        );
    }
    Ok(())
}

#[test]
fn matches_candle_forward() -> R<()> {
    let x = Tensor::randn(0f32, 1., (2, 3, 7, 5), &Device::Cpu)?;
    for (oh, ow, ac) in [(14, 10, false), (13, 9, true), (4, 3, false), (21, 5, true)] {
        let y = upsample_bilinear2d(&x, oh, ow, ac)?;
        let c = x.upsample_bilinear2d(oh, ow, ac)?;
        assert_close(&format!("candle {oh}x{ow} {ac}"), &y, &c, 1e-5);
    }
    Ok(())
}

#[test]
fn backward_matches_finite_differences() -> R<()> {
    let f = fixtures("upsample");
    for case in ["odd_pc", "down_ac", "ratio_pc"] {
        let ac = case.ends_with("_ac");
        let (x, gy) = (field(&f, case, "x"), field(&f, case, "gy"));
        let (oh, ow) = out_size(gy);
        let op = |x: &Tensor| upsample_bilinear2d(x, oh, ow, ac);
        let (_, gx) = fwd_bwd1(x, gy, op)?;
        // The op is linear: central differences are exact up to f32 rounding.
        let fd = finite_diff(x, gy, 1e-2, op)?;
        assert_matches_fd(case, &gx, &fd, 1e-2)?;
    }
    Ok(())
}

#[test]
fn half_precision_matches_f32() -> R<()> {
    let f = fixtures("upsample");
    for dtype in [DType::F16, DType::BF16] {
        for (case, ac) in [("odd_pc", false), ("x2_ac", true), ("down_pc", false)] {
            let (x, gy) = (field(&f, case, "x"), field(&f, case, "gy"));
            let (oh, ow) = out_size(gy);
            let op = |x: &Tensor| upsample_bilinear2d(x, oh, ow, ac);
            let (xh, gyh) = (x.to_dtype(dtype)?, gy.to_dtype(dtype)?);
            let (y, gx) = fwd_bwd1(&xh, &gyh, op)?;
            assert_eq!((y.dtype(), gx.dtype()), (dtype, dtype), "{case}");
            let up = |t: &Tensor| t.to_dtype(DType::F32);
            let (yf, gxf) = fwd_bwd1(&up(&xh)?, &up(&gyh)?, op)?;
            let tol = if dtype == DType::F16 { 2e-3 } else { 1.6e-2 };
            assert_close(&format!("{case} {dtype:?} y"), &y, &yf, tol);
            assert_close(&format!("{case} {dtype:?} gx"), &gx, &gxf, tol);
        }
    }
    Ok(())
}

#[test]
fn bad_input_is_an_error() -> R<()> {
    let dev = Device::Cpu;
    let name = "upsample_bilinear2d";
    let x = Tensor::zeros((1, 2, 3, 4), DType::F32, &dev)?;
    let rank3 = Tensor::zeros((2, 3, 4), DType::F32, &dev)?;
    assert_err_names(
        upsample_bilinear2d(&rank3, 4, 4, false),
        name,
        "(B, C, H, W)",
    );
    let empty = Tensor::zeros((1, 2, 0, 4), DType::F32, &dev)?;
    assert_err_names(upsample_bilinear2d(&empty, 4, 4, false), name, "non-zero");
    assert_err_names(upsample_bilinear2d(&x, 0, 4, false), name, "output size");
    assert_err_names(upsample_bilinear2d(&x, 4, 0, true), name, "output size");
    let ints = Tensor::zeros((1, 2, 3, 4), DType::U32, &dev)?;
    assert_err_names(upsample_bilinear2d(&ints, 4, 4, false), name, "dtype");
    Ok(())
}
