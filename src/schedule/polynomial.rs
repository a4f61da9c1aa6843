//! Polynomial decay from a base to an end learning rate (torch `PolynomialLR`, optax
//! `polynomial_schedule`).

use super::{check_lr, LrSchedule};
use crate::{Error, Result};

const BLOCK: &str = "Polynomial";

/// $\eta_t = (\eta_0 - \eta_{end}) (1 - \min(t, T)/T)^p + \eta_{end}$.
///
/// With `end_lr = 0` (the default) this is torch's `PolynomialLR(total_iters = T, power = p)`;
/// with an end value it is optax's `polynomial_schedule(init, end, p, T)` (transition_begin 0).
/// After `T` steps the rate stays at `end_lr`. `p = 1` is the linear decay BERT used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Polynomial {
    base_lr: f64,
    end_lr: f64,
    total_steps: usize,
    power: f64,
}

impl Polynomial {
    /// Decays `base_lr` to 0 over `total_steps` with exponent `power`. Errors when
    /// `total_steps` is 0, `power` is not finite and > 0, or `base_lr` is negative.
    pub fn new(base_lr: f64, total_steps: usize, power: f64) -> Result<Self> {
        check_lr(BLOCK, "base_lr", base_lr)?;
        if total_steps == 0 {
            return Err(Error::config(BLOCK, "total_steps must be > 0, got 0"));
        }
        if !(power.is_finite() && power > 0.0) {
            return Err(Error::config(
                BLOCK,
                format!("power must be finite and > 0, got {power}"),
            ));
        }
        Ok(Self {
            base_lr,
            end_lr: 0.0,
            total_steps,
            power,
        })
    }

    /// Decays to `end_lr` instead of 0 (optax's `end_value`). Errors when it is negative.
    pub fn with_end_lr(mut self, end_lr: f64) -> Result<Self> {
        check_lr(BLOCK, "end_lr", end_lr)?;
        self.end_lr = end_lr;
        Ok(self)
    }
}

impl LrSchedule for Polynomial {
    fn lr(&self, step: usize) -> f64 {
        let t = step.min(self.total_steps) as f64 / self.total_steps as f64;
        (self.base_lr - self.end_lr) * (1.0 - t).powf(self.power) + self.end_lr
    }
}
