//! Layer normalization over the last dimension (PyTorch's `nn.LayerNorm(D)`), on our fused
//! kernel [`crate::ops::layer_norm()`], differentiable wrt its input, weight and bias.
//!
//! # Shapes
//! - input `(…, D)`, output the same shape.
//! - `weight` `(D)` (init 1) when `affine`, `bias` `(D)` (init 0) when `affine` and `bias`:
//!   PyTorch's state-dict names, so `nn.LayerNorm` checkpoints load unchanged.
//!
//! # Tip
//! $y = (x - \mu)/\sqrt{\sigma^2 + \epsilon} \cdot \gamma + \beta$ per row: independent of the
//! batch size, the same in training and inference. Use it (or [`crate::norm::RmsNorm`]) for
//! sequences, before each transformer sub-layer (pre-LN). Unlike candle-nn's fused op, the
//! gradient reaches the layers before the norm.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor, Var};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::norm::{layer_norm, LayerNormConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let ln = layer_norm(16, LayerNormConfig::default(), vb)?;
//! assert_eq!(varmap.all_vars().len(), 2); // weight and bias
//! // The gradient flows through the norm to its input.
//! let x = Var::from_tensor(&Tensor::randn(0f32, 1., (3, 16), &Device::Cpu)?)?;
//! let c = Tensor::randn(0f32, 1., (3, 16), &Device::Cpu)?;
//! let grads = (ln.forward(&x)? * c)?.sum_all()?.backward()?;
//! let gx = grads.get(&x).expect("gradient wrt x");
//! assert!(gx.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Ba, Kiros, Hinton, *Layer Normalization*, 2016, <https://arxiv.org/abs/1607.06450>

use crate::norm::params::{check_pair, load_pair, AFFINE};
use crate::{check, Error, Result};
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

const BLOCK: &str = "LayerNorm";

/// Configuration of [`LayerNorm`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerNormConfig {
    /// Added to the variance, finite and > 0. Default `1e-5`.
    pub eps: f64,
    /// Learn a per-feature scale `weight` (PyTorch's `elementwise_affine`). Default `true`.
    pub affine: bool,
    /// Learn a per-feature shift `bias` too (only with `affine`). Default `true`.
    pub bias: bool,
}

impl Default for LayerNormConfig {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            affine: true,
            bias: true,
        }
    }
}

impl LayerNormConfig {
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

    /// Sets `bias`.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Checks that `eps` is finite and > 0.
    pub fn validate(&self) -> Result<()> {
        check::eps(BLOCK, "eps", self.eps)
    }

    /// Which of `weight` and `bias` the layer has.
    fn affine_wants(&self) -> [bool; 2] {
        [self.affine, self.affine && self.bias]
    }
}

/// Layer normalization over the last dimension (`nn.LayerNorm(D)`).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    dim: usize,
    cfg: LayerNormConfig,
}

impl LayerNorm {
    /// Builds the layer for `dim` features from an optional `(dim)` weight and bias, which must be
    /// present exactly when `cfg.affine` (weight) and `cfg.affine && cfg.bias` (bias) say so.
    ///
    /// Errors (naming `LayerNorm`) on `dim` 0, a missing or unexpected tensor, a wrong shape, an
    /// unsupported dtype, mixed dtypes or devices, or an invalid config.
    pub fn new(
        dim: usize,
        weight: Option<Tensor>,
        bias: Option<Tensor>,
        cfg: LayerNormConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        check::positive(BLOCK, "dim", dim)?;
        let tensors = [weight.as_ref(), bias.as_ref()];
        check_pair(BLOCK, dim, tensors, cfg.affine_wants(), AFFINE, false)?;
        Ok(Self {
            weight,
            bias,
            dim,
            cfg,
        })
    }

    /// The `(D)` weight, if `affine`.
    pub fn weight(&self) -> Option<&Tensor> {
        self.weight.as_ref()
    }

    /// The `(D)` bias, if `affine` and `bias`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The number of features `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The configuration.
    pub fn config(&self) -> LayerNormConfig {
        self.cfg
    }
}

impl Module for LayerNorm {
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
        Ok(crate::ops::layer_norm(
            xs,
            self.weight.as_ref(),
            self.bias.as_ref(),
            self.cfg.eps,
        )?)
    }
}

/// A [`LayerNorm`] over `dim` features whose `weight` (init 1) and `bias` (init 0) come from
/// `vb` under PyTorch's names.
pub fn layer_norm(dim: usize, cfg: LayerNormConfig, vb: VarBuilder) -> Result<LayerNorm> {
    check::loading(BLOCK, vb, |vb| {
        cfg.validate()?;
        check::positive(BLOCK, "dim", dim)?;
        let [weight, bias] = load_pair(BLOCK, dim, &vb, cfg.affine_wants(), AFFINE)?;
        LayerNorm::new(dim, weight, bias, cfg)
    })
}
