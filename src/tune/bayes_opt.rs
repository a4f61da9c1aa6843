//! Bayesian optimisation: a Gaussian-process surrogate of the objective and an acquisition
//! function (expected improvement or a confidence bound) that picks the next point to evaluate.
//! [`BayesianOptimization`] implements the unit-hypercube [`Sampler`] contract, so a study can
//! swap it for random or Sobol search without changing anything else.
//!
//! # Shapes
//! - points live in $[0, 1]^d$ (`Vec<f64>` of length `dims`); values are minimised and finite.
//! - [`expected_improvement`] and [`lower_confidence_bound`] work on one posterior mean and
//!   standard deviation at a time (plain `f64`).
//!
//! # Tip
//! When one evaluation is a whole training run, the budget is a few dozen points and every one
//! should count. Bayesian optimisation fits a Gaussian process to the points so far and
//! evaluates next where an improvement is likely: where the posterior mean $\mu(x)$ is low
//! (exploitation) or its standard deviation $\sigma(x)$ is high (exploration). For
//! minimisation with the best value so far $f^\ast$, expected improvement is
//! $\mathrm{EI}(x) = (f^\ast - \mu - \xi) \thinspace \Phi(z) + \sigma \thinspace \varphi(z)$
//! with $z = (f^\ast - \mu - \xi) / \sigma$: it balances the two without a knob worth tuning
//! (`xi` is a small margin, 0.01 by default). The lower confidence bound
//! $\mu(x) - \sqrt{\beta} \thinspace \sigma(x)$ (the upper bound of a maximisation) makes the
//! trade-off explicit: a larger `beta` explores more, and a schedule of $\beta$ growing like
//! $\log t$ gives the no-regret guarantee of GP-UCB.
//!
//! The surrogate is Matérn-5/2 with one length scale per input (ARD) rather than RBF: real
//! objectives are rough, and an infinitely smooth prior is overconfident between the points.
//! Its hyper-parameters are refitted by maximum likelihood after every evaluation, warm-started
//! from the previous fit (random restarts only for the first fit and then every few steps), so a
//! suggestion costs milliseconds. The acquisition is maximised over random candidates (some
//! scattered around the best points so far), and the best few are refined by a projected
//! quasi-Newton inside the box.
//!
//! BO shines in up to about 20 dimensions with budgets of tens to hundreds of evaluations.
//! Beyond that the surrogate needs more points than the budget allows and costs $O(n^3)$ per
//! fit; random search, Sobol sequences or ASHA's early stopping are then the better tools.
//!
//! Degenerate histories do not fail: while all values are equal, or when the Gaussian-process
//! fit fails (duplicate points that no jitter rescues), the suggestion is a uniformly random
//! point. The first `n_initial` suggestions come from a seeded Latin hypercube (or uniform
//! random points), or from any other [`Sampler`] through
//! [`BayesianOptimization::with_initial_sampler`].
//!
//! # Example
//! ```
//! use candle_tricks::tune::bayes_opt::{bayesian_optimization, BayesianOptimizationConfig};
//! use candle_tricks::tune::{Observation, Sampler};
//! # fn main() -> candle_tricks::Result<()> {
//! // A 1-D objective on [0, 1] with its minimum at x = 0.73.
//! let f = |x: f64| (x - 0.73).powi(2) + 0.05 * (12.0 * x).sin().powi(2);
//! let mut bo = bayesian_optimization(BayesianOptimizationConfig::default().with_n_initial(3))?;
//! let mut history = Vec::new();
//! for _ in 0..10 {
//!     let point = bo.suggest(1, &history)?;
//!     let value = f(point[0]);
//!     history.push(Observation { point, value });
//! }
//! let best = history.iter().map(|o| o.value).fold(f64::INFINITY, f64::min);
//! let grid_best = (0..10_001).map(|i| f(i as f64 / 1e4)).fold(f64::INFINITY, f64::min);
//! assert!(best - grid_best < 1e-3, "best {best} vs {grid_best}"); // 10 evaluations suffice
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - D. R. Jones, M. Schonlau and W. J. Welch, *Efficient Global Optimization of Expensive
//!   Black-Box Functions*, Journal of Global Optimization 13, 1998 (expected improvement).
//!   <https://doi.org/10.1023/A:1008306431147>
//! - N. Srinivas, A. Krause, S. Kakade and M. Seeger, *Gaussian Process Optimization in the
//!   Bandit Setting: No Regret and Experimental Design*, ICML 2010 (GP-UCB).
//!   [arXiv:0912.3995](https://arxiv.org/abs/0912.3995)
//! - J. Snoek, H. Larochelle and R. P. Adams, *Practical Bayesian Optimization of Machine Learning
//!   Algorithms*, NeurIPS 2012 (Matérn-5/2 with ARD, expected improvement).
//!   [arXiv:1206.2944](https://arxiv.org/abs/1206.2944)

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::gp::minimize::minimize_in_box;
use super::gp::{gaussian_process, GaussianProcess, GaussianProcessConfig, GpKernel};
use super::sampler::{Observation, Sampler};
use crate::{Error, Result};

const BLOCK: &str = "BayesianOptimization";

/// The acquisition function maximised to pick the next point (for a minimised objective).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Acquisition {
    /// Expected improvement over the best value so far by more than `xi` (in the objective's
    /// units; `xi >= 0`).
    ExpectedImprovement {
        /// The margin an improvement must exceed; larger explores more.
        xi: f64,
    },
    /// The lower confidence bound $\mu - \sqrt{\beta} \thinspace \sigma$ (GP-UCB for
    /// minimisation); `beta >= 0`.
    LowerConfidenceBound {
        /// The weight of the uncertainty, squared; larger explores more.
        beta: f64,
    },
}

impl Acquisition {
    /// The score to maximise at a point with posterior mean `mean` and standard deviation
    /// `std`, given the best (lowest) value observed so far: the expected improvement, or the
    /// negated lower confidence bound.
    pub fn score(&self, mean: f64, std: f64, best: f64) -> f64 {
        match *self {
            Acquisition::ExpectedImprovement { xi } => expected_improvement(mean, std, best, xi),
            Acquisition::LowerConfidenceBound { beta } => -lower_confidence_bound(mean, std, beta),
        }
    }

    fn validate(&self) -> Result<()> {
        let (name, v) = match *self {
            Acquisition::ExpectedImprovement { xi } => ("xi", xi),
            Acquisition::LowerConfidenceBound { beta } => ("beta", beta),
        };
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(invalid(format!("{name} must be finite and >= 0, got {v}")))
        }
    }
}

/// Expected improvement below `best` by more than `xi` of a normal posterior
/// $\mathcal{N}(\mu, \sigma^2)$: $(f^\ast - \mu - \xi) \Phi(z) + \sigma \varphi(z)$ with
/// $z = (f^\ast - \mu - \xi) / \sigma$; the plain improvement $\max(f^\ast - \mu - \xi, 0)$ when
/// `std` is 0.
pub fn expected_improvement(mean: f64, std: f64, best: f64, xi: f64) -> f64 {
    let gain = best - mean - xi;
    if std <= 0.0 {
        return gain.max(0.0);
    }
    let z = gain / std;
    (gain * normal_cdf(z) + std * normal_pdf(z)).max(0.0)
}

/// The lower confidence bound $\mu - \sqrt{\beta} \thinspace \sigma$ (lower is more promising).
pub fn lower_confidence_bound(mean: f64, std: f64, beta: f64) -> f64 {
    mean - beta.sqrt() * std
}

/// $\Phi(z)$ through the complementary error function, accurate in both tails.
fn normal_cdf(z: f64) -> f64 {
    0.5 * candle_core::cpu::erf::erfc_f64(-z * std::f64::consts::FRAC_1_SQRT_2)
}

fn normal_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// How the first `n_initial` points fill the cube before there is a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialDesign {
    /// A seeded Latin hypercube: each axis split into `n_initial` equal strata, one point per
    /// stratum, strata paired at random across axes (even one-dimensional coverage).
    LatinHypercube,
    /// Independent uniform points.
    Random,
}

/// Configuration of [`BayesianOptimization`].
#[derive(Clone, Debug, PartialEq)]
pub struct BayesianOptimizationConfig {
    /// Space-filling points before the first model. Default 5.
    pub n_initial: usize,
    /// How those points are drawn. Default [`InitialDesign::LatinHypercube`].
    pub initial_design: InitialDesign,
    /// The acquisition function. Default expected improvement with `xi = 0.01`.
    pub acquisition: Acquisition,
    /// The surrogate's kernel, always with one length scale per dimension. Default
    /// [`GpKernel::Matern52`].
    pub kernel: GpKernel,
    /// Noise variance added to the kernel diagonal, in units of the normalised values. Default
    /// `1e-6` (noise-free objectives; raise it for noisy ones).
    pub alpha: f64,
    /// Random restarts of the first hyper-parameter fit and of every `refit_every`-th one; the
    /// others are warm-started from the previous fit only. Default 2.
    pub gp_restarts: usize,
    /// Steps between fits with random restarts (≥ 1). Default 5.
    pub refit_every: usize,
    /// Random candidates on which the acquisition is evaluated. Default 1000.
    pub n_candidates: usize,
    /// Best candidates refined by the bounded quasi-Newton. Default 5.
    pub n_refine: usize,
    /// Seed of every random choice. Default 0.
    pub seed: u64,
}

impl Default for BayesianOptimizationConfig {
    fn default() -> Self {
        Self {
            n_initial: 5,
            initial_design: InitialDesign::LatinHypercube,
            acquisition: Acquisition::ExpectedImprovement { xi: 0.01 },
            kernel: GpKernel::Matern52,
            alpha: 1e-6,
            gp_restarts: 2,
            refit_every: 5,
            n_candidates: 1000,
            n_refine: 5,
            seed: 0,
        }
    }
}

impl BayesianOptimizationConfig {
    /// Sets [`BayesianOptimizationConfig::n_initial`].
    pub fn with_n_initial(mut self, n_initial: usize) -> Self {
        self.n_initial = n_initial;
        self
    }
    /// Sets [`BayesianOptimizationConfig::initial_design`].
    pub fn with_initial_design(mut self, initial_design: InitialDesign) -> Self {
        self.initial_design = initial_design;
        self
    }
    /// Sets [`BayesianOptimizationConfig::acquisition`].
    pub fn with_acquisition(mut self, acquisition: Acquisition) -> Self {
        self.acquisition = acquisition;
        self
    }
    /// Sets [`BayesianOptimizationConfig::kernel`].
    pub fn with_kernel(mut self, kernel: GpKernel) -> Self {
        self.kernel = kernel;
        self
    }
    /// Sets [`BayesianOptimizationConfig::alpha`].
    pub fn with_alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }
    /// Sets [`BayesianOptimizationConfig::gp_restarts`] and
    /// [`BayesianOptimizationConfig::refit_every`].
    pub fn with_gp_restarts(mut self, gp_restarts: usize, refit_every: usize) -> Self {
        self.gp_restarts = gp_restarts;
        self.refit_every = refit_every;
        self
    }
    /// Sets [`BayesianOptimizationConfig::n_candidates`] and
    /// [`BayesianOptimizationConfig::n_refine`].
    pub fn with_candidates(mut self, n_candidates: usize, n_refine: usize) -> Self {
        self.n_candidates = n_candidates;
        self.n_refine = n_refine;
        self
    }
    /// Sets [`BayesianOptimizationConfig::seed`].
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Checks every count and the acquisition's parameter.
    pub fn validate(&self) -> Result<()> {
        for (what, v) in [
            ("n_initial", self.n_initial),
            ("refit_every", self.refit_every),
            ("n_candidates", self.n_candidates),
        ] {
            if v == 0 {
                return Err(invalid(format!("{what} must be >= 1, got 0")));
            }
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(invalid(format!(
                "alpha must be finite and >= 0, got {}",
                self.alpha
            )));
        }
        self.acquisition.validate()
    }
}

/// Why the last suggestion was made (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuggestionKind {
    /// One of the first `n_initial` space-filling points.
    Initial,
    /// The maximiser of the acquisition on the fitted surrogate.
    Model,
    /// A uniformly random point: all values equal, or the surrogate could not be fitted.
    RandomFallback,
}

/// Bayesian optimisation over $[0, 1]^d$ (see the module docs). Build it with
/// [`bayesian_optimization`] and call [`Sampler::suggest`] with the finished trials.
pub struct BayesianOptimization {
    cfg: BayesianOptimizationConfig,
    rng: StdRng,
    /// The initial design for `dims`, drawn on first use.
    design: Option<(usize, Vec<Vec<f64>>)>,
    initial_sampler: Option<Box<dyn Sampler + Send>>,
    /// Log hyper-parameters of the last successful fit, the warm start of the next.
    warm_theta: Option<Vec<f64>>,
    fits: usize,
    last: Option<SuggestionKind>,
}

impl std::fmt::Debug for BayesianOptimization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BayesianOptimization")
            .field("cfg", &self.cfg)
            .field("custom_initial_sampler", &self.initial_sampler.is_some())
            .field("fits", &self.fits)
            .field("last", &self.last)
            .finish()
    }
}

/// Builds a [`BayesianOptimization`] after validating `cfg`.
pub fn bayesian_optimization(cfg: BayesianOptimizationConfig) -> Result<BayesianOptimization> {
    cfg.validate()?;
    Ok(BayesianOptimization {
        rng: StdRng::seed_from_u64(cfg.seed),
        cfg,
        design: None,
        initial_sampler: None,
        warm_theta: None,
        fits: 0,
        last: None,
    })
}

impl BayesianOptimization {
    /// The configuration it was built with.
    pub fn config(&self) -> &BayesianOptimizationConfig {
        &self.cfg
    }

    /// Draws the first `n_initial` points from `sampler` (a Sobol sequence, say) instead of
    /// [`BayesianOptimizationConfig::initial_design`].
    pub fn with_initial_sampler(mut self, sampler: Box<dyn Sampler + Send>) -> Self {
        self.initial_sampler = Some(sampler);
        self
    }

    /// How the last suggestion was chosen (`None` before the first).
    pub fn last_suggestion(&self) -> Option<SuggestionKind> {
        self.last
    }

    /// The surrogate fitted to `history` (`dims` inputs), as the next suggestion would fit it.
    fn fit_surrogate(&mut self, dims: usize, history: &[Observation]) -> Result<GaussianProcess> {
        let n = history.len();
        let xs: Vec<f64> = history
            .iter()
            .flat_map(|o| o.point.iter().copied())
            .collect();
        let ys: Vec<f64> = history.iter().map(|o| o.value).collect();
        let x = Tensor::from_vec(xs, (n, dims), &Device::Cpu)?;
        let y = Tensor::from_vec(ys, n, &Device::Cpu)?;
        let (c, ls) = match &self.warm_theta {
            Some(t) if t.len() == dims + 1 => {
                (t[0].exp(), t[1..].iter().map(|v| v.exp()).collect())
            }
            _ => (1.0, vec![0.5; dims]),
        };
        let restarts = if self.fits.is_multiple_of(self.cfg.refit_every) {
            self.cfg.gp_restarts
        } else {
            0
        };
        let gp_cfg = GaussianProcessConfig {
            kernel: self.cfg.kernel,
            constant_value: c,
            length_scale: ls,
            // Values are normalised and points lie in the unit cube, so these bounds are wide.
            constant_value_bounds: (1e-2, 1e2),
            length_scale_bounds: (1e-2, 1e2),
            alpha: self.cfg.alpha,
            normalize_y: true,
            optimize: true,
            n_restarts: restarts,
            seed: self.rng.random(),
        };
        let mut gp = gaussian_process(gp_cfg)?;
        gp.fit(&x, &y)?;
        self.fits += 1;
        self.warm_theta = Some(gp.theta().to_vec());
        Ok(gp)
    }

    /// The point maximising the acquisition on `gp`.
    fn maximize_acquisition(
        &mut self,
        gp: &GaussianProcess,
        dims: usize,
        history: &[Observation],
    ) -> Result<Vec<f64>> {
        let acq = self.cfg.acquisition;
        let best = history
            .iter()
            .map(|o| o.value)
            .fold(f64::INFINITY, f64::min);
        let score = |p: &[f64]| -> Result<f64> {
            let (mean, var) = gp.predict_point(p)?;
            Ok(acq.score(mean, var.sqrt(), best))
        };
        let mut incumbents: Vec<&Observation> = history.iter().collect();
        incumbents.sort_by(|a, b| a.value.total_cmp(&b.value));
        incumbents.truncate(3);
        // Half uniform, half scattered around the three best points so far: in several
        // dimensions the region worth refining is small and uniform draws miss it (on
        // Hartmann-6 this halves the median regret after 30 evaluations).
        let mut scored: Vec<(f64, Vec<f64>)> = Vec::with_capacity(self.cfg.n_candidates);
        for k in 0..self.cfg.n_candidates {
            let p: Vec<f64> = if k % 2 == 1 {
                let centre = &incumbents[(k / 2) % incumbents.len()].point;
                let spread = [0.02, 0.1][(k / 2) % 2];
                centre
                    .iter()
                    .map(|c| (c + spread * standard_normal(&mut self.rng)).clamp(0.0, 1.0))
                    .collect()
            } else {
                (0..dims).map(|_| self.rng.random::<f64>()).collect()
            };
            scored.push((score(&p)?, p));
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.truncate(self.cfg.n_refine.max(1));
        let (mut best_score, mut best_point) = scored[0].clone();
        for (s0, p0) in scored.into_iter().take(self.cfg.n_refine) {
            if !(s0.is_finite() && s0 != 0.0) {
                continue;
            }
            if let Some((s, p)) = refine(&score, s0, p0)? {
                if s > best_score {
                    (best_score, best_point) = (s, p);
                }
            }
        }
        Ok(best_point)
    }

    fn random_point(&mut self, dims: usize) -> Vec<f64> {
        (0..dims).map(|_| self.rng.random::<f64>()).collect()
    }

    fn initial_point(&mut self, dims: usize, history: &[Observation]) -> Result<Vec<f64>> {
        if let Some(sampler) = self.initial_sampler.as_mut() {
            return sampler.suggest(dims, history);
        }
        if self.design.as_ref().is_none_or(|(d, _)| *d != dims) {
            let n = self.cfg.n_initial;
            let design = match self.cfg.initial_design {
                InitialDesign::LatinHypercube => latin_hypercube(&mut self.rng, n, dims),
                InitialDesign::Random => (0..n).map(|_| self.random_point(dims)).collect(),
            };
            self.design = Some((dims, design));
        }
        let Some((_, design)) = self.design.as_ref() else {
            return Ok(self.random_point(dims));
        };
        Ok(design[history.len() % design.len()].clone())
    }
}

impl Sampler for BayesianOptimization {
    /// The next point: the initial design for the first `n_initial` trials, then the
    /// acquisition's maximiser on a Gaussian process refitted to `history`. A random point when
    /// every value is equal or the fit fails.
    fn suggest(&mut self, dims: usize, history: &[Observation]) -> Result<Vec<f64>> {
        validate_history(dims, history)?;
        if history.len() < self.cfg.n_initial {
            self.last = Some(SuggestionKind::Initial);
            return self.initial_point(dims, history);
        }
        let first = history[0].value;
        let model = if history.iter().all(|o| o.value == first) {
            None
        } else {
            self.fit_surrogate(dims, history).ok()
        };
        let Some(gp) = model else {
            self.last = Some(SuggestionKind::RandomFallback);
            return Ok(self.random_point(dims));
        };
        match self.maximize_acquisition(&gp, dims, history) {
            Ok(p) => {
                self.last = Some(SuggestionKind::Model);
                Ok(p)
            }
            Err(_) => {
                self.last = Some(SuggestionKind::RandomFallback);
                Ok(self.random_point(dims))
            }
        }
    }
}

/// Bounded quasi-Newton ascent of `score` from `p0` on central finite differences (the
/// posterior is smooth and a point costs microseconds, so analytic gradients are not worth
/// their code). The score is divided by its start value so the optimiser's tolerances are
/// relative. `None` when nothing better was found.
fn refine(
    score: &impl Fn(&[f64]) -> Result<f64>,
    s0: f64,
    p0: Vec<f64>,
) -> Result<Option<(f64, Vec<f64>)>> {
    const STEP: f64 = 1e-6;
    let scale = s0.abs();
    let objective = |p: &[f64]| -> Result<Option<(f64, Vec<f64>)>> {
        let f = -score(p)? / scale;
        let mut grad = Vec::with_capacity(p.len());
        let mut q = p.to_vec();
        for k in 0..p.len() {
            let (lo, hi) = ((p[k] - STEP).max(0.0), (p[k] + STEP).min(1.0));
            q[k] = hi;
            let f_hi = -score(&q)? / scale;
            q[k] = lo;
            let f_lo = -score(&q)? / scale;
            q[k] = p[k];
            grad.push((f_hi - f_lo) / (hi - lo));
        }
        Ok(f.is_finite().then_some((f, grad)))
    };
    let d = p0.len();
    let Some((f, p)) = minimize_in_box(&objective, p0, &vec![0.0; d], &vec![1.0; d])? else {
        return Ok(None);
    };
    Ok((-f * scale > s0).then(|| (-f * scale, p)))
}

/// `n` points of a Latin hypercube in $[0, 1]^{dims}$: on every axis one point per stratum
/// $[i/n, (i+1)/n)$, at a random offset, the strata shuffled independently per axis.
fn latin_hypercube(rng: &mut StdRng, n: usize, dims: usize) -> Vec<Vec<f64>> {
    let mut points = vec![vec![0.0; dims]; n];
    let mut strata: Vec<usize> = (0..n).collect();
    for k in 0..dims {
        // Fisher-Yates.
        for i in (1..n).rev() {
            strata.swap(i, rng.random_range(0..=i));
        }
        for (point, &s) in points.iter_mut().zip(&strata) {
            point[k] = (s as f64 + rng.random::<f64>()) / n as f64;
        }
    }
    points
}

fn standard_normal(rng: &mut StdRng) -> f64 {
    // Box-Muller; 1 - u keeps the logarithm's argument in (0, 1].
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// `dims >= 1`, and every observation a point of `dims` coordinates in $[0, 1]$ with a finite
/// value.
fn validate_history(dims: usize, history: &[Observation]) -> Result<()> {
    if dims == 0 {
        return Err(invalid("dims must be >= 1, got 0"));
    }
    for (i, o) in history.iter().enumerate() {
        if o.point.len() != dims {
            return Err(Error::ShapeMismatch {
                block: BLOCK,
                what: "history point",
                expected: format!("({dims})"),
                actual: o.point.len().into(),
            });
        }
        if !o.value.is_finite() {
            return Err(Error::non_finite(
                BLOCK,
                format!("value of observation {i}"),
            ));
        }
        if o.point.iter().any(|v| !(0.0..=1.0).contains(v)) {
            return Err(invalid(format!(
                "observation {i} lies outside the unit cube: {:?}",
                o.point
            )));
        }
    }
    Ok(())
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidConfig {
        block: BLOCK,
        msg: msg.into(),
    }
}
