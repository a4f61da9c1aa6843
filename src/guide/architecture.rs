//! Choosing an architecture, and starting small (tip 1), with what this crate measured.
//!
//! # Tip
//! Pick the family whose built-in assumptions match the data, start with the smallest member
//! that can fit the training set, and grow only when the training error says so.
//!
//! | data | first choice | why | this crate |
//! |---|---|---|---|
//! | images, little data | CNN (ResNet blocks) | locality and translation equivariance are built in, so few samples suffice ([`super::invariances`]) | `examples/quickstart.rs`, [`crate::blocks::BasicBlock`] |
//! | images, much data or global context | ViT / hybrid conv-stem ViT | attention relates distant patches from the first layer; needs more data or augmentation to learn locality | `examples/vit_tiny.rs`, [`crate::attention::VitEmbedding`] |
//! | short sequences, streaming, small data | LSTM / GRU | a fixed-size state updated per step, strong bias toward order and recency, cheap per step | [`crate::rnn::Lstm`], [`crate::rnn::Gru`], `examples/sequence_lstm.rs` |
//! | long sequences, generation | Mamba (selective SSM) | linear time in the length and a constant-size decode state; selection lets it keep or ignore each token by content | [`crate::ssm::MambaBlock`], `examples/selective_copying.rs` |
//! | sequences needing exact recall from context | transformer | every token can attend to every earlier one; cost quadratic in time, linear in memory with flash attention | [`crate::attention::TransformerEncoderLayer`] |
//! | sets, point clouds | attention without positions, sum/mean pooling | permutation invariance | [`crate::attention::MultiHeadAttention`] |
//!
//! **Start small.** A model that cannot fit its training set has too little capacity or a bug;
//! one that fits it but not the validation set needs data, augmentation or regularisation, not
//! more layers. A small model answers which of the two it is in minutes: get it to overfit a
//! few batches first, then scale width and depth together. The examples are built that way:
//! each is the smallest model that shows its point, trainable on two cores.
//!
//! **Measured here** (2 cores, f32; details in `docs/PERFORMANCE.md` and each example's
//! header):
//! - *Sequence length.* One layer at d_model 256 (forward): Mamba 4.5 ms at L = 256 and 266 ms at
//!   L = 16384; a flash-attention transformer layer 7.2 ms and 2333 ms — 8.8× slower at 16384,
//!   because attention is quadratic in L. Generating one token at context 16384: Mamba 0.28 ms
//!   (a constant-size state), attention with a KV cache 18 ms (it reads the whole cache).
//! - *Content-based selection.* Selective copying (data tokens at random positions): a
//!   2-layer Mamba reaches 99.6–99.8 % token accuracy, the same block with input-independent
//!   (LTI) dynamics 17–34 % — a fixed convolution cannot decide per token what to keep.
//! - *Recurrent vs selective state space at equal parameters.* Digits read pixel by pixel
//!   (L = 64, ~18 K parameters each, `examples/sequence_lstm.rs`): LSTM 75 %, GRU 80 %, Mamba
//!   81 % test accuracy after 15 epochs, the recurrent layers ~6× faster per epoch at this small
//!   width and length. Short sequences on a small budget do not need Mamba; long ones do.
//!
//! The state an autoregressive model carries per layer decides its generation cost; an LSTM's
//! and Mamba's do not grow with the context, a transformer's KV cache does:
//! ```
//! // Per layer and sequence, in values: LSTM h and c; Mamba's SSM and conv states (expand 2,
//! // d_state 16, d_conv 4); a transformer's keys and values for L tokens.
//! let (d, l) = (256usize, 4096usize);
//! let lstm = 2 * d;
//! let mamba = 2 * d * 16 + 2 * d * (4 - 1);
//! let kv_cache = 2 * l * d;
//! assert_eq!((lstm, mamba, kv_cache), (512, 9_728, 2_097_152));
//! assert!(kv_cache > 200 * mamba); // and it grows with every generated token
//! ```
//!
//! # References
//! - Hochreiter, Schmidhuber, *Long Short-Term Memory*, Neural Computation 1997.
//! - Vaswani et al., *Attention Is All You Need*, NeurIPS 2017, <https://arxiv.org/abs/1706.03762>.
//! - Dosovitskiy et al., *An Image is Worth 16x16 Words*, ICLR 2021,
//!   <https://arxiv.org/abs/2010.11929>.
//! - Gu, Dao, *Mamba: Linear-Time Sequence Modeling with Selective State Spaces*, 2023,
//!   <https://arxiv.org/abs/2312.00752>.
//! - Karpathy, *A Recipe for Training Neural Networks*, 2019,
//!   <https://karpathy.github.io/2019/04/25/recipe/> (overfit one batch first, then grow).
