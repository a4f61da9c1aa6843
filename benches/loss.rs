//! Cross-entropy bench (issue 14): our fused log-softmax + NLL op against candle-nn's
//! `loss::cross_entropy` (log_softmax, gather, mean: a composition of candle ops), forward +
//! backward wrt the logits, same run.
#[path = "common/alloc.rs"]
mod alloc;
use criterion::{criterion_group, criterion_main, Criterion};

fn cross_entropy(c: &mut Criterion) {
    use candle_core::{Device, Tensor, Var};
    use candle_tricks::loss::{self, CrossEntropyConfig};
    use criterion::SamplingMode;
    use std::time::Duration;

    let dev = Device::Cpu;
    let mut g = c.benchmark_group("cross_entropy");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (n, classes) in [(256usize, 1000usize), (1024, 10000)] {
        let name = format!("{n}x{classes}");
        let x = Var::from_tensor(&Tensor::randn(0f32, 3., (n, classes), &dev).expect("x"))
            .expect("var");
        let x = x.as_tensor();
        let labels: Vec<u32> = (0..n).map(|i| (i * 7 % classes) as u32).collect();
        let y = Tensor::new(labels, &dev).expect("labels");
        let cfg = CrossEntropyConfig::default();
        g.bench_function(format!("ours_fwd_bwd/{name}"), |b| {
            b.iter(|| {
                let l = loss::cross_entropy(x, &y, &cfg).expect("ours");
                l.backward().expect("backward")
            })
        });
        g.bench_function(format!("candle_nn_fwd_bwd/{name}"), |b| {
            b.iter(|| {
                candle_nn::loss::cross_entropy(x, &y)
                    .and_then(|l| l.backward())
                    .expect("candle")
            })
        });
        let smooth = cfg.clone().with_label_smoothing(0.1);
        g.bench_function(format!("ours_smoothing_fwd_bwd/{name}"), |b| {
            b.iter(|| {
                let l = loss::cross_entropy(x, &y, &smooth).expect("ours");
                l.backward().expect("backward")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, cross_entropy);
criterion_main!(benches);
