//! 3-D convolution layer (PyTorch's `nn.Conv3d`) for volumes and video, on our kernel
//! [`crate::ops::conv3d()`].
//!
//! # Shapes
//! - input `(B, Cin, D, H, W)`, output `(B, Cout, Do, Ho, Wo)`; each spatial axis follows
//!   [`crate::conv::Padding`] (`Same` by default: $\lceil n/s \rceil$).
//! - `weight` `(Cout, Cin/groups, k, k, k)`, `bias` `(Cout)`: the names and layouts of PyTorch's
//!   state dict, so `nn.Conv3d` checkpoints load unchanged.
//!
//! # Tip
//! Keep 3-D kernels small. A $k \times k \times k$ layer from $C$ to $C$ channels holds $k^3 C^2$
//! weights: $27C^2$ for 3×3×3, $125C^2$ for 5×5×5 and $343C^2$ for 7×7×7, and its multiply-adds
//! grow the same way, times the number of voxels. Two stacked 3×3×3 layers see the same 5×5×5
//! neighbourhood as one 5×5×5 layer with $54C^2 < 125C^2$ weights (three reach 7×7×7 with
//! $81C^2 < 343C^2$), and put a non-linearity between them. The saving is larger than in 2-D
//! ($18C^2$ vs $25C^2$) because the cube grows faster than the square, which is why C3D found
//! 3×3×3 the best kernel for video and why volumetric medical-imaging networks (DeepMedic,
//! 3-D U-Nets) are deep stacks of 3×3×3 layers. The trade-off: more layers mean more activation
//! memory to keep for the backward pass, which in 3-D is usually the binding limit — reach
//! for stride 2 or `groups` (down to depthwise, `groups = Cin`) before widening the kernel.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::conv::{conv3d, conv3d_no_bias, Conv3dConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let c = 8usize;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let cfg = Conv3dConfig::default();
//! let a = conv3d_no_bias(c, c, 3, cfg, vb.pp("a"))?;
//! let b = conv3d_no_bias(c, c, 3, cfg, vb.pp("b"))?;
//! let big = conv3d_no_bias(c, c, 5, cfg, vb.pp("big"))?;
//! let huge = conv3d_no_bias(c, c, 7, cfg, vb.pp("huge"))?;
//! // k^3 C^2 weights: 27C^2, 125C^2 and 343C^2.
//! assert_eq!(a.weight().elem_count(), 27 * c * c);
//! assert_eq!(big.weight().elem_count(), 125 * c * c);
//! assert_eq!(huge.weight().elem_count(), 343 * c * c);
//! // Two 3x3x3 layers see 5x5x5 with 54C^2 < 125C^2 weights.
//! let stacked = a.weight().elem_count() + b.weight().elem_count();
//! assert_eq!(stacked, 54 * c * c);
//! assert!(stacked < big.weight().elem_count());
//! // `Same` padding keeps the volume; the layer with bias has Cout more parameters.
//! let x = Tensor::randn(0f32, 1., (1, c, 6, 7, 5), &Device::Cpu)?;
//! let y = b.forward(&a.forward(&x)?)?;
//! assert_eq!(y.dims(), &[1, c, 6, 7, 5]);
//! let with_bias = conv3d(c, 2 * c, 3, cfg.with_stride(2), vb.pp("down"))?;
//! assert_eq!(with_bias.forward(&x)?.dims(), &[1, 2 * c, 3, 4, 3]);
//! assert_eq!(with_bias.bias().map(|b| b.elem_count()), Some(2 * c));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Tran et al., *Learning Spatiotemporal Features with 3D Convolutional Networks* (C3D), 2015,
//!   <https://arxiv.org/abs/1412.0767>
//! - Kamnitsas et al., *Efficient Multi-Scale 3D CNN with Fully Connected CRF for Accurate Brain
//!   Lesion Segmentation* (DeepMedic), 2017, <https://arxiv.org/abs/1603.05959>

use crate::ops::{conv3d as conv3d_op, Conv3dConfig};
use crate::Result;
use candle_core::{Module, Tensor};

const BLOCK: &str = "Conv3d";

/// A 3-D convolution layer with optional bias (`nn.Conv3d`).
#[derive(Debug, Clone)]
pub struct Conv3d {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: Conv3dConfig,
}

impl Conv3d {
    /// Builds the layer from a `(Cout, Cin/groups, kd, kh, kw)` weight and an optional `(Cout)`
    /// bias.
    ///
    /// Errors (naming `Conv3d`) on a wrong weight or bias shape, an empty weight, an unsupported
    /// dtype, a bias of another dtype or device, `Cout` not divisible by `groups`, or an invalid
    /// config. `Cin` is checked against the input at `forward`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, cfg: Conv3dConfig) -> Result<Self> {
        super::init::check_layer(BLOCK, &weight, bias.as_ref(), cfg, 3)?;
        Ok(Self { weight, bias, cfg })
    }

    /// The `(Cout, Cin/groups, kd, kh, kw)` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The `(Cout)` bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Stride, padding, dilation and groups.
    pub fn config(&self) -> Conv3dConfig {
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

    /// Kernel size `(kd, kh, kw)`.
    pub fn kernel_size(&self) -> (usize, usize, usize) {
        let d = self.weight.dims();
        (d[2], d[3], d[4])
    }
}

impl Module for Conv3d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let y = conv3d_op(xs, &self.weight, self.cfg)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1, 1))?),
            None => Ok(y),
        }
    }
}

fn build(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv3dConfig,
    vb: candle_nn::VarBuilder,
    with_bias: bool,
) -> Result<Conv3d> {
    let sizes = (in_channels, out_channels, kernel_size);
    let (weight, bias) = super::init::layer_params(BLOCK, sizes, 3, cfg, &vb, with_bias)?;
    Conv3d::new(weight, bias, cfg)
}

/// Creates (or loads, under PyTorch's names `weight` and `bias`) a 3-D convolution from
/// `in_channels` to `out_channels` with a cubic `kernel_size` kernel.
pub fn conv3d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv3dConfig,
    vb: candle_nn::VarBuilder,
) -> Result<Conv3d> {
    build(in_channels, out_channels, kernel_size, cfg, vb, true)
}

/// Like [`conv3d`] without a bias (the usual choice before a normalisation layer).
pub fn conv3d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv3dConfig,
    vb: candle_nn::VarBuilder,
) -> Result<Conv3d> {
    build(in_channels, out_channels, kernel_size, cfg, vb, false)
}
