//! [`Optim`], the one optimizer type: parameters and state ([`Core`]) driven by a typed
//! configuration that is also the algorithm ([`Algorithm`]). [`Sgd`](super::Sgd),
//! [`Adam`](super::Adam), [`AdamW`](super::AdamW), [`RmsProp`](super::RmsProp),
//! [`Adagrad`](super::Adagrad) and [`Lion`](super::Lion) are `Optim` over their config types.

use std::collections::HashMap;
use std::fmt;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use super::checkpoint::{check_lr, meta, StateReader};
use super::fused::Kernel;
use super::slots::{Core, Slot};
use super::{Momentum, NonFinite, OptimizerState, ParamGroups};
use crate::Result;

/// An optimizer algorithm, implemented by its configuration type ([`SgdConfig`](super::SgdConfig),
/// [`AdamConfig`](super::AdamConfig), …): its name, its state buffers and its checks. The
/// update itself and the state-dict hyper-parameters are in the sealed supertrait; the trait
/// cannot be implemented outside this crate.
pub trait Algorithm: internal::AlgorithmImpl + Copy + PartialEq + fmt::Debug + Send + Sync {
    /// The optimizer's name, in errors (`"Sgd"`, `"AdamW"`, …).
    const NAME: &'static str;
    /// The state buffer names, in state-dict order (keys `{i}.{name}`).
    const BUFFERS: &'static [&'static str];

    /// Checks the values, as the constructor does.
    fn validate(&self) -> Result<()>;
    /// The base learning rate.
    fn lr(&self) -> f64;
    /// The non-finite gradient policy.
    fn non_finite(&self) -> NonFinite;
}

/// The crate-internal half of [`Algorithm`].
pub(crate) mod internal {
    use super::*;

    /// The update, the state-dict hyper-parameters and the setters of an [`Algorithm`]'s config
    /// (sealed: the trait is public but not nameable outside the crate).
    pub trait AlgorithmImpl: Sized {
        /// Sets the base learning rate.
        fn set_lr(&mut self, lr: f64);
        /// Sets the non-finite policy.
        fn set_non_finite(&mut self, non_finite: NonFinite);
        /// The config's weight decay (groups may override it).
        fn weight_decay(&self) -> f64;
        /// The hyper-parameters other than `lr` written as `__meta.{name}` (flags as 0/1).
        fn hyper_to_state(&self) -> Vec<(&'static str, f64)>;
        /// `self` with the hyper-parameters of [`AlgorithmImpl::hyper_to_state`] read back
        /// (a missing entry is an error).
        fn hyper_from_state(self, state: &StateReader<'_>) -> Result<Self>;
        /// Called once per parameter when the optimizer is built (Adagrad's accumulator).
        fn init_slot(&self, _slot: &mut Slot) -> Result<()> {
            Ok(())
        }
        /// The update of `slot` for this step (its step count already advanced), allocating
        /// the buffers it needs; `lr` and `wd` are the slot's group values.
        fn kernel(&self, slot: &mut Slot, lr: f64, wd: f64) -> Result<Box<dyn Kernel>>;
    }

    /// A config with a momentum coefficient a schedule may cycle ([`Momentum`]).
    pub trait MomentumParam: Sized {
        /// The coefficient (`momentum` or `beta1`).
        fn momentum(&self) -> f64;
        /// A copy with the coefficient replaced.
        fn with_momentum_param(self, momentum: f64) -> Self;
    }
}

/// An optimizer over parameter groups running algorithm `C` (the config type). Use it through
/// its aliases [`Sgd`](super::Sgd), [`Adam`](super::Adam), [`AdamW`](super::AdamW),
/// [`RmsProp`](super::RmsProp), [`Adagrad`](super::Adagrad) and [`Lion`](super::Lion).
///
/// The configuration is the single copy of every hyper-parameter, the learning rate included
/// (`set_learning_rate` writes `config().lr`). Each step dispatches per parameter through
/// [`update_path`](super::path::update_path): fused in-place kernels for CPU parameters,
/// candle tensor ops on the device with device-resident f32 state otherwise.
#[derive(Debug)]
pub struct Optim<C: Algorithm> {
    core: Core,
    cfg: C,
}

impl<C: Algorithm> Optim<C> {
    /// Builds the optimizer over parameter groups (each with its learning-rate multiplier and
    /// weight decay); `Optimizer::new(vars, cfg)` is one group.
    pub fn with_groups(groups: impl Into<ParamGroups>, cfg: C) -> Result<Self> {
        cfg.validate()?;
        let mut core = Core::new(C::NAME, C::BUFFERS, groups.into())?;
        for slot in &mut core.slots {
            cfg.init_slot(slot)?;
        }
        Ok(Self { core, cfg })
    }

    /// Steps skipped because a gradient held NaN or Inf (policy `NonFinite::Skip`).
    pub fn skipped_steps(&self) -> u64 {
        self.core.skipped
    }

    /// The configuration (its `lr` is the current base learning rate).
    pub fn config(&self) -> &C {
        &self.cfg
    }

    /// Number of parameter tensors.
    pub fn num_params(&self) -> usize {
        self.core.slots.len()
    }

    /// The parameters, in state order.
    pub fn vars(&self) -> Vec<Var> {
        self.core.slots.iter().map(|s| s.var.clone()).collect()
    }

    /// Steps this parameter (by index) has taken.
    pub fn param_step(&self, index: usize) -> Option<u64> {
        self.core.slots.get(index).map(|s| s.step)
    }

    /// One optimizer step from `grads`, with this crate's error type. The hyper-parameters are
    /// validated first, as the constructor does (a learning rate set through
    /// `Optimizer::set_learning_rate`, which cannot fail, is checked here), so an invalid value
    /// fails before any weight changes.
    pub fn try_step(&mut self, grads: &GradStore) -> Result<()> {
        let cfg = self.cfg;
        cfg.validate()?;
        let Some(list) = self.core.gather(grads, cfg.non_finite())? else {
            return Ok(());
        };
        let mut work = Vec::with_capacity(list.len());
        for (i, g) in list {
            let (lr, wd) = self.core.lr_wd(i, cfg.lr(), cfg.weight_decay());
            let slot = &mut self.core.slots[i];
            slot.step += 1;
            work.push((i, g, cfg.kernel(slot, lr, wd)?));
        }
        self.core.apply_all(work)
    }

    /// Sets the base learning rate after checking it as the constructor does (finite,
    /// non-negative). `Optimizer::set_learning_rate` cannot return an error, so an invalid rate
    /// set through it is reported by the next step instead.
    pub fn try_set_learning_rate(&mut self, lr: f64) -> Result<()> {
        check_lr(C::NAME, lr)?;
        self.cfg.set_lr(lr);
        Ok(())
    }
}

impl<C: Algorithm> candle_nn::Optimizer for Optim<C> {
    type Config = C;

    fn new(vars: Vec<Var>, config: C) -> candle_core::Result<Self> {
        Ok(Self::with_groups(vars, config)?)
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        Ok(self.try_step(grads)?)
    }

    fn learning_rate(&self) -> f64 {
        self.cfg.lr()
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.cfg.set_lr(lr);
    }
}

impl<C: Algorithm> OptimizerState for Optim<C> {
    fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        let c = &self.cfg;
        self.core
            .state_dict(c.lr(), c.non_finite(), &c.hyper_to_state())
    }

    fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut cfg = self
            .cfg
            .hyper_from_state(&StateReader::new(C::NAME, state))?;
        cfg.set_lr(meta(C::NAME, state, "__meta.lr")?);
        cfg.validate()?;
        let loaded = self.core.read_state(state)?;
        cfg.set_non_finite(loaded.non_finite);
        self.core.commit(loaded);
        self.cfg = cfg;
        Ok(())
    }
}

impl<C: Algorithm + internal::MomentumParam> Momentum for Optim<C> {
    fn momentum(&self) -> f64 {
        self.cfg.momentum()
    }

    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        let cfg = self.cfg.with_momentum_param(momentum);
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }
}
