//! Random search: every coordinate drawn independently and uniformly, seeded.
//!
//! # Shapes
//! Points of $[0, 1]^d$ for any $d \ge 1$.
//!
//! # Tip: random search beats grid search
//! In most problems only a few hyper-parameters matter (the learning rate, then perhaps the
//! weight decay), and which ones is not known in advance. A grid of $k^d$ points tries only $k$
//! distinct values of each parameter, the other $k^{d-1}$ evaluations repeating them; $k^d$
//! random points try $k^d$ distinct values of every parameter, so the important ones are
//! explored $k^{d-1}$ times more finely at the same cost. Random search is also trivially
//! parallel, can stop at any budget and is the honest baseline for any cleverer sampler. Its
//! weakness is clumping at small budgets ([`crate::tune::SobolSampler`] spreads the same number
//! of points more evenly) and that it never exploits a good region (Bayesian optimisation does).
//!
//! # Example
//! ```
//! use candle_tricks::tune::{RandomSampler, Sampler};
//! # fn main() -> candle_tricks::Result<()> {
//! let (mut a, mut b) = (RandomSampler::new(7), RandomSampler::new(7));
//! let p = a.suggest(3, &[])?;
//! assert_eq!(p, b.suggest(3, &[])?); // seeded: reproducible
//! assert!(p.iter().all(|u| (0.0..1.0).contains(u)));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - J. Bergstra, Y. Bengio, *Random Search for Hyper-Parameter Optimization*, JMLR 13, 2012,
//!   <https://jmlr.org/papers/v13/bergstra12a.html>.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::tune::sampler::{Observation, Sampler};
use crate::Result;

/// Proposes independent uniform points from a seeded generator, ignoring the scores.
#[derive(Debug, Clone)]
pub struct RandomSampler {
    rng: StdRng,
}

impl RandomSampler {
    /// A sampler whose sequence of points is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl Sampler for RandomSampler {
    fn suggest(&mut self, dims: usize, _history: &[Observation]) -> Result<Vec<f64>> {
        Ok((0..dims).map(|_| self.rng.random::<f64>()).collect())
    }
}
