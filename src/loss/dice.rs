//! Soft Dice loss for segmentation, multi-class (softmax) or binary (sigmoid).
//!
//! # Shapes
//! - logits `(N, C, d1, …)`; targets class indices `(N, d1, …)` (u8 / u32 / i64) when $C > 1$,
//!   or a float mask `(N, 1, d1, …)` in `[0, 1]` when $C = 1$. A scalar result.
//!
//! Per class $c$, summed over the batch and the pixels, with probabilities $p$ and one-hot
//! targets $t$: $D_c = (2 \sum p t + s) / (\sum p + \sum t + s)$, and the loss is
//! the mean over the classes of $1 - D_c$. This is MONAI's `DiceLoss` with
//! `batch=True`, `smooth_nr = smooth_dr = smooth` (and `softmax=True, to_onehot_y=True` or
//! `sigmoid=True`); segmentation_models_pytorch's `DiceLoss` differs only by dropping classes
//! absent from the batch.
//!
//! # Tip
//! Cross-entropy averages over pixels, so a structure covering 1 % of the image contributes
//! 1 % of the loss; Dice is a ratio per class and weighs a small organ like the background.
//! Its gradient is noisy when a class is nearly absent (the denominator is small): the smooth
//! term keeps it finite, and Dice + cross-entropy together train more stably than Dice alone.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::loss::dice;
//! # fn main() -> candle_tricks::Result<()> {
//! // Confident, correct logits for a 1x2 image with classes [0, 1]: loss near 0.
//! let x = Tensor::new(&[[[[20f32, -20.]], [[-20., 20.]]]], &Device::Cpu)?; // (1, 2, 1, 2)
//! let t = Tensor::new(&[[[0u32, 1]]], &Device::Cpu)?; // (1, 1, 2)
//! assert!(dice(&x, &t, 1.0)?.to_scalar::<f32>()? < 1e-6);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Milletari, Navab, Ahmadi, *V-Net*, 2016, <https://arxiv.org/abs/1606.04797>
//! - Sudre et al., *Generalised Dice overlap as a deep learning loss function*, 2017,
//!   <https://arxiv.org/abs/1707.03237>

use candle_core::{DType, Tensor};

use crate::{Error, Result};

const OP: &str = "dice";

/// The soft Dice loss (see the module docs) with smoothing `smooth` $\ge 0$.
///
/// Errors (naming `dice`) on logits of rank < 3, class-index targets of the wrong shape or out
/// of range (C > 1), a mask of another shape than the logits (C = 1), and a negative smooth.
pub fn dice(logits: &Tensor, target: &Tensor, smooth: f64) -> Result<Tensor> {
    if !(smooth.is_finite() && smooth >= 0.0) {
        return Err(Error::config(
            OP,
            format!("smooth must be finite and >= 0, got {smooth}"),
        ));
    }
    if logits.rank() < 3 {
        return Err(Error::shape(
            OP,
            "input",
            "(N, C, d1, …)",
            logits.shape().clone(),
        ));
    }
    crate::check::non_empty(OP, "input", logits)?;
    if !logits.dtype().is_float() {
        return Err(Error::unsupported_dtype(
            OP,
            "input",
            "a float dtype",
            logits.dtype(),
        ));
    }
    let dims = logits.dims();
    let (n, c) = (dims[0], dims[1]);
    let s = logits.elem_count() / (n * c);
    let x = logits.reshape((n, c, s))?;
    let (p, t) = if c == 1 {
        if target.shape() != logits.shape() {
            return Err(Error::shape(
                OP,
                "target",
                format!("{dims:?} (a mask shaped like the input)"),
                target.shape().clone(),
            ));
        }
        crate::check::same_dtype_device(OP, "target", logits, target)?;
        (candle_nn::ops::sigmoid(&x)?, target.reshape((n, 1, s))?)
    } else {
        let mut want = vec![n];
        want.extend_from_slice(&dims[2..]);
        if target.dims() != want.as_slice()
            || !matches!(target.dtype(), DType::U8 | DType::U32 | DType::I64)
        {
            return Err(Error::shape(
                OP,
                "target",
                format!("class indices {want:?}"),
                target.shape().clone(),
            ));
        }
        let idx = target.to_dtype(DType::I64)?.flatten_all()?;
        let (lo, hi) = (
            idx.min_all()?.to_scalar::<i64>()?,
            idx.max_all()?.to_scalar::<i64>()?,
        );
        if lo < 0 || hi >= c as i64 {
            return Err(Error::config(
                OP,
                format!("target classes must be in [0, {c}), got [{lo}, {hi}]"),
            ));
        }
        let one_hot = candle_nn::encoding::one_hot(idx.reshape((n, s))?, c, 1f32, 0f32)?;
        let one_hot = one_hot.transpose(1, 2)?.to_dtype(logits.dtype())?;
        (candle_nn::ops::softmax(&x, 1)?, one_hot)
    };
    let per_class = |v: &Tensor| -> Result<Tensor> { Ok(v.sum(2)?.sum(0)?) };
    let inter = per_class(&(&p * &t)?)?;
    let card = (per_class(&p)? + per_class(&t)?)?;
    let score = ((inter * 2.0)? + smooth)?.div(&(card + smooth)?)?;
    Ok(score.affine(-1.0, 1.0)?.mean_all()?)
}
