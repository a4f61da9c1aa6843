//! Muon, schedule-free AdamW and Lookahead steps against AdamW's fused step, in the same run:
//! four 512 x 512 f32 matrices (1 M parameters).
#[path = "common/alloc.rs"]
mod alloc;
use std::time::Duration;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::Optimizer;
use candle_tricks::optim::{
    AdamW, AdamWConfig, Lookahead, LookaheadConfig, Muon, MuonConfig, ScheduleFreeAdamW,
    ScheduleFreeAdamWConfig,
};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};

const TENSORS: usize = 4;
const SHAPE: (usize, usize) = (512, 512);

fn setup() -> (Vec<Var>, GradStore) {
    let dev = Device::Cpu;
    let vars: Vec<Var> = (0..TENSORS)
        .map(|_| Var::from_tensor(&Tensor::randn(0f32, 1., SHAPE, &dev).expect("p")).expect("var"))
        .collect();
    let mut grads = GradStore::default();
    for v in &vars {
        grads.insert(
            v.as_tensor(),
            Tensor::randn(0f32, 1e-2, SHAPE, &dev).expect("g"),
        );
    }
    (vars, grads)
}

fn step(c: &mut Criterion) {
    let (vars, grads) = setup();
    let name = "1M_4x512x512";
    let mut g = c.benchmark_group("optim_step");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    let mut adamw = AdamW::new(vars.clone(), AdamWConfig::default().with_lr(1e-6)).expect("adamw");
    g.bench_function(format!("adamw/ours/{name}"), |b| {
        b.iter(|| adamw.step(&grads).expect("step"))
    });
    drop(adamw);

    let cfg = ScheduleFreeAdamWConfig::default().with_lr(1e-6);
    let mut sf = ScheduleFreeAdamW::new(vars.clone(), cfg).expect("schedule-free");
    g.bench_function(format!("schedule_free_adamw/ours/{name}"), |b| {
        b.iter(|| sf.step(&grads).expect("step"))
    });
    drop(sf);

    let inner = AdamW::new(vars.clone(), AdamWConfig::default().with_lr(1e-6)).expect("adamw");
    let mut la = Lookahead::new(inner, vars.clone(), LookaheadConfig::default()).expect("la");
    g.bench_function(format!("lookahead_adamw/ours/{name}"), |b| {
        b.iter(|| la.step(&grads).expect("step"))
    });
    drop(la);

    let mut muon = Muon::new(vars.clone(), MuonConfig::default().with_lr(1e-6)).expect("muon");
    g.bench_function(format!("muon/ours/{name}"), |b| {
        b.iter(|| muon.step(&grads).expect("step"))
    });
    g.finish();
}

criterion_group!(benches, step);
criterion_main!(benches);
