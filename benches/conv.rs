//! Convolution benches: our kernels vs candle's own ops in the same criterion group.
#[path = "common/alloc.rs"]
mod alloc;
use criterion::{criterion_group, criterion_main, Criterion};

fn depthwise(c: &mut Criterion) {
    // MobileNetV2 depthwise layers, 3x3, padding 1, stride 1 and 2: our fused kernel against
    // candle's grouped `Tensor::conv2d(.., groups = C)` (and candle autograd through it).
    use candle_core::{Device, Tensor, Var};
    use candle_tricks::conv::Padding;
    use candle_tricks::ops::{depthwise_conv2d, DepthwiseConv2dConfig};
    use criterion::SamplingMode;
    use std::time::Duration;

    let dev = Device::Cpu;
    let shapes = [(1, 32, 112, 112), (8, 144, 56, 56), (8, 384, 14, 14)];
    let cases: Vec<_> = shapes
        .iter()
        .flat_map(|&shape| [1usize, 2].map(move |s| (shape, s)))
        .map(|((b, ch, h, w), s)| {
            let x = Tensor::randn(0f32, 1., (b, ch, h, w), &dev).expect("input");
            let k = Tensor::randn(0f32, 1., (ch, 1, 3, 3), &dev).expect("weight");
            (format!("{b}x{ch}x{h}x{w}_s{s}"), x, k, ch, s)
        })
        .collect();
    let cfg = |s: usize| {
        DepthwiseConv2dConfig::default()
            .with_stride(s)
            .with_padding(Padding::Explicit(1))
    };

    let mut g = c.benchmark_group("depthwise_fwd");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, x, k, ch, s) in &cases {
        let (ch, s) = (*ch, *s);
        g.bench_function(format!("ours/{name}"), |bch| {
            bch.iter(|| depthwise_conv2d(x, k, cfg(s)).expect("ours"))
        });
        g.bench_function(format!("candle/{name}"), |bch| {
            bch.iter(|| x.conv2d(k, 1, s, 1, ch).expect("candle"))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("depthwise_fwd_bwd");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, x, k, ch, s) in &cases {
        let (ch, s) = (*ch, *s);
        let xv = Var::from_tensor(x).expect("var");
        let kv = Var::from_tensor(k).expect("var");
        g.bench_function(format!("ours/{name}"), |bch| {
            bch.iter(|| {
                let y = depthwise_conv2d(&xv, &kv, cfg(s)).expect("ours");
                y.sum_all().and_then(|l| l.backward()).expect("backward")
            })
        });
        g.bench_function(format!("candle/{name}"), |bch| {
            bch.iter(|| {
                let y = xv.conv2d(&kv, 1, s, 1, ch).expect("candle");
                y.sum_all().and_then(|l| l.backward()).expect("backward")
            })
        });
    }
    g.finish();
}

fn conv3d(c: &mut Criterion) {
    // A 3x3x3 layer on a 32^3 volume (16 -> 16, stride 1; 16 -> 32, stride 2): our vol2col + gemm
    // op against the naive composition (one candle conv2d per depth tap, autograd through it).
    use candle_core::{Device, Tensor, Var};
    use candle_tricks::ops::{conv3d as ours, conv3d_reference, Conv3dConfig};
    use criterion::SamplingMode;

    let dev = Device::Cpu;
    let cases: Vec<_> = [(16usize, 1usize), (32, 2)]
        .into_iter()
        .map(|(cout, s)| {
            let x = Tensor::randn(0f32, 1., (1, 16, 32, 32, 32), &dev).expect("input");
            let w = Tensor::randn(0f32, 0.1, (cout, 16, 3, 3, 3), &dev).expect("weight");
            let cfg = Conv3dConfig::default().with_stride(s);
            (format!("1x16x32x32x32_k3_16to{cout}_s{s}"), x, w, cfg)
        })
        .collect();

    let mut g = c.benchmark_group("conv3d");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (name, x, w, cfg) in &cases {
        let cfg = *cfg;
        g.bench_function(format!("fwd/ours/{name}"), |b| {
            b.iter(|| ours(x, w, cfg).expect("ours"))
        });
        g.bench_function(format!("fwd/candle_composition/{name}"), |b| {
            b.iter(|| conv3d_reference(x, w, cfg).expect("composition"))
        });
        let xv = Var::from_tensor(x).expect("var");
        let wv = Var::from_tensor(w).expect("var");
        g.bench_function(format!("fwd_bwd/ours/{name}"), |b| {
            b.iter(|| {
                let y = ours(&xv, &wv, cfg).expect("ours");
                y.sum_all().and_then(|l| l.backward()).expect("backward")
            })
        });
        g.bench_function(format!("fwd_bwd/candle_composition/{name}"), |b| {
            b.iter(|| {
                let y = conv3d_reference(&xv, &wv, cfg).expect("composition");
                y.sum_all().and_then(|l| l.backward()).expect("backward")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, depthwise, conv3d);
criterion_main!(benches);
