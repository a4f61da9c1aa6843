//! [`FakeQuantize`]: an observer and a fake-quantization op behind two switches, as torch's
//! `torch.ao.quantization.FakeQuantize`.

use std::sync::{Mutex, MutexGuard};

use candle_core::{Module, Tensor};

use super::observer::{Observer, ObserverConfig};
use super::qparams::QParams;
use crate::ops::{fake_quantize_per_channel_affine, fake_quantize_per_tensor_affine};
use crate::{Error, Result};

const BLOCK: &str = "FakeQuantize";

impl QParams {
    /// `x` fake-quantized with these parameters (per channel along `self.axis`, or per
    /// tensor), with the straight-through gradient: [`fake_quantize_per_tensor_affine`] or
    /// [`fake_quantize_per_channel_affine`].
    ///
    /// # Errors
    /// As those ops (a NaN in `x`, a channel count other than `x.dims()[axis]`, …).
    pub fn fake_quantize(&self, x: &Tensor) -> Result<Tensor> {
        let (lo, hi) = (self.quant_min, self.quant_max);
        match self.axis {
            None => match (self.scale.as_slice(), self.zero_point.as_slice()) {
                ([s], [z]) => fake_quantize_per_tensor_affine(x, *s, *z, lo, hi),
                _ => Err(Error::config(
                    BLOCK,
                    format!(
                        "per-tensor parameters need one scale and zero point, got {} and {}",
                        self.scale.len(),
                        self.zero_point.len()
                    ),
                )),
            },
            Some(axis) => {
                fake_quantize_per_channel_affine(x, &self.scale, &self.zero_point, axis, lo, hi)
            }
        }
    }
}

/// The mutable part: what `forward(&self)` updates.
#[derive(Debug, Clone)]
struct State {
    observer: Observer,
    qparams: Option<QParams>,
}

/// Observes its input and returns it fake-quantized, each step behind a switch (torch's
/// `FakeQuantize`, with `enable_observer` / `enable_fake_quant`):
///
/// - both on (the default): quantization-aware training; the parameters follow the observed
///   range at every call, then the input is fake-quantized with them.
/// - observer on, fake-quant off: calibration for post-training quantization; the input
///   passes unchanged.
/// - observer off, fake-quant on: the parameters are frozen (late in QAT, and for evaluation).
///
/// `forward` takes `&self` (it implements [`Module`]): the observer's state sits behind a
/// mutex, as torch keeps it in buffers that `forward` updates.
///
/// # Example
/// ```
/// # fn main() -> candle_tricks::Result<()> {
/// use candle_core::{Device, Tensor};
/// use candle_tricks::compress::quantize::{FakeQuantize, ObserverConfig};
///
/// let mut fq = FakeQuantize::new(ObserverConfig::default())?; // QUInt8 affine, [0, 255]
/// let x = Tensor::new(&[0.0f32, 0.3, 1.0, 2.55], &Device::Cpu)?;
/// let y = fq.forward(&x)?;
/// assert_eq!(fq.qparams().expect("observed").scale, [2.55 / 255.0]);
/// // Freeze the parameters: a later, wider input is clipped to the calibrated range.
/// fq.enable_observer(false);
/// let z = fq.forward(&Tensor::new(&[5.0f32], &Device::Cpu)?)?;
/// assert!((z.to_vec1::<f32>()?[0] - 2.55).abs() < 1e-6);
/// # let _ = y;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FakeQuantize {
    state: Mutex<State>,
    observer_enabled: bool,
    fake_quant_enabled: bool,
}

impl Clone for FakeQuantize {
    fn clone(&self) -> Self {
        Self {
            state: Mutex::new(self.state().clone()),
            observer_enabled: self.observer_enabled,
            fake_quant_enabled: self.fake_quant_enabled,
        }
    }
}

impl FakeQuantize {
    /// A fake-quantizer with a fresh observer of `cfg`, both switches on.
    ///
    /// # Errors
    /// An invalid observer configuration.
    pub fn new(cfg: ObserverConfig) -> Result<Self> {
        Ok(Self {
            state: Mutex::new(State {
                observer: Observer::new(cfg)?,
                qparams: None,
            }),
            observer_enabled: true,
            fake_quant_enabled: true,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written: it is replaced
        // whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Turns the observer on or off (torch's `enable_observer` / `disable_observer`).
    pub fn enable_observer(&mut self, on: bool) {
        self.observer_enabled = on;
    }

    /// Turns fake-quantization on or off (torch's `enable_fake_quant` /
    /// `disable_fake_quant`).
    pub fn enable_fake_quant(&mut self, on: bool) {
        self.fake_quant_enabled = on;
    }

    /// Whether the observer is on.
    pub fn observer_enabled(&self) -> bool {
        self.observer_enabled
    }

    /// Whether fake-quantization is on.
    pub fn fake_quant_enabled(&self) -> bool {
        self.fake_quant_enabled
    }

    /// A copy of the observer.
    pub fn observer(&self) -> Observer {
        self.state().observer.clone()
    }

    /// The current parameters: those of the last observing call, `None` before one.
    pub fn qparams(&self) -> Option<QParams> {
        self.state().qparams.clone()
    }

    /// Observes `x` (observer on), then fake-quantizes it (fake-quant on).
    ///
    /// # Errors
    /// The observer's errors (NaN / ±∞, shape); fake-quant on with no parameters yet (observer
    /// off from the start); the op's errors.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let qparams = {
            let mut st = self.state();
            if self.observer_enabled {
                // Observe into a copy: an error leaves the state as it was.
                let mut observer = st.observer.clone();
                observer.observe(&x.detach())?;
                let qp = observer.qparams()?;
                *st = State {
                    observer,
                    qparams: Some(qp),
                };
            }
            st.qparams.clone()
        };
        if !self.fake_quant_enabled {
            return Ok(x.clone());
        }
        match qparams {
            Some(qp) => qp.fake_quantize(x),
            None => Err(Error::config(
                BLOCK,
                "fake-quantization needs parameters: observe at least once (observer on)",
            )),
        }
    }
}

impl Module for FakeQuantize {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(FakeQuantize::forward(self, x)?)
    }
}
