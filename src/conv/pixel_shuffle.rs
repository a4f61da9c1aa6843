//! Pixel shuffle and unshuffle (PyTorch's `nn.PixelShuffle` / `nn.PixelUnshuffle`): trade
//! channels for resolution, the upsampling of sub-pixel convolution.
//!
//! # Shapes
//! - [`pixel_shuffle`]: `(…, C·r², H, W)` → `(…, C, H·r, W·r)`; output pixel
//!   $(c, h r + i, w r + j)$ is input channel $c r^2 + i r + j$ at $(h, w)$.
//! - [`pixel_unshuffle`]: the inverse, `(…, C, H·r, W·r)` → `(…, C·r², H, W)`.
//!
//! # Tip
//! **Upsample with a convolution to $r^2$ times the channels, then shuffle** (Shi et al.): the
//! convolution runs at the low resolution, so it costs $r^2$ times less than a convolution
//! after upsampling, and unlike a transposed convolution with a stride that does not divide
//! its kernel it has no checkerboard pattern (every output pixel gets exactly one learned
//! filter). Initialise the $r^2$ sub-filters of each output channel alike ("ICNR") to start
//! from nearest-neighbour upsampling. Unshuffle is the lossless way down: a space-to-depth stem
//! that keeps every pixel, unlike a strided convolution or pooling.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::conv::{pixel_shuffle, pixel_unshuffle};
//! # fn main() -> candle_tricks::Result<()> {
//! let x = Tensor::arange(0f32, 16., &Device::Cpu)?.reshape((1, 4, 2, 2))?;
//! let y = pixel_shuffle(&x, 2)?; // 4 channels → 1 channel at twice the size
//! assert_eq!(y.dims(), &[1, 1, 4, 4]);
//! // The first output row interleaves channels 0 and 1 of the first input row.
//! assert_eq!(y.get(0)?.get(0)?.get(0)?.to_vec1::<f32>()?, [0., 4., 1., 5.]);
//! assert_eq!(pixel_unshuffle(&y, 2)?.get(0)?.to_vec3::<f32>()?, x.get(0)?.to_vec3::<f32>()?);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Shi et al., *Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
//!   Convolutional Neural Network*, 2016. <https://arxiv.org/abs/1609.05158>
//! - Aitken et al., *Checkerboard artifact free sub-pixel convolution*, 2017 (ICNR).
//!   <https://arxiv.org/abs/1707.02937>

use candle_core::{Module, Tensor};

use crate::{check, Error, Result};

/// `(…, C·r², H, W)` → `(…, C, H·r, W·r)`; see the [module docs](self). Errors (naming
/// `pixel_shuffle`) on a rank below 3, `r = 0`, channels not divisible by $r^2$ or an output
/// size that overflows.
pub fn pixel_shuffle(x: &Tensor, upscale_factor: usize) -> Result<Tensor> {
    const BLOCK: &str = "pixel_shuffle";
    let (lead, [c, h, w], r) = split(BLOCK, x, upscale_factor)?;
    let r2 = scaled(BLOCK, r, r)?;
    if c % r2 != 0 {
        return Err(Error::shape(
            BLOCK,
            "input",
            format!("(…, C·{r2}, H, W): channels divisible by upscale_factor² = {r2}"),
            x.shape().clone(),
        ));
    }
    let (oh, ow) = (scaled(BLOCK, h, r)?, scaled(BLOCK, w, r)?);
    let n: usize = lead.iter().product();
    let y = x
        .reshape((n, c / r2, r, r, h, w))?
        .permute((0, 1, 4, 2, 5, 3))?
        .reshape((n, c / r2, oh, ow))?;
    Ok(y.reshape([lead.as_slice(), &[c / r2, oh, ow]].concat())?)
}

/// `(…, C, H·r, W·r)` → `(…, C·r², H, W)`, the inverse of [`pixel_shuffle`]. Errors (naming
/// `pixel_unshuffle`) on a rank below 3, `r = 0` or a height or width not divisible by `r`.
pub fn pixel_unshuffle(x: &Tensor, downscale_factor: usize) -> Result<Tensor> {
    const BLOCK: &str = "pixel_unshuffle";
    let (lead, [c, h, w], r) = split(BLOCK, x, downscale_factor)?;
    if h % r != 0 || w % r != 0 {
        return Err(Error::shape(
            BLOCK,
            "input",
            format!("(…, C, H·{r}, W·{r}): height and width divisible by downscale_factor"),
            x.shape().clone(),
        ));
    }
    let oc = scaled(BLOCK, c, r * r)?;
    let n: usize = lead.iter().product();
    let y = x
        .reshape((n, c, h / r, r, w / r, r))?
        .permute((0, 1, 3, 5, 2, 4))?
        .reshape((n, oc, h / r, w / r))?;
    Ok(y.reshape([lead.as_slice(), &[oc, h / r, w / r]].concat())?)
}

/// The leading dims, the last three and the factor, checked.
fn split(block: &'static str, x: &Tensor, r: usize) -> Result<(Vec<usize>, [usize; 3], usize)> {
    check::positive(block, "the factor", r)?;
    let d = x.dims();
    if d.len() < 3 {
        return Err(Error::shape(
            block,
            "input",
            "(…, C, H, W)",
            x.shape().clone(),
        ));
    }
    let (lead, last) = d.split_at(d.len() - 3);
    Ok((lead.to_vec(), [last[0], last[1], last[2]], r))
}

fn scaled(block: &'static str, n: usize, r: usize) -> Result<usize> {
    n.checked_mul(r)
        .ok_or_else(|| Error::config(block, format!("size {n} × {r} overflows")))
}

/// `nn.PixelShuffle(upscale_factor)` as a layer.
#[derive(Debug, Clone, Copy)]
pub struct PixelShuffle(pub usize);

impl Module for PixelShuffle {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(pixel_shuffle(xs, self.0)?)
    }
}

/// `nn.PixelUnshuffle(downscale_factor)` as a layer.
#[derive(Debug, Clone, Copy)]
pub struct PixelUnshuffle(pub usize);

impl Module for PixelUnshuffle {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(pixel_unshuffle(xs, self.0)?)
    }
}
