//! Convolution building blocks.

pub(crate) mod init;
mod padding;
pub use padding::{extent, output_size, Padding};

pub mod receptive_field;

pub mod depthwise;
pub use crate::ops::DepthwiseConv2dConfig;
pub use depthwise::{depthwise_conv2d, depthwise_conv2d_no_bias, DepthwiseConv2d};
pub mod separable;
pub use separable::{separable_conv2d, SeparableConv2d, SeparableConv2dConfig};
pub mod dilated;
pub use dilated::{aspp, Aspp, AsppConfig};
pub mod conv3d;
pub use crate::ops::Conv3dConfig;
pub use conv3d::{conv3d, conv3d_no_bias, Conv3d};
