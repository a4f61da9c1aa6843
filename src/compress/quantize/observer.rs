//! Observers: running statistics of a tensor's range, from which quantization parameters are
//! computed (torch's `MinMaxObserver`, `MovingAverageMinMaxObserver` and their per-channel
//! forms, one type here).

use candle_core::{DType, Tensor};

use super::qparams::{quant_range, QDType, QParams, QScheme};
use crate::{check, Error, Result};

const BLOCK: &str = "Observer";

/// How an [`Observer`] combines the ranges of successive tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ObserverKind {
    /// The running minimum and maximum over every tensor seen (torch's `MinMaxObserver`):
    /// right for weights and for a calibration set without outliers.
    MinMax,
    /// An exponential moving average of each tensor's minimum and maximum, the first tensor
    /// taken as it is (torch's `MovingAverageMinMaxObserver`): $m \leftarrow m + c\thinspace (m_t - m)$.
    /// One outlier batch then moves the range by a fraction $c$ only.
    MovingAverage {
        /// The weight $c$ of the newest tensor, in $(0, 1]$ (torch's default 0.01).
        averaging_constant: f32,
    },
}

/// Configuration of an [`Observer`]. Defaults: [`ObserverKind::MinMax`], [`QDType::QUInt8`],
/// [`QScheme::PerTensorAffine`], no reduced range, the dtype's full range, `eps` =
/// `f32::EPSILON` (torch's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObserverConfig {
    /// How ranges are combined across tensors.
    pub kind: ObserverKind,
    /// The integer type.
    pub dtype: QDType,
    /// Per tensor or per channel, affine or symmetric.
    pub scheme: QScheme,
    /// Halve the integer range (see [`quant_range`]); not with a symmetric `QUInt8` scheme,
    /// which torch refuses as well.
    pub reduce_range: bool,
    /// A custom integer range `(quant_min, quant_max)` (containing 0, inside the dtype's
    /// range), halved (rounding down) when `reduce_range` is set, as torch does; `None` (the
    /// default): the dtype's range.
    pub quant_range: Option<(i32, i32)>,
    /// The smallest scale (default `f32::EPSILON`): a constant tensor still gets a usable one.
    pub eps: f32,
}

impl Default for ObserverConfig {
    fn default() -> Self {
        Self {
            kind: ObserverKind::MinMax,
            dtype: QDType::QUInt8,
            scheme: QScheme::PerTensorAffine,
            reduce_range: false,
            quant_range: None,
            eps: f32::EPSILON,
        }
    }
}

impl ObserverConfig {
    /// The usual weight observer: `QInt8`, per-channel symmetric on axis 0 (the output
    /// channels of a linear or convolution weight), running min-max.
    pub fn weight() -> Self {
        Self {
            dtype: QDType::QInt8,
            scheme: QScheme::PerChannelSymmetric { axis: 0 },
            ..Self::default()
        }
    }

    /// The usual activation observer: `QUInt8`, per-tensor affine, reduced range ($[0, 127]$,
    /// so the int8 kernels cannot saturate), moving average with constant 0.01.
    pub fn activation() -> Self {
        Self {
            kind: ObserverKind::MovingAverage {
                averaging_constant: 0.01,
            },
            reduce_range: true,
            ..Self::default()
        }
    }

    /// Sets the kind.
    pub fn with_kind(mut self, kind: ObserverKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets the integer type.
    pub fn with_dtype(mut self, dtype: QDType) -> Self {
        self.dtype = dtype;
        self
    }

    /// Sets the scheme.
    pub fn with_scheme(mut self, scheme: QScheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// Sets `reduce_range`.
    pub fn with_reduce_range(mut self, reduce_range: bool) -> Self {
        self.reduce_range = reduce_range;
        self
    }

    /// Sets a custom integer range.
    pub fn with_quant_range(mut self, quant_min: i32, quant_max: i32) -> Self {
        self.quant_range = Some((quant_min, quant_max));
        self
    }

    /// Sets `eps`.
    pub fn with_eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }

    /// The integer range `(quant_min, quant_max)` the parameters map onto.
    ///
    /// # Errors
    /// As [`ObserverConfig::validate`].
    pub fn resolved_range(&self) -> Result<(i32, i32)> {
        self.validate()?;
        Ok(match self.quant_range {
            None => quant_range(self.dtype, self.reduce_range),
            Some((lo, hi)) if self.reduce_range => (lo.div_euclid(2), hi.div_euclid(2)),
            Some(range) => range,
        })
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// `eps` not positive and finite, an averaging constant outside $(0, 1]$, a custom range
    /// with `quant_min >= quant_max`, without 0, or beyond the dtype's range, and a symmetric
    /// `QUInt8` scheme with `reduce_range`.
    pub fn validate(&self) -> Result<()> {
        check::eps(BLOCK, "eps", self.eps as f64)?;
        if let ObserverKind::MovingAverage {
            averaging_constant: c,
        } = self.kind
        {
            if !(c > 0.0 && c <= 1.0) {
                let msg = format!("averaging_constant must lie in (0, 1], got {c}");
                return Err(Error::config(BLOCK, msg));
            }
        }
        if let Some((lo, hi)) = self.quant_range {
            let (dlo, dhi) = quant_range(self.dtype, false);
            if !(lo < hi && lo <= 0 && 0 <= hi && dlo <= lo && hi <= dhi) {
                let msg = format!(
                    "custom range needs quant_min < quant_max, containing 0, within \
                     {:?}'s [{dlo}, {dhi}]; got [{lo}, {hi}]",
                    self.dtype
                );
                return Err(Error::config(BLOCK, msg));
            }
        }
        if self.reduce_range && self.dtype == QDType::QUInt8 && self.scheme.is_symmetric() {
            return Err(Error::config(
                BLOCK,
                "a symmetric QUInt8 scheme cannot reduce its range (as in torch)",
            ));
        }
        Ok(())
    }
}

/// Running range statistics of the tensors it is shown, and the [`QParams`] they give.
///
/// # Example
/// ```
/// # fn main() -> candle_tricks::Result<()> {
/// use candle_core::{Device, Tensor};
/// use candle_tricks::compress::quantize::{Observer, ObserverConfig};
///
/// let mut obs = Observer::new(ObserverConfig::default())?; // QUInt8, per-tensor affine
/// obs.observe(&Tensor::new(&[-1.0f32, 0.5, 2.0], &Device::Cpu)?)?;
/// obs.observe(&Tensor::new(&[0.0f32, 4.0], &Device::Cpu)?)?;
/// let qp = obs.qparams()?;
/// // Range [-1, 4] over 255 steps; zero point 255 / 5 = 51.
/// assert_eq!(qp.scale, [5.0 / 255.0]);
/// assert_eq!(qp.zero_point, [51]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Observer {
    cfg: ObserverConfig,
    range: (i32, i32),
    /// Per channel (one entry per tensor): the combined minimum and maximum so far.
    stats: Option<(Vec<f32>, Vec<f32>)>,
}

impl Observer {
    /// An observer that has seen nothing yet.
    ///
    /// # Errors
    /// An invalid configuration ([`ObserverConfig::validate`]).
    pub fn new(cfg: ObserverConfig) -> Result<Self> {
        let range = cfg.resolved_range()?;
        Ok(Self {
            cfg,
            range,
            stats: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ObserverConfig {
        &self.cfg
    }

    /// The integer range `(quant_min, quant_max)` of the parameters.
    pub fn quant_range(&self) -> (i32, i32) {
        self.range
    }

    /// The combined `(min, max)` per channel (one entry per tensor) so far, `None` before the
    /// first tensor.
    pub fn min_max(&self) -> Option<(&[f32], &[f32])> {
        self.stats
            .as_ref()
            .map(|(lo, hi)| (lo.as_slice(), hi.as_slice()))
    }

    /// Forgets everything observed.
    pub fn reset(&mut self) {
        self.stats = None;
    }

    /// Records the range of `x` (any float dtype, any device: the reductions run there and only
    /// the per-channel minimum and maximum come to the CPU).
    ///
    /// # Errors
    /// A zero-sized dimension, a non-float dtype, a channel axis beyond `x`'s rank, a channel
    /// count other than the one observed before, or a NaN / ±∞ in `x`
    /// ([`Error::NonFinite`]); the statistics are then left as they were.
    pub fn observe(&mut self, x: &Tensor) -> Result<()> {
        check::non_empty(BLOCK, "input", x)?;
        if !matches!(
            x.dtype(),
            DType::F32 | DType::F16 | DType::BF16 | DType::F64
        ) {
            return Err(Error::unsupported_dtype(
                BLOCK,
                "input",
                "f32, f16, bf16 or f64",
                x.dtype(),
            ));
        }
        let rows = match self.cfg.scheme.axis() {
            None => x.flatten_all()?.unsqueeze(0)?,
            Some(a) if a < x.rank() => x.transpose(0, a)?.reshape((x.dims()[a], ()))?,
            Some(a) => {
                let msg = format!(
                    "channel axis {a} out of range for an input of rank {}",
                    x.rank()
                );
                return Err(Error::config(BLOCK, msg));
            }
        };
        if let Some((lo, _)) = &self.stats {
            if lo.len() != rows.dims()[0] {
                let expected =
                    format!("{} channels on axis {:?}", lo.len(), self.cfg.scheme.axis());
                return Err(Error::shape(BLOCK, "input", expected, x.shape().clone()));
            }
        }
        // x · 0 is 0 for finite values and NaN for NaN and ±∞: its sum flags both.
        let stats = Tensor::stack(&[rows.min(1)?, rows.max(1)?, (&rows * 0.0)?.sum(1)?], 0)?;
        let stats = stats.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let [lo, hi, flag] = [&stats[0], &stats[1], &stats[2]];
        if let Some(c) = flag.iter().position(|v| v.is_nan()) {
            let what = match self.cfg.scheme.axis() {
                None => "observed input".to_string(),
                Some(a) => format!("observed input, channel {c} of axis {a}"),
            };
            return Err(Error::non_finite(BLOCK, what));
        }
        self.stats = Some(match (self.stats.take(), self.cfg.kind) {
            (None, _) => (lo.clone(), hi.clone()),
            (Some((mut min, mut max)), ObserverKind::MinMax) => {
                for (m, &v) in min.iter_mut().zip(lo) {
                    *m = m.min(v);
                }
                for (m, &v) in max.iter_mut().zip(hi) {
                    *m = m.max(v);
                }
                (min, max)
            }
            (
                Some((mut min, mut max)),
                ObserverKind::MovingAverage {
                    averaging_constant: c,
                },
            ) => {
                // torch's order of operations, in f32: m + c · (new - m).
                for (m, &v) in min.iter_mut().zip(lo) {
                    *m += c * (v - *m);
                }
                for (m, &v) in max.iter_mut().zip(hi) {
                    *m += c * (v - *m);
                }
                (min, max)
            }
        });
        Ok(())
    }

    /// The quantization parameters of the range observed so far (torch's
    /// `calculate_qparams()`).
    ///
    /// # Errors
    /// Nothing observed yet.
    pub fn qparams(&self) -> Result<QParams> {
        let Some((lo, hi)) = &self.stats else {
            return Err(Error::config(BLOCK, "qparams() before any observe()"));
        };
        QParams::from_min_max(
            lo,
            hi,
            self.cfg.scheme,
            self.cfg.dtype,
            self.range,
            self.cfg.eps,
        )
    }
}
