//! Resumable training end to end: for every optimizer, each with a learning-rate schedule and
//! global-norm clipping, train a tiny MLP for `N` steps, save the model (`VarMap::save`), the
//! optimizer state and the schedule state to safetensors files, rebuild everything from scratch
//! (new `VarMap` loaded from the file, new optimizer, new schedule, states loaded), train `M`
//! more steps, and require the losses, gradient norms, learning rates, final weights and final
//! optimizer state to be bit-identical to one uninterrupted `N + M` run.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use candle_tricks::optim::{
    clip_grad_norm, Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig, Lion, LionConfig,
    OptimizerState, ParamGroups, RmsProp, RmsPropConfig, Sgd, SgdConfig,
};
use candle_tricks::schedule::{
    CosineAnnealing, CosineWarmRestarts, LrSchedule, OneCycle, OneCycleConfig, PlateauConfig,
    ReduceLrOnPlateau, Scheduler, Warmup,
};
use common::R;

const DEV: Device = Device::Cpu;
/// Steps before the interruption and after it.
const N: usize = 30;
const M: usize = 30;
const TOTAL: usize = N + M;
const IN: usize = 8;
const HIDDEN: usize = 24;
const CLASSES: usize = 3;
const BATCH: usize = 16;
const BATCHES: usize = 4;
/// Small enough that clipping is active in some steps.
const MAX_NORM: f64 = 0.2;

/// A deterministic tensor with values in [-1, 1).
fn det(shape: &[usize], seed: u64) -> R<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n as u64)
        .map(|i| (((i * 7919 + seed * 104_729 + 13) % 1000) as f32) / 500.0 - 1.0)
        .collect();
    Ok(Tensor::from_vec(v, shape, &DEV)?)
}

/// Fixed synthetic data: `BATCHES` batches of `(BATCH, IN)` inputs, labels from a fixed rule.
fn data() -> R<Vec<(Tensor, Tensor)>> {
    (0..BATCHES)
        .map(|b| {
            let x = det(&[BATCH, IN], 100 + b as u64)?;
            let s = x.narrow(1, 0, 3)?.sum(1)?.to_vec1::<f32>()?;
            let y: Vec<u32> = s
                .iter()
                .map(|&s| (((s + 3.0) * 0.5) as u32).min(2))
                .collect();
            Ok((x, Tensor::new(y, &DEV)?))
        })
        .collect()
}

/// fc1 → LayerNorm → ReLU → fc2: biases and the norm's parameters land in the no-decay group.
struct Mlp {
    fc1: candle_nn::Linear,
    ln: candle_nn::LayerNorm,
    fc2: candle_nn::Linear,
}

impl Mlp {
    /// The model over `varmap` (randomly initialised by candle, unseeded).
    fn new(varmap: &VarMap) -> R<Self> {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, &DEV);
        Ok(Self {
            fc1: candle_nn::linear(IN, HIDDEN, vb.pp("fc1"))?,
            ln: candle_nn::layer_norm(HIDDEN, 1e-5, vb.pp("ln"))?,
            fc2: candle_nn::linear(HIDDEN, CLASSES, vb.pp("fc2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2
            .forward(&self.ln.forward(&self.fc1.forward(x)?)?.relu()?)
    }
}

/// Deterministic weights, so that two runs start from the same point.
fn init_deterministic(varmap: &VarMap) -> R<()> {
    let mut named = sorted(varmap);
    for (k, (_, v)) in named.iter_mut().enumerate() {
        v.set(&(det(v.dims(), k as u64)? * 0.5)?)?;
    }
    Ok(())
}

fn sorted(varmap: &VarMap) -> Vec<(String, Var)> {
    let mut v: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// An optimizer of this crate, with `Scheduler::step_with_momentum` where it has a momentum.
trait Opt: Optimizer + OptimizerState {
    fn sched_step(&mut self, s: &mut Scheduler) -> f64;
}

macro_rules! with_momentum {
    ($($T:ty),*) => {$(
        impl Opt for $T {
            fn sched_step(&mut self, s: &mut Scheduler) -> f64 {
                s.step_with_momentum(self).unwrap().0
            }
        }
    )*};
}
with_momentum!(Sgd, Adam, AdamW, RmsProp, Lion);

impl Opt for Adagrad {
    fn sched_step(&mut self, s: &mut Scheduler) -> f64 {
        s.step(self).unwrap()
    }
}

/// The schedule of a case: a step-driven one or the loss-driven plateau.
enum Sched {
    Steps(Scheduler),
    Plateau(ReduceLrOnPlateau),
}

impl Sched {
    fn state_dict(&self) -> R<HashMap<String, Tensor>> {
        Ok(match self {
            Sched::Steps(s) => s.state_dict()?,
            Sched::Plateau(p) => p.state_dict()?,
        })
    }

    fn load_state_dict(&mut self, sd: &HashMap<String, Tensor>) -> R<()> {
        match self {
            Sched::Steps(s) => s.load_state_dict(sd)?,
            Sched::Plateau(p) => p.load_state_dict(sd)?,
        }
        Ok(())
    }
}

/// What one step records, as bits: loss, pre-clip gradient norm, learning rate used.
type Trace = Vec<(u32, u64, u64)>;

/// A case: how to build the optimizer over a `VarMap` and its schedule.
struct Case<O> {
    name: &'static str,
    make_opt: fn(&VarMap) -> R<O>,
    make_sched: fn() -> R<Sched>,
}

/// Runs steps `range` of training; `lr` of each step as set by the schedule.
fn train<O: Opt>(
    model: &Mlp,
    vars: &[Var],
    opt: &mut O,
    sched: &mut Sched,
    data: &[(Tensor, Tensor)],
    range: std::ops::Range<usize>,
) -> R<Trace> {
    let mut trace = Vec::new();
    for t in range {
        let (x, y) = &data[t % data.len()];
        let loss = candle_nn::loss::cross_entropy(&model.forward(x)?, y)?;
        let mut grads = loss.backward()?;
        let norm = clip_grad_norm(&mut grads, vars, MAX_NORM)?;
        let loss = loss.to_scalar::<f32>()?;
        let lr = match sched {
            Sched::Steps(s) => opt.sched_step(s),
            Sched::Plateau(_) => opt.learning_rate(),
        };
        opt.step(&grads)?;
        if let Sched::Plateau(p) = sched {
            p.step_optimizer(loss as f64, opt);
        }
        trace.push((loss.to_bits(), norm.to_bits(), lr.to_bits()));
    }
    Ok(trace)
}

/// A model with its vars, optimizer and schedule.
struct Run<O> {
    varmap: VarMap,
    model: Mlp,
    /// Sorted by name. The clipping order must not come from a `HashMap` (`VarMap::all_vars`):
    /// the global norm adds the per-parameter sums in list order, and another order can change
    /// the last bit of the norm.
    vars: Vec<Var>,
    opt: O,
    sched: Sched,
}

impl<O: Opt> Run<O> {
    fn train(&mut self, data: &[(Tensor, Tensor)], range: std::ops::Range<usize>) -> R<Trace> {
        train(
            &self.model,
            &self.vars,
            &mut self.opt,
            &mut self.sched,
            data,
            range,
        )
    }
}

/// Model, optimizer and schedule over a fresh `VarMap`; weights loaded from `weights` or
/// deterministic.
fn build<O: Opt>(case: &Case<O>, weights: Option<&Path>) -> R<Run<O>> {
    let mut varmap = VarMap::new();
    let model = Mlp::new(&varmap)?;
    match weights {
        Some(path) => varmap.load(path)?,
        None => init_deterministic(&varmap)?,
    }
    let vars = sorted(&varmap).into_iter().map(|(_, v)| v).collect();
    let opt = (case.make_opt)(&varmap)?;
    let sched = (case.make_sched)()?;
    Ok(Run {
        varmap,
        model,
        vars,
        opt,
        sched,
    })
}

fn weight_bits(varmap: &VarMap) -> R<Vec<(String, Vec<u32>)>> {
    sorted(varmap)
        .into_iter()
        .map(|(k, v)| {
            let b = v.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            Ok((k, b.iter().map(|x| x.to_bits()).collect()))
        })
        .collect()
}

fn state_bits(sd: &HashMap<String, Tensor>) -> R<Vec<(String, Vec<u64>)>> {
    let mut v: Vec<(String, Vec<u64>)> = sd
        .iter()
        .map(|(k, t)| {
            let b = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            Ok((k.clone(), b.iter().map(|x| x.to_bits()).collect()))
        })
        .collect::<R<_>>()?;
    v.sort();
    Ok(v)
}

fn dir(name: &str) -> R<PathBuf> {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("resume_{name}"));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// The whole check for one case; returns the trace of the uninterrupted run.
fn check<O: Opt>(case: Case<O>) -> R<Trace> {
    let data = data()?;
    let name = case.name;

    // Reference: one uninterrupted run.
    let mut run = build(&case, None)?;
    let reference = run.train(&data, 0..TOTAL)?;
    let ref_weights = weight_bits(&run.varmap)?;
    let ref_state = state_bits(&run.opt.state_dict()?)?;
    drop(run);

    // Interrupted: N steps, save everything, drop everything.
    let d = dir(name)?;
    let (model_path, opt_path, sched_path) = (
        d.join("model.safetensors"),
        d.join("optimizer.safetensors"),
        d.join("scheduler.safetensors"),
    );
    let mut resumed = {
        let mut run = build(&case, None)?;
        let trace = run.train(&data, 0..N)?;
        run.varmap.save(&model_path)?;
        run.opt.save_state(&opt_path)?;
        candle_core::safetensors::save(&run.sched.state_dict()?, &sched_path)?;
        trace
    };

    // Resume: everything rebuilt from scratch and loaded from the files.
    let mut run = build(&case, Some(&model_path))?;
    run.opt.load_state(&opt_path)?;
    run.sched
        .load_state_dict(&candle_core::safetensors::load(&sched_path, &DEV)?)?;
    resumed.extend(run.train(&data, N..TOTAL)?);

    for (t, (a, b)) in reference.iter().zip(&resumed).enumerate() {
        assert_eq!(
            a,
            b,
            "{name}: step {t} differs (loss {} vs {}, lr {} vs {})",
            f32::from_bits(a.0),
            f32::from_bits(b.0),
            f64::from_bits(a.2),
            f64::from_bits(b.2)
        );
    }
    assert_eq!(reference.len(), resumed.len());
    assert!(
        ref_weights == weight_bits(&run.varmap)?,
        "{name}: final weights differ"
    );
    assert!(
        ref_state == state_bits(&run.opt.state_dict()?)?,
        "{name}: final optimizer state differs"
    );
    // The run must have trained and clipped, or the check proves little.
    let loss = |i: usize| f32::from_bits(reference[i].0);
    assert!(
        loss(TOTAL - 1) < loss(BATCHES - 1),
        "{name}: did not train ({} -> {})",
        loss(BATCHES - 1),
        loss(TOTAL - 1)
    );
    let clipped = reference
        .iter()
        .filter(|s| f64::from_bits(s.1) > MAX_NORM)
        .count();
    assert!(clipped > 0, "{name}: clipping never active");
    std::fs::remove_dir_all(&d).ok();
    Ok(reference)
}

fn steps(s: impl LrSchedule + 'static) -> R<Sched> {
    Ok(Sched::Steps(Scheduler::new(Box::new(s))))
}

fn warmup_cosine(peak: f64) -> R<Sched> {
    steps(Warmup::new(
        CosineAnnealing::new(peak, TOTAL - 8)?.with_eta_min(peak / 100.0)?,
        8,
        0.0,
    )?)
}

/// One-cycle over the whole run, momentum cycled between 0.85 and 0.95; the interruption falls
/// in the annealing phase.
fn one_cycle(max_lr: f64) -> R<Sched> {
    steps(OneCycle::new(
        OneCycleConfig::new(max_lr, TOTAL).with_pct_start(0.25),
    )?)
}

#[test]
fn sgd_nesterov_one_cycle() -> R<()> {
    let trace = check(Case {
        name: "sgd",
        make_opt: |vm| {
            let cfg = SgdConfig::default()
                .with_lr(0.1)
                .with_momentum(0.9)
                .with_nesterov(true)
                .with_weight_decay(1e-3);
            Ok(Sgd::with_groups(ParamGroups::from_varmap(vm), cfg)?)
        },
        make_sched: || one_cycle(0.5),
    })?;
    // The schedule really moved the rate across the interruption.
    assert_ne!(trace[N - 1].2, trace[N].2);
    Ok(())
}

#[test]
fn adam_amsgrad_one_cycle() -> R<()> {
    check(Case {
        name: "adam",
        make_opt: |vm| {
            let cfg = AdamConfig::default()
                .with_lr(1e-2)
                .with_amsgrad(true)
                .with_weight_decay(1e-4);
            Ok(Adam::with_groups(ParamGroups::from_varmap(vm), cfg)?)
        },
        make_sched: || one_cycle(3e-2),
    })?;
    Ok(())
}

#[test]
fn adamw_no_decay_groups_warmup_cosine() -> R<()> {
    check(Case {
        name: "adamw",
        make_opt: |vm| {
            let groups = ParamGroups::no_decay_for_bias_and_norm(vm, 0.05);
            Ok(AdamW::with_groups(groups, AdamWConfig::default())?)
        },
        make_sched: || warmup_cosine(2e-2),
    })?;
    Ok(())
}

#[test]
fn rmsprop_centered_momentum_sgdr() -> R<()> {
    check(Case {
        name: "rmsprop",
        make_opt: |vm| {
            let cfg = RmsPropConfig::default()
                .with_lr(1e-3)
                .with_momentum(0.9)
                .with_centered(true);
            Ok(RmsProp::with_groups(ParamGroups::from_varmap(vm), cfg)?)
        },
        // Restarts at steps 8 and 24; the interruption is inside the third cycle.
        make_sched: || steps(CosineWarmRestarts::new(3e-3, 8, 2)?.with_eta_min(1e-4)?),
    })?;
    Ok(())
}

#[test]
fn adagrad_plateau_on_loss() -> R<()> {
    let trace = check(Case {
        name: "adagrad",
        make_opt: |vm| {
            let cfg = AdagradConfig::default().with_lr(0.2).with_lr_decay(1e-3);
            Ok(Adagrad::with_groups(ParamGroups::from_varmap(vm), cfg)?)
        },
        make_sched: || {
            let cfg = PlateauConfig::default().with_patience(2).with_factor(0.5);
            Ok(Sched::Plateau(ReduceLrOnPlateau::new(0.2, cfg)?))
        },
    })?;
    // The plateau cut the rate both before and after the interruption.
    let lr = |t: usize| f64::from_bits(trace[t].2);
    assert!(lr(N - 1) < lr(0), "no reduction before the interruption");
    assert!(lr(TOTAL - 1) < lr(N), "no reduction after the interruption");
    Ok(())
}

#[test]
fn lion_no_decay_groups_warmup_cosine() -> R<()> {
    check(Case {
        name: "lion",
        make_opt: |vm| {
            let groups = ParamGroups::no_decay_for_bias_and_norm(vm, 0.5);
            let cfg = LionConfig::default().with_betas(0.9, 0.99);
            Ok(Lion::with_groups(groups, cfg)?)
        },
        make_sched: || warmup_cosine(3e-3),
    })?;
    Ok(())
}

/// The check is sensitive: resuming Adam from the saved weights but a fresh optimizer state (a
/// restart, not a resume) diverges from the uninterrupted run at once.
#[test]
fn restart_without_optimizer_state_differs() -> R<()> {
    let case = Case {
        name: "adam_restart",
        make_opt: |vm| {
            let cfg = AdamConfig::default().with_lr(1e-2);
            Ok(Adam::with_groups(ParamGroups::from_varmap(vm), cfg)?)
        },
        make_sched: || warmup_cosine(1e-2),
    };
    let data = data()?;
    let reference = build(&case, None)?.train(&data, 0..TOTAL)?;

    let d = dir(case.name)?;
    let path = d.join("model.safetensors");
    let mut run = build(&case, None)?;
    run.train(&data, 0..N)?;
    run.varmap.save(&path)?;
    let sched_state = run.sched.state_dict()?;
    let mut run = build(&case, Some(&path))?;
    run.sched.load_state_dict(&sched_state)?;
    let restarted = run.train(&data, N..TOTAL)?;
    // Same weights, so the first loss agrees; the next step's update does not.
    assert_eq!(reference[N].0, restarted[0].0);
    assert_ne!(reference[N + 1].0, restarted[1].0);
    std::fs::remove_dir_all(&d).ok();
    Ok(())
}
