//! Sobol low-discrepancy points and the [`SobolSampler`] that proposes them.
//!
//! # Shapes
//! Points of $[0, 1]^d$ for $d \le$ [`SOBOL_MAX_DIMS`] (64), each coordinate a multiple of
//! $2^{-32}$; at most $2^{32}$ points.
//!
//! # Tip: Sobol fills the space more evenly than random at small budgets
//! Independent uniform draws clump and leave holes: with 16 random trials in 2 dimensions some
//! quarter of the square easily gets none. A Sobol sequence places point $n$ so that every
//! power-of-two prefix is spread evenly: the first $2^m$ points put exactly one point in each of
//! the $2^m$ equal elementary intervals along every coordinate, and the discrepancy falls
//! like $(\log n)^d / n$ instead of random's $1/\sqrt{n}$. For a search with a few dozen trials
//! that means no wasted near-duplicates and no unexplored corner. Use budgets of $2^m$ points to
//! keep the balance, and the seeded random digital shift ([`SobolSampler::with_shift`]) to get
//! independent replicas (the unshifted sequence starts at the origin, every parameter at its
//! lower bound). The gain fades as $d$ grows past a dozen and after the first few hundred
//! points; like random search, Sobol ignores the scores, so a Bayesian sampler beats both once
//! there are enough trials to model the objective.
//!
//! # Example
//! ```
//! use candle_tricks::tune::{Sampler, SobolSampler};
//! # fn main() -> candle_tricks::Result<()> {
//! let mut sobol = SobolSampler::new();
//! let pts: Vec<Vec<f64>> = (0..4).map(|_| sobol.suggest(2, &[])).collect::<Result<_, _>>()?;
//! assert_eq!(pts, [[0.0, 0.0], [0.5, 0.5], [0.75, 0.25], [0.25, 0.75]]);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - I. M. Sobol, *On the distribution of points in a cube and the approximate evaluation of
//!   integrals*, USSR Computational Mathematics and Mathematical Physics 7, 1967.
//! - S. Joe, F. Y. Kuo, *Constructing Sobol sequences with better two-dimensional projections*,
//!   SIAM J. Sci. Comput. 30, 2008; direction numbers `new-joe-kuo-6.21201`,
//!   <https://web.maths.unsw.edu.au/~fkuo/sobol/>.
//! - P. Bratley, B. L. Fox, *Algorithm 659: Implementing Sobol quasirandom sequence generator*,
//!   ACM TOMS 14, 1988 (the Gray-code order used here and by `scipy.stats.qmc.Sobol`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::tune::sampler::{Observation, Sampler};
use crate::{Error, Result};

/// The most dimensions [`Sobol`] supports (the size of the direction-number table).
pub const SOBOL_MAX_DIMS: usize = 64;

/// Bits per coordinate.
const BITS: usize = 32;

/// Joe and Kuo's primitive polynomials and initial direction numbers for dimensions 2 to 64
/// (data from `new-joe-kuo-6.21201`, see the references). Each entry is the polynomial as a bit
/// pattern, leading and constant terms included, so its degree $s$ is the bit length less one,
/// and the $s$ initial values $m_1, \dots, m_s$. Dimension 1 is the van der Corput sequence.
const JOE_KUO: [(u32, &[u32]); SOBOL_MAX_DIMS - 1] = [
    (3, &[1]),
    (7, &[1, 3]),
    (11, &[1, 3, 1]),
    (13, &[1, 1, 1]),
    (19, &[1, 1, 3, 3]),
    (25, &[1, 3, 5, 13]),
    (37, &[1, 1, 5, 5, 17]),
    (41, &[1, 1, 5, 5, 5]),
    (47, &[1, 1, 7, 11, 19]),
    (55, &[1, 1, 5, 1, 1]),
    (59, &[1, 1, 1, 3, 11]),
    (61, &[1, 3, 5, 5, 31]),
    (67, &[1, 3, 3, 9, 7, 49]),
    (91, &[1, 1, 1, 15, 21, 21]),
    (97, &[1, 3, 1, 13, 27, 49]),
    (103, &[1, 1, 1, 15, 7, 5]),
    (109, &[1, 3, 1, 15, 13, 25]),
    (115, &[1, 1, 5, 5, 19, 61]),
    (131, &[1, 3, 7, 11, 23, 15, 103]),
    (137, &[1, 3, 7, 13, 13, 15, 69]),
    (143, &[1, 1, 3, 13, 7, 35, 63]),
    (145, &[1, 3, 5, 9, 1, 25, 53]),
    (157, &[1, 3, 1, 13, 9, 35, 107]),
    (167, &[1, 3, 1, 5, 27, 61, 31]),
    (171, &[1, 1, 5, 11, 19, 41, 61]),
    (185, &[1, 3, 5, 3, 3, 13, 69]),
    (191, &[1, 1, 7, 13, 1, 19, 1]),
    (193, &[1, 3, 7, 5, 13, 19, 59]),
    (203, &[1, 1, 3, 9, 25, 29, 41]),
    (211, &[1, 3, 5, 13, 23, 1, 55]),
    (213, &[1, 3, 7, 3, 13, 59, 17]),
    (229, &[1, 3, 1, 3, 5, 53, 69]),
    (239, &[1, 1, 5, 5, 23, 33, 13]),
    (241, &[1, 1, 7, 7, 1, 61, 123]),
    (247, &[1, 1, 7, 9, 13, 61, 49]),
    (253, &[1, 3, 3, 5, 3, 55, 33]),
    (285, &[1, 3, 1, 15, 31, 13, 49, 245]),
    (299, &[1, 3, 5, 15, 31, 59, 63, 97]),
    (301, &[1, 3, 1, 11, 11, 11, 77, 249]),
    (333, &[1, 3, 1, 11, 27, 43, 71, 9]),
    (351, &[1, 1, 7, 15, 21, 11, 81, 45]),
    (355, &[1, 3, 7, 3, 25, 31, 65, 79]),
    (357, &[1, 3, 1, 1, 19, 11, 3, 205]),
    (361, &[1, 1, 5, 9, 19, 21, 29, 157]),
    (369, &[1, 3, 7, 11, 1, 33, 89, 185]),
    (391, &[1, 3, 3, 3, 15, 9, 79, 71]),
    (397, &[1, 3, 7, 11, 15, 39, 119, 27]),
    (425, &[1, 1, 3, 1, 11, 31, 97, 225]),
    (451, &[1, 1, 1, 3, 23, 43, 57, 177]),
    (463, &[1, 3, 7, 7, 17, 17, 37, 71]),
    (487, &[1, 3, 1, 5, 27, 63, 123, 213]),
    (501, &[1, 1, 3, 5, 11, 43, 53, 133]),
    (529, &[1, 3, 5, 5, 29, 17, 47, 173, 479]),
    (539, &[1, 3, 3, 11, 3, 1, 109, 9, 69]),
    (545, &[1, 1, 1, 5, 17, 39, 23, 5, 343]),
    (557, &[1, 3, 1, 5, 25, 15, 31, 103, 499]),
    (563, &[1, 1, 1, 11, 11, 17, 63, 105, 183]),
    (601, &[1, 1, 5, 11, 9, 29, 97, 231, 363]),
    (607, &[1, 1, 5, 15, 19, 45, 41, 7, 383]),
    (617, &[1, 3, 7, 7, 31, 19, 83, 137, 221]),
    (623, &[1, 1, 1, 3, 23, 15, 111, 223, 83]),
    (631, &[1, 1, 5, 13, 31, 15, 55, 25, 161]),
    (637, &[1, 1, 3, 13, 25, 47, 39, 87, 257]),
];

/// An unscrambled Sobol sequence in Gray-code order (point 0 is the origin), optionally XORed
/// with a fixed random digital shift.
#[derive(Debug, Clone)]
pub struct Sobol {
    /// `directions[d][j]`: direction number $j$ of coordinate $d$, scaled to 32 bits.
    directions: Vec<[u32; BITS]>,
    /// The current point's integer coordinates.
    state: Vec<u32>,
    /// XORed into every output point.
    shift: Vec<u32>,
    /// The index of the next point.
    index: u64,
}

impl Sobol {
    /// The sequence in `dims` dimensions, from its first point.
    pub fn new(dims: usize) -> Result<Self> {
        if dims == 0 || dims > SOBOL_MAX_DIMS {
            return Err(Error::config(
                "Sobol",
                format!("expected 1 to {SOBOL_MAX_DIMS} dimensions, got {dims}"),
            ));
        }
        let mut directions = Vec::with_capacity(dims);
        let mut first = [0u32; BITS];
        for (j, v) in first.iter_mut().enumerate() {
            *v = 1 << (BITS - 1 - j);
        }
        directions.push(first);
        for &(poly, init) in &JOE_KUO[..dims - 1] {
            directions.push(direction_numbers(poly, init));
        }
        Ok(Self {
            directions,
            state: vec![0; dims],
            shift: vec![0; dims],
            index: 0,
        })
    }

    /// XORs every point with a shift drawn from `seed`: a random digital shift keeps the
    /// sequence's balance and makes it start away from the origin.
    pub fn with_shift(mut self, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        for s in &mut self.shift {
            *s = rng.random();
        }
        self
    }

    /// The number of dimensions.
    pub fn dims(&self) -> usize {
        self.directions.len()
    }

    /// The next point.
    pub fn next_point(&mut self) -> Result<Vec<f64>> {
        if self.index > u64::from(u32::MAX) {
            return Err(Error::config(
                "Sobol",
                format!("the sequence has at most 2^{BITS} points"),
            ));
        }
        if self.index > 0 {
            // Gray code: point n differs from point n - 1 in direction number tz(n).
            let j = self.index.trailing_zeros() as usize;
            for (x, v) in self.state.iter_mut().zip(&self.directions) {
                *x ^= v[j];
            }
        }
        self.index += 1;
        let scale = 1.0 / (1u64 << BITS) as f64;
        Ok(self
            .state
            .iter()
            .zip(&self.shift)
            .map(|(&x, &s)| f64::from(x ^ s) * scale)
            .collect())
    }
}

/// The 32 direction numbers of one coordinate from its polynomial and initial values, by the
/// recurrence $m_j = 2^s m_{j-s} \oplus m_{j-s} \oplus \bigoplus_{k=1}^{s-1} 2^k a_k m_{j-k}$.
fn direction_numbers(poly: u32, init: &[u32]) -> [u32; BITS] {
    let s = init.len();
    let mut m = [0u32; BITS];
    m[..s].copy_from_slice(init);
    for j in s..BITS {
        let mut x = m[j - s] ^ (m[j - s] << s);
        for k in 1..s {
            if (poly >> (s - k)) & 1 == 1 {
                x ^= m[j - k] << k;
            }
        }
        m[j] = x;
    }
    for (j, x) in m.iter_mut().enumerate() {
        *x <<= BITS - 1 - j;
    }
    m
}

/// Proposes the points of a [`Sobol`] sequence in order, ignoring the scores.
///
/// The sequence is created at the first call, in the dimension the study asks for; a later
/// call in another dimension is an error.
#[derive(Debug, Clone, Default)]
pub struct SobolSampler {
    shift: Option<u64>,
    sequence: Option<Sobol>,
}

impl SobolSampler {
    /// The unscrambled sequence (the first point is the origin).
    pub fn new() -> Self {
        Self::default()
    }

    /// The sequence with a random digital shift drawn from `seed`.
    pub fn with_shift(seed: u64) -> Self {
        Self {
            shift: Some(seed),
            sequence: None,
        }
    }
}

impl Sampler for SobolSampler {
    fn suggest(&mut self, dims: usize, _history: &[Observation]) -> Result<Vec<f64>> {
        let seq = match &mut self.sequence {
            Some(seq) => seq,
            slot => {
                let seq = Sobol::new(dims)?;
                slot.insert(match self.shift {
                    Some(seed) => seq.with_shift(seed),
                    None => seq,
                })
            }
        };
        if seq.dims() != dims {
            return Err(Error::config(
                "SobolSampler",
                format!(
                    "expected {} dimensions (those of the first call), got {dims}",
                    seq.dims()
                ),
            ));
        }
        seq.next_point()
    }
}
