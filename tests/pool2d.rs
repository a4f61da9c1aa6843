//! Max / average pooling (2-D and 3-D, every PyTorch option) and adaptive 3-D pooling: our
//! kernel and the plain-tensor composition against PyTorch fixtures
//! (tests/fixtures/gen_pool2d.py), finite differences of every backward, half precision, the
//! layers, and errors.

use candle_core::{DType, Device, Module, Tensor};
use candle_tricks::ops::{with_backend, Backend};
use candle_tricks::pool::{
    adaptive_avg_pool3d, adaptive_max_pool3d, avg_pool2d, avg_pool3d, max_pool2d, max_pool3d,
    AdaptiveAvgPool3d, AdaptiveMaxPool3d, AvgPool2d, AvgPool3d, MaxPool2d, MaxPool3d, Pool2dConfig,
    Pool3dConfig, PoolConfig,
};

mod common;
use common::*;

/// A pool of one fixture case: the op with its options.
#[derive(Debug, Clone)]
enum Case {
    Max2(Pool2dConfig),
    Avg2(Pool2dConfig),
    Max3(Pool3dConfig),
    Avg3(Pool3dConfig),
    AdaptiveMax3([usize; 3]),
    AdaptiveAvg3([usize; 3]),
}

impl Case {
    fn run(&self, x: &Tensor) -> candle_tricks::Result<Tensor> {
        match self {
            Case::Max2(c) => max_pool2d(x, c),
            Case::Avg2(c) => avg_pool2d(x, c),
            Case::Max3(c) => max_pool3d(x, c),
            Case::Avg3(c) => avg_pool3d(x, c),
            Case::AdaptiveMax3(o) => adaptive_max_pool3d(x, *o),
            Case::AdaptiveAvg3(o) => adaptive_avg_pool3d(x, *o),
        }
    }
}

/// The options stored as int64 by gen_pool2d.py (see its docstring).
fn config<const N: usize>(v: &[i64]) -> PoolConfig<N> {
    let arr = |i: usize| -> [usize; N] { std::array::from_fn(|j| v[i * N + j] as usize) };
    let mut c = PoolConfig::new(arr(0))
        .with_stride(arr(1))
        .with_padding(arr(2))
        .with_dilation(arr(3))
        .with_ceil_mode(v[4 * N] != 0)
        .with_count_include_pad(v[4 * N + 1] != 0);
    if v[4 * N + 2] != 0 {
        c = c.with_divisor_override(v[4 * N + 2] as usize);
    }
    c
}

/// Every fixture case, by name.
fn cases(f: &Fixtures) -> Vec<(String, Case)> {
    let mut out: Vec<(String, Case)> = f
        .keys()
        .filter_map(|k| k.strip_suffix(".cfg"))
        .map(|name| {
            let v = field(f, name, "cfg").to_vec1::<i64>().expect("cfg");
            let o = || [v[0] as usize, v[1] as usize, v[2] as usize];
            let case = match name.split('.').next() {
                Some("max2") => Case::Max2(config(&v)),
                Some("avg2") => Case::Avg2(config(&v)),
                Some("max3") => Case::Max3(config(&v)),
                Some("avg3") => Case::Avg3(config(&v)),
                Some("amax3") => Case::AdaptiveMax3(o()),
                Some("aavg3") => Case::AdaptiveAvg3(o()),
                other => panic!("unknown fixture kind {other:?}"),
            };
            (name.to_string(), case)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(out.len(), 29, "fixture cases");
    out
}

#[test]
fn kernel_matches_pytorch_forward_and_backward() -> R<()> {
    let f = fixtures("pool2d");
    for (name, case) in cases(&f) {
        let (x, gy) = (field(&f, &name, "x"), field(&f, &name, "gy"));
        let (y, gx) = fwd_bwd1(x, gy, |x| case.run(x))?;
        assert_close(&format!("{name} y"), &y, field(&f, &name, "y"), 1e-6);
        assert_close(&format!("{name} gx"), &gx, field(&f, &name, "gx"), 1e-6);
    }
    Ok(())
}

#[test]
fn composition_matches_pytorch_forward_and_backward() -> R<()> {
    let f = fixtures("pool2d");
    for (name, case) in cases(&f) {
        let (x, gy) = (field(&f, &name, "x"), field(&f, &name, "gy"));
        let (y, gx) = with_backend(Backend::Composition, || fwd_bwd1(x, gy, |x| case.run(x)))?;
        assert_close(&format!("{name} y"), &y, field(&f, &name, "y"), 1e-6);
        assert_close(&format!("{name} gx"), &gx, field(&f, &name, "gx"), 1e-6);
    }
    Ok(())
}

/// Distinct values 0.1 apart in a shuffled order: finite differences of step 1e-2 never swap
/// a window's maximum.
fn spaced(shape: &[usize]) -> R<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % n) as f32 * 0.1 - 1.0)
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

#[test]
fn backward_matches_finite_differences() -> R<()> {
    let f = fixtures("pool2d");
    for (name, case) in cases(&f) {
        let x = spaced(field(&f, &name, "x").dims())?;
        let gy = field(&f, &name, "gy");
        let (_, gx) = fwd_bwd1(&x, gy, |x| case.run(x))?;
        let fd = finite_diff(&x, gy, 1e-2, |x| case.run(x))?;
        assert_matches_fd(&name, &gx, &fd, 2e-3)?;
    }
    Ok(())
}

#[test]
fn half_precision_matches_f32_on_the_rounded_input() -> R<()> {
    let f = fixtures("pool2d");
    for (name, case) in cases(&f) {
        let (x, gy) = (field(&f, &name, "x"), field(&f, &name, "gy"));
        for dt in [DType::F16, DType::BF16] {
            let (xh, gyh) = (x.to_dtype(dt)?, gy.to_dtype(dt)?);
            let (y, gx) = fwd_bwd1(&xh, &gyh, |x| case.run(x))?;
            assert_eq!((y.dtype(), gx.dtype()), (dt, dt), "{name}");
            let up = |t: &Tensor| t.to_dtype(DType::F32);
            let (y32, gx32) = fwd_bwd1(&up(&xh)?, &up(&gyh)?, |x| case.run(x))?;
            let tol = if dt == DType::F16 { 2e-3 } else { 1e-2 };
            assert_close(&format!("{name} {dt:?} y"), &y, &y32, tol);
            assert_close(&format!("{name} {dt:?} gx"), &gx, &gx32, tol);
        }
    }
    Ok(())
}

#[test]
fn max_gradient_goes_to_the_first_maximum_and_nan_propagates() -> R<()> {
    // Ties: the first (row-major) maximum of each 2x2 window gets the whole gradient.
    let x = Tensor::new(&[[[[1f32, 1.], [1., 1.]]]], &Device::Cpu)?;
    let gy = Tensor::ones((1, 1, 1, 1), DType::F32, &Device::Cpu)?;
    let cfg = Pool2dConfig::new([2, 2]);
    let (_, gx) = fwd_bwd1(&x, &gy, |x| max_pool2d(x, &cfg))?;
    assert_eq!(gx.flatten_all()?.to_vec1::<f32>()?, vec![1., 0., 0., 0.]);
    // A NaN wins its window, and PyTorch routes the gradient to the last NaN.
    let x = Tensor::new(&[[[[f32::NAN, 5.], [f32::NAN, 1.]]]], &Device::Cpu)?;
    let (y, gx) = fwd_bwd1(&x, &gy, |x| max_pool2d(x, &cfg))?;
    assert!(y.flatten_all()?.to_vec1::<f32>()?[0].is_nan());
    assert_eq!(gx.flatten_all()?.to_vec1::<f32>()?, vec![0., 0., 1., 0.]);
    Ok(())
}

#[test]
fn layers_equal_the_functions() -> R<()> {
    let x4 = Tensor::randn(0f32, 1., (2, 3, 9, 8), &Device::Cpu)?;
    let x5 = Tensor::randn(0f32, 1., (2, 3, 5, 9, 8), &Device::Cpu)?;
    let c2 = Pool2dConfig::new([3, 3])
        .with_stride([2, 2])
        .with_padding([1, 1])
        .with_ceil_mode(true);
    let c3 = Pool3dConfig::new([1, 2, 2]).with_count_include_pad(false);
    let same = |a: Tensor, b: Tensor| assert_close("layer", &a, &b, 0.0);
    same(MaxPool2d::new(c2)?.forward(&x4)?, max_pool2d(&x4, &c2)?);
    same(AvgPool2d::new(c2)?.forward(&x4)?, avg_pool2d(&x4, &c2)?);
    same(MaxPool3d::new(c3)?.forward(&x5)?, max_pool3d(&x5, &c3)?);
    same(AvgPool3d::new(c3)?.forward(&x5)?, avg_pool3d(&x5, &c3)?);
    let o = [2, 3, 1];
    same(
        AdaptiveAvgPool3d::new(o)?.forward(&x5)?,
        adaptive_avg_pool3d(&x5, o)?,
    );
    same(
        AdaptiveMaxPool3d::new(o)?.forward(&x5)?,
        adaptive_max_pool3d(&x5, o)?,
    );
    assert_eq!(MaxPool2d::new(c2)?.config(), &c2);
    Ok(())
}

#[test]
fn bad_input_names_the_op() -> R<()> {
    let x = Tensor::zeros((1, 2, 5, 5), DType::F32, &Device::Cpu)?;
    let k = |k| Pool2dConfig::new([k, k]);
    assert_err_names(max_pool2d(&x, &k(0)), "max_pool2d", "kernel_size[0]");
    assert_err_names(
        max_pool2d(&x, &k(2).with_stride([1, 0])),
        "max_pool2d",
        "stride[1]",
    );
    assert_err_names(
        max_pool2d(&x, &k(3).with_padding([2, 0])),
        "max_pool2d",
        "half the kernel",
    );
    assert_err_names(max_pool2d(&x, &k(6)), "max_pool2d", "below 1");
    assert_err_names(
        avg_pool2d(&x.flatten_from(2)?, &k(2)),
        "avg_pool2d",
        "(B, C, H, W)",
    );
    assert_err_names(
        avg_pool2d(&x.to_dtype(DType::U32)?, &k(2)),
        "avg_pool2d",
        "f32",
    );
    assert_err_names(MaxPool2d::new(k(0)), "MaxPool2d", "kernel_size");
    assert_err_names(
        AvgPool3d::new(Pool3dConfig::new([2, 2, 2]).with_dilation([2, 1, 1])),
        "AvgPool3d",
        "dilation",
    );
    assert_err_names(
        AdaptiveMaxPool3d::new([1, 0, 1]),
        "AdaptiveMaxPool3d",
        "output_size[1]",
    );
    let x5 = Tensor::zeros((1, 2, 3, 3, 3), DType::F32, &Device::Cpu)?;
    assert_err_names(
        adaptive_avg_pool3d(&x5, [0, 1, 1]),
        "adaptive_avg_pool3d",
        "output_size[0]",
    );
    assert_err_names(
        adaptive_avg_pool3d(&x, [1, 1, 1]),
        "adaptive_avg_pool3d",
        "(B, C, D, H, W)",
    );
    // Sizes that overflow: a kernel of usize::MAX has no output; a huge adaptive grid is refused
    // before any allocation.
    assert_err_names(max_pool2d(&x, &k(usize::MAX)), "max_pool2d", "below 1");
    assert_err_names(
        adaptive_max_pool3d(&x5, [1 << 30, 1 << 30, 1 << 30]),
        "adaptive_max_pool3d",
        "output",
    );
    Ok(())
}
