//! Transposed convolution, 2-D and 3-D: our op (forward, input, weight and bias gradients) against
//! PyTorch fixtures (tests/fixtures/gen_conv_transpose.py), the plain-candle composition, finite
//! differences, half precision, the layers under PyTorch names, and bad input.

use candle_core::{DType, Device, Tensor};
use candle_tricks::ops::{
    conv_transpose2d, conv_transpose2d_reference, conv_transpose3d, conv_transpose3d_reference,
    with_backend, Backend, ConvTransposeConfig,
};

mod common;
use common::*;

type Op =
    fn(&Tensor, &Tensor, Option<&Tensor>, &ConvTransposeConfig) -> candle_tricks::Result<Tensor>;

fn cfg(s: usize, p: usize, op: usize, d: usize, g: usize) -> ConvTransposeConfig {
    ConvTransposeConfig::default()
        .with_stride(s)
        .with_padding(p)
        .with_output_padding(op)
        .with_dilation(d)
        .with_groups(g)
}

/// Name, stride, padding, output_padding, dilation, groups: in sync with gen_conv_transpose.py.
const CASES: &[(&str, usize, usize, usize, usize, usize)] = &[
    ("k2_s2", 2, 0, 0, 1, 1),
    ("k4_s2_p1", 2, 1, 0, 1, 1),
    ("k3_s2_p1_op1", 2, 1, 1, 1, 1),
    ("k3_s3_op2", 3, 0, 2, 1, 1),
    ("d2_op1", 1, 1, 1, 2, 1),
    ("g2_s2", 2, 1, 0, 1, 2),
    ("depthwise_s2", 2, 1, 1, 1, 4),
    ("p2_crop", 1, 2, 0, 1, 1),
    ("k1", 1, 0, 0, 1, 1),
    ("k32_s2_odd", 2, 1, 1, 1, 1),
    ("tiles", 2, 1, 1, 1, 1),
    ("3d_k2_s2", 2, 0, 0, 1, 1),
    ("3d_k3_s2_op1_g2", 2, 1, 1, 1, 2),
    ("3d_d2", 1, 1, 0, 2, 1),
    ("3d_s3_k2", 3, 0, 1, 1, 1),
    ("patch_g3_odd", 2, 0, 0, 1, 3),
    ("patch_k3", 3, 0, 0, 1, 1),
    ("patch_k4_tiles", 4, 0, 0, 1, 1),
    ("patch_k5_h1", 5, 0, 0, 1, 1),
    ("patch_depthwise", 2, 0, 0, 1, 4),
    ("3d_patch_g2", 2, 0, 0, 1, 2),
];

fn ops(x: &Tensor) -> (Op, Op) {
    if x.rank() == 4 {
        (conv_transpose2d, conv_transpose2d_reference)
    } else {
        (conv_transpose3d, conv_transpose3d_reference)
    }
}

/// `(y, gx, gw, gb)` of `sum(op(x, w, b) * gy)`.
fn run(
    op: Op,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    gy: &Tensor,
    c: &ConvTransposeConfig,
) -> R<Vec<Tensor>> {
    let (y, g) = fwd_bwd_n(&[x, w, b], gy, |t| op(&t[0], &t[1], Some(&t[2]), c))?;
    Ok([vec![y], g].concat())
}

fn check_case(f: &Fixtures, case: &str, label: &str, got: &[Tensor], tol: f64) {
    for (t, what) in got.iter().zip(["y", "gx", "gw", "gb"]) {
        assert_close(
            &format!("{case} {label} {what}"),
            t,
            field(f, case, what),
            tol,
        );
    }
}

#[test]
fn matches_pytorch_forward_and_gradients() -> R<()> {
    let f = fixtures("conv_transpose");
    for &(case, s, p, op, d, g) in CASES {
        let c = cfg(s, p, op, d, g);
        let [x, w, b, gy] = ["x", "w", "b", "gy"].map(|k| field(&f, case, k));
        let (ours, reference) = ops(x);
        check_case(&f, case, "kernel", &run(ours, x, w, b, gy, &c)?, 1e-5);
        // The composition (the path on other devices), in f64 and through candle autograd.
        let up = |t: &Tensor| t.to_dtype(DType::F64);
        let got = run(reference, &up(x)?, &up(w)?, &up(b)?, &up(gy)?, &c)?;
        check_case(&f, case, "reference", &got, 1e-5);
        // The public op on the composition backend.
        let got = with_backend(Backend::Composition, || run(ours, x, w, b, gy, &c))?;
        check_case(&f, case, "composition backend", &got, 1e-5);
    }
    Ok(())
}

/// Random shapes, several tiles and depth slabs, against the f64 composition.
#[test]
fn random_configs_match_reference() -> R<()> {
    let dev = Device::Cpu;
    // (x shape, Cout, kernel, config)
    let configs: [(&[usize], usize, &[usize], ConvTransposeConfig); 8] = [
        (&[2, 16, 17, 19], 8, &[4, 4], cfg(2, 1, 1, 1, 1)),
        (&[1, 6, 9, 31], 9, &[3, 3], cfg(3, 1, 2, 1, 3)),
        (&[2, 4, 8, 6], 4, &[2, 3], cfg(1, 0, 1, 2, 4)),
        (&[1, 3, 30, 40], 5, &[5, 5], cfg(2, 2, 1, 1, 1)),
        (&[1, 8, 7, 9, 11], 4, &[2, 2, 2], cfg(2, 0, 1, 1, 2)),
        (&[2, 4, 4, 5, 6], 6, &[3, 3, 3], cfg(2, 1, 0, 2, 1)),
        // k = s patch path: several tiles per (batch, group), runs across rows.
        (&[2, 6, 19, 23], 8, &[2, 2], cfg(2, 0, 0, 1, 2)),
        (&[1, 8, 5, 6, 7], 6, &[2, 2, 2], cfg(2, 0, 0, 1, 1)),
    ];
    for (xs, cout, k, c) in configs {
        let (ours, reference) = ops(&Tensor::zeros(xs, DType::F32, &dev)?);
        let x = Tensor::randn(0f32, 1., xs, &dev)?;
        let ws = [&[xs[1], cout / c.groups], k].concat();
        let w = Tensor::randn(0f32, 1., ws, &dev)?;
        let b = Tensor::randn(0f32, 1., cout, &dev)?;
        let gy = Tensor::randn(0f32, 1., ours(&x, &w, Some(&b), &c)?.dims(), &dev)?;
        let got = run(ours, &x, &w, &b, &gy, &c)?;
        let up = |t: &Tensor| t.to_dtype(DType::F64);
        let want = run(reference, &up(&x)?, &up(&w)?, &up(&b)?, &up(&gy)?, &c)?;
        for ((g, r), what) in got.iter().zip(&want).zip(["y", "gx", "gw", "gb"]) {
            assert_close(&format!("{xs:?} {c:?} {what}"), g, r, 1e-5);
        }
    }
    Ok(())
}

#[test]
fn half_precision_matches_f32() -> R<()> {
    let f = fixtures("conv_transpose");
    for (dtype, tol) in [(DType::F16, 5e-3), (DType::BF16, 3e-2)] {
        for &(case, s, p, op, d, g) in CASES {
            let c = cfg(s, p, op, d, g);
            let [x, w, gy] = ["x", "w", "gy"].map(|k| field(&f, case, k));
            let (ours, _) = ops(x);
            let op = |x: &Tensor, w: &Tensor| ours(x, w, None, &c);
            let y = check_half_vs_f32(case, (x, w, gy), dtype, tol, op)?;
            // Against PyTorch's f32 result (with its bias), the input rounding on top.
            let b = field(&f, case, "b").to_dtype(dtype)?;
            let shape: Vec<usize> = [1, b.dim(0)?]
                .into_iter()
                .chain([1; 3])
                .take(x.rank())
                .collect();
            let y = y.broadcast_add(&b.reshape(shape)?)?;
            assert_close(
                &format!("{case} {dtype:?} y vs torch"),
                &y,
                field(&f, case, "y"),
                4.0 * tol,
            );
        }
    }
    Ok(())
}

/// Central finite differences of `L = sum(y * gy)` against our backward, element by element.
#[test]
fn backward_matches_finite_differences() -> R<()> {
    let dev = Device::Cpu;
    let cases: [(&[usize], usize, &[usize], ConvTransposeConfig); 7] = [
        (&[1, 2, 3, 4], 3, &[3, 3], cfg(2, 1, 1, 1, 1)),
        (&[2, 4, 3, 3], 2, &[2, 2], cfg(2, 0, 0, 1, 2)),
        (&[1, 2, 4, 3], 2, &[3, 2], cfg(1, 1, 1, 2, 2)),
        (&[1, 2, 2, 3, 2], 2, &[2, 2, 2], cfg(2, 0, 1, 1, 1)),
        (&[1, 2, 2, 2, 3], 3, &[3, 3, 3], cfg(3, 1, 2, 1, 1)),
        // The non-overlapping patch path (k = s, no padding), grouped, odd sizes.
        (&[1, 4, 3, 5], 4, &[3, 3], cfg(3, 0, 0, 1, 2)),
        (&[1, 2, 2, 1, 3], 4, &[2, 3, 2], cfg(2, 0, 0, 1, 1)),
    ];
    for (xs, cout, k, c) in cases {
        let (ours, _) = ops(&Tensor::zeros(xs, DType::F32, &dev)?);
        let x = Tensor::randn(0f32, 1., xs, &dev)?;
        let w = Tensor::randn(0f32, 1., [&[xs[1], cout / c.groups], k].concat(), &dev)?;
        let gy = Tensor::randn(0f32, 1., ours(&x, &w, None, &c)?.dims(), &dev)?;
        let op = |x: &Tensor, w: &Tensor| ours(x, w, None, &c);
        check_fd2(&format!("{xs:?} {c:?}"), (&x, &w, &gy), 1e-2, 1e-2, op)?;
    }
    Ok(())
}

#[test]
fn non_contiguous_inputs_are_accepted() -> R<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (2, 5, 6, 4), &dev)?.transpose(2, 3)?;
    let w = Tensor::randn(0f32, 1., (3, 5, 4, 4), &dev)?.transpose(0, 1)?;
    let c = cfg(2, 1, 0, 1, 1);
    let y = conv_transpose2d(&x, &w, None, &c)?;
    let r = conv_transpose2d_reference(&x.contiguous()?, &w.contiguous()?, None, &c)?;
    assert_close("transposed", &y, &r, 1e-5);
    Ok(())
}

/// Output size `(n - 1)s - 2p + d(k - 1) + output_padding + 1`, and the inverse of a
/// convolution's size: conv(conv_transpose(x)) has the size of x.
#[test]
fn output_size_inverts_the_convolution() -> R<()> {
    use candle_tricks::conv::Padding;
    use candle_tricks::ops::{conv2d, Conv2dConfig};
    let dev = Device::Cpu;
    for n in [5usize, 6, 7] {
        for (k, s, p) in [(2, 2, 0), (4, 2, 1), (3, 2, 1), (3, 3, 1)] {
            let x = Tensor::randn(0f32, 1., (1, 2, n, n), &dev)?;
            let w = Tensor::randn(0f32, 1., (2, 2, k, k), &dev)?;
            let y = conv_transpose2d(&x, &w, None, &cfg(s, p, 0, 1, 1))?;
            assert_eq!(y.dim(2)?, (n - 1) * s + k - 2 * p);
            let back = conv2d(
                &y,
                &w,
                Conv2dConfig::default()
                    .with_stride(s)
                    .with_padding(Padding::Explicit(p)),
            )?;
            assert_eq!(back.dim(2)?, n);
        }
    }
    Ok(())
}

#[test]
fn layers_load_pytorch_weights() -> R<()> {
    use candle_core::Module;
    use candle_nn::{VarBuilder, VarMap};
    use candle_tricks::conv::{
        conv_transpose2d as layer2d, conv_transpose2d_no_bias, conv_transpose3d as layer3d,
        ConvTranspose2d,
    };
    let f = fixtures("conv_transpose");
    let vb = VarBuilder::from_tensors(
        f.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        DType::F32,
        &Device::Cpu,
    );
    let up2 = layer2d(4, 6, 4, cfg(2, 1, 0, 1, 2), vb.pp("block2d"))?;
    assert_eq!(
        (up2.in_channels(), up2.out_channels(), up2.kernel_size()),
        (4, 6, (4, 4))
    );
    let y = up2.forward(field(&f, "block2d", "x"))?;
    assert_close("block2d", &y, field(&f, "block2d", "y"), 1e-5);
    let up3 = layer3d(4, 2, 2, cfg(2, 0, 0, 1, 1), vb.pp("block3d"))?;
    assert_eq!(up3.kernel_size(), (2, 2, 2));
    let y = up3.forward(field(&f, "block3d", "x"))?;
    assert_close("block3d", &y, field(&f, "block3d", "y"), 1e-5);
    // A checkpoint of another shape is refused.
    assert!(layer2d(4, 6, 3, cfg(2, 1, 0, 1, 2), vb.pp("block2d")).is_err());

    // Fresh layers: PyTorch's bounds 1/sqrt(Cout/groups * k^2), and gradients reach every var.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let up = layer2d(8, 6, 3, cfg(2, 1, 1, 1, 2), vb.pp("a"))?;
    let bound = 1.0 / (3.0f32 * 9.0).sqrt();
    for t in [up.weight(), up.bias().ok_or("bias")?] {
        let max = t.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(max <= bound && max > 0.3 * bound, "{max}");
    }
    let x = Tensor::randn(0f32, 1., (2, 8, 5, 4), &Device::Cpu)?;
    let y = up.forward(&x)?;
    assert_eq!(y.dims(), &[2, 6, 10, 8]);
    let grads = y.sqr()?.sum_all()?.backward()?;
    for var in varmap.all_vars() {
        let g = grads.get(var.as_tensor()).ok_or("missing gradient")?;
        assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
    }
    let other = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu);
    assert!(
        conv_transpose2d_no_bias(8, 6, 3, cfg(2, 1, 1, 1, 2), other)?
            .bias()
            .is_none()
    );

    // Bad constructor arguments name the layer.
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &Device::Cpu);
    let ok = cfg(2, 1, 0, 1, 1);
    let bad: Vec<(&str, Tensor, Option<Tensor>, ConvTransposeConfig)> = vec![
        ("weight rank", z(&[4, 4, 3])?, None, ok),
        ("empty weight", z(&[4, 0, 3, 3])?, None, ok),
        (
            "Cin not divisible by groups",
            z(&[3, 2, 3, 3])?,
            None,
            ok.with_groups(2),
        ),
        (
            "bias shape",
            z(&[4, 2, 3, 3])?,
            Some(z(&[3])?),
            ok.with_groups(2),
        ),
        (
            "output_padding",
            z(&[4, 2, 3, 3])?,
            None,
            ok.with_output_padding(2),
        ),
    ];
    for (what, w, b, c) in bad {
        assert_err(what, ConvTranspose2d::new(w, b, c), &["ConvTranspose2d"]);
    }
    let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu);
    for (cin, cout, k, groups) in [
        (0, 4, 3, 1),
        (4, 0, 3, 1),
        (4, 4, 0, 1),
        (4, 6, 3, 4),
        (6, 4, 3, 4),
    ] {
        let r = layer2d(cin, cout, k, cfg(1, 0, 0, 1, groups), vb.clone());
        assert_err(
            &format!("({cin}, {cout}, {k}, {groups})"),
            r,
            &["ConvTranspose2d"],
        );
    }
    Ok(())
}

/// A huge dilation whose padding crops all but a few positions: the kernel takes the direct
/// path (no padded copy of 200002² values per channel); only the centre tap reaches the output.
#[test]
fn huge_dilation_with_cropping_padding_is_exact() -> R<()> {
    use candle_tricks::ops::{pad2d, PadMode};
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (1, 2, 2, 2), &dev)?;
    let w = Tensor::randn(0f32, 1., (2, 3, 3, 3), &dev)?;
    let c = cfg(1, 99_999, 0, 100_000, 1);
    let y = conv_transpose2d(&x, &w, None, &c)?;
    let centre = w.narrow(2, 1, 1)?.narrow(3, 1, 1)?;
    let want = conv_transpose2d(&x, &centre, None, &cfg(1, 0, 0, 1, 1))?;
    let want = pad2d(&want, [1, 1, 1, 1], PadMode::Zeros)?;
    assert_close("huge dilation", &y, &want, 1e-6);
    let gy = Tensor::randn(0f32, 1., y.dims(), &dev)?;
    let op = |x: &Tensor, w: &Tensor| conv_transpose2d(x, w, None, &c);
    check_fd2("huge dilation", (&x, &w, &gy), 1e-2, 1e-2, op)
}
