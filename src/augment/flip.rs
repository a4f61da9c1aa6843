//! Random horizontal and vertical flips (torchvision's `RandomHorizontalFlip` /
//! `RandomVerticalFlip`), and the fixed [`hflip`] / [`vflip`].
//!
//! # Tip
//! A flip encodes mirror symmetry: a left-right flipped cat is still a cat, so natural photos
//! take horizontal flips (doubling the data for free). Digits and text do not (a mirrored "2" is
//! no digit, "b" becomes "d"), and vertical flips suit only views without a gravity direction:
//! aerial, satellite and microscope images.
//!
//! # Example
//! ```
//! # fn main() -> candle_tricks::Result<()> {
//! use candle_core::{Device, Tensor};
//! use candle_tricks::augment::hflip;
//! let x = Tensor::arange(0f32, 6.0, &Device::Cpu)?.reshape((1, 1, 2, 3))?;
//! assert_eq!(hflip(&x)?.flatten_all()?.to_vec1::<f32>()?, [2.0, 1.0, 0.0, 5.0, 4.0, 3.0]);
//! let twice = hflip(&hflip(&x)?)?; // an involution
//! assert_eq!(twice.flatten_all()?.to_vec1::<f32>()?, x.flatten_all()?.to_vec1::<f32>()?);
//! # Ok(())
//! # }
//! ```

use candle_core::Tensor;

use super::pipeline::{fixed, Plan};
use super::warp::Stage;
use super::ImageRng;
use crate::{check, Result};

/// Flips each image left-right with probability `p`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomHorizontalFlip {
    /// Probability of a flip, in $[0, 1]$ (0.5 by default).
    pub p: f64,
}

/// Flips each image top-bottom with probability `p`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomVerticalFlip {
    /// Probability of a flip, in $[0, 1]$ (0.5 by default).
    pub p: f64,
}

macro_rules! flip_config {
    ($t:ident, $horizontal:expr, $name:expr) => {
        impl Default for $t {
            fn default() -> Self {
                Self { p: 0.5 }
            }
        }

        impl $t {
            /// A flip with probability `p`.
            pub fn new(p: f64) -> Self {
                Self { p }
            }

            pub(crate) fn validate(&self) -> Result<()> {
                check::unit_interval($name, "p", self.p)
            }

            pub(crate) fn sample(&self, rng: &mut ImageRng, h: usize, w: usize, plan: &mut Plan) {
                if rng.bernoulli(self.p) {
                    plan.stage(Stage::flip($horizontal, h, w));
                }
            }
        }
    };
}
flip_config!(RandomHorizontalFlip, true, "RandomHorizontalFlip");
flip_config!(RandomVerticalFlip, false, "RandomVerticalFlip");

/// Mirrors every image of `(B, C, H, W)` left-right (torchvision's `horizontal_flip`).
pub fn hflip(x: &Tensor) -> Result<Tensor> {
    flip(x, true)
}

/// Mirrors every image of `(B, C, H, W)` top-bottom (torchvision's `vertical_flip`).
pub fn vflip(x: &Tensor) -> Result<Tensor> {
    flip(x, false)
}

fn flip(x: &Tensor, horizontal: bool) -> Result<Tensor> {
    let (_, h, w) = super::pipeline::image_dims(x)?;
    let mut plan = Plan::default();
    plan.stage(Stage::flip(horizontal, h, w));
    fixed(x, None, plan)
}
