//! Dynamic loss scaling for half-precision training, with `torch.amp.GradScaler` semantics.
//!
//! [`GradScaler::scale`] multiplies the loss by the current scale $S$ before `backward`, so
//! every gradient in the graph is $S$ times larger. [`GradScaler::unscale`] divides the
//! gradients by $S$ and checks them for NaN/Inf in the same fused pass (parallel chunks on
//! candle's CPU worker pool; gradients off the CPU: candle ops on their device and one scalar
//! read per device for the check, see [`super::path`]). [`GradScaler::step`] unscales if that was not done yet and runs
//! the optimizer step only when every gradient is finite: an overflow step leaves the weights
//! and the optimizer state untouched. [`GradScaler::update`] then adapts $S$: halve it
//! (`backoff_factor`) after an overflow, double it (`growth_factor`) after `growth_interval`
//! clean steps in a row. Defaults are torch's: $S_0 = 2^{16}$, growth 2, backoff 0.5, interval
//! 2000.
//!
//! One iteration is `scale` → `backward` → (optionally `unscale` + gradient clipping) → `step`
//! → `update`, as with torch: clip *after* unscaling, or the threshold would be applied to
//! scaled gradients.
//!
//! # Shapes
//! The loss: any shape (usually a scalar); f32/f64 losses are scaled in their dtype, f16/bf16
//! losses are scaled in f32 (the scale itself, $2^{16}$, does not fit in f16). Gradients:
//! f32, f16 or bf16, unscaled into their own dtype. (torch refuses to unscale f16 gradients;
//! here they are allowed, but values below f16's smallest subnormal, about $6 \cdot 10^{-8}$,
//! flush to zero once unscaled. The usual setup is f32 vars, cast to f16 in the forward pass:
//! their gradients are f32.)
//!
//! # Tip
//! **f16 gradients underflow without scaling.** f16's smallest positive value is
//! $2^{-24} \approx 6 \cdot 10^{-8}$, and many activation gradients are smaller than that:
//! in f16 they flush to zero and those weights stop learning. Multiplying the loss by $S$
//! shifts the whole gradient range up into f16's representable range (Micikevicius et al.
//! 2018 found most of it sits below $2^{-24}$, far below the $65504$ maximum). Too large an
//! $S$ overflows to Inf; the dynamic rule finds the largest safe $S$ on its own, at the price
//! of one skipped step per backoff (rare after the first few hundred steps). bf16 has f32's
//! exponent range and needs no scaling.
//!
//! # Example
//! An overflowing step is skipped, the weights stay as they were, and the scale halves:
//! ```
//! use candle_core::backprop::GradStore;
//! use candle_core::{Device, Tensor, Var};
//! use candle_tricks::optim::{GradScaler, GradScalerConfig, Sgd, SgdConfig};
//! use candle_nn::Optimizer;
//! # fn main() -> candle_tricks::Result<()> {
//! let w = Var::new(&[1f32, 2.0], &Device::Cpu)?;
//! let mut opt = Sgd::new(vec![w.clone()], SgdConfig::default().with_lr(0.1))?;
//! let mut scaler = GradScaler::new(GradScalerConfig::default())?;
//! assert_eq!(scaler.get_scale(), 65536.0);
//!
//! // A gradient that overflowed in the backward pass.
//! let mut grads = GradStore::default();
//! grads.insert(w.as_tensor(), Tensor::new(&[f32::INFINITY, 1.0], &Device::Cpu)?);
//! let stepped = scaler.step(&mut opt, &mut grads, &[w.clone()])?;
//! scaler.update()?;
//! assert!(!stepped);
//! assert_eq!(w.as_tensor().to_vec1::<f32>()?, [1.0, 2.0]); // untouched
//! assert_eq!(scaler.get_scale(), 32768.0); // backed off
//!
//! // A clean step: scaled loss -> unscaled gradient 2w, applied by SGD.
//! let loss = w.as_tensor().sqr()?.sum_all()?;
//! let mut grads = scaler.scale(&loss)?.backward()?;
//! assert!(scaler.step(&mut opt, &mut grads, &[w.clone()])?);
//! scaler.update()?;
//! let v = w.as_tensor().to_vec1::<f32>()?;
//! assert!((v[0] - 0.8).abs() < 1e-6 && (v[1] - 1.6).abs() < 1e-6);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Micikevicius et al., *Mixed Precision Training*, ICLR 2018,
//!   <https://arxiv.org/abs/1710.03740> (loss scaling, f32 master weights)
//! - PyTorch `torch.amp.GradScaler` (the dynamic rule and its defaults reproduced here)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, Storage, Tensor, Var};

use super::accumulate::CHUNK;
use super::path::{update_path, UpdatePath};
use super::tensor_ops;
use crate::cpu::{contiguous, par_tasks, Element};
use crate::{Error, Result};

const NAME: &str = "GradScaler";

/// Configuration of [`GradScaler`]; `Default` is torch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradScalerConfig {
    /// Initial scale (default $2^{16}$ = 65536; finite and > 0).
    pub init_scale: f64,
    /// Factor applied to the scale after `growth_interval` clean steps (default 2; > 1).
    pub growth_factor: f64,
    /// Factor applied to the scale after an overflow (default 0.5; in (0, 1)).
    pub backoff_factor: f64,
    /// Clean steps in a row before the scale grows (default 2000; > 0).
    pub growth_interval: u64,
    /// When false, every method is a pass-through: no scaling, no checks, always step
    /// (default true).
    pub enabled: bool,
}

impl Default for GradScalerConfig {
    fn default() -> Self {
        Self {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            enabled: true,
        }
    }
}

impl GradScalerConfig {
    /// Sets [`GradScalerConfig::init_scale`].
    pub fn with_init_scale(mut self, v: f64) -> Self {
        self.init_scale = v;
        self
    }
    /// Sets [`GradScalerConfig::growth_factor`].
    pub fn with_growth_factor(mut self, v: f64) -> Self {
        self.growth_factor = v;
        self
    }
    /// Sets [`GradScalerConfig::backoff_factor`].
    pub fn with_backoff_factor(mut self, v: f64) -> Self {
        self.backoff_factor = v;
        self
    }
    /// Sets [`GradScalerConfig::growth_interval`].
    pub fn with_growth_interval(mut self, v: u64) -> Self {
        self.growth_interval = v;
        self
    }
    /// Sets [`GradScalerConfig::enabled`].
    pub fn with_enabled(mut self, v: bool) -> Self {
        self.enabled = v;
        self
    }

    /// Checks the values: `init_scale` finite and > 0, `growth_factor` finite and > 1,
    /// `backoff_factor` in (0, 1), `growth_interval` > 0.
    pub fn validate(&self) -> Result<()> {
        check(self.init_scale, self.growth_factor, self.backoff_factor)?;
        if self.growth_interval == 0 {
            return Err(Error::config(NAME, "growth_interval must be > 0, got 0"));
        }
        Ok(())
    }
}

fn check(scale: f64, growth: f64, backoff: f64) -> Result<()> {
    if !(scale.is_finite() && scale > 0.0) {
        return Err(Error::config(
            NAME,
            format!("scale must be finite and > 0, got {scale}"),
        ));
    }
    if !(growth.is_finite() && growth > 1.0) {
        return Err(Error::config(
            NAME,
            format!("growth_factor must be finite and > 1, got {growth}"),
        ));
    }
    if !(backoff > 0.0 && backoff < 1.0) {
        return Err(Error::config(
            NAME,
            format!("backoff_factor must be in (0, 1), got {backoff}"),
        ));
    }
    Ok(())
}

/// Where the current iteration stands (torch's per-optimizer `stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing since the last update.
    Ready,
    /// Gradients unscaled, step not taken yet.
    Unscaled,
    /// Step taken or skipped; waiting for `update`.
    Stepped,
}

/// Dynamic loss scaler; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct GradScaler {
    cfg: GradScalerConfig,
    /// The current scale, an f32 value as in torch.
    scale: f32,
    growth_tracker: u64,
    stage: Stage,
    found_inf: bool,
    steps: u64,
    skipped: u64,
}

impl GradScaler {
    /// A scaler with the given configuration. Errors on a bad config.
    pub fn new(cfg: GradScalerConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            scale: cfg.init_scale as f32,
            growth_tracker: 0,
            stage: Stage::Ready,
            found_inf: false,
            steps: 0,
            skipped: 0,
        })
    }

    /// The configuration (growth/backoff factors and interval as last loaded).
    pub fn config(&self) -> &GradScalerConfig {
        &self.cfg
    }

    /// The current scale (1 when disabled).
    pub fn get_scale(&self) -> f64 {
        if self.cfg.enabled {
            self.scale as f64
        } else {
            1.0
        }
    }

    /// Clean steps in a row since the last growth or backoff.
    pub fn growth_tracker(&self) -> u64 {
        self.growth_tracker
    }

    /// Optimizer steps taken through [`GradScaler::step`].
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Optimizer steps skipped because of non-finite gradients.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }

    /// The loss multiplied by the current scale, to call `backward` on. f16/bf16 losses are
    /// widened to f32 first; other dtypes are an error.
    pub fn scale(&self, loss: &Tensor) -> Result<Tensor> {
        if !self.cfg.enabled {
            return Ok(loss.clone());
        }
        let s = self.scale as f64;
        Ok(match loss.dtype() {
            DType::F32 | DType::F64 => loss.affine(s, 0.0)?,
            DType::F16 | DType::BF16 => loss.to_dtype(DType::F32)?.affine(s, 0.0)?,
            other => {
                return Err(Error::unsupported_dtype(
                    NAME,
                    "loss",
                    "f32, f64, f16 or bf16",
                    other,
                ))
            }
        })
    }

    /// Divides the gradients of `vars` by the scale in place of the old ones (one fused pass
    /// per gradient that also checks for NaN/Inf) and returns whether any was non-finite. Call
    /// it before clipping; [`GradScaler::step`] calls it when you did not. Errors when called
    /// twice in one iteration or after `step`, or on a non-float gradient; on error the store
    /// is unchanged. Vars without a gradient are skipped.
    pub fn unscale(&mut self, grads: &mut GradStore, vars: &[Var]) -> Result<bool> {
        if !self.cfg.enabled {
            return Ok(false);
        }
        match self.stage {
            Stage::Unscaled => {
                return Err(Error::config(
                    NAME,
                    "unscale() has already been called since the last update()",
                ))
            }
            Stage::Stepped => {
                return Err(Error::config(
                    NAME,
                    "unscale() called after step(); call update() first",
                ))
            }
            Stage::Ready => {}
        }
        // torch: the reciprocal in f64, rounded to f32.
        let inv = (1.0 / self.scale as f64) as f32;
        let mut seen = std::collections::HashSet::new();
        let mut new = Vec::new();
        let mut found = false;
        let mut flags = Vec::new();
        for v in vars {
            if !seen.insert(v.as_tensor().id()) {
                continue;
            }
            let Some(g) = grads.get(v.as_tensor()) else {
                continue;
            };
            let t = match update_path(g.device()) {
                UpdatePath::Fused => {
                    let (t, bad) = unscale_one(g, inv)?;
                    found |= bad;
                    t
                }
                UpdatePath::Tensor => {
                    check_grad_dtype(g)?;
                    let (t, flag) = tensor_ops::unscale(g, inv)?;
                    flags.push(flag);
                    t
                }
            };
            new.push((v.as_tensor().clone(), t));
        }
        if !flags.is_empty() {
            found |= tensor_ops::any_flag(&flags)?;
        }
        for (v, t) in new {
            grads.insert(&v, t);
        }
        self.found_inf = found;
        self.stage = Stage::Unscaled;
        Ok(found)
    }

    /// Unscales (unless [`GradScaler::unscale`] already ran this iteration) and runs
    /// `opt.step(grads)` only if every gradient is finite. Returns whether the step was taken;
    /// a skipped step changes neither the weights nor the optimizer state. Errors when called
    /// twice without [`GradScaler::update`] in between.
    pub fn step<O: candle_nn::Optimizer>(
        &mut self,
        opt: &mut O,
        grads: &mut GradStore,
        vars: &[Var],
    ) -> Result<bool> {
        if !self.cfg.enabled {
            opt.step(grads)?;
            self.steps += 1;
            return Ok(true);
        }
        if self.stage == Stage::Stepped {
            return Err(Error::config(
                NAME,
                "step() has already been called since the last update()",
            ));
        }
        if self.stage == Stage::Ready {
            self.unscale(grads, vars)?;
        }
        self.stage = Stage::Stepped;
        if self.found_inf {
            self.skipped += 1;
            return Ok(false);
        }
        opt.step(grads)?;
        self.steps += 1;
        Ok(true)
    }

    /// Adapts the scale from this iteration's check (torch's `_amp_update_scale_`): after an
    /// overflow multiply it by `backoff_factor` and reset the clean-step count; otherwise count
    /// the step and, at `growth_interval`, multiply by `growth_factor` (if the result is
    /// finite in f32) and reset the count. Errors when neither `unscale` nor `step` ran since
    /// the last update.
    pub fn update(&mut self) -> Result<()> {
        if !self.cfg.enabled {
            return Ok(());
        }
        if self.stage == Stage::Ready {
            return Err(Error::config(
                NAME,
                "update(): no inf checks were recorded (call unscale() or step() first)",
            ));
        }
        if self.found_inf {
            self.scale = (self.scale as f64 * self.cfg.backoff_factor) as f32;
            self.growth_tracker = 0;
        } else {
            let ok = self.growth_tracker + 1;
            if ok == self.cfg.growth_interval {
                let grown = (self.scale as f64 * self.cfg.growth_factor) as f32;
                if grown.is_finite() {
                    self.scale = grown;
                }
                self.growth_tracker = 0;
            } else {
                self.growth_tracker = ok;
            }
        }
        self.stage = Stage::Ready;
        self.found_inf = false;
        Ok(())
    }

    /// torch's state dict as 0-d f64 tensors: `scaler.scale`, `scaler.growth_factor`,
    /// `scaler.backoff_factor`, `scaler.growth_interval`, `scaler._growth_tracker`, plus
    /// `scaler.steps` and `scaler.skipped_steps`. Empty when disabled, as in torch.
    pub fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        let mut m = HashMap::new();
        if !self.cfg.enabled {
            return Ok(m);
        }
        let entries = [
            ("scale", self.scale as f64),
            ("growth_factor", self.cfg.growth_factor),
            ("backoff_factor", self.cfg.backoff_factor),
            ("growth_interval", self.cfg.growth_interval as f64),
            ("_growth_tracker", self.growth_tracker as f64),
            ("steps", self.steps as f64),
            ("skipped_steps", self.skipped as f64),
        ];
        for (k, v) in entries {
            m.insert(format!("scaler.{k}"), Tensor::new(v, &Device::Cpu)?);
        }
        Ok(m)
    }

    /// Restores a state written by [`GradScaler::state_dict`] (scale, factors, interval and
    /// counters). Checks every value first; on error nothing changed. An empty state (from a
    /// disabled scaler) is an error, as in torch.
    pub fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        if state.is_empty() {
            return Err(Error::config(
                NAME,
                "the state dict is empty (written by a disabled scaler?)",
            ));
        }
        let get = |k: &str| -> Result<f64> {
            let key = format!("scaler.{k}");
            let t = state
                .get(&key)
                .ok_or_else(|| Error::config(NAME, format!("state dict has no {key:?}")))?;
            let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            match v[..] {
                [x] => Ok(x),
                _ => Err(Error::shape(
                    NAME,
                    "state dict entry",
                    "()",
                    t.shape().clone(),
                )),
            }
        };
        let count = |k: &str| -> Result<u64> {
            let x = get(k)?;
            if !(x.is_finite() && x >= 0.0 && x.fract() == 0.0) {
                return Err(Error::config(NAME, format!("{k} must be a count, got {x}")));
            }
            Ok(x as u64)
        };
        let scale = get("scale")?;
        let growth = get("growth_factor")?;
        let backoff = get("backoff_factor")?;
        check(scale, growth, backoff)?;
        let interval = count("growth_interval")?;
        if interval == 0 {
            return Err(Error::config(NAME, "growth_interval must be > 0, got 0"));
        }
        let tracker = count("_growth_tracker")?;
        let steps = count("steps")?;
        let skipped = count("skipped_steps")?;
        self.scale = scale as f32;
        self.cfg.growth_factor = growth;
        self.cfg.backoff_factor = backoff;
        self.cfg.growth_interval = interval;
        self.growth_tracker = tracker;
        self.steps = steps;
        self.skipped = skipped;
        self.stage = Stage::Ready;
        self.found_inf = false;
        Ok(())
    }
}

/// Refuses gradients other than f32, f16 and bf16.
fn check_grad_dtype(g: &Tensor) -> Result<()> {
    match g.dtype() {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        other => Err(Error::unsupported_dtype(
            NAME,
            "gradient",
            "f32, f16 or bf16",
            other,
        )),
    }
}

/// `g * inv` as a new tensor of `g`'s dtype, shape and (CPU) device, and whether `g` held a
/// non-finite value — one fused pass (the fused path).
fn unscale_one(g: &Tensor, inv: f32) -> Result<(Tensor, bool)> {
    let host = g.contiguous()?;
    let (t, bad) = {
        let (s, l) = host.storage_and_layout();
        let Storage::Cpu(c) = &*s else {
            return Err(Error::config(
                NAME,
                "the fused path got a tensor off the CPU (expected the tensor path)",
            ));
        };
        match c {
            CpuStorage::F32(v) => unscale_slice(contiguous(v, l, NAME)?, inv, g.shape())?,
            CpuStorage::F16(v) => unscale_slice(contiguous(v, l, NAME)?, inv, g.shape())?,
            CpuStorage::BF16(v) => unscale_slice(contiguous(v, l, NAME)?, inv, g.shape())?,
            _ => {
                return Err(Error::unsupported_dtype(
                    NAME,
                    "gradient",
                    "f32, f16 or bf16",
                    g.dtype(),
                ))
            }
        }
    };
    Ok((t, bad))
}

fn unscale_slice<T: Element>(
    src: &[T],
    inv: f32,
    shape: &candle_core::Shape,
) -> Result<(Tensor, bool)> {
    let bad = AtomicBool::new(false);
    let mut out = vec![T::from_f32(0.0); src.len()];
    par_tasks(&mut out, CHUNK, |i, d, _: &mut ()| {
        let s = &src[i * CHUNK..i * CHUNK + d.len()];
        let mut nonfinite = false;
        for (d, &x) in d.iter_mut().zip(s) {
            let v = x.to_f32();
            nonfinite |= !v.is_finite();
            *d = T::from_f32(v * inv);
        }
        if nonfinite {
            bad.store(true, Ordering::Relaxed);
        }
    });
    let t = Tensor::from_vec(out, shape.clone(), &Device::Cpu)?;
    Ok((t, bad.into_inner()))
}
