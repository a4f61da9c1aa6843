//! Resumable training: stop a run, continue it in a *new process*, and get bit for bit the
//! run that was never interrupted.
//!
//! ```sh
//! cargo run --release --example resume
//! ```
//!
//! The example trains a small MLP (AdamW with no-decay groups, warmup + cosine schedule,
//! global-norm clipping, shuffled mini-batches) twice: once straight through, and once
//! stopped after `STOP_AT` steps with a checkpoint written to `target/resume_example/`, after
//! which it starts itself again (`current_exe() --resume <dir>`) and that fresh process loads the
//! checkpoint and finishes. It prints both loss curves side by side, compares their bits and the
//! final weights', and exits with status 1 if anything differs.
//!
//! # What a checkpoint must hold, and why
//! - **The weights** (`VarMap::save` → `model.safetensors`): obviously. Load them into a freshly
//!   built model with `VarMap::load`; the names are the `VarBuilder` paths.
//! - **The optimizer state** (`OptimizerState::save_state` → `optimizer.safetensors`): AdamW's
//!   two moment buffers per parameter *and the per-parameter step counts*. Without the moments
//!   the first steps after a restart are as large as the very first ones (every coordinate moves
//!   by about the learning rate); without the step counts the bias correction starts over. SGD's
//!   momentum buffers, RMSProp's averages and Lion's momentum are the same story. The
//!   hyper-parameters (current rate, betas, group decays) come back too.
//! - **The schedule position** (`Scheduler::state_dict` → `scheduler.safetensors`): the step
//!   counter, so the rate continues from where it was rather than warming up again. For
//!   `ReduceLrOnPlateau` save its `state_dict` (current rate, best metric, bad-epoch and cooldown
//!   counters) — a restarted plateau forgets both the rate it had cut to and how long it waited.
//! - **Every random state**. Here the only randomness is the data order, and it is a function of
//!   `(SEED, epoch)`: each epoch's permutation comes from its own seeded generator, and the
//!   position inside the epoch follows from the global step. So the step counter is all the RNG
//!   state there is. Do the same for augmentation and dropout masks (seed from the step), or save
//!   the generator's state; candle's `Dropout` and `Tensor::rand` draw from an unseeded global
//!   generator, so a run that uses them cannot be bit-identical to anything.
//!
//! Two details that silently break bit-identity:
//! - **Parameter order.** The optimizer state is stored by position, and the global gradient
//!   norm adds per-parameter sums in list order. `VarMap::all_vars()` comes from a `HashMap`
//!   whose order changes from one map (and one process) to the next; use
//!   `ParamGroups::from_varmap` / `no_decay_for_bias_and_norm` (sorted by name) and `opt.vars()`.
//! - **Initial weights.** candle's initialisers are not seeded. This example saves the initial
//!   weights once so that both runs start from the same point; in a real run the checkpoint is
//!   what matters, not the init.
//!
//! A real training loop would write the checkpoint every few hundred steps into a temporary
//! directory and rename it over the previous one, so a crash mid-write leaves the last good one.

// mimalloc with freed memory kept mapped (README, "allocator" tip): training steps free and
// reallocate the same large temporaries every iteration. One module, shared with the benches.
#[path = "../benches/common/alloc.rs"]
mod alloc;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use candle_core::{DType, Device, Module, Tensor, Var, D};
use candle_nn::{linear, Linear, Optimizer, VarBuilder, VarMap};
use candle_tricks::optim::{clip_grad_norm, AdamW, AdamWConfig, OptimizerState, ParamGroups};
use candle_tricks::schedule::{CosineAnnealing, Scheduler, Warmup};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const SEED: u64 = 7;
const FEATURES: usize = 16;
const HIDDEN: usize = 64;
const CLASSES: usize = 4;
const SAMPLES: usize = 512;
const BATCH: usize = 32;
const STEPS_PER_EPOCH: usize = SAMPLES / BATCH;
const TOTAL_STEPS: usize = 10 * STEPS_PER_EPOCH;
const WARMUP_STEPS: usize = 10;
const STOP_AT: usize = 70; // in the middle of epoch 5
const PEAK_LR: f64 = 1e-2;
const WEIGHT_DECAY: f64 = 0.05;
const MAX_GRAD_NORM: f64 = 1.0;

/// Linear → LayerNorm → ReLU → Linear.
struct Mlp {
    fc1: Linear,
    norm: candle_nn::LayerNorm,
    fc2: Linear,
}

impl Mlp {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            fc1: linear(FEATURES, HIDDEN, vb.pp("fc1"))?,
            norm: candle_nn::layer_norm(HIDDEN, 1e-5, vb.pp("norm"))?,
            fc2: linear(HIDDEN, CLASSES, vb.pp("fc2"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.norm.forward(&self.fc1.forward(xs)?)?.relu()?;
        self.fc2.forward(&h)
    }
}

/// A fixed dataset: Gaussian-ish inputs, labels from a random linear teacher.
struct Data {
    x: Tensor,
    y: Tensor,
}

impl Data {
    fn new(dev: &Device) -> candle_core::Result<Self> {
        let mut rng = StdRng::seed_from_u64(SEED);
        let mut uniform =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
        let x = Tensor::from_vec(uniform(SAMPLES * FEATURES), (SAMPLES, FEATURES), dev)?;
        let teacher = Tensor::from_vec(uniform(FEATURES * CLASSES), (FEATURES, CLASSES), dev)?;
        let y = x.matmul(&teacher)?.argmax(D::Minus1)?;
        Ok(Self { x, y })
    }

    /// The batch of global step `step`: the epoch's permutation depends only on `(SEED,
    /// epoch)`, so a resumed run draws exactly the batches the uninterrupted one would.
    fn batch(&self, step: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let (epoch, i) = (step / STEPS_PER_EPOCH, step % STEPS_PER_EPOCH);
        let mut order: Vec<u32> = (0..SAMPLES as u32).collect();
        order.shuffle(&mut StdRng::seed_from_u64(SEED * 1000 + epoch as u64));
        let idx = Tensor::from_slice(&order[i * BATCH..(i + 1) * BATCH], BATCH, self.x.device())?;
        Ok((self.x.index_select(&idx, 0)?, self.y.index_select(&idx, 0)?))
    }
}

/// Everything a training run holds: model, optimizer, schedule (the data is fixed).
struct Trainer {
    varmap: VarMap,
    model: Mlp,
    opt: AdamW,
    sched: Scheduler<Warmup<CosineAnnealing>>,
    data: Data,
}

/// What one step logs.
struct StepLog {
    loss: f32,
    lr: f64,
    grad_norm: f64,
}

impl Trainer {
    /// A fresh run (optimizer and schedule at step 0) from the weights in `weights`.
    fn new(weights: &Path) -> Res<Self> {
        let dev = Device::Cpu;
        let mut varmap = VarMap::new();
        let model = Mlp::new(VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
        varmap.load(weights)?;
        // Sorted by name: the same parameter order in every process.
        let groups = ParamGroups::no_decay_for_bias_and_norm(&varmap, WEIGHT_DECAY);
        let opt = AdamW::with_groups(groups, AdamWConfig::default().with_lr(PEAK_LR))?;
        let cosine = CosineAnnealing::new(PEAK_LR, TOTAL_STEPS - WARMUP_STEPS)?
            .with_eta_min(PEAK_LR / 20.0)?;
        let sched = Scheduler::new(Warmup::new(cosine, WARMUP_STEPS, 0.0)?);
        Ok(Self {
            varmap,
            model,
            opt,
            sched,
            data: Data::new(&dev)?,
        })
    }

    /// Builds the run exactly as [`Trainer::new`] does, then loads the checkpoint over it.
    fn resume(dir: &Path) -> Res<Self> {
        let mut t = Self::new(&dir.join("model.safetensors"))?;
        t.opt.load_state(dir.join("optimizer.safetensors"))?;
        let sched =
            candle_core::safetensors::load(dir.join("scheduler.safetensors"), &Device::Cpu)?;
        t.sched.load_state_dict(&sched)?;
        Ok(t)
    }

    fn save(&self, dir: &Path) -> Res<()> {
        std::fs::create_dir_all(dir)?;
        self.varmap.save(dir.join("model.safetensors"))?;
        self.opt.save_state(dir.join("optimizer.safetensors"))?;
        candle_core::safetensors::save(
            &self.sched.state_dict()?,
            dir.join("scheduler.safetensors"),
        )?;
        Ok(())
    }

    /// The global step: the schedule's counter is the one source of truth.
    fn step(&self) -> usize {
        self.sched.current_step()
    }

    /// Trains from the current step up to (excluding) `until`.
    fn train_until(&mut self, until: usize) -> Res<Vec<StepLog>> {
        let vars: Vec<Var> = self.opt.vars(); // sorted, not `varmap.all_vars()`
        let mut logs = Vec::new();
        while self.step() < until {
            let (x, y) = self.data.batch(self.step())?;
            let loss = candle_nn::loss::cross_entropy(&self.model.forward(&x)?, &y)?;
            let mut grads = loss.backward()?;
            let grad_norm = clip_grad_norm(&mut grads, &vars, MAX_GRAD_NORM)?;
            let lr = self.sched.step(&mut self.opt)?;
            self.opt.step(&grads)?;
            logs.push(StepLog {
                loss: loss.to_scalar()?,
                lr,
                grad_norm,
            });
        }
        Ok(logs)
    }
}

/// The weights as bit patterns, sorted by name, for an exact comparison.
fn weight_bits(varmap: &VarMap) -> Res<Vec<(String, Vec<u32>)>> {
    let data = varmap.data().lock().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (name, var) in data.iter() {
        let v = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        out.push((name.clone(), v.iter().map(|x| x.to_bits()).collect()));
    }
    out.sort();
    Ok(out)
}

/// Phase 2, in the fresh process: load the checkpoint, finish the run, write the losses and the
/// final weights next to the checkpoint for the parent to compare.
fn resume_phase(dir: &Path) -> Res<()> {
    let mut t = Trainer::resume(dir)?;
    println!(
        "[pid {}] resumed from {} at step {} (lr {:.3e}); training to step {TOTAL_STEPS}",
        std::process::id(),
        dir.display(),
        t.step(),
        t.sched.lr()
    );
    let logs = t.train_until(TOTAL_STEPS)?;
    let losses: Vec<f32> = logs.iter().map(|l| l.loss).collect();
    let losses = Tensor::from_vec(losses, logs.len(), &Device::Cpu)?;
    let file = HashMap::from([("losses".to_string(), losses)]);
    candle_core::safetensors::save(&file, dir.join("resumed_losses.safetensors"))?;
    t.varmap.save(dir.join("final_model.safetensors"))?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("--resume"), Some(dir)) => resume_phase(Path::new(dir)).map(|()| true),
        _ => main_phase(),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Phase 1: the uninterrupted run, the first part of the interrupted one and the checkpoint,
/// the second process, and the comparison. `Ok(false)` when the runs differ.
fn main_phase() -> Res<bool> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/resume_example");
    let ckpt = root.join("checkpoint");
    std::fs::create_dir_all(&root)?;

    // Shared starting point (candle's init is not seeded).
    let init = root.join("init.safetensors");
    let varmap = VarMap::new();
    Mlp::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    varmap.save(&init)?;

    println!("uninterrupted run: {TOTAL_STEPS} steps");
    let mut straight = Trainer::new(&init)?;
    let reference = straight.train_until(TOTAL_STEPS)?;

    println!(
        "interrupted run: {STOP_AT} steps, checkpoint to {}",
        ckpt.display()
    );
    let mut first = Trainer::new(&init)?;
    let before = first.train_until(STOP_AT)?;
    first.save(&ckpt)?;
    drop(first);

    let status = Command::new(std::env::current_exe()?)
        .arg("--resume")
        .arg(&ckpt)
        .status()?;
    if !status.success() {
        return Err(format!("the resumed process failed: {status}").into());
    }
    let after =
        candle_core::safetensors::load(ckpt.join("resumed_losses.safetensors"), &Device::Cpu)?;
    let after = after
        .get("losses")
        .ok_or("no losses from the resumed process")?
        .to_vec1::<f32>()?;
    let interrupted: Vec<f32> = before.iter().map(|l| l.loss).chain(after).collect();

    println!("\n step        lr   grad norm   loss (straight)   loss (interrupted)");
    for (t, (r, i)) in reference.iter().zip(&interrupted).enumerate() {
        let around_stop = t + 2 >= STOP_AT && t <= STOP_AT + 1;
        if t.is_multiple_of(16) || around_stop || t + 1 == TOTAL_STEPS {
            let mark = if t == STOP_AT { "  <- new process" } else { "" };
            let same = if r.loss.to_bits() == i.to_bits() {
                "="
            } else {
                "DIFFERENT"
            };
            println!(
                "{t:5} {:9.2e} {:11.4} {:17.6} {:>20.6} {same}{mark}",
                r.lr, r.grad_norm, r.loss, i
            );
        }
    }

    let mut finished = VarMap::new();
    Mlp::new(VarBuilder::from_varmap(&finished, DType::F32, &Device::Cpu))?;
    finished.load(ckpt.join("final_model.safetensors"))?;
    let same_losses = interrupted.len() == reference.len()
        && reference
            .iter()
            .zip(&interrupted)
            .all(|(r, i)| r.loss.to_bits() == i.to_bits());
    let same_weights = weight_bits(&straight.varmap)? == weight_bits(&finished)?;
    println!(
        "\nlosses: {}; final weights: {}",
        if same_losses {
            "bit-identical"
        } else {
            "DIFFERENT"
        },
        if same_weights {
            "bit-identical"
        } else {
            "DIFFERENT"
        }
    );
    Ok(same_losses && same_weights)
}
