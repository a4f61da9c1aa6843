//! The optimizer state dict (keys documented in [`super::state`]): writing it from a [`Core`],
//! reading and validating it before anything changes, and the typed reads of hyper-parameters;
//! plus the value checks the configs share.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::fused::first_non_finite;
use super::path::{update_path, UpdatePath};
use super::slots::{Buf, Core, GroupHyper};
use super::tensor_ops::f32_copy;
use super::NonFinite;
use crate::{Error, Result};

/// The `__meta.{name}` hyper-parameters of a state dict, read one typed value at a time (a
/// missing entry is an [`Error`], never a panic).
#[derive(Debug, Clone, Copy)]
pub struct StateReader<'a> {
    opt: &'static str,
    map: &'a HashMap<String, Tensor>,
}

impl<'a> StateReader<'a> {
    /// A reader over `map` for optimizer `opt` (named in errors).
    pub fn new(opt: &'static str, map: &'a HashMap<String, Tensor>) -> Self {
        Self { opt, map }
    }

    /// `__meta.{name}` as f64.
    pub fn value(&self, name: &str) -> Result<f64> {
        meta(self.opt, self.map, &format!("__meta.{name}"))
    }

    /// `__meta.{name}` as a flag (written as 0 / 1; anything non-zero is true).
    pub fn flag(&self, name: &str) -> Result<bool> {
        Ok(self.value(name)? != 0.0)
    }
}

/// A flag as written to a state dict: 1 or 0.
pub(crate) fn flag(b: bool) -> f64 {
    f64::from(u8::from(b))
}

/// A state dict read and validated by [`Core::read_state`], not applied yet.
#[derive(Debug)]
pub struct LoadedState {
    /// The non-finite policy it holds.
    pub non_finite: NonFinite,
    skipped: u64,
    groups: Vec<GroupHyper>,
    /// Per slot: step, path, buffers, master copy.
    slots: Vec<(u64, UpdatePath, Vec<Buf>, Buf)>,
}

impl Core {
    /// The state dict of the slots: `{i}.step` and `{i}.{buffer}` (f32, the parameter's shape,
    /// copied to the host), `__meta.lr`, `__meta.skipped_steps`, `__meta.num_params`,
    /// `__meta.non_finite` and per group `__meta.group{j}.lr_mult` / `.weight_decay` (-1 = the
    /// config's), with the optimizer's own `hyper` values as `__meta.{name}`.
    pub fn state_dict(
        &self,
        lr: f64,
        non_finite: NonFinite,
        hyper: &[(&'static str, f64)],
    ) -> Result<HashMap<String, Tensor>> {
        let mut m = HashMap::new();
        let scalar = |v: f64| Tensor::new(v, &Device::Cpu);
        m.insert("__meta.lr".to_string(), scalar(lr)?);
        m.insert("__meta.skipped_steps".into(), scalar(self.skipped as f64)?);
        m.insert("__meta.num_params".into(), scalar(self.slots.len() as f64)?);
        let nf = match non_finite {
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
            let named = s
                .bufs
                .iter()
                .zip(self.buf_names.iter().copied())
                .zip(&s.shapes);
            let master = ((&s.master, "master"), s.var.shape());
            for ((b, name), shape) in named.chain(std::iter::once(master)) {
                let t = match b {
                    Buf::Empty => continue,
                    Buf::Host(v) => Tensor::from_slice(v, shape, &Device::Cpu)?,
                    // A checkpoint: the one place device state comes to the host.
                    Buf::Dev(t) => t.to_device(&Device::Cpu)?,
                };
                m.insert(format!("{i}.{name}"), t);
            }
        }
        Ok(m)
    }

    /// Reads and checks what [`Core::state_dict`] wrote (policy, counts, groups, every buffer's
    /// shape and finiteness), changing nothing. The learning rate and the optimizer's own
    /// hyper-parameters are the caller's (they live in its config).
    pub fn read_state(&self, m: &HashMap<String, Tensor>) -> Result<LoadedState> {
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
        check_lr(opt, get("__meta.lr")?)?;
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
        let mut slots = Vec::with_capacity(self.slots.len());
        for (i, s) in self.slots.iter().enumerate() {
            let step = count(&format!("{i}.step"))?;
            let path = update_path(s.var.device());
            let mut bufs = Vec::with_capacity(self.buf_names.len() + 1);
            let shapes = s.shapes.iter().chain(std::iter::once(s.var.shape()));
            for (name, shape) in self.buf_names.iter().chain(&["master"]).zip(shapes) {
                let key = format!("{i}.{name}");
                let Some(t) = m.get(&key) else {
                    bufs.push(Buf::Empty);
                    continue;
                };
                if t.shape() != shape {
                    return Err(Error::shape(
                        opt,
                        "state buffer",
                        format!("{:?} ({key}, parameter {})", shape.dims(), s.name),
                        t.shape().clone(),
                    ));
                }
                let t = t.to_dtype(DType::F32)?;
                if first_non_finite(&[&t])?.is_some() {
                    return Err(Error::non_finite(opt, format!("state buffer {key}")));
                }
                bufs.push(match path {
                    UpdatePath::Fused => Buf::Host(t.flatten_all()?.to_vec1::<f32>()?),
                    // Loading, not stepping: the state goes to the parameter's device once.
                    UpdatePath::Tensor => Buf::Dev(f32_copy(&t.to_device(s.var.device())?)?),
                });
            }
            let master = bufs.pop().unwrap_or_default();
            slots.push((step, path, bufs, master));
        }
        Ok(LoadedState {
            non_finite,
            skipped,
            groups,
            slots,
        })
    }

    /// Applies a state checked by [`Core::read_state`].
    pub fn commit(&mut self, st: LoadedState) {
        for (s, (step, path, bufs, master)) in self.slots.iter_mut().zip(st.slots) {
            s.step = step;
            s.path = path;
            s.bufs = bufs;
            s.master = master;
        }
        self.skipped = st.skipped;
        self.groups = st.groups;
    }
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
pub(crate) fn meta_count(opt: &'static str, m: &HashMap<String, Tensor>, key: &str) -> Result<u64> {
    let v = meta(opt, m, key)?;
    if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9.007_199_254_740_992e15) {
        return Err(Error::config(
            opt,
            format!("state `{key}` must be a whole number >= 0, got {v}"),
        ));
    }
    Ok(v as u64)
}

/// The entries of a wrapped optimizer's state dict under `{prefix}.` (the wrappers' state dicts
/// hold their inner optimizers' this way).
pub(crate) fn prefixed(prefix: &str, m: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    m.into_iter()
        .map(|(k, v)| (format!("{prefix}.{k}"), v))
        .collect()
}

/// The entries of `m` under `{prefix}.`, the prefix removed (the inverse of [`prefixed`]).
pub(crate) fn unprefixed(prefix: &str, m: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let p = format!("{prefix}.");
    m.iter()
        .filter_map(|(k, v)| k.strip_prefix(&p).map(|k| (k.to_string(), v.clone())))
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
