//! Layer normalization over the channels of an NCHW feature map (timm's `LayerNorm2d`, the norm
//! of ConvNeXt), on our fused kernel [`crate::ops::layer_norm()`], differentiable wrt its input,
//! weight and bias.
//!
//! # Shapes
//! - input `(B, C, H, W)`, output the same shape; each pixel `(b, :, h, w)` is normalized over
//!   its `C` channels.
//! - `weight` `(C)` (init 1) and `bias` `(C)` (init 0) when `affine`: timm's state-dict names,
//!   so ConvNeXt checkpoints load unchanged.
//!
//! # Tip
//! $y = (x - \mu_{b,h,w})/\sqrt{\sigma^2_{b,h,w} + \epsilon} \cdot \gamma_c + \beta_c$, with the
//! statistics taken over the channels of one pixel: no batch statistics, so it behaves the same
//! for any batch size and in training and inference, which is why ConvNeXt-style convnets use it
//! where a ResNet would use batch norm. The fused kernel wants the normalized axis last, so the
//! block permutes to `(B, H, W, C)` and back: that costs two full copies of the feature map (the
//! kernel itself is one pass). In a model that is channels-last already, use
//! [`crate::norm::LayerNorm`] directly and skip both copies. The default `eps` is timm's `1e-6`,
//! not PyTorch's `1e-5`.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor, Var};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::norm::{layer_norm2d, LayerNorm2dConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let ln = layer_norm2d(8, LayerNorm2dConfig::default(), vb)?;
//! assert_eq!(varmap.all_vars().len(), 2); // weight and bias
//! let x = Var::from_tensor(&Tensor::randn(1f32, 2., (2, 8, 5, 3), &Device::Cpu)?)?;
//! let y = ln.forward(&x)?;
//! assert_eq!(y.dims(), &[2, 8, 5, 3]);
//! // Every pixel has mean 0 over its channels (weight 1, bias 0 at init).
//! let mean = y.mean(1)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(mean < 1e-5);
//! // The gradient flows through the norm (and the permutes) to the input.
//! let c = Tensor::randn(0f32, 1., (2, 8, 5, 3), &Device::Cpu)?;
//! let grads = (y * c)?.sum_all()?.backward()?;
//! let gx = grads.get(&x).expect("gradient wrt x");
//! assert!(gx.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Ba, Kiros, Hinton, *Layer Normalization*, 2016, <https://arxiv.org/abs/1607.06450>
//! - Liu et al., *A ConvNet for the 2020s* (ConvNeXt), 2022, <https://arxiv.org/abs/2201.03545>

use crate::norm::params::{check_pair, load_pair, AFFINE};
use crate::{check, Error, Result};
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

const BLOCK: &str = "LayerNorm2d";

/// Configuration of [`LayerNorm2d`]; `Default` is timm's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerNorm2dConfig {
    /// Added to the variance, finite and > 0. Default `1e-6` (timm).
    pub eps: f64,
    /// Learn a per-channel `weight` and `bias`. Default `true`.
    pub affine: bool,
}

impl Default for LayerNorm2dConfig {
    fn default() -> Self {
        Self {
            eps: 1e-6,
            affine: true,
        }
    }
}

impl LayerNorm2dConfig {
    /// Sets `eps`.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Sets `affine`.
    pub fn with_affine(mut self, affine: bool) -> Self {
        self.affine = affine;
        self
    }

    /// Checks that `eps` is finite and > 0.
    pub fn validate(&self) -> Result<()> {
        check::eps(BLOCK, "eps", self.eps)
    }
}

/// Layer normalization over the channels of a `(B, C, H, W)` input (timm's `LayerNorm2d`).
#[derive(Debug, Clone)]
pub struct LayerNorm2d {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    channels: usize,
    cfg: LayerNorm2dConfig,
}

impl LayerNorm2d {
    /// Builds the layer for `channels` channels from an optional `(channels)` weight and bias,
    /// which must both be present exactly when `cfg.affine`.
    ///
    /// Errors (naming `LayerNorm2d`) on `channels` 0, a missing or unexpected tensor, a wrong
    /// shape, an unsupported dtype, mixed dtypes or devices, or an invalid config.
    pub fn new(
        channels: usize,
        weight: Option<Tensor>,
        bias: Option<Tensor>,
        cfg: LayerNorm2dConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        check::positive(BLOCK, "channels", channels)?;
        let (tensors, want) = ([weight.as_ref(), bias.as_ref()], [cfg.affine; 2]);
        check_pair(BLOCK, channels, tensors, want, AFFINE, false)?;
        Ok(Self {
            weight,
            bias,
            channels,
            cfg,
        })
    }

    /// The `(C)` weight, if `affine`.
    pub fn weight(&self) -> Option<&Tensor> {
        self.weight.as_ref()
    }

    /// The `(C)` bias, if `affine`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The number of channels `C`.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The configuration.
    pub fn config(&self) -> LayerNorm2dConfig {
        self.cfg
    }

    fn forward_impl(&self, xs: &Tensor) -> Result<Tensor> {
        if xs.rank() != 4 || xs.dims()[1] != self.channels {
            return Err(Error::shape(
                BLOCK,
                "input",
                format!("(B, {}, H, W)", self.channels),
                xs.shape().clone(),
            ));
        }
        check::non_empty(BLOCK, "input", xs)?;
        check::float_dtype(BLOCK, "input", xs)?;
        if let Some(w) = &self.weight {
            check::same_dtype_device(BLOCK, "input", w, xs)?;
        }
        let nhwc = xs.permute((0, 2, 3, 1))?;
        let y = crate::ops::layer_norm(
            &nhwc,
            self.weight.as_ref(),
            self.bias.as_ref(),
            self.cfg.eps,
        )?;
        Ok(y.permute((0, 3, 1, 2))?.contiguous()?)
    }
}

impl Module for LayerNorm2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.forward_impl(xs)?)
    }
}

/// A [`LayerNorm2d`] over `channels` channels whose `weight` (init 1) and `bias` (init 0) come
/// from `vb` under timm's names.
pub fn layer_norm2d(
    channels: usize,
    cfg: LayerNorm2dConfig,
    vb: VarBuilder,
) -> Result<LayerNorm2d> {
    check::loading(BLOCK, vb, |vb| {
        cfg.validate()?;
        check::positive(BLOCK, "channels", channels)?;
        let [weight, bias] = load_pair(BLOCK, channels, &vb, [cfg.affine; 2], AFFINE)?;
        LayerNorm2d::new(channels, weight, bias, cfg)
    })
}
