//! State-space sequence models: the Mamba block and language model.
//!
//! Mamba is a *selective state-space model*: a stack of blocks whose sequence mixing is a
//! linear recurrence over $N$ hidden states per channel,
//! $x_t = e^{\Delta_t A} x_{t-1} + \Delta_t B_t u_t$, $y_t = C_t x_t + D u_t$, where the step
//! size $\Delta_t$ and the projections $B_t$, $C_t$ are computed from the current token. There
//! is no attention anywhere.
//!
//! # Shapes
//! - [`MambaBlock`]: `(B, L, d_model) -> (B, L, d_model)`; decoding step `(B, d_model)`.
//! - [`MambaModel`]: token ids `(B, L)` u32 `-> (B, L, vocab)` logits.
//! - the scan itself: [`selective_scan()`] (re-exported from [`crate::ops`]).
//!
//! # Tip
//! **What Mamba is.** S4 (Gu et al. 2021) showed that a linear time-invariant (LTI) state-space
//! model, computed as a long convolution, handles very long sequences; but an LTI system
//! applies the same dynamics to every token, so it cannot decide *what* to keep — it fails on
//! tasks that need content-based selection such as selective copying or induction heads.
//! Mamba (Gu & Dao 2023) makes $\Delta$, $B$, $C$ functions of the input (the "S6" layer):
//! a small $\Delta_t$ lets token $t$ pass without touching the state, a large one overwrites
//! the state with it. The price is that the layer is no longer a convolution; it is computed
//! by a hardware-aware *scan* that never materialises the $(B, E, L, N)$ state tensor
//! ([`crate::ops::selective_scan()`]). `MambaConfig::lti` turns the selection off for the
//! ablation (see `examples/selective_copying.rs`).
//!
//! **Mamba vs a Transformer.** Self-attention compares every token with every other: time
//! $O(L^2 d)$ for training and a key/value cache that grows by one entry per token, so
//! generating token $t$ costs $O(t\thinspace d)$ time and memory. Mamba trains in
//! $O(L\thinspace E\thinspace N)$ — linear in the sequence length — and generates with a
//! fixed-size state ($E \times (N + K)$ numbers per layer): every new token costs the same,
//! whatever the context length. The trade-off: everything the model remembers must fit in that
//! state, so exact recall of arbitrary earlier tokens (which attention gets for free) has to be
//! learned and is bounded by $N$.
//!
//! Measured on this crate (`examples/mamba_vs_transformer.rs`, d_model 256, batch 1, 2 CPU
//! threads; table and plot in `docs/PERFORMANCE.md`): at L = 1024 a Mamba block's forward takes
//! 16 ms against 29 ms for a pre-LN transformer layer on the flash kernel; at L = 16384, 266 ms
//! against 2.3 s. Generating one token costs 0.28 ms at any context for Mamba, and 1.5 ms at
//! L = 1024 growing to 18 ms at 16384 for the layer with a KV cache.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::ssm::{mamba_block, MambaConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let block = mamba_block(MambaConfig::new(16), VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
//! // The decoding state does not grow with the context: after 5 or 500 tokens it is
//! // E x K + E x N numbers per sequence (here 32 x 4 + 32 x 16).
//! for len in [5, 500] {
//!     let x = Tensor::randn(0f32, 1., (1, len, 16), &dev)?;
//!     let (_, state) = block.forward_with_state(&x)?;
//!     assert_eq!(state.conv.elem_count() + state.ssm.elem_count(), 32 * 4 + 32 * 16);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Gu, Dao, *Mamba: Linear-Time Sequence Modeling with Selective State Spaces*, 2023,
//!   <https://arxiv.org/abs/2312.00752>
//! - Gu, Goel, Ré, *Efficiently Modeling Long Sequences with Structured State Spaces* (S4),
//!   2021, <https://arxiv.org/abs/2111.00396>

pub mod mamba;
pub mod model;

pub use crate::ops::{selective_scan, SelectiveScanConfig};
pub use mamba::{mamba_block, MambaBlock, MambaConfig, MambaState, MambaWeights};
pub use model::{mamba_model, MambaModel, MambaModelConfig, MambaModelState, Sampling};
