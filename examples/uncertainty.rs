//! Knowing what the model does not know: MC dropout and a deep ensemble flag out-of-distribution
//! inputs by their predictive entropy, and temperature scaling repairs an overconfident
//! network's calibration. On the UCI handwritten digits (real data, embedded in the crate).
//!
//! ```sh
//! cargo run --release --example uncertainty
//! ```
//!
//! Setup: a 64-256-256-5 ReLU MLP with dropout 0.3 learns the digits 0–4 (378 training
//! images, stratified; 163 for validation, 360 for testing). Every image carries Gaussian
//! sensor noise (σ = 0.3): one fixed draw on the training images, which the network memorises
//! over 150 epochs of plain cross-entropy with Adam (no weight decay, no label smoothing), and
//! fresh draws everywhere else — the honest road to an overconfident network. Out of
//! distribution: the 896 images of the digits 5–9, and 360 images of pure noise (grey 0.25
//! plus the same sensor noise). MC dropout samples 50 forward passes of the first network with
//! dropout on ([`mc_predict`]); the deep ensemble is 5 such networks trained from different
//! initialisations, evaluated with dropout off ([`ensemble_predict`]).
//!
//! Results (one run; 2 min 20 s of CPU time, most of it training the 5 networks; weights and
//! dropout masks come from candle's unseeded generator, so a rerun moves the numbers a
//! little):
//!
//! | method | test accuracy | H in-dist. | H unseen digits | H noise | H ratio OOD / in-dist. | I in-dist. | I unseen digits | I noise | AUROC unseen digits | AUROC noise |
//! |---|---|---|---|---|---|---|---|---|---|---|
//! | single network | 92.5 % | 0.054 | 0.250 | 0.492 | 6.9× | 0.000 | 0.000 | 0.000 | 0.819 | 0.926 |
//! | MC dropout (50 samples) | 91.7 % | 0.130 | 0.486 | 0.738 | 4.7× | 0.062 | 0.221 | 0.256 | 0.823 | 0.918 |
//! | deep ensemble (5 members) | 94.2 % | 0.100 | 0.431 | 0.610 | 5.2× | 0.040 | 0.155 | 0.151 | 0.841 | 0.909 |
//!
//! H is the predictive entropy and I the mutual information (nats, means over each set); the
//! ratio divides the mean of the two out-of-distribution means by the in-distribution one;
//! AUROC is the probability that an out-of-distribution input has a higher H than a test
//! digit. Both sampling methods put 4–5× more entropy on inputs they were not trained for,
//! and only they have a mutual information: the single softmax has no way to say "I have not
//! seen this" apart from a flatter output. The ensemble is the more accurate and the better
//! separator of unseen digits; MC dropout costs one network.
//!
//! Calibration of the first network on the test split, before and after temperature scaling
//! ([`TemperatureScaling`], $T = 2.30$ fitted on the validation split; 10 bins):
//!
//! | | ECE | mean confidence |
//! |---|---|---|
//! | before | 5.34 % | 97.8 % |
//! | after temperature scaling | 2.83 % | 94.0 % |
//! | change | −47 % | |
//!
//! | confidence bin | count before | confidence before | accuracy before | count after | confidence after | accuracy after |
//! |---|---|---|---|---|---|---|
//! | (0.5, 0.6] | 6 | 54.5 % | 50.0 % | 6 | 53.8 % | 33.3 % |
//! | (0.6, 0.7] | 5 | 63.4 % | 60.0 % | 8 | 64.9 % | 50.0 % |
//! | (0.7, 0.8] | 4 | 76.3 % | 25.0 % | 15 | 76.3 % | 60.0 % |
//! | (0.8, 0.9] | 7 | 85.1 % | 57.1 % | 34 | 85.7 % | 91.2 % |
//! | (0.9, 1.0] | 338 | 99.6 % | 95.3 % | 289 | 98.8 % | 97.9 % |
//!
//! (Bins below 0.3 stay empty; (0.3, 0.5] holds 8 samples after scaling.) Before scaling, 94 %
//! of the test digits sit in the top bin at 99.6 % confidence but are right 95.3 % of the time;
//! one temperature spreads the scores out, and the top bin's confidence and accuracy nearly
//! meet. The argmax, and so the accuracy, is unchanged. The sparse lower bins are noisy with
//! 360 test samples; ECE weights them by their counts.
//!
//! To adapt it: put your model in `Net` (keep the dropout layers switched by `forward_t`'s
//! `train` flag, and batch norm, if any, in evaluation mode) and your in- and
//! out-of-distribution data in `main`; fit the temperature on a validation split, never on the
//! test split.

// mimalloc with freed memory kept mapped (README, "allocator" tip): training steps free and
// reallocate the same large temporaries every iteration. One module, shared with the benches.
#[path = "../benches/common/alloc.rs"]
mod alloc;

use std::time::Instant;

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{Dropout, Linear, Optimizer, VarBuilder, VarMap};
use candle_tricks::data::{digits, Digits};
use candle_tricks::loss::{self, CrossEntropyConfig};
use candle_tricks::optim::{Adam, AdamConfig};
use candle_tricks::tune::calibration::{
    expected_calibration_error, Calibration, Scores, TemperatureScaling,
};
use candle_tricks::tune::uncertainty::{ensemble_predict, mc_predict, PredictiveUncertainty};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The digits the network is trained on; the others are out-of-distribution.
const IN_CLASSES: [u32; 5] = [0, 1, 2, 3, 4];
const OUT_CLASSES: [u32; 5] = [5, 6, 7, 8, 9];
/// Fractions of the in-distribution digits held out for testing, then for validation.
const TEST_FRACTION: f64 = 0.4;
const VAL_FRACTION: f64 = 0.3;
/// Standard deviation of the Gaussian sensor noise on every image (one fixed draw for the
/// training images, fresh draws elsewhere).
const NOISE: f32 = 0.3;
const HIDDEN: usize = 256;
const DROPOUT: f32 = 0.3;
const EPOCHS: usize = 150;
const BATCH: usize = 32;
const LR: f64 = 1e-3;
/// Stochastic forward passes of MC dropout.
const MC_SAMPLES: usize = 50;
/// Members of the deep ensemble (the first is the network MC dropout samples).
const MEMBERS: usize = 5;
const BINS: usize = 10;
const SEED: u64 = 0;

/// 64 → 256 → 256 → 5 ReLU MLP with dropout before each hidden-to-next linear layer.
struct Net {
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
    dropout: Dropout,
}

impl Net {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(64, HIDDEN, vb.pp("fc1"))?,
            fc2: candle_nn::linear(HIDDEN, HIDDEN, vb.pp("fc2"))?,
            fc3: candle_nn::linear(HIDDEN, IN_CLASSES.len(), vb.pp("fc3"))?,
            dropout: Dropout::new(DROPOUT),
        })
    }
}

impl ModuleT for Net {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let h = self.fc1.forward(&x.flatten_from(1)?)?.relu()?;
        let h = self.dropout.forward_t(&h, train)?;
        let h = self.fc2.forward(&h)?.relu()?;
        self.fc3.forward(&self.dropout.forward_t(&h, train)?)
    }
}

/// `images` plus Gaussian noise of standard deviation [`NOISE`] (Box–Muller on `rng`).
fn noisy(images: &Tensor, rng: &mut StdRng) -> candle_core::Result<Tensor> {
    let noise: Vec<f32> = (0..images.elem_count())
        .map(|_| {
            let (u, v): (f32, f32) = (rng.random_range(f32::EPSILON..1.0), rng.random());
            NOISE * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect();
    images + Tensor::from_vec(noise, images.shape(), images.device())?
}

/// Trains one network from `seed` on `(x, labels)` with plain cross-entropy and Adam: no weight
/// decay, no label smoothing, many epochs, so that it ends up overconfident.
fn train(x: &Tensor, labels: &Tensor, seed: u64) -> candle_tricks::Result<Net> {
    let varmap = VarMap::new();
    let net = Net::new(VarBuilder::from_varmap(&varmap, DType::F32, x.device()))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut opt = Adam::new(varmap.all_vars(), AdamConfig::default().with_lr(LR))?;
    let n = labels.dim(0)?;
    let mut order: Vec<u32> = (0..n as u32).collect();
    for _ in 0..EPOCHS {
        order.shuffle(&mut rng);
        for batch in order.chunks(BATCH) {
            let idx = Tensor::new(batch, x.device())?;
            let logits = net.forward_t(&x.index_select(&idx, 0)?, true)?;
            let loss = loss::cross_entropy(
                &logits,
                &labels.index_select(&idx, 0)?,
                &CrossEntropyConfig::default(),
            )?;
            opt.backward_step(&loss)?;
        }
    }
    Ok(net)
}

/// Mean of a `(N,)` f32 tensor.
fn mean(x: &Tensor) -> candle_core::Result<f64> {
    Ok(f64::from(x.mean_all()?.to_scalar::<f32>()?))
}

/// Area under the ROC curve of `score` separating `out` (positives) from `inside`: the
/// probability that a random out-of-distribution input scores above a random in-distribution one.
fn auroc(inside: &Tensor, out: &Tensor) -> candle_core::Result<f64> {
    let (a, b) = (inside.to_vec1::<f32>()?, out.to_vec1::<f32>()?);
    let wins: f64 = b
        .iter()
        .map(|o| {
            a.iter()
                .map(|i| match o.partial_cmp(i) {
                    Some(std::cmp::Ordering::Greater) => 1.0,
                    Some(std::cmp::Ordering::Equal) => 0.5,
                    _ => 0.0,
                })
                .sum::<f64>()
        })
        .sum();
    Ok(wins / (a.len() * b.len()) as f64)
}

/// One method's uncertainty on the in-distribution test split and both out-of-distribution sets.
struct OodRow {
    name: &'static str,
    /// Predictive entropy, mean over each set: in-distribution, unseen digits, noise.
    entropy: [f64; 3],
    /// Mutual information, mean over each set.
    mutual_information: [f64; 3],
    /// AUROC of the entropy: unseen digits, noise against in-distribution.
    auroc: [f64; 2],
    /// Test accuracy (%) of the predictive mean.
    accuracy: f64,
}

fn ood_row(
    name: &'static str,
    sets: [&PredictiveUncertainty; 3],
    labels: &Tensor,
) -> candle_core::Result<OodRow> {
    let [id, digits, noise] = sets;
    let pred = id.mean.argmax(1)?;
    let hits = pred.eq(labels)?.to_dtype(DType::F32)?;
    Ok(OodRow {
        name,
        entropy: [
            mean(&id.entropy)?,
            mean(&digits.entropy)?,
            mean(&noise.entropy)?,
        ],
        mutual_information: [
            mean(&id.mutual_information)?,
            mean(&digits.mutual_information)?,
            mean(&noise.mutual_information)?,
        ],
        auroc: [
            auroc(&id.entropy, &digits.entropy)?,
            auroc(&id.entropy, &noise.entropy)?,
        ],
        accuracy: 100.0 * mean(&hits)?,
    })
}

fn print_bins(before: &Calibration, after: &Calibration) {
    println!("| confidence bin | count before | confidence before | accuracy before | count after | confidence after | accuracy after |\n|---|---|---|---|---|---|---|");
    for (b, a) in before.bins.iter().zip(&after.bins) {
        let pct = |count: usize, v: f64| {
            if count == 0 {
                "—".to_string()
            } else {
                format!("{:.1} %", 100.0 * v)
            }
        };
        println!(
            "| ({:.1}, {:.1}] | {} | {} | {} | {} | {} | {} |",
            b.lower,
            b.upper,
            b.count,
            pct(b.count, b.confidence),
            pct(b.count, b.accuracy),
            a.count,
            pct(a.count, a.confidence),
            pct(a.count, a.accuracy)
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let dev = Device::Cpu;
    let all = digits(&dev)?;
    let (rest, test) = all
        .select_classes(&IN_CLASSES)?
        .split(TEST_FRACTION, SEED)?;
    let (train_set, val) = rest.split(VAL_FRACTION, SEED)?;
    let mut rng = StdRng::seed_from_u64(SEED);
    let prepare = |set: &Digits, rng: &mut StdRng| noisy(set.images(), rng);
    let train_x = prepare(&train_set, &mut rng)?;
    let val_x = prepare(&val, &mut rng)?;
    let test_x = prepare(&test, &mut rng)?;
    // Out of distribution: the five digits never trained on, and images of pure noise.
    let unseen_x = prepare(&all.select_classes(&OUT_CLASSES)?, &mut rng)?;
    let noise_x = noisy(
        &Tensor::zeros(test_x.shape(), DType::F32, &dev)?.affine(1.0, 0.25)?,
        &mut rng,
    )?;
    println!(
        "train {} / validation {} / test {} in-distribution digits, {} unseen digits, {} noise images",
        train_set.len(),
        val.len(),
        test.len(),
        unseen_x.dim(0)?,
        noise_x.dim(0)?
    );

    let members = (0..MEMBERS as u64)
        .map(|m| train(&train_x, train_set.labels(), SEED + m))
        .collect::<candle_tricks::Result<Vec<_>>>()?;
    println!(
        "trained {MEMBERS} networks ({:.0}s)",
        start.elapsed().as_secs_f32()
    );

    // The single network, deterministic (dropout off): one softmax, no sampling.
    let single = &members[0];
    let logits = |net: &Net, x: &Tensor| net.forward_t(x, false);
    let one = |x: &Tensor| ensemble_predict(&[logits(single, x)?]);
    let mc = |x: &Tensor| mc_predict(single, x, MC_SAMPLES);
    let ens = |x: &Tensor| {
        let all = members
            .iter()
            .map(|net| logits(net, x))
            .collect::<candle_core::Result<Vec<_>>>()?;
        ensemble_predict(&all)
    };
    let mut rows = Vec::new();
    for (name, method) in [
        (
            "single network",
            &one as &dyn Fn(&Tensor) -> candle_tricks::Result<PredictiveUncertainty>,
        ),
        ("MC dropout (50 samples)", &mc),
        ("deep ensemble (5 members)", &ens),
    ] {
        let sets = [method(&test_x)?, method(&unseen_x)?, method(&noise_x)?];
        rows.push(ood_row(
            name,
            [&sets[0], &sets[1], &sets[2]],
            test.labels(),
        )?);
    }

    // Calibration of the single deterministic network, before and after temperature scaling
    // fitted on the validation split.
    let test_logits = logits(single, &test_x)?;
    let before = expected_calibration_error(Scores::Logits(&test_logits), test.labels(), BINS)?;
    let ts = TemperatureScaling::fit(&logits(single, &val_x)?, val.labels())?;
    let after = expected_calibration_error(
        Scores::Logits(&ts.apply(&test_logits)?),
        test.labels(),
        BINS,
    )?;
    let mean_conf = |c: &Calibration| {
        c.bins
            .iter()
            .map(|b| b.count as f64 * b.confidence)
            .sum::<f64>()
            / c.bins.iter().map(|b| b.count).sum::<usize>() as f64
    };

    println!("\nout-of-distribution detection ({:.0}s): mean predictive entropy H and mutual information I (nats), AUROC of H\n", start.elapsed().as_secs_f32());
    println!("| method | test accuracy | H in-dist. | H unseen digits | H noise | H ratio OOD / in-dist. | I in-dist. | I unseen digits | I noise | AUROC unseen digits | AUROC noise |\n|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let ood = 0.5 * (r.entropy[1] + r.entropy[2]);
        println!(
            "| {} | {:.1} % | {:.3} | {:.3} | {:.3} | {:.1}× | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.name,
            r.accuracy,
            r.entropy[0],
            r.entropy[1],
            r.entropy[2],
            ood / r.entropy[0],
            r.mutual_information[0],
            r.mutual_information[1],
            r.mutual_information[2],
            r.auroc[0],
            r.auroc[1]
        );
    }
    println!(
        "\ncalibration of the single network on the test split: temperature {:.2} fitted on the validation split\n",
        ts.temperature()
    );
    println!("| | ECE | mean confidence |\n|---|---|---|");
    println!(
        "| before | {:.2} % | {:.1} % |",
        100.0 * before.ece,
        100.0 * mean_conf(&before)
    );
    println!(
        "| after temperature scaling | {:.2} % | {:.1} % |",
        100.0 * after.ece,
        100.0 * mean_conf(&after)
    );
    println!(
        "| change | {:+.0} % | |\n",
        100.0 * (after.ece / before.ece - 1.0)
    );
    print_bins(&before, &after);
    Ok(())
}
