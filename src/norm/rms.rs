//! RMS normalization over the last dimension (PyTorch's `nn.RMSNorm(D)`), on our fused kernel
//! [`crate::ops::rms_norm()`], differentiable wrt its input and weight.
//!
//! # Shapes
//! - input `(…, D)`, output the same shape.
//! - `weight` `(D)` (init 1) when `affine`: PyTorch's state-dict name.
//!
//! # Tip
//! $y = x / \sqrt{\overline{x^2} + \epsilon} \cdot \gamma$ per row: a layer norm without the
//! mean subtraction and without a bias, so one reduction instead of two and half the
//! parameters, with the same training stability in practice (LLaMA, Mamba). PyTorch's default
//! `eps=None` means the dtype's machine epsilon ($1.19 \cdot 10^{-7}$ for f32); this crate
//! defaults to `1e-6` (LLaMA's and Mamba's value) — set `eps` to match a checkpoint.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor, D};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::norm::{rms_norm, RmsNormConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let norm = rms_norm(32, RmsNormConfig::default(), vb)?;
//! assert_eq!(varmap.all_vars().len(), 1); // weight only, no bias
//! let x = Tensor::randn(2f32, 5., (6, 32), &Device::Cpu)?;
//! let y = norm.forward(&x)?;
//! // Each row has root mean square 1 (weight 1 at init); the mean is not removed.
//! let ms = y.sqr()?.mean(D::Minus1)?.to_vec1::<f32>()?;
//! assert!(ms.iter().all(|v| (v - 1.0).abs() < 1e-3));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Zhang, Sennrich, *Root Mean Square Layer Normalization*, 2019,
//!   <https://arxiv.org/abs/1910.07467>

use crate::norm::params::{check_pair, load_pair, AFFINE};
use crate::{check, Error, Result};
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

const BLOCK: &str = "RmsNorm";

/// Configuration of [`RmsNorm`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsNormConfig {
    /// Added to the mean square, finite and > 0. Default `1e-6` (PyTorch's `eps=None` means the
    /// dtype's machine epsilon instead).
    pub eps: f64,
    /// Learn a per-feature scale `weight` (PyTorch's `elementwise_affine`). Default `true`.
    pub affine: bool,
}

impl Default for RmsNormConfig {
    fn default() -> Self {
        Self {
            eps: 1e-6,
            affine: true,
        }
    }
}

impl RmsNormConfig {
    /// Sets `eps`.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Sets `affine`.
    pub fn with_affine(mut self, affine: bool) -> Self {
        self.affine = affine;
        self
    }

    /// Checks that `eps` is finite and > 0.
    pub fn validate(&self) -> Result<()> {
        check::eps(BLOCK, "eps", self.eps)
    }
}

/// RMS normalization over the last dimension (`nn.RMSNorm(D)`).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Option<Tensor>,
    dim: usize,
    cfg: RmsNormConfig,
}

impl RmsNorm {
    /// Builds the layer for `dim` features from an optional `(dim)` weight, present exactly when
    /// `cfg.affine`.
    ///
    /// Errors (naming `RmsNorm`) on `dim` 0, a missing or unexpected weight, a wrong shape, an
    /// unsupported dtype or an invalid config.
    pub fn new(dim: usize, weight: Option<Tensor>, cfg: RmsNormConfig) -> Result<Self> {
        cfg.validate()?;
        check::positive(BLOCK, "dim", dim)?;
        check_pair(
            BLOCK,
            dim,
            [weight.as_ref(), None],
            [cfg.affine, false],
            AFFINE,
            false,
        )?;
        Ok(Self { weight, dim, cfg })
    }

    /// The `(D)` weight, if `affine`.
    pub fn weight(&self) -> Option<&Tensor> {
        self.weight.as_ref()
    }

    /// The number of features `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The configuration.
    pub fn config(&self) -> RmsNormConfig {
        self.cfg
    }
}

impl Module for RmsNorm {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let d = xs.dims().last().copied().unwrap_or(0);
        if d != self.dim {
            return Err(Error::shape(
                BLOCK,
                "input",
                format!("(…, {})", self.dim),
                xs.shape().clone(),
            )
            .into());
        }
        Ok(crate::ops::rms_norm(
            xs,
            self.weight.as_ref(),
            self.cfg.eps,
        )?)
    }
}

/// An [`RmsNorm`] over `dim` features whose `weight` (init 1) comes from `vb` under PyTorch's
/// name.
pub fn rms_norm(dim: usize, cfg: RmsNormConfig, vb: VarBuilder) -> Result<RmsNorm> {
    check::loading(BLOCK, vb, |vb| {
        cfg.validate()?;
        check::positive(BLOCK, "dim", dim)?;
        let [weight, _] = load_pair(BLOCK, dim, &vb, [cfg.affine, false], AFFINE)?;
        RmsNorm::new(dim, weight, cfg)
    })
}
