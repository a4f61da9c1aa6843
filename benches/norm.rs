//! Normalization benches: our fused kernels vs candle's composition and fused forward, same run.
use criterion::{criterion_group, criterion_main, Criterion};

fn layer_rms(c: &mut Criterion) {
    let _ = c;
}

criterion_group!(benches, layer_rms);
criterion_main!(benches);
