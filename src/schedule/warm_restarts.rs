//! Cosine annealing with warm restarts, SGDR (torch `CosineAnnealingWarmRestarts`).

use super::{check_lr, LrSchedule};
use crate::{Error, Result};

const BLOCK: &str = "CosineWarmRestarts";

/// SGDR: cosine annealing from $\eta_0$ to $\eta_{min}$ over a cycle of $T_i$ steps, then a
/// jump back to $\eta_0$; cycle $i$ lasts $T_0 T_{mult}^i$ steps.
///
/// $\eta_t = \eta_{min} + (\eta_0 - \eta_{min}) \frac{1 + \cos(\pi T_{cur} / T_i)}{2}$ with
/// $T_{cur}$ the steps since the last restart — torch's `CosineAnnealingWarmRestarts` stepped
/// once per step (integer $T_{cur}$).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineWarmRestarts {
    base_lr: f64,
    t_0: usize,
    t_mult: usize,
    eta_min: f64,
}

impl CosineWarmRestarts {
    /// First cycle of `t_0` steps, each next one `t_mult` times longer. Errors when `t_0` or
    /// `t_mult` is 0 or `base_lr` is negative.
    pub fn new(base_lr: f64, t_0: usize, t_mult: usize) -> Result<Self> {
        check_lr(BLOCK, "base_lr", base_lr)?;
        if t_0 == 0 {
            return Err(Error::config(BLOCK, "t_0 must be > 0, got 0"));
        }
        if t_mult == 0 {
            return Err(Error::config(BLOCK, "t_mult must be >= 1, got 0"));
        }
        Ok(Self {
            base_lr,
            t_0,
            t_mult,
            eta_min: 0.0,
        })
    }

    /// Anneals to `eta_min` instead of 0 within each cycle. Errors when it is negative.
    pub fn with_eta_min(mut self, eta_min: f64) -> Result<Self> {
        check_lr(BLOCK, "eta_min", eta_min)?;
        self.eta_min = eta_min;
        Ok(self)
    }

    /// `(t_cur, t_i)`: the steps since the last restart and the length of the current cycle.
    pub fn cycle_position(&self, step: usize) -> (usize, usize) {
        if self.t_mult == 1 {
            return (step % self.t_0, self.t_0);
        }
        let (mut t_cur, mut t_i) = (step, self.t_0);
        while t_cur >= t_i {
            t_cur -= t_i;
            t_i = t_i.saturating_mul(self.t_mult);
        }
        (t_cur, t_i)
    }
}

impl LrSchedule for CosineWarmRestarts {
    fn lr(&self, step: usize) -> f64 {
        let (t_cur, t_i) = self.cycle_position(step);
        let c = (std::f64::consts::PI * t_cur as f64 / t_i as f64).cos();
        self.eta_min + (self.base_lr - self.eta_min) * (1.0 + c) / 2.0
    }
}
