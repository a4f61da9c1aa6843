//! Convolution building blocks.

mod padding;
pub use padding::{extent, output_size, Padding};

pub mod receptive_field;

mod depthwise;
pub use crate::ops::DepthwiseConv2dConfig;
pub use depthwise::{depthwise_conv2d, depthwise_conv2d_no_bias, DepthwiseConv2d};
mod separable;
pub use separable::{separable_conv2d, SeparableConv2d, SeparableConv2dConfig};
mod dilated;
pub use dilated::{aspp, Aspp, AsppConfig};
mod conv3d;
pub use crate::ops::Conv3dConfig;
pub use conv3d::{conv3d, conv3d_no_bias, Conv3d};
