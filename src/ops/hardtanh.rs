//! `hardtanh` (clamp to $[a, b]$), `relu6` and `relu` as one fused pass forward and one
//! backward, and [`activation`], which runs a `candle_nn::Activation` on the fused ops where we
//! have them.
//!
//! # Tip
//! ReLU6, $\min(\max(x, 0), 6)$, is MobileNet's activation: the bounded range keeps activations
//! representable in low precision (the reason MobileNetV1/V2 chose it for 8-bit inference), at no
//! cost in accuracy. Its gradient is the output gradient where $0 < x < 6$ and zero elsewhere,
//! PyTorch's convention at the two kinks too.
//!
//! candle-nn's `Activation::Relu6` is `clamp(0, 6)`, a `maximum` then a `minimum` against
//! broadcast scalars. Training through it costs far more than the forward: each of the two ops'
//! backward builds an equality mask per operand, converts both to floats, adds one, multiplies and
//! divides (to split the gradient at ties), and also reduces a gradient for the broadcast scalar:
//! about twenty passes over the activation per layer where one suffices. On the MobileNetV2-style
//! training step of `benches/train.rs` those passes took about a third of the time. Here the
//! forward is one pass and the backward one pass over `(x, grad)`, with no saved output.
//!
//! # Example
//! ```
//! # fn main() -> candle_tricks::Result<()> {
//! use candle_core::{Device, Var};
//! use candle_tricks::ops::{hardtanh_reference, relu6};
//!
//! let x = Var::new(&[-1.0f32, 0.0, 2.5, 6.0, 7.0], &Device::Cpu)?;
//! let y = relu6(&x)?;
//! assert_eq!(y.to_vec1::<f32>()?, [0.0, 0.0, 2.5, 6.0, 6.0]);
//! // The gradient flows only strictly inside (0, 6), as in PyTorch.
//! let g = y.sum_all()?.backward()?;
//! assert_eq!(g.get(&x).expect("grad").to_vec1::<f32>()?, [0.0, 0.0, 1.0, 0.0, 0.0]);
//! // The composition other devices run agrees.
//! let r = hardtanh_reference(&x, 0.0, 6.0)?;
//! assert_eq!(r.to_vec1::<f32>()?, y.to_vec1::<f32>()?);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Howard et al., *MobileNets*, 2017, <https://arxiv.org/abs/1704.04861>
//! - Sandler et al., *MobileNetV2: Inverted Residuals and Linear Bottlenecks*, 2018,
//!   <https://arxiv.org/abs/1801.04381>

use crate::check;
use crate::ops::backend::{backend, upcast, Op};
use crate::ops::pointwise::{apply, Pointwise};
use crate::{Error, Result};
use candle_core::{DType, Module, Tensor};
use candle_nn::Activation;

const OP: &str = "hardtanh";

/// $\min(\max(x, a), b)$ with our fused kernel (PyTorch's `F.hardtanh(x, min_val, max_val)`);
/// differentiable wrt `x`, the gradient zero where $x \le a$ or $x \ge b$. NaN stays NaN.
///
/// Errors (naming `hardtanh`) on a zero-sized dimension, a dtype other than f32/f16/bf16, a NaN
/// bound or `min_val >= max_val`.
pub fn hardtanh(x: &Tensor, min_val: f64, max_val: f64) -> Result<Tensor> {
    validate(x, min_val, max_val, false)?;
    if !backend(Op::Hardtanh, x.device()).is_kernel() {
        return Ok(hardtanh_reference(&upcast(x)?, min_val, max_val)?.to_dtype(x.dtype())?);
    }
    let f = Hardtanh {
        min: min_val as f32,
        max: max_val as f32,
    };
    Ok(apply(f, x)?)
}

/// ReLU6, `hardtanh(x, 0, 6)` (PyTorch's `F.relu6`).
pub fn relu6(x: &Tensor) -> Result<Tensor> {
    hardtanh(x, 0.0, 6.0)
}

/// ReLU, $\max(x, 0)$ (PyTorch's `F.relu`), on the [`hardtanh`] kernel with bounds
/// $(0, \infty)$: the gradient is zero where $x \le 0$, PyTorch's convention at the kink
/// (candle's `Tensor::relu` passes it at $x = 0$). Its backward is one pass over `(x, grad)`
/// where candle's builds a zero tensor, a comparison mask, its float copy and a product.
///
/// Errors (naming `hardtanh`) on a zero-sized dimension or a dtype other than f32/f16/bf16.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    validate(x, 0.0, f64::INFINITY, false)?;
    if !backend(Op::Hardtanh, x.device()).is_kernel() {
        return Ok(relu_reference(&upcast(x)?)?.to_dtype(x.dtype())?);
    }
    let f = Hardtanh {
        min: 0.0,
        max: f32::INFINITY,
    };
    Ok(apply(f, x)?)
}

/// [`relu`] composed from candle ops, `x · (x > 0)` with the mask a constant of the graph (so
/// the gradient is zero at $x = 0$ as in PyTorch); f64 accepted. The composition other devices
/// run.
pub fn relu_reference(x: &Tensor) -> Result<Tensor> {
    validate(x, 0.0, f64::INFINITY, true)?;
    Ok(x.mul(&x.gt(0.0)?.to_dtype(x.dtype())?)?)
}

/// [`hardtanh`] composed from candle ops (comparison masks, multiply, add), with the same
/// gradient convention; same checks and result, except that f64 is accepted too. The
/// composition other devices run.
pub fn hardtanh_reference(x: &Tensor, min_val: f64, max_val: f64) -> Result<Tensor> {
    validate(x, min_val, max_val, true)?;
    // The masks are constants of the graph: the gradient is `grad * inside`.
    let below = x.le(min_val)?.to_dtype(x.dtype())?;
    let above = x.ge(max_val)?.to_dtype(x.dtype())?;
    let inside = ((1.0 - &below)? - &above)?;
    let clamped = ((below * min_val)? + (above * max_val)?)?;
    Ok((x.mul(&inside)? + clamped)?)
}

/// `act` applied to `x`, on our fused kernels for `Relu` ([`relu`]), `Relu6` ([`relu6`]) and
/// `Gelu` (exact, [`crate::ops::gelu_erf()`]), and through `candle_nn` for the others: a
/// drop-in for `act.forward(x)` that trains faster (and whose ReLU gradient at 0 is PyTorch's).
pub fn activation(x: &Tensor, act: &Activation) -> Result<Tensor> {
    match act {
        Activation::Relu => relu(x),
        Activation::Relu6 => relu6(x),
        Activation::Gelu => crate::ops::gelu_erf(x),
        other => Ok(other.forward(x)?),
    }
}

fn validate(x: &Tensor, min_val: f64, max_val: f64, allow_f64: bool) -> Result<()> {
    check::non_empty(OP, "input", x)?;
    if !(allow_f64 && x.dtype() == DType::F64) {
        check::float_dtype(OP, "input", x)?;
    }
    if min_val.is_nan() || max_val.is_nan() || min_val >= max_val {
        return Err(Error::config(
            OP,
            format!("needs min_val < max_val, got min_val {min_val}, max_val {max_val}"),
        ));
    }
    Ok(())
}

/// Clamp to `[min, max]`; the gradient passes strictly inside.
#[derive(Clone, Copy)]
struct Hardtanh {
    min: f32,
    max: f32,
}

impl Pointwise for Hardtanh {
    fn name(self) -> &'static str {
        OP
    }

    #[inline(always)]
    fn forward(self, x: f32) -> f32 {
        // Comparisons rather than `f32::clamp`, whose NaN handling is the same but which panics
        // on bounds we have already checked.
        if x < self.min {
            self.min
        } else if x > self.max {
            self.max
        } else {
            x
        }
    }

    #[inline(always)]
    fn backward(self, x: f32, g: f32) -> f32 {
        if x <= self.min || x >= self.max {
            0.0
        } else {
            g
        }
    }
}
