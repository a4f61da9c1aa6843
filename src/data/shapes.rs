//! Synthetic shapes: circles, squares, triangles and crosses of random size, position and
//! intensity on noise, at any image size (the quickstart's data set).
//!
//! # Shapes
//! [`shapes_batch`] returns images `(N, 1, S, S)` f32 (shape pixels at an intensity in
//! $[0.4, 1)$, background 0, plus uniform noise in $[-0.25, 0.25)$) and labels `(N,)` u32
//! indexing [`SHAPE_CLASSES`].
//!
//! # Tip
//! A generated data set proves that a model *can* learn a rule and makes an experiment
//! repeatable to the bit (a seeded generator, no files); draw the validation set once, up front,
//! and training batches fresh, so the model never sees a validation image. What it cannot show
//! is how a model copes with real ambiguity; for that, use [`crate::data::digits()`].
//!
//! # Example
//! ```
//! use candle_core::Device;
//! use candle_tricks::data::shapes::{shapes_batch, SHAPE_CLASSES};
//! use rand::{rngs::StdRng, SeedableRng};
//! # fn main() -> candle_tricks::Result<()> {
//! let mut rng = StdRng::seed_from_u64(0);
//! let (x, y) = shapes_batch(&mut rng, 8, 40, &Device::Cpu)?;
//! assert_eq!(x.dims(), &[8, 1, 40, 40]);
//! assert!(y.to_vec1::<u32>()?.iter().all(|&l| (l as usize) < SHAPE_CLASSES.len()));
//! // The same seed draws the same batch.
//! let (x2, _) = shapes_batch(&mut StdRng::seed_from_u64(0), 8, 40, &Device::Cpu)?;
//! assert_eq!((x - x2)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
//! # Ok(())
//! # }
//! ```

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rand::Rng;

/// The class names, in label order.
pub const SHAPE_CLASSES: [&str; 4] = ["circle", "square", "triangle", "cross"];

/// The smallest image side: below it a shape of random size and position no longer fits.
pub const MIN_SIZE: usize = 8;

/// A batch of `n` images of side `size` with their labels (classes uniform at random), from
/// `rng`. Errors (naming `shapes_batch`) on `n = 0` or `size` below [`MIN_SIZE`].
pub fn shapes_batch(
    rng: &mut impl Rng,
    n: usize,
    size: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    if n == 0 || size < MIN_SIZE {
        return Err(Error::config(
            "shapes_batch",
            format!("need n ≥ 1 and size ≥ {MIN_SIZE}, got n = {n}, size = {size}"),
        ));
    }
    crate::check::allocatable("shapes_batch", "images", &[n, size, size], DType::F32)?;
    let labels: Vec<u32> = (0..n)
        .map(|_| rng.random_range(0..SHAPE_CLASSES.len() as u32))
        .collect();
    let pixels: Vec<f32> = labels
        .iter()
        .flat_map(|&l| draw(rng, l as usize, size))
        .collect();
    Ok((
        Tensor::from_vec(pixels, (n, 1, size, size), device)?,
        Tensor::from_vec(labels, n, device)?,
    ))
}

/// One `size × size` image of class `label`: a filled shape plus uniform noise.
fn draw(rng: &mut impl Rng, label: usize, size: usize) -> Vec<f32> {
    let s = size as f32;
    let r = rng.random_range(0.18 * s..0.38 * s); // half-extent of the shape
    let (cx, cy) = (rng.random_range(r..s - r), rng.random_range(r..s - r));
    let intensity = rng.random_range(0.4f32..1.0);
    let mut img = vec![0f32; size * size];
    for y in 0..size {
        for x in 0..size {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            let (ax, ay) = (dx.abs(), dy.abs());
            let inside = match label {
                0 => dx * dx + dy * dy <= r * r,
                1 => ax.max(ay) <= 0.85 * r,
                2 => ay <= r && ax <= 0.5 * (dy + r), // apex up
                _ => (ax <= r / 3.0 && ay <= r) || (ay <= r / 3.0 && ax <= r),
            };
            let noise = rng.random_range(-0.25f32..0.25);
            img[y * size + x] = if inside { intensity + noise } else { noise };
        }
    }
    img
}
