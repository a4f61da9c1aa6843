//! One-cycle with explicit phase boundaries (optax `piecewise_interpolate_schedule`,
//! `linear_onecycle_schedule`, `cosine_onecycle_schedule`).

use super::{check_lr, check_unit, Anneal, LrSchedule};
use crate::{Error, Result};

const BLOCK: &str = "PhasedOneCycle";

/// A rate that moves through explicit phases: from `init_lr` at step 0 to `phases[0].1` at
/// step `phases[0].0`, then to `phases[1].1` at step `phases[1].0`, and so on, each phase
/// linear or half-cosine ([`Anneal`]); after the last boundary the rate holds its last value.
///
/// This is optax's `piecewise_interpolate_schedule`, so optax's one-cycles are expressible
/// exactly: [`PhasedOneCycle::linear_onecycle`] (up, down, then a final anneal, fastai's
/// original three phases) and [`PhasedOneCycle::cosine_onecycle`]. Where [`super::OneCycle`]
/// (torch `OneCycleLR`) places its boundaries at fractional steps `pct_start · total - 1` and
/// reaches the final rate at step `total - 1`, optax rounds the boundaries down to whole steps
/// and reaches the final rate at step `total`; the two differ by about one step.
///
/// For step $t$ in phase $k$ (between boundaries $b_k \le t < b_{k+1}$, with $b_0 = 0$) and
/// $p = (t - b_k) / (b_{k+1} - b_k)$: linear $\eta_t = (v_{k+1} - v_k) \thinspace p + v_k$,
/// cosine $\eta_t = v_{k+1} + (v_k - v_{k+1}) (1 + \cos \pi p) / 2$.
///
/// ```
/// use candle_tricks::schedule::{Anneal, LrSchedule, PhasedOneCycle};
/// # fn main() -> candle_tricks::Result<()> {
/// // optax.linear_onecycle_schedule(1000, 0.1): up at 300, back down at 850, final at 1000.
/// let s = PhasedOneCycle::linear_onecycle(1000, 0.1, 0.3, 0.85, 25.0, 1e4)?;
/// assert_eq!(s.boundaries(), &[0, 300, 850, 1000]);
/// assert_eq!((s.lr(0), s.lr(300)), (0.1 / 25.0, 0.1));
/// assert!((s.lr(1000) - 0.1 / 25.0 / 1e4).abs() < 1e-20 && s.lr(5000) == s.lr(1000));
/// // Any phases: warm up to 1e-3 by step 100, hold, cosine down to 0 by step 1000.
/// let custom = PhasedOneCycle::new(0.0, &[(100, 1e-3), (400, 1e-3), (1000, 0.0)], Anneal::Cos)?;
/// assert_eq!((custom.lr(100), custom.lr(250), custom.lr(1000)), (1e-3, 1e-3, 0.0));
/// assert!(PhasedOneCycle::new(0.0, &[(100, 1e-3), (100, 0.0)], Anneal::Cos).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PhasedOneCycle {
    /// Phase boundaries, `0` first, strictly increasing.
    bounds: Vec<usize>,
    /// The rate at each boundary (one more than the phases).
    values: Vec<f64>,
    anneal: Anneal,
}

impl PhasedOneCycle {
    /// Starts at `init_lr` and reaches rate `phases[k].1` at step `phases[k].0`; the
    /// boundaries must be > 0 and strictly increasing, the rates finite and >= 0.
    pub fn new(init_lr: f64, phases: &[(usize, f64)], anneal: Anneal) -> Result<Self> {
        check_lr(BLOCK, "init_lr", init_lr)?;
        if phases.is_empty() {
            return Err(Error::config(BLOCK, "needs at least one phase"));
        }
        let mut bounds = vec![0];
        let mut values = vec![init_lr];
        for (k, &(end, lr)) in phases.iter().enumerate() {
            check_lr(BLOCK, &format!("the rate of phase {k}"), lr)?;
            if bounds.last().is_some_and(|&b| end <= b) {
                return Err(Error::config(
                    BLOCK,
                    format!(
                        "phase boundaries must be > 0 and strictly increasing, got {:?}",
                        phases.iter().map(|p| p.0).collect::<Vec<_>>()
                    ),
                ));
            }
            bounds.push(end);
            values.push(lr);
        }
        Ok(Self {
            bounds,
            values,
            anneal,
        })
    }

    /// optax's `linear_onecycle_schedule(transition_steps, peak_value, pct_start, pct_final,
    /// div_factor, final_div_factor)` (optax's defaults: 0.3, 0.85, 25, 1e4): linear from
    /// `peak / div_factor` up to `peak` at step `⌊pct_start · T⌋`, back down to
    /// `peak / div_factor` at `⌊pct_final · T⌋`, then down to that `/ final_div_factor` at
    /// `T`. optax silently merges boundaries that round to the same step; here that is an error.
    pub fn linear_onecycle(
        transition_steps: usize,
        peak_value: f64,
        pct_start: f64,
        pct_final: f64,
        div_factor: f64,
        final_div_factor: f64,
    ) -> Result<Self> {
        Self::optax(
            Anneal::Linear,
            transition_steps,
            peak_value,
            &[
                (pct_start, div_factor),
                (pct_final, 1.0 / div_factor),
                (1.0, 1.0 / final_div_factor),
            ],
            &[div_factor, final_div_factor],
        )
    }

    /// optax's `cosine_onecycle_schedule(transition_steps, peak_value, pct_start, div_factor,
    /// final_div_factor)` (optax's defaults: 0.3, 25, 1e4): half-cosine from
    /// `peak / div_factor` up to `peak` at step `⌊pct_start · T⌋`, then down to
    /// `peak / (div_factor · final_div_factor)` at `T`.
    pub fn cosine_onecycle(
        transition_steps: usize,
        peak_value: f64,
        pct_start: f64,
        div_factor: f64,
        final_div_factor: f64,
    ) -> Result<Self> {
        Self::optax(
            Anneal::Cos,
            transition_steps,
            peak_value,
            &[
                (pct_start, div_factor),
                (1.0, 1.0 / (div_factor * final_div_factor)),
            ],
            &[div_factor, final_div_factor],
        )
    }

    /// optax's construction: boundaries `⌊pct · T⌋` with multiplicative scales, the rates
    /// their running product from `peak / div_factor` (the same float operations as optax).
    fn optax(
        anneal: Anneal,
        transition_steps: usize,
        peak_value: f64,
        pct_and_scale: &[(f64, f64)],
        factors: &[f64; 2],
    ) -> Result<Self> {
        check_lr(BLOCK, "peak_value", peak_value)?;
        if transition_steps == 0 {
            return Err(Error::config(BLOCK, "transition_steps must be > 0, got 0"));
        }
        for (name, v) in ["div_factor", "final_div_factor"].into_iter().zip(factors) {
            if !(v.is_finite() && *v > 0.0) {
                return Err(Error::config(
                    BLOCK,
                    format!("{name} must be finite and > 0, got {v}"),
                ));
            }
        }
        let names = ["pct_start", "pct_final"];
        for (name, &(pct, _)) in names.iter().zip(pct_and_scale) {
            check_unit(BLOCK, name, pct)?;
        }
        let t = transition_steps as f64;
        let init = peak_value / factors[0];
        let mut lr = init;
        let mut phases = Vec::with_capacity(pct_and_scale.len());
        for &(pct, scale) in pct_and_scale {
            lr *= scale;
            // In [0, T] since pct is in [0, 1]: the cast cannot saturate.
            phases.push(((pct * t) as usize, lr));
        }
        Self::new(init, &phases, anneal)
    }

    /// The phase boundaries (step 0 first).
    pub fn boundaries(&self) -> &[usize] {
        &self.bounds
    }
}

impl LrSchedule for PhasedOneCycle {
    fn lr(&self, step: usize) -> f64 {
        let k = self.bounds.partition_point(|&b| b <= step);
        if k == self.bounds.len() {
            return self.values[k - 1];
        }
        let (b0, b1) = (self.bounds[k - 1], self.bounds[k]);
        let pct = (step - b0) as f64 / (b1 - b0) as f64;
        self.anneal.apply(self.values[k - 1], self.values[k], pct)
    }
}
