//! Recurrent-net benches (issue 14): a one-layer LSTM, forward + backward (input, every weight),
//! at batch 32, L 256, input 256, hidden 256, batch-first: our `rnn::Lstm` (input projections as
//! one product, the fused recurrence op) against candle-nn's `LSTM` driven by `RNN::seq` (a
//! dozen tensor ops per step), in the same criterion run. Also our forward alone and the GRU.
//!
//! `cargo bench --bench rnn`
#[path = "common/alloc.rs"]
mod alloc;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::rnn::{LSTMConfig, RNN};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::rnn::{gru, lstm, RnnConfig};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use std::time::Duration;

fn rnn(c: &mut Criterion) {
    let dev = Device::Cpu;
    let (b, l, i, h) = (32usize, 256usize, 256usize, 256usize);
    let name = format!("b{b}_l{l}_i{i}_h{h}");
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (b, l, i), &dev).expect("x")).expect("var");
    let cfg = RnnConfig::default().with_batch_first(true);
    let (vm_ours, vm_gru, vm_candle) = (VarMap::new(), VarMap::new(), VarMap::new());
    let vb = |vm: &VarMap| VarBuilder::from_varmap(vm, DType::F32, &dev);
    let ours = lstm(i, h, cfg, vb(&vm_ours)).expect("lstm");
    let ours_gru = gru(i, h, cfg, vb(&vm_gru)).expect("gru");
    let theirs = candle_nn::rnn::lstm(i, h, LSTMConfig::default(), vb(&vm_candle)).expect("lstm");
    let mut g = c.benchmark_group("lstm");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.bench_function(format!("ours_fwd/{name}"), |bch| {
        bch.iter(|| ours.forward(&x, None, None).expect("forward"))
    });
    g.bench_function(format!("ours_fwd_bwd/{name}"), |bch| {
        bch.iter(|| {
            let (y, _) = ours.forward(&x, None, None).expect("forward");
            y.sum_all().and_then(|s| s.backward()).expect("backward")
        })
    });
    g.bench_function(format!("candle_nn_fwd_bwd/{name}"), |bch| {
        bch.iter(|| {
            let states = theirs.seq(&x).expect("seq");
            let y = theirs.states_to_tensor(&states).expect("stack");
            y.sum_all().and_then(|s| s.backward()).expect("backward")
        })
    });
    g.finish();
    let mut g = c.benchmark_group("gru");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.bench_function(format!("ours_fwd_bwd/{name}"), |bch| {
        bch.iter(|| {
            let (y, _) = ours_gru.forward(&x, None, None).expect("forward");
            y.sum_all().and_then(|s| s.backward()).expect("backward")
        })
    });
    g.finish();
}

criterion_group!(benches, rnn);
criterion_main!(benches);
