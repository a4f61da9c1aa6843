//! Cross-entropy for classification: [`cross_entropy`] (PyTorch's `F.cross_entropy`, the fused
//! op of [`crate::ops::cross_entropy()`]) and [`soft_target_cross_entropy`] (timm's
//! `SoftTargetCrossEntropy`, the loss of Mixup / CutMix batches).
//!
//! # Shapes
//! - logits `(N, C)` or `(N, C, d1, …)`; targets class indices `(N, d1, …)` or probabilities
//!   shaped like the logits (see [`crate::ops::cross_entropy()`]).
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::loss::{cross_entropy, soft_target_cross_entropy, CrossEntropyConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let x = Tensor::randn(0f32, 2., (3, 4), &dev)?;
//! // A Mixup pair: 0.7 of class 1 and 0.3 of class 2, for every row.
//! let mixed = Tensor::new(&[[0f32, 0.7, 0.3, 0.0]; 3], &dev)?;
//! let soft = soft_target_cross_entropy(&x, &mixed)?.to_scalar::<f32>()?;
//! // ... is the same mixture of the two class-index losses.
//! let ce = |c: u32| -> candle_tricks::Result<f32> {
//!     let y = Tensor::new(&[c; 3], &dev)?;
//!     Ok(cross_entropy(&x, &y, &CrossEntropyConfig::default())?.to_scalar::<f32>()?)
//! };
//! assert!((soft - (0.7 * ce(1)? + 0.3 * ce(2)?)).abs() < 1e-5);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Zhang et al., *mixup: Beyond Empirical Risk Minimization*, 2017,
//!   <https://arxiv.org/abs/1710.09412>

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
