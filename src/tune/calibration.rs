//! Calibration of a classifier: the expected calibration error (ECE) with the data of a
//! reliability diagram, and temperature scaling fitted on held-out logits.
//!
//! # Shapes
//! - scores: `(N, C)` logits or probabilities (f32, f16, bf16 or f64), see [`Scores`];
//! - labels: `(N,)` class indices in `0..C` (u8, u32 or i64).
//!
//! # Tip: calibrate the confidence before trusting it
//! A classifier is calibrated when, among the inputs it predicts with confidence $0.8$, about
//! 80 % are right. Modern deep networks are not: trained to a near-zero cross-entropy they
//! become over-confident, their maximum softmax probability exceeding their accuracy. The ECE
//! measures the gap: split the top-label confidences into $M$ equal-width bins $B_m$ and average
//! $|\mathrm{acc}(B_m) - \mathrm{conf}(B_m)|$ weighted by the bin sizes,
//! $\mathrm{ECE} = \sum_m \frac{|B_m|}{N} \thinspace |\mathrm{acc}(B_m) - \mathrm{conf}(B_m)|$;
//! the per-bin pairs are the reliability diagram ([`ReliabilityBin`]).
//!
//! Temperature scaling fixes most of it with one parameter: divide the logits by $T > 0$, fitted
//! by minimising the negative log-likelihood on a held-out validation set (never the training
//! set, where the network is confidently right). Dividing by $T$ keeps the order of the logits,
//! so the argmax, and with it the accuracy, does not change; only the confidence does ($T > 1$
//! softens an over-confident model). The NLL is convex in $\beta = 1/T$ (a log-sum-exp of
//! functions linear in $\beta$), so [`TemperatureScaling::fit`] bisects on the sign of its exact
//! derivative: deterministic, no step size, no local minima. Trade-offs: one global $T$ cannot
//! fix a model that is over-confident on some classes and under-confident on others (vector or
//! matrix scaling can, at the price of over-fitting a small validation set), and calibration on
//! in-distribution data says nothing about inputs far from it (see [`crate::tune::uncertainty`]).
//! With few samples per bin the ECE is noisy and biased upwards; use 10 to 15 bins and report
//! the number of samples.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::tune::calibration::{expected_calibration_error, Scores, TemperatureScaling};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! // An over-confident model: right 3 times out of 4, with a logit gap of 6 every time.
//! let logits = Tensor::new(&[[6f32, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 0.0]], &dev)?;
//! let labels = Tensor::new(&[0u32, 0, 1, 1], &dev)?;
//! let before = expected_calibration_error(Scores::Logits(&logits), &labels, 10)?;
//! assert!(before.ece > 0.2); // confidence 0.998, accuracy 0.75
//! let ts = TemperatureScaling::fit(&logits, &labels)?;
//! assert!(ts.temperature() > 1.0); // softens
//! let scaled = ts.apply(&logits)?;
//! let after = expected_calibration_error(Scores::Logits(&scaled), &labels, 10)?;
//! assert!(after.ece < 1e-4); // the fitted confidence is exactly the accuracy here
//! // The argmax, and so the accuracy, is unchanged.
//! assert_eq!(scaled.argmax(1)?.to_vec1::<u32>()?, logits.argmax(1)?.to_vec1::<u32>()?);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, *On Calibration of Modern Neural Networks*,
//!   ICML 2017, [arXiv:1706.04599](https://arxiv.org/abs/1706.04599).
//! - M. P. Naeini, G. F. Cooper, M. Hauskrecht, *Obtaining Well Calibrated Probabilities Using
//!   Bayesian Binning*, AAAI 2015.

use candle_core::{DType, Tensor};

use crate::{Error, Result};

const ECE: &str = "expected_calibration_error";
const TS: &str = "TemperatureScaling";

/// Tolerance on the row sums of [`Scores::Probs`] (loose enough for f16 and bf16 rows).
const PROB_SUM_TOL: f64 = 1e-3;

/// What the `(N, C)` scores of a classifier are.
#[derive(Clone, Copy, Debug)]
pub enum Scores<'a> {
    /// Unnormalised logits; the softmax is taken here, in f64.
    Logits(&'a Tensor),
    /// Probabilities: every row in `[0, 1]` and summing to one (within `1e-3`).
    Probs(&'a Tensor),
}

/// One equal-width confidence bin `(lower, upper]` of a reliability diagram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReliabilityBin {
    /// The lower edge (excluded; the first bin also holds confidence 0).
    pub lower: f64,
    /// The upper edge (included).
    pub upper: f64,
    /// How many samples have their top-label confidence in the bin.
    pub count: usize,
    /// Their mean top-label confidence (0 when the bin is empty).
    pub confidence: f64,
    /// The fraction of them whose top label is right (0 when the bin is empty).
    pub accuracy: f64,
}

/// The expected calibration error and the reliability diagram it was computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// $\sum_m \frac{|B_m|}{N} |\mathrm{acc}(B_m) - \mathrm{conf}(B_m)|$, in `[0, 1]`.
    pub ece: f64,
    /// The `n_bins` bins, from confidence 0 up to 1.
    pub bins: Vec<ReliabilityBin>,
}

/// The top-label expected calibration error of `scores` against `labels` over `n_bins`
/// equal-width confidence bins, with the per-bin reliability data (Guo et al. 2017).
///
/// A sample falls in bin $m$ when its confidence lies in $(m/M, (m+1)/M]$. Computed in f64.
pub fn expected_calibration_error(
    scores: Scores<'_>,
    labels: &Tensor,
    n_bins: usize,
) -> Result<Calibration> {
    if n_bins == 0 {
        return Err(Error::config(ECE, "n_bins must be at least 1, got 0"));
    }
    let (probs, n, c) = match scores {
        Scores::Logits(logits) => {
            let (mut z, n, c) = rows(ECE, "logits", logits)?;
            z.chunks_exact_mut(c).for_each(softmax_in_place);
            (z, n, c)
        }
        Scores::Probs(probs) => {
            let (p, n, c) = rows(ECE, "probs", probs)?;
            check_probabilities(&p, c)?;
            (p, n, c)
        }
    };
    let labels = class_labels(ECE, labels, n, c)?;
    let mut count = vec![0usize; n_bins];
    let mut conf_sum = vec![0f64; n_bins];
    let mut correct = vec![0usize; n_bins];
    for (row, &label) in probs.chunks_exact(c).zip(&labels) {
        let (pred, conf) = top_label(row);
        // ceil(conf * M) - 1 puts conf in (m/M, (m+1)/M]; conf 0 joins the first bin.
        let bin = ((conf * n_bins as f64).ceil() as usize).clamp(1, n_bins) - 1;
        count[bin] += 1;
        conf_sum[bin] += conf;
        correct[bin] += usize::from(pred == label);
    }
    let bins: Vec<ReliabilityBin> = (0..n_bins)
        .map(|m| {
            let k = count[m];
            let mean = |s: f64| if k == 0 { 0.0 } else { s / k as f64 };
            ReliabilityBin {
                lower: m as f64 / n_bins as f64,
                upper: (m + 1) as f64 / n_bins as f64,
                count: k,
                confidence: mean(conf_sum[m]),
                accuracy: mean(correct[m] as f64),
            }
        })
        .collect();
    let ece = bins
        .iter()
        .map(|b| b.count as f64 / n as f64 * (b.accuracy - b.confidence).abs())
        .sum();
    Ok(Calibration { ece, bins })
}

/// Temperature scaling (Guo et al. 2017): logits divided by one fitted temperature $T > 0$.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TemperatureScaling {
    temperature: f64,
}

impl TemperatureScaling {
    /// The smallest temperature [`TemperatureScaling::fit`] returns.
    pub const MIN_TEMPERATURE: f64 = 0.01;
    /// The largest temperature [`TemperatureScaling::fit`] returns.
    pub const MAX_TEMPERATURE: f64 = 100.0;

    /// A fixed temperature (finite, positive).
    pub fn new(temperature: f64) -> Result<Self> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(Error::config(
                TS,
                format!("temperature must be finite and positive, got {temperature}"),
            ));
        }
        Ok(Self { temperature })
    }

    /// Fits $T$ on validation `logits` `(N, C)` and `labels` `(N,)` by minimising the mean
    /// negative log-likelihood of `softmax(logits / T)`: bisection on the sign of the exact
    /// derivative in $\log \beta$, $\beta = 1/T$, where the NLL is convex. The result is clamped
    /// to `[MIN_TEMPERATURE, MAX_TEMPERATURE]` (a validation set classified perfectly has its
    /// optimum at $T \to 0$).
    pub fn fit(logits: &Tensor, labels: &Tensor) -> Result<Self> {
        let (z, n, c) = rows(TS, "logits", logits)?;
        let labels = class_labels(TS, labels, n, c)?;
        // d NLL / d beta = mean over samples of (E_softmax(beta z)[z] - z_label): non-decreasing.
        let slope = |beta: f64| -> f64 {
            let mut p = vec![0f64; c];
            let total: f64 = z
                .chunks_exact(c)
                .zip(&labels)
                .map(|(row, &y)| {
                    p.iter_mut().zip(row).for_each(|(p, &z)| *p = beta * z);
                    softmax_in_place(&mut p);
                    p.iter().zip(row).map(|(p, z)| p * z).sum::<f64>() - row[y]
                })
                .sum();
            total / n as f64
        };
        let (mut lo, mut hi) = (
            (1.0 / Self::MAX_TEMPERATURE).ln(),
            (1.0 / Self::MIN_TEMPERATURE).ln(),
        );
        let beta = if slope(hi.exp()) <= 0.0 {
            hi.exp()
        } else if slope(lo.exp()) >= 0.0 {
            lo.exp()
        } else {
            // 80 halvings shrink the bracket of width ~9.2 below f64 resolution.
            for _ in 0..80 {
                let mid = 0.5 * (lo + hi);
                if slope(mid.exp()) < 0.0 {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            (0.5 * (lo + hi)).exp()
        };
        Self::new(1.0 / beta)
    }

    /// The temperature $T$.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// `logits / T`, same shape and dtype (classes on any axis; the argmax is unchanged).
    pub fn apply(&self, logits: &Tensor) -> Result<Tensor> {
        if !logits.dtype().is_float() {
            return Err(Error::unsupported_dtype(
                TS,
                "logits",
                "f32, f16, bf16 or f64",
                logits.dtype(),
            ));
        }
        Ok(logits.affine(1.0 / self.temperature, 0.0)?)
    }
}

/// The `(N, C)` float tensor `x` as row-major f64 with `(N, C)`: non-empty and finite.
fn rows(block: &'static str, what: &'static str, x: &Tensor) -> Result<(Vec<f64>, usize, usize)> {
    if !x.dtype().is_float() {
        return Err(Error::unsupported_dtype(
            block,
            what,
            "f32, f16, bf16 or f64",
            x.dtype(),
        ));
    }
    let &[n, c] = x.dims() else {
        return Err(Error::shape(block, what, "(N, C)", x.shape().clone()));
    };
    if n == 0 || c == 0 {
        return Err(Error::shape(
            block,
            what,
            "(N, C) with N, C >= 1",
            x.shape().clone(),
        ));
    }
    let v = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    if v.iter().any(|v| !v.is_finite()) {
        return Err(Error::non_finite(block, what));
    }
    Ok((v, n, c))
}

/// Every row of `p` (`C` wide) in `[0, 1]` and summing to one.
fn check_probabilities(p: &[f64], c: usize) -> Result<()> {
    for (i, row) in p.chunks_exact(c).enumerate() {
        let sum: f64 = row.iter().sum();
        if row.iter().any(|&p| !(0.0..=1.0).contains(&p)) || (sum - 1.0).abs() > PROB_SUM_TOL {
            return Err(Error::config(
                ECE,
                format!(
                    "probs row {i} is not a distribution (values in [0, 1] summing to 1): sum {sum}"
                ),
            ));
        }
    }
    Ok(())
}

/// The labels `(N,)` (u8, u32 or i64) as indices, each checked to lie in `0..c`.
fn class_labels(block: &'static str, labels: &Tensor, n: usize, c: usize) -> Result<Vec<usize>> {
    if !matches!(labels.dtype(), DType::U8 | DType::U32 | DType::I64) {
        return Err(Error::unsupported_dtype(
            block,
            "labels",
            "u8, u32 or i64",
            labels.dtype(),
        ));
    }
    if labels.dims() != [n] {
        return Err(Error::shape(
            block,
            "labels",
            format!("({n},)"),
            labels.shape().clone(),
        ));
    }
    labels
        .to_dtype(DType::I64)?
        .to_vec1::<i64>()?
        .into_iter()
        .map(|y| {
            usize::try_from(y)
                .ok()
                .filter(|&y| y < c)
                .ok_or_else(|| Error::config(block, format!("label {y} out of range 0..{c}")))
        })
        .collect()
}

/// Replaces the finite values of `row` by their softmax (max-subtracted).
fn softmax_in_place(row: &mut [f64]) {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// The first index of the largest probability, and that probability.
fn top_label(row: &[f64]) -> (usize, f64) {
    row.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (j, &p)| {
            if p > best.1 {
                (j, p)
            } else {
                best
            }
        })
}
