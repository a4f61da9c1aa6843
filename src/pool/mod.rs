//! Pooling layers: adaptive pooling to a fixed grid, spatial pyramid pooling and YOLO's SPPF.
//!
//! | item | input → output | use it to |
//! | --- | --- | --- |
//! | [`adaptive_avg_pool2d`], [`adaptive_max_pool2d`], [`AdaptivePool2d`] | `(B, C, H, W)` → `(B, C, Ho, Wo)` | make a head independent of the input size |
//! | [`adaptive_avg_pool1d`], [`adaptive_max_pool1d`] | `(B, C, L)` → `(B, C, Lo)` | the same for sequences |
//! | [`MaxPool2d`], [`AvgPool2d`], [`max_pool2d`], [`avg_pool2d`] | `(B, C, H, W)` → `(B, C, Ho, Wo)` | downsample with PyTorch's options (padding, dilation, `ceil_mode`, `count_include_pad`) |
//! | [`MaxPool3d`], [`AvgPool3d`], [`AdaptiveAvgPool3d`], [`AdaptiveMaxPool3d`] | `(B, C, D, H, W)` → `(B, C, Do, Ho, Wo)` | the same for volumes (CT, MRI, video) |
//! | [`SelectAdaptivePool2d`], [`GeM`] | `(B, C, H, W)` → `(B, m·C, 1, 1)` | a classifier or retrieval head: avg, max, both, or a learned generalized mean |
//! | [`SpatialPyramidPooling`] | `(B, C, H, W)` → `(B, C·Σ l²)` | feed a dense head images of any size |
//! | [`Sppf`], [`max_pool2d_same`] | `(B, c1, H, W)` → `(B, c2, H, W)` | widen the receptive field cheaply (YOLO neck) |
//!
//! # Shapes
//! Adaptive output $i$ of an axis of length $n$ pooled to $m$ covers
//! $[\lfloor i n/m \rfloor, \lceil (i+1) n/m \rceil)$ (PyTorch's bins; $m > n$ allowed). All ops
//! take f32, f16 or bf16 (f32 accumulation) and are differentiable through our own kernel.
//!
//! # Tip
//! - **Decouple the head from the input size.** A `flatten → linear` head fixes the resolution;
//!   an adaptive pool to a fixed grid (global $1 \times 1$ average pooling in ResNet-style
//!   networks) in front of it makes the head's width $C \cdot H_o W_o$ regardless of $H \times W$,
//!   so the same weights train on crops and run on full images.
//! - **Keep some layout with a pyramid.** One global pool forgets *where* features fired;
//!   spatial pyramid pooling concatenates pools to several grids ($\lbrace 6, 3, 2, 1 \rbrace$: 50
//!   bins per channel), still a fixed length $C \sum l^2$ for any input $\ge$ the finest grid, so a
//!   CNN can take images at native resolution and aspect ratio instead of warped crops.
//! - **Sequential beats parallel for stride-1 max pools.** A max over overlapping maxima is the
//!   max over the union, so three chained $5 \times 5$ pools give the $5, 9, 13$ pyramid of
//!   YOLOv4's SPP at $3 \cdot 25$ instead of $25 + 81 + 169$ reads per output: that is [`Sppf`].
//!
//! # Example
//! ```
//! use candle_core::{Device, Module, Tensor};
//! use candle_tricks::pool::{PoolMode, SpatialPyramidPooling};
//! # fn main() -> candle_tricks::Result<()> {
//! let spp = SpatialPyramidPooling::new(vec![4, 2, 1], PoolMode::Max)?;
//! let levels: usize = [4usize, 2, 1].iter().map(|l| l * l).sum();
//! assert_eq!(spp.output_features(64), 64 * levels); // 64 · 21
//! for (h, w) in [(9, 9), (24, 15)] {
//!     let x = Tensor::randn(0f32, 1., (3, 64, h, w), &Device::Cpu)?;
//!     assert_eq!(spp.forward(&x)?.dims(), &[3, 64 * 21]);
//! }
//! // Smaller than the finest level: an error naming the block, not a panic.
//! let tiny = Tensor::zeros((1, 64, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
//! assert!(spp.forward(&tiny).unwrap_err().to_string().contains("SpatialPyramidPooling"));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - He et al., *Spatial Pyramid Pooling in Deep Convolutional Networks for Visual Recognition*,
//!   2014, <https://arxiv.org/abs/1406.4729>
//! - Lin et al., *Network In Network*, 2013 (global average pooling),
//!   <https://arxiv.org/abs/1312.4400>
//! - Bochkovskiy et al., *YOLOv4: Optimal Speed and Accuracy of Object Detection*, 2020 (SPP
//!   5/9/13 in a detector neck), <https://arxiv.org/abs/2004.10934>

pub mod adaptive;
pub mod global;
pub use crate::ops::{
    adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d, adaptive_max_pool1d,
    adaptive_max_pool2d, adaptive_max_pool3d, adaptive_pool2d, avg_pool2d, avg_pool3d, max_pool2d,
    max_pool2d_same, max_pool3d, Pool2dConfig, Pool3dConfig, PoolConfig, PoolMode,
};
pub use adaptive::{AdaptiveAvgPool3d, AdaptiveMaxPool3d, AdaptivePool2d};
pub mod windowed;
pub use global::{gem, GeM, GeMConfig, GlobalPool, SelectAdaptivePool2d};
pub use windowed::{AvgPool2d, AvgPool3d, MaxPool2d, MaxPool3d};
pub mod spp;
pub use spp::{sppf, SpatialPyramidPooling, SppConfig, Sppf};
