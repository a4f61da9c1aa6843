//! Random erasing (torchvision's `RandomErasing`, Zhong et al.): a box of random area and
//! aspect ratio set to a constant or to noise; and the fixed [`erase`].
//!
//! # Tip
//! Erasing a patch makes the network use the whole object rather than its single most telling
//! part, and simulates occlusion. It is applied last, to the normalised tensor in torchvision
//! recipes (so value 0 is the mean colour). Keep the box small against the object (the default
//! 2 % to 33 % of the image): erasing the whole object makes the label wrong.
//!
//! # Example
//! ```
//! # fn main() -> candle_tricks::Result<()> {
//! use candle_core::{Device, Tensor};
//! use candle_tricks::augment::erase;
//! let x = Tensor::ones((1, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
//! let y = erase(&x, 1, 1, 2, 2, &[0.0])?;
//! assert_eq!(y.sum_all()?.to_scalar::<f32>()?, 5.0); // 4 of 9 pixels erased
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Zhong et al., *Random Erasing Data Augmentation*, 2017, <https://arxiv.org/abs/1708.04896>

use candle_core::Tensor;

use super::pipeline::{fixed, image_dims, Plan};
use super::ImageRng;
use crate::{check, Error, Result};

const OP: &str = "RandomErasing";

/// What an erased box is set to.
#[derive(Debug, Clone, PartialEq)]
pub enum EraseValue {
    /// One value for every channel, or one per channel.
    Constant(Vec<f32>),
    /// Standard normal noise per pixel (torchvision's `value="random"`).
    Random,
}

/// With probability `p`, erases one box whose area is a `scale` fraction of the image and whose
/// aspect ratio lies in `ratio` (log-uniform), as torchvision's `RandomErasing`.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomErasing {
    /// Probability of erasing an image (0.5 by default).
    pub p: f64,
    /// Range of the box area as a fraction of the image (`(0.02, 0.33)` by default).
    pub scale: (f64, f64),
    /// Range of the box aspect ratio (`(0.3, 3.3)` by default).
    pub ratio: (f64, f64),
    /// The value of the erased pixels (0 by default).
    pub value: EraseValue,
}

impl Default for RandomErasing {
    fn default() -> Self {
        Self {
            p: 0.5,
            scale: (0.02, 0.33),
            ratio: (0.3, 3.3),
            value: EraseValue::Constant(vec![0.0]),
        }
    }
}

impl RandomErasing {
    /// Erasing with probability `p`, torchvision's default scale, ratio and value.
    pub fn new(p: f64) -> Self {
        Self {
            p,
            ..Self::default()
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

    /// The value of the erased pixels.
    pub fn with_value(mut self, value: EraseValue) -> Self {
        self.value = value;
        self
    }

    pub(crate) fn validate(&self, channels: usize) -> Result<()> {
        check::unit_interval(OP, "p", self.p)?;
        let (s0, s1) = self.scale;
        if !(0.0..=1.0).contains(&s0) || !(0.0..=1.0).contains(&s1) || s0 > s1 {
            return Err(Error::config(
                OP,
                format!(
                    "scale must satisfy 0 <= min <= max <= 1, got {:?}",
                    self.scale
                ),
            ));
        }
        super::resized_crop::check_ratio(OP, self.ratio)?;
        if let EraseValue::Constant(v) = &self.value {
            constant(OP, v, channels)?;
        }
        Ok(())
    }

    pub(crate) fn sample(
        &self,
        rng: &mut ImageRng,
        (_, h, w): (usize, usize, usize),
        plan: &mut Plan,
    ) {
        if !rng.bernoulli(self.p) {
            return;
        }
        let area = (h * w) as f64;
        let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * rng.uniform(self.scale.0, self.scale.1);
            let aspect = rng.uniform(lr0, lr1).exp();
            let bh = (target * aspect).sqrt().round_ties_even() as usize;
            let bw = (target / aspect).sqrt().round_ties_even() as usize;
            if !(bh < h && bw < w) {
                continue;
            }
            let value = match &self.value {
                EraseValue::Constant(v) => Fill::Constant(v.clone()),
                EraseValue::Random => Fill::Noise(rand::RngCore::next_u64(rng)),
            };
            let top = rng.int(0, h - bh + 1);
            let left = rng.int(0, w - bw + 1);
            plan.erase(EraseBox {
                top,
                left,
                height: bh,
                width: bw,
                value,
            });
            return;
        }
    }
}

/// Checks a constant: one value or one per channel (any count while `channels` is 0, not known
/// yet), finite.
fn constant(block: &'static str, v: &[f32], channels: usize) -> Result<()> {
    if v.len() != 1 && channels != 0 && v.len() != channels {
        return Err(Error::config(
            block,
            format!("value needs 1 or {channels} entries, got {}", v.len()),
        ));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::config(
            block,
            format!("value must be finite, got {v:?}"),
        ));
    }
    Ok(())
}

/// The drawn value of an erased box.
#[derive(Debug, Clone)]
pub(crate) enum Fill {
    Constant(Vec<f32>),
    /// Normal noise from the stream of this key.
    Noise(u64),
}

/// One erased box.
#[derive(Debug, Clone)]
pub(crate) struct EraseBox {
    top: usize,
    left: usize,
    height: usize,
    width: usize,
    value: Fill,
}

/// Erases `b` in the image `img` of `c` planes of `h` by `w`.
pub(crate) fn apply(b: &EraseBox, img: &mut [f32], (c, h, w): (usize, usize, usize)) {
    let mut noise = match b.value {
        Fill::Noise(key) => Some(ImageRng::new(key, 0)),
        Fill::Constant(_) => None,
    };
    let rows = b.top.min(h)..b.top.saturating_add(b.height).min(h);
    let cols = b.left.min(w)..b.left.saturating_add(b.width).min(w);
    for ch in 0..c {
        for y in rows.clone() {
            let row = &mut img[(ch * h + y) * w..(ch * h + y + 1) * w];
            for v in &mut row[cols.clone()] {
                *v = match (&b.value, noise.as_mut()) {
                    (Fill::Constant(k), _) => k[if k.len() == 1 { 0 } else { ch }],
                    (Fill::Noise(_), Some(rng)) => rng.normal() as f32,
                    (Fill::Noise(_), None) => 0.0,
                };
            }
        }
    }
}

/// Sets the `height` by `width` box at `(top, left)` of every image to `value` (one entry, or
/// one per channel): torchvision's `erase`. The box is clipped to the image.
pub fn erase(
    x: &Tensor,
    top: usize,
    left: usize,
    height: usize,
    width: usize,
    value: &[f32],
) -> Result<Tensor> {
    let (c, _, _) = image_dims(x)?;
    constant("erase", value, c)?;
    let mut plan = Plan::default();
    let value = Fill::Constant(value.to_vec());
    plan.erase(EraseBox {
        top,
        left,
        height,
        width,
        value,
    });
    fixed(x, None, plan)
}
