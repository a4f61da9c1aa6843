//! Linformer self-attention ([`LinformerAttention`], Wang et al. 2020): keys and values are
//! projected along the sequence to $k$ rows before attending.
//!
//! # Shapes
//! Input and output `(B, L, E)` with $L \le$ `max_len`. Parameters: those of
//! [`MultiHeadAttention`] at the root (`in_proj_weight`, `out_proj.weight`, …) plus `proj_k` and
//! `proj_v`, each `(k, max_len)`; a sequence of length $L$ uses their first $L$ columns.
//!
//! # Tip
//! The attention matrix of a trained transformer is close to low rank, so projecting the $L$
//! keys and values to $k \ll L$ mixtures, $K^\prime = E_L K$ and $V^\prime = F_L V$, keeps most of
//! it: scores are $L \times k$, time and memory $O(L \cdot k)$ instead of $O(L^2)$. The price: a
//! fixed maximum length (`max_len`, an error beyond it), no causal masking (every projected
//! row mixes future positions) and no key padding inside the projection (pad with zeros).
//! Good for long encoder inputs; for decoders use [`super::LocalAttention`] or the flash
//! kernel.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::attention::{linformer_attention, LinformerConfig, MhaConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let vm = VarMap::new();
//! let cfg = LinformerConfig::new(MhaConfig::new(2), 8, 128);
//! let att = linformer_attention(16, cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
//! let x = Tensor::randn(0f32, 1., (1, 100, 16), &dev)?;
//! assert_eq!(att.forward(&x)?.dims(), &[1, 100, 16]);
//! // Each head computes 100 × 8 scores instead of 100 × 100; longer than max_len is an error.
//! assert!(att.forward(&Tensor::zeros((1, 129, 16), DType::F32, &dev)?).is_err());
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Wang, Li, Khabsa, Fang, Ma, *Linformer: Self-Attention with Linear Complexity*, 2020,
//!   <https://arxiv.org/abs/2006.04768>

use super::mha::{multi_head_attention, MhaConfig, MultiHeadAttention};
use crate::ops::{scaled_dot_product_attention, AttentionMask};
use crate::{check, Error, Result};
use candle_core::{Module, Tensor};
use candle_nn::{Init, VarBuilder};

const BLOCK: &str = "LinformerAttention";

/// Configuration of [`LinformerAttention`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinformerConfig {
    /// The attention heads and projections (self-attention: no `kdim`/`vdim`).
    pub mha: MhaConfig,
    /// Projected length $k$ > 0. Default 256 (the paper's).
    pub k: usize,
    /// Longest sequence $L$ accepted, > 0. Default 4096.
    pub max_len: usize,
}

impl Default for LinformerConfig {
    fn default() -> Self {
        Self::new(MhaConfig::default(), 256, 4096)
    }
}

impl LinformerConfig {
    /// `mha` heads, projected length `k`, sequences up to `max_len`.
    pub fn new(mha: MhaConfig, k: usize, max_len: usize) -> Self {
        Self { mha, k, max_len }
    }

    /// Checks `k`, `max_len` > 0, no `kdim`/`vdim`, and the MHA config.
    pub fn validate(&self) -> Result<()> {
        check::positive(BLOCK, "k", self.k)?;
        check::positive(BLOCK, "max_len", self.max_len)?;
        if self.mha.kdim.is_some() || self.mha.vdim.is_some() {
            return Err(Error::config(
                BLOCK,
                "self-attention: kdim and vdim must be None",
            ));
        }
        self.mha.validate()
    }
}

/// Multi-head self-attention over sequence-projected keys and values.
#[derive(Debug, Clone)]
pub struct LinformerAttention {
    mha: MultiHeadAttention,
    proj_k: Tensor,
    proj_v: Tensor,
    cfg: LinformerConfig,
}

impl LinformerAttention {
    /// From the attention and the `(k, max_len)` projections. Errors (naming
    /// `LinformerAttention`) on an invalid config, wrong shapes or dtypes.
    pub fn new(
        mha: MultiHeadAttention,
        proj_k: Tensor,
        proj_v: Tensor,
        cfg: LinformerConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        if mha.config() != cfg.mha {
            return Err(Error::config(BLOCK, "mha's config differs from cfg.mha"));
        }
        let want = format!("({}, {})", cfg.k, cfg.max_len);
        for (what, t) in [("proj_k", &proj_k), ("proj_v", &proj_v)] {
            if t.dims() != [cfg.k, cfg.max_len] {
                return Err(Error::shape(BLOCK, what, want.clone(), t.shape().clone()));
            }
            check::float_dtype(BLOCK, what, t)?;
        }
        check::same_dtype_device(BLOCK, "proj_v", &proj_k, &proj_v)?;
        Ok(Self {
            mha,
            proj_k,
            proj_v,
            cfg,
        })
    }

    /// The underlying attention (its projections and output layer).
    pub fn mha(&self) -> &MultiHeadAttention {
        &self.mha
    }

    /// The `(k, max_len)` key projection $E$.
    pub fn proj_k(&self) -> &Tensor {
        &self.proj_k
    }

    /// The `(k, max_len)` value projection $F$.
    pub fn proj_v(&self) -> &Tensor {
        &self.proj_v
    }

    /// Self-attention of `x` `(B, L, E)`, attention dropout when `train`. Errors (naming
    /// `LinformerAttention`) when $L >$ `max_len`; as [`MultiHeadAttention::forward_t`] on
    /// other bad inputs.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, l) = self.mha.check_self(x)?;
        if l > self.cfg.max_len {
            return Err(Error::shape(
                BLOCK,
                "input",
                format!("(B, L ≤ max_len {}, E)", self.cfg.max_len),
                x.shape().clone(),
            ));
        }
        check::same_dtype_device(BLOCK, "input", &self.proj_k, x)?;
        let q = self.mha.project_q(x)?;
        // (k, L) · (B, Hkv, L, d) → (B, Hkv, k, d).
        let k = self
            .proj_k
            .narrow(1, 0, l)?
            .broadcast_matmul(&self.mha.project_k(x)?)?;
        let v = self
            .proj_v
            .narrow(1, 0, l)?
            .broadcast_matmul(&self.mha.project_v(x)?)?;
        let p = if train { self.cfg.mha.dropout } else { 0.0 };
        let o = scaled_dot_product_attention(&q, &k, &v, &AttentionMask::None, None, p)?;
        self.mha.merge_out(&o)
    }
}

impl Module for LinformerAttention {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.forward_t(x, false)?)
    }
}

/// Builds a [`LinformerAttention`] for embedding size `embed_dim`: MHA parameters at the root
/// of `vb`, `proj_k` and `proj_v` uniform in $\pm 1/\sqrt{k}$ (as the reference implementation
/// of lucidrains/linformer).
pub fn linformer_attention(
    embed_dim: usize,
    cfg: LinformerConfig,
    vb: VarBuilder,
) -> Result<LinformerAttention> {
    cfg.validate()?;
    check::numel(
        BLOCK,
        "projection (k, max_len)",
        &[cfg.k, cfg.max_len],
        vb.dtype(),
    )?;
    let mha = multi_head_attention(embed_dim, cfg.mha, vb.clone())?;
    let a = 1.0 / (cfg.k as f64).sqrt();
    let init = Init::Uniform { lo: -a, up: a };
    let pk = check::param(BLOCK, &vb, (cfg.k, cfg.max_len), "proj_k", init)?;
    let pv = check::param(BLOCK, &vb, (cfg.k, cfg.max_len), "proj_v", init)?;
    LinformerAttention::new(mha, pk, pv, cfg)
}
