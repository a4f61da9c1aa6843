//! Depthwise convolution block: one $k \times k$ filter per channel (PyTorch's
//! `nn.Conv2d(C, C·m, k, groups=C)`), on the fused kernel [`crate::ops::depthwise_conv2d`].
//!
//! # Shapes
//! - input `(B, C, H, W)`, output `(B, C·m, Ho, Wo)` with $m$ the channel multiplier;
//!   $Ho, Wo$ follow [`crate::conv::Padding`] (`Same` by default: $\lceil H/s \rceil$).
//! - `weight` `(C·m, 1, k, k)`, `bias` `(C·m)`: the names and layouts of PyTorch's state dict.
//!
//! # Tip
//! A depthwise convolution filters each channel spatially on its own and leaves channel mixing to
//! a cheap 1×1 convolution (together: a depthwise-separable convolution, see
//! `SeparableConv2d` in this module). It needs $k^2 C m$ weights and $k^2 C m\thinspace HW$
//! multiply-adds where a dense convolution to $C^\prime$ channels needs $k^2 C C^\prime$ and
//! $k^2 C C^\prime HW$, a saving of about $C^\prime$ times (and $k^2$ times for the pair with its
//! 1×1 when $C^\prime \gg k^2$).
//! MobileNet (v1–v3), EfficientNet, Xception and ConvNeXt (7×7 depthwise) are built on it: use it
//! when compute or parameters are tight, or to enlarge the spatial receptive field cheaply.
//!
//! The trade-off is arithmetic intensity: each weight is reused only over one channel's
//! $HW$ positions and each input value takes part in just $k^2$ multiply-adds, so the layer is
//! bound by memory bandwidth rather than FLOPs. A generic grouped convolution (im2col + a small
//! matrix product per group, as in candle's `Tensor::conv2d(.., groups)`) multiplies the memory
//! traffic by $k^2$ and pays its per-group overhead $C$ times, which is why it runs far slower
//! than the FLOP count suggests; the fused kernel here streams each plane once.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::conv::{depthwise_conv2d, DepthwiseConv2dConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let (c, m, k, c_out) = (32usize, 1usize, 3usize, 32usize);
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let dw = depthwise_conv2d(c, m, k, DepthwiseConv2dConfig::default(), vb.pp("dw"))?;
//! // k^2 * C * m weights, against k^2 * C * C' for a dense convolution: C' = 32 times fewer.
//! assert_eq!(dw.weight().elem_count(), k * k * c * m);
//! let dense = k * k * c * c_out;
//! assert_eq!(dense / dw.weight().elem_count(), c_out);
//! let x = Tensor::randn(0f32, 1., (2, c, 16, 16), &Device::Cpu)?;
//! assert_eq!(dw.forward(&x)?.dims(), &[2, c * m, 16, 16]);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Howard et al., *MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
//!   Applications*, 2017, <https://arxiv.org/abs/1704.04861>
//! - Chollet, *Xception: Deep Learning with Depthwise Separable Convolutions*, 2016,
//!   <https://arxiv.org/abs/1610.02357>

use crate::ops::{depthwise_conv2d as dw_op, DepthwiseConv2dConfig};
use crate::{check, Error, Result};
use candle_core::{Module, Tensor};

const BLOCK: &str = "DepthwiseConv2d";

/// A depthwise 2-D convolution layer with optional bias (`nn.Conv2d(C, C·m, k, groups=C)`).
#[derive(Debug, Clone)]
pub struct DepthwiseConv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: DepthwiseConv2dConfig,
}

impl DepthwiseConv2d {
    /// Builds the layer from a `(C·m, 1, kh, kw)` weight and an optional `(C·m)` bias.
    ///
    /// Errors (naming `DepthwiseConv2d`) on a wrong weight or bias shape, an empty weight, an
    /// unsupported dtype, a bias of another dtype or device, or an invalid config. The number of
    /// input channels `C` is taken from the input at `forward`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, cfg: DepthwiseConv2dConfig) -> Result<Self> {
        cfg.validate_for(BLOCK)?;
        check::rank(BLOCK, "weight", &weight, 4, "(C·m, 1, kh, kw)")?;
        check::non_empty(BLOCK, "weight", &weight)?;
        check::float_dtype(BLOCK, "weight", &weight)?;
        let (cm, one, _, _) = weight.dims4()?;
        if one != 1 {
            return Err(Error::shape(
                BLOCK,
                "weight",
                "(C·m, 1, kh, kw)",
                weight.shape().clone(),
            ));
        }
        check::bias(BLOCK, &weight, bias.as_ref(), cm)?;
        Ok(Self { weight, bias, cfg })
    }

    /// The `(C·m, 1, kh, kw)` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The `(C·m)` bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Stride, padding and dilation.
    pub fn config(&self) -> DepthwiseConv2dConfig {
        self.cfg
    }

    /// Number of output channels `C·m`.
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Kernel size `(kh, kw)`.
    pub fn kernel_size(&self) -> (usize, usize) {
        let d = self.weight.dims();
        (d[2], d[3])
    }
}

impl Module for DepthwiseConv2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let y = dw_op(xs, &self.weight, self.cfg)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }
}

fn build(
    channels: usize,
    multiplier: usize,
    kernel_size: usize,
    cfg: DepthwiseConv2dConfig,
    vb: candle_nn::VarBuilder,
    with_bias: bool,
) -> Result<DepthwiseConv2d> {
    cfg.validate_for(BLOCK)?;
    check::positive(BLOCK, "channels", channels)?;
    check::positive(BLOCK, "multiplier", multiplier)?;
    check::positive(BLOCK, "kernel_size", kernel_size)?;
    let cm = channels * multiplier;
    let (weight, bias) =
        super::init::weight_and_bias(BLOCK, &vb, (cm, 1, kernel_size, kernel_size), with_bias)?;
    DepthwiseConv2d::new(weight, bias, cfg)
}

/// Creates (or loads, under PyTorch's names `weight` and `bias`) a depthwise convolution with
/// `channels` inputs, `channels * multiplier` outputs and a square `kernel_size` kernel.
pub fn depthwise_conv2d(
    channels: usize,
    multiplier: usize,
    kernel_size: usize,
    cfg: DepthwiseConv2dConfig,
    vb: candle_nn::VarBuilder,
) -> Result<DepthwiseConv2d> {
    build(channels, multiplier, kernel_size, cfg, vb, true)
}

/// Like [`depthwise_conv2d`] without a bias (the usual choice before a batch norm).
pub fn depthwise_conv2d_no_bias(
    channels: usize,
    multiplier: usize,
    kernel_size: usize,
    cfg: DepthwiseConv2dConfig,
    vb: candle_nn::VarBuilder,
) -> Result<DepthwiseConv2d> {
    build(channels, multiplier, kernel_size, cfg, vb, false)
}
