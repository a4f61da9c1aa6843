//! Cyclical learning rates (Smith 2017; torch `CyclicLR`), with the momentum cycling the other
//! way.

use std::sync::Arc;

use super::{check_gamma, check_lr, check_unit, LrSchedule};
use crate::{Error, Result};

const BLOCK: &str = "CyclicLr";

/// What the amplitude of each cycle does over the run (torch's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum CyclicMode {
    /// The same amplitude every cycle (torch `"triangular"`, the default).
    #[default]
    Triangular,
    /// The amplitude halves each cycle (torch `"triangular2"`).
    Triangular2,
    /// The amplitude is scaled by $\gamma^t$ at step $t$ (torch `"exp_range"`); `gamma` must be
    /// finite and > 0 (it is normally just below 1).
    ExpRange {
        /// The per-step decay of the amplitude.
        gamma: f64,
    },
}

/// What a custom scale function is evaluated at (torch's `scale_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScaleMode {
    /// The 1-based cycle number (torch `"cycle"`, the default).
    #[default]
    Cycle,
    /// The step (torch `"iterations"`).
    Iterations,
}

/// A custom amplitude scale: `f(x)` with `x` the cycle number or the step ([`ScaleMode`]).
pub type ScaleFn = Arc<dyn Fn(f64) -> f64 + Send + Sync>;

/// Configuration of [`CyclicLr`]; the defaults are torch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CyclicLrConfig {
    /// The rate at the start of each cycle (the lower bound).
    pub base_lr: f64,
    /// The rate at the top of the first cycle (the upper bound).
    pub max_lr: f64,
    /// Steps from `base_lr` up to the peak (torch default 2000).
    pub step_size_up: usize,
    /// Steps from the peak back down; `None` (default) is `step_size_up`, a symmetric triangle.
    pub step_size_down: Option<usize>,
    /// How the amplitude changes from cycle to cycle (default [`CyclicMode::Triangular`]).
    pub mode: CyclicMode,
    /// Whether to cycle the momentum inversely to the rate (default true).
    pub cycle_momentum: bool,
    /// Momentum at the peak rate (default 0.8).
    pub base_momentum: f64,
    /// Momentum at the base rate (default 0.9).
    pub max_momentum: f64,
}

impl CyclicLrConfig {
    /// torch's defaults between `base_lr` and `max_lr`, with `step_size_up` steps up and as
    /// many down.
    pub fn new(base_lr: f64, max_lr: f64, step_size_up: usize) -> Self {
        Self {
            base_lr,
            max_lr,
            step_size_up,
            step_size_down: None,
            mode: CyclicMode::Triangular,
            cycle_momentum: true,
            base_momentum: 0.8,
            max_momentum: 0.9,
        }
    }

    /// Sets [`CyclicLrConfig::step_size_down`] (an asymmetric cycle).
    pub fn with_step_size_down(mut self, step_size_down: usize) -> Self {
        self.step_size_down = Some(step_size_down);
        self
    }

    /// Sets [`CyclicLrConfig::mode`].
    pub fn with_mode(mut self, mode: CyclicMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the momentum range (`base_momentum` at the peak rate, `max_momentum` at the base).
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

    /// Checks every value. Unlike torch, `base_lr > max_lr` is an error (torch runs the cycle
    /// upside down; it is almost always two swapped arguments).
    pub fn validate(&self) -> Result<()> {
        check_lr(BLOCK, "base_lr", self.base_lr)?;
        check_lr(BLOCK, "max_lr", self.max_lr)?;
        if self.base_lr > self.max_lr {
            return Err(Error::config(
                BLOCK,
                format!(
                    "base_lr must be <= max_lr, got base_lr {} > max_lr {}",
                    self.base_lr, self.max_lr
                ),
            ));
        }
        if self.step_size_up == 0 {
            return Err(Error::config(BLOCK, "step_size_up must be > 0, got 0"));
        }
        if self.step_size_down == Some(0) {
            return Err(Error::config(BLOCK, "step_size_down must be > 0, got 0"));
        }
        if let CyclicMode::ExpRange { gamma } = self.mode {
            check_gamma(BLOCK, gamma)?;
        }
        if self.cycle_momentum {
            check_unit(BLOCK, "base_momentum", self.base_momentum)?;
            check_unit(BLOCK, "max_momentum", self.max_momentum)?;
        }
        Ok(())
    }
}

/// Cyclical learning rates: the rate goes up linearly from `base_lr` to `max_lr` over
/// `step_size_up` steps, back down over `step_size_down`, and repeats, the amplitude scaled per
/// cycle or per step by the [`CyclicMode`] (or a custom [`ScaleFn`]). The momentum, if cycled,
/// moves the other way between `max_momentum` and `base_momentum`. torch's `CyclicLR`, step by
/// step.
///
/// With $C = $ `step_size_up + step_size_down`, $r = $ `step_size_up` $/ C$, cycle
/// $c = \lfloor 1 + t / C \rfloor$ and position $x = 1 + t / C - c \in [0, 1)$, the rate is
/// $\eta_t = \eta_{base} + (\eta_{max} - \eta_{base}) \thinspace h(x) \thinspace s$ where
/// $h(x) = x / r$ on the way up and $(1 - x) / (1 - r)$ on the way down, and $s$ is 1
/// (triangular), $2^{1 - c}$ (triangular2) or $\gamma^t$ (exp_range).
///
/// ```
/// use candle_tricks::schedule::{CyclicLr, CyclicLrConfig, CyclicMode, LrSchedule};
/// # fn main() -> candle_tricks::Result<()> {
/// // 10 steps up, 30 down, the amplitude decaying by 0.99 per step.
/// let cfg = CyclicLrConfig::new(1e-3, 1e-2, 10)
///     .with_step_size_down(30)
///     .with_mode(CyclicMode::ExpRange { gamma: 0.99 });
/// let s = CyclicLr::new(cfg)?;
/// assert_eq!(s.cycle_len(), 40);
/// assert_eq!((s.lr(0), s.lr(40)), (1e-3, 1e-3));
/// let peak = |t: i32| 1e-3 + 9e-3 * 0.99f64.powi(t);
/// assert!((s.lr(10) - peak(10)).abs() < 1e-15 && (s.lr(50) - peak(50)).abs() < 1e-15);
/// assert!(s.lr(50) < s.lr(10)); // the second peak is lower
/// // Swapped bounds are refused.
/// assert!(CyclicLr::new(CyclicLrConfig::new(1e-2, 1e-3, 10)).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CyclicLr {
    cfg: CyclicLrConfig,
    scale: Option<(ScaleFn, ScaleMode)>,
}

impl std::fmt::Debug for CyclicLr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CyclicLr")
            .field("cfg", &self.cfg)
            .field("scale_fn", &self.scale.as_ref().map(|(_, mode)| mode))
            .finish()
    }
}

impl CyclicLr {
    /// Validates `cfg`.
    pub fn new(cfg: CyclicLrConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { cfg, scale: None })
    }

    /// Replaces the mode's amplitude scale by `scale_fn`, evaluated at the cycle number or the
    /// step (torch's `scale_fn` and `scale_mode`; `mode` is then ignored, as in torch). A
    /// scale that makes the rate NaN or negative is reported by [`super::Scheduler::step`].
    pub fn with_scale_fn(
        mut self,
        scale_fn: impl Fn(f64) -> f64 + Send + Sync + 'static,
        scale_mode: ScaleMode,
    ) -> Self {
        self.scale = Some((Arc::new(scale_fn), scale_mode));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &CyclicLrConfig {
        &self.cfg
    }

    /// The cycle length in steps.
    pub fn cycle_len(&self) -> usize {
        let up = self.cfg.step_size_up;
        up.saturating_add(self.cfg.step_size_down.unwrap_or(up))
    }

    /// `(height in [0, 1] within the cycle, amplitude scale)` at `step`, computed with torch's
    /// float operations (in its order) so the rates agree to the last bits.
    fn height_parts(&self, step: usize) -> (f64, f64) {
        let up = self.cfg.step_size_up as f64;
        let total = up + self.cfg.step_size_down.map_or(up, |d| d as f64);
        let ratio = up / total;
        let t = step as f64;
        let cycle = (1.0 + t / total).floor();
        let x = 1.0 + t / total - cycle;
        let h = if x <= ratio {
            x / ratio
        } else {
            (x - 1.0) / (ratio - 1.0)
        };
        let scale = match &self.scale {
            Some((f, ScaleMode::Cycle)) => f(cycle),
            Some((f, ScaleMode::Iterations)) => f(t),
            None => match self.cfg.mode {
                CyclicMode::Triangular => 1.0,
                CyclicMode::Triangular2 => 1.0 / 2f64.powf(cycle - 1.0),
                CyclicMode::ExpRange { gamma } => gamma.powf(t),
            },
        };
        (h, scale)
    }
}

impl LrSchedule for CyclicLr {
    fn lr(&self, step: usize) -> f64 {
        let (h, scale) = self.height_parts(step);
        self.cfg.base_lr + (self.cfg.max_lr - self.cfg.base_lr) * h * scale
    }

    fn momentum(&self, step: usize) -> Option<f64> {
        self.cfg.cycle_momentum.then(|| {
            let (h, scale) = self.height_parts(step);
            self.cfg.max_momentum - (self.cfg.max_momentum - self.cfg.base_momentum) * h * scale
        })
    }
}
