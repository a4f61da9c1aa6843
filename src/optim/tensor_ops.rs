//! The tensor path ([`UpdatePath::Tensor`](super::path::UpdatePath::Tensor)): optimizer steps,
//! the NaN/Inf check, EMA, loss-scaler, accumulator and clipping updates written with candle
//! tensor ops, so they run on the parameters' device. Each function repeats the operations of
//! its fused CPU counterpart in the same order, in f32 (f16/bf16 values are widened first).
//!
//! Nothing here copies a tensor to the host: the only host read is [`read`], of one 0-d
//! tensor, which the NaN/Inf checks and the clipping norms use once per step and device (the
//! unit test `path::tests::the_tensor_path_has_no_host_copy` pins this textually).

use candle_core::{DType, Device, Shape, Tensor, WithDType};

use super::fused::Kernel;
use super::slots::{Buf, Slot};
use crate::Result;

/// The value of a 0-d tensor: the tensor path's one host read.
pub(crate) fn read<T: WithDType>(t: &Tensor) -> Result<T> {
    Ok(t.to_scalar::<T>()?)
}

/// A contiguous f32 tensor of `shape` filled with `value`, made on `device`.
pub(crate) fn filled(value: f32, shape: &Shape, device: &Device) -> Result<Tensor> {
    Ok(Tensor::full(value, shape.clone(), device)?)
}

/// A detached f32 copy of `t` in fresh contiguous storage on its device.
pub(crate) fn f32_copy(t: &Tensor) -> Result<Tensor> {
    let t = t.detach();
    Ok(if t.dtype() == DType::F32 {
        t.force_contiguous()?
    } else {
        t.to_dtype(DType::F32)?
    })
}

/// `t` widened to f32 (`t` itself when it already is).
pub(crate) fn widen(t: &Tensor) -> candle_core::Result<Tensor> {
    if t.dtype() == DType::F32 {
        Ok(t.clone())
    } else {
        t.to_dtype(DType::F32)
    }
}

/// `s · t` with the f32 scalar `s` (exactly the f32 product of the fused kernels).
pub(crate) fn mul(t: &Tensor, s: f32) -> candle_core::Result<Tensor> {
    t.affine(f64::from(s), 0.0)
}

/// `t + a` with the f32 scalar `a`.
pub(crate) fn add(t: &Tensor, a: f32) -> candle_core::Result<Tensor> {
    t.affine(1.0, f64::from(a))
}

/// `t / d` with the f32 scalar `d`, a true division (not a product by `1 / d`).
pub(crate) fn div(t: &Tensor, d: f32) -> candle_core::Result<Tensor> {
    t.broadcast_div(&Tensor::full(d, (), t.device())?)
}

/// `(x - y) · s`, the increment of a lerp.
pub(crate) fn diff_mul(x: &Tensor, y: &Tensor, s: f32) -> candle_core::Result<Tensor> {
    mul(&(x - y)?, s)
}

/// 0-d f32: 0 when `t` is finite, NaN when it holds a NaN or ±Inf (`0 · x` is NaN exactly for
/// those).
pub(crate) fn non_finite_flag(t: &Tensor) -> Result<Tensor> {
    Ok(t.affine(0.0, 0.0)?.sum_all()?.to_dtype(DType::F32)?)
}

/// Sums 0-d tensors per device and dtype and reads each sum once; returns the f64 total.
fn sum_read(parts: &[Tensor]) -> Result<f64> {
    let mut groups: Vec<Tensor> = Vec::new();
    for p in parts {
        let same = |t: &&mut Tensor| t.dtype() == p.dtype() && t.device().same_device(p.device());
        match groups.iter_mut().find(same) {
            Some(acc) => *acc = (&*acc + p)?,
            None => groups.push(p.clone()),
        }
    }
    let mut total = 0f64;
    for t in &groups {
        total += match t.dtype() {
            DType::F64 => read::<f64>(t)?,
            _ => f64::from(read::<f32>(&t.to_dtype(DType::F32)?)?),
        };
    }
    Ok(total)
}

/// Whether any of the [`non_finite_flag`]s is set: one read per device.
pub(crate) fn any_flag(flags: &[Tensor]) -> Result<bool> {
    Ok(sum_read(flags)? != 0.0)
}

/// Index of the first tensor of `ts` holding a NaN or ±Inf, if any, with candle ops on their
/// devices: one scalar read per device when all are finite; naming the culprit (the error or
/// skip path) reads one flag per tensor.
pub(crate) fn first_non_finite(ts: &[&Tensor]) -> Result<Option<usize>> {
    if ts.is_empty() {
        return Ok(None);
    }
    let flags = ts
        .iter()
        .map(|t| non_finite_flag(t))
        .collect::<Result<Vec<_>>>()?;
    if !any_flag(&flags)? {
        return Ok(None);
    }
    for (i, f) in flags.iter().enumerate() {
        if read::<f32>(f)? != 0.0 {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// One optimizer step of `slot` on the tensor path: `kernel`'s candle ops over the f32
/// parameter (for f16/bf16, the f32 master copy, re-seeded wherever the stored value no longer
/// rounds to it, i.e. the parameter was changed from outside), the gradient and the f32 state
/// tensors; the result goes into the parameter (`Var::set`, a copy on its device) and the
/// master copy.
pub(crate) fn apply_slot(slot: &mut Slot, g: &Tensor, kernel: &dyn Kernel) -> Result<()> {
    apply_slot_with(slot, g, |p, g, s| Ok(kernel.run_tensor(p, g, s)?))
}

/// [`apply_slot`] with the update given as a function of the f32 parameter, the f32 gradient
/// and the state tensors (Muon's, whose Newton–Schulz iteration needs the whole matrix and so
/// has no per-element kernel).
pub(crate) fn apply_slot_with(
    slot: &mut Slot,
    g: &Tensor,
    update: impl FnOnce(&Tensor, &Tensor, &mut [Option<Tensor>]) -> Result<Tensor>,
) -> Result<()> {
    let x = slot.var.as_tensor();
    let half = x.dtype() != DType::F32;
    let (p, g) = if half {
        let x32 = x.to_dtype(DType::F32)?;
        let p = match slot.master.dev() {
            Some(m) => m.to_dtype(x.dtype())?.eq(x)?.where_cond(m, &x32)?,
            None => x32,
        };
        (p, g.to_dtype(DType::F32)?)
    } else {
        (x.clone(), g.clone())
    };
    let mut s: Vec<Option<Tensor>> = slot.bufs.iter().map(|b| b.dev().cloned()).collect();
    let new = update(&p, &g, &mut s)?;
    // A reduction pass ([`Kernel::then`]) hands the parameter back untouched.
    let changed = new.id() != p.id();
    if half {
        if changed {
            slot.var.set(&new.to_dtype(x.dtype())?)?;
        }
        slot.master = Buf::Dev(new);
    } else if changed {
        slot.var.set(&new)?;
    }
    for (b, t) in slot.bufs.iter_mut().zip(s) {
        if let Some(t) = t {
            *b = Buf::Dev(t);
        }
    }
    Ok(())
}

/// EMA: the average `avg` (f32) moved towards `x` by weight `w` as torch's `lerp`:
/// `avg + w (x - avg)` for `w < 0.5`, else `x - (1 - w)(x - avg)`.
pub(crate) fn lerp(avg: &Tensor, x: &Tensor, w: f32) -> Result<Tensor> {
    let x = widen(x)?;
    Ok(if w < 0.5 {
        (avg + diff_mul(&x, avg, w)?)?
    } else {
        (&x - diff_mul(&x, avg, 1.0 - w)?)?
    })
}

/// Loss scaler: `g · inv` in `g`'s dtype (the product in f32) and `g`'s [`non_finite_flag`].
pub(crate) fn unscale(g: &Tensor, inv: f32) -> Result<(Tensor, Tensor)> {
    let g32 = widen(g)?;
    let flag = non_finite_flag(&g32)?;
    let out = mul(&g32, inv)?;
    let out = if g.dtype() == DType::F32 {
        out
    } else {
        out.to_dtype(g.dtype())?
    };
    Ok((out, flag))
}

/// Accumulator: the f32 sum `buf + g` (a fresh f32 copy of `g` for the first micro-batch).
pub(crate) fn accumulate(buf: Option<&Tensor>, g: &Tensor) -> Result<Tensor> {
    match buf {
        None => f32_copy(g),
        Some(b) => Ok((b + widen(g)?)?),
    }
}

/// Clipping: $\sum x^2$ of `g` as a 0-d tensor (f64 for f64 gradients, f32 otherwise).
fn sum_sq(g: &Tensor) -> Result<Tensor> {
    let w = if g.dtype() == DType::F64 {
        g.clone()
    } else {
        g.to_dtype(DType::F32)?
    };
    Ok(w.sqr()?.sum_all()?)
}

/// Clipping: the total $\sum x^2$ over `gs`, read once per device and dtype.
pub(crate) fn total_sum_sq(gs: &[Tensor]) -> Result<f64> {
    let parts = gs.iter().map(sum_sq).collect::<Result<Vec<_>>>()?;
    sum_read(&parts)
}

/// Clipping: $\max |x|$ over `gs` (f64), NaN when any element is NaN; ±Inf gives Inf as on the
/// fused path. One read per device and dtype.
pub(crate) fn total_max_abs(gs: &[Tensor]) -> Result<f64> {
    let mut groups: Vec<(Tensor, Tensor)> = Vec::new();
    for g in gs.iter().filter(|g| g.elem_count() > 0) {
        let w = if g.dtype() == DType::F64 {
            g.clone()
        } else {
            g.to_dtype(DType::F32)?
        };
        let m = w.abs()?.max_all()?;
        // 1 where any element is NaN (the mask widened: no integer reduction needed).
        let nan = w.ne(&w)?.to_dtype(w.dtype())?.max_all()?;
        let same = |(t, _): &&mut (Tensor, Tensor)| {
            t.dtype() == m.dtype() && t.device().same_device(m.device())
        };
        match groups.iter_mut().find(same) {
            Some((acc, flag)) => {
                *acc = acc.maximum(&m)?;
                *flag = flag.maximum(&nan)?;
            }
            None => groups.push((m, nan)),
        }
    }
    let mut total = 0f64;
    for (m, nan) in &groups {
        let v = nan.gt(0.0)?.where_cond(&m.affine(0.0, f64::NAN)?, m)?;
        let v = match v.dtype() {
            DType::F64 => read::<f64>(&v)?,
            _ => f64::from(read::<f32>(&v)?),
        };
        total = if total.is_nan() || v.is_nan() {
            f64::NAN
        } else {
            total.max(v)
        };
    }
    Ok(total)
}
