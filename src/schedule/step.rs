//! Step decay: multiply the learning rate by `gamma` every `step_size` steps (torch `StepLR`).

use super::{check_gamma, check_lr, LrSchedule};
use crate::{Error, Result};

const BLOCK: &str = "StepLr";

/// $\eta_t = \eta_0 \gamma^{\lfloor t / s \rfloor}$ — torch's `StepLR` closed form.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLr {
    base_lr: f64,
    step_size: usize,
    gamma: f64,
}

impl StepLr {
    /// Decays `base_lr` by `gamma` every `step_size` steps. Errors when `step_size` is 0, `gamma`
    /// is not in `(0, ∞)` or `base_lr` is negative.
    pub fn new(base_lr: f64, step_size: usize, gamma: f64) -> Result<Self> {
        check_lr(BLOCK, "base_lr", base_lr)?;
        check_gamma(BLOCK, gamma)?;
        if step_size == 0 {
            return Err(Error::config(BLOCK, "step_size must be > 0, got 0"));
        }
        Ok(Self {
            base_lr,
            step_size,
            gamma,
        })
    }
}

impl LrSchedule for StepLr {
    fn lr(&self, step: usize) -> f64 {
        self.base_lr * self.gamma.powf((step / self.step_size) as f64)
    }
}
