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

use std::sync::{Arc, Mutex};

use crate::check;
use crate::ops::backend::{backend, upcast, Op};
use crate::ops::cpu::{f32_view, par_fold, par_tasks, store, try_zeros};
use crate::ops::simd::{detect_simd, Simd, LANES};
use crate::ops::softmax::exp_approx;
use crate::{Error, Result};
use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Shape, Storage, Tensor};
use gemm::Parallelism;

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
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)?)
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

// ---------------------------------------------------------------------------------------------
// Masks as bands and biases
// ---------------------------------------------------------------------------------------------

/// The structural masks as a band: query $i$ attends keys $j$ with
/// $i - before \le j \le i + after$ (a missing side is unbounded) and $j <$ the batch's length.
/// With `global` $= g > 0$ (sliding window only) the allowed keys of row $i$ are the union of
/// the prefix $[0, p(i)]$ (the global keys, `Band::prefix`) and `Band::range`, which for a
/// global row $i < g$ widens to $[0, i]$ (`causal`) or $[0, len)$.
#[derive(Debug, Clone, Copy, Default)]
struct Band {
    before: Option<i64>,
    after: Option<i64>,
    global: i64,
    causal: bool,
}

impl Band {
    /// Inclusive key range `(lo, hi)` of query `i` among `len` keys (empty when `hi < lo`).
    /// Without global tokens `lo` and `hi` are non-decreasing in `i`.
    #[inline(always)]
    fn range(&self, i: i64, len: i64) -> (i64, i64) {
        if i < self.global {
            let hi = if self.causal { i.min(len - 1) } else { len - 1 };
            return (0, hi);
        }
        let lo = self.before.map_or(0, |w| (i - w).max(0));
        let hi = self.after.map_or(len - 1, |a| (i + a).min(len - 1));
        (lo, hi)
    }

    /// Inclusive end of the global-key prefix `[0, p]` query `i` attends besides its range (-1
    /// when none). Constant for the ordinary rows `i >= global`.
    #[inline(always)]
    fn prefix(&self, i: i64, len: i64) -> i64 {
        if self.global == 0 {
            return -1;
        }
        let p = (self.global - 1).min(len - 1);
        if self.causal {
            p.min(i)
        } else {
            p
        }
    }
}

/// How a (query tile, key tile) pair meets the band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tile {
    /// No pair attends: not computed at all.
    Skip,
    /// Every pair attends.
    Full,
    /// Some do: mask per row.
    Partial,
}

/// Classifies query rows `i0..i1` against keys `j0..j1` (both ranges non-empty).
#[inline(always)]
fn classify(band: &Band, len: i64, i0: usize, i1: usize, j0: usize, j1: usize) -> Tile {
    let (i0, i1, j0, j1) = (i0 as i64, i1 as i64 - 1, j0 as i64, j1 as i64 - 1);
    if band.global > 0 {
        return classify_global(band, len, i0, i1, j0, j1);
    }
    // lo and hi are non-decreasing in i.
    let (lo_first, hi_first) = band.range(i0, len);
    let (lo_last, hi_last) = band.range(i1, len);
    if j0 > hi_last || j1 < lo_first {
        Tile::Skip
    } else if j0 >= lo_last && j1 <= hi_first {
        Tile::Full
    } else {
        Tile::Partial
    }
}

/// [`classify`] with global tokens (inclusive bounds): the global rows `i < g` attend
/// `[0, hi(i)]`, `hi` non-decreasing; the ordinary rows attend a constant prefix `[0, p]` and
/// their band `[lo(i), hi(i)]`, both ends non-decreasing. A tile is skipped only if both
/// groups of rows miss it, full only if both cover it.
#[inline(always)]
fn classify_global(band: &Band, len: i64, i0: i64, i1: i64, j0: i64, j1: i64) -> Tile {
    let g = band.global;
    let (mut skip, mut full) = (true, true);
    if i0 < g {
        let (_, hi_first) = band.range(i0, len);
        let (_, hi_last) = band.range(i1.min(g - 1), len);
        skip &= j0 > hi_last;
        full &= j1 <= hi_first;
    }
    if i1 >= g {
        let first = i0.max(g);
        let p = band.prefix(first, len);
        let (lo_first, hi_first) = band.range(first, len);
        let (lo_last, hi_last) = band.range(i1, len);
        skip &= j0 > p && (j0 > hi_last || j1 < lo_first);
        // The keys past the prefix must lie in every row's band.
        let rest = j0.max(p + 1);
        full &= rest > j1 || (rest >= lo_last && j1 <= hi_first);
    }
    if skip {
        Tile::Skip
    } else if full {
        Tile::Full
    } else {
        Tile::Partial
    }
}

/// An additive mask as f32, with broadcast strides (0 on a size-1 axis) for `(b, h, i)`; rows
/// of `Lk` values are contiguous.
#[derive(Debug)]
struct Bias {
    data: Vec<f32>,
    shape: Vec<usize>,
    strides: [usize; 3],
    /// Per stored row of `Lk` values: whether any entry is not `-inf` (the row attends a key).
    live: Vec<bool>,
}

impl Bias {
    #[inline(always)]
    fn offset(&self, b: usize, h: usize, i: usize) -> usize {
        b * self.strides[0] + h * self.strides[1] + i * self.strides[2]
    }

    #[inline(always)]
    fn row(&self, b: usize, h: usize, i: usize, lk: usize) -> &[f32] {
        let at = self.offset(b, h, i);
        &self.data[at..at + lk]
    }

    /// Whether query row `(b, h, i)` attends at least one key (its mask row is not all `-inf`;
    /// NaN or `+inf` entries count as attending, so they reach the output).
    #[inline(always)]
    fn live(&self, b: usize, h: usize, i: usize) -> bool {
        self.live[self.offset(b, h, i) / self.shape[3]]
    }
}

type ResolvedMask = (Band, Option<Vec<usize>>, Option<Bias>);

fn resolve_mask(g: &Geom, mask: &AttentionMask) -> Result<ResolvedMask> {
    let mut band = Band::default();
    let mut lens = None;
    let mut bias = None;
    match mask {
        AttentionMask::None => {}
        // Offsets and windows beyond the lengths change nothing; clamping keeps them in i64.
        AttentionMask::Causal { kv_offset } => band.after = Some((*kv_offset).min(g.lk) as i64),
        AttentionMask::SlidingWindow {
            window,
            causal,
            global,
        } => {
            let w = (*window).min(g.lq + g.lk) as i64;
            band.before = Some(w - 1);
            band.after = Some(if *causal { 0 } else { w - 1 });
            band.global = (*global).min(g.lq + g.lk) as i64;
            band.causal = *causal;
        }
        AttentionMask::KeyPadding(l) => lens = Some(l.clone()),
        AttentionMask::Bool(m) | AttentionMask::Additive(m) => {
            let dims = mask_dims(OP, g, m)?;
            let data: Vec<f32> = if matches!(mask, AttentionMask::Bool(_)) {
                m.flatten_all()?
                    .to_vec1::<u8>()?
                    .into_iter()
                    .map(|x| if x != 0 { 0.0 } else { f32::NEG_INFINITY })
                    .collect()
            } else {
                m.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?
            };
            let st = |a: usize, inner: usize| if dims[a] == 1 { 0 } else { inner };
            let strides = [
                st(0, dims[1] * dims[2] * dims[3]),
                st(1, dims[2] * dims[3]),
                st(2, dims[3]),
            ];
            let live = data
                .chunks_exact(dims[3])
                .map(|r| r.iter().any(|&x| x != f32::NEG_INFINITY))
                .collect();
            bias = Some(Bias {
                data,
                shape: dims.to_vec(),
                strides,
                live,
            });
        }
    }
    Ok((band, lens, bias))
}

/// Attention dropout: a probability is kept when a hash of `(seed, row, column)` is at least
/// `threshold` and then scaled by `inv_keep`.
#[derive(Debug, Clone, Copy)]
struct Dropout {
    /// `p * 2^32`; 0 = no dropout.
    threshold: u32,
    inv_keep: f32,
    seed: u64,
}

impl Dropout {
    fn new(op: &'static str, p: f64, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::config(
                op,
                format!("dropout_p must be in [0, 1), got {p}"),
            ));
        }
        Ok(Self {
            threshold: (p * 4_294_967_296.0) as u32,
            inv_keep: (1.0 / (1.0 - p)) as f32,
            seed,
        })
    }

    fn active(&self) -> bool {
        self.threshold > 0
    }

    /// The hash key of global score row `row` (`(b * H + h) * Lq + i`).
    #[inline(always)]
    fn row_key(&self, row: usize) -> u32 {
        let x = splitmix64(self.seed ^ splitmix64(row as u64));
        (x ^ (x >> 32)) as u32
    }

    /// Multiplies the scores `a` of columns `j0..` of row `row` by their dropout factors.
    #[inline(always)]
    fn apply_at(&self, a: &mut [f32], row: usize, j0: usize) {
        let key = self.row_key(row);
        let (thr, inv) = (self.threshold, self.inv_keep);
        for (c, x) in a.iter_mut().enumerate() {
            let u = lowbias32(key.wrapping_add(((j0 + c) as u32).wrapping_mul(0x9E37_79B9)));
            *x *= if u >= thr { inv } else { 0.0 };
        }
    }

    fn apply(&self, a: &mut [f32], row: usize) {
        self.apply_at(a, row, 0)
    }
}

/// SplitMix64's output function (Steele, Lea, Flood 2014).
#[inline(always)]
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 32-bit integer hash with low bias (C. Wellons' `lowbias32`), 32-bit multiplies only, so a
/// row of them vectorises.
#[inline(always)]
fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7FEB_352D);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846C_A68B);
    x ^ (x >> 16)
}

// ---------------------------------------------------------------------------------------------
// Custom op
// ---------------------------------------------------------------------------------------------

/// The forward op `(q, k, v) -> o`; keeps the log-sum-exp of its run for the backward pass.
#[derive(Debug, Clone)]
struct SdpaOp {
    g: Geom,
    band: Band,
    lens: Option<Arc<Vec<usize>>>,
    bias: Option<Arc<Bias>>,
    dropout: Dropout,
    /// Log-sum-exp per query row `(B, H, Lq)` of the forward run (+inf for a fully masked row).
    lse: Arc<Mutex<Option<Vec<f32>>>>,
}

impl SdpaOp {
    fn problem(&self) -> Problem<'_> {
        Problem {
            g: self.g,
            band: self.band,
            lens: self.lens.as_deref().map(|v| v.as_slice()),
            bias: self.bias.as_deref(),
            dropout: self.dropout,
            scale: self.g.scale as f32,
        }
    }
}

impl CustomOp3 for SdpaOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        use crate::ops::cpu::expect_shape;
        let g = self.g;
        expect_shape(OP, l1, &g.q_shape())?;
        expect_shape(OP, l2, &g.kv_shape())?;
        expect_shape(OP, l3, &g.kv_shape())?;
        let dtype = candle_core::backend::BackendStorage::dtype(s1);
        let q = f32_view(s1, l1, OP)?;
        let k = f32_view(s2, l2, OP)?;
        let v = f32_view(s3, l3, OP)?;
        let (o, lse) = forward(&self.problem(), &q, &k, &v);
        *self.lse.lock().unwrap_or_else(|e| e.into_inner()) = Some(lse);
        Ok((store(dtype, o, OP)?, g.q_shape()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if !q.device().is_cpu() {
            return Err(candle_core::Error::BackwardNotSupported { op: OP });
        }
        // f32 views of the contiguous storages (borrowed for f32, widened for f16/bf16).
        let ts = [
            q.contiguous()?,
            k.contiguous()?,
            v.contiguous()?,
            res.contiguous()?,
            grad_res.contiguous()?,
        ];
        let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
        let mut views = Vec::with_capacity(5);
        for (st, l) in &guards {
            match &**st {
                Storage::Cpu(c) => views.push(f32_view(c, l, OP)?),
                _ => return Err(candle_core::Error::BackwardNotSupported { op: OP }),
            }
        }
        let [qf, kf, vf, of, dof] = [0, 1, 2, 3, 4].map(|i| &*views[i]);
        let p = self.problem();
        let saved = self.lse.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let lse = match saved {
            Some(l) => l,
            None => forward(&p, qf, kf, vf).1,
        };
        let (dq, dk, dv) = backward(&p, qf, kf, vf, of, dof, &lse);
        let g = self.g;
        let dt = q.dtype();
        let mk = |x: Vec<f32>, s: Shape| Tensor::from_vec(x, s, &Device::Cpu)?.to_dtype(dt);
        Ok((
            Some(mk(dq, g.q_shape())?),
            Some(mk(dk, g.kv_shape())?),
            Some(mk(dv, g.kv_shape())?),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// Everything a kernel needs, borrowed from the op.
#[derive(Clone, Copy)]
struct Problem<'a> {
    g: Geom,
    band: Band,
    lens: Option<&'a [usize]>,
    bias: Option<&'a Bias>,
    dropout: Dropout,
    scale: f32,
}

impl Problem<'_> {
    #[inline(always)]
    fn len(&self, b: usize) -> usize {
        self.lens.map_or(self.g.lk, |l| l[b])
    }

    /// Whether the mask lets query row `i` of `(b, h)` attend at least one key. A row that
    /// attends none is *fully masked* (output 0); this is decided from the mask alone, never
    /// from the scores, so that NaN or infinite scores of a live row propagate to its output.
    #[inline(always)]
    fn row_live(&self, b: usize, h: usize, i: usize) -> bool {
        // Bool and additive masks come without a band or lengths (one mask mode at a time).
        if let Some(bias) = self.bias {
            return bias.live(b, h, i);
        }
        let (len, i) = (self.len(b) as i64, i as i64);
        let (lo, hi) = self.band.range(i, len);
        lo <= hi || self.band.prefix(i, len) >= 0
    }

    /// Masks the score tile `s` (`rows x cols`, row stride `ld`) of query rows `i0..` and keys
    /// `j0..` of `(b, h)`: adds the bias, sets pairs outside the band (and the global prefix) to
    /// -inf.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn mask_tile(
        &self,
        s: &mut [f32],
        ld: usize,
        tile: Tile,
        b: usize,
        h: usize,
        i0: usize,
        rows: usize,
        j0: usize,
        cols: usize,
    ) {
        let len = self.len(b) as i64;
        for r in 0..rows {
            let row = &mut s[r * ld..r * ld + cols];
            if let Some(bias) = self.bias {
                let br = &bias.row(b, h, i0 + r, self.g.lk)[j0..j0 + cols];
                for (x, m) in row.iter_mut().zip(br) {
                    *x += m;
                }
            }
            if tile == Tile::Partial {
                let i = (i0 + r) as i64;
                let (lo, hi) = self.band.range(i, len);
                let lo = (lo - j0 as i64).clamp(0, cols as i64) as usize;
                let hi = (hi + 1 - j0 as i64).clamp(lo as i64, cols as i64) as usize;
                // Columns before `pe` are global keys this row sees (pe = 0 without globals).
                let pe = (self.band.prefix(i, len) + 1 - j0 as i64).clamp(0, cols as i64) as usize;
                row[pe..lo.max(pe)].fill(f32::NEG_INFINITY);
                row[hi.max(pe)..].fill(f32::NEG_INFINITY);
            }
        }
    }
}

/// A raw pointer parallel tasks share; every write documents why the regions are disjoint.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: only used to hand disjoint regions of one buffer to parallel tasks (see each use);
// the buffer outlives the tasks, which `par_fold` joins before returning.
unsafe impl Send for SharedMut {}
// SAFETY: as for `Send`: tasks sharing a `SharedMut` write disjoint regions only.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    #[inline(always)]
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `dst (m x n, row stride dst_rs) = [dst +] beta * lhs (m x k) * rhs (k x n)`, strides given
/// as (row, column) pairs; single-threaded (the caller is one task of the pool).
///
/// # Safety
/// Every pointer must be valid for the strided extents given (`dst` for writes, and not
/// aliased by anyone else while this runs; `lhs`, `rhs` for reads).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
    beta: f32,
) {
    // SAFETY: `gemm` reads `lhs` (m x k) and `rhs` (k x n) and writes `dst` (m x n) at the
    // strides given, which this function's contract makes valid; `Parallelism::None` keeps
    // it on this thread.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            beta,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// The maximum of `a` (`-inf` when empty or all `-inf`), in `LANES` independent lanes. NaN
/// entries are skipped: the caller sees them through the exponentials (NaN), hence the row sum.
#[inline(always)]
fn row_max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let ca = a.chunks_exact(LANES);
    let rest = ca
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, v| if *v > m { *v } else { m });
    for c in ca {
        for j in 0..LANES {
            acc[j] = if c[j] > acc[j] { c[j] } else { acc[j] };
        }
    }
    acc.iter().fold(rest, |m, v| if *v > m { *v } else { m })
}

/// `a[i] = exp(a[i] - shift)` (0 for `-inf` entries or `shift = +inf`).
#[inline(always)]
fn exp_shifted(a: &mut [f32], shift: f32) {
    for x in a.iter_mut() {
        *x = exp_approx(*x - shift);
    }
}

/// Per-worker scratch of the forward pass.
#[derive(Default)]
struct FwdScratch {
    s: Vec<f32>,
    acc: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

/// Output and log-sum-exp of the forward pass.
fn forward(p: &Problem, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let g = p.g;
    let nqt = g.lq.div_ceil(FBR);
    let mut o = vec![0f32; g.b * g.h * g.lq * g.d];
    let mut lse = vec![0f32; g.b * g.h * g.lq];
    let (op, lp) = (SharedMut(o.as_mut_ptr()), SharedMut(lse.as_mut_ptr()));
    let simd = detect_simd();
    par_fold(g.b * g.h * nqt, |t, scr: &mut FwdScratch| {
        let (bh, qt) = (t / nqt, t % nqt);
        let i0 = qt * FBR;
        let rows = FBR.min(g.lq - i0);
        // SAFETY: task (bh, qt) alone writes query rows i0..i0 + rows of head bh, in o (rows x d
        // values) and lse (rows values); both buffers outlive the parallel loop.
        let (o_tile, l_tile) = unsafe {
            (
                std::slice::from_raw_parts_mut(op.ptr().add((bh * g.lq + i0) * g.d), rows * g.d),
                std::slice::from_raw_parts_mut(lp.ptr().add(bh * g.lq + i0), rows),
            )
        };
        match simd {
            // SAFETY: `detect_simd` returned `Avx2Fma` only after detecting AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2Fma => unsafe {
                fwd_task_avx2(p, q, k, v, bh, i0, rows, o_tile, l_tile, scr)
            },
            _ => fwd_task(p, q, k, v, bh, i0, rows, o_tile, l_tile, scr),
        }
    });
    (o, lse)
}

/// [`fwd_task`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA (the caller matched `detect_simd()` to `Avx2Fma`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn fwd_task_avx2(
    p: &Problem,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bh: usize,
    i0: usize,
    rows: usize,
    o: &mut [f32],
    lse: &mut [f32],
    scr: &mut FwdScratch,
) {
    fwd_task(p, q, k, v, bh, i0, rows, o, lse, scr)
}

/// One forward task: query rows `i0..i0 + rows` of head `bh = b * H + h`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fwd_task(
    p: &Problem,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bh: usize,
    i0: usize,
    rows: usize,
    o: &mut [f32],
    lse: &mut [f32],
    scr: &mut FwdScratch,
) {
    let g = p.g;
    let d = g.d;
    let (b, h) = (bh / g.h, bh % g.h);
    let bkv = b * g.hkv + h / g.groups();
    let len = p.len(b);
    let FwdScratch { s, acc, m, l } = scr;
    s.resize(FBR * FBC, 0.0);
    acc.clear();
    acc.resize(rows * d, 0.0);
    m.clear();
    m.resize(rows, f32::NEG_INFINITY);
    l.clear();
    l.resize(rows, 0.0);
    let qt = &q[(bh * g.lq + i0) * d..(bh * g.lq + i0 + rows) * d];
    let kh = &k[bkv * g.lk * d..(bkv + 1) * g.lk * d];
    let vh = &v[bkv * g.lk * d..(bkv + 1) * g.lk * d];
    // Key tiles the band can reach (all with global tokens, the skipped ones cost O(1) each).
    let (lo, hi) = if p.band.global > 0 {
        (0, len as i64 - 1)
    } else {
        let (lo, _) = p.band.range(i0 as i64, len as i64);
        let (_, hi) = p.band.range((i0 + rows - 1) as i64, len as i64);
        (lo, hi)
    };
    if hi >= lo {
        for kt in (lo as usize / FBC)..=(hi as usize / FBC) {
            let j0 = kt * FBC;
            let cols = FBC.min(g.lk - j0);
            let tile = classify(&p.band, len as i64, i0, i0 + rows, j0, j0 + cols);
            if tile == Tile::Skip {
                continue;
            }
            // SAFETY: s holds FBR x FBC values; q rows (stride d), k rows j0.. (read transposed).
            unsafe {
                mm(
                    rows,
                    cols,
                    d,
                    s.as_mut_ptr(),
                    FBC,
                    false,
                    qt.as_ptr(),
                    (d, 1),
                    kh.as_ptr().add(j0 * d),
                    (1, d),
                    p.scale,
                );
            }
            if tile == Tile::Partial || p.bias.is_some() {
                p.mask_tile(s, FBC, tile, b, h, i0, rows, j0, cols);
            }
            // Online softmax: new row maxima, rescale the running sums, exponentiate.
            for r in 0..rows {
                let row = &mut s[r * FBC..r * FBC + cols];
                let mx = row_max(row);
                let m_new = if mx > m[r] { mx } else { m[r] };
                if m_new == f32::NEG_INFINITY {
                    // Every score so far is -inf (masked, or -inf from the data) or NaN: the
                    // tile adds nothing to the sums, but a NaN score must still poison the row
                    // (`row_max` skipped it). Rare (mostly masked tiles), so checked here rather
                    // than in `row_max`.
                    if row.iter().any(|x| x.is_nan()) {
                        l[r] = f32::NAN;
                    }
                    row.fill(0.0);
                    continue;
                }
                exp_shifted(row, m_new);
                let sum = crate::ops::simd::sum(row);
                if m_new > m[r] {
                    let alpha = exp_approx(m[r] - m_new);
                    l[r] *= alpha;
                    for a in acc[r * d..(r + 1) * d].iter_mut() {
                        *a *= alpha;
                    }
                    m[r] = m_new;
                }
                l[r] += sum;
                if p.dropout.active() {
                    p.dropout.apply_at(row, bh * g.lq + i0 + r, j0);
                }
            }
            // acc += P V.
            // SAFETY: acc holds rows x d; s rows x cols (stride FBC); v rows j0..j0 + cols.
            unsafe {
                mm(
                    rows,
                    d,
                    cols,
                    acc.as_mut_ptr(),
                    d,
                    true,
                    s.as_ptr(),
                    (FBC, 1),
                    vh.as_ptr().add(j0 * d),
                    (d, 1),
                    1.0,
                );
            }
        }
    }
    for r in 0..rows {
        let orow = &mut o[r * d..(r + 1) * d];
        if p.row_live(b, h, i0 + r) {
            // NaN/inf scores or values propagate: a NaN sum gives a NaN row, and a row whose
            // visible scores are all -inf (l = 0) gives 0 * inf = NaN, as softmax does.
            let inv = 1.0 / l[r];
            for (o, a) in orow.iter_mut().zip(&acc[r * d..(r + 1) * d]) {
                *o = a * inv;
            }
            lse[r] = m[r] + l[r].ln();
        } else {
            // Fully masked row (by the mask): output 0; the backward pass reads the +inf
            // log-sum-exp as "no probabilities" (a live row's is finite, -inf or NaN).
            orow.fill(0.0);
            lse[r] = f32::INFINITY;
        }
    }
}

/// Per-worker state of the backward pass: scratch tiles and this worker's part of dq.
#[derive(Default)]
struct BwdScratch {
    s: Vec<f32>,
    dp: Vec<f32>,
    pz: Vec<f32>,
    dq: Vec<f32>,
}

/// Gradients `(dq, dk, dv)` from the inputs, the output `o`, its gradient `dout` and the saved
/// log-sum-exp.
fn backward(
    p: &Problem,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    dout: &[f32],
    lse: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let g = p.g;
    let d = g.d;
    // D_i = sum_c dO_ic O_ic, per query row.
    let mut drow = vec![0f32; g.b * g.h * g.lq];
    par_tasks(&mut drow, 4096, |t, out, _: &mut ()| {
        for (r, x) in out.iter_mut().enumerate() {
            let i = t * 4096 + r;
            *x = crate::ops::simd::dot(&dout[i * d..(i + 1) * d], &o[i * d..(i + 1) * d]);
        }
    });
    let nkt = g.lk.div_ceil(BBC);
    let mut dk = vec![0f32; g.b * g.hkv * g.lk * d];
    let mut dv = vec![0f32; g.b * g.hkv * g.lk * d];
    let (dkp, dvp) = (SharedMut(dk.as_mut_ptr()), SharedMut(dv.as_mut_ptr()));
    let simd = detect_simd();
    let n_q = q.len();
    let parts = par_fold(g.b * g.hkv * nkt, |t, scr: &mut BwdScratch| {
        let (bkv, kt) = (t / nkt, t % nkt);
        let j0 = kt * BBC;
        let cols = BBC.min(g.lk - j0);
        if scr.dq.len() != n_q {
            scr.dq = vec![0f32; n_q];
        }
        // SAFETY: task (bkv, kt) alone writes key rows j0..j0 + cols of kv head bkv in dk and
        // dv; both buffers outlive the parallel loop.
        let (dk_t, dv_t) = unsafe {
            let at = (bkv * g.lk + j0) * d;
            (
                std::slice::from_raw_parts_mut(dkp.ptr().add(at), cols * d),
                std::slice::from_raw_parts_mut(dvp.ptr().add(at), cols * d),
            )
        };
        let a = BwdArgs {
            q,
            k,
            v,
            dout,
            lse,
            drow: &drow,
        };
        match simd {
            // SAFETY: `detect_simd` returned `Avx2Fma` only after detecting AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2Fma => unsafe { bwd_task_avx2(p, &a, bkv, j0, cols, dk_t, dv_t, scr) },
            _ => bwd_task(p, &a, bkv, j0, cols, dk_t, dv_t, scr),
        }
    });
    // dq = sum of the workers' parts.
    let mut parts: Vec<Vec<f32>> = parts.into_iter().map(|s| s.dq).collect();
    let mut dq = parts.pop().unwrap_or_else(|| vec![0f32; n_q]);
    if !parts.is_empty() {
        const CH: usize = 16 * 1024;
        par_tasks(&mut dq, CH, |t, out, _: &mut ()| {
            for part in &parts {
                for (x, y) in out.iter_mut().zip(&part[t * CH..]) {
                    *x += y;
                }
            }
        });
    }
    (dq, dk, dv)
}

/// Read-only inputs of a backward task.
struct BwdArgs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    dout: &'a [f32],
    lse: &'a [f32],
    drow: &'a [f32],
}

/// [`bwd_task`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA (the caller matched `detect_simd()` to `Avx2Fma`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn bwd_task_avx2(
    p: &Problem,
    a: &BwdArgs,
    bkv: usize,
    j0: usize,
    cols: usize,
    dk: &mut [f32],
    dv: &mut [f32],
    scr: &mut BwdScratch,
) {
    bwd_task(p, a, bkv, j0, cols, dk, dv, scr)
}

/// One backward task: key rows `j0..j0 + cols` of kv head `bkv = b * Hkv + hk`, against every
/// query row of the heads of its group that the mask lets attend them.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn bwd_task(
    p: &Problem,
    a: &BwdArgs,
    bkv: usize,
    j0: usize,
    cols: usize,
    dk: &mut [f32],
    dv: &mut [f32],
    scr: &mut BwdScratch,
) {
    let g = p.g;
    let d = g.d;
    let (b, hk) = (bkv / g.hkv, bkv % g.hkv);
    let len = p.len(b);
    if j0 >= len {
        return;
    }
    let BwdScratch { s, dp, pz, dq } = scr;
    s.resize(BBR * BBC, 0.0);
    dp.resize(BBR * BBC, 0.0);
    let kt = &a.k[(bkv * g.lk + j0) * d..(bkv * g.lk + j0 + cols) * d];
    let vt = &a.v[(bkv * g.lk + j0) * d..(bkv * g.lk + j0 + cols) * d];
    let nqt = g.lq.div_ceil(BBR);
    for h in hk * g.groups()..(hk + 1) * g.groups() {
        let bh = b * g.h + h;
        for qt in 0..nqt {
            let i0 = qt * BBR;
            let rows = BBR.min(g.lq - i0);
            let tile = classify(&p.band, len as i64, i0, i0 + rows, j0, j0 + cols);
            if tile == Tile::Skip {
                continue;
            }
            let at = (bh * g.lq + i0) * d;
            let qi = &a.q[at..at + rows * d];
            let doi = &a.dout[at..at + rows * d];
            let lse = &a.lse[bh * g.lq + i0..bh * g.lq + i0 + rows];
            let dr = &a.drow[bh * g.lq + i0..bh * g.lq + i0 + rows];
            // SAFETY: s holds BBR x BBC values (rows x cols written, stride BBC); q rows
            // i0..i0 + rows of head bh (stride d); k rows j0..j0 + cols read transposed.
            unsafe {
                // S = scale Q Kᵀ.
                mm(
                    rows,
                    cols,
                    d,
                    s.as_mut_ptr(),
                    BBC,
                    false,
                    qi.as_ptr(),
                    (d, 1),
                    kt.as_ptr(),
                    (1, d),
                    p.scale,
                );
            }
            if tile == Tile::Partial || p.bias.is_some() {
                p.mask_tile(s, BBC, tile, b, h, i0, rows, j0, cols);
            }
            // P = exp(S - lse); 0 on fully masked rows (lse = +inf), whatever their scores.
            for r in 0..rows {
                let row = &mut s[r * BBC..r * BBC + cols];
                if lse[r] == f32::INFINITY {
                    row.fill(0.0);
                } else {
                    exp_shifted(row, lse[r]);
                }
            }
            // With dropout, Z ∘ P (Z the dropout factors) is what multiplied V.
            let drop = p.dropout.active();
            if drop {
                pz.resize(BBR * BBC, 0.0);
                for r in 0..rows {
                    let row = &mut pz[r * BBC..r * BBC + cols];
                    row.copy_from_slice(&s[r * BBC..r * BBC + cols]);
                    p.dropout.apply_at(row, bh * g.lq + i0 + r, j0);
                }
            }
            let pv = if drop { &pz[..] } else { &s[..] };
            // SAFETY: dv holds cols x d values (this task's key rows only); pv holds BBR x BBC
            // (rows x cols read transposed); dout rows i0..i0 + rows of head bh (stride d); dp
            // holds BBR x BBC; v rows j0..j0 + cols read transposed. All in bounds.
            unsafe {
                // dV += (Z ∘ P)ᵀ dO.
                mm(
                    cols,
                    d,
                    rows,
                    dv.as_mut_ptr(),
                    d,
                    true,
                    pv.as_ptr(),
                    (1, BBC),
                    doi.as_ptr(),
                    (d, 1),
                    1.0,
                );
                // dP = dO Vᵀ.
                mm(
                    rows,
                    cols,
                    d,
                    dp.as_mut_ptr(),
                    BBC,
                    false,
                    doi.as_ptr(),
                    (d, 1),
                    vt.as_ptr(),
                    (1, d),
                    1.0,
                );
            }
            // dS = P ∘ (Z ∘ dP - D) (Z = 1 without dropout), into dp.
            for r in 0..rows {
                let dri = dr[r];
                let (pr, dpr) = (
                    &s[r * BBC..r * BBC + cols],
                    &mut dp[r * BBC..r * BBC + cols],
                );
                if lse[r] == f32::INFINITY {
                    // Fully masked row: no gradient, even where dP is NaN (a NaN value).
                    dpr.fill(0.0);
                } else if drop {
                    let pzr = &pz[r * BBC..r * BBC + cols];
                    for ((x, pv), pzv) in dpr.iter_mut().zip(pr).zip(pzr) {
                        *x = pzv * *x - pv * dri;
                    }
                } else {
                    for (x, pv) in dpr.iter_mut().zip(pr) {
                        *x = pv * (*x - dri);
                    }
                }
            }
            // SAFETY: dk holds cols x d values (this task's key rows only); dp holds BBR x BBC
            // (rows x cols read transposed); q rows i0..i0 + rows of head bh; dq is this
            // worker's own full-size copy of dq (`at` + rows x d is within it); k rows
            // j0..j0 + cols. All in bounds.
            unsafe {
                // dK += scale dSᵀ Q.
                mm(
                    cols,
                    d,
                    rows,
                    dk.as_mut_ptr(),
                    d,
                    true,
                    dp.as_ptr(),
                    (1, BBC),
                    qi.as_ptr(),
                    (d, 1),
                    p.scale,
                );
                // dQ += scale dS K.
                mm(
                    rows,
                    d,
                    cols,
                    dq.as_mut_ptr().add(at),
                    d,
                    true,
                    dp.as_ptr(),
                    (BBC, 1),
                    kt.as_ptr(),
                    (d, 1),
                    p.scale,
                );
            }
        }
    }
}
