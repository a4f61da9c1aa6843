//! Input validation shared by every op and block, so each error names the block and the shapes.

use crate::geometry::{checked_extent, output_size, Padding};
use crate::{Error, Result};
use candle_core::{DType, Shape, Tensor};
use candle_nn::{Init, VarBuilder};

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
    numel(block, what, t.dims(), t.dtype()).map(|_| ())
}

/// Checks an image batch `x` (`what` of `block`): `(B, channels, H, W)` with no zero dimension,
/// and the dtype and device of `weight`, the block's first weight.
pub(crate) fn image_batch(
    block: &'static str,
    what: &'static str,
    x: &Tensor,
    channels: usize,
    weight: &Tensor,
) -> Result<()> {
    let pattern = format!("(B, {channels}, H, W)");
    rank(block, what, x, 4, &pattern)?;
    non_empty(block, what, x)?;
    if x.dims()[1] != channels {
        return Err(Error::shape(block, what, pattern, x.shape().clone()));
    }
    same_dtype_device(block, what, weight, x)
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
    numel(block, what, t.dims(), t.dtype()).map(|_| ())
}

/// Checks that `t` is a float dtype our kernels support (f32, f16, bf16).
pub(crate) fn float_dtype(block: &'static str, what: &'static str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        other => Err(Error::unsupported_dtype(
            block,
            what,
            "f32, f16 or bf16",
            other,
        )),
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

/// Checks an optional per-channel `bias`: the dtype and device of `weight` and shape `(n)`.
pub(crate) fn bias(
    block: &'static str,
    weight: &Tensor,
    bias: Option<&Tensor>,
    n: usize,
) -> Result<()> {
    if let Some(b) = bias {
        same_dtype_device(block, "bias", weight, b)?;
        if b.dims() != [n] {
            return Err(Error::shape(
                block,
                "bias",
                format!("({n})"),
                b.shape().clone(),
            ));
        }
    }
    Ok(())
}

/// Checks the stride and dilation of a convolution config (both must be > 0).
pub(crate) fn stride_dilation(block: &'static str, stride: usize, dilation: usize) -> Result<()> {
    positive(block, "stride", stride)?;
    positive(block, "dilation", dilation)
}

/// Resolves one spatial axis of `x` (length `n`, named `axis` in the message) for a kernel of
/// `k` taps with stride `s` and dilation `d`: returns `(before, after, out)`, the padding and
/// the output length, or an error when the kernel's extent, the padding or the padded length
/// overflows `usize`, or the extent exceeds the padded input.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fit_axis(
    block: &'static str,
    x: &Tensor,
    axis: &str,
    padding: Padding,
    n: usize,
    k: usize,
    s: usize,
    d: usize,
) -> Result<(usize, usize, usize)> {
    let Some(e) = checked_extent(k, d) else {
        return Err(Error::config(
            block,
            format!(
                "kernel extent dilation * (kernel - 1) + 1 on axis {axis} overflows usize \
                 (kernel {k}, dilation {d})"
            ),
        ));
    };
    let padded = padding
        .checked_resolve(n, k, s, d)
        .and_then(|(b, a)| Some((b, a, n.checked_add(b)?.checked_add(a)?)));
    let Some((before, after, _)) = padded else {
        return Err(Error::config(
            block,
            format!(
                "padded length of axis {axis} overflows usize (input {n}, padding {padding:?}, \
                 kernel {k}, stride {s}, dilation {d})"
            ),
        ));
    };
    match output_size(n, k, s, d, before, after) {
        Some(out) => Ok((before, after, out)),
        None => Err(Error::shape(
            block,
            "input",
            format!(
                "spatial axis {axis} + padding ({before} + {after}) >= kernel extent {e} \
                 (kernel {k}, dilation {d})"
            ),
            x.shape().clone(),
        )),
    }
}

/// Largest tensor (in bytes) the crate agrees to allocate: the 47-bit user address space of
/// x86-64 and aarch64. Anything larger cannot exist, so it is an error, never an allocation
/// attempt (which would abort the process).
pub(crate) const MAX_BYTES: u128 = 1 << 47;

/// Element count of a tensor of `dims` holding `dtype`, or an error (naming `block` and `what`)
/// when the product overflows or the tensor would need more than [`MAX_BYTES`]. Every buffer
/// whose size comes from caller input is sized through this (or [`numel_of`]) before it is
/// allocated.
pub(crate) fn numel(
    block: &'static str,
    what: &'static str,
    dims: &[usize],
    dtype: DType,
) -> Result<usize> {
    numel_of(block, what, dims, dtype.size_in_bytes())
}

/// [`numel`], then errors (naming `block`) when the allocator cannot provide the tensor now:
/// the check before a tensor that candle allocates (and would abort on, e.g. a 2^40-channel
/// layer). Probes with a fallible reservation released at once; no page is touched.
pub(crate) fn allocatable(
    block: &'static str,
    what: &'static str,
    dims: &[usize],
    dtype: DType,
) -> Result<()> {
    let bytes = numel(block, what, dims, dtype)? * dtype.size_in_bytes();
    Vec::<u8>::new().try_reserve_exact(bytes).map_err(|_| {
        let msg = format!("cannot allocate {what} {dims:?} ({bytes} bytes)");
        Error::config(block, msg)
    })
}

/// `vb.get_with_hints(dims, name, init)` after [`allocatable`]: a parameter sized by a config
/// is an error naming `block` when it cannot exist, never an abort in candle's initialiser.
pub(crate) fn param(
    block: &'static str,
    vb: &VarBuilder,
    dims: impl Into<Shape>,
    name: &str,
    init: Init,
) -> Result<Tensor> {
    let shape: Shape = dims.into();
    allocatable(block, "parameter", shape.dims(), vb.dtype())?;
    Ok(vb.get_with_hints(shape, name, init)?)
}

/// Builds `block` from `vb` with `build`; a candle error on the way (a missing or wrong-shape
/// tensor) becomes [`Error::Load`] naming the block and `vb`'s prefix.
pub(crate) fn loading<T>(
    block: &'static str,
    vb: VarBuilder,
    build: impl FnOnce(VarBuilder) -> Result<T>,
) -> Result<T> {
    let prefix = vb.prefix();
    build(vb).map_err(|e| e.in_load(block, prefix))
}

/// [`numel`] for elements of `elem_bytes` bytes (scratch buffers of a Rust type).
pub(crate) fn numel_of(
    block: &'static str,
    what: &'static str,
    dims: &[usize],
    elem_bytes: usize,
) -> Result<usize> {
    let n = dims
        .iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128));
    match n {
        Some(n) if n.saturating_mul(elem_bytes.max(1) as u128) <= MAX_BYTES => Ok(n as usize),
        _ => Err(Error::shape(
            block,
            what,
            format!(
                "at most 2^47 bytes ({elem_bytes}-byte elements); the product of the \
                 dimensions overflows or exceeds it"
            ),
            dims.to_vec(),
        )),
    }
}

/// Expands, inside an `impl` block of a config with `stride`, `padding` and `dilation` fields,
/// to their `with_*` builder setters, so every convolution config documents them the same way.
macro_rules! conv_config_setters {
    () => {
        /// Sets the stride.
        pub fn with_stride(mut self, stride: usize) -> Self {
            self.stride = stride;
            self
        }

        /// Sets the padding mode.
        pub fn with_padding(mut self, padding: $crate::geometry::Padding) -> Self {
            self.padding = padding;
            self
        }

        /// Sets the dilation.
        pub fn with_dilation(mut self, dilation: usize) -> Self {
            self.dilation = dilation;
            self
        }
    };
}
pub(crate) use conv_config_setters;

/// Checks that a normalization epsilon `name` is finite and > 0 (NaN included in the rejection).
pub(crate) fn eps(block: &'static str, name: &str, eps: f64) -> Result<()> {
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::config(
            block,
            format!("{name} must be finite and > 0, got {eps}"),
        ));
    }
    Ok(())
}

/// Checks that `value` (a momentum, a rate) lies in `[0, 1]` (NaN rejected).
pub(crate) fn unit_interval(block: &'static str, name: &str, value: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&value) {
        return Err(Error::config(
            block,
            format!("{name} must be in [0, 1], got {value}"),
        ));
    }
    Ok(())
}
