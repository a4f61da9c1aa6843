//! Chain schedules at milestones (torch `SequentialLR`).

use super::LrSchedule;
use crate::{Error, Result};

const BLOCK: &str = "Sequential";

/// Runs `schedules[i]` between `milestones[i-1]` and `milestones[i]`, each with its own clock
/// restarting at 0 at its milestone — torch's `SequentialLR` and optax's `join_schedules`.
///
/// `lr(t) = schedules[k].lr(t - milestones[k-1])` with `k` the number of milestones $\le t$.
pub struct Sequential {
    schedules: Vec<Box<dyn LrSchedule>>,
    milestones: Vec<usize>,
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequential")
            .field("schedules", &self.schedules.len())
            .field("milestones", &self.milestones)
            .finish()
    }
}

impl Sequential {
    /// Chains `schedules` switching at `milestones`: one milestone fewer than schedules,
    /// strictly increasing and > 0.
    pub fn new(schedules: Vec<Box<dyn LrSchedule>>, milestones: Vec<usize>) -> Result<Self> {
        if schedules.is_empty() {
            return Err(Error::config(BLOCK, "needs at least one schedule"));
        }
        if milestones.len() + 1 != schedules.len() {
            return Err(Error::config(
                BLOCK,
                format!(
                    "expected {} milestones for {} schedules, got {}",
                    schedules.len() - 1,
                    schedules.len(),
                    milestones.len()
                ),
            ));
        }
        if milestones.first() == Some(&0) || milestones.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::config(
                BLOCK,
                format!("milestones must be > 0 and strictly increasing, got {milestones:?}"),
            ));
        }
        Ok(Self {
            schedules,
            milestones,
        })
    }

    /// The milestones.
    pub fn milestones(&self) -> &[usize] {
        &self.milestones
    }

    fn locate(&self, step: usize) -> (&dyn LrSchedule, usize) {
        let k = self.milestones.partition_point(|&m| m <= step);
        let start = if k == 0 { 0 } else { self.milestones[k - 1] };
        (self.schedules[k].as_ref(), step - start)
    }
}

impl LrSchedule for Sequential {
    fn lr(&self, step: usize) -> f64 {
        let (s, t) = self.locate(step);
        s.lr(t)
    }

    fn momentum(&self, step: usize) -> Option<f64> {
        let (s, t) = self.locate(step);
        s.momentum(t)
    }
}
