//! Semi-supervised learning with 5 % of the labels: supervised-only vs pseudo-labels vs
//! FixMatch vs all labels, same model and step budget.
//!
//! ```sh
//! cargo run --release --example semi_supervised
//! ```
//!
//! Data: the UCI handwritten digits (8×8, embedded in the crate). Per seed, a stratified 30 %
//! test split; of the other 70 % (1258 images) only 5 % keep their label (60 images, 6 per
//! digit), and all 1258 images serve as unlabeled data. A multi-layer perceptron
//! (64 → 256 → 10) is trained four ways for 1000 AdamW steps each, from the same seeded initial
//! weights, every step on 32 labelled images (plus 128 unlabeled ones for 2 and 3):
//! 1. **supervised only**: cross-entropy on the 60 labelled images;
//! 2. **pseudo-labels**: plus [`pseudo_label_loss`] on unlabeled images (threshold 0.8): the
//!    model trains on its own confident predictions;
//! 3. **FixMatch**: plus [`fixmatch_loss`]: labels from the weak view (the image itself), the
//!    cross-entropy on a strong view of the same images (shift ±1 pixel, brightness and
//!    contrast jitter, cutout, uniform noise);
//! 4. **all labels**: cross-entropy on all 1258 training images, the ceiling.
//!
//! Results (test accuracy on 539 images per seed, mean of 3 label splits;
//! 135 s of CPU time, 9.7 min wall on a 2-core machine shared with other builds):
//!
//! | method | test accuracy | per seed | last mask rate |
//! |---|---|---|---|
//! | supervised only (5 % labels) | 86.8 % | 88.3 / 84.4 / 87.8 | – |
//! | pseudo-labels (5 % labels + unlabeled) | 91.2 % (+4.4) | 93.1 / 87.6 / 92.8 | 99 % |
//! | **FixMatch (5 % labels + unlabeled)** | **91.5 % (+4.7)** | 92.6 / 87.9 / 94.1 | 91 % |
//! | all labels (100 %) | 97.7 % | 96.7 / 98.0 / 98.5 | – |
//!
//! What it shows, and what it does not: the unlabeled images add 4.4 to 4.7 points over the
//! labelled ones alone (3 to 6 on each split) and close 40 % of the gap to the fully labelled
//! run.
//! Issue 16 asks for a gain of 10 points and to land within 5 points of all labels; neither
//! holds here (FixMatch ends 6.2 points short). On these digits a 10-point gain would leave
//! hardly any room: 60 labels already give 86.8 % and all 1258 give 97.7 %, so the whole gap is
//! 10.9 points. A convolutional network leaves even less (in one run, 93 % with 5 % of the
//! labels against 97 % with all). FixMatch and plain pseudo-labelling end close here: an MLP has
//! no built-in translation invariance, and the strong view asks it to learn one from 128 images
//! a step; FixMatch pays off with convolutional networks and long schedules (its paper trains
//! for 2^20 steps). The mask rate (the fraction of the unlabeled batch above the threshold at
//! the last step) shows how much of the unlabeled data was in use at the end.
//!
//! To adapt it: put your network in `Net` and your augmentation in `StrongView` (it must keep
//! the label: no flips for digits or text); keep the threshold high (0.8 to 0.95) and give the
//! unlabeled batch several times the labelled one's size.

// mimalloc with freed memory kept mapped (README, "allocator" tip): training steps free and
// reallocate the same large temporaries every iteration. One module, shared with the benches.
#[path = "../benches/common/alloc.rs"]
mod alloc;

use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use candle_tricks::augment::{Augment, ColorJitter, RandomCrop, RandomErasing};
use candle_tricks::data::{digits, Digits};
use candle_tricks::loss::cross_entropy;
use candle_tricks::optim::{AdamW, AdamWConfig};
use candle_tricks::train::{fixmatch_loss, pseudo_label_loss};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEEDS: [u64; 3] = [0, 1, 2];
const LABELLED_FRACTION: f64 = 0.05;
const STEPS: usize = 1000;
/// Labelled images per step; the unlabeled batch is `MU` times larger.
const BATCH: usize = 32;
const MU: usize = 4;
const THRESHOLD: f64 = 0.8;
/// The weight of the unlabeled loss, $\lambda_u$ (1 in FixMatch).
const LAMBDA_U: f64 = 1.0;
const LR: f64 = 3e-3;
const NOISE: f32 = 0.2;
const HIDDEN: usize = 256;

/// A multi-layer perceptron 64 → 256 → 10 on the flattened image (no convolution: the
/// translation invariance must come from the data).
struct Net {
    fc1: candle_nn::Linear,
    fc2: candle_nn::Linear,
}

impl Net {
    fn new(vb: VarBuilder) -> candle_tricks::Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(64, HIDDEN, vb.pp("fc1"))?,
            fc2: candle_nn::linear(HIDDEN, 10, vb.pp("fc2"))?,
        })
    }
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2
            .forward(&self.fc1.forward(&x.flatten_from(1)?)?.relu()?)
    }
}

/// Overwrites every weight with seeded uniform values in $\pm 1 / \sqrt{\text{fan-in}}$ and
/// every bias with zeros (candle's own initialiser cannot be seeded), so all methods of a
/// seed start from the same network.
fn seeded_init(varmap: &VarMap, seed: u64) -> candle_core::Result<()> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::msg("poisoned"))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    for name in names {
        let v = &vars[name];
        let n = v.elem_count();
        let values: Vec<f32> = if v.rank() == 1 {
            vec![0.0; n]
        } else {
            let bound = 1.0 / ((n / v.dims()[0]) as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        v.set(&Tensor::from_vec(values, v.shape(), v.device())?)?;
    }
    Ok(())
}

/// The strong view: shift ±1 pixel, brightness and contrast ±50 %, a cutout of 5–20 % of the
/// image (half of the time), then uniform noise in ±`NOISE`. The weak view is the image itself:
/// on 8×8 digits a one-pixel shift is already an eighth of the image, enough to make the
/// pseudo-labels noticeably less reliable.
struct StrongView(Augment);

impl StrongView {
    fn new() -> candle_tricks::Result<Self> {
        Ok(Self(Augment::new([
            RandomCrop::new((8, 8)).with_padding(1).into(),
            ColorJitter::new(0.5, 0.5, 0.0, 0.0).into(),
            RandomErasing::new(0.5).with_scale((0.05, 0.2)).into(),
        ])?))
    }

    fn apply(&self, x: &Tensor, seed: u64, rng: &mut StdRng) -> candle_tricks::Result<Tensor> {
        let y = self.0.apply(x, seed)?;
        let noise: Vec<f32> = (0..y.elem_count())
            .map(|_| rng.random_range(-NOISE..NOISE))
            .collect();
        Ok((y + Tensor::from_vec(noise, x.shape(), x.device())?)?)
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Method {
    Supervised,
    PseudoLabels,
    FixMatch,
    AllLabels,
}

/// `n` indices drawn with replacement from `0..len`.
fn draw(rng: &mut StdRng, len: usize, n: usize, dev: &Device) -> candle_core::Result<Tensor> {
    let idx: Vec<u32> = (0..n).map(|_| rng.random_range(0..len as u32)).collect();
    Tensor::from_vec(idx, n, dev)
}

fn accuracy(logits: &Tensor, labels: &Tensor) -> candle_core::Result<f64> {
    let hits = logits
        .argmax(D::Minus1)?
        .eq(labels)?
        .to_dtype(DType::F32)?
        .mean_all()?
        .to_scalar::<f32>()?;
    Ok(100.0 * hits as f64)
}

/// Trains one network with `method`; returns the test accuracy (%) and, for the
/// semi-supervised methods, the last step mask rate.
fn run(
    method: Method,
    seed: u64,
    (labelled, pool, test): (&Digits, &Digits, &Digits),
    strong_view: &StrongView,
) -> candle_tricks::Result<(f64, f64)> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let net = Net::new(VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    seeded_init(&varmap, seed)?;
    let cfg = AdamWConfig::default().with_lr(LR);
    let mut opt = AdamW::new(varmap.all_vars(), cfg)?;
    let train = if method == Method::AllLabels {
        pool
    } else {
        labelled
    };
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1000) + 17);
    let mut mask_rate = 0.0;
    for step in 0..STEPS {
        let aug_seed = seed * 1_000_000 + step as u64;
        let idx = draw(&mut rng, train.len(), BATCH, &dev)?;
        let xb = train.images().index_select(&idx, 0)?;
        let yb = train.labels().index_select(&idx, 0)?;
        let loss = match method {
            Method::Supervised | Method::AllLabels => {
                cross_entropy(&net.forward(&xb)?, &yb, &Default::default())?
            }
            Method::PseudoLabels | Method::FixMatch => {
                let idx_u = draw(&mut rng, pool.len(), BATCH * MU, &dev)?;
                let xu = pool.images().index_select(&idx_u, 0)?;
                let unlabeled = if method == Method::FixMatch {
                    let strong = strong_view.apply(&xu, aug_seed, &mut rng)?;
                    let logits = net.forward(&Tensor::cat(&[&xb, &xu, &strong], 0)?)?;
                    let n_u = BATCH * MU;
                    let out = fixmatch_loss(
                        &logits.narrow(0, BATCH, n_u)?,
                        &logits.narrow(0, BATCH + n_u, n_u)?,
                        THRESHOLD,
                    )?;
                    (logits.narrow(0, 0, BATCH)?, out)
                } else {
                    let logits = net.forward(&Tensor::cat(&[&xb, &xu], 0)?)?;
                    let out = pseudo_label_loss(&logits.narrow(0, BATCH, BATCH * MU)?, THRESHOLD)?;
                    (logits.narrow(0, 0, BATCH)?, out)
                };
                let (sup_logits, out) = unlabeled;
                mask_rate = out.mask_rate;
                let sup = cross_entropy(&sup_logits, &yb, &Default::default())?;
                (sup + (out.loss * LAMBDA_U)?)?
            }
        };
        opt.backward_step(&loss)?;
    }
    Ok((
        accuracy(&net.forward(test.images())?, test.labels())?,
        mask_rate,
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let data = digits(&dev)?;
    let strong_view = StrongView::new()?;
    let methods = [
        (Method::Supervised, "supervised only (5 % labels)"),
        (
            Method::PseudoLabels,
            "pseudo-labels (5 % labels + unlabeled)",
        ),
        (Method::FixMatch, "FixMatch (5 % labels + unlabeled)"),
        (Method::AllLabels, "all labels (100 %)"),
    ];
    let start = Instant::now();
    let mut acc = vec![Vec::new(); methods.len()];
    let mut rates = vec![0.0; methods.len()];
    let mut sizes = (0, 0);
    for seed in SEEDS {
        let (pool, test) = data.split(0.3, seed)?;
        let (_, labelled) = pool.split(LABELLED_FRACTION, seed)?;
        sizes = (labelled.len(), pool.len());
        let mut line = format!("seed {seed}:");
        for (i, (method, _)) in methods.iter().enumerate() {
            let (a, rate) = run(*method, seed, (&labelled, &pool, &test), &strong_view)?;
            acc[i].push(a);
            rates[i] += rate / SEEDS.len() as f64;
            line += &format!(" {method:?} {a:.1}%");
        }
        println!("{line} ({:.0} s)", start.elapsed().as_secs_f32());
    }
    println!(
        "\n{} labelled of {} training images, {STEPS} steps of {BATCH} labelled (+ {} unlabeled), \
         mean of {} seeds\n",
        sizes.0,
        sizes.1,
        BATCH * MU,
        SEEDS.len()
    );
    println!("| method | test accuracy | per seed | last mask rate |");
    println!("|---|---|---|---|");
    for (i, (method, name)) in methods.iter().enumerate() {
        let mean = acc[i].iter().sum::<f64>() / acc[i].len() as f64;
        let per: Vec<String> = acc[i].iter().map(|a| format!("{a:.1}")).collect();
        let rate = match method {
            Method::PseudoLabels | Method::FixMatch => format!("{:.0} %", 100.0 * rates[i]),
            _ => "–".into(),
        };
        println!("| {name} | {mean:.1} % | {} | {rate} |", per.join(" / "));
    }
    println!("\ntotal {:.0} s", start.elapsed().as_secs_f32());
    Ok(())
}
