//! Random resized crop (torchvision's `RandomResizedCrop`): a box of random area and aspect
//! ratio, resized bilinearly to a fixed size; and the fixed [`resized_crop`].
//!
//! # Tip
//! The standard ImageNet augmentation (Inception's "distortion"): boxes of 8 % to 100 % of the
//! area, aspect ratio from 3/4 to 4/3 on a log scale, then resized. It teaches scale invariance
//! and, through small boxes, recognition from parts. Small datasets and small objects prefer a
//! larger minimum scale (0.35 or more): an 8 % box often misses the object and breaks the label.
//! Ten draws are tried; if none fits the image, the centre crop of the clamped ratio is taken.
//!
//! The resize is plain bilinear (PyTorch's `antialias=False`); for upscaling, the usual case,
//! antialiasing changes nothing.
//!
//! # Example
//! ```
//! # fn main() -> candle_tricks::Result<()> {
//! use candle_core::{Device, Tensor};
//! use candle_tricks::augment::resized_crop;
//! let x = Tensor::new(&[0f32, 1.0], &Device::Cpu)?.reshape((1, 1, 1, 2))?;
//! let y = resized_crop(&x, 0, 0, 1, 2, (1, 4))?; // 2 → 4 pixels, align_corners=False
//! assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [0.0, 0.25, 0.75, 1.0]);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Szegedy et al., *Going Deeper with Convolutions*, 2014, <https://arxiv.org/abs/1409.4842>

use candle_core::Tensor;

use super::pipeline::{fixed, image_dims, Plan};
use super::warp::Stage;
use super::ImageRng;
use crate::{check, Error, Result};

const OP: &str = "RandomResizedCrop";

/// A random box (area fraction from `scale`, aspect ratio w/h from `ratio`, log-uniform)
/// resized to `size`, as torchvision's `RandomResizedCrop`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomResizedCrop {
    /// Output `(height, width)`.
    pub size: (usize, usize),
    /// Range of the box area as a fraction of the image (`(0.08, 1.0)` by default).
    pub scale: (f64, f64),
    /// Range of the box aspect ratio width / height (`(3/4, 4/3)` by default).
    pub ratio: (f64, f64),
}

impl RandomResizedCrop {
    /// Boxes resized to `size`, torchvision's default scale and ratio.
    pub fn new(size: (usize, usize)) -> Self {
        Self {
            size,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }

    /// The range of the area fraction.
    pub fn with_scale(mut self, scale: (f64, f64)) -> Self {
        self.scale = scale;
        self
    }

    /// The range of the aspect ratio.
    pub fn with_ratio(mut self, ratio: (f64, f64)) -> Self {
        self.ratio = ratio;
        self
    }

    pub(crate) fn output(&self) -> Result<(usize, usize)> {
        check::positive(OP, "size height", self.size.0)?;
        check::positive(OP, "size width", self.size.1)?;
        let (s0, s1) = self.scale;
        if !(s0 > 0.0 && s0 <= s1 && s1.is_finite()) {
            return Err(Error::config(
                OP,
                format!(
                    "scale must satisfy 0 < min <= max < inf, got {:?}",
                    self.scale
                ),
            ));
        }
        check_ratio(OP, self.ratio)?;
        Ok(self.size)
    }

    /// The box `(top, left, height, width)` of an `h` by `w` image, torchvision's `get_params`.
    pub(crate) fn box_params(&self, rng: &mut ImageRng, h: usize, w: usize) -> [usize; 4] {
        let area = (h * w) as f64;
        let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * rng.uniform(self.scale.0, self.scale.1);
            let aspect = rng.uniform(lr0, lr1).exp();
            let bw = (target * aspect).sqrt().round_ties_even() as usize;
            let bh = (target / aspect).sqrt().round_ties_even() as usize;
            if 0 < bw && bw <= w && 0 < bh && bh <= h {
                let top = rng.int(0, h - bh + 1);
                let left = rng.int(0, w - bw + 1);
                return [top, left, bh, bw];
            }
        }
        // Fallback: the centre crop whose ratio is clamped into `ratio`.
        let in_ratio = w as f64 / h as f64;
        let (bh, bw) = if in_ratio < self.ratio.0 {
            let bh = (w as f64 / self.ratio.0).round_ties_even() as usize;
            (bh.clamp(1, h), w)
        } else if in_ratio > self.ratio.1 {
            let bw = (h as f64 * self.ratio.1).round_ties_even() as usize;
            (h, bw.clamp(1, w))
        } else {
            (h, w)
        };
        [(h - bh) / 2, (w - bw) / 2, bh, bw]
    }

    pub(crate) fn sample(&self, rng: &mut ImageRng, h: usize, w: usize, plan: &mut Plan) {
        let [top, left, bh, bw] = self.box_params(rng, h, w);
        push_stages(plan, [top as i64, left as i64], (bh, bw), (h, w), self.size);
    }
}

/// The crop then resize stages.
fn push_stages(
    plan: &mut Plan,
    [top, left]: [i64; 2],
    (bh, bw): (usize, usize),
    (h, w): (usize, usize),
    size: (usize, usize),
) {
    plan.stage(Stage::translate(top, left, h, w, 0.0));
    plan.stage(Stage::resize(bh, bw, size.0, size.1));
}

/// The `height` by `width` box at `(top, left)` of every image resized bilinearly to `size`
/// (torchvision's `resized_crop` with `antialias=False`). The box must lie inside the image.
pub fn resized_crop(
    x: &Tensor,
    top: usize,
    left: usize,
    height: usize,
    width: usize,
    size: (usize, usize),
) -> Result<Tensor> {
    let (_, h, w) = image_dims(x)?;
    let fits = height > 0
        && width > 0
        && top.checked_add(height).is_some_and(|b| b <= h)
        && left.checked_add(width).is_some_and(|r| r <= w);
    if !fits {
        return Err(Error::config(
            "resized_crop",
            format!("box (top {top}, left {left}, {height} x {width}) must be non-empty and inside the {h} x {w} image"),
        ));
    }
    check::positive("resized_crop", "size height", size.0)?;
    check::positive("resized_crop", "size width", size.1)?;
    let mut plan = Plan::default();
    push_stages(
        &mut plan,
        [top as i64, left as i64],
        (height, width),
        (h, w),
        size,
    );
    fixed(x, Some(size), plan)
}

/// Checks an aspect-ratio range `(min, max)` of a box sampler (resized crop, erasing):
/// `0 < min <= max < inf`, since the sampler draws its logarithm uniformly.
pub(crate) fn check_ratio(op: &'static str, ratio: (f64, f64)) -> Result<()> {
    let (r0, r1) = ratio;
    if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
        return Err(Error::config(
            op,
            format!("ratio must satisfy 0 < min <= max < inf, got {ratio:?}"),
        ));
    }
    Ok(())
}
