//! The contract between a study and the strategy that proposes its next trial.
//!
//! A [`Sampler`] works in the unit hypercube $[0, 1]^d$: the search space maps every dimension
//! (log-uniform, integer, categorical, …) to and from one unit coordinate, so random search, Sobol
//! sequences and Bayesian optimisation all see the same plain problem and never need to know what
//! a coordinate means. Values are always *minimised*; a study that maximises hands the samplers
//! the negated objective.

use crate::Result;

/// One finished trial as a sampler sees it: where it was evaluated and what it scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The point in $[0, 1]^d$.
    pub point: Vec<f64>,
    /// The objective at that point (finite; lower is better). Failed trials, whose objective was
    /// NaN or an error, are recorded by the study but never handed to a sampler.
    pub value: f64,
}

/// A strategy proposing where to evaluate next.
///
/// Implementations own their seeded random state, so a study run twice with the same seed
/// proposes the same points.
pub trait Sampler {
    /// Proposes the next point in $[0, 1]^{dims}$ given every finished trial so far.
    fn suggest(&mut self, dims: usize, history: &[Observation]) -> Result<Vec<f64>>;
}
