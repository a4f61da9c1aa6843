//! Receptive field, jump and center of a stack of convolution and pooling layers.
//!
//! # Shapes
//! Works on one spatial axis (square kernels behave the same on every axis). Each layer is a
//! [`LayerGeometry`] — kernel $k$, stride $s$, dilation $d$ and the zeros $p$ padded *before* the
//! axis — and the stack is read input-first.
//!
//! # Tip
//! The receptive field is the span of input pixels that can influence one output unit. Layer $l$
//! has extent $e_l = d_l(k_l - 1) + 1$ and sees through all earlier strides, so with the jump
//! $j_{l-1} = \prod_{i < l} s_i$ (distance in input pixels between adjacent units of layer $l-1$)
//!
//! $$ r_l = r_{l-1} + (e_l - 1)\thinspace j_{l-1}, \qquad j_l = j_{l-1} s_l, \qquad
//!    c_l = c_{l-1} + \left(\tfrac{e_l - 1}{2} - p_l\right) j_{l-1} $$
//!
//! starting from $r_0 = 1$, $j_0 = 1$, $c_0 = 0$, where $c_l$ is the input coordinate of the center
//! of the first output unit.
//!
//! Consequences worth designing with:
//! - **Small kernels stacked beat one big kernel.** Two 3×3 layers see 5×5 and three see 7×7, with
//!   $2 \cdot 9C^2 = 18C^2$ and $27C^2$ weights instead of $25C^2$ and $49C^2$, and one more
//!   non-linearity per layer (VGG's argument). The gap grows with dimension: in 3-D it is $54C^3$ vs
//!   $125C^3$ — see [`crate::conv::Conv3d`].
//! - **Strides multiply the growth.** Every later layer's kernel is scaled by the product of the
//!   strides before it, which is how a few downsamplings make the field cover a whole image.
//!   Dilation grows it without downsampling ([`crate::conv::Aspp`]).
//! - **Choose depth from the field you need.** Size the stack so the last layer's field covers the
//!   largest structure the task must relate (an organ, an object); beyond the image size more depth
//!   buys capacity, not context.
//! - The *effective* receptive field is smaller: the influence of input pixels falls off roughly
//!   like a Gaussian from the center (Luo et al. 2016), so aim for a theoretical field comfortably
//!   larger than the structures of interest.
//!
//! # Example
//! ```
//! use candle_tricks::conv::receptive_field::{receptive_field, LayerGeometry};
//! # fn main() -> candle_tricks::Result<()> {
//! let conv3 = LayerGeometry::conv(3, 1).with_padding(1);
//! // Two stacked 3x3 convs see what one 5x5 sees; three see what one 7x7 sees.
//! assert_eq!(receptive_field(&[conv3; 2])?.size, receptive_field(&[LayerGeometry::conv(5, 1)])?.size);
//! assert_eq!(receptive_field(&[conv3; 3])?.size, 7);
//!
//! // ... with fewer weights: count them on real candle layers (C -> C, no bias).
//! use candle_core::{DType, Device};
//! use candle_nn::{conv2d_no_bias, Conv2dConfig, VarBuilder, VarMap};
//! let c = 16;
//! let weights = |kernel: usize, layers: usize| -> candle_core::Result<usize> {
//!     let map = VarMap::new();
//!     let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
//!     for l in 0..layers {
//!         conv2d_no_bias(c, c, kernel, Conv2dConfig::default(), vb.pp(l))?;
//!     }
//!     Ok(map.all_vars().iter().map(|v| v.elem_count()).sum())
//! };
//! assert_eq!(weights(3, 2)?, 2 * 9 * c * c);
//! assert_eq!(weights(5, 1)?, 25 * c * c);
//! assert!(weights(3, 2)? < weights(5, 1)?);
//! assert_eq!(weights(3, 3)?, 3 * 9 * c * c);
//! assert!(weights(3, 3)? < weights(7, 1)?);
//!
//! // Strides compound: a stride-2 stem then two 3x3 convs (ResNet-like) already spans 11 pixels,
//! // and adjacent output units are 2 pixels apart.
//! let stack = [LayerGeometry::conv(3, 2).with_padding(1), conv3, conv3];
//! let rf = receptive_field(&stack)?;
//! assert_eq!((rf.size, rf.jump), (11, 2));
//! assert_eq!(rf.center, 0.0); // "same" padding keeps unit 0 centered on pixel 0
//! # Ok(()) }
//! ```
//!
//! # References
//! - Simonyan & Zisserman, *Very Deep Convolutional Networks for Large-Scale Image Recognition*
//!   (VGG), 2014, <https://arxiv.org/abs/1409.1556>
//! - Araujo, Norris & Sim, *Computing Receptive Fields of Convolutional Neural Networks*, Distill
//!   2019, <https://distill.pub/2019/computing-receptive-fields/>
//! - Luo et al., *Understanding the Effective Receptive Field in Deep CNNs*, 2016,
//!   <https://arxiv.org/abs/1701.04128>

use crate::conv::checked_extent;
use crate::{check, Error, Result};

const BLOCK: &str = "receptive_field";

/// Geometry of one convolution or pooling layer along one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerGeometry {
    /// Kernel size $k$.
    pub kernel: usize,
    /// Stride $s$.
    pub stride: usize,
    /// Dilation $d$ (1 for an ordinary kernel).
    pub dilation: usize,
    /// Zeros padded before the axis (only moves the center, not the size).
    pub padding: usize,
}

impl LayerGeometry {
    /// A layer with this kernel and stride, dilation 1 and no padding.
    pub fn conv(kernel: usize, stride: usize) -> Self {
        Self {
            kernel,
            stride,
            dilation: 1,
            padding: 0,
        }
    }

    /// Sets the dilation.
    pub fn with_dilation(mut self, dilation: usize) -> Self {
        self.dilation = dilation;
        self
    }

    /// Sets the padding before the axis.
    pub fn with_padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }
}

/// What one output unit of a stack sees, in input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReceptiveField {
    /// Width of the input span that influences one output unit.
    pub size: usize,
    /// Input distance between two adjacent output units (product of the strides).
    pub jump: usize,
    /// Input coordinate of the center of the first output unit's field (half-integer for even
    /// extents; negative when padding shifts it into the border).
    pub center: f64,
}

/// Receptive field of `layers`, applied input-first. Errors if a kernel, stride or dilation is 0,
/// or the field or the jump does not fit in `usize`.
pub fn receptive_field(layers: &[LayerGeometry]) -> Result<ReceptiveField> {
    let mut rf = ReceptiveField {
        size: 1,
        jump: 1,
        center: 0.0,
    };
    for (i, layer) in layers.iter().enumerate() {
        check::positive(BLOCK, "kernel", layer.kernel)?;
        check::positive(BLOCK, "stride", layer.stride)?;
        check::positive(BLOCK, "dilation", layer.dilation)?;
        let overflow = |what: &str| {
            Error::config(
                BLOCK,
                format!(
                    "{what} overflows usize at layer {i} (kernel {}, stride {}, dilation {}; \
                     field so far {}, jump {})",
                    layer.kernel, layer.stride, layer.dilation, rf.size, rf.jump
                ),
            )
        };
        let grow =
            checked_extent(layer.kernel, layer.dilation).ok_or_else(|| overflow("extent"))? - 1;
        let size = grow
            .checked_mul(rf.jump)
            .and_then(|g| g.checked_add(rf.size))
            .ok_or_else(|| overflow("receptive field"))?;
        let jump = rf
            .jump
            .checked_mul(layer.stride)
            .ok_or_else(|| overflow("jump"))?;
        rf.center += (grow as f64 / 2.0 - layer.padding as f64) * rf.jump as f64;
        rf.size = size;
        rf.jump = jump;
    }
    Ok(rf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dilation_grows_the_field_like_a_larger_kernel() {
        let dilated = receptive_field(&[LayerGeometry::conv(3, 1).with_dilation(2)]).unwrap();
        assert_eq!(dilated.size, 5);
        // HDC-style rates 1, 2, 3 reach 13 pixels in three layers.
        let hdc: Vec<_> = [1, 2, 3]
            .iter()
            .map(|&d| LayerGeometry::conv(3, 1).with_dilation(d))
            .collect();
        assert_eq!(receptive_field(&hdc).unwrap().size, 13);
    }

    #[test]
    fn center_of_valid_stack_moves_inward() {
        let rf = receptive_field(&[LayerGeometry::conv(3, 1), LayerGeometry::conv(2, 2)]).unwrap();
        assert_eq!(rf.size, 4);
        assert_eq!(rf.center, 1.5);
        assert_eq!(rf.jump, 2);
    }

    #[test]
    fn zero_stride_is_an_error() {
        let err = receptive_field(&[LayerGeometry::conv(3, 0)]).unwrap_err();
        assert!(err.to_string().contains("receptive_field"));
    }
}
