//! A schedule per parameter group (torch `LambdaLR` with one lambda per group).

use super::{LrSchedule, Scheduler};
use crate::optim::{Algorithm, Optim};
use crate::{Error, Result};

const BLOCK: &str = "PerGroup";

/// Optimizers whose parameter groups each have a learning-rate multiplier a schedule may set
/// (every [`Optim`]: the group's rate is the base rate times its multiplier).
pub trait GroupLr {
    /// Number of parameter groups.
    fn num_groups(&self) -> usize;
    /// Sets group `group`'s multiplier after checking it (an error leaves it unchanged).
    fn set_group_lr_mult(&mut self, group: usize, lr_mult: f64) -> Result<()>;
}

impl<C: Algorithm> GroupLr for Optim<C> {
    fn num_groups(&self) -> usize {
        Optim::num_groups(self)
    }

    fn set_group_lr_mult(&mut self, group: usize, lr_mult: f64) -> Result<()> {
        Optim::set_group_lr_mult(self, group, lr_mult)
    }
}

/// One schedule per parameter group, driven by [`Scheduler::step_groups`]: at step $t$ group
/// $j$'s learning-rate multiplier becomes `schedules[j].lr(t)`, so its rate is the optimizer's
/// base rate times that value.
///
/// With the optimizer's base rate set to 1, every group follows its own schedule exactly —
/// torch's `LambdaLR(opt, [λ₀, λ₁, …])`, where group $j$'s rate is its initial rate times
/// $\lambda_j(t)$: build schedule $j$ with base rate `initial_lr_j`. With another base rate
/// (itself moved by a plain [`Scheduler`] if wanted), the per-group values act as factors
/// on it: a backbone that warms up later than the head, layer-wise decay that changes over
/// the run.
///
/// ```
/// use candle_core::{DType, Device, Var};
/// use candle_tricks::optim::{ParamGroup, ParamGroups, Sgd, SgdConfig};
/// use candle_tricks::schedule::{Constant, CosineAnnealing, PerGroup, Scheduler, Sequential};
/// # fn main() -> candle_tricks::Result<()> {
/// let backbone = Var::zeros(4, DType::F32, &Device::Cpu)?;
/// let head = Var::zeros(2, DType::F32, &Device::Cpu)?;
/// let groups = ParamGroups::new(vec![ParamGroup::new(vec![backbone]), ParamGroup::new(vec![head])]);
/// let mut opt = Sgd::with_groups(groups, SgdConfig::default().with_lr(1.0))?;
/// // The backbone frozen for 100 steps, then annealed; the head annealed from the start.
/// let frozen_then_cosine = Sequential::new(
///     vec![Box::new(Constant::new(0.0)?), Box::new(CosineAnnealing::new(1e-3, 900)?)],
///     vec![100],
/// )?;
/// let per_group = PerGroup::new(vec![
///     Box::new(frozen_then_cosine),
///     Box::new(CosineAnnealing::new(1e-2, 1000)?),
/// ])?;
/// let mut sched = Scheduler::new(per_group);
/// assert_eq!(sched.step_groups(&mut opt)?, vec![0.0, 1e-2]);
/// assert_eq!((opt.group_lr_mult(0), opt.group_lr_mult(1)), (Some(0.0), Some(1e-2)));
/// # Ok(())
/// # }
/// ```
pub struct PerGroup {
    schedules: Vec<Box<dyn LrSchedule>>,
}

impl std::fmt::Debug for PerGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerGroup")
            .field("groups", &self.schedules.len())
            .finish()
    }
}

impl PerGroup {
    /// One schedule per group, in the optimizer's group order (at least one).
    pub fn new(schedules: Vec<Box<dyn LrSchedule>>) -> Result<Self> {
        if schedules.is_empty() {
            return Err(Error::config(BLOCK, "needs at least one schedule"));
        }
        Ok(Self { schedules })
    }

    /// Number of groups (schedules).
    pub fn len(&self) -> usize {
        self.schedules.len()
    }

    /// Always false: a `PerGroup` holds at least one schedule.
    pub fn is_empty(&self) -> bool {
        self.schedules.is_empty()
    }

    /// The multipliers of every group at `step`.
    pub fn lr_mults(&self, step: usize) -> Vec<f64> {
        self.schedules.iter().map(|s| s.lr(step)).collect()
    }
}

impl Scheduler<PerGroup> {
    /// Sets every group's learning-rate multiplier for the current step, advances the counter
    /// and returns the multipliers. The optimizer must have as many groups as there are
    /// schedules, and every value must be finite and >= 0; otherwise nothing changes.
    pub fn step_groups<O: GroupLr>(&mut self, opt: &mut O) -> Result<Vec<f64>> {
        let n = self.schedule.len();
        if opt.num_groups() != n {
            return Err(Error::config(
                BLOCK,
                format!(
                    "expected an optimizer with {n} parameter groups (one per schedule), got {}",
                    opt.num_groups()
                ),
            ));
        }
        let mults = self.schedule.lr_mults(self.step);
        for (j, &m) in mults.iter().enumerate() {
            self.check_rate(&format!("lr_mult (group {j})"), m)?;
        }
        for (j, &m) in mults.iter().enumerate() {
            opt.set_group_lr_mult(j, m)?;
        }
        self.step += 1;
        Ok(mults)
    }
}
