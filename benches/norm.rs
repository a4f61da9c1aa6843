//! Normalization benches: our fused kernels vs candle's composition and fused forward, same run.
#[path = "common/alloc.rs"]
mod alloc;
use criterion::{criterion_group, criterion_main, Criterion};

fn layer_rms(c: &mut Criterion) {
    // Layer and RMS norm over the last dim of a (32, 512, 768) f32 activation: our fused op
    // (forward, and forward + backward) against candle-nn's fused forward-only op and against
    // the differentiable composition of candle ops (our `*_reference`: mean, sub, sqr, sqrt, div).
    use candle_core::{Device, Tensor, Var};
    use candle_tricks::ops;
    use criterion::SamplingMode;
    use std::time::Duration;

    let dev = Device::Cpu;
    let (b, t, d) = (32usize, 512usize, 768usize);
    let name = format!("{b}x{t}x{d}");
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (b, t, d), &dev).expect("x")).expect("var");
    let w = Var::from_tensor(&Tensor::randn(1f32, 0.1, d, &dev).expect("w")).expect("var");
    let bias = Var::from_tensor(&Tensor::randn(0f32, 0.1, d, &dev).expect("b")).expect("var");
    let (x, w, bias) = (x.as_tensor(), w.as_tensor(), bias.as_tensor());
    let eps = 1e-5;
    let backward = |y: Tensor| y.sum_all().and_then(|l| l.backward()).expect("backward");

    let mut g = c.benchmark_group("layer_norm");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.bench_function(format!("ours_fwd/{name}"), |bch| {
        bch.iter(|| ops::layer_norm(x, Some(w), Some(bias), eps).expect("ours"))
    });
    g.bench_function(format!("candle_fused_fwd/{name}"), |bch| {
        bch.iter(|| candle_nn::ops::layer_norm(x, w, bias, eps as f32).expect("candle"))
    });
    g.bench_function(format!("candle_composition_fwd_bwd/{name}"), |bch| {
        bch.iter(|| {
            backward(ops::layer_norm_reference(x, Some(w), Some(bias), eps).expect("composition"))
        })
    });
    g.bench_function(format!("ours_fwd_bwd/{name}"), |bch| {
        bch.iter(|| backward(ops::layer_norm(x, Some(w), Some(bias), eps).expect("ours")))
    });
    g.finish();

    let mut g = c.benchmark_group("rms_norm");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.bench_function(format!("ours_fwd/{name}"), |bch| {
        bch.iter(|| ops::rms_norm(x, Some(w), eps).expect("ours"))
    });
    g.bench_function(format!("candle_fused_fwd/{name}"), |bch| {
        bch.iter(|| candle_nn::ops::rms_norm(x, w, eps as f32).expect("candle"))
    });
    g.bench_function(format!("candle_composition_fwd_bwd/{name}"), |bch| {
        bch.iter(|| backward(ops::rms_norm_reference(x, Some(w), eps).expect("composition")))
    });
    g.bench_function(format!("ours_fwd_bwd/{name}"), |bch| {
        bch.iter(|| backward(ops::rms_norm(x, Some(w), eps).expect("ours")))
    });
    g.finish();
}

fn group_norm(c: &mut Criterion) {
    // Group norm (32 groups) of a (16, 256, 56, 56) f32 activation: our fused op (forward, and
    // forward + backward) against candle-nn's GroupNorm, a differentiable composition of candle
    // ops (reshape, mean, sub, sqr, sqrt, div, affine).
    use candle_core::{Device, Module, Tensor, Var};
    use candle_tricks::ops;
    use criterion::SamplingMode;
    use std::time::Duration;

    let dev = Device::Cpu;
    let (n, ch, h, w_) = (16usize, 256usize, 56usize, 56usize);
    let groups = 32;
    let name = format!("{n}x{ch}x{h}x{w_}_g{groups}");
    let x =
        Var::from_tensor(&Tensor::randn(0f32, 1., (n, ch, h, w_), &dev).expect("x")).expect("var");
    let w = Var::from_tensor(&Tensor::randn(1f32, 0.1, ch, &dev).expect("w")).expect("var");
    let bias = Var::from_tensor(&Tensor::randn(0f32, 0.1, ch, &dev).expect("b")).expect("var");
    let (x, w, bias) = (x.as_tensor(), w.as_tensor(), bias.as_tensor());
    let eps = 1e-5;
    let candle_gn = candle_nn::GroupNorm::new(w.clone(), bias.clone(), ch, groups, eps)
        .expect("candle group norm");
    let backward = |y: Tensor| y.sum_all().and_then(|l| l.backward()).expect("backward");

    let mut g = c.benchmark_group("group_norm");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.bench_function(format!("ours_fwd/{name}"), |bch| {
        bch.iter(|| ops::group_norm(x, groups, Some(w), Some(bias), eps).expect("ours"))
    });
    g.bench_function(format!("candle_composition_fwd/{name}"), |bch| {
        bch.iter(|| candle_gn.forward(x).expect("candle"))
    });
    g.bench_function(format!("candle_composition_fwd_bwd/{name}"), |bch| {
        bch.iter(|| backward(candle_gn.forward(x).expect("candle")))
    });
    g.bench_function(format!("ours_fwd_bwd/{name}"), |bch| {
        bch.iter(|| backward(ops::group_norm(x, groups, Some(w), Some(bias), eps).expect("ours")))
    });
    g.finish();
}

fn batch_norm(c: &mut Criterion) {
    // BatchNorm in train mode (batch statistics, running-stat update) on a (16, 256, 56, 56) f32
    // activation: our fused kernel vs the differentiable candle composition, fwd and fwd+bwd.
    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::{VarBuilder, VarMap};
    use candle_tricks::norm::{batch_norm, BatchNormConfig};
    use criterion::SamplingMode;
    use std::time::Duration;

    let dev = Device::Cpu;
    let shape = (16usize, 256usize, 56usize, 56usize);
    let name = format!("{}x{}x{}x{}", shape.0, shape.1, shape.2, shape.3);
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., shape, &dev).expect("x")).expect("var");
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
    let bn = batch_norm(shape.1, BatchNormConfig::default(), vb).expect("bn");
    let backward = |y: Tensor| y.sum_all().and_then(|l| l.backward()).expect("backward");

    let mut g = c.benchmark_group("batch_norm_train");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.bench_function(format!("ours_fwd/{name}"), |bch| {
        bch.iter(|| bn.forward_train_eval(&x, true).expect("ours"))
    });
    g.bench_function(format!("candle_composition_fwd/{name}"), |bch| {
        bch.iter(|| bn.forward_reference(&x, true).expect("composition"))
    });
    g.bench_function(format!("ours_fwd_bwd/{name}"), |bch| {
        bch.iter(|| backward(bn.forward_train_eval(&x, true).expect("ours")))
    });
    g.bench_function(format!("candle_composition_fwd_bwd/{name}"), |bch| {
        bch.iter(|| backward(bn.forward_reference(&x, true).expect("composition")))
    });
    g.finish();
}

fn softmax(c: &mut Criterion) {
    // Softmax over the last dim of attention scores (8, 12, 197, 197) (ViT-B/16) and of a
    // (32, 512, 768) activation, f32: our fused op (forward, and forward + backward) against
    // candle-nn's fused forward-only op and against the differentiable composition of candle
    // ops (our `softmax_last_dim_reference`: max, sub, exp, sum, div).
    use candle_core::{Device, Tensor, Var};
    use candle_tricks::ops;
    use criterion::SamplingMode;
    use std::time::Duration;

    let dev = Device::Cpu;
    let backward = |y: Tensor| y.sum_all().and_then(|l| l.backward()).expect("backward");
    let mut g = c.benchmark_group("softmax_last_dim");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for shape in [&[8usize, 12, 197, 197][..], &[32, 512, 768]] {
        let name = shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        let x = Var::from_tensor(&Tensor::randn(0f32, 2., shape, &dev).expect("x")).expect("var");
        let x = x.as_tensor();
        // A random upstream gradient: sum(y) alone has a zero gradient through a softmax.
        let c = Tensor::randn(0f32, 1., shape, &dev).expect("c");
        g.bench_function(format!("ours_fwd/{name}"), |bch| {
            bch.iter(|| ops::softmax_last_dim(x).expect("ours"))
        });
        g.bench_function(format!("candle_fused_fwd/{name}"), |bch| {
            bch.iter(|| candle_nn::ops::softmax_last_dim(x).expect("candle"))
        });
        g.bench_function(format!("candle_composition_fwd_bwd/{name}"), |bch| {
            bch.iter(|| {
                let y = ops::softmax_last_dim_reference(x).expect("composition");
                backward((y * &c).expect("mul"))
            })
        });
        g.bench_function(format!("ours_fwd_bwd/{name}"), |bch| {
            bch.iter(|| backward((ops::softmax_last_dim(x).expect("ours") * &c).expect("mul")))
        });
    }
    g.finish();
}

fn gelu(c: &mut Criterion) {
    // Exact GELU on a ViT MLP activation (32 images, 65 tokens, hidden 4·192 = 768), f32: our
    // fused op against candle's `gelu_erf` (what `gelu_erf_reference` runs), forward and
    // forward + backward.
    use candle_core::{Device, Tensor, Var};
    use candle_tricks::ops;
    use criterion::SamplingMode;
    use std::time::Duration;

    let dev = Device::Cpu;
    let backward = |y: Tensor| y.sum_all().and_then(|l| l.backward()).expect("backward");
    let mut g = c.benchmark_group("gelu_erf");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let x =
        Var::from_tensor(&Tensor::randn(0f32, 2., (32, 65, 768), &dev).expect("x")).expect("var");
    let x = x.as_tensor();
    let name = "32x65x768";
    g.bench_function(format!("ours_fwd/{name}"), |b| {
        b.iter(|| ops::gelu_erf(x).expect("ours"))
    });
    g.bench_function(format!("candle_fwd/{name}"), |b| {
        b.iter(|| ops::gelu_erf_reference(x).expect("candle"))
    });
    g.bench_function(format!("ours_fwd_bwd/{name}"), |b| {
        b.iter(|| backward(ops::gelu_erf(x).expect("ours")))
    });
    g.bench_function(format!("candle_fwd_bwd/{name}"), |b| {
        b.iter(|| backward(ops::gelu_erf_reference(x).expect("candle")))
    });
    g.finish();
}

criterion_group!(benches, layer_rms, group_norm, batch_norm, softmax, gelu);
criterion_main!(benches);
