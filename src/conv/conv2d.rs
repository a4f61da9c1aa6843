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

use crate::ops::{conv2d as conv2d_op, Conv2dConfig};
use crate::Result;
use candle_core::{Module, Tensor};

const BLOCK: &str = "Conv2d";

/// A 2-D convolution layer with optional bias (`nn.Conv2d`).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: Conv2dConfig,
}

impl Conv2d {
    /// Builds the layer from a `(Cout, Cin/groups, kh, kw)` weight and an optional `(Cout)` bias.
    ///
    /// Errors (naming `Conv2d`) on a wrong weight or bias shape, an empty weight, an unsupported
    /// dtype, a bias of another dtype or device, `Cout` not divisible by `groups`, or an invalid
    /// config. `Cin` is checked against the input at `forward`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, cfg: Conv2dConfig) -> Result<Self> {
        super::init::check_layer(BLOCK, &weight, bias.as_ref(), cfg, 2)?;
        Ok(Self { weight, bias, cfg })
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
        let y = conv2d_op(xs, &self.weight, self.cfg)?;
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
