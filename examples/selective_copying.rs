//! Selective Copying (Gu & Dao 2023, Table 1), scaled down: selection (S6) vs an LTI SSM.
//!
//! Task: a context of `CTX` = 64 tokens is noise (token 0) except for `K` = 8 data tokens
//! (drawn from the 14 values 2..=15) at random positions; then come `K` marker tokens (1), and
//! at the marker positions the model must output the data tokens in their order of
//! appearance (sequence length 72). Vocabulary 16 as in the paper; context 64 instead of
//! 4096 and 8 data tokens instead of 16. Because the data positions change from sequence to
//! sequence, the model has to decide from the *content* of each token whether to store it —
//! which an LTI system (the same dynamics for every token, i.e. a fixed convolution) cannot
//! do, and which Mamba's input-dependent Δ, B, C are for.
//!
//! Setup: a 2-layer `MambaModel` (d_model 64, d_state 16, d_conv 4, expand 2, vocab 16,
//! 66 K parameters), initialised from a fixed seed; AdamW (lr 4e-3 after a 20-step warm-up,
//! weight decay 0.01, global gradient-norm clip 10), batches of 32 fresh random sequences,
//! cross-entropy on the 8 marker positions only. The S6 run keeps the learning rate constant
//! until its accuracy on 256 validation sequences reaches 90 % (checked every 100 steps, at
//! the latest after 1500 steps), then decays it (cosine, 300 steps) to lr / 20 and stops. The
//! ablation `lti: true` (Δ = softplus of a learned per-channel constant, B and C learned
//! per-state constants: an S4D-like LTI SSM inside the same gated block) is trained with
//! exactly the same schedule and number of steps. Token accuracy is measured on 1024 held-out
//! sequences.
//!
//! Run: `cargo run --release --example selective_copying`
//!
//! Results, release build, on a 2-core machine shared with other jobs (load average 5-7), with
//! `RAYON_NUM_THREADS=1` (on such a loaded machine one thread is ~2x faster than candle's two
//! spinning workers; on an idle machine leave it unset):
//!
//! | run | steps | S6 (selective, Mamba) | LTI (S4D-like ablation) | total time |
//! |-----|-------|-----------------------|-------------------------|------------|
//! | 1   | 1200  | 99.8 %                | 17.0 %                  | 286 s      |
//! | 2   | 1300  | 99.6 %                | 33.7 %                  | 268 s      |
//!
//! Held-out token accuracy; chance is 1/14 = 7.1 %. With the default two threads on the same
//! loaded machine the S6 run reached 99.7 % in 353 s (the whole example then takes ~12 min;
//! floating-point reductions differ with the thread count, so runs are not bit-identical).
//! The paper reports 99.8 % for Mamba and 56.4 % for an LTI (S4) layer in the Mamba block, at
//! length 4096 after far longer training. Without the fixed seed, runs differ more: in about
//! one run of four the S6 model sat on a plateau (~12 %) for over 1000 steps before finding
//! the copying mechanism, hence the seeded initialisation (see `SeededVarMap`).

// mimalloc with freed memory kept mapped (README, "allocator" tip): training steps free and
// reallocate the same large temporaries every iteration. One module, shared with the benches.
#[path = "../benches/common/alloc.rs"]
mod alloc;

use std::sync::Mutex;
use std::time::Instant;

use candle_core::{DType, Device, Module, Shape, Tensor, Var, D};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{AdamW, Init, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use candle_tricks::optim::clip_grad_norm;
use candle_tricks::ssm::{mamba_model, MambaConfig, MambaModelConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Seed of the initialisation (the data has its own fixed seeds).
const SEED: u64 = 1;
const VOCAB: usize = 16;
const NOISE: u32 = 0;
const MARKER: u32 = 1;
const CTX: usize = 64;
const K: usize = 8;
const BATCH: usize = 32;
const EVAL: usize = 1024;
const D_MODEL: usize = 64;
const LR: f64 = 4e-3;
const WARMUP: usize = 20;
/// Length of the final cosine decay.
const DECAY: usize = 300;
/// Validation accuracy at which the S6 run starts its decay.
const DECAY_AT: f64 = 0.9;
/// Steps at constant LR after which the decay starts anyway.
const MAX_CONSTANT: usize = 1500;
const CLIP: f64 = 10.0;
/// Validation sequences (checked every 100 steps).
const VAL: usize = 256;

/// A batch of `n` sequences: inputs `(n, CTX + K)` and targets `(n, K)`.
fn batch(n: usize, rng: &mut StdRng, dev: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let mut xs = Vec::with_capacity(n * (CTX + K));
    let mut ys = Vec::with_capacity(n * K);
    for _ in 0..n {
        let mut seq = vec![NOISE; CTX];
        // K distinct positions, in increasing order.
        let mut pos: Vec<usize> = Vec::with_capacity(K);
        while pos.len() < K {
            let p = rng.random_range(0..CTX);
            if !pos.contains(&p) {
                pos.push(p);
            }
        }
        pos.sort_unstable();
        for &p in &pos {
            let tok = rng.random_range(2..VOCAB as u32);
            seq[p] = tok;
            ys.push(tok);
        }
        xs.extend_from_slice(&seq);
        xs.extend(std::iter::repeat_n(MARKER, K));
    }
    Ok((
        Tensor::from_vec(xs, (n, CTX + K), dev)?,
        Tensor::from_vec(ys, (n, K), dev)?,
    ))
}

/// Logits at the `K` marker positions, `(n, K, VOCAB)`.
fn marker_logits(model: &impl Module, xs: &Tensor) -> candle_core::Result<Tensor> {
    model.forward(xs)?.narrow(1, CTX, K)
}

fn accuracy(logits: &Tensor, ys: &Tensor) -> candle_core::Result<f64> {
    let pred = logits.argmax(D::Minus1)?;
    let hits = pred
        .eq(ys)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(hits as f64 / ys.elem_count() as f64)
}

/// A `VarMap` whose new variables are drawn from a seeded generator: candle's CPU random
/// generator cannot be seeded, and this small task is sensitive enough to the initialisation
/// that a reproducible example needs a fixed one.
struct SeededVarMap {
    map: VarMap,
    rng: Mutex<StdRng>,
}

fn lock_err<E: std::fmt::Display>(e: E) -> candle_core::Error {
    candle_core::Error::msg(e.to_string())
}

impl SimpleBackend for SeededVarMap {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut map = self.map.data().lock().map_err(lock_err)?;
        if let Some(v) = map.get(name) {
            return Ok(v.as_tensor().clone());
        }
        let mut rng = self.rng.lock().map_err(lock_err)?;
        let n = s.elem_count();
        let vals: Vec<f32> = match h {
            Init::Const(c) => vec![c as f32; n],
            Init::Uniform { lo, up } => (0..n)
                .map(|_| (lo + (up - lo) * rng.random::<f64>()) as f32)
                .collect(),
            Init::Randn { mean, stdev } => (0..n)
                .map(|_| {
                    // Box-Muller.
                    let (u1, u2) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
                    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                    (mean + stdev * z) as f32
                })
                .collect(),
            Init::Kaiming { .. } => candle_core::bail!("{name}: Kaiming init not supported"),
        };
        let var = Var::from_tensor(&Tensor::from_vec(vals, s, dev)?.to_dtype(dtype)?)?;
        let t = var.as_tensor().clone();
        map.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: no such variable")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map.data().lock().is_ok_and(|m| m.contains_key(name))
    }
}

/// The learning rate at `step` when the decay starts after `decay_start` steps: a short linear
/// warm-up, constant `LR`, then a cosine decay to `LR / 20` over `DECAY` steps.
fn learning_rate(step: usize, decay_start: usize) -> f64 {
    if step <= WARMUP {
        LR * step as f64 / WARMUP as f64
    } else if step <= decay_start {
        LR
    } else {
        let p = (step - decay_start) as f64 / DECAY as f64;
        LR * (0.05 + 0.475 * (1.0 + (std::f64::consts::PI * p).cos()))
    }
}

/// Trains one model. With `decay_start = None` (the S6 run) the decay starts once the
/// validation accuracy reaches `DECAY_AT` (at the latest after `MAX_CONSTANT` steps); the
/// returned `(held-out accuracy, decay start)` lets the LTI run use exactly the same schedule.
fn run(
    name: &str,
    lti: bool,
    decay_start: Option<usize>,
) -> Result<(f64, usize), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let backend = SeededVarMap {
        map: varmap.clone(),
        rng: Mutex::new(StdRng::seed_from_u64(SEED)),
    };
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, dev.clone());
    let mixer = MambaConfig::new(D_MODEL).with_lti(lti);
    let model = mamba_model(MambaModelConfig::new(VOCAB, 2, mixer), vb)?;
    let params = ParamsAdamW {
        lr: LR,
        weight_decay: 0.01,
        ..Default::default()
    };
    let vars = varmap.all_vars();
    let mut opt = AdamW::new(vars.clone(), params)?;
    let mut rng = StdRng::seed_from_u64(0);
    let (val_x, val_y) = batch(VAL, &mut StdRng::seed_from_u64(777), &dev)?;
    let mut decay = decay_start.unwrap_or(MAX_CONSTANT);
    let start = Instant::now();
    let mut step = 0;
    while step < decay + DECAY {
        step += 1;
        let (xs, ys) = batch(BATCH, &mut rng, &dev)?;
        let logits = marker_logits(&model, &xs)?;
        let loss = candle_nn::loss::cross_entropy(
            &logits.reshape((BATCH * K, VOCAB))?,
            &ys.flatten_all()?,
        )?;
        opt.set_learning_rate(learning_rate(step, decay));
        let mut grads = loss.backward()?;
        // Clipping only catches the rare spikes (typical norms are 0.3-5).
        let norm = clip_grad_norm(&mut grads, &vars, CLIP)?;
        opt.step(&grads)?;
        if step % 100 == 0 {
            let val = accuracy(&marker_logits(&model, &val_x)?, &val_y)?;
            println!(
                "{name:>4} step {step:>5}  lr {:.1e}  loss {:.4}  grad norm {norm:5.2}  \
                 validation acc {:5.1} %  {:.0} s",
                learning_rate(step, decay),
                loss.to_scalar::<f32>()?,
                100.0 * val,
                start.elapsed().as_secs_f64()
            );
            if decay_start.is_none() && step < decay && val >= DECAY_AT {
                decay = step;
                println!(
                    "{name:>4} validation >= {:.0} %: decaying the LR",
                    100.0 * DECAY_AT
                );
            }
        }
    }
    let (xs, ys) = batch(EVAL, &mut StdRng::seed_from_u64(12345), &dev)?;
    let acc = accuracy(&marker_logits(&model, &xs)?, &ys)?;
    println!(
        "{name:>4}: held-out token accuracy {:.1} % after {step} steps, {:.0} s",
        100.0 * acc,
        start.elapsed().as_secs_f64()
    );
    Ok((acc, decay))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let (s6, decay) = run("S6", false, None)?;
    let (lti, _) = run("LTI", true, Some(decay))?;
    println!();
    println!("selective copying, context {CTX}, {K} data tokens, vocab {VOCAB} (chance 7.1 %)");
    println!("  S6 (selective, Mamba): {:5.1} %", 100.0 * s6);
    println!("  LTI (S4D-like)       : {:5.1} %", 100.0 * lti);
    println!("  total {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}
