//! Plumbing shared by the CPU kernels: element conversion to the f32 accumulator, access to a
//! contiguous slice of a candle storage, and the dtype dispatch.

use candle_core::{CpuStorage, Layout, Result, WithDType};
use half::{bf16, f16};

/// An element type our kernels read and write; arithmetic always happens in f32.
pub(crate) trait Element: WithDType + Copy + Send + Sync + 'static {
    /// Widen to the f32 accumulator.
    fn to_f32(self) -> f32;
    /// Round the f32 accumulator to this type.
    fn from_f32(v: f32) -> Self;
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
pub(crate) fn contiguous<'a, T>(data: &'a [T], layout: &Layout, op: &'static str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => Err(candle_core::Error::RequiresContiguous { op }),
    }
}

/// Widens a slice to f32 (a copy for f16/bf16; kernels that accumulate whole tensors use it).
pub(crate) fn to_f32_vec<T: Element>(data: &[T]) -> Vec<f32> {
    data.iter().map(|v| v.to_f32()).collect()
}

/// Rounds an f32 buffer to `T` and wraps it as a candle storage.
pub(crate) fn from_f32_vec<T: Element>(data: Vec<f32>) -> CpuStorage {
    T::to_cpu_storage_owned(data.into_iter().map(T::from_f32).collect())
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
            other => Err(candle_core::Error::UnsupportedDTypeForOp(other.dtype(), $op)),
        }
    };
}
pub(crate) use dispatch_float;
