//! Stochastic depth ([`DropPath`], Huang et al. 2016): during training, drop a residual branch
//! for a whole sample at a time.
//!
//! # Shapes
//! Any input `(B, …)` of rank ≥ 1 (f32, f16 or bf16) → the same shape. One Bernoulli draw per
//! sample: the mask has shape `(B, 1, …, 1)` and is broadcast over the rest of the sample.
//!
//! # Tip
//! In a deep residual network $y = x + f(x)$, dropping $f$ for a sample leaves the identity path,
//! so the network trained is, per sample, a shallower one: stochastic depth trains an implicit
//! ensemble of depths, shortens the effective depth during training and regularizes strongly,
//! while at inference every block runs. Apply it to the *branch* output, before the addition:
//! $y = x + \mathrm{DropPath}(f(x))$. Survivors are divided by the keep probability
//! $q = 1 - p$ so that $\mathbb{E}(\mathrm{DropPath}(z)) = z$ and eval (identity) sees the same
//! scale as training. Use rates that grow linearly with depth, $p_l = p_{\max} \cdot l / (L - 1)$
//! for block $l$ of $L$ (timm's `drop_path_rate`, e.g. $p_{\max} = 0.1$ for a ResNet-50 or
//! ConvNeXt-T, up to 0.4–0.5 for the largest models): early blocks compute features everything
//! else depends on, late blocks are more redundant. The trade-off is slower convergence per epoch;
//! shallow or small networks often underfit with it.
//!
//! The name: timm calls this *DropPath*; the older "DropConnect" name some EfficientNet code uses
//! for it is misleading, since DropConnect (Wan et al. 2013) drops individual *weights*.
//!
//! # Example
//! ```
//! use candle_core::{Device, ModuleT, Tensor};
//! use candle_tricks::blocks::DropPath;
//! # fn main() -> candle_tricks::Result<()> {
//! let dp = DropPath::new(0.25)?;
//! let x = Tensor::randn(0f32, 1., (8, 16, 4, 4), &Device::Cpu)?;
//! // Eval: the identity, bit for bit.
//! let y = dp.forward_t(&x, false)?;
//! assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, x.flatten_all()?.to_vec1::<f32>()?);
//! // Train: each sample is either zero or scaled by 1 / (1 - p) as a whole.
//! let y = dp.forward_t(&x, true)?;
//! let ratio = (y / &x)?.flatten_from(1)?.to_vec2::<f32>()?;
//! for row in ratio {
//!     assert!(row.iter().all(|&r| r == 0.0) || row.iter().all(|&r| (r - 4.0 / 3.0).abs() < 1e-5));
//! }
//! // p must lie in [0, 1): an error naming the block.
//! assert!(DropPath::new(1.0).unwrap_err().to_string().contains("DropPath"));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Huang et al., *Deep Networks with Stochastic Depth*, 2016, <https://arxiv.org/abs/1603.09382>
//! - Larsson et al., *FractalNet: Ultra-Deep Neural Networks without Residuals*, 2016 (drop-path),
//!   <https://arxiv.org/abs/1605.07648>
//! - timm `timm/layers/drop.py` (`drop_path`, `DropPath`),
//!   <https://github.com/huggingface/pytorch-image-models>

use crate::{check, Error, Result};
use candle_core::{ModuleT, Tensor};

const DROP_PATH: &str = "DropPath";

/// Checks that a drop probability lies in `[0, 1)` (NaN rejected).
pub(crate) fn check_p(block: &'static str, p: f32) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::config(
            block,
            format!("drop probability p must be in [0, 1), got {p}"),
        ));
    }
    Ok(())
}

/// `x · mask`, with `mask` of `mask_shape` (broadcastable to `x`) holding 0 with probability `p`
/// and `scale` otherwise. `x` must have a float dtype.
/// Errors (naming `block`) when the product of `x`'s or the mask's dimensions overflows (a
/// broadcast view can claim such a shape) instead of drawing a mask of a wrapped-around size.
pub(crate) fn apply_mask(
    block: &'static str,
    x: &Tensor,
    mask_shape: Vec<usize>,
    p: f32,
    scale: f64,
) -> Result<Tensor> {
    check::numel(block, "input", x.dims(), x.dtype())?;
    check::numel(block, "mask", &mask_shape, candle_core::DType::F32)?;
    let keep = Tensor::rand(0f32, 1f32, mask_shape, x.device())?.ge(p)?;
    let mask = keep.to_dtype(x.dtype())?.affine(scale, 0.0)?;
    Ok(x.broadcast_mul(&mask)?)
}

/// Settings of a [`DropPath`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropPathConfig {
    /// Probability of dropping a sample's branch, in `[0, 1)`. Default 0 (identity).
    pub p: f32,
    /// Divide survivors by the keep probability $1 - p$ (timm's `scale_by_keep`). Default `true`.
    pub scale_by_keep: bool,
}

impl Default for DropPathConfig {
    fn default() -> Self {
        Self {
            p: 0.0,
            scale_by_keep: true,
        }
    }
}

impl DropPathConfig {
    /// Sets the drop probability.
    pub fn with_p(mut self, p: f32) -> Self {
        self.p = p;
        self
    }

    /// Sets whether survivors are scaled by $1 / (1 - p)$.
    pub fn with_scale_by_keep(mut self, scale_by_keep: bool) -> Self {
        self.scale_by_keep = scale_by_keep;
        self
    }

    /// Checks that `p` lies in `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        check_p(DROP_PATH, self.p)
    }
}

/// Stochastic depth: in training, zeroes each sample with probability `p` (one draw per sample)
/// and scales the survivors by $1 / (1 - p)$; the identity in eval or when `p = 0`. No weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropPath {
    cfg: DropPathConfig,
}

impl DropPath {
    /// Drop path with probability `p` and survivors scaled by keep. Errors (naming `DropPath`)
    /// unless `p` lies in `[0, 1)`.
    pub fn new(p: f32) -> Result<Self> {
        Self::from_config(DropPathConfig::default().with_p(p))
    }

    /// Validates `cfg` and builds the layer; errors as [`DropPath::new`].
    pub fn from_config(cfg: DropPathConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { cfg })
    }

    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.cfg.p
    }

    /// The configuration.
    pub fn config(&self) -> &DropPathConfig {
        &self.cfg
    }

    /// Like [`ModuleT::forward_t`], returning this crate's error.
    pub fn apply(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check::float_dtype(DROP_PATH, "input", x)?;
        check::numel(DROP_PATH, "input", x.dims(), x.dtype())?;
        if x.rank() == 0 {
            return Err(Error::shape(
                DROP_PATH,
                "input",
                "(B, …) of rank >= 1",
                x.shape().clone(),
            ));
        }
        if !train || self.cfg.p == 0.0 {
            return Ok(x.clone());
        }
        let mut mask_shape = vec![1; x.rank()];
        mask_shape[0] = x.dims()[0];
        let scale = if self.cfg.scale_by_keep {
            1.0 / (1.0 - self.cfg.p as f64)
        } else {
            1.0
        };
        apply_mask(DROP_PATH, x, mask_shape, self.cfg.p, scale)
    }
}

impl ModuleT for DropPath {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(self.apply(x, train)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        for p in [0.0, 0.5, 0.999] {
            assert!(DropPath::new(p).is_ok(), "p = {p}");
        }
        for p in [1.0, 1.5, -0.1, f32::NAN, f32::INFINITY] {
            let e = DropPath::new(p).unwrap_err().to_string();
            assert!(e.contains("DropPath") && e.contains("[0, 1)"), "{e}");
        }
    }
}
