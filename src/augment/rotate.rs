//! Rotation by an angle, bilinear with a fill for the corners, applied identically to a
//! segmentation mask (nearest): torchvision's `RandomRotation` and `rotate`.
//!
//! # Tip
//! Rotations encode the invariance of views without a preferred orientation: cells under a
//! microscope, aerial images, textures. Small angles (±10°) help natural photos, which have a
//! gravity direction; digits do not tolerate large ones (a 6 turns into a 9). For segmentation
//! the mask must undergo exactly the same geometric transform as the image, with nearest
//! sampling so that class ids stay ids: [`rotate_with_mask`] and `Augment::apply_with_mask`
//! share the one source map.
//!
//! # Example
//! ```
//! # fn main() -> candle_tricks::Result<()> {
//! use candle_core::{Device, Tensor};
//! use candle_tricks::augment::rotate;
//! let x = Tensor::rand(0f32, 1.0, (2, 3, 5, 7), &Device::Cpu)?;
//! let y = rotate(&x, 0.0, 0.0)?; // exact identity
//! assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, x.flatten_all()?.to_vec1::<f32>()?);
//! # Ok(())
//! # }
//! ```

use candle_core::Tensor;

use super::pipeline::{fixed, fixed_with_mask, image_dims, Plan};
use super::warp::Stage;
use super::ImageRng;
use crate::{Error, Result};

const OP: &str = "RandomRotation";

/// Rotates each image by an angle drawn uniformly from `degrees` (counter-clockwise, about the
/// centre, same size), corners set to `fill`; a fixed angle is `degrees = (a, a)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomRotation {
    /// Range of the angle in degrees.
    pub degrees: (f64, f64),
    /// Value of the corners that come from outside the image.
    pub fill: f32,
}

impl RandomRotation {
    /// Angles in $[-d, d]$ degrees, corners 0.
    pub fn new(degrees: f64) -> Self {
        Self {
            degrees: (-degrees, degrees),
            fill: 0.0,
        }
    }

    /// Angles in `degrees` (min, max).
    pub fn with_range(mut self, degrees: (f64, f64)) -> Self {
        self.degrees = degrees;
        self
    }

    /// The value of the corners.
    pub fn with_fill(mut self, fill: f32) -> Self {
        self.fill = fill;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let (lo, hi) = self.degrees;
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(Error::config(
                OP,
                format!(
                    "degrees must be finite with min <= max, got {:?}",
                    self.degrees
                ),
            ));
        }
        if !self.fill.is_finite() {
            return Err(Error::config(
                OP,
                format!("fill must be finite, got {}", self.fill),
            ));
        }
        Ok(())
    }

    pub(crate) fn sample(&self, rng: &mut ImageRng, h: usize, w: usize, plan: &mut Plan) {
        let angle = rng.uniform(self.degrees.0, self.degrees.1);
        plan.stage(Stage::rotate(angle, h, w, self.fill));
    }
}

fn plan_for(x: &Tensor, angle: f64, fill: f32) -> Result<Plan> {
    let (_, h, w) = image_dims(x)?;
    RandomRotation::new(0.0)
        .with_range((angle, angle))
        .with_fill(fill)
        .validate()?;
    let mut plan = Plan::default();
    plan.stage(Stage::rotate(angle, h, w, fill));
    Ok(plan)
}

/// Rotates every image by `angle` degrees counter-clockwise about its centre (torchvision's
/// `rotate` with bilinear interpolation, `expand=False` and `fill`).
pub fn rotate(x: &Tensor, angle: f64, fill: f32) -> Result<Tensor> {
    fixed(x, None, plan_for(x, angle, fill)?)
}

/// [`rotate`] on `x` and the same rotation on `mask` `(B, Cm, H, W)` with nearest sampling
/// (`mask_fill` in the corners). Returns `(image, mask)`.
pub fn rotate_with_mask(
    x: &Tensor,
    mask: &Tensor,
    angle: f64,
    fill: f32,
    mask_fill: f32,
) -> Result<(Tensor, Tensor)> {
    fixed_with_mask(x, mask, mask_fill, None, plan_for(x, angle, fill)?)
}
