//! `ops::linear` (fused bias, gemm-tiled backward, parallel bias sum) against its composition
//! `linear_reference` (candle's matmul + broadcast_add, differentiated by candle), same run, on
//! the ViT step's MLP shapes: 32 images × 65 tokens folded into 2080 rows.
#[path = "common/alloc.rs"]
mod alloc;
use std::time::Duration;

use candle_core::{Device, Tensor, Var};
use candle_tricks::ops::{linear, linear_reference};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};

fn mlp_layers(c: &mut Criterion) {
    let dev = Device::Cpu;
    let rows = 32 * 65;
    let mut g = c.benchmark_group("linear");
    g.sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (inp, out) in [(192usize, 768usize), (768, 192)] {
        let var =
            |t: candle_core::Result<Tensor>| Var::from_tensor(&t.expect("init")).expect("var");
        let x = var(Tensor::randn(0f32, 1., (32, 65, inp), &dev));
        let w = var(Tensor::randn(0f32, 0.05, (out, inp), &dev));
        let b = var(Tensor::randn(0f32, 0.1, out, &dev));
        let (x, w, b) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
        let name = format!("{rows}x{inp}to{out}");
        let backward = |y: Tensor| y.sum_all().and_then(|l| l.backward()).expect("backward");
        g.bench_function(format!("ours_fwd/{name}"), |bch| {
            bch.iter(|| linear(x, w, Some(b)).expect("ours"))
        });
        g.bench_function(format!("composition_fwd/{name}"), |bch| {
            bch.iter(|| linear_reference(x, w, Some(b)).expect("composition"))
        });
        g.bench_function(format!("ours_fwd_bwd/{name}"), |bch| {
            bch.iter(|| backward(linear(x, w, Some(b)).expect("ours")))
        });
        g.bench_function(format!("composition_fwd_bwd/{name}"), |bch| {
            bch.iter(|| backward(linear_reference(x, w, Some(b)).expect("composition")))
        });
    }
    g.finish();
}

criterion_group!(benches, mlp_layers);
criterion_main!(benches);
