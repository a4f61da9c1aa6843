//! The second task: three interleaved spirals, where the unlabeled points trace the classes.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use candle_tricks::data::{spirals, SpiralsConfig};
use candle_tricks::loss::cross_entropy;
use candle_tricks::optim::{AdamW, AdamWConfig, Ema, EmaConfig};
use candle_tricks::train::{
    fixmatch_loss, mean_teacher_consistency, pseudo_label_loss, sigmoid_rampup,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::{accuracy, draw, seeded_init};

const N_TRAIN: usize = 3000;
const N_TEST: usize = 2000;
pub const STEPS: usize = 2000;
const BATCH: usize = 32;
/// The unlabeled batch is `MU` times the labelled one.
const MU: usize = 4;
const HIDDEN: usize = 128;
const LR: f64 = 3e-3;
/// Input noise of the weak view (also the labelled batch's augmentation, for every row).
const SIGMA_WEAK: f32 = 0.01;
/// Input noise of the strong view: well below half the 0.22 gap between neighbouring arms, so a
/// noisy copy stays on its own arm.
const SIGMA_STRONG: f32 = 0.04;
const THRESHOLD: f64 = 0.95;
/// The mean-teacher consistency weight $w_{\max}$ (the cost is a mean over $N C$ entries).
const W_MEAN_TEACHER: f64 = 10.0;
/// Random Fourier features: `FEATURES` frequencies drawn from $N(0, \text{SCALE}^2)$ per axis.
const FEATURES: usize = 64;
const SCALE: f32 = 2.0;

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Method {
    /// Supervised only, on a plain MLP fed the raw coordinates: a reference row.
    PlainSupervised,
    Supervised,
    PseudoLabels,
    FixMatch,
    MeanTeacher,
    AllLabels,
}

pub const METHODS: [(Method, &str); 6] = [
    (
        Method::PlainSupervised,
        "supervised only, plain MLP on (x, y) (5 % labels)",
    ),
    (Method::Supervised, "supervised only (5 % labels)"),
    (
        Method::PseudoLabels,
        "pseudo-labels (5 % labels + unlabeled)",
    ),
    (Method::FixMatch, "FixMatch (5 % labels + unlabeled)"),
    (Method::MeanTeacher, "mean teacher (5 % labels + unlabeled)"),
    (Method::AllLabels, "all labels (100 %)"),
];

/// An MLP `features → 128 → 128 → 3` on random Fourier features of the point,
/// $[\sin 2 \pi B x, \cos 2 \pi B x]$ with a fixed Gaussian $B$ (Tancik et al. 2020,
/// arXiv:2006.10739), or on $(x, y)$ itself when `fourier` is off.
struct Net {
    freqs: Option<Tensor>,
    fc1: candle_nn::Linear,
    fc2: candle_nn::Linear,
    fc3: candle_nn::Linear,
}

impl Net {
    fn new(fourier: bool, classes: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let freqs = if fourier {
            // The same frequencies for every run: they are part of the architecture.
            let mut rng = StdRng::seed_from_u64(7);
            let b: Vec<f32> = (0..2 * FEATURES)
                .map(|_| SCALE * std::f32::consts::TAU * standard_normal(&mut rng))
                .collect();
            Some(Tensor::from_vec(b, (2, FEATURES), vb.device())?)
        } else {
            None
        };
        let d_in = if fourier { 2 * FEATURES } else { 2 };
        Ok(Self {
            freqs,
            fc1: candle_nn::linear(d_in, HIDDEN, vb.pp("fc1"))?,
            fc2: candle_nn::linear(HIDDEN, HIDDEN, vb.pp("fc2"))?,
            fc3: candle_nn::linear(HIDDEN, classes, vb.pp("fc3"))?,
        })
    }
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let input = match &self.freqs {
            Some(b) => {
                let z = x.matmul(b)?;
                Tensor::cat(&[z.sin()?, z.cos()?], 1)?
            }
            None => x.clone(),
        };
        let h = self.fc1.forward(&input)?.relu()?;
        self.fc3.forward(&self.fc2.forward(&h)?.relu()?)
    }
}

/// One label split: the training pool (points, labels), its labelled part and a test set.
pub struct Split {
    pool: (Tensor, Tensor),
    labelled: (Tensor, Tensor),
    test: (Tensor, Tensor),
}

impl Split {
    /// A pool of 3000 points and a test set of 2000 fresh ones, both drawn from `seed`, and
    /// `fraction` of the pool's points per class (stratified) keeping their label.
    pub fn new(seed: u64, fraction: f64) -> candle_tricks::Result<Self> {
        let dev = Device::Cpu;
        let cfg = SpiralsConfig::default();
        let mut rng = StdRng::seed_from_u64(seed);
        let pool = spirals(&mut rng, N_TRAIN, &cfg, &dev)?;
        let test = spirals(&mut rng, N_TEST, &cfg, &dev)?;
        let labels = pool.1.to_vec1::<u32>()?;
        let mut keep = Vec::new();
        for class in 0..cfg.classes as u32 {
            let mut members: Vec<u32> = (0..labels.len() as u32)
                .filter(|&i| labels[i as usize] == class)
                .collect();
            members.shuffle(&mut rng);
            let n = (fraction * members.len() as f64).round() as usize;
            keep.extend_from_slice(&members[..n]);
        }
        let idx = Tensor::from_vec(keep.clone(), keep.len(), &dev)?;
        let labelled = (pool.0.index_select(&idx, 0)?, pool.1.index_select(&idx, 0)?);
        Ok(Self {
            pool,
            labelled,
            test,
        })
    }

    /// (labelled points, all training points).
    pub fn sizes(&self) -> (usize, usize) {
        (self.labelled.1.elem_count(), self.pool.1.elem_count())
    }
}

fn standard_normal(rng: &mut StdRng) -> f32 {
    // Box-Muller; 1 - u keeps the logarithm's argument in (0, 1].
    let (u, v): (f32, f32) = (rng.random(), rng.random());
    (-2.0 * (1.0 - u).ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

/// `x` plus Gaussian noise of standard deviation `sigma`: the only augmentation a point has.
fn jitter(x: &Tensor, sigma: f32, rng: &mut StdRng) -> candle_core::Result<Tensor> {
    let noise: Vec<f32> = (0..x.elem_count())
        .map(|_| sigma * standard_normal(rng))
        .collect();
    x + Tensor::from_vec(noise, x.shape(), x.device())?
}

/// Trains one network with `method` for 2000 steps; returns the test accuracy (%) and, for
/// pseudo-labels and FixMatch, the last step's mask rate.
pub fn run(method: Method, seed: u64, s: &Split) -> candle_tricks::Result<(f64, f64)> {
    let dev = Device::Cpu;
    let classes = SpiralsConfig::default().classes;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let fourier = method != Method::PlainSupervised;
    let net = Net::new(fourier, classes, vb)?;
    seeded_init(&varmap, seed)?;
    let mut opt = AdamW::new(varmap.all_vars(), AdamWConfig::default().with_lr(LR))?;
    let mut teacher = match method {
        Method::MeanTeacher => Some(Ema::from_varmap(
            &varmap,
            EmaConfig::default().with_decay(0.99),
        )?),
        _ => None,
    };
    let train = if method == Method::AllLabels {
        &s.pool
    } else {
        &s.labelled
    };
    let (n_train, n_pool, n_u) = (train.1.elem_count(), s.pool.1.elem_count(), BATCH * MU);
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1000) + 29);
    let mut mask_rate = 0.0;
    for step in 0..STEPS {
        let idx = draw(&mut rng, n_train, BATCH, &dev)?;
        let xb = jitter(&train.0.index_select(&idx, 0)?, SIGMA_WEAK, &mut rng)?;
        let yb = train.1.index_select(&idx, 0)?;
        let (sup_logits, unlabeled) = match method {
            Method::PlainSupervised | Method::Supervised | Method::AllLabels => {
                (net.forward(&xb)?, None)
            }
            Method::PseudoLabels | Method::FixMatch | Method::MeanTeacher => {
                let idx_u = draw(&mut rng, n_pool, n_u, &dev)?;
                let xu = s.pool.0.index_select(&idx_u, 0)?;
                let (first, second) = match method {
                    Method::PseudoLabels => (SIGMA_WEAK, None),
                    Method::FixMatch => (SIGMA_WEAK, Some(SIGMA_STRONG)),
                    _ => (SIGMA_STRONG, None),
                };
                let mut views = vec![xb.clone(), jitter(&xu, first, &mut rng)?];
                if let Some(sigma) = second {
                    views.push(jitter(&xu, sigma, &mut rng)?);
                }
                let logits = net.forward(&Tensor::cat(&views, 0)?)?;
                let view = |i: usize| logits.narrow(0, BATCH + i * n_u, n_u);
                let loss = if let Some(t) = &teacher {
                    // The teacher sees its own noisy copy of the same points.
                    let vb = VarBuilder::from_tensors(t.weights()?, DType::F32, &dev);
                    let t_logits = Net::new(true, classes, vb)?.forward(&jitter(
                        &xu,
                        SIGMA_STRONG,
                        &mut rng,
                    )?)?;
                    let w = W_MEAN_TEACHER * sigmoid_rampup(step as f64, 0.3 * STEPS as f64)?;
                    (mean_teacher_consistency(&view(0)?, &t_logits)? * w)?
                } else {
                    let out = match second {
                        Some(_) => fixmatch_loss(&view(0)?, &view(1)?, THRESHOLD)?,
                        None => pseudo_label_loss(&view(0)?, THRESHOLD)?,
                    };
                    mask_rate = out.mask_rate;
                    out.loss
                };
                (logits.narrow(0, 0, BATCH)?, Some(loss))
            }
        };
        let mut loss = cross_entropy(&sup_logits, &yb, &Default::default())?;
        if let Some(u) = unlabeled {
            loss = (loss + u)?;
        }
        opt.backward_step(&loss)?;
        if let Some(t) = &mut teacher {
            t.update(step as u64)?;
        }
    }
    Ok((accuracy(&net.forward(&s.test.0)?, &s.test.1)?, mask_rate))
}
