//! What the int8 layers ([`super::QuantizedLinear`], [`super::QuantizedConv2d`]) share: how the
//! input is quantized ([`InputQuant`]), the int8 weight with its scales, bias and packed form,
//! and the two paths of the product (the CPU int8 kernel and the float composition of the other
//! devices).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::qparams::quantize_value;
use super::{quant_range, QDType, QParams, QScheme};
use crate::cpu::int8_gemm::{gemm_u8i8_f32, Epilogue, PackedB, MAX_K};
use crate::cpu::par_tasks;
use crate::ops::backend::{backend, Op};
use crate::{check, Error, Result};

/// How a quantized layer turns its f32 input into 8-bit integers.
///
/// Either way the activations are `QUInt8`, per tensor, affine, in $[0, 127]$ (torch's
/// `reduce_range` on x86): the int8 kernel multiplies them with signed weights in 16-bit pair
/// sums that must not saturate.
#[derive(Debug, Clone, PartialEq)]
pub enum InputQuant {
    /// Scale and zero point from each input's own minimum and maximum, computed at every
    /// forward pass (torch's dynamic quantization, `torch.ao.nn.quantized.dynamic.Linear`):
    /// no calibration, one extra pass over the input.
    Dynamic,
    /// Fixed parameters from calibration (an observer's range through
    /// [`QParams::from_min_max`]); values outside the calibrated range clip. Must be per
    /// tensor with `0 <= quant_min < quant_max <= 127` (see [`InputQuant::activation_range`]).
    Static(QParams),
}

impl InputQuant {
    /// The integer range of the activations, $[0, 127]$.
    pub fn activation_range() -> (i32, i32) {
        quant_range(QDType::QUInt8, true)
    }

    /// The static parameters that cover `[min_val, max_val]` (a calibrated range), as torch's
    /// `MinMaxObserver(dtype=torch.quint8, reduce_range=True)` computes them.
    ///
    /// # Errors
    /// A non-finite bound or `min_val > max_val`.
    pub fn calibrated(min_val: f32, max_val: f32) -> Result<Self> {
        activation_params(min_val, max_val).map(Self::Static)
    }

    /// Checks static parameters (see [`InputQuant::Static`]).
    pub(crate) fn validate(&self, block: &'static str) -> Result<()> {
        let Self::Static(q) = self else {
            return Ok(());
        };
        let (lo, hi) = Self::activation_range();
        if q.axis.is_some() || q.scale.len() != 1 || q.zero_point.len() != 1 {
            return Err(Error::config(
                block,
                format!(
                    "static input qparams must be per tensor (one scale and zero point), got {} \
                     scales on axis {:?}",
                    q.scale.len(),
                    q.axis
                ),
            ));
        }
        if q.quant_min < lo || q.quant_max > hi || q.quant_min >= q.quant_max {
            return Err(Error::config(
                block,
                format!(
                    "static input range must lie within [{lo}, {hi}] (reduce_range quint8), got \
                     [{}, {}]",
                    q.quant_min, q.quant_max
                ),
            ));
        }
        if !(q.scale[0].is_finite() && q.scale[0] > 0.0) {
            return Err(Error::config(
                block,
                format!(
                    "input scale must be positive and finite, got {}",
                    q.scale[0]
                ),
            ));
        }
        if !(q.quant_min..=q.quant_max).contains(&q.zero_point[0]) {
            return Err(Error::config(
                block,
                format!(
                    "input zero point {} is outside [{}, {}]",
                    q.zero_point[0], q.quant_min, q.quant_max
                ),
            ));
        }
        Ok(())
    }

    /// The parameters for `x`: the static ones, or those of its range (erroring on NaN / Inf).
    pub(crate) fn params_for(&self, block: &'static str, x: &[f32]) -> Result<QParams> {
        match self {
            Self::Static(q) => Ok(q.clone()),
            Self::Dynamic => {
                let (mut lo, mut hi, mut finite) = (0f32, 0f32, true);
                for &v in x {
                    finite &= v.is_finite();
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
                if !finite {
                    return Err(Error::non_finite(block, "input"));
                }
                activation_params(lo, hi)
            }
        }
    }
}

/// Per-tensor affine `QUInt8` parameters over $[0, 127]$ covering `[lo, hi]`.
fn activation_params(lo: f32, hi: f32) -> Result<QParams> {
    QParams::from_min_max(
        &[lo],
        &[hi],
        QScheme::PerTensorAffine,
        QDType::QUInt8,
        InputQuant::activation_range(),
        f32::EPSILON,
    )
}

/// `n` zero bytes, or an error naming `block` when they cannot be allocated.
pub(crate) fn try_bytes(block: &'static str, what: &'static str, n: usize) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Error::config(block, format!("cannot allocate {what} ({n} bytes)")))?;
    v.resize(n, 0);
    Ok(v)
}

/// Bytes of 8-bit output per parallel task of the quantization and unfolding passes: an input
/// smaller than this (a linear layer's batch) is done on the calling thread, without waking
/// candle's pool, whose wake-up costs more than the pass on a busy machine.
pub(crate) const TASK_BYTES: usize = 1 << 20;

/// `x` quantized with `q` into `out` (`rows` rows of `k` values, written `stride` bytes apart),
/// on candle's pool; errors naming `block` on a NaN or ±Inf (which would otherwise quietly
/// become a valid integer).
pub(crate) fn quantize_rows(
    block: &'static str,
    x: &[f32],
    k: usize,
    stride: usize,
    q: &QParams,
    out: &mut [u8],
) -> Result<()> {
    let finite = AtomicBool::new(true);
    let (inv, z, range) = (
        1.0 / q.scale[0],
        q.zero_point[0],
        (q.quant_min, q.quant_max),
    );
    let rows_per_task = TASK_BYTES / stride.max(1) + 1;
    par_tasks(out, rows_per_task * stride, |i, chunk, _: &mut ()| {
        let mut ok = true;
        for (r, dst) in chunk.chunks_mut(stride).enumerate() {
            let src = &x[(i * rows_per_task + r) * k..][..k];
            for (d, &v) in dst.iter_mut().zip(src) {
                ok &= v.is_finite();
                // In [0, 127] by the range check of `InputQuant::validate`.
                *d = quantize_value(v, inv, z, range) as u8;
            }
        }
        if !ok {
            finite.store(false, Ordering::Relaxed);
        }
    });
    if finite.into_inner() {
        Ok(())
    } else {
        Err(Error::non_finite(block, "input"))
    }
}

/// An int8 weight `(out, …)`, quantized per output channel, symmetric, `QInt8`, with its
/// scales, the float bias and (on CPU) the packed form of the kernel.
#[derive(Debug, Clone)]
pub(crate) struct Int8Weight {
    /// The int8 values' bit patterns as `U8`, PyTorch's weight layout.
    pub(crate) q: Tensor,
    /// One f32 scale per output channel.
    pub(crate) scale: Tensor,
    /// The f32 bias `(out)`.
    pub(crate) bias: Option<Tensor>,
    scales: Vec<f32>,
    bias_vec: Option<Vec<f32>>,
    packed: Option<Arc<PackedB>>,
}

/// `params` if they are int8 weight parameters for `out` channels: per channel on axis 0,
/// zero points 0, a range inside $[-128, 127]$, positive finite scales.
fn check_weight_params<'a>(
    block: &'static str,
    qp: &'a QParams,
    out: usize,
) -> Result<&'a QParams> {
    let ok = qp.axis == Some(0)
        && qp.scale.len() == out
        && qp.zero_point.iter().all(|&z| z == 0)
        && qp.quant_min >= -128
        && qp.quant_max <= 127
        && qp.scale.iter().all(|s| s.is_finite() && *s > 0.0);
    if ok {
        return Ok(qp);
    }
    Err(Error::config(
        block,
        format!(
            "weight parameters must be per channel on axis 0 for {out} channels, symmetric \
             (zero point 0) in [-128, 127] with positive scales, got axis {:?}, {} scales, \
             range [{}, {}]",
            qp.axis,
            qp.scale.len(),
            qp.quant_min,
            qp.quant_max
        ),
    ))
}

impl Int8Weight {
    /// Quantizes the f32 weight `w` `(out, …)` per output channel with `params`, or, when
    /// `None`, with those of its own range (torch's
    /// `PerChannelMinMaxObserver(qscheme=torch.per_channel_symmetric, dtype=torch.qint8)`).
    pub(crate) fn from_float(
        block: &'static str,
        w: &Tensor,
        bias: Option<&Tensor>,
        params: Option<&QParams>,
    ) -> Result<Self> {
        if w.dtype() != DType::F32 {
            return Err(Error::unsupported_dtype(block, "weight", "f32", w.dtype()));
        }
        check::non_empty(block, "weight", w)?;
        let out = w.dim(0)?;
        let rows = w
            .flatten_from(1)?
            .to_device(&Device::Cpu)?
            .to_vec2::<f32>()?;
        let mut lo = Vec::with_capacity(out);
        let mut hi = Vec::with_capacity(out);
        for (c, row) in rows.iter().enumerate() {
            if row.iter().any(|v| !v.is_finite()) {
                return Err(Error::non_finite(
                    block,
                    format!("weight of output channel {c}"),
                ));
            }
            lo.push(row.iter().copied().fold(0f32, f32::min));
            hi.push(row.iter().copied().fold(0f32, f32::max));
        }
        let qp = match params {
            Some(qp) => check_weight_params(block, qp, out)?.clone(),
            None => QParams::from_min_max(
                &lo,
                &hi,
                QScheme::PerChannelSymmetric { axis: 0 },
                QDType::QInt8,
                quant_range(QDType::QInt8, false),
                f32::EPSILON,
            )?,
        };
        let bytes: Vec<u8> = rows
            .iter()
            .enumerate()
            .flat_map(|(c, row)| row.iter().map(move |&v| (c, v)))
            .map(|(c, v)| qp.quantize(v, c) as i8 as u8)
            .collect();
        let q = Tensor::from_vec(bytes, w.shape(), &Device::Cpu)?.to_device(w.device())?;
        let scale = Tensor::new(qp.scale.as_slice(), w.device())?;
        Self::from_quantized(block, q, scale, bias.cloned())
    }

    /// From stored tensors: `q` `U8` `(out, …)`, `scale` f32 `(out)`, positive and finite,
    /// `bias` f32 `(out)`.
    pub(crate) fn from_quantized(
        block: &'static str,
        q: Tensor,
        scale: Tensor,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        if q.dtype() != DType::U8 {
            return Err(Error::unsupported_dtype(
                block,
                "quantized weight",
                "u8 (the int8 bit patterns)",
                q.dtype(),
            ));
        }
        if q.rank() < 2 {
            return Err(Error::shape(
                block,
                "quantized weight",
                "(out, in, …)",
                q.shape().clone(),
            ));
        }
        check::non_empty(block, "quantized weight", &q)?;
        let out = q.dim(0)?;
        if scale.dtype() != DType::F32 {
            return Err(Error::unsupported_dtype(
                block,
                "weight_scale",
                "f32",
                scale.dtype(),
            ));
        }
        if scale.dims() != [out] {
            return Err(Error::shape(
                block,
                "weight_scale",
                format!("({out})"),
                scale.shape().clone(),
            ));
        }
        check::bias(block, &scale, bias.as_ref(), out)?;
        for t in [Some(&scale), bias.as_ref()].into_iter().flatten() {
            if !t.device().same_device(q.device()) {
                return Err(Error::DeviceMismatch {
                    block,
                    what: "weight_scale / bias",
                    expected: format!("{:?}", q.device()),
                    actual: format!("{:?}", t.device()),
                });
            }
        }
        let scales = scale.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
        if let Some((c, s)) = scales
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(Error::config(
                block,
                format!("weight scale of output channel {c} must be positive and finite, got {s}"),
            ));
        }
        let bias_vec = match &bias {
            Some(b) => {
                let v = b.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(Error::non_finite(block, "bias"));
                }
                Some(v)
            }
            None => None,
        };
        let k = q.elem_count() / out;
        if k > MAX_K {
            return Err(Error::config(
                block,
                format!(
                    "at most {MAX_K} inputs per output channel fit the int8 kernel's 32-bit \
                     accumulators, got {k}"
                ),
            ));
        }
        let packed = if q.device().is_cpu() {
            let kp = k.div_ceil(4).checked_mul(4);
            let padded = kp.and_then(|kp| kp.checked_mul(out.div_ceil(16) * 16));
            check::numel_of(block, "packed weight", &[padded.unwrap_or(usize::MAX)], 1)?;
            let bytes = q.flatten_all()?.to_vec1::<u8>()?;
            let w: Vec<i8> = bytes.into_iter().map(|b| b as i8).collect();
            Some(Arc::new(PackedB::pack(&w, out, k)))
        } else {
            None
        };
        Ok(Self {
            q,
            scale,
            bias,
            scales,
            bias_vec,
            packed,
        })
    }

    /// Output channels.
    pub(crate) fn out(&self) -> usize {
        self.scales.len()
    }

    /// Bytes of the int8 weight, its scales and the bias.
    pub(crate) fn size_bytes(&self) -> usize {
        self.q.elem_count()
            + 4 * self.scales.len()
            + self.bias_vec.as_ref().map_or(0, |b| 4 * b.len())
    }

    /// Bytes of the f32 layer it replaces (weight and bias).
    pub(crate) fn float_size_bytes(&self) -> usize {
        4 * self.q.elem_count() + self.bias_vec.as_ref().map_or(0, |b| 4 * b.len())
    }

    /// The f32 weight the int8 one stands for, $q \thinspace s_c$, on the weight's device.
    pub(crate) fn dequantized(&self) -> Result<Tensor> {
        let u = self.q.to_dtype(DType::F32)?;
        // Bit patterns 128..=255 are the negative values −128..=−1.
        let signed = (&u - u.ge(128f64)?.to_dtype(DType::F32)?.affine(256.0, 0.0)?)?;
        let mut shape = vec![self.out()];
        shape.resize(self.q.rank(), 1);
        Ok(signed.broadcast_mul(&self.scale.reshape(shape)?)?)
    }

    /// The kernel for `x` on its device, or `None` where the composition runs (another device,
    /// or [`crate::ops::with_backend`] forcing it).
    pub(crate) fn packed_for(&self, x: &Tensor) -> Option<&PackedB> {
        if backend(Op::QuantizedMatmul, x.device()).is_kernel() {
            self.packed.as_deref()
        } else {
            None
        }
    }

    /// $y = \mathrm{dequant}(A \cdot B)$ for the `m` quantized rows `a` (`kp` bytes apart)
    /// quantized with `q`; `(m, out)` f32 on CPU.
    pub(crate) fn matmul_cpu(
        &self,
        packed: &PackedB,
        a: &[u8],
        m: usize,
        q: &QParams,
    ) -> Result<Tensor> {
        let n = packed.n();
        let scale: Vec<f32> = self.scales.iter().map(|s| s * q.scale[0]).collect();
        let epi = Epilogue {
            scale: &scale,
            zero_point: q.zero_point[0],
            bias: self.bias_vec.as_deref(),
        };
        let len = check::numel(BLOCK_OUT, "output", &[m, n], DType::F32)?;
        let mut out = crate::cpu::try_zeros::<f32>(BLOCK_OUT, len)?;
        gemm_u8i8_f32(a, m, packed, &epi, &mut out);
        Ok(Tensor::from_vec(out, (m, n), &Device::Cpu)?)
    }
}

const BLOCK_OUT: &str = "int8 matmul";

/// `x` fake-quantized as the kernel quantizes it, $(\mathrm{clamp}(\mathrm{round}(x/s) + z) - z)\thinspace s$,
/// in tensor ops on `x`'s device (the composition path); errors naming `block` on NaN / Inf.
pub(crate) fn fake_quantize_input(
    block: &'static str,
    input: &InputQuant,
    x: &Tensor,
) -> Result<Tensor> {
    // NaN and ±Inf times zero are NaN, finite values give exact zeros.
    let probe = x
        .affine(0.0, 0.0)?
        .sum_all()?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()?;
    if probe.is_nan() {
        return Err(Error::non_finite(block, "input"));
    }
    let q = match input {
        InputQuant::Static(q) => q.clone(),
        InputQuant::Dynamic => {
            let lo = x.min_all()?.to_scalar::<f32>()?;
            let hi = x.max_all()?.to_scalar::<f32>()?;
            input.params_for(block, &[lo, hi])?
        }
    };
    let (s, z) = (f64::from(q.scale[0]), f64::from(q.zero_point[0]));
    let inv = f64::from(1.0 / q.scale[0]);
    let xq = x
        .affine(inv, 0.0)?
        .round()?
        .affine(1.0, z)?
        .clamp(f64::from(q.quant_min), f64::from(q.quant_max))?;
    Ok(xq.affine(s, -z * s)?)
}
