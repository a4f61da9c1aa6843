//! Cosine annealing from a base learning rate to `eta_min` (torch `CosineAnnealingLR`).

use super::{check_lr, LrSchedule};
use crate::{Error, Result};

const BLOCK: &str = "CosineAnnealing";

/// $\eta_t = \eta_{min} + (\eta_0 - \eta_{min}) \frac{1 + \cos(\pi t / T_{max})}{2}$ — torch's
/// `CosineAnnealingLR` closed form.
///
/// It reaches `eta_min` at $t = T_{max}$ and, like torch's closed form, keeps following the
/// cosine afterwards (rising again towards $\eta_0$ at $2T_{max}$). To hold `eta_min` after the
/// end, put a [`super::Constant`] behind it in a [`super::Sequential`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineAnnealing {
    base_lr: f64,
    t_max: usize,
    eta_min: f64,
}

impl CosineAnnealing {
    /// Anneals `base_lr` to 0 over `t_max` steps. Errors when `t_max` is 0 or `base_lr` is
    /// negative.
    pub fn new(base_lr: f64, t_max: usize) -> Result<Self> {
        check_lr(BLOCK, "base_lr", base_lr)?;
        if t_max == 0 {
            return Err(Error::config(BLOCK, "t_max must be > 0, got 0"));
        }
        Ok(Self {
            base_lr,
            t_max,
            eta_min: 0.0,
        })
    }

    /// Anneals to `eta_min` instead of 0. Errors when it is negative.
    pub fn with_eta_min(mut self, eta_min: f64) -> Result<Self> {
        check_lr(BLOCK, "eta_min", eta_min)?;
        self.eta_min = eta_min;
        Ok(self)
    }
}

impl LrSchedule for CosineAnnealing {
    fn lr(&self, step: usize) -> f64 {
        let c = (std::f64::consts::PI * step as f64 / self.t_max as f64).cos();
        self.eta_min + (self.base_lr - self.eta_min) * (1.0 + c) / 2.0
    }
}
