//! Neural architecture search by regularized evolution (aging evolution), with the random-search
//! baseline it must be compared against, over a user-defined discrete space.
//!
//! An architecture is a [`Genome`]: one choice index per named dimension of an [`ArchSpace`]
//! (block type, width, kernel size of each stage, …). The user's closure builds the network
//! the genome describes, trains it briefly and returns a score where higher is better (a
//! validation accuracy); an `Err` or a non-finite score is recorded as a failed trial, never a
//! panic, and the search goes on.
//!
//! # Shapes
//! - an [`ArchSpace`] of $d$ dimensions, dimension $k$ with $n_k \ge 1$ choices, holds
//!   $\prod_k n_k$ architectures; a [`Genome`] holds $d$ indices, index $k$ below $n_k$.
//! - [`regularized_evolution`] and [`random_search`] call the closure exactly `budget` times and
//!   return the [`NasHistory`] of every trial in order, with its origin (random, or the
//!   tournament, parent and mutated dimension it came from) and the best architecture.
//!
//! # Tip
//! **Regularized evolution** (Real et al. 2019, Algorithm 1) keeps a population of $P$ trained
//! architectures. Each cycle samples $S$ members at random (with replacement), takes the best of
//! them as the parent, mutates one dimension of its genome to a *different* choice, trains and
//! scores the child, appends it to the population and removes the **oldest** member, not the
//! worst. Aging is the regulariser: an architecture survives only as long as its descendants keep
//! being selected, so the population drifts toward architectures that score well every time
//! they are retrained, not toward one that got a lucky score once and would otherwise be parent
//! forever. $S$ sets the selection pressure: $S = 1$ is a random walk, $S = P$ always breeds the
//! current best (greedy, prone to stalling); the paper uses $P = 100$, $S = 25$ over 20 000
//! models; for a budget of a few dozen models, $P \approx 10$ and $S \approx 3$ keep some
//! exploration. The first $P$ trials are random, so the budget must be well above $P$ for
//! evolution to differ from random search.
//!
//! **Random search is a strong NAS baseline** — in a well-designed space most architectures are
//! decent, and Li and Talwalkar (2019) found it competitive with far more elaborate methods.
//! Always report it at the same budget and over several seeds: the gap between methods is often
//! smaller than the spread between seeds. `tests/nas.rs` runs both over 25 seeds on a synthetic
//! objective with additive and pairwise-interaction structure and prints the table;
//! `examples/nas_evolution.rs` searches small CNNs on the 8×8 digits.
//!
//! Both searches draw every random number from one seeded generator, so the same seed and a
//! deterministic closure give an identical history; with the same seed, evolution's first $P$
//! trials are random search's first $P$. A failed trial stays in the population until it ages
//! out but never wins a tournament against a scored member.
//!
//! # Example
//! ```
//! use candle_tricks::tune::nas::{random_search, regularized_evolution, ArchSpace, EvolutionConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let space = ArchSpace::new([("block", 3), ("width", 4), ("kernel", 3)])?;
//! assert_eq!(space.size(), Some(36));
//! // A stand-in for "train and validate": the best architecture is block 2, width 3, kernel 1.
//! let score = |g: &candle_tricks::tune::nas::Genome| {
//!     let [b, w, k] = [g.choices()[0], g.choices()[1], g.choices()[2]].map(|c| c as f64);
//!     Ok(b + w - (k - 1.0).abs())
//! };
//! let cfg = EvolutionConfig::default().with_population(6).with_sample_size(3).with_budget(30);
//! let evolved = regularized_evolution(&space, &cfg, score)?;
//! let random = random_search(&space, 30, cfg.seed, score)?;
//! assert_eq!(evolved.trials().len(), 30);
//! // Same seed: the first P trials are random search's.
//! assert_eq!(evolved.trials()[..6], random.trials()[..6]);
//! let best = evolved.best().expect("at least one trial scored");
//! assert_eq!(best.genome.choices(), [2, 3, 1]);
//! println!("{}", space.describe(&best.genome)); // block=2 width=3 kernel=1
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - E. Real, A. Aggarwal, Y. Huang and Q. V. Le, *Regularized Evolution for Image Classifier
//!   Architecture Search*, AAAI 2019 (Algorithm 1, aging evolution).
//!   [arXiv:1802.01548](https://arxiv.org/abs/1802.01548)
//! - L. Li and A. Talwalkar, *Random Search and Reproducibility for Neural Architecture Search*,
//!   UAI 2019. [arXiv:1902.07638](https://arxiv.org/abs/1902.07638)

use std::collections::{HashSet, VecDeque};
use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Error, Result};

/// One named dimension of an [`ArchSpace`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dimension {
    /// The dimension's name (`"stage1.block"`, `"width"`, …), unique in its space.
    pub name: String,
    /// How many choices it offers (≥ 1); a genome holds an index below this.
    pub choices: usize,
}

/// A discrete architecture space: named dimensions, each with its number of choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchSpace {
    dims: Vec<Dimension>,
}

impl ArchSpace {
    /// A space from `(name, number of choices)` pairs, in genome order.
    ///
    /// Errors (naming `ArchSpace`): no dimension, a dimension with 0 choices, or two dimensions
    /// with the same name.
    pub fn new<I, S>(dims: I) -> Result<Self>
    where
        I: IntoIterator<Item = (S, usize)>,
        S: Into<String>,
    {
        const BLOCK: &str = "ArchSpace";
        let dims: Vec<Dimension> = dims
            .into_iter()
            .map(|(name, choices)| Dimension {
                name: name.into(),
                choices,
            })
            .collect();
        if dims.is_empty() {
            return Err(Error::config(
                BLOCK,
                "expected at least one dimension, got 0",
            ));
        }
        let mut seen = HashSet::new();
        for d in &dims {
            if d.choices == 0 {
                return Err(Error::config(
                    BLOCK,
                    format!("dimension `{}` must offer >= 1 choice, got 0", d.name),
                ));
            }
            if !seen.insert(d.name.as_str()) {
                return Err(Error::config(
                    BLOCK,
                    format!("dimension names must be unique, `{}` appears twice", d.name),
                ));
            }
        }
        Ok(Self { dims })
    }

    /// The dimensions, in genome order.
    pub fn dims(&self) -> &[Dimension] {
        &self.dims
    }

    /// The number of architectures in the space, $\prod_k n_k$; `None` when it overflows `u128`.
    pub fn size(&self) -> Option<u128> {
        self.dims
            .iter()
            .try_fold(1u128, |acc, d| acc.checked_mul(d.choices as u128))
    }

    /// A genome from explicit choice indices (to evaluate a hand-picked architecture).
    ///
    /// Errors (naming `ArchSpace`) unless there is one index per dimension, each below that
    /// dimension's number of choices.
    pub fn genome(&self, choices: Vec<usize>) -> Result<Genome> {
        const BLOCK: &str = "ArchSpace";
        if choices.len() != self.dims.len() {
            return Err(Error::config(
                BLOCK,
                format!(
                    "expected {} choice indices (one per dimension), got {}",
                    self.dims.len(),
                    choices.len()
                ),
            ));
        }
        for (d, &c) in self.dims.iter().zip(&choices) {
            if c >= d.choices {
                return Err(Error::config(
                    BLOCK,
                    format!("choice of `{}` must be < {}, got {c}", d.name, d.choices),
                ));
            }
        }
        Ok(Genome { choices })
    }

    /// The genome as `name=choice` pairs, e.g. `block=2 width=3 kernel=1`.
    pub fn describe(&self, genome: &Genome) -> String {
        self.dims
            .iter()
            .zip(&genome.choices)
            .map(|(d, c)| format!("{}={c}", d.name))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A uniformly random genome.
    fn sample(&self, rng: &mut StdRng) -> Genome {
        Genome {
            choices: self
                .dims
                .iter()
                .map(|d| rng.random_range(0..d.choices))
                .collect(),
        }
    }

    /// `parent` with one dimension, drawn uniformly among those with two or more choices, set
    /// to a uniformly drawn *different* choice; also returns that dimension.
    fn mutate(&self, parent: &Genome, mutable: &[usize], rng: &mut StdRng) -> (Genome, usize) {
        let dim = mutable[rng.random_range(0..mutable.len())];
        let current = parent.choices[dim];
        // Draw among the n - 1 other choices: skip over the current one.
        let drawn = rng.random_range(0..self.dims[dim].choices - 1);
        let mut choices = parent.choices.clone();
        choices[dim] = if drawn >= current { drawn + 1 } else { drawn };
        (Genome { choices }, dim)
    }
}

/// An architecture: one choice index per dimension of its [`ArchSpace`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Genome {
    choices: Vec<usize>,
}

impl Genome {
    /// The choice index of every dimension, in the space's order.
    pub fn choices(&self) -> &[usize] {
        &self.choices
    }
}

impl fmt::Display for Genome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.choices)
    }
}

/// Settings of [`regularized_evolution`]. `Default`: population 20, sample size 5, budget 100,
/// seed 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvolutionConfig {
    /// Population size $P$ (≥ 2): the number of live architectures, and of random ones that
    /// start the search. Default 20.
    pub population: usize,
    /// Tournament size $S$ (1 ≤ S ≤ P): members sampled, with replacement, to pick each
    /// parent. Default 5.
    pub sample_size: usize,
    /// Architectures evaluated in total, the first $P$ included (≥ P). Default 100.
    pub budget: usize,
    /// Seed of the search's random generator. Default 0.
    pub seed: u64,
}

impl Default for EvolutionConfig {
    fn default() -> Self {
        Self {
            population: 20,
            sample_size: 5,
            budget: 100,
            seed: 0,
        }
    }
}

impl EvolutionConfig {
    /// Sets the population size $P$.
    pub fn with_population(mut self, population: usize) -> Self {
        self.population = population;
        self
    }

    /// Sets the tournament size $S$.
    pub fn with_sample_size(mut self, sample_size: usize) -> Self {
        self.sample_size = sample_size;
        self
    }

    /// Sets the number of architectures evaluated in total.
    pub fn with_budget(mut self, budget: usize) -> Self {
        self.budget = budget;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Errors (naming `EvolutionConfig`) unless $P \ge 2$, $1 \le S \le P$ and budget $\ge P$.
    pub fn validate(&self) -> Result<()> {
        const CFG: &str = "EvolutionConfig";
        if self.population < 2 {
            return Err(Error::config(
                CFG,
                format!("population must be >= 2, got {}", self.population),
            ));
        }
        if self.sample_size == 0 || self.sample_size > self.population {
            return Err(Error::config(
                CFG,
                format!(
                    "sample_size must be in 1..={} (the population), got {}",
                    self.population, self.sample_size
                ),
            ));
        }
        if self.budget < self.population {
            return Err(Error::config(
                CFG,
                format!(
                    "budget must be >= the population ({}), got {}",
                    self.population, self.budget
                ),
            ));
        }
        Ok(())
    }
}

/// What became of one evaluated architecture.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The closure's finite score (higher is better).
    Score(f64),
    /// The closure returned an error or a non-finite score; the message says which.
    Failed(String),
}

impl Outcome {
    /// The score, `None` for a failed trial.
    pub fn score(&self) -> Option<f64> {
        match self {
            Outcome::Score(s) => Some(*s),
            Outcome::Failed(_) => None,
        }
    }
}

/// Where a trial's architecture came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Drawn uniformly from the space (random search, and evolution's first $P$ trials).
    Random,
    /// Bred by a tournament of regularized evolution.
    Mutation {
        /// The history indices of the $S$ members sampled for the tournament, in draw order.
        tournament: Vec<usize>,
        /// The history index of the winner (the best-scored member of the tournament, the
        /// earliest drawn on a tie).
        parent: usize,
        /// The dimension whose choice was changed.
        dim: usize,
    },
}

/// One evaluated architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// The architecture.
    pub genome: Genome,
    /// Its score or why it failed.
    pub outcome: Outcome,
    /// How it was proposed.
    pub origin: Origin,
}

/// Every trial of a search, in evaluation order.
#[derive(Debug, Clone, PartialEq)]
pub struct NasHistory {
    trials: Vec<Trial>,
}

impl NasHistory {
    /// The trials in the order they were evaluated.
    pub fn trials(&self) -> &[Trial] {
        &self.trials
    }

    /// The best-scored trial (the earliest on a tie); `None` when every trial failed.
    pub fn best(&self) -> Option<&Trial> {
        best_of(&self.trials, 0..self.trials.len()).map(|i| &self.trials[i])
    }

    /// The best score among the first $i + 1$ trials, for every $i$ (`None` until one scored):
    /// the curve to compare searches at equal budget.
    pub fn best_so_far(&self) -> Vec<Option<f64>> {
        let mut best: Option<f64> = None;
        self.trials
            .iter()
            .map(|t| {
                if let Some(s) = t.outcome.score() {
                    best = Some(best.map_or(s, |b| b.max(s)));
                }
                best
            })
            .collect()
    }

    /// The number of failed trials.
    pub fn failures(&self) -> usize {
        self.trials
            .iter()
            .filter(|t| t.outcome.score().is_none())
            .count()
    }
}

/// The index in `indices` order of the best-scored trial, the first on a tie (a failed trial
/// ranks below every scored one); `None` when all failed or `indices` is empty.
fn best_of(trials: &[Trial], indices: impl IntoIterator<Item = usize>) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for i in indices {
        if let Some(s) = trials[i].outcome.score() {
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// Runs the user's closure, turning an error or a non-finite score into a failed outcome.
fn evaluate<F>(eval: &mut F, genome: &Genome) -> Outcome
where
    F: FnMut(&Genome) -> Result<f64>,
{
    match eval(genome) {
        Ok(s) if s.is_finite() => Outcome::Score(s),
        Ok(s) => Outcome::Failed(format!("non-finite score {s}")),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Regularized (aging) evolution, Real et al. 2019 Algorithm 1: $P$ random architectures, then
/// until `budget` architectures are evaluated, a tournament of $S$ members sampled with
/// replacement picks the best as the parent, its mutation (one dimension changed to a different
/// choice) is evaluated and joins the population, and the oldest member leaves.
///
/// `evaluate` scores a genome, higher is better; an `Err` or a non-finite score is recorded as
/// [`Outcome::Failed`] and the search goes on.
///
/// Errors (nothing is evaluated then): an invalid `cfg` (see [`EvolutionConfig::validate`]), or
/// a space where no dimension has two or more choices (naming `regularized_evolution`).
pub fn regularized_evolution<F>(
    space: &ArchSpace,
    cfg: &EvolutionConfig,
    mut evaluate_fn: F,
) -> Result<NasHistory>
where
    F: FnMut(&Genome) -> Result<f64>,
{
    cfg.validate()?;
    let mutable: Vec<usize> = (0..space.dims.len())
        .filter(|&k| space.dims[k].choices >= 2)
        .collect();
    if mutable.is_empty() {
        return Err(Error::config(
            "regularized_evolution",
            "no dimension has >= 2 choices, so no mutation is possible (the space holds one architecture)",
        ));
    }
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    // Nothing is reserved from `budget` or `population`: a huge value must not abort on the
    // allocation before the first evaluation.
    let mut trials: Vec<Trial> = Vec::new();
    // History indices of the live members, oldest at the front.
    let mut population: VecDeque<usize> = VecDeque::new();
    while trials.len() < cfg.population {
        let genome = space.sample(&mut rng);
        let outcome = evaluate(&mut evaluate_fn, &genome);
        population.push_back(trials.len());
        trials.push(Trial {
            genome,
            outcome,
            origin: Origin::Random,
        });
    }
    while trials.len() < cfg.budget {
        let tournament: Vec<usize> = (0..cfg.sample_size)
            .map(|_| population[rng.random_range(0..population.len())])
            .collect();
        // Every member failed: any of them is as good a parent; take the first drawn.
        let parent = best_of(&trials, tournament.iter().copied()).unwrap_or(tournament[0]);
        let (genome, dim) = space.mutate(&trials[parent].genome, &mutable, &mut rng);
        let outcome = evaluate(&mut evaluate_fn, &genome);
        population.push_back(trials.len());
        population.pop_front();
        trials.push(Trial {
            genome,
            outcome,
            origin: Origin::Mutation {
                tournament,
                parent,
                dim,
            },
        });
    }
    Ok(NasHistory { trials })
}

/// Random search: `budget` architectures drawn uniformly (with replacement) from `space` with a
/// generator seeded by `seed` — the baseline every NAS result must be compared against at equal
/// budget.
///
/// Failures are recorded as in [`regularized_evolution`]. Errors (naming `random_search`):
/// `budget` 0.
pub fn random_search<F>(
    space: &ArchSpace,
    budget: usize,
    seed: u64,
    mut evaluate_fn: F,
) -> Result<NasHistory>
where
    F: FnMut(&Genome) -> Result<f64>,
{
    crate::check::positive("random_search", "budget", budget)?;
    let mut rng = StdRng::seed_from_u64(seed);
    // A loop, not `collect`: collecting `0..budget` would reserve `budget` trials up front.
    let mut trials = Vec::new();
    for _ in 0..budget {
        let genome = space.sample(&mut rng);
        let outcome = evaluate(&mut evaluate_fn, &genome);
        trials.push(Trial {
            genome,
            outcome,
            origin: Origin::Random,
        });
    }
    Ok(NasHistory { trials })
}
