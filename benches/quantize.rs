//! Fake-quantization benches: our fused kernel vs its composition of candle ops, same run.
#[path = "common/alloc.rs"]
mod alloc;
use criterion::{criterion_group, criterion_main, Criterion};

fn fake_quantize(c: &mut Criterion) {
    // A (64, 256, 28, 28) f32 activation fake-quantized per tensor (QUInt8, reduce_range), and a
    // (256, 256, 3, 3) weight per output channel (QInt8 symmetric): forward, and forward +
    // backward (the straight-through mask), against the composition other devices run (the
    // `*_reference` functions: multiply, rounding trick, clamp, comparison masks).
    use candle_core::{Device, Tensor, Var};
    use candle_tricks::ops;
    use criterion::SamplingMode;
    use std::time::Duration;

    let dev = Device::Cpu;
    let act = Var::from_tensor(&Tensor::randn(0f32, 1., (64, 256, 28, 28), &dev).expect("x"))
        .expect("var");
    let weight = Var::from_tensor(&Tensor::randn(0f32, 0.05, (256, 256, 3, 3), &dev).expect("w"))
        .expect("var");
    let (act, weight) = (act.as_tensor(), weight.as_tensor());
    let scales: Vec<f32> = (0..256).map(|c| 0.001 + 1e-5 * c as f32).collect();
    let zps = vec![0i32; 256];
    let backward = |y: Tensor| y.sum_all().and_then(|l| l.backward()).expect("backward");
    let per_tensor = |x: &Tensor| ops::fake_quantize_per_tensor_affine(x, 0.03, 64, 0, 127);
    let per_tensor_ref =
        |x: &Tensor| ops::fake_quantize_per_tensor_affine_reference(x, 0.03, 64, 0, 127);
    let per_channel =
        |x: &Tensor| ops::fake_quantize_per_channel_affine(x, &scales, &zps, 0, -128, 127);
    let per_channel_ref = |x: &Tensor| {
        ops::fake_quantize_per_channel_affine_reference(x, &scales, &zps, 0, -128, 127)
    };

    let mut g = c.benchmark_group("fake_quantize");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let act_name = "per_tensor_64x256x28x28";
    g.bench_function(format!("ours_fwd/{act_name}"), |b| {
        b.iter(|| per_tensor(act).expect("ours"))
    });
    g.bench_function(format!("composition_fwd/{act_name}"), |b| {
        b.iter(|| per_tensor_ref(act).expect("composition"))
    });
    g.bench_function(format!("ours_fwd_bwd/{act_name}"), |b| {
        b.iter(|| backward(per_tensor(act).expect("ours")))
    });
    g.bench_function(format!("composition_fwd_bwd/{act_name}"), |b| {
        b.iter(|| backward(per_tensor_ref(act).expect("composition")))
    });
    let w_name = "per_channel_256x256x3x3";
    g.bench_function(format!("ours_fwd_bwd/{w_name}"), |b| {
        b.iter(|| backward(per_channel(weight).expect("ours")))
    });
    g.bench_function(format!("composition_fwd_bwd/{w_name}"), |b| {
        b.iter(|| backward(per_channel_ref(weight).expect("composition")))
    });
    g.finish();
}

criterion_group!(benches, fake_quantize);
criterion_main!(benches);
