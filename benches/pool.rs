//! Pooling benches: our fused max / average pools (forward + backward) against candle's
//! `max_pool2d` / `avg_pool2d` and their autograd (2-D), or our plain-tensor composition (3-D,
//! where candle has no pool), same run. Names `{op}/{impl}/{shape}`.
#[path = "common/alloc.rs"]
mod alloc;
use candle_core::{Device, Tensor, Var};
use candle_tricks::ops::{self, Pool2dConfig, Pool3dConfig};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use std::time::Duration;

fn var(shape: &[usize]) -> Var {
    let x = Tensor::randn(0f32, 1., shape, &Device::Cpu).expect("x");
    Var::from_tensor(&x).expect("var")
}

fn backward(y: Tensor) {
    y.sum_all().and_then(|l| l.backward()).expect("backward");
}

/// `x` with `p` columns of `-inf` on both sides of axes 2 and 3 (candle's pools have no padding).
fn pad_neg_inf(x: &Tensor, p: usize) -> Tensor {
    let mut x = x.clone();
    for axis in [2, 3] {
        let mut dims = x.dims().to_vec();
        dims[axis] = p;
        let pad = Tensor::full(f32::NEG_INFINITY, dims, x.device()).expect("pad");
        x = Tensor::cat(&[&pad, &x, &pad], axis).expect("cat");
    }
    x
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g
}

fn pool2d(c: &mut Criterion) {
    // ResNet's stem pool, 3x3 / 2 with padding 1 on (32, 64, 112, 112): candle's `max_pool2d`
    // has no padding and no backward for stride != kernel, so the baseline is the composition.
    let x = var(&[32, 64, 112, 112]);
    let x = x.as_tensor();
    let stem = Pool2dConfig::new([3, 3])
        .with_stride([2, 2])
        .with_padding([1, 1]);
    let shape = "stem_k3s2p1_32x64x112x112";
    let mut g = group(c, "max_pool2d");
    g.bench_function(format!("ours_fwd_bwd/{shape}"), |b| {
        b.iter(|| backward(ops::max_pool2d(x, &stem).expect("ours")))
    });
    g.bench_function(format!("composition_fwd_bwd/{shape}"), |b| {
        b.iter(|| backward(ops::max_pool2d_reference(x, &stem).expect("composition")))
    });
    g.bench_function(format!("candle_fwd/{shape}"), |b| {
        b.iter(|| {
            pad_neg_inf(x, 1)
                .max_pool2d_with_stride(3, 2)
                .expect("candle")
        })
    });
    g.bench_function(format!("ours_fwd/{shape}"), |b| {
        b.iter(|| ops::max_pool2d(x, &stem).expect("ours"))
    });

    // 2x2 / 2 on (32, 128, 56, 56): candle's own pools (native kernels, and for max a backward
    // that scales the gradient) and the composition.
    let x = var(&[32, 128, 56, 56]);
    let x = x.as_tensor();
    let half = Pool2dConfig::new([2, 2]);
    let shape = "k2s2_32x128x56x56";
    g.bench_function(format!("ours_fwd_bwd/{shape}"), |b| {
        b.iter(|| backward(ops::max_pool2d(x, &half).expect("ours")))
    });
    g.bench_function(format!("candle_fwd_bwd/{shape}"), |b| {
        b.iter(|| backward(x.max_pool2d(2).expect("candle")))
    });
    g.bench_function(format!("composition_fwd_bwd/{shape}"), |b| {
        b.iter(|| backward(ops::max_pool2d_reference(x, &half).expect("composition")))
    });
    g.finish();
    let mut g = group(c, "avg_pool2d");
    g.bench_function(format!("ours_fwd_bwd/{shape}"), |b| {
        b.iter(|| backward(ops::avg_pool2d(x, &half).expect("ours")))
    });
    g.bench_function(format!("candle_fwd_bwd/{shape}"), |b| {
        b.iter(|| backward(x.avg_pool2d(2).expect("candle")))
    });
    g.bench_function(format!("composition_fwd_bwd/{shape}"), |b| {
        b.iter(|| backward(ops::avg_pool2d_reference(x, &half).expect("composition")))
    });
    g.finish();
}

fn pool3d(c: &mut Criterion) {
    // 2x2x2 / 2 on a (4, 32, 32, 64, 64) volume; candle has no 3-D pool: the composition.
    let x = var(&[4, 32, 32, 64, 64]);
    let x = x.as_tensor();
    let cube = Pool3dConfig::new([2, 2, 2]);
    let shape = "k2s2_4x32x32x64x64";
    let mut g = group(c, "max_pool3d");
    g.bench_function(format!("ours_fwd_bwd/{shape}"), |b| {
        b.iter(|| backward(ops::max_pool3d(x, &cube).expect("ours")))
    });
    g.bench_function(format!("composition_fwd_bwd/{shape}"), |b| {
        b.iter(|| backward(ops::max_pool3d_reference(x, &cube).expect("composition")))
    });
    g.finish();
    let mut g = group(c, "avg_pool3d");
    g.bench_function(format!("ours_fwd_bwd/{shape}"), |b| {
        b.iter(|| backward(ops::avg_pool3d(x, &cube).expect("ours")))
    });
    g.bench_function(format!("composition_fwd_bwd/{shape}"), |b| {
        b.iter(|| backward(ops::avg_pool3d_reference(x, &cube).expect("composition")))
    });
    g.finish();
}

criterion_group!(benches, pool2d, pool3d);
criterion_main!(benches);
