//! Asynchronous successive halving (ASHA): stop the trials whose learning curves fall behind, so
//! the budget goes to the promising ones.
//!
//! # Shapes
//! A trial reports `(step, value)` pairs through a [`Reporter`] (steps: epochs or any resource
//! count). Rung $k$ sits at step $r \thinspace \eta^{s + k}$ ($r$: `min_resource`, $\eta$:
//! `reduction_factor`, $s$: `min_early_stopping_rate`).
//!
//! # Tip: stop bad trials early
//! Most configurations of a search are bad, and a learning curve shows it long before the end:
//! a run whose loss after 3 epochs is worse than that of most runs after 3 epochs rarely wins
//! after 100. Successive halving exploits this: at each rung only the best $1/\eta$ of the trials
//! go on, so with $\eta = 3$ a trial trained to the end costs as much as $3^k$ trials stopped
//! at rung $0$, and the same budget screens many more configurations. ASHA (Li et al. 2018) is
//! the asynchronous rule: when a trial reaches a rung it is compared with every value recorded
//! at that rung so far, and continues only if it ranks in the top
//! $\lfloor n / \eta \rfloor$ of those $n$ values (while $n < \eta$, only if it is the best). No
//! trial ever waits for others, so it runs sequentially here and in parallel elsewhere. The rule
//! and its decisions are those of Optuna's `SuccessiveHalvingPruner` (checked against it). The
//! trade-off: a slow starter (a small learning rate, heavy regularisation) can be stopped before
//! it overtakes, so keep the first rung late enough for curves to separate (`min_resource`) and
//! prefer $\eta = 3$ or $4$.
//!
//! # Example
//! ```
//! use candle_tricks::tune::{Asha, AshaConfig, Decision, Direction, RandomSampler, Space, Study};
//! # fn main() -> candle_tricks::Result<()> {
//! let space = Space::builder().uniform("rate", 0.0, 1.0).build()?;
//! let asha = Asha::new(AshaConfig::default().with_reduction_factor(3))?;
//! let mut study = Study::new(space, Direction::Minimize, Box::new(RandomSampler::new(0)))
//!     .with_pruner(asha);
//! let mut spent = 0;
//! study.optimize_pruned(30, |cfg, reporter| {
//!     let rate = cfg.f64("rate")?;
//!     let mut loss = 1.0;
//!     for step in 1..=27 {
//!         spent += 1;
//!         loss = 1.0 / (1.0 + rate * step as f64); // a faster rate learns faster
//!         if reporter.report(step, loss) == Decision::Prune {
//!             break;
//!         }
//!     }
//!     Ok(loss)
//! })?;
//! assert!(spent < 30 * 27 / 2); // most trials were stopped early
//! assert!(study.best().map_or(false, |b| b.config.f64("rate").unwrap() > 0.8));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - L. Li, K. Jamieson, A. Rostamizadeh, E. Gonina, M. Hardt, B. Recht, A. Talwalkar, *A System
//!   for Massively Parallel Hyperparameter Tuning*, MLSys 2020,
//!   [arXiv:1810.05934](https://arxiv.org/abs/1810.05934).
//! - K. Jamieson, A. Talwalkar, *Non-stochastic Best Arm Identification and Hyperparameter
//!   Optimization*, AISTATS 2016, [arXiv:1502.07943](https://arxiv.org/abs/1502.07943).

use crate::{Error, Result};

/// What a trial should do after reporting a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep training.
    Continue,
    /// Stop now: the study records the trial as pruned with the value just reported.
    Prune,
}

/// The rungs of [`Asha`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AshaConfig {
    /// The step of rung $0$ (before the early-stopping rate); default 1.
    pub min_resource: u64,
    /// $\eta$: rungs are $\eta$ times apart and keep the top $1/\eta$; default 4 (Optuna's).
    pub reduction_factor: u64,
    /// $s$: skips the first $s$ rungs, so the first decision is at $r \thinspace \eta^s$;
    /// default 0.
    pub min_early_stopping_rate: u32,
}

impl Default for AshaConfig {
    fn default() -> Self {
        Self {
            min_resource: 1,
            reduction_factor: 4,
            min_early_stopping_rate: 0,
        }
    }
}

impl AshaConfig {
    /// Sets [`AshaConfig::min_resource`].
    pub fn with_min_resource(mut self, r: u64) -> Self {
        self.min_resource = r;
        self
    }

    /// Sets [`AshaConfig::reduction_factor`].
    pub fn with_reduction_factor(mut self, eta: u64) -> Self {
        self.reduction_factor = eta;
        self
    }

    /// Sets [`AshaConfig::min_early_stopping_rate`].
    pub fn with_min_early_stopping_rate(mut self, s: u32) -> Self {
        self.min_early_stopping_rate = s;
        self
    }

    /// Checks `min_resource >= 1` and `reduction_factor >= 2`.
    pub fn validate(&self) -> Result<()> {
        if self.min_resource == 0 {
            return Err(Error::config("Asha", "expected min_resource >= 1, got 0"));
        }
        if self.reduction_factor < 2 {
            return Err(Error::config(
                "Asha",
                format!(
                    "expected reduction_factor >= 2, got {}",
                    self.reduction_factor
                ),
            ));
        }
        Ok(())
    }
}

/// The ASHA pruning rule (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asha {
    cfg: AshaConfig,
}

impl Asha {
    /// Validates `cfg`.
    pub fn new(cfg: AshaConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { cfg })
    }

    /// The configuration.
    pub fn config(&self) -> &AshaConfig {
        &self.cfg
    }

    /// The step of rung `rung`, or `None` past `u64` (a rung no trial reaches).
    pub fn rung_step(&self, rung: usize) -> Option<u64> {
        let k = u32::try_from(rung)
            .ok()?
            .checked_add(self.cfg.min_early_stopping_rate)?;
        self.cfg
            .reduction_factor
            .checked_pow(k)?
            .checked_mul(self.cfg.min_resource)
    }

    /// Decides after a report of `value` (lower is better) at `step`. `passed` holds the values
    /// this trial recorded at the rungs it already passed and gets the new rungs' values;
    /// `rungs[k]` holds the values the earlier trials recorded at rung `k`.
    pub(crate) fn decide(
        &self,
        rungs: &[Vec<f64>],
        passed: &mut Vec<f64>,
        step: u64,
        value: f64,
    ) -> Decision {
        loop {
            let rung = passed.len();
            match self.rung_step(rung) {
                Some(s) if step >= s => {}
                _ => return Decision::Continue,
            }
            passed.push(value);
            let earlier = rungs.get(rung).map_or(&[][..], |v| v.as_slice());
            if !promotable(value, earlier, self.cfg.reduction_factor) {
                return Decision::Prune;
            }
        }
    }
}

/// Whether `value` ranks in the top $\lfloor n / \eta \rfloor$ (at least the best) of the `n`
/// values `earlier` plus itself.
fn promotable(value: f64, earlier: &[f64], eta: u64) -> bool {
    let n = earlier.len() + 1;
    let keep = usize::try_from(n as u64 / eta).unwrap_or(usize::MAX).max(1);
    // value is promotable iff fewer than `keep` of the competing values are strictly below it
    // (itself included, Optuna's `value <= sorted[keep - 1]`).
    earlier.iter().filter(|&&v| v < value).count() < keep
}

/// What the objective of [`crate::tune::Study::optimize_pruned`] reports its learning curve to.
#[derive(Debug)]
pub struct Reporter<'a> {
    pub(crate) pruner: Option<&'a Asha>,
    pub(crate) rungs: &'a [Vec<f64>],
    /// +1 to minimise, -1 to maximise: the rungs hold values to minimise.
    pub(crate) sign: f64,
    pub(crate) curve: Vec<(u64, f64)>,
    pub(crate) passed: Vec<f64>,
    pub(crate) pruned: bool,
}

impl Reporter<'_> {
    /// Records the objective's `value` after `step` (epochs, batches: any increasing resource
    /// count) and says whether to go on. A NaN or infinite value answers [`Decision::Prune`]
    /// and the trial is recorded as failed. After a `Prune` every later report answers `Prune`.
    pub fn report(&mut self, step: u64, value: f64) -> Decision {
        self.curve.push((step, value));
        if self.pruned || !value.is_finite() {
            self.pruned = true;
            return Decision::Prune;
        }
        let decision = match self.pruner {
            Some(asha) => asha.decide(self.rungs, &mut self.passed, step, self.sign * value),
            None => Decision::Continue,
        };
        self.pruned = decision == Decision::Prune;
        decision
    }

    /// The `(step, value)` pairs reported so far.
    pub fn curve(&self) -> &[(u64, f64)] {
        &self.curve
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rung_steps_and_overflow() {
        let asha = Asha::new(AshaConfig::default().with_reduction_factor(3)).unwrap();
        assert_eq!(asha.rung_step(0), Some(1));
        assert_eq!(asha.rung_step(3), Some(27));
        assert_eq!(asha.rung_step(100), None);
    }

    #[test]
    fn first_trials_continue_only_when_best() {
        assert!(promotable(1.0, &[], 3));
        assert!(!promotable(2.0, &[1.0], 3));
        assert!(promotable(1.0, &[1.0], 3)); // a tie is kept, as Optuna's `<=`
                                             // 6 values, eta 3: the best 2 go on.
        assert!(promotable(2.0, &[1.0, 3.0, 4.0, 5.0, 6.0], 3));
        assert!(!promotable(3.5, &[1.0, 3.0, 4.0, 5.0, 6.0], 3));
    }
}
