//! Adaptive pooling: pool any input size to a fixed output grid (PyTorch's
//! `nn.AdaptiveAvgPool2d` / `nn.AdaptiveMaxPool2d`), as functions and as the layer
//! [`AdaptivePool2d`], on the kernel in [`crate::ops`].
//!
//! # Shapes
//! - 2-D: `(B, C, H, W)` or `(C, H, W)` → `(B, C, Ho, Wo)` (or `(C, Ho, Wo)`) for any
//!   $H, W \ge 1$.
//! - 1-D: `(B, C, L)` or `(C, L)` → `(B, C, Lo)` (or `(C, Lo)`).
//! - Output $i$ of an axis of length $n$ pooled to $m$ covers the inputs
//!   $[\lfloor i n/m \rfloor, \lceil (i+1) n/m \rceil)$: equal bins when $m$ divides $n$,
//!   overlapping ones otherwise, repeated inputs when $m > n$.
//!
//! # Tip
//! A classifier head written as `flatten → linear` fixes the input resolution: the linear layer's
//! width is $C \cdot H^\prime \cdot W^\prime$ and changes with the image size. Putting an adaptive
//! pool to a fixed grid (usually $1 \times 1$: global average pooling, as in ResNet, or
//! $7 \times 7$ as in VGG) in front of the head decouples the head from the input size, so one
//! network trains on crops and evaluates on full-size images, and the head needs $C$ instead of
//! $C H^\prime W^\prime$ inputs. The trade-off: a $1 \times 1$ pool throws away where a feature
//! fired; keep a small grid (or use [`crate::pool::SpatialPyramidPooling`]) when layout matters.
//! Average pooling sees every position (smooth gradients to all of them), max pooling keeps the
//! strongest response and sends its gradient to one position per bin.
//!
//! # Example
//! ```
//! use candle_core::{Device, Module, Tensor};
//! use candle_tricks::pool::{adaptive_avg_pool2d, AdaptivePool2d, PoolMode};
//! # fn main() -> candle_tricks::Result<()> {
//! let head_in = AdaptivePool2d::new((1, 1), PoolMode::Avg)?;
//! // Two input sizes, one head width: C values per image.
//! for (h, w) in [(32, 32), (45, 61)] {
//!     let x = Tensor::randn(0f32, 1., (2, 16, h, w), &Device::Cpu)?;
//!     let y = head_in.forward(&x)?.flatten_from(1)?;
//!     assert_eq!(y.dims(), &[2, 16]);
//! }
//! // 7 rows into 3 bins: [0, 3), [2, 5), [4, 7) overlap, like PyTorch.
//! let x = Tensor::arange(0f32, 7., &Device::Cpu)?.reshape((1, 1, 7, 1))?;
//! let y = adaptive_avg_pool2d(&x, (3, 1))?.flatten_all()?.to_vec1::<f32>()?;
//! assert_eq!(y, vec![1.0, 3.0, 5.0]);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Lin et al., *Network In Network*, 2013 (global average pooling),
//!   <https://arxiv.org/abs/1312.4400>
//! - He et al., *Spatial Pyramid Pooling in Deep Convolutional Networks for Visual Recognition*,
//!   2014, <https://arxiv.org/abs/1406.4729>

use crate::ops::{adaptive_avg_pool3d, adaptive_max_pool3d, adaptive_pool2d, PoolMode};
use crate::{check, Result};
use candle_core::{Module, Tensor};

const BLOCK: &str = "AdaptivePool2d";

/// Adaptive 2-D pooling as a layer (`nn.AdaptiveAvgPool2d` / `nn.AdaptiveMaxPool2d`); no
/// weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptivePool2d {
    output_size: (usize, usize),
    mode: PoolMode,
}

impl AdaptivePool2d {
    /// A layer pooling to `output_size = (Ho, Wo)` with `mode`. Errors (naming
    /// `AdaptivePool2d`) when either size is 0.
    pub fn new(output_size: (usize, usize), mode: PoolMode) -> Result<Self> {
        check::positive(BLOCK, "output_size.0", output_size.0)?;
        check::positive(BLOCK, "output_size.1", output_size.1)?;
        Ok(Self { output_size, mode })
    }

    /// The `(Ho, Wo)` output grid.
    pub fn output_size(&self) -> (usize, usize) {
        self.output_size
    }

    /// Max or average.
    pub fn mode(&self) -> PoolMode {
        self.mode
    }
}

impl Module for AdaptivePool2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(adaptive_pool2d(xs, self.output_size, self.mode)?)
    }
}

/// Adaptive 3-D pooling of `(B, C, D, H, W)` to a fixed `(Do, Ho, Wo)` grid as a layer, with the
/// reduction its name says (`nn.AdaptiveAvgPool3d`, `nn.AdaptiveMaxPool3d`).
macro_rules! adaptive3d_layer {
    ($(#[$doc:meta])* $name:ident, $op:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            output_size: [usize; 3],
        }

        impl $name {
            /// A layer pooling to `output_size = (Do, Ho, Wo)`; errors (naming the layer) when a
            /// size is 0.
            pub fn new(output_size: [usize; 3]) -> Result<Self> {
                for (i, &o) in output_size.iter().enumerate() {
                    check::positive(stringify!($name), &format!("output_size[{i}]"), o)?;
                }
                Ok(Self { output_size })
            }

            /// The `(Do, Ho, Wo)` output grid.
            pub fn output_size(&self) -> [usize; 3] {
                self.output_size
            }
        }

        impl Module for $name {
            fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
                Ok($op(xs, self.output_size)?)
            }
        }
    };
}

adaptive3d_layer!(
    /// Adaptive 3-D average pooling (`nn.AdaptiveAvgPool3d`): a volumetric classifier's global
    /// pool with `[1, 1, 1]`.
    AdaptiveAvgPool3d,
    adaptive_avg_pool3d
);
adaptive3d_layer!(
    /// Adaptive 3-D max pooling (`nn.AdaptiveMaxPool3d`).
    AdaptiveMaxPool3d,
    adaptive_max_pool3d
);
