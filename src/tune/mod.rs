//! Tuning and trusting a model: Gaussian processes for Bayesian optimisation and regression with
//! uncertainty, calibration and predictive uncertainty (issue 16; search spaces, ASHA, Bayesian
//! optimisation and NAS land here next).
//!
//! - [`gp`]: an exact Gaussian process (RBF or Matérn-5/2 with ARD length scales) with posterior
//!   mean and variance, the log marginal likelihood and its gradient, hyper-parameters fitted by
//!   bounded L-BFGS with seeded restarts, and posterior samples — the surrogate of Bayesian
//!   optimisation.

pub mod gp;

pub use gp::{gaussian_process, GaussianProcess, GaussianProcessConfig, GpKernel};
