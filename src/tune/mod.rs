//! Tuning and trusting a model: Gaussian processes for Bayesian optimisation and regression with
//! uncertainty, calibration and predictive uncertainty (issue 16; search spaces, ASHA, Bayesian
//! optimisation and NAS land here next).
