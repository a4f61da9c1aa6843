//! Gradient accumulation: sum the gradients of N micro-batches, then take one optimizer step
//! with their mean, as if the N micro-batches had been one large batch.
//!
//! [`GradAccumulator`] keeps one f32 buffer per parameter and adds each micro-batch's gradient
//! into it with one fused in-place pass (parallel chunks on candle's CPU worker pool; no chain
//! of tensor additions, no new tensor per micro-batch). After `n_micro` micro-batches it hands
//! back a [`GradStore`] holding the mean (or, on request, the sum) gradient, in each
//! parameter's dtype and on its device, ready for `optimizer.step(&grads)`.
//!
//! A parameter that has no gradient in some micro-batch (an unused branch, a frozen head) is
//! fine: that micro-batch counts as a zero gradient for it, which is what back-propagating the
//! mean loss over the whole batch would give. A parameter with no gradient in any micro-batch
//! of the cycle is left out of the returned store, so the optimizer skips it.
//!
//! # Shapes
//! Any parameter shape; f32, f16 or bf16 gradients, each of its parameter's shape. The buffers
//! are f32 (4 bytes per parameter) whatever the parameter dtype, so summing many half-precision
//! gradients does not lose their low bits.
//!
//! # Tip
//! **When the batch does not fit in memory, accumulate.** Run `n_micro` micro-batches of size
//! $b$ through forward and backward, one at a time, and step once: the effective batch is
//! $B = b \cdot n_{micro}$ while activations are only kept for $b$ samples. With the default
//! mean reduction the accumulated gradient is
//! $\bar g = \frac{1}{n_{micro}} \sum_k \nabla L_k$, where $L_k$ is micro-batch $k$'s *mean*
//! loss: exactly the gradient of the mean loss over the $B$ samples (when the micro-batches
//! have equal sizes), so the learning rate tuned for batch $B$ is used unchanged. Use
//! [`GradReduction::Sum`] if your losses are sums over samples, or you scaled each micro-batch
//! loss by $1 / n_{micro}$ yourself.
//!
//! The trade-off: $n_{micro}$ times more forward/backward launches per step (slower than a
//! real large batch when it does fit), and **layers that use batch statistics still see only
//! the micro-batch**: BatchNorm normalises with the mean and variance of $b$ samples, not $B$,
//! so its noise (and its running statistics) are those of the small batch. Prefer GroupNorm or
//! LayerNorm when micro-batches get very small.
//!
//! # Example
//! Four micro-batches of two samples give the same gradient as one batch of eight:
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_tricks::optim::GradAccumulator;
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let w = Var::new(&[0.5f32, -1.0, 2.0], &dev)?;
//! let x = Tensor::arange(0f32, 24.0, &dev)?.reshape((8, 3))?.affine(0.1, -1.0)?;
//! let y = Tensor::arange(0f32, 8.0, &dev)?.affine(0.3, 0.0)?;
//! // Mean squared error of the linear model x·w over a batch.
//! let loss = |x: &Tensor, y: &Tensor| -> candle_core::Result<Tensor> {
//!     x.matmul(&w.as_tensor().unsqueeze(1)?)?.squeeze(1)?.sub(y)?.sqr()?.mean_all()
//! };
//! let full = loss(&x, &y)?.backward()?;
//!
//! let mut acc = GradAccumulator::new(vec![w.clone()], 4)?;
//! let mut out = None;
//! for k in 0..4 {
//!     let (xk, yk) = (x.narrow(0, 2 * k, 2)?, y.narrow(0, 2 * k, 2)?);
//!     out = acc.accumulate(loss(&xk, &yk)?.backward()?)?; // Some(..) after the 4th
//! }
//! let accumulated = out.expect("ready after 4 micro-batches");
//! let a = accumulated.get(w.as_tensor()).unwrap().to_vec1::<f32>()?;
//! let b = full.get(w.as_tensor()).unwrap().to_vec1::<f32>()?;
//! for (a, b) in a.iter().zip(&b) {
//!     assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Goyal et al., *Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour*, 2017,
//!   <https://arxiv.org/abs/1706.02677> (why the mean gradient of a large batch keeps the
//!   learning rate meaningful, and how BatchNorm statistics stay per worker/micro-batch)
//! - Ott et al., *Scaling Neural Machine Translation*, 2018, <https://arxiv.org/abs/1806.00187>
//!   (accumulating gradients over several batches to emulate a larger one)

use std::collections::HashSet;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, Storage, Tensor, Var};

use super::path::{update_path, UpdatePath};
use super::slots::Buf;
use super::tensor_ops;
use crate::cpu::{contiguous, par_tasks, widen, Element};
use crate::{Error, Result};

const NAME: &str = "GradAccumulator";

/// Elements per task of the parallel f32 passes of this module and its neighbours (`ema`,
/// `scaler`).
pub(crate) const CHUNK: usize = 64 * 1024;

/// Runs `f(dst_chunk, src_chunk)` over `dst` and the values of `t` widened to f32, in parallel
/// chunks of [`CHUNK`] elements (`dst.len()` must equal `t.elem_count()`): the fused path, for
/// CPU tensors only (others take the tensor path, [`super::path`]). f32/f16/bf16 only; other
/// dtypes are a dtype error naming `block`.
pub(crate) fn zip_f32(
    block: &'static str,
    what: &'static str,
    t: &Tensor,
    dst: &mut [f32],
    f: impl Fn(&mut [f32], &[f32]) + Sync + Send,
) -> Result<()> {
    if t.elem_count() != dst.len() {
        return Err(Error::shape(
            block,
            what,
            format!("{} elements", dst.len()),
            t.shape().clone(),
        ));
    }
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    let Storage::Cpu(c) = &*s else {
        return Err(Error::config(
            block,
            "the fused path got a tensor off the CPU (expected the tensor path)",
        ));
    };
    match c {
        CpuStorage::F32(v) => zip_slice(contiguous(v, l, block)?, dst, &f),
        CpuStorage::F16(v) => zip_slice(contiguous(v, l, block)?, dst, &f),
        CpuStorage::BF16(v) => zip_slice(contiguous(v, l, block)?, dst, &f),
        _ => {
            return Err(Error::unsupported_dtype(
                block,
                what,
                "f32, f16 or bf16",
                t.dtype(),
            ))
        }
    }
    Ok(())
}

fn zip_slice<T: Element>(
    src: &[T],
    dst: &mut [f32],
    f: &(impl Fn(&mut [f32], &[f32]) + Sync + Send),
) {
    par_tasks(dst, CHUNK, |i, d, scratch: &mut Vec<f32>| {
        let s = &src[i * CHUNK..i * CHUNK + d.len()];
        let s32: &[f32] = match T::as_f32(s) {
            Some(s) => s,
            None => {
                widen(s, scratch);
                scratch
            }
        };
        f(d, s32);
    });
}

/// The f32 host values `v` as a tensor of `shape`, `dtype` and `device` (moved, not copied, for
/// f32 on the CPU; host state only exists for CPU tensors, see [`super::path`]).
pub(crate) fn tensor_from_f32(
    v: Vec<f32>,
    shape: &candle_core::Shape,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let t = Tensor::from_vec(v, shape.clone(), &Device::Cpu)?;
    let t = if dtype == DType::F32 {
        t
    } else {
        t.to_dtype(dtype)?
    };
    Ok(if device.is_cpu() {
        t
    } else {
        t.to_device(device)?
    })
}

/// How the accumulated gradients are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GradReduction {
    /// The mean over the micro-batches of the cycle (default): the gradient of the mean loss
    /// over the effective batch, so the learning rate need not change.
    #[default]
    Mean,
    /// The plain sum (losses that are sums over samples, or already divided by `n_micro`).
    Sum,
}

/// Configuration of [`GradAccumulator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GradAccumulatorConfig {
    /// Micro-batches per optimizer step (default 1 = no accumulation; must be > 0).
    pub n_micro: usize,
    /// Mean (default) or sum over the micro-batches.
    pub reduction: GradReduction,
}

impl Default for GradAccumulatorConfig {
    fn default() -> Self {
        Self {
            n_micro: 1,
            reduction: GradReduction::Mean,
        }
    }
}

impl GradAccumulatorConfig {
    /// Sets [`GradAccumulatorConfig::n_micro`].
    pub fn with_n_micro(mut self, n_micro: usize) -> Self {
        self.n_micro = n_micro;
        self
    }

    /// Sets [`GradAccumulatorConfig::reduction`].
    pub fn with_reduction(mut self, reduction: GradReduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// Checks the values: `n_micro` > 0.
    pub fn validate(&self) -> Result<()> {
        if self.n_micro == 0 {
            return Err(Error::config(NAME, "n_micro must be > 0, got 0"));
        }
        Ok(())
    }
}

/// Sums the gradients of the listed parameters over micro-batches in f32 buffers and returns
/// their mean (or sum) every `n_micro` micro-batches; see the [module docs](self).
#[derive(Debug)]
pub struct GradAccumulator {
    cfg: GradAccumulatorConfig,
    vars: Vec<Var>,
    /// One f32 sum per var; empty until the var gets a gradient in the current cycle.
    bufs: Vec<Buf>,
    /// Micro-batches added in the current cycle.
    seen: usize,
    /// Completed cycles (stores handed out).
    cycles: u64,
}

impl GradAccumulator {
    /// An accumulator over `vars` that averages `n_micro` micro-batches. Errors when `n_micro`
    /// is 0.
    pub fn new(vars: Vec<Var>, n_micro: usize) -> Result<Self> {
        Self::with_config(vars, GradAccumulatorConfig::default().with_n_micro(n_micro))
    }

    /// An accumulator over `vars` with the given configuration. A var listed twice counts once;
    /// vars that are not f32/f16/bf16 are left out (as the optimizers do).
    pub fn with_config(vars: Vec<Var>, cfg: GradAccumulatorConfig) -> Result<Self> {
        cfg.validate()?;
        let mut seen = HashSet::new();
        let vars: Vec<Var> = vars
            .into_iter()
            .filter(|v| matches!(v.dtype(), DType::F32 | DType::F16 | DType::BF16))
            .filter(|v| seen.insert(v.as_tensor().id()))
            .collect();
        let bufs = vec![Buf::Empty; vars.len()];
        Ok(Self {
            cfg,
            vars,
            bufs,
            seen: 0,
            cycles: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GradAccumulatorConfig {
        &self.cfg
    }

    /// The accumulated vars, in order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Micro-batches added since the last [`GradAccumulator::take`] (0..=`n_micro`).
    pub fn micro_batches(&self) -> usize {
        self.seen
    }

    /// Completed cycles, i.e. gradient stores handed out (the optimizer steps taken).
    pub fn cycles(&self) -> u64 {
        self.cycles
    }

    /// Whether `n_micro` micro-batches have been added and the result waits to be taken.
    pub fn ready(&self) -> bool {
        self.seen >= self.cfg.n_micro
    }

    /// Adds one micro-batch's gradients (one fused in-place f32 pass per parameter). Checks
    /// every gradient's shape and dtype first; on error nothing changed. Errors when the
    /// accumulator is already [`ready`](GradAccumulator::ready) (take the result first).
    pub fn add(&mut self, grads: &GradStore) -> Result<()> {
        if self.ready() {
            return Err(Error::config(
                NAME,
                format!(
                    "already holds {} micro-batches (n_micro = {}): take() the gradients first",
                    self.seen, self.cfg.n_micro
                ),
            ));
        }
        let mut present = Vec::with_capacity(self.vars.len());
        for (i, v) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(v.as_tensor()) else {
                continue;
            };
            if g.shape() != v.shape() {
                return Err(Error::shape(
                    NAME,
                    "gradient",
                    format!("{:?} (the parameter's shape)", v.dims()),
                    g.shape().clone(),
                ));
            }
            if !matches!(g.dtype(), DType::F32 | DType::F16 | DType::BF16) {
                return Err(Error::DTypeMismatch {
                    block: NAME,
                    what: "gradient",
                    expected: v.dtype(),
                    actual: g.dtype(),
                });
            }
            present.push((i, g.clone()));
        }
        for (i, g) in present {
            let var = &self.vars[i];
            let path = update_path(var.device());
            let buf = &mut self.bufs[i];
            buf.migrate(path, var)?;
            match (path, buf) {
                (UpdatePath::Tensor, buf) => {
                    *buf = Buf::Dev(tensor_ops::accumulate(buf.dev(), &g)?);
                }
                (UpdatePath::Fused, Buf::Host(b)) => {
                    zip_f32(NAME, "gradient", &g, b, |d, s| {
                        for (d, s) in d.iter_mut().zip(s) {
                            *d += *s;
                        }
                    })?;
                }
                (UpdatePath::Fused, buf) => {
                    // First gradient of the cycle: a plain copy into fresh storage.
                    let mut b = vec![0f32; g.elem_count()];
                    zip_f32(NAME, "gradient", &g, &mut b, |d, s| d.copy_from_slice(s))?;
                    *buf = Buf::Host(b);
                }
            }
        }
        self.seen += 1;
        Ok(())
    }

    /// The mean (or sum) of the gradients added since the last call, as a new [`GradStore`]
    /// (each gradient in its parameter's dtype and on its device), and resets the
    /// accumulator. The mean divides by the micro-batches actually added, so a short last
    /// cycle (end of an epoch) is still an average. Errors when nothing was added.
    pub fn take(&mut self) -> Result<GradStore> {
        if self.seen == 0 {
            return Err(Error::config(
                NAME,
                "take() called with no micro-batch accumulated",
            ));
        }
        let n = self.seen as f32;
        let mean = self.cfg.reduction == GradReduction::Mean && self.seen > 1;
        let mut out = GradStore::default();
        for (v, buf) in self.vars.iter().zip(self.bufs.iter_mut()) {
            let g = match std::mem::take(buf) {
                Buf::Empty => continue,
                Buf::Host(mut b) => {
                    if mean {
                        par_tasks(&mut b, CHUNK, |_, d, _: &mut ()| {
                            for x in d.iter_mut() {
                                *x /= n;
                            }
                        });
                    }
                    tensor_from_f32(b, v.shape(), v.dtype(), v.device())?
                }
                Buf::Dev(t) => {
                    let t = if mean { tensor_ops::div(&t, n)? } else { t };
                    if v.dtype() == DType::F32 {
                        t
                    } else {
                        t.to_dtype(v.dtype())?
                    }
                }
            };
            out.insert(v.as_tensor(), g);
        }
        self.seen = 0;
        self.cycles += 1;
        Ok(out)
    }

    /// Adds `grads` ([`GradAccumulator::add`]); after the `n_micro`-th micro-batch returns the
    /// accumulated store ([`GradAccumulator::take`]), otherwise `None`.
    pub fn accumulate(&mut self, grads: GradStore) -> Result<Option<GradStore>> {
        self.add(&grads)?;
        if self.ready() {
            Ok(Some(self.take()?))
        } else {
            Ok(None)
        }
    }

    /// Drops whatever was accumulated since the last take (e.g. after a skipped step).
    pub fn reset(&mut self) {
        for b in &mut self.bufs {
            *b = Buf::Empty;
        }
        self.seen = 0;
    }
}
