//! What every optimizer holds: the parameter slots with their f32 state (host `Vec`s on the
//! fused path, device tensors on the tensor path), the resolved parameter groups and the count
//! of skipped steps; the non-finite gradient check and the dispatch of one step's kernels.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Shape, Tensor, Var};

use super::fused::{self, Kernel, BIG};
use super::groups::ParamGroups;
use super::path::{update_path, UpdatePath};
use super::{tensor_ops, NonFinite};
use crate::cpu::par_fold;
use crate::{Error, Result};

/// One f32 state buffer of a parameter (or its f32 master copy).
#[derive(Debug, Clone, Default)]
pub enum Buf {
    /// Not allocated yet.
    #[default]
    Empty,
    /// Fused path: host values, the parameter's element order.
    Host(Vec<f32>),
    /// Tensor path: a contiguous f32 tensor of the parameter's shape on its device.
    Dev(Tensor),
}

impl Buf {
    /// Whether the buffer is not allocated.
    pub fn is_empty(&self) -> bool {
        matches!(self, Buf::Empty)
    }

    /// The host values (empty unless [`Buf::Host`]).
    pub fn host_mut(&mut self) -> &mut [f32] {
        match self {
            Buf::Host(v) => v,
            _ => &mut [],
        }
    }

    /// The device tensor, if [`Buf::Dev`].
    pub fn dev(&self) -> Option<&Tensor> {
        match self {
            Buf::Dev(t) => Some(t),
            _ => None,
        }
    }

    /// The same values in the representation of `path` for a parameter `var` (a no-op when
    /// already there). Only runs when the path of a parameter changes between steps
    /// ([`force_tensor_path`](super::path::force_tensor_path)); a parameter off the CPU always
    /// takes the tensor path, so its state never moves.
    pub fn migrate(&mut self, path: UpdatePath, var: &Var) -> Result<()> {
        self.migrate_as(path, var.shape(), var.device())
    }

    /// [`Buf::migrate`] for a buffer of `shape` (not the parameter's) on `device`.
    pub fn migrate_as(&mut self, path: UpdatePath, shape: &Shape, device: &Device) -> Result<()> {
        *self = match (std::mem::take(self), path) {
            (Buf::Host(v), UpdatePath::Tensor) => Buf::Dev(Tensor::from_slice(&v, shape, device)?),
            (Buf::Dev(t), UpdatePath::Fused) => Buf::Host(t.flatten_all()?.to_vec1::<f32>()?),
            (b, _) => b,
        };
        Ok(())
    }
}

/// One parameter and its optimizer state.
#[derive(Debug)]
pub struct Slot {
    /// The parameter.
    pub var: Var,
    /// Its name (from the var map) or `param{index}`, for error messages.
    pub name: String,
    /// Index of its group.
    pub group: usize,
    /// Steps taken by this parameter (torch counts per parameter: a step without a gradient
    /// for it does not count).
    pub step: u64,
    /// The path its state is laid out for ([`update_path`] of its device when last synced).
    pub path: UpdatePath,
    /// State buffers, in the optimizer's buffer-name order; empty until first used.
    pub bufs: Vec<Buf>,
    /// The shape of each state buffer (the parameter's, except for factored statistics such
    /// as Adafactor's row and column averages).
    pub shapes: Vec<Shape>,
    /// f32 master copy of an f16/bf16 parameter (empty for f32 parameters and before the
    /// first step).
    pub master: Buf,
}

impl Slot {
    /// Number of elements of the parameter.
    pub fn numel(&self) -> usize {
        self.var.elem_count()
    }

    /// Whether buffer `j` exists.
    pub fn has(&self, j: usize) -> bool {
        !self.bufs[j].is_empty()
    }

    /// Allocates buffer `j` filled with `value`, in the slot's path layout, if it is still
    /// empty.
    pub fn ensure(&mut self, j: usize, value: f32) -> Result<()> {
        if self.bufs[j].is_empty() {
            let shape = &self.shapes[j];
            self.bufs[j] = match self.path {
                UpdatePath::Fused => Buf::Host(vec![value; shape.elem_count()]),
                UpdatePath::Tensor => {
                    Buf::Dev(tensor_ops::filled(value, shape, self.var.device())?)
                }
            };
        }
        Ok(())
    }

    /// Allocates buffer `j` as an f32 copy of the parameter, in the slot's path layout, if it
    /// is still empty (schedule-free's `z`, Lookahead's slow weights).
    pub fn ensure_copy_of_param(&mut self, j: usize) -> Result<()> {
        if self.bufs[j].is_empty() {
            self.bufs[j] = Buf::Dev(tensor_ops::f32_copy(self.var.as_tensor())?);
            self.bufs[j].migrate(self.path, &self.var)?;
        }
        Ok(())
    }

    /// Lays the state out for the path the parameter's device takes now.
    pub fn sync_path(&mut self) -> Result<()> {
        let path = update_path(self.var.device());
        if path != self.path {
            let (var, dev) = (self.var.shape(), self.var.device());
            let bufs = self.bufs.iter_mut().zip(&self.shapes);
            for (b, shape) in bufs.chain(std::iter::once((&mut self.master, var))) {
                b.migrate_as(path, shape, dev)?;
            }
            self.path = path;
        }
        Ok(())
    }
}

/// A resolved parameter group: learning-rate multiplier and weight decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupHyper {
    /// Multiplier of the base learning rate.
    pub lr_mult: f64,
    /// `None`: the optimizer config's weight decay.
    pub weight_decay: Option<f64>,
}

/// Parameters, groups and skipped-step count of one optimizer (the learning rate and the
/// non-finite policy live in its config only).
#[derive(Debug)]
pub struct Core {
    /// The optimizer's name, for errors.
    pub opt: &'static str,
    /// Names of the state buffers (state-dict keys `{index}.{name}`).
    pub buf_names: &'static [&'static str],
    /// The parameters with their state, group by group.
    pub slots: Vec<Slot>,
    /// The groups.
    pub groups: Vec<GroupHyper>,
    /// Steps skipped by [`NonFinite::Skip`].
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
        buf_shape: fn(usize, &Shape) -> Shape,
        groups: ParamGroups,
    ) -> Result<Self> {
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
                let path = update_path(var.device());
                let shapes = (0..buf_names.len())
                    .map(|j| buf_shape(j, var.shape()))
                    .collect();
                slots.push(Slot {
                    shapes,
                    var,
                    name,
                    group: gi,
                    step: 0,
                    path,
                    bufs: vec![Buf::Empty; buf_names.len()],
                    master: Buf::Empty,
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
            skipped: 0,
        })
    }

    /// Learning rate (`lr` times the group multiplier) and weight decay of slot `i`.
    pub fn lr_wd(&self, i: usize, lr: f64, default_wd: f64) -> (f64, f64) {
        let g = &self.groups[self.slots[i].group];
        (lr * g.lr_mult, g.weight_decay.unwrap_or(default_wd))
    }

    /// The gradients of this step, `(slot index, contiguous gradient)`, after the non-finite
    /// check (policy `non_finite`): `None` when the step must be skipped. Slots without a
    /// gradient are left out. Each slot's state is first laid out for its current path.
    pub fn gather(
        &mut self,
        grads: &GradStore,
        non_finite: NonFinite,
    ) -> Result<Option<Vec<(usize, Tensor)>>> {
        let mut out = Vec::with_capacity(self.slots.len());
        for (i, slot) in self.slots.iter_mut().enumerate() {
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
            slot.sync_path()?;
            out.push((i, g.contiguous()?));
        }
        // Fused-path gradients: one host bit scan; tensor-path ones: candle ops on their
        // device with one scalar read.
        let (fused, tensor): (Vec<usize>, Vec<usize>) =
            (0..out.len()).partition(|&k| self.slots[out[k].0].path == UpdatePath::Fused);
        let pick = |ks: &[usize]| ks.iter().map(|&k| &out[k].1).collect::<Vec<_>>();
        let bad_f = fused::first_non_finite_host(&pick(&fused))?.map(|j| fused[j]);
        let bad_t = tensor_ops::first_non_finite(&pick(&tensor))?.map(|j| tensor[j]);
        let bad = match (bad_f, bad_t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(bad) = bad {
            match non_finite {
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

    /// Runs `kernel()` over every slot whose state buffer `j` exists, through the same fused /
    /// tensor dispatch as a step, with no gradient (the kernel must not read it): updates that
    /// move the parameters towards a state buffer (schedule-free's mode switch, Lookahead's
    /// synchronisation). The f16/bf16 master copies follow.
    pub fn apply_without_grad(
        &mut self,
        j: usize,
        kernel: impl Fn() -> Box<dyn Kernel>,
    ) -> Result<()> {
        let mut work = Vec::with_capacity(self.slots.len());
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.bufs[j].is_empty() {
                continue;
            }
            slot.sync_path()?;
            // Zeros: a fresh allocation the kernel never touches.
            work.push((i, slot.var.as_tensor().zeros_like()?, kernel()));
        }
        self.apply_all(work)
    }

    /// Runs each `(slot index, gradient, kernel)` of one step, pass after pass: a kernel whose
    /// [`Kernel::then`] returns a next pass (a reduction before the update) runs again over the
    /// same parameter once every kernel of the current pass is done.
    pub fn apply_all(&mut self, mut work: Vec<(usize, Tensor, Box<dyn Kernel>)>) -> Result<()> {
        while !work.is_empty() {
            self.apply_pass(&work)?;
            work = work
                .into_iter()
                .filter_map(|(i, g, k)| k.then().map(|next| (i, g, next)))
                .collect();
        }
        Ok(())
    }

    /// One pass of [`Core::apply_all`]. Tensor-path slots: the kernel's
    /// candle ops on the parameter's device. Fused-path slots of at least [`BIG`] elements one
    /// after the other, each split in parallel chunks; the others in parallel across
    /// parameters, one parallel region for all of them (a step over a hundred mid-sized tensors
    /// then pays one pool wake-up, not a hundred).
    fn apply_pass(&mut self, work: &[(usize, Tensor, Box<dyn Kernel>)]) -> Result<()> {
        let opt = self.opt;
        let mut by_slot: Vec<Option<(&Tensor, &dyn Kernel)>> = vec![None; self.slots.len()];
        for (i, g, k) in work {
            by_slot[*i] = Some((g, &**k));
        }
        let mut small = Vec::new();
        for (slot, w) in self.slots.iter_mut().zip(by_slot) {
            let Some((g, k)) = w else { continue };
            if slot.path == UpdatePath::Tensor {
                tensor_ops::apply_slot(slot, g, k)?;
                continue;
            }
            if slot.var.dtype() != DType::F32 && slot.master.is_empty() {
                // The stored half values seed the master copy (candle ops: not on the pool).
                let p = slot.var.as_tensor().to_dtype(DType::F32)?.flatten_all()?;
                slot.master = Buf::Host(p.to_vec1::<f32>()?);
            }
            if slot.numel() >= BIG {
                fused::apply_slot(opt, slot, g, k, true)?;
            } else {
                small.push(Mutex::new((slot, g, k)));
            }
        }
        if small.len() == 1 {
            let (slot, g, k) = &mut *small[0].lock().unwrap_or_else(|e| e.into_inner());
            return fused::apply_slot(opt, slot, g, *k, true);
        }
        let errors = par_fold(small.len(), |j, err: &mut Option<Error>| {
            let (slot, g, k) = &mut *small[j].lock().unwrap_or_else(|e| e.into_inner());
            // Already on the pool: each parameter runs on one thread (no nested pool call).
            if let Err(e) = fused::apply_slot(opt, slot, g, *k, false) {
                err.get_or_insert(e);
            }
        });
        match errors.into_iter().flatten().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
