//! Tuning and trusting a model: Gaussian processes for Bayesian optimisation and regression with
//! uncertainty, calibration and predictive uncertainty, hyper-parameter search (spaces, random,
//! Sobol and Bayesian samplers, studies with ASHA pruning) and neural architecture search.
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
//! - [`nas`]: neural architecture search by regularized (aging) evolution over a discrete space,
//!   with the random-search baseline at equal budget.
//! - [`space`]: search spaces (uniform, log-uniform, integer, categorical, conditional
//!   dimensions) mapped to and from the unit hypercube, and the sampled [`Config`].
//! - [`random`]: seeded random search, the baseline that beats grid search.
//! - [`sobol`]: Sobol points (Joe–Kuo directions, optional random digital shift) that cover a
//!   small budget more evenly than random.
//! - [`study`]: the [`Study`] running an objective trial after trial, recording failures,
//!   the best trial and the best-so-far curve; [`study_file`] saves and resumes it.
//! - [`asha`]: asynchronous successive halving, stopping the trials whose learning curves fall
//!   behind.

pub mod asha;
pub mod bayes_opt;
pub mod calibration;
pub mod gp;
pub mod nas;
pub mod random;
pub mod sampler;
pub mod sobol;
pub mod space;
pub mod study;
pub mod study_file;
pub mod uncertainty;

pub use asha::{Asha, AshaConfig, Decision, Reporter};
pub use bayes_opt::{
    acquisition_with_gradient, bayesian_optimization, expected_improvement, lower_confidence_bound,
    Acquisition, BayesianOptimization, BayesianOptimizationConfig, InitialDesign, OutputWarp,
    SuggestionKind,
};
pub use calibration::{
    expected_calibration_error, Calibration, ReliabilityBin, Scores, TemperatureScaling,
};
pub use gp::{gaussian_process, GaussianProcess, GaussianProcessConfig, GpKernel, HyperPrior};
pub use nas::{
    random_search, regularized_evolution, ArchSpace, EvolutionConfig, Genome, NasHistory,
};
pub use random::RandomSampler;
pub use sampler::{Observation, Sampler};
pub use sobol::{Sobol, SobolSampler, SOBOL_MAX_DIMS};
pub use space::{Condition, Config, Dimension, Domain, Space, SpaceBuilder, Value};
pub use study::{Direction, Outcome, Study, Trial, TrialState};
pub use uncertainty::{
    ensemble_predict, mc_predict, predictive_uncertainty, PredictiveUncertainty,
};
