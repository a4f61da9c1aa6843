//! Convolution building blocks.

mod padding;
pub use padding::{extent, output_size, Padding};

pub mod receptive_field;

mod depthwise;
mod separable;
mod dilated;
mod conv3d;
