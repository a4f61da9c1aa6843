//! CBAM, the convolutional block attention module: a channel gate from average- *and*
//! max-pooled features, followed by a spatial gate from a 7×7 convolution over per-pixel channel
//! statistics.
//!
//! # Shapes
//! - input `(B, C, H, W)`, output `(B, C, H, W)`:
//!   $x^\prime = x \cdot \sigma(\mathrm{MLP}(\mathrm{avg}(x)) + \mathrm{MLP}(\mathrm{max}(x)))$,
//!   then $y = x^\prime \cdot \sigma(\mathrm{conv}_ {7\times7}([\mathrm{mean}_ c(x^\prime),
//!   \mathrm{max}_ c(x^\prime)]))$.
//! - weights: the shared MLP is `channel.fc1.weight` `(R, C, 1, 1)` and `channel.fc2.weight`
//!   `(C, R, 1, 1)` (1×1 convolutions; biases `channel.fc1.bias` / `channel.fc2.bias` only with
//!   [`CbamConfig::mlp_bias`]); the spatial convolution is `spatial.conv.weight` `(1, 2, k, k)`
//!   (input channel 0 = mean map, 1 = max map; `spatial.conv.bias` `(1)` only with
//!   [`CbamConfig::spatial_bias`]).
//!
//! Names: `channel.fc1` / `channel.fc2` are timm's `CbamModule` names. The spatial part follows
//! the paper (a convolution, then the sigmoid); timm's inserts a batch norm and names the
//! convolution `spatial.conv.conv.weight` (with `spatial.conv.bn.*`): rename that key and fold
//! the norm into the weight and bias to load a timm checkpoint.
//!
//! # Tip
//! SE ([`super::SqueezeExcite`]) only says *which* channels matter. CBAM adds two cheap ideas:
//! max pooling next to average pooling in the channel gate (the max keeps a strong local
//! response that the average dilutes), and a second gate that says *where* to look, computed
//! from the channel mean and max at each pixel by one $k \times k$ convolution. The spatial gate
//! costs $2k^2$ weights (98 for $k = 7$) and one 2-channel convolution, so the whole module still
//! adds only about $2C^2 r$ parameters; apply it at the end of each residual branch as SE is.
//! Channel first, then spatial, was the best order in the paper's ablation.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::attention::{cbam, CbamConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! let c = 128;
//! let m = cbam(c, CbamConfig::default(), vb)?;
//! // Shared MLP (no biases, R = C/16 = 8) + a 2-in, 1-out 7×7 convolution.
//! let params: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
//! assert_eq!(params, 2 * c * 8 + 2 * 7 * 7);
//! assert!((params as f64) < 0.02 * (9 * c * c) as f64); // < 2 % of one 3×3 conv
//! let x = Tensor::randn(0f32, 1., (2, c, 9, 11), &dev)?;
//! assert_eq!(m.forward(&x)?.dims(), &[2, c, 9, 11]);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Woo, Park, Lee, Kweon, *CBAM: Convolutional Block Attention Module*, ECCV 2018,
//!   <https://arxiv.org/abs/1807.06521>.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::squeeze_excite::{check_reduction, make_divisible, PointwiseFc};
use crate::conv::init::weight_and_bias;
use crate::{check, Error, Result};

const BLOCK: &str = "Cbam";

/// Configuration of [`Cbam`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CbamConfig {
    /// Reduction ratio of the channel MLP. Default $1/16$.
    pub rd_ratio: f64,
    /// The hidden width is rounded to a multiple of this. Default 1 (no rounding, as timm's CBAM).
    pub rd_divisor: usize,
    /// Explicit hidden width, overriding the ratio. Default `None`.
    pub rd_channels: Option<usize>,
    /// Biases in the channel MLP. Default `false` (timm).
    pub mlp_bias: bool,
    /// Side of the spatial convolution (odd). Default 7 (the paper's).
    pub spatial_kernel: usize,
    /// A bias in the spatial convolution. Default `false`.
    pub spatial_bias: bool,
}

impl Default for CbamConfig {
    fn default() -> Self {
        Self {
            rd_ratio: 1.0 / 16.0,
            rd_divisor: 1,
            rd_channels: None,
            mlp_bias: false,
            spatial_kernel: 7,
            spatial_bias: false,
        }
    }
}

impl CbamConfig {
    /// Sets [`CbamConfig::rd_ratio`].
    pub fn with_rd_ratio(mut self, rd_ratio: f64) -> Self {
        self.rd_ratio = rd_ratio;
        self
    }

    /// Sets [`CbamConfig::rd_channels`].
    pub fn with_rd_channels(mut self, rd_channels: usize) -> Self {
        self.rd_channels = Some(rd_channels);
        self
    }

    /// Sets [`CbamConfig::mlp_bias`].
    pub fn with_mlp_bias(mut self, mlp_bias: bool) -> Self {
        self.mlp_bias = mlp_bias;
        self
    }

    /// Sets [`CbamConfig::spatial_kernel`].
    pub fn with_spatial_kernel(mut self, k: usize) -> Self {
        self.spatial_kernel = k;
        self
    }

    /// Sets [`CbamConfig::spatial_bias`].
    pub fn with_spatial_bias(mut self, spatial_bias: bool) -> Self {
        self.spatial_bias = spatial_bias;
        self
    }

    /// Errors (naming `Cbam`) unless `0 < rd_ratio <= 1`, `rd_divisor > 0`, `rd_channels` (when
    /// set) > 0 and `spatial_kernel` is odd.
    pub fn validate(&self) -> Result<()> {
        check_reduction(BLOCK, self.rd_ratio, self.rd_divisor, self.rd_channels)?;
        if self.spatial_kernel.is_multiple_of(2) {
            return Err(Error::config(
                BLOCK,
                format!("spatial_kernel must be odd, got {}", self.spatial_kernel),
            ));
        }
        Ok(())
    }

    /// The hidden width for `channels` channels.
    pub fn reduced_channels(&self, channels: usize) -> usize {
        self.rd_channels
            .unwrap_or_else(|| make_divisible(channels as f64 * self.rd_ratio, self.rd_divisor))
    }
}

/// Convolutional block attention module (channel gate, then spatial gate).
#[derive(Debug, Clone)]
pub struct Cbam {
    fc1: PointwiseFc,
    fc2: PointwiseFc,
    spatial: crate::conv::Conv2d,
    channels: usize,
    reduced: usize,
}

impl Cbam {
    /// Builds the module from the shared MLP (`fc1` `(R, C, 1, 1)`, `fc2` `(C, R, 1, 1)`, with
    /// optional biases) and the spatial weight `(1, 2, k, k)` with optional `(1)` bias; `C`, `R`
    /// and `k` are read from the weights. Errors (naming `Cbam`) on inconsistent shapes, an even
    /// `k`, or mixed / non-float dtypes.
    pub fn new(
        fc1: (Tensor, Option<Tensor>),
        fc2: (Tensor, Option<Tensor>),
        spatial: (Tensor, Option<Tensor>),
    ) -> Result<Self> {
        check::rank(BLOCK, "channel.fc1.weight", &fc1.0, 4, "(R, C, 1, 1)")?;
        let (r, c) = (fc1.0.dims()[0], fc1.0.dims()[1]);
        check::positive(BLOCK, "channels", c)?;
        check::positive(BLOCK, "reduced channels", r)?;
        let fc1 = PointwiseFc::new(BLOCK, "channel.fc1.weight", fc1.0, fc1.1, r, c)?;
        let fc2 = PointwiseFc::new(BLOCK, "channel.fc2.weight", fc2.0, fc2.1, c, r)?;
        check::same_dtype_device(BLOCK, "channel.fc2.weight", fc1.weight(), fc2.weight())?;
        let (w, b) = spatial;
        check::same_dtype_device(BLOCK, "spatial.conv.weight", fc1.weight(), &w)?;
        let k = w.dims().last().copied().unwrap_or(0);
        if w.dims() != [1, 2, k, k] || k.is_multiple_of(2) {
            return Err(Error::shape(
                BLOCK,
                "spatial.conv.weight",
                "(1, 2, k, k) with k odd",
                w.shape().clone(),
            ));
        }
        check::bias(BLOCK, &w, b.as_ref(), 1)?;
        Ok(Self {
            fc1,
            fc2,
            spatial: spatial_conv(w, b, k)?,
            channels: c,
            reduced: r,
        })
    }

    /// The number of channels `C`.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The hidden width `R` of the channel MLP.
    pub fn reduced_channels(&self) -> usize {
        self.reduced
    }

    /// Like [`Module::forward`], returning this crate's error.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        check::image_batch(BLOCK, "input", x, self.channels, self.fc1.weight())?;
        let (b, c, h, w) = x.dims4()?;
        // Channel gate: one MLP, applied to the average and the max of each channel.
        let flat = x.flatten_from(2)?; // (B, C, HW)
        let pooled = Tensor::cat(&[flat.mean(2)?, flat.max(2)?], 0)?; // (2B, C)
        let z = self.fc2.apply(&self.fc1.apply(&pooled)?.relu()?)?;
        let z = (z.narrow(0, 0, b)? + z.narrow(0, b, b)?)?;
        let gate = candle_nn::ops::sigmoid(&z)?.reshape((b, c, 1, 1))?;
        let x = x.broadcast_mul(&gate)?;
        // Spatial gate: a k×k convolution over the per-pixel mean and max across channels.
        let stats = Tensor::cat(&[x.mean_keepdim(1)?, x.max_keepdim(1)?], 1)?; // (B, 2, H, W)
                                                                               // f16/bf16 maps are convolved in f32 by the op (candle's CPU conv has no bf16 path).
        let s = self.spatial.forward(&stats)?;
        let s = candle_nn::ops::sigmoid(&s)?;
        debug_assert_eq!(s.dims(), &[b, 1, h, w]);
        Ok(x.broadcast_mul(&s)?)
    }
}

fn spatial_conv(w: Tensor, b: Option<Tensor>, k: usize) -> Result<crate::conv::Conv2d> {
    let padding = crate::conv::Padding::Explicit(k / 2);
    crate::conv::Conv2d::new(
        w,
        b,
        crate::ops::Conv2dConfig::default().with_padding(padding),
    )
}

impl Module for Cbam {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.apply(x)?)
    }
}

/// A [`Cbam`] over `channels` channels with its weights under `vb` (`channel.fc1`,
/// `channel.fc2`, `spatial.conv`), created with PyTorch's conv init when `vb` is backed by a
/// `VarMap`. Errors (naming `Cbam`) when `channels` is 0 or `cfg` is invalid.
pub fn cbam(channels: usize, cfg: CbamConfig, vb: VarBuilder) -> Result<Cbam> {
    cfg.validate()?;
    check::positive(BLOCK, "channels", channels)?;
    let r = cfg.reduced_channels(channels);
    let ch = vb.pp("channel");
    let fc1 = PointwiseFc::load(BLOCK, r, channels, cfg.mlp_bias, ch.pp("fc1"))?;
    let fc2 = PointwiseFc::load(BLOCK, channels, r, cfg.mlp_bias, ch.pp("fc2"))?;
    let k = cfg.spatial_kernel;
    let (w, b) = weight_and_bias(
        BLOCK,
        &vb.pp("spatial").pp("conv"),
        (1, 2, k, k),
        cfg.spatial_bias,
    )?;
    Ok(Cbam {
        fc1,
        fc2,
        spatial: spatial_conv(w, b, k)?,
        channels,
        reduced: r,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_block() {
        let bad = [
            CbamConfig::default().with_rd_ratio(0.0),
            CbamConfig::default().with_rd_channels(0),
            CbamConfig::default().with_spatial_kernel(6),
        ];
        for cfg in bad {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(BLOCK), "{e}");
        }
    }
}
