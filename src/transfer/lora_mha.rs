//! LoRA on the projections of a [`MultiHeadAttention`], as peft's `lora.MultiheadAttention`:
//! one low-rank update on the packed query/key/value weight `in_proj_weight` and one on
//! `out_proj.weight`, both frozen.
//!
//! # Shapes
//! - Input and output as [`MultiHeadAttention`]: query `(B, Lq, E)`, key and value `(B, Lk, E)`,
//!   output `(B, Lq, E)`.
//! - In-projection update: `lora_A.weight` `(r, E)`, `lora_B.weight` `(3E, r)`; output
//!   projection update: `base_layer.out_proj.lora_A.weight` `(r, E)`,
//!   `base_layer.out_proj.lora_B.weight` `(E, r)`. These are the keys of a peft adapter file
//!   for an attention module at `<module>` (under `base_model.model.<module>`), so
//!   `lora_multi_head_attention(mha, cfg, vb.pp("base_model.model.attn"))` loads one.
//! - Only the packed layout (`kdim = vdim = E`, no grouped-query heads) takes LoRA, as in peft.
//!
//! # Tip
//! The LoRA paper adapts the attention projections (query and value in most of its
//! experiments); peft's layer adapts the whole packed in-projection and the output projection,
//! and so does this one. The update is applied the way peft applies it: the forward
//! pass uses $W_{in} + \frac{\alpha}{r} B_{in} A_{in}$ and $W_{out} + \frac{\alpha}{r} B_{out}
//! A_{out}$ in place of the frozen weights, so the gradient reaches $A$ and $B$ through the fused
//! attention and the result equals the merged layer. The price is one $3E \times r \times E$
//! product per forward pass, negligible next to attention over a sequence. Because the update
//! sits inside the weights, there is no place for dropout on the adapter's input: like peft's
//! layer (which accepts `lora_dropout` and ignores it here), the effective dropout is 0, and a
//! config asking for more is refused rather than silently ignored. The gradients are those of
//! this forward pass; peft 0.22's own backward for the layer differs upstream of `out_proj`
//! (it unmerges `out_proj` in place after the forward, changing a tensor autograd saved), so
//! its input and in-projection gradients disagree with finite differences of its forward.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::attention::{multi_head_attention, MhaConfig};
//! use candle_tricks::transfer::{lora_multi_head_attention, LoraConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let pretrained = VarMap::new();
//! let vb = VarBuilder::from_varmap(&pretrained, DType::F32, &dev);
//! let mha = multi_head_attention(64, MhaConfig::new(4), vb)?;
//! let adapters = VarMap::new();
//! let vb = VarBuilder::from_varmap(&adapters, DType::F32, &dev);
//! let cfg = LoraConfig::default().with_r(4);
//! let mut lora = lora_multi_head_attention(mha.clone(), cfg, vb)?;
//! // r·(E + 3E) + r·(E + E) = 1536 trainable numbers instead of 4·64² + 4·64 = 16640.
//! let n: usize = lora.trainable_vars().iter().map(|v| v.elem_count()).sum();
//! assert_eq!(n, 4 * (64 + 3 * 64) + 4 * (64 + 64));
//! // B starts at zero: the wrapped layer computes the pre-trained one.
//! let x = Tensor::randn(0f32, 1., (2, 10, 64), &dev)?;
//! let diff = (lora.forward(&x)? - mha.forward(&x)?)?.abs()?.max_all()?;
//! assert!(diff.to_scalar::<f32>()? < 1e-6);
//! // Merging folds both updates into the weights; unmerging takes them out again.
//! lora.merge()?;
//! lora.unmerge()?;
//! let w = mha.in_proj_weight().expect("packed");
//! let diff = (lora.in_proj_weight() - w)?.abs()?.max_all()?;
//! assert!(diff.to_scalar::<f32>()? < 1e-6);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Hu et al., *LoRA: Low-Rank Adaptation of Large Language Models*, 2021,
//!   <https://arxiv.org/abs/2106.09685>

use super::lora::{load_pair, LowRank};
use super::LoraConfig;
use crate::attention::{KvCache, MultiHeadAttention};
use crate::ops::AttentionMask;
use crate::{check, Error, Result};
use candle_core::{Module, Tensor, Var};
use candle_nn::VarBuilder;

const BLOCK: &str = "LoraMultiHeadAttention";

/// A frozen [`MultiHeadAttention`] with trainable low-rank updates of its packed in-projection
/// and its output projection (peft's `lora.MultiheadAttention`); see the [module docs](self).
#[derive(Debug, Clone)]
pub struct LoraMultiHeadAttention {
    /// The frozen layer; its projection weights are replaced by `in_proj`'s and `out_proj`'s
    /// at every call.
    base: MultiHeadAttention,
    in_proj: LowRank,
    out_proj: LowRank,
}

/// The base weight plus $\frac{\alpha}{r} B A$, with the gradient flowing into `A` and `B`.
fn adapted(core: &LowRank) -> Result<Tensor> {
    let ba = core.lora_b.as_tensor().matmul(core.lora_a.as_tensor())?;
    Ok((&core.weight + ba.affine(core.cfg.scaling(), 0.0)?)?)
}

/// The packed in-projection weight, or an error naming the layout peft requires too.
fn packed_in_proj(base: &MultiHeadAttention) -> Result<Tensor> {
    base.in_proj_weight().cloned().ok_or_else(|| {
        Error::config(
            BLOCK,
            "LoRA needs the packed in_proj_weight (kdim = vdim = embed_dim, no grouped-query \
             heads), as peft",
        )
    })
}

fn validate(cfg: &LoraConfig) -> Result<()> {
    cfg.validate_for(BLOCK)?;
    if cfg.lora_dropout != 0.0 {
        let msg = format!(
            "lora_dropout must be 0 (the update is folded into the projection weights, as \
             peft does, where no input dropout applies), got {}",
            cfg.lora_dropout
        );
        return Err(Error::config(BLOCK, msg));
    }
    Ok(())
}

impl LoraMultiHeadAttention {
    /// Wraps `base` (packed layout) with the in-projection adapter `in_lora = (A (r, E),
    /// B (3E, r))` and the output-projection adapter `out_lora = (A (r, E), B (E, r))`. The base
    /// is frozen; a `Var` passed as an adapter tensor is trained in place, a plain tensor is
    /// copied into a new `Var`.
    ///
    /// Errors (naming `LoraMultiHeadAttention`) on an invalid config (`lora_dropout` must be 0),
    /// a base without a packed `in_proj_weight`, wrong adapter shapes, or mixed dtypes or
    /// devices.
    pub fn new(
        base: MultiHeadAttention,
        in_lora: (Tensor, Tensor),
        out_lora: (Tensor, Tensor),
        cfg: LoraConfig,
    ) -> Result<Self> {
        validate(&cfg)?;
        let w_in = packed_in_proj(&base)?;
        let w_out = base.out_proj_weight().clone();
        let in_proj = LowRank::new(BLOCK, w_in, None, in_lora.0, in_lora.1, cfg)?;
        let out_proj = LowRank::new(BLOCK, w_out, None, out_lora.0, out_lora.1, cfg)?;
        Ok(Self {
            base: base.detached(),
            in_proj,
            out_proj,
        })
    }

    /// The packed `in_proj_weight` `(3E, E)`, including the update while merged.
    pub fn in_proj_weight(&self) -> &Tensor {
        &self.in_proj.weight
    }

    /// `out_proj.weight` `(E, E)`, including the update while merged.
    pub fn out_proj_weight(&self) -> &Tensor {
        &self.out_proj.weight
    }

    /// The in-projection adapter, `(lora_A (r, E), lora_B (3E, r))`.
    pub fn in_proj_lora(&self) -> (&Var, &Var) {
        (&self.in_proj.lora_a, &self.in_proj.lora_b)
    }

    /// The output-projection adapter, `(lora_A (r, E), lora_B (E, r))`.
    pub fn out_proj_lora(&self) -> (&Var, &Var) {
        (&self.out_proj.lora_a, &self.out_proj.lora_b)
    }

    /// The trainable variables: the in-projection's `lora_A`, `lora_B`, then the output
    /// projection's. Give these (not the model's whole `VarMap`) to the optimizer.
    pub fn trainable_vars(&self) -> Vec<Var> {
        [&self.in_proj, &self.out_proj]
            .into_iter()
            .flat_map(|c| [c.lora_a.clone(), c.lora_b.clone()])
            .collect()
    }

    /// Whether both updates are folded into the weights.
    pub fn is_merged(&self) -> bool {
        self.in_proj.merged
    }

    /// Folds both updates into the projection weights (a no-op when already merged); the
    /// forward pass is then the plain layer's, and the adapters get no gradient.
    pub fn merge(&mut self) -> Result<()> {
        self.in_proj.merge()?;
        self.out_proj.merge()
    }

    /// Takes both updates out again (a no-op when not merged); exact up to rounding.
    pub fn unmerge(&mut self) -> Result<()> {
        self.in_proj.unmerge()?;
        self.out_proj.unmerge()
    }

    /// The layer with both updates folded in, as a plain [`MultiHeadAttention`] (peft's
    /// `merge_and_unload`): no adapter cost at inference.
    pub fn merged_attention(&self) -> Result<MultiHeadAttention> {
        let mut m = self.clone();
        m.merge()?;
        m.current()
    }

    /// The LoRA configuration.
    pub fn config(&self) -> LoraConfig {
        self.in_proj.cfg
    }

    /// The attention layer this call runs: the frozen base with $W + \Delta W$ (or, merged, the
    /// merged weights) as its projections.
    fn current(&self) -> Result<MultiHeadAttention> {
        if self.is_merged() {
            let (w_in, w_out) = (&self.in_proj.weight, &self.out_proj.weight);
            return self.base.with_projection_weights(w_in, w_out);
        }
        let (w_in, w_out) = (adapted(&self.in_proj)?, adapted(&self.out_proj)?);
        self.base.with_projection_weights(&w_in, &w_out)
    }

    /// As [`MultiHeadAttention::forward_t`], with the adapted projections.
    pub fn forward_t(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        mask: &AttentionMask,
        train: bool,
    ) -> Result<Tensor> {
        self.current()?.forward_t(query, key, value, mask, train)
    }

    /// As [`MultiHeadAttention::forward_cached`], with the adapted projections (merge first
    /// when decoding many tokens: the update is then not recomputed per call).
    pub fn forward_cached(
        &self,
        x_new: &Tensor,
        cache: &mut KvCache,
        causal: bool,
    ) -> Result<Tensor> {
        self.current()?.forward_cached(x_new, cache, causal)
    }
}

impl Module for LoraMultiHeadAttention {
    /// Unmasked self-attention of `(B, L, E)`, eval mode.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.forward_t(x, x, x, &AttentionMask::None, false)?)
    }
}

/// A [`LoraMultiHeadAttention`] around the pre-trained `base`, whose adapters come from `vb`
/// under peft's names (`lora_A.weight`, `lora_B.weight`, `base_layer.out_proj.lora_A.weight`,
/// `base_layer.out_proj.lora_B.weight`): a `VarMap` creates them as peft initialises them
/// (Kaiming-uniform `A`, zero `B`), a peft adapter file loads them.
///
/// Errors as [`LoraMultiHeadAttention::new`], or when `vb` holds tensors of other shapes.
pub fn lora_multi_head_attention(
    base: MultiHeadAttention,
    cfg: LoraConfig,
    vb: VarBuilder,
) -> Result<LoraMultiHeadAttention> {
    check::loading(BLOCK, vb, |vb| {
        validate(&cfg)?;
        let w_in = packed_in_proj(&base)?;
        let in_lora = load_pair(BLOCK, &w_in, cfg.r, &vb)?;
        let vb_out = vb.pp("base_layer.out_proj");
        let out_lora = load_pair(BLOCK, base.out_proj_weight(), cfg.r, &vb_out)?;
        LoraMultiHeadAttention::new(base, in_lora, out_lora, cfg)
    })
}
