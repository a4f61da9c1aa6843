//! The one-cycle policy (Smith 2018; torch `OneCycleLR`), with its momentum cycle.

use super::{check_lr, check_unit, LrSchedule};
use crate::{Error, Result};

const BLOCK: &str = "OneCycle";

/// How a one-cycle phase moves between its two end values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Anneal {
    /// Half a cosine: `end + (start - end) (1 + cos(π p)) / 2` (torch `"cos"`, the default).
    #[default]
    Cos,
    /// A straight line: `start + (end - start) p` (torch `"linear"`).
    Linear,
}

impl Anneal {
    /// The value a fraction `pct` of the way from `start` to `end`.
    pub(super) fn apply(self, start: f64, end: f64, pct: f64) -> f64 {
        match self {
            Anneal::Cos => end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0),
            Anneal::Linear => (end - start) * pct + start,
        }
    }
}

/// Configuration of [`OneCycle`]; the defaults are torch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneCycleConfig {
    /// Peak learning rate.
    pub max_lr: f64,
    /// Length of the cycle in steps.
    pub total_steps: usize,
    /// Fraction of the cycle spent rising to `max_lr` (default 0.3).
    pub pct_start: f64,
    /// Cosine or linear phases (default cosine).
    pub anneal: Anneal,
    /// The start rate is `max_lr / div_factor` (default 25).
    pub div_factor: f64,
    /// The final rate is the start rate `/ final_div_factor` (default 1e4).
    pub final_div_factor: f64,
    /// Three phases — up, back down to the start rate symmetrically, then the final
    /// annihilation — as in fastai's original; default false (two phases).
    pub three_phase: bool,
    /// Whether to cycle the momentum inversely to the rate (default true).
    pub cycle_momentum: bool,
    /// Momentum at the peak rate (default 0.85).
    pub base_momentum: f64,
    /// Momentum at the start and end (default 0.95).
    pub max_momentum: f64,
}

impl OneCycleConfig {
    /// torch's defaults for a cycle of `total_steps` peaking at `max_lr`.
    pub fn new(max_lr: f64, total_steps: usize) -> Self {
        Self {
            max_lr,
            total_steps,
            pct_start: 0.3,
            anneal: Anneal::Cos,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
        }
    }

    /// Sets [`OneCycleConfig::pct_start`].
    pub fn with_pct_start(mut self, pct_start: f64) -> Self {
        self.pct_start = pct_start;
        self
    }

    /// Sets [`OneCycleConfig::anneal`].
    pub fn with_anneal(mut self, anneal: Anneal) -> Self {
        self.anneal = anneal;
        self
    }

    /// Sets [`OneCycleConfig::div_factor`] and [`OneCycleConfig::final_div_factor`].
    pub fn with_div_factors(mut self, div_factor: f64, final_div_factor: f64) -> Self {
        self.div_factor = div_factor;
        self.final_div_factor = final_div_factor;
        self
    }

    /// Sets [`OneCycleConfig::three_phase`].
    pub fn with_three_phase(mut self, three_phase: bool) -> Self {
        self.three_phase = three_phase;
        self
    }

    /// Sets the momentum range (`base_momentum` at the peak rate, `max_momentum` at the ends).
    pub fn with_momentum(mut self, base_momentum: f64, max_momentum: f64) -> Self {
        self.cycle_momentum = true;
        self.base_momentum = base_momentum;
        self.max_momentum = max_momentum;
        self
    }

    /// Leaves the optimizer's momentum alone ([`LrSchedule::momentum`] returns `None`).
    pub fn without_momentum(mut self) -> Self {
        self.cycle_momentum = false;
        self
    }

    /// Checks every value; the phase lengths must be positive (torch divides by them).
    pub fn validate(&self) -> Result<()> {
        check_lr(BLOCK, "max_lr", self.max_lr)?;
        if self.total_steps == 0 {
            return Err(Error::config(BLOCK, "total_steps must be > 0, got 0"));
        }
        check_unit(BLOCK, "pct_start", self.pct_start)?;
        for (name, v) in [
            ("div_factor", self.div_factor),
            ("final_div_factor", self.final_div_factor),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::config(
                    BLOCK,
                    format!("{name} must be finite and > 0, got {v}"),
                ));
            }
        }
        if self.cycle_momentum {
            check_unit(BLOCK, "base_momentum", self.base_momentum)?;
            check_unit(BLOCK, "max_momentum", self.max_momentum)?;
        }
        let t = self.total_steps as f64;
        let up = self.pct_start * t - 1.0;
        let lens = if self.three_phase {
            [up, up, t - 1.0 - (2.0 * self.pct_start * t - 2.0)]
        } else {
            [up, t - 1.0 - up, 1.0]
        };
        if lens.iter().any(|&l| l <= 0.0) {
            return Err(Error::config(
                BLOCK,
                format!(
                    "pct_start {} with total_steps {} leaves an empty phase (each phase needs > 1 step)",
                    self.pct_start, self.total_steps
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Phase {
    end_step: f64,
    lr: (f64, f64),
    momentum: (f64, f64),
}

/// The one-cycle policy: the rate rises from `max_lr / div_factor` to `max_lr` over
/// `pct_start` of the run, then anneals to `max_lr / (div_factor · final_div_factor)`; the
/// momentum moves the other way (high when the rate is low). torch's `OneCycleLR`, step by step.
///
/// Steps `0..total_steps` follow torch exactly. torch evaluates one step more (extrapolating the
/// last phase, which the linear strategy can push below zero) and raises after that; here every
/// step $\ge$ `total_steps` holds the final rate and momentum.
#[derive(Debug, Clone, PartialEq)]
pub struct OneCycle {
    cfg: OneCycleConfig,
    phases: Vec<Phase>,
}

impl OneCycle {
    /// Validates `cfg` and builds the phases.
    pub fn new(cfg: OneCycleConfig) -> Result<Self> {
        cfg.validate()?;
        let initial = cfg.max_lr / cfg.div_factor;
        let min = initial / cfg.final_div_factor;
        let t = cfg.total_steps as f64;
        let (bm, mm) = (cfg.base_momentum, cfg.max_momentum);
        let phases = if cfg.three_phase {
            vec![
                Phase {
                    end_step: cfg.pct_start * t - 1.0,
                    lr: (initial, cfg.max_lr),
                    momentum: (mm, bm),
                },
                Phase {
                    end_step: 2.0 * cfg.pct_start * t - 2.0,
                    lr: (cfg.max_lr, initial),
                    momentum: (bm, mm),
                },
                Phase {
                    end_step: t - 1.0,
                    lr: (initial, min),
                    momentum: (mm, mm),
                },
            ]
        } else {
            vec![
                Phase {
                    end_step: cfg.pct_start * t - 1.0,
                    lr: (initial, cfg.max_lr),
                    momentum: (mm, bm),
                },
                Phase {
                    end_step: t - 1.0,
                    lr: (cfg.max_lr, min),
                    momentum: (bm, mm),
                },
            ]
        };
        Ok(Self { cfg, phases })
    }

    /// The configuration.
    pub fn config(&self) -> &OneCycleConfig {
        &self.cfg
    }

    /// `(lr, momentum)` at `step`.
    fn eval(&self, step: usize) -> (f64, f64) {
        let step = step.min(self.cfg.total_steps - 1) as f64;
        let mut start = 0.0;
        let last = self.phases.len() - 1;
        for (i, p) in self.phases.iter().enumerate() {
            if step <= p.end_step || i == last {
                let pct = (step - start) / (p.end_step - start);
                let a = self.cfg.anneal;
                return (
                    a.apply(p.lr.0, p.lr.1, pct),
                    a.apply(p.momentum.0, p.momentum.1, pct),
                );
            }
            start = p.end_step;
        }
        // Unreachable: the last phase always matches.
        (self.phases[last].lr.1, self.phases[last].momentum.1)
    }
}

impl LrSchedule for OneCycle {
    fn lr(&self, step: usize) -> f64 {
        self.eval(step).0
    }

    fn momentum(&self, step: usize) -> Option<f64> {
        self.cfg.cycle_momentum.then(|| self.eval(step).1)
    }
}
