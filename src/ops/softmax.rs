//! Softmax over the last dimension, forward **and** backward, on CPU.
//!
//! # Shapes
//! - input $x$ `(…, D)`: any number of leading dimensions (rank ≥ 1); each row of $D$ values
//!   is normalized on its own and the output has the shape of $x$.
//! - $y_i = e^{x_i - m} / \sum_j e^{x_j - m}$ with the row maximum $m = \max_j x_j$.
//!
//! # Tip
//! Subtracting the row maximum before exponentiating changes nothing mathematically (the factor
//! $e^{-m}$ cancels) but keeps every exponent $\le 0$, so logits of size $10^4$ (or scores of
//! attention without scaling) give finite probabilities instead of `inf / inf = NaN`. Masked
//! entries set to $-\infty$ get probability 0; a row masked entirely has no defined softmax and
//! gives NaN, like PyTorch's `F.softmax`.
//!
//! candle-nn's fused `softmax_last_dim` is forward-only: training attention through it silently
//! drops the gradient of everything upstream of the scores (queries, keys and their
//! projections). The differentiable alternative, a composition of max/sub/exp/sum/div ops, walks
//! the tensor several times and keeps its intermediates for the backward pass. This op does one
//! pass per row in each direction: each task owns a block of whole rows; a row stays in L1 while
//! its maximum, exponentials, sum and scaled output are computed (in f32). The exponentials
//! come from a range reduction $e^x = 2^n e^r$ and a polynomial in $r$, plain arithmetic that
//! runs 8 values per AVX2 instruction where `f32::exp` is one library call per value; its
//! relative error is at most $2 \cdot 10^{-7}$ (about one f32 rounding step) against
//! `f32::exp`, and differences $x_i - m < -87$ give exactly 0. The backward needs
//! only the saved output $y$ and the upstream gradient $g$:
//! $\partial L/\partial x = y \odot (g - \sum_j g_j y_j)$, one dot product and one multiply
//! per value, no recomputation of the exponentials. The loops are compiled for each SIMD level and the best one
//! the CPU has runs; f16 and bf16 rows are widened to f32 scratch and rounded
//! once on store. There are no second derivatives.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor, Var, D};
//! use candle_tricks::ops::{softmax_last_dim, softmax_last_dim_reference};
//! # fn main() -> candle_tricks::Result<()> {
//! let x = Var::from_tensor(&Tensor::randn(0f32, 3., (2, 4, 33), &Device::Cpu)?)?;
//! let y = softmax_last_dim(&x)?;
//! // Same values as the plain-tensor composition; every row sums to one.
//! let r = softmax_last_dim_reference(&x)?;
//! assert!((&y - &r)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-6);
//! let ones = (y.sum(D::Minus1)? - 1.0)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(ones < 1e-5);
//! // Unlike candle_nn::ops::softmax_last_dim, the gradient reaches x.
//! let c = Tensor::randn(0f32, 1., (2, 4, 33), &Device::Cpu)?;
//! let grads = (&y * c)?.sum_all()?.backward()?;
//! let gx = grads.get(&x).expect("gradient wrt x");
//! assert!(gx.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
//!
//! // Large logits: exp(1e4) overflows f32, the max-subtracted form does not.
//! let big = Tensor::new(&[[1e4f32, 1e4 - 1.0, -1e4]], &Device::Cpu)?;
//! let p = softmax_last_dim(&big)?.flatten_all()?.to_vec1::<f32>()?;
//! assert!(p.iter().all(|v| v.is_finite()));
//! // The textbook form exp(x) / sum(exp(x)) gives inf / inf = NaN on the same row.
//! let e = big.exp()?;
//! let naive = e.broadcast_div(&e.sum_keepdim(1)?)?.flatten_all()?.to_vec1::<f32>()?;
//! assert!(naive[0].is_nan());
//! assert!((p[0] - 1.0 / (1.0 + (-1f32).exp())).abs() < 1e-6 && p[2] == 0.0);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Bridle, *Probabilistic Interpretation of Feedforward Classification Network Outputs, with
//!   Relationships to Statistical Pattern Recognition*, 1990 (the softmax).
//! - Milakov, Gimelshein, *Online normalizer calculation for softmax*, 2018,
//!   <https://arxiv.org/abs/1805.02867> (a one-pass max-and-sum; this kernel keeps the
//!   two-pass form, the row being in L1 by then)

use std::mem::MaybeUninit;

use crate::check;
use crate::cpu::math::exp;
use crate::cpu::simd::{dot, max, sum};
use crate::cpu::{
    contiguous, dispatch_float, dispatch_float_pair, expect_shape, f32_row, par_filled, Element,
    Isa, Kernel, Level,
};
use crate::ops::backend::{backend, upcast, Op};
use crate::ops::fused::{Fused, FusedOp, Grads, Operand, Output};
use crate::{Error, Result};
use candle_core::{DType, Layout, Shape, Tensor};

const OP: &str = "softmax_last_dim";

/// Values per forward/backward task (a block of whole rows, at least one).
const TASK_ELEMS: usize = 16 * 1024;

/// Softmax over the last dimension with our fused kernel (`F.softmax(x, dim=-1)`);
/// differentiable wrt `x`.
///
/// Errors (naming `softmax_last_dim`) on rank 0, a zero-sized dimension or a dtype other than
/// f32/f16/bf16.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let d = validate(x, false)?;
    if !backend(Op::SoftmaxLastDim, x.device()).is_kernel() {
        return Ok(softmax_last_dim_reference(&upcast(x)?)?.to_dtype(x.dtype())?);
    }
    Ok(x.contiguous()?.apply_op1(Fused(SoftmaxOp { d }))?)
}

/// Softmax over the last dimension built from candle tensor ops (max, sub, exp, sum, div);
/// same checks and result as [`softmax_last_dim`], except that f64 is accepted too (for
/// gradient checks). Slow, for tests and benches.
pub fn softmax_last_dim_reference(x: &Tensor) -> Result<Tensor> {
    validate(x, true)?;
    let last = x.rank() - 1;
    let e = x.broadcast_sub(&x.max_keepdim(last)?)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(last)?)?)
}

/// Validates the input; returns `D`.
fn validate(x: &Tensor, allow_f64: bool) -> Result<usize> {
    if x.rank() == 0 {
        return Err(Error::shape(
            OP,
            "input",
            "(…, D), rank >= 1",
            x.shape().clone(),
        ));
    }
    check::non_empty(OP, "input", x)?;
    if !(allow_f64 && x.dtype() == DType::F64) {
        check::float_dtype(OP, "input", x)?;
    }
    Ok(x.dims()[x.rank() - 1])
}

// ---------------------------------------------------------------------------------------------
// Custom ops
// ---------------------------------------------------------------------------------------------

/// The forward op `x -> y`.
#[derive(Debug, Clone, Copy)]
struct SoftmaxOp {
    d: usize,
}

/// The backward op `(y, g) -> dx`, applied without a graph of its own.
#[derive(Debug, Clone, Copy)]
struct SoftmaxGradOp {
    d: usize,
}

fn check_last_dim(l: &Layout, d: usize) -> candle_core::Result<()> {
    if l.shape().dims().last() != Some(&d) {
        return Err(candle_core::Error::ShapeMismatchBinaryOp {
            lhs: l.shape().clone(),
            rhs: Shape::from(d),
            op: OP,
        });
    }
    Ok(())
}

impl FusedOp<1> for SoftmaxOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu(&self, [(s, l)]: [Operand<'_>; 1]) -> Output {
        check_last_dim(l, self.d)?;
        let out = dispatch_float!(s, OP, |v: T| {
            let v = contiguous(v, l, OP)?;
            let y = forward::<T>(self.d, v)?;
            Ok::<_, candle_core::Error>(<T as candle_core::WithDType>::to_cpu_storage_owned(y))
        })?;
        Ok((out, l.shape().clone()))
    }

    fn grads(&self, _x: [&Tensor; 1], res: &Tensor, grad_res: &Tensor) -> Grads<1> {
        let y = res.contiguous()?;
        let g = grad_res.contiguous()?;
        let gx = y.apply_op2_no_bwd(&g, &Fused(SoftmaxGradOp { d: self.d }))?;
        Ok([Some(gx)])
    }
}

impl FusedOp<2> for SoftmaxGradOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu(&self, [(s1, l1), (s2, l2)]: [Operand<'_>; 2]) -> Output {
        check_last_dim(l1, self.d)?;
        expect_shape(OP, l2, l1.shape())?;
        let out = dispatch_float_pair!(s1, s2, OP, |y, g: T| {
            let y = contiguous(y, l1, OP)?;
            let g = contiguous(g, l2, OP)?;
            let dx = backward::<T>(self.d, y, g)?;
            Ok::<_, candle_core::Error>(<T as candle_core::WithDType>::to_cpu_storage_owned(dx))
        })?;
        Ok((out, l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// One forward row: `e = exp(x - max x)`; returns `1 / sum(e)` (the caller writes `e` scaled by
/// it, rounding once, straight into the output).
#[inline(always)]
fn fwd_row(x: &[f32], e: &mut [f32]) -> f32 {
    let m = max(x);
    for (e, x) in e.iter_mut().zip(x) {
        *e = exp(x - m);
    }
    1.0 / sum(e)
}

/// One backward row: `dx = y * (g - sum(g * y))`, rounded once into `dx`.
#[inline(always)]
fn bwd_row<T: Element>(y: &[f32], g: &[f32], dx: &mut [MaybeUninit<T>]) {
    let s = dot(g, y);
    for ((dx, y), g) in dx.iter_mut().zip(y).zip(g) {
        dx.write(T::from_f32(y * (g - s)));
    }
}

/// Per-worker scratch rows: the f16/bf16 inputs widened to f32, and the forward's exponentials.
#[derive(Default)]
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    e: Vec<f32>,
}

/// One forward task: the rows of `x` into `out` (every element of `out` is written).
struct FwdTask<'a, T> {
    d: usize,
    x: &'a [T],
    out: &'a mut [MaybeUninit<T>],
    scr: &'a mut Scratch,
}

impl<T: Element> Kernel for FwdTask<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let Scratch { a, e, .. } = self.scr;
        let d = self.d;
        e.resize(d, 0.0);
        for (xr, yr) in self.x.chunks_exact(d).zip(self.out.chunks_exact_mut(d)) {
            let r = fwd_row(f32_row(xr, a), e);
            for (y, e) in yr.iter_mut().zip(e.iter()) {
                y.write(T::from_f32(e * r));
            }
        }
    }
}

/// One backward task: the rows of `y`, `g` into `dx` (every element of `dx` is written).
struct BwdTask<'a, T> {
    d: usize,
    y: &'a [T],
    g: &'a [T],
    dx: &'a mut [MaybeUninit<T>],
    scr: &'a mut Scratch,
}

impl<T: Element> Kernel for BwdTask<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let Scratch { a, b, .. } = self.scr;
        let d = self.d;
        let rows = self.y.chunks_exact(d).zip(self.g.chunks_exact(d));
        for ((yr, gr), dxr) in rows.zip(self.dx.chunks_exact_mut(d)) {
            bwd_row(f32_row(yr, a), f32_row(gr, b), dxr);
        }
    }
}

fn forward<T: Element>(d: usize, x: &[T]) -> candle_core::Result<Vec<T>> {
    let level = Level::detect();
    let chunk = (TASK_ELEMS / d).max(1) * d;
    // SAFETY: the parts are whole rows (`chunk` and `x.len()` are multiples of `d`), and a task
    // writes every element of each of its rows.
    let y = unsafe {
        par_filled(OP, x.len(), chunk, |i, out, scr| {
            let x = &x[i * chunk..i * chunk + out.len()];
            level.run(FwdTask { d, x, out, scr })
        })
    }?;
    Ok(y)
}

fn backward<T: Element>(d: usize, y: &[T], g: &[T]) -> candle_core::Result<Vec<T>> {
    let level = Level::detect();
    let chunk = (TASK_ELEMS / d).max(1) * d;
    // SAFETY: as in `forward`.
    let dx = unsafe {
        par_filled(OP, y.len(), chunk, |i, dx, scr| {
            let range = i * chunk..i * chunk + dx.len();
            let (y, g) = (&y[range.clone()], &g[range]);
            level.run(BwdTask { d, y, g, dx, scr })
        })
    }?;
    Ok(dx)
}
