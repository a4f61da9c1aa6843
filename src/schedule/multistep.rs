//! Multi-step decay: multiply the learning rate by `gamma` at each milestone (torch `MultiStepLR`).

use super::{check_gamma, check_lr, LrSchedule};
use crate::{Error, Result};

const BLOCK: &str = "MultiStepLr";

/// $\eta_t = \eta_0 \gamma^{k(t)}$ where $k(t)$ counts the milestones $\le t$ — torch's
/// `MultiStepLR` closed form (a repeated milestone counts twice, as in torch).
#[derive(Debug, Clone, PartialEq)]
pub struct MultiStepLr {
    base_lr: f64,
    milestones: Vec<usize>,
    gamma: f64,
}

impl MultiStepLr {
    /// Decays `base_lr` by `gamma` at every step listed in `milestones`. Errors when the
    /// milestones are not sorted (non-decreasing), `gamma` is not in `(0, ∞)` or `base_lr` is
    /// negative.
    pub fn new(base_lr: f64, milestones: impl Into<Vec<usize>>, gamma: f64) -> Result<Self> {
        let milestones = milestones.into();
        check_lr(BLOCK, "base_lr", base_lr)?;
        check_gamma(BLOCK, gamma)?;
        if milestones.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::config(
                BLOCK,
                format!("milestones must be sorted, got {milestones:?}"),
            ));
        }
        Ok(Self {
            base_lr,
            milestones,
            gamma,
        })
    }
}

impl LrSchedule for MultiStepLr {
    fn lr(&self, step: usize) -> f64 {
        let passed = self.milestones.partition_point(|&m| m <= step);
        self.base_lr * self.gamma.powf(passed as f64)
    }
}
