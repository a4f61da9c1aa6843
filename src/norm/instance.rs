//! Instance normalization (PyTorch's `nn.InstanceNorm1d/2d/3d(C)`), a group norm with one group
//! per channel on our fused kernel [`crate::ops::group_norm()`], differentiable wrt its input,
//! weight and bias; optional running statistics.
//!
//! # Shapes
//! - input `(B, C, L, *)` (rank ≥ 3: `(B, C, L)`, `(B, C, H, W)`, `(B, C, D, H, W)`), output the
//!   same shape.
//! - `weight` `(C)` (init 1) and `bias` `(C)` (init 0) when `affine`; `running_mean` `(C)`
//!   (init 0) and `running_var` `(C)` (init 1) when `track_running_stats`: PyTorch's state-dict
//!   names.
//!
//! # Tip
//! Each image and channel is normalized over its own positions,
//! $y = (x - \mu_{n,c})/\sqrt{\sigma^2_{n,c} + \epsilon} \cdot \gamma_c + \beta_c$, which removes
//! the image's contrast and brightness per channel: the output does not change when an image's
//! intensities are rescaled and shifted ($x \to a x + b$, $a > 0$). That is what style transfer
//! and image generation want (the style is carried by the statistics, and is then set by the
//! affine part), and what helps with images whose intensity scale varies from one acquisition to
//! the next, as in medical imaging (MRI). The trade-off: the absolute intensity, which may be
//! informative for classification, is discarded. With `track_running_stats`, training uses the
//! instance statistics and keeps running averages of them (the batch mean of each channel's
//! mean and unbiased variance); evaluation then normalizes with those averages, as PyTorch does.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::norm::{instance_norm, InstanceNormConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let inorm = instance_norm(3, InstanceNormConfig::default(), vb)?;
//! // Invariant to a per-image affine change of the intensities (contrast 4, brightness -9).
//! let x = Tensor::randn(0f32, 1., (2, 3, 16, 16), &Device::Cpu)?;
//! let y = inorm.forward_t(&x, true)?;
//! let y2 = inorm.forward_t(&((&x * 4.0)? - 9.0)?, true)?;
//! let diff = (y - y2)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(diff < 1e-4);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Ulyanov, Vedaldi, Lempitsky, *Instance Normalization: The Missing Ingredient for Fast
//!   Stylization*, 2016, <https://arxiv.org/abs/1607.08022>

use crate::norm::group::check_input;
use crate::norm::params::{check_pair, load_pair, AFFINE, RUNNING};
use crate::{check, Error, Result};
use candle_core::{DType, ModuleT, Tensor, Var};
use candle_nn::VarBuilder;

const BLOCK: &str = "InstanceNorm";

/// Configuration of [`InstanceNorm`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceNormConfig {
    /// Added to the variance, finite and > 0. Default `1e-5`.
    pub eps: f64,
    /// Learn a per-channel `weight` and `bias`. Default `false`.
    pub affine: bool,
    /// Keep `running_mean` / `running_var` in training and use them in evaluation. Default
    /// `false`.
    pub track_running_stats: bool,
    /// Weight of the new statistics in the running averages, in `[0, 1]`. Default `0.1`.
    pub momentum: f64,
}

impl Default for InstanceNormConfig {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            affine: false,
            track_running_stats: false,
            momentum: 0.1,
        }
    }
}

impl InstanceNormConfig {
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

    /// Sets `track_running_stats`.
    pub fn with_track_running_stats(mut self, track: bool) -> Self {
        self.track_running_stats = track;
        self
    }

    /// Sets `momentum`.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Checks that `eps` is finite and > 0 and `momentum` in `[0, 1]`.
    pub fn validate(&self) -> Result<()> {
        check::eps(BLOCK, "eps", self.eps)?;
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(Error::config(
                BLOCK,
                format!("momentum must be in [0, 1], got {}", self.momentum),
            ));
        }
        Ok(())
    }
}

/// Instance normalization of `(B, C, L, *)` inputs (`nn.InstanceNorm2d(C)` and its 1-D / 3-D
/// siblings). Implements [`ModuleT`]: `train` matters only with `track_running_stats`.
#[derive(Debug, Clone)]
pub struct InstanceNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    running: Option<(Var, Var)>,
    channels: usize,
    cfg: InstanceNormConfig,
}

impl InstanceNorm {
    /// Builds the layer from an optional `(channels)` weight and bias (present exactly when
    /// `cfg.affine`) and `(running_mean, running_var)` (present exactly when
    /// `cfg.track_running_stats`; updated in place in training when they are [`Var`]s).
    ///
    /// Errors (naming `InstanceNorm`) on `channels` 0, a missing or unexpected tensor, a wrong
    /// shape, an unsupported dtype, mixed dtypes or devices, or an invalid config.
    pub fn new(
        channels: usize,
        weight: Option<Tensor>,
        bias: Option<Tensor>,
        running: Option<(Tensor, Tensor)>,
        cfg: InstanceNormConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        check::positive(BLOCK, "channels", channels)?;
        let (tensors, want) = ([weight.as_ref(), bias.as_ref()], [cfg.affine; 2]);
        check_pair(BLOCK, channels, tensors, want, AFFINE, false)?;
        let stats = running
            .as_ref()
            .map_or([None; 2], |(m, v)| [Some(m), Some(v)]);
        let track = [cfg.track_running_stats; 2];
        check_pair(BLOCK, channels, stats, track, RUNNING, false)?;
        let running = match running {
            Some((m, v)) => Some((Var::from_tensor(&m)?, Var::from_tensor(&v)?)),
            None => None,
        };
        Ok(Self {
            weight,
            bias,
            running,
            channels,
            cfg,
        })
    }

    /// The `(C)` weight, if `affine`.
    pub fn weight(&self) -> Option<&Tensor> {
        self.weight.as_ref()
    }

    /// The `(C)` bias, if `affine`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The `(C)` running mean, if `track_running_stats`.
    pub fn running_mean(&self) -> Option<&Tensor> {
        self.running.as_ref().map(|(m, _)| m.as_tensor())
    }

    /// The `(C)` running (unbiased) variance, if `track_running_stats`.
    pub fn running_var(&self) -> Option<&Tensor> {
        self.running.as_ref().map(|(_, v)| v.as_tensor())
    }

    /// The number of channels `C`.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The configuration.
    pub fn config(&self) -> InstanceNormConfig {
        self.cfg
    }

    /// Folds this batch's instance statistics of `xs` `(B, C, S…)` (S > 1) into the running ones.
    fn update_running(&self, xs: &Tensor, rm: &Var, rv: &Var) -> Result<()> {
        let x = xs.detach().to_dtype(DType::F32)?.flatten_from(2)?;
        let s = x.dim(2)?;
        let mean = x.mean_keepdim(2)?;
        let var = (x.broadcast_sub(&mean)?.sqr()?.sum(2)? / (s - 1) as f64)?;
        let (mean, var) = (mean.squeeze(2)?.mean(0)?, var.mean(0)?);
        let mom = self.cfg.momentum;
        for (r, new) in [(rm, mean), (rv, var)] {
            let old = r.as_tensor().to_dtype(DType::F32)?;
            let upd = ((old * (1.0 - mom))? + (new * mom)?)?;
            r.set(&upd.to_dtype(r.dtype())?)?;
        }
        Ok(())
    }

    fn forward_impl(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        check_input(BLOCK, xs, 3, self.channels, self.weight.as_ref())?;
        let (w, b) = (self.weight.as_ref(), self.bias.as_ref());
        match (&self.running, train) {
            (Some((rm, rv)), false) => {
                // Evaluation with the running statistics: a per-channel affine map.
                let mut shape = vec![self.channels];
                shape.resize(xs.rank() - 1, 1);
                let dt = xs.dtype();
                let m = rm.as_tensor().to_dtype(dt)?.reshape(shape.as_slice())?;
                let v = rv.as_tensor().to_dtype(dt)?.reshape(shape.as_slice())?;
                let y = xs
                    .broadcast_sub(&m)?
                    .broadcast_div(&(v + self.cfg.eps)?.sqrt()?)?;
                let y = match w {
                    Some(w) => y.broadcast_mul(&w.reshape(shape.as_slice())?)?,
                    None => y,
                };
                Ok(match b {
                    Some(b) => y.broadcast_add(&b.reshape(shape.as_slice())?)?,
                    None => y,
                })
            }
            (running, _) => {
                if xs.dims()[2..].iter().product::<usize>() < 2 {
                    return Err(Error::shape(
                        BLOCK,
                        "input",
                        "more than one spatial value per channel",
                        xs.shape().clone(),
                    ));
                }
                if let Some((rm, rv)) = running {
                    self.update_running(xs, rm, rv)?;
                }
                let y = crate::ops::group_norm(xs, self.channels, w, b, self.cfg.eps)?;
                Ok(y)
            }
        }
    }
}

impl ModuleT for InstanceNorm {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(self.forward_impl(xs, train)?)
    }
}

/// An [`InstanceNorm`] over `channels` channels whose `weight` (init 1), `bias` (init 0),
/// `running_mean` (init 0) and `running_var` (init 1) come from `vb` under PyTorch's names, as
/// the config asks.
pub fn instance_norm(
    channels: usize,
    cfg: InstanceNormConfig,
    vb: VarBuilder,
) -> Result<InstanceNorm> {
    check::loading(BLOCK, vb, |vb| {
        cfg.validate()?;
        check::positive(BLOCK, "channels", channels)?;
        let [weight, bias] = load_pair(BLOCK, channels, &vb, [cfg.affine; 2], AFFINE)?;
        let track = [cfg.track_running_stats; 2];
        let running = match load_pair(BLOCK, channels, &vb, track, RUNNING)? {
            [Some(m), Some(v)] => Some((m, v)),
            _ => None,
        };
        InstanceNorm::new(channels, weight, bias, running, cfg)
    })
}
