//! Windowed pooling layers with PyTorch's options: [`MaxPool2d`], [`AvgPool2d`], [`MaxPool3d`],
//! [`AvgPool3d`] (`nn.MaxPool2d`, …), on the fused kernel of [`crate::ops::max_pool2d()`].
//!
//! # Shapes
//! 2-D layers take `(B, C, H, W)`, 3-D layers `(B, C, D, H, W)`; each spatial axis follows
//! PyTorch's output-size rule (see [`crate::ops::pool`]).
//!
//! # Tip
//! A pool has no weights, so the layer is its config: build it once (the config is checked
//! then) and reuse it. For volumes with thick slices, pool in-plane first with a
//! $(1, 2, 2)$ kernel and switch to $(2, 2, 2)$ once the voxels are about isotropic.
//!
//! # Example
//! ```
//! use candle_core::{Device, Module, Tensor};
//! use candle_tricks::pool::{MaxPool3d, Pool3dConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! // A CT stack: 12 slices of 64x64; (1, 2, 2) keeps every slice.
//! let x = Tensor::randn(0f32, 1., (1, 8, 12, 64, 64), &Device::Cpu)?;
//! let in_plane = MaxPool3d::new(Pool3dConfig::new([1, 2, 2]))?;
//! assert_eq!(in_plane.forward(&x)?.dims(), &[1, 8, 12, 32, 32]);
//! // Bad options fail when the layer is built, naming it.
//! let bad = MaxPool3d::new(Pool3dConfig::new([3, 3, 3]).with_padding([2, 1, 1]));
//! assert!(bad.unwrap_err().to_string().contains("MaxPool3d"));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - PyTorch, `torch.nn.MaxPool3d`,
//!   <https://pytorch.org/docs/stable/generated/torch.nn.MaxPool3d.html>

use crate::ops::{
    avg_pool2d, avg_pool3d, max_pool2d, max_pool3d, Pool2dConfig, Pool3dConfig, PoolMode,
};
use crate::Result;
use candle_core::{Module, Tensor};

macro_rules! windowed_layer {
    ($(#[$doc:meta])* $name:ident, $cfg:ty, $mode:expr, $op:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            cfg: $cfg,
        }

        impl $name {
            /// The layer with `cfg`; errors (naming the layer) on options the pool refuses.
            pub fn new(cfg: $cfg) -> Result<Self> {
                cfg.validate(stringify!($name), $mode)?;
                Ok(Self { cfg })
            }

            /// The options.
            pub fn config(&self) -> &$cfg {
                &self.cfg
            }
        }

        impl Module for $name {
            fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
                Ok($op(xs, &self.cfg)?)
            }
        }
    };
}

windowed_layer!(
    /// 2-D max pooling (`nn.MaxPool2d`): kernel, stride, padding, dilation, `ceil_mode`.
    MaxPool2d, Pool2dConfig, PoolMode::Max, max_pool2d
);
windowed_layer!(
    /// 2-D average pooling (`nn.AvgPool2d`): kernel, stride, padding, `ceil_mode`,
    /// `count_include_pad`, `divisor_override`.
    AvgPool2d, Pool2dConfig, PoolMode::Avg, avg_pool2d
);
windowed_layer!(
    /// 3-D max pooling (`nn.MaxPool3d`) of `(B, C, D, H, W)`.
    MaxPool3d, Pool3dConfig, PoolMode::Max, max_pool3d
);
windowed_layer!(
    /// 3-D average pooling (`nn.AvgPool3d`) of `(B, C, D, H, W)`.
    AvgPool3d, Pool3dConfig, PoolMode::Avg, avg_pool3d
);
