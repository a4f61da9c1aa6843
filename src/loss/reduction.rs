//! [`Reduction`]: how a loss turns its per-element values into what it returns, PyTorch's
//! `reduction=` argument.

use candle_core::Tensor;

use crate::{Error, Result};

/// PyTorch's `reduction=`: `"mean"` (the default), `"sum"`, `"none"`, and `"batchmean"`, which
/// only [`crate::loss::kl_div`] accepts (the sum divided by the batch size, the mathematically
/// correct KL divergence per sample).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The mean over the elements (for cross-entropy with class weights or ignored targets:
    /// over the total weight of the targets kept, as PyTorch).
    #[default]
    Mean,
    /// The sum over the elements.
    Sum,
    /// No reduction: one value per element (per sample and spatial position).
    None,
    /// The sum divided by the batch size (the first dimension); [`crate::loss::kl_div`] only.
    BatchMean,
}

impl Reduction {
    /// Rejects [`Reduction::BatchMean`] for a loss other than `kl_div` (an error naming `block`).
    pub(crate) fn no_batchmean(self, block: &'static str) -> Result<Self> {
        if self == Reduction::BatchMean {
            return Err(Error::config(
                block,
                "reduction BatchMean is only defined for kl_div; use Mean, Sum or None",
            ));
        }
        Ok(self)
    }

    /// Reduces the per-element losses `l`: `Mean` divides the sum by `denominator` (PyTorch's
    /// element count or total weight), `BatchMean` by the first dimension, `None` keeps `l`.
    pub(crate) fn apply(self, l: &Tensor, denominator: f64) -> Result<Tensor> {
        Ok(match self {
            Reduction::None => l.clone(),
            Reduction::Sum => l.sum_all()?,
            Reduction::Mean => (l.sum_all()? / denominator)?,
            Reduction::BatchMean => (l.sum_all()? / l.dims().first().copied().unwrap_or(1) as f64)?,
        })
    }

    /// [`Reduction::apply`] with the mean over every element of `l`.
    pub(crate) fn apply_mean_all(self, l: &Tensor) -> Result<Tensor> {
        self.apply(l, l.elem_count() as f64)
    }
}
