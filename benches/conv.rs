//! Convolution benches: our kernels vs candle's own ops in the same criterion group.
use criterion::{criterion_group, criterion_main, Criterion};

fn depthwise(c: &mut Criterion) {
    let _ = c;
}

fn conv3d(c: &mut Criterion) {
    let _ = c;
}

criterion_group!(benches, depthwise, conv3d);
criterion_main!(benches);
