//! The recurrence driver shared by both cells: the time loop with one `gemm` product per step,
//! forward and backward through time, threads across blocks of samples.
//!
//! Samples never interact in a recurrence, so each task owns a block of samples for the whole
//! sequence: no barrier per step. Buffers the tasks write are sample-major (`(B, L, ·)`), so a
//! task's part is one contiguous slice; a last pass lays the outputs out time-major. The weight
//! gradient is one `(G·H, B·L) × (B·L, H)` product after the time loop instead of one small
//! product per step.

use std::marker::PhantomData;

use super::cell::Cell;
use super::Geom;
use crate::cpu::gemm::{matmul, Parallelism, Strided};
use crate::cpu::{num_threads, par_parts, par_tasks, Isa, Kernel, Level};

/// What the forward keeps for the backward, sample-major and in step order: the gate
/// activations `(B, L, G·H)`, the cell's extra row `(B, L, H)` and the state before each step
/// `(B, L, H)`. Steps past a sample's length stay zero.
pub(super) struct Saved {
    act: Vec<f32>,
    aux: Vec<f32>,
    h_prev: Vec<f32>,
}

/// The gradients of the op's three operands: `xproj` `(L, B, G·H)`, `W_hh` `(G·H, H)` and the
/// packed `[b_hh | h0 | c0]`.
pub(super) struct Gradients {
    pub(super) xproj: Vec<f32>,
    pub(super) w_hh: Vec<f32>,
    pub(super) rest: Vec<f32>,
}

/// Samples per task: the batch spread over the threads.
fn rows_per_task(gm: &Geom) -> usize {
    gm.b.div_ceil(num_threads()).max(1)
}

/// `src` `(B, L, X)` written time-major into `dst` `(L, B, X)`.
fn time_major(src: &[f32], (b, l, x): (usize, usize, usize), dst: &mut [f32]) {
    par_tasks(dst, b * x, |t, step, _: &mut ()| {
        for (bi, row) in step.chunks_exact_mut(x).enumerate() {
            row.copy_from_slice(&src[(bi * l + t) * x..][..x]);
        }
    });
}

/// The longest sequence in samples `b0..b0 + nb`.
fn longest(gm: &Geom, b0: usize, nb: usize) -> usize {
    gm.lengths[b0..b0 + nb].iter().copied().max().unwrap_or(0)
}

/// One task of the forward: samples `b0..` through every step.
struct FwdTask<'a, 'b, C> {
    gm: &'a Geom,
    b0: usize,
    xproj: &'a [f32],
    w: &'a [f32],
    rest: &'a [f32],
    /// `[out (B-major, position order), h_n, c_n, act, aux, h_prev]` parts of this task.
    outs: &'a mut [&'b mut [f32]; 6],
    cell: PhantomData<C>,
}

impl<C: Cell> Kernel for FwdTask<'_, '_, C> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let gm = self.gm;
        let (l, h, gh) = (gm.l, gm.h, gm.gh());
        let [out, hn, cn, act, aux, h_prev] = self.outs;
        let nb = hn.len() / h;
        let save = !act.is_empty();
        let (bias, states) = self.rest.split_at(gh);
        let mut hs = states[self.b0 * h..][..nb * h].to_vec();
        let mut cs = if C::HAS_C {
            states[(gm.b + self.b0) * h..][..nb * h].to_vec()
        } else {
            Vec::new()
        };
        let mut hp = vec![0f32; nb * gh];
        let (mut act_tmp, mut aux_tmp) = (vec![0f32; gh], vec![0f32; h]);
        for s in 0..longest(gm, self.b0, nb) {
            // SAFETY: `hp` holds nb × gh values, `hs` nb × h, `w` (G·H, H) row-major read
            // transposed as h × gh; all are owned or borrowed by this task alone.
            unsafe {
                matmul(
                    (nb, gh, h),
                    Strided::rows(hp.as_mut_ptr(), gh),
                    false,
                    Strided::rows(hs.as_ptr(), h),
                    Strided::cols(self.w.as_ptr(), h),
                    1.0,
                    Parallelism::None,
                )
            }
            for r in 0..nb {
                let Some(p) = gm.position(self.b0 + r, s) else {
                    continue;
                };
                let x = &self.xproj[(p * gm.b + self.b0 + r) * gh..][..gh];
                let hpr = &mut hp[r * gh..][..gh];
                for (v, b) in hpr.iter_mut().zip(bias) {
                    *v += b;
                }
                let hrow = &mut hs[r * h..][..h];
                let crow: &mut [f32] = if C::HAS_C {
                    &mut cs[r * h..][..h]
                } else {
                    &mut []
                };
                let (a, x_aux) = if save {
                    let at = r * l + s;
                    h_prev[at * h..][..h].copy_from_slice(hrow);
                    (&mut act[at * gh..][..gh], &mut aux[at * h..][..h])
                } else {
                    (&mut act_tmp[..], &mut aux_tmp[..])
                };
                C::forward(x, hpr, hrow, crow, a, x_aux);
                out[(r * l + p) * h..][..h].copy_from_slice(hrow);
            }
        }
        hn.copy_from_slice(&hs);
        cn.copy_from_slice(&cs);
    }
}

/// The forward over the whole batch: the flat output `[out (L, B, H) | h_n (B, H) | c_n]` and,
/// when `save`, what the backward needs.
pub(super) fn forward<C: Cell>(
    gm: &Geom,
    xproj: &[f32],
    w: &[f32],
    rest: &[f32],
    save: bool,
) -> (Vec<f32>, Option<Saved>) {
    let (l, b, h, gh) = (gm.l, gm.b, gm.h, gm.gh());
    let per = rows_per_task(gm);
    let saved_len = |x: usize| if save { b * l * x } else { 0 };
    let mut out_bm = vec![0f32; b * l * h];
    let mut hn = vec![0f32; b * h];
    let mut cn = vec![0f32; if C::HAS_C { b * h } else { 0 }];
    let mut act = vec![0f32; saved_len(gh)];
    let mut aux = vec![0f32; saved_len(h)];
    let mut h_prev = vec![0f32; saved_len(h)];
    let level = Level::detect();
    let parts = [
        out_bm.chunks_mut(per * l * h).collect(),
        hn.chunks_mut(per * h).collect(),
        cn.chunks_mut(per * h).collect(),
        act.chunks_mut(per * l * gh).collect(),
        aux.chunks_mut(per * l * h).collect(),
        h_prev.chunks_mut(per * l * h).collect(),
    ];
    par_parts(b.div_ceil(per), parts, |i, outs, _: &mut ()| {
        level.run(FwdTask::<C> {
            gm,
            b0: i * per,
            xproj,
            w,
            rest,
            outs,
            cell: PhantomData,
        })
    });
    let mut flat = vec![0f32; gm.out_len()];
    let (seq, states) = flat.split_at_mut(l * b * h);
    time_major(&out_bm, (b, l, h), seq);
    let (hn_dst, cn_dst) = states.split_at_mut(b * h);
    hn_dst.copy_from_slice(&hn);
    cn_dst.copy_from_slice(&cn);
    let saved = save.then_some(Saved { act, aux, h_prev });
    (flat, saved)
}

/// One task of the backward: samples `b0..` back through every step.
struct BwdTask<'a, 'b, C> {
    gm: &'a Geom,
    b0: usize,
    w: &'a [f32],
    grad: &'a [f32],
    saved: &'a Saved,
    /// `[dxproj (B-major, position order), dhp (B-major, step order), dh0, dc0]` parts.
    outs: &'a mut [&'b mut [f32]; 4],
    cell: PhantomData<C>,
}

impl<C: Cell> Kernel for BwdTask<'_, '_, C> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let gm = self.gm;
        let (l, b, h, gh) = (gm.l, gm.b, gm.h, gm.gh());
        let [dx, dhp, dh0, dc0] = self.outs;
        let nb = dh0.len() / h;
        let (dout, dstates) = self.grad.split_at(l * b * h);
        let mut dh = dstates[self.b0 * h..][..nb * h].to_vec();
        let mut dc = if C::HAS_C {
            dstates[(b + self.b0) * h..][..nb * h].to_vec()
        } else {
            Vec::new()
        };
        let sv = self.saved;
        let first = self.b0 * l;
        for s in (0..longest(gm, self.b0, nb)).rev() {
            for r in 0..nb {
                let Some(p) = gm.position(self.b0 + r, s) else {
                    continue;
                };
                let dhr = &mut dh[r * h..][..h];
                for (d, g) in dhr.iter_mut().zip(&dout[(p * b + self.b0 + r) * h..][..h]) {
                    *d += g;
                }
                let dcr: &mut [f32] = if C::HAS_C {
                    &mut dc[r * h..][..h]
                } else {
                    &mut []
                };
                let at = first + r * l + s;
                C::backward(
                    &sv.act[at * gh..][..gh],
                    &sv.aux[at * h..][..h],
                    &sv.h_prev[at * h..][..h],
                    dhr,
                    dcr,
                    &mut dx[(r * l + p) * gh..][..gh],
                    &mut dhp[(r * l + s) * gh..][..gh],
                );
            }
            // SAFETY: `dh` holds nb × h values owned by this task; the task's `dhp` part holds
            // nb rows of l × gh, read at step s (row stride l · gh, gh values each); `w` is
            // (gh, h) row-major. Samples not active at step s have a zero `dhp` row there.
            unsafe {
                matmul(
                    (nb, h, gh),
                    Strided::rows(dh.as_mut_ptr(), h),
                    true,
                    Strided::rows(dhp.as_ptr().add(s * gh), l * gh),
                    Strided::rows(self.w.as_ptr(), h),
                    1.0,
                    Parallelism::None,
                )
            }
        }
        dh0.copy_from_slice(&dh);
        dc0.copy_from_slice(&dc);
    }
}

/// Backpropagation through time: the gradients of the operands from the flat output gradient
/// `grad` and the forward's [`Saved`].
pub(super) fn backward<C: Cell>(gm: &Geom, w: &[f32], grad: &[f32], saved: &Saved) -> Gradients {
    let (l, b, h, gh) = (gm.l, gm.b, gm.h, gm.gh());
    let per = rows_per_task(gm);
    let mut dx_bm = vec![0f32; b * l * gh];
    let mut dhp = vec![0f32; b * l * gh];
    let mut rest = vec![0f32; gm.rest_len()];
    let (db, dstates) = rest.split_at_mut(gh);
    let (dh0, dc0) = dstates.split_at_mut(b * h);
    let level = Level::detect();
    let parts = [
        dx_bm.chunks_mut(per * l * gh).collect(),
        dhp.chunks_mut(per * l * gh).collect(),
        dh0.chunks_mut(per * h).collect(),
        dc0.chunks_mut(per * h).collect(),
    ];
    par_parts(b.div_ceil(per), parts, |i, outs, _: &mut ()| {
        level.run(BwdTask::<C> {
            gm,
            b0: i * per,
            w,
            grad,
            saved,
            outs,
            cell: PhantomData,
        })
    });
    let mut xproj = vec![0f32; l * b * gh];
    time_major(&dx_bm, (b, l, gh), &mut xproj);
    // dW_hh = Σ over (sample, step) rows of dhpᵀ · h_prev; gate rows split across tasks.
    let mut w_hh = vec![0f32; gh * h];
    let gate_rows = gh.div_ceil(num_threads()).max(1);
    let rows = b * l;
    par_tasks(&mut w_hh, gate_rows * h, |i, dst, _: &mut ()| {
        let g0 = i * gate_rows;
        let m = dst.len() / h;
        // SAFETY: `dst` is this task's m × h block of dW; `dhp` (rows × gh) is read transposed
        // from column g0 (m × rows, within bounds as g0 + m <= gh); `h_prev` is rows × h.
        unsafe {
            matmul(
                (m, h, rows),
                Strided::rows(dst.as_mut_ptr(), h),
                false,
                Strided::cols(dhp.as_ptr().add(g0), gh),
                Strided::rows(saved.h_prev.as_ptr(), h),
                1.0,
                Parallelism::None,
            )
        }
    });
    for row in dhp.chunks_exact(gh) {
        for (d, v) in db.iter_mut().zip(row) {
            *d += v;
        }
    }
    Gradients { xproj, w_hh, rest }
}
