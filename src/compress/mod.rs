//! Model compression: make a trained network smaller and cheaper to run.
//!
//! - [`prune`]: magnitude pruning per layer and across layers, structured pruning of whole
//!   output channels by norm, masks that survive optimizer steps, gradual pruning on the
//!   Zhu & Gupta schedule and a sparsity report.
//! - [`quantize`]: quantization parameters, observers, fake-quantization for
//!   quantization-aware training, int8 post-training quantization and int8 kernels.
//!
//! # Tip
//! **Prune gradually, then fine-tune.** Removing 80–90 % of a network's weights in one shot
//! costs accuracy that a short fine-tune rarely wins back; raising the sparsity step by step
//! during training ($s_t$ growing as a cubic from $s_i$ to $s_f$) lets the remaining weights
//! take over the work of the removed ones, and typically keeps a large, sparse model more
//! accurate than a small dense one of the same parameter count (Zhu & Gupta 2017).
//!
//! **Unstructured sparsity saves memory, not time.** A weight matrix with 90 % zeros is 10×
//! smaller once stored sparse, but dense matrix kernels run it at the same speed. To get
//! faster inference on ordinary hardware, prune whole output channels or heads
//! ([`prune::ln_structured`]) and rebuild the layer smaller, or quantize.
//!
//! **The deployment recipe** (`examples/compress.rs`): fold each BatchNorm into its conv
//! ([`crate::transfer::fold_batch_norm`]), calibrate and convert to int8 (or fine-tune with
//! fake-quantization first), and compare size, latency and accuracy against pruning on the same
//! network before choosing.
//!
//! # References
//! - Zhu & Gupta, *To prune, or not to prune: exploring the efficacy of pruning for model
//!   compression*, 2017. <https://arxiv.org/abs/1710.01878>
//! - Han et al., *Learning both Weights and Connections for Efficient Neural Networks*, 2015.
//!   <https://arxiv.org/abs/1506.02626>

pub mod prune;
pub mod quantize;

pub use prune::{
    global_unstructured, l1_unstructured, ln_structured, sparsity_report, Amount, GradualPruning,
    GradualPruningConfig, LayerSparsity, Pruner, SparsityReport,
};
