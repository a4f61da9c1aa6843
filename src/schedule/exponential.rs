//! Exponential decay: multiply the learning rate by `gamma` every step (torch `ExponentialLR`).

use super::{check_gamma, check_lr, LrSchedule};
use crate::Result;

const BLOCK: &str = "ExponentialLr";

/// $\eta_t = \eta_0 \gamma^t$ — torch's `ExponentialLR` closed form.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialLr {
    base_lr: f64,
    gamma: f64,
}

impl ExponentialLr {
    /// Decays `base_lr` by `gamma` every step. Errors when `gamma` is not in `(0, ∞)` or
    /// `base_lr` is negative.
    pub fn new(base_lr: f64, gamma: f64) -> Result<Self> {
        check_lr(BLOCK, "base_lr", base_lr)?;
        check_gamma(BLOCK, gamma)?;
        Ok(Self { base_lr, gamma })
    }
}

impl LrSchedule for ExponentialLr {
    fn lr(&self, step: usize) -> f64 {
        self.base_lr * self.gamma.powf(step as f64)
    }
}
