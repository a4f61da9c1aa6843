//! Tuning and trusting a model: Gaussian processes for Bayesian optimisation and regression with
//! uncertainty, calibration and predictive uncertainty (issue 16; search spaces, ASHA, Bayesian
//! optimisation and NAS land here next).
//!
//! - [`gp`]: an exact Gaussian process (RBF or Matérn-5/2 with ARD length scales) with posterior
//!   mean and variance, the log marginal likelihood and its gradient, hyper-parameters fitted by
//!   bounded L-BFGS with seeded restarts, and posterior samples — the surrogate of Bayesian
//!   optimisation.
//! - [`bayes_opt`]: Bayesian optimisation, a [`Sampler`] that fits a Matérn-5/2 Gaussian
//!   process to the trials so far and proposes the maximiser of expected improvement or a
//!   confidence bound.
//! - [`calibration`]: expected calibration error with reliability-diagram data, and temperature
//!   scaling fitted on validation logits.
//! - [`uncertainty`]: MC dropout and deep-ensemble predictions summarised by the predictive mean,
//!   variance, entropy and mutual information.
//! - [`sampler`]: the unit-hypercube contract every search strategy implements.

pub mod bayes_opt;
pub mod calibration;
pub mod gp;
pub mod sampler;
pub mod uncertainty;

pub use bayes_opt::{
    bayesian_optimization, expected_improvement, lower_confidence_bound, Acquisition,
    BayesianOptimization, BayesianOptimizationConfig, InitialDesign, SuggestionKind,
};
pub use calibration::{
    expected_calibration_error, Calibration, ReliabilityBin, Scores, TemperatureScaling,
};
pub use gp::{gaussian_process, GaussianProcess, GaussianProcessConfig, GpKernel};
pub use sampler::{Observation, Sampler};
pub use uncertainty::{
    ensemble_predict, mc_predict, predictive_uncertainty, PredictiveUncertainty,
};
