//! Export to candle's quantized format: named float tensors into `QTensor`s (GGML block
//! formats such as `Q8_0`) and a `.gguf` file that `candle_core::quantized::gguf_file` (and
//! llama.cpp's tools) read back.

use std::collections::HashSet;
use std::io::{Seek, Write};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Tensor};

use crate::{check, Error, Result};

const BLOCK: &str = "gguf export";

/// `t` quantized to `dtype` (e.g. [`GgmlDType::Q8_0`]: blocks of 32 values sharing one f16
/// scale, $q = \mathrm{round}(x / d)$ with $d = \max |x| / 127$), ready for
/// `candle_core::quantized::QMatMul`.
///
/// # Errors
/// A zero-sized dimension or rank 0, a non-float dtype, a last dimension that is not a multiple
/// of the block size (32 for `Q8_0`, 256 for the k-quants), or a NaN / ±∞ value.
pub fn quantize_tensor(t: &Tensor, dtype: GgmlDType) -> Result<QTensor> {
    check_tensor("tensor", t, dtype)?;
    Ok(QTensor::quantize(&t.to_dtype(DType::F32)?, dtype)?)
}

fn check_tensor(name: &str, t: &Tensor, dtype: GgmlDType) -> Result<()> {
    if t.rank() == 0 {
        return Err(Error::shape(
            BLOCK,
            "tensor",
            format!("{name}: rank >= 1"),
            t.shape().clone(),
        ));
    }
    check::non_empty(BLOCK, "tensor", t)?;
    if !matches!(
        t.dtype(),
        DType::F32 | DType::F16 | DType::BF16 | DType::F64
    ) {
        return Err(Error::unsupported_dtype(
            BLOCK,
            name,
            "f32, f16, bf16 or f64",
            t.dtype(),
        ));
    }
    let block = dtype.block_size();
    let last = t.dims()[t.rank() - 1];
    if !last.is_multiple_of(block) {
        return Err(Error::shape(
            BLOCK,
            "tensor",
            format!("{name}: last dimension a multiple of {dtype:?}'s block size {block}"),
            t.shape().clone(),
        ));
    }
    // x · 0 is NaN exactly for NaN and ±∞.
    let flag = (t.flatten_all()? * 0.0)?
        .sum_all()?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()?;
    if flag.is_nan() {
        return Err(Error::non_finite(BLOCK, format!("tensor `{name}`")));
    }
    Ok(())
}

/// Writes `tensors` as a GGUF file: tensors of rank ≥ 2 quantized to `dtype`, rank-1 tensors
/// (biases, norm scales: few values, and the ones precision depends on) kept in f32, as
/// llama.cpp's converters do; `metadata` as given.
///
/// Read it back with `gguf_file::Content::read` and `Content::tensor`.
///
/// # Errors
/// A duplicate name; any tensor [`quantize_tensor`] refuses (naming it); an I/O error.
pub fn write_gguf<W: Write + Seek>(
    w: &mut W,
    tensors: &[(&str, &Tensor)],
    dtype: GgmlDType,
    metadata: &[(&str, &gguf_file::Value)],
) -> Result<()> {
    let mut seen = HashSet::new();
    let mut quantized = Vec::with_capacity(tensors.len());
    for &(name, t) in tensors {
        if !seen.insert(name) {
            return Err(Error::config(
                BLOCK,
                format!("duplicate tensor name `{name}`"),
            ));
        }
        let dt = if t.rank() == 1 { GgmlDType::F32 } else { dtype };
        check_tensor(name, t, dt)?;
        quantized.push((name, QTensor::quantize(&t.to_dtype(DType::F32)?, dt)?));
    }
    let refs: Vec<(&str, &QTensor)> = quantized.iter().map(|(n, q)| (*n, q)).collect();
    gguf_file::write(w, metadata, &refs)?;
    Ok(())
}
