//! An int8 2-D convolution for inference (PyTorch's `torch.ao.nn.quantized.Conv2d`, with the
//! output dequantized to f32): the input is quantized to $[0, 127]$, unfolded (im2col) into
//! an 8-bit matrix and multiplied with the int8 weight by the same kernel as
//! [`super::QuantizedLinear`].
//!
//! # Shapes
//! - input `(B, Cin, H, W)` f32, output `(B, Cout, Ho, Wo)` f32, sized by the stride, padding
//!   and dilation of the [`crate::conv::Conv2d`] it was made from.
//! - stored tensors: `weight` `U8` `(Cout, Cin, kh, kw)` (the `i8` bit patterns),
//!   `weight_scale` f32 `(Cout)`, `bias` f32 `(Cout)` ([`QuantizedConv2d::tensors`]).
//!
//! # Tip
//! A convolution is a matrix product of the unfolded input `(B·Ho·Wo, Cin·kh·kw)` with the
//! weight, so it gains what an int8 linear layer gains: 4× smaller weights and more
//! multiply-adds per instruction. Two details keep it exact: padding is the *quantized zero*
//! $z_a$, not the integer 0 (which would stand for the real value $-z_a s_a$), and the
//! unfolded matrix is 8-bit, a quarter of the f32 one. Per-tensor input parameters are the
//! weak spot of convolutional nets whose early layers see large outliers; for those,
//! calibrate ([`super::InputQuant::Static`]) on representative data, or keep the first and last
//! layers float (common practice: they hold few weights and are the most sensitive).
//! Grouped (and depthwise) convolutions are not supported: they have little arithmetic for
//! int8 to speed up.
//!
//! **Size, not (yet) speed.** Each layer quantizes its f32 input, unfolds it and writes an f32
//! output: three passes over the activations that this crate's f32 convolution does not
//! make. On activation-heavy layers (many pixels, few channels) those passes cost more than
//! the int8 product saves, and this layer runs 1.5–3× *slower* than [`crate::conv::Conv2d`]
//! (measured on two AVX2 cores, e.g. `(256, 64, 16, 16)` → 64 channels 3×3: 48 ms f32 vs
//! 101 ms int8; the `compress` example's table shows the same on a whole network). The gain
//! is the 4× smaller model; for speed, keep activations int8 between layers (not done here)
//! or quantize the weight-heavy linear layers, where [`super::QuantizedLinear`] wins.
//!
//! # Example
//! ```
//! use candle_core::{Device, Module, Tensor};
//! use candle_tricks::compress::quantize::{InputQuant, QuantizedConv2d};
//! use candle_tricks::conv::{Conv2d, Padding};
//! use candle_tricks::ops::Conv2dConfig;
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let w = Tensor::randn(0f32, 0.2, (16, 8, 3, 3), &dev)?;
//! let b = Tensor::randn(0f32, 0.1, 16, &dev)?;
//! let cfg = Conv2dConfig::default().with_stride(2).with_padding(Padding::Explicit(1));
//! let float = Conv2d::new(w, Some(b), cfg)?;
//! let int8 = QuantizedConv2d::from_conv2d(&float, InputQuant::Dynamic)?;
//! let x = Tensor::randn(0f32, 1., (2, 8, 12, 12), &dev)?;
//! let (y, r) = (int8.forward(&x)?, float.forward(&x)?);
//! assert_eq!(y.dims(), &[2, 16, 6, 6]);
//! let err = (&y - &r)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(err < 0.03 * r.abs()?.max_all()?.to_scalar::<f32>()?);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Jacob et al., *Quantization and Training of Neural Networks for Efficient
//!   Integer-Arithmetic-Only Inference*, 2018. <https://arxiv.org/abs/1712.05877>

use std::collections::HashMap;

use candle_core::{DType, Module, Tensor};

use super::int8::{fake_quantize_input, quantize_rows, try_bytes, Int8Weight, TASK_BYTES};
use super::{InputQuant, QatConv2d};
use crate::cpu::par_tasks;
use crate::ops::{conv2d_reference, Conv2dConfig};
use crate::{check, Error, Result};

const BLOCK: &str = "QuantizedConv2d";

/// An int8 2-D convolution (see the module docs).
#[derive(Debug, Clone)]
pub struct QuantizedConv2d {
    weight: Int8Weight,
    cfg: Conv2dConfig,
    input: InputQuant,
}

impl QuantizedConv2d {
    /// Quantizes `conv`'s weight per output channel (symmetric `qint8`); the bias stays f32 and
    /// the stride, padding and dilation are `conv`'s.
    ///
    /// # Errors
    /// `groups > 1`, a weight that is not f32 or holds NaN / Inf, invalid static input
    /// parameters.
    pub fn from_conv2d(conv: &crate::conv::Conv2d, input: InputQuant) -> Result<Self> {
        Self::new(conv.weight(), conv.bias(), conv.config(), input)
    }

    /// [`QuantizedConv2d::from_conv2d`] from an f32 `(Cout, Cin, kh, kw)` weight, a `(Cout)`
    /// bias and the convolution's config.
    ///
    /// # Errors
    /// As [`QuantizedConv2d::from_conv2d`], and a weight of another rank.
    pub fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        cfg: Conv2dConfig,
        input: InputQuant,
    ) -> Result<Self> {
        check_config(weight, cfg, &input)?;
        let weight = Int8Weight::from_float(BLOCK, weight, bias, None)?;
        Ok(Self { weight, cfg, input })
    }

    /// The int8 layer of a calibrated or quantization-aware-trained [`QatConv2d`] (torch's
    /// `convert`): its weight quantized with the weight fake-quantizer's parameters and its
    /// observed input range as [`InputQuant::Static`].
    ///
    /// # Errors
    /// As [`QuantizedLinear::from_qat`](super::QuantizedLinear::from_qat), and `groups > 1`.
    pub fn from_qat(qat: &QatConv2d) -> Result<Self> {
        let input = InputQuant::Static(qat.input_qparams()?);
        let cfg = qat.conv().config();
        check_config(qat.weight(), cfg, &input)?;
        let params = qat.weight_qparams()?;
        let weight = Int8Weight::from_float(BLOCK, qat.weight(), qat.bias(), Some(&params))?;
        Ok(Self { weight, cfg, input })
    }

    /// From stored tensors (see the module docs) and the convolution's config.
    ///
    /// # Errors
    /// Wrong dtypes or shapes, a scale that is not positive and finite, `groups > 1`, invalid
    /// static input parameters.
    pub fn from_quantized(
        weight: Tensor,
        weight_scale: Tensor,
        bias: Option<Tensor>,
        cfg: Conv2dConfig,
        input: InputQuant,
    ) -> Result<Self> {
        check_config(&weight, cfg, &input)?;
        let weight = Int8Weight::from_quantized(BLOCK, weight, weight_scale, bias)?;
        Ok(Self { weight, cfg, input })
    }

    /// The int8 weight as `U8` bit patterns, `(Cout, Cin, kh, kw)`.
    pub fn weight_int8(&self) -> &Tensor {
        &self.weight.q
    }

    /// The per-output-channel weight scales, f32 `(Cout)`.
    pub fn weight_scale(&self) -> &Tensor {
        &self.weight.scale
    }

    /// The f32 bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.weight.bias.as_ref()
    }

    /// Stride, padding and dilation.
    pub fn config(&self) -> Conv2dConfig {
        self.cfg
    }

    /// How the input is quantized.
    pub fn input_quant(&self) -> &InputQuant {
        &self.input
    }

    /// The f32 weight the int8 one stands for, `(Cout, Cin, kh, kw)`.
    pub fn dequantized_weight(&self) -> Result<Tensor> {
        self.weight.dequantized()
    }

    /// Bytes of the stored layer: the int8 weight, one f32 scale per output channel and the
    /// bias.
    pub fn size_bytes(&self) -> usize {
        self.weight.size_bytes()
    }

    /// Bytes of the f32 layer it replaces (weight and bias).
    pub fn float_size_bytes(&self) -> usize {
        self.weight.float_size_bytes()
    }

    /// The stored tensors by name (`weight`, `weight_scale`, `bias`);
    /// [`QuantizedConv2d::from_quantized`] loads them back.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        let mut m = HashMap::new();
        m.insert("weight".to_string(), self.weight.q.clone());
        m.insert("weight_scale".to_string(), self.weight.scale.clone());
        if let Some(b) = &self.weight.bias {
            m.insert("bias".to_string(), b.clone());
        }
        m
    }

    fn forward_checked(&self, x: &Tensor) -> Result<Tensor> {
        let [cout, cin, kh, kw] = dims4(&self.weight.q);
        check::rank(BLOCK, "input", x, 4, "(B, Cin, H, W)")?;
        let (b, c, h, w) = x.dims4()?;
        if c != cin {
            return Err(Error::shape(
                BLOCK,
                "input",
                format!("(B, {cin}, H, W)"),
                x.shape().clone(),
            ));
        }
        check::non_empty(BLOCK, "input", x)?;
        if x.dtype() != DType::F32 {
            return Err(Error::unsupported_dtype(BLOCK, "input", "f32", x.dtype()));
        }
        if !x.device().same_device(self.weight.q.device()) {
            return Err(Error::DeviceMismatch {
                block: BLOCK,
                what: "input",
                expected: format!("{:?}", self.weight.q.device()),
                actual: format!("{:?}", x.device()),
            });
        }
        let (s, d, pad) = (self.cfg.stride, self.cfg.dilation, self.cfg.padding);
        let (ph, _, oh) = check::fit_axis(BLOCK, x, "H", pad, h, kh, s, d)?;
        let (pw, _, ow) = check::fit_axis(BLOCK, x, "W", pad, w, kw, s, d)?;
        let Some(packed) = self.weight.packed_for(x) else {
            let xq = fake_quantize_input(BLOCK, &self.input, x)?;
            let y = conv2d_reference(&xq, &self.weight.dequantized()?, self.cfg)?;
            return Ok(match self.bias() {
                Some(bias) => y.broadcast_add(&bias.reshape((1, cout, 1, 1))?)?,
                None => y,
            });
        };
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let q = self.input.params_for(BLOCK, &xs)?;
        let mut xq = try_bytes(BLOCK, "quantized input", xs.len())?;
        quantize_rows(BLOCK, &xs, h * w, h * w, &q, &mut xq)?;
        // The unfolded input: one row per output pixel, `(c, i, j)` taps in the weight's order.
        let m = check::numel_of(BLOCK, "unfolded input", &[b, oh, ow], 1)?;
        let kp = packed.kp();
        let len = check::numel_of(BLOCK, "unfolded input", &[m, kp], 1)?;
        let mut a = try_bytes(BLOCK, "unfolded input", len)?;
        // Padding is the quantized zero, which stands for the real 0.
        let z = q.zero_point[0] as u8;
        let rows_per_task = TASK_BYTES / kp + 1;
        par_tasks(&mut a, rows_per_task * kp, |t, chunk, _: &mut ()| {
            for (r, row) in chunk.chunks_mut(kp).enumerate() {
                let pix = t * rows_per_task + r;
                let (bi, oy, ox) = (pix / (oh * ow), pix / ow % oh, pix % ow);
                let mut taps = row.iter_mut();
                for ci in 0..cin {
                    let plane = &xq[(bi * cin + ci) * h * w..][..h * w];
                    for i in 0..kh {
                        // Positions before the input start are negative: wrapping makes them huge.
                        let y = (oy * s + i * d).wrapping_sub(ph);
                        for j in 0..kw {
                            let xx = (ox * s + j * d).wrapping_sub(pw);
                            let v = if y < h && xx < w {
                                plane[y * w + xx]
                            } else {
                                z
                            };
                            if let Some(dst) = taps.next() {
                                *dst = v;
                            }
                        }
                    }
                }
            }
        });
        let y = self.weight.matmul_cpu(packed, &a, m, &q)?;
        Ok(y.reshape((b, oh, ow, cout))?
            .permute((0, 3, 1, 2))?
            .contiguous()?)
    }
}

fn dims4(t: &Tensor) -> [usize; 4] {
    let d = t.dims();
    [d[0], d[1], d[2], d[3]]
}

fn check_config(weight: &Tensor, cfg: Conv2dConfig, input: &InputQuant) -> Result<()> {
    input.validate(BLOCK)?;
    cfg.validate_for(BLOCK)?;
    if cfg.groups != 1 {
        return Err(Error::config(
            BLOCK,
            format!(
                "groups must be 1 (grouped int8 convolutions are not supported), got {}",
                cfg.groups
            ),
        ));
    }
    check::rank(BLOCK, "weight", weight, 4, "(Cout, Cin, kh, kw)")
}

impl Module for QuantizedConv2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.forward_checked(xs)?)
    }
}
