//! Pooling: the adaptive / same-max-pool kernel (forward and backward) against PyTorch fixtures
//! (tests/fixtures/gen_pool.py), the plain-tensor references, finite differences and half
//! precision; spatial pyramid pooling and SPPF (ultralytics names, eval and train) against
//! PyTorch; and bad input.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::ops::{
    adaptive_pool1d_reference, adaptive_pool2d_reference, max_pool2d_same_reference,
};
use candle_tricks::pool::{
    adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_max_pool1d, adaptive_max_pool2d,
    adaptive_pool2d, max_pool2d_same, sppf, AdaptivePool2d, PoolMode, SpatialPyramidPooling,
    SppConfig, Sppf,
};

mod common;
use common::*;

const CASES_2D: &[(&str, (usize, usize))] = &[
    ("h7w5_to3x2", (3, 2)),
    ("h8w8_to4x4", (4, 4)),
    ("h5w6_to7x9", (7, 9)),
    ("h6w7_to1x1", (1, 1)),
    ("h10w3_to4x3", (4, 3)),
    ("h1w1_to2x3", (2, 3)),
];

const CASES_1D: &[(&str, usize)] = &[("l10_to4", 4), ("l5_to7", 7), ("l9_to1", 1), ("l12_to3", 3)];

const CASES_SAME: &[(&str, usize)] = &[
    ("k5_h6w7", 5),
    ("k3_h5w4", 3),
    ("k13_h4w5", 13),
    ("k1_h3w3", 1),
];

const CASES_SPP: &[(&str, &[usize], PoolMode)] = &[
    ("max_421_h9w11", &[4, 2, 1], PoolMode::Max),
    ("avg_13_h5w3", &[1, 3], PoolMode::Avg),
    ("max_6321_h13w13", &[6, 3, 2, 1], PoolMode::Max),
];

fn modes() -> [(&'static str, PoolMode); 2] {
    [("avg", PoolMode::Avg), ("max", PoolMode::Max)]
}

fn pool2d(mode: PoolMode, x: &Tensor, out: (usize, usize)) -> candle_core::Result<Tensor> {
    Ok(match mode {
        PoolMode::Avg => adaptive_avg_pool2d(x, out)?,
        PoolMode::Max => adaptive_max_pool2d(x, out)?,
    })
}

fn pool1d(mode: PoolMode, x: &Tensor, out: usize) -> candle_core::Result<Tensor> {
    Ok(match mode {
        PoolMode::Avg => adaptive_avg_pool1d(x, out)?,
        PoolMode::Max => adaptive_max_pool1d(x, out)?,
    })
}

/// Fixture case `p` of an adaptive pool: forward and gradient through `op`, forward through
/// `reference`, and unbatched input giving the per-image result. Returns `op`'s output.
fn check_adaptive_case(
    f: &Fixtures,
    p: &str,
    op: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    reference: impl Fn(&Tensor) -> candle_tricks::Result<Tensor>,
) -> R<Tensor> {
    let (x, want) = (field(f, p, "x"), field(f, p, "y"));
    let (y, gx) = fwd_bwd1(x, field(f, p, "gy"), &op)?;
    assert_close(&format!("{p} y"), &y, want, 1e-6);
    assert_close(&format!("{p} gx"), &gx, field(f, p, "gx"), 1e-6);
    assert_close(&format!("{p} reference"), &reference(x)?, want, 1e-6);
    // Unbatched (C, H, W) input gives the per-image result.
    let y0 = op(&x.get(0)?)?;
    assert_close(&format!("{p} unbatched"), &y0, &y.get(0)?, 0.0);
    Ok(y)
}

#[test]
fn adaptive_2d_matches_pytorch_forward_and_gradients() -> R<()> {
    let f = fixtures("pool");
    for &(case, out) in CASES_2D {
        for (m, mode) in modes() {
            let p = format!("a2.{case}.{m}");
            let reference = |x: &Tensor| adaptive_pool2d_reference(x, out, mode);
            let y = check_adaptive_case(&f, &p, |x| pool2d(mode, x, out), reference)?;
            // The mode-generic entry point and the layer agree.
            let x = field(&f, &p, "x");
            let y2 = adaptive_pool2d(x, out, mode)?;
            assert_close(&format!("{p} generic"), &y2, &y, 0.0);
            let y3 = AdaptivePool2d::new(out, mode)?.forward(x)?;
            assert_close(&format!("{p} layer"), &y3, &y, 0.0);
        }
    }
    Ok(())
}

#[test]
fn adaptive_1d_matches_pytorch_forward_and_gradients() -> R<()> {
    let f = fixtures("pool");
    for &(case, out) in CASES_1D {
        for (m, mode) in modes() {
            let p = format!("a1.{case}.{m}");
            let reference = |x: &Tensor| adaptive_pool1d_reference(x, out, mode);
            check_adaptive_case(&f, &p, |x| pool1d(mode, x, out), reference)?;
        }
    }
    Ok(())
}

#[test]
fn same_max_pool_matches_pytorch_maxpool2d() -> R<()> {
    let f = fixtures("pool");
    for &(case, k) in CASES_SAME {
        let p = format!("same.{case}");
        let x = field(&f, &p, "x");
        let gy = field(&f, &p, "gy");
        let (y, gx) = fwd_bwd1(x, gy, |x| max_pool2d_same(x, k))?;
        assert_close(&format!("{p} y"), &y, field(&f, &p, "y"), 0.0);
        assert_close(&format!("{p} gx"), &gx, field(&f, &p, "gx"), 1e-6);
        let r = max_pool2d_same_reference(x, k)?;
        assert_close(&format!("{p} reference"), &r, &y, 0.0);
    }
    Ok(())
}

#[test]
fn sequential_same_pools_equal_one_wide_pool() -> R<()> {
    // The SPPF identity: 5∘5 = 9 and 5∘5∘5 = 13 (stride 1, -inf padding), values and input size.
    let x = Tensor::randn(0f32, 1., (2, 3, 17, 14), &Device::Cpu)?;
    let y1 = max_pool2d_same(&x, 5)?;
    let y2 = max_pool2d_same(&y1, 5)?;
    let y3 = max_pool2d_same(&y2, 5)?;
    assert_close("5∘5 = 9", &y2, &max_pool2d_same_reference(&x, 9)?, 0.0);
    assert_close("5∘5∘5 = 13", &y3, &max_pool2d_same_reference(&x, 13)?, 0.0);
    assert_eq!(y3.dims(), x.dims());
    Ok(())
}

#[test]
fn spp_matches_pytorch_composition() -> R<()> {
    let f = fixtures("pool");
    for &(case, levels, mode) in CASES_SPP {
        let p = format!("spp.{case}");
        let x = field(&f, &p, "x");
        let gy = field(&f, &p, "gy");
        let spp = SpatialPyramidPooling::new(levels.to_vec(), mode)?;
        let (y, gx) = fwd_bwd1(x, gy, |x| spp.forward(x))?;
        assert_eq!(y.dims(), &[x.dim(0)?, spp.output_features(x.dim(1)?)]);
        assert_close(&format!("{p} y"), &y, field(&f, &p, "y"), 1e-6);
        assert_close(&format!("{p} gx"), &gx, field(&f, &p, "gx"), 1e-6);
    }
    // The config route builds the same pyramid.
    let a = SpatialPyramidPooling::from_config(
        SppConfig::default()
            .with_levels(vec![4, 2, 1])
            .with_mode(PoolMode::Avg),
    )?;
    assert_eq!(a, SpatialPyramidPooling::new(vec![4, 2, 1], PoolMode::Avg)?);
    assert_eq!(a.bins(), 21);
    Ok(())
}

#[test]
fn spp_accepts_any_size_at_least_the_largest_level() -> R<()> {
    let spp = SpatialPyramidPooling::new(vec![6, 3, 2, 1], PoolMode::Max)?;
    for (h, w) in [(6, 6), (13, 13), (7, 31), (64, 9)] {
        let x = Tensor::randn(0f32, 1., (2, 5, h, w), &Device::Cpu)?;
        assert_eq!(spp.forward(&x)?.dims(), &[2, 5 * 50]);
    }
    for (h, w) in [(5, 6), (6, 5), (1, 1)] {
        let x = Tensor::randn(0f32, 1., (2, 5, h, w), &Device::Cpu)?;
        let shape = format!("[2, 5, {h}, {w}]");
        let needles = ["SpatialPyramidPooling", ">= 6", shape.as_str()];
        assert_err(&shape, spp.forward(&x), &needles);
    }
    Ok(())
}

/// SPPF weights from the fixture under ultralytics names (prefix `sppf.w.` stripped).
fn sppf_weights(f: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    f.iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("sppf.w.")
                .map(|n| (n.to_string(), v.clone()))
        })
        .collect()
}

/// ultralytics `Conv` (1×1, no bias) + BN (eval) + SiLU from plain candle ops.
fn conv_bn_silu_eval(x: &Tensor, w: &HashMap<String, Tensor>, name: &str) -> R<Tensor> {
    let g = |s: &str| w[&format!("{name}.{s}")].reshape((1, (), 1, 1));
    let y = x.conv2d(&w[&format!("{name}.conv.weight")], 0, 1, 1, 1)?;
    let y = y
        .broadcast_sub(&g("bn.running_mean")?)?
        .broadcast_div(&(g("bn.running_var")? + 1e-3)?.sqrt()?)?
        .broadcast_mul(&g("bn.weight")?)?
        .broadcast_add(&g("bn.bias")?)?;
    Ok(y.silu()?)
}

#[test]
fn sppf_matches_pytorch_in_eval_mode_and_equals_parallel_spp() -> R<()> {
    let f = fixtures("pool");
    let weights = sppf_weights(&f);
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    let block = sppf(6, 5, 5, vb)?;
    assert_eq!((block.in_channels(), block.out_channels()), (6, 5));
    assert_eq!(block.equivalent_spp_kernels(), [5, 9, 13]);
    let x = get(&f, "sppf.eval.x");
    let gy = get(&f, "sppf.eval.gy");
    let (y, gx) = fwd_bwd1(x, gy, |x| block.forward_t(x, false))?;
    assert_close("sppf eval y", &y, get(&f, "sppf.eval.y"), 1e-5);
    assert_close("sppf eval gx", &gx, get(&f, "sppf.eval.gx"), 1e-5);

    // SPP with parallel 5 / 9 / 13 pools on cv1's output gives the same result.
    let y0 = conv_bn_silu_eval(x, &weights, "cv1")?;
    let pools = [5, 9, 13]
        .iter()
        .map(|&k| max_pool2d_same_reference(&y0, k))
        .collect::<Result<Vec<_>, _>>()?;
    let cat = Tensor::cat(&[&y0, &pools[0], &pools[1], &pools[2]], 1)?;
    let parallel = conv_bn_silu_eval(&cat, &weights, "cv2")?;
    assert_close("sppf == parallel spp", &y, &parallel, 1e-6);
    Ok(())
}

#[test]
fn sppf_train_mode_matches_pytorch_and_updates_running_stats() -> R<()> {
    let f = fixtures("pool");
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let block = sppf(6, 5, 5, vb)?;
    for (name, t) in sppf_weights(&f) {
        varmap.set_one(&name, &t)?;
    }
    let y = block.forward_t(get(&f, "sppf.train.x"), true)?;
    assert_close("sppf train y", &y, get(&f, "sppf.train.y"), 1e-4);
    let data = varmap.data().lock().map_err(|_| "poisoned")?;
    for cv in ["cv1", "cv2"] {
        for stat in ["running_mean", "running_var"] {
            let key = format!("{cv}.bn.{stat}");
            let got = data.get(&key).ok_or("missing var")?.as_tensor();
            assert_close(&key, got, get(&f, &format!("sppf.train.{key}")), 1e-5);
        }
    }
    Ok(())
}

#[test]
fn sppf_from_raw_parts_and_weight_init() -> R<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let block = sppf(8, 16, 5, vb)?;
    let data = varmap.data().lock().map_err(|_| "poisoned")?;
    let w1 = data["cv1.conv.weight"].as_tensor();
    assert_eq!(w1.dims(), &[4, 8, 1, 1]);
    let bound = 1.0 / 8f32.sqrt();
    assert!(w1.abs()?.max_all()?.to_scalar::<f32>()? <= bound);
    assert_eq!(data["cv2.conv.weight"].dims(), &[16, 16, 1, 1]);
    assert_eq!(data["cv2.bn.running_var"].dims(), &[16]);
    drop(data);
    let x = Tensor::randn(0f32, 1., (1, 8, 7, 5), &dev)?;
    assert_eq!(block.forward_t(&x, false)?.dims(), &[1, 16, 7, 5]);

    let bn = |c: usize| {
        let t = |v: f32| Tensor::full(v, c, &dev).unwrap();
        let cfg = candle_tricks::norm::BatchNormConfig::default().with_eps(1e-3);
        candle_tricks::norm::BatchNorm::new(c, Some((t(1.), t(0.))), Some((t(0.), t(1.))), cfg)
    };
    let w1 = Tensor::randn(0f32, 1., (2, 4, 1, 1), &dev)?;
    let w2 = Tensor::randn(0f32, 1., (3, 8, 1, 1), &dev)?;
    let block = Sppf::new(w1.clone(), bn(2)?, w2.clone(), bn(3)?, 3)?;
    assert_eq!(block.kernel_size(), 3);
    let x = Tensor::randn(0f32, 1., (2, 4, 6, 6), &dev)?;
    assert_eq!(block.forward_t(&x, false)?.dims(), &[2, 3, 6, 6]);
    // Inconsistent parts.
    let bad = [
        Sppf::new(w1.clone(), bn(3)?, w2.clone(), bn(3)?, 3),
        Sppf::new(w1.clone(), bn(2)?, w1.clone(), bn(2)?, 3),
        Sppf::new(w1.clone(), bn(2)?, w2.clone(), bn(3)?, 4),
        Sppf::new(w1.reshape((2, 4, 1))?, bn(2)?, w2.clone(), bn(3)?, 3),
        Sppf::new(w1.clone(), bn(2)?, w2.to_dtype(DType::F16)?, bn(3)?, 3),
    ];
    for (i, r) in bad.into_iter().enumerate() {
        assert_err(&format!("bad part {i}"), r, &["Sppf"]);
    }
    Ok(())
}

#[test]
fn half_precision_matches_f32() -> R<()> {
    let f = fixtures("pool");
    for (dtype, tol) in [(DType::F16, 2e-3), (DType::BF16, 1.6e-2)] {
        let check = |p: &str, op: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| -> R<()> {
            let x = field(&f, p, "x").to_dtype(dtype)?;
            let gy = field(&f, p, "gy").to_dtype(dtype)?;
            let (y, gx) = fwd_bwd1(&x, &gy, op)?;
            assert_eq!((y.dtype(), gx.dtype()), (dtype, dtype));
            assert_close(&format!("{p} {dtype:?} y"), &y, field(&f, p, "y"), tol);
            // Rounding the input can reorder close values and move a bin's arg-max, so the
            // gradient is compared with the f32 kernel on the same rounded input.
            let up = |t: &Tensor| t.to_dtype(DType::F32);
            let (_, gx32) = fwd_bwd1(&up(&x)?, &up(&gy)?, op)?;
            assert_close(&format!("{p} {dtype:?} gx"), &gx, &gx32, tol);
            Ok(())
        };
        for &(case, out) in CASES_2D {
            for (m, mode) in modes() {
                check(&format!("a2.{case}.{m}"), &|x| pool2d(mode, x, out))?;
            }
        }
        for &(case, out) in CASES_1D {
            for (m, mode) in modes() {
                check(&format!("a1.{case}.{m}"), &|x| pool1d(mode, x, out))?;
            }
        }
        for &(case, k) in CASES_SAME {
            check(&format!("same.{case}"), &|x| Ok(max_pool2d_same(x, k)?))?;
        }
        for &(case, levels, mode) in CASES_SPP {
            let spp = SpatialPyramidPooling::new(levels.to_vec(), mode)?;
            check(&format!("spp.{case}"), &|x| spp.forward(x))?;
        }
    }
    Ok(())
}

/// A deterministic pseudo-random stream (no RNG has to match anything).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

#[test]
fn random_shapes_match_the_reference_with_gradients() -> R<()> {
    let mut rng = Lcg(7);
    for i in 0..40 {
        let (b, c) = (1 + rng.next(3), 1 + rng.next(4));
        let (h, w) = (1 + rng.next(13), 1 + rng.next(13));
        let out = (1 + rng.next(h + 3), 1 + rng.next(w + 3));
        let mode = if i % 2 == 0 {
            PoolMode::Avg
        } else {
            PoolMode::Max
        };
        let x = Tensor::randn(0f32, 1., (b, c, h, w), &Device::Cpu)?;
        let gy = Tensor::randn(0f32, 1., (b, c, out.0, out.1), &Device::Cpu)?;
        let (y, gx) = fwd_bwd1(&x, &gy, |x| adaptive_pool2d(x, out, mode))?;
        let (yr, gxr) = fwd_bwd1(&x, &gy, |x| adaptive_pool2d_reference(x, out, mode))?;
        let what = format!("{mode:?} {:?} -> {out:?}", x.dims());
        assert_close(&format!("{what} y"), &y, &yr, 1e-6);
        assert_close(&format!("{what} gx"), &gx, &gxr, 1e-6);
    }
    Ok(())
}

#[test]
fn large_and_strided_inputs_match_the_reference() -> R<()> {
    // Enough planes to spread over several rayon tasks, and a non-contiguous input.
    let x = Tensor::randn(0f32, 1., (3, 40, 23, 17), &Device::Cpu)?;
    for mode in [PoolMode::Avg, PoolMode::Max] {
        let y = adaptive_pool2d(&x, (5, 4), mode)?;
        assert_close(
            "large",
            &y,
            &adaptive_pool2d_reference(&x, (5, 4), mode)?,
            1e-6,
        );
        let xt = x.transpose(2, 3)?;
        let y = adaptive_pool2d(&xt, (3, 6), mode)?;
        assert_close(
            "strided",
            &y,
            &adaptive_pool2d_reference(&xt, (3, 6), mode)?,
            1e-6,
        );
    }
    let y = max_pool2d_same(&x.transpose(2, 3)?, 5)?;
    assert_close(
        "same strided",
        &y,
        &max_pool2d_same_reference(&x.transpose(2, 3)?, 5)?,
        0.0,
    );
    Ok(())
}

#[test]
fn backward_matches_f64_reference_autograd() -> R<()> {
    // Our f32 kernel's gradient against candle's autograd of the plain-tensor reference in f64.
    let x = Tensor::randn(0f64, 1., (2, 3, 9, 7), &Device::Cpu)?;
    let gy = Tensor::randn(0f64, 1., (2, 3, 4, 5), &Device::Cpu)?;
    for mode in [PoolMode::Avg, PoolMode::Max] {
        let (_, g64) = fwd_bwd1(&x, &gy, |x| adaptive_pool2d_reference(x, (4, 5), mode))?;
        let x32 = x.to_dtype(DType::F32)?;
        let (_, g32) = fwd_bwd1(&x32, &gy, |x| adaptive_pool2d(x, (4, 5), mode))?;
        assert_close(&format!("{mode:?} vs f64 autograd"), &g32, &g64, 1e-6);
    }
    Ok(())
}

#[test]
fn backward_matches_finite_differences() -> R<()> {
    let dev = Device::Cpu;
    // Distinct values 0.1 apart (a fixed permutation), so a ±1e-2 step never changes an arg-max.
    let n = 2 * 5 * 4;
    let vals: Vec<f32> = (0..n).map(|i| ((i * 17) % n) as f32 * 0.1 - 2.0).collect();
    let x = Tensor::from_vec(vals, (1, 2, 5, 4), &dev)?;
    type Op = Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor>>;
    let ops: Vec<(&str, Op)> = vec![
        ("avg 3x3", Box::new(|x| Ok(adaptive_avg_pool2d(x, (3, 3))?))),
        ("avg 7x2", Box::new(|x| Ok(adaptive_avg_pool2d(x, (7, 2))?))),
        ("max 3x3", Box::new(|x| Ok(adaptive_max_pool2d(x, (3, 3))?))),
        ("max 6x5", Box::new(|x| Ok(adaptive_max_pool2d(x, (6, 5))?))),
        ("same 3", Box::new(|x| Ok(max_pool2d_same(x, 3)?))),
        (
            "avg1d 3",
            Box::new(|x| Ok(adaptive_avg_pool1d(&x.flatten_from(2)?, 3)?)),
        ),
        (
            "max1d 6",
            Box::new(|x| Ok(adaptive_max_pool1d(&x.flatten_from(2)?, 6)?)),
        ),
    ];
    for (name, op) in ops {
        let y = op(&x)?;
        let gy = Tensor::randn(0f32, 1., y.shape(), &dev)?;
        let (_, gx) = fwd_bwd1(&x, &gy, &op)?;
        let fd = finite_diff(&x, &gy, 1e-2, &op)?;
        assert_close(&format!("{name} finite differences"), &gx, &fd, 1e-3);
    }
    Ok(())
}

#[test]
fn nan_propagates_like_pytorch() -> R<()> {
    let x = Tensor::new(&[[[1f32, f32::NAN, 5.], [2., 3., 4.]]], &Device::Cpu)?;
    let x = x.reshape((1, 1, 2, 3))?;
    let y = adaptive_max_pool2d(&x, (1, 1))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    assert!(y[0].is_nan());
    let y = adaptive_avg_pool2d(&x, (1, 3))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    assert!(!y[0].is_nan() && y[1].is_nan() && !y[2].is_nan());
    // The gradient goes to the NaN (PyTorch's `val > max || isnan(val)` arg-max).
    let (_, gx) = fwd_bwd1(
        &x,
        &Tensor::ones((1, 1, 1, 1), DType::F32, &Device::Cpu)?,
        |x| adaptive_max_pool2d(x, (1, 1)),
    )?;
    assert_eq!(
        gx.flatten_all()?.to_vec1::<f32>()?,
        vec![0., 1., 0., 0., 0., 0.]
    );
    Ok(())
}

#[test]
fn bad_input_is_an_error_naming_the_block() -> R<()> {
    let dev = Device::Cpu;
    let f32z = |s: &[usize]| Tensor::zeros(s, DType::F32, &dev).unwrap();
    let x4 = f32z(&[2, 3, 6, 6]);
    let x3 = f32z(&[2, 3, 6]);
    let int = Tensor::zeros((2, 3, 6, 6), DType::U32, &dev)?;
    let int1 = Tensor::zeros((2, 3, 6), DType::I64, &dev)?;
    // The error names the block: the first word of `name`.
    let expect = |name: &str, r: candle_tricks::Result<Tensor>| {
        assert_err(name, r, &[name.split(' ').next().unwrap_or_default()]);
    };
    for (op, mode) in [
        ("adaptive_avg_pool2d", PoolMode::Avg),
        ("adaptive_max_pool2d", PoolMode::Max),
    ] {
        expect(
            &format!("{op} rank 2"),
            adaptive_pool2d(&f32z(&[6, 6]), (2, 2), mode),
        );
        expect(
            &format!("{op} rank 5"),
            adaptive_pool2d(&f32z(&[1, 2, 3, 6, 6]), (2, 2), mode),
        );
        expect(
            &format!("{op} zero batch"),
            adaptive_pool2d(&f32z(&[0, 3, 6, 6]), (2, 2), mode),
        );
        expect(
            &format!("{op} zero height"),
            adaptive_pool2d(&f32z(&[2, 3, 0, 6]), (2, 2), mode),
        );
        expect(
            &format!("{op} zero width"),
            adaptive_pool2d(&f32z(&[3, 6, 0]), (2, 2), mode),
        );
        expect(
            &format!("{op} out 0 rows"),
            adaptive_pool2d(&x4, (0, 2), mode),
        );
        expect(
            &format!("{op} out 0 cols"),
            adaptive_pool2d(&x4, (2, 0), mode),
        );
        expect(&format!("{op} int"), adaptive_pool2d(&int, (2, 2), mode));
        expect(
            &format!("{op} reference int"),
            adaptive_pool2d_reference(&int, (2, 2), mode),
        );
        expect(
            &format!("{op} reference out 0"),
            adaptive_pool2d_reference(&x4, (0, 1), mode),
        );
    }
    for (op, mode) in [
        ("adaptive_avg_pool1d", PoolMode::Avg),
        ("adaptive_max_pool1d", PoolMode::Max),
    ] {
        let p = |x: &Tensor, o: usize| match mode {
            PoolMode::Avg => adaptive_avg_pool1d(x, o),
            PoolMode::Max => adaptive_max_pool1d(x, o),
        };
        expect(&format!("{op} rank 4"), p(&x4, 2));
        expect(&format!("{op} rank 1"), p(&f32z(&[6]), 2));
        expect(&format!("{op} zero length"), p(&f32z(&[2, 3, 0]), 2));
        expect(&format!("{op} out 0"), p(&x3, 0));
        expect(&format!("{op} int"), p(&int1, 2));
        expect(
            &format!("{op} reference out 0"),
            adaptive_pool1d_reference(&x3, 0, mode),
        );
    }
    expect("max_pool2d_same even k", max_pool2d_same(&x4, 4));
    expect("max_pool2d_same k 0", max_pool2d_same(&x4, 0));
    expect("max_pool2d_same rank 3", max_pool2d_same(&x3, 3));
    expect(
        "max_pool2d_same zero dim",
        max_pool2d_same(&f32z(&[2, 0, 6, 6]), 3),
    );
    expect("max_pool2d_same int", max_pool2d_same(&int, 3));
    expect(
        "max_pool2d_same reference even k",
        max_pool2d_same_reference(&x4, 2),
    );

    let r = AdaptivePool2d::new((0, 1), PoolMode::Avg);
    assert_err("AdaptivePool2d out 0", r, &["AdaptivePool2d"]);
    let r = AdaptivePool2d::new((1, 1), PoolMode::Avg)?.forward(&int);
    assert_err("AdaptivePool2d int", r, &["adaptive_avg_pool2d"]);

    // Spatial pyramid pooling.
    for levels in [vec![], vec![2, 0, 1]] {
        let r = SpatialPyramidPooling::new(levels.clone(), PoolMode::Max);
        assert_err(&format!("{levels:?}"), r, &["SpatialPyramidPooling"]);
    }
    let spp = SpatialPyramidPooling::new(vec![4, 2, 1], PoolMode::Avg)?;
    let inputs = [
        ("level > H", f32z(&[2, 3, 3, 8])),
        ("level > W", f32z(&[2, 3, 8, 3])),
        ("rank 3", f32z(&[3, 8, 8])),
        ("zero channels", f32z(&[2, 0, 8, 8])),
        ("int", Tensor::zeros((2, 3, 8, 8), DType::U8, &dev)?),
    ];
    for (what, x) in inputs {
        assert_err(what, spp.forward(&x), &["SpatialPyramidPooling"]);
    }

    // SPPF.
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    for (c1, c2, k) in [(1, 4, 5), (4, 0, 5), (4, 4, 4), (4, 4, 0)] {
        let r = sppf(c1, c2, k, vb.pp("x"));
        assert_err(&format!("({c1}, {c2}, {k})"), r, &["Sppf"]);
    }
    let block = sppf(4, 4, 5, vb.pp("ok"))?;
    let inputs = [
        ("channels", f32z(&[2, 3, 8, 8])),
        ("rank 3", f32z(&[4, 8, 8])),
        ("zero dim", f32z(&[2, 4, 0, 8])),
        ("dtype", Tensor::zeros((2, 4, 8, 8), DType::F16, &dev)?),
        ("int", Tensor::zeros((2, 4, 8, 8), DType::I64, &dev)?),
    ];
    for (what, x) in inputs {
        assert_err(what, block.forward_t(&x, false), &["Sppf"]);
    }
    // A checkpoint with a wrong-shaped tensor.
    let mut ts = HashMap::new();
    ts.insert("cv1.conv.weight".to_string(), f32z(&[3, 4, 1, 1]));
    let vb = VarBuilder::from_tensors(ts, DType::F32, &dev);
    assert_err("checkpoint", sppf(4, 4, 5, vb), &["Sppf", "cv1"]);
    Ok(())
}
