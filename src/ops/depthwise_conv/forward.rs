//! CPU kernels of the forward pass, and the scratch layout the backward kernels share.

use super::Geom;
use crate::cpu::{par_tasks, round_into, try_zeros, Element, Isa, Kernel, Level};
use crate::Result;

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// Layout of the per-task f32 scratch plane: the input plane with its zero padding, each padded
/// row split into its `sx` phases (phase `p` holds padded columns `p, p + sx, …`), so that every
/// tap of every output row reads a contiguous run and no border needs special handling.
pub(super) struct Plan {
    /// Values per phase of a padded row: `ceil((pl + W + pr) / sx)`.
    pub(super) wq: usize,
    /// Length of a padded, phased row: `sx * wq`.
    pub(super) rl: usize,
    /// Scratch length: `hp * rl` plus slack so the last row's widest block stays inside.
    pub(super) len: usize,
    /// Per tap `ky * kw + kx`: where output `(0, 0)` reads, `ky·dy·rl + (kx·dx mod sx)·wq +
    /// kx·dx div sx`; output `(oy, ox)` reads `oy·sy·rl + ox` further.
    pub(super) tap_off: Vec<usize>,
}

/// Scratch slack after the padded plane (floats): a row narrower than a block reads up to 15
/// values past its end (see [`fwd_row`]).
const SLACK: usize = 16;

impl Plan {
    pub(super) fn new(g: &Geom) -> Self {
        let hp = g.pt + g.h + g.pb;
        let wq = (g.pl + g.w + g.pr).div_ceil(g.sx);
        let rl = g.sx * wq;
        let tap_off = (0..g.kh)
            .flat_map(|ky| {
                (0..g.kw).map(move |kx| {
                    let c = kx * g.dx;
                    ky * g.dy * rl + (c % g.sx) * wq + c / g.sx
                })
            })
            .collect();
        Plan {
            wq,
            rl,
            len: hp * rl + SLACK,
            tap_off,
        }
    }
}

/// The tap count: `NT` when the kernel size is known at compile time (loops unroll), else `n`.
#[inline(always)]
pub(super) fn ntaps<const NT: usize>(n: usize) -> usize {
    if NT > 0 {
        NT
    } else {
        n
    }
}

/// `dst[p * wq + q] = src[q * sx + p]`: one padded row into its phases (any stride).
#[inline(always)]
fn deinterleave(src: &[f32], dst: &mut [f32], sx: usize, wq: usize) {
    for (q, group) in src.chunks_exact(sx).enumerate() {
        for (p, v) in group.iter().enumerate() {
            dst[p * wq + q] = *v;
        }
    }
}

/// `dst[q * sx + p] = src[p * wq + q]`: phases back into one padded row (any stride).
#[inline(always)]
fn interleave(src: &[f32], dst: &mut [f32], sx: usize, wq: usize) {
    for (q, group) in dst.chunks_exact_mut(sx).enumerate() {
        for (p, v) in group.iter_mut().enumerate() {
            *v = src[p * wq + q];
        }
    }
}

/// `a[j] = src[2j]`, `b[j] = src[2j + 1]` for `j < src.len() / 2` (written with indices so
/// LLVM vectorises the stride-2 loads).
#[inline(always)]
fn split_pairs<T: Element>(src: &[T], a: &mut [f32], b: &mut [f32]) {
    let n = (src.len() / 2).min(a.len()).min(b.len());
    let (src, a, b) = (&src[..2 * n], &mut a[..n], &mut b[..n]);
    for j in 0..n {
        a[j] = src[2 * j].to_f32();
        b[j] = src[2 * j + 1].to_f32();
    }
}

/// `dst[2j] = T(a[j])`, `dst[2j + 1] = T(b[j])` for `j < dst.len() / 2`.
#[inline(always)]
fn join_pairs<T: Element>(a: &[f32], b: &[f32], dst: &mut [T]) {
    let n = (dst.len() / 2).min(a.len()).min(b.len());
    let (dst, a, b) = (&mut dst[..2 * n], &a[..n], &b[..n]);
    for j in 0..n {
        dst[2 * j] = T::from_f32(a[j]);
        dst[2 * j + 1] = T::from_f32(b[j]);
    }
}

/// For stride 2: the phase arrays `(first, second)` and offsets such that input column `2j`
/// lives at `first[k1 + j]` and column `2j + 1` at `second[k2 + j]` (the left padding `pl`
/// decides which phase is which).
#[inline(always)]
fn stride2_phases(pl: usize) -> (bool, usize, usize) {
    let k = pl / 2;
    if pl.is_multiple_of(2) {
        (false, k, k)
    } else {
        (true, k, k + 1)
    }
}

/// Widens one `(H, W)` plane into the padded, phased layout of `plan`. `dst` is dedicated to this
/// role: its padding is zeroed once and never written afterwards. `row` is a scratch row.
#[inline(always)]
pub(super) fn load_padded<T: Element>(
    g: &Geom,
    plan: &Plan,
    src: &[T],
    dst: &mut Vec<f32>,
    row: &mut Vec<f32>,
) {
    if dst.len() != plan.len {
        dst.clear();
        dst.resize(plan.len, 0.0);
    }
    if g.sx > 2 && row.len() != plan.rl {
        row.clear();
        row.resize(plan.rl, 0.0);
    }
    let (swap, k1, k2) = stride2_phases(g.pl);
    let rows = dst[g.pt * plan.rl..].chunks_exact_mut(plan.rl);
    for (srow, drow) in src.chunks_exact(g.w).zip(rows) {
        match g.sx {
            1 => {
                for (d, s) in drow[g.pl..g.pl + g.w].iter_mut().zip(srow) {
                    *d = s.to_f32();
                }
            }
            2 => {
                let (even, odd) = drow.split_at_mut(plan.wq);
                let (first, second) = if swap { (odd, even) } else { (even, odd) };
                split_pairs(srow, &mut first[k1..], &mut second[k2..]);
                if g.w % 2 == 1 {
                    first[k1 + g.w / 2] = srow[g.w - 1].to_f32();
                }
            }
            _ => {
                for (d, s) in row[g.pl..g.pl + g.w].iter_mut().zip(srow) {
                    *d = s.to_f32();
                }
                deinterleave(row, drow, g.sx, plan.wq);
            }
        }
    }
}

/// Rounds the unpadded part of a padded, phased plane into an `(H, W)` plane.
#[inline(always)]
pub(super) fn store_unpadded<T: Element>(
    g: &Geom,
    plan: &Plan,
    src: &[f32],
    dst: &mut [T],
    row: &mut Vec<f32>,
) {
    if g.sx > 2 && row.len() != plan.rl {
        row.clear();
        row.resize(plan.rl, 0.0);
    }
    let (swap, k1, k2) = stride2_phases(g.pl);
    let rows = src[g.pt * plan.rl..].chunks_exact(plan.rl);
    for (srow, drow) in rows.zip(dst.chunks_exact_mut(g.w)) {
        match g.sx {
            1 => {
                for (d, s) in drow.iter_mut().zip(&srow[g.pl..g.pl + g.w]) {
                    *d = T::from_f32(*s);
                }
            }
            2 => {
                let (even, odd) = srow.split_at(plan.wq);
                let (first, second) = if swap { (odd, even) } else { (even, odd) };
                join_pairs(&first[k1..], &second[k2..], drow);
                if g.w % 2 == 1 {
                    drow[g.w - 1] = T::from_f32(first[k1 + g.w / 2]);
                }
            }
            _ => {
                interleave(srow, row, g.sx, plan.wq);
                for (d, s) in drow.iter_mut().zip(&row[g.pl..g.pl + g.w]) {
                    *d = T::from_f32(*s);
                }
            }
        }
    }
}

/// Reusable per-worker buffers; each has one role so `load_padded` can keep its zero padding.
#[derive(Default)]
pub(super) struct Scratch {
    /// Padded input plane (forward, grad-weight); only `load_padded` writes it.
    pub(super) pad: Vec<f32>,
    /// Padded input gradient (grad-input).
    pub(super) gpad: Vec<f32>,
    /// One padded row, for the phase (de)interleave.
    pub(super) row: Vec<f32>,
    /// f32 copy of output or output-gradient planes (f16/bf16 only).
    pub(super) wide: Vec<f32>,
    /// Weight-gradient accumulators.
    pub(super) acc: Vec<f32>,
}

/// Weights widened to f32 once per call.
pub(super) fn weights_f32<T: Element>(w: &[T]) -> Vec<f32> {
    w.iter().map(|v| v.to_f32()).collect()
}

// --- forward --------------------------------------------------------------------------------

/// `L` consecutive outputs of one row: every tap accumulated in registers. Tap `t` reads
/// `xin[base + tap_off[t]..][..L]`.
#[inline(always)]
fn fwd_block<const L: usize, const NT: usize, S: Isa>(
    xin: &[f32],
    base: usize,
    tap_off: &[usize],
    w: &[f32],
) -> [f32; L] {
    let mut acc = [0f32; L];
    for t in 0..ntaps::<NT>(tap_off.len()) {
        let (off, wv) = (base + tap_off[t], w[t]);
        let src = &xin[off..off + L];
        for l in 0..L {
            acc[l] = S::madd(wv, src[l], acc[l]);
        }
    }
    acc
}

/// Scratch for [`fwd_row`]'s narrow rows.
#[derive(Default)]
struct RowTmp {
    t32: [f32; 32],
    t16: [f32; 16],
    t8: [f32; 8],
}

/// `dst.copy_from_slice(&src[..dst.len()])` for a short `dst`, written so that it compiles to a
/// masked vector store instead of a `memcpy` call (which costs more than the row here).
#[inline(always)]
fn store_prefix<const L: usize>(dst: &mut [f32], src: &[f32; L]) {
    let n = dst.len().min(L);
    for l in 0..L {
        if l < n {
            dst[l] = src[l];
        }
    }
}

/// One output row `dst`, starting at offset `base` of the padded plane.
///
/// Blocks are as wide as the row allows (more independent accumulators hide the FMA latency)
/// and always stored at full width (a variable-length store keeps LLVM from vectorising the
/// accumulators): the last block overlaps its predecessor (outputs are written, not accumulated,
/// so recomputing a few is harmless), and a row narrower than a block is computed into `tmp`,
/// its extra lanes reading the next row or the scratch slack and being dropped.
#[inline(always)]
fn fwd_row<const NT: usize, S: Isa>(
    xin: &[f32],
    base: usize,
    tap_off: &[usize],
    w: &[f32],
    dst: &mut [f32],
    tmp: &mut RowTmp,
) {
    let n = dst.len();
    if n >= 32 {
        let mut i = 0;
        while i + 32 <= n {
            dst[i..i + 32].copy_from_slice(&fwd_block::<32, NT, S>(xin, base + i, tap_off, w));
            i += 32;
        }
        if i < n {
            let acc = fwd_block::<32, NT, S>(xin, base + n - 32, tap_off, w);
            dst[n - 32..].copy_from_slice(&acc);
        }
    } else if n > 16 {
        tmp.t32 = fwd_block::<32, NT, S>(xin, base, tap_off, w);
        store_prefix(dst, &tmp.t32);
    } else if n == 16 {
        dst.copy_from_slice(&fwd_block::<16, NT, S>(xin, base, tap_off, w));
    } else if n > 8 {
        tmp.t16 = fwd_block::<16, NT, S>(xin, base, tap_off, w);
        store_prefix(dst, &tmp.t16);
    } else if n == 8 {
        dst.copy_from_slice(&fwd_block::<8, NT, S>(xin, base, tap_off, w));
    } else {
        tmp.t8 = fwd_block::<8, NT, S>(xin, base, tap_off, w);
        store_prefix(dst, &tmp.t8);
    }
}

/// Writes the `m` output planes fed by one padded input plane into `out`.
#[inline(always)]
fn fwd_planes<const NT: usize, S: Isa>(
    g: &Geom,
    plan: &Plan,
    xin: &[f32],
    wk: &[f32],
    out: &mut [f32],
) {
    let step = g.sy * plan.rl;
    let mut tmp = RowTmp::default();
    for (wj, oplane) in wk
        .chunks_exact(g.taps())
        .zip(out.chunks_exact_mut(g.out_plane()))
    {
        for (oy, orow) in oplane.chunks_exact_mut(g.wo).enumerate() {
            fwd_row::<NT, S>(xin, oy * step, &plan.tap_off, wj, orow, &mut tmp);
        }
    }
}

/// Output values a forward task computes at least: a 7×7 output plane is ~100 ns of work, less
/// than handing out a task, so small planes are grouped.
const MIN_TASK_OUTPUTS: usize = 4096;

/// One forward task: input planes `first..` (`H·W` each, of `x`) into their `m` output planes
/// each, `out` (`m·Ho·Wo` per input plane).
struct FwdTask<'a, T> {
    g: &'a Geom,
    plan: &'a Plan,
    x: &'a [T],
    wk: &'a [f32],
    first: usize,
    out: &'a mut [T],
    scr: &'a mut Scratch,
}

impl<T: Element> Kernel for FwdTask<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let FwdTask {
            g,
            plan,
            x,
            wk,
            first,
            out,
            scr,
        } = self;
        let Scratch { pad, row, wide, .. } = scr;
        let (inp, mk) = (g.in_plane(), g.m * g.taps());
        for (k, out) in out.chunks_exact_mut(g.m * g.out_plane()).enumerate() {
            let i = first + k;
            load_padded(g, plan, &x[i * inp..(i + 1) * inp], pad, row);
            let c = i % g.c;
            let wk = &wk[c * mk..(c + 1) * mk];
            let (dst, round): (&mut [f32], bool) = match T::as_f32_mut(out) {
                Some(out) => (out, false),
                None => {
                    wide.clear();
                    wide.resize(out.len(), 0.0);
                    (&mut wide[..], true)
                }
            };
            match g.taps() {
                9 => fwd_planes::<9, S>(g, plan, pad, wk, dst),
                _ => fwd_planes::<0, S>(g, plan, pad, wk, dst),
            }
            if round {
                round_into(out, wide);
            }
        }
    }
}

pub(super) fn forward<T: Element>(g: &Geom, x: &[T], w: &[T]) -> Result<Vec<T>> {
    let level = Level::detect();
    let plan = Plan::new(g);
    let wk = weights_f32(w);
    let per_plane = g.m * g.out_plane();
    let planes = (MIN_TASK_OUTPUTS / per_plane.max(1)).max(1);
    let mut out = try_zeros::<T>("depthwise_conv", g.b * g.cm() * g.out_plane())?;
    par_tasks(&mut out, planes * per_plane, |t, out, scr: &mut Scratch| {
        let (plan, wk) = (&plan, &wk[..]);
        let first = t * planes;
        level.run(FwdTask {
            g,
            plan,
            x,
            wk,
            first,
            out,
            scr,
        })
    });
    Ok(out)
}
