//! Depthwise convolution: our fused kernel (forward, grad-input, grad-weight) against PyTorch
//! fixtures (tests/fixtures/gen_depthwise.py), candle's grouped convolution, finite differences,
//! half precision, the block under PyTorch names, and bad input.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::conv::{
    depthwise_conv2d as dw_block, depthwise_conv2d_no_bias, DepthwiseConv2d, Padding,
};
use candle_tricks::ops::{
    depthwise_conv1d, depthwise_conv1d_reference, depthwise_conv2d, depthwise_conv2d_reference,
    DepthwiseConv1dConfig, DepthwiseConv2dConfig,
};

mod common;
use common::*;

const CASES_2D: &[(&str, usize, Padding, usize)] = &[
    ("s1_k3", 1, Padding::Same, 1),
    ("s2_k3_odd", 2, Padding::Same, 1),
    ("s2_k3_asym", 2, Padding::Same, 1),
    ("s1_k4_asym", 1, Padding::Same, 1),
    ("d2_k3", 1, Padding::Same, 2),
    ("m2_k5", 1, Padding::Same, 1),
    ("valid_k5_s2", 2, Padding::Valid, 1),
    ("explicit1_m2_s2_d2", 2, Padding::Explicit(1), 2),
    ("s3_k3_m3", 3, Padding::Same, 1),
];

const CASES_1D: &[(&str, usize, Padding, usize)] = &[
    ("c1_k4_causal", 1, Padding::Explicit(3), 1),
    ("c1_k3_s2_m2_asym", 2, Padding::Same, 1),
    ("c1_k3_d2_valid", 1, Padding::Valid, 2),
];

fn cfg2(stride: usize, padding: Padding, dilation: usize) -> DepthwiseConv2dConfig {
    DepthwiseConv2dConfig::default()
        .with_stride(stride)
        .with_padding(padding)
        .with_dilation(dilation)
}

fn cfg1(stride: usize, padding: Padding, dilation: usize) -> DepthwiseConv1dConfig {
    DepthwiseConv1dConfig::default()
        .with_stride(stride)
        .with_padding(padding)
        .with_dilation(dilation)
}

/// Our op and its reference against the fixture's output and gradients.
fn check_against_fixture<C: Copy>(
    f: &Fixtures,
    case: &str,
    cfg: C,
    op: fn(&Tensor, &Tensor, C) -> candle_tricks::Result<Tensor>,
    reference: fn(&Tensor, &Tensor, C) -> candle_tricks::Result<Tensor>,
) -> R<()> {
    let (x, w, gy) = fixture_xwgy(f, case);
    let got = fwd_bwd2(x, w, gy, |x, w| op(x, w, cfg))?;
    assert_yg_close(case, &got, &fixture_yg(f, case), 1e-5);
    let r = reference(x, w, cfg)?;
    assert_close(&format!("{case} reference"), &r, field(f, case, "y"), 1e-5);
    Ok(())
}

#[test]
fn conv2d_matches_pytorch_forward_and_gradients() -> R<()> {
    let f = fixtures("depthwise");
    for &(case, s, p, d) in CASES_2D {
        let reference = depthwise_conv2d_reference;
        check_against_fixture(&f, case, cfg2(s, p, d), depthwise_conv2d, reference)?;
    }
    Ok(())
}

#[test]
fn conv1d_matches_pytorch_forward_and_gradients() -> R<()> {
    let f = fixtures("depthwise");
    for &(case, s, p, d) in CASES_1D {
        let reference = depthwise_conv1d_reference;
        check_against_fixture(&f, case, cfg1(s, p, d), depthwise_conv1d, reference)?;
    }
    Ok(())
}

#[test]
fn causal_conv1d_via_explicit_padding_and_narrow() -> R<()> {
    // Output t only sees inputs <= t: changing the last input changes only the last output.
    let dev = Device::Cpu;
    let (l, k) = (12usize, 4usize);
    let x = Tensor::randn(0f32, 1., (1, 3, l), &dev)?;
    let w = Tensor::randn(0f32, 1., (3, 1, k), &dev)?;
    let causal = |x: &Tensor| -> R<Tensor> {
        let cfg = DepthwiseConv1dConfig::default().with_padding(Padding::Explicit(k - 1));
        Ok(depthwise_conv1d(x, &w, cfg)?.narrow(2, 0, l)?)
    };
    let y = causal(&x)?;
    assert_eq!(y.dims(), &[1, 3, l]);
    let last = Tensor::cat(
        &[
            Tensor::zeros((1, 3, l - 1), DType::F32, &dev)?,
            Tensor::ones((1, 3, 1), DType::F32, &dev)?,
        ],
        2,
    )?;
    let y2 = causal(&x.broadcast_add(&last)?)?;
    let diff = (&y2 - &y)?
        .abs()?
        .sum_keepdim(1)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    assert!(diff[..l - 1].iter().all(|&v| v == 0.0), "{diff:?}");
    assert!(diff[l - 1] > 0.0);
    Ok(())
}

/// Random shapes and configs (wide rows exercise the vectorised loops) against the tap-sum
/// reference, forward and both gradients (candle autograd through the reference in f64).
#[test]
fn random_configs_match_the_reference() -> R<()> {
    let dev = Device::Cpu;
    let configs = [
        ((2, 3, 21, 37), 3, 1, 1, Padding::Same, 1),
        ((1, 4, 19, 40), 3, 2, 2, Padding::Same, 1),
        ((2, 2, 17, 33), 5, 1, 2, Padding::Explicit(2), 2),
        ((1, 3, 16, 35), 7, 2, 1, Padding::Same, 1),
        ((1, 2, 9, 50), 1, 1, 1, Padding::Valid, 1),
        ((2, 2, 12, 45), 2, 1, 2, Padding::Same, 1),
        ((1, 2, 14, 29), 3, 3, 1, Padding::Explicit(3), 3),
        ((1, 2, 9, 16), 3, 1, 1, Padding::Same, 1),
        ((1, 2, 7, 24), 5, 2, 1, Padding::Same, 1),
    ];
    for ((b, c, h, wd), k, m, s, p, d) in configs {
        let cfg = cfg2(s, p, d);
        let x = Tensor::randn(0f32, 1., (b, c, h, wd), &dev)?;
        let w = Tensor::randn(0f32, 1., (c * m, 1, k, k), &dev)?;
        let gy = Tensor::randn(0f32, 1., depthwise_conv2d(&x, &w, cfg)?.dims(), &dev)?;
        let what = format!("{:?} k{k} m{m} s{s} {p:?} d{d}", (b, c, h, wd));
        let op = |x: &Tensor, w: &Tensor| depthwise_conv2d(x, w, cfg);
        let reference = |x: &Tensor, w: &Tensor| depthwise_conv2d_reference(x, w, cfg);
        check_vs_f64_reference(&what, (&x, &w, &gy), 1e-5, op, reference)?;
    }
    Ok(())
}

#[test]
fn half_precision_matches_f32() -> R<()> {
    let f = fixtures("depthwise");
    for (dtype, tol) in [(DType::F16, 5e-3), (DType::BF16, 3e-2)] {
        for &(case, s, p, d) in CASES_2D {
            let cfg = cfg2(s, p, d);
            let op = |x: &Tensor, w: &Tensor| depthwise_conv2d(x, w, cfg);
            check_half_vs_f32(case, fixture_xwgy(&f, case), dtype, tol, op)?;
        }
        let (case, s, p, d) = CASES_1D[1];
        let cfg = cfg1(s, p, d);
        let (x, w, _) = fixture_xwgy(&f, case);
        let y = depthwise_conv1d(&x.to_dtype(dtype)?, &w.to_dtype(dtype)?, cfg)?;
        let want = field(&f, case, "y");
        assert_close(&format!("{case} {dtype:?}"), &y, want, 4.0 * tol);
    }
    Ok(())
}

/// Central finite differences of `L = sum(y * gy)` against our backward, element by element.
#[test]
fn backward_matches_finite_differences() -> R<()> {
    let dev = Device::Cpu;
    for (cfg, k, m) in [
        (cfg2(2, Padding::Same, 1), 3, 2),
        (cfg2(1, Padding::Same, 2), 3, 1),
        (cfg2(1, Padding::Same, 1), 4, 1),
    ] {
        let x = Tensor::randn(0f32, 1., (2, 2, 6, 5), &dev)?;
        let w = Tensor::randn(0f32, 1., (2 * m, 1, k, k), &dev)?;
        let gy = Tensor::randn(0f32, 1., depthwise_conv2d(&x, &w, cfg)?.dims(), &dev)?;
        let op = |x: &Tensor, w: &Tensor| depthwise_conv2d(x, w, cfg);
        check_fd2(&format!("{cfg:?}"), (&x, &w, &gy), 1e-2, 1e-2, op)?;
    }
    Ok(())
}

#[test]
fn block_loads_pytorch_conv2d_weights() -> R<()> {
    let f = fixtures("depthwise");
    let vb = block_vb(&f, "dw");
    let cfg = cfg2(2, Padding::Explicit(1), 1);
    let block = dw_block(4, 2, 3, cfg, vb.pp("dw"))?;
    assert_eq!(block.out_channels(), 8);
    assert_eq!(block.kernel_size(), (3, 3));
    assert_eq!(block.config(), cfg);
    let y = block.forward(field(&f, "block", "x"))?;
    assert_close("block y", &y, field(&f, "block", "y"), 1e-5);

    // Without bias: the output differs exactly by the bias.
    let nb = DepthwiseConv2d::new(block.weight().clone(), None, cfg)?;
    let diff = (&y - nb.forward(field(&f, "block", "x"))?)?;
    let bias = block.bias().ok_or("bias")?.reshape((1, 8, 1, 1))?;
    assert_close(
        "bias",
        &diff,
        &bias.broadcast_as(diff.dims())?.contiguous()?,
        1e-6,
    );
    Ok(())
}

#[test]
fn block_init_follows_pytorch_bounds() -> R<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let block = dw_block(16, 2, 5, DepthwiseConv2dConfig::default(), vb.pp("a"))?;
    let bound = 1.0 / 5.0; // 1 / sqrt(fan_in), fan_in = 1 * 5 * 5
    for t in [block.weight(), block.bias().ok_or("bias")?] {
        let max = t.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(max <= bound && max > 0.5 * bound, "{max}");
    }
    assert_eq!(block.weight().dims(), &[32, 1, 5, 5]);
    let nb = depthwise_conv2d_no_bias(16, 1, 3, DepthwiseConv2dConfig::default(), vb.pp("b"))?;
    assert!(nb.bias().is_none());
    Ok(())
}

#[test]
fn bad_input_is_an_error_naming_the_op() -> R<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 4, 8, 8), DType::F32, &dev)?;
    let w = Tensor::zeros((4, 1, 3, 3), DType::F32, &dev)?;
    let ok = DepthwiseConv2dConfig::default();
    let z = |s: &[usize], dt: DType| Tensor::zeros(s, dt, &dev).unwrap();
    let f32_ = DType::F32;
    let cases: Vec<(&str, Tensor, Tensor, DepthwiseConv2dConfig)> = vec![
        ("input rank 3", z(&[4, 8, 8], f32_), w.clone(), ok),
        ("weight rank 3", x.clone(), z(&[4, 3, 3], f32_), ok),
        (
            "weight dim0 not multiple of C",
            x.clone(),
            z(&[6, 1, 3, 3], f32_),
            ok,
        ),
        ("weight dim1 != 1", x.clone(), z(&[4, 2, 3, 3], f32_), ok),
        (
            "weight fewer channels than C",
            x.clone(),
            z(&[2, 1, 3, 3], f32_),
            ok,
        ),
        (
            "kernel larger than input",
            x.clone(),
            z(&[4, 1, 9, 9], f32_),
            ok.with_padding(Padding::Valid),
        ),
        (
            "kernel larger than padded input",
            z(&[1, 4, 2, 2], f32_),
            w.clone(),
            ok.with_padding(Padding::Explicit(0)),
        ),
        (
            "dilated kernel too large",
            z(&[1, 4, 4, 4], f32_),
            w.clone(),
            ok.with_padding(Padding::Valid).with_dilation(2),
        ),
        ("zero batch", z(&[0, 4, 8, 8], f32_), w.clone(), ok),
        ("zero height", z(&[1, 4, 0, 8], f32_), w.clone(), ok),
        (
            "zero channels",
            z(&[1, 0, 8, 8], f32_),
            z(&[0, 1, 3, 3], f32_),
            ok,
        ),
        ("zero kernel", x.clone(), z(&[4, 1, 0, 3], f32_), ok),
        ("stride 0", x.clone(), w.clone(), ok.with_stride(0)),
        ("dilation 0", x.clone(), w.clone(), ok.with_dilation(0)),
        ("mixed dtypes", x.clone(), w.to_dtype(DType::F16)?, ok),
        (
            "integer dtype",
            x.to_dtype(DType::U32)?,
            w.to_dtype(DType::U32)?,
            ok,
        ),
    ];
    for (what, x, w, cfg) in cases {
        assert_err(what, depthwise_conv2d(&x, &w, cfg), &["depthwise_conv2d"]);
        let r = depthwise_conv2d_reference(&x, &w, cfg);
        assert_err(&format!("{what} (reference)"), r, &["depthwise_conv2d"]);
    }
    // f64 is for the reference only (gradient checks); the kernel takes f32, f16 and bf16.
    let r = depthwise_conv2d(&x.to_dtype(DType::F64)?, &w.to_dtype(DType::F64)?, ok);
    assert_err("f64", r, &["depthwise_conv2d"]);

    let x1 = Tensor::zeros((2, 4, 8), DType::F32, &dev)?;
    let w1 = Tensor::zeros((4, 1, 3), DType::F32, &dev)?;
    let ok1 = DepthwiseConv1dConfig::default();
    let cases1: Vec<(&str, Tensor, Tensor, DepthwiseConv1dConfig)> = vec![
        ("input rank 4", x.clone(), w1.clone(), ok1),
        (
            "weight dim0 not multiple of C",
            x1.clone(),
            z(&[5, 1, 3], f32_),
            ok1,
        ),
        (
            "kernel larger than input",
            x1.clone(),
            z(&[4, 1, 9], f32_),
            ok1.with_padding(Padding::Valid),
        ),
        ("zero length", z(&[2, 4, 0], f32_), w1.clone(), ok1),
        ("stride 0", x1.clone(), w1.clone(), ok1.with_stride(0)),
        ("dilation 0", x1.clone(), w1.clone(), ok1.with_dilation(0)),
        ("mixed dtypes", x1.clone(), w1.to_dtype(DType::BF16)?, ok1),
    ];
    for (what, x, w, cfg) in cases1 {
        assert_err(what, depthwise_conv1d(&x, &w, cfg), &["depthwise_conv1d"]);
    }

    // The block: bad weights, bias, config and constructor arguments; bad input at forward.
    let bad_new: Vec<(&str, Tensor, Option<Tensor>, DepthwiseConv2dConfig)> = vec![
        ("weight rank", z(&[4, 3, 3], f32_), None, ok),
        ("weight dim1", z(&[4, 2, 3, 3], f32_), None, ok),
        ("bias shape", w.clone(), Some(z(&[5], f32_)), ok),
        ("bias dtype", w.clone(), Some(z(&[4], DType::F16)), ok),
        ("stride 0", w.clone(), None, ok.with_stride(0)),
    ];
    for (what, w, b, cfg) in bad_new {
        let r = DepthwiseConv2d::new(w, b, cfg);
        assert_err(&format!("block {what}"), r, &["DepthwiseConv2d"]);
    }
    let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
    for (c, m, k) in [(0, 1, 3), (4, 0, 3), (4, 1, 0)] {
        let r = dw_block(c, m, k, ok, vb.clone());
        assert_err("block args", r, &["DepthwiseConv2d"]);
    }
    let block = DepthwiseConv2d::new(w.clone(), None, ok)?;
    let r = block.forward(&z(&[2, 3, 8, 8], f32_));
    assert_err("forward C mismatch", r, &["depthwise_conv2d"]);
    Ok(())
}

/// The 1-D op with a channel multiplier and dilation (no PyTorch fixture covers the pair) against
/// finite differences, and the reference composition against the kernel: candle 0.11's grouped
/// `conv1d` backward is wrong with a multiplier, so the reference goes through `conv2d`.
#[test]
fn conv1d_multiplier_and_dilation_match_finite_differences() -> R<()> {
    let dev = Device::Cpu;
    for (stride, dilation, padding) in [(1, 2, Padding::Same), (2, 3, Padding::Explicit(2))] {
        let cfg = DepthwiseConv1dConfig {
            stride,
            padding,
            dilation,
        };
        let x = Tensor::randn(0f32, 1., (2, 3, 13), &dev)?;
        let w = Tensor::randn(0f32, 1., (6, 1, 3), &dev)?;
        let gy = Tensor::randn(0f32, 1., depthwise_conv1d(&x, &w, cfg)?.dims(), &dev)?;
        let op = |x: &Tensor, w: &Tensor| depthwise_conv1d(x, w, cfg);
        check_fd2(&format!("{cfg:?}"), (&x, &w, &gy), 1e-2, 1e-2, op)?;
        let kernel = fwd_bwd2(&x, &w, &gy, op)?;
        let reference = fwd_bwd2(&x, &w, &gy, |x, w| depthwise_conv1d_reference(x, w, cfg))?;
        assert_close("reference y", &reference.0, &kernel.0, 1e-5);
        assert_close("reference gx", &reference.1, &kernel.1, 1e-5);
        assert_close("reference gw", &reference.2, &kernel.2, 1e-5);
    }
    Ok(())
}
