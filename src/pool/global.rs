//! Global pooling heads: timm's selectable adaptive pool ([`SelectAdaptivePool2d`]: average,
//! max, their mean or their concatenation) and generalized-mean pooling ([`GeM`]) with a
//! learnable exponent.
//!
//! # Shapes
//! - [`SelectAdaptivePool2d`]: `(B, C, H, W)` → `(B, m·C, Ho, Wo)`, or `(B, m·C·Ho·Wo)` with
//!   `flatten`, where $m$ = [`GlobalPool::feat_mult`] (2 for `CatAvgMax`, else 1).
//! - [`GeM`]: `(B, C, H, W)` → `(B, C, 1, 1)`; parameter `p` `(1)` (cirtorch's name).
//!
//! # Tip
//! **Average or max?** Global average pooling summarises *how much* of a feature an image holds
//! and sends gradient to every position; global max pooling keeps *whether* it fired anywhere,
//! better for small objects in large images but with a gradient at one position per channel.
//! timm's `avgmax` (their mean) and `catavgmax` (both, side by side, doubling the head's
//! input) are cheap hedges that often win a few tenths of a point in fine-tuning.
//!
//! **GeM interpolates between them**: $f_c = \left(\frac{1}{HW}\sum_{h,w} x_{c,h,w}^{p}\right)^{1/p}$
//! is the average at $p = 1$ and tends to the max as $p \to \infty$; with $p$ learned (it starts
//! at 3), the network picks its own trade-off. It is the standard head of image-retrieval
//! networks, where descriptors must respond to distinctive local parts. Inputs are clamped to
//! $\ge \epsilon$ first, so use it after a ReLU-like activation.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::pool::{gem, GeMConfig, GlobalPool, SelectAdaptivePool2d};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let x = Tensor::arange(1f32, 5., &dev)?.reshape((1, 1, 2, 2))?; // 1, 2, 3, 4
//! let cat = SelectAdaptivePool2d::new((1, 1), GlobalPool::CatAvgMax, true)?;
//! assert_eq!(cat.forward(&x)?.to_vec2::<f32>()?, [[2.5, 4.0]]); // [avg, max]
//! // GeM sits between the two: p = 1 is the average, a large p approaches the max.
//! let value = |p: f64| -> candle_tricks::Result<f32> {
//!     let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
//!     let y = gem(GeMConfig::default().with_p(p), vb)?.forward(&x)?;
//!     Ok(y.flatten_all()?.to_vec1::<f32>()?[0])
//! };
//! assert!((value(1.0)? - 2.5).abs() < 1e-5);
//! let near_max = value(30.0)?;
//! assert!(near_max > 3.8 && near_max < 4.0);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Radenović, Tolias, Chum, *Fine-tuning CNN Image Retrieval with No Human Annotation*, 2018
//!   (GeM), <https://arxiv.org/abs/1711.02512>
//! - timm's `SelectAdaptivePool2d` (`timm/layers/adaptive_avgmax_pool.py`).

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::ops::{adaptive_avg_pool2d, adaptive_max_pool2d};
use crate::{check, Error, Result};

/// Which global pool [`SelectAdaptivePool2d`] applies (timm's `pool_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalPool {
    /// Adaptive average pooling (`"avg"`).
    Avg,
    /// Adaptive max pooling (`"max"`).
    Max,
    /// The mean of the two (`"avgmax"`): $\frac{1}{2}(\mathrm{avg} + \mathrm{max})$.
    AvgMax,
    /// Both, concatenated along the channels (`"catavgmax"`): average first.
    CatAvgMax,
}

impl GlobalPool {
    /// How many times the channel count the pool outputs (timm's `feat_mult`).
    pub fn feat_mult(self) -> usize {
        match self {
            Self::CatAvgMax => 2,
            Self::Avg | Self::Max | Self::AvgMax => 1,
        }
    }
}

/// timm's `SelectAdaptivePool2d`: a global (or fixed-grid) pool chosen by [`GlobalPool`],
/// optionally flattened; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct SelectAdaptivePool2d {
    output_size: (usize, usize),
    pool: GlobalPool,
    flatten: bool,
}

impl SelectAdaptivePool2d {
    /// Pools to `output_size` with `pool`, then flattens from dim 1 if `flatten`. Errors
    /// (naming `SelectAdaptivePool2d`) on a zero output size.
    pub fn new(output_size: (usize, usize), pool: GlobalPool, flatten: bool) -> Result<Self> {
        check::positive("SelectAdaptivePool2d", "output height", output_size.0)?;
        check::positive("SelectAdaptivePool2d", "output width", output_size.1)?;
        Ok(Self {
            output_size,
            pool,
            flatten,
        })
    }

    /// The channel multiplier of the output ([`GlobalPool::feat_mult`]).
    pub fn feat_mult(&self) -> usize {
        self.pool.feat_mult()
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let size = self.output_size;
        let y = match self.pool {
            GlobalPool::Avg => adaptive_avg_pool2d(x, size)?,
            GlobalPool::Max => adaptive_max_pool2d(x, size)?,
            GlobalPool::AvgMax => {
                ((adaptive_avg_pool2d(x, size)? + adaptive_max_pool2d(x, size)?)? * 0.5)?
            }
            GlobalPool::CatAvgMax => {
                let (avg, max) = (adaptive_avg_pool2d(x, size)?, adaptive_max_pool2d(x, size)?);
                Tensor::cat(&[avg, max], channel_dim(x))?
            }
        };
        Ok(if self.flatten { y.flatten_from(1)? } else { y })
    }
}

/// The channel dimension of a `(B, C, H, W)` or `(C, H, W)` input.
fn channel_dim(x: &Tensor) -> usize {
    x.rank().saturating_sub(3)
}

impl Module for SelectAdaptivePool2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.apply(xs)?)
    }
}

/// The hyper-parameters of [`GeM`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeMConfig {
    /// The initial exponent $p > 0$ (default 3, as cirtorch).
    pub p: f64,
    /// The clamp $\epsilon > 0$ applied to the input before the power (default 1e-6).
    pub eps: f64,
}

impl Default for GeMConfig {
    fn default() -> Self {
        Self { p: 3.0, eps: 1e-6 }
    }
}

impl GeMConfig {
    /// Sets the initial exponent.
    pub fn with_p(mut self, p: f64) -> Self {
        self.p = p;
        self
    }

    /// Sets $\epsilon$.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Errors (naming `GeM`) unless `p` and `eps` are positive and finite.
    pub fn validate(&self) -> Result<()> {
        if !(self.p.is_finite() && self.p > 0.0) {
            return Err(Error::config(
                "GeM",
                format!("p must be positive and finite, got {}", self.p),
            ));
        }
        check::eps("GeM", "eps", self.eps)
    }
}

/// Generalized-mean pooling with a learnable exponent; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct GeM {
    p: Tensor,
    eps: f64,
}

impl GeM {
    /// From the exponent tensor `p` (shape `(1)`, float) and `eps`. Errors (naming `GeM`) on a
    /// wrong shape or dtype, a value of `p` that is not positive and finite (a checkpoint
    /// without `p` loaded through `VarBuilder::zeros`, say), or a non-positive `eps`.
    pub fn new(p: Tensor, eps: f64) -> Result<Self> {
        if p.dims() != [1] {
            return Err(Error::shape("GeM", "p", "(1)", p.shape().clone()));
        }
        check::float_dtype("GeM", "p", &p)?;
        let value = p.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?[0];
        GeMConfig { p: value, eps }.validate()?;
        Ok(Self { p, eps })
    }

    /// The exponent $p$ (a `(1)` tensor; a var when built from a `VarMap`).
    pub fn p(&self) -> &Tensor {
        &self.p
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        check::rank("GeM", "input", x, 4, "(B, C, H, W)")?;
        check::non_empty("GeM", "input", x)?;
        check::same_dtype_device("GeM", "p", x, &self.p)?;
        // x^p = exp(p · ln x), which carries the gradient to p as well as to x.
        let p = self.p.reshape((1, 1, 1, 1))?;
        let powered = x
            .clamp(self.eps, f64::INFINITY)?
            .log()?
            .broadcast_mul(&p)?
            .exp()?;
        let mean = adaptive_avg_pool2d(&powered, (1, 1))?;
        Ok(mean.log()?.broadcast_div(&p)?.exp()?)
    }
}

impl Module for GeM {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.apply(xs)?)
    }
}

/// A [`GeM`] whose exponent `p` loads from (or is created in) `vb`, initialised to `cfg.p`.
/// Errors (naming `GeM`) on a bad config.
pub fn gem(cfg: GeMConfig, vb: VarBuilder) -> Result<GeM> {
    cfg.validate()?;
    let p = vb.get_with_hints(1, "p", candle_nn::Init::Const(cfg.p))?;
    GeM::new(p, cfg.eps)
}
