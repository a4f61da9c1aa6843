//! Interleaved 2-D spirals, one arm per class: a seeded toy problem where the unlabeled points
//! show where the classes run.
//!
//! # Shapes
//! [`spirals()`] returns points `(N, 2)` f32 and labels `(N,)` u32 in `0..classes` (each point's
//! class uniform at random).
//!
//! Arm $c$ of $K$ is the curve $r (\cos \theta, \sin \theta)$ with
//! $\theta = 2 \pi (T r + c / K)$ for radii $r \in [r_0, 1]$, $T$ = [`SpiralsConfig::turns`] and
//! $r_0$ = [`SpiralsConfig::inner_radius`]; a point's radius is drawn as $r = \sqrt{u}$ with
//! $u$ uniform in $[r_0^2, 1]$, so the points spread about evenly along the arm (an arm's
//! length grows like $r^2$), and Gaussian noise of standard deviation
//! [`SpiralsConfig::noise`] is added to both coordinates.
//!
//! # Tip
//! **A geometry test for the cluster assumption.** Semi-supervised learning only helps when the
//! unlabeled inputs say something about the labels: classes form dense regions separated by
//! emptier ones (Chapelle et al. 2006). Spirals make that visible. Arms $1 / (K T)$ apart
//! radially, with noise well below that gap, are separated by empty space; a handful of labels
//! per arm leaves a supervised network free to cut across arms between them, while
//! pseudo-labels and consistency on the unlabeled points push the boundary into the gaps. Raise
//! the noise towards the gap and the clusters merge: the unlabeled points then carry no
//! information and semi-supervised learning stops paying off, which is the point to check
//! before relying on it for real data.
//!
//! # Example
//! ```
//! use candle_core::Device;
//! use candle_tricks::data::{spirals, SpiralsConfig};
//! use rand::{rngs::StdRng, SeedableRng};
//! # fn main() -> candle_tricks::Result<()> {
//! let cfg = SpiralsConfig::default().with_classes(4);
//! let (x, y) = spirals(&mut StdRng::seed_from_u64(0), 1000, &cfg, &Device::Cpu)?;
//! assert_eq!(x.dims(), &[1000, 2]);
//! assert!(y.to_vec1::<u32>()?.iter().all(|&c| c < 4));
//! // Every point lies near the unit disc (radius at most 1 plus a few noise deviations).
//! let r = x.sqr()?.sum(1)?.sqrt()?.max_all()?.to_scalar::<f32>()?;
//! assert!(r < 1.0 + 6.0 * cfg.noise);
//! // The same seed draws the same points.
//! let (x2, _) = spirals(&mut StdRng::seed_from_u64(0), 1000, &cfg, &Device::Cpu)?;
//! assert_eq!((x - x2)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Chapelle, Schölkopf, Zien (eds.), *Semi-Supervised Learning*, MIT Press, 2006 (the
//!   cluster and manifold assumptions).
//! - Oliver et al., *Realistic Evaluation of Deep Semi-Supervised Learning Algorithms*, 2018,
//!   <https://arxiv.org/abs/1804.09170> (a 2-D toy problem to see what each method does).

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rand::Rng;

/// The geometry of [`spirals()`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpiralsConfig {
    /// Number of arms, one per class, at least 2. Default 3.
    pub classes: usize,
    /// Full turns of each arm between the inner radius and 1, positive. Default 1.5.
    pub turns: f32,
    /// Standard deviation of the Gaussian noise on each coordinate, at least 0. Default 0.03.
    pub noise: f32,
    /// Radius where the arms start, in $[0, 1)$: near the centre the arms crowd together.
    /// Default 0.15.
    pub inner_radius: f32,
}

impl Default for SpiralsConfig {
    fn default() -> Self {
        Self {
            classes: 3,
            turns: 1.5,
            noise: 0.03,
            inner_radius: 0.15,
        }
    }
}

impl SpiralsConfig {
    /// Sets [`SpiralsConfig::classes`].
    pub fn with_classes(mut self, classes: usize) -> Self {
        self.classes = classes;
        self
    }

    /// Sets [`SpiralsConfig::turns`].
    pub fn with_turns(mut self, turns: f32) -> Self {
        self.turns = turns;
        self
    }

    /// Sets [`SpiralsConfig::noise`].
    pub fn with_noise(mut self, noise: f32) -> Self {
        self.noise = noise;
        self
    }

    /// Sets [`SpiralsConfig::inner_radius`].
    pub fn with_inner_radius(mut self, inner_radius: f32) -> Self {
        self.inner_radius = inner_radius;
        self
    }

    /// Checks every field; the error names `spirals`, the field and its value.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::config("spirals", msg));
        if self.classes < 2 || self.classes > u32::MAX as usize {
            return bad(format!(
                "classes must be in [2, 2^32), got {}",
                self.classes
            ));
        }
        if !(self.turns.is_finite() && self.turns > 0.0) {
            return bad(format!("turns must be finite and > 0, got {}", self.turns));
        }
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            return bad(format!("noise must be finite and ≥ 0, got {}", self.noise));
        }
        if !(0.0..1.0).contains(&self.inner_radius) {
            return bad(format!(
                "inner_radius must be in [0, 1), got {}",
                self.inner_radius
            ));
        }
        Ok(())
    }
}

/// `n` points on `cfg.classes` interleaved spirals with their labels, drawn from `rng`. Errors
/// (naming `spirals`) on `n = 0`, an invalid config or a size that cannot be allocated.
pub fn spirals(
    rng: &mut impl Rng,
    n: usize,
    cfg: &SpiralsConfig,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    cfg.validate()?;
    if n == 0 {
        return Err(Error::config("spirals", "need n ≥ 1 points, got n = 0"));
    }
    crate::check::allocatable("spirals", "points", &[n, 2], DType::F32)?;
    let r0_sq = cfg.inner_radius * cfg.inner_radius;
    let mut points = Vec::with_capacity(2 * n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let class = rng.random_range(0..cfg.classes as u32);
        let r = rng.random_range(r0_sq..=1.0f32).sqrt();
        let theta = std::f32::consts::TAU * (cfg.turns * r + class as f32 / cfg.classes as f32);
        let (ex, ey) = normal_pair(rng);
        points.push(r * theta.cos() + cfg.noise * ex);
        points.push(r * theta.sin() + cfg.noise * ey);
        labels.push(class);
    }
    Ok((
        Tensor::from_vec(points, (n, 2), device)?,
        Tensor::from_vec(labels, n, device)?,
    ))
}

/// Two independent standard normal values (Box-Muller: one radius, two angles apart by a
/// quarter turn); `1 - u` keeps the logarithm's argument in (0, 1].
fn normal_pair(rng: &mut impl Rng) -> (f32, f32) {
    let u: f32 = rng.random();
    let radius = (-2.0 * (1.0 - u).ln()).sqrt();
    let angle = std::f32::consts::TAU * rng.random::<f32>();
    (radius * angle.cos(), radius * angle.sin())
}
