//! Quantization: observers, fake-quantization for quantization-aware training, int8
//! post-training quantization and int8 inference.
//!
//! - [`QParams`]: scale and zero point per tensor or per channel, from an observed range
//!   ([`QParams::from_min_max`], torch's formulas), over a [`QDType`] range ([`quant_range`]).

mod qparams;

pub use qparams::{quant_range, QDType, QParams, QScheme};
