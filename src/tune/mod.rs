//! Tuning and trusting a model: Gaussian processes for Bayesian optimisation and regression with
//! uncertainty, calibration and predictive uncertainty (issue 16; search spaces, ASHA, Bayesian
//! optimisation and NAS land here next).
//!
//! - [`calibration`]: expected calibration error with reliability-diagram data, and temperature
//!   scaling fitted on validation logits.
//! - [`uncertainty`]: MC dropout and deep-ensemble predictions summarised by the predictive mean,
//!   variance, entropy and mutual information.

pub mod calibration;
pub mod uncertainty;

pub use calibration::{
    expected_calibration_error, Calibration, ReliabilityBin, Scores, TemperatureScaling,
};
pub use uncertainty::{
    ensemble_predict, mc_predict, predictive_uncertainty, PredictiveUncertainty,
};
