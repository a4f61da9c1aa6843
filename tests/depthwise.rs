//! Depthwise convolution: our fused kernel (forward, grad-input, grad-weight) against PyTorch
//! fixtures (tests/fixtures/gen_depthwise.py), candle's grouped convolution, finite differences,
//! half precision, the block under PyTorch names, and bad input.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::conv::{
    depthwise_conv2d as dw_block, depthwise_conv2d_no_bias, DepthwiseConv2d, Padding,
};
use candle_tricks::ops::{
    depthwise_conv1d, depthwise_conv1d_reference, depthwise_conv2d, depthwise_conv2d_reference,
    DepthwiseConv1dConfig, DepthwiseConv2dConfig,
};

type R<T> = Result<T, Box<dyn std::error::Error>>;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/depthwise.safetensors");

fn fixtures() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(FIXTURES, &Device::Cpu).expect("fixture file")
}

fn get<'a>(f: &'a HashMap<String, Tensor>, case: &str, what: &str) -> &'a Tensor {
    f.get(&format!("{case}.{what}")).unwrap_or_else(|| panic!("missing {case}.{what}"))
}

/// Max |a - b| / (1 + max |b|), in f64.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    let diff = (&a - &b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
    diff / (1.0 + scale)
}

fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f64) {
    let e = rel_err(a, b);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.1e}");
}

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

/// Runs `op` on Vars made from `x`, `w`; returns `(y, grad_x, grad_w)` of `sum(y * gy)`.
fn fwd_bwd(
    x: &Tensor,
    w: &Tensor,
    gy: &Tensor,
    op: impl Fn(&Tensor, &Tensor) -> candle_tricks::Result<Tensor>,
) -> R<(Tensor, Tensor, Tensor)> {
    let xv = Var::from_tensor(x)?;
    let wv = Var::from_tensor(w)?;
    let y = op(xv.as_tensor(), wv.as_tensor())?;
    let loss = (&y * gy.to_dtype(y.dtype())?)?.sum_all()?;
    let grads = loss.backward()?;
    let gx = grads.get(xv.as_tensor()).ok_or("no grad for x")?.clone();
    let gw = grads.get(wv.as_tensor()).ok_or("no grad for w")?.clone();
    Ok((y, gx, gw))
}

#[test]
fn conv2d_matches_pytorch_forward_and_gradients() -> R<()> {
    let f = fixtures();
    for &(case, s, p, d) in CASES_2D {
        let cfg = cfg2(s, p, d);
        let (x, w, gy) = (get(&f, case, "x"), get(&f, case, "w"), get(&f, case, "gy"));
        let (y, gx, gw) = fwd_bwd(x, w, gy, |x, w| depthwise_conv2d(x, w, cfg))?;
        assert_close(&format!("{case} y"), &y, get(&f, case, "y"), 1e-5);
        assert_close(&format!("{case} gx"), &gx, get(&f, case, "gx"), 1e-5);
        assert_close(&format!("{case} gw"), &gw, get(&f, case, "gw"), 1e-5);
        let r = depthwise_conv2d_reference(x, w, cfg)?;
        assert_close(&format!("{case} reference"), &r, get(&f, case, "y"), 1e-5);
    }
    Ok(())
}

#[test]
fn conv1d_matches_pytorch_forward_and_gradients() -> R<()> {
    let f = fixtures();
    for &(case, s, p, d) in CASES_1D {
        let cfg = cfg1(s, p, d);
        let (x, w, gy) = (get(&f, case, "x"), get(&f, case, "w"), get(&f, case, "gy"));
        let (y, gx, gw) = fwd_bwd(x, w, gy, |x, w| depthwise_conv1d(x, w, cfg))?;
        assert_close(&format!("{case} y"), &y, get(&f, case, "y"), 1e-5);
        assert_close(&format!("{case} gx"), &gx, get(&f, case, "gx"), 1e-5);
        assert_close(&format!("{case} gw"), &gw, get(&f, case, "gw"), 1e-5);
        let r = depthwise_conv1d_reference(x, w, cfg)?;
        assert_close(&format!("{case} reference"), &r, get(&f, case, "y"), 1e-5);
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
    let diff = (&y2 - &y)?.abs()?.sum_keepdim(1)?.flatten_all()?.to_vec1::<f32>()?;
    assert!(diff[..l - 1].iter().all(|&v| v == 0.0), "{diff:?}");
    assert!(diff[l - 1] > 0.0);
    Ok(())
}

/// Random shapes and configs (wide rows exercise the vectorised loops) against candle's grouped
/// convolution, forward and both gradients (candle autograd through the reference in f64).
#[test]
fn random_configs_match_candle_grouped_conv() -> R<()> {
    let dev = Device::Cpu;
    let configs = [
        ((2, 3, 21, 37), 3, 1, 1, Padding::Same, 1),
        ((1, 4, 19, 40), 3, 2, 2, Padding::Same, 1),
        ((2, 2, 17, 33), 5, 1, 2, Padding::Explicit(2), 2),
        ((1, 3, 16, 35), 7, 2, 1, Padding::Same, 1),
        ((1, 2, 9, 50), 1, 1, 1, Padding::Valid, 1),
        ((2, 2, 12, 45), 2, 1, 2, Padding::Same, 1),
        ((1, 2, 14, 29), 3, 3, 1, Padding::Explicit(3), 3),
    ];
    for ((b, c, h, wd), k, m, s, p, d) in configs {
        let cfg = cfg2(s, p, d);
        let x = Tensor::randn(0f32, 1., (b, c, h, wd), &dev)?;
        let w = Tensor::randn(0f32, 1., (c * m, 1, k, k), &dev)?;
        let y0 = depthwise_conv2d(&x, &w, cfg)?;
        let gy = Tensor::randn(0f32, 1., y0.dims(), &dev)?;
        let (y, gx, gw) = fwd_bwd(&x, &w, &gy, |x, w| depthwise_conv2d(x, w, cfg))?;
        let x64 = x.to_dtype(DType::F64)?;
        let w64 = w.to_dtype(DType::F64)?;
        let gy64 = gy.to_dtype(DType::F64)?;
        let (r, rgx, rgw) = fwd_bwd(&x64, &w64, &gy64, |x, w| depthwise_conv2d_reference(x, w, cfg))?;
        let what = format!("{:?} k{k} m{m} s{s} {p:?} d{d}", (b, c, h, wd));
        assert_close(&format!("{what} y"), &y, &r, 1e-5);
        assert_close(&format!("{what} gx"), &gx, &rgx, 1e-5);
        assert_close(&format!("{what} gw"), &gw, &rgw, 1e-5);
    }
    Ok(())
}

#[test]
fn half_precision_matches_f32() -> R<()> {
    let f = fixtures();
    for (dtype, tol) in [(DType::F16, 5e-3), (DType::BF16, 3e-2)] {
        for &(case, s, p, d) in CASES_2D {
            let cfg = cfg2(s, p, d);
            let (x, w, gy) = (get(&f, case, "x"), get(&f, case, "w"), get(&f, case, "gy"));
            // Round the inputs first so both runs see the same values.
            let (xh, wh, gyh) = (x.to_dtype(dtype)?, w.to_dtype(dtype)?, gy.to_dtype(dtype)?);
            let (y, gx, gw) = fwd_bwd(&xh, &wh, &gyh, |x, w| depthwise_conv2d(x, w, cfg))?;
            assert_eq!((y.dtype(), gx.dtype(), gw.dtype()), (dtype, dtype, dtype));
            let up = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let (y32, gx32, gw32) = fwd_bwd(&up(&xh), &up(&wh), &up(&gyh), |x, w| {
                depthwise_conv2d(x, w, cfg)
            })?;
            let what = format!("{case} {dtype:?}");
            assert_close(&format!("{what} y"), &y, &y32, tol);
            assert_close(&format!("{what} gx"), &gx, &gx32, tol);
            assert_close(&format!("{what} gw"), &gw, &gw32, tol);
        }
        let (case, s, p, d) = CASES_1D[1];
        let cfg = cfg1(s, p, d);
        let (x, w) = (get(&f, case, "x"), get(&f, case, "w"));
        let y = depthwise_conv1d(&x.to_dtype(dtype)?, &w.to_dtype(dtype)?, cfg)?;
        assert_close(&format!("{case} {dtype:?}"), &y, get(&f, case, "y"), 4.0 * tol);
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
        let (_, gx, gw) = fwd_bwd(&x, &w, &gy, |x, w| depthwise_conv2d(x, w, cfg))?;
        let loss = |x: &Tensor, w: &Tensor| -> R<f64> {
            let y = depthwise_conv2d(x, w, cfg)?.to_dtype(DType::F64)?;
            Ok((y * gy.to_dtype(DType::F64)?)?.sum_all()?.to_scalar::<f64>()?)
        };
        let eps = 1e-2f32;
        for (which, t, g) in [("x", &x, &gx), ("w", &w, &gw)] {
            let base = t.flatten_all()?.to_vec1::<f32>()?;
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            for i in 0..base.len() {
                let mut plus = base.clone();
                plus[i] += eps;
                let mut minus = base.clone();
                minus[i] -= eps;
                let tp = Tensor::from_vec(plus, t.dims(), &dev)?;
                let tm = Tensor::from_vec(minus, t.dims(), &dev)?;
                let (lp, lm) = if which == "x" {
                    (loss(&tp, &w)?, loss(&tm, &w)?)
                } else {
                    (loss(&x, &tp)?, loss(&x, &tm)?)
                };
                let fd = (lp - lm) / (2.0 * eps as f64);
                let err = (fd - g[i] as f64).abs();
                assert!(err < 1e-2 * (1.0 + fd.abs()), "{cfg:?} d{which}[{i}]: fd {fd} vs {}", g[i]);
            }
        }
    }
    Ok(())
}

#[test]
fn block_loads_pytorch_conv2d_weights() -> R<()> {
    let f = fixtures();
    let mut ts = HashMap::new();
    ts.insert("dw.weight".to_string(), get(&f, "block", "weight").clone());
    ts.insert("dw.bias".to_string(), get(&f, "block", "bias").clone());
    let vb = VarBuilder::from_tensors(ts, DType::F32, &Device::Cpu);
    let cfg = cfg2(2, Padding::Explicit(1), 1);
    let block = dw_block(4, 2, 3, cfg, vb.pp("dw"))?;
    assert_eq!(block.out_channels(), 8);
    assert_eq!(block.kernel_size(), (3, 3));
    assert_eq!(block.config(), cfg);
    let y = block.forward(get(&f, "block", "x"))?;
    assert_close("block y", &y, get(&f, "block", "y"), 1e-5);

    // Without bias: the output differs exactly by the bias.
    let nb = DepthwiseConv2d::new(block.weight().clone(), None, cfg)?;
    let diff = (&y - nb.forward(get(&f, "block", "x"))?)?;
    let bias = block.bias().ok_or("bias")?.reshape((1, 8, 1, 1))?;
    assert_close("bias", &diff, &bias.broadcast_as(diff.dims())?.contiguous()?, 1e-6);
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
        ("weight dim0 not multiple of C", x.clone(), z(&[6, 1, 3, 3], f32_), ok),
        ("weight dim1 != 1", x.clone(), z(&[4, 2, 3, 3], f32_), ok),
        ("weight fewer channels than C", x.clone(), z(&[2, 1, 3, 3], f32_), ok),
        ("kernel larger than input", x.clone(), z(&[4, 1, 9, 9], f32_), ok.with_padding(Padding::Valid)),
        ("kernel larger than padded input", z(&[1, 4, 2, 2], f32_), w.clone(), ok.with_padding(Padding::Explicit(0))),
        ("dilated kernel too large", z(&[1, 4, 4, 4], f32_), w.clone(), ok.with_padding(Padding::Valid).with_dilation(2)),
        ("zero batch", z(&[0, 4, 8, 8], f32_), w.clone(), ok),
        ("zero height", z(&[1, 4, 0, 8], f32_), w.clone(), ok),
        ("zero channels", z(&[1, 0, 8, 8], f32_), z(&[0, 1, 3, 3], f32_), ok),
        ("zero kernel", x.clone(), z(&[4, 1, 0, 3], f32_), ok),
        ("stride 0", x.clone(), w.clone(), ok.with_stride(0)),
        ("dilation 0", x.clone(), w.clone(), ok.with_dilation(0)),
        ("mixed dtypes", x.clone(), w.to_dtype(DType::F16)?, ok),
        ("integer dtype", x.to_dtype(DType::U32)?, w.to_dtype(DType::U32)?, ok),
    ];
    for (what, x, w, cfg) in cases {
        let err = depthwise_conv2d(&x, &w, cfg).err().ok_or(format!("{what}: expected an error"))?;
        let msg = err.to_string();
        assert!(msg.contains("depthwise_conv2d"), "{what}: {msg}");
        let err = depthwise_conv2d_reference(&x, &w, cfg).err().ok_or(format!("{what}: ref"))?;
        assert!(err.to_string().contains("depthwise_conv2d"), "{what} (reference): {err}");
    }
    // f64 is for the reference only (gradient checks); the kernel takes f32, f16 and bf16.
    let err = depthwise_conv2d(&x.to_dtype(DType::F64)?, &w.to_dtype(DType::F64)?, ok)
        .err()
        .ok_or("f64: expected an error")?;
    assert!(err.to_string().contains("depthwise_conv2d"), "{err}");

    let x1 = Tensor::zeros((2, 4, 8), DType::F32, &dev)?;
    let w1 = Tensor::zeros((4, 1, 3), DType::F32, &dev)?;
    let ok1 = DepthwiseConv1dConfig::default();
    let cases1: Vec<(&str, Tensor, Tensor, DepthwiseConv1dConfig)> = vec![
        ("input rank 4", x.clone(), w1.clone(), ok1),
        ("weight dim0 not multiple of C", x1.clone(), z(&[5, 1, 3], f32_), ok1),
        ("kernel larger than input", x1.clone(), z(&[4, 1, 9], f32_), ok1.with_padding(Padding::Valid)),
        ("zero length", z(&[2, 4, 0], f32_), w1.clone(), ok1),
        ("stride 0", x1.clone(), w1.clone(), ok1.with_stride(0)),
        ("dilation 0", x1.clone(), w1.clone(), ok1.with_dilation(0)),
        ("mixed dtypes", x1.clone(), w1.to_dtype(DType::BF16)?, ok1),
    ];
    for (what, x, w, cfg) in cases1 {
        let err = depthwise_conv1d(&x, &w, cfg).err().ok_or(format!("{what}: expected an error"))?;
        assert!(err.to_string().contains("depthwise_conv1d"), "{what}: {err}");
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
        let err = DepthwiseConv2d::new(w, b, cfg).err().ok_or(format!("block {what}"))?;
        assert!(err.to_string().contains("DepthwiseConv2d"), "block {what}: {err}");
    }
    let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
    for (c, m, k) in [(0, 1, 3), (4, 0, 3), (4, 1, 0)] {
        let err = dw_block(c, m, k, ok, vb.clone()).err().ok_or("block args")?;
        assert!(err.to_string().contains("DepthwiseConv2d"), "{err}");
    }
    let block = DepthwiseConv2d::new(w.clone(), None, ok)?;
    let err = block.forward(&z(&[2, 3, 8, 8], f32_)).err().ok_or("forward C mismatch")?;
    assert!(err.to_string().contains("depthwise_conv2d"), "{err}");
    Ok(())
}

// TEMP-TIMING-BEGIN
#[test]
#[ignore]
fn temp_timing() -> R<()> {
    use std::time::Instant;
    let dev = Device::Cpu;
    let only = std::env::var("DW_ONLY").unwrap_or_default();
    for (b, c, h, w) in [(1, 32, 112, 112), (8, 144, 56, 56), (8, 384, 14, 14)] {
        for s in [1, 2] {
            let x = Tensor::randn(0f32, 1., (b, c, h, w), &dev)?;
            let k = Tensor::randn(0f32, 1., (c, 1, 3, 3), &dev)?;
            let cfg = cfg2(s, Padding::Explicit(1), 1);
            let y = depthwise_conv2d(&x, &k, cfg)?;
            let gy = Tensor::randn(0f32, 1., y.dims(), &dev)?;
            let xv = Var::from_tensor(&x)?;
            let kv = Var::from_tensor(&k)?;
            let time = |f: &dyn Fn()| {
                let mut best = f64::MAX;
                for _ in 0..30 {
                    let t = Instant::now();
                    f();
                    best = best.min(t.elapsed().as_secs_f64() * 1e3);
                }
                best
            };
            let fwd = time(&|| {
                depthwise_conv2d(&x, &k, cfg).unwrap();
            });
            let fb = if only.is_empty() {
                time(&|| {
                    let y = depthwise_conv2d(&xv, &kv, cfg).unwrap();
                    (y * &gy).unwrap().sum_all().unwrap().backward().unwrap();
                })
            } else {
                0.0
            };
            println!("{b}x{c}x{h}x{w}_s{s}: fwd {fwd:.3} ms  fwd+bwd {fb:.3} ms");
        }
    }
    Ok(())
}
// TEMP-TIMING-END
