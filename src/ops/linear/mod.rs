//! $y = x W^\top + b$ over the last dimension (PyTorch's `F.linear`) as one fused op with its
//! own backward, for inputs with any number of leading dimensions.
//!
//! # Shapes
//! - input $x$ `(…, in)`: rank ≥ 1, the leading dimensions are folded into `rows`;
//! - `weight` $W$ `(out, in)` (PyTorch's layout), `bias` $b$ `(out)` or none;
//! - output $y$ `(…, out)`.
//!
//! # Tip
//! Fold the batch into the rows. A linear layer applied to tokens `(B, L, in)` is one
//! `(B·L, in) × (in, out)` product: the largest, most cache-friendly shape a matrix multiply can
//! get, and the weight gradient is one `(out, B·L) × (B·L, in)` product. candle-nn's `Linear`
//! instead broadcasts the weight to `(B, out, in)` and runs `B` products of `L` rows each; its
//! backward then builds a `(B, out, in)` gradient, `B` copies of the weight's size, and sums them.
//! For a ViT MLP layer at batch 32 (`192 → 768`) that is 19 MB of temporaries per layer and step,
//! where the folded product needs none.
//!
//! Then fuse the bias and write each gradient once, where it belongs. The composition
//! `x.matmul(w.t()).broadcast_add(b)` materialises $x W^\top$ and adds the bias in a second
//! pass; its backward computes $\partial L / \partial W^\top$ as a product and transposes it into
//! the weight's gradient through a strided copy, and sums the bias gradient over the rows with a
//! single-threaded strided reduction (7.7 % of a ViT training step). This op writes the bias into
//! each output tile just before the product accumulates onto it (one pass over $y$, while the
//! tile is in cache), and its backward is three independent kernels: $\partial L / \partial x =
//! G W$ and $\partial L / \partial W = G^\top x$, each one matrix product writing its contiguous
//! result directly (the transposes are only strides given to `gemm`), and
//! $\partial L / \partial b = \sum_r G_r$, a column sum split over blocks of rows on all
//! threads, accumulated in f32. The input gradient is skipped when $x$ needs none (the first
//! layer's data). f16 / bf16 are widened to f32, multiplied and rounded once; f64 and any empty
//! dimension take the composition [`linear_reference`], as other devices do.
//!
//! # Example
//! ```
//! # fn main() -> candle_tricks::Result<()> {
//! use candle_core::{Device, Module, Tensor, Var};
//! use candle_tricks::ops::{linear, linear_reference};
//!
//! let dev = Device::Cpu;
//! let x = Tensor::randn(0f32, 1., (4, 7, 16), &dev)?;
//! let w = Var::from_tensor(&Tensor::randn(0f32, 1., (8, 16), &dev)?)?;
//! let b = Var::from_tensor(&Tensor::randn(0f32, 1., 8, &dev)?)?;
//! let y = linear(&x, &w, Some(&b))?;
//! assert_eq!(y.dims(), &[4, 7, 8]);
//! // The same values and gradients as candle-nn's Linear and as the composition.
//! let reference = candle_nn::Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
//! let r = reference.forward(&x)?;
//! assert!((&y - &r)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
//! let c = linear_reference(&x, &w, Some(&b))?;
//! let (g, gc) = (y.sum_all()?.backward()?, c.sum_all()?.backward()?);
//! for v in [w.as_tensor(), b.as_tensor()] {
//!     let d = (g.get(v).unwrap() - gc.get(v).unwrap())?.abs()?.max_all()?;
//!     assert!(d.to_scalar::<f32>()? < 1e-4);
//! }
//! // The bias gradient of sum(y) counts the 4·7 rows.
//! assert_eq!(g.get(&b).unwrap().to_vec1::<f32>()?, vec![28.0; 8]);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Rosenblatt, *The Perceptron: a probabilistic model for information storage and
//!   organization in the brain*, 1958 (the affine layer).
//! - Goto, van de Geijn, *Anatomy of High-Performance Matrix Multiplication*, 2008,
//!   <https://doi.org/10.1145/1356052.1356053> (the packed, tiled products `gemm` runs).

mod cpu;
mod op;

use crate::ops::backend::{backend, Op};
use crate::{check, Error, Result};
use candle_core::{DType, Tensor, D};

const OP: &str = "linear";

/// $y = x W^\top + b$: `x` `(…, in)`, `weight` `(out, in)` (PyTorch's layout), `bias` `(out)`;
/// returns `(…, out)`. Differentiable wrt all three. Our fused kernel on CPU for f32, f16 and
/// bf16; the composition [`linear_reference`] elsewhere (other devices, f64).
///
/// Errors (naming `linear`) on an `x` of rank 0, a weight that is not 2-D, a last dimension of
/// `x` other than `in`, a bias that is not `(out)`, or mixed dtypes or devices.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (rows, inp, out) = validate(x, weight, bias)?;
    let fused_dtype = matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16);
    if !backend(Op::Linear, x.device()).is_kernel()
        || !fused_dtype
        || rows == 0
        || inp == 0
        || out == 0
    {
        return linear_reference(x, weight, bias);
    }
    let mut dims = x.dims()[..x.rank() - 1].to_vec();
    dims.push(out);
    let y = op::apply(
        &x.reshape((rows, inp))?.contiguous()?,
        &weight.contiguous()?,
        bias.map(Tensor::contiguous).transpose()?.as_ref(),
    )?;
    Ok(y.reshape(dims)?)
}

/// The composition `x.reshape(rows, in).matmul(w.t()).broadcast_add(b)` of candle tensor ops,
/// differentiated by candle: what [`linear`] runs on devices without our kernel, and for f64.
/// Same checks and result as [`linear`].
pub fn linear_reference(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (rows, inp, out) = validate(x, weight, bias)?;
    let mut dims = x.dims()[..x.rank() - 1].to_vec();
    let y = x.reshape((rows, inp))?.matmul(&weight.t()?)?;
    let y = match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    dims.push(out);
    Ok(y.reshape(dims)?)
}

/// Checks the arguments; returns `(rows, in, out)`.
fn validate(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<(usize, usize, usize)> {
    check::rank(OP, "weight", weight, 2, "(out, in)")?;
    let (out, inp) = weight.dims2()?;
    if x.rank() == 0 || x.dim(D::Minus1)? != inp {
        return Err(Error::shape(
            OP,
            "input",
            format!("(…, {inp})"),
            x.shape().clone(),
        ));
    }
    check::same_dtype_device(OP, "input", weight, x)?;
    check::bias(OP, weight, bias, out)?;
    // The product of the dimensions of an existing tensor fits in usize.
    let rows = x.dims()[..x.rank() - 1].iter().product::<usize>();
    Ok((rows, inp, out))
}
