//! Optimizers with fused in-place update kernels, parameter groups and gradient utilities.
//!
//! (Module docs — the tips page — are written by the optimizer work; see issue 4.)

/// What an optimizer step does when a gradient holds NaN or ±Inf.
///
/// Either way the weights and the optimizer state are never touched by a non-finite value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonFinite {
    /// Return an [`crate::Error`] naming the optimizer and the offending parameter (default).
    #[default]
    Error,
    /// Skip the whole step (no parameter or state changes) and count it.
    Skip,
}

/// Optimizers whose momentum coefficient can change between steps — SGD's `momentum`, Adam's
/// and Lion's `beta1`, RMSProp's `momentum` — so a schedule such as one-cycle can cycle it.
pub trait Momentum {
    /// The current momentum coefficient (`momentum` or `beta1`).
    fn momentum(&self) -> f64;
    /// Sets the momentum coefficient used by the following steps.
    fn set_momentum(&mut self, momentum: f64);
}

pub mod clip;
pub use clip::{agc, clip_grad_norm, clip_grad_norm_inf, clip_grad_value, grad_norm};
