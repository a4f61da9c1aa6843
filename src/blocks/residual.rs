//! Residual connections: [`Residual`] ($x + f(x)$), [`PreNorm`] ($x + f(\mathrm{norm}(x))$) and
//! [`LayerScale`] (a learnable per-channel gain on a residual branch).
//!
//! # Shapes
//! - [`Residual`], [`PreNorm`]: any input; the branch must return the input's shape, otherwise
//!   the forward returns an error naming the block and both shapes (no silent broadcasting).
//! - [`LayerScale`] over `dim` channels: input `(…, dim)` by default (token features, as in
//!   ViT/CaiT), or `(B, dim, …)` with [`LayerScaleConfig::channels_first`] (conv maps, as in
//!   ConvNeXt). Weight: `gamma` `(dim)` (timm's name).
//!
//! # Tip
//! - **Give gradients an identity path.** Stacking plain layers makes very deep networks *harder*
//!   to optimize (training error goes up with depth). Writing each block as $y = x + f(x)$ lets it
//!   learn only a correction to the identity, and in the backward pass
//!   $\partial y / \partial x = I + \partial f / \partial x$: the gradient reaches early layers
//!   through the sum even when the branch's own Jacobian is tiny, so hundreds of layers train.
//!   Zero-initialising the last layer of each branch (or its norm's gain) starts the whole
//!   network as the identity.
//! - **Normalize the branch input, not the sum (pre-norm).** $x + f(\mathrm{norm}(x))$ keeps
//!   the identity path free of normalization, so activations and gradients pass unchanged from
//!   the first block to the last; transformers train stably without learning-rate warm-up
//!   tricks this way. Post-norm, $\mathrm{norm}(x + f(x))$, can reach slightly better accuracy
//!   when it trains but is fragile at depth. A pre-norm stack needs one final norm after the last
//!   block.
//! - **Scale the branch by a small learnable per-channel gain (LayerScale).** With
//!   $y = x + \operatorname{diag}(\gamma)\thinspace f(x)$ and $\gamma$ initialised to
//!   $10^{-5}$–$10^{-1}$ (smaller for deeper models; timm uses $10^{-5}$ for ViTs, ConvNeXt
//!   $10^{-6}$), each block starts close to the identity and the optimizer grows the useful
//!   channels, which lets very deep ViTs (CaiT) converge. Cost: $C$ parameters per block.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor, Var};
//! use candle_nn::{Linear, VarBuilder, VarMap};
//! use candle_tricks::blocks::{layer_scale, LayerScaleConfig, Residual};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! // A branch whose weights are all zero passes no gradient itself ...
//! let branch = Linear::new(Tensor::zeros((8, 8), DType::F32, &dev)?, None);
//! let block = Residual::new(branch);
//! let x = Var::from_tensor(&Tensor::randn(0f32, 1., (4, 8), &dev)?)?;
//! let grads = block.forward(x.as_tensor())?.sum_all()?.backward()?;
//! // ... but the identity path does: d(sum y)/dx is exactly 1 everywhere.
//! let gx = grads.get(x.as_tensor()).expect("gradient wrt x");
//! assert!(gx.flatten_all()?.to_vec1::<f32>()?.iter().all(|&g| g == 1.0));
//!
//! // LayerScale starts a residual branch near zero: x + gamma * f(x) is ~ x at init.
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! let ls = layer_scale(8, LayerScaleConfig::default(), vb.pp("ls1"))?;
//! let f = |t: &Tensor| t.affine(3.0, 1.0);
//! let y = Residual::new(move |t: &Tensor| ls.forward(&f(t)?)).forward(x.as_tensor())?;
//! let gap = (y - x.as_tensor())?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(gap < 1e-3);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - He et al., *Deep Residual Learning for Image Recognition*, 2015,
//!   <https://arxiv.org/abs/1512.03385>
//! - He et al., *Identity Mappings in Deep Residual Networks*, 2016 (pre-activation),
//!   <https://arxiv.org/abs/1603.05027>
//! - Xiong et al., *On Layer Normalization in the Transformer Architecture*, 2020 (pre-LN),
//!   <https://arxiv.org/abs/2002.04745>
//! - Touvron et al., *Going deeper with Image Transformers*, 2021 (CaiT, LayerScale),
//!   <https://arxiv.org/abs/2103.17239>

use crate::{check, Error, Result};
use candle_core::{Module, Tensor};
use candle_nn::{Init, VarBuilder};

const RESIDUAL: &str = "Residual";
const PRE_NORM: &str = "PreNorm";
const LAYER_SCALE: &str = "LayerScale";

/// `x + fx` after checking that the branch output `fx` matches `x` in shape, dtype and device.
fn add_checked(block: &'static str, x: &Tensor, fx: &Tensor) -> Result<Tensor> {
    if fx.dims() != x.dims() {
        return Err(Error::shape(
            block,
            "branch output",
            format!("the input's shape {:?}", x.dims()),
            fx.shape().clone(),
        ));
    }
    check::same_dtype_device(block, "branch output", x, fx)?;
    Ok((x + fx)?)
}

// ---------------------------------------------------------------------------------------------
// Residual
// ---------------------------------------------------------------------------------------------

/// A residual connection around `branch`: $y = x + f(x)$. The branch must preserve the shape.
///
/// For a branch that behaves differently in training (dropout, batch norm, [`DropPath`]), apply
/// it with its train flag and add the input yourself, or use a block that takes `train`.
///
/// [`DropPath`]: crate::blocks::DropPath
#[derive(Debug, Clone)]
pub struct Residual<M> {
    branch: M,
}

impl<M> Residual<M> {
    /// Wraps `branch`.
    pub fn new(branch: M) -> Self {
        Self { branch }
    }

    /// The residual branch $f$.
    pub fn branch(&self) -> &M {
        &self.branch
    }

    /// Unwraps the branch.
    pub fn into_branch(self) -> M {
        self.branch
    }
}

impl<M: Module> Residual<M> {
    /// Like [`Module::forward`], returning this crate's error: $x + f(x)$, or an error naming
    /// `Residual` when $f(x)$ does not have the input's shape, dtype or device.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let fx = self.branch.forward(x)?;
        add_checked(RESIDUAL, x, &fx)
    }
}

impl<M: Module> Module for Residual<M> {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.apply(x)?)
    }
}

// ---------------------------------------------------------------------------------------------
// PreNorm
// ---------------------------------------------------------------------------------------------

/// A pre-norm residual block: $y = x + f(\mathrm{norm}(x))$, for any normalization module `N`
/// (LayerNorm, RMSNorm, GroupNorm, …) and branch `M`.
#[derive(Debug, Clone)]
pub struct PreNorm<N, M> {
    norm: N,
    branch: M,
}

impl<N, M> PreNorm<N, M> {
    /// Wraps `branch`, fed with `norm(x)`.
    pub fn new(norm: N, branch: M) -> Self {
        Self { norm, branch }
    }

    /// The normalization applied to the branch input.
    pub fn norm(&self) -> &N {
        &self.norm
    }

    /// The residual branch $f$.
    pub fn branch(&self) -> &M {
        &self.branch
    }
}

impl<N: Module, M: Module> PreNorm<N, M> {
    /// Like [`Module::forward`], returning this crate's error: $x + f(\mathrm{norm}(x))$, or an
    /// error naming `PreNorm` when the branch output does not have the input's shape.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let fx = self.branch.forward(&self.norm.forward(x)?)?;
        add_checked(PRE_NORM, x, &fx)
    }
}

impl<N: Module, M: Module> Module for PreNorm<N, M> {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.apply(x)?)
    }
}

// ---------------------------------------------------------------------------------------------
// LayerScale
// ---------------------------------------------------------------------------------------------

/// Settings of a [`LayerScale`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerScaleConfig {
    /// Initial value of every $\gamma_c$ (finite). Default `1e-5` (timm's `init_values` for ViTs).
    pub init_value: f64,
    /// Broadcast over `(B, C, …)` (channels at dim 1, timm's `LayerScale2d`) instead of
    /// `(…, C)` (channels last, timm's `LayerScale`). Default `false`.
    pub channels_first: bool,
}

impl Default for LayerScaleConfig {
    fn default() -> Self {
        Self {
            init_value: 1e-5,
            channels_first: false,
        }
    }
}

impl LayerScaleConfig {
    /// Sets the initial value of $\gamma$.
    pub fn with_init_value(mut self, init_value: f64) -> Self {
        self.init_value = init_value;
        self
    }

    /// Sets whether the channels are at dim 1 (`true`) or last (`false`).
    pub fn with_channels_first(mut self, channels_first: bool) -> Self {
        self.channels_first = channels_first;
        self
    }

    /// Checks that `init_value` is finite.
    pub fn validate(&self) -> Result<()> {
        if !self.init_value.is_finite() {
            return Err(Error::config(
                LAYER_SCALE,
                format!("init_value must be finite, got {}", self.init_value),
            ));
        }
        Ok(())
    }
}

/// A learnable per-channel gain: $y_{\dots c \dots} = \gamma_c \thinspace x_{\dots c \dots}$,
/// applied to a residual branch's output (Touvron et al. 2021).
#[derive(Debug, Clone)]
pub struct LayerScale {
    gamma: Tensor,
    cfg: LayerScaleConfig,
}

impl LayerScale {
    /// From a `gamma` of shape `(dim)` (f32, f16 or bf16). Errors (naming `LayerScale`) on a
    /// wrong rank, an empty `gamma` or an invalid `cfg`.
    pub fn new(gamma: Tensor, cfg: LayerScaleConfig) -> Result<Self> {
        cfg.validate()?;
        check::rank(LAYER_SCALE, "gamma", &gamma, 1, "(dim)")?;
        check::non_empty(LAYER_SCALE, "gamma", &gamma)?;
        check::float_dtype(LAYER_SCALE, "gamma", &gamma)?;
        Ok(Self { gamma, cfg })
    }

    /// The per-channel gain, shape `(dim)`.
    pub fn gamma(&self) -> &Tensor {
        &self.gamma
    }

    /// The number of channels.
    pub fn dim(&self) -> usize {
        self.gamma.dims()[0]
    }

    /// The configuration.
    pub fn config(&self) -> &LayerScaleConfig {
        &self.cfg
    }

    /// Like [`Module::forward`], returning this crate's error (naming `LayerScale` when the
    /// channel axis does not have `dim` entries, or the dtype differs from `gamma`'s).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        check::same_dtype_device(LAYER_SCALE, "input", &self.gamma, x)?;
        let c = self.dim();
        if self.cfg.channels_first {
            if x.rank() < 2 || x.dims()[1] != c {
                return Err(Error::shape(
                    LAYER_SCALE,
                    "input",
                    format!("(B, {c}, …) (channels first)"),
                    x.shape().clone(),
                ));
            }
            let mut shape = vec![1; x.rank() - 1];
            shape[0] = c;
            Ok(x.broadcast_mul(&self.gamma.reshape(shape)?)?)
        } else {
            if x.dims().last() != Some(&c) {
                return Err(Error::shape(
                    LAYER_SCALE,
                    "input",
                    format!("(…, {c}) (channels last)"),
                    x.shape().clone(),
                ));
            }
            Ok(x.broadcast_mul(&self.gamma)?)
        }
    }
}

impl Module for LayerScale {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.apply(x)?)
    }
}

/// A [`LayerScale`] over `dim` channels whose `gamma` is loaded from `vb` (timm's name), or
/// created at `cfg.init_value` when `vb` is backed by a `VarMap`. Errors (naming `LayerScale`)
/// when `dim` is 0 or `cfg` is invalid.
pub fn layer_scale(dim: usize, cfg: LayerScaleConfig, vb: VarBuilder) -> Result<LayerScale> {
    check::loading(LAYER_SCALE, vb, |vb| load_layer_scale(dim, cfg, vb))
}

fn load_layer_scale(dim: usize, cfg: LayerScaleConfig, vb: VarBuilder) -> Result<LayerScale> {
    cfg.validate()?;
    check::positive(LAYER_SCALE, "dim", dim)?;
    let gamma = check::param(LAYER_SCALE, &vb, dim, "gamma", Init::Const(cfg.init_value))?;
    LayerScale::new(gamma, cfg)
}
