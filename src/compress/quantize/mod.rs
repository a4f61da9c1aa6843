//! Quantization: observers, fake-quantization for quantization-aware training, int8
//! post-training quantization and int8 inference, and export to GGUF.
//!
//! - [`QParams`]: scale and zero point per tensor or per channel, from an observed range
//!   ([`QParams::from_min_max`], torch's formulas), over a [`QDType`] range ([`quant_range`]);
//!   [`QParams::fake_quantize`] applies them.
//! - [`Observer`] ([`ObserverConfig`], [`ObserverKind`]): running min-max or moving-average
//!   statistics, per tensor or per channel, as torch's `MinMaxObserver` family.
//! - [`FakeQuantize`]: observer + fake-quantization behind torch's two switches; the op itself
//!   is [`crate::ops::fake_quantize_per_tensor_affine()`] /
//!   [`crate::ops::fake_quantize_per_channel_affine()`], with the straight-through gradient.
//! - [`QatLinear`], [`QatConv2d`] ([`QatConfig`], [`QatMode`]): layers that train (or
//!   calibrate) for int8 and expose the parameters int8 inference needs.
//! - [`QuantizedLinear`], [`QuantizedConv2d`]: int8 inference layers (int8 weights, the input
//!   quantized [dynamically or from calibration](InputQuant), an int8 × int8 → i32 kernel with
//!   the dequantization fused into its store); [`QuantizedLinear::from_qat`] and
//!   [`QuantizedConv2d::from_qat`] convert a calibrated or QAT-trained layer.
//! - [`write_gguf`], [`quantize_tensor`]: candle's `QTensor` / GGUF format (`Q8_0`, …).
//!
//! # Shapes
//! - A real value $x$ maps to $q = \mathrm{clamp}(\mathrm{round}(x / s) + z, q_{min}, q_{max})$ and
//!   back to $\hat{x} = (q - z)\thinspace s$.
//! - Per tensor: one $(s, z)$. Per channel along `axis`: one pair per index of that
//!   dimension; for weights axis 0, the output channels of `(out, in)` or `(Cout, Cin, kh, kw)`.
//! - Conventions shared with the int8 kernels: weights `QInt8` per-channel symmetric
//!   ($z = 0$, $[-128, 127]$); activations `QUInt8` per-tensor affine with `reduce_range`
//!   ($[0, 127]$).
//!
//! # Tip
//! **Post-training quantization first, QAT when it is not enough.** PTQ needs no training: run
//! a few hundred representative inputs through the float model with observers on (a
//! calibration set of 100–1000 samples is typical; more moves the ranges little), freeze the
//! scales, convert. 8-bit weights and activations usually cost a fraction of a point of
//! accuracy on a CNN. Quantization-aware training (Jacob et al.) fine-tunes with every weight
//! and activation fake-quantized, the gradient passing straight through the rounding, so the
//! weights adapt to the grid; it recovers most of what PTQ loses, and matters for small or
//! depthwise-heavy models and for lower bit widths. Start QAT from the trained float model,
//! with a learning rate around 1 % of the original, and freeze the observers (and batch-norm
//! statistics) for the last epochs.
//!
//! **Per-channel weights, per-tensor activations.** Output channels of a weight often differ
//! in range by 10× or more; one scale for the whole tensor spends most of its 256 levels on
//! the widest channel and rounds the narrow ones coarsely. A scale per output channel costs
//! nothing at inference (it scales the i32 accumulator of that output) and cuts the error by
//! the ratio of the ranges, as the example shows. Activations are quantized per tensor: a
//! per-channel activation scale would vary along the reduction of the matrix product, which
//! integer arithmetic cannot factor out.
//!
//! **Why `reduce_range`.** AVX2's `vpmaddubsw` multiplies unsigned 8-bit activations by signed
//! 8-bit weights and adds pairs into a saturating 16-bit lane: $2 \cdot 255 \cdot 128 > 32767$
//! overflows, $2 \cdot 127 \cdot 128$ does not. Dropping one activation bit costs a little
//! precision and keeps the fast path exact; VNNI (`vpdpbusd`) accumulates in 32 bits and would
//! not need it.
//!
//! **What stays float.** Biases (added to the i32 accumulator, or in f32 after it), the
//! first and last layers when accuracy is tight, normalisations (fold batch norm into the
//! preceding convolution before quantizing), softmax and the loss. Asymmetric (affine)
//! activations represent ReLU outputs in $[0, \max]$ without wasting half the range on
//! negatives; the zero point makes $0$ exact, so zero padding stays exact.
//!
//! # Example
//! A weight whose rows differ in scale: per-channel parameters track each row, one
//! per-tensor scale does not.
//! ```
//! # fn main() -> candle_tricks::Result<()> {
//! use candle_core::{Device, Tensor};
//! use candle_tricks::compress::quantize::{Observer, ObserverConfig, QScheme};
//!
//! let dev = Device::Cpu;
//! let rows = Tensor::new(&[[1f32], [0.1], [0.01], [3.0]], &dev)?;
//! let w = Tensor::randn(0f32, 1., (4, 64), &dev)?.broadcast_mul(&rows)?;
//! let error = |scheme: QScheme| -> candle_tricks::Result<f32> {
//!     let mut obs = Observer::new(ObserverConfig::weight().with_scheme(scheme))?;
//!     obs.observe(&w)?;
//!     let wq = obs.qparams()?.fake_quantize(&w)?;
//!     Ok((wq - &w)?.sqr()?.mean_all()?.to_scalar::<f32>()?)
//! };
//! let per_channel = error(QScheme::PerChannelSymmetric { axis: 0 })?;
//! let per_tensor = error(QScheme::PerTensorSymmetric)?;
//! assert!(per_channel < per_tensor / 2.0, "{per_channel} vs {per_tensor}");
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Jacob et al., *Quantization and Training of Neural Networks for Efficient
//!   Integer-Arithmetic-Only Inference*, 2018. <https://arxiv.org/abs/1712.05877>
//! - Krishnamoorthi, *Quantizing deep convolutional networks for efficient inference: A
//!   whitepaper*, 2018. <https://arxiv.org/abs/1806.08342>

mod conv;
mod fake_quantize;
mod gguf;
mod int8;
mod linear;
mod observer;
mod qat;
mod qparams;

pub use conv::QuantizedConv2d;
pub use fake_quantize::FakeQuantize;
pub use gguf::{quantize_tensor, write_gguf};
pub use int8::InputQuant;
pub use linear::QuantizedLinear;
pub use observer::{Observer, ObserverConfig, ObserverKind};
pub use qat::{qat_conv2d, qat_linear, QatConfig, QatConv2d, QatLinear, QatMode};
pub use qparams::{quant_range, QDType, QParams, QScheme};
