//! Multi-head attention with PyTorch's `nn.MultiheadAttention` parameters, on our fused
//! [`crate::ops::scaled_dot_product_attention`] kernel, with grouped-query heads and a KV cache
//! for incremental decoding.
//!
//! # Shapes
//! - Always batch first (PyTorch's `batch_first=True`): query `(B, Lq, E)`, key `(B, Lk, kdim)`,
//!   value `(B, Lk, vdim)`, output `(B, Lq, E)`.
//! - Parameters (PyTorch's state-dict names): `in_proj_weight` `(3E, E)` when `kdim = vdim = E`,
//!   else `q_proj_weight` `(E, E)`, `k_proj_weight` `(E, kdim)`, `v_proj_weight` `(E, vdim)`;
//!   `in_proj_bias` `(3E)` and `out_proj.bias` `(E)` when `bias`; `out_proj.weight` `(E, E)`.
//! - Grouped-query attention (`num_kv_heads = Some(Hkv)`, not in PyTorch): keys and values get
//!   `Hkv` heads of the same size `d = E / H`, so there is no packed matrix; the names are the
//!   separate ones: `q_proj_weight` `(E, E)`, `k_proj_weight` `(Hkv·d, kdim)`, `v_proj_weight`
//!   `(Hkv·d, vdim)`, `in_proj_bias` `(E + 2·Hkv·d)` (query, key, value biases concatenated).
//!
//! # Tip
//! Each head attends in its own $d = E/H$-dimensional subspace, so $H$ heads cost what one
//! full-width head costs but can follow $H$ different patterns. At inference a decoder keeps the
//! projected keys and values of past tokens ([`KvCache`]): each new token costs $O(L \cdot E)$
//! instead of recomputing the $O(L^2)$ prefix. That cache holds $2 \cdot L \cdot H_{kv} \cdot d$
//! numbers per layer and sequence; grouped-query attention with $H_{kv} < H$ divides it by
//! $H/H_{kv}$ (and $H_{kv} = 1$, multi-query attention, by $H$).
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::attention::{multi_head_attention, KvCache, MhaConfig};
//! use candle_tricks::ops::AttentionMask;
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! // 8 query heads sharing 2 key/value heads.
//! let cfg = MhaConfig::new(8).with_num_kv_heads(Some(2));
//! let mha = multi_head_attention(64, cfg, vb)?;
//! let x = Tensor::randn(0f32, 1., (1, 10, 64), &dev)?;
//! let full = mha.forward_t(&x, &x, &x, &AttentionMask::Causal { kv_offset: 0 }, false)?;
//! // Decode token by token with a cache: same result as the full causal pass.
//! let mut cache = KvCache::new();
//! let mut steps = Vec::new();
//! for t in 0..10 {
//!     steps.push(mha.forward_cached(&x.narrow(1, t, 1)?, &mut cache, true)?);
//! }
//! let inc = Tensor::cat(&steps, 1)?;
//! assert!((inc - &full)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
//! // The cache holds 2 kv heads of size 8, a quarter of what 8 full heads would need.
//! assert_eq!(cache.key().map(|k| k.dims().to_vec()), Some(vec![1, 2, 10, 8]));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Vaswani et al., *Attention Is All You Need*, 2017, <https://arxiv.org/abs/1706.03762>
//! - Shazeer, *Fast Transformer Decoding: One Write-Head is All You Need*, 2019 (multi-query),
//!   <https://arxiv.org/abs/1911.02150>
//! - Ainslie et al., *GQA: Training Generalized Multi-Query Transformer Models from Multi-Head
//!   Checkpoints*, 2023, <https://arxiv.org/abs/2305.13245>

use crate::ops::{scaled_dot_product_attention, AttentionMask};
use crate::{check, Error, Result};
use candle_core::{Module, Tensor};
use candle_nn::{Init, VarBuilder};

const BLOCK: &str = "MultiHeadAttention";

/// Configuration of [`MultiHeadAttention`]; `Default` is `nn.MultiheadAttention`'s defaults
/// with one head (`MhaConfig::new(h)` sets the head count). Inputs are always batch first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MhaConfig {
    /// Number of query heads `H`, > 0, dividing the embedding size. Default 1.
    pub num_heads: usize,
    /// Learn `in_proj_bias` and `out_proj.bias`. Default `true`.
    pub bias: bool,
    /// Feature size of the keys; `None` = the embedding size `E`. Default `None`.
    pub kdim: Option<usize>,
    /// Feature size of the values; `None` = `E`. Default `None`.
    pub vdim: Option<usize>,
    /// Attention dropout probability in `[0, 1)`, applied in training only. Default 0.
    pub dropout: f64,
    /// Key/value heads for grouped-query attention (must divide `num_heads`); `None` = one per
    /// query head (PyTorch's layout). Default `None`.
    pub num_kv_heads: Option<usize>,
}

impl Default for MhaConfig {
    fn default() -> Self {
        Self::new(1)
    }
}

impl MhaConfig {
    /// PyTorch's defaults with `num_heads` heads.
    pub fn new(num_heads: usize) -> Self {
        Self {
            num_heads,
            bias: true,
            kdim: None,
            vdim: None,
            dropout: 0.0,
            num_kv_heads: None,
        }
    }

    /// Sets `bias`.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets `kdim`.
    pub fn with_kdim(mut self, kdim: Option<usize>) -> Self {
        self.kdim = kdim;
        self
    }

    /// Sets `vdim`.
    pub fn with_vdim(mut self, vdim: Option<usize>) -> Self {
        self.vdim = vdim;
        self
    }

    /// Sets `dropout`.
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.dropout = dropout;
        self
    }

    /// Sets `num_kv_heads`.
    pub fn with_num_kv_heads(mut self, num_kv_heads: Option<usize>) -> Self {
        self.num_kv_heads = num_kv_heads;
        self
    }

    /// Checks the config on its own: heads > 0, `num_kv_heads` > 0 dividing `num_heads`,
    /// `kdim`/`vdim` > 0, dropout in `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        check::positive(BLOCK, "num_heads", self.num_heads)?;
        if let Some(kv) = self.num_kv_heads {
            check::positive(BLOCK, "num_kv_heads", kv)?;
            if !self.num_heads.is_multiple_of(kv) {
                return Err(Error::config(
                    BLOCK,
                    format!(
                        "num_kv_heads ({kv}) must divide num_heads ({})",
                        self.num_heads
                    ),
                ));
            }
        }
        if let Some(k) = self.kdim {
            check::positive(BLOCK, "kdim", k)?;
        }
        if let Some(v) = self.vdim {
            check::positive(BLOCK, "vdim", v)?;
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config(
                BLOCK,
                format!("dropout must be in [0, 1), got {}", self.dropout),
            ));
        }
        Ok(())
    }

    fn validate_for(&self, embed_dim: usize) -> Result<()> {
        self.validate()?;
        check::positive(BLOCK, "embed_dim", embed_dim)?;
        if !embed_dim.is_multiple_of(self.num_heads) {
            return Err(Error::config(
                BLOCK,
                format!(
                    "embed_dim ({embed_dim}) must be divisible by num_heads ({})",
                    self.num_heads
                ),
            ));
        }
        Ok(())
    }

    /// Whether the parameters use the packed `in_proj_weight` (PyTorch's rule).
    fn packed(&self, embed_dim: usize) -> bool {
        self.num_kv_heads.is_none()
            && self.kdim.unwrap_or(embed_dim) == embed_dim
            && self.vdim.unwrap_or(embed_dim) == embed_dim
    }
}

/// The raw parameters of a [`MultiHeadAttention`], named as in its state dict (see the
/// [module docs](self) for the shapes). Give either `in_proj_weight` or the three separate
/// matrices, as PyTorch's layout for the config requires.
#[derive(Debug, Clone)]
pub struct MhaWeights {
    /// Packed `(3E, E)` query/key/value projection (when `kdim = vdim = E`, no GQA).
    pub in_proj_weight: Option<Tensor>,
    /// `(E, E)` query projection (separate layout).
    pub q_proj_weight: Option<Tensor>,
    /// `(Hkv·d, kdim)` key projection (separate layout).
    pub k_proj_weight: Option<Tensor>,
    /// `(Hkv·d, vdim)` value projection (separate layout).
    pub v_proj_weight: Option<Tensor>,
    /// `(E + 2·Hkv·d)` projection biases, when `bias`.
    pub in_proj_bias: Option<Tensor>,
    /// `(E, E)` output projection.
    pub out_proj_weight: Tensor,
    /// `(E)` output bias, when `bias`.
    pub out_proj_bias: Option<Tensor>,
}

/// Multi-head (or grouped-query) attention, `nn.MultiheadAttention(batch_first=True)`.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    bq: Option<Tensor>,
    bk: Option<Tensor>,
    bv: Option<Tensor>,
    wo: Tensor,
    bo: Option<Tensor>,
    /// The packed `in_proj_weight` `(3E, E)` and `in_proj_bias`, when loaded packed: self-attention
    /// then projects Q, K and V with one matrix product.
    in_proj: Option<(Tensor, Option<Tensor>)>,
    embed_dim: usize,
    kdim: usize,
    vdim: usize,
    kv_heads: usize,
    cfg: MhaConfig,
}

/// Projected keys and values of the tokens decoded so far, `(B, Hkv, L, d)` each, for
/// [`MultiHeadAttention::forward_cached`].
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dim(2).unwrap_or(0))
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached keys `(B, Hkv, L, d)`, if any.
    pub fn key(&self) -> Option<&Tensor> {
        self.k.as_ref()
    }

    /// The cached values `(B, Hkv, L, d)`, if any.
    pub fn value(&self) -> Option<&Tensor> {
        self.v.as_ref()
    }

    /// Empties the cache (start of a new sequence).
    pub fn reset(&mut self) {
        self.k = None;
        self.v = None;
    }
}

fn want(
    t: Option<Tensor>,
    name: &'static str,
    shape: &[usize],
    present: bool,
) -> Result<Option<Tensor>> {
    match (t, present) {
        (Some(t), true) => {
            if t.dims() != shape {
                return Err(Error::shape(
                    BLOCK,
                    name,
                    format!("{shape:?}"),
                    t.shape().clone(),
                ));
            }
            check::float_dtype(BLOCK, name, &t)?;
            Ok(Some(t))
        }
        (None, false) => Ok(None),
        (None, true) => Err(Error::config(BLOCK, format!("{name} is missing"))),
        (Some(_), false) => Err(Error::config(
            BLOCK,
            format!("{name} given but not used by this config"),
        )),
    }
}

impl MultiHeadAttention {
    /// Builds the layer for embedding size `embed_dim` from raw tensors.
    ///
    /// Errors (naming `MultiHeadAttention`) on an invalid config, `embed_dim` not divisible by
    /// `num_heads`, a missing, unexpected or wrongly shaped tensor, mixed dtypes or devices.
    pub fn new(embed_dim: usize, w: MhaWeights, cfg: MhaConfig) -> Result<Self> {
        cfg.validate_for(embed_dim)?;
        let e = embed_dim;
        let d = e / cfg.num_heads;
        let kv_heads = cfg.num_kv_heads.unwrap_or(cfg.num_heads);
        let ekv = kv_heads * d;
        let kdim = cfg.kdim.unwrap_or(e);
        let vdim = cfg.vdim.unwrap_or(e);
        let packed = cfg.packed(e);
        let wo = want(Some(w.out_proj_weight), "out_proj.weight", &[e, e], true)?
            .ok_or_else(|| Error::config(BLOCK, "out_proj.weight is missing"))?;
        let bo = want(w.out_proj_bias, "out_proj.bias", &[e], cfg.bias)?;
        let ipw = want(w.in_proj_weight, "in_proj_weight", &[3 * e, e], packed)?;
        let qw = want(w.q_proj_weight, "q_proj_weight", &[e, e], !packed)?;
        let kw = want(w.k_proj_weight, "k_proj_weight", &[ekv, kdim], !packed)?;
        let vw = want(w.v_proj_weight, "v_proj_weight", &[ekv, vdim], !packed)?;
        let ipb = want(w.in_proj_bias, "in_proj_bias", &[e + 2 * ekv], cfg.bias)?;
        let in_proj = ipw.clone().map(|w| (w, ipb.clone()));
        let (wq, wk, wv) = match (ipw, qw, kw, vw) {
            (Some(p), _, _, _) => (
                p.narrow(0, 0, e)?,
                p.narrow(0, e, e)?,
                p.narrow(0, 2 * e, e)?,
            ),
            (None, Some(q), Some(k), Some(v)) => (q, k, v),
            _ => return Err(Error::config(BLOCK, "projection weights are missing")),
        };
        for (name, t) in [("projection weights", &wq), ("projection weights", &wk)] {
            check::same_dtype_device(BLOCK, name, &wo, t)?;
        }
        check::same_dtype_device(BLOCK, "projection weights", &wo, &wv)?;
        let (bq, bk, bv) = match ipb {
            Some(b) => {
                check::same_dtype_device(BLOCK, "in_proj_bias", &wo, &b)?;
                (
                    Some(b.narrow(0, 0, e)?),
                    Some(b.narrow(0, e, ekv)?),
                    Some(b.narrow(0, e + ekv, ekv)?),
                )
            }
            None => (None, None, None),
        };
        if let Some(b) = &bo {
            check::same_dtype_device(BLOCK, "out_proj.bias", &wo, b)?;
        }
        Ok(Self {
            wq,
            wk,
            wv,
            bq,
            bk,
            bv,
            wo,
            bo,
            in_proj,
            embed_dim: e,
            kdim,
            vdim,
            kv_heads,
            cfg,
        })
    }

    /// The embedding size `E`.
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// The size of one head, `E / H`.
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.cfg.num_heads
    }

    /// The number of key/value heads (`H` unless grouped-query).
    pub fn num_kv_heads(&self) -> usize {
        self.kv_heads
    }

    /// The configuration.
    pub fn config(&self) -> MhaConfig {
        self.cfg
    }

    /// The packed `in_proj_weight` `(3E, E)`, when the layer has one.
    pub fn in_proj_weight(&self) -> Option<&Tensor> {
        self.in_proj.as_ref().map(|(w, _)| w)
    }

    /// `out_proj.weight` `(E, E)`.
    pub fn out_proj_weight(&self) -> &Tensor {
        &self.wo
    }

    /// The same layer with every parameter detached from the autograd graph (frozen).
    pub(crate) fn detached(&self) -> Self {
        let d = |t: &Tensor| t.detach();
        let od = |t: &Option<Tensor>| t.as_ref().map(Tensor::detach);
        Self {
            wq: d(&self.wq),
            wk: d(&self.wk),
            wv: d(&self.wv),
            bq: od(&self.bq),
            bk: od(&self.bk),
            bv: od(&self.bv),
            wo: d(&self.wo),
            bo: od(&self.bo),
            in_proj: self.in_proj.as_ref().map(|(w, b)| (d(w), od(b))),
            ..self.clone()
        }
    }

    /// The same layer with the packed in-projection and the output-projection weights replaced
    /// by tensors of the same shapes (an adapter's $W + \Delta W$, which may carry a gradient).
    pub(crate) fn with_projection_weights(
        &self,
        in_proj: &Tensor,
        out_proj: &Tensor,
    ) -> Result<Self> {
        let e = self.embed_dim;
        let Some((_, bias)) = &self.in_proj else {
            return Err(Error::config(BLOCK, "no packed in_proj_weight to replace"));
        };
        let mut m = self.clone();
        m.wq = in_proj.narrow(0, 0, e)?;
        m.wk = in_proj.narrow(0, e, e)?;
        m.wv = in_proj.narrow(0, 2 * e, e)?;
        m.in_proj = Some((in_proj.clone(), bias.clone()));
        m.wo = out_proj.clone();
        Ok(m)
    }

    fn check_input(&self, what: &'static str, t: &Tensor, dim: usize) -> Result<(usize, usize)> {
        let pattern = match what {
            "query" => format!("(B, Lq, {dim})"),
            _ => format!("(B, Lk, {dim})"),
        };
        check::rank(BLOCK, what, t, 3, &pattern)?;
        check::non_empty(BLOCK, what, t)?;
        check::same_dtype_device(BLOCK, what, &self.wo, t)?;
        let (b, l, c) = t.dims3()?;
        if c != dim {
            return Err(Error::shape(BLOCK, what, pattern, t.shape().clone()));
        }
        Ok((b, l))
    }

    /// `(B, L, in) → (B, heads, L, d)` through `w` and `b`.
    fn project(x: &Tensor, w: &Tensor, b: Option<&Tensor>, heads: usize) -> Result<Tensor> {
        let (bs, l, _) = x.dims3()?;
        let y = crate::ops::linear(x, w, b)?;
        let d = y.dim(2)? / heads;
        Ok(y.reshape((bs, l, heads, d))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// Queries `(B, Lq, E)` → `(B, H, Lq, d)`. The input must already be checked.
    pub(crate) fn project_q(&self, x: &Tensor) -> Result<Tensor> {
        Self::project(x, &self.wq, self.bq.as_ref(), self.cfg.num_heads)
    }

    /// Keys `(B, Lk, kdim)` → `(B, Hkv, Lk, d)`. The input must already be checked.
    pub(crate) fn project_k(&self, x: &Tensor) -> Result<Tensor> {
        Self::project(x, &self.wk, self.bk.as_ref(), self.kv_heads)
    }

    /// Values `(B, Lk, vdim)` → `(B, Hkv, Lk, d)`. The input must already be checked.
    pub(crate) fn project_v(&self, x: &Tensor) -> Result<Tensor> {
        Self::project(x, &self.wv, self.bv.as_ref(), self.kv_heads)
    }

    /// Self-attention's Q, K and V `(B, H, L, d)` from `x` `(B, L, E)` through the packed
    /// `(3E, E)` weight: one matrix product and one copy into the head layout.
    fn project_packed(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (bs, l, _) = x.dims3()?;
        let (h, d) = (self.cfg.num_heads, self.head_dim());
        let qkv = crate::ops::linear(x, w, b)?
            .reshape((bs, l, 3, h, d))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?; // (3, B, H, L, d)
        Ok((qkv.get(0)?, qkv.get(1)?, qkv.get(2)?))
    }

    /// Heads `(B, H, Lq, d)` → `(B, Lq, E)` through the output projection.
    pub(crate) fn merge_out(&self, o: &Tensor) -> Result<Tensor> {
        let (b, _, l, _) = o.dims4()?;
        let o = o.transpose(1, 2)?.reshape((b, l, self.embed_dim))?;
        crate::ops::linear(&o, &self.wo, self.bo.as_ref())
    }

    /// Checks a self-attention input `(B, L, E)` (also against `kdim`, `vdim`).
    pub(crate) fn check_self(&self, x: &Tensor) -> Result<(usize, usize)> {
        if self.kdim != self.embed_dim || self.vdim != self.embed_dim {
            return Err(Error::config(
                BLOCK,
                "self-attention needs kdim = vdim = embed_dim",
            ));
        }
        self.check_input("query", x, self.embed_dim)
    }

    /// Attention of `query` `(B, Lq, E)` over `key` `(B, Lk, kdim)` and `value`
    /// `(B, Lk, vdim)` under `mask` (see [`AttentionMask`]; masks address `(B, H, Lq, Lk)`),
    /// with attention dropout when `train`. Returns `(B, Lq, E)`.
    ///
    /// PyTorch's `key_padding_mask` (true = ignore) is `AttentionMask::Bool` of
    /// `(B, 1, 1, Lk)` holding its negation, or `AttentionMask::KeyPadding(lengths)` for right
    /// padding; `is_causal` is `AttentionMask::Causal { kv_offset: 0 }`.
    ///
    /// Errors (naming `MultiHeadAttention`) on inputs that are not rank 3, have zero-sized
    /// dimensions or the wrong feature size, whose batch sizes or key/value lengths differ, or
    /// whose dtype or device differs from the weights; mask errors come from the op.
    pub fn forward_t(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        mask: &AttentionMask,
        train: bool,
    ) -> Result<Tensor> {
        let (bq, _) = self.check_input("query", query, self.embed_dim)?;
        let (bk, lk) = self.check_input("key", key, self.kdim)?;
        let (bv, lv) = self.check_input("value", value, self.vdim)?;
        if bk != bq || bv != bq || lv != lk {
            return Err(Error::shape(
                BLOCK,
                "value",
                format!(
                    "(B = {bq}, Lk = {lk}, {}) matching query and key",
                    self.vdim
                ),
                value.shape().clone(),
            ));
        }
        let (q, k, v) = match &self.in_proj {
            Some((w, b)) if query.id() == key.id() && key.id() == value.id() => {
                self.project_packed(query, w, b.as_ref())?
            }
            _ => (
                self.project_q(query)?,
                self.project_k(key)?,
                self.project_v(value)?,
            ),
        };
        let p = if train { self.cfg.dropout } else { 0.0 };
        let o = scaled_dot_product_attention(&q, &k, &v, mask, None, p)?;
        self.merge_out(&o)
    }

    /// Self-attention of `x_new` `(B, Lnew, E)` over the cached past and `x_new` itself: the
    /// new keys and values are appended to `cache`, and with `causal` each new position
    /// attends the past and the new positions up to itself (`Causal { kv_offset: past }`).
    /// No dropout (inference). Returns `(B, Lnew, E)`.
    ///
    /// Errors as [`forward_t`](Self::forward_t), and when the cache holds another batch size.
    pub fn forward_cached(
        &self,
        x_new: &Tensor,
        cache: &mut KvCache,
        causal: bool,
    ) -> Result<Tensor> {
        let (b, _) = self.check_self(x_new)?;
        let q = self.project_q(x_new)?;
        let k_new = self.project_k(x_new)?;
        let v_new = self.project_v(x_new)?;
        let past = cache.len();
        let (k, v) = match (&cache.k, &cache.v) {
            (Some(k), Some(v)) => {
                if k.dim(0)? != b {
                    return Err(Error::shape(
                        BLOCK,
                        "x_new",
                        format!("batch size {} of the cache", k.dim(0)?),
                        x_new.shape().clone(),
                    ));
                }
                // A cache filled by another model (other heads or head size, or dtype) would
                // otherwise fail in `cat` with a bare candle error.
                for (what, old, new) in [("cache.k", k, &k_new), ("cache.v", v, &v_new)] {
                    let (od, nd) = (old.dims(), new.dims());
                    if od.len() != 4 || od[1] != nd[1] || od[3] != nd[3] {
                        return Err(Error::shape(
                            BLOCK,
                            what,
                            format!("({b}, {}, T, {}) from this module", nd[1], nd[3]),
                            old.shape().clone(),
                        ));
                    }
                    check::same_dtype_device(BLOCK, what, new, old)?;
                }
                (Tensor::cat(&[k, &k_new], 2)?, Tensor::cat(&[v, &v_new], 2)?)
            }
            _ => (k_new, v_new),
        };
        let mask = if causal {
            AttentionMask::Causal { kv_offset: past }
        } else {
            AttentionMask::None
        };
        let o = scaled_dot_product_attention(&q, &k, &v, &mask, None, 0.0)?;
        cache.k = Some(k);
        cache.v = Some(v);
        self.merge_out(&o)
    }
}

impl Module for MultiHeadAttention {
    /// Unmasked self-attention of `(B, L, E)`, eval mode.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.check_self(x)?;
        Ok(self.forward_t(x, x, x, &AttentionMask::None, false)?)
    }
}

/// Builds a [`MultiHeadAttention`] for embedding size `embed_dim` with PyTorch's parameter names
/// and initialisation: Xavier-uniform projection weights, zero projection and output biases,
/// output weight uniform in $\pm 1/\sqrt{E}$.
///
/// Errors as [`MultiHeadAttention::new`], or when `vb` holds tensors of other shapes.
pub fn multi_head_attention(
    embed_dim: usize,
    cfg: MhaConfig,
    vb: VarBuilder,
) -> Result<MultiHeadAttention> {
    check::loading("MultiHeadAttention", vb, |vb| load_mha(embed_dim, cfg, vb))
}

fn load_mha(embed_dim: usize, cfg: MhaConfig, vb: VarBuilder) -> Result<MultiHeadAttention> {
    cfg.validate_for(embed_dim)?;
    let e = embed_dim;
    let d = e / cfg.num_heads;
    let ekv = cfg.num_kv_heads.unwrap_or(cfg.num_heads) * d;
    let kdim = cfg.kdim.unwrap_or(e);
    let vdim = cfg.vdim.unwrap_or(e);
    let xavier = |fan_out: usize, fan_in: usize| {
        let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
        Init::Uniform { lo: -a, up: a }
    };
    let mut w = MhaWeights {
        in_proj_weight: None,
        q_proj_weight: None,
        k_proj_weight: None,
        v_proj_weight: None,
        in_proj_bias: None,
        out_proj_weight: {
            let a = 1.0 / (e as f64).sqrt();
            check::param(
                BLOCK,
                &vb,
                (e, e),
                "out_proj.weight",
                Init::Uniform { lo: -a, up: a },
            )?
        },
        out_proj_bias: None,
    };
    if cfg.packed(e) {
        w.in_proj_weight = Some(check::param(
            BLOCK,
            &vb,
            (3 * e, e),
            "in_proj_weight",
            xavier(3 * e, e),
        )?);
    } else {
        w.q_proj_weight = Some(check::param(
            BLOCK,
            &vb,
            (e, e),
            "q_proj_weight",
            xavier(e, e),
        )?);
        w.k_proj_weight = Some(check::param(
            BLOCK,
            &vb,
            (ekv, kdim),
            "k_proj_weight",
            xavier(ekv, kdim),
        )?);
        w.v_proj_weight = Some(check::param(
            BLOCK,
            &vb,
            (ekv, vdim),
            "v_proj_weight",
            xavier(ekv, vdim),
        )?);
    }
    if cfg.bias {
        w.in_proj_bias = Some(check::param(
            BLOCK,
            &vb,
            e + 2 * ekv,
            "in_proj_bias",
            Init::Const(0.0),
        )?);
        w.out_proj_bias = Some(check::param(
            BLOCK,
            &vb,
            e,
            "out_proj.bias",
            Init::Const(0.0),
        )?);
    }
    MultiHeadAttention::new(embed_dim, w, cfg)
}
