//! Quantization parameters: the integer range, the scheme, and the scale / zero point that
//! map real values onto it, computed from observed ranges exactly as `torch.ao.quantization`
//! does.

use crate::{Error, Result};

const BLOCK: &str = "QParams";

/// The integer type values are quantized to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QDType {
    /// Signed 8-bit, $[-128, 127]$ (torch's `qint8`): the usual choice for weights.
    QInt8,
    /// Unsigned 8-bit, $[0, 255]$ (torch's `quint8`): the usual choice for activations.
    QUInt8,
}

/// How scale and zero point are chosen from the observed range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QScheme {
    /// One scale and zero point for the whole tensor, covering $[\min, \max]$.
    PerTensorAffine,
    /// One scale for the whole tensor, symmetric around zero (zero point 0 for `QInt8`).
    PerTensorSymmetric,
    /// One affine scale and zero point per slice along `axis` (a weight's output channels).
    PerChannelAffine {
        /// The channel axis.
        axis: usize,
    },
    /// One symmetric scale per slice along `axis`: the usual weight scheme.
    PerChannelSymmetric {
        /// The channel axis.
        axis: usize,
    },
}

impl QScheme {
    /// Whether the range is made symmetric around zero.
    pub fn is_symmetric(self) -> bool {
        matches!(
            self,
            Self::PerTensorSymmetric | Self::PerChannelSymmetric { .. }
        )
    }

    /// The channel axis of a per-channel scheme, `None` for a per-tensor one.
    pub fn axis(self) -> Option<usize> {
        match self {
            Self::PerChannelAffine { axis } | Self::PerChannelSymmetric { axis } => Some(axis),
            Self::PerTensorAffine | Self::PerTensorSymmetric => None,
        }
    }
}

/// The integer range `[quant_min, quant_max]` of a [`QDType`], optionally reduced by one bit.
///
/// `reduce_range` halves the range (`QUInt8` to $[0, 127]$, `QInt8` to $[-64, 63]$), as
/// torch's x86 backend does for activations: an unsigned 7-bit activation times a signed 8-bit
/// weight, summed in pairs, cannot overflow the 16-bit intermediate of AVX2's `vpmaddubsw`.
pub fn quant_range(dtype: QDType, reduce_range: bool) -> (i32, i32) {
    match (dtype, reduce_range) {
        (QDType::QInt8, false) => (-128, 127),
        (QDType::QInt8, true) => (-64, 63),
        (QDType::QUInt8, false) => (0, 255),
        (QDType::QUInt8, true) => (0, 127),
    }
}

/// Scale and zero point, one pair per tensor or one per channel.
///
/// A real value $x$ maps to $q = \mathrm{clamp}(\mathrm{round}(x / s) + z, q_{min}, q_{max})$
/// and back to $\hat{x} = (q - z)\thinspace s$; `round` is half to even, as torch's.
#[derive(Debug, Clone, PartialEq)]
pub struct QParams {
    /// The scale(s) $s$, positive and finite.
    pub scale: Vec<f32>,
    /// The zero point(s) $z$, inside `[quant_min, quant_max]`.
    pub zero_point: Vec<i32>,
    /// The channel axis of per-channel parameters, `None` for per-tensor.
    pub axis: Option<usize>,
    /// The smallest integer value.
    pub quant_min: i32,
    /// The largest integer value.
    pub quant_max: i32,
}

impl QParams {
    /// The parameters that cover `[min_val[i], max_val[i]]` for each channel `i` (one entry for
    /// a per-tensor scheme), as torch's observers compute them.
    ///
    /// The range is first widened to include zero, so that zero (padding, ReLU outputs) is
    /// represented exactly. Symmetric schemes use $s = \max(|\min|, |\max|) / ((q_{max} - q_{min}) / 2)$
    /// and zero point 0 (`QInt8`) or the middle of the range (`QUInt8`); affine ones use
    /// $s = (\max - \min) / (q_{max} - q_{min})$, $z = q_{min} - \mathrm{round}(\min / s)$.
    /// Scales below `eps` (`f32::EPSILON` in torch) are raised to it, so a constant tensor
    /// still gets a usable scale.
    ///
    /// # Errors
    /// A non-finite bound (NaN or ±∞ reached the observer), `min_val > max_val`, lengths that
    /// differ or do not fit the scheme, or `quant_min >= quant_max`.
    pub fn from_min_max(
        min_val: &[f32],
        max_val: &[f32],
        scheme: QScheme,
        dtype: QDType,
        (quant_min, quant_max): (i32, i32),
        eps: f32,
    ) -> Result<Self> {
        if quant_min >= quant_max {
            return Err(Error::InvalidConfig {
                block: BLOCK,
                msg: format!("quant_min ({quant_min}) must be below quant_max ({quant_max})"),
            });
        }
        if !(eps.is_finite() && eps > 0.0) {
            return Err(Error::InvalidConfig {
                block: BLOCK,
                msg: format!("eps must be positive and finite, got {eps}"),
            });
        }
        let channels = min_val.len();
        if max_val.len() != channels || channels == 0 || (scheme.axis().is_none() && channels != 1)
        {
            return Err(Error::InvalidConfig {
                block: BLOCK,
                msg: format!(
                    "{scheme:?} needs {} min/max values of equal length, got {} and {}",
                    if scheme.axis().is_none() {
                        "1"
                    } else {
                        "≥ 1"
                    },
                    channels,
                    max_val.len()
                ),
            });
        }
        let mut scale = Vec::with_capacity(channels);
        let mut zero_point = Vec::with_capacity(channels);
        let span = (quant_max - quant_min) as f32;
        for (c, (&lo, &hi)) in min_val.iter().zip(max_val).enumerate() {
            if !(lo.is_finite() && hi.is_finite()) {
                return Err(Error::NonFinite {
                    block: BLOCK,
                    what: format!("observed range of channel {c}: [{lo}, {hi}]"),
                });
            }
            if lo > hi {
                return Err(Error::InvalidConfig {
                    block: BLOCK,
                    msg: format!("channel {c}: min ({lo}) is above max ({hi})"),
                });
            }
            let (lo, hi) = (lo.min(0.0), hi.max(0.0));
            if scheme.is_symmetric() {
                scale.push(((-lo).max(hi) / (span / 2.0)).max(eps));
                zero_point.push(symmetric_zero_point(dtype, quant_min, quant_max));
            } else {
                let s = ((hi - lo) / span).max(eps);
                let z = quant_min as f32 - (lo / s).round_ties_even();
                scale.push(s);
                zero_point.push((z as i32).clamp(quant_min, quant_max));
            }
        }
        Ok(Self {
            scale,
            zero_point,
            axis: scheme.axis(),
            quant_min,
            quant_max,
        })
    }

    /// The integer value of `x` in channel `c` (`c = 0` for per-tensor parameters).
    ///
    /// Multiplies by the reciprocal of the scale rather than dividing, as torch (and fbgemm)
    /// do: the two differ in the last bit often enough to move a value that sits on a rounding
    /// tie by one step, and a model calibrated in torch must quantize identically here.
    #[inline]
    pub fn quantize(&self, x: f32, c: usize) -> i32 {
        let range = (self.quant_min, self.quant_max);
        quantize_value(x, 1.0 / self.scale[c], self.zero_point[c], range)
    }

    /// The real value of the integer `q` in channel `c`.
    #[inline]
    pub fn dequantize(&self, q: i32, c: usize) -> f32 {
        (q - self.zero_point[c]) as f32 * self.scale[c]
    }
}

/// The zero point of a symmetric scheme: 0 for `QInt8`; for `QUInt8` 128 on the full range
/// $[0, 255]$ (torch's value) and the midpoint rounded down on a custom range (torch's rule).
fn symmetric_zero_point(dtype: QDType, quant_min: i32, quant_max: i32) -> i32 {
    match dtype {
        QDType::QInt8 => 0,
        QDType::QUInt8 if (quant_min, quant_max) == (0, 255) => 128,
        QDType::QUInt8 => (quant_min + quant_max).div_euclid(2),
    }
}

/// `x` quantized with the reciprocal scale `inv_scale` and zero point `z`, clamped to
/// `[lo, hi]`, rounded as torch and fbgemm round: $x \cdot (1/s)$, a multiplication by the f32
/// reciprocal rather than a division (the two differ in the last bit, which moves values that
/// land near a half to the other integer), half to even.
#[inline(always)]
pub(crate) fn quantize_value(x: f32, inv_scale: f32, z: i32, (lo, hi): (i32, i32)) -> i32 {
    // Half to even by adding and subtracting 1.5 · 2^23, exact below 2^22 in magnitude (larger
    // values clamp to the range anyway), then the zero point, all in f32 where integers below
    // 2^24 are exact: `round_ties_even` is a libm call per element on baseline x86-64 (no
    // rounding instruction), which made quantizing an input cost more than the int8 product.
    // A NaN gives `quant_min`; callers reject NaN first.
    const HALF_EVEN: f32 = 12_582_912.0;
    const LIMIT: f32 = 4_194_304.0;
    let v = (x * inv_scale).clamp(-LIMIT, LIMIT);
    let q = (v + HALF_EVEN) - HALF_EVEN + z as f32;
    q.max(lo as f32).min(hi as f32) as i32
}
