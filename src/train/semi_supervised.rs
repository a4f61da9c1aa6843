//! Semi-supervised losses: confidence-thresholded pseudo-labels, FixMatch's weak-to-strong
//! consistency and the mean-teacher consistency with its sigmoid ramp-up.
//!
//! - [`pseudo_label_loss`]: hard labels from the model's own (detached) softmax on unlabeled
//!   data, cross-entropy on the samples whose top probability reaches the threshold.
//! - [`fixmatch_loss`]: the same, but the labels come from a *weakly* augmented view and the
//!   cross-entropy is taken on a *strongly* augmented view of the same images.
//! - [`mean_teacher_consistency`]: the mean squared difference between the student's softmax and
//!   the (detached) softmax of a teacher whose weights are an exponential moving average of the
//!   student's, weighted by [`sigmoid_rampup`].
//!
//! All three are compositions of candle tensor ops, so they run and differentiate on every
//! device; f16 and bf16 logits are computed in f32 (f64 stays f64) and the loss comes back in
//! the logits' dtype.
//!
//! # Shapes
//! - logits `(N, C)`: $N$ unlabeled samples, $C$ classes; the weak and strong views (student and
//!   teacher) have the same shape, dtype and device.
//! - the losses are scalars `()`; [`PseudoLabelLoss::mask`] is `(N)` (1 = confident) in the
//!   compute dtype, [`PseudoLabelLoss::pseudo_labels`] `(N)` u32.
//!
//! # Tip
//! **Few labels, many images: let the unlabeled ones vote on the boundary.** With 5 % of the
//! labels a classifier fits the few labelled points and draws its decision boundary wherever
//! it likes in between, often straight through dense clusters of unlabeled images. Training on
//! the model's own confident predictions (pseudo-labels, entropy minimisation) pushes the
//! boundary out of those dense regions: the unlabeled data cannot say which class a cluster
//! is, but it pins down where the boundary may *not* go.
//!
//! **A confidence threshold keeps wrong pseudo-labels out.** A wrong label the model trains on
//! becomes more confident the next step (confirmation bias). FixMatch keeps a pseudo-label
//! only when its top probability reaches $\tau$ (0.95 in the paper): early on few samples pass
//! (watch [`PseudoLabelLoss::mask_rate`] grow), and those that do are mostly right. The loss
//! is still divided by the whole unlabeled batch, so the unlabeled term grows in weight as the
//! model gains confidence, a built-in warm-up:
//! $\ell_u = \frac{1}{N} \sum_n \mathbb{1}(\max_c p_{nc} \ge \tau) \thinspace H(\hat y_n, q_n)$
//! with $p$ the detached softmax of the weak view, $\hat y_n = \arg\max_c p_{nc}$ and $q_n$ the
//! softmax of the strong view.
//!
//! **Consistency between a weak and a strong view is what makes FixMatch work.** Labels from a
//! barely perturbed image are reliable; asking the model to give the *same* label to a heavily
//! distorted copy (larger shifts, cutout, noise, contrast) forces it to be invariant to those
//! distortions, which plain pseudo-labelling on a single view never asks for. The strong view
//! must still preserve the label (no flips for digits). Trade-off: two forward passes per
//! unlabeled image, typically with $\mu = 7$ unlabeled images per labelled one.
//!
//! **Mean teacher averages weights for a steadier target.** A teacher whose weights are an
//! exponential moving average of the student's ([`crate::optim::Ema`]) predicts more smoothly
//! than the student itself, so its (detached) softmax is a better consistency target than the
//! student's own. Wiring: build the [`crate::optim::Ema`] from the student's `VarMap` (decay
//! 0.99 to 0.999), run the teacher with [`crate::optim::Ema::weights`] (or a model built from
//! [`crate::optim::Ema::to_varmap`]) on a differently augmented view, add $w(t)$ times
//! [`mean_teacher_consistency`] to the supervised loss, and call
//! [`crate::optim::Ema::update`] after each optimizer step. Ramp the weight up with
//! $w(t) = w_{\max} \thinspace e^{-5 (1 - t)^2}$ ([`sigmoid_rampup`]): at the start the
//! teacher is as random as the student and a strong consistency term would only hold both at
//! their initial guess.
//!
//! # Example
//! A confident row passes the threshold and is trained towards its own prediction; an unsure
//! one is masked out but still counts in the mean's denominator:
//! ```
//! use candle_core::{Device, Var};
//! use candle_tricks::train::{fixmatch_loss, pseudo_label_loss, sigmoid_rampup};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let weak = Var::new(&[[6f32, 0.0, 0.0], [0.2, 0.1, 0.0]], &dev)?;
//! let out = pseudo_label_loss(weak.as_tensor(), 0.95)?;
//! assert_eq!(out.mask_rate, 0.5);
//! assert_eq!(out.pseudo_labels.to_vec1::<u32>()?, [0, 0]);
//! // The loss is row 0's cross-entropy towards class 0, divided by N = 2.
//! let ce0 = (1.0f32 + 2.0 * (-6f32).exp()).ln();
//! assert!((out.loss.to_scalar::<f32>()? - ce0 / 2.0).abs() < 1e-6);
//! // Gradients reach only the confident row (row 1 is masked out).
//! let g = out.loss.backward()?;
//! let g = g.get(weak.as_tensor()).expect("in the graph").to_vec2::<f32>()?;
//! assert!(g[0][0] < 0.0 && g[1] == [0.0; 3]);
//!
//! // FixMatch: the label of the weak view, the cross-entropy of the strong one.
//! let strong = Var::new(&[[0f32, 1.0, 0.0], [0.0, 0.0, 0.0]], &dev)?;
//! let fm = fixmatch_loss(weak.as_tensor(), strong.as_tensor(), 0.95)?;
//! let ce = (2.0 + 1f32.exp()).ln(); // -log softmax(strong row 0)[0]
//! assert!((fm.loss.to_scalar::<f32>()? - ce / 2.0).abs() < 1e-6);
//!
//! // The mean-teacher weight ramps from e^-5 to 1 over the ramp-up steps.
//! assert!((sigmoid_rampup(0.0, 100.0)? - (-5f64).exp()).abs() < 1e-12);
//! assert_eq!(sigmoid_rampup(250.0, 100.0)?, 1.0);
//! # Ok(())
//! # }
//! ```
//!
//! Mean teacher with [`crate::optim::Ema`] (one step of the loop):
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{linear, Linear, Optimizer, VarBuilder, VarMap};
//! use candle_tricks::optim::{Ema, EmaConfig};
//! use candle_tricks::train::{mean_teacher_consistency, sigmoid_rampup};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let student = linear(4, 3, VarBuilder::from_varmap(&varmap, DType::F32, &dev).pp("fc"))?;
//! let mut teacher = Ema::from_varmap(&varmap, EmaConfig::default().with_decay(0.99))?;
//! let mut opt = candle_nn::SGD::new(varmap.all_vars(), 0.1)?;
//! let x = Tensor::randn(0f32, 1.0, (8, 4), &dev)?;
//! for step in 1..=3u64 {
//!     // The teacher runs on the averaged weights (no gradient reaches them).
//!     let w = teacher.weights()?;
//!     let t_net = Linear::new(w["fc.weight"].clone(), Some(w["fc.bias"].clone()));
//!     let noisy = (&x + Tensor::randn(0f32, 0.1, (8, 4), &dev)?)?;
//!     let weight = 10.0 * sigmoid_rampup(step as f64, 100.0)?;
//!     let cons = mean_teacher_consistency(&student.forward(&x)?, &t_net.forward(&noisy)?)?;
//!     opt.backward_step(&(cons * weight)?)?; // + the supervised loss on labelled data
//!     teacher.update(step)?;
//! }
//! assert_eq!(teacher.updates(), 3);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Sohn et al., *FixMatch: Simplifying Semi-Supervised Learning with Consistency and
//!   Confidence*, NeurIPS 2020, <https://arxiv.org/abs/2001.07685>
//! - Lee, *Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep
//!   Neural Networks*, ICML 2013 workshop on challenges in representation learning
//! - Tarvainen, Valpola, *Mean teachers are better role models: Weight-averaged consistency
//!   targets improve semi-supervised deep learning results*, NeurIPS 2017,
//!   <https://arxiv.org/abs/1703.01780> (the consistency loss and the sigmoid ramp-up)
//! - Laine, Aila, *Temporal Ensembling for Semi-Supervised Learning*, ICLR 2017,
//!   <https://arxiv.org/abs/1610.02242> (the $e^{-5 (1 - t)^2}$ ramp-up)

use candle_core::{DType, Tensor};

use crate::ops::{softmax_last_dim, softmax_last_dim_reference};
use crate::{check, Error, Result};

/// What [`pseudo_label_loss`] and [`fixmatch_loss`] return.
#[derive(Debug, Clone)]
pub struct PseudoLabelLoss {
    /// The masked cross-entropy, a scalar in the logits' dtype, divided by the whole batch $N$
    /// (not by the number of confident samples).
    pub loss: Tensor,
    /// `(N)`: 1 where the top probability reaches the threshold, else 0 (f32, or f64 for f64
    /// logits); a constant (no gradient).
    pub mask: Tensor,
    /// `(N)` u32: the pseudo-labels, the arg-max of the (weak view's) probabilities, for every
    /// sample (masked or not; compare with true labels to measure their accuracy).
    pub pseudo_labels: Tensor,
    /// The fraction of the batch above the threshold (the mean of [`Self::mask`]), read back
    /// to the host.
    pub mask_rate: f64,
}

/// Pseudo-labelling (Lee 2013) with FixMatch's confidence mask:
/// $\frac{1}{N} \sum_n m_n \thinspace (-\log q_{n \hat y_n})$ with $q$ the softmax of
/// `logits_unlabeled` `(N, C)`, $\hat y$ the arg-max of its *detached* copy and $m_n = 1$ when
/// the detached copy's top probability is $\ge$ `threshold` (see the module docs). Gradients
/// flow only through the cross-entropy.
///
/// Errors (naming `pseudo_label_loss`) on a `threshold` outside $[0, 1]$ or NaN, logits that are
/// not `(N, C)` with $N, C \ge 1$, a non-float dtype, and non-finite logits (a NaN row would
/// otherwise be masked out silently).
pub fn pseudo_label_loss(logits_unlabeled: &Tensor, threshold: f64) -> Result<PseudoLabelLoss> {
    const BLOCK: &str = "pseudo_label_loss";
    check::unit_interval(BLOCK, "threshold", threshold)?;
    check_logits(BLOCK, "logits_unlabeled", logits_unlabeled)?;
    masked_cross_entropy(BLOCK, logits_unlabeled, logits_unlabeled, threshold)
}

/// FixMatch's unlabeled loss (Sohn et al. 2020): pseudo-labels and the confidence mask from the
/// detached softmax of `weak_logits` `(N, C)` (the weakly augmented view), cross-entropy on
/// `strong_logits` `(N, C)` (the strongly augmented view of the same images), divided by $N$:
/// $\frac{1}{N} \sum_n \mathbb{1}(\max_c p_{nc} \ge \tau) \thinspace (-\log q_{n \hat y_n})$.
/// No gradient reaches `weak_logits`.
///
/// Errors (naming `fixmatch_loss`) as [`pseudo_label_loss`], and when the two views differ in
/// shape, dtype or device.
pub fn fixmatch_loss(
    weak_logits: &Tensor,
    strong_logits: &Tensor,
    threshold: f64,
) -> Result<PseudoLabelLoss> {
    const BLOCK: &str = "fixmatch_loss";
    check::unit_interval(BLOCK, "threshold", threshold)?;
    check_logits(BLOCK, "weak_logits", weak_logits)?;
    check_pair(BLOCK, "strong_logits", weak_logits, strong_logits)?;
    masked_cross_entropy(BLOCK, weak_logits, strong_logits, threshold)
}

/// The mean-teacher consistency cost (Tarvainen & Valpola 2017): the mean over all $N C$
/// entries of $(\mathrm{softmax}(s) - \mathrm{softmax}(t))^2$ for `student_logits` $s$ and
/// `teacher_logits` $t$, both `(N, C)`; the teacher side is detached. Multiply it by a weight
/// ramped up with [`sigmoid_rampup`] and keep the teacher with [`crate::optim::Ema`] (see the
/// module docs).
///
/// Errors (naming `mean_teacher_consistency`) on logits that are not `(N, C)` with
/// $N, C \ge 1$, a non-float dtype, and when the two differ in shape, dtype or device.
pub fn mean_teacher_consistency(
    student_logits: &Tensor,
    teacher_logits: &Tensor,
) -> Result<Tensor> {
    const BLOCK: &str = "mean_teacher_consistency";
    check_logits(BLOCK, "student_logits", student_logits)?;
    check_pair(BLOCK, "teacher_logits", student_logits, teacher_logits)?;
    let student = probabilities(&upcast(student_logits)?)?;
    let teacher = probabilities(&upcast(&teacher_logits.detach())?)?;
    let cost = (student - teacher)?.sqr()?.mean_all()?;
    Ok(cost.to_dtype(student_logits.dtype())?)
}

/// The sigmoid-shaped ramp-up of Laine & Aila and Tarvainen & Valpola,
/// $e^{-5 (1 - t)^2}$ with $t$ = `current / rampup_length` clamped to $[0, 1]$: from
/// $e^{-5} \approx 0.0067$ at the start to 1 at `rampup_length` and after; 1 when
/// `rampup_length` is 0 (no ramp-up), as the papers' code.
///
/// Errors (naming `sigmoid_rampup`) on a non-finite `current` and a negative or non-finite
/// `rampup_length`.
pub fn sigmoid_rampup(current: f64, rampup_length: f64) -> Result<f64> {
    const BLOCK: &str = "sigmoid_rampup";
    if !current.is_finite() {
        return Err(Error::config(
            BLOCK,
            format!("current must be finite, got {current}"),
        ));
    }
    if !(rampup_length.is_finite() && rampup_length >= 0.0) {
        return Err(Error::config(
            BLOCK,
            format!("rampup_length must be finite and >= 0, got {rampup_length}"),
        ));
    }
    if rampup_length == 0.0 {
        return Ok(1.0);
    }
    let phase = 1.0 - (current / rampup_length).clamp(0.0, 1.0);
    Ok((-5.0 * phase * phase).exp())
}

/// Checks logits `(N, C)`, non-empty, of a float dtype (f64 included: gradient checks use it).
fn check_logits(block: &'static str, what: &'static str, logits: &Tensor) -> Result<()> {
    check::rank(block, what, logits, 2, "(N, C)")?;
    check::non_empty(block, what, logits)?;
    if !logits.dtype().is_float() {
        return Err(Error::unsupported_dtype(
            block,
            what,
            "f16, bf16, f32 or f64",
            logits.dtype(),
        ));
    }
    Ok(())
}

/// Checks that `other` has the shape, dtype and device of `reference` (already checked).
fn check_pair(
    block: &'static str,
    what: &'static str,
    reference: &Tensor,
    other: &Tensor,
) -> Result<()> {
    if other.dims() != reference.dims() {
        return Err(Error::shape(
            block,
            what,
            format!("{:?}, the other view's shape", reference.dims()),
            other.shape().clone(),
        ));
    }
    check::same_dtype_device(block, what, reference, other)
}

/// f16 / bf16 as f32; f32 and f64 unchanged.
fn upcast(x: &Tensor) -> Result<Tensor> {
    Ok(match x.dtype() {
        DType::F64 | DType::F32 => x.clone(),
        _ => x.to_dtype(DType::F32)?,
    })
}

/// Row softmax of `(N, C)` logits in f32 or f64: the crate's fused op, or its reference for
/// f64 (which the kernel does not take).
fn probabilities(x: &Tensor) -> Result<Tensor> {
    if x.dtype() == DType::F64 {
        softmax_last_dim_reference(x)
    } else {
        softmax_last_dim(x)
    }
}

/// The masked hard-label cross-entropy shared by [`pseudo_label_loss`] (`label_logits` and
/// `logits` the same tensor) and [`fixmatch_loss`]; arguments already validated.
fn masked_cross_entropy(
    block: &'static str,
    label_logits: &Tensor,
    logits: &Tensor,
    threshold: f64,
) -> Result<PseudoLabelLoss> {
    let n = label_logits.dims()[0];
    let probs = probabilities(&upcast(&label_logits.detach())?)?;
    let confidence = probs.max_keepdim(1)?;
    let labels = probs.argmax_keepdim(1)?;
    let mask = confidence.ge(threshold)?.to_dtype(probs.dtype())?;
    // One read back for both: the mask count and a sum that is NaN if any row is.
    let stats = Tensor::stack(&[mask.sum_all()?, confidence.sum_all()?], 0)?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    if !stats[1].is_finite() {
        return Err(Error::non_finite(
            block,
            "the logits the pseudo-labels come from",
        ));
    }
    let logp = candle_nn::ops::log_softmax(&upcast(logits)?, 1)?;
    let nll = logp.gather(&labels, 1)?.neg()?;
    let loss = ((nll * &mask)?.sum_all()? / n as f64)?.to_dtype(logits.dtype())?;
    Ok(PseudoLabelLoss {
        loss,
        mask: mask.squeeze(1)?,
        pseudo_labels: labels.squeeze(1)?,
        mask_rate: stats[0] / n as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rampup_ends_and_validation() {
        assert_eq!(sigmoid_rampup(5.0, 0.0).unwrap(), 1.0);
        assert_eq!(sigmoid_rampup(-3.0, 10.0).unwrap(), (-5f64).exp());
        assert!((sigmoid_rampup(5.0, 10.0).unwrap() - (-1.25f64).exp()).abs() < 1e-15);
        assert!(sigmoid_rampup(f64::NAN, 10.0).is_err());
        assert!(sigmoid_rampup(1.0, -1.0).is_err());
        assert!(sigmoid_rampup(1.0, f64::INFINITY).is_err());
    }
}
