//! Exact GELU, $x \thinspace \Phi(x)$, as one fused, multi-threaded pass forward and one backward
//! (`F.gelu(x)`, `approximate='none'`, and `nn.GELU()`).
//!
//! # Tip
//! GELU weighs its input by the probability that a standard normal variable lies below it,
//! $\mathrm{GELU}(x) = x \thinspace \Phi(x)$, a smooth ReLU that lets small negative values through. It
//! is the activation of BERT, GPT-2 and ViT MLPs. The exact form and the `tanh`
//! approximation differ by up to $5 \cdot 10^{-4}$: load a checkpoint with the form it was
//! trained with. Its derivative, $\Phi(x) + x \thinspace \varphi(x)$, needs no saved output.
//!
//! candle's `gelu_erf` calls a scalar `erf` per element and composes the backward from several
//! element-wise ops. Here both passes are one vectorised pass each ($\Phi$ from
//! the crate's `cpu::math`, absolute error below $3 \cdot 10^{-7}$), with f16/bf16 computed in f32.
//!
//! # Example
//! ```
//! # fn main() -> candle_tricks::Result<()> {
//! use candle_core::{Device, Tensor, Var};
//! use candle_tricks::ops::{gelu_erf, gelu_erf_reference};
//!
//! let x = Var::new(&[-3.0f32, -0.5, 0.0, 0.5, 3.0], &Device::Cpu)?;
//! let y = gelu_erf(&x)?;
//! let want = gelu_erf_reference(&x)?;
//! let diff = (&y - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(diff < 1e-6);
//! // The derivative at 0 is Phi(0) = 1/2.
//! let g = y.sum_all()?.backward()?;
//! let gx = g.get(&x).expect("gradient").to_vec1::<f32>()?;
//! assert!((gx[2] - 0.5).abs() < 1e-6);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Hendrycks, Gimpel, *Gaussian Error Linear Units (GELUs)*, 2016,
//!   <https://arxiv.org/abs/1606.08415>
//! - Abramowitz, Stegun, *Handbook of Mathematical Functions*, 1964, 7.1.26 (the erfc
//!   approximation)

use crate::check;
use crate::cpu::math::{normal_cdf, normal_pdf};
use crate::ops::backend::{backend, upcast, Op};
use crate::ops::pointwise::{apply, Pointwise};
use crate::Result;
use candle_core::{DType, Tensor};

const OP: &str = "gelu_erf";

/// Exact GELU, $x \thinspace \Phi(x)$, with our fused kernel; differentiable wrt `x`.
///
/// Errors (naming `gelu_erf`) on a zero-sized dimension or a dtype other than f32/f16/bf16.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    validate(x, false)?;
    if !backend(Op::GeluErf, x.device()).is_kernel() {
        return Ok(gelu_erf_reference(&upcast(x)?)?.to_dtype(x.dtype())?);
    }
    Ok(apply(Gelu, x)?)
}

/// Exact GELU from candle's `gelu_erf` op (and its autograd); same checks and result as
/// [`gelu_erf`], except that f64 is accepted too. The composition other devices run.
pub fn gelu_erf_reference(x: &Tensor) -> Result<Tensor> {
    validate(x, true)?;
    Ok(x.gelu_erf()?)
}

fn validate(x: &Tensor, allow_f64: bool) -> Result<()> {
    check::non_empty(OP, "input", x)?;
    if !(allow_f64 && x.dtype() == DType::F64) {
        check::float_dtype(OP, "input", x)?;
    }
    Ok(())
}

/// $x \thinspace \Phi(x)$ and its derivative $\Phi(x) + x \thinspace \varphi(x)$.
#[derive(Clone, Copy)]
struct Gelu;

impl Pointwise for Gelu {
    fn name(self) -> &'static str {
        OP
    }

    #[inline(always)]
    fn forward(self, x: f32) -> f32 {
        x * normal_cdf(x)
    }

    #[inline(always)]
    fn backward(self, x: f32, g: f32) -> f32 {
        g * (normal_cdf(x) + x * normal_pdf(x))
    }
}
