//! Pad + random crop (torchvision's `RandomCrop(size, padding, fill)`) and the fixed [`crop`].
//!
//! # Tip
//! A random crop of a zero-padded image (CIFAR's "pad 4, crop 32") shifts the content by up to
//! the padding in each direction: it teaches translation invariance the convolutions only
//! approximate (striding and pooling break exact equivariance). Keep the shift small against
//! the object: a crop that cuts the object out changes the label.
//!
//! # Example
//! ```
//! # fn main() -> candle_tricks::Result<()> {
//! use candle_core::{Device, Tensor};
//! use candle_tricks::augment::crop;
//! let x = Tensor::arange(1f32, 5.0, &Device::Cpu)?.reshape((1, 1, 2, 2))?;
//! // A box reaching one pixel past the top-left corner: the outside is the fill.
//! let y = crop(&x, -1, -1, 2, 2, 0.0)?;
//! assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [0.0, 0.0, 0.0, 1.0]);
//! # Ok(())
//! # }
//! ```

use candle_core::Tensor;

use super::pipeline::{fixed, image_dims, Plan};
use super::warp::Stage;
use super::ImageRng;
use crate::{check, Error, Result};

const OP: &str = "RandomCrop";

/// Pads each image by `padding` (left, top, right, bottom) with `fill`, then crops a `size`
/// window at a uniform position, as torchvision's `RandomCrop`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomCrop {
    /// Output `(height, width)`.
    pub size: (usize, usize),
    /// Padding (left, top, right, bottom), torchvision's order.
    pub padding: [usize; 4],
    /// The value of the padding.
    pub fill: f32,
}

impl RandomCrop {
    /// A `size` crop without padding.
    pub fn new(size: (usize, usize)) -> Self {
        Self {
            size,
            padding: [0; 4],
            fill: 0.0,
        }
    }

    /// The same padding on all four sides.
    pub fn with_padding(mut self, padding: usize) -> Self {
        self.padding = [padding; 4];
        self
    }

    /// Padding (left, top, right, bottom).
    pub fn with_padding_ltrb(mut self, padding: [usize; 4]) -> Self {
        self.padding = padding;
        self
    }

    /// The value of the padding.
    pub fn with_fill(mut self, fill: f32) -> Self {
        self.fill = fill;
        self
    }

    /// The padded size, checked.
    fn padded(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let [l, t, r, b] = self.padding;
        let overflow = || Error::config(OP, format!("padding {:?} overflows", self.padding));
        let ph = h
            .checked_add(t)
            .and_then(|v| v.checked_add(b))
            .ok_or_else(overflow)?;
        let pw = w
            .checked_add(l)
            .and_then(|v| v.checked_add(r))
            .ok_or_else(overflow)?;
        Ok((ph, pw))
    }

    /// Validates against an input of `h` by `w` and returns the output size.
    pub(crate) fn output(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        check::positive(OP, "size height", self.size.0)?;
        check::positive(OP, "size width", self.size.1)?;
        if !self.fill.is_finite() {
            return Err(Error::config(
                OP,
                format!("fill must be finite, got {}", self.fill),
            ));
        }
        let (ph, pw) = self.padded(h, w)?;
        if self.size.0 > ph || self.size.1 > pw {
            return Err(Error::config(
                OP,
                format!(
                    "crop size {:?} is larger than the padded input ({ph}, {pw})",
                    self.size
                ),
            ));
        }
        Ok(self.size)
    }

    pub(crate) fn sample(&self, rng: &mut ImageRng, h: usize, w: usize, plan: &mut Plan) {
        let (ph, pw) = self.padded(h, w).unwrap_or((h, w));
        let top = rng.int(0, ph.saturating_sub(self.size.0) + 1) as i64;
        let left = rng.int(0, pw.saturating_sub(self.size.1) + 1) as i64;
        let [l, t, _, _] = self.padding;
        plan.stage(Stage::translate(
            top - t as i64,
            left - l as i64,
            h,
            w,
            self.fill,
        ));
    }
}

/// The `height` by `width` window at `(top, left)` of every image (torchvision's `crop`); a
/// window reaching outside the image takes `fill` there.
pub fn crop(
    x: &Tensor,
    top: i64,
    left: i64,
    height: usize,
    width: usize,
    fill: f32,
) -> Result<Tensor> {
    let (_, h, w) = image_dims(x)?;
    if !fill.is_finite() {
        return Err(Error::config(
            "crop",
            format!("fill must be finite, got {fill}"),
        ));
    }
    let mut plan = Plan::default();
    plan.stage(Stage::translate(top, left, h, w, fill));
    fixed(x, Some((height, width)), plan)
}
