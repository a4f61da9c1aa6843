//! Transposed-convolution layers (PyTorch's `nn.ConvTranspose2d`, `nn.ConvTranspose3d`), the
//! learnable upsampling of decoders and generators, on our kernels
//! [`crate::ops::conv_transpose2d()`] / [`crate::ops::conv_transpose3d()`].
//!
//! # Shapes
//! - input `(B, Cin, n…)`, output `(B, Cout, N…)` with, per spatial axis,
//!   $N = (n - 1)s - 2p + d(k - 1) + p_{out} + 1$ ([`crate::ops::conv_transpose_output_size`]).
//! - `weight` `(Cin, Cout/groups, k…)` and `bias` `(Cout)`: PyTorch's names and layouts, so
//!   checkpoints load unchanged. Note the weight's first axis is the *input* channels.
//!
//! # Tip
//! Pick the kernel as a multiple of the stride (k = 2, s = 2 or k = 4, s = 2, p = 1 both double
//! the size exactly): with k = 3, s = 2 the output pixels receive 1, 2 or 4 kernel taps in a
//! periodic pattern and the generator paints checkerboards that training must unlearn (Odena et
//! al.). When a decoder must recover the encoder's exact size after an odd-sized stride-2 layer,
//! set `output_padding = 1`, or compute it with [`ConvTranspose2d::output_padding_for`].
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::conv::{conv_transpose2d, ConvTranspose2d, ConvTranspose2dConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! // A U-Net decoder step: 64 -> 32 channels, twice the resolution.
//! let cfg = ConvTranspose2dConfig::default().with_stride(2);
//! let up = conv_transpose2d(64, 32, 2, cfg, vb.pp("up"))?;
//! assert_eq!(up.weight().dims(), &[64, 32, 2, 2]); // (Cin, Cout/groups, k, k)
//! let x = Tensor::randn(0f32, 1., (1, 64, 12, 9), &Device::Cpu)?;
//! assert_eq!(up.forward(&x)?.dims(), &[1, 32, 24, 18]);
//! // An encoder conv with k = 3, s = 2, p = 1 took 25 to 13; the output padding that gets
//! // back to 25 rather than 26 is 0, and from 26 it is 1.
//! let cfg = ConvTranspose2dConfig::default().with_stride(2).with_padding(1);
//! let w = Tensor::zeros((8, 8, 3, 3), DType::F32, &Device::Cpu)?;
//! assert_eq!(ConvTranspose2d::output_padding_for(13, 25, 3, &cfg), Some(0));
//! assert_eq!(ConvTranspose2d::output_padding_for(13, 26, 3, &cfg), Some(1));
//! let layer = ConvTranspose2d::new(w, None, cfg.with_output_padding(1))?;
//! let x = Tensor::zeros((1, 8, 13, 13), DType::F32, &Device::Cpu)?;
//! assert_eq!(layer.forward(&x)?.dims(), &[1, 8, 26, 26]);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Dumoulin & Visin, *A guide to convolution arithmetic for deep learning*, 2016,
//!   <https://arxiv.org/abs/1603.07285>
//! - Odena, Dumoulin & Olah, *Deconvolution and Checkerboard Artifacts*, Distill, 2016,
//!   <https://distill.pub/2016/deconv-checkerboard/>
//! - Ronneberger, Fischer & Brox, *U-Net*, 2015, <https://arxiv.org/abs/1505.04597>

use crate::check;
use crate::ops::{
    conv_transpose2d as op2d, conv_transpose3d as op3d, conv_transpose_output_size,
    ConvTransposeConfig,
};
use crate::{Error, Result};
use candle_core::{DType, Module, Tensor};

pub use crate::ops::{ConvTranspose2dConfig, ConvTranspose3dConfig};

/// Checks the parameters of a transposed-convolution layer: a valid config, a non-empty float
/// weight `(Cin, Cout/groups, k…)` with `spatial` kernel axes, `Cin` divisible by `groups`, and
/// a `(Cout)` bias of the weight's dtype and device.
fn check_layer(
    block: &'static str,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvTransposeConfig,
    spatial: usize,
) -> Result<()> {
    cfg.validate_for(block)?;
    let pattern = if spatial == 3 {
        "(Cin, Cout/groups, kd, kh, kw)"
    } else {
        "(Cin, Cout/groups, kh, kw)"
    };
    check::rank(block, "weight", weight, spatial + 2, pattern)?;
    check::non_empty(block, "weight", weight)?;
    if weight.dtype() != DType::F64 {
        check::float_dtype(block, "weight", weight)?;
    }
    let cin = weight.dim(0)?;
    if !cin.is_multiple_of(cfg.groups) {
        return Err(Error::config(
            block,
            format!(
                "input channels {cin} are not divisible by groups {}",
                cfg.groups
            ),
        ));
    }
    let cout = weight.dim(1)?.checked_mul(cfg.groups);
    let cout = cout.ok_or_else(|| Error::config(block, "output channels overflow usize"))?;
    check::bias(block, weight, bias, cout)
}

/// Creates (or loads) the weight `(in, out/groups, k…)` and bias `(out)` with PyTorch's default
/// initialisation (uniform on $\pm 1/\sqrt{fan_{in}}$, $fan_{in} = (out/groups) k^{spatial}$).
fn params(
    block: &'static str,
    (cin, cout, k): (usize, usize, usize),
    spatial: usize,
    cfg: &ConvTransposeConfig,
    vb: &candle_nn::VarBuilder,
    with_bias: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    cfg.validate_for(block)?;
    check::positive(block, "in_channels", cin)?;
    check::positive(block, "out_channels", cout)?;
    check::positive(block, "kernel_size", k)?;
    for (name, c) in [("in_channels", cin), ("out_channels", cout)] {
        if !c.is_multiple_of(cfg.groups) {
            let msg = format!("{name} {c} are not divisible by groups {}", cfg.groups);
            return Err(Error::config(block, msg));
        }
    }
    let mut shape = vec![cin, cout / cfg.groups];
    shape.extend(std::iter::repeat_n(k, spatial));
    let fan_in = check::numel_of(block, "weight", &shape[1..], 1)?;
    let init = super::init::kaiming_uniform(fan_in);
    let weight = check::param(block, vb, shape, "weight", init)?;
    let bias = if with_bias {
        Some(check::param(block, vb, cout, "bias", init)?)
    } else {
        None
    };
    Ok((weight, bias))
}

macro_rules! conv_transpose_layer {
    ($layer:ident, $ctor:ident, $ctor_nb:ident, $op:ident, $spatial:literal, $block:literal,
     $torch:literal, $kernel:ty, |$d:ident| $kernel_of:expr) => {
        #[doc = concat!("A ", $spatial, "-D transposed convolution with optional bias (`", $torch, "`).")]
        #[derive(Debug, Clone)]
        pub struct $layer {
            weight: Tensor,
            bias: Option<Tensor>,
            cfg: ConvTransposeConfig,
        }

        impl $layer {
            /// Builds the layer from a `(Cin, Cout/groups, k…)` weight and an optional `(Cout)`
            /// bias.
            ///
            #[doc = concat!("Errors (naming `", $block, "`) on a wrong weight or bias shape, an")]
            /// empty or integer weight, a bias of another dtype or device, `Cin` not divisible
            /// by `groups`, or an invalid config.
            pub fn new(weight: Tensor, bias: Option<Tensor>, cfg: ConvTransposeConfig) -> Result<Self> {
                check_layer($block, &weight, bias.as_ref(), &cfg, $spatial)?;
                Ok(Self { weight, bias, cfg })
            }

            /// The `(Cin, Cout/groups, k…)` weight.
            pub fn weight(&self) -> &Tensor {
                &self.weight
            }

            /// The `(Cout)` bias, if any.
            pub fn bias(&self) -> Option<&Tensor> {
                self.bias.as_ref()
            }

            /// Stride, padding, output padding, dilation and groups.
            pub fn config(&self) -> ConvTransposeConfig {
                self.cfg
            }

            /// Number of input channels `Cin`.
            pub fn in_channels(&self) -> usize {
                self.weight.dims()[0]
            }

            /// Number of output channels `Cout`.
            pub fn out_channels(&self) -> usize {
                self.weight.dims()[1] * self.cfg.groups
            }

            /// Kernel size.
            pub fn kernel_size(&self) -> $kernel {
                // `new` checked the rank.
                let $d = &self.weight.dims()[2..];
                $kernel_of
            }

            /// The `output_padding` that makes an axis of `input` values come out as `target`
            /// with a kernel of `k` taps under `cfg` (its own `output_padding` ignored), or
            /// `None` when no allowed value does.
            pub fn output_padding_for(
                input: usize,
                target: usize,
                k: usize,
                cfg: &ConvTransposeConfig,
            ) -> Option<usize> {
                let base = conv_transpose_output_size(input, k, &cfg.with_output_padding(0))?;
                let op = target.checked_sub(base)?;
                cfg.with_output_padding(op).validate().ok().map(|_| op)
            }
        }

        impl Module for $layer {
            fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
                Ok($op(xs, &self.weight, self.bias.as_ref(), &self.cfg)?)
            }
        }

        #[doc = concat!("Creates (or loads, under PyTorch's names `weight` and `bias`) a `", $torch, "`")]
        /// from `in_channels` to `out_channels` with a `kernel_size` kernel on every axis.
        pub fn $ctor(
            in_channels: usize,
            out_channels: usize,
            kernel_size: usize,
            cfg: ConvTransposeConfig,
            vb: candle_nn::VarBuilder,
        ) -> Result<$layer> {
            let sizes = (in_channels, out_channels, kernel_size);
            let (w, b) = params($block, sizes, $spatial, &cfg, &vb, true)?;
            $layer::new(w, b, cfg)
        }

        #[doc = concat!("Like [`", stringify!($ctor), "`] without a bias (before a normalization layer).")]
        pub fn $ctor_nb(
            in_channels: usize,
            out_channels: usize,
            kernel_size: usize,
            cfg: ConvTransposeConfig,
            vb: candle_nn::VarBuilder,
        ) -> Result<$layer> {
            let sizes = (in_channels, out_channels, kernel_size);
            let (w, b) = params($block, sizes, $spatial, &cfg, &vb, false)?;
            $layer::new(w, b, cfg)
        }
    };
}

/// `(kh, kw)`.
type Kernel2 = (usize, usize);
/// `(kd, kh, kw)`.
type Kernel3 = (usize, usize, usize);

conv_transpose_layer!(
    ConvTranspose2d,
    conv_transpose2d,
    conv_transpose2d_no_bias,
    op2d,
    2,
    "ConvTranspose2d",
    "nn.ConvTranspose2d",
    Kernel2,
    |d| (d[0], d[1])
);
conv_transpose_layer!(
    ConvTranspose3d,
    conv_transpose3d,
    conv_transpose3d_no_bias,
    op3d,
    3,
    "ConvTranspose3d",
    "nn.ConvTranspose3d",
    Kernel3,
    |d| (d[0], d[1], d[2])
);
