//! Linear warmup in front of any schedule.

use super::{check_unit, LrSchedule};
use crate::Result;

const BLOCK: &str = "Warmup";

/// Linear warmup for `warmup_steps` steps, then the inner schedule with its clock starting at 0.
///
/// For $t < W$: $\eta_t = \eta_0^{in} \thinspace (f + (1 - f)\thinspace t / W)$, a straight line
/// from $f \cdot \eta_0^{in}$ (`start_factor`) that would reach the inner schedule's first value
/// $\eta_0^{in}$ at $t = W$; for $t \ge W$: $\eta_t = \eta_{t - W}^{in}$.
///
/// The inner clock starts *after* the warmup — optax's
/// `join_schedules([linear_schedule(f·η, η, W), inner], [W])` (the layout of optax's
/// `warmup_cosine_decay_schedule`), timm's `warmup_prefix=True`, and torch's
/// `SequentialLR([LinearLR(start_factor=f, total_iters=W), inner], milestones=[W])`. So a
/// cosine of `T_max` steps behind a warmup of `W` steps ends at step `W + T_max`.
/// The momentum (if the inner schedule has one) is the inner schedule's at step 0 during
/// warmup.
#[derive(Debug, Clone, PartialEq)]
pub struct Warmup<S> {
    inner: S,
    warmup_steps: usize,
    start_factor: f64,
}

impl<S: LrSchedule> Warmup<S> {
    /// Warms up linearly over `warmup_steps` from `start_factor` (in `[0, 1]`, 0 = from zero)
    /// times the inner schedule's first value. `warmup_steps = 0` means no warmup.
    pub fn new(inner: S, warmup_steps: usize, start_factor: f64) -> Result<Self> {
        check_unit(BLOCK, "start_factor", start_factor)?;
        Ok(Self {
            inner,
            warmup_steps,
            start_factor,
        })
    }

    /// The wrapped schedule.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The warmup length in steps.
    pub fn warmup_steps(&self) -> usize {
        self.warmup_steps
    }
}

impl<S: LrSchedule> LrSchedule for Warmup<S> {
    fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            let f = self.start_factor
                + (1.0 - self.start_factor) * step as f64 / self.warmup_steps as f64;
            self.inner.lr(0) * f
        } else {
            self.inner.lr(step - self.warmup_steps)
        }
    }

    fn momentum(&self, step: usize) -> Option<f64> {
        self.inner.momentum(step.saturating_sub(self.warmup_steps))
    }
}
