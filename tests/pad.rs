//! Padding modes (`pad2d`, `pad3d`) and the padding of `conv::Conv2d` (`padding_mode`, "same"):
//! our kernels against PyTorch fixtures (tests/fixtures/gen_pad.py), the composition, finite
//! differences, half precision and bad input.

use candle_core::{DType, Device, Module, Tensor};
use candle_tricks::conv::{Conv2d, Conv2dConfig, Padding};
use candle_tricks::ops::{
    pad2d, pad2d_reference, pad3d, pad3d_reference, with_backend, Backend, PadMode,
};

mod common;
use common::*;

/// Name, pad (F.pad order), mode: in sync with PAD_CASES in gen_pad.py.
const PAD_CASES: &[(&str, &[usize], PadMode)] = &[
    ("zeros_2d", &[1, 2, 3, 0], PadMode::Zeros),
    ("constant_2d", &[2, 1, 1, 2], PadMode::Constant(-1.5)),
    ("reflect_2d", &[2, 3, 4, 1], PadMode::Reflect),
    ("reflect_max_3d_input", &[4, 4, 3, 3], PadMode::Reflect),
    ("replicate_2d", &[3, 5, 2, 4], PadMode::Replicate),
    ("circular_2d", &[6, 2, 5, 1], PadMode::Circular),
    ("reflect_3d", &[2, 1, 3, 2, 1, 3], PadMode::Reflect),
    ("replicate_3d", &[1, 2, 2, 1, 3, 1], PadMode::Replicate),
    ("circular_3d", &[5, 1, 2, 4, 3, 0], PadMode::Circular),
    ("constant_3d", &[1, 0, 2, 1, 1, 2], PadMode::Constant(2.0)),
];

type PadFn = fn(&Tensor, &[usize], PadMode) -> candle_tricks::Result<Tensor>;

fn ours(x: &Tensor, p: &[usize], m: PadMode) -> candle_tricks::Result<Tensor> {
    match p.len() {
        4 => pad2d(x, [p[0], p[1], p[2], p[3]], m),
        _ => pad3d(x, [p[0], p[1], p[2], p[3], p[4], p[5]], m),
    }
}

fn reference(x: &Tensor, p: &[usize], m: PadMode) -> candle_tricks::Result<Tensor> {
    match p.len() {
        4 => pad2d_reference(x, [p[0], p[1], p[2], p[3]], m),
        _ => pad3d_reference(x, [p[0], p[1], p[2], p[3], p[4], p[5]], m),
    }
}

#[test]
fn pad_matches_pytorch_forward_and_gradient() -> R<()> {
    let f = fixtures("pad");
    let up = |t: &Tensor| t.to_dtype(DType::F64);
    for &(case, p, mode) in PAD_CASES {
        let [x, gy] = ["x", "gy"].map(|k| field(&f, case, k));
        let runs: [(&str, PadFn, Tensor, Tensor); 2] = [
            ("kernel", ours, x.clone(), gy.clone()),
            ("reference f64", reference, up(x)?, up(gy)?),
        ];
        for (label, op, x, gy) in runs {
            let (y, gx) = fwd_bwd1(&x, &gy, |x| op(x, p, mode))?;
            assert_close(&format!("{case} {label} y"), &y, field(&f, case, "y"), 1e-6);
            assert_close(
                &format!("{case} {label} gx"),
                &gx,
                field(&f, case, "gx"),
                1e-6,
            );
        }
        let (y, gx) = with_backend(Backend::Composition, || {
            fwd_bwd1(x, gy, |x| ours(x, p, mode))
        })?;
        assert_close(
            &format!("{case} composition y"),
            &y,
            field(&f, case, "y"),
            1e-6,
        );
        assert_close(
            &format!("{case} composition gx"),
            &gx,
            field(&f, case, "gx"),
            1e-6,
        );
    }
    Ok(())
}

#[test]
fn pad_half_precision_is_exact() -> R<()> {
    let f = fixtures("pad");
    for dtype in [DType::F16, DType::BF16] {
        for &(case, p, mode) in PAD_CASES {
            let [x, gy] = ["x", "gy"].map(|k| field(&f, case, k));
            let (xh, gyh) = (x.to_dtype(dtype)?, gy.to_dtype(dtype)?);
            let (y, gx) = fwd_bwd1(&xh, &gyh, |x| ours(x, p, mode))?;
            assert_eq!((y.dtype(), gx.dtype()), (dtype, dtype));
            let up = |t: &Tensor| t.to_dtype(DType::F32);
            let (y32, gx32) = fwd_bwd1(&up(&xh)?, &up(&gyh)?, |x| ours(x, p, mode))?;
            // A copy is exact; the gradient sums at most a few values.
            assert_close(&format!("{case} {dtype:?} y"), &y, &y32, 0.0);
            assert_close(&format!("{case} {dtype:?} gx"), &gx, &gx32, 1e-2);
        }
    }
    Ok(())
}

/// Several planes per task and a partial last task (the kernels split the work by whole
/// planes), every mode, against the composition.
#[test]
fn many_planes_match_the_composition() -> R<()> {
    let dev = Device::Cpu;
    let cases: [(&[usize], &[usize]); 2] = [
        (&[5, 40, 20, 30], &[1, 2, 3, 1]),
        (&[2, 9, 4, 30, 31], &[1, 1, 2, 0, 1, 2]),
    ];
    let modes = [
        PadMode::Zeros,
        PadMode::Constant(0.25),
        PadMode::Reflect,
        PadMode::Replicate,
        PadMode::Circular,
    ];
    for (xs, p) in cases {
        let x = Tensor::randn(0f32, 1., xs, &dev)?;
        for mode in modes {
            let gy = Tensor::randn(0f32, 1., ours(&x, p, mode)?.dims(), &dev)?;
            let (y, gx) = fwd_bwd1(&x, &gy, |x| ours(x, p, mode))?;
            let (yr, gxr) = fwd_bwd1(&x, &gy, |x| reference(x, p, mode))?;
            let label = format!("{xs:?} {p:?} {mode:?}");
            assert_close(&format!("{label} y"), &y, &yr, 0.0);
            assert_close(&format!("{label} gx"), &gx, &gxr, 1e-6);
        }
    }
    Ok(())
}

#[test]
fn pad_backward_matches_finite_differences() -> R<()> {
    let dev = Device::Cpu;
    let cases: [(&[usize], &[usize], PadMode); 5] = [
        (&[1, 2, 3, 4], &[2, 3, 2, 1], PadMode::Reflect),
        (&[2, 1, 3, 3], &[3, 1, 0, 4], PadMode::Replicate),
        (&[1, 2, 3, 4], &[4, 2, 3, 1], PadMode::Circular),
        (&[1, 2, 3, 4], &[1, 2, 2, 0], PadMode::Constant(0.5)),
        (&[1, 2, 2, 3], &[2, 1, 1, 0, 1, 1], PadMode::Reflect),
    ];
    for (xs, p, mode) in cases {
        let x = Tensor::randn(0f32, 1., xs, &dev)?;
        let gy = Tensor::randn(0f32, 1., ours(&x, p, mode)?.dims(), &dev)?;
        let (_, gx) = fwd_bwd1(&x, &gy, |x| ours(x, p, mode))?;
        let fd = finite_diff(&x, &gy, 1e-2, |x| ours(x, p, mode))?;
        assert_matches_fd(&format!("{xs:?} {p:?} {mode:?}"), &gx, &fd, 1e-3)?;
    }
    Ok(())
}

#[test]
fn pad_bad_input_is_an_error() -> R<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 4, 5), DType::F32, &dev)?;
    let cases: Vec<(&str, Tensor, [usize; 4], PadMode, &str)> = vec![
        (
            "reflect = height",
            x.clone(),
            [0, 0, 4, 0],
            PadMode::Reflect,
            "smaller than",
        ),
        (
            "reflect > width",
            x.clone(),
            [0, 6, 0, 0],
            PadMode::Reflect,
            "smaller than",
        ),
        (
            "circular > width",
            x.clone(),
            [6, 0, 0, 0],
            PadMode::Circular,
            "at most",
        ),
        (
            "rank 2",
            Tensor::zeros((4, 5), DType::F32, &dev)?,
            [1; 4],
            PadMode::Zeros,
            "(N, C, H, W)",
        ),
        (
            "rank 5",
            Tensor::zeros((1, 1, 1, 4, 5), DType::F32, &dev)?,
            [1; 4],
            PadMode::Zeros,
            "(N, C, H, W)",
        ),
        (
            "empty",
            Tensor::zeros((0, 3, 4, 5), DType::F32, &dev)?,
            [1; 4],
            PadMode::Zeros,
            "non-zero",
        ),
        (
            "integer",
            x.to_dtype(DType::U32)?,
            [1; 4],
            PadMode::Zeros,
            "dtype",
        ),
        (
            "overflow",
            x.clone(),
            [usize::MAX, 1, 0, 0],
            PadMode::Zeros,
            "overflows",
        ),
        (
            "huge",
            x.clone(),
            [1 << 40, 0, 1 << 40, 0],
            PadMode::Zeros,
            "2^47",
        ),
    ];
    for (what, x, p, mode, needle) in cases {
        assert_err(what, pad2d(&x, p, mode), &["pad2d", needle]);
        assert_err(
            what,
            pad2d_reference(&x, p, mode),
            &["pad2d_reference", needle],
        );
    }
    let r = pad3d(&x, [0, 0, 0, 0, 3, 0], PadMode::Reflect);
    assert_err("3d reflect = depth", r, &["pad3d", "smaller than"]);
    // Exactly the limits are fine.
    assert_eq!(
        pad2d(&x, [4, 4, 3, 3], PadMode::Reflect)?.dims(),
        &[2, 3, 10, 13]
    );
    assert_eq!(
        pad2d(&x, [5, 5, 4, 4], PadMode::Circular)?.dims(),
        &[2, 3, 12, 15]
    );
    Ok(())
}

/// Name, stride, padding, dilation, groups, mode: in sync with CONV_CASES in gen_pad.py.
const CONV_CASES: &[(&str, usize, Padding, usize, usize, PadMode)] = &[
    (
        "conv_reflect",
        1,
        Padding::Explicit(1),
        1,
        1,
        PadMode::Reflect,
    ),
    (
        "conv_replicate_s2",
        2,
        Padding::Explicit(1),
        1,
        1,
        PadMode::Replicate,
    ),
    (
        "conv_circular_g2",
        1,
        Padding::Explicit(2),
        2,
        2,
        PadMode::Circular,
    ),
    ("same_s1_k4", 1, Padding::Same, 1, 1, PadMode::Zeros),
    ("same_s1_d2", 1, Padding::Same, 2, 1, PadMode::Zeros),
    ("same_s1_reflect", 1, Padding::Same, 1, 1, PadMode::Reflect),
    ("tf_same_s2", 2, Padding::Same, 1, 1, PadMode::Zeros),
    ("tf_same_s2_k2_d2", 2, Padding::Same, 2, 1, PadMode::Zeros),
];

#[test]
fn conv2d_padding_modes_and_same_match_pytorch() -> R<()> {
    let f = fixtures("pad");
    for &(case, s, p, d, g, mode) in CONV_CASES {
        let cfg = Conv2dConfig::default()
            .with_stride(s)
            .with_padding(p)
            .with_dilation(d)
            .with_groups(g);
        let [x, w, b, gy] = ["x", "w", "b", "gy"].map(|k| field(&f, case, k));
        let (y, grads) = fwd_bwd_n(&[x, w, b], gy, |t| {
            let conv =
                Conv2d::new(t[1].clone(), Some(t[2].clone()), cfg)?.with_padding_mode(mode)?;
            conv.forward(&t[0])
        })?;
        assert_eq!(y.dims(), field(&f, case, "y").dims(), "{case}");
        for (t, what) in [&y].into_iter().chain(&grads).zip(["y", "gx", "gw", "gb"]) {
            assert_close(&format!("{case} {what}"), t, field(&f, case, what), 1e-5);
        }
    }
    Ok(())
}

#[test]
fn same_padding_keeps_or_divides_the_size() -> R<()> {
    let dev = Device::Cpu;
    for (n, k, s, d) in [(7, 4, 1, 1), (9, 3, 2, 1), (10, 2, 2, 2), (11, 5, 3, 1)] {
        let x = Tensor::zeros((1, 2, n, n + 1), DType::F32, &dev)?;
        let w = Tensor::zeros((3, 2, k, k), DType::F32, &dev)?;
        let cfg = Conv2dConfig::default().with_stride(s).with_dilation(d);
        for mode in [
            PadMode::Zeros,
            PadMode::Reflect,
            PadMode::Replicate,
            PadMode::Circular,
        ] {
            let conv = Conv2d::new(w.clone(), None, cfg)?.with_padding_mode(mode)?;
            let y = conv.forward(&x)?;
            assert_eq!(
                y.dims(),
                &[1, 3, n.div_ceil(s), (n + 1).div_ceil(s)],
                "{n} {k} {s} {d} {mode:?}"
            );
        }
    }
    let conv = Conv2d::new(
        Tensor::zeros((3, 2, 3, 3), DType::F32, &dev)?,
        None,
        Conv2dConfig::default(),
    )?;
    assert_err(
        "constant mode",
        conv.with_padding_mode(PadMode::Constant(1.0)),
        &["Conv2d", "padding_mode"],
    );
    Ok(())
}
