//! Transfer learning: pre-train a backbone on one task, save it, load it under a new head for
//! another task, and compare training from scratch with four ways to fine-tune, at the same
//! budget of steps.
//!
//! ```sh
//! cargo run --release --example fine_tune
//! ```
//!
//! The data are the UCI handwritten digits (8×8, embedded in the crate), every image moved by up
//! to one pixel and with Gaussian noise σ = 0.2, so that a few examples do not suffice. Task A,
//! pre-training: the digits 0–5, all their images (80 %; 600 steps of 64). The backbone, an MLP
//! 64 → 256 → 128 (`layers.0`, `layers.1`) with a 6-class `head`, is saved with
//! `VarMap::save`. Task B: the digits 6–9 with only K labelled images per class (K = 2, 5, 20),
//! tested on all the others. The task-B model has the same backbone and a new 4-class head; the
//! checkpoint is loaded with [`load_safetensors`] in lenient mode, and the example checks that
//! the report lists the head alone (`head.weight` and `head.bias`, shape mismatches) — the
//! check that catches a renamed layer silently left random. Then, 200 steps of AdamW each:
//! 1. **from scratch**: random init, everything trained;
//! 2. **linear probe**: the loaded backbone frozen ([`unfreeze`] of the head only, features
//!    detached so no backbone gradient is computed);
//! 3. **full fine-tune**: the loaded model, everything trained at one rate;
//! 4. **full fine-tune with layer-wise decay** ([`layer_decay_groups`], d = 0.5: the head at the
//!    base rate, `layers.1` at half, `layers.0` at a quarter);
//! 5. **LoRA**: each backbone layer wrapped in a [`LoraLinear`] (r = 4, α = 16) around its
//!    loaded weights, the adapters and the new head trained ([`trainable_by`]). Every run checks
//!    that the frozen weights are bit-identical to the checkpoint afterwards and that the
//!    merged model (adapters folded into the weights) scores the same accuracy.
//!
//! Results on 2 shared cores (~1 min), mean ± standard deviation of 3 draws of the K images
//! (each method sees the same images and batches); weight init is not seeded, so the numbers
//! move by a point or two between runs; the ranking does not, except LoRA against scratch at
//! K = 2 (within a point of each other, either ahead):
//!
//! | method | trainable parameters | K = 2 | K = 5 | K = 20 |
//! |---|---|---|---|---|
//! | from scratch | 50 052 | 79.7 % ± 1.7 | 84.1 % ± 1.1 | 89.4 % ± 1.6 |
//! | linear probe (frozen backbone) | 516 | 69.9 % ± 3.6 | 76.0 % ± 1.4 | 74.4 % ± 2.7 |
//! | **full fine-tune** | 50 052 | **82.0 % ± 2.3** | **87.5 % ± 1.2** | **91.6 % ± 0.9** |
//! | full fine-tune, layer decay 0.5 | 50 052 | 82.1 % ± 1.7 | 85.6 % ± 0.9 | 88.6 % ± 0.9 |
//! | LoRA r = 4 + head | 3 332 | 78.4 % ± 4.1 | 83.1 % ± 0.4 | 86.2 % ± 0.8 |
//!
//! Training takes about a second per run for every method here: the probe is the fastest (no
//! backbone gradient), LoRA is no faster than a full fine-tune on layers this small (its extra
//! matrix products cost about what the weight gradients it saves do). LoRA pays off in memory
//! and storage: the optimizer keeps state for 7 % of the parameters, and the task ships as the
//! adapters and head alone.
//!
//! What to expect, and when each method wins:
//! - Starting from the pre-trained weights gains about 1–4 points over training from scratch at
//!   every K, in each of our runs: the backbone learned strokes and some robustness to shifts
//!   and noise on six digits, which the four new ones share. The gain must vanish with enough
//!   labels: on the clean images (no shift, no noise) at 50 labels per class, scratch and full
//!   fine-tune tied at 97.9 % in our runs.
//! - The linear probe is worst by far: features trained to tell 0–5 apart do not separate 6–9
//!   linearly, and more labels hardly help (73–77 % at K = 5 and 20 over four runs). A probe wins
//!   when the pre-training task is much broader than the new one (ImageNet features for a 10-class
//!   task), or when the labels are too few to move a backbone at all.
//! - Layer-wise decay does no better than the plain fine-tune here, and worse at K = 20: it
//!   protects the early layers, which is right when they are generic and the data scarce, and wrong
//!   when the new task needs them to change; raise d towards 1 as the tasks grow apart.
//! - LoRA sits between the probe and the full fine-tune (and 1–5 points below scratch at K ≥ 5): a
//!   rank-4 change of each layer recovers most of what the probe misses with 7 % of the trainable
//!   parameters, not all of what a task this far from pre-training needs. On large models, where a
//!   full fine-tune does not fit in memory or every task would need its own copy, that is the trade
//!   to make; raise `r` when the task is far from pre-training.
//!
//! To adapt it: replace `Net` by your backbone (keep its tensor names equal to the
//! checkpoint's), point `load_pretrained` at your checkpoint and keep its check of the report,
//! then pick the method from the table above.

// mimalloc with freed memory kept mapped (README, "allocator" tip): training steps free and
// reallocate the same large temporaries every iteration. One module, shared with the benches.
#[path = "../benches/common/alloc.rs"]
mod alloc;

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Module, ModuleT, Tensor, D};
use candle_nn::{linear, Linear, Optimizer, VarBuilder, VarMap};
use candle_tricks::data::{digits, Digits};
use candle_tricks::loss;
use candle_tricks::optim::{AdamW, AdamWConfig, ParamGroup, ParamGroups};
use candle_tricks::transfer::{
    has_prefix, layer_decay_groups, load_safetensors, lora_linear, trainable_by, unfreeze,
    LoadReport, LoraConfig, LoraLinear,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Errors of any kind, with `?` from candle's and this crate's.
type R<T> = Result<T, Box<dyn std::error::Error>>;

/// Task A, pre-training: the digits 0–5, all their images.
const TASK_A: [u32; 6] = [0, 1, 2, 3, 4, 5];
/// Task B, the new task: the digits 6–9, a few labelled images each.
const TASK_B: [u32; 4] = [6, 7, 8, 9];
/// Labelled images per class of task B, one table each.
const SHOTS: [usize; 3] = [2, 5, 20];
/// Draws of the task-B training images (and fresh inits) averaged per table row.
const REPEATS: u64 = 3;
/// Hidden widths of the backbone: 64 pixels → 256 → 128.
const HIDDEN: [usize; 2] = [256, 128];
/// Largest shift of an image, in pixels, and the noise added to every pixel (see [`jitter`]).
const SHIFT: usize = 1;
const NOISE: f32 = 0.2;
const PRETRAIN_STEPS: usize = 600;
const BATCH: usize = 64;
/// The step budget of every task-B method.
const STEPS: usize = 200;
const LR: f64 = 2e-3;
const WEIGHT_DECAY: f64 = 0.01;
/// Layer-wise learning-rate decay: `layers.1` trains at `DECAY` × the head's rate, `layers.0`
/// at `DECAY²`.
const DECAY: f64 = 0.5;
const LORA_RANK: usize = 4;
/// LoRA's update is scaled by `LORA_ALPHA / LORA_RANK` = 4: the adapters start at zero and
/// need a larger step than the full weights to move as far in the same budget.
const LORA_ALPHA: f64 = 16.0;

/// A backbone layer: a plain linear layer, or a frozen one with a LoRA adapter.
enum Layer {
    Plain(Linear),
    Lora(LoraLinear),
}

impl ModuleT for Layer {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Layer::Plain(l) => l.forward(xs),
            Layer::Lora(l) => l.forward_t(xs, train),
        }
    }
}

/// The backbone (`layers.0`, `layers.1`: linear → ReLU on the flattened image) and a linear
/// `head`; the names are the checkpoint's.
struct Net {
    layers: Vec<Layer>,
    head: Linear,
    /// Linear probing: no gradient flows into the backbone (it is not trained, so computing
    /// its gradients would be wasted work).
    detach_backbone: bool,
}

impl Net {
    fn new(classes: usize, vb: &VarBuilder) -> candle_core::Result<Self> {
        let widths = [64, HIDDEN[0], HIDDEN[1]];
        let layers = (0..HIDDEN.len())
            .map(|i| {
                let l = linear(widths[i], widths[i + 1], vb.pp(format!("layers.{i}")))?;
                Ok(Layer::Plain(l))
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            layers,
            head: linear(HIDDEN[1], classes, vb.pp("head"))?,
            detach_backbone: false,
        })
    }

    /// Wraps every backbone layer's (loaded) weights in a LoRA adapter, whose `lora_A` and
    /// `lora_B` are created in `vb` under the layer's name, as peft names them.
    fn add_lora(&mut self, cfg: LoraConfig, vb: &VarBuilder) -> R<()> {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            if let Layer::Plain(l) = layer {
                let (w, b) = (l.weight().clone(), l.bias().cloned());
                *layer = Layer::Lora(lora_linear(w, b, cfg, vb.pp(format!("layers.{i}")))?);
            }
        }
        Ok(())
    }

    /// Folds every adapter into its layer's weight (inference costs a plain linear layer).
    fn merge_lora(&mut self) -> R<()> {
        for layer in &mut self.layers {
            if let Layer::Lora(l) = layer {
                l.merge()?;
            }
        }
        Ok(())
    }
}

impl ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = xs.flatten_from(1)?;
        for layer in &self.layers {
            h = layer.forward_t(&h, train)?.relu()?;
        }
        if self.detach_backbone {
            h = h.detach();
        }
        self.head.forward(&h)
    }
}

fn accuracy(logits: &Tensor, labels: &Tensor) -> candle_core::Result<f64> {
    let hits = logits.argmax(D::Minus1)?.eq(labels)?.to_dtype(DType::F32)?;
    Ok(100.0 * hits.mean_all()?.to_scalar::<f32>()? as f64)
}

/// Every image of `images` `(N, 1, 8, 8)` moved by up to `SHIFT` pixels in each direction
/// (zeros fill in) plus Gaussian noise of standard deviation `NOISE`, drawn anew at each call:
/// each training batch gets fresh perturbations, each test set one fixed draw.
fn jitter(images: &Tensor, rng: &mut StdRng) -> R<Tensor> {
    let pixels = images.flatten_all()?.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(pixels.len());
    let shift = SHIFT as i32;
    for image in pixels.chunks(64) {
        let (dx, dy) = (
            rng.random_range(-shift..=shift),
            rng.random_range(-shift..=shift),
        );
        for y in 0..8i32 {
            for x in 0..8i32 {
                let (sx, sy) = (x - dx, y - dy);
                let inside = (0..8).contains(&sx) && (0..8).contains(&sy);
                let v = if inside {
                    image[(sy * 8 + sx) as usize]
                } else {
                    0.0
                };
                // Box–Muller: a standard normal sample from two uniform ones.
                let (u, w): (f32, f32) = (rng.random_range(f32::EPSILON..1.0), rng.random());
                let normal = (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * w).cos();
                out.push(v + NOISE * normal);
            }
        }
    }
    Ok(Tensor::from_vec(out, images.shape(), images.device())?)
}

/// `set` with its labels renumbered `0..classes.len()` in the order of `classes`.
fn relabel(set: &Digits, classes: &[u32]) -> R<(Tensor, Tensor)> {
    let labels: Vec<u32> = set
        .labels()
        .to_vec1::<u32>()?
        .iter()
        .map(|l| {
            let at = classes.iter().position(|c| c == l);
            at.map(|i| i as u32)
                .ok_or_else(|| format!("digit {l} is not among {classes:?}"))
        })
        .collect::<Result<_, _>>()?;
    let n = labels.len();
    Ok((
        set.images().clone(),
        Tensor::from_vec(labels, n, set.labels().device())?,
    ))
}

/// `shots` random images of each class of `set` for training, the rest for testing.
fn few_shot_split(set: &Digits, shots: usize, rng: &mut StdRng) -> R<(Digits, Digits)> {
    let labels = set.labels().to_vec1::<u32>()?;
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.shuffle(rng);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    let mut taken = [0usize; digits::CLASSES];
    for i in order {
        let seen = &mut taken[labels[i] as usize];
        if *seen < shots {
            *seen += 1;
            train.push(i);
        } else {
            test.push(i);
        }
    }
    Ok((set.select(&train)?, set.select(&test)?))
}

/// Trains `net` on `(x, y)` for `steps` steps of `BATCH` images (cycling through the set) with
/// `opt`; returns the seconds it took.
fn train(
    net: &Net,
    opt: &mut AdamW,
    (x, y): (&Tensor, &Tensor),
    steps: usize,
    rng: &mut StdRng,
) -> R<f64> {
    let start = Instant::now();
    let n = x.dim(0)?;
    let mut at = 0;
    for _ in 0..steps {
        let len = BATCH.min(n - at);
        let logits = net.forward_t(&jitter(&x.narrow(0, at, len)?, rng)?, true)?;
        let loss = loss::cross_entropy(&logits, &y.narrow(0, at, len)?, &Default::default())?;
        opt.backward_step(&loss)?;
        at = (at + len) % n;
    }
    Ok(start.elapsed().as_secs_f64())
}

fn adamw(groups: impl Into<ParamGroups>) -> R<AdamW> {
    let cfg = AdamWConfig::default()
        .with_lr(LR)
        .with_weight_decay(WEIGHT_DECAY);
    Ok(AdamW::with_groups(groups, cfg)?)
}

/// Pre-trains on task A and saves every var of the model to `path`; returns the test accuracy.
fn pretrain(data: &Digits, path: &Path, rng: &mut StdRng, dev: &Device) -> R<f64> {
    let (train_a, test_a) = data.select_classes(&TASK_A)?.split(0.2, 0)?;
    let varmap = VarMap::new();
    let net = Net::new(
        TASK_A.len(),
        &VarBuilder::from_varmap(&varmap, DType::F32, dev),
    )?;
    let mut opt = adamw(ParamGroups::no_decay_for_bias_and_norm(
        &varmap,
        WEIGHT_DECAY,
    ))?;
    let (x, y) = relabel(&train_a, &TASK_A)?;
    train(&net, &mut opt, (&x, &y), PRETRAIN_STEPS, rng)?;
    varmap.save(path)?;
    let (x, y) = relabel(&test_a, &TASK_A)?;
    Ok(accuracy(&net.forward_t(&jitter(&x, rng)?, false)?, &y)?)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Scratch,
    LinearProbe,
    FullFineTune,
    LayerDecay,
    Lora,
}

impl Method {
    const ALL: [Method; 5] = [
        Method::Scratch,
        Method::LinearProbe,
        Method::FullFineTune,
        Method::LayerDecay,
        Method::Lora,
    ];

    fn name(self) -> String {
        match self {
            Method::Scratch => "from scratch".into(),
            Method::LinearProbe => "linear probe (frozen backbone)".into(),
            Method::FullFineTune => "full fine-tune".into(),
            Method::LayerDecay => format!("full fine-tune, layer decay {DECAY}"),
            Method::Lora => format!("LoRA r = {LORA_RANK} (frozen backbone) + head"),
        }
    }
}

/// One run of a method: trainable parameters, training seconds, test accuracy (%).
struct Outcome {
    trainable: usize,
    seconds: f64,
    accuracy: f64,
}

/// Loads the checkpoint at `ckpt` into `varmap` leniently and checks that everything but the
/// head (6 classes in the checkpoint, 4 in the task-B model) was loaded: a renamed layer would
/// otherwise stay at its random init and the run would still "train".
fn load_pretrained(varmap: &VarMap, ckpt: &Path) -> R<LoadReport> {
    let report = load_safetensors(varmap, ckpt, false)?;
    let skipped: Vec<&str> = report.mismatched.iter().map(|m| m.name.as_str()).collect();
    let only_head = report.missing.is_empty()
        && report.unexpected.is_empty()
        && skipped == ["head.bias", "head.weight"];
    if !only_head {
        return Err(format!("the checkpoint does not fit the backbone: {report}").into());
    }
    Ok(report)
}

/// Builds the task-B model, loads the checkpoint at `ckpt` (except for `Scratch`), trains it
/// the way `method` says for `STEPS` steps and tests it.
fn fine_tune(
    method: Method,
    ckpt: &Path,
    train_b: (&Tensor, &Tensor),
    test_b: (&Tensor, &Tensor),
    rng: &mut StdRng,
    dev: &Device,
) -> R<Outcome> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, dev);
    let mut net = Net::new(TASK_B.len(), &vb)?;
    if method != Method::Scratch {
        load_pretrained(&varmap, ckpt)?;
    }
    let mut opt = match method {
        Method::Scratch | Method::FullFineTune => adamw(ParamGroups::no_decay_for_bias_and_norm(
            &varmap,
            WEIGHT_DECAY,
        ))?,
        Method::LinearProbe => {
            net.detach_backbone = true;
            adamw(unfreeze(&varmap, &["head"])?)?
        }
        Method::LayerDecay => adamw(layer_decay_groups(
            &varmap,
            HIDDEN.len(),
            DECAY,
            WEIGHT_DECAY,
        )?)?,
        Method::Lora => {
            net.add_lora(
                LoraConfig::default()
                    .with_r(LORA_RANK)
                    .with_lora_alpha(LORA_ALPHA),
                &vb,
            )?;
            // The adapters and the new head; the base weights stay out of the optimizer.
            let named = trainable_by(&varmap, |n| n.contains(".lora_") || has_prefix(n, "head"));
            adamw(vec![ParamGroup::named(named)])?
        }
    };
    let trainable = opt.vars().iter().map(|v| v.elem_count()).sum();
    let seconds = train(&net, &mut opt, train_b, STEPS, rng)?;
    let accuracy = accuracy(&net.forward_t(test_b.0, false)?, test_b.1)?;
    if method == Method::Lora {
        check_lora(&mut net, ckpt, test_b, accuracy)?;
    }
    Ok(Outcome {
        trainable,
        seconds,
        accuracy,
    })
}

/// The LoRA guarantees: every frozen base weight still equals the checkpoint's bit for bit,
/// and the merged model (adapters folded into the weights) scores the same accuracy.
fn check_lora(
    net: &mut Net,
    ckpt: &Path,
    (x, y): (&Tensor, &Tensor),
    accuracy_unmerged: f64,
) -> R<()> {
    let saved = candle_core::safetensors::load(ckpt, &Device::Cpu)?;
    let bits = |t: &Tensor| -> candle_core::Result<Vec<u32>> {
        Ok(t.flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .map(|v| v.to_bits())
            .collect())
    };
    for (i, layer) in net.layers.iter().enumerate() {
        let Layer::Lora(l) = layer else { continue };
        let name = format!("layers.{i}.weight");
        let same = match saved.get(&name) {
            Some(w) => bits(w)? == bits(l.weight())?,
            None => false,
        };
        if !same {
            return Err(format!("LoRA changed the frozen `{name}`").into());
        }
    }
    let unmerged = net.forward_t(x, false)?;
    net.merge_lora()?;
    let merged = net.forward_t(x, false)?;
    let gap = (&merged - &unmerged)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    let accuracy_merged = accuracy(&merged, y)?;
    if gap > 1e-4 || accuracy_merged != accuracy_unmerged {
        return Err(format!(
            "merged LoRA differs: logits by {gap:.1e}, accuracy {accuracy_merged:.2} % \
             against {accuracy_unmerged:.2} %"
        )
        .into());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let data = digits(&dev)?;
    let start = Instant::now();
    let ckpt = std::env::temp_dir().join(format!("fine_tune_{}.safetensors", std::process::id()));
    let acc_a = pretrain(&data, &ckpt, &mut StdRng::seed_from_u64(0), &dev)?;
    println!(
        "pre-trained on digits 0-5: {acc_a:.1} % test accuracy, saved to {} ({:.1}s)",
        ckpt.display(),
        start.elapsed().as_secs_f32()
    );
    // What the lenient load reports for the task-B model: the new head, nothing else.
    let varmap = VarMap::new();
    Net::new(
        TASK_B.len(),
        &VarBuilder::from_varmap(&varmap, DType::F32, &dev),
    )?;
    println!("load report: {}", load_pretrained(&varmap, &ckpt)?);
    let task_b = data.select_classes(&TASK_B)?;
    for shots in SHOTS {
        // Per method: trainable parameters, and sums of seconds, accuracy and accuracy².
        let mut sums = vec![(0usize, 0f64, 0f64, 0f64); Method::ALL.len()];
        for seed in 0..REPEATS {
            let mut rng = StdRng::seed_from_u64(seed);
            let (train_b, test_b) = few_shot_split(&task_b, shots, &mut rng)?;
            let (xb, yb) = relabel(&train_b, &TASK_B)?;
            let (xt, yt) = relabel(&test_b, &TASK_B)?;
            let xt = jitter(&xt, &mut rng)?;
            for (m, sum) in Method::ALL.iter().zip(&mut sums) {
                // Every method sees the same perturbed batches.
                let mut rng = rng.clone();
                let o = fine_tune(*m, &ckpt, (&xb, &yb), (&xt, &yt), &mut rng, &dev)?;
                sum.0 = o.trainable;
                sum.1 += o.seconds;
                sum.2 += o.accuracy;
                sum.3 += o.accuracy * o.accuracy;
            }
        }
        let k = REPEATS as f64;
        println!("\ndigits 6-9, {shots} labels per class, {STEPS} steps, mean of {REPEATS} draws:");
        println!(
            "| method | trainable parameters | train time | test accuracy |\n|---|---|---|---|"
        );
        for (m, s) in Method::ALL.iter().zip(&sums) {
            let mean = s.2 / k;
            let sd = (s.3 / k - mean * mean).max(0.0).sqrt();
            println!(
                "| {} | {} | {:.2} s | {mean:.1} % ± {sd:.1} |",
                m.name(),
                s.0,
                s.1 / k
            );
        }
    }
    println!(
        "\nLoRA, every run: frozen weights bit-identical to the checkpoint, merged model scores \
         the same accuracy"
    );
    std::fs::remove_file(&ckpt)?;
    println!("\ntotal {:.0}s", start.elapsed().as_secs_f32());
    Ok(())
}
