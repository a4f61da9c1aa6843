//! Quantization: observers, fake-quantization for quantization-aware training, int8
//! post-training quantization and int8 inference.
//!
//! - [`QParams`]: scale and zero point per tensor or per channel, from an observed range
//!   ([`QParams::from_min_max`], torch's formulas), over a [`QDType`] range ([`quant_range`]).
//! - [`QuantizedLinear`], [`QuantizedConv2d`]: int8 inference layers (int8 weights, the input
//!   quantized [dynamically or from calibration](InputQuant), an int8 × int8 → i32 kernel with
//!   the dequantization fused into its store).

mod conv;
mod int8;
mod linear;
mod qparams;

pub use conv::QuantizedConv2d;
pub use int8::InputQuant;
pub use linear::QuantizedLinear;
pub use qparams::{quant_range, QDType, QParams, QScheme};
