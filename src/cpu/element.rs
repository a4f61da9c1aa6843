//! Elements and storages: conversion to the f32 accumulator, access to a contiguous slice of a
//! candle storage, shape checks of op arguments, the dtype dispatch, f32 views of storages and
//! the rounding back, and fallible allocation of outputs.

use std::borrow::Cow;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Shape, WithDType};
use half::{bf16, f16};

use super::parallel::par_tasks;

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

/// `src` as f32: borrowed when `T` is f32, else widened into `buf`.
#[inline(always)]
pub(crate) fn f32_row<'a, T: Element>(src: &'a [T], buf: &'a mut Vec<f32>) -> &'a [f32] {
    match T::as_f32(src) {
        Some(v) => v,
        None => {
            widen(src, buf);
            buf
        }
    }
}

/// `dst[i] = src[i]` rounded once to `T`.
#[inline(always)]
pub(crate) fn round_into<T: Element>(dst: &mut [T], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = T::from_f32(*s);
    }
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

/// [`dispatch_float_pair`] over three storages `$s1`, `$s2`, `$s3` of one element type
/// (the `(x, y, grad_y)` of a gradient op).
macro_rules! dispatch_float_triple {
    ($s1:expr, $s2:expr, $s3:expr, $op:expr, |$a:ident, $b:ident, $c:ident : $T:ident| $body:expr) => {
        match ($s1, $s2, $s3) {
            (
                candle_core::CpuStorage::F32($a),
                candle_core::CpuStorage::F32($b),
                candle_core::CpuStorage::F32($c),
            ) => {
                type $T = f32;
                $body
            }
            (
                candle_core::CpuStorage::F16($a),
                candle_core::CpuStorage::F16($b),
                candle_core::CpuStorage::F16($c),
            ) => {
                type $T = half::f16;
                $body
            }
            (
                candle_core::CpuStorage::BF16($a),
                candle_core::CpuStorage::BF16($b),
                candle_core::CpuStorage::BF16($c),
            ) => {
                type $T = half::bf16;
                $body
            }
            (s1, s2, s3) => {
                use candle_core::backend::BackendStorage;
                let odd = [s2.dtype(), s3.dtype()]
                    .into_iter()
                    .find(|&d| d != s1.dtype());
                match odd {
                    Some(rhs) => Err(candle_core::Error::DTypeMismatchBinaryOp {
                        lhs: s1.dtype(),
                        rhs,
                        op: $op,
                    }),
                    None => Err(candle_core::Error::UnsupportedDTypeForOp(s1.dtype(), $op)),
                }
            }
        }
    };
}
pub(crate) use dispatch_float_triple;

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
