//! Optimizer step benches: one step over 25 M f32 parameters in 100 tensors, our fused in-place
//! kernels (AdamW, Adam, NAdam, RAdam, Adamax, Adadelta, LAMB, Adafactor, SGD) against candle-nn's `AdamW` and
//! `SGD` (tensor-op updates) in the same run.
#[path = "common/alloc.rs"]
mod alloc;
use std::time::Duration;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::Optimizer;
use candle_tricks::optim::{
    Adadelta, AdadeltaConfig, Adafactor, AdafactorConfig, Adam, AdamConfig, AdamW, AdamWConfig,
    Adamax, AdamaxConfig, Lamb, LambConfig, NAdam, NAdamConfig, RAdam, RAdamConfig, Sgd, SgdConfig,
};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};

/// 100 tensors of 500 x 500 = 25 M parameters.
const TENSORS: usize = 100;
const SHAPE: (usize, usize) = (500, 500);

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
    let name = "25M_100x500x500";
    let mut g = c.benchmark_group("optim_step");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    let mut ours = AdamW::new(vars.clone(), AdamWConfig::default().with_lr(1e-6)).expect("ours");
    g.bench_function(format!("adamw/ours/{name}"), |b| {
        b.iter(|| ours.step(&grads).expect("step"))
    });
    drop(ours);
    let params = candle_nn::ParamsAdamW {
        lr: 1e-6,
        ..Default::default()
    };
    let mut theirs = candle_nn::AdamW::new(vars.clone(), params).expect("candle");
    g.bench_function(format!("adamw/candle_nn/{name}"), |b| {
        b.iter(|| theirs.step(&grads).expect("step"))
    });
    drop(theirs);

    let mut adam = Adam::new(vars.clone(), AdamConfig::default().with_lr(1e-6)).expect("adam");
    g.bench_function(format!("adam/ours/{name}"), |b| {
        b.iter(|| adam.step(&grads).expect("step"))
    });
    drop(adam);

    // The adaptive variants: the same two-buffer pass as Adam, a few more flops per element.
    let mut nadam = NAdam::new(vars.clone(), NAdamConfig::default().with_lr(1e-6)).expect("nadam");
    g.bench_function(format!("nadam/ours/{name}"), |b| {
        b.iter(|| nadam.step(&grads).expect("step"))
    });
    drop(nadam);
    let mut radam = RAdam::new(vars.clone(), RAdamConfig::default().with_lr(1e-6)).expect("radam");
    g.bench_function(format!("radam/ours/{name}"), |b| {
        b.iter(|| radam.step(&grads).expect("step"))
    });
    drop(radam);
    let cfg = AdamaxConfig::default().with_lr(1e-6);
    let mut adamax = Adamax::new(vars.clone(), cfg).expect("adamax");
    g.bench_function(format!("adamax/ours/{name}"), |b| {
        b.iter(|| adamax.step(&grads).expect("step"))
    });
    drop(adamax);
    let cfg = AdadeltaConfig::default().with_lr(1e-6);
    let mut adadelta = Adadelta::new(vars.clone(), cfg).expect("adadelta");
    g.bench_function(format!("adadelta/ours/{name}"), |b| {
        b.iter(|| adadelta.step(&grads).expect("step"))
    });
    drop(adadelta);
    // LAMB: Adam's pass plus the norm reduction, then a second pass for the update.
    let mut lamb = Lamb::new(vars.clone(), LambConfig::default().with_lr(1e-6)).expect("lamb");
    g.bench_function(format!("lamb/ours/{name}"), |b| {
        b.iter(|| lamb.step(&grads).expect("step"))
    });
    drop(lamb);
    // Adafactor: row/column reductions with candle ops, then two fused passes.
    let cfg = AdafactorConfig::default().with_lr(1e-6);
    let mut adafactor = Adafactor::new(vars.clone(), cfg).expect("adafactor");
    g.bench_function(format!("adafactor/ours/{name}"), |b| {
        b.iter(|| adafactor.step(&grads).expect("step"))
    });
    drop(adafactor);

    let cfg = SgdConfig::default().with_lr(1e-6).with_momentum(0.9);
    let mut sgdm = Sgd::new(vars.clone(), cfg).expect("sgd");
    g.bench_function(format!("sgd_momentum/ours/{name}"), |b| {
        b.iter(|| sgdm.step(&grads).expect("step"))
    });
    drop(sgdm);
    let mut sgd = Sgd::new(vars.clone(), SgdConfig::default().with_lr(1e-6)).expect("sgd");
    g.bench_function(format!("sgd/ours/{name}"), |b| {
        b.iter(|| sgd.step(&grads).expect("step"))
    });
    drop(sgd);
    let mut theirs = candle_nn::SGD::new(vars.clone(), 1e-6).expect("candle sgd");
    g.bench_function(format!("sgd/candle_nn/{name}"), |b| {
        b.iter(|| theirs.step(&grads).expect("step"))
    });
    g.finish();
}

criterion_group!(benches, step);
criterion_main!(benches);
