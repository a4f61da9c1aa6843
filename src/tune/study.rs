//! A hyper-parameter study: a [`Space`], a [`Sampler`] and a user objective run trial after
//! trial, with the trials, the best one and the best-so-far curve recorded.
//!
//! # Shapes
//! Each trial: the sampler proposes a point of $[0, 1]^d$ ($d$ = `space.len()`), the space
//! decodes it into a [`Config`], the objective returns a score. The sampler sees every completed
//! trial as an [`Observation`] (the score negated when the study maximises); failed and pruned
//! trials are recorded but never handed to it.
//!
//! # Tip: budget, scale, then cleverness
//! Most of a search's value comes from searching at all, on the right scale (log for rates and
//! weight decay, see [`crate::tune::space`]), with enough trials: random search beats a grid of
//! the same size because few dimensions matter ([`crate::tune::random`]), a Sobol sequence
//! covers a small budget more evenly ([`crate::tune::sobol`]), and stopping bad trials early
//! ([`crate::tune::asha`]) buys more trials for the same compute. A trial that diverges (NaN
//! loss) or errors is a result too, recorded as failed with its message: the study goes on, and
//! the region shows up in [`Study::trials`]. Save the study after each trial
//! ([`Study::save`]) so a long search survives an interruption; [`Study::load`] resumes it with
//! the sampler where it was.
//!
//! # Example
//! ```
//! use candle_tricks::tune::{Direction, SobolSampler, Space, Study, TrialState};
//! # fn main() -> candle_tricks::Result<()> {
//! let space = Space::builder().uniform("x", -2.0, 2.0).log_uniform("lr", 1e-4, 1.0).build()?;
//! let mut study = Study::new(space, Direction::Minimize, Box::new(SobolSampler::new()));
//! study.optimize(32, |cfg| {
//!     let (x, lr) = (cfg.f64("x")?, cfg.f64("lr")?);
//!     Ok((x - 0.3).powi(2) + (lr.log10() + 2.5).powi(2)) // best at x = 0.3, lr = 0.003
//! })?;
//! let best = study.best().expect("a completed trial");
//! assert!(best.value().unwrap() < 0.1);
//! assert!((best.config.f64("lr")?.log10() + 2.5).abs() < 0.3);
//! // The best-so-far curve never goes up.
//! let curve: Vec<f64> = study.best_so_far().into_iter().flatten().collect();
//! assert!(curve.windows(2).all(|w| w[1] <= w[0]));
//! // A diverging trial is recorded as failed, never handed to the sampler.
//! study.optimize(1, |_| Ok(f64::NAN))?;
//! assert_eq!(study.trials()[32].state(), TrialState::Failed);
//! assert_eq!(study.best_so_far().len(), 33);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - J. Bergstra, Y. Bengio, *Random Search for Hyper-Parameter Optimization*, JMLR 13, 2012,
//!   <https://jmlr.org/papers/v13/bergstra12a.html>.
//! - T. Akiba, S. Sano, T. Yanase, T. Ohta, M. Koyama, *Optuna: A Next-generation
//!   Hyperparameter Optimization Framework*, KDD 2019,
//!   [arXiv:1907.10902](https://arxiv.org/abs/1907.10902).

use crate::tune::asha::{Asha, Reporter};
use crate::tune::sampler::{Observation, Sampler};
use crate::tune::space::{Config, Space};
use crate::{Error, Result};

/// Whether the study looks for the lowest or the highest score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Lower is better (a loss, an error rate).
    Minimize,
    /// Higher is better (an accuracy).
    Maximize,
}

impl Direction {
    /// +1 or -1: the factor that turns a score into a value to minimise.
    fn sign(self) -> f64 {
        match self {
            Direction::Minimize => 1.0,
            Direction::Maximize => -1.0,
        }
    }
}

/// How a trial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialState {
    /// The objective returned a finite score.
    Complete,
    /// The pruner stopped it.
    Pruned,
    /// The objective returned an error or a non-finite score.
    Failed,
}

/// A trial's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The objective's finite score.
    Complete {
        /// The score, as the objective returned it.
        value: f64,
    },
    /// Stopped by the pruner after reporting `value` at `step`.
    Pruned {
        /// The last reported step.
        step: u64,
        /// The value reported there.
        value: f64,
    },
    /// The objective failed.
    Failed {
        /// The error, or which value was not finite.
        message: String,
    },
}

/// One evaluated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// Its index in the study, from 0.
    pub number: usize,
    /// The configuration it ran.
    pub config: Config,
    /// The sampler's point that decoded to `config`.
    pub point: Vec<f64>,
    /// How it ended.
    pub outcome: Outcome,
    /// The `(step, value)` pairs it reported (empty for [`Study::optimize`]).
    pub curve: Vec<(u64, f64)>,
    /// The values (to minimise) it recorded at the pruner's rungs, from rung 0.
    pub(crate) rungs: Vec<f64>,
}

impl Trial {
    /// Its state.
    pub fn state(&self) -> TrialState {
        match self.outcome {
            Outcome::Complete { .. } => TrialState::Complete,
            Outcome::Pruned { .. } => TrialState::Pruned,
            Outcome::Failed { .. } => TrialState::Failed,
        }
    }

    /// The final score of a complete trial, or the last reported value of a pruned one.
    pub fn value(&self) -> Option<f64> {
        match self.outcome {
            Outcome::Complete { value } | Outcome::Pruned { value, .. } => Some(value),
            Outcome::Failed { .. } => None,
        }
    }
}

/// A search over a [`Space`] driven by any [`Sampler`] (see the module docs).
pub struct Study {
    pub(crate) space: Space,
    pub(crate) direction: Direction,
    pub(crate) sampler: Box<dyn Sampler>,
    pub(crate) pruner: Option<Asha>,
    pub(crate) trials: Vec<Trial>,
    /// The completed trials as the sampler sees them.
    pub(crate) history: Vec<Observation>,
}

impl std::fmt::Debug for Study {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Study")
            .field("space", &self.space)
            .field("direction", &self.direction)
            .field("pruner", &self.pruner)
            .field("trials", &self.trials.len())
            .finish()
    }
}

impl Study {
    /// An empty study of `space` with `sampler` proposing the points.
    pub fn new(space: Space, direction: Direction, sampler: Box<dyn Sampler>) -> Self {
        Self {
            space,
            direction,
            sampler,
            pruner: None,
            trials: Vec::new(),
            history: Vec::new(),
        }
    }

    /// Prunes the trials of [`Study::optimize_pruned`] with ASHA.
    pub fn with_pruner(mut self, pruner: Asha) -> Self {
        self.pruner = Some(pruner);
        self
    }

    /// The search space.
    pub fn space(&self) -> &Space {
        &self.space
    }

    /// The direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Every trial so far, in order.
    pub fn trials(&self) -> &[Trial] {
        &self.trials
    }

    /// The best complete trial (the first of equals), if any.
    pub fn best(&self) -> Option<&Trial> {
        let sign = self.direction.sign();
        self.trials
            .iter()
            .filter_map(|t| match t.outcome {
                Outcome::Complete { value } => Some((t, sign * value)),
                _ => None,
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(t, _)| t)
    }

    /// After each trial, the best complete score so far (`None` before the first).
    pub fn best_so_far(&self) -> Vec<Option<f64>> {
        let sign = self.direction.sign();
        let mut best: Option<f64> = None;
        self.trials
            .iter()
            .map(|t| {
                if let (TrialState::Complete, Some(v)) = (t.state(), t.value()) {
                    best = Some(best.map_or(v, |b| if sign * v < sign * b { v } else { b }));
                }
                best
            })
            .collect()
    }

    /// Runs `n_trials` more trials of `objective` (see [`Study::optimize_pruned`] for one that
    /// reports its learning curve). An `Err` or a non-finite score is recorded as a failed
    /// trial; an error of the sampler stops the study and is returned.
    pub fn optimize<F>(&mut self, n_trials: usize, mut objective: F) -> Result<()>
    where
        F: FnMut(&Config) -> Result<f64>,
    {
        self.optimize_pruned(n_trials, |cfg, _| objective(cfg))
    }

    /// Runs `n_trials` more trials of an objective that reports its learning curve to a
    /// [`Reporter`] and stops when it answers [`crate::tune::Decision::Prune`]; the trial is
    /// then recorded as pruned with its last reported value, whatever the objective returns.
    /// Without a pruner ([`Study::with_pruner`]) every report answers `Continue`.
    pub fn optimize_pruned<F>(&mut self, n_trials: usize, mut objective: F) -> Result<()>
    where
        F: FnMut(&Config, &mut Reporter<'_>) -> Result<f64>,
    {
        if n_trials == 0 {
            return Err(Error::config("Study", "expected n_trials >= 1, got 0"));
        }
        let sign = self.direction.sign();
        let mut rungs = self.rung_table();
        for _ in 0..n_trials {
            let point = self.suggest()?;
            let config = self.space.config(&point)?;
            let mut reporter = Reporter {
                pruner: self.pruner.as_ref(),
                rungs: &rungs,
                sign,
                curve: Vec::new(),
                passed: Vec::new(),
                pruned: false,
            };
            let result = objective(&config, &mut reporter);
            let (curve, passed, pruned) = (reporter.curve, reporter.passed, reporter.pruned);
            let outcome = match (result, curve.last()) {
                (Err(e), _) => Outcome::Failed {
                    message: e.to_string(),
                },
                (Ok(_), Some(&(step, value))) if pruned => {
                    if value.is_finite() {
                        Outcome::Pruned { step, value }
                    } else {
                        Outcome::Failed {
                            message: format!("non-finite value {value} reported at step {step}"),
                        }
                    }
                }
                (Ok(value), _) if value.is_finite() => Outcome::Complete { value },
                (Ok(value), _) => Outcome::Failed {
                    message: format!("the objective returned {value}"),
                },
            };
            for (k, &v) in passed.iter().enumerate() {
                if rungs.len() <= k {
                    rungs.push(Vec::new());
                }
                rungs[k].push(v);
            }
            self.record(Trial {
                number: self.trials.len(),
                config,
                point,
                outcome,
                curve,
                rungs: passed,
            });
        }
        Ok(())
    }

    /// The next point from the sampler, checked (any sampler may be plugged in).
    fn suggest(&mut self) -> Result<Vec<f64>> {
        let dims = self.space.len();
        let point = self.sampler.suggest(dims, &self.history)?;
        if point.len() != dims || point.iter().any(|u| !(0.0..=1.0).contains(u)) {
            return Err(Error::config(
                "Study",
                format!("the sampler must return {dims} coordinates in [0, 1], got {point:?}"),
            ));
        }
        Ok(point)
    }

    /// Appends a finished trial (and its observation when complete).
    pub(crate) fn record(&mut self, trial: Trial) {
        if let Outcome::Complete { value } = trial.outcome {
            self.history.push(Observation {
                point: trial.point.clone(),
                value: self.direction.sign() * value,
            });
        }
        self.trials.push(trial);
    }

    /// `table[k]`: the values every trial so far recorded at rung `k`.
    fn rung_table(&self) -> Vec<Vec<f64>> {
        let mut table: Vec<Vec<f64>> = Vec::new();
        for t in &self.trials {
            for (k, &v) in t.rungs.iter().enumerate() {
                if table.len() <= k {
                    table.push(Vec::new());
                }
                table[k].push(v);
            }
        }
        table
    }
}
