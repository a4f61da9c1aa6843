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
use crate::cpu::{
    contiguous, dispatch_float, dispatch_float_pair, expect_shape, par_tasks, Element, Isa, Kernel,
    Level,
};
use crate::ops::backend::{backend, upcast, Op};
use crate::ops::fused::{Fused, FusedOp, Grads, Operand, Output};
use crate::Result;
use candle_core::{DType, Tensor, WithDType};

const OP: &str = "gelu_erf";

/// Values per task.
const TASK_ELEMS: usize = 32 * 1024;

/// Exact GELU, $x \thinspace \Phi(x)$, with our fused kernel; differentiable wrt `x`.
///
/// Errors (naming `gelu_erf`) on a zero-sized dimension or a dtype other than f32/f16/bf16.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    validate(x, false)?;
    if !backend(Op::GeluErf, x.device()).is_kernel() {
        return Ok(gelu_erf_reference(&upcast(x)?)?.to_dtype(x.dtype())?);
    }
    Ok(x.contiguous()?.apply_op1(Fused(GeluOp))?)
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

/// The forward op `x -> y`.
struct GeluOp;

/// The backward op `(x, grad_y) -> grad_x`, applied without a graph of its own.
struct GeluGradOp;

impl FusedOp<1> for GeluOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu(&self, [(s, l)]: [Operand<'_>; 1]) -> Output {
        let out = dispatch_float!(s, OP, |x: T| {
            let x = contiguous(x, l, OP)?;
            Ok::<_, candle_core::Error>(T::to_cpu_storage_owned(map(x, None)))
        })?;
        Ok((out, l.shape().clone()))
    }

    fn grads(&self, [x]: [&Tensor; 1], _res: &Tensor, grad: &Tensor) -> Grads<1> {
        let (x, g) = (x.contiguous()?, grad.contiguous()?);
        Ok([Some(x.apply_op2_no_bwd(&g, &Fused(GeluGradOp))?)])
    }
}

impl FusedOp<2> for GeluGradOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu(&self, [(s1, l1), (s2, l2)]: [Operand<'_>; 2]) -> Output {
        expect_shape(OP, l2, l1.shape())?;
        let out = dispatch_float_pair!(s1, s2, OP, |x, g: T| {
            let (x, g) = (contiguous(x, l1, OP)?, contiguous(g, l2, OP)?);
            Ok::<_, candle_core::Error>(T::to_cpu_storage_owned(map(x, Some(g))))
        })?;
        Ok((out, l1.shape().clone()))
    }
}

/// One task: `out = gelu(x)`, or `out = g · gelu'(x)` with a gradient.
struct Task<'a, T> {
    x: &'a [T],
    g: Option<&'a [T]>,
    out: &'a mut [T],
}

impl<T: Element> Kernel for Task<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        match self.g {
            None => {
                for (o, x) in self.out.iter_mut().zip(self.x) {
                    let x = x.to_f32();
                    *o = T::from_f32(x * normal_cdf(x));
                }
            }
            Some(g) => {
                let it = self.out.iter_mut().zip(self.x).zip(g);
                for ((o, x), g) in it {
                    let x = x.to_f32();
                    *o = T::from_f32(g.to_f32() * (normal_cdf(x) + x * normal_pdf(x)));
                }
            }
        }
    }
}

/// GELU of `x`, or its gradient for the output gradient `g`, over the CPU pool.
fn map<T: Element>(x: &[T], g: Option<&[T]>) -> Vec<T> {
    let level = Level::detect();
    let mut out = vec![T::from_f32(0.0); x.len()];
    par_tasks(&mut out, TASK_ELEMS, |i, out, _: &mut ()| {
        let range = i * TASK_ELEMS..i * TASK_ELEMS + out.len();
        let (x, g) = (&x[range.clone()], g.map(|g| &g[range]));
        level.run(Task { x, g, out })
    });
    out
}
