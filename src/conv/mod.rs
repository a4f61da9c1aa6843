//! Convolution building blocks: padding and receptive-field arithmetic, dense 2-D, depthwise,
//! separable, dilated (ASPP) and 3-D convolutions, each on a fused kernel with a backward pass.
//!
//! | item | input → output | use it to |
//! | --- | --- | --- |
//! | [`Padding`], [`receptive_field`](mod@receptive_field) | arithmetic | keep sizes, size a stack to the context it must see |
//! | [`Conv2d`] | `(B, Cin, H, W)` → `(B, Cout, Ho, Wo)` | dense and grouped 2-D convolution, trained 3–5× faster than candle-nn's |
//! | [`DepthwiseConv2d`] | `(B, C, H, W)` → `(B, C·m, Ho, Wo)` | filter each channel spatially at $k^2 C$ weights |
//! | [`SeparableConv2d`] | `(B, Cin, H, W)` → `(B, Cout, Ho, Wo)` | replace a dense $k \times k$ conv at ~$1/k^2$ the cost |
//! | [`Aspp`] | `(B, Cin, H, W)` → `(B, Cout, H, W)` | see several context sizes at full resolution |
//! | [`pixel_shuffle()`], [`pixel_unshuffle()`] | `(B, C·r², H, W)` ↔ `(B, C, H·r, W·r)` | upsample after a low-resolution conv (sub-pixel conv), or go down losslessly |
//! | [`Conv3d`] | `(B, Cin, D, H, W)` → `(B, Cout, Do, Ho, Wo)` | volumes and video (candle has no conv3d) |
//! | [`ConvTranspose2d`], [`ConvTranspose3d`] | `(B, Cin, n…)` → `(B, Cout, N…)` | learnable upsampling in decoders and generators |
//!
//! # Shapes
//! PyTorch layouts throughout: activations channels-first (`NCHW`, `NCDHW`), weights
//! `(Cout, Cin / groups, k…)`, so `state_dict` tensors load unchanged. Output sizes follow
//! [`Padding::output_size`].
//!
//! # Tip
//! Spend weights where they pay. A dense $k \times k$ conv costs $k^2 C_{in} C_{out}$ per output
//! pixel; most of that mixes channels, which a $1 \times 1$ conv does for $C_{in} C_{out}$. Stack
//! small kernels for context ([`receptive_field`](mod@receptive_field)), split spatial and channel mixing when compute is
//! tight ([`SeparableConv2d`]), dilate instead of downsampling when the output must stay dense
//! ([`Aspp`]), and in 3-D, where weights grow with $k^3$, never reach for a big kernel
//! ([`Conv3d`]).
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::conv::{depthwise_conv2d, DepthwiseConv2dConfig, Padding};
//! # fn main() -> candle_tricks::Result<()> {
//! let map = VarMap::new();
//! let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
//! let cfg = DepthwiseConv2dConfig::default().with_stride(2).with_padding(Padding::Same);
//! let dw = depthwise_conv2d(32, 1, 3, cfg, vb.pp("dw"))?;
//! let x = Tensor::zeros((1, 32, 15, 15), DType::F32, &Device::Cpu)?;
//! // "same" at stride 2 rounds up: 15 -> 8.
//! assert_eq!(dw.forward(&x)?.dims(), &[1, 32, 8, 8]);
//! # Ok(()) }
//! ```
//!
//! # References
//! - Simonyan & Zisserman, VGG, 2014, <https://arxiv.org/abs/1409.1556>
//! - Howard et al., *MobileNets*, 2017, <https://arxiv.org/abs/1704.04861>
//! - Chen et al., *Rethinking Atrous Convolution* (DeepLabv3), 2017, <https://arxiv.org/abs/1706.05587>

pub(crate) mod init;
// Geometry lives below the ops (which need it too); re-exported here where users look for it.
pub use crate::geometry as padding;
pub use crate::geometry::{checked_extent, extent, output_size, Padding};

pub mod receptive_field;
pub use receptive_field::{receptive_field, LayerGeometry, ReceptiveField};

pub mod depthwise;
pub use crate::ops::DepthwiseConv2dConfig;
pub use depthwise::{depthwise_conv2d, depthwise_conv2d_no_bias, DepthwiseConv2d};
pub mod separable;
pub use separable::{separable_conv2d, SeparableConv2d, SeparableConv2dConfig};
pub mod dilated;
pub use dilated::{aspp, Aspp, AsppConfig};
pub mod conv2d;
pub use crate::ops::{Conv2dConfig, PadMode};
pub use conv2d::{conv2d, conv2d_no_bias, Conv2d};
pub mod conv3d;
pub mod pixel_shuffle;
pub use crate::ops::Conv3dConfig;
pub use conv3d::{conv3d, conv3d_no_bias, Conv3d};
pub mod conv_transpose;
pub use conv_transpose::{
    conv_transpose2d, conv_transpose2d_no_bias, conv_transpose3d, conv_transpose3d_no_bias,
    ConvTranspose2d, ConvTranspose2dConfig, ConvTranspose3d, ConvTranspose3dConfig,
};
pub use pixel_shuffle::{pixel_shuffle, pixel_unshuffle, PixelShuffle, PixelUnshuffle};
