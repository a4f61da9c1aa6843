//! Scaled dot-product attention with a tiled, memory-efficient CPU kernel (FlashAttention-2
//! style), forward **and** backward, with causal, sliding-window, key-padding, boolean and
//! additive masks and grouped-query heads.
//!
//! # Shapes
//! - queries $q$ `(B, H, Lq, d)`, keys $k$ and values $v$ `(B, Hkv, Lk, d)`; output `(B, H, Lq, d)`
//!   (PyTorch's `F.scaled_dot_product_attention` layout).
//! - Grouped-query attention: `Hkv` must divide `H`; query head $h$ reads key/value head
//!   $\lfloor h / (H/Hkv) \rfloor$ (PyTorch's `enable_gqa=True`, i.e. `repeat_interleave`).
//!   `Hkv = H` is ordinary multi-head attention, `Hkv = 1` multi-query attention.
//! - $o_i = \sum_j p_{ij} v_j$ with $p_{ij} = \mathrm{softmax}_ j(s \cdot q_i \cdot k_j + m_{ij})$,
//!   the scale $s$ defaulting to $1/\sqrt{d}$ and $m_{ij}$ the mask ($0$ = attend,
//!   $-\infty$ = masked, any float for an additive mask); see [`AttentionMask`] for the modes
//!   and the alignment of the causal ones.
//! - A query row whose keys are *all* masked has no defined softmax; this op returns 0 for that
//!   row (and zero gradients through it) instead of PyTorch's NaN. Whether a row is fully
//!   masked is decided from the mask alone (a bool/additive mask row of all `-inf`, or an empty
//!   band), never from its scores.
//! - Non-finite inputs propagate as in PyTorch: a NaN in a query, or in a key or value a query
//!   attends (or an infinity making one of its scores NaN or `+inf`), makes that output row
//!   NaN, and so are its gradients. A live row whose scores are all `-inf` (from infinite inputs,
//!   not the mask) is NaN too, as softmax gives. A NaN in a key or value a row does *not* attend
//!   may reach it as well, where the two share a computed tile (the dense composition, whose
//!   matmuls multiply masked zero probabilities by it, always propagates it); with an additive
//!   or bool mask a NaN score plus the `-inf` of the mask is NaN, as in PyTorch's math path.
//!
//! # Tip
//! Attention is $O(L^2)$ in time, and the textbook composition (matmul → softmax → matmul)
//! is $O(L^2)$ in memory too: it materialises the $B \cdot H \cdot L_q \cdot L_k$ score and
//! probability matrices and autograd keeps them for the backward pass (at $L = 8192$, 8 heads,
//! f32: 2 GiB per matrix). Tiling with an *online* softmax (Milakov & Gimelshein 2018; Dao et
//! al. 2022, 2023) never builds them: for a block of queries the kernel walks the keys tile by
//! tile, keeps a running row maximum $m_i$, normaliser $\ell_i$ and unnormalised output, and
//! rescales them by $e^{m_{old} - m_{new}}$ whenever the maximum grows. The forward pass saves
//! only the output and the log-sum-exp $m_i + \ln \ell_i$ per query row ($B \cdot H \cdot L_q$
//! floats); the backward pass recomputes each probability tile from $q$, $k$ and that
//! log-sum-exp, and with $D_i = \sum_c dO_{ic} O_{ic}$ gets
//! $dS = P \odot (dP - D)$ without any row reduction over keys. Extra memory is $O(L)$
//! instead of $O(L^2)$, at the price of recomputing $Q K^\top$ once in the backward pass.
//!
//! Two cheaper variants shrink the rest: **grouped-query attention** (GQA) shares each key/value
//! head between $H/H_{kv}$ query heads, dividing the KV cache of a decoder by that factor at a
//! small quality cost; a **sliding window** of $w$ keys per query (Longformer, Mistral) cuts
//! the cost to $O(L \cdot w)$ — this kernel skips whole tiles outside the band, so doubling $L$
//! at fixed $w$ doubles the time instead of quadrupling it.
//!
//! Kernel: each forward task owns a `(batch, head, 128-query tile)` and walks 128-key tiles;
//! the tile products $Q K^\top$ and $P V$ run through the `gemm` crate (runtime-dispatched SIMD), the exponentials through a
//! vectorised polynomial (relative error ≤ 2e-7). The backward pass runs one task per
//! `(batch, kv head, 64-key tile)`, which owns its $dK$, $dV$ rows (summing over the query heads
//! of its group without races); $dQ$ is accumulated in one buffer per worker thread and summed
//! at the end ($O(\text{threads} \cdot L \cdot d)$ memory). f16/bf16 inputs are widened to f32
//! once and the results rounded on store. There are no second derivatives; masks are not
//! differentiated.
//!
//! Measured on 2 cores (f32, `(1, 8, 4096, 64)`, forward + backward): the naive composition
//! takes about 14 s and 6.8 GiB above its inputs (extrapolated 27 GiB at $L = 8192$); this
//! op about 1.7 CPU-seconds (PyTorch's `F.scaled_dot_product_attention`: about 1.0) and
//! 66 MiB (129 MiB at $L = 8192$). Causal masking halves the time (tiles above the diagonal
//! are skipped), and a 256-key sliding window doubles it per doubling of $L$ (1024 → 8192).
//!
//! Attention dropout (`dropout_p > 0`) never stores its $L_q \times L_k$ pattern either: each
//! probability's keep/drop decision is a hash of the seed, its row and its column, recomputed
//! identically in the backward pass (the idea of FlashAttention's Philox counters, with a
//! cheaper integer hash). The normaliser $\ell_i$ uses the probabilities before dropout, as
//! `F.dropout(softmax(·))` does.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_tricks::ops::{scaled_dot_product_attention, sdpa_reference, AttentionMask};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let q = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 4, 37, 16), &dev)?)?;
//! let k = Tensor::randn(0f32, 1., (2, 2, 53, 16), &dev)?; // 2 kv heads: grouped-query
//! let v = Tensor::randn(0f32, 1., (2, 2, 53, 16), &dev)?;
//! let mask = AttentionMask::Causal { kv_offset: 0 };
//! let o = scaled_dot_product_attention(&q, &k, &v, &mask, None, 0.0)?;
//! // Same values as the materialised softmax(q kᵀ / √d + mask) v.
//! let r = sdpa_reference(&q, &k, &v, &mask, None)?;
//! assert!((&o - &r)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
//! // Causal, top-left aligned: query 0 sees only key 0, so its output is v[0].
//! let row0 = o.narrow(2, 0, 1)?; // (B, H, 1, d)
//! // Query head h reads kv head h / 2.
//! let v0 = v.narrow(2, 0, 1)?.unsqueeze(2)?.broadcast_as((2, 2, 2, 1, 16))?;
//! let v0 = v0.reshape((2, 4, 1, 16))?;
//! assert!((row0 - v0)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-6);
//! // Gradients reach the queries.
//! let grads = o.sum_all()?.backward()?;
//! assert!(grads.get(&q).is_some());
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Vaswani et al., *Attention Is All You Need*, 2017, <https://arxiv.org/abs/1706.03762>
//! - Dao, Fu, Ermon, Rudra, Ré, *FlashAttention: Fast and Memory-Efficient Exact Attention with
//!   IO-Awareness*, 2022, <https://arxiv.org/abs/2205.14135>
//! - Dao, *FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning*,
//!   2023, <https://arxiv.org/abs/2307.08691>
//! - Ainslie et al., *GQA: Training Generalized Multi-Query Transformer Models from Multi-Head
//!   Checkpoints*, 2023, <https://arxiv.org/abs/2305.13245>
//! - Beltagy, Peters, Cohan, *Longformer: The Long-Document Transformer*, 2020,
//!   <https://arxiv.org/abs/2004.05150>

mod backward;
mod forward;
mod kernel;
mod mask;
mod op;

use std::sync::{Arc, Mutex};

pub(crate) use self::mask::splitmix64;
use self::mask::{resolve_mask, Dropout};
use self::op::SdpaOp;
use crate::check;
use crate::cpu::try_zeros;
use crate::ops::backend::{backend, upcast, Op};
use crate::ops::fused::Fused;
use crate::{Error, Result};
use candle_core::{DType, Device, Shape, Tensor};

const OP: &str = "scaled_dot_product_attention";
const REF_OP: &str = "sdpa_reference";

/// Query rows per forward tile.
const FBR: usize = 128;
/// Key rows per forward tile.
const FBC: usize = 128;
/// Query rows per backward tile.
const BBR: usize = 64;
/// Key rows per backward tile (the rows of dk, dv a task owns).
const BBC: usize = 64;

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// Which query/key pairs may attend, for [`scaled_dot_product_attention`] and
/// [`sdpa_reference`]. Query index $i \in [0, L_q)$, key index $j \in [0, L_k)$.
#[derive(Debug, Clone, Default)]
pub enum AttentionMask {
    /// Every query attends every key.
    #[default]
    None,
    /// Query $i$ attends keys $j \le i + $ `kv_offset`. With offset 0 this is PyTorch's
    /// `is_causal=True` (a top-left aligned lower triangle, also when $L_q \ne L_k$). For a
    /// KV cache holding `past` earlier positions followed by the $L_q$ new ones, pass
    /// `kv_offset = past` (= $L_k - L_q$, the bottom-right alignment of flash-attn and candle-nn).
    Causal {
        /// Extra keys each query may see beyond its own index.
        kv_offset: usize,
    },
    /// A boolean mask as a `u8` tensor (candle has no bool dtype; comparisons return `u8`):
    /// non-zero = attend, 0 = masked, like PyTorch's bool `attn_mask`. Shape broadcastable to
    /// `(B, H, Lq, Lk)`: `(B|1, H|1, Lq|1, Lk)`, leading dimensions may be omitted.
    Bool(Tensor),
    /// A float mask added to the scaled scores (`-inf` masks), with the dtype of `q` and a
    /// shape broadcastable to `(B, H, Lq, Lk)` as for [`AttentionMask::Bool`]. Not
    /// differentiated.
    Additive(Tensor),
    /// Per-batch number of valid keys (`B` values, each ≤ `Lk`): keys $j \ge$ `lengths[b]` are
    /// masked (right padding). A length of 0 masks the whole batch row (output 0).
    KeyPadding(Vec<usize>),
    /// Local attention in a band of `window` keys (> 0) around each query, whole tiles outside
    /// the band skipped (cost $O(L \cdot w)$). Non-causal: $|i - j| <$ `window`; causal:
    /// $i -$ `window` $< j \le i$ (each query sees itself and the `window - 1` previous keys).
    ///
    /// With `global` $= g > 0$ the first $g$ positions are global tokens (Longformer,
    /// symmetric): query $i$ attends key $j$ iff $j$ is in $i$'s band, or $j < g$ (everyone
    /// sees the global keys), or $i < g$ (global queries see every key); when `causal`,
    /// additionally $j \le i$ always, global rows and keys included. The kernel still skips
    /// the tiles outside the band and the global prefix: cost $O(L \cdot (w + g))$ for the
    /// ordinary rows plus $O(g \cdot L)$ for the global ones. `global = 0` is the plain band.
    SlidingWindow {
        /// Band width, > 0.
        window: usize,
        /// Whether the band stops at the query's own position.
        causal: bool,
        /// Number of leading global tokens (0 = none).
        global: usize,
    },
}

/// Scaled dot-product attention $\mathrm{softmax}(s\thinspace q k^\top + m)\thinspace v$ with our
/// tiled kernel; differentiable wrt `q`, `k` and `v` (see the [module docs](self)).
///
/// `scale` defaults to $1/\sqrt{d}$. `dropout_p` in `[0, 1)` zeroes each attention probability
/// with that probability and scales the kept ones by $1/(1-p)$ (PyTorch's `dropout_p`; pass
/// 0.0 at inference); the pattern comes from a fresh random seed per call (use
/// [`scaled_dot_product_attention_seeded`] to fix it). Rows whose keys are all masked give 0.
///
/// Errors (naming `scaled_dot_product_attention`) on: rank ≠ 4, a zero-sized dimension, a
/// dtype other than f32/f16/bf16 or differing between `q`, `k`, `v`, mismatched batch, head
/// dimension or key/value shapes, `H` not divisible by `Hkv`, a mask of the wrong dtype or a
/// shape not broadcastable to `(B, H, Lq, Lk)`, key-padding lengths not `B` values ≤ `Lk`, a
/// window of 0, a scale that is not finite and > 0, `dropout_p` outside `[0, 1)`.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    scale: Option<f64>,
    dropout_p: f64,
) -> Result<Tensor> {
    let seed = if dropout_p > 0.0 { rand::random() } else { 0 };
    scaled_dot_product_attention_seeded(q, k, v, mask, scale, dropout_p, seed)
}

/// [`scaled_dot_product_attention`] with the dropout pattern fixed by `seed`: the same seed,
/// shapes and `dropout_p` drop the same probabilities (the forward and backward passes agree
/// on it by recomputing it from a counter-based hash of the seed and the position, never
/// storing it). [`attention_dropout_keep`] materialises that pattern.
pub fn scaled_dot_product_attention_seeded(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    scale: Option<f64>,
    dropout_p: f64,
    seed: u64,
) -> Result<Tensor> {
    let g = validate(OP, q, k, v, mask, scale, false)?;
    let dropout = Dropout::new(OP, dropout_p, seed)?;
    if !backend(Op::ScaledDotProductAttention, q.device()).is_kernel() {
        return composition(q, k, v, mask, scale, dropout_p, seed);
    }
    let (band, lens, bias) = resolve_mask(&g, mask)?;
    let op = SdpaOp {
        g,
        band,
        lens: lens.map(Arc::new),
        bias: bias.map(Arc::new),
        dropout,
        lse: Arc::new(Mutex::new(None)),
    };
    Ok(q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, Fused(op))?)
}

/// The dropout factors [`scaled_dot_product_attention_seeded`] applies for `(dropout_p, seed)`
/// on a `(B, H, Lq, Lk)` problem: an f32 tensor of that shape holding 0 (dropped) or
/// $1/(1-p)$ (kept). $O(B H L_q L_k)$ memory; for tests and [`sdpa_reference`]-style checks.
pub fn attention_dropout_keep(
    (b, h, lq, lk): (usize, usize, usize, usize),
    dropout_p: f64,
    seed: u64,
) -> Result<Tensor> {
    const NAME: &str = "attention_dropout_keep";
    let dr = Dropout::new(NAME, dropout_p, seed)?;
    let n = check::numel(NAME, "mask", &[b, h, lq, lk], DType::F32)?;
    let mut v = try_zeros::<f32>(NAME, n)?;
    for (row, out) in v.chunks_exact_mut(lk.max(1)).enumerate() {
        out.fill(1.0);
        dr.apply(out, row);
    }
    Ok(Tensor::from_vec(v, (b, h, lq, lk), &Device::Cpu)?)
}

/// Attention built from candle tensor ops: $q k^\top$ materialised, masked, softmax, times $v$
/// (key/value heads repeated for GQA). Same checks and result as
/// [`scaled_dot_product_attention`] (fully masked rows give 0), except that f64 is accepted
/// too (for gradient checks) and there is no dropout. Differentiable through candle's autograd
/// on every device: with [`sdpa_dropout_reference`] the path of
/// [`scaled_dot_product_attention`] where our kernel does not run (see
/// [`crate::ops::backend()`]). Memory $O(B H L_q L_k)$; slow, for tests and benches.
pub fn sdpa_reference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    scale: Option<f64>,
) -> Result<Tensor> {
    reference(q, k, v, mask, scale, None)
}

/// [`sdpa_reference`] with attention dropout: the materialised probabilities are multiplied by
/// [`attention_dropout_keep`]`(…, dropout_p, seed)`, the pattern
/// [`scaled_dot_product_attention_seeded`] uses (generated on the host and copied to the
/// device: $O(B H L_q L_k)$ work and transfer per call). Slow, for tests and the fallback.
pub fn sdpa_dropout_reference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    scale: Option<f64>,
    dropout_p: f64,
    seed: u64,
) -> Result<Tensor> {
    reference(q, k, v, mask, scale, Some((dropout_p, seed)))
}

/// The path of [`scaled_dot_product_attention_seeded`] where our kernel does not run (see
/// [`crate::ops::backend()`]): [`sdpa_dropout_reference`] (the kernel's dropout pattern
/// included), in f32 for f16 / bf16 inputs, the result rounded back.
fn composition(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    scale: Option<f64>,
    dropout_p: f64,
    seed: u64,
) -> Result<Tensor> {
    let mask = match mask {
        AttentionMask::Additive(m) => AttentionMask::Additive(upcast(m)?),
        other => other.clone(),
    };
    let dropout = (dropout_p > 0.0).then_some((dropout_p, seed));
    let (qw, kw, vw) = (upcast(q)?, upcast(k)?, upcast(v)?);
    let o = reference(&qw, &kw, &vw, &mask, scale, dropout)?;
    Ok(o.to_dtype(q.dtype())?)
}

fn reference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    scale: Option<f64>,
    dropout: Option<(f64, u64)>,
) -> Result<Tensor> {
    let g = validate(REF_OP, q, k, v, mask, scale, true)?;
    let dt = q.dtype();
    let dev = q.device();
    let groups = g.h / g.hkv;
    // (B, Hkv, Lk, d) -> (B, H, Lk, d), query head h reading kv head h / groups.
    let expand = |t: &Tensor| -> candle_core::Result<Tensor> {
        if groups == 1 {
            return Ok(t.clone());
        }
        t.unsqueeze(2)?
            .broadcast_as((g.b, g.hkv, groups, g.lk, g.d))?
            .reshape((g.b, g.h, g.lk, g.d))
    };
    let (k, v) = (expand(k)?, expand(v)?);
    let s = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? * g.scale)?;
    // The additive form of the mask (None: no mask).
    let m = match mask {
        // Not differentiated, as in the kernel.
        AttentionMask::Additive(m) => Some(pad4(m)?.detach()),
        AttentionMask::None => None,
        // On the mask's device (no host copy): non-zero attends, 0 is -inf.
        AttentionMask::Bool(m) => {
            let m = pad4(m)?;
            let ninf = Tensor::full(f32::NEG_INFINITY, m.shape(), dev)?.to_dtype(dt)?;
            Some(m.where_cond(&ninf.zeros_like()?, &ninf)?)
        }
        AttentionMask::Causal { .. }
        | AttentionMask::KeyPadding(_)
        | AttentionMask::SlidingWindow { .. } => {
            // Structural masks as a 0 / -inf additive tensor, built from the configuration.
            let (band, lens, _) = resolve_mask(&g, mask)?;
            let lens = lens.unwrap_or_else(|| vec![g.lk; g.b]);
            let n = check::numel(OP, "mask", &[g.b, g.lq, g.lk], DType::F32)?;
            let mut data = try_zeros::<f32>(OP, n)?;
            for (bi, &len) in lens.iter().enumerate() {
                for i in 0..g.lq {
                    let (lo, hi) = band.range(i as i64, len as i64);
                    let p = band.prefix(i as i64, len as i64);
                    for j in 0..g.lk {
                        let j = j as i64;
                        let ok = j <= p || (j >= lo && j <= hi);
                        if !ok {
                            data[(bi * g.lq + i) * g.lk + j as usize] = f32::NEG_INFINITY;
                        }
                    }
                }
            }
            Some(Tensor::from_vec(data, (g.b, 1, g.lq, g.lk), dev)?.to_dtype(dt)?)
        }
    };
    // Softmax whose fully masked rows give 0. A row is fully masked when its mask row is all
    // -inf (decided from the mask, not the scores: a live row whose scores are NaN or all -inf
    // gives NaN, as softmax does). Such rows get scores -inf (no gradient reaches the NaN or
    // infinite scores they may hold) and row maximum 0; a row sum of 0 is replaced by 1.
    let last = 3;
    let (s, live) = match m {
        None => (s, None),
        Some(m) => {
            let s = s.broadcast_add(&m)?;
            let live = m.ne(f64::NEG_INFINITY)?.max_keepdim(last)?;
            let live_s = live.broadcast_as(s.shape())?.contiguous()?;
            let ninf = Tensor::full(f32::NEG_INFINITY, s.shape(), dev)?.to_dtype(dt)?;
            (live_s.where_cond(&s, &ninf)?, Some(live))
        }
    };
    let mx = s.max_keepdim(last)?.detach();
    let mx = match live {
        None => mx,
        Some(live) => {
            let live = live.broadcast_as(mx.shape())?.contiguous()?;
            live.where_cond(&mx, &mx.zeros_like()?)?
        }
    };
    let e = s.broadcast_sub(&mx)?.exp()?;
    let sum = e.sum_keepdim(last)?;
    let empty = sum.eq(0.0)?.to_dtype(dt)?;
    let p = e.broadcast_div(&(sum + empty)?)?;
    let p = match dropout {
        Some((dp, seed)) => {
            let keep = attention_dropout_keep((g.b, g.h, g.lq, g.lk), dp, seed)?;
            (p * keep.to_dtype(dt)?.to_device(dev)?)?
        }
        None => p,
    };
    Ok(p.matmul(&v.contiguous()?)?)
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Problem sizes and the resolved scale.
#[derive(Debug, Clone, Copy)]
struct Geom {
    b: usize,
    h: usize,
    hkv: usize,
    lq: usize,
    lk: usize,
    d: usize,
    scale: f64,
}

impl Geom {
    fn q_shape(&self) -> Shape {
        Shape::from((self.b, self.h, self.lq, self.d))
    }
    fn kv_shape(&self) -> Shape {
        Shape::from((self.b, self.hkv, self.lk, self.d))
    }
    fn groups(&self) -> usize {
        self.h / self.hkv
    }
}

fn validate(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    scale: Option<f64>,
    allow_f64: bool,
) -> Result<Geom> {
    check::rank(op, "q", q, 4, "(B, H, Lq, d)")?;
    check::rank(op, "k", k, 4, "(B, Hkv, Lk, d)")?;
    check::rank(op, "v", v, 4, "(B, Hkv, Lk, d)")?;
    check::non_empty(op, "q", q)?;
    check::non_empty(op, "k", k)?;
    check::non_empty(op, "v", v)?;
    if !(allow_f64 && q.dtype() == DType::F64) {
        check::float_dtype(op, "q", q)?;
    }
    check::same_dtype_device(op, "k", q, k)?;
    check::same_dtype_device(op, "v", q, v)?;
    let (b, h, lq, d) = q.dims4()?;
    let (bk, hkv, lk, dk) = k.dims4()?;
    if bk != b || dk != d {
        return Err(Error::shape(
            op,
            "k",
            format!("(B, Hkv, Lk, d) with B = {b} and d = {d} as in q"),
            k.shape().clone(),
        ));
    }
    if h % hkv != 0 {
        return Err(Error::shape(
            op,
            "k",
            format!("a number of kv heads Hkv dividing the {h} query heads"),
            k.shape().clone(),
        ));
    }
    if v.dims() != k.dims() {
        return Err(Error::shape(
            op,
            "v",
            format!("({b}, {hkv}, {lk}, {d}), the shape of k"),
            v.shape().clone(),
        ));
    }
    let scale = match scale {
        None => 1.0 / (d as f64).sqrt(),
        Some(s) if s.is_finite() && s > 0.0 => s,
        Some(s) => {
            return Err(Error::config(
                op,
                format!("scale must be finite and > 0, got {s}"),
            ))
        }
    };
    let g = Geom {
        b,
        h,
        hkv,
        lq,
        lk,
        d,
        scale,
    };
    match mask {
        AttentionMask::None | AttentionMask::Causal { .. } => {}
        AttentionMask::Bool(m) => {
            if m.dtype() != DType::U8 {
                return Err(Error::DTypeMismatch {
                    block: op,
                    what: "bool mask",
                    expected: DType::U8,
                    actual: m.dtype(),
                });
            }
            mask_dims(op, &g, m)?;
        }
        AttentionMask::Additive(m) => {
            check::same_dtype_device(op, "additive mask", q, m)?;
            mask_dims(op, &g, m)?;
        }
        AttentionMask::KeyPadding(lens) => {
            if lens.len() != b || lens.iter().any(|&l| l > lk) {
                return Err(Error::config(
                    op,
                    format!(
                        "key-padding lengths must be B = {b} values <= Lk = {lk}, got {lens:?}"
                    ),
                ));
            }
        }
        AttentionMask::SlidingWindow { window, .. } => check::positive(op, "window", *window)?,
    }
    Ok(g)
}

/// The mask's dims left-padded to rank 4, after checking they broadcast to `(B, H, Lq, Lk)` with
/// the last one equal to `Lk`.
fn mask_dims(op: &'static str, g: &Geom, m: &Tensor) -> Result<[usize; 4]> {
    let err = || {
        Error::shape(
            op,
            "mask",
            format!(
                "broadcastable to (B, H, Lq, Lk) = ({}, {}, {}, {}): (B|1, H|1, Lq|1, Lk)",
                g.b, g.h, g.lq, g.lk
            ),
            m.shape().clone(),
        )
    };
    if m.rank() == 0 || m.rank() > 4 {
        return Err(err());
    }
    let mut dims = [1usize; 4];
    dims[4 - m.rank()..].copy_from_slice(m.dims());
    let full = [g.b, g.h, g.lq, g.lk];
    let ok = dims[3] == g.lk && (0..3).all(|a| dims[a] == full[a] || dims[a] == 1);
    if !ok {
        return Err(err());
    }
    Ok(dims)
}

/// `m` reshaped to rank 4 (leading 1s).
fn pad4(m: &Tensor) -> candle_core::Result<Tensor> {
    let mut dims = vec![1usize; 4 - m.rank()];
    dims.extend_from_slice(m.dims());
    m.reshape(dims)
}
