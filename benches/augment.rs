//! Data augmentation throughput (issue 14): flip + pad 4 / random crop + colour jitter, and
//! random resized crop + flip + colour jitter, on a (64, 3, 224, 224) f32 batch; our one-pass
//! pipeline against the same chain as separate passes (each transform its own `Augment`, what a
//! naive composition of single transforms costs). PyTorch's side is benches/torch_augment.py.
//!
//! `cargo bench --bench augment`
#[path = "common/alloc.rs"]
mod alloc;
use criterion::{criterion_group, criterion_main, Criterion};

fn augment(c: &mut Criterion) {
    use candle_core::{Device, Tensor};
    use candle_tricks::augment::{
        Augment, ColorJitter, RandomCrop, RandomHorizontalFlip, RandomResizedCrop, Transform,
    };
    use criterion::SamplingMode;
    use std::time::Duration;

    let (b, ch, s) = (64usize, 3usize, 224usize);
    let name = format!("{b}x{ch}x{s}x{s}");
    let x = Tensor::rand(0f32, 1.0, (b, ch, s, s), &Device::Cpu).expect("x");
    let jitter = || ColorJitter::new(0.4, 0.4, 0.4, 0.1);
    let chains: [(&str, Vec<Transform>); 2] = [
        (
            "flip_crop_jitter",
            vec![
                RandomHorizontalFlip::new(0.5).into(),
                RandomCrop::new((s, s)).with_padding(4).into(),
                jitter().into(),
            ],
        ),
        (
            "resized_crop_flip_jitter",
            vec![
                RandomResizedCrop::new((s, s)).into(),
                RandomHorizontalFlip::new(0.5).into(),
                jitter().into(),
            ],
        ),
    ];
    for (chain, transforms) in chains {
        let fused = Augment::new(transforms.clone()).expect("pipeline");
        let separate: Vec<Augment> = transforms
            .into_iter()
            .map(|t| Augment::new([t]).expect("single"))
            .collect();
        let mut g = c.benchmark_group(format!("augment_{chain}"));
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(4));
        let mut seed = 0u64;
        g.bench_function(format!("ours_one_pass/{name}"), |bch| {
            bch.iter(|| {
                seed += 1;
                fused.apply(&x, seed).expect("ours")
            })
        });
        g.bench_function(format!("ours_separate_passes/{name}"), |bch| {
            bch.iter(|| {
                seed += 1;
                separate
                    .iter()
                    .try_fold(x.clone(), |y, a| a.apply(&y, seed))
                    .expect("separate")
            })
        });
        g.finish();
    }
}

criterion_group!(benches, augment);
criterion_main!(benches);
