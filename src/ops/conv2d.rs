//! Dense and grouped 2-D convolution, forward **and** backward, on the unfold + `gemm` kernels
//! of [`crate::ops::conv3d()`].
//!
//! # Shapes
//! - input $x$ `(B, Cin, H, W)`, weight `(Cout, Cin/groups, kh, kw)` (PyTorch's layout), output
//!   `(B, Cout, Ho, Wo)`, each axis sized by [`crate::conv::Padding`] as in
//!   [`crate::ops::conv3d()`] (`Same` may pad asymmetrically; `Explicit(p)` is PyTorch's
//!   `padding=p`).
//!
//! # Tip
//! Training time goes to the backward pass: it is two convolutions per layer, one for the input
//! gradient and one for the weight gradient. candle's `Tensor::conv2d` has a fast forward
//! (im2col + matmul), but its input gradient is candle's transposed convolution, a dot product
//! per output element. This op runs all three as matrix products: the weight gradient is
//! $g_{out} \cdot \mathrm{col}^\top$ and the input gradient $\mathrm{col2im}(W^\top g_{out})$,
//! with the column matrix built a tile at a time so that it stays in cache. On 2 cores at the
//! ResNet layers of `benches/train.rs` (batch 32, 3×3, 64 to 256 channels) forward + backward
//! runs 3 to 5 times faster than through `Tensor::conv2d` (see `docs/PERFORMANCE.md`), and
//! depthwise filters (`groups = Cin`) take the direct kernels instead. It also trains shapes
//! that candle's backward refuses: with stride 2, an odd height and an even width (9 × 8), the
//! input gradient of `Tensor::conv2d` fails with a shape mismatch, because candle pads its
//! transposed convolution's output by one amount for both axes.
//!
//! f16 and bf16 are widened to f32 once and rounded on store. Other devices run
//! [`conv2d_reference`] (candle's convolution, see [`crate::ops::backend()`]).
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_tricks::conv::Padding;
//! use candle_tricks::ops::{conv2d, conv2d_reference, Conv2dConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 4, 9, 8), &dev)?)?;
//! let w = Var::from_tensor(&Tensor::randn(0f32, 1., (6, 4, 3, 3), &dev)?)?;
//! // PyTorch's `F.conv2d(x, w, stride=2, padding=1)`.
//! let cfg = Conv2dConfig::default().with_stride(2).with_padding(Padding::Explicit(1));
//! let y = conv2d(&x, &w, cfg)?;
//! assert_eq!(y.dims(), &[2, 6, 5, 4]);
//! // The same values and gradients as candle's own convolution (through the reference, which
//! // trims the padded input: `Tensor::conv2d`'s backward fails on this odd-by-even shape).
//! let r = conv2d_reference(&x, &w, cfg)?;
//! assert!((&y - &r)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
//! let g = y.sqr()?.sum_all()?.backward()?;
//! let gr = r.sqr()?.sum_all()?.backward()?;
//! let d = (g.get(&w).unwrap() - gr.get(&w).unwrap())?.abs()?.max_all()?;
//! assert!(d.to_scalar::<f32>()? < 1e-2);
//! # Ok(())
//! # }
//! ```

use crate::geometry::extent;
use crate::ops::backend::{backend, upcast, Op};
use crate::ops::conv3d::{forward_kernel, geom, ConvConfig};
use crate::Result;
use candle_core::{DType, Tensor};

const OP: &str = "conv2d";
const OP_REF: &str = "conv2d_reference";

/// The configuration of [`conv2d`]: stride, padding, dilation and groups, the same on both axes.
pub type Conv2dConfig = ConvConfig;

/// 2-D convolution with our kernels; differentiable wrt input and weight.
///
/// `x` is `(B, Cin, H, W)`, `w` is `(Cout, Cin/groups, kh, kw)` and the result
/// `(B, Cout, Ho, Wo)`; f64 runs [`conv2d_reference`]. Errors (naming `conv2d`) on a wrong rank,
/// a zero-sized dimension, an integer dtype, mixed dtypes or devices, stride, dilation or groups 0, channel
/// counts not divisible by `groups`, `w.dim(1) != Cin / groups`, or a kernel larger than the
/// padded input. Bias is not part of the op (see [`crate::conv::Conv2d`]).
pub fn conv2d(x: &Tensor, w: &Tensor, cfg: Conv2dConfig) -> Result<Tensor> {
    let g = geom(OP, x, w, cfg, true, 2)?;
    // f64 (gradient checks) has no kernel of ours; candle's convolution computes it exactly.
    if x.dtype() == DType::F64 || !backend(Op::Conv2d, x.device()).is_kernel() {
        let y = conv2d_reference(&upcast(x)?, &upcast(w)?, cfg)?;
        return Ok(y.to_dtype(x.dtype())?);
    }
    forward_kernel(x, w, g)
}

/// 2-D convolution through candle's `Tensor::conv2d` on the explicitly zero-padded input.
///
/// Same arguments, checks and result as [`conv2d`] (errors name `conv2d_reference`);
/// differentiable through candle autograd on every device, and the path of
/// [`conv2d`] where our kernel does not run (see [`crate::ops::backend()`]).
pub fn conv2d_reference(x: &Tensor, w: &Tensor, cfg: Conv2dConfig) -> Result<Tensor> {
    let g = geom(OP_REF, x, w, cfg, true, 2)?;
    let (s, dl) = (cfg.stride, cfg.dilation);
    let [_, (h0, h1), (w0, w1)] = g.pad;
    let [_, oh, ow] = g.o;
    let [_, kh, kw] = g.k;
    // Padding made explicit (`Same` may be asymmetric), then only the rows and columns the
    // kernel reaches are kept, so candle's conv2d backward (one output padding for both axes)
    // sees no remainder on either axis.
    let xp = x.pad_with_zeros(2, h0, h1)?.pad_with_zeros(3, w0, w1)?;
    let xp = xp.narrow(2, 0, (oh - 1) * s + extent(kh, dl))?.narrow(
        3,
        0,
        (ow - 1) * s + extent(kw, dl),
    )?;
    Ok(xp.conv2d(w, 0, s, dl, cfg.groups)?)
}
