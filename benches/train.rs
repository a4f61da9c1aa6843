//! Whole-model training steps (issue 12): forward, cross-entropy, backward and an AdamW step of
//! a ViT, a small ResNet, a MobileNetV2-style CNN and a Mamba LM, at the shapes of
//! `benches/torch_train.py` (see `benches/common/train_models.rs`). Ids `train_step/ours/<model>`;
//! `benches/compare_torch.py` runs them interleaved with the PyTorch script.
#[path = "common/alloc.rs"]
mod alloc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};

#[path = "common/train_models.rs"]
mod models;
use models::{Model, Setup, SEQ_LEN};

fn train_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("train_step");
    // A step takes 0.1–1 s: few samples, one step per sample.
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for model in Model::ALL {
        // Built on first use, so a filtered run builds only the models it times.
        let mut setup: Option<Setup> = None;
        g.bench_function(format!("ours/{}", model.name()), |b| {
            let s = setup.get_or_insert_with(|| {
                Setup::new(model, model.batch(), SEQ_LEN).expect("build the model")
            });
            b.iter(|| s.step().expect("training step"))
        });
    }
    g.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
