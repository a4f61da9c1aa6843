//! 2-D convolution: our op (forward, grad-input, grad-weight; dense, grouped and depthwise paths)
//! against PyTorch fixtures (tests/fixtures/gen_conv2d.py), candle's convolution, finite
//! differences, half precision, the block under PyTorch names, and bad input.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::conv::{conv2d as conv2d_block, conv2d_no_bias, Conv2d, Padding};
use candle_tricks::ops::{conv2d, conv2d_reference, Conv2dConfig};

mod common;
use common::*;

fn cfg(stride: usize, padding: Padding, dilation: usize, groups: usize) -> Conv2dConfig {
    Conv2dConfig::default()
        .with_stride(stride)
        .with_padding(padding)
        .with_dilation(dilation)
        .with_groups(groups)
}

/// Name, stride, padding, dilation, groups: in sync with CASES in gen_conv2d.py.
const CASES: &[(&str, usize, Padding, usize, usize)] = &[
    ("k3_same", 1, Padding::Same, 1, 1),
    ("k3_s2_explicit1", 2, Padding::Explicit(1), 1, 1),
    ("s2_same_asym", 2, Padding::Same, 1, 1),
    ("k2_same_asym", 1, Padding::Same, 1, 1),
    ("d2", 1, Padding::Same, 2, 1),
    ("g2", 1, Padding::Explicit(1), 1, 2),
    ("dw", 1, Padding::Explicit(1), 1, 5),
    ("dw_m2_s2", 2, Padding::Explicit(1), 1, 3),
    ("valid_k5", 1, Padding::Valid, 1, 1),
    ("k1", 1, Padding::Valid, 1, 1),
    ("k1_s2", 2, Padding::Explicit(0), 1, 1),
    ("k7_s2_stem", 2, Padding::Explicit(3), 1, 1),
    ("k13_rect", 1, Padding::Same, 1, 1),
    ("tiles", 1, Padding::Explicit(1), 1, 1),
];

#[test]
fn matches_pytorch_forward_and_gradients() -> R<()> {
    let f = fixtures("conv2d");
    for &(case, s, p, d, g) in CASES {
        let cfg = cfg(s, p, d, g);
        let (x, w, gy) = fixture_xwgy(&f, case);
        let got = fwd_bwd2(x, w, gy, |x, w| conv2d(x, w, cfg))?;
        assert_yg_close(case, &got, &fixture_yg(&f, case), 1e-5);
    }
    Ok(())
}

/// The composition is itself checked against PyTorch (it is the tests' and benches' baseline),
/// forward and through candle autograd.
#[test]
fn reference_matches_pytorch() -> R<()> {
    let f = fixtures("conv2d");
    for &(case, s, p, d, g) in CASES {
        let cfg = cfg(s, p, d, g);
        let (x, w, gy) = fixture_xwgy(&f, case);
        let up = |t: &Tensor| t.to_dtype(DType::F64);
        let got = fwd_bwd2(&up(x)?, &up(w)?, &up(gy)?, |x, w| {
            conv2d_reference(x, w, cfg)
        })?;
        assert_yg_close(
            &format!("{case} reference"),
            &got,
            &fixture_yg(&f, case),
            1e-5,
        );
    }
    Ok(())
}

/// Random shapes and configs, with several tiles and depth slabs per volume, against candle
/// autograd through the composition in f64.
#[test]
fn random_configs_match_reference() -> R<()> {
    let dev = Device::Cpu;
    // (x shape, Cout, kernel, stride, padding, dilation, groups)
    let configs = [
        ((2, 6, 13, 17), 8, (3, 3), 1, Padding::Same, 1, 1),
        ((1, 8, 10, 23), 4, (3, 3), 2, Padding::Same, 1, 2),
        ((2, 4, 9, 12), 6, (2, 4), 1, Padding::Same, 2, 1),
        ((1, 6, 11, 20), 12, (3, 3), 1, Padding::Explicit(1), 1, 6),
        ((2, 5, 9, 31), 10, (5, 3), 2, Padding::Same, 1, 5),
        ((1, 4, 7, 9), 4, (2, 2), 3, Padding::Valid, 1, 1),
        ((3, 32, 20, 20), 16, (3, 3), 1, Padding::Explicit(1), 1, 1),
        ((2, 24, 16, 16), 40, (1, 1), 1, Padding::Valid, 1, 1),
    ];
    for ((b, c, h, wd), cout, (kh, kw), s, p, dl, g) in configs {
        let cfg = cfg(s, p, dl, g);
        let x = Tensor::randn(0f32, 1., (b, c, h, wd), &dev)?;
        let w = Tensor::randn(0f32, 1., (cout, c / g, kh, kw), &dev)?;
        let gy = Tensor::randn(0f32, 1., conv2d(&x, &w, cfg)?.dims(), &dev)?;
        let what = format!("{:?} k{:?} s{s} {p:?} d{dl} g{g}", (b, c, h, wd), (kh, kw));
        let op = |x: &Tensor, w: &Tensor| conv2d(x, w, cfg);
        let reference = |x: &Tensor, w: &Tensor| conv2d_reference(x, w, cfg);
        check_vs_f64_reference(&what, (&x, &w, &gy), 1e-5, op, reference)?;
    }
    Ok(())
}

#[test]
fn half_precision_matches_f32() -> R<()> {
    let f = fixtures("conv2d");
    for (dtype, tol) in [(DType::F16, 5e-3), (DType::BF16, 3e-2)] {
        for &(case, s, p, d, g) in CASES {
            let cfg = cfg(s, p, d, g);
            let op = |x: &Tensor, w: &Tensor| conv2d(x, w, cfg);
            let y = check_half_vs_f32(case, fixture_xwgy(&f, case), dtype, tol, op)?;
            // And against PyTorch's f32 result, with the input rounding on top.
            let want = field(&f, case, "y");
            assert_close(&format!("{case} {dtype:?} y vs torch"), &y, want, 4.0 * tol);
        }
    }
    Ok(())
}

/// Central finite differences of `L = sum(y * gy)` against our backward, element by element,
/// on tiny dense, grouped and depthwise cases.
#[test]
fn backward_matches_finite_differences() -> R<()> {
    let dev = Device::Cpu;
    // (x shape, Cout, kernel, config)
    let cases = [
        ((1, 2, 5, 4), 2, 3, cfg(2, Padding::Same, 1, 1)),
        ((2, 2, 5, 6), 2, 2, cfg(1, Padding::Same, 2, 2)),
        ((1, 2, 4, 5), 4, 3, cfg(1, Padding::Explicit(1), 1, 2)),
    ];
    for ((b, c, h, wd), cout, k, cfg) in cases {
        let x = Tensor::randn(0f32, 1., (b, c, h, wd), &dev)?;
        let w = Tensor::randn(0f32, 1., (cout, c / cfg.groups, k, k), &dev)?;
        let gy = Tensor::randn(0f32, 1., conv2d(&x, &w, cfg)?.dims(), &dev)?;
        let op = |x: &Tensor, w: &Tensor| conv2d(x, w, cfg);
        check_fd2(&format!("{cfg:?}"), (&x, &w, &gy), 1e-2, 1e-2, op)?;
    }
    Ok(())
}

#[test]
fn block_loads_pytorch_conv2d_weights() -> R<()> {
    let f = fixtures("conv2d");
    let vb = block_vb(&f, "c");
    let cfg = cfg(2, Padding::Explicit(1), 1, 2);
    let block = conv2d_block(4, 6, 3, cfg, vb.pp("c"))?;
    assert_eq!(block.in_channels(), 4);
    assert_eq!(block.out_channels(), 6);
    assert_eq!(block.kernel_size(), (3, 3));
    assert_eq!(block.config(), cfg);
    let x = field(&f, "block", "x");
    let y = block.forward(x)?;
    assert_close("block y", &y, field(&f, "block", "y"), 1e-5);

    // Without bias: the output differs exactly by the bias.
    let nb = Conv2d::new(block.weight().clone(), None, cfg)?;
    let diff = (&y - nb.forward(x)?)?;
    let bias = block.bias().ok_or("bias")?.reshape((1, 6, 1, 1))?;
    assert_close(
        "bias",
        &diff,
        &bias.broadcast_as(diff.dims())?.contiguous()?,
        1e-6,
    );

    // A wrongly shaped checkpoint is refused by the VarBuilder's shape check.
    let vb = block_vb(&f, "c");
    assert!(conv2d_block(4, 6, 5, cfg, vb.pp("c")).is_err());
    Ok(())
}

#[test]
fn block_init_follows_pytorch_bounds_and_trains() -> R<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let block = conv2d_block(4, 6, 3, Conv2dConfig::default().with_groups(2), vb.pp("a"))?;
    let bound = 1.0 / (2.0f32 * 9.0).sqrt(); // 1 / sqrt(fan_in), fan_in = Cin/groups * 3^2
    for t in [block.weight(), block.bias().ok_or("bias")?] {
        let max = t.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(max <= bound && max > 0.3 * bound, "{max}");
    }
    assert_eq!(block.weight().dims(), &[6, 2, 3, 3]);
    let other = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu);
    let nb = conv2d_no_bias(4, 4, 1, Conv2dConfig::default(), other)?;
    assert!(nb.bias().is_none());

    // Gradients reach every variable of the VarMap (weight through our op, bias via candle).
    let x = Tensor::randn(0f32, 1., (2, 4, 5, 4), &Device::Cpu)?;
    let loss = block.forward(&x)?.sqr()?.sum_all()?;
    let grads = loss.backward()?;
    for var in varmap.all_vars() {
        let g = grads.get(var.as_tensor()).ok_or("missing gradient")?;
        assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
    }
    Ok(())
}

#[test]
fn non_contiguous_inputs_are_accepted() -> R<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (2, 5, 6, 4), &dev)?.transpose(2, 3)?;
    let w = Tensor::randn(0f32, 1., (5, 3, 3, 3), &dev)?.transpose(0, 1)?;
    let c = Conv2dConfig::default();
    let y = conv2d(&x, &w, c)?;
    let r = conv2d_reference(&x.contiguous()?, &w.contiguous()?, c)?;
    assert_close("transposed", &y, &r, 1e-5);
    Ok(())
}

#[test]
fn bad_input_is_an_error_naming_the_op() -> R<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 4, 6, 6), DType::F32, &dev)?;
    let w = Tensor::zeros((4, 4, 3, 3), DType::F32, &dev)?;
    let ok = Conv2dConfig::default();
    let z = |s: &[usize], dt: DType| Tensor::zeros(s, dt, &dev);
    let f = DType::F32;
    let valid = ok.with_padding(Padding::Valid);
    let cases: Vec<(&str, Tensor, Tensor, Conv2dConfig)> = vec![
        ("input rank 5", z(&[1, 4, 6, 6, 6], f)?, w.clone(), ok),
        ("input rank 3", z(&[4, 6, 6], f)?, w.clone(), ok),
        ("weight rank 5", x.clone(), z(&[4, 4, 3, 3, 3], f)?, ok),
        (
            "Cin not divisible by groups",
            x.clone(),
            z(&[3, 1, 3, 3], f)?,
            ok.with_groups(3),
        ),
        (
            "w.dim(1) != Cin/groups",
            x.clone(),
            z(&[4, 3, 3, 3], f)?,
            ok,
        ),
        (
            "Cout not divisible by groups",
            x.clone(),
            z(&[3, 2, 3, 3], f)?,
            ok.with_groups(2),
        ),
        (
            "kernel larger than input",
            x.clone(),
            z(&[4, 4, 7, 3], f)?,
            valid,
        ),
        (
            "kernel larger than padded input",
            z(&[1, 4, 2, 2], f)?,
            w.clone(),
            ok.with_padding(Padding::Explicit(0)),
        ),
        ("zero batch", z(&[0, 4, 6, 6], f)?, w.clone(), ok),
        ("zero width", z(&[1, 4, 6, 0], f)?, w.clone(), ok),
        ("zero output channels", x.clone(), z(&[0, 4, 3, 3], f)?, ok),
        ("zero kernel", x.clone(), z(&[4, 4, 3, 0], f)?, ok),
        ("stride 0", x.clone(), w.clone(), ok.with_stride(0)),
        ("dilation 0", x.clone(), w.clone(), ok.with_dilation(0)),
        ("groups 0", x.clone(), w.clone(), ok.with_groups(0)),
        ("mixed dtypes", x.clone(), w.to_dtype(DType::F16)?, ok),
        (
            "integer dtype",
            x.to_dtype(DType::U32)?,
            w.to_dtype(DType::U32)?,
            ok,
        ),
    ];
    for (what, x, w, cfg) in cases {
        assert_err(what, conv2d(&x, &w, cfg), &["conv2d"]);
        let r = conv2d_reference(&x, &w, cfg);
        assert_err(&format!("{what} (reference)"), r, &["conv2d_reference"]);
    }
    // f64 (for gradient checks of the blocks) runs candle's convolution.
    let x64 = Tensor::randn(0f64, 1., (2, 4, 6, 6), &dev)?;
    let w64 = Tensor::randn(0f64, 1., (4, 4, 3, 3), &dev)?;
    let d = (conv2d(&x64, &w64, ok)? - conv2d_reference(&x64, &w64, ok)?)?;
    assert_eq!(d.abs()?.max_all()?.to_scalar::<f64>()?, 0.0);

    let bad_new: Vec<(&str, Tensor, Option<Tensor>, Conv2dConfig)> = vec![
        ("weight rank", z(&[4, 4, 3], f)?, None, ok),
        ("empty weight", z(&[4, 0, 3, 3], f)?, None, ok),
        ("integer weight", w.to_dtype(DType::U8)?, None, ok),
        (
            "Cout not divisible by groups",
            z(&[3, 2, 3, 3], f)?,
            None,
            ok.with_groups(2),
        ),
        ("bias shape", w.clone(), Some(z(&[5], f)?), ok),
        ("bias dtype", w.clone(), Some(z(&[4], DType::F16)?), ok),
        ("stride 0", w.clone(), None, ok.with_stride(0)),
    ];
    for (what, w, b, cfg) in bad_new {
        assert_err(
            &format!("block {what}"),
            Conv2d::new(w, b, cfg),
            &["Conv2d"],
        );
    }
    let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
    for (cin, cout, k, groups) in [(0, 4, 3, 1), (4, 0, 3, 1), (4, 4, 0, 1), (4, 6, 3, 3)] {
        let cfg = ok.with_groups(groups);
        let r = conv2d_block(cin, cout, k, cfg, vb.clone());
        assert_err(&format!("({cin}, {cout}, {k}, {groups})"), r, &["Conv2d"]);
    }
    let block = Conv2d::new(w.clone(), None, ok)?;
    let r = block.forward(&z(&[2, 3, 6, 6], f)?);
    assert_err("forward Cin mismatch", r, &["conv2d"]);
    Ok(())
}
