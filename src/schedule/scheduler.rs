//! The stateful driver that applies a schedule to an optimizer, step by step.

use std::collections::HashMap;

use candle_core::Tensor;
use candle_nn::Optimizer;

use super::{read_count, scalar, LrSchedule};
use crate::optim::Momentum;
use crate::{Error, Result};

const BLOCK: &str = "Scheduler";

/// Holds a schedule and the step counter, and sets the optimizer's learning rate each step.
///
/// Call [`Scheduler::step`] once per optimizer step, *before* `opt.step(&grads)`: the first call
/// sets `schedule.lr(0)`, the next `schedule.lr(1)`, and so on (torch sets the step-0 rate in
/// the scheduler's constructor and advances after `optimizer.step()`; the sequence of rates the
/// optimizer sees is the same).
///
/// ```
/// use candle_nn::Optimizer;
/// use candle_tricks::schedule::{CosineAnnealing, Scheduler, Warmup};
/// # fn main() -> candle_tricks::Result<()> {
/// let var = candle_core::Var::zeros(3, candle_core::DType::F32, &candle_core::Device::Cpu)?;
/// let mut opt = candle_nn::SGD::new(vec![var], 0.0)?;
/// let mut sched = Scheduler::new(Warmup::new(CosineAnnealing::new(0.1, 90)?, 10, 0.0)?);
/// let mut lrs = Vec::new();
/// for _ in 0..100 {
///     lrs.push(sched.step(&mut opt)?);
///     // opt.step(&grads)?;
/// }
/// assert_eq!(lrs[0], 0.0);
/// assert_eq!(lrs[10], 0.1);
/// assert_eq!(opt.learning_rate(), lrs[99]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Scheduler<S = Box<dyn LrSchedule>> {
    pub(super) schedule: S,
    pub(super) step: usize,
}

impl<S: LrSchedule> Scheduler<S> {
    /// The rate the next [`Scheduler::step`] will set.
    pub fn lr(&self) -> f64 {
        self.schedule.lr(self.step)
    }

    /// Sets the optimizer's learning rate for the current step, advances the counter and
    /// returns the rate. A rate that is NaN, infinite or negative (a custom schedule's bug) is
    /// an error naming the step, and neither the optimizer nor the counter changes.
    pub fn step<O: Optimizer>(&mut self, opt: &mut O) -> Result<f64> {
        let lr = self.schedule.lr(self.step);
        self.check_rate("lr", lr)?;
        opt.set_learning_rate(lr);
        self.step += 1;
        Ok(lr)
    }

    /// [`Scheduler::step`], and also sets the momentum (SGD momentum, Adam's β₁) when the
    /// schedule cycles one ([`super::OneCycle`], [`super::CyclicLr`]); returns
    /// `(lr, momentum)`. The momentum is checked by the optimizer ([`Momentum::set_momentum`]).
    pub fn step_with_momentum<O: Optimizer + Momentum>(
        &mut self,
        opt: &mut O,
    ) -> Result<(f64, Option<f64>)> {
        let m = self.schedule.momentum(self.step);
        if let Some(m) = m {
            opt.set_momentum(m)?;
        }
        Ok((self.step(opt)?, m))
    }
}

impl<S> Scheduler<S> {
    /// A driver at step 0 (of an [`LrSchedule`], or of a [`super::PerGroup`]).
    pub fn new(schedule: S) -> Self {
        Self { schedule, step: 0 }
    }

    /// The schedule.
    pub fn schedule(&self) -> &S {
        &self.schedule
    }

    /// How many steps have been taken (the step the next [`Scheduler::step`] sets).
    pub fn current_step(&self) -> usize {
        self.step
    }

    /// Errors (naming the step) unless `value`, the schedule's `what` for the current step, is
    /// finite and >= 0.
    pub(super) fn check_rate(&self, what: &str, value: f64) -> Result<()> {
        if !(value.is_finite() && value >= 0.0) {
            return Err(Error::config(
                BLOCK,
                format!("the schedule returned {what} {value} at step {}", self.step),
            ));
        }
        Ok(())
    }

    /// The state, `{"scheduler.step": step}` as a 0-d f64 tensor (exact up to $2^{53}$ steps),
    /// ready to be saved next to the optimizer state. The schedule itself is configuration, not
    /// state: rebuild it the same way before loading.
    pub fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        Ok(HashMap::from([(
            "scheduler.step".to_string(),
            scalar(self.step as f64)?,
        )]))
    }

    /// Restores a [`Scheduler::state_dict`]; the next [`Scheduler::step`] continues exactly
    /// where the saved run would have. Errors when the key is missing or not a valid count.
    pub fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.step = read_count(BLOCK, state, "scheduler.step")?;
        Ok(())
    }
}
