//! Normalization benches: our fused kernels vs candle's composition and fused forward, same run.
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

criterion_group!(benches, layer_rms);
criterion_main!(benches);
