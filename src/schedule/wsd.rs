//! Warmup-stable-decay (WSD), the LLM pretraining schedule (MiniCPM).

use super::{check_lr, check_unit, LrSchedule};
use crate::{Error, Result};

const BLOCK: &str = "Wsd";

/// The shape of the final decay of a [`Wsd`] schedule, as a function of the decay progress
/// $p \in [0, 1]$.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WsdDecay {
    /// $1 - p$.
    #[default]
    Linear,
    /// $(1 + \cos \pi p) / 2$.
    Cosine,
    /// $1 - \sqrt{p}$: drops fast then flattens; Hägele et al. 2024 found it matches a full
    /// cosine run with a short cooldown.
    OneMinusSqrt,
}

/// Configuration of [`Wsd`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WsdConfig {
    /// The plateau ("stable") rate.
    pub peak_lr: f64,
    /// Linear warmup from 0 to `peak_lr`.
    pub warmup_steps: usize,
    /// Steps held at `peak_lr` after the warmup.
    pub stable_steps: usize,
    /// Steps of the final decay.
    pub decay_steps: usize,
    /// The decay ends at `min_lr_ratio · peak_lr` and stays there (default 0).
    pub min_lr_ratio: f64,
    /// Shape of the decay (default linear).
    pub decay: WsdDecay,
}

impl WsdConfig {
    /// Explicit phase lengths, decaying linearly to 0.
    pub fn new(peak_lr: f64, warmup_steps: usize, stable_steps: usize, decay_steps: usize) -> Self {
        Self {
            peak_lr,
            warmup_steps,
            stable_steps,
            decay_steps,
            min_lr_ratio: 0.0,
            decay: WsdDecay::Linear,
        }
    }

    /// A run of `total_steps` whose last `decay_fraction` (rounded to whole steps) decays; the
    /// rest after the warmup is stable. Errors when warmup and decay do not fit in the run.
    pub fn from_fraction(
        peak_lr: f64,
        total_steps: usize,
        warmup_steps: usize,
        decay_fraction: f64,
    ) -> Result<Self> {
        check_unit(BLOCK, "decay_fraction", decay_fraction)?;
        let decay_steps = (decay_fraction * total_steps as f64).round() as usize;
        if warmup_steps + decay_steps > total_steps {
            return Err(Error::config(
                BLOCK,
                format!(
                    "warmup ({warmup_steps}) + decay ({decay_steps}) steps exceed total_steps \
                     ({total_steps})"
                ),
            ));
        }
        Ok(Self::new(
            peak_lr,
            warmup_steps,
            total_steps - warmup_steps - decay_steps,
            decay_steps,
        ))
    }

    /// Sets [`WsdConfig::decay`].
    pub fn with_decay(mut self, decay: WsdDecay) -> Self {
        self.decay = decay;
        self
    }

    /// Sets [`WsdConfig::min_lr_ratio`].
    pub fn with_min_lr_ratio(mut self, ratio: f64) -> Self {
        self.min_lr_ratio = ratio;
        self
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check_lr(BLOCK, "peak_lr", self.peak_lr)?;
        check_unit(BLOCK, "min_lr_ratio", self.min_lr_ratio)
    }
}

/// Warmup-stable-decay: linear warmup to `peak_lr`, a long constant plateau, then a short
/// decay to `min_lr_ratio · peak_lr`. The plateau's checkpoints can be branched into a decay at
/// any time, so one run serves several training lengths.
///
/// Exactly the multiplier of Hugging Face transformers' `get_wsd_schedule` (with
/// `num_cycles = 0.5`) times `peak_lr`: warmup $t / \max(1, W)$, decay progress
/// $p = (t - W - S) / \max(1, D)$, value $r + (1 - r) f(p)$, then $r$ after the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wsd {
    cfg: WsdConfig,
}

impl Wsd {
    /// Validates `cfg`.
    pub fn new(cfg: WsdConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { cfg })
    }

    /// The configuration.
    pub fn config(&self) -> &WsdConfig {
        &self.cfg
    }

    /// Total length: warmup + stable + decay steps.
    pub fn total_steps(&self) -> usize {
        self.cfg.warmup_steps + self.cfg.stable_steps + self.cfg.decay_steps
    }
}

impl LrSchedule for Wsd {
    fn lr(&self, step: usize) -> f64 {
        let c = &self.cfg;
        let r = c.min_lr_ratio;
        let factor = if step < c.warmup_steps {
            step as f64 / c.warmup_steps.max(1) as f64
        } else if step < c.warmup_steps + c.stable_steps {
            1.0
        } else if step < self.total_steps() {
            let p = (step - c.warmup_steps - c.stable_steps) as f64 / c.decay_steps.max(1) as f64;
            let v = match c.decay {
                WsdDecay::Linear => 1.0 - p,
                WsdDecay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
                WsdDecay::OneMinusSqrt => 1.0 - p.sqrt(),
            };
            (v * (1.0 - r) + r).max(0.0)
        } else {
            r
        };
        c.peak_lr * factor
    }
}
