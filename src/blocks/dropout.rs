//! Channel dropout ([`Dropout2d`], Tompson et al. 2015) for convolutional features; element
//! dropout is candle's [`candle_nn::Dropout`], re-exported as [`crate::blocks::Dropout`].
//!
//! # Shapes
//! Any input `(B, C, …)` of rank ≥ 3 (f32, f16 or bf16) → the same shape: `(B, C, H, W)` as
//! PyTorch's `Dropout2d`, and also `(B, C, L)` and `(B, C, D, H, W)` (`Dropout1d`, `Dropout3d`).
//! The mask has shape `(B, C, 1, …, 1)`: each feature map is kept or zeroed as a whole.
//!
//! # Tip
//! Neighbouring activations of a convolutional feature map are strongly correlated, so zeroing
//! single elements barely removes information — the next layer recovers a dropped pixel from its
//! neighbours — and element dropout on conv features regularizes little while adding noise.
//! Dropping whole channels removes a feature everywhere at once, which is what forces the
//! channels not to co-adapt. In training each map survives with probability $q = 1 - p$ and is
//! scaled by $1/q$, so $\mathbb{E}(y) = x$ and eval (identity) needs no rescaling. Typical rates
//! are lower than for dense layers ($p \approx 0.1$–$0.2$); with batch norm, place it after the
//! normalization or use it only in the head, since the variance shift between train and eval
//! perturbs BN's running statistics.
//!
//! # Example
//! ```
//! use candle_core::{Device, ModuleT, Tensor};
//! use candle_tricks::blocks::Dropout2d;
//! # fn main() -> candle_tricks::Result<()> {
//! let drop = Dropout2d::new(0.5)?;
//! let x = Tensor::ones((4, 32, 5, 5), candle_core::DType::F32, &Device::Cpu)?;
//! let y = drop.forward_t(&x, true)?;
//! // Every 5x5 map is entirely 0 or entirely 1 / (1 - p) = 2.
//! for map in y.flatten_from(2)?.flatten_to(1)?.to_vec2::<f32>()? {
//!     assert!(map.iter().all(|&v| v == 0.0) || map.iter().all(|&v| v == 2.0));
//! }
//! // Eval is the identity.
//! assert_eq!(drop.forward_t(&x, false)?.sum_all()?.to_scalar::<f32>()?, 4.0 * 32.0 * 25.0);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Tompson et al., *Efficient Object Localization Using Convolutional Networks*, 2015
//!   (spatial dropout), <https://arxiv.org/abs/1411.4280>
//! - Srivastava et al., *Dropout: A Simple Way to Prevent Neural Networks from Overfitting*, 2014,
//!   <https://jmlr.org/papers/v15/srivastava14a.html>

use super::drop_path::{apply_mask, check_p};
use crate::{check, Error, Result};
use candle_core::{ModuleT, Tensor};

const DROPOUT2D: &str = "Dropout2d";

/// Channel dropout: in training, zeroes each `(b, c)` feature map with probability `p` and scales
/// the survivors by $1 / (1 - p)$; the identity in eval or when `p = 0`. No weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout2d {
    p: f32,
}

impl Dropout2d {
    /// Channel dropout with probability `p`. Errors (naming `Dropout2d`) unless `p` lies in
    /// `[0, 1)`.
    pub fn new(p: f32) -> Result<Self> {
        check_p(DROPOUT2D, p)?;
        Ok(Self { p })
    }

    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }

    /// Like [`ModuleT::forward_t`], returning this crate's error.
    pub fn apply(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check::float_dtype(DROPOUT2D, "input", x)?;
        check::numel(DROPOUT2D, "input", x.dims(), x.dtype())?;
        if x.rank() < 3 {
            return Err(Error::shape(
                DROPOUT2D,
                "input",
                "(B, C, …) of rank >= 3, e.g. (B, C, H, W)",
                x.shape().clone(),
            ));
        }
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        let mut mask_shape = vec![1; x.rank()];
        mask_shape[..2].copy_from_slice(&x.dims()[..2]);
        apply_mask(
            DROPOUT2D,
            x,
            mask_shape,
            self.p,
            1.0 / (1.0 - self.p as f64),
        )
    }
}

impl ModuleT for Dropout2d {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(self.apply(x, train)?)
    }
}
