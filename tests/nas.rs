//! Regularized evolution against random search on a synthetic structured objective (issue 16,
//! must-hold 3), reproducibility, and the tournament / aging invariants of Algorithm 1.

use candle_tricks::tune::nas::{
    random_search, regularized_evolution, ArchSpace, EvolutionConfig, Genome, NasHistory, Origin,
    Outcome,
};
use candle_tricks::Error;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIMS: usize = 6;
const CHOICES: usize = 4;

/// A fixed random lookup table with additive and pairwise-interaction structure: the score of a
/// genome is $\sum_k a_k(c_k) + \sum_k b_k(c_k, c_{k+1})$, the kind of landscape where one
/// mutation of a good architecture is usually still good.
struct Landscape {
    additive: Vec<[f64; CHOICES]>,
    interaction: Vec<[[f64; CHOICES]; CHOICES]>,
}

impl Landscape {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut u = |scale: f64| scale * rng.random_range(-1.0..1.0);
        let additive = (0..DIMS).map(|_| [(); CHOICES].map(|_| u(1.0))).collect();
        let interaction = (0..DIMS - 1)
            .map(|_| [(); CHOICES].map(|_| [(); CHOICES].map(|_| u(0.6))))
            .collect();
        Self {
            additive,
            interaction,
        }
    }

    fn score(&self, g: &Genome) -> f64 {
        let c = g.choices();
        let add: f64 = (0..DIMS).map(|k| self.additive[k][c[k]]).sum();
        let inter: f64 = (0..DIMS - 1)
            .map(|k| self.interaction[k][c[k]][c[k + 1]])
            .sum();
        add + inter
    }

    /// The global optimum, by enumerating all $4^6$ architectures.
    fn optimum(&self, space: &ArchSpace) -> f64 {
        (0..CHOICES.pow(DIMS as u32))
            .map(|mut code| {
                let choices = (0..DIMS)
                    .map(|_| {
                        let c = code % CHOICES;
                        code /= CHOICES;
                        c
                    })
                    .collect();
                self.score(&space.genome(choices).unwrap())
            })
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

fn space() -> ArchSpace {
    ArchSpace::new((0..DIMS).map(|k| (format!("stage{k}"), CHOICES))).unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn best(h: &NasHistory) -> f64 {
    h.best().unwrap().outcome.score().unwrap()
}

/// Must-hold 3: at equal budget, over 25 seeds (a different landscape per seed), evolution's
/// median best is at least random search's.
#[test]
fn evolution_beats_random_search_at_equal_budget() {
    const SEEDS: u64 = 25;
    const BUDGET: usize = 60;
    let space = space();
    let cfg = EvolutionConfig::default()
        .with_population(10)
        .with_sample_size(3)
        .with_budget(BUDGET);
    let (mut evo_regret, mut rnd_regret) = (Vec::new(), Vec::new());
    let (mut evo_wins, mut ties) = (0, 0);
    println!("seed | optimum | evolution best | random best   ({BUDGET} evaluations, 4^6 space)");
    for seed in 0..SEEDS {
        let land = Landscape::new(1000 + seed);
        let opt = land.optimum(&space);
        let f = |g: &Genome| Ok(land.score(g));
        let evo = best(&regularized_evolution(&space, &cfg.with_seed(seed), f).unwrap());
        let rnd = best(&random_search(&space, BUDGET, seed, f).unwrap());
        println!("{seed:4} | {opt:7.3} | {evo:14.3} | {rnd:11.3}");
        evo_regret.push(opt - evo);
        rnd_regret.push(opt - rnd);
        evo_wins += usize::from(evo > rnd);
        ties += usize::from(evo == rnd);
    }
    let (evo_med, rnd_med) = (median(evo_regret), median(rnd_regret));
    println!(
        "median regret (optimum - best): evolution {evo_med:.3}, random {rnd_med:.3}; \
         evolution better on {evo_wins}/{SEEDS} seeds, tied on {ties}"
    );
    // Lower regret is a higher best: the landscapes differ per seed, so compare regrets.
    assert!(evo_med <= rnd_med, "{evo_med} > {rnd_med}");
}

#[test]
fn same_seed_same_history_and_evolution_starts_like_random_search() {
    let space = space();
    let land = Landscape::new(7);
    let f = |g: &Genome| Ok(land.score(g));
    let cfg = EvolutionConfig::default()
        .with_population(8)
        .with_sample_size(3)
        .with_budget(40)
        .with_seed(42);
    let a = regularized_evolution(&space, &cfg, f).unwrap();
    let b = regularized_evolution(&space, &cfg, f).unwrap();
    assert_eq!(a, b);
    let c = regularized_evolution(&space, &cfg.with_seed(43), f).unwrap();
    assert_ne!(a, c);
    let r = random_search(&space, 40, 42, f).unwrap();
    assert_eq!(r, random_search(&space, 40, 42, f).unwrap());
    assert_eq!(a.trials()[..8], r.trials()[..8]);
}

/// Algorithm 1's invariants, read off the history: the first P trials are random; each later
/// one comes from a tournament of S members all alive at the time (the last P trials, so the
/// oldest left, whatever its score), won by the best-scored of them, mutated in exactly one
/// dimension to a different choice.
#[test]
fn tournament_and_aging_invariants() {
    let space = ArchSpace::new([("block", 4), ("width", 3), ("kernel", 1), ("depth", 5)]).unwrap();
    let land = |g: &Genome| {
        let c = g.choices();
        Ok((c[0] * 3 + c[1] * 7 + c[3]) as f64 % 11.0)
    };
    let (p, s) = (6, 4);
    let cfg = EvolutionConfig::default()
        .with_population(p)
        .with_sample_size(s)
        .with_budget(80)
        .with_seed(5);
    let h = regularized_evolution(&space, &cfg, land).unwrap();
    let trials = h.trials();
    assert_eq!(trials.len(), 80);
    let mut parents_outside_best = 0;
    for (i, t) in trials.iter().enumerate() {
        match &t.origin {
            Origin::Random => assert!(i < p, "trial {i} random after the first P"),
            Origin::Mutation {
                tournament,
                parent,
                dim,
            } => {
                assert!(i >= p);
                assert_eq!(tournament.len(), s);
                assert!(
                    tournament.iter().all(|&m| m + p >= i && m < i),
                    "dead member"
                );
                let score = |m: usize| trials[m].outcome.score().unwrap();
                let top = tournament
                    .iter()
                    .map(|&m| score(m))
                    .fold(f64::MIN, f64::max);
                let first_top = *tournament.iter().find(|&&m| score(m) == top).unwrap();
                assert_eq!(*parent, first_top);
                assert_ne!(*dim, 2, "the single-choice dimension was mutated");
                let (pg, cg) = (trials[*parent].genome.choices(), t.genome.choices());
                assert_ne!(pg[*dim], cg[*dim]);
                assert_eq!((0..4).filter(|&k| pg[k] != cg[k]).count(), 1);
                // Aging, not culling: the best member of the whole history may already be dead.
                let best_alive = (i - p..i).map(score).fold(f64::MIN, f64::max);
                parents_outside_best += usize::from(score(*parent) < best_alive);
            }
        }
    }
    // With S < P the tournament does not always see the best live member.
    assert!(parents_outside_best > 0);
    let best = h.best().unwrap();
    assert_eq!(best.outcome.score(), Some(10.0));
    let curve = h.best_so_far();
    assert!(curve.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(curve[79], Some(10.0));
}

/// An `Err` or a NaN from the closure is a failed trial: recorded, never a panic, never a
/// parent while a scored member is in the tournament; the budget is still spent exactly.
#[test]
fn failed_evaluations_are_recorded_and_the_search_goes_on() {
    let space = space();
    let land = Landscape::new(3);
    let mut calls = 0;
    let f = |g: &Genome| {
        calls += 1;
        match g.choices()[0] {
            0 => Err(Error::config("train", "out of memory")),
            1 => Ok(f64::NAN),
            _ => Ok(land.score(g)),
        }
    };
    let cfg = EvolutionConfig::default()
        .with_population(10)
        .with_sample_size(3)
        .with_budget(50)
        .with_seed(1);
    let h = regularized_evolution(&space, &cfg, f).unwrap();
    assert_eq!(calls, 50);
    assert!(h.failures() > 0);
    for t in h.trials() {
        let failed = matches!(t.outcome, Outcome::Failed(_));
        assert_eq!(failed, t.genome.choices()[0] < 2);
        if let Origin::Mutation {
            tournament, parent, ..
        } = &t.origin
        {
            let any_scored = tournament
                .iter()
                .any(|&m| h.trials()[m].outcome.score().is_some());
            assert_eq!(h.trials()[*parent].outcome.score().is_some(), any_scored);
        }
    }
    let msg = format!(
        "{:?}",
        h.trials().iter().find(|t| t.genome.choices()[0] == 0)
    );
    assert!(msg.contains("out of memory"), "{msg}");
    let r = random_search(&space, 20, 0, |_| Ok(f64::INFINITY)).unwrap();
    assert_eq!((r.failures(), r.best()), (20, None));
}
