//! Lookahead (Zhang et al. 2019): a wrapper over any optimizer that keeps a second, slow copy
//! of the weights; every `k` inner steps the slow weights move a fraction `alpha` of the way
//! towards the inner ("fast") weights, and the fast weights restart from there.
//!
//! # Update
//! With slow weights $\phi$ (a copy of the weights when the wrapper is built) and fast weights
//! $\theta$ (the parameters, stepped by the inner optimizer), after every $k$-th inner step:
//!
//! $$\phi \leftarrow \phi + \alpha\thinspace(\theta - \phi), \qquad \theta \leftarrow \phi$$
//!
//! The slow weights are f32 state buffers on the crate's optimizer core (host `Vec`s updated by
//! a fused in-place kernel for CPU parameters, tensors on the device otherwise). The state dict
//! holds the inner optimizer's entries under `base.` and the wrapper's under `lookahead.`: the
//! slow weights `lookahead.{i}.slow`, the step count `lookahead.__meta.step`, `k` and `alpha`,
//! so a resume is exact.
//!
//! # Shapes
//! Any parameter shape; f32, f16 or bf16 parameters (the slow copy is f32).
//!
//! # Tip
//! **Lookahead lowers the variance of any optimizer for one extra copy of the weights.** The
//! fast weights explore $k$ steps ahead; the slow weights follow the average direction, so
//! noisy or oscillating inner steps partly cancel (the paper: with $\alpha = 0.5$, $k = 5$ the
//! inner learning rate and momentum matter less, and training is more stable on ImageNet,
//! CIFAR and language models). It wraps what you already use (SGD, Adam, …) and costs one
//! f32 copy of the weights and one interpolation every $k$ steps. Evaluate and save the *slow*
//! weights' iterate: right after a synchronisation (steps that are multiples of $k$) the
//! parameters hold them.
//!
//! # Example
//! With $\alpha = 0.5$, after $k$ inner steps the weights sit halfway between their start and
//! where the inner optimizer alone would have taken them:
//! ```
//! use candle_core::{Device, Var};
//! use candle_nn::Optimizer;
//! use candle_tricks::optim::{Lookahead, LookaheadConfig, Sgd, SgdConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let w = Var::new(&[1.0f32, -2.0], &Device::Cpu)?;
//! let sgd = Sgd::new(vec![w.clone()], SgdConfig::default().with_lr(0.1))?;
//! let cfg = LookaheadConfig::default().with_k(3).with_alpha(0.5);
//! let mut opt = Lookahead::new(sgd, vec![w.clone()], cfg)?;
//! for _ in 0..3 {
//!     opt.backward_step(&w.as_tensor().sum_all()?)?; // gradient 1: each inner step -0.1
//! }
//! let v = w.as_tensor().to_vec1::<f32>()?;
//! assert!((v[0] - (1.0 - 0.15)).abs() < 1e-6 && (v[1] - (-2.0 - 0.15)).abs() < 1e-6);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Zhang, Lucas, Hinton, Ba, *Lookahead Optimizer: k steps forward, 1 step back*, NeurIPS
//!   2019, <https://arxiv.org/abs/1907.08610>

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};

use super::checkpoint::{meta, meta_count, prefixed, unprefixed};
use super::fused::Kernel;
use super::slots::Core;
use super::tensor_ops::diff_mul;
use super::{NonFinite, OptimizerState};
use crate::{Error, Result};

const NAME: &str = "Lookahead";

/// Configuration of [`Lookahead`]; `Default` is the paper's (k 5, alpha 0.5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LookaheadConfig {
    /// Inner steps between two synchronisations (default 5).
    pub k: u64,
    /// Fraction of the way the slow weights move towards the fast ones (default 0.5).
    pub alpha: f64,
}

impl Default for LookaheadConfig {
    fn default() -> Self {
        Self { k: 5, alpha: 0.5 }
    }
}

impl LookaheadConfig {
    /// Checks the values: `k >= 1`, `alpha` in [0, 1].
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(Error::config(NAME, "k must be >= 1, got 0"));
        }
        crate::check::unit_interval(NAME, "alpha", self.alpha)
    }

    /// Sets `k`.
    pub fn with_k(mut self, k: u64) -> Self {
        self.k = k;
        self
    }

    /// Sets `alpha`.
    pub fn with_alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }
}

/// Lookahead over the inner optimizer `O`; see the [module docs](self).
#[derive(Debug)]
pub struct Lookahead<O> {
    base: O,
    /// The vars with their slow weights (buffer 0).
    core: Core,
    step: u64,
    cfg: LookaheadConfig,
}

/// The synchronisation: `slow += alpha (fast - slow)`, then `fast = slow`; the gradient slot
/// is unused.
struct SyncKernel {
    alpha: f32,
}

impl Kernel for SyncKernel {
    fn run(&self, p: &mut [f32], _g: &[f32], s: &mut [&mut [f32]], off: usize) {
        if let [slow, ..] = s {
            let n = p.len();
            for (fast, slow) in p.iter_mut().zip(&mut slow[off..off + n]) {
                *slow += self.alpha * (*fast - *slow);
                *fast = *slow;
            }
        }
    }

    fn run_tensor(
        &self,
        p: &Tensor,
        _g: &Tensor,
        s: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let [Some(slow), ..] = s else {
            return Err(candle_core::Error::Msg(format!(
                "{NAME}: slow weights missing"
            )));
        };
        *slow = (&*slow + diff_mul(p, slow, self.alpha)?)?;
        Ok(slow.clone())
    }
}

impl<O: candle_nn::Optimizer> Lookahead<O> {
    /// Wraps `base`, which optimizes `vars` (the same vars: their current values become the
    /// slow weights).
    pub fn new(base: O, vars: Vec<Var>, cfg: LookaheadConfig) -> Result<Self> {
        cfg.validate()?;
        let mut core = Core::new(NAME, &["slow"], |_, s| s.clone(), vars.into())?;
        for slot in &mut core.slots {
            slot.ensure_copy_of_param(0)?;
        }
        Ok(Self {
            base,
            core,
            step: 0,
            cfg,
        })
    }

    /// One inner step from `grads`, then the synchronisation when the step count is a multiple
    /// of `k`. An error of the inner step changes nothing here.
    pub fn try_step(&mut self, grads: &GradStore) -> Result<()> {
        self.base.step(grads)?;
        self.step += 1;
        if self.step.is_multiple_of(self.cfg.k) {
            let alpha = self.cfg.alpha as f32;
            self.core
                .apply_without_grad(0, || Box::new(SyncKernel { alpha }))?;
        }
        Ok(())
    }

    /// The inner optimizer.
    pub fn base(&self) -> &O {
        &self.base
    }

    /// The inner optimizer, mutably (its learning rate, its own settings).
    pub fn base_mut(&mut self) -> &mut O {
        &mut self.base
    }

    /// Inner steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The configuration.
    pub fn config(&self) -> &LookaheadConfig {
        &self.cfg
    }
}

impl<O: candle_nn::Optimizer> candle_nn::Optimizer for Lookahead<O> {
    /// The inner optimizer's configuration and the wrapper's.
    type Config = (O::Config, LookaheadConfig);

    fn new(vars: Vec<Var>, (base, cfg): Self::Config) -> candle_core::Result<Self> {
        let base = O::new(vars.clone(), base)?;
        Ok(Self::new(base, vars, cfg)?)
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        Ok(self.try_step(grads)?)
    }

    fn learning_rate(&self) -> f64 {
        self.base.learning_rate()
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.base.set_learning_rate(lr);
    }
}

impl<O: candle_nn::Optimizer + OptimizerState> OptimizerState for Lookahead<O> {
    fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        // The core's learning rate and policy are unused (the inner optimizer has its own).
        let mut own = self.core.state_dict(0.0, NonFinite::Error, &[])?;
        let scalar = |v: f64| Tensor::new(v, &Device::Cpu);
        own.insert("__meta.step".into(), scalar(self.step as f64)?);
        own.insert("__meta.k".into(), scalar(self.cfg.k as f64)?);
        own.insert("__meta.alpha".into(), scalar(self.cfg.alpha)?);
        let mut m = prefixed("base", self.base.state_dict()?);
        m.extend(prefixed("lookahead", own));
        Ok(m)
    }

    /// Checks the wrapper's entries, then loads the inner optimizer's (which checks its own);
    /// on error nothing changed.
    fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let own = unprefixed("lookahead", state);
        let step = meta_count(NAME, &own, "__meta.step")?;
        let cfg = LookaheadConfig {
            k: meta_count(NAME, &own, "__meta.k")?,
            alpha: meta(NAME, &own, "__meta.alpha")?,
        };
        cfg.validate()?;
        let loaded = self.core.read_state(&own)?;
        if let Some(i) =
            (0..self.core.slots.len()).find(|i| !own.contains_key(&format!("{i}.slow")))
        {
            return Err(Error::config(
                NAME,
                format!("state dict: missing entry lookahead.{i}.slow"),
            ));
        }
        self.base.load_state_dict(&unprefixed("base", state))?;
        self.core.commit(loaded);
        self.step = step;
        self.cfg = cfg;
        Ok(())
    }
}
