//! Reduce the learning rate when a monitored metric stops improving (torch `ReduceLROnPlateau`).

use std::collections::HashMap;

use candle_core::Tensor;
use candle_nn::Optimizer;

use super::{check_lr, read_count, read_scalar, scalar};
use crate::{Error, Result};

const BLOCK: &str = "ReduceLrOnPlateau";

/// Whether the monitored metric should go down (a loss) or up (an accuracy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlateauMode {
    /// Lower is better (default).
    #[default]
    Min,
    /// Higher is better.
    Max,
}

/// How `threshold` defines a significant improvement over the best value so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThresholdMode {
    /// Relative: better than `best · (1 ∓ threshold)` (default).
    #[default]
    Rel,
    /// Absolute: better than `best ∓ threshold`.
    Abs,
}

/// Configuration of [`ReduceLrOnPlateau`]; the defaults are torch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlateauConfig {
    /// Minimise or maximise the metric (default min).
    pub mode: PlateauMode,
    /// Multiplier applied on a plateau, in `(0, 1)` (default 0.1).
    pub factor: f64,
    /// Steps without improvement tolerated; the rate drops on the next one (default 10).
    pub patience: usize,
    /// Minimum significant improvement (default 1e-4).
    pub threshold: f64,
    /// Relative or absolute threshold (default relative).
    pub threshold_mode: ThresholdMode,
    /// Steps after a reduction during which bad steps are not counted (default 0).
    pub cooldown: usize,
    /// The rate never goes below this (default 0).
    pub min_lr: f64,
    /// A reduction smaller than this is skipped (default 1e-8).
    pub eps: f64,
}

impl Default for PlateauConfig {
    fn default() -> Self {
        Self {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        }
    }
}

impl PlateauConfig {
    /// Sets [`PlateauConfig::mode`].
    pub fn with_mode(mut self, mode: PlateauMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets [`PlateauConfig::factor`].
    pub fn with_factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Sets [`PlateauConfig::patience`].
    pub fn with_patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }

    /// Sets [`PlateauConfig::threshold`] and [`PlateauConfig::threshold_mode`].
    pub fn with_threshold(mut self, threshold: f64, mode: ThresholdMode) -> Self {
        self.threshold = threshold;
        self.threshold_mode = mode;
        self
    }

    /// Sets [`PlateauConfig::cooldown`].
    pub fn with_cooldown(mut self, cooldown: usize) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Sets [`PlateauConfig::min_lr`].
    pub fn with_min_lr(mut self, min_lr: f64) -> Self {
        self.min_lr = min_lr;
        self
    }

    /// Checks the values: `factor` in `(0, 1)`, `threshold`, `min_lr`, `eps` finite and >= 0.
    pub fn validate(&self) -> Result<()> {
        if !(self.factor > 0.0 && self.factor < 1.0) {
            return Err(Error::config(
                BLOCK,
                format!("factor must be in (0, 1), got {}", self.factor),
            ));
        }
        for (name, v) in [
            ("threshold", self.threshold),
            ("min_lr", self.min_lr),
            ("eps", self.eps),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::config(
                    BLOCK,
                    format!("{name} must be finite and >= 0, got {v}"),
                ));
            }
        }
        Ok(())
    }
}

/// Cuts the rate by `factor` once the metric has not improved for more than `patience` steps —
/// torch's `ReduceLROnPlateau` for one parameter group, decision for decision.
///
/// Stateful: call [`ReduceLrOnPlateau::step`] with the metric once per evaluation (usually per
/// epoch). NaN never counts as an improvement.
#[derive(Debug, Clone, PartialEq)]
pub struct ReduceLrOnPlateau {
    cfg: PlateauConfig,
    lr: f64,
    best: f64,
    num_bad_epochs: usize,
    cooldown_counter: usize,
    last_epoch: usize,
}

impl ReduceLrOnPlateau {
    /// Starts at `initial_lr` with no best value yet.
    pub fn new(initial_lr: f64, cfg: PlateauConfig) -> Result<Self> {
        check_lr(BLOCK, "initial_lr", initial_lr)?;
        cfg.validate()?;
        let best = match cfg.mode {
            PlateauMode::Min => f64::INFINITY,
            PlateauMode::Max => f64::NEG_INFINITY,
        };
        Ok(Self {
            cfg,
            lr: initial_lr,
            best,
            num_bad_epochs: 0,
            cooldown_counter: 0,
            last_epoch: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PlateauConfig {
        &self.cfg
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// The best metric seen so far (±∞ before the first step).
    pub fn best(&self) -> f64 {
        self.best
    }

    /// Steps since the last improvement, as counted by torch.
    pub fn num_bad_epochs(&self) -> usize {
        self.num_bad_epochs
    }

    fn is_better(&self, a: f64) -> bool {
        let (best, th) = (self.best, self.cfg.threshold);
        match (self.cfg.mode, self.cfg.threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => a < best * (1.0 - th),
            (PlateauMode::Min, ThresholdMode::Abs) => a < best - th,
            (PlateauMode::Max, ThresholdMode::Rel) => a > best * (th + 1.0),
            (PlateauMode::Max, ThresholdMode::Abs) => a > best + th,
        }
    }

    /// Records one metric value and returns the learning rate to use from now on.
    pub fn step(&mut self, metric: f64) -> f64 {
        self.last_epoch += 1;
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.cfg.patience {
            let new_lr = (self.lr * self.cfg.factor).max(self.cfg.min_lr);
            if self.lr - new_lr > self.cfg.eps {
                self.lr = new_lr;
            }
            self.cooldown_counter = self.cfg.cooldown;
            self.num_bad_epochs = 0;
        }
        self.lr
    }

    /// [`ReduceLrOnPlateau::step`], then sets the optimizer's rate; returns it.
    pub fn step_optimizer<O: Optimizer>(&mut self, metric: f64, opt: &mut O) -> f64 {
        let lr = self.step(metric);
        opt.set_learning_rate(lr);
        lr
    }

    /// The state as 0-d f64 tensors under `plateau.lr`, `plateau.best`,
    /// `plateau.num_bad_epochs`, `plateau.cooldown_counter` and `plateau.last_epoch` (counts are
    /// exact in f64 up to $2^{53}$), so it can share a safetensors file with the optimizer state.
    pub fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        let mut m = HashMap::new();
        m.insert("plateau.lr".to_string(), scalar(self.lr)?);
        m.insert("plateau.best".to_string(), scalar(self.best)?);
        m.insert(
            "plateau.num_bad_epochs".to_string(),
            scalar(self.num_bad_epochs as f64)?,
        );
        m.insert(
            "plateau.cooldown_counter".to_string(),
            scalar(self.cooldown_counter as f64)?,
        );
        m.insert(
            "plateau.last_epoch".to_string(),
            scalar(self.last_epoch as f64)?,
        );
        Ok(m)
    }

    /// Restores a [`ReduceLrOnPlateau::state_dict`]; the configuration stays this one's.
    /// Errors naming the key when one is missing, not a scalar, or not a valid count.
    pub fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let lr = read_scalar(BLOCK, state, "plateau.lr")?;
        check_lr(BLOCK, "plateau.lr", lr)?;
        let best = read_scalar(BLOCK, state, "plateau.best")?;
        let num_bad_epochs = read_count(BLOCK, state, "plateau.num_bad_epochs")?;
        let cooldown_counter = read_count(BLOCK, state, "plateau.cooldown_counter")?;
        let last_epoch = read_count(BLOCK, state, "plateau.last_epoch")?;
        *self = Self {
            cfg: self.cfg,
            lr,
            best,
            num_bad_epochs,
            cooldown_counter,
            last_epoch,
        };
        Ok(())
    }
}
