//! Machinery shared by every optimizer: the parameter slots with their f32 state, the
//! non-finite gradient check, and the in-place op that runs an optimizer's fused update kernel
//! over a parameter, its gradient and its state buffers in one pass.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Storage, Tensor, Var};
use half::{bf16, f16};

use super::groups::ParamGroups;
use super::NonFinite;
use crate::ops::cpu::{contiguous, par_fold, Element};
use crate::{Error, Result};

/// Elements per parallel task (the brief: chunks of at least 64K elements).
const CHUNK: usize = 64 * 1024;
/// Parameters with at least this many elements are updated one at a time, each split over the
/// threads; smaller ones are spread over the threads whole.
const BIG: usize = 16 * CHUNK;
/// f16/bf16 parameters are widened to f32 in blocks of this many elements (stack scratch).
const SUB: usize = 1024;

/// An optimizer's per-element update over one block: `p`, `g` and the used state buffers have
/// the same length (`p.len()`); state buffer `j` is `s[j][off..off + p.len()]`.
pub(crate) trait Kernel: Sync {
    /// Updates the block in place.
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize);
}

/// One parameter and its optimizer state.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The parameter.
    pub var: Var,
    /// Its name (from the var map) or `param{index}`, for error messages.
    pub name: String,
    /// Index of its group.
    pub group: usize,
    /// Steps taken by this parameter (torch counts per parameter: a step without a gradient
    /// for it does not count).
    pub step: u64,
    /// State buffers, in the optimizer's buffer-name order; empty until first used.
    pub bufs: Vec<Vec<f32>>,
    /// f32 master copy of an f16/bf16 parameter (empty for f32 parameters and before the
    /// first step).
    pub master: Vec<f32>,
}

impl Slot {
    /// Number of elements of the parameter.
    pub fn numel(&self) -> usize {
        self.var.elem_count()
    }

    /// Allocates buffer `j` filled with `value` if it is still empty.
    pub fn ensure(&mut self, j: usize, value: f32) {
        let n = self.numel();
        if self.bufs[j].len() != n {
            self.bufs[j] = vec![value; n];
        }
    }
}

/// A resolved parameter group: learning-rate multiplier and weight decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GroupHyper {
    pub lr_mult: f64,
    /// `None`: the optimizer config's weight decay.
    pub weight_decay: Option<f64>,
}

/// Parameters, groups, base learning rate and the non-finite policy of one optimizer.
#[derive(Debug)]
pub(crate) struct Core {
    /// The optimizer's name, for errors.
    pub opt: &'static str,
    /// Names of the state buffers (state-dict keys `{index}.{name}`).
    pub buf_names: &'static [&'static str],
    pub slots: Vec<Slot>,
    pub groups: Vec<GroupHyper>,
    pub lr: f64,
    pub non_finite: NonFinite,
    pub skipped: u64,
}

impl Core {
    /// Builds the slots of `groups`. Integer vars (buffers such as `num_batches_tracked`, which
    /// can have no gradient) are left out, as candle-nn does; a float dtype the kernels do not
    /// run (f64, f8) is an error, and so is a var in two places (PyTorch refuses it too: it
    /// would be stepped twice).
    pub fn new(
        opt: &'static str,
        buf_names: &'static [&'static str],
        groups: ParamGroups,
        lr: f64,
        non_finite: NonFinite,
    ) -> Result<Self> {
        check_lr(opt, lr)?;
        let mut slots: Vec<Slot> = Vec::new();
        let mut seen = HashMap::new();
        let mut hyper = Vec::with_capacity(groups.groups().len());
        for (gi, group) in groups.into_inner().into_iter().enumerate() {
            if !(group.lr_mult.is_finite() && group.lr_mult >= 0.0) {
                return Err(Error::config(
                    opt,
                    format!(
                        "group {gi}: lr_mult must be finite and >= 0, got {}",
                        group.lr_mult
                    ),
                ));
            }
            if let Some(wd) = group.weight_decay {
                if !(wd.is_finite() && wd >= 0.0) {
                    return Err(Error::config(
                        opt,
                        format!("group {gi}: weight_decay must be finite and >= 0, got {wd}"),
                    ));
                }
            }
            hyper.push(GroupHyper {
                lr_mult: group.lr_mult,
                weight_decay: group.weight_decay,
            });
            for (name, var) in group.vars {
                let name = name.unwrap_or_else(|| format!("param{}", slots.len()));
                match var.dtype() {
                    DType::F32 | DType::F16 | DType::BF16 => {}
                    d if !d.is_float() => continue,
                    d => {
                        return Err(Error::unsupported_dtype(
                            opt,
                            format!("parameter {name}"),
                            "f32, f16 or bf16 (f64 parameters are not supported)",
                            d,
                        ))
                    }
                }
                if let Some(&(first, g0)) = seen.get(&var.as_tensor().id()) {
                    let first: &Slot = &slots[first];
                    return Err(Error::config(
                        opt,
                        format!(
                            "parameter {name} (group {gi}) is the same var as {} (group {g0}); \
                             a parameter may appear once only",
                            first.name
                        ),
                    ));
                }
                seen.insert(var.as_tensor().id(), (slots.len(), gi));
                slots.push(Slot {
                    var,
                    name,
                    group: gi,
                    step: 0,
                    bufs: vec![Vec::new(); buf_names.len()],
                    master: Vec::new(),
                });
            }
        }
        if slots.is_empty() {
            return Err(Error::config(
                opt,
                "no parameters to optimize (empty or integer-only var list)",
            ));
        }
        Ok(Self {
            opt,
            buf_names,
            slots,
            groups: hyper,
            lr,
            non_finite,
            skipped: 0,
        })
    }

    /// Learning rate and weight decay of slot `i`'s group.
    pub fn lr_wd(&self, i: usize, default_wd: f64) -> (f64, f64) {
        let g = &self.groups[self.slots[i].group];
        (self.lr * g.lr_mult, g.weight_decay.unwrap_or(default_wd))
    }

    /// The gradients of this step, `(slot index, contiguous gradient)`, after the non-finite
    /// check: `None` when the step must be skipped. Slots without a gradient are left out.
    pub fn gather(&mut self, grads: &GradStore) -> Result<Option<Vec<(usize, Tensor)>>> {
        let mut out = Vec::with_capacity(self.slots.len());
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(g) = grads.get(&slot.var) else {
                continue;
            };
            if g.shape() != slot.var.shape() {
                return Err(Error::shape(
                    self.opt,
                    "gradient",
                    format!("{:?} (shape of parameter {})", slot.var.dims(), slot.name),
                    g.shape().clone(),
                ));
            }
            if g.dtype() != slot.var.dtype() {
                return Err(Error::DTypeMismatch {
                    block: self.opt,
                    what: "gradient",
                    expected: slot.var.dtype(),
                    actual: g.dtype(),
                });
            }
            out.push((i, g.contiguous()?));
        }
        let ts: Vec<&Tensor> = out.iter().map(|(_, g)| g).collect();
        if let Some(bad) = first_non_finite(&ts)? {
            match self.non_finite {
                NonFinite::Error => {
                    return Err(Error::non_finite(
                        self.opt,
                        format!(
                            "the gradient of parameter {} (step not taken)",
                            self.slots[out[bad].0].name
                        ),
                    ))
                }
                NonFinite::Skip => {
                    self.skipped += 1;
                    return Ok(None);
                }
            }
        }
        Ok(Some(out))
    }

    /// Runs each `(slot index, gradient, kernel)` of one step: parameters of at least
    /// [`BIG`] elements one after the other, each split in parallel chunks; the others in
    /// parallel across parameters, one parallel region for all of them (a step over a hundred
    /// mid-sized tensors then pays one pool wake-up, not a hundred).
    pub fn apply_all<K: Kernel + Send>(&mut self, work: Vec<(usize, Tensor, K)>) -> Result<()> {
        let opt = self.opt;
        let mut by_slot: Vec<Option<(Tensor, K)>> = (0..self.slots.len()).map(|_| None).collect();
        for (i, g, k) in work {
            by_slot[i] = Some((g, k));
        }
        let mut small = Vec::new();
        for (slot, w) in self.slots.iter_mut().zip(by_slot) {
            let Some((g, k)) = w else { continue };
            if slot.var.dtype() != DType::F32 && slot.master.len() != slot.numel() {
                // The stored half values seed the master copy (candle ops: not on the pool).
                let p = slot.var.as_tensor().to_dtype(DType::F32)?.flatten_all()?;
                slot.master = p.to_vec1::<f32>()?;
            }
            if slot.numel() >= BIG || !slot.var.device().is_cpu() {
                apply_slot(opt, slot, &g, &k, true)?;
            } else {
                small.push(Mutex::new((slot, g, k)));
            }
        }
        if small.len() == 1 {
            let (slot, g, k) = &mut *small[0].lock().unwrap_or_else(|e| e.into_inner());
            return apply_slot(opt, slot, g, k, true);
        }
        let errors = par_fold(small.len(), |j, err: &mut Option<Error>| {
            let (slot, g, k) = &mut *small[j].lock().unwrap_or_else(|e| e.into_inner());
            // Already on the pool: each parameter runs on one thread (no nested pool call).
            if let Err(e) = apply_slot(opt, slot, g, k, false) {
                err.get_or_insert(e);
            }
        });
        match errors.into_iter().flatten().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The state dict of the slots: `{i}.step` and `{i}.{buffer}` (f32, the parameter's shape),
    /// `__meta.lr`, `__meta.skipped_steps`, `__meta.num_params` and per group
    /// `__meta.group{j}.lr_mult` / `.weight_decay` (-1 = the config's).
    pub fn state_dict(&self, hyper: &[(&'static str, f64)]) -> Result<HashMap<String, Tensor>> {
        let mut m = HashMap::new();
        let scalar = |v: f64| Tensor::new(v, &Device::Cpu);
        m.insert("__meta.lr".to_string(), scalar(self.lr)?);
        m.insert("__meta.skipped_steps".into(), scalar(self.skipped as f64)?);
        m.insert("__meta.num_params".into(), scalar(self.slots.len() as f64)?);
        let nf = match self.non_finite {
            NonFinite::Error => 0.0,
            NonFinite::Skip => 1.0,
        };
        m.insert("__meta.non_finite".into(), scalar(nf)?);
        for (k, v) in hyper {
            m.insert(format!("__meta.{k}"), scalar(*v)?);
        }
        for (j, g) in self.groups.iter().enumerate() {
            m.insert(format!("__meta.group{j}.lr_mult"), scalar(g.lr_mult)?);
            let wd = g.weight_decay.unwrap_or(-1.0);
            m.insert(format!("__meta.group{j}.weight_decay"), scalar(wd)?);
        }
        for (i, s) in self.slots.iter().enumerate() {
            m.insert(format!("{i}.step"), scalar(s.step as f64)?);
            let master = (!s.master.is_empty()).then_some((&s.master, &"master"));
            for (b, name) in s.bufs.iter().zip(self.buf_names).chain(master) {
                if !b.is_empty() {
                    let t = Tensor::from_slice(b, s.var.shape(), &Device::Cpu)?;
                    m.insert(format!("{i}.{name}"), t);
                }
            }
        }
        Ok(m)
    }

    /// Restores what [`Core::state_dict`] wrote. Validates everything before changing
    /// anything.
    pub fn load_state_dict(&mut self, m: &HashMap<String, Tensor>) -> Result<()> {
        let opt = self.opt;
        let get = |k: &str| meta(opt, m, k);
        let count = |k: &str| meta_count(opt, m, k);
        let non_finite = match get("__meta.non_finite")? {
            0.0 => NonFinite::Error,
            1.0 => NonFinite::Skip,
            v => {
                return Err(Error::config(
                    opt,
                    format!("state `__meta.non_finite` must be 0 or 1, got {v}"),
                ))
            }
        };
        let n = count("__meta.num_params")? as usize;
        if n != self.slots.len() {
            return Err(Error::config(
                opt,
                format!(
                    "state dict holds {n} parameters, the optimizer has {} (the var order must match)",
                    self.slots.len()
                ),
            ));
        }
        let lr = get("__meta.lr")?;
        check_lr(opt, lr)?;
        let skipped = count("__meta.skipped_steps")?;
        let mut groups = self.groups.clone();
        for (j, g) in groups.iter_mut().enumerate() {
            g.lr_mult = get(&format!("__meta.group{j}.lr_mult"))?;
            check_nonneg(opt, &format!("state group{j}.lr_mult"), g.lr_mult)?;
            // -1 stands for "the config's".
            let wd = get(&format!("__meta.group{j}.weight_decay"))?;
            if wd != -1.0 {
                check_nonneg(opt, &format!("state group{j}.weight_decay"), wd)?;
            }
            g.weight_decay = (wd >= 0.0).then_some(wd);
        }
        let mut new_state = Vec::with_capacity(self.slots.len());
        for (i, s) in self.slots.iter().enumerate() {
            let step = count(&format!("{i}.step"))?;
            let mut bufs = Vec::with_capacity(self.buf_names.len() + 1);
            for name in self.buf_names.iter().chain(&["master"]) {
                let key = format!("{i}.{name}");
                match m.get(&key) {
                    None => bufs.push(Vec::new()),
                    Some(t) => {
                        if t.shape() != s.var.shape() {
                            return Err(Error::shape(
                                opt,
                                "state buffer",
                                format!("{:?} ({key}, parameter {})", s.var.dims(), s.name),
                                t.shape().clone(),
                            ));
                        }
                        let t = t.to_dtype(DType::F32)?;
                        if first_non_finite(&[&t])?.is_some() {
                            return Err(Error::non_finite(opt, format!("state buffer {key}")));
                        }
                        bufs.push(t.flatten_all()?.to_vec1::<f32>()?);
                    }
                }
            }
            new_state.push((step, bufs));
        }
        for (s, (step, mut bufs)) in self.slots.iter_mut().zip(new_state) {
            s.step = step;
            s.master = bufs.pop().unwrap_or_default();
            s.bufs = bufs;
        }
        self.lr = lr;
        self.skipped = skipped;
        self.groups = groups;
        self.non_finite = non_finite;
        Ok(())
    }
}

/// Runs `kernel` over `slot`'s parameter (in place), gradient `g`, state buffers and master
/// copy.
fn apply_slot<K: Kernel>(
    opt: &'static str,
    slot: &mut Slot,
    g: &Tensor,
    kernel: &K,
    parallel: bool,
) -> Result<()> {
    let op = FusedStep {
        name: opt,
        kernel,
        parallel,
        bufs: Mutex::new(slot.bufs.iter_mut().map(|b| b.as_mut_slice()).collect()),
        master: Mutex::new(slot.master.as_mut_slice()),
    };
    let dev = slot.var.device().clone();
    if dev.is_cpu() {
        slot.var.as_tensor().inplace_op2(g, &op)?;
    } else {
        // Other devices: the same kernel on a host copy (state lives on the host).
        let p = slot.var.as_tensor().to_device(&Device::Cpu)?.copy()?;
        let g = g.to_device(&Device::Cpu)?;
        p.inplace_op2(&g, &op)?;
        slot.var.set(&p.to_device(&dev)?)?;
    }
    Ok(())
}

/// The 0-d entry `key` of a state dict as f64.
pub(crate) fn meta(opt: &'static str, m: &HashMap<String, Tensor>, key: &str) -> Result<f64> {
    let t = m
        .get(key)
        .ok_or_else(|| Error::config(opt, format!("state dict: missing entry {key}")))?;
    Ok(t.to_dtype(DType::F64)?
        .flatten_all()?
        .get(0)?
        .to_scalar::<f64>()?)
}

/// The 0-d entry `key` of a state dict as a count: a whole number in `[0, 2^53]` (exact in
/// f64), never negative, fractional or non-finite.
fn meta_count(opt: &'static str, m: &HashMap<String, Tensor>, key: &str) -> Result<u64> {
    let v = meta(opt, m, key)?;
    if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9.007_199_254_740_992e15) {
        return Err(Error::config(
            opt,
            format!("state `{key}` must be a whole number >= 0, got {v}"),
        ));
    }
    Ok(v as u64)
}

/// The optimizer's own hyper-parameters `__meta.{name}` of a state dict.
pub(crate) fn read_hyper(
    opt: &'static str,
    m: &HashMap<String, Tensor>,
    names: &[&'static str],
) -> Result<HashMap<&'static str, f64>> {
    names
        .iter()
        .map(|k| Ok((*k, meta(opt, m, &format!("__meta.{k}"))?)))
        .collect()
}

/// Checks a learning rate: finite and >= 0.
pub(crate) fn check_lr(opt: &'static str, lr: f64) -> Result<()> {
    check_nonneg(opt, "lr", lr)
}

/// Checks that `value` is finite and >= 0.
pub(crate) fn check_nonneg(opt: &'static str, name: &str, value: f64) -> Result<()> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(Error::config(
            opt,
            format!("{name} must be finite and >= 0, got {value}"),
        ));
    }
    Ok(())
}

/// Checks a beta (averaging coefficient) lies in [0, 1).
pub(crate) fn check_beta(opt: &'static str, name: &str, value: f64) -> Result<()> {
    if !(0.0..1.0).contains(&value) {
        return Err(Error::config(
            opt,
            format!("{name} must be in [0, 1), got {value}"),
        ));
    }
    Ok(())
}

/// `-1` to maximize, `+1` to minimize: the gradient's sign in the kernels.
pub(crate) fn grad_sign(maximize: bool) -> f32 {
    if maximize {
        -1.0
    } else {
        1.0
    }
}

/// The parts every optimizer shares: `with_groups`, accessors, `candle_nn::Optimizer` and
/// [`OptimizerState`](super::OptimizerState). The type needs fields `core: Core`, `cfg: $C`
/// (with `lr` and `non_finite`), a `build(ParamGroups, $C)` constructor, `step_impl`,
/// `hyper()` / `apply_hyper()` and a `HYPER` list of names.
macro_rules! optimizer_common {
    ($T:ident, $C:ident) => {
        impl $T {
            /// Builds the optimizer over parameter groups (each with its learning-rate
            /// multiplier and weight decay); `Optimizer::new(vars, cfg)` is one group.
            pub fn with_groups(
                groups: impl Into<$crate::optim::ParamGroups>,
                cfg: $C,
            ) -> $crate::Result<Self> {
                Self::build(groups.into(), cfg)
            }

            /// Steps skipped because a gradient held NaN or Inf (policy `NonFinite::Skip`).
            pub fn skipped_steps(&self) -> u64 {
                self.core.skipped
            }

            /// The configuration (its `lr` is the current base learning rate).
            pub fn config(&self) -> &$C {
                &self.cfg
            }

            /// Number of parameter tensors.
            pub fn num_params(&self) -> usize {
                self.core.slots.len()
            }

            /// The parameters, in state order.
            pub fn vars(&self) -> Vec<candle_core::Var> {
                self.core.slots.iter().map(|s| s.var.clone()).collect()
            }

            /// Steps this parameter (by index) has taken.
            pub fn param_step(&self, index: usize) -> Option<u64> {
                self.core.slots.get(index).map(|s| s.step)
            }

            /// One optimizer step from `grads`, with this crate's error type. The
            /// hyper-parameters are validated first, as the constructor does (a learning rate
            /// set through `Optimizer::set_learning_rate`, which cannot fail, is checked here),
            /// so an invalid value fails before any weight changes.
            pub fn try_step(
                &mut self,
                grads: &candle_core::backprop::GradStore,
            ) -> $crate::Result<()> {
                self.cfg.validate()?;
                self.step_impl(grads)
            }

            /// Sets the base learning rate after checking it as the constructor does (finite
            /// and >= 0). `Optimizer::set_learning_rate` cannot return an error, so an invalid
            /// rate set through it is reported by the next step instead.
            pub fn try_set_learning_rate(&mut self, lr: f64) -> $crate::Result<()> {
                $crate::optim::fused::check_lr(self.core.opt, lr)?;
                candle_nn::Optimizer::set_learning_rate(self, lr);
                Ok(())
            }
        }

        impl candle_nn::Optimizer for $T {
            type Config = $C;

            fn new(vars: Vec<candle_core::Var>, config: $C) -> candle_core::Result<Self> {
                Ok(Self::build(vars.into(), config)?)
            }

            fn step(
                &mut self,
                grads: &candle_core::backprop::GradStore,
            ) -> candle_core::Result<()> {
                Ok(self.try_step(grads)?)
            }

            fn learning_rate(&self) -> f64 {
                self.core.lr
            }

            fn set_learning_rate(&mut self, lr: f64) {
                self.core.lr = lr;
                self.cfg.lr = lr;
            }
        }

        impl $crate::optim::OptimizerState for $T {
            fn state_dict(
                &self,
            ) -> $crate::Result<std::collections::HashMap<String, candle_core::Tensor>> {
                self.core.state_dict(&self.hyper())
            }

            fn load_state_dict(
                &mut self,
                state: &std::collections::HashMap<String, candle_core::Tensor>,
            ) -> $crate::Result<()> {
                let values = $crate::optim::fused::read_hyper(self.core.opt, state, Self::HYPER)?;
                let mut cfg = self.cfg.clone();
                Self::apply_hyper(&mut cfg, &values);
                cfg.lr = $crate::optim::fused::meta(self.core.opt, state, "__meta.lr")?;
                cfg.validate()?;
                self.core.load_state_dict(state)?;
                cfg.lr = self.core.lr;
                cfg.non_finite = self.core.non_finite;
                self.cfg = cfg;
                Ok(())
            }
        }
    };
}
pub(crate) use optimizer_common;

/// A contiguous float slice of a gradient, for the finite check.
#[derive(Clone, Copy)]
enum Bits<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

impl Bits<'_> {
    fn len(&self) -> usize {
        match self {
            Bits::F32(v) => v.len(),
            Bits::F16(v) => v.len(),
            Bits::BF16(v) => v.len(),
        }
    }

    /// No element of `a..b` has all exponent bits set (NaN or ±Inf); one vectorizable pass.
    fn finite(&self, a: usize, b: usize) -> bool {
        fn any_bad<T: Copy>(v: &[T], bits: impl Fn(T) -> u32, exp: u32) -> bool {
            v.iter()
                .fold(0u32, |acc, &x| acc | u32::from(bits(x) & exp == exp))
                != 0
        }
        !match self {
            Bits::F32(v) => any_bad(&v[a..b], f32::to_bits, 0x7f80_0000),
            Bits::F16(v) => any_bad(&v[a..b], |x| u32::from(x.to_bits()), 0x7c00),
            Bits::BF16(v) => any_bad(&v[a..b], |x| u32::from(x.to_bits()), 0x7f80),
        }
    }
}

/// Index of the first tensor of `ts` holding a NaN or ±Inf, if any. CPU tensors are checked in
/// one parallel pass over all of them (chunks of [`CHUNK`]); others through candle ops.
pub(crate) fn first_non_finite(ts: &[&Tensor]) -> Result<Option<usize>> {
    let mut bad = None;
    for (i, t) in ts.iter().enumerate() {
        if !t.device().is_cpu() {
            let t = t.to_dtype(DType::F32)?;
            // 0 * x is NaN exactly for NaN and ±Inf.
            let z = t.affine(0.0, 0.0)?.sum_all()?.to_scalar::<f32>()?;
            if z != 0.0 {
                bad = Some(i);
                break;
            }
        }
    }
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut views = Vec::with_capacity(ts.len());
    for (i, (s, l)) in guards.iter().enumerate() {
        let v = match &**s {
            Storage::Cpu(CpuStorage::F32(v)) => Bits::F32(contiguous(v, l, "all_finite")?),
            Storage::Cpu(CpuStorage::F16(v)) => Bits::F16(contiguous(v, l, "all_finite")?),
            Storage::Cpu(CpuStorage::BF16(v)) => Bits::BF16(contiguous(v, l, "all_finite")?),
            _ => continue,
        };
        views.push((i, v));
    }
    let mut items = Vec::new();
    for (k, (_, v)) in views.iter().enumerate() {
        let n = v.len();
        items.extend((0..n).step_by(CHUNK).map(|a| (k, a, (a + CHUNK).min(n))));
    }
    let check = |&(k, a, b): &(usize, usize, usize), st: &mut Option<usize>| {
        let (i, v) = views[k];
        if !v.finite(a, b) {
            *st = Some(st.map_or(i, |s: usize| s.min(i)));
        }
    };
    let found = if items.len() <= 1 {
        let mut st = None;
        items.iter().for_each(|it| check(it, &mut st));
        st
    } else {
        par_fold(items.len(), |j, st: &mut Option<usize>| {
            check(&items[j], st)
        })
        .into_iter()
        .flatten()
        .min()
    };
    Ok(match (bad, found) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// The in-place op: `p ← kernel(p, g, state)`; the state buffers ride along in the op.
struct FusedStep<'a, K> {
    name: &'static str,
    kernel: &'a K,
    /// Split the parameter over the pool (false when already running on it).
    parallel: bool,
    bufs: Mutex<Vec<&'a mut [f32]>>,
    /// The f32 master copy (half parameters) or empty.
    master: Mutex<&'a mut [f32]>,
}

fn contiguous_mut<'a, T>(
    data: &'a mut [T],
    l: &Layout,
    op: &'static str,
) -> candle_core::Result<&'a mut [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut data[a..b]),
        None => Err(candle_core::Error::RequiresContiguous { op }),
    }
}

impl<K: Kernel> InplaceOp2 for FusedStep<'_, K> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        ps: &mut CpuStorage,
        pl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let mut bufs = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        let mut master = self.master.lock().unwrap_or_else(|e| e.into_inner());
        let master: &mut [f32] = &mut master;
        let name = self.name;
        match (ps, gs) {
            (CpuStorage::F32(p), CpuStorage::F32(g)) => drive(
                self.kernel,
                contiguous_mut(p, pl, name)?,
                contiguous(g, gl, name)?,
                master,
                &mut bufs,
                self.parallel,
            ),
            (CpuStorage::F16(p), CpuStorage::F16(g)) => drive(
                self.kernel,
                contiguous_mut(p, pl, name)?,
                contiguous(g, gl, name)?,
                master,
                &mut bufs,
                self.parallel,
            ),
            (CpuStorage::BF16(p), CpuStorage::BF16(g)) => drive(
                self.kernel,
                contiguous_mut(p, pl, name)?,
                contiguous(g, gl, name)?,
                master,
                &mut bufs,
                self.parallel,
            ),
            (p, g) => {
                use candle_core::backend::BackendStorage;
                return Err(candle_core::Error::DTypeMismatchBinaryOp {
                    lhs: p.dtype(),
                    rhs: g.dtype(),
                    op: name,
                });
            }
        }
        Ok(())
    }
}

/// One task of the parallel update: a chunk of the parameter, gradient, master copy and each
/// state buffer.
struct Task<'a, T> {
    p: &'a mut [T],
    g: &'a [T],
    master: &'a mut [f32],
    s: Vec<&'a mut [f32]>,
}

/// Runs the kernel over the whole parameter, in parallel chunks of [`CHUNK`] elements.
fn drive<T: Element, K: Kernel>(
    k: &K,
    p: &mut [T],
    g: &[T],
    master: &mut [f32],
    bufs: &mut [&mut [f32]],
    parallel: bool,
) {
    let n = p.len().min(g.len());
    let (p, g) = (&mut p[..n], &g[..n]);
    if n <= CHUNK || !parallel {
        block(k, p, g, master, bufs);
        return;
    }
    // Unused (empty) buffers stay empty in every task.
    let mut iters: Vec<_> = bufs.iter_mut().map(|b| b.chunks_mut(CHUNK)).collect();
    let mut masters = master.chunks_mut(CHUNK);
    let tasks: Vec<Mutex<Task<T>>> = p
        .chunks_mut(CHUNK)
        .zip(g.chunks(CHUNK))
        .map(|(p, g)| {
            let s = iters
                .iter_mut()
                .map(|it| it.next().unwrap_or(&mut []))
                .collect();
            let master = masters.next().unwrap_or(&mut []);
            Mutex::new(Task { p, g, master, s })
        })
        .collect();
    par_fold(tasks.len(), |i, _: &mut ()| {
        let mut t = tasks[i].lock().unwrap_or_else(|e| e.into_inner());
        let t = &mut *t;
        block(k, t.p, t.g, t.master, &mut t.s);
    });
}

/// The kernel over one chunk: directly on f32 parameters; for f16/bf16 through f32 stack blocks
/// read from the master copy (re-seeded from the stored value wherever that no longer rounds
/// to it, i.e. the parameter was changed from outside), written back to the master copy and
/// rounded into the parameter.
fn block<T: Element, K: Kernel>(
    k: &K,
    p: &mut [T],
    g: &[T],
    master: &mut [f32],
    s: &mut [&mut [f32]],
) {
    if let Some(g32) = T::as_f32(g) {
        if let Some(p32) = T::as_f32_mut(p) {
            k.run(p32, g32, s, 0);
            return;
        }
    }
    let mut pb = [0f32; SUB];
    let mut gb = [0f32; SUB];
    let mut o = 0;
    for (pc, gc) in p.chunks_mut(SUB).zip(g.chunks(SUB)) {
        let m = pc.len();
        let mc = &mut master[o..o + m];
        for ((d, x), mv) in pb.iter_mut().zip(pc.iter()).zip(mc.iter()) {
            *d = if T::from_f32(*mv) == *x {
                *mv
            } else {
                x.to_f32()
            };
        }
        for (d, x) in gb.iter_mut().zip(gc) {
            *d = x.to_f32();
        }
        k.run(&mut pb[..m], &gb[..m], s, o);
        for ((d, x), mv) in pc.iter_mut().zip(pb.iter()).zip(mc.iter_mut()) {
            *mv = *x;
            *d = T::from_f32(*x);
        }
        o += m;
    }
}
