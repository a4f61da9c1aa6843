//! Sliding-window self-attention ([`LocalAttention`]): each position attends only its
//! neighbours, optionally with a few global tokens that see and are seen by every position
//! (Longformer).
//!
//! # Shapes
//! Input and output `(B, L, E)`. Parameters: those of [`MultiHeadAttention`] at the root of the
//! builder (`in_proj_weight`, `in_proj_bias`, `out_proj.weight`, `out_proj.bias`), so a
//! `nn.MultiheadAttention` state dict loads unchanged.
//!
//! # Tip
//! Nearby tokens carry most of the signal in text, audio and long time series, so a band of
//! $w$ keys per query keeps most of the quality at $O(L \cdot w)$ cost instead of $O(L^2)$:
//! without global tokens the fused kernel skips every tile outside the band, and doubling $L$
//! doubles the time. Stacking $n$ layers widens the receptive field to about $n \cdot w$
//! positions. Global tokens (a `[CLS]` token, question tokens) give every position a two-hop
//! path to every other. They are a mask mode of the same fused kernel
//! ([`AttentionMask::SlidingWindow`] with `global` $= g$), not a dense mask: the ordinary rows
//! visit only the tiles of their band and of the $g$ global keys, the $g$ global rows visit
//! every key, so time is $O(L \cdot (w + g))$ plus $O(g \cdot L)$ and there is no $L \times L$
//! mask in memory.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::attention::{local_attention, LocalAttentionConfig, MhaConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let vm = VarMap::new();
//! let cfg = LocalAttentionConfig::new(MhaConfig::new(2), 3);
//! let att = local_attention(8, cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
//! let x = Tensor::randn(0f32, 1., (1, 20, 8), &dev)?;
//! let y = att.forward(&x)?;
//! // Position 0 sees keys 0..3 only: changing token 10 leaves it unchanged.
//! let x2 = x.slice_assign(&[0..1, 10..11, 0..8], &Tensor::ones((1, 1, 8), DType::F32, &dev)?)?;
//! let y2 = att.forward(&x2)?;
//! let d0 = (y.narrow(1, 0, 1)? - y2.narrow(1, 0, 1)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert_eq!(d0, 0.0);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Beltagy, Peters, Cohan, *Longformer: The Long-Document Transformer*, 2020,
//!   <https://arxiv.org/abs/2004.05150>
//! - Child et al., *Generating Long Sequences with Sparse Transformers*, 2019,
//!   <https://arxiv.org/abs/1904.10509>

use super::mha::{multi_head_attention, MhaConfig, MultiHeadAttention};
use crate::ops::AttentionMask;
use crate::{check, Error, Result};
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

const BLOCK: &str = "LocalAttention";

/// Configuration of [`LocalAttention`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalAttentionConfig {
    /// The attention heads and projections (self-attention: no `kdim`/`vdim`).
    pub mha: MhaConfig,
    /// Band width $w$ > 0: non-causal $|i - j| < w$, causal $i - w < j \le i$. Default 64.
    pub window: usize,
    /// Only attend to the past (and itself). Default `false`.
    pub causal: bool,
    /// The first `n_global` positions attend to all positions and all positions attend to them
    /// (within causality when `causal`). Default 0.
    pub n_global: usize,
}

impl Default for LocalAttentionConfig {
    fn default() -> Self {
        Self::new(MhaConfig::default(), 64)
    }
}

impl LocalAttentionConfig {
    /// `mha` heads with a non-causal band of `window`, no global tokens.
    pub fn new(mha: MhaConfig, window: usize) -> Self {
        Self {
            mha,
            window,
            causal: false,
            n_global: 0,
        }
    }

    /// Sets `causal`.
    pub fn with_causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }

    /// Sets `n_global`.
    pub fn with_n_global(mut self, n_global: usize) -> Self {
        self.n_global = n_global;
        self
    }

    /// Checks `window` > 0, no `kdim`/`vdim`, and the MHA config.
    pub fn validate(&self) -> Result<()> {
        check::positive(BLOCK, "window", self.window)?;
        if self.mha.kdim.is_some() || self.mha.vdim.is_some() {
            return Err(Error::config(
                BLOCK,
                "self-attention: kdim and vdim must be None",
            ));
        }
        self.mha.validate()
    }
}

/// Sliding-window multi-head self-attention with optional global tokens.
#[derive(Debug, Clone)]
pub struct LocalAttention {
    mha: MultiHeadAttention,
    cfg: LocalAttentionConfig,
}

impl LocalAttention {
    /// Wraps `mha` (whose config must equal `cfg.mha`). Errors (naming `LocalAttention`) on an
    /// invalid config.
    pub fn new(mha: MultiHeadAttention, cfg: LocalAttentionConfig) -> Result<Self> {
        cfg.validate()?;
        if mha.config() != cfg.mha {
            return Err(Error::config(BLOCK, "mha's config differs from cfg.mha"));
        }
        Ok(Self { mha, cfg })
    }

    /// The underlying attention.
    pub fn mha(&self) -> &MultiHeadAttention {
        &self.mha
    }

    /// The configuration.
    pub fn config(&self) -> LocalAttentionConfig {
        self.cfg
    }

    /// The mask this layer applies: [`AttentionMask::SlidingWindow`] with the config's
    /// `window`, `causal` and `n_global` as `global` (any sequence length).
    pub fn mask(&self) -> AttentionMask {
        AttentionMask::SlidingWindow {
            window: self.cfg.window,
            causal: self.cfg.causal,
            global: self.cfg.n_global,
        }
    }

    /// Self-attention of `x` `(B, L, E)`, attention dropout when `train`. Errors (naming
    /// `MultiHeadAttention`) on a bad input, as [`MultiHeadAttention::forward_t`].
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.mha.check_self(x)?;
        self.mha.forward_t(x, x, x, &self.mask(), train)
    }
}

impl Module for LocalAttention {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.forward_t(x, false)?)
    }
}

/// Builds a [`LocalAttention`] for embedding size `embed_dim`, the projections named as
/// [`MultiHeadAttention`]'s at the root of `vb`.
pub fn local_attention(
    embed_dim: usize,
    cfg: LocalAttentionConfig,
    vb: VarBuilder,
) -> Result<LocalAttention> {
    cfg.validate()?;
    LocalAttention::new(multi_head_attention(embed_dim, cfg.mha, vb)?, cfg)
}
