//! Cross-entropy for classification: [`cross_entropy`] (PyTorch's `F.cross_entropy`, the fused
//! op of [`crate::ops::cross_entropy()`]) and [`soft_target_cross_entropy`] (timm's
//! `SoftTargetCrossEntropy`, the loss of Mixup / CutMix batches).
//!
//! # Shapes
//! - logits `(N, C)` or `(N, C, d1, …)`; targets class indices `(N, d1, …)` or probabilities
//!   shaped like the logits (see [`crate::ops::cross_entropy()`]).

use candle_core::Tensor;

pub use crate::ops::cross_entropy::{cross_entropy, CrossEntropyConfig};
use crate::Result;

/// timm's `SoftTargetCrossEntropy`: $\frac{1}{N} \sum_n \sum_c -t_{nc} \log p_{nc}$ for logits
/// `(N, C)` and probability targets `(N, C)` (rows summing to 1, e.g. Mixup / CutMix labels):
/// [`cross_entropy`] with probability targets and the default mean, the fused kernel included.
///
/// Errors as [`cross_entropy`] (naming `cross_entropy`).
pub fn soft_target_cross_entropy(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    cross_entropy(logits, target, &CrossEntropyConfig::default())
}
