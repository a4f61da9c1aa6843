//! Predictive uncertainty from several stochastic predictions: MC dropout ([`mc_predict`]) and
//! deep ensembles ([`ensemble_predict`]), summarised by the predictive mean and variance, the
//! predictive entropy and the mutual information ([`predictive_uncertainty`]).
//!
//! # Shapes
//! - [`mc_predict`]: the model maps the input to logits `(N, C)`;
//! - [`ensemble_predict`]: `M` logit tensors `(N, C)`;
//! - [`predictive_uncertainty`]: probabilities `(S, N, C)`, `S` samples or members;
//! - out: mean and variance `(N, C)`, entropies and mutual information `(N,)`, all f32.
//!
//! # Tip: epistemic uncertainty from dropout or an ensemble
//! One softmax is a point estimate: it says how the classes compare at this input, not how much
//! the model knows there. Averaging several plausible models does: dropout kept on at inference
//! samples sub-networks, which approximates sampling the weights from a posterior (Gal &
//! Ghahramani 2016), and a deep ensemble (the same network trained from several random
//! initialisations) samples distinct modes and is usually the better, if $M$ times costlier,
//! estimate (Lakshminarayanan et al. 2017). With $S$ sampled distributions $p_s$ and their mean
//! $\bar{p}$:
//! - the predictive entropy $H(\bar{p}) = -\sum_c \bar p_c \log \bar p_c$ is the total
//!   uncertainty: high near a decision boundary (aleatoric: the classes overlap) as well as far
//!   from the data (epistemic);
//! - the mutual information $I = H(\bar{p}) - \frac{1}{S} \sum_s H(p_s)$ (BALD) keeps only the
//!   epistemic part: it is large when the samples disagree with each other while each is
//!   confident, which happens away from the training data, and it shrinks with more data. Use it
//!   to pick inputs to label (active learning) or to flag out-of-distribution inputs; use the
//!   entropy to decide whether to trust one prediction.
//!
//! Trade-offs: $S$ forward passes per input (10 to 100 for dropout), and only layers that are
//! stochastic in training mode sample anything: batch norm must stay in evaluation mode (call
//! the dropout modules, or use a model whose `forward_t(x, true)` only switches dropout). Neither
//! method is calibrated by itself; check with [`crate::tune::calibration`].
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::tune::uncertainty::ensemble_predict;
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! // Two members that are sure of opposite classes on the first input, agree on the second.
//! let a = Tensor::new(&[[9f32, -9.0], [9.0, -9.0]], &dev)?;
//! let b = Tensor::new(&[[-9f32, 9.0], [9.0, -9.0]], &dev)?;
//! let u = ensemble_predict(&[a, b])?;
//! let mi = u.mutual_information.to_vec1::<f32>()?;
//! assert!((mi[0] - 2f32.ln()).abs() < 1e-4); // pure disagreement: I = H = log 2
//! assert!(mi[1] < 1e-4); // agreement: no epistemic uncertainty
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Y. Gal, Z. Ghahramani, *Dropout as a Bayesian Approximation: Representing Model
//!   Uncertainty in Deep Learning*, ICML 2016, [arXiv:1506.02142](https://arxiv.org/abs/1506.02142).
//! - B. Lakshminarayanan, A. Pritzel, C. Blundell, *Simple and Scalable Predictive Uncertainty
//!   Estimation using Deep Ensembles*, NeurIPS 2017,
//!   [arXiv:1612.01474](https://arxiv.org/abs/1612.01474).
//! - N. Houlsby, F. Huszár, Z. Ghahramani, M. Lengyel, *Bayesian Active Learning for
//!   Classification and Preference Learning*, 2011,
//!   [arXiv:1112.5745](https://arxiv.org/abs/1112.5745).

use candle_core::{DType, ModuleT, Tensor};

use crate::{Error, Result};

const MC: &str = "mc_predict";
const ENSEMBLE: &str = "ensemble_predict";
const STATS: &str = "predictive_uncertainty";

/// Tolerance on the row sums of the probabilities given to [`predictive_uncertainty`].
const PROB_SUM_TOL: f64 = 1e-3;

/// The summary of `S` predictive distributions (f32).
#[derive(Clone, Debug)]
pub struct PredictiveUncertainty {
    /// The predictive distribution $\bar{p}$, the mean of the samples, `(N, C)`.
    pub mean: Tensor,
    /// The variance of the samples per class (divided by $S$), `(N, C)`.
    pub variance: Tensor,
    /// The predictive entropy $H(\bar{p})$ in nats, `(N,)`: total uncertainty.
    pub entropy: Tensor,
    /// The mean entropy of the samples, $\frac{1}{S} \sum_s H(p_s)$, `(N,)`: the aleatoric part.
    pub expected_entropy: Tensor,
    /// The mutual information (BALD) $H(\bar{p}) - \frac{1}{S} \sum_s H(p_s) \ge 0$, `(N,)`:
    /// the epistemic part.
    pub mutual_information: Tensor,
}

/// MC dropout (Gal & Ghahramani 2016): runs `model.forward_t(x, true)` `n_samples` times, each
/// giving logits `(N, C)`, and summarises their softmaxes.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use candle_nn::Dropout;
/// use candle_tricks::tune::uncertainty::mc_predict;
/// # fn main() -> candle_tricks::Result<()> {
/// let x = Tensor::new(&[[2f32, 0.0, -1.0]], &Device::Cpu)?; // stands in for a model's logits
/// // Dropout kept on makes the samples disagree: some epistemic uncertainty.
/// let u = mc_predict(&Dropout::new(0.5), &x, 50)?;
/// assert!(u.mutual_information.to_vec1::<f32>()?[0] > 0.0);
/// // Without dropout every sample is the same softmax: none.
/// let u = mc_predict(&Dropout::new(0.0), &x, 50)?;
/// assert!(u.mutual_information.to_vec1::<f32>()?[0] < 1e-6);
/// # Ok(())
/// # }
/// ```
pub fn mc_predict<M: ModuleT>(
    model: &M,
    x: &Tensor,
    n_samples: usize,
) -> Result<PredictiveUncertainty> {
    if n_samples == 0 {
        return Err(Error::config(MC, "n_samples must be at least 1, got 0"));
    }
    let logits = (0..n_samples)
        .map(|_| model.forward_t(x, true).map_err(Error::from))
        .collect::<Result<Vec<_>>>()?;
    summarise(MC, &logits)
}

/// Deep ensembles (Lakshminarayanan et al. 2017): summarises the softmaxes of the members'
/// logits, each `(N, C)`.
pub fn ensemble_predict(logits: &[Tensor]) -> Result<PredictiveUncertainty> {
    if logits.is_empty() {
        return Err(Error::config(ENSEMBLE, "needs at least one member, got 0"));
    }
    summarise(ENSEMBLE, logits)
}

/// The statistics of `S` sampled distributions `probs` `(S, N, C)` (rows in `[0, 1]` summing to
/// one within `1e-3`), computed in f32.
pub fn predictive_uncertainty(probs: &Tensor) -> Result<PredictiveUncertainty> {
    if !probs.dtype().is_float() {
        return Err(Error::unsupported_dtype(
            STATS,
            "probs",
            "f32, f16, bf16 or f64",
            probs.dtype(),
        ));
    }
    let &[s, _, c] = probs.dims() else {
        return Err(Error::shape(
            STATS,
            "probs",
            "(S, N, C)",
            probs.shape().clone(),
        ));
    };
    if s == 0 || c == 0 {
        return Err(Error::shape(
            STATS,
            "probs",
            "(S, N, C) with S, C >= 1",
            probs.shape().clone(),
        ));
    }
    let p = probs.to_dtype(DType::F32)?;
    if probs.elem_count() > 0 {
        let (lo, hi) = (
            p.min_all()?.to_scalar::<f32>()?,
            p.max_all()?.to_scalar::<f32>()?,
        );
        let sum_err = (p.sum(2)? - 1.0)?.abs()?.max_all()?.to_scalar::<f32>()?;
        // NaN fails every comparison, so it lands here too.
        if !(lo >= 0.0 && hi <= 1.0 && f64::from(sum_err) <= PROB_SUM_TOL) {
            return Err(Error::config(
                STATS,
                format!(
                    "probs are not distributions over the last axis (values in [0, 1] summing to 1): \
                     min {lo}, max {hi}, largest |row sum - 1| {sum_err}"
                ),
            ));
        }
    }
    stats(&p)
}

/// Checks the logits (same `(N, C)` shape, finite, float), takes their softmaxes and summarises.
fn summarise(block: &'static str, logits: &[Tensor]) -> Result<PredictiveUncertainty> {
    let first = &logits[0];
    for (i, z) in logits.iter().enumerate() {
        if !z.dtype().is_float() {
            return Err(Error::unsupported_dtype(
                block,
                format!("logits {i}"),
                "f32, f16, bf16 or f64",
                z.dtype(),
            ));
        }
        let ok_rank = matches!(z.dims(), [_, c] if *c > 0);
        if !ok_rank || z.dims() != first.dims() {
            let expected = if ok_rank {
                format!("{:?} like the first", first.dims())
            } else {
                "(N, C) with C >= 1".to_string()
            };
            return Err(Error::shape(block, "logits", expected, z.shape().clone()));
        }
    }
    let z = Tensor::stack(logits, 0)?.to_dtype(DType::F32)?;
    if z.flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .any(|v| !v.is_finite())
    {
        return Err(Error::non_finite(block, "logits"));
    }
    stats(&crate::ops::softmax_last_dim(&z)?)
}

/// The statistics of valid f32 probabilities `(S, N, C)`.
fn stats(p: &Tensor) -> Result<PredictiveUncertainty> {
    let mean = p.mean(0)?;
    let variance = p.broadcast_sub(&mean)?.sqr()?.mean(0)?;
    let entropy = entropy_last(&mean)?;
    let expected_entropy = entropy_last(p)?.mean(0)?;
    // H of the mean is at least the mean of H (concavity); rounding can cross zero.
    let mutual_information = (&entropy - &expected_entropy)?.relu()?;
    Ok(PredictiveUncertainty {
        mean,
        variance,
        entropy,
        expected_entropy,
        mutual_information,
    })
}

/// The entropy `-sum(p log p)` over the last axis, taking `0 log 0` as 0.
fn entropy_last(p: &Tensor) -> Result<Tensor> {
    let log = p.maximum(f64::from(f32::MIN_POSITIVE))?.log()?;
    Ok((p * log)?.sum(p.rank() - 1)?.neg()?)
}
