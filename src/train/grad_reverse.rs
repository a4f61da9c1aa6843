//! Gradient reversal (DANN): the identity on the way forward, $-\lambda$ times the gradient on
//! the way back, and Ganin & Lempitsky's schedule for $\lambda$.
//!
//! # Shapes
//! - [`grad_reverse`] and [`GradReverse`]: any shape, f16 / bf16 / f32 / f64; the output has the
//!   input's shape, dtype, device and values.
//! - [`dann_lambda`]: training progress $p \in [0, 1]$ and a steepness $\gamma$ to a scalar.
//!
//! # Tip
//! Domain-adversarial training (DANN) makes features *domain-invariant*: put a domain
//! classifier (source or target?) on the features through a gradient-reversal layer and
//! minimise its loss together with the task loss on labelled source data. The classifier
//! descends its loss as usual, but the feature extractor receives the *reversed* gradient, so
//! it ascends the domain loss: it learns features from which the domain cannot be told, and the
//! task head trained on source features then works on target features too. One backward pass
//! does the min-max game; no alternating updates are needed.
//!
//! Early in training the domain classifier is random and its gradient is noise that would wreck
//! the features before they mean anything. Ramp $\lambda$ from 0 to 1 with
//! $\lambda(p) = \frac{2}{1 + e^{-\gamma p}} - 1$ ($\gamma = 10$, $p$ the fraction of training
//! done, [`dann_lambda`]); set it on the layer each step ([`GradReverse::set_lambda`]).
//! Trade-off: the adversarial game can oscillate, and invariance only helps when the label
//! distributions of the domains agree; a larger $\lambda$ buys invariance at the cost of
//! source accuracy.
//!
//! The op is the composition $\bar{x} + (x - \bar{x}) \cdot (-\lambda)$, with $\bar{x}$ the
//! detached input, so it runs (and differentiates) on every device. The forward value is
//! *exactly* $x$: $x - \bar{x}$ is an exact zero for every finite $x$, scaling a zero gives a
//! zero, and adding a zero to $x$ rounds nothing (a $-0$ may come back as $+0$, equal in value).
//! The gradient reaches $x$ only through the second term: it is the incoming gradient times
//! $-\lambda$, one rounding of one product (at $\lambda = 0$ candle drops that path, so the
//! input gets no gradient from it, a zero). A ±Inf input gives NaN ($\infty - \infty$), which
//! only exposes activations that were already broken.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_tricks::train::{dann_lambda, grad_reverse};
//! # fn main() -> candle_tricks::Result<()> {
//! let x = Var::new(&[1.5f32, -2.0, 0.25], &Device::Cpu)?;
//! let lambda = dann_lambda(0.5, 10.0)?; // halfway through training: ≈ 0.987
//! let y = grad_reverse(x.as_tensor(), lambda)?;
//! assert_eq!(y.to_vec1::<f32>()?, [1.5, -2.0, 0.25]); // the identity, exactly
//! let g = (y * 3.0)?.sum_all()?.backward()?;
//! let gx = g.get(x.as_tensor()).expect("x is in the graph").to_vec1::<f32>()?;
//! assert_eq!(gx, [-3.0 * lambda as f32; 3]); // the reversed, scaled gradient
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Ganin, Lempitsky, *Unsupervised Domain Adaptation by Backpropagation*, ICML 2015,
//!   <https://arxiv.org/abs/1409.7495> (the gradient-reversal layer and the $\lambda$ schedule).

use candle_core::{Module, Tensor};

use crate::{check, Error, Result};

/// The steepness $\gamma$ of [`dann_lambda`]'s ramp in Ganin & Lempitsky's experiments.
pub const DANN_GAMMA: f64 = 10.0;

/// Checks that a reversal strength is finite and non-negative.
fn check_lambda(block: &'static str, lambda: f64) -> Result<()> {
    if !(lambda.is_finite() && lambda >= 0.0) {
        return Err(Error::config(
            block,
            format!("lambda must be finite and >= 0, got {lambda}"),
        ));
    }
    Ok(())
}

/// Checks that the input has a float dtype (f64 included: gradient checks run in it).
fn check_float(block: &'static str, x: &Tensor) -> Result<()> {
    if !x.dtype().is_float() {
        let supported = "f16, bf16, f32 or f64";
        return Err(Error::unsupported_dtype(
            block,
            "input",
            supported,
            x.dtype(),
        ));
    }
    Ok(())
}

/// The identity forward and $-\lambda$ times the gradient backward (see the module docs): the
/// gradient-reversal layer of DANN. `lambda` must be finite and $\ge 0$.
pub fn grad_reverse(x: &Tensor, lambda: f64) -> Result<Tensor> {
    check_lambda("grad_reverse", lambda)?;
    check_float("grad_reverse", x)?;
    Ok(reverse(x, lambda)?)
}

/// The composition, without validation.
fn reverse(x: &Tensor, lambda: f64) -> candle_core::Result<Tensor> {
    let fixed = x.detach();
    fixed.add(&((x - &fixed)? * -lambda)?)
}

/// A gradient-reversal layer with a settable strength $\lambda$ (see the module docs), to put
/// between a feature extractor and a domain classifier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradReverse {
    lambda: f64,
}

impl GradReverse {
    /// A layer reversing gradients with strength `lambda` (finite, $\ge 0$).
    pub fn new(lambda: f64) -> Result<Self> {
        check_lambda("GradReverse", lambda)?;
        Ok(Self { lambda })
    }

    /// The current strength $\lambda$.
    pub fn lambda(&self) -> f64 {
        self.lambda
    }

    /// Sets the strength, typically to [`dann_lambda`] of the training progress each step.
    pub fn set_lambda(&mut self, lambda: f64) -> Result<()> {
        check_lambda("GradReverse", lambda)?;
        self.lambda = lambda;
        Ok(())
    }
}

impl Module for GradReverse {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        check_float("GradReverse", x)?;
        reverse(x, self.lambda)
    }
}

/// Ganin & Lempitsky's ramp $\lambda(p) = \frac{2}{1 + e^{-\gamma p}} - 1$: 0 at the start
/// of training, close to 1 by its end. `progress` $p$ is the fraction of training done, in
/// $[0, 1]$; `gamma` $\gamma$ (finite, $> 0$) sets how fast it rises, [`DANN_GAMMA`] $= 10$ in the
/// paper.
pub fn dann_lambda(progress: f64, gamma: f64) -> Result<f64> {
    check::unit_interval("dann_lambda", "progress", progress)?;
    check::eps("dann_lambda", "gamma", gamma)?;
    Ok(2.0 / (1.0 + (-gamma * progress).exp()) - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lambda_is_rejected() {
        for l in [f64::NAN, f64::INFINITY, -0.5] {
            assert!(GradReverse::new(l).is_err());
        }
        let mut layer = GradReverse::new(0.1).unwrap();
        assert!(layer.set_lambda(f64::NAN).is_err());
        assert_eq!(layer.lambda(), 0.1);
    }
}
