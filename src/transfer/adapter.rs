//! Bottleneck adapter (Houlsby et al. 2019): a small residual MLP inserted after a frozen
//! sub-layer, $h + W_{up} \thinspace f(W_{down} h + b_{down}) + b_{up}$.
//!
//! # Shapes
//! - input `(…, dim)`, output the same shape.
//! - `down.weight` `(bottleneck, dim)`, `down.bias` `(bottleneck)`, `up.weight`
//!   `(dim, bottleneck)`, `up.bias` `(dim)` (PyTorch `nn.Linear` layouts).
//!
//! # Tip
//! To fine-tune a frozen transformer on many tasks, insert one adapter after each attention and
//! MLP sub-layer and train only the adapters (and the layer norms and head):
//! $2 \cdot dim \cdot m + dim + m$ parameters per adapter for a bottleneck of width $m$, a few
//! percent of the model, within a fraction of a point of full fine-tuning on GLUE in the paper.
//! All weights start near zero (normal with a small `init_std`, biases zero), so the adapter
//! starts as almost the identity and training starts at the pre-trained model. Trade-off against LoRA
//! ([`crate::transfer::LoraLinear`]): an adapter adds a sequential layer (latency at inference)
//! and cannot be merged into the weights, but it applies a non-linearity, so it can express
//! updates a low-rank linear change cannot.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::transfer::{bottleneck_adapter, BottleneckAdapterConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! let adapter = bottleneck_adapter(768, 64, BottleneckAdapterConfig::default(), vb)?;
//! let n: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
//! assert_eq!(n, 2 * 768 * 64 + 768 + 64); // 1.3 % of one 768 → 3072 → 768 MLP block
//! // Near the identity at initialisation.
//! let x = Tensor::randn(0f32, 1., (4, 768), &dev)?;
//! let d = (adapter.forward(&x)? - &x)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(d < 0.1);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Houlsby et al., *Parameter-Efficient Transfer Learning for NLP*, 2019,
//!   <https://arxiv.org/abs/1902.00751>

use crate::ops::linear;
use crate::{check, Error, Result};
use candle_core::{Module, Tensor, D};
use candle_nn::{Activation, Init, VarBuilder};

const BLOCK: &str = "BottleneckAdapter";

/// Configuration of [`BottleneckAdapter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BottleneckAdapterConfig {
    /// The non-linearity between the projections. Default `Activation::Gelu` (erf form).
    pub activation: Activation,
    /// Standard deviation of the normal init of both projection weights, finite and ≥ 0 (0
    /// makes the adapter exactly the identity). Default `1e-3`.
    pub init_std: f64,
}

impl Default for BottleneckAdapterConfig {
    fn default() -> Self {
        Self {
            activation: Activation::Gelu,
            init_std: 1e-3,
        }
    }
}

impl BottleneckAdapterConfig {
    /// Sets the activation.
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Sets `init_std`.
    pub fn with_init_std(mut self, init_std: f64) -> Self {
        self.init_std = init_std;
        self
    }

    /// Checks that `init_std` is finite and ≥ 0.
    pub fn validate(&self) -> Result<()> {
        if !(self.init_std.is_finite() && self.init_std >= 0.0) {
            let msg = format!("init_std must be finite and >= 0, got {}", self.init_std);
            return Err(Error::config(BLOCK, msg));
        }
        Ok(())
    }
}

/// A residual bottleneck MLP, $h + \mathrm{up}(f(\mathrm{down}(h)))$; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct BottleneckAdapter {
    down: (Tensor, Tensor),
    up: (Tensor, Tensor),
    cfg: BottleneckAdapterConfig,
}

impl BottleneckAdapter {
    /// Builds the adapter from `down` = (weight `(m, dim)`, bias `(m)`) and `up` = (weight
    /// `(dim, m)`, bias `(dim)`).
    ///
    /// Errors (naming `BottleneckAdapter`) on an invalid config, weights that are not 2-D or do
    /// not fit each other, wrong bias shapes, or mixed dtypes or devices.
    pub fn new(
        down: (Tensor, Tensor),
        up: (Tensor, Tensor),
        cfg: BottleneckAdapterConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        check::rank(BLOCK, "down.weight", &down.0, 2, "(m, dim)")?;
        let (m, dim) = down.0.dims2()?;
        check::positive(BLOCK, "dim", dim)?;
        check::positive(BLOCK, "bottleneck", m)?;
        if up.0.dims() != [dim, m] {
            let want = format!("({dim}, {m})");
            return Err(Error::shape(BLOCK, "up.weight", want, up.0.shape().clone()));
        }
        check::same_dtype_device(BLOCK, "up.weight", &down.0, &up.0)?;
        check::bias(BLOCK, &down.0, Some(&down.1), m)?;
        check::bias(BLOCK, &down.0, Some(&up.1), dim)?;
        Ok(Self { down, up, cfg })
    }

    /// The model width `dim`.
    pub fn dim(&self) -> usize {
        self.up.0.dims()[0]
    }

    /// The bottleneck width `m`.
    pub fn bottleneck(&self) -> usize {
        self.down.0.dims()[0]
    }

    /// The configuration.
    pub fn config(&self) -> BottleneckAdapterConfig {
        self.cfg
    }
}

impl Module for BottleneckAdapter {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        if xs.rank() == 0 || xs.dim(D::Minus1)? != self.dim() {
            let want = format!("(…, {})", self.dim());
            return Err(Error::shape(BLOCK, "input", want, xs.shape().clone()).into());
        }
        let h = linear(xs, &self.down.0, Some(&self.down.1))?;
        let h = self.cfg.activation.forward(&h)?;
        xs + linear(&h, &self.up.0, Some(&self.up.1))?
    }
}

/// A [`BottleneckAdapter`] of width `dim` through a bottleneck of `bottleneck` features, its
/// `down.*` and `up.*` tensors from `vb` (weights normal with `init_std`, biases zero).
pub fn bottleneck_adapter(
    dim: usize,
    bottleneck: usize,
    cfg: BottleneckAdapterConfig,
    vb: VarBuilder,
) -> Result<BottleneckAdapter> {
    check::loading(BLOCK, vb, |vb| {
        cfg.validate()?;
        check::positive(BLOCK, "dim", dim)?;
        check::positive(BLOCK, "bottleneck", bottleneck)?;
        let w = Init::Randn {
            mean: 0.0,
            stdev: cfg.init_std,
        };
        let zero = Init::Const(0.0);
        let dw = check::param(BLOCK, &vb, (bottleneck, dim), "down.weight", w)?;
        let db = check::param(BLOCK, &vb, bottleneck, "down.bias", zero)?;
        let uw = check::param(BLOCK, &vb, (dim, bottleneck), "up.weight", w)?;
        let ub = check::param(BLOCK, &vb, dim, "up.bias", zero)?;
        BottleneckAdapter::new((dw, db), (uw, ub), cfg)
    })
}
