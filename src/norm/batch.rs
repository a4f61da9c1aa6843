//! Batch normalization over the channel axis of `(B, C)`, `(B, C, L)`, `(B, C, H, W)` or
//! `(B, C, D, H, W)` inputs (PyTorch's `nn.BatchNorm1d` / `2d` / `3d`), differentiable in
//! training mode through the batch statistics.
//!
//! With batch statistics on CPU (f32 / f16 / bf16, statistics in f32/f64) the forward is one
//! fused multi-threaded kernel (a statistics pass per channel, then one pass that writes
//! $(x - \mu_c) \cdot s_c + \beta_c$), and so is its backward, which returns the gradients
//! wrt the input (through the mean and variance), `weight` and `bias`. Eval mode with running
//! statistics, f64 inputs and other devices use a composition of candle ops
//! ([`BatchNorm::forward_reference`]).
//!
//! # Shapes
//! - input `(B, C, *)` with zero to three spatial axes, output the same shape.
//! - `weight` `(C)` (init 1) and `bias` `(C)` (init 0) when `affine`; `running_mean` `(C)`
//!   (init 0), `running_var` `(C)` (init 1) and the i64 scalar `num_batches_tracked` when
//!   `track_running_stats`: PyTorch's state-dict names and dtypes, so checkpoints load unchanged
//!   both ways (with a `VarMap` all three buffers are registered, so a saved map loads into
//!   PyTorch with `strict=True`; a checkpoint without `num_batches_tracked`, such as candle-nn's,
//!   still loads and starts the count at 0).
//!
//! The buffers are never trained: they are detached in every forward pass, so they get no
//! gradient, and [`crate::optim::ParamGroups::from_varmap`] (and the other constructors from a
//! var map) leave them out by name ([`crate::optim::is_buffer_name`]).
//!
//! # Tip
//! Batch norm normalizes each channel with the mean and variance of the current batch (over
//! the batch and spatial axes), $y = (x - \mu_B)/\sqrt{\sigma_B^2 + \epsilon} \cdot \gamma +
//! \beta$, which keeps the activations of a deep conv net well scaled and lets it train with
//! larger learning rates. In inference it swaps the batch statistics for running averages
//! collected in training ($r \leftarrow (1-m)\thinspace r + m\thinspace s_B$, with the unbiased
//! batch variance), so a model behaves differently in `train` and `eval` mode — forgetting to
//! switch is a classic bug. Fresh running statistics (mean 0, variance 1) make eval mode almost the
//! identity, $x/\sqrt{1+\epsilon}$, as the example shows.
//!
//! Placement: the seed puts it *before* the activation, conv → BN → ReLU, as in ResNet (the
//! conv before it needs no bias: BN's shift replaces it). Small batches make the statistics
//! noisy and hurt accuracy (below ~8 samples per batch): use a per-sample norm such as `GroupNorm`
//! there. Do not share one batch norm between inputs whose statistics differ
//! (different domains, image sizes, or the two branches of a siamese net fed separately): its
//! running averages then describe neither.
//!
//! Fuse the activation in training: [`BatchNorm::forward_act`] applies a ReLU or ReLU6 in the
//! normalisation's writing pass and masks the gradient inside the norm's backward (the mask
//! needs only the output: ReLU6's $y$ lies strictly inside $(0, 6)$ exactly where its input
//! does). One op instead of two saves a pass over the activation each way, one intermediate
//! tensor, and that tensor's gradient accumulation (candle adds every gradient into a fresh zero
//! tensor). `BasicBlock`, `Bottleneck` and `SeparableConv2d` use it; with the changes around
//! it, the ResNet and MobileNetV2 training steps of `benches/train.rs` took 10 % and 29 % less
//! time (see `docs/PERFORMANCE.md`, "CNN steps").
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor, D};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::norm::{batch_norm, BatchNormConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let bn = batch_norm(3, BatchNormConfig::default(), vb)?;
//! let x = Tensor::randn(4f32, 2., (8, 3, 5, 5), &Device::Cpu)?;
//! // Eval on fresh running stats: almost the identity, x / sqrt(1 + eps).
//! let eval = bn.forward_t(&x, false)?;
//! let want = (&x / (1.0f64 + 1e-5).sqrt())?;
//! let diff = (eval - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(diff < 1e-5);
//! // Train: each channel normalized with the batch statistics to mean 0, variance 1.
//! let train = bn.forward_t(&x, true)?;
//! let per_channel = train.transpose(0, 1)?.flatten_from(1)?;
//! let mean = per_channel.mean(D::Minus1)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! let var = per_channel.sqr()?.mean(D::Minus1)?.to_vec1::<f32>()?;
//! assert!(mean < 1e-5);
//! assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-3));
//! // The training step moved the running mean 10% of the way to the batch mean (~4).
//! let rm = bn.running_mean().expect("tracked").to_vec1::<f32>()?;
//! assert!(rm.iter().all(|m| (m - 0.4).abs() < 0.1));
//! assert_eq!(bn.num_batches_tracked()?, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Ioffe, Szegedy, *Batch Normalization: Accelerating Deep Network Training by Reducing
//!   Internal Covariate Shift*, 2015, <https://arxiv.org/abs/1502.03167>

use crate::norm::params::{check_pair, load_pair, AFFINE, RUNNING};
use crate::ops::backend::{backend, Op};
use crate::ops::batch_norm::batch_norm_train;
use crate::{check, Error, Result};
use candle_core::{DType, ModuleT, Tensor, Var};
use candle_nn::{Activation, Init, VarBuilder};

const BLOCK: &str = "BatchNorm";

/// Configuration of [`BatchNorm`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance, finite and > 0. Default `1e-5`.
    pub eps: f64,
    /// Weight of the batch statistics in the running averages, in `[0, 1]`. Default `0.1`.
    pub momentum: f64,
    /// Learn a per-channel `weight` and `bias`. Default `true`.
    pub affine: bool,
    /// Keep running mean / variance for eval mode; without them eval mode uses the batch
    /// statistics too. Default `true`.
    pub track_running_stats: bool,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: 0.1,
            affine: true,
            track_running_stats: true,
        }
    }
}

impl BatchNormConfig {
    /// Sets `eps`.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Sets `momentum`.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
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

    /// Checks that `eps` is finite and > 0 and `momentum` is in `[0, 1]`.
    pub fn validate(&self) -> Result<()> {
        check::eps(BLOCK, "eps", self.eps)?;
        check::unit_interval(BLOCK, "momentum", self.momentum)?;
        Ok(())
    }
}

/// Running statistics, updated in place through `&self` (clones share them). `count` is the
/// i64 scalar `num_batches_tracked`, kept on the device as a tensor so a training step needs no
/// host round trip.
#[derive(Debug, Clone)]
struct Running {
    mean: Var,
    var: Var,
    count: Var,
}

/// Batch normalization over the channel axis (`nn.BatchNorm1d/2d/3d`); a [`ModuleT`]: `train`
/// uses and accumulates batch statistics, eval uses the running ones.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    running: Option<Running>,
    channels: usize,
    cfg: BatchNormConfig,
}

impl BatchNorm {
    /// Builds the layer for `channels` channels from an optional `(weight, bias)` pair (present
    /// exactly when `cfg.affine`) and optional `(running_mean, running_var)` (present exactly
    /// when `cfg.track_running_stats`), all `(channels)`; `num_batches_tracked` starts at 0
    /// (see [`BatchNorm::set_num_batches_tracked`]). The running statistics are copied into
    /// fresh [`Var`]s unless they already are variables, in which case they are shared and
    /// updated in place. They never receive a gradient.
    ///
    /// Errors (naming `BatchNorm`) on `channels` 0, a missing or unexpected tensor, a wrong
    /// shape, an unsupported dtype, mixed dtypes or devices, or an invalid config.
    pub fn new(
        channels: usize,
        affine: Option<(Tensor, Tensor)>,
        running: Option<(Tensor, Tensor)>,
        cfg: BatchNormConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        check::positive(BLOCK, "channels", channels)?;
        let (weight, bias) = match affine {
            Some((w, b)) => (Some(w), Some(b)),
            None => (None, None),
        };
        // f64 is allowed: the forward falls back to the composition for it.
        let (tensors, want) = ([weight.as_ref(), bias.as_ref()], [cfg.affine; 2]);
        check_pair(BLOCK, channels, tensors, want, AFFINE, true)?;
        let stats = running
            .as_ref()
            .map_or([None; 2], |(m, v)| [Some(m), Some(v)]);
        let track = [cfg.track_running_stats; 2];
        check_pair(BLOCK, channels, stats, track, RUNNING, true)?;
        let running = match running {
            Some((m, v)) => {
                let count = Var::zeros((), DType::I64, m.device())?;
                Some(Running {
                    mean: Var::from_tensor(&m.contiguous()?)?,
                    var: Var::from_tensor(&v.contiguous()?)?,
                    count,
                })
            }
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
        self.running.as_ref().map(|r| r.mean.as_tensor())
    }

    /// The `(C)` running (unbiased) variance, if `track_running_stats`.
    pub fn running_var(&self) -> Option<&Tensor> {
        self.running.as_ref().map(|r| r.var.as_tensor())
    }

    /// How many training batches updated the running statistics (0 without them). Reads the
    /// `num_batches_tracked` buffer (a device-to-host copy on a GPU).
    pub fn num_batches_tracked(&self) -> Result<u64> {
        match &self.running {
            None => Ok(0),
            Some(r) => Ok(r.count.as_tensor().to_scalar::<i64>()?.max(0) as u64),
        }
    }

    /// The i64 scalar `num_batches_tracked` buffer, if `track_running_stats`.
    pub fn num_batches_tracked_tensor(&self) -> Option<&Tensor> {
        self.running.as_ref().map(|r| r.count.as_tensor())
    }

    /// Sets the counter returned by [`BatchNorm::num_batches_tracked`] (no-op without running
    /// statistics). Errors when `n` does not fit PyTorch's i64 buffer.
    pub fn set_num_batches_tracked(&self, n: u64) -> Result<()> {
        if let Some(r) = &self.running {
            let n = i64::try_from(n).map_err(|_| {
                Error::config(BLOCK, format!("num_batches_tracked must fit i64, got {n}"))
            })?;
            r.count.set(&Tensor::new(n, r.count.device())?)?;
        }
        Ok(())
    }

    /// The number of channels `C`.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The configuration.
    pub fn config(&self) -> BatchNormConfig {
        self.cfg
    }

    /// Checks the input: rank 2 to 5, `C` channels on axis 1, no zero dimension, f32 / f16 /
    /// bf16 (or f64, handy for reference checks) matching the parameters.
    fn check_input(&self, x: &Tensor) -> Result<()> {
        let pattern = || format!("(B, {}, *) with 0 to 3 spatial axes", self.channels);
        if !(2..=5).contains(&x.rank()) || x.dims()[1] != self.channels {
            return Err(Error::shape(BLOCK, "input", pattern(), x.shape().clone()));
        }
        check::non_empty(BLOCK, "input", x)?;
        if x.dtype() != DType::F64 {
            check::float_dtype(BLOCK, "input", x)?;
        }
        if let Some(w) = &self.weight {
            check::same_dtype_device(BLOCK, "input", w, x)?;
        }
        if let Some(r) = &self.running {
            if !r.mean.device().same_device(x.device()) {
                return Err(Error::DeviceMismatch {
                    block: BLOCK,
                    what: "input",
                    expected: format!("{:?}", r.mean.device()),
                    actual: format!("{:?}", x.device()),
                });
            }
        }
        Ok(())
    }

    /// The forward pass, with this crate's error type: `train` uses (and accumulates) the batch
    /// statistics, eval the running ones (batch statistics too without them). With batch
    /// statistics in f32 / f16 / bf16 it runs the fused kernel where [`crate::ops::backend()`]
    /// picks it (CPU), whose backward includes the statistics' dependence on the input; on other
    /// devices, for f64, or with the composition forced, [`BatchNorm::forward_reference`].
    pub fn forward_train_eval(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self.forward_kernel(x, train, None)? {
            Some(y) => Ok(y),
            None => self.forward_reference(x, train),
        }
    }

    /// [`BatchNorm::forward_train_eval`] then `act`, the two as one op where the fused kernel
    /// runs and `act` is `Relu` or `Relu6`: the activation is applied in the normalisation's
    /// writing pass and its gradient mask inside the norm's backward, which saves a pass over
    /// the activation each way and the gradient of the intermediate (candle accumulates every
    /// gradient into a fresh zero tensor). Elsewhere (eval with running statistics, f64, other
    /// activations or devices) it is the norm followed by [`crate::ops::activation()`]; both
    /// paths give PyTorch's `act(bn(x))`, gradients included (zero at the kinks).
    ///
    /// ```
    /// use candle_core::{DType, Device, ModuleT, Tensor, Var};
    /// use candle_nn::{Activation, VarBuilder, VarMap};
    /// use candle_tricks::norm::{batch_norm, BatchNormConfig};
    /// # fn main() -> candle_tricks::Result<()> {
    /// let vm = VarMap::new();
    /// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    /// let bn = batch_norm(4, BatchNormConfig::default(), vb)?;
    /// let x = Var::from_tensor(&Tensor::randn(0f32, 1., (8, 4, 6, 6), &Device::Cpu)?)?;
    /// // One op in the graph, the same values and input gradient as the norm then ReLU6.
    /// let fused = bn.forward_act(&x, &Activation::Relu6, true)?;
    /// let unfused = candle_tricks::ops::relu6(&bn.forward_t(&x, true)?)?;
    /// let d = (&fused - &unfused)?.abs()?.max_all()?.to_scalar::<f32>()?;
    /// assert!(d < 1e-6);
    /// let gf = fused.sqr()?.sum_all()?.backward()?;
    /// let gu = unfused.sqr()?.sum_all()?.backward()?;
    /// let (gf, gu) = (gf.get(&x).expect("grad"), gu.get(&x).expect("grad"));
    /// assert!((gf - gu)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
    /// # Ok(())
    /// # }
    /// ```
    pub fn forward_act(&self, x: &Tensor, act: &Activation, train: bool) -> Result<Tensor> {
        let clamp = match act {
            Activation::Relu => Some((0.0, f32::INFINITY)),
            Activation::Relu6 => Some((0.0, 6.0)),
            _ => None,
        };
        if clamp.is_some() {
            if let Some(y) = self.forward_kernel(x, train, clamp)? {
                return Ok(y);
            }
        }
        crate::ops::activation(&self.forward_train_eval(x, train)?, act)
    }

    /// The fused kernel's forward with batch statistics (and the running-stat update), clamped
    /// to `clamp` when given; `None` where the kernel does not run (eval with running
    /// statistics, f64, a device without the kernel).
    fn forward_kernel(
        &self,
        x: &Tensor,
        train: bool,
        clamp: Option<(f32, f32)>,
    ) -> Result<Option<Tensor>> {
        self.check_input(x)?;
        let dims = x.dims();
        let (b, c) = (dims[0], dims[1]);
        let l: usize = dims[2..].iter().product();
        let use_batch = train || self.running.is_none();
        if use_batch && b * l < 2 {
            return Err(self.one_value_error(x));
        }
        let kernel = backend(Op::BatchNorm, x.device()).is_kernel();
        if !(use_batch && kernel && x.dtype() != DType::F64) {
            return Ok(None);
        }
        let x3 = x.reshape((b, c, l))?;
        let affine = self.weight.as_ref().zip(self.bias.as_ref());
        let (y, mean, var) = batch_norm_train(&x3, affine, self.cfg.eps, clamp)?;
        if train {
            self.update_running(&mean, &var, b * l)?;
        }
        Ok(Some(y.reshape(dims)?))
    }

    fn one_value_error(&self, x: &Tensor) -> Error {
        Error::shape(
            BLOCK,
            "input",
            "more than 1 value per channel for batch statistics (B × spatial > 1)",
            x.shape().clone(),
        )
    }

    /// The same forward as [`BatchNorm::forward_train_eval`] (running-stat updates included)
    /// as a composition of candle ops, differentiable by candle's autograd, in f32 for f16 /
    /// bf16 inputs; slow, for tests (and the path for f64 and devices without our kernel).
    pub fn forward_reference(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x)?;
        let dims = x.dims();
        let (b, c) = (dims[0], dims[1]);
        let l: usize = dims[2..].iter().product();
        let n = b * l;
        // Statistics in f32 (f64 input stays f64) for f16 / bf16 inputs.
        let work = match x.dtype() {
            DType::F16 | DType::BF16 => DType::F32,
            d => d,
        };
        let x3 = x.to_dtype(work)?.reshape((b, c, l))?;
        let use_batch = train || self.running.is_none();
        let (mean, var) = if use_batch {
            // Like PyTorch, also in eval mode without running stats (batch stats either way).
            if n < 2 {
                return Err(self.one_value_error(x));
            }
            let mean = (x3.sum_keepdim((0, 2))? / n as f64)?;
            let var = (x3.broadcast_sub(&mean)?.sqr()?.sum_keepdim((0, 2))? / n as f64)?;
            if train {
                self.update_running(&mean, &var, n)?;
            }
            (mean, var)
        } else {
            let r = self.running.as_ref().ok_or_else(|| {
                Error::config(BLOCK, "eval without batch statistics needs running stats")
            })?;
            // Detached: the running statistics are buffers, never trained (a tracked `Var`
            // here would hand them a gradient and let an optimizer move them).
            let m = r
                .mean
                .as_tensor()
                .detach()
                .to_dtype(work)?
                .reshape((1, c, 1))?;
            let v = r
                .var
                .as_tensor()
                .detach()
                .to_dtype(work)?
                .reshape((1, c, 1))?;
            (m, v)
        };
        let inv_std = (var + self.cfg.eps)?.sqrt()?.recip()?;
        let mut y = x3.broadcast_sub(&mean)?.broadcast_mul(&inv_std)?;
        if let (Some(w), Some(bias)) = (&self.weight, &self.bias) {
            let w = w.to_dtype(work)?.reshape((1, c, 1))?;
            let bias = bias.to_dtype(work)?.reshape((1, c, 1))?;
            y = y.broadcast_mul(&w)?.broadcast_add(&bias)?;
        }
        Ok(y.to_dtype(x.dtype())?.reshape(dims)?)
    }

    /// `running ← (1 − m)·running + m·batch`, with the unbiased batch variance.
    fn update_running(&self, mean: &Tensor, var: &Tensor, n: usize) -> Result<()> {
        let Some(r) = &self.running else {
            return Ok(());
        };
        let m = self.cfg.momentum;
        let c = self.channels;
        let unbiased = (var.detach() * (n as f64 / (n as f64 - 1.0)))?;
        for (run, batch) in [(&r.mean, mean.detach()), (&r.var, unbiased)] {
            let old = run.as_tensor();
            let batch = batch.reshape(c)?.to_dtype(DType::F32)?;
            let new = ((old.to_dtype(DType::F32)? * (1.0 - m))? + (batch * m)?)?;
            run.set(&new.to_dtype(old.dtype())?)?;
        }
        let one = Tensor::ones((), DType::I64, r.count.device())?;
        r.count.set(&(r.count.as_tensor().detach() + one)?)?;
        Ok(())
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(self.forward_train_eval(xs, train)?)
    }
}

/// [`batch_norm`] with PyTorch's defaults but `eps` and `momentum`: the norm inside the conv
/// blocks whose configs carry `bn_eps` and `bn_momentum`.
pub(crate) fn batch_norm_with(
    channels: usize,
    eps: f64,
    momentum: f64,
    vb: VarBuilder,
) -> Result<BatchNorm> {
    let cfg = BatchNormConfig::default()
        .with_eps(eps)
        .with_momentum(momentum);
    batch_norm(channels, cfg, vb)
}

/// A [`BatchNorm`] over `channels` channels whose `weight` (init 1), `bias` (init 0),
/// `running_mean` (init 0), `running_var` (init 1) and i64 scalar `num_batches_tracked`
/// (init 0) come from `vb` under PyTorch's names. With a `VarMap` the three buffers are
/// registered there as well (and updated in place), so saving the map keeps them and PyTorch
/// loads it strictly; reading a checkpoint, `num_batches_tracked` is optional (candle-nn's
/// checkpoints lack it). The buffers get no gradient, and the optimizers' var-map constructors
/// leave them out.
pub fn batch_norm(channels: usize, cfg: BatchNormConfig, vb: VarBuilder) -> Result<BatchNorm> {
    check::loading(BLOCK, vb, |vb| load(channels, cfg, vb))
}

fn load(channels: usize, cfg: BatchNormConfig, vb: VarBuilder) -> Result<BatchNorm> {
    cfg.validate()?;
    check::positive(BLOCK, "channels", channels)?;
    let pair = |want, names| match load_pair(BLOCK, channels, &vb, [want; 2], names)? {
        [Some(a), Some(b)] => Ok::<_, Error>(Some((a, b))),
        _ => Ok(None),
    };
    let affine = pair(cfg.affine, AFFINE)?;
    let running = pair(cfg.track_running_stats, RUNNING)?;
    if let Some((_, var)) = &running {
        // A negative or non-finite running variance from a checkpoint would make every eval
        // output NaN without an error: refuse it here, naming the block.
        let v = var.to_dtype(DType::F64)?;
        let lo = v.min_all()?.to_scalar::<f64>()?;
        let sum = v.sum_all()?.to_scalar::<f64>()?;
        if !(lo >= 0.0 && sum.is_finite()) {
            return Err(Error::config(
                BLOCK,
                format!("running_var must be finite and >= 0, got a minimum of {lo}"),
            ));
        }
    }
    let mut bn = BatchNorm::new(channels, affine, running, cfg)?;
    if let Some(r) = &mut bn.running {
        let name = "num_batches_tracked";
        let present = vb.contains_tensor(name);
        // A var map creates the buffer (so it is saved); a checkpoint without it starts at 0.
        let t = match vb.get_with_hints_dtype((), name, Init::Const(0.0), DType::I64) {
            Ok(t) => t,
            Err(e) if present => return Err(e.into()),
            Err(_) => Tensor::zeros((), DType::I64, vb.device())?,
        };
        let v = t.flatten_all()?.to_vec1::<i64>()?;
        if !matches!(v.as_slice(), [n] if *n >= 0) {
            let got = format!("{:?} with values {v:?}", t.dims());
            return Err(Error::config(
                BLOCK,
                format!("num_batches_tracked must be one integer >= 0, got {got}"),
            ));
        }
        // A var map's variable is shared (not copied), so the updates land in the map.
        r.count = Var::from_tensor(&t)?;
    }
    Ok(bn)
}
