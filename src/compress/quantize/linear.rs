//! An int8 linear layer for inference: $y = x W^\top + b$ with the weight stored as 8-bit
//! integers and the product computed in integers (PyTorch's `torch.ao.nn.quantized.Linear` and
//! its dynamic variant).
//!
//! # Shapes
//! - input `(…, in)` f32, any number of leading dimensions; output `(…, out)` f32.
//! - stored tensors: `weight` `U8` `(out, in)`, the bit patterns of the `i8` values (`v as u8`;
//!   candle has no `i8` dtype), `weight_scale` f32 `(out)`, `bias` f32 `(out)`
//!   ([`QuantizedLinear::tensors`]); $W \approx q \thinspace s_c$ row by row.
//!
//! # Tip
//! **Quantize the weights of the big linear layers for CPU inference.** An int8 weight is 4×
//! smaller than an f32 one ([`QuantizedLinear::size_bytes`]), so a model loads faster, fits the
//! caches better and reads a quarter of the memory per token; and the product runs on 8-bit
//! integer instructions that do more multiply-adds per cycle than f32 FMAs (on AVX2 the kernel
//! does 32 int8 multiply-adds in 3 instructions where f32 needs 4 FMAs). The input is
//! quantized on the fly to $[0, 127]$, per tensor: from each batch's own range
//! ([`InputQuant::Dynamic`], nothing to calibrate, the usual choice for linear layers and
//! transformers) or from a range observed on calibration data ([`InputQuant::Static`], one
//! pass less, but outliers outside the range clip). The output is dequantized straight to f32,
//! $y = s_a s_w[n] \thinspace (\sum_k q_a q_w - z_a \sum_k q_w) + b_n$, so everything after the
//! layer (bias, activation, normalization, softmax) stays float.
//!
//! What it costs: each weight is rounded to one of 256 levels per output channel and each
//! input to one of 128 levels per tensor, a relative error of the order of $1/128$ per
//! product that averages out over `in` terms; classifiers typically lose well under one point
//! of accuracy (Jacob et al. 2018). Layers whose inputs have a few huge outliers (the
//! activations of large language models) quantize badly per tensor: keep those float or
//! calibrate carefully. There is no backward: train in f32 (or with fake quantization), then
//! convert.
//!
//! On CPU the product is this crate's int8 kernel (AVX2 where the CPU has it); other devices
//! compute the same formula in f32 tensor ops (the input fake-quantized, the weight
//! dequantized), so a quantized model runs everywhere. At batch 64, 1024 → 4096 on AVX2 it runs
//! about 2× faster than `candle_nn::Linear` (2.2 to 2.8× single-threaded; see
//! `docs/PERFORMANCE.md`), and about as fast as PyTorch's fbgemm dynamic quantized linear.
//!
//! # Example
//! ```
//! use candle_core::{Device, Module, Tensor};
//! use candle_tricks::compress::quantize::{InputQuant, QuantizedLinear};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let w = Tensor::randn(0f32, 0.1, (256, 512), &dev)?;
//! let b = Tensor::randn(0f32, 0.1, 256, &dev)?;
//! let float = candle_nn::Linear::new(w, Some(b));
//! let int8 = QuantizedLinear::from_linear(&float, InputQuant::Dynamic)?;
//! // Close to 4× smaller: one byte per weight, plus a scale and a bias per output.
//! assert!(int8.float_size_bytes() as f64 / int8.size_bytes() as f64 > 3.9);
//! let x = Tensor::randn(0f32, 1., (8, 512), &dev)?;
//! let (y, r) = (int8.forward(&x)?, float.forward(&x)?);
//! // Within a few percent of the f32 layer's output range.
//! let err = (&y - &r)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! let range = r.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(err < 0.03 * range, "{err} vs {range}");
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Jacob et al., *Quantization and Training of Neural Networks for Efficient
//!   Integer-Arithmetic-Only Inference*, 2018. <https://arxiv.org/abs/1712.05877>

use std::collections::HashMap;

use candle_core::{DType, Module, Tensor, D};

use super::int8::{fake_quantize_input, quantize_rows, try_bytes, Int8Weight};
use super::{InputQuant, QatLinear};
use crate::{Error, Result};

const BLOCK: &str = "QuantizedLinear";

/// An int8 linear layer (see the module docs).
#[derive(Debug, Clone)]
pub struct QuantizedLinear {
    weight: Int8Weight,
    in_features: usize,
    input: InputQuant,
}

impl QuantizedLinear {
    /// Quantizes `linear`'s weight per output channel (symmetric `qint8`, torch's
    /// `PerChannelMinMaxObserver`); the bias stays f32.
    ///
    /// # Errors
    /// A weight that is not 2-D f32 or holds NaN / Inf, a bias of the wrong shape or dtype,
    /// invalid static input parameters.
    pub fn from_linear(linear: &candle_nn::Linear, input: InputQuant) -> Result<Self> {
        Self::new(linear.weight(), linear.bias(), input)
    }

    /// [`QuantizedLinear::from_linear`] from an f32 `(out, in)` weight and `(out)` bias.
    ///
    /// # Errors
    /// As [`QuantizedLinear::from_linear`].
    pub fn new(weight: &Tensor, bias: Option<&Tensor>, input: InputQuant) -> Result<Self> {
        input.validate(BLOCK)?;
        check_rank2(weight)?;
        let weight = Int8Weight::from_float(BLOCK, weight, bias, None)?;
        Self::build(weight, input)
    }

    /// The int8 layer of a calibrated or quantization-aware-trained [`QatLinear`] (torch's
    /// `convert`): its weight quantized with the weight fake-quantizer's parameters, so the
    /// int8 layer rounds exactly as training did, and its observed input range as
    /// [`InputQuant::Static`].
    ///
    /// # Errors
    /// No forward with the observers on yet, or parameters the int8 kernel cannot take (a QAT
    /// config other than per-channel symmetric `QInt8` weights and `[0, 127]` inputs).
    pub fn from_qat(qat: &QatLinear) -> Result<Self> {
        let input = InputQuant::Static(qat.input_qparams()?);
        input.validate(BLOCK)?;
        check_rank2(qat.weight())?;
        let params = qat.weight_qparams()?;
        let weight = Int8Weight::from_float(BLOCK, qat.weight(), qat.bias(), Some(&params))?;
        Self::build(weight, input)
    }

    /// From stored tensors (see the module docs): `weight` `U8` `(out, in)`, `weight_scale`
    /// f32 `(out)`, `bias` f32 `(out)`.
    ///
    /// # Errors
    /// Wrong dtypes or shapes, a scale that is not positive and finite, a non-finite bias,
    /// invalid static input parameters.
    pub fn from_quantized(
        weight: Tensor,
        weight_scale: Tensor,
        bias: Option<Tensor>,
        input: InputQuant,
    ) -> Result<Self> {
        input.validate(BLOCK)?;
        check_rank2(&weight)?;
        Self::build(
            Int8Weight::from_quantized(BLOCK, weight, weight_scale, bias)?,
            input,
        )
    }

    fn build(weight: Int8Weight, input: InputQuant) -> Result<Self> {
        let in_features = weight.q.dim(1)?;
        Ok(Self {
            weight,
            in_features,
            input,
        })
    }

    /// The int8 weight as `U8` bit patterns, `(out, in)`.
    pub fn weight_int8(&self) -> &Tensor {
        &self.weight.q
    }

    /// The per-output-channel weight scales, f32 `(out)`.
    pub fn weight_scale(&self) -> &Tensor {
        &self.weight.scale
    }

    /// The f32 bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.weight.bias.as_ref()
    }

    /// How the input is quantized.
    pub fn input_quant(&self) -> &InputQuant {
        &self.input
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.out()
    }

    /// The f32 weight the int8 one stands for, `(out, in)`.
    pub fn dequantized_weight(&self) -> Result<Tensor> {
        self.weight.dequantized()
    }

    /// Bytes of the stored layer: the int8 weight, one f32 scale per output and the bias.
    pub fn size_bytes(&self) -> usize {
        self.weight.size_bytes()
    }

    /// Bytes of the f32 layer it replaces (weight and bias).
    pub fn float_size_bytes(&self) -> usize {
        self.weight.float_size_bytes()
    }

    /// The stored tensors by name (`weight`, `weight_scale`, `bias`), e.g. for
    /// `candle_core::safetensors::save`; [`QuantizedLinear::from_quantized`] loads them back.
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
        let k = self.in_features;
        if x.rank() == 0 || x.dim(D::Minus1)? != k {
            return Err(Error::shape(
                BLOCK,
                "input",
                format!("(…, {k})"),
                x.shape().clone(),
            ));
        }
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
        let mut dims = x.dims()[..x.rank() - 1].to_vec();
        let m: usize = dims.iter().product();
        dims.push(self.out_features());
        let Some(packed) = self.weight.packed_for(x) else {
            let xq = fake_quantize_input(BLOCK, &self.input, x)?;
            let y = crate::ops::linear(&xq, &self.weight.dequantized()?, self.bias())?;
            return Ok(y);
        };
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let q = self.input.params_for(BLOCK, &xs)?;
        let kp = packed.kp();
        let len = m.checked_mul(kp).ok_or_else(|| {
            Error::config(
                BLOCK,
                format!("quantized input of {m} rows of {kp} bytes overflows"),
            )
        })?;
        let mut a = try_bytes(BLOCK, "quantized input", len)?;
        quantize_rows(BLOCK, &xs, k, kp, &q, &mut a)?;
        Ok(self.weight.matmul_cpu(packed, &a, m, &q)?.reshape(dims)?)
    }
}

fn check_rank2(weight: &Tensor) -> Result<()> {
    if weight.rank() != 2 {
        return Err(Error::shape(
            BLOCK,
            "weight",
            "(out, in)",
            weight.shape().clone(),
        ));
    }
    Ok(())
}

impl Module for QuantizedLinear {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.forward_checked(xs)?)
    }
}
