//! The Transformer's inverse-square-root schedule with linear warmup (Noam).

use super::LrSchedule;
use crate::{Error, Result};

const BLOCK: &str = "Noam";

/// $\eta_t = c \cdot d^{-1/2} \min(t^{-1/2},\ t \cdot W^{-3/2})$ (Vaswani et al. 2017): a linear
/// rise for $W$ warmup steps to the peak $c\thinspace(d W)^{-1/2}$, then decay as $1/\sqrt{t}$.
///
/// Step 0 is evaluated as step 1 (as the Annotated Transformer and fairseq do), so the first
/// rate is small but not zero and $0^{-1/2}$ never appears.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Noam {
    d_model: usize,
    warmup_steps: usize,
    factor: f64,
}

impl Noam {
    /// The paper's schedule for model width `d_model` and `warmup_steps` (factor 1). Errors when
    /// either is 0.
    pub fn new(d_model: usize, warmup_steps: usize) -> Result<Self> {
        if d_model == 0 {
            return Err(Error::config(BLOCK, "d_model must be > 0, got 0"));
        }
        if warmup_steps == 0 {
            return Err(Error::config(BLOCK, "warmup_steps must be > 0, got 0"));
        }
        Ok(Self {
            d_model,
            warmup_steps,
            factor: 1.0,
        })
    }

    /// Scales the whole schedule by `factor` (the Annotated Transformer's `factor`). Errors when
    /// it is not finite and > 0.
    pub fn with_factor(mut self, factor: f64) -> Result<Self> {
        if !(factor.is_finite() && factor > 0.0) {
            return Err(Error::config(
                BLOCK,
                format!("factor must be finite and > 0, got {factor}"),
            ));
        }
        self.factor = factor;
        Ok(self)
    }

    /// The inverse-square-root schedule by its peak: rises linearly to `peak_lr` at
    /// `warmup_steps`, then $\eta_t = \eta_{peak} \sqrt{W / t}$ (fairseq's `inverse_sqrt`
    /// without its separate warmup start value).
    pub fn from_peak(peak_lr: f64, warmup_steps: usize) -> Result<Self> {
        Self::new(1, warmup_steps)?.with_factor(peak_lr * (warmup_steps as f64).sqrt())
    }

    /// The largest rate, reached at step `warmup_steps`.
    pub fn peak_lr(&self) -> f64 {
        self.lr(self.warmup_steps)
    }
}

impl LrSchedule for Noam {
    fn lr(&self, step: usize) -> f64 {
        let s = step.max(1) as f64;
        let w = self.warmup_steps as f64;
        self.factor * ((self.d_model as f64).powf(-0.5) * s.powf(-0.5).min(s * w.powf(-1.5)))
    }
}
