//! Chaining multiplicative schedules (torch `ChainedScheduler`).

use super::{check_lr, LrSchedule};
use crate::{Error, Result};

const BLOCK: &str = "Chained";

/// Several schedules acting at once: the rate is `base_lr` times the product of every link's
/// factor, $\eta_t = \eta_0 \prod_i f_i(t)$, all links on the same clock — torch's
/// `ChainedScheduler` over multiplicative schedulers (`StepLR`, `MultiStepLR`, `ExponentialLR`,
/// `ConstantLR`, `LinearLR`, `LambdaLR`).
///
/// Build each link with a base rate of 1, so that its `lr(t)` is its factor: a warmup
/// (`Warmup::new(Constant::new(1.0)?, w, f)`, torch `LinearLR`) times a step decay
/// (`StepLr::new(1.0, …)`) times a slow exponential decay. Where [`super::Sequential`]
/// hands over from one schedule to the next at milestones, `Chained` applies them together.
/// No momentum: [`LrSchedule::momentum`] is `None`.
///
/// ```
/// use candle_tricks::schedule::{Chained, Constant, ExponentialLr, LrSchedule, StepLr, Warmup};
/// # fn main() -> candle_tricks::Result<()> {
/// let s = Chained::new(
///     0.1,
///     vec![
///         Box::new(Warmup::new(Constant::new(1.0)?, 10, 0.1)?), // LinearLR(0.1, total_iters 10)
///         Box::new(StepLr::new(1.0, 50, 0.5)?),
///         Box::new(ExponentialLr::new(1.0, 0.99)?),
///     ],
/// )?;
/// assert!((s.lr(0) - 0.1 * 0.1).abs() < 1e-17);
/// assert!((s.lr(60) - 0.1 * 0.5 * 0.99f64.powi(60)).abs() < 1e-15);
/// # Ok(())
/// # }
/// ```
pub struct Chained {
    base_lr: f64,
    links: Vec<Box<dyn LrSchedule>>,
}

impl std::fmt::Debug for Chained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chained")
            .field("base_lr", &self.base_lr)
            .field("links", &self.links.len())
            .finish()
    }
}

impl Chained {
    /// `base_lr` (finite, >= 0) times the factors of `links` (at least one).
    pub fn new(base_lr: f64, links: Vec<Box<dyn LrSchedule>>) -> Result<Self> {
        check_lr(BLOCK, "base_lr", base_lr)?;
        if links.is_empty() {
            return Err(Error::config(BLOCK, "needs at least one schedule"));
        }
        Ok(Self { base_lr, links })
    }

    /// The base rate.
    pub fn base_lr(&self) -> f64 {
        self.base_lr
    }
}

impl LrSchedule for Chained {
    fn lr(&self, step: usize) -> f64 {
        self.links
            .iter()
            .fold(self.base_lr, |lr, link| lr * link.lr(step))
    }
}
