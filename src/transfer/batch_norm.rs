//! `FrozenBatchNorm2d`, a BatchNorm whose statistics and affine parameters are constants, and
//! folding a BatchNorm into the convolution before it for inference.
//!
//! # Shapes
//! - [`FrozenBatchNorm2d`]: input and output `(B, C, H, W)`; tensors `weight`, `bias`,
//!   `running_mean`, `running_var` of `(C)` (torchvision's names).
//! - [`fold_batch_norm`]: conv weight `(C, C_in / groups, k_h, k_w)` (any rank ≥ 2 with the
//!   output channels first) and optional bias `(C)` → folded weight of the same shape and bias
//!   `(C)`.
//!
//! # Tip
//! In evaluation mode a BatchNorm is the affine map $y = s \odot x + t$ with
//! $s = \gamma / \sqrt{\sigma^2 + \epsilon}$ and $t = \beta - \mu s$. Fine-tuning a detector or
//! segmenter with a batch of 2 images per GPU gives useless batch statistics, so torchvision's
//! detection models replace every BatchNorm of the backbone by this frozen map (the pre-trained
//! statistics are better than any a tiny batch can estimate). For inference, the map folds into
//! the preceding conv: $W^\prime = s \odot W$ (per output channel), $b^\prime = s \odot b + t$,
//! one layer less and the same output up to rounding.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::VarBuilder;
//! use candle_tricks::transfer::{fold_batch_norm, frozen_batch_norm2d, FrozenBatchNorm2dConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let bn = frozen_batch_norm2d(3, FrozenBatchNorm2dConfig::default(), VarBuilder::zeros(DType::F32, &dev))?;
//! let w = Tensor::randn(0f32, 1.0, (3, 2, 3, 3), &dev)?;
//! let x = Tensor::randn(0f32, 1.0, (1, 2, 5, 5), &dev)?;
//! let (wf, bf) = fold_batch_norm(&w, None, &bn)?;
//! let folded = x.conv2d(&wf, 0, 1, 1, 1)?.broadcast_add(&bf.reshape((1, 3, 1, 1))?)?;
//! let unfolded = bn.forward(&x.conv2d(&w, 0, 1, 1, 1)?)?;
//! let diff = (folded - unfolded)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(diff < 1e-5);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Ioffe & Szegedy, *Batch Normalization*, 2015, <https://arxiv.org/abs/1502.03167>
//! - Jacob et al., *Quantization and Training of Neural Networks for Efficient
//!   Integer-Arithmetic-Only Inference*, 2017, <https://arxiv.org/abs/1712.05877> (folding)

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::norm::BatchNorm;
use crate::{Error, Result};

const BLOCK: &str = "FrozenBatchNorm2d";

/// Configuration of [`FrozenBatchNorm2d`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrozenBatchNorm2dConfig {
    /// Added to the running variance (default 1e-5, as torchvision's).
    pub eps: f64,
}

impl Default for FrozenBatchNorm2dConfig {
    fn default() -> Self {
        Self { eps: 1e-5 }
    }
}

impl FrozenBatchNorm2dConfig {
    /// Sets `eps`.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Errors unless `eps` is finite and > 0.
    pub fn validate(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::config(
                BLOCK,
                format!("eps must be finite and > 0, got {}", self.eps),
            ));
        }
        Ok(())
    }
}

/// A BatchNorm over `(B, C, H, W)` with fixed statistics and affine parameters: no training
/// update, the same output in training and evaluation; built by [`frozen_batch_norm2d`].
#[derive(Debug, Clone)]
pub struct FrozenBatchNorm2d {
    /// Per-channel scale $s$, `(C)`.
    scale: Tensor,
    /// Per-channel shift $t$, `(C)`.
    shift: Tensor,
}

impl FrozenBatchNorm2d {
    /// From the four `(C)` tensors (`weight`, `bias`, `running_mean`, `running_var`). Errors
    /// (naming `FrozenBatchNorm2d`) on shapes other than `(C)`, a bad `eps`, or mixed dtypes.
    pub fn new(
        weight: &Tensor,
        bias: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        cfg: FrozenBatchNorm2dConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        let c = weight.elem_count();
        for (what, t) in [
            ("weight", weight),
            ("bias", bias),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ] {
            if t.dims() != [c] {
                return Err(Error::shape(
                    BLOCK,
                    what,
                    format!("({c})"),
                    t.shape().clone(),
                ));
            }
        }
        let scale = weight.mul(&(running_var + cfg.eps)?.sqrt()?.recip()?)?;
        let shift = bias.sub(&running_mean.mul(&scale)?)?;
        Ok(Self { scale, shift })
    }

    /// The frozen copy of a trained [`BatchNorm`] (its running statistics; weight 1 and bias 0
    /// when it has no affine parameters). Errors when it tracks no running statistics.
    pub fn from_batch_norm(bn: &BatchNorm) -> Result<Self> {
        let (Some(mean), Some(var)) = (bn.running_mean(), bn.running_var()) else {
            return Err(Error::config(
                BLOCK,
                "the BatchNorm has no running statistics (track_running_stats is false)",
            ));
        };
        let ones = mean.ones_like()?;
        let zeros = mean.zeros_like()?;
        let cfg = FrozenBatchNorm2dConfig {
            eps: bn.config().eps,
        };
        Self::new(
            bn.weight().unwrap_or(&ones),
            bn.bias().unwrap_or(&zeros),
            mean,
            var,
            cfg,
        )
    }

    /// Per-channel scale $s = \gamma / \sqrt{\sigma^2 + \epsilon}$, `(C)`.
    pub fn scale(&self) -> &Tensor {
        &self.scale
    }

    /// Per-channel shift $t = \beta - \mu s$, `(C)`.
    pub fn shift(&self) -> &Tensor {
        &self.shift
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.scale.elem_count()
    }

    /// Like [`Module::forward`], returning this crate's error (naming `FrozenBatchNorm2d` when
    /// the input is not `(B, C, H, W)`).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.channels();
        if x.rank() != 4 || x.dim(1)? != c {
            return Err(Error::shape(
                BLOCK,
                "input",
                format!("(B, {c}, H, W)"),
                x.shape().clone(),
            ));
        }
        let s = self.scale.reshape((1, c, 1, 1))?;
        let t = self.shift.reshape((1, c, 1, 1))?;
        Ok(x.broadcast_mul(&s)?.broadcast_add(&t)?)
    }
}

impl Module for FrozenBatchNorm2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.apply(xs)?)
    }
}

/// A [`FrozenBatchNorm2d`] of `num_features` channels from `vb` under torchvision's names
/// (`weight`, `bias`, `running_mean`, `running_var`; a `VarMap` creates them at 1, 0, 0, 1).
/// Errors on 0 channels or a bad `eps`.
pub fn frozen_batch_norm2d(
    num_features: usize,
    cfg: FrozenBatchNorm2dConfig,
    vb: VarBuilder,
) -> Result<FrozenBatchNorm2d> {
    if num_features == 0 {
        return Err(Error::config(BLOCK, "num_features must be > 0, got 0"));
    }
    let one = candle_nn::Init::Const(1.0);
    let zero = candle_nn::Init::Const(0.0);
    let weight = vb.get_with_hints(num_features, "weight", one)?;
    let bias = vb.get_with_hints(num_features, "bias", zero)?;
    let mean = vb.get_with_hints(num_features, "running_mean", zero)?;
    let var = vb.get_with_hints(num_features, "running_var", one)?;
    FrozenBatchNorm2d::new(&weight, &bias, &mean, &var, cfg)
}

/// Folds `bn` into the conv (weight `(C, …)`, optional bias `(C)`) that precedes it: returns
/// the weight and bias of one conv computing `bn(conv(x))`. Errors (naming `fold_batch_norm`)
/// when the conv's output channels or bias shape differ from the norm's channels.
pub fn fold_batch_norm(
    weight: &Tensor,
    bias: Option<&Tensor>,
    bn: &FrozenBatchNorm2d,
) -> Result<(Tensor, Tensor)> {
    const FOLD: &str = "fold_batch_norm";
    let c = bn.channels();
    if weight.rank() < 2 || weight.dim(0)? != c {
        return Err(Error::shape(
            FOLD,
            "weight",
            format!("({c}, …)"),
            weight.shape().clone(),
        ));
    }
    let mut per_channel = vec![1; weight.rank()];
    per_channel[0] = c;
    let scale = bn.scale().to_dtype(weight.dtype())?;
    let shift = bn.shift().to_dtype(weight.dtype())?;
    let w = weight.broadcast_mul(&scale.reshape(per_channel)?)?;
    let b = match bias {
        Some(b) if b.dims() != [c] => {
            return Err(Error::shape(
                FOLD,
                "bias",
                format!("({c})"),
                b.shape().clone(),
            ))
        }
        Some(b) => b.mul(&scale)?.add(&shift)?,
        None => shift,
    };
    Ok((w, b))
}
