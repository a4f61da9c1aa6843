//! The fused cross-entropy kernels: per-row loss forward, `softmax - target distribution`
//! backward, both over `(M, C)` rows with the class dimension last.

use std::sync::Arc;

use candle_core::{CpuStorage, DType, Layout, Shape, Tensor, WithDType, D};

use crate::cpu::math::exp;
use crate::cpu::simd::{dot, max, sum};
use crate::cpu::{
    contiguous, dispatch_float, f32_row, par_tasks, round_into, Element, Isa, Kernel, Level,
};
use crate::ops::fused::{Fused, FusedOp, Grads, Operand, Output};

use super::OP;

/// Logit values per task (a block of whole rows, at least one).
const TASK_ELEMS: usize = 16 * 1024;

/// The op's constants: the class count, weights, smoothing and the class-index targets (None
/// for probability targets, which come as the second operand).
#[derive(Debug)]
pub(super) struct Params {
    pub(super) c: usize,
    pub(super) weight: Option<Arc<[f32]>>,
    pub(super) smoothing: f32,
    pub(super) ignore_index: i64,
    /// $\sum_c w_c$ (C without weights).
    pub(super) weight_sum: f32,
    pub(super) targets: Option<Arc<[i64]>>,
}

/// The forward op: logits `(M, C)` (and probability targets `(M, C)`) -> f32 losses `(M)`.
#[derive(Debug, Clone)]
pub(super) struct CeOp(pub(super) Arc<Params>);

/// The backward op: logits (, targets) and the f32 upstream gradient `(M)` -> `dx (M, C)`.
#[derive(Debug, Clone)]
struct CeGradOp(Arc<Params>);

fn check_rows(p: &Params, l: &Layout, rows: Option<usize>) -> candle_core::Result<usize> {
    match l.shape().dims() {
        &[m, c] if c == p.c && rows.is_none_or(|r| r == m) => Ok(m),
        _ => Err(candle_core::Error::ShapeMismatchBinaryOp {
            lhs: l.shape().clone(),
            rhs: Shape::from((rows.unwrap_or(0), p.c)),
            op: OP,
        }),
    }
}

/// The f32 slice of an upstream gradient.
fn f32_grad<'a>(s: &'a CpuStorage, l: &Layout, m: usize) -> candle_core::Result<&'a [f32]> {
    match s {
        CpuStorage::F32(g) if l.dims() == [m] => contiguous(g, l, OP),
        _ => Err(candle_core::Error::Msg(format!(
            "{OP}: the loss gradient must be f32 ({m})"
        ))),
    }
}

impl FusedOp<1> for CeOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu(&self, [(s, l)]: [Operand<'_>; 1]) -> Output {
        let m = check_rows(&self.0, l, self.0.targets.as_ref().map(|t| t.len()))?;
        let losses = dispatch_float!(s, OP, |v: T| {
            Ok::<_, candle_core::Error>(forward::<T>(&self.0, contiguous(v, l, OP)?, None))
        })?;
        Ok((CpuStorage::F32(losses), Shape::from(m)))
    }

    fn grads(&self, [x]: [&Tensor; 1], _res: &Tensor, grad: &Tensor) -> Grads<1> {
        let g = grad.to_dtype(DType::F32)?.contiguous()?;
        Ok([Some(
            x.apply_op2_no_bwd(&g, &Fused(CeGradOp(self.0.clone())))?,
        )])
    }
}

impl FusedOp<2> for CeOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu(&self, [(s, l), (ts, tl)]: [Operand<'_>; 2]) -> Output {
        let m = check_rows(&self.0, l, None)?;
        check_rows(&self.0, tl, Some(m))?;
        let losses = dispatch_float!(s, OP, |v: T| {
            let t = soft::<T>(ts, tl)?;
            Ok::<_, candle_core::Error>(forward::<T>(&self.0, contiguous(v, l, OP)?, Some(t)))
        })?;
        Ok((CpuStorage::F32(losses), Shape::from(m)))
    }

    fn grads(&self, [x, t]: [&Tensor; 2], _res: &Tensor, grad: &Tensor) -> Grads<2> {
        let g = grad.to_dtype(DType::F32)?.contiguous()?;
        let dx = x.apply_op3_no_bwd(t, &g, &Fused(CeGradOp(self.0.clone())))?;
        // d loss / d t_c = -(1 - eps) w_c log p_c, scaled by the row's upstream gradient.
        let xf = x.to_dtype(DType::F32)?;
        let z = xf.broadcast_sub(&xf.max_keepdim(D::Minus1)?)?;
        let logp = z.broadcast_sub(&z.exp()?.sum_keepdim(D::Minus1)?.log()?)?;
        let mut dt = logp.broadcast_mul(&g.unsqueeze(1)?)?;
        if let Some(w) = &self.0.weight {
            let w = Tensor::from_slice(w, self.0.c, x.device())?;
            dt = dt.broadcast_mul(&w.unsqueeze(0)?)?;
        }
        let dt = (dt * f64::from(self.0.smoothing - 1.0))?.to_dtype(t.dtype())?;
        Ok([Some(dx), Some(dt)])
    }
}

impl FusedOp<2> for CeGradOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu(&self, [(s, l), (gs, gl)]: [Operand<'_>; 2]) -> Output {
        let m = check_rows(&self.0, l, self.0.targets.as_ref().map(|t| t.len()))?;
        let g = f32_grad(gs, gl, m)?;
        let dx = dispatch_float!(s, OP, |v: T| {
            let dx = backward::<T>(&self.0, contiguous(v, l, OP)?, None, g);
            Ok::<_, candle_core::Error>(T::to_cpu_storage_owned(dx))
        })?;
        Ok((dx, l.shape().clone()))
    }
}

impl FusedOp<3> for CeGradOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu(&self, [(s, l), (ts, tl), (gs, gl)]: [Operand<'_>; 3]) -> Output {
        let m = check_rows(&self.0, l, None)?;
        check_rows(&self.0, tl, Some(m))?;
        let g = f32_grad(gs, gl, m)?;
        let dx = dispatch_float!(s, OP, |v: T| {
            let t = soft::<T>(ts, tl)?;
            let dx = backward::<T>(&self.0, contiguous(v, l, OP)?, Some(t), g);
            Ok::<_, candle_core::Error>(T::to_cpu_storage_owned(dx))
        })?;
        Ok((dx, l.shape().clone()))
    }
}

/// The probability targets' slice, of the logits' element type `T`.
fn soft<'a, T: Element>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [T]> {
    contiguous(T::cpu_storage_as_slice(s)?, l, OP)
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// Per-worker scratch rows.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    t: Vec<f32>,
    z: Vec<f32>,
    e: Vec<f32>,
    wt: Vec<f32>,
    out: Vec<f32>,
}

/// A row's target coefficients $q = a \thinspace \delta_y + b \thinspace w + w_t$: `a` on the class
/// `y` (index targets), `b` on every class times its weight (the smoothing), and `wt` =
/// $(1-\varepsilon) w \odot t$ (probability targets).
struct Coef<'a> {
    a: f32,
    y: usize,
    b: f32,
    wt: Option<&'a [f32]>,
}

/// The coefficients of row `r`, or None for an ignored target.
#[inline(always)]
fn coef<'a>(p: &Params, r: usize, t: Option<&[f32]>, wt: &'a mut Vec<f32>) -> Option<Coef<'a>> {
    let keep = 1.0 - p.smoothing;
    let b = p.smoothing / p.c as f32;
    match (&p.targets, t) {
        (Some(idx), _) => {
            let y = idx[r];
            if y == p.ignore_index {
                return None;
            }
            let y = y as usize;
            let wy = p.weight.as_ref().map_or(1.0, |w| w[y]);
            Some(Coef {
                a: keep * wy,
                y,
                b,
                wt: None,
            })
        }
        (None, Some(t)) => {
            wt.clear();
            match &p.weight {
                Some(w) => wt.extend(t.iter().zip(w.iter()).map(|(t, w)| keep * t * w)),
                None => wt.extend(t.iter().map(|t| keep * t)),
            }
            Some(Coef {
                a: 0.0,
                y: 0,
                b,
                wt: Some(wt),
            })
        }
        (None, None) => None,
    }
}

/// `z = x - max(x)`, `e = exp(z)`; returns `sum(e)`.
#[inline(always)]
fn shift(x: &[f32], z: &mut Vec<f32>, e: &mut Vec<f32>) -> f32 {
    let m = max(x);
    z.resize(x.len(), 0.0);
    e.resize(x.len(), 0.0);
    for ((z, e), x) in z.iter_mut().zip(e.iter_mut()).zip(x) {
        *z = x - m;
        *e = exp(*z);
    }
    sum(e)
}

/// $\sum_c q_c$.
#[inline(always)]
fn sum_q(p: &Params, q: &Coef<'_>) -> f32 {
    q.a + q.b * p.weight_sum + q.wt.map_or(0.0, sum)
}

/// $\sum_c q_c z_c$.
#[inline(always)]
fn sum_qz(p: &Params, q: &Coef<'_>, z: &[f32]) -> f32 {
    let mut sqz = q.a * z[q.y];
    if q.b != 0.0 {
        sqz += q.b * p.weight.as_ref().map_or_else(|| sum(z), |w| dot(w, z));
    }
    sqz + q.wt.map_or(0.0, |wt| dot(wt, z))
}

/// One backward row: `dx = g (sum(q) e / s - q)` from the exponentials `e` and their sum `s`.
#[inline(always)]
fn bwd_row(p: &Params, q: &Coef<'_>, e: &[f32], s: f32, g: f32, dx: &mut [f32]) {
    let scale = g * sum_q(p, q) / s;
    for (d, e) in dx.iter_mut().zip(e) {
        *d = scale * e;
    }
    if q.b != 0.0 {
        let gb = g * q.b;
        match &p.weight {
            Some(w) => dx.iter_mut().zip(w.iter()).for_each(|(d, w)| *d -= gb * w),
            None => dx.iter_mut().for_each(|d| *d -= gb),
        }
    }
    if let Some(wt) = q.wt {
        dx.iter_mut().zip(wt).for_each(|(d, wt)| *d -= g * wt);
    }
    dx[q.y] -= g * q.a;
}

/// One forward task: the losses of a block of rows.
struct FwdTask<'a, T> {
    p: &'a Params,
    first: usize,
    x: &'a [T],
    t: Option<&'a [T]>,
    out: &'a mut [f32],
    scr: &'a mut Scratch,
}

impl<T: Element> Kernel for FwdTask<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let Scratch {
            x: xb,
            t: tb,
            z,
            e,
            wt,
            ..
        } = self.scr;
        let c = self.p.c;
        for (i, (xr, loss)) in self.x.chunks_exact(c).zip(self.out.iter_mut()).enumerate() {
            let t = self.t.map(|t| f32_row(&t[i * c..(i + 1) * c], tb));
            let Some(q) = coef(self.p, self.first + i, t, wt) else {
                *loss = 0.0;
                continue;
            };
            let s = shift(f32_row(xr, xb), z, e);
            *loss = sum_q(self.p, &q) * s.ln() - sum_qz(self.p, &q, z);
        }
    }
}

/// One backward task: `dx = g (sum(q) softmax(x) - q)` for a block of rows.
struct BwdTask<'a, T> {
    p: &'a Params,
    first: usize,
    x: &'a [T],
    t: Option<&'a [T]>,
    g: &'a [f32],
    dx: &'a mut [T],
    scr: &'a mut Scratch,
}

impl<T: Element> Kernel for BwdTask<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let Scratch {
            x: xb,
            t: tb,
            z,
            e,
            wt,
            out,
        } = self.scr;
        let c = self.p.c;
        let rows = self.x.chunks_exact(c).zip(self.dx.chunks_exact_mut(c));
        for (i, (xr, dxr)) in rows.enumerate() {
            let r = self.first + i;
            let t = self.t.map(|t| f32_row(&t[i * c..(i + 1) * c], tb));
            let Some(q) = coef(self.p, r, t, wt) else {
                dxr.fill(T::from_f32(0.0));
                continue;
            };
            let s = shift(f32_row(xr, xb), z, e);
            let g = self.g[r];
            match T::as_f32_mut(dxr) {
                Some(dx) => bwd_row(self.p, &q, e, s, g, dx),
                None => {
                    out.resize(c, 0.0);
                    bwd_row(self.p, &q, e, s, g, out);
                    round_into(dxr, out);
                }
            }
        }
    }
}

fn rows_per_task(c: usize) -> usize {
    (TASK_ELEMS / c).max(1)
}

fn forward<T: Element>(p: &Params, x: &[T], t: Option<&[T]>) -> Vec<f32> {
    let level = Level::detect();
    let c = p.c;
    let rows = rows_per_task(c);
    let mut out = vec![0f32; x.len() / c];
    par_tasks(&mut out, rows, |i, out, scr: &mut Scratch| {
        let first = i * rows;
        let range = first * c..(first + out.len()) * c;
        let t = t.map(|t| &t[range.clone()]);
        level.run(FwdTask {
            p,
            first,
            x: &x[range],
            t,
            out,
            scr,
        })
    });
    out
}

fn backward<T: Element>(p: &Params, x: &[T], t: Option<&[T]>, g: &[f32]) -> Vec<T> {
    let level = Level::detect();
    let c = p.c;
    let chunk = rows_per_task(c) * c;
    let mut dx = vec![T::from_f32(0.0); x.len()];
    par_tasks(&mut dx, chunk, |i, dx, scr: &mut Scratch| {
        let range = i * chunk..i * chunk + dx.len();
        let t = t.map(|t| &t[range.clone()]);
        level.run(BwdTask {
            p,
            first: range.start / c,
            x: &x[range],
            t,
            g,
            dx,
            scr,
        })
    });
    dx
}
