//! Attention blocks: multi-head attention with PyTorch's names, positional encodings, and the
//! variants that make attention cheaper on long inputs.
//!
//! # Shapes
//! Sequence blocks take batch-first `(B, L, E)`; [`AxialAttention`] takes a feature map
//! `(B, C, H, W)`; the fused op underneath ([`crate::ops::scaled_dot_product_attention`]) works
//! on heads `(B, H, L, d)`.
//!
//! # Tip
//! Full attention compares every query with every key: $O(L^2)$ time, and $O(L^2)$ memory
//! if the score matrix is materialised. Pick the cheapest variant that keeps what the task needs:
//! - **Flash tiling** ([`crate::ops::scaled_dot_product_attention`], used by every block here)
//!   keeps the result exact and the time $O(L^2)$ but the memory $O(L)$: the scores are computed
//!   tile by tile with an online softmax and recomputed in the backward pass.
//! - **Sliding window** ([`LocalAttention`]): each query sees $w$ neighbours, $O(L \cdot w)$;
//!   a few global tokens restore a path between distant positions (Longformer).
//! - **Axial** ([`AxialAttention`]): on an $H \times W$ map, attend along rows then columns,
//!   $O(L \cdot (H + W))$ with $L = H W$ instead of $O(L^2)$; two layers connect every pair.
//! - **Linformer** ([`LinformerAttention`]): project keys and values along the sequence to
//!   $k$ rows, $O(L \cdot k)$; non-causal, fixed maximum length.
//! - **Grouped-query heads** ([`MhaConfig::num_kv_heads`]) do not change the $L^2$ term but shrink
//!   the decoding KV cache ([`KvCache`]) by $H / H_{kv}$.
//!
//! Attention is permutation-equivariant: add positions ([`SinusoidalPositionalEncoding`],
//! [`LearnedPositionalEmbedding`]) or rotate queries and keys ([`RotaryEmbedding`]).
//!
//! Measured on this crate (`docs/PERFORMANCE.md`): forward + backward of one attention layer
//! at $(B, H, L, d) = (1, 8, 4096, 64)$ needs 66 MiB of extra memory with the flash kernel and
//! 6.8 GiB materialised; at $L = 8192$, 129 MiB against ~27 GiB, more than the test machine
//! has.
//!
//! **Training transformers.** Warm the learning rate up ([`crate::schedule::Warmup`]): Adam's
//! second-moment estimate is noisy over the first steps and large early updates destabilise
//! attention, post-LN stacks most of all (see [`TransformerEncoderLayer`] for pre- vs post-LN).
//! For mixed precision feed f16/bf16 activations — every kernel here accumulates in f32 — keep
//! the master weights and optimizer state in f32 (this crate's optimizers do), and scale the
//! loss for f16 ([`crate::optim::GradScaler`]); bf16 has f32's exponent range and needs no
//! scaling.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::attention::{multi_head_attention, MhaConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let mha = multi_head_attention(32, MhaConfig::new(4), vb)?;
//! // PyTorch's parameters: 3E·E + 3E (packed in_proj) + E·E + E (out_proj).
//! let n: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
//! assert_eq!(n, 4 * 32 * 32 + 4 * 32);
//! let x = Tensor::randn(0f32, 1., (2, 7, 32), &Device::Cpu)?;
//! assert_eq!(mha.forward(&x)?.dims(), &[2, 7, 32]);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Vaswani et al., *Attention Is All You Need*, 2017, <https://arxiv.org/abs/1706.03762>
//! - Dao, *FlashAttention-2*, 2023, <https://arxiv.org/abs/2307.08691>
//! - Beltagy, Peters, Cohan, *Longformer*, 2020, <https://arxiv.org/abs/2004.05150>
//! - Ho et al., *Axial Attention in Multidimensional Transformers*, 2019,
//!   <https://arxiv.org/abs/1912.12180>
//! - Wang et al., *Linformer: Self-Attention with Linear Complexity*, 2020,
//!   <https://arxiv.org/abs/2006.04768>
//! - Liu et al., *On the Variance of the Adaptive Learning Rate and Beyond* (RAdam), 2020,
//!   <https://arxiv.org/abs/1908.03265>
//! - Micikevicius et al., *Mixed Precision Training*, 2018, <https://arxiv.org/abs/1710.03740>

pub mod cbam;
pub mod mha;
pub mod patch;
pub mod squeeze_excite;
pub mod transformer;
pub use cbam::{cbam, Cbam, CbamConfig};
pub use mha::{multi_head_attention, KvCache, MhaConfig, MhaWeights, MultiHeadAttention};
pub use patch::{
    conv_stem, hybrid_vit_embedding, patch_embed, vit_embedding, ConvStem, ConvStemConfig,
    PatchEmbed, PatchEmbedConfig, Tokenizer, VitEmbedding,
};
pub use squeeze_excite::{squeeze_excite, SqueezeExcite, SqueezeExciteConfig};
pub use transformer::{
    transformer_encoder, transformer_encoder_layer, FfnActivation, TransformerEncoder,
    TransformerEncoderConfig, TransformerEncoderLayer, TransformerEncoderLayerConfig,
};
pub mod positional;
pub use positional::{
    learned_positional_embedding, LearnedPositionalEmbedding, RotaryEmbedding,
    SinusoidalPositionalEncoding,
};
pub mod local;
pub use local::{local_attention, LocalAttention, LocalAttentionConfig};
pub mod axial;
pub use axial::{axial_attention, AxialAttention};
pub mod linformer;
pub use linformer::{linformer_attention, LinformerAttention, LinformerConfig};
