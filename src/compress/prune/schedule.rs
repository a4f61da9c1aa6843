//! [`GradualPruning`]: the cubic sparsity schedule of Zhu & Gupta (2017).

use crate::{Error, Result};

const BLOCK: &str = "GradualPruning";

/// The hyper-parameters of [`GradualPruning`]: sparsity rises from `initial_sparsity` at
/// `begin_step` to `final_sparsity` at `begin_step + num_updates · frequency`, updated every
/// `frequency` steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradualPruningConfig {
    /// $s_i$, the sparsity set at `begin_step`, in $[0, 1)$.
    pub initial_sparsity: f64,
    /// $s_f$, the sparsity reached at the end, in $[s_i, 1)$.
    pub final_sparsity: f64,
    /// $t_0$, the first pruning step.
    pub begin_step: usize,
    /// $n$, the number of updates after the first one (at least 1).
    pub num_updates: usize,
    /// $\Delta t$, the steps between updates (at least 1).
    pub frequency: usize,
}

impl Default for GradualPruningConfig {
    /// 0 → 80 % in 10 updates 100 steps apart, starting at step 0.
    fn default() -> Self {
        Self {
            initial_sparsity: 0.0,
            final_sparsity: 0.8,
            begin_step: 0,
            num_updates: 10,
            frequency: 100,
        }
    }
}

impl GradualPruningConfig {
    /// Sets $s_i$.
    pub fn with_initial_sparsity(mut self, s: f64) -> Self {
        self.initial_sparsity = s;
        self
    }
    /// Sets $s_f$.
    pub fn with_final_sparsity(mut self, s: f64) -> Self {
        self.final_sparsity = s;
        self
    }
    /// Sets $t_0$.
    pub fn with_begin_step(mut self, t0: usize) -> Self {
        self.begin_step = t0;
        self
    }
    /// Sets $n$.
    pub fn with_num_updates(mut self, n: usize) -> Self {
        self.num_updates = n;
        self
    }
    /// Sets $\Delta t$.
    pub fn with_frequency(mut self, dt: usize) -> Self {
        self.frequency = dt;
        self
    }

    /// Checks the ranges (sparsities in $[0, 1)$ with $s_i \le s_f$, $n, \Delta t \ge 1$, the last
    /// step representable).
    pub fn validate(&self) -> Result<()> {
        for (name, s) in [
            ("initial_sparsity", self.initial_sparsity),
            ("final_sparsity", self.final_sparsity),
        ] {
            if !(0.0..1.0).contains(&s) {
                return Err(Error::config(
                    BLOCK,
                    format!("{name} must be in [0, 1), got {s}"),
                ));
            }
        }
        if self.initial_sparsity > self.final_sparsity {
            return Err(Error::config(
                BLOCK,
                format!(
                    "initial_sparsity ({}) must not exceed final_sparsity ({})",
                    self.initial_sparsity, self.final_sparsity
                ),
            ));
        }
        crate::check::positive(BLOCK, "num_updates", self.num_updates)?;
        crate::check::positive(BLOCK, "frequency", self.frequency)?;
        self.num_updates
            .checked_mul(self.frequency)
            .and_then(|d| d.checked_add(self.begin_step))
            .ok_or_else(|| {
                Error::config(
                    BLOCK,
                    "begin_step + num_updates * frequency overflows usize",
                )
            })?;
        Ok(())
    }
}

/// The gradual pruning schedule of Zhu & Gupta (2017):
/// $s_t = s_f + (s_i - s_f)\thinspace(1 - (t - t_0) / (n \Delta t))^3$ at the update steps
/// $t = t_0, t_0 + \Delta t, \dots, t_0 + n \Delta t$; the sparsity holds between updates, is 0
/// before $t_0$ and $s_f$ after the last update.
///
/// Drive a [`super::Pruner`] with it:
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use candle_tricks::compress::prune::{GradualPruning, GradualPruningConfig, Pruner};
/// # fn main() -> candle_tricks::Result<()> {
/// let w = Var::from_tensor(&Tensor::arange(1f32, 101., &Device::Cpu)?)?;
/// let mut pruner = Pruner::new([("w", w)])?;
/// let cfg = GradualPruningConfig::default()
///     .with_final_sparsity(0.9)
///     .with_num_updates(4)
///     .with_frequency(10);
/// let schedule = GradualPruning::new(cfg)?;
/// for step in 0..100 {
///     // ... forward, backward, opt.step(), pruner.apply() ...
///     if let Some(s) = schedule.update_at(step) {
///         pruner.global_unstructured(s)?;
///     }
/// }
/// assert_eq!(pruner.sparsity()?.zeros, 90);
/// // The cubic front-loads the pruning: after the first of four intervals, 90 · (1 - 0.75³) %.
/// assert!((schedule.sparsity_at(10) - 0.9 * (1.0 - 0.75f64.powi(3))).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradualPruning {
    cfg: GradualPruningConfig,
}

impl GradualPruning {
    /// The schedule of `cfg` (validated).
    pub fn new(cfg: GradualPruningConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { cfg })
    }

    /// The configuration.
    pub fn config(&self) -> &GradualPruningConfig {
        &self.cfg
    }

    /// The step of the last update, $t_0 + n \Delta t$.
    pub fn end_step(&self) -> usize {
        // Checked in `validate`.
        self.cfg.begin_step + self.cfg.num_updates * self.cfg.frequency
    }

    /// Whether `step` is one of the $n + 1$ update steps.
    pub fn is_update_step(&self, step: usize) -> bool {
        step >= self.cfg.begin_step
            && step <= self.end_step()
            && (step - self.cfg.begin_step).is_multiple_of(self.cfg.frequency)
    }

    /// The target sparsity in force at `step`: that of the latest update step at or before it
    /// (0 before $t_0$).
    pub fn sparsity_at(&self, step: usize) -> f64 {
        let c = &self.cfg;
        if step < c.begin_step {
            return 0.0;
        }
        let updates_done = ((step - c.begin_step) / c.frequency).min(c.num_updates);
        let progress = updates_done as f64 / c.num_updates as f64;
        // The formula as a blend of the two ends, so they come out exact.
        let w = (1.0 - progress).powi(3);
        c.initial_sparsity * w + c.final_sparsity * (1.0 - w)
    }

    /// The new target sparsity when `step` is an update step, else `None`.
    pub fn update_at(&self, step: usize) -> Option<f64> {
        self.is_update_step(step).then(|| self.sparsity_at(step))
    }
}
