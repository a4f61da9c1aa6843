//! The per-image random stream: every image's draws come from a generator keyed by
//! `(seed, image index)`, so a batch is the same bit for bit whatever the thread count and
//! whichever worker takes which image.
//!
//! # Tip
//! A shared sequential generator makes augmented batches depend on the order in which threads
//! reach it; keying each image's stream by its index removes that order (the idea of counter-based
//! generators such as Philox, here with SplitMix64, the mixer the attention dropout of
//! `ops::flash_attention` already uses). Change the seed every step (say
//! `seed = epoch * steps + step`) so each epoch sees new draws.
//!
//! Beta draws for Mixup come from two Gamma draws, $B = X / (X + Y)$ with
//! $X \sim \Gamma(\alpha)$, $Y \sim \Gamma(\beta)$, each by Marsaglia and Tsang's squeeze method.
//!
//! # References
//! - Steele, Lea, Flood, *Fast Splittable Pseudorandom Number Generators*, 2014,
//!   <https://doi.org/10.1145/2714064.2660195>
//! - Marsaglia, Tsang, *A Simple Method for Generating Gamma Variables*, 2000,
//!   <https://doi.org/10.1145/358407.358414>

use rand::{Rng, RngCore};

use crate::ops::flash_attention::splitmix64;

/// SplitMix64's increment (the golden ratio in 64 bits).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// A SplitMix64 stream keyed by `(seed, stream)`: image `i` of a batch draws from
/// `ImageRng::new(seed, i)`. Implements [`rand::RngCore`], so `rand`'s `Rng` methods apply.
///
/// ```
/// use candle_tricks::augment::ImageRng;
/// use rand::Rng;
/// let a: Vec<u32> = (0..4).map(|i| ImageRng::new(7, i).random()).collect();
/// let b: Vec<u32> = (0..4).rev().map(|i| ImageRng::new(7, i).random()).collect();
/// assert!(a.iter().eq(b.iter().rev())); // the order of the draws does not matter
/// assert_ne!(a[0], a[1]);
/// ```
#[derive(Debug, Clone)]
pub struct ImageRng {
    state: u64,
}

impl ImageRng {
    /// The stream of `stream` (an image index) under `seed`.
    pub fn new(seed: u64, stream: u64) -> Self {
        Self {
            state: splitmix64(seed ^ splitmix64(stream)),
        }
    }

    /// A uniform draw in $[lo, hi)$ (`lo` when the range is empty), as `torch.empty(1).uniform_`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.random::<f64>()
    }

    /// A uniform integer in `lo..hi` (`lo` when `hi <= lo`), as `torch.randint(lo, hi)`.
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            lo
        } else {
            self.random_range(lo..hi)
        }
    }

    /// `true` with probability `p`.
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.random::<f64>() < p
    }

    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        // 1 - u lies in (0, 1], so the log is finite.
        let u1 = 1.0 - self.random::<f64>();
        let u2 = self.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A $\Gamma(k, 1)$ draw, `k > 0` (Marsaglia–Tsang; for `k < 1` boosted through $k + 1$).
    pub fn gamma(&mut self, k: f64) -> f64 {
        if k < 1.0 {
            let u = 1.0 - self.random::<f64>();
            return self.gamma(k + 1.0) * u.powf(1.0 / k);
        }
        let d = k - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = 1.0 - self.random::<f64>();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// A $\mathrm{Beta}(a, b)$ draw from two Gamma draws, `a, b > 0`.
    ///
    /// ```
    /// use candle_tricks::augment::ImageRng;
    /// let mut rng = ImageRng::new(1, 0);
    /// let n = 20_000;
    /// let mean = (0..n).map(|_| rng.beta(2.0, 6.0)).sum::<f64>() / n as f64;
    /// assert!((mean - 0.25).abs() < 0.01); // E = a / (a + b)
    /// ```
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        if x + y > 0.0 {
            x / (x + y)
        } else {
            // Both draws underflowed (tiny shapes): the limit puts the mass on 0 and 1.
            f64::from(u8::from(self.bernoulli(a / (a + b))))
        }
    }
}

impl RngCore for ImageRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        let out = splitmix64(self.state);
        self.state = self.state.wrapping_add(GOLDEN);
        out
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
