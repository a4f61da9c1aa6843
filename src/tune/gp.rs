//! An exact Gaussian process for regression with uncertainty: a posterior mean *and* a variance
//! for every query point, with kernel hyper-parameters fitted by maximising the log marginal
//! likelihood. The semantics are scikit-learn's `GaussianProcessRegressor` with the kernel
//! `ConstantKernel(c) * RBF(length_scale)` or `ConstantKernel(c) * Matern(length_scale, nu=2.5)`
//! and `alpha` added to the diagonal of the training kernel.
//!
//! # Shapes
//! - training inputs `x`: `(n, d)`, or `(n)` for one feature; targets `y`: `(n)`. f32 or f64
//!   tensors on any device; the arithmetic runs in f64 on the host.
//! - [`GaussianProcess::predict`] on `(m, d)` (or `(m)`) returns a mean and a variance of shape
//!   `(m)`, in f64; [`GaussianProcess::sample_y`] returns `(m, n_samples)`.
//! - `length_scale` holds one value (isotropic) or `d` values (ARD, one per input feature).
//!
//! # Tip
//! A Gaussian process gives calibrated uncertainty from little data: with a few dozen
//! evaluations it says both what it expects and how sure it is, and the variance grows away from
//! the data. That is why it is the surrogate of Bayesian optimisation, where each point is an
//! expensive training run and the acquisition function trades the mean against the variance.
//! The price is $O(n^3)$ time and $O(n^2)$ memory for $n$ training points (one Cholesky factor
//! of the $n \times n$ kernel), fine for a few thousand points, hopeless for a million.
//!
//! The kernel matters more than the optimiser. With $r^2 = \sum_k (x_k - x_k^\prime)^2 / \ell_k^2$,
//! RBF is $c \thinspace e^{-r^2/2}$ and assumes an infinitely smooth function; Matérn-5/2,
//! $c \thinspace (1 + \sqrt{5} r + 5 r^2 / 3) \thinspace e^{-\sqrt{5} r}$, assumes only two
//! derivatives, which suits real objectives (validation loss against learning rate) better and
//! is the default here. With one length scale per input (ARD), the fitted $\ell_k$ show which
//! inputs matter: a length scale far larger than the input's range means the function hardly
//! changes along it. `alpha` is the observation-noise variance added to the diagonal (it also
//! keeps the factorisation stable); `normalize_y` centres and scales the targets, so the prior
//! mean is the data mean rather than zero.
//!
//! Hyper-parameters are fitted in log space, inside their bounds, by a projected L-BFGS on the
//! exact gradient of the log marginal likelihood, from the configured start and `n_restarts`
//! seeded random starts; the best optimum wins.
//!
//! With a handful of points, maximum likelihood is often fooled: tiny length scales explain
//! any data as noise-free wiggles, huge ones as a constant. A [`HyperPrior`] on the length
//! scales and the signal variance turns the fit into maximum a posteriori, maximising
//! $\log p(y \mid \theta) + \log p(\theta)$: weak priors (Gamma(3, 6) on length scales in a unit
//! cube, Gamma(2, 0.15) on the variance of standardised targets) cost nothing when the data are
//! informative and keep the surrogate sane when they are not. The default stays plain maximum
//! likelihood, scikit-learn's behaviour.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::tune::gp::{gaussian_process, GaussianProcessConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! // A noisy sine observed on [0, 5] only.
//! let xs: Vec<f64> = (0..20).map(|i| i as f64 * 0.25).collect();
//! let ys: Vec<f64> = xs.iter().enumerate().map(|(i, x)| x.sin() + 0.05 * ((i * 7 % 5) as f64 - 2.0)).collect();
//! let x = Tensor::new(xs.as_slice(), &Device::Cpu)?;
//! let y = Tensor::new(ys.as_slice(), &Device::Cpu)?;
//! let mut gp = gaussian_process(GaussianProcessConfig::default().with_alpha(1e-2))?;
//! gp.fit(&x, &y)?;
//! let query = Tensor::new(&[2.0f64, 6.0, 9.0], &Device::Cpu)?;
//! let (mean, var) = gp.predict(&query)?;
//! let (mean, var) = (mean.to_vec1::<f64>()?, var.to_vec1::<f64>()?);
//! assert!((mean[0] - 2f64.sin()).abs() < 0.1); // inside the data: close to the truth
//! assert!(var[0] < var[1] && var[1] < var[2]); // the further from the data, the less sure
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - C. E. Rasmussen and C. K. I. Williams, *Gaussian Processes for Machine Learning*, MIT Press
//!   2006, chapters 2 (regression, Algorithm 2.1) and 5 (model selection, the marginal likelihood
//!   and its gradient). <https://gaussianprocess.org/gpml/>
//! - J. Snoek, H. Larochelle and R. P. Adams, *Practical Bayesian Optimization of Machine Learning
//!   Algorithms*, NeurIPS 2012 (Matérn-5/2 with ARD as the surrogate).
//!   [arXiv:1206.2944](https://arxiv.org/abs/1206.2944)
//! - C. Hvarfner, E. O. Hellsten and L. Nardi, *Vanilla Bayesian Optimization Performs Great in
//!   High Dimensions*, ICML 2024 (priors on the length scales).
//!   [arXiv:2402.02229](https://arxiv.org/abs/2402.02229)

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Error, Result};

mod cholesky;
mod kernel;
pub(crate) mod minimize;
mod prior;

use cholesky::{
    add_diagonal, cho_solve, cholesky_in_place, cholesky_jittered, solve_lower, JITTER_TRIES,
};
use kernel::{kernel_value, kernel_value_grad, shape, shape_slope};
use minimize::minimize_in_box;
pub use prior::HyperPrior;

const BLOCK: &str = "GaussianProcess";

/// The stationary kernel, scaled by the signal variance `constant_value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpKernel {
    /// The squared exponential $c \thinspace e^{-r^2/2}$ (sklearn's `RBF`): infinitely smooth.
    Rbf,
    /// Matérn with $\nu = 5/2$ (sklearn's `Matern(nu=2.5)`): twice differentiable.
    Matern52,
}

/// Configuration of a [`GaussianProcess`]; the defaults are scikit-learn's except the kernel
/// (Matérn-5/2 rather than RBF, see the module tip).
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianProcessConfig {
    /// The kernel shape. Default [`GpKernel::Matern52`].
    pub kernel: GpKernel,
    /// The signal variance $c$ (the start of the fit when optimising). Default 1.
    pub constant_value: f64,
    /// One length scale (isotropic) or one per input feature (ARD). Default `[1.0]`.
    pub length_scale: Vec<f64>,
    /// Bounds of `constant_value` while fitting, `(low, high)`. Default `(1e-5, 1e5)`.
    pub constant_value_bounds: (f64, f64),
    /// Bounds of every length scale while fitting, `(low, high)`. Default `(1e-5, 1e5)`.
    pub length_scale_bounds: (f64, f64),
    /// Added to the diagonal of the training kernel: the noise variance. Default `1e-10`.
    pub alpha: f64,
    /// Centre and scale the targets by their mean and standard deviation. Default `false`.
    pub normalize_y: bool,
    /// Fit the hyper-parameters by maximising the log marginal likelihood (sklearn's default
    /// optimizer); `false` keeps them as configured (`optimizer=None`). Default `true`.
    pub optimize: bool,
    /// Extra random starts of the fit, drawn log-uniformly inside the bounds. Default 0.
    pub n_restarts: usize,
    /// Seed of the random restarts. Default 0.
    pub seed: u64,
    /// A prior over every length scale: the fit then maximises the log marginal likelihood
    /// plus the log prior density (a maximum a posteriori fit). Default `None` (maximum
    /// likelihood, as scikit-learn).
    pub length_scale_prior: Option<HyperPrior>,
    /// A prior over the signal variance `constant_value`. Default `None`.
    pub constant_value_prior: Option<HyperPrior>,
}

impl Default for GaussianProcessConfig {
    fn default() -> Self {
        Self {
            kernel: GpKernel::Matern52,
            constant_value: 1.0,
            length_scale: vec![1.0],
            constant_value_bounds: (1e-5, 1e5),
            length_scale_bounds: (1e-5, 1e5),
            alpha: 1e-10,
            normalize_y: false,
            optimize: true,
            n_restarts: 0,
            seed: 0,
            length_scale_prior: None,
            constant_value_prior: None,
        }
    }
}

impl GaussianProcessConfig {
    /// Sets [`GaussianProcessConfig::kernel`].
    pub fn with_kernel(mut self, kernel: GpKernel) -> Self {
        self.kernel = kernel;
        self
    }
    /// Sets [`GaussianProcessConfig::constant_value`].
    pub fn with_constant_value(mut self, constant_value: f64) -> Self {
        self.constant_value = constant_value;
        self
    }
    /// Sets [`GaussianProcessConfig::length_scale`].
    pub fn with_length_scale(mut self, length_scale: Vec<f64>) -> Self {
        self.length_scale = length_scale;
        self
    }
    /// Sets [`GaussianProcessConfig::alpha`].
    pub fn with_alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }
    /// Sets [`GaussianProcessConfig::normalize_y`].
    pub fn with_normalize_y(mut self, normalize_y: bool) -> Self {
        self.normalize_y = normalize_y;
        self
    }
    /// Sets [`GaussianProcessConfig::optimize`].
    pub fn with_optimize(mut self, optimize: bool) -> Self {
        self.optimize = optimize;
        self
    }
    /// Sets [`GaussianProcessConfig::n_restarts`] and [`GaussianProcessConfig::seed`].
    pub fn with_restarts(mut self, n_restarts: usize, seed: u64) -> Self {
        self.n_restarts = n_restarts;
        self.seed = seed;
        self
    }

    /// Sets [`GaussianProcessConfig::length_scale_prior`] and
    /// [`GaussianProcessConfig::constant_value_prior`].
    pub fn with_priors(
        mut self,
        length_scale_prior: Option<HyperPrior>,
        constant_value_prior: Option<HyperPrior>,
    ) -> Self {
        self.length_scale_prior = length_scale_prior;
        self.constant_value_prior = constant_value_prior;
        self
    }

    /// Checks that every value is finite and in range and every bound is ordered.
    pub fn validate(&self) -> Result<()> {
        let positive = |what: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(invalid(format!("{what} must be finite and > 0, got {v}")))
            }
        };
        positive("constant_value", self.constant_value)?;
        if self.length_scale.is_empty() {
            return Err(invalid(
                "length_scale must hold at least one value, got none",
            ));
        }
        for &l in &self.length_scale {
            positive("length_scale", l)?;
        }
        for (what, (lo, hi)) in [
            ("constant_value_bounds", self.constant_value_bounds),
            ("length_scale_bounds", self.length_scale_bounds),
        ] {
            positive(what, lo)?;
            positive(what, hi)?;
            if lo > hi {
                return Err(invalid(format!(
                    "{what} must satisfy low <= high, got ({lo}, {hi})"
                )));
            }
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(invalid(format!(
                "alpha must be finite and >= 0, got {}",
                self.alpha
            )));
        }
        for (what, prior) in [
            ("length_scale_prior", &self.length_scale_prior),
            ("constant_value_prior", &self.constant_value_prior),
        ] {
            if let Some(msg) = prior.as_ref().and_then(|p| p.problem(what)) {
                return Err(invalid(msg));
            }
        }
        Ok(())
    }
}

/// An exact Gaussian-process regressor (see the module docs). Build it with
/// [`gaussian_process`], then [`GaussianProcess::fit`] it.
#[derive(Clone, Debug)]
pub struct GaussianProcess {
    cfg: GaussianProcessConfig,
    /// Log hyper-parameters: `[ln c, ln l_1, …]`.
    theta: Vec<f64>,
    fitted: Option<Fitted>,
}

/// What `fit` keeps for prediction.
#[derive(Clone, Debug)]
struct Fitted {
    x: Vec<f64>,
    n: usize,
    d: usize,
    y_mean: f64,
    y_std: f64,
    /// The lower Cholesky factor of `K + alpha I` (row-major `n × n`).
    chol: Vec<f64>,
    /// `(K + alpha I)^-1 y` for the (normalised) targets.
    weights: Vec<f64>,
    y: Vec<f64>,
}

/// Builds an unfitted [`GaussianProcess`] after validating `cfg`.
pub fn gaussian_process(cfg: GaussianProcessConfig) -> Result<GaussianProcess> {
    cfg.validate()?;
    let theta = std::iter::once(cfg.constant_value)
        .chain(cfg.length_scale.iter().copied())
        .map(f64::ln)
        .collect();
    Ok(GaussianProcess {
        cfg,
        theta,
        fitted: None,
    })
}

impl GaussianProcess {
    /// The configuration it was built with.
    pub fn config(&self) -> &GaussianProcessConfig {
        &self.cfg
    }

    /// The current signal variance $c$ (fitted after [`GaussianProcess::fit`]).
    pub fn constant_value(&self) -> f64 {
        self.theta[0].exp()
    }

    /// The current length scales (fitted after [`GaussianProcess::fit`]).
    pub fn length_scale(&self) -> Vec<f64> {
        self.theta[1..].iter().map(|t| t.exp()).collect()
    }

    /// The current log hyper-parameters `[ln c, ln l_1, …]` (sklearn's `kernel_.theta`).
    pub fn theta(&self) -> &[f64] {
        &self.theta
    }

    /// Fits the process to `x` `(n, d)` or `(n)` and `y` `(n)`: fits the hyper-parameters when
    /// [`GaussianProcessConfig::optimize`] is set (maximum a posteriori when a prior is set),
    /// then factorises the kernel. A kernel that is
    /// not positive definite is retried with a growing jitter on the diagonal before failing.
    pub fn fit(&mut self, x: &Tensor, y: &Tensor) -> Result<()> {
        let (x, n, d) = host_matrix(x, "x")?;
        if n == 0 || d == 0 {
            return Err(Error::ShapeMismatch {
                block: BLOCK,
                what: "x",
                expected: "(n, d) with n, d >= 1".into(),
                actual: (n, d).into(),
            });
        }
        if y.dims() != [n] {
            return Err(Error::ShapeMismatch {
                block: BLOCK,
                what: "y",
                expected: format!("({n})"),
                actual: y.shape().clone(),
            });
        }
        let (y, _, _) = host_matrix(y, "y")?;
        let n_ls = self.cfg.length_scale.len();
        if n_ls != 1 && n_ls != d {
            return Err(invalid(format!(
                "length_scale must hold 1 or {d} values (one per feature), got {n_ls}"
            )));
        }
        let (y_mean, y_std) = if self.cfg.normalize_y {
            let mean = y.iter().sum::<f64>() / n as f64;
            let var = y.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
            let std = var.sqrt();
            // sklearn keeps a constant target's scale at 1.
            (mean, if std < 10.0 * f64::EPSILON { 1.0 } else { std })
        } else {
            (0.0, 1.0)
        };
        let y: Vec<f64> = y.iter().map(|v| (v - y_mean) / y_std).collect();
        let data = Data {
            kernel: self.cfg.kernel,
            x: &x,
            y: &y,
            n,
            d,
            alpha: self.cfg.alpha,
        };
        if self.cfg.optimize {
            self.theta = self.optimize_theta(&data)?;
        }
        let mut k = data.kernel_matrix(&self.theta)?;
        add_diagonal(&mut k, n, self.cfg.alpha);
        let chol = cholesky_jittered(k, n).ok_or_else(|| not_positive_definite(n))?;
        let weights = cho_solve(&chol, n, &y);
        self.fitted = Some(Fitted {
            x,
            n,
            d,
            y_mean,
            y_std,
            chol,
            weights,
            y,
        });
        Ok(())
    }

    /// The log marginal likelihood of the (normalised) training targets at the current
    /// hyper-parameters (sklearn's `log_marginal_likelihood_value_`), without any prior.
    pub fn log_marginal_likelihood(&self) -> Result<f64> {
        Ok(self.log_marginal_likelihood_with_gradient()?.0)
    }

    /// The log marginal likelihood and its gradient with respect to the log hyper-parameters
    /// `[ln c, ln l_1, …]` (sklearn's `log_marginal_likelihood(theta, eval_gradient=True)`).
    /// It is evaluated without jitter: when `fit` needed one, this is an error (sklearn: `-inf`).
    pub fn log_marginal_likelihood_with_gradient(&self) -> Result<(f64, Vec<f64>)> {
        let f = self.fitted()?;
        let data = Data {
            kernel: self.cfg.kernel,
            x: &f.x,
            y: &f.y,
            n: f.n,
            d: f.d,
            alpha: self.cfg.alpha,
        };
        data.lml_with_gradient(&self.theta)?
            .ok_or_else(|| not_positive_definite(f.n))
    }

    /// The posterior mean and variance at `x` `(m, d)` or `(m)`, both `(m)` in f64 on the CPU. The
    /// variance is that of the latent function (without `alpha`), clipped at 0 as sklearn does.
    pub fn predict(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (mean, var, _) = self.posterior(x, false)?;
        let m = mean.len();
        Ok((
            Tensor::from_vec(mean, m, &Device::Cpu)?,
            Tensor::from_vec(var, m, &Device::Cpu)?,
        ))
    }

    /// The posterior mean and standard deviation at `x` (sklearn's `return_std=True`).
    pub fn predict_std(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (mean, var) = self.predict(x)?;
        Ok((mean, var.sqrt()?))
    }

    /// `n_samples` joint draws of the posterior at `x` `(m, d)` or `(m)`, as `(m, n_samples)`
    /// in f64, seeded. The posterior covariance is factorised with a growing jitter when it is
    /// only positive semi-definite (query points at or near the training points).
    pub fn sample_y(&self, x: &Tensor, n_samples: usize, seed: u64) -> Result<Tensor> {
        let (mean, _, cov) = self.posterior(x, true)?;
        let m = mean.len();
        let chol = cholesky_jittered(cov, m).ok_or_else(|| not_positive_definite(m))?;
        let mut rng = StdRng::seed_from_u64(seed);
        let len = checked_len(m, n_samples)?;
        let mut out = zeroed(len)?;
        let mut z = vec![0.0; m];
        for s in 0..n_samples {
            z.iter_mut().for_each(|v| *v = standard_normal(&mut rng));
            for i in 0..m {
                let row = &chol[i * m..i * m + i + 1];
                let dot: f64 = row.iter().zip(&z).map(|(l, z)| l * z).sum();
                out[i * n_samples + s] = mean[i] + dot;
            }
        }
        Ok(Tensor::from_vec(out, (m, n_samples), &Device::Cpu)?)
    }

    fn fitted(&self) -> Result<&Fitted> {
        self.fitted
            .as_ref()
            .ok_or_else(|| invalid("call fit before predicting or evaluating the likelihood"))
    }

    /// Mean, variance and (with `full_cov`) the full covariance in the original target units.
    fn posterior(&self, x: &Tensor, full_cov: bool) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
        let f = self.fitted()?;
        let (xs, m, d) = host_matrix(x, "x")?;
        if d != f.d {
            return Err(Error::ShapeMismatch {
                block: BLOCK,
                what: "x",
                expected: format!("(m, {})", f.d),
                actual: (m, d).into(),
            });
        }
        let kern = |a: &[f64], b: &[f64]| kernel_value(self.cfg.kernel, &self.theta, a, b);
        // v_j = L^-1 k(X, x_j), one query point at a time; kept only for the full covariance.
        let mut v = if full_cov {
            zeroed(checked_len(m, f.n)?)?
        } else {
            Vec::new()
        };
        let mut mean = Vec::with_capacity(m);
        let mut var = Vec::with_capacity(m);
        let prior = self.constant_value();
        for j in 0..m {
            let (mu, vj) = self.point_posterior(f, &xs[j * d..(j + 1) * d]);
            let explained: f64 = vj.iter().map(|v| v * v).sum();
            mean.push(mu * f.y_std + f.y_mean);
            var.push((prior - explained).max(0.0) * f.y_std * f.y_std);
            if full_cov {
                v[j * f.n..(j + 1) * f.n].copy_from_slice(&vj);
            }
        }
        let mut cov = Vec::new();
        if full_cov {
            cov = zeroed(checked_len(m, m)?)?;
            let scale = f.y_std * f.y_std;
            for a in 0..m {
                for b in 0..=a {
                    let prior = kern(&xs[a * d..(a + 1) * d], &xs[b * d..(b + 1) * d]);
                    let va = &v[a * f.n..(a + 1) * f.n];
                    let vb = &v[b * f.n..(b + 1) * f.n];
                    let explained: f64 = va.iter().zip(vb).map(|(p, q)| p * q).sum();
                    let c = (prior - explained) * scale;
                    cov[a * m + b] = c;
                    cov[b * m + a] = c;
                }
            }
        }
        Ok((mean, var, cov))
    }

    /// The posterior mean and variance at one host point `q` (`d` values, unchecked beyond its
    /// length), in the original target units: for acquisition loops that evaluate thousands of
    /// single points, where a tensor per point would cost more than the arithmetic.
    pub(crate) fn predict_point(&self, q: &[f64]) -> Result<(f64, f64)> {
        let f = self.fitted()?;
        if q.len() != f.d {
            return Err(Error::ShapeMismatch {
                block: BLOCK,
                what: "x",
                expected: format!("({})", f.d),
                actual: q.len().into(),
            });
        }
        let (mu, v) = self.point_posterior(f, q);
        let explained: f64 = v.iter().map(|v| v * v).sum();
        let var = (self.constant_value() - explained).max(0.0) * f.y_std * f.y_std;
        Ok((mu * f.y_std + f.y_mean, var))
    }

    /// [`GaussianProcess::predict_point`] with the gradients of the mean and the variance with
    /// respect to `q`: `(mean, var, d mean / d q, d var / d q)`, in the original target units.
    /// The acquisition's maximiser follows them instead of finite differences.
    pub(crate) fn predict_point_with_gradient(
        &self,
        q: &[f64],
    ) -> Result<(f64, f64, Vec<f64>, Vec<f64>)> {
        let (mean, var) = self.predict_point(q)?;
        let f = self.fitted()?;
        let d = f.d;
        let c = self.constant_value();
        let inv_ls2: Vec<f64> = (0..d)
            .map(|k| (-2.0 * self.theta[if self.theta.len() == 2 { 1 } else { 1 + k }]).exp())
            .collect();
        // dk_i/dq_k = c shape^\prime(r^2) 2 (q_k - x_ik) / l_k^2, for every training point i.
        let mut ks = Vec::with_capacity(f.n);
        let mut dks = Vec::with_capacity(f.n * d);
        for xi in f.x.chunks_exact(d) {
            let r2: f64 = (0..d).map(|k| (xi[k] - q[k]).powi(2) * inv_ls2[k]).sum();
            ks.push(c * shape(self.cfg.kernel, r2));
            let slope = c * shape_slope(self.cfg.kernel, r2);
            dks.extend((0..d).map(|k| slope * 2.0 * (q[k] - xi[k]) * inv_ls2[k]));
        }
        // var = c - k^T K^-1 k, so d var = -2 (K^-1 k)^T dk.
        let a = cho_solve(&f.chol, f.n, &ks);
        let mut d_mean = vec![0.0; d];
        let mut d_var = vec![0.0; d];
        for i in 0..f.n {
            for k in 0..d {
                d_mean[k] += f.weights[i] * dks[i * d + k];
                d_var[k] -= 2.0 * a[i] * dks[i * d + k];
            }
        }
        let scale = f.y_std * f.y_std;
        // A variance clamped at 0 is flat there.
        let var_live = var > 0.0;
        for k in 0..d {
            d_mean[k] *= f.y_std;
            d_var[k] = if var_live { d_var[k] * scale } else { 0.0 };
        }
        Ok((mean, var, d_mean, d_var))
    }

    /// The normalised posterior mean at `q` and `L^-1 k(X, q)`, whose squared norm is the
    /// variance the data explains.
    fn point_posterior(&self, f: &Fitted, q: &[f64]) -> (f64, Vec<f64>) {
        let d = f.d;
        // The hyper-parameters are exponentiated once per query, not once per training point.
        let c = self.constant_value();
        let inv_ls: Vec<f64> = (0..d)
            .map(|k| (-self.theta[if self.theta.len() == 2 { 1 } else { 1 + k }]).exp())
            .collect();
        let ks: Vec<f64> =
            f.x.chunks_exact(d)
                .map(|xi| {
                    let r2: f64 = (0..d).map(|k| ((xi[k] - q[k]) * inv_ls[k]).powi(2)).sum();
                    c * shape(self.cfg.kernel, r2)
                })
                .collect();
        let mu: f64 = ks.iter().zip(&f.weights).map(|(k, w)| k * w).sum();
        (mu, solve_lower(&f.chol, f.n, &ks))
    }

    /// Maximises the log marginal likelihood (plus the log priors) from the configured start and
    /// the random restarts.
    fn optimize_theta(&self, data: &Data<'_>) -> Result<Vec<f64>> {
        let (clo, chi) = self.cfg.constant_value_bounds;
        let (llo, lhi) = self.cfg.length_scale_bounds;
        let lo: Vec<f64> = std::iter::once(clo.ln())
            .chain(std::iter::repeat_n(llo.ln(), self.theta.len() - 1))
            .collect();
        let hi: Vec<f64> = std::iter::once(chi.ln())
            .chain(std::iter::repeat_n(lhi.ln(), self.theta.len() - 1))
            .collect();
        let (ls_prior, c_prior) = (self.cfg.length_scale_prior, self.cfg.constant_value_prior);
        let objective = |t: &[f64]| -> Result<Option<(f64, Vec<f64>)>> {
            Ok(data.lml_with_gradient(t)?.map(|(mut l, mut g)| {
                // A maximum a posteriori fit adds the log prior of every hyper-parameter.
                for (i, ti) in t.iter().enumerate() {
                    let prior = if i == 0 { c_prior } else { ls_prior };
                    if let Some(p) = prior {
                        let (lp, dlp) = p.log_density(*ti);
                        l += lp;
                        g[i] += dlp;
                    }
                }
                (-l, g.into_iter().map(|v| -v).collect())
            }))
        };
        let mut rng = StdRng::seed_from_u64(self.cfg.seed);
        let mut best: Option<(f64, Vec<f64>)> = None;
        for start in 0..=self.cfg.n_restarts {
            let x0: Vec<f64> = if start == 0 {
                self.theta.clone()
            } else {
                lo.iter()
                    .zip(&hi)
                    .map(|(&l, &h)| l + (h - l) * rng.random::<f64>())
                    .collect()
            };
            if let Some((f, t)) = minimize_in_box(&objective, x0, &lo, &hi)? {
                if best.as_ref().is_none_or(|(bf, _)| f < *bf) {
                    best = Some((f, t));
                }
            }
        }
        best.map(|(_, t)| t)
            .ok_or_else(|| not_positive_definite(data.n))
    }
}

/// The training data seen by the likelihood.
struct Data<'a> {
    kernel: GpKernel,
    x: &'a [f64],
    y: &'a [f64],
    n: usize,
    d: usize,
    alpha: f64,
}

impl Data<'_> {
    fn kernel_matrix(&self, theta: &[f64]) -> Result<Vec<f64>> {
        let (n, d) = (self.n, self.d);
        let mut k = zeroed(checked_len(n, n)?)?;
        for i in 0..n {
            for j in 0..=i {
                let (a, b) = (&self.x[i * d..(i + 1) * d], &self.x[j * d..(j + 1) * d]);
                let v = kernel_value(self.kernel, theta, a, b);
                k[i * n + j] = v;
                k[j * n + i] = v;
            }
        }
        Ok(k)
    }

    /// The log marginal likelihood and its gradient in log space (Rasmussen & Williams eq. 5.9),
    /// or `None` when `K + alpha I` is not positive definite (sklearn's `-inf`).
    fn lml_with_gradient(&self, theta: &[f64]) -> Result<Option<(f64, Vec<f64>)>> {
        let (n, d, p) = (self.n, self.d, theta.len());
        let nn = checked_len(n, n)?;
        let mut k = zeroed(nn)?;
        // dK/dtheta_j for every hyper-parameter, stored one matrix after another.
        let mut dk = zeroed(nn.checked_mul(p).ok_or_else(|| too_large(n))?)?;
        let mut grad_buf = vec![0.0; p];
        for i in 0..n {
            for j in 0..=i {
                let (a, b) = (&self.x[i * d..(i + 1) * d], &self.x[j * d..(j + 1) * d]);
                let v = kernel_value_grad(self.kernel, theta, a, b, &mut grad_buf);
                k[i * n + j] = v;
                k[j * n + i] = v;
                for (h, gv) in grad_buf.iter().enumerate() {
                    dk[h * nn + i * n + j] = *gv;
                    dk[h * nn + j * n + i] = *gv;
                }
            }
        }
        add_diagonal(&mut k, n, self.alpha);
        if !cholesky_in_place(&mut k, n) {
            return Ok(None);
        }
        let chol = k;
        let weights = cho_solve(&chol, n, self.y);
        let log_det_half: f64 = (0..n).map(|i| chol[i * n + i].ln()).sum();
        let fit: f64 = self.y.iter().zip(&weights).map(|(y, w)| y * w).sum();
        let lml = -0.5 * fit - log_det_half - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
        // 0.5 tr((w w^T - K^-1) dK_j), with K^-1 from the factor one column at a time.
        let mut inner = zeroed(nn)?;
        let mut e = vec![0.0; n];
        for c in 0..n {
            e.iter_mut().for_each(|v| *v = 0.0);
            e[c] = 1.0;
            let col = cho_solve(&chol, n, &e);
            for r in 0..n {
                inner[r * n + c] = weights[r] * weights[c] - col[r];
            }
        }
        let grad = (0..p)
            .map(|h| {
                0.5 * inner
                    .iter()
                    .zip(&dk[h * nn..(h + 1) * nn])
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
            })
            .collect();
        Ok(Some((lml, grad)))
    }
}

// ---------------------------------------------------------------------------------------------
// Input, sizes and errors.
// ---------------------------------------------------------------------------------------------

/// `t` (`(n, d)` or `(n)`, f32 or f64, finite) as a row-major host buffer with `n` and `d`.
fn host_matrix(t: &Tensor, what: &'static str) -> Result<(Vec<f64>, usize, usize)> {
    let (n, d) = match t.dims() {
        [n] => (*n, 1),
        [n, d] => (*n, *d),
        _ => {
            return Err(Error::ShapeMismatch {
                block: BLOCK,
                what,
                expected: "(n, d) or (n)".into(),
                actual: t.shape().clone(),
            })
        }
    };
    if !matches!(t.dtype(), DType::F32 | DType::F64) {
        return Err(Error::UnsupportedDType {
            block: BLOCK,
            what: what.into(),
            supported: "f32 or f64",
            actual: t.dtype(),
        });
    }
    let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    if v.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            block: BLOCK,
            what: what.into(),
        });
    }
    Ok((v, n, d))
}

fn checked_len(a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| too_large(a.max(b)))
}

/// A zeroed buffer, refused with an error (not an abort) when it cannot be allocated.
fn zeroed(len: usize) -> Result<Vec<f64>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        invalid(format!(
            "cannot allocate {len} f64 values for the kernel matrices"
        ))
    })?;
    v.resize(len, 0.0);
    Ok(v)
}

fn standard_normal(rng: &mut StdRng) -> f64 {
    // Box-Muller; 1 - u keeps the logarithm's argument in (0, 1].
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidConfig {
        block: BLOCK,
        msg: msg.into(),
    }
}

fn too_large(n: usize) -> Error {
    invalid(format!("{n} points overflow the size of the kernel matrix"))
}

fn not_positive_definite(n: usize) -> Error {
    invalid(format!(
        "the {n} x {n} kernel matrix is not positive definite even with a diagonal jitter of \
         1e{} x its mean diagonal; increase alpha or remove duplicate points",
        JITTER_TRIES - 11
    ))
}
