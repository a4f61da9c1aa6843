//! 2-D convolution layer (PyTorch's `nn.Conv2d`) on our kernel [`crate::ops::conv2d()`], whose
//! backward runs as matrix products (3 to 5 times faster to train than `candle_nn::Conv2d` on
//! CPU; see the op).
//!
//! # Shapes
//! - input `(B, Cin, H, W)`, output `(B, Cout, Ho, Wo)`; both axes follow
//!   [`crate::conv::Padding`] (`Same` by default: $\lceil n/s \rceil$; PyTorch's `padding=p` is
//!   `Explicit(p)`).
//! - `weight` `(Cout, Cin/groups, k, k)`, `bias` `(Cout)`: the names and layouts of PyTorch's
//!   state dict, so `nn.Conv2d` checkpoints load unchanged.
//! - `Same` is TensorFlow's and timm's `Conv2dSame` rule: total padding
//!   $\max((\lceil n/s \rceil - 1)s + d(k-1) + 1 - n, 0)$, the odd zero after (right, bottom),
//!   so the output is exactly $\lceil n/s \rceil$ for any stride. PyTorch's `padding="same"`
//!   allows stride 1 only, where it pads the same way (symmetric when the total is even).
//! - [`Conv2d::with_padding_mode`] is `padding_mode` (`"reflect"`, `"replicate"`,
//!   `"circular"`; see [`crate::ops::pad2d()`]).
//!
//! # Tip
//! Drop the bias of a convolution that feeds a normalization layer. Batch norm subtracts each
//! channel's mean over the batch, and a bias adds the same constant to every value of its
//! channel, so the mean absorbs it and the normalized output does not change: the bias gets a
//! zero gradient, costs an add per value and a parameter per channel, and the norm's own shift
//! $\beta$ does its job. That is why ResNet's convolutions are built with `bias=False` (use
//! [`conv2d_no_bias`]); keep the bias when nothing normalizes the output (the last layer of a
//! head, a plain CNN).
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, ModuleT, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::conv::{conv2d, Conv2dConfig, Padding};
//! use candle_tricks::norm::{batch_norm, BatchNormConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let cfg = Conv2dConfig::default().with_padding(Padding::Explicit(1));
//! let conv = conv2d(3, 8, 3, cfg, vb.pp("conv"))?;
//! let bn = batch_norm(8, BatchNormConfig::default(), vb.pp("bn"))?;
//! let x = Tensor::randn(0f32, 1., (4, 3, 10, 10), &Device::Cpu)?;
//! let with_bias = bn.forward_t(&conv.forward(&x)?, true)?;
//! // The same layer without its bias: batch norm's output does not change.
//! let no_bias = candle_tricks::ops::conv2d(&x, conv.weight(), cfg)?;
//! let without = bn.forward_t(&no_bias, true)?;
//! let diff = (with_bias - without)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(diff < 1e-4);
//! assert_eq!(conv.bias().map(|b| b.dims().to_vec()), Some(vec![8]));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Ioffe & Szegedy, *Batch Normalization*, 2015 (§3.2: the bias is subsumed by the shift),
//!   <https://arxiv.org/abs/1502.03167>
//! - He et al., *Deep Residual Learning for Image Recognition*, 2015,
//!   <https://arxiv.org/abs/1512.03385>

use crate::geometry::Padding;
use crate::ops::{conv2d as conv2d_op, pad2d, Conv2dConfig, PadMode};
use crate::{Error, Result};
use candle_core::{Module, Tensor};

const BLOCK: &str = "Conv2d";

/// A 2-D convolution layer with optional bias (`nn.Conv2d`).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: Conv2dConfig,
    padding_mode: PadMode,
}

impl Conv2d {
    /// Builds the layer from a `(Cout, Cin/groups, kh, kw)` weight and an optional `(Cout)` bias.
    ///
    /// Errors (naming `Conv2d`) on a wrong weight or bias shape, an empty weight, an unsupported
    /// dtype, a bias of another dtype or device, `Cout` not divisible by `groups`, or an invalid
    /// config. `Cin` is checked against the input at `forward`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, cfg: Conv2dConfig) -> Result<Self> {
        super::init::check_layer(BLOCK, &weight, bias.as_ref(), cfg, 2)?;
        Ok(Self {
            weight,
            bias,
            cfg,
            padding_mode: PadMode::Zeros,
        })
    }

    /// The layer with PyTorch's `padding_mode`: the padding that `cfg.padding` resolves to
    /// (`Same` included, asymmetric or not) is filled by [`pad2d`] with `mode` before a
    /// `Valid` convolution. [`PadMode::Zeros`] (the default) pads inside the convolution kernel
    /// instead, for free. Errors (naming `Conv2d`) on [`PadMode::Constant`], which
    /// `nn.Conv2d` does not offer either.
    pub fn with_padding_mode(mut self, mode: PadMode) -> Result<Self> {
        if matches!(mode, PadMode::Constant(_)) {
            return Err(Error::config(
                BLOCK,
                "padding_mode must be Zeros, Reflect, Replicate or Circular (as nn.Conv2d)",
            ));
        }
        self.padding_mode = mode;
        Ok(self)
    }

    /// How the border is filled (`padding_mode`).
    pub fn padding_mode(&self) -> PadMode {
        self.padding_mode
    }

    /// The `(Cout, Cin/groups, kh, kw)` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The `(Cout)` bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Stride, padding, dilation and groups.
    pub fn config(&self) -> Conv2dConfig {
        self.cfg
    }

    /// Number of input channels `Cin`.
    pub fn in_channels(&self) -> usize {
        self.weight.dims()[1] * self.cfg.groups
    }

    /// Number of output channels `Cout`.
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Kernel size `(kh, kw)`.
    pub fn kernel_size(&self) -> (usize, usize) {
        let d = self.weight.dims();
        (d[2], d[3])
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let y = if self.padding_mode == PadMode::Zeros || xs.rank() != 4 {
            // Zeros (and the rank error, which the op words best) go to the op directly.
            conv2d_op(xs, &self.weight, self.cfg)?
        } else {
            let cfg = self.cfg;
            let (kh, kw) = self.kernel_size();
            let (_, _, h, w) = xs.dims4()?;
            let resolve = |n, k| {
                cfg.padding
                    .checked_resolve(n, k, cfg.stride, cfg.dilation)
                    .ok_or_else(|| Error::config(BLOCK, "padding overflows usize"))
            };
            let ((t, b), (l, r)) = (resolve(h, kh)?, resolve(w, kw)?);
            let xp = pad2d(xs, [l, r, t, b], self.padding_mode)?;
            conv2d_op(&xp, &self.weight, cfg.with_padding(Padding::Valid))?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }
}

fn build(
    sizes: (usize, usize, usize),
    cfg: Conv2dConfig,
    vb: candle_nn::VarBuilder,
    with_bias: bool,
) -> Result<Conv2d> {
    let (weight, bias) = super::init::layer_params(BLOCK, sizes, 2, cfg, &vb, with_bias)?;
    Conv2d::new(weight, bias, cfg)
}

/// Creates (or loads, under PyTorch's names `weight` and `bias`) a 2-D convolution from
/// `in_channels` to `out_channels` with a square `kernel_size` kernel.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: candle_nn::VarBuilder,
) -> Result<Conv2d> {
    build((in_channels, out_channels, kernel_size), cfg, vb, true)
}

/// Like [`conv2d`] without a bias (the usual choice before a normalization layer).
pub fn conv2d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: candle_nn::VarBuilder,
) -> Result<Conv2d> {
    build((in_channels, out_channels, kernel_size), cfg, vb, false)
}
