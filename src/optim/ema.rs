//! Exponential moving average (EMA) of the weights, with timm's `ModelEmaV3` decay schedule.
//!
//! After each optimizer step, [`Ema::update`] moves every averaged parameter towards the live
//! one, $\bar\theta \leftarrow d\thinspace\bar\theta + (1 - d)\thinspace\theta$ (computed as
//! PyTorch's `lerp`), with one fused in-place pass per parameter over an f32 copy (parallel chunks
//! on candle's CPU worker pool; for parameters off the CPU, candle ops on an f32 tensor on their
//! device, see [`super::path`]). The decay $d$ comes from [`Ema::decay_at`], timm's
//! `ModelEmaV3.get_decay`: with $s = \max(0,\ t - t_0 - 1)$ at step $t$ and $t_0$ =
//! `update_after_step`, $d = 0$ while $s = 0$ (the average is a copy of the weights), then either
//! the constant $d_{\max}$ = `decay` or, with warmup,
//! $\max(\min(1 - (1 + s/\gamma)^{-p},\ d_{\max}),\ d_{\min})$ with $d_{\min}$ = `min_decay`.
//!
//! **Buffers are copied, not averaged.** BatchNorm's `running_mean`/`running_var` (and
//! `num_batches_tracked`, and every non-float var) are copied from the model at each update,
//! as timm V3 does with `exclude_buffers=True`: running statistics are already averages, and an
//! average of them lags behind the averaged weights they must match. (timm V2, and V3 by
//! default, lerp float buffers too; set [`EmaConfig::average_buffers`] for that.) Buffers are
//! recognised by name ([`is_buffer_name`]) or passed explicitly to [`Ema::from_parts`].
//!
//! To evaluate with the averaged weights, either build a separate model from
//! [`Ema::weights`] / [`Ema::to_varmap`] / [`Ema::copy_to`], or [`Ema::swap`] them into the live
//! model and swap back before training goes on. [`Ema::state_dict`] (keys `ema.{name}` and
//! `ema.__meta.*`, 0-d f64 counters; safetensors-compatible) resumes bit-identically.
//!
//! # Shapes
//! Any parameter shape and dtype. Averages of f32/f16/bf16 parameters are kept in f32 (so
//! updates with $1 - d = 2 \cdot 10^{-4}$ are not rounded away in half precision); copied
//! buffers keep their dtype.
//!
//! # Tip
//! **Evaluate and ship the EMA weights.** SGD iterates bounce around a minimum; their running
//! average (Polyak–Ruppert averaging) sits closer to its centre, in a flatter region, and
//! typically generalises better than the last iterate — by a visible margin for image
//! classifiers trained with heavy augmentation. timm's recipes use $d = 0.9998$ per step, i.e.
//! an average over the last $1 / (1 - d) = 5000$ steps. The cost: one more copy of the weights
//! (in f32) and one pass over them per step.
//!
//! **Warm up the decay.** At the start the weights move fast and a high decay would keep the
//! average stuck near the random initialisation for thousands of steps. The warmup starts at
//! $d = 0$ (a copy) and lets $d$ grow with the step count, so the early average tracks the
//! weights; `update_after_step` delays averaging altogether (e.g. until the end of the
//! learning-rate warmup). [`EmaWarmup::Ratio`] is TensorFlow's
//! $\min(d, (1 + s)/(10 + s))$.
//!
//! # Example
//! With warmup the early average follows the weights closely; without it, it stays near the
//! initial weights:
//! ```
//! use candle_core::{Device, Var};
//! use candle_tricks::optim::{Ema, EmaConfig, EmaWarmup};
//! # fn main() -> candle_tricks::Result<()> {
//! let w = Var::new(&[0f32], &Device::Cpu)?;
//! let cfg = EmaConfig::default().with_decay(0.9998);
//! let mut warm = Ema::new(vec![("w".into(), w.clone())], cfg.with_warmup(EmaWarmup::power()))?;
//! let mut cold = Ema::new(vec![("w".into(), w.clone())], cfg)?;
//! for step in 1..=20u64 {
//!     w.set(&w.as_tensor().affine(1.0, 1.0)?)?; // the weight drifts: 1, 2, ..., 20
//!     warm.update(step)?;
//!     cold.update(step)?;
//! }
//! let get = |e: &Ema| -> candle_tricks::Result<f32> {
//!     Ok(e.weights()?["w"].to_vec1::<f32>()?[0])
//! };
//! let (warm, cold) = (get(&warm)?, get(&cold)?);
//! // Warmup: d(19) = 1 - 20^(-2/3) ≈ 0.86, the average lags the weight 20 by a few steps.
//! assert!(warm > 14.0 && warm < 20.0);
//! // Constant d = 0.9998: after the first copy (weight 1) it has barely moved.
//! assert!(cold < 1.1);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Polyak & Juditsky, *Acceleration of Stochastic Approximation by Averaging*, SIAM J.
//!   Control Optim. 1992 (iterate averaging)
//! - Izmailov et al., *Averaging Weights Leads to Wider Optima and Better Generalization*, 2018,
//!   <https://arxiv.org/abs/1803.05407>
//! - Tan & Le, *EfficientNet*, 2019, <https://arxiv.org/abs/1905.11946> (EMA of weights in a
//!   modern image recipe); timm `timm/utils/model_ema.py` (`ModelEmaV3`, whose `get_decay` is
//!   implemented here)

use std::collections::{HashMap, HashSet};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use super::accumulate::{tensor_from_f32, zip_f32};
use super::is_buffer_name;
use super::path::{update_path, UpdatePath};
use super::slots::Buf;
use super::tensor_ops;
use crate::{Error, Result};

const NAME: &str = "Ema";

/// How the decay grows at the start of training.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum EmaWarmup {
    /// No warmup: the constant `decay` (after the first copy), timm's `use_warmup=False`
    /// (default).
    #[default]
    None,
    /// timm's power warmup, $1 - (1 + s/\gamma)^{-p}$, clamped to `[min_decay, decay]`.
    Power {
        /// $\gamma$ (timm `warmup_gamma`, default 1).
        gamma: f64,
        /// $p$ (timm `warmup_power`, default 2/3; 3/4 suits shorter runs).
        power: f64,
    },
    /// TensorFlow's `ExponentialMovingAverage(num_updates=…)` rule $(1 + s)/(10 + s)$,
    /// clamped to `[min_decay, decay]`.
    Ratio,
}

impl EmaWarmup {
    /// [`EmaWarmup::Power`] with timm's defaults ($\gamma = 1$, $p = 2/3$).
    pub fn power() -> Self {
        EmaWarmup::Power {
            gamma: 1.0,
            power: 2.0 / 3.0,
        }
    }
}

/// Configuration of [`Ema`]; the defaults are timm's `ModelEmaV3` ones except `decay`, which is
/// timm's training-script default 0.9998 (the class's is 0.9999).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmaConfig {
    /// Target decay $d$ per update, in [0, 1] (default 0.9998).
    pub decay: f64,
    /// Lower bound of the warmed-up decay, in [0, 1] (default 0; unused without warmup, as in
    /// timm).
    pub min_decay: f64,
    /// Updates up to step `update_after_step + 1` just copy the weights (default 0).
    pub update_after_step: u64,
    /// Decay warmup (default [`EmaWarmup::None`]).
    pub warmup: EmaWarmup,
    /// Average float buffers (BatchNorm running statistics) too, as timm V2 does, instead of
    /// copying them (default false).
    pub average_buffers: bool,
}

impl Default for EmaConfig {
    fn default() -> Self {
        Self {
            decay: 0.9998,
            min_decay: 0.0,
            update_after_step: 0,
            warmup: EmaWarmup::None,
            average_buffers: false,
        }
    }
}

impl EmaConfig {
    /// Sets [`EmaConfig::decay`].
    pub fn with_decay(mut self, decay: f64) -> Self {
        self.decay = decay;
        self
    }
    /// Sets [`EmaConfig::min_decay`].
    pub fn with_min_decay(mut self, min_decay: f64) -> Self {
        self.min_decay = min_decay;
        self
    }
    /// Sets [`EmaConfig::update_after_step`].
    pub fn with_update_after_step(mut self, steps: u64) -> Self {
        self.update_after_step = steps;
        self
    }
    /// Sets [`EmaConfig::warmup`].
    pub fn with_warmup(mut self, warmup: EmaWarmup) -> Self {
        self.warmup = warmup;
        self
    }
    /// Sets [`EmaConfig::average_buffers`].
    pub fn with_average_buffers(mut self, average: bool) -> Self {
        self.average_buffers = average;
        self
    }

    /// Checks the values: `decay` and `min_decay` in [0, 1], warmup `gamma` and `power`
    /// finite and > 0.
    pub fn validate(&self) -> Result<()> {
        check_unit("decay", self.decay)?;
        check_unit("min_decay", self.min_decay)?;
        if let EmaWarmup::Power { gamma, power } = self.warmup {
            for (name, v) in [("warmup gamma", gamma), ("warmup power", power)] {
                if !(v.is_finite() && v > 0.0) {
                    return Err(Error::config(
                        NAME,
                        format!("{name} must be finite and > 0, got {v}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_unit(name: &str, v: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&v) {
        return Err(Error::config(
            NAME,
            format!("{name} must be in [0, 1], got {v}"),
        ));
    }
    Ok(())
}

/// What the EMA holds for one var.
#[derive(Debug)]
enum Held {
    /// The f32 moving average of a parameter (host values or a tensor on its device).
    Avg(Buf),
    /// A copy of a buffer, as of the last update.
    Copy(Tensor),
}

#[derive(Debug)]
struct Entry {
    name: String,
    var: Var,
    held: Held,
}

/// Exponential moving average of a model's weights; see the [module docs](self).
#[derive(Debug)]
pub struct Ema {
    cfg: EmaConfig,
    entries: Vec<Entry>,
    updates: u64,
    last_decay: f64,
    /// The live values while the EMA values are swapped into the model.
    stash: Option<Vec<Tensor>>,
}

/// The f32 values of `var`, laid out for its update path.
fn f32_values(var: &Var) -> Result<Buf> {
    let t = var.as_tensor();
    Ok(match update_path(var.device()) {
        UpdatePath::Fused => {
            let mut v = vec![0f32; t.elem_count()];
            zip_f32(NAME, "parameter", t, &mut v, |d, s| d.copy_from_slice(s))?;
            Buf::Host(v)
        }
        UpdatePath::Tensor => Buf::Dev(tensor_ops::f32_copy(t)?),
    })
}

impl Ema {
    /// An EMA of the named vars (e.g. `varmap.data()` entries), initialised to their current
    /// values. Vars named like buffers ([`is_buffer_name`]) and non-float vars are copied at
    /// each update instead of averaged (unless [`EmaConfig::average_buffers`]). Errors on a bad
    /// config or a duplicate name.
    pub fn new(vars: Vec<(String, Var)>, cfg: EmaConfig) -> Result<Self> {
        let (buffers, params) = vars.into_iter().partition(|(n, _)| is_buffer_name(n));
        Self::from_parts(params, buffers, cfg)
    }

    /// An EMA of all the vars of a [`VarMap`], split into parameters and buffers by name as in
    /// [`Ema::new`].
    pub fn from_varmap(varmap: &VarMap, cfg: EmaConfig) -> Result<Self> {
        let vars = {
            let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
            data.iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        Self::new(vars, cfg)
    }

    /// An EMA of `params` (averaged; non-float ones are copied) and `buffers` (copied, or
    /// averaged when [`EmaConfig::average_buffers`] and float). Entries are kept sorted by
    /// name. Errors on a bad config or a duplicate name.
    pub fn from_parts(
        params: Vec<(String, Var)>,
        buffers: Vec<(String, Var)>,
        cfg: EmaConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut names = HashSet::new();
        let mut entries = Vec::with_capacity(params.len() + buffers.len());
        let tagged = params
            .into_iter()
            .map(|p| (p, false))
            .chain(buffers.into_iter().map(|b| (b, true)));
        for ((name, var), is_buffer) in tagged {
            if !names.insert(name.clone()) {
                return Err(Error::config(NAME, format!("duplicate var name {name:?}")));
            }
            let float = matches!(var.dtype(), DType::F32 | DType::F16 | DType::BF16);
            let held = if float && (!is_buffer || cfg.average_buffers) {
                Held::Avg(f32_values(&var)?)
            } else {
                Held::Copy(var.as_tensor().detach().copy()?)
            };
            entries.push(Entry { name, var, held });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            cfg,
            entries,
            updates: 0,
            last_decay: 0.0,
            stash: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EmaConfig {
        &self.cfg
    }

    /// The names of the tracked vars, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// Updates done so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The decay used by the last update (0 before any).
    pub fn last_decay(&self) -> f64 {
        self.last_decay
    }

    /// Whether the EMA values are currently swapped into the model ([`Ema::swap`]).
    pub fn is_swapped(&self) -> bool {
        self.stash.is_some()
    }

    /// The decay at optimizer step `step` — timm `ModelEmaV3.get_decay(step)` (see the
    /// [module docs](self)).
    pub fn decay_at(&self, step: u64) -> f64 {
        let c = &self.cfg;
        let s = step.saturating_sub(c.update_after_step.saturating_add(1));
        if s == 0 {
            return 0.0;
        }
        let s = s as f64;
        let warm = match c.warmup {
            EmaWarmup::None => return c.decay,
            EmaWarmup::Power { gamma, power } => 1.0 - (1.0 + s / gamma).powf(-power),
            EmaWarmup::Ratio => (1.0 + s) / (10.0 + s),
        };
        warm.min(c.decay).max(c.min_decay)
    }

    /// Updates the average after optimizer step `step` (timm passes its update counter,
    /// 1 after the first optimizer step) with decay [`Ema::decay_at`]`(step)`; returns that
    /// decay. Errors while the EMA values are swapped into the model.
    pub fn update(&mut self, step: u64) -> Result<f64> {
        let d = self.decay_at(step);
        self.update_with_decay(d)?;
        Ok(d)
    }

    /// Updates the average with an explicit decay in [0, 1] (timm's `update(model, step=None)`
    /// uses the constant `decay`).
    pub fn update_with_decay(&mut self, decay: f64) -> Result<()> {
        check_unit("update decay", decay)?;
        if self.stash.is_some() {
            return Err(Error::config(
                NAME,
                "update() while the EMA weights are swapped into the model; swap() back first",
            ));
        }
        // torch: lerp weight 1 - decay, rounded to the f32 compute type.
        let w = (1.0 - decay) as f32;
        let w1 = 1.0 - w;
        for e in &mut self.entries {
            match &mut e.held {
                Held::Avg(buf) => {
                    buf.migrate(update_path(e.var.device()), &e.var)?;
                    match buf {
                        Buf::Host(buf) => {
                            zip_f32(NAME, "parameter", e.var.as_tensor(), buf, |d, s| {
                                if w < 0.5 {
                                    for (a, &x) in d.iter_mut().zip(s) {
                                        *a += w * (x - *a);
                                    }
                                } else {
                                    for (a, &x) in d.iter_mut().zip(s) {
                                        *a = x - (x - *a) * w1;
                                    }
                                }
                            })?
                        }
                        Buf::Dev(t) => *t = tensor_ops::lerp(t, e.var.as_tensor(), w)?,
                        Buf::Empty => {}
                    }
                }
                Held::Copy(t) => *t = e.var.as_tensor().detach().copy()?,
            }
        }
        self.updates += 1;
        self.last_decay = decay;
        Ok(())
    }

    fn value(e: &Entry) -> Result<Tensor> {
        match &e.held {
            Held::Avg(Buf::Host(buf)) => {
                tensor_from_f32(buf.clone(), e.var.shape(), e.var.dtype(), e.var.device())
            }
            Held::Avg(Buf::Dev(t)) => Ok(t.to_dtype(e.var.dtype())?),
            Held::Avg(Buf::Empty) => Err(Error::config(NAME, "average not initialised")),
            Held::Copy(t) => Ok(t.clone()),
        }
    }

    /// The EMA weights by var name, in each var's dtype and on its device (averages rounded from
    /// f32), e.g. for `VarBuilder::from_tensors` to build an evaluation model.
    pub fn weights(&self) -> Result<HashMap<String, Tensor>> {
        self.entries
            .iter()
            .map(|e| Ok((e.name.clone(), Self::value(e)?)))
            .collect()
    }

    /// A new [`VarMap`] holding the EMA weights (fresh vars, independent of the model's).
    pub fn to_varmap(&self) -> Result<VarMap> {
        let vm = VarMap::new();
        {
            let mut data = vm.data().lock().unwrap_or_else(|e| e.into_inner());
            for e in &self.entries {
                data.insert(e.name.clone(), Var::from_tensor(&Self::value(e)?)?);
            }
        }
        Ok(vm)
    }

    /// Writes the EMA weights into the vars of the same names in `target` (another model of the
    /// same architecture), converted to each target var's dtype. Checks that every name exists
    /// with the same shape first; on error nothing changed. Target vars the EMA does not know
    /// are left alone.
    pub fn copy_to(&self, target: &VarMap) -> Result<()> {
        let data = target.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut pairs = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let Some(v) = data.get(&e.name) else {
                return Err(Error::config(
                    NAME,
                    format!("copy_to: target has no var {:?}", e.name),
                ));
            };
            if v.shape() != e.var.shape() {
                return Err(Error::shape(
                    NAME,
                    "copy_to target var",
                    format!("{:?} (shape of {})", e.var.dims(), e.name),
                    v.shape().clone(),
                ));
            }
            pairs.push((v.clone(), e));
        }
        for (v, e) in pairs {
            let t = Self::value(e)?.to_dtype(v.dtype())?.to_device(v.device())?;
            v.set(&t)?;
        }
        Ok(())
    }

    /// Swaps the EMA weights into the tracked vars (for evaluation), or, called again, puts the
    /// live weights back exactly (the EMA itself never changes). [`Ema::update`] refuses to run
    /// while swapped.
    pub fn swap(&mut self) -> Result<()> {
        match self.stash.take() {
            None => {
                let live = self
                    .entries
                    .iter()
                    .map(|e| Ok(e.var.as_tensor().detach().copy()?))
                    .collect::<Result<Vec<_>>>()?;
                let ema = self
                    .entries
                    .iter()
                    .map(Self::value)
                    .collect::<Result<Vec<_>>>()?;
                for (e, t) in self.entries.iter().zip(&ema) {
                    e.var.set(t)?;
                }
                self.stash = Some(live);
            }
            Some(live) => {
                for (e, t) in self.entries.iter().zip(&live) {
                    e.var.set(t)?;
                }
            }
        }
        Ok(())
    }

    /// The full state: `ema.{name}` for every var (f32 averages, copied buffers in their
    /// dtype, on the CPU) and the 0-d f64 counters `ema.__meta.updates` and
    /// `ema.__meta.last_decay`. Can be saved with `candle_core::safetensors::save`.
    pub fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        let mut m = HashMap::with_capacity(self.entries.len() + 2);
        for e in &self.entries {
            let t = match &e.held {
                Held::Avg(Buf::Host(buf)) => {
                    Tensor::from_vec(buf.clone(), e.var.shape(), &Device::Cpu)?
                }
                // A checkpoint: device averages come to the host here only.
                Held::Avg(Buf::Dev(t)) | Held::Copy(t) => t.to_device(&Device::Cpu)?,
                Held::Avg(Buf::Empty) => continue,
            };
            m.insert(format!("ema.{}", e.name), t);
        }
        m.insert(
            "ema.__meta.updates".into(),
            Tensor::new(self.updates as f64, &Device::Cpu)?,
        );
        m.insert(
            "ema.__meta.last_decay".into(),
            Tensor::new(self.last_decay, &Device::Cpu)?,
        );
        Ok(m)
    }

    /// Restores a state written by [`Ema::state_dict`] for the same vars (the config stays the
    /// constructor's). Checks every key, shape and dtype first; on error nothing changed.
    pub fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let meta = |key: &str| -> Result<f64> {
            let t = state
                .get(key)
                .ok_or_else(|| Error::config(NAME, format!("state dict has no {key:?}")))?;
            Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?[..]
                .first()
                .copied()
                .unwrap_or(f64::NAN))
        };
        let updates = meta("ema.__meta.updates")?;
        let last_decay = meta("ema.__meta.last_decay")?;
        let counters_ok = updates.is_finite() && updates >= 0.0;
        if !counters_ok || !(0.0..=1.0).contains(&last_decay) {
            return Err(Error::config(
                NAME,
                format!("bad counters in state dict: updates {updates}, last_decay {last_decay}"),
            ));
        }
        let mut new = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let key = format!("ema.{}", e.name);
            let t = state
                .get(&key)
                .ok_or_else(|| Error::config(NAME, format!("state dict has no {key:?}")))?;
            if t.shape() != e.var.shape() {
                return Err(Error::shape(
                    NAME,
                    "state dict entry",
                    format!("{:?} (shape of {})", e.var.dims(), e.name),
                    t.shape().clone(),
                ));
            }
            let held = match &e.held {
                Held::Avg(_) => {
                    if t.dtype() != DType::F32 {
                        return Err(Error::unsupported_dtype(
                            NAME,
                            "state dict average",
                            "f32",
                            t.dtype(),
                        ));
                    }
                    // A NaN average would reach the weights at the next `copy_to` / `swap`.
                    if super::fused::first_non_finite(&[t])?.is_some() {
                        return Err(Error::non_finite(NAME, format!("state dict entry {key}")));
                    }
                    Held::Avg(match update_path(e.var.device()) {
                        UpdatePath::Fused => Buf::Host(t.flatten_all()?.to_vec1::<f32>()?),
                        UpdatePath::Tensor => {
                            Buf::Dev(tensor_ops::f32_copy(&t.to_device(e.var.device())?)?)
                        }
                    })
                }
                Held::Copy(_) => {
                    if t.dtype() != e.var.dtype() {
                        return Err(Error::DTypeMismatch {
                            block: NAME,
                            what: "state dict buffer",
                            expected: e.var.dtype(),
                            actual: t.dtype(),
                        });
                    }
                    Held::Copy(t.to_device(e.var.device())?.detach().copy()?)
                }
            };
            new.push(held);
        }
        for (e, h) in self.entries.iter_mut().zip(new) {
            e.held = h;
        }
        self.updates = updates as u64;
        self.last_decay = last_decay;
        Ok(())
    }
}
