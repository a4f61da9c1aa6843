//! NT-Xent / InfoNCE (SimCLR): the contrastive loss of two augmented views of a batch.
//!
//! # Shapes
//! - `z1`, `z2`: `(N, D)` projections of two views of the same `N` examples; a scalar result.
//!
//! # Tip
//! Each of the $2N$ embeddings (L2-normalised) must pick its other view among the $2N - 1$
//! others: a $(2N-1)$-way cross-entropy over cosine similarities divided by the temperature
//! $\tau$. The other $2N - 2$ examples of the batch serve as negatives, so larger batches give
//! a harder, more informative task. A small $\tau$ (0.1 to 0.5) sharpens the softmax on the hardest
//! negatives; too small and training becomes unstable. Here the similarity matrix goes through
//! the fused cross-entropy, the diagonal masked with $-\infty$ (probability exactly 0).
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::loss::nt_xent;
//! # fn main() -> candle_tricks::Result<()> {
//! let z = Tensor::randn(0f32, 1., (8, 16), &Device::Cpu)?;
//! let noise = Tensor::randn(0f32, 1., (8, 16), &Device::Cpu)?;
//! // Identical views score a lower loss than unrelated ones.
//! let same = nt_xent(&z, &z, 0.5)?.to_scalar::<f32>()?;
//! let other = nt_xent(&z, &noise, 0.5)?.to_scalar::<f32>()?;
//! assert!(same < other);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Chen et al., *A Simple Framework for Contrastive Learning of Visual Representations*, 2020,
//!   <https://arxiv.org/abs/2002.05709>
//! - van den Oord, Li, Vinyals, *Representation Learning with Contrastive Predictive Coding*,
//!   2018, <https://arxiv.org/abs/1807.03748> (InfoNCE)

use candle_core::{DType, Tensor, D};

use crate::loss::{cross_entropy, CrossEntropyConfig};
use crate::{Error, Result};

const OP: &str = "nt_xent";

/// SimCLR's NT-Xent loss at temperature $\tau$, the mean over the $2N$ embeddings;
/// differentiable wrt both views.
///
/// Errors (naming `nt_xent`) on $\tau \le 0$ (or not finite) and views that are not both
/// `(N, D)` of one dtype and device.
pub fn nt_xent(z1: &Tensor, z2: &Tensor, temperature: f64) -> Result<Tensor> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(Error::config(
            OP,
            format!("temperature must be finite and > 0, got {temperature}"),
        ));
    }
    crate::check::rank(OP, "z1", z1, 2, "(N, D)")?;
    crate::check::non_empty(OP, "z1", z1)?;
    if z2.shape() != z1.shape() {
        return Err(Error::shape(
            OP,
            "z2",
            format!("{:?} (the shape of z1)", z1.dims()),
            z2.shape().clone(),
        ));
    }
    crate::check::same_dtype_device(OP, "z2", z1, z2)?;
    let n = z1.dims()[0];
    let z = Tensor::cat(&[z1, z2], 0)?;
    // F.normalize: z / max(|z|, 1e-12)
    let norm = z.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    let z = z.broadcast_div(&norm)?;
    let sim = (z.matmul(&z.t()?)? / temperature)?;
    let eye = Tensor::eye(2 * n, DType::U8, z.device())?;
    let sim = eye.where_cond(
        &Tensor::full(f32::NEG_INFINITY, (2 * n, 2 * n), z.device())?.to_dtype(sim.dtype())?,
        &sim,
    )?;
    let positives: Vec<u32> = (0..2 * n).map(|i| ((i + n) % (2 * n)) as u32).collect();
    let positives = Tensor::new(positives, z.device())?;
    cross_entropy(&sim, &positives, &CrossEntropyConfig::default())
}
