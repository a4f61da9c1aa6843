//! The learning-rate range test (Smith 2017; fastai's `lr_find`, `torch-lr-finder`): train for
//! one short run while the learning rate grows from tiny to huge, record the loss against the
//! rate, and read a good rate off the curve.
//!
//! # Shapes
//! - `vars`: every [`Var`] the optimizer updates; their values are restored when the test ends.
//! - the closure gets the iteration's index (to pick its batch) and returns a scalar (rank 0)
//!   loss built from the current values of those `Var`s.
//! - the [`LrRangeCurve`] holds one `(lr, loss, smoothed)` point per completed iteration, at
//!   most `num_iters`.
//!
//! # Tip
//! The range test finds the largest stable learning rate in one short run instead of a grid of
//! full trainings. Iteration $i$ of $N$ trains one batch at
//! $\eta_i = \eta_{0} (\eta_{1} / \eta_{0})^{i/(N-1)}$ (exponential ramp; the linear one is
//! $\eta_{0} + \frac{i}{N-1} (\eta_{1} - \eta_{0})$), so the loss first barely moves (rate too
//! small), then falls fast, then blows up (rate too large). Batch losses are noisy, so the curve
//! is an exponential moving average with bias correction,
//! $a_i = \beta a_{i-1} + (1 - \beta) \ell_i$, $\bar\ell_i = a_i / (1 - \beta^{i+1})$ with
//! $a_{-1} = 0$ and $\beta = 0.98$ (fastai), and the test stops once $\bar\ell_i$ exceeds
//! `diverge_th` times its best value.
//!
//! **Pick a rate a bit below the steepest point**, not at the minimum: at the minimum the loss
//! is already about to diverge. The suggestion here is torch-lr-finder's, the rate where the
//! smoothed loss falls fastest per iteration (the most negative `np.gradient` of the curve,
//! after dropping `skip_start` points at the start and `skip_end` at the end); the documented
//! alternative, fastai's older rule, is a tenth of the rate at the minimum
//! ([`LrRangeCurve::min_loss_lr`] / 10). For one-cycle or warm-up schedules the peak rate sits
//! near the steepest point and the starting rate well below it.
//!
//! Trade-offs: the curve depends on the batch size, the optimizer and the weight decay, so run
//! it with the training setup; it measures the start of training only. The weights are restored
//! exactly afterwards, the optimizer's learning rate too, but not its internal state (Adam's
//! moments, momentum buffers: `candle_nn::Optimizer` cannot save them), so build a fresh
//! optimizer for the real run. A NaN or infinite loss ends the test before it is
//! back-propagated and is reported in [`LrRangeCurve::stop`]. With `bias_correction` off and
//! $\beta = 1 -$ `smooth_f` (the EMA then starts at the first loss), curve, stop and suggestion
//! are torch-lr-finder's `range_test` exactly; `tests/lr_finder.rs` checks both modes and the
//! linear ramp against it.
//!
//! # Example
//! ```
//! use candle_core::{Device, Var};
//! use candle_nn::Optimizer;
//! use candle_tricks::train::lr_finder::{lr_range_test, LrRangeTestConfig, LrStop};
//! # fn main() -> candle_tricks::Result<()> {
//! // Loss (w - 3)²: SGD converges for lr < 1 and diverges above.
//! let w = Var::new(0f32, &Device::Cpu)?;
//! let mut sgd = candle_nn::SGD::new(vec![w.clone()], 0.01)?;
//! let loss = |_i: usize| w.as_tensor().affine(1.0, -3.0)?.sqr();
//! let cfg = LrRangeTestConfig::default().with_start_lr(1e-4).with_end_lr(10.0).with_num_iters(60);
//! let curve = lr_range_test(&[w.clone()], &mut sgd, loss, &cfg)?;
//! assert!(matches!(curve.stop, LrStop::Diverged { .. }));
//! let lr = curve.suggested_lr.expect("enough points");
//! println!("{:?} after {} points, suggested {lr:.3e}", curve.stop, curve.lrs.len());
//! assert!(lr > 1e-2 && lr < 1.0); // a fast rate, below the stability limit
//! assert_eq!(w.to_scalar::<f32>()?, 0.0); // weights restored
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - L. N. Smith, *Cyclical Learning Rates for Training Neural Networks*, WACV 2017, section 3.3
//!   (the LR range test). [arXiv:1506.01186](https://arxiv.org/abs/1506.01186)
//! - fastai's `lr_find` (exponential ramp, $\beta = 0.98$ bias-corrected smoothing) and
//!   `torch-lr-finder` (the steepest-gradient suggestion),
//!   <https://github.com/davidtvs/pytorch-lr-finder>.

use candle_core::{DType, Tensor, Var};
use candle_nn::Optimizer;

use crate::{check, Error, Result};

/// How the learning rate grows from `start_lr` to `end_lr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrRamp {
    /// Geometric: the same ratio every iteration (fastai's and torch-lr-finder's default).
    Exponential,
    /// Arithmetic: the same increment every iteration (Smith's original test).
    Linear,
}

/// Settings of [`lr_range_test`]; `Default` is fastai's `lr_find` with torch-lr-finder's
/// divergence rule and suggestion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrRangeTestConfig {
    /// The first learning rate (finite, > 0). Default 1e-7.
    pub start_lr: f64,
    /// The last learning rate (finite, > `start_lr`). Default 10.
    pub end_lr: f64,
    /// Iterations (batches) of the ramp, the first at `start_lr`, the last at `end_lr` (≥ 2).
    /// Default 100.
    pub num_iters: usize,
    /// The ramp's shape. Default [`LrRamp::Exponential`].
    pub ramp: LrRamp,
    /// Smoothing factor $\beta$ of the loss's moving average, in `[0, 1)` (0: no smoothing).
    /// Default 0.98.
    pub beta: f64,
    /// Divide the average by $1 - \beta^{i+1}$ (fastai); when off, the average starts at the
    /// first loss instead (torch-lr-finder, whose `smooth_f` is $1 - \beta$). Default true.
    pub bias_correction: bool,
    /// Stop once the smoothed loss exceeds this multiple of its best value (finite, > 1).
    /// Default 5.
    pub diverge_th: f64,
    /// Points dropped at the start of the curve before looking for the steepest descent.
    /// Default 10.
    pub skip_start: usize,
    /// Points dropped at the end of the curve before looking for the steepest descent.
    /// Default 5.
    pub skip_end: usize,
}

impl Default for LrRangeTestConfig {
    fn default() -> Self {
        Self {
            start_lr: 1e-7,
            end_lr: 10.0,
            num_iters: 100,
            ramp: LrRamp::Exponential,
            beta: 0.98,
            bias_correction: true,
            diverge_th: 5.0,
            skip_start: 10,
            skip_end: 5,
        }
    }
}

impl LrRangeTestConfig {
    /// Sets the first learning rate.
    pub fn with_start_lr(mut self, lr: f64) -> Self {
        self.start_lr = lr;
        self
    }

    /// Sets the last learning rate.
    pub fn with_end_lr(mut self, lr: f64) -> Self {
        self.end_lr = lr;
        self
    }

    /// Sets the number of iterations.
    pub fn with_num_iters(mut self, n: usize) -> Self {
        self.num_iters = n;
        self
    }

    /// Sets the ramp's shape.
    pub fn with_ramp(mut self, ramp: LrRamp) -> Self {
        self.ramp = ramp;
        self
    }

    /// Sets the smoothing factor $\beta$.
    pub fn with_beta(mut self, beta: f64) -> Self {
        self.beta = beta;
        self
    }

    /// Turns the bias correction of the moving average on or off.
    pub fn with_bias_correction(mut self, on: bool) -> Self {
        self.bias_correction = on;
        self
    }

    /// Sets the divergence threshold.
    pub fn with_diverge_th(mut self, th: f64) -> Self {
        self.diverge_th = th;
        self
    }

    /// Sets how many points the suggestion ignores at the start and at the end of the curve.
    pub fn with_skip(mut self, start: usize, end: usize) -> Self {
        self.skip_start = start;
        self.skip_end = end;
        self
    }

    /// Errors (naming `LrRangeTestConfig`) unless `0 < start_lr < end_lr` (both finite),
    /// `num_iters` ≥ 2, $\beta \in [0, 1)$ and `diverge_th` finite and > 1.
    pub fn validate(&self) -> Result<()> {
        const CFG: &str = "LrRangeTestConfig";
        check::eps(CFG, "start_lr", self.start_lr)?;
        if !(self.end_lr.is_finite() && self.end_lr > self.start_lr) {
            return Err(Error::config(
                CFG,
                format!(
                    "end_lr must be finite and > start_lr ({}), got {}",
                    self.start_lr, self.end_lr
                ),
            ));
        }
        if self.num_iters < 2 {
            return Err(Error::config(
                CFG,
                format!("num_iters must be >= 2, got {}", self.num_iters),
            ));
        }
        if !(0.0..1.0).contains(&self.beta) {
            return Err(Error::config(
                CFG,
                format!("beta must be in [0, 1), got {}", self.beta),
            ));
        }
        if !(self.diverge_th.is_finite() && self.diverge_th > 1.0) {
            return Err(Error::config(
                CFG,
                format!("diverge_th must be finite and > 1, got {}", self.diverge_th),
            ));
        }
        Ok(())
    }

    /// The learning rate of iteration `i` (`0..num_iters`).
    pub fn lr_at(&self, i: usize) -> f64 {
        let r = i as f64 / (self.num_iters - 1) as f64;
        match self.ramp {
            LrRamp::Exponential => self.start_lr * (self.end_lr / self.start_lr).powf(r),
            LrRamp::Linear => self.start_lr + r * (self.end_lr - self.start_lr),
        }
    }
}

/// Why the range test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrStop {
    /// All `num_iters` iterations ran.
    Completed,
    /// The smoothed loss of this iteration (the curve's last point) exceeded `diverge_th` times
    /// its best.
    Diverged {
        /// The iteration's index.
        iteration: usize,
    },
    /// This iteration's loss was NaN or infinite; it is not on the curve and was never
    /// back-propagated.
    NonFiniteLoss {
        /// The iteration's index.
        iteration: usize,
    },
}

/// The loss against the learning rate, as recorded by [`lr_range_test`].
#[derive(Debug, Clone, PartialEq)]
pub struct LrRangeCurve {
    /// The learning rate of each completed iteration.
    pub lrs: Vec<f64>,
    /// The batch loss of each iteration, before its optimizer step.
    pub losses: Vec<f64>,
    /// The exponentially smoothed loss.
    pub smoothed: Vec<f64>,
    /// Why the test ended.
    pub stop: LrStop,
    /// [`LrRangeCurve::steepest`] with the configured skips; `None` when the curve is too short.
    pub suggested_lr: Option<f64>,
}

impl LrRangeCurve {
    /// The rate where the smoothed loss falls fastest (torch-lr-finder's suggestion): drops
    /// `skip_start` points at the start and `skip_end` at the end, takes the discrete gradient of
    /// the rest (central differences inside, one-sided at the ends, as `np.gradient`) and returns
    /// the rate at its minimum, the first on a tie. `None` when fewer than two points remain.
    pub fn steepest(&self, skip_start: usize, skip_end: usize) -> Option<f64> {
        let end = self.smoothed.len().checked_sub(skip_end)?;
        let s = self.smoothed.get(skip_start..end)?;
        let n = s.len();
        if n < 2 {
            return None;
        }
        let slope = |i: usize| match i {
            0 => s[1] - s[0],
            i if i == n - 1 => s[n - 1] - s[n - 2],
            i => 0.5 * (s[i + 1] - s[i - 1]),
        };
        let mut best = 0;
        for i in 1..n {
            if slope(i) < slope(best) {
                best = i;
            }
        }
        Some(self.lrs[skip_start + best])
    }

    /// The rate at the smallest smoothed loss (the first on a tie); `None` for an empty curve.
    /// A tenth of it is fastai's older suggestion, an alternative to
    /// [`LrRangeCurve::steepest`].
    pub fn min_loss_lr(&self) -> Option<f64> {
        let mut best: Option<usize> = None;
        for (i, &l) in self.smoothed.iter().enumerate() {
            if best.is_none_or(|b| l < self.smoothed[b]) {
                best = Some(i);
            }
        }
        best.map(|i| self.lrs[i])
    }
}

/// Runs the learning-rate range test: for each iteration $i$, sets the optimizer's rate to
/// [`LrRangeTestConfig::lr_at`]`(i)`, computes `loss(i)` and takes one optimizer step on it,
/// until `num_iters` iterations, a divergence of the smoothed loss or a non-finite loss. The
/// values of `vars` and the optimizer's learning rate are then restored (its other state is
/// not: see the module docs).
///
/// Errors (the weights and the rate are restored first): an invalid `cfg`, empty `vars`
/// (naming `lr_range_test`), a loss that is not a scalar, or an error of the closure or of the
/// optimizer.
pub fn lr_range_test<O, F>(
    vars: &[Var],
    optimizer: &mut O,
    mut loss: F,
    cfg: &LrRangeTestConfig,
) -> Result<LrRangeCurve>
where
    O: Optimizer,
    F: FnMut(usize) -> candle_core::Result<Tensor>,
{
    const BLOCK: &str = "lr_range_test";
    cfg.validate()?;
    if vars.is_empty() {
        return Err(Error::config(
            BLOCK,
            "vars must hold at least one Var, got 0",
        ));
    }
    let initial: Vec<Tensor> = vars
        .iter()
        .map(|v| v.as_tensor().copy())
        .collect::<candle_core::Result<_>>()?;
    let initial_lr = optimizer.learning_rate();
    let run = ramp(optimizer, &mut loss, cfg);
    for (v, t) in vars.iter().zip(&initial) {
        v.set(t)?;
    }
    optimizer.set_learning_rate(initial_lr);
    run
}

/// The ramp itself; [`lr_range_test`] restores the state whatever this returns.
fn ramp<O, F>(optimizer: &mut O, loss: &mut F, cfg: &LrRangeTestConfig) -> Result<LrRangeCurve>
where
    O: Optimizer,
    F: FnMut(usize) -> candle_core::Result<Tensor>,
{
    // Nothing reserved from `num_iters`: a huge value must not abort on the allocation.
    let mut curve = LrRangeCurve {
        lrs: Vec::new(),
        losses: Vec::new(),
        smoothed: Vec::new(),
        stop: LrStop::Completed,
        suggested_lr: None,
    };
    let (mut average, mut best) = (0.0, f64::INFINITY);
    for i in 0..cfg.num_iters {
        let lr = cfg.lr_at(i);
        optimizer.set_learning_rate(lr);
        let l = loss(i)?;
        if l.rank() != 0 {
            return Err(Error::shape(
                "lr_range_test",
                "loss",
                "a scalar ()",
                l.shape().clone(),
            ));
        }
        let value = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            curve.stop = LrStop::NonFiniteLoss { iteration: i };
            break;
        }
        optimizer.backward_step(&l)?;
        let smoothed = if cfg.bias_correction {
            average = cfg.beta * average + (1.0 - cfg.beta) * value;
            average / (1.0 - cfg.beta.powf((i + 1) as f64))
        } else {
            average = if i == 0 {
                value
            } else {
                cfg.beta * average + (1.0 - cfg.beta) * value
            };
            average
        };
        curve.lrs.push(lr);
        curve.losses.push(value);
        curve.smoothed.push(smoothed);
        best = best.min(smoothed);
        if smoothed > cfg.diverge_th * best {
            curve.stop = LrStop::Diverged { iteration: i };
            break;
        }
    }
    curve.suggested_lr = curve.steepest(cfg.skip_start, cfg.skip_end);
    Ok(curve)
}
