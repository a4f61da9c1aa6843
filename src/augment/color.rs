//! Colour jitter: brightness, contrast, saturation and hue with torchvision's definitions, on
//! float images in $[0, 1]$ (each step clamps to that range, as torchvision does).
//!
//! # Tip
//! Brightness scales, $x^\prime = b x$; contrast blends with the image's mean grey level,
//! $x^\prime = c x + (1 - c) \bar{g}$; saturation blends each pixel with its own grey,
//! $x^\prime = s x + (1 - s) g$ with $g = 0.2989 r + 0.587 g + 0.114 b$; hue shifts the H of HSV
//! by $h$ turns. They teach invariance to lighting and camera colour, the nuisance factors of
//! natural photos; leave hue alone when colour is the label (ripe vs unripe fruit, traffic
//! lights). The four are applied in a random order per image, as torchvision's `ColorJitter`.
//!
//! # Example
//! ```
//! # fn main() -> candle_tricks::Result<()> {
//! use candle_core::{Device, Tensor};
//! use candle_tricks::augment::{adjust_brightness, adjust_saturation};
//! let x = Tensor::new(&[0.2f32, 0.4, 0.6], &Device::Cpu)?.reshape((1, 3, 1, 1))?;
//! let y = adjust_brightness(&x, 2.0)?.flatten_all()?.to_vec1::<f32>()?;
//! assert_eq!(y, [0.4, 0.8, 1.0]); // clamped to 1
//! // Saturation 0 leaves the grey level in every channel.
//! let g = adjust_saturation(&x, 0.0)?.flatten_all()?.to_vec1::<f32>()?;
//! assert!(g.iter().all(|v| (v - g[0]).abs() < 1e-6));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Krizhevsky, Sutskever, Hinton, *ImageNet Classification with Deep Convolutional Neural
//!   Networks*, 2012 (colour augmentation), <https://dl.acm.org/doi/10.1145/3065386>

use candle_core::Tensor;

use super::pipeline::{fixed, Plan};
use super::ImageRng;
use crate::{Error, Result};

const OP: &str = "ColorJitter";

/// One photometric step with its factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ColorOp {
    Brightness(f32),
    Contrast(f32),
    Saturation(f32),
    Hue(f32),
}

/// Random brightness, contrast, saturation and hue (torchvision's `ColorJitter`): each factor is
/// drawn per image, brightness from $[\max(0, 1 - b), 1 + b]$ (likewise contrast and
/// saturation) and hue from $[-h, h]$; 0 turns a step off.
#[derive(Debug, Clone, PartialEq)]
pub struct ColorJitter {
    /// How much to jitter brightness (≥ 0).
    pub brightness: f64,
    /// How much to jitter contrast (≥ 0).
    pub contrast: f64,
    /// How much to jitter saturation (≥ 0).
    pub saturation: f64,
    /// How much to jitter hue, in turns (in $[0, 0.5]$).
    pub hue: f64,
    /// Apply the four in a random order per image (torchvision's behaviour, the default), or
    /// always brightness, contrast, saturation, hue.
    pub random_order: bool,
}

impl Default for ColorJitter {
    fn default() -> Self {
        Self {
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            hue: 0.0,
            random_order: true,
        }
    }
}

impl ColorJitter {
    /// Jitter of brightness, contrast, saturation and hue by these amounts, in a random order.
    pub fn new(brightness: f64, contrast: f64, saturation: f64, hue: f64) -> Self {
        Self {
            brightness,
            contrast,
            saturation,
            hue,
            random_order: true,
        }
    }

    /// Sets whether the order is drawn per image.
    pub fn with_random_order(mut self, random_order: bool) -> Self {
        self.random_order = random_order;
        self
    }

    /// Checks the amounts, and the channel count unless it is 0 (not known yet).
    pub(crate) fn validate(&self, channels: usize) -> Result<()> {
        for (name, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(Error::config(
                    OP,
                    format!("{name} must be finite and >= 0, got {v}"),
                ));
            }
        }
        if !(0.0..=0.5).contains(&self.hue) {
            return Err(Error::config(
                OP,
                format!("hue must be in [0, 0.5], got {}", self.hue),
            ));
        }
        let needs_rgb = self.contrast > 0.0 || self.saturation > 0.0 || self.hue > 0.0;
        if needs_rgb && channels != 0 && channels != 1 && channels != 3 {
            return Err(Error::config(
                OP,
                format!("contrast, saturation and hue need 1 or 3 channels, got {channels}"),
            ));
        }
        Ok(())
    }

    pub(crate) fn sample(&self, rng: &mut ImageRng, plan: &mut Plan) {
        let mut order = [0usize, 1, 2, 3];
        if self.random_order {
            for i in (1..4).rev() {
                order.swap(i, rng.int(0, i + 1));
            }
        }
        for k in order {
            let op = match k {
                0 if self.brightness > 0.0 => ColorOp::Brightness(factor(rng, self.brightness)),
                1 if self.contrast > 0.0 => ColorOp::Contrast(factor(rng, self.contrast)),
                2 if self.saturation > 0.0 => ColorOp::Saturation(factor(rng, self.saturation)),
                3 if self.hue > 0.0 => ColorOp::Hue(rng.uniform(-self.hue, self.hue) as f32),
                _ => continue,
            };
            plan.color(op);
        }
    }
}

/// A factor from $[\max(0, 1 - a), 1 + a]$.
fn factor(rng: &mut ImageRng, amount: f64) -> f32 {
    rng.uniform((1.0 - amount).max(0.0), 1.0 + amount) as f32
}

/// Checks a fixed factor and applies `op` to every image of `x`.
fn adjust(x: &Tensor, name: &str, value: f64, op: ColorOp) -> Result<Tensor> {
    if !value.is_finite() || (name != "hue_factor" && value < 0.0) {
        return Err(Error::config(
            OP,
            format!("{name} must be finite and >= 0, got {value}"),
        ));
    }
    if name == "hue_factor" && !(-0.5..=0.5).contains(&value) {
        return Err(Error::config(
            OP,
            format!("hue_factor must be in [-0.5, 0.5], got {value}"),
        ));
    }
    let c = x.dims().get(1).copied().unwrap_or(0);
    if name != "brightness_factor" && x.rank() == 4 && c != 1 && c != 3 {
        return Err(Error::shape(
            OP,
            "input",
            "(B, 1 or 3, H, W)",
            x.shape().clone(),
        ));
    }
    let mut plan = Plan::default();
    plan.color(op);
    fixed(x, None, plan)
}

/// torchvision's `adjust_brightness`: $\mathrm{clamp}(b x, 0, 1)$ on `(B, C, H, W)`.
pub fn adjust_brightness(x: &Tensor, brightness_factor: f64) -> Result<Tensor> {
    let op = ColorOp::Brightness(brightness_factor as f32);
    adjust(x, "brightness_factor", brightness_factor, op)
}

/// torchvision's `adjust_contrast`: blend with the mean grey level of each image.
pub fn adjust_contrast(x: &Tensor, contrast_factor: f64) -> Result<Tensor> {
    let op = ColorOp::Contrast(contrast_factor as f32);
    adjust(x, "contrast_factor", contrast_factor, op)
}

/// torchvision's `adjust_saturation`: blend each pixel with its grey level (1 channel: unchanged).
pub fn adjust_saturation(x: &Tensor, saturation_factor: f64) -> Result<Tensor> {
    let op = ColorOp::Saturation(saturation_factor as f32);
    adjust(x, "saturation_factor", saturation_factor, op)
}

/// torchvision's `adjust_hue`: shift the hue by `hue_factor` turns in HSV (1 channel: unchanged).
pub fn adjust_hue(x: &Tensor, hue_factor: f64) -> Result<Tensor> {
    adjust(x, "hue_factor", hue_factor, ColorOp::Hue(hue_factor as f32))
}

/// torchvision's grey level of one RGB pixel.
#[inline(always)]
fn grey(r: f32, g: f32, b: f32) -> f32 {
    0.2989 * r + 0.587 * g + 0.114 * b
}

#[inline(always)]
fn unit(v: f32) -> f32 {
    v.clamp(0.0, 1.0)
}

/// Applies `op` to one image `img` of `c` planes of `plane` pixels.
pub(crate) fn apply(op: ColorOp, img: &mut [f32], c: usize, plane: usize) {
    match op {
        ColorOp::Brightness(f) => img.iter_mut().for_each(|v| *v = unit(*v * f)),
        ColorOp::Contrast(f) => {
            let mean = if c == 3 {
                let (r, rest) = img.split_at(plane);
                let (g, b) = rest.split_at(plane);
                let sum: f64 = (0..plane).map(|i| f64::from(grey(r[i], g[i], b[i]))).sum();
                (sum / plane as f64) as f32
            } else {
                (img.iter().map(|&v| f64::from(v)).sum::<f64>() / img.len() as f64) as f32
            };
            let bias = (1.0 - f) * mean;
            img.iter_mut().for_each(|v| *v = unit(*v * f + bias));
        }
        ColorOp::Saturation(f) if c == 3 => {
            let (r, rest) = img.split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
                let bias = (1.0 - f) * grey(*r, *g, *b);
                *r = unit(*r * f + bias);
                *g = unit(*g * f + bias);
                *b = unit(*b * f + bias);
            }
        }
        ColorOp::Hue(h) if c == 3 && h != 0.0 => {
            let (r, rest) = img.split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
                (*r, *g, *b) = shift_hue(*r, *g, *b, h);
            }
        }
        ColorOp::Saturation(_) | ColorOp::Hue(_) => {}
    }
}

/// Rotates the hue of one pixel by `h` turns through HSV, with torchvision's formulas (hence
/// its exact rounding in most pixels; the hue of greys is 0).
#[inline(always)]
fn shift_hue(r: f32, g: f32, b: f32, h: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let range = maxc - minc;
    let eq = maxc == minc;
    let s = range / if eq { 1.0 } else { maxc };
    let div = if eq { 1.0 } else { range };
    let (rc, gc, bc) = ((maxc - r) / div, (maxc - g) / div, (maxc - b) / div);
    let hue6 = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    // torchvision's `fmod(x, 1)` and `remainder(x, 1)`, exact for the ranges that occur
    // (x in [5/6, 11/6), then x + h in (-1/2, 3/2)) without the libm calls.
    let wrap = |x: f32| {
        if x < 0.0 {
            x + 1.0
        } else if x >= 1.0 {
            x - 1.0
        } else {
            x
        }
    };
    let hue = wrap(wrap(hue6 * (1.0 / 6.0) + 1.0) + h);
    let v = maxc;
    let h6 = hue * 6.0;
    // h6 lies in [0, 6], so truncation is the floor.
    let i = h6 as i32;
    let f = h6 - i as f32;
    let sf = s * f;
    let q = unit((1.0 - sf) * v);
    let t = unit((sf + (1.0 - s)) * v);
    let p = unit((1.0 - s) * v);
    match i.rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}
