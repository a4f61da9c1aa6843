//! Plumbing shared by the CPU kernels: element conversion to the f32 accumulator, access to a
//! contiguous slice of a candle storage, shape checks of op arguments, the dtype dispatch, f32
//! views of storages and the rounding back, and the worker pool the kernels run on.

use std::borrow::Cow;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType};
use half::{bf16, f16};

/// An element type our kernels read and write; arithmetic always happens in f32.
pub(crate) trait Element: WithDType + Copy + Send + Sync + 'static {
    /// Widen to the f32 accumulator.
    fn to_f32(self) -> f32;
    /// Round the f32 accumulator to this type.
    fn from_f32(v: f32) -> Self;
    /// A zero-copy f32 view when the element *is* f32 (kernels then skip their scratch copy).
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        let _ = s;
        None
    }
    /// Mutable counterpart of [`Element::as_f32`].
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        let _ = s;
        None
    }
}

/// `n` zeros of `T`, or an error naming `block` when the allocator cannot provide them: an output
/// sized by a config (pool or upsample sizes, convolution padding) must fail as an `Error`, not
/// abort the process. Like `vec![0; n]`, the zeroed pages come lazily from the allocator.
pub(crate) fn try_zeros<T: Element>(block: &'static str, n: usize) -> crate::Result<Vec<T>> {
    let fail = || {
        let bytes = (n as u128) * std::mem::size_of::<T>() as u128;
        crate::Error::config(
            block,
            format!("cannot allocate {n} elements ({bytes} bytes)"),
        )
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(n).map_err(|_| fail())?;
    // SAFETY: `layout` has a non-zero size: n > 0 and every `Element` is a 2- or 4-byte float.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(fail());
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of exactly `n` `T`s (so
    // capacity `n` describes the allocation), and the all-zero bit pattern is 0.0 for every
    // `Element` (f32, f16, bf16 only), so all `n` elements are initialised.
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// Replaces the contents of `dst` by `src` widened to f32 (reusing its allocation).
pub(crate) fn widen<T: Element>(src: &[T], dst: &mut Vec<f32>) {
    dst.clear();
    dst.extend(src.iter().map(|v| v.to_f32()));
}

impl Element for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        Some(s)
    }
}

impl Element for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl Element for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

/// The contiguous part of `data` that `layout` describes; kernels require contiguous inputs
/// (the public op functions call `.contiguous()` before applying the op).
pub(crate) fn contiguous<'a, T>(
    data: &'a [T],
    layout: &Layout,
    op: &'static str,
) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => Err(candle_core::Error::RequiresContiguous { op }),
    }
}

/// Runs `$body` with `$T` bound to the element type of the float storage `$s` and `$v` to its
/// slice; other dtypes become an `UnsupportedDTypeForOp` error naming `$op`.
macro_rules! dispatch_float {
    ($s:expr, $op:expr, |$v:ident : $T:ident| $body:expr) => {
        match $s {
            candle_core::CpuStorage::F32($v) => {
                type $T = f32;
                $body
            }
            candle_core::CpuStorage::F16($v) => {
                type $T = half::f16;
                $body
            }
            candle_core::CpuStorage::BF16($v) => {
                type $T = half::bf16;
                $body
            }
            other => Err(candle_core::Error::UnsupportedDTypeForOp(
                candle_core::backend::BackendStorage::dtype(other),
                $op,
            )),
        }
    };
}
pub(crate) use dispatch_float;

/// Runs `$body` with `$a`, `$b` bound to the slices of two float storages `$s1`, `$s2` of one
/// element type `$T`; mixed dtypes become a `DTypeMismatchBinaryOp` error and other dtypes an
/// `UnsupportedDTypeForOp` error, both naming `$op`.
macro_rules! dispatch_float_pair {
    ($s1:expr, $s2:expr, $op:expr, |$a:ident, $b:ident : $T:ident| $body:expr) => {
        match ($s1, $s2) {
            (candle_core::CpuStorage::F32($a), candle_core::CpuStorage::F32($b)) => {
                type $T = f32;
                $body
            }
            (candle_core::CpuStorage::F16($a), candle_core::CpuStorage::F16($b)) => {
                type $T = half::f16;
                $body
            }
            (candle_core::CpuStorage::BF16($a), candle_core::CpuStorage::BF16($b)) => {
                type $T = half::bf16;
                $body
            }
            (s1, s2) => {
                use candle_core::backend::BackendStorage;
                if s1.dtype() != s2.dtype() {
                    Err(candle_core::Error::DTypeMismatchBinaryOp {
                        lhs: s1.dtype(),
                        rhs: s2.dtype(),
                        op: $op,
                    })
                } else {
                    Err(candle_core::Error::UnsupportedDTypeForOp(s1.dtype(), $op))
                }
            }
        }
    };
}
pub(crate) use dispatch_float_pair;

/// Checks that an op argument has the shape the op's geometry promises (the public functions
/// guarantee it; this keeps a misuse from indexing out of bounds).
pub(crate) fn expect_shape(op: &'static str, l: &Layout, shape: &Shape) -> Result<()> {
    if l.shape() != shape {
        return Err(candle_core::Error::ShapeMismatchBinaryOp {
            lhs: l.shape().clone(),
            rhs: shape.clone(),
            op,
        });
    }
    Ok(())
}

/// The backward of a convolution op `(x, w) -> y` whose two gradients are themselves ops:
/// `grad_x = grad_input(grad_y, w)` and `grad_w = grad_weight(x, grad_y)`, applied on contiguous
/// tensors without a graph of their own (no second derivatives).
pub(crate) fn conv_bwd(
    x: &Tensor,
    w: &Tensor,
    grad_y: &Tensor,
    grad_input: &impl CustomOp2,
    grad_weight: &impl CustomOp2,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let grad = grad_y.contiguous()?;
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let gx = grad.apply_op2_no_bwd(&w, grad_input)?;
    let gw = x.apply_op2_no_bwd(&grad, grad_weight)?;
    Ok((Some(gx), Some(gw)))
}

/// Values per conversion task in [`f32_view`] and [`store`].
const CONVERT_CHUNK: usize = 64 * 1024;

/// `dst[i] = f(src[i])`, in parallel chunks on [`par_tasks`].
fn convert<S: Copy + Sync, D: Copy + Send>(
    src: &[S],
    zero: D,
    f: impl Fn(S) -> D + Sync + Send,
) -> Vec<D> {
    let mut dst = vec![zero; src.len()];
    par_tasks(&mut dst, CONVERT_CHUNK, |i, out, _: &mut ()| {
        for (d, s) in out.iter_mut().zip(&src[i * CONVERT_CHUNK..]) {
            *d = f(*s);
        }
    });
    dst
}

/// The contiguous values of a float storage as f32: borrowed for f32, widened for f16/bf16.
pub(crate) fn f32_view<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &'static str,
) -> Result<Cow<'a, [f32]>> {
    match s {
        CpuStorage::F32(v) => Ok(Cow::Borrowed(contiguous(v, l, op)?)),
        other => dispatch_float!(other, op, |v: T| {
            let v = contiguous(v, l, op)?;
            Ok(Cow::Owned(convert(v, 0f32, T::to_f32)))
        }),
    }
}

/// A dtype and two f32 views of storages of that dtype.
pub(crate) type F32Pair<'a> = (DType, Cow<'a, [f32]>, Cow<'a, [f32]>);

/// Both arguments as f32 views ([`f32_view`]), after checking they share a dtype; returns that
/// dtype too.
pub(crate) fn f32_pair<'a>(
    s1: &'a CpuStorage,
    l1: &Layout,
    s2: &'a CpuStorage,
    l2: &Layout,
    op: &'static str,
) -> Result<F32Pair<'a>> {
    if s1.dtype() != s2.dtype() {
        return Err(candle_core::Error::DTypeMismatchBinaryOp {
            lhs: s1.dtype(),
            rhs: s2.dtype(),
            op,
        });
    }
    Ok((s1.dtype(), f32_view(s1, l1, op)?, f32_view(s2, l2, op)?))
}

/// A storage of `dtype` holding the f32 result `v`: moved as is for f32, rounded once for
/// f16/bf16.
pub(crate) fn store(dtype: DType, v: Vec<f32>, op: &'static str) -> Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(v),
        DType::F16 => CpuStorage::F16(convert(&v, f16::ZERO, f16::from_f32)),
        DType::BF16 => CpuStorage::BF16(convert(&v, bf16::ZERO, bf16::from_f32)),
        other => return Err(candle_core::Error::UnsupportedDTypeForOp(other, op)),
    })
}

/// Runs `f(i, chunk, scratch)` for every `chunk_len`-sized chunk `i` of `out` (the last may be
/// shorter), in parallel on [`par_fold`]'s pool; each worker owns one `S::default()` scratch for
/// all the chunks it takes. Returns once every chunk is done.
///
/// Each chunk sits behind its own (uncontended) mutex so that workers can take disjoint `&mut`
/// chunks without `unsafe`.
pub(crate) fn par_tasks<T: Send, S: Default + Send>(
    out: &mut [T],
    chunk_len: usize,
    f: impl Fn(usize, &mut [T], &mut S) + Sync + Send,
) {
    use std::sync::Mutex;
    let chunk_len = chunk_len.max(1);
    if out.len() <= chunk_len {
        // One task: no need to wake the pool.
        if !out.is_empty() {
            f(0, out, &mut S::default());
        }
        return;
    }
    let slots: Vec<Mutex<&mut [T]>> = out.chunks_mut(chunk_len).map(Mutex::new).collect();
    par_fold(slots.len(), |i, scr: &mut S| {
        let mut chunk = slots[i].lock().unwrap_or_else(|e| e.into_inner());
        f(i, &mut chunk, scr);
    });
}

/// Threads of the pool [`par_fold`] and [`par_tasks`] run on (its workers plus the caller).
pub(crate) fn num_threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
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

/// Per-volume scratch, in elements, that a padded-copy kernel may use before a convolution
/// switches to [`DirectConv`]: four times the input plus output it already holds, plus 64 Ki
/// (so that small maps with ordinary padding always take the fast path).
pub(crate) fn padded_copy_fits(padded: Option<usize>, input: usize, output: usize) -> bool {
    let budget = input
        .saturating_add(output)
        .saturating_mul(4)
        .saturating_add(1 << 16);
    matches!(padded, Some(p) if p <= budget)
}

/// One spatial axis of a convolution: output `o` with tap `k` reads input `o·s + k·d − before`
/// when that lies in `[0, n)` (the padding is implicit, never materialized).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Axis {
    /// Input length.
    pub n: usize,
    /// Kernel taps.
    pub k: usize,
    /// Output length.
    pub o: usize,
    /// Stride (> 0).
    pub s: usize,
    /// Dilation (> 0).
    pub d: usize,
    /// Zeros padded before the input.
    pub before: usize,
}

impl Axis {
    /// The taps `lo..hi` of output `o` that read the input, and the input index of tap `lo`
    /// (tap `k` reads `first + (k − lo)·d`). Exact in i128 for any usize geometry.
    #[inline]
    fn taps(&self, o: usize) -> (usize, usize, usize) {
        let (s, d, k) = (self.s as i128, self.d.max(1) as i128, self.k as i128);
        let start = o as i128 * s - self.before as i128;
        // First k with start + k·d >= 0, last k with start + k·d <= n − 1.
        let lo = if start >= 0 { 0 } else { (-start + d - 1) / d };
        let hi = (self.n as i128 - 1 - start).div_euclid(d) + 1;
        let (lo, hi) = (lo.min(k), hi.clamp(0, k));
        if hi <= lo {
            return (0, 0, 0);
        }
        // In [0, n) by construction, so the casts are exact.
        (lo as usize, hi as usize, (start + lo * d) as usize)
    }
}

/// A grouped 3-D convolution (a 1-D or 2-D one has unit leading axes) computed straight from its
/// definition, without a padded copy of the input: memory is O(input + output) whatever the
/// padding, stride or dilation, and the work is one multiply-add per tap that reads the input.
/// The fast kernels fall back to it when their padded scratch would dwarf the tensors (a huge
/// stride, dilation or padding with a small output).
///
/// Layouts: input `(B, Cin, n0, n1, n2)`, weight `(Cout, Cin/groups, k0, k1, k2)`, output
/// `(B, Cout, o0, o1, o2)`, all f32 and contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirectConv {
    pub b: usize,
    pub cin: usize,
    pub cout: usize,
    pub groups: usize,
    pub axes: [Axis; 3],
}

impl DirectConv {
    fn in_vol(&self) -> usize {
        self.axes.iter().map(|a| a.n).product()
    }
    fn out_vol(&self) -> usize {
        self.axes.iter().map(|a| a.o).product()
    }
    fn taps(&self) -> usize {
        self.axes.iter().map(|a| a.k).product()
    }
    fn cig(&self) -> usize {
        self.cin / self.groups.max(1)
    }
    fn cog(&self) -> usize {
        self.cout / self.groups.max(1)
    }

    /// Calls `f(output index, input index, tap index)` for every tap of every output position of
    /// one volume that reads the input (flat indices within a volume / a kernel).
    #[inline]
    fn visit(&self, mut f: impl FnMut(usize, usize, usize)) {
        let [a0, a1, a2] = self.axes;
        for o0 in 0..a0.o {
            let (l0, h0, i0) = a0.taps(o0);
            for o1 in 0..a1.o {
                let (l1, h1, i1) = a1.taps(o1);
                for o2 in 0..a2.o {
                    let (l2, h2, i2) = a2.taps(o2);
                    let out = (o0 * a1.o + o1) * a2.o + o2;
                    for (j0, k0) in (l0..h0).enumerate() {
                        let x0 = i0 + j0 * a0.d;
                        for (j1, k1) in (l1..h1).enumerate() {
                            let x1 = i1 + j1 * a1.d;
                            let row = (x0 * a1.n + x1) * a2.n;
                            let tap = (k0 * a1.k + k1) * a2.k;
                            for (j2, k2) in (l2..h2).enumerate() {
                                f(out, row + i2 + j2 * a2.d, tap + k2);
                            }
                        }
                    }
                }
            }
        }
    }

    /// `y = conv(x, w)`.
    pub(crate) fn forward(&self, x: &[f32], w: &[f32]) -> crate::Result<Vec<f32>> {
        let (iv, ov, kk, cig, cog) = (
            self.in_vol(),
            self.out_vol(),
            self.taps(),
            self.cig(),
            self.cog(),
        );
        let mut y = try_zeros::<f32>("convolution", self.b * self.cout * ov)?;
        par_tasks(&mut y, ov, |i, yv, _: &mut ()| {
            let (bi, co) = (i / self.cout, i % self.cout);
            let c0 = co / cog * cig;
            for ci in 0..cig {
                let xv = &x[(bi * self.cin + c0 + ci) * iv..][..iv];
                let wk = &w[(co * cig + ci) * kk..][..kk];
                self.visit(|o, xi, t| yv[o] += wk[t] * xv[xi]);
            }
        });
        Ok(y)
    }

    /// `grad_x` from `grad_y` and `w`: one task per input volume, so writes never overlap.
    pub(crate) fn grad_input(&self, gy: &[f32], w: &[f32]) -> Vec<f32> {
        let (iv, ov, kk, cig, cog) = (
            self.in_vol(),
            self.out_vol(),
            self.taps(),
            self.cig(),
            self.cog(),
        );
        let mut gx = vec![0f32; self.b * self.cin * iv];
        par_tasks(&mut gx, iv, |i, gxv, _: &mut ()| {
            let (bi, ci) = (i / self.cin, i % self.cin);
            let (grp, cil) = (ci / cig, ci % cig);
            for co in grp * cog..(grp + 1) * cog {
                let gyv = &gy[(bi * self.cout + co) * ov..][..ov];
                let wk = &w[(co * cig + cil) * kk..][..kk];
                self.visit(|o, xi, t| gxv[xi] += gyv[o] * wk[t]);
            }
        });
        gx
    }

    /// `grad_w` from `x` and `grad_y`: one task per output channel, summed over the batch.
    pub(crate) fn grad_weight(&self, x: &[f32], gy: &[f32]) -> Vec<f32> {
        let (iv, ov, kk, cig, cog) = (
            self.in_vol(),
            self.out_vol(),
            self.taps(),
            self.cig(),
            self.cog(),
        );
        let mut gw = vec![0f32; self.cout * cig * kk];
        par_tasks(&mut gw, cig * kk, |co, gwc, _: &mut ()| {
            let c0 = co / cog * cig;
            for bi in 0..self.b {
                let gyv = &gy[(bi * self.cout + co) * ov..][..ov];
                for ci in 0..cig {
                    let xv = &x[(bi * self.cin + c0 + ci) * iv..][..iv];
                    let gk = &mut gwc[ci * kk..][..kk];
                    self.visit(|o, xi, t| gk[t] += gyv[o] * xv[xi]);
                }
            }
        });
        gw
    }
}
