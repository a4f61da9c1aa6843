//! Causal depthwise 1-D convolution (Mamba's short convolution), bias and SiLU fused in one
//! kernel with its own backward.
//!
//! Each channel $d$ is convolved with its own $K$ taps, looking only backwards in time:
//!
//! $$y_{d,t} = \beta_d + \sum_{k=0}^{K-1} w_{d,k}\thinspace x_{d,\thinspace t-(K-1)+k}, \qquad
//!   x_{d,s} = 0 \text{ for } s < 0$$
//!
//! optionally followed by $\mathrm{silu}(y) = y \cdot \sigma(y)$. This is the `causal_conv1d_fn`
//! of the `causal-conv1d` package that Mamba uses, and PyTorch's
//! `nn.Conv1d(D, D, K, groups=D, padding=K-1)(x)[..., :L]`.
//!
//! # Shapes
//! - input `x` `(B, D, L)`.
//! - `weight` `(D, 1, K)` (PyTorch's `Conv1d` layout for `groups = D`) or `(D, K)`.
//! - optional `bias` `(D)`.
//! - output `(B, D, L)`: the same length as the input.
//!
//! # Tip
//! Output $t$ depends only on inputs $t-K+1, \dots, t$, so the layer can run in training over
//! the whole sequence at once and, when generating, one token at a time from a state of the
//! last $K$ inputs per channel (see `ssm::MambaState`): both paths give the same numbers.
//! Padding $K-1$ zeros on the left only (not $\lfloor K/2 \rfloor$ on both sides, as a "same"
//! convolution does) is what keeps the future out: a "same" convolution of a language model
//! would let token $t$ see token $t+1$ and the model would learn to copy its target.
//!
//! Fuse the convolution, its bias and the SiLU into one op with its own backward: as separate
//! tensor ops each intermediate $(B, D, L)$ tensor costs a write and a read in the forward
//! and, in candle's backward, a zero-filled gradient buffer plus an addition, while the
//! fused backward recomputes the pre-activation from the input (about $2K$ multiply-adds per
//! value) instead of storing it. In the Mamba language-model training step of
//! `benches/train.rs` this removed four full-size gradient accumulations per layer.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::ops::{causal_conv1d, causal_conv1d_reference};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let x = Tensor::randn(0f32, 1., (2, 6, 10), &dev)?;
//! let w = Tensor::randn(0f32, 1., (6, 1, 4), &dev)?;
//! let bias = Tensor::randn(0f32, 1., 6, &dev)?;
//! let y = causal_conv1d(&x, &w, Some(&bias), true)?;
//! assert_eq!(y.dims(), &[2, 6, 10]);
//! let r = causal_conv1d_reference(&x, &w, Some(&bias), true)?;
//! assert!((&y - &r)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
//! // Causality: changing the last input step changes only the last output step.
//! let x2 = Tensor::cat(&[x.narrow(2, 0, 9)?, (x.narrow(2, 9, 1)? + 5.0)?], 2)?;
//! let y2 = causal_conv1d(&x2, &w, Some(&bias), true)?;
//! let head = (y.narrow(2, 0, 9)? - y2.narrow(2, 0, 9)?)?.abs()?.max_all()?;
//! assert_eq!(head.to_scalar::<f32>()?, 0.0);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Gu, Dao, *Mamba: Linear-Time Sequence Modeling with Selective State Spaces*, 2023,
//!   <https://arxiv.org/abs/2312.00752> (the short causal convolution before the SSM)
//! - van den Oord et al., *WaveNet: A Generative Model for Raw Audio*, 2016,
//!   <https://arxiv.org/abs/1609.03499> (causal convolutions)

mod kernel;

use self::kernel::{ConvOp, Geom};
use crate::check;
use crate::ops::backend::{backend, upcast, upcast_opt, Op};
use crate::ops::fused::Fused;
use crate::{Error, Result};
use candle_core::{DType, Tensor};

const OP: &str = "causal_conv1d";

/// Validates the arguments; returns the weight as `(D, 1, K)` and `(B, D, L, K)`.
fn validate(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    allow_f64: bool,
) -> Result<(Tensor, usize)> {
    check::rank(OP, "input", x, 3, "(B, D, L)")?;
    check::non_empty(OP, "input", x)?;
    if !(allow_f64 && x.dtype() == DType::F64) {
        check::float_dtype(OP, "input", x)?;
    }
    check::same_dtype_device(OP, "weight", x, weight)?;
    let d = x.dim(1)?;
    let w3 = match weight.dims() {
        [wd, 1, k] if *wd == d && *k > 0 => weight.clone(),
        [wd, k] if *wd == d && *k > 0 => weight.unsqueeze(1)?,
        _ => {
            return Err(Error::shape(
                OP,
                "weight",
                format!("({d}, 1, K) or ({d}, K) with K > 0"),
                weight.shape().clone(),
            ))
        }
    };
    check::bias(OP, x, bias, d)?;
    let k = w3.dim(2)?;
    Ok((w3, k))
}

/// Causal depthwise 1-D convolution `(B, D, L) -> (B, D, L)` with `weight` `(D, 1, K)` or
/// `(D, K)`, an optional `bias` `(D)` and, when `silu`, a SiLU activation, in one fused kernel
/// (one pass per channel row; the backward recomputes the pre-activation), differentiable wrt
/// input, weight and bias.
///
/// Errors (naming `causal_conv1d`) on a wrong rank, a weight or bias whose channel count is not
/// `D`, a zero-sized dimension, a dtype other than f32/f16/bf16, or mixed dtypes/devices.
pub fn causal_conv1d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    silu: bool,
) -> Result<Tensor> {
    let (w3, k) = validate(x, weight, bias, false)?;
    if !backend(Op::CausalConv1d, x.device()).is_kernel() {
        let b = upcast_opt(bias)?;
        let y = causal_conv1d_reference(&upcast(x)?, &upcast(weight)?, b.as_ref(), silu)?;
        return Ok(y.to_dtype(x.dtype())?);
    }
    let (b, d, l) = x.dims3()?;
    // Taps and bias travel as one (D, K [+ 1]) operand: candle's custom ops take at most three
    // inputs, and the small concatenation routes each gradient back.
    let taps = w3.reshape((d, k))?;
    let params = match bias {
        Some(bias) => Tensor::cat(&[&taps, &bias.reshape((d, 1))?], 1)?,
        None => taps,
    };
    let geom = Geom {
        b,
        d,
        l,
        k,
        has_bias: bias.is_some(),
        silu,
    };
    Ok(x.contiguous()?
        .apply_op2(&params.contiguous()?, Fused(ConvOp(geom)))?)
}

/// The causal convolution as a sum of `K` shifted, scaled copies of the left-padded input
/// (plain candle tensor ops). Same arguments, checks and result as [`causal_conv1d`], except
/// that f64 is accepted too; slow, for tests.
pub fn causal_conv1d_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    silu: bool,
) -> Result<Tensor> {
    let (w3, k) = validate(x, weight, bias, true)?;
    let (_, d, l) = x.dims3()?;
    let xp = x.pad_with_zeros(2, k - 1, 0)?;
    let w2 = w3.squeeze(1)?;
    let mut y = Tensor::zeros(x.shape(), x.dtype(), x.device())?;
    for j in 0..k {
        let tap = w2.narrow(1, j, 1)?.reshape((1, d, 1))?;
        y = (y + xp.narrow(2, j, l)?.broadcast_mul(&tap)?)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(&b.reshape((1, d, 1))?)?;
    }
    if silu {
        // silu(v) = v / (1 + e^{-v}), written out so f64 works too.
        y = (&y / (y.neg()?.exp()? + 1.0)?)?;
    }
    Ok(y)
}
