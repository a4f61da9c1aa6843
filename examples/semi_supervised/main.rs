//! Semi-supervised learning with 5 % of the labels, on two tasks: supervised-only vs
//! pseudo-labels vs FixMatch (vs mean teacher) vs all labels, same model and step budget per
//! task.
//!
//! ```sh
//! cargo run --release --example semi_supervised
//! ```
//!
//! Every row of a task starts from the same seeded weights, trains for the same number of AdamW
//! steps on batches of 32 labelled samples with the same weak augmentation (the semi-supervised
//! rows add 128 unlabeled samples a step), and is scored once, after the last step, on a test
//! set it never saw (no early stopping). Means over 3 label splits (seeds 0, 1, 2). Each run is
//! single-threaded and the runs go in parallel threads.
//!
//! # Task 1: the UCI digits (real images, a small gap)
//!
//! Data: the UCI handwritten digits (8×8, embedded in the crate). Per seed, a stratified 30 %
//! test split; of the other 70 % (1258 images) only 5 % keep their label (60 images, 6 per
//! digit), and all 1258 images serve as unlabeled data. A multi-layer perceptron
//! (64 → 256 → 10) is trained four ways for 1000 steps:
//! 1. **supervised only**: cross-entropy on the 60 labelled images;
//! 2. **pseudo-labels**: plus [`pseudo_label_loss`] on unlabeled images (threshold 0.8): the
//!    model trains on its own confident predictions;
//! 3. **FixMatch**: plus [`fixmatch_loss`]: labels from the weak view (the image itself), the
//!    cross-entropy on a strong view of the same images (shift ±1 pixel, brightness and
//!    contrast jitter, cutout, uniform noise);
//! 4. **all labels**: cross-entropy on all 1258 training images, the ceiling.
//!
//! Results (test accuracy on 539 images per seed, mean of 3 label splits):
//!
//! | method | test accuracy | per seed | last mask rate |
//! |---|---|---|---|
//! | supervised only (5 % labels) | 86.8 % | 88.3 / 84.4 / 87.8 | – |
//! | pseudo-labels (5 % labels + unlabeled) | 91.2 % (+4.3) | 93.1 / 87.6 / 92.8 | 99 % |
//! | FixMatch (5 % labels + unlabeled) | 91.5 % (+4.7) | 92.6 / 87.9 / 94.1 | 91 % |
//! | all labels (100 %) | 97.7 % | 96.7 / 98.0 / 98.5 | – |
//!
//! Here the unlabeled images add 4.3 to 4.7 points (3 to 6 on each split) and close 40 % of
//! the gap to the fully labelled run, short of issue 16's 10 points. There is hardly room for
//! more: 60 labels already give 86.8 % and all 1258 give 97.7 %, so the whole gap is 10.9
//! points (a convolutional network leaves even less: 93 % against 97 % in one run). Digits of
//! one class are not a thin, connected cloud that the unlabeled images could trace: the
//! classes touch, and the labelled images already cover most of each class. An MLP also has no
//! translation invariance, so the strong view asks it to learn one from 128 images a step;
//! FixMatch pays off with convolutional networks and long schedules (its paper trains for
//! 2^20 steps). The mask rate (the fraction of the unlabeled batch above the threshold at the
//! last step) shows how much of the unlabeled data was in use at the end.
//!
//! # Task 2: interleaved spirals (the cluster assumption, a large gap)
//!
//! Data: `candle_tricks::data::spirals` with its default geometry (3 arms, 1.5 turns, noise 0.03:
//! the arms are 0.22 apart). Per seed, 3000 training points, of which 5 % keep their label (150,
//! stratified), and 2000 fresh test points. The network is an MLP on 64 random Fourier features
//! of the point ($\sin$ and $\cos$ of $2 \pi B x$, $B$ fixed and Gaussian with standard deviation
//! 2; Tancik et al. 2020, arXiv:2006.10739) → 128 → 128 → classes, trained for 2000 steps. The
//! only augmentation is Gaussian input noise: the weak view (and every labelled batch, in every
//! row) adds σ = 0.01, the strong view σ = 0.04, well below half the gap between neighbouring
//! arms, so a noisy copy stays on its own arm. Rows: supervised only; pseudo-labels (threshold
//! 0.95); FixMatch (threshold 0.95, weak → strong); **mean teacher**
//! ([`mean_teacher_consistency`] between the student and an EMA teacher, decay 0.99, on two
//! strong views, weight 10 ramped up with [`sigmoid_rampup`] over the first 30 % of the steps);
//! all labels. The first row is a reference outside the comparison: the same budget on a plain
//! MLP fed $(x, y)$.
//!
//! Results (test accuracy on 2000 points per seed, mean of 3 label splits; the gains are over
//! the supervised-only row of the same network):
//!
//! | method | test accuracy | per seed | last mask rate |
//! |---|---|---|---|
//! | supervised only, plain MLP on (x, y) (5 % labels) | 98.1 % | 96.2 / 99.0 / 99.2 | – |
//! | supervised only (5 % labels) | 83.6 % | 81.1 / 84.3 / 85.6 | – |
//! | pseudo-labels (5 % labels + unlabeled) | 86.0 % (+2.4) | 84.5 / 88.2 / 85.5 | 98 % |
//! | FixMatch (5 % labels + unlabeled) | 99.0 % (+15.3) | 100.0 / 99.9 / 97.1 | 99 % |
//! | mean teacher (5 % labels + unlabeled) | 99.8 % (+16.2) | 99.7 / 99.9 / 100.0 | – |
//! | all labels (100 %) | 99.3 % | 99.7 / 98.7 / 99.7 | – |
//!
//! With the same network, steps and augmentation, FixMatch and the mean teacher gain 15 to 16
//! points over supervised-only and land within 0.5 points of the fully labelled run (issue 16's
//! must-hold); plain pseudo-labelling, with no second view, gains only 2.4. Read the first row
//! before quoting that gain: a plain MLP on $(x, y)$ already reaches 98.1 % from the same 150
//! labels, because its smooth extrapolation happens to follow three gently winding arms. The
//! Fourier-feature network can fit any boundary (99.3 % with all labels) but between labels it
//! guesses; the unlabeled points tell it where the arms run. So the table shows what the
//! unlabeled data add to a flexible model, not that 5 % of the labels are hopeless here. What I
//! tried to make the plain MLP fall short too (tighter geometries, 4 to 6 arms with noise 0.015
//! to 0.02, 2000 and 4000 steps): the plain MLP drops to 83 to 95 %, but the semi-supervised
//! rows on the Fourier-feature network end between about 75 % (6 arms) and 97.6 % (4 arms),
//! from about 6 points below to 2.6 points above it; on the plain MLP itself pseudo-labels and
//! FixMatch did not help (up to 12 points worse with 6 arms, where a strong view of σ = 0.04
//! jumps between arms 0.11 apart).
//!
//! Why the gap can be large here and is small on the digits: semi-supervised learning can only
//! recover what the unlabeled inputs reveal about the labels. The spirals are dense, connected arms
//! separated by empty space (the cluster assumption of Chapelle et al., *Semi-Supervised Learning*,
//! 2006; Oliver et al. 2018, arXiv:1804.09170, use two moons for the same reason), so the
//! consistency and pseudo-label losses can carry the few labels along each arm of a network
//! flexible enough to follow them; on the digits the classes are neither thin nor well separated,
//! and 5 % of the labels already pin most of each class down.
//!
//! To adapt it: put your network in `Net` and your augmentation in `StrongView` (it must keep
//! the label: no flips for digits or text); keep the threshold high (0.8 to 0.95) and give the
//! unlabeled batch several times the labelled one's size. Check first that your data has the
//! structure the method needs (clusters the labels do not cross): where it does not, expect the
//! digits' few points rather than the spirals' many.
//!
//! Time: 50 s of CPU time, 94 s of wall time for both tasks (the digits 30 s) on a 2-core
//! machine shared with other builds (load average about 20).

// mimalloc with freed memory kept mapped (README, "allocator" tip): training steps free and
// reallocate the same large temporaries every iteration. One module, shared with the benches.
#[path = "../../benches/common/alloc.rs"]
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

mod spirals;

/// One method's runs, in seed order: (test accuracy %, last mask rate).
type Runs = Vec<(f64, f64)>;

/// Mean of the first entries (the accuracies) of a method's runs.
fn mean(runs: &[(f64, f64)]) -> f64 {
    runs.iter().map(|r| r.0).sum::<f64>() / runs.len() as f64
}

/// Runs `job(method, seed, split)` for every method and seed, each on its own thread, and returns
/// the (accuracy, mask rate) pairs per method in seed order. Each run is a serial chain of small
/// steps, so one thread per run keeps both cores busy better than candle's pool within a run.
fn run_all<M: Copy + Send + Sync, S: Sync>(
    methods: &[M],
    splits: &[S],
    job: impl Fn(M, u64, &S) -> candle_tricks::Result<(f64, f64)> + Sync,
) -> Result<Vec<Runs>, Box<dyn std::error::Error>> {
    let job = &job;
    std::thread::scope(|scope| {
        let handles: Vec<Vec<_>> = methods
            .iter()
            .map(|&m| {
                SEEDS
                    .iter()
                    .zip(splits)
                    .map(|(&seed, split)| scope.spawn(move || job(m, seed, split)))
                    .collect()
            })
            .collect();
        handles
            .into_iter()
            .map(|per_seed| {
                per_seed
                    .into_iter()
                    .map(|h| match h.join() {
                        Ok(r) => r.map_err(Into::into),
                        Err(_) => Err("a training thread panicked".into()),
                    })
                    .collect()
            })
            .collect()
    })
}

/// Prints the results table; `semi[i]` marks the rows that use unlabeled data (their gain over
/// row `baseline` and their last mask rate, where they have one, are shown).
fn print_table(names: &[&str], results: &[Runs], semi: &[bool], baseline: usize) {
    println!("| method | test accuracy | per seed | last mask rate |");
    println!("|---|---|---|---|");
    let base = mean(&results[baseline]);
    for (i, name) in names.iter().enumerate() {
        let m = mean(&results[i]);
        let per: Vec<String> = results[i].iter().map(|r| format!("{:.1}", r.0)).collect();
        let (acc, rate) = if semi[i] {
            let rate = results[i].iter().map(|r| r.1).sum::<f64>() / results[i].len() as f64;
            let rate = if rate > 0.0 {
                format!("{:.0} %", 100.0 * rate)
            } else {
                "–".into()
            };
            (format!("{m:.1} % ({:+.1})", m - base), rate)
        } else {
            (format!("{m:.1} %"), "–".into())
        };
        println!("| {name} | {acc} | {} | {rate} |", per.join(" / "));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Small tensors: candle's thread pool costs more in hand-offs than it saves here, so each
    // run is single-threaded (unless the user chose otherwise) and the runs go in parallel.
    for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, "1");
        }
    }
    let start = Instant::now();

    // Task 1: the digits.
    let data = digits(&Device::Cpu)?;
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
    let mut splits = Vec::new();
    for seed in SEEDS {
        let (pool, test) = data.split(0.3, seed)?;
        let (_, labelled) = pool.split(LABELLED_FRACTION, seed)?;
        splits.push((labelled, pool, test));
    }
    let ms: Vec<Method> = methods.iter().map(|m| m.0).collect();
    let results = run_all(&ms, &splits, |m, seed, (labelled, pool, test)| {
        run(m, seed, (labelled, pool, test), &strong_view)
    })?;
    println!(
        "Digits: {} labelled of {} training images, {STEPS} steps of {BATCH} labelled \
         (+ {} unlabeled), mean of {} seeds ({:.0} s)\n",
        splits[0].0.len(),
        splits[0].1.len(),
        BATCH * MU,
        SEEDS.len(),
        start.elapsed().as_secs_f32()
    );
    let names: Vec<&str> = methods.iter().map(|m| m.1).collect();
    let semi: Vec<bool> = ms
        .iter()
        .map(|m| matches!(m, Method::PseudoLabels | Method::FixMatch))
        .collect();
    print_table(&names, &results, &semi, 0);

    // Task 2: the spirals.
    let splits = SEEDS
        .iter()
        .map(|&seed| spirals::Split::new(seed, LABELLED_FRACTION))
        .collect::<candle_tricks::Result<Vec<_>>>()?;
    let ms: Vec<spirals::Method> = spirals::METHODS.iter().map(|m| m.0).collect();
    let results = run_all(&ms, &splits, spirals::run)?;
    let (n_labelled, n_pool) = splits[0].sizes();
    println!(
        "\nSpirals: {n_labelled} labelled of {n_pool} training points, {} steps, mean of {} \
         seeds ({:.0} s)\n",
        spirals::STEPS,
        SEEDS.len(),
        start.elapsed().as_secs_f32()
    );
    let names: Vec<&str> = spirals::METHODS.iter().map(|m| m.1).collect();
    let semi: Vec<bool> = ms
        .iter()
        .map(|m| {
            matches!(
                m,
                spirals::Method::PseudoLabels
                    | spirals::Method::FixMatch
                    | spirals::Method::MeanTeacher
            )
        })
        .collect();
    print_table(&names, &results, &semi, 1);
    Ok(())
}
