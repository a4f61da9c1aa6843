//! The fused CPU path shared by every optimizer: the [`Kernel`] trait (one algorithm's
//! per-element update, on host slices and as candle tensor ops), the in-place op that runs a
//! kernel over a parameter, its gradient and its state buffers in one pass on candle's CPU pool,
//! and the NaN/Inf bit scan of CPU gradients.

use std::sync::Mutex;

use candle_core::{CpuStorage, InplaceOp2, Layout, Storage, Tensor};
use half::{bf16, f16};

use super::slots::Slot;
use super::tensor_ops;
use crate::cpu::{contiguous, par_each, par_fold, Element};
use crate::Result;

/// Elements per parallel task (the brief: chunks of at least 64K elements).
pub(crate) const CHUNK: usize = 64 * 1024;
/// Parameters with at least this many elements are updated one at a time, each split over the
/// threads; smaller ones are spread over the threads whole.
pub(crate) const BIG: usize = 16 * CHUNK;
/// f16/bf16 parameters are widened to f32 in blocks of this many elements (stack scratch).
const SUB: usize = 1024;

/// An optimizer's update of one parameter, in two formulations of the same f32 math.
#[doc(hidden)]
pub trait Kernel: Sync + Send {
    /// Fused path: updates one block in place. `p`, `g` and the used state buffers have the
    /// same length (`p.len()`); state buffer `j` is `s[j][off..off + p.len()]`.
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize);

    /// [`Kernel::run`] told where the block starts in the whole parameter (element `at`), for
    /// updates that depend on an element's position (Adafactor's row and column factors).
    fn run_at(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize, _at: usize) {
        self.run(p, g, s, off);
    }

    /// Tensor path: the new parameter from the f32 parameter `p` and gradient `g` (same
    /// shape, on one device); every used state buffer `s[j]` is `Some` and is replaced by its
    /// new value. Same operations, in the same order, as [`Kernel::run`].
    fn run_tensor(
        &self,
        p: &Tensor,
        g: &Tensor,
        s: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor>;

    /// The next pass of an update that needs a whole-parameter reduction first (LAMB's trust
    /// ratio): this pass reduced (and may have left the parameter unchanged), the returned
    /// kernel is built from what it reduced and runs over the same parameter next. `None`
    /// (the default): this pass was the update.
    fn then(&self) -> Option<Box<dyn Kernel>> {
        None
    }
}

/// Runs `kernel` in place over `slot`'s CPU parameter, gradient `g`, host state buffers and
/// master copy (fused path).
pub(crate) fn apply_slot(
    opt: &'static str,
    slot: &mut Slot,
    g: &Tensor,
    kernel: &dyn Kernel,
    parallel: bool,
) -> Result<()> {
    let var = slot.var.clone();
    let op = FusedStep {
        name: opt,
        kernel,
        parallel,
        bufs: Mutex::new(slot.bufs.iter_mut().map(|b| b.host_mut()).collect()),
        master: Mutex::new(slot.master.host_mut()),
    };
    var.as_tensor().inplace_op2(g, &op)?;
    Ok(())
}

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

/// Index of the first tensor of `ts` holding a NaN or ±Inf, if any: CPU tensors in one
/// parallel pass over all of them (chunks of [`CHUNK`]), others with candle ops on their device
/// ([`tensor_ops::first_non_finite`]).
pub(crate) fn first_non_finite(ts: &[&Tensor]) -> Result<Option<usize>> {
    let (cpu, dev): (Vec<_>, Vec<_>) = (0..ts.len()).partition(|&i| ts[i].device().is_cpu());
    let on_dev: Vec<&Tensor> = dev.iter().map(|&i| ts[i]).collect();
    let bad_dev = tensor_ops::first_non_finite(&on_dev)?.map(|k| dev[k]);
    let on_cpu: Vec<&Tensor> = cpu.iter().map(|&i| ts[i]).collect();
    let bad_cpu = first_non_finite_host(&on_cpu)?.map(|k| cpu[k]);
    Ok(match (bad_dev, bad_cpu) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// [`first_non_finite`] over CPU tensors (others are skipped) with one parallel bit scan.
pub(crate) fn first_non_finite_host(ts: &[&Tensor]) -> Result<Option<usize>> {
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
    // Last chunk first: the step that follows updates the parameters from the first on, so
    // the gradients scanned last (the first ones) are still in the last-level cache then.
    items.reverse();
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
    Ok(found)
}

/// The in-place op: `p ← kernel(p, g, state)`; the state buffers ride along in the op.
struct FusedStep<'a> {
    name: &'static str,
    kernel: &'a dyn Kernel,
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

impl InplaceOp2 for FusedStep<'_> {
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
        match (ps, gs) {
            (CpuStorage::F32(p), CpuStorage::F32(g)) => self.step(p, pl, g, gl),
            (CpuStorage::F16(p), CpuStorage::F16(g)) => self.step(p, pl, g, gl),
            (CpuStorage::BF16(p), CpuStorage::BF16(g)) => self.step(p, pl, g, gl),
            (p, g) => {
                use candle_core::backend::BackendStorage;
                Err(candle_core::Error::DTypeMismatchBinaryOp {
                    lhs: p.dtype(),
                    rhs: g.dtype(),
                    op: self.name,
                })
            }
        }
    }
}

impl FusedStep<'_> {
    /// The update of one parameter of element type `T`, in parallel chunks of [`CHUNK`]
    /// elements when it is large and the step is not already running on the pool.
    fn step<T: Element>(
        &self,
        p: &mut [T],
        pl: &Layout,
        g: &[T],
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let mut bufs = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        let mut master = self.master.lock().unwrap_or_else(|e| e.into_inner());
        let (p, g) = (
            contiguous_mut(p, pl, self.name)?,
            contiguous(g, gl, self.name)?,
        );
        let n = p.len().min(g.len());
        let mut whole = Task {
            at: 0,
            p: &mut p[..n],
            g: &g[..n],
            master: &mut master,
            s: bufs.iter_mut().map(|b| &mut **b).collect(),
        };
        if n <= CHUNK || !self.parallel {
            whole.run(self.kernel);
        } else {
            par_each(whole.chunks(), |_, t, _: &mut ()| t.run(self.kernel));
        }
        Ok(())
    }
}

/// The update's work on one range of a parameter: the parameter, gradient, master copy (empty
/// for f32 parameters) and each state buffer (empty when unused).
struct Task<'a, T> {
    /// Index of `p[0]` in the whole parameter.
    at: usize,
    p: &'a mut [T],
    g: &'a [T],
    master: &'a mut [f32],
    s: Vec<&'a mut [f32]>,
}

impl<'a, T: Element> Task<'a, T> {
    /// This range split into tasks of [`CHUNK`] elements (empty parts stay empty).
    fn chunks(self) -> Vec<Task<'a, T>> {
        let mut bufs: Vec<_> = self.s.into_iter().map(|b| b.chunks_mut(CHUNK)).collect();
        let mut masters = self.master.chunks_mut(CHUNK);
        let parts = self.p.chunks_mut(CHUNK).zip(self.g.chunks(CHUNK));
        let at = self.at;
        let task = |(k, (p, g))| Task {
            at: at + k * CHUNK,
            p,
            g,
            master: masters.next().unwrap_or(&mut []),
            s: bufs
                .iter_mut()
                .map(|it| it.next().unwrap_or(&mut []))
                .collect(),
        };
        parts.enumerate().map(task).collect()
    }

    /// The kernel over this range: directly on f32 parameters; for f16/bf16 through f32 stack
    /// blocks read from the master copy (re-seeded from the stored value wherever that no
    /// longer rounds to it, i.e. the parameter was changed from outside), written back to the
    /// master copy and rounded into the parameter.
    fn run(&mut self, k: &dyn Kernel) {
        let Task {
            at,
            p,
            g,
            master,
            s,
        } = self;
        if let Some(g32) = T::as_f32(g) {
            if let Some(p32) = T::as_f32_mut(p) {
                k.run_at(p32, g32, s, 0, *at);
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
            k.run_at(&mut pb[..m], &gb[..m], s, o, *at + o);
            for ((d, x), mv) in pc.iter_mut().zip(pb.iter()).zip(mc.iter_mut()) {
                *mv = *x;
                *d = T::from_f32(*x);
            }
            o += m;
        }
    }
}
