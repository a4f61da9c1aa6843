//! Pixel shuffle / unshuffle against PyTorch (tests/fixtures/gen_pixel_shuffle.py): outputs and
//! input gradients at ranks 3–5, the round trip, and bad input.

use candle_core::{DType, Device, Module, Tensor};
use candle_tricks::conv::{pixel_shuffle, pixel_unshuffle, PixelShuffle, PixelUnshuffle};

mod common;
use common::*;

#[test]
fn matches_torch_forward_and_backward() -> R<()> {
    let f = fixtures("pixel_shuffle");
    let cases: [(&str, bool, usize); 5] = [
        ("shuffle.r2", true, 2),
        ("shuffle.r3_rank3", true, 3),
        ("shuffle.r2_rank5", true, 2),
        ("unshuffle.r2", false, 2),
        ("unshuffle.r3_rank3", false, 3),
    ];
    for (case, up, r) in cases {
        let (x, gy) = (field(&f, case, "x"), field(&f, case, "gy"));
        let (y, gx) = if up {
            fwd_bwd1(x, gy, |x| PixelShuffle(r).forward(x))?
        } else {
            fwd_bwd1(x, gy, |x| PixelUnshuffle(r).forward(x))?
        };
        // Pure data movement: exact.
        assert_close(&format!("{case} y"), &y, field(&f, case, "y"), 0.0);
        assert_close(&format!("{case} gx"), &gx, field(&f, case, "gx"), 0.0);
    }
    Ok(())
}

#[test]
fn unshuffle_inverts_shuffle() -> R<()> {
    let x = Tensor::randn(0f32, 1., (2, 12, 3, 4), &Device::Cpu)?;
    let back = pixel_unshuffle(&pixel_shuffle(&x, 2)?, 2)?;
    assert_close("round trip", &back, &x, 0.0);
    Ok(())
}

#[test]
fn bad_input_is_an_error() -> R<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 6, 2, 2), DType::F32, &dev)?;
    assert_err_names(pixel_shuffle(&x, 2), "pixel_shuffle", "divisible");
    assert_err_names(pixel_shuffle(&x, 0), "pixel_shuffle", "factor");
    assert_err_names(pixel_shuffle(&x, usize::MAX), "pixel_shuffle", "overflows");
    assert_err_names(
        pixel_shuffle(&Tensor::zeros((4, 2), DType::F32, &dev)?, 2),
        "pixel_shuffle",
        "input",
    );
    assert_err_names(
        pixel_unshuffle(&Tensor::zeros((1, 1, 3, 4), DType::F32, &dev)?, 2),
        "pixel_unshuffle",
        "divisible",
    );
    Ok(())
}
