//! Positional information for attention: fixed sinusoidal encodings (Vaswani et al.), learned
//! absolute embeddings (BERT, GPT-2, ViT) and rotary embeddings (RoPE, Su et al.).
//!
//! # Shapes
//! - [`SinusoidalPositionalEncoding`] and [`LearnedPositionalEmbedding`] add a `(L, E)` table
//!   to `(B, L, E)` (or any `(…, L, E)`); `weight` of the learned one is `(max_len, E)`, as
//!   `nn.Embedding(max_len, E)`.
//! - [`RotaryEmbedding::apply`] rotates queries and keys `(B, H, L, d)` (`d` even) at positions
//!   `offset .. offset + L`.
//!
//! # Tip
//! Attention ignores order, so positions must come from somewhere. Absolute encodings are added
//! to the input once; rotary embeddings rotate each query and key pair of channels
//! $(x_i, x_{i + d/2})$ by the angle $p \cdot \theta_i$, $\theta_i = b^{-2i/d}$, so the score
//! $q_m \cdot k_n$ depends only on the offset $m - n$ — a relative position at the cost of an
//! elementwise product per layer, and nothing to learn. Prefer RoPE in decoders (LLaMA, Mistral;
//! it also works unchanged with a KV cache through `offset`); learned embeddings when the length
//! is fixed (ViT patches, BERT); sinusoidal when no parameters are wanted. Length
//! extrapolation: learned embeddings have no row beyond `max_len` (an error here); the
//! sinusoidal table and the RoPE cache are formulas, so longer inputs only need a larger table,
//! and both degrade gracefully for a while past the training length rather than failing (RoPE
//! better, and further with interpolation tricks such as position scaling).
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_tricks::attention::RotaryEmbedding;
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let rope = RotaryEmbedding::new(16, 64, 10000.0, DType::F32, &dev)?;
//! let q = Tensor::randn(0f32, 1., (1, 1, 1, 16), &dev)?;
//! let k = Tensor::randn(0f32, 1., (1, 1, 1, 16), &dev)?;
//! // Score of q at position m with k at position n.
//! let score = |m: usize, n: usize| -> candle_tricks::Result<f32> {
//!     let (qm, _) = rope.apply(&q, &q, m)?;
//!     let (_, kn) = rope.apply(&k, &k, n)?;
//!     Ok((qm * kn)?.sum_all()?.to_scalar::<f32>()?)
//! };
//! // Only the offset m - n matters: (7, 3), (20, 16) and (50, 46) give the same score.
//! let s = score(7, 3)?;
//! assert!((score(20, 16)? - s).abs() < 1e-4 && (score(50, 46)? - s).abs() < 1e-4);
//! assert!((score(7, 5)? - s).abs() > 1e-4); // another offset, another score
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Vaswani et al., *Attention Is All You Need*, 2017, <https://arxiv.org/abs/1706.03762>
//! - Su et al., *RoFormer: Enhanced Transformer with Rotary Position Embedding*, 2021,
//!   <https://arxiv.org/abs/2104.09864>
//! - Press, Smith, Lewis, *Train Short, Test Long* (ALiBi; extrapolation of the encodings),
//!   2021, <https://arxiv.org/abs/2108.12409>

use crate::{check, Error, Result};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Init, VarBuilder};

const SIN: &str = "SinusoidalPositionalEncoding";
const LEARNED: &str = "LearnedPositionalEmbedding";
const ROPE: &str = "RotaryEmbedding";

/// Checks `(…, L, E)` with `offset + L ≤ max_len` and `E = dim`; returns `L`.
fn check_seq(
    block: &'static str,
    x: &Tensor,
    offset: usize,
    max_len: usize,
    dim: usize,
) -> Result<usize> {
    if x.rank() < 2 {
        return Err(Error::shape(
            block,
            "input",
            format!("(…, L, {dim})"),
            x.shape().clone(),
        ));
    }
    check::float_dtype(block, "input", x)?;
    let l = x.dim(D::Minus2)?;
    if x.dim(D::Minus1)? != dim || offset + l > max_len {
        return Err(Error::shape(
            block,
            "input",
            format!("(…, L, {dim}) with offset {offset} + L ≤ max_len {max_len}"),
            x.shape().clone(),
        ));
    }
    Ok(l)
}

/// Fixed sine/cosine table $PE_{p, 2i} = \sin(p / 10000^{2i/E})$,
/// $PE_{p, 2i+1} = \cos(p / 10000^{2i/E})$, built on the host; no parameters.
#[derive(Debug, Clone)]
pub struct SinusoidalPositionalEncoding {
    table: Tensor,
    max_len: usize,
    dim: usize,
}

impl SinusoidalPositionalEncoding {
    /// The table for positions `0 .. max_len` and `dim` features (odd `dim` allowed: the last
    /// column is a sine). Errors (naming the block) on a zero size or a non-float dtype.
    pub fn new(max_len: usize, dim: usize, dtype: DType, device: &Device) -> Result<Self> {
        check::positive(SIN, "max_len", max_len)?;
        check::positive(SIN, "dim", dim)?;
        let n = check::numel_of(SIN, "table (max_len, dim)", &[max_len, dim], 8)?;
        let mut v = vec![0f32; n];
        for p in 0..max_len {
            for c in 0..dim {
                let i = (c / 2) as f64;
                let angle = p as f64 / 10000f64.powf(2.0 * i / dim as f64);
                v[p * dim + c] = if c % 2 == 0 { angle.sin() } else { angle.cos() } as f32;
            }
        }
        let table = Tensor::from_vec(v, (max_len, dim), device)?.to_dtype(dtype)?;
        check::float_dtype(SIN, "dtype", &table)?;
        Ok(Self {
            table,
            max_len,
            dim,
        })
    }

    /// The `(max_len, dim)` table.
    pub fn table(&self) -> &Tensor {
        &self.table
    }

    /// Adds the rows `offset .. offset + L` to `x` `(…, L, dim)` (use `offset` for the new
    /// tokens of incremental decoding). Errors when the rows run past `max_len`, the last
    /// dimension is not `dim`, or dtypes differ.
    pub fn forward_at(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let l = check_seq(SIN, x, offset, self.max_len, self.dim)?;
        check::same_dtype_device(SIN, "input", &self.table, x)?;
        Ok(x.broadcast_add(&self.table.narrow(0, offset, l)?)?)
    }
}

impl Module for SinusoidalPositionalEncoding {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.forward_at(x, 0)?)
    }
}

/// Learned absolute position embeddings: `weight` `(max_len, E)` (PyTorch `nn.Embedding`
/// name and init $\mathcal{N}(0, 1)$), row $p$ added at position $p$.
#[derive(Debug, Clone)]
pub struct LearnedPositionalEmbedding {
    weight: Tensor,
    max_len: usize,
    dim: usize,
}

impl LearnedPositionalEmbedding {
    /// From a `(max_len, E)` weight. Errors (naming the block) on another rank, a zero size or
    /// a non-float dtype.
    pub fn new(weight: Tensor) -> Result<Self> {
        check::rank(LEARNED, "weight", &weight, 2, "(max_len, E)")?;
        check::non_empty(LEARNED, "weight", &weight)?;
        check::float_dtype(LEARNED, "weight", &weight)?;
        let (max_len, dim) = weight.dims2()?;
        Ok(Self {
            weight,
            max_len,
            dim,
        })
    }

    /// The `(max_len, E)` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Adds the rows `offset .. offset + L` to `x` `(…, L, E)`. Errors when the positions run
    /// past `max_len` (a learned table cannot extrapolate), on another `E` or dtype.
    pub fn forward_at(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let l = check_seq(LEARNED, x, offset, self.max_len, self.dim)?;
        check::same_dtype_device(LEARNED, "input", &self.weight, x)?;
        Ok(x.broadcast_add(&self.weight.narrow(0, offset, l)?)?)
    }
}

impl Module for LearnedPositionalEmbedding {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.forward_at(x, 0)?)
    }
}

/// Builds a [`LearnedPositionalEmbedding`] with `weight` `(max_len, dim)` initialised
/// $\mathcal{N}(0, 1)$ as `nn.Embedding`.
pub fn learned_positional_embedding(
    max_len: usize,
    dim: usize,
    vb: VarBuilder,
) -> Result<LearnedPositionalEmbedding> {
    check::positive(LEARNED, "max_len", max_len)?;
    check::positive(LEARNED, "dim", dim)?;
    let init = Init::Randn {
        mean: 0.0,
        stdev: 1.0,
    };
    LearnedPositionalEmbedding::new(check::param(LEARNED, &vb, (max_len, dim), "weight", init)?)
}

/// Rotary position embedding (RoPE) in the rotate-half layout of GPT-NeoX / Hugging Face LLaMA:
/// channel $i < d/2$ is paired with $i + d/2$ and rotated by $p \cdot b^{-2i/d}$. Built from
/// tensor ops (differentiable; candle-nn's fused `rope` has no backward) over a cos/sin cache.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    cos: Tensor,
    sin: Tensor,
    head_dim: usize,
    max_len: usize,
}

impl RotaryEmbedding {
    /// Caches cos and sin for `head_dim` (even) channels, positions `0 .. max_len`, frequency
    /// base `base` (10000 in most models). Errors (naming `RotaryEmbedding`) on an odd or zero
    /// `head_dim`, a zero `max_len`, a base that is not finite and > 1, or a non-float dtype.
    pub fn new(
        head_dim: usize,
        max_len: usize,
        base: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        check::positive(ROPE, "head_dim", head_dim)?;
        check::positive(ROPE, "max_len", max_len)?;
        if !head_dim.is_multiple_of(2) {
            return Err(Error::config(
                ROPE,
                format!("head_dim must be even, got {head_dim}"),
            ));
        }
        if !(base.is_finite() && base > 1.0) {
            return Err(Error::config(
                ROPE,
                format!("base must be finite and > 1, got {base}"),
            ));
        }
        let half = head_dim / 2;
        let n = check::numel_of(
            ROPE,
            "cos/sin tables (max_len, head_dim)",
            &[max_len, head_dim],
            8,
        )?;
        let mut c = vec![0f32; n];
        let mut s = vec![0f32; n];
        for p in 0..max_len {
            for i in 0..half {
                let a = p as f64 * base.powf(-2.0 * i as f64 / head_dim as f64);
                for j in [i, i + half] {
                    c[p * head_dim + j] = a.cos() as f32;
                    s[p * head_dim + j] = a.sin() as f32;
                }
            }
        }
        let cos = Tensor::from_vec(c, (max_len, head_dim), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(s, (max_len, head_dim), device)?.to_dtype(dtype)?;
        check::float_dtype(ROPE, "dtype", &cos)?;
        Ok(Self {
            cos,
            sin,
            head_dim,
            max_len,
        })
    }

    /// The `(max_len, head_dim)` cos and sin caches.
    pub fn cos_sin(&self) -> (&Tensor, &Tensor) {
        (&self.cos, &self.sin)
    }

    /// Rotates one tensor `(…, L, head_dim)` at positions `offset .. offset + L`.
    pub fn rotate(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let l = check_seq(ROPE, x, offset, self.max_len, self.head_dim)?;
        check::same_dtype_device(ROPE, "input", &self.cos, x)?;
        let cos = self.cos.narrow(0, offset, l)?;
        let sin = self.sin.narrow(0, offset, l)?;
        let half = self.head_dim / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(&cos)? + rot.broadcast_mul(&sin)?)?)
    }

    /// Rotates queries and keys `(B, H, L, head_dim)` (their `L` may differ, both start at
    /// `offset`). Errors (naming `RotaryEmbedding`) when `offset + L` exceeds `max_len`, on
    /// another head size or dtype.
    pub fn apply(&self, q: &Tensor, k: &Tensor, offset: usize) -> Result<(Tensor, Tensor)> {
        Ok((self.rotate(q, offset)?, self.rotate(k, offset)?))
    }
}
