//! Int8 inference benches: `QuantizedLinear` (dynamic and static input quantization) against
//! candle-nn's f32 `Linear` at the shape (batch 64, 1024 → 4096), in the same run.
#[path = "common/alloc.rs"]
mod alloc;
use criterion::{criterion_group, criterion_main, Criterion};

fn linear(c: &mut Criterion) {
    use candle_core::{Device, Module, Tensor};
    use candle_tricks::compress::quantize::{InputQuant, QuantizedLinear};
    use criterion::SamplingMode;
    use std::time::Duration;

    let dev = Device::Cpu;
    let (b, inp, out) = (64usize, 1024usize, 4096usize);
    let name = format!("{b}x{inp}x{out}");
    let w = Tensor::randn(0f32, 0.03, (out, inp), &dev).expect("w");
    let bias = Tensor::randn(0f32, 0.1, out, &dev).expect("b");
    let x = Tensor::randn(0f32, 1., (b, inp), &dev).expect("x");
    let float = candle_nn::Linear::new(w, Some(bias));
    let dynamic = QuantizedLinear::from_linear(&float, InputQuant::Dynamic).expect("dynamic");
    let calibrated = InputQuant::calibrated(-4.0, 4.0).expect("calibrated");
    let fixed = QuantizedLinear::from_linear(&float, calibrated).expect("static");

    let mut g = c.benchmark_group("linear");
    g.sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.bench_function(format!("candle_f32/{name}"), |bch| {
        bch.iter(|| float.forward(&x).expect("f32"))
    });
    g.bench_function(format!("int8/{name}"), |bch| {
        bch.iter(|| dynamic.forward(&x).expect("int8 dynamic"))
    });
    g.bench_function(format!("int8_static/{name}"), |bch| {
        bch.iter(|| fixed.forward(&x).expect("int8 static"))
    });
    g.finish();
}

criterion_group!(benches, linear);
criterion_main!(benches);
