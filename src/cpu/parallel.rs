//! The one parallel-split API of the kernels, on candle's own CPU worker pool.
//!
//! [`par_fold`] runs indexed items with a per-worker state; [`par_each`] hands each task the part
//! of the work it owns (disjoint `&mut` borrows, no `unsafe`); [`par_parts`] is its case of up to
//! `K` outputs of one element type, [`par_tasks`] the common one-output, fixed-chunk case. [`SharedMut`] is left for the few writers (a `gemm` call into a strided block)
//! that cannot be expressed as disjoint slices.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Threads of the pool [`par_fold`] runs on (its workers plus the caller).
pub(crate) fn num_threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

/// Items of `item_len` values one task takes: enough for 16 K values, so tiny items (global
/// pooling of 7×7 planes) do not pay one task each.
pub(crate) fn items_per_task(item_len: usize) -> usize {
    (16 * 1024 / item_len.max(1)).max(1)
}

/// Runs `f(i, state)` for every `i` in `0..n` in parallel on candle's own CPU worker pool
/// (`candle_core::utils::barrier_pool`, sized by `CANDLE_NUM_THREADS` / `RAYON_NUM_THREADS` like
/// the rest of candle) and returns, once all are done, the `S::default()` state of every worker
/// that ran at least one item (scratch buffers, or partial sums to reduce).
///
/// Why not rayon's global pool: candle 0.11 runs its element-wise ops on that barrier pool, whose
/// workers spin for a while after each op. In a training step (our op between candle ops) the
/// two pools' threads then compete for the same cores; on a 2-core machine forward + backward of
/// the depthwise convolution ran 10-40% slower on rayon than here, with identical kernel times in
/// isolation. The pool hands out items dynamically, so a busy core does not stall the others.
pub(crate) fn par_fold<S: Default + Send>(
    n: usize,
    f: impl Fn(usize, &mut S) + Sync + Send,
) -> Vec<S> {
    let pool = candle_core::utils::barrier_pool();
    let workers = num_threads();
    // Small grabs from a shared cursor: a worker slowed down by another process on its core
    // holds back at most one grab (`execute_chunked` alone hands out n / (8 * workers) at once).
    let grab = n.div_ceil(64 * workers).max(1);
    let cursor = AtomicUsize::new(0);
    let states = Mutex::new(Vec::with_capacity(workers));
    // One item per worker; nested calls (from inside the pool) run the loop inline.
    pool.execute_chunked(workers, |_| {
        let mut state: Option<S> = None;
        loop {
            let start = cursor.fetch_add(grab, Ordering::Relaxed);
            if start >= n {
                break;
            }
            let st = state.get_or_insert_with(S::default);
            for i in start..(start + grab).min(n) {
                f(i, st);
            }
        }
        if let Some(st) = state {
            states.lock().unwrap_or_else(|e| e.into_inner()).push(st);
        }
    });
    states.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f(i, &mut tasks[i], state)` for every task, in parallel on [`par_fold`]'s pool: each
/// task owns its part of the work (disjoint `&mut` slices, say). Returns the per-worker states.
///
/// Each task sits behind its own (uncontended) mutex, so workers take their disjoint borrows
/// without `unsafe`. One task runs inline, without waking the pool.
pub(crate) fn par_each<P: Send, S: Default + Send>(
    mut tasks: Vec<P>,
    f: impl Fn(usize, &mut P, &mut S) + Sync + Send,
) -> Vec<S> {
    if tasks.len() <= 1 {
        let mut st = S::default();
        if let Some(t) = tasks.first_mut() {
            f(0, t, &mut st);
        }
        return vec![st];
    }
    let slots: Vec<Mutex<P>> = tasks.into_iter().map(Mutex::new).collect();
    par_fold(slots.len(), |i, st: &mut S| {
        let mut task = slots[i].lock().unwrap_or_else(|e| e.into_inner());
        f(i, &mut task, st);
    })
}

/// [`par_each`] over `tasks` tasks where task `i` gets `parts[i]` of each of up to `K` outputs
/// (an empty slice once output `k` has no more parts: an absent output is an empty list).
pub(crate) fn par_parts<T: Send, S: Default + Send, const K: usize>(
    tasks: usize,
    parts: [Vec<&mut [T]>; K],
    f: impl Fn(usize, &mut [&mut [T]; K], &mut S) + Sync + Send,
) -> Vec<S> {
    let mut iters = parts.map(Vec::into_iter);
    let mut next =
        || -> [&mut [T]; K] { std::array::from_fn(|k| iters[k].next().unwrap_or_default()) };
    par_each((0..tasks).map(|_| next()).collect(), f)
}

/// Runs `f(i, chunk, scratch)` for every `chunk_len`-sized chunk `i` of `out` (the last may be
/// shorter) on [`par_parts`]; each worker owns one `S::default()` scratch for all the chunks it
/// takes. Returns once every chunk is done.
pub(crate) fn par_tasks<T: Send, S: Default + Send>(
    out: &mut [T],
    chunk_len: usize,
    f: impl Fn(usize, &mut [T], &mut S) + Sync + Send,
) {
    let chunks: Vec<&mut [T]> = out.chunks_mut(chunk_len.max(1)).collect();
    par_parts(chunks.len(), [chunks], |i, [chunk], st: &mut S| {
        f(i, chunk, st)
    });
}

/// A vector of `n` values written by `fill(task, part, scratch)` on [`par_tasks`] in parts of
/// `chunk` (the last may be shorter), allocated without zeroing: for a memory-bound kernel a
/// zeroing pass costs as much as its own writes. An allocation that fails is an error naming `op`.
///
/// # Safety
/// `fill` writes every element of every part it is given.
pub(crate) unsafe fn par_filled<T: Send, S: Default + Send>(
    op: &'static str,
    n: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>], &mut S) + Sync + Send,
) -> crate::Result<Vec<T>> {
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| crate::Error::config(op, format!("cannot allocate {n} elements")))?;
    par_tasks(&mut v.spare_capacity_mut()[..n], chunk, fill);
    // SAFETY: the capacity is at least `n`, and `fill` wrote all `n` elements (contract).
    unsafe { v.set_len(n) };
    Ok(v)
}

/// A raw pointer parallel tasks share, for writers that cannot take disjoint slices (a `gemm`
/// call writing a strided block); every write documents why the regions are disjoint.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(*mut f32);
// SAFETY: only used to hand disjoint regions of one buffer to parallel tasks (see each use);
// the buffer outlives the tasks, which `par_fold` joins before returning.
unsafe impl Send for SharedMut {}
// SAFETY: as for `Send`: tasks sharing a `SharedMut` write disjoint regions only.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// Shares `buf`'s elements; the caller keeps `buf` alive and unborrowed while tasks write.
    pub(crate) fn new(buf: &mut [f32]) -> Self {
        SharedMut(buf.as_mut_ptr())
    }

    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    #[inline(always)]
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}
