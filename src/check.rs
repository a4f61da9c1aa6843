//! Input validation shared by every op and block, so each error names the block and the shapes.

use crate::{Error, Result};
use candle_core::{DType, Tensor};

/// Checks that `t` has `rank` dimensions; `pattern` (e.g. `"(B, C, H, W)"`) goes into the message.
pub(crate) fn rank(
    block: &'static str,
    what: &'static str,
    t: &Tensor,
    rank: usize,
    pattern: &str,
) -> Result<()> {
    if t.rank() != rank {
        return Err(Error::shape(block, what, pattern, t.shape().clone()));
    }
    Ok(())
}

/// Checks that no dimension of `t` is zero.
pub(crate) fn non_empty(block: &'static str, what: &'static str, t: &Tensor) -> Result<()> {
    if t.dims().contains(&0) {
        return Err(Error::shape(
            block,
            what,
            "every dimension non-zero",
            t.shape().clone(),
        ));
    }
    Ok(())
}

/// Checks that `t` is a float dtype our kernels support (f32, f16, bf16).
pub(crate) fn float_dtype(block: &'static str, what: &'static str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        other => Err(Error::DTypeMismatch {
            block,
            what,
            expected: DType::F32,
            actual: other,
        }),
    }
}

/// Checks that `other` has the same dtype and device as `reference`.
pub(crate) fn same_dtype_device(
    block: &'static str,
    what: &'static str,
    reference: &Tensor,
    other: &Tensor,
) -> Result<()> {
    if other.dtype() != reference.dtype() {
        return Err(Error::DTypeMismatch {
            block,
            what,
            expected: reference.dtype(),
            actual: other.dtype(),
        });
    }
    if !other.device().same_device(reference.device()) {
        return Err(Error::DeviceMismatch {
            block,
            what,
            expected: format!("{:?}", reference.device()),
            actual: format!("{:?}", other.device()),
        });
    }
    Ok(())
}

/// Checks that a configuration value is strictly positive.
pub(crate) fn positive(block: &'static str, name: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::config(block, format!("{name} must be > 0, got 0")));
    }
    Ok(())
}
