//! [`Optim`], the one optimizer type: parameters and state ([`Core`]) driven by a typed
//! configuration that is also the algorithm ([`Algorithm`]). [`Sgd`](super::Sgd),
//! [`Adam`](super::Adam), [`AdamW`](super::AdamW), [`NAdam`](super::NAdam),
//! [`RAdam`](super::RAdam), [`Adamax`](super::Adamax), [`RmsProp`](super::RmsProp),
//! [`Adagrad`](super::Adagrad), [`Adadelta`](super::Adadelta), [`Lion`](super::Lion),
//! [`Lamb`](super::Lamb) and [`Adafactor`](super::Adafactor) are `Optim` over their config
//! types.

use std::collections::HashMap;
use std::fmt;

use candle_core::backprop::GradStore;
use candle_core::{Shape, Tensor, Var};

use super::checkpoint::{check_lr, flag, meta, StateReader};
use super::fused::Kernel;
use super::slots::{Core, Slot};
use super::{Momentum, NonFinite, OptimizerState, ParamGroups};
use crate::{Error, Result};

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
    fn lr(&self) -> f64 {
        internal::read(self, |h| *h.lr)
    }

    /// The non-finite gradient policy.
    fn non_finite(&self) -> NonFinite {
        internal::read(self, |h| *h.non_finite)
    }
}

/// The crate-internal half of [`Algorithm`].
pub(crate) mod internal {
    use super::*;

    /// A config's hyper-parameters borrowed under their state-dict names (`__meta.{name}`), so
    /// the accessors and the state-dict reading and writing are written once for every config.
    pub struct Hyper<'a> {
        /// The base learning rate (`__meta.lr`).
        pub lr: &'a mut f64,
        /// The config's weight decay (groups may override it).
        pub weight_decay: &'a mut f64,
        /// The policy (`__meta.non_finite`, written by [`Core::state_dict`]).
        pub non_finite: &'a mut NonFinite,
        /// The other values.
        pub values: Vec<(&'static str, &'a mut f64)>,
        /// The flags, written as 0 / 1.
        pub flags: Vec<(&'static str, &'a mut bool)>,
        /// The optional values, written as NaN when unset.
        pub options: Vec<(&'static str, &'a mut Option<f64>)>,
    }

    impl Hyper<'_> {
        /// The `__meta.{name}` entries besides `lr` and the policy.
        pub fn to_state(&self) -> Vec<(&'static str, f64)> {
            let values = self.values.iter().map(|(k, v)| (*k, **v));
            let flags = self.flags.iter().map(|(k, b)| (*k, flag(**b)));
            let options = self
                .options
                .iter()
                .map(|(k, v)| (*k, v.unwrap_or(f64::NAN)));
            std::iter::once(("weight_decay", *self.weight_decay))
                .chain(values)
                .chain(flags)
                .chain(options)
                .collect()
        }

        /// Reads back what [`Hyper::to_state`] wrote (a missing entry is an error).
        pub fn read_state(&mut self, st: &StateReader<'_>) -> Result<()> {
            *self.weight_decay = st.value("weight_decay")?;
            for (k, v) in &mut self.values {
                **v = st.value(k)?;
            }
            for (k, b) in &mut self.flags {
                **b = st.flag(k)?;
            }
            for (k, v) in &mut self.options {
                let x = st.value(k)?;
                **v = (!x.is_nan()).then_some(x);
            }
            Ok(())
        }
    }

    /// `f` of the hyper-parameters of a copy of `cfg` (configs are `Copy`: reads need no `&mut`).
    pub fn read<C: AlgorithmImpl + Copy, T>(cfg: &C, f: impl FnOnce(Hyper<'_>) -> T) -> T {
        let mut cfg = *cfg;
        f(cfg.hyper())
    }

    /// The update and the hyper-parameters of an [`Algorithm`]'s config (sealed: the trait is
    /// public but not nameable outside the crate).
    pub trait AlgorithmImpl: Sized {
        /// The hyper-parameters, by their state-dict names.
        fn hyper(&mut self) -> Hyper<'_>;
        /// Called once per parameter when the optimizer is built (Adagrad's accumulator).
        fn init_slot(&self, _slot: &mut Slot) -> Result<()> {
            Ok(())
        }
        /// The shape of state buffer `j` of a parameter of shape `param` (default: the
        /// parameter's).
        fn buffer_shape(_j: usize, param: &Shape) -> Shape {
            param.clone()
        }
        /// Called before [`AlgorithmImpl::kernel`] with the step's gradient, for state that is
        /// not updated element by element (Adafactor's row and column statistics).
        fn prepare(&self, _slot: &mut Slot, _g: &Tensor) -> Result<()> {
            Ok(())
        }
        /// The update of `slot` for this step (its step count already advanced), allocating
        /// the buffers it needs; `lr` and `wd` are the slot's group values.
        fn kernel(&self, slot: &mut Slot, lr: f64, wd: f64) -> Result<Box<dyn Kernel>>;
    }

    /// A config with a momentum coefficient a schedule may cycle ([`Momentum`]).
    pub trait MomentumParam {
        /// The coefficient (`momentum` or `beta1`).
        fn momentum_mut(&mut self) -> &mut f64;
    }
}

/// An optimizer over parameter groups running algorithm `C` (the config type). Use it through
/// its aliases [`Sgd`](super::Sgd), [`Adam`](super::Adam), [`AdamW`](super::AdamW),
/// [`NAdam`](super::NAdam), [`RAdam`](super::RAdam), [`Adamax`](super::Adamax),
/// [`RmsProp`](super::RmsProp), [`Adagrad`](super::Adagrad), [`Adadelta`](super::Adadelta),
/// [`Lion`](super::Lion), [`Lamb`](super::Lamb) and [`Adafactor`](super::Adafactor).
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
        let mut core = Core::new(C::NAME, C::BUFFERS, C::buffer_shape, groups.into())?;
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

    /// Number of parameter groups.
    pub fn num_groups(&self) -> usize {
        self.core.groups.len()
    }

    /// The learning-rate multiplier of group `group` (`None` when there is no such group).
    pub fn group_lr_mult(&self, group: usize) -> Option<f64> {
        self.core.groups.get(group).map(|g| g.lr_mult)
    }

    /// Sets the learning-rate multiplier of group `group` (a per-group schedule drives it);
    /// it must be finite and >= 0, and the group must exist.
    pub fn set_group_lr_mult(&mut self, group: usize, lr_mult: f64) -> Result<()> {
        let n = self.core.groups.len();
        let g = self.core.groups.get_mut(group).ok_or_else(|| {
            Error::config(C::NAME, format!("no group {group} (the optimizer has {n})"))
        })?;
        if !(lr_mult.is_finite() && lr_mult >= 0.0) {
            return Err(Error::config(
                C::NAME,
                format!("group {group}: lr_mult must be finite and >= 0, got {lr_mult}"),
            ));
        }
        g.lr_mult = lr_mult;
        Ok(())
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
        let (base_lr, base_wd) = internal::read(&cfg, |h| (*h.lr, *h.weight_decay));
        let mut work = Vec::with_capacity(list.len());
        for (i, g) in list {
            let (lr, wd) = self.core.lr_wd(i, base_lr, base_wd);
            let slot = &mut self.core.slots[i];
            slot.step += 1;
            cfg.prepare(slot, &g)?;
            work.push((i, g, cfg.kernel(slot, lr, wd)?));
        }
        self.core.apply_all(work)
    }

    /// Sets the base learning rate after checking it as the constructor does (finite,
    /// non-negative). `Optimizer::set_learning_rate` cannot return an error, so an invalid rate
    /// set through it is reported by the next step instead.
    pub fn try_set_learning_rate(&mut self, lr: f64) -> Result<()> {
        check_lr(C::NAME, lr)?;
        *self.cfg.hyper().lr = lr;
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
        *self.cfg.hyper().lr = lr;
    }
}

impl<C: Algorithm> OptimizerState for Optim<C> {
    fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        internal::read(&self.cfg, |h| {
            self.core.state_dict(*h.lr, *h.non_finite, &h.to_state())
        })
    }

    fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut cfg = self.cfg;
        let mut h = cfg.hyper();
        h.read_state(&StateReader::new(C::NAME, state))?;
        *h.lr = meta(C::NAME, state, "__meta.lr")?;
        cfg.validate()?;
        let loaded = self.core.read_state(state)?;
        *cfg.hyper().non_finite = loaded.non_finite;
        self.core.commit(loaded);
        self.cfg = cfg;
        Ok(())
    }
}

impl<C: Algorithm + internal::MomentumParam> Momentum for Optim<C> {
    fn momentum(&self) -> f64 {
        let mut cfg = self.cfg;
        *cfg.momentum_mut()
    }

    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        let mut cfg = self.cfg;
        *cfg.momentum_mut() = momentum;
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }
}
