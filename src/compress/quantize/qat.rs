//! Quantization-aware layers: [`QatLinear`] and [`QatConv2d`], a float layer whose weight and
//! input are fake-quantized (torch's `torch.ao.nn.qat.Linear` / `Conv2d` with the input's
//! fake-quantizer of the layer before them folded in).

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::fake_quantize::FakeQuantize;
use super::observer::{ObserverConfig, ObserverKind};
use super::qparams::QParams;
use crate::conv::{conv2d, Conv2d};
use crate::ops::Conv2dConfig;
use crate::{Error, Result};

/// The observers of a QAT layer. Default: torch's x86 QAT configuration: the weight
/// `QInt8` per-channel symmetric on axis 0 with a moving-average observer, the input `QUInt8`
/// per-tensor affine with `reduce_range` ($[0, 127]$) and a moving-average observer, both with
/// averaging constant 0.01.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QatConfig {
    /// The weight's observer (per channel on axis 0 is the usual choice).
    pub weight: ObserverConfig,
    /// The input's observer.
    pub input: ObserverConfig,
}

impl Default for QatConfig {
    fn default() -> Self {
        Self {
            weight: ObserverConfig::weight().with_kind(ObserverKind::MovingAverage {
                averaging_constant: 0.01,
            }),
            input: ObserverConfig::activation(),
        }
    }
}

impl QatConfig {
    /// Sets the weight's observer.
    pub fn with_weight(mut self, weight: ObserverConfig) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the input's observer.
    pub fn with_input(mut self, input: ObserverConfig) -> Self {
        self.input = input;
        self
    }
}

/// What a QAT layer's fake-quantizers do in `forward` (set on both at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QatMode {
    /// Observe and fake-quantize (the default): quantization-aware training.
    Train,
    /// Observe only; the layer computes in float. Run a calibration set through it for
    /// post-training quantization, then read [`QatLinear::input_qparams`].
    Calibrate,
    /// Fake-quantize with frozen parameters: late in QAT, and to evaluate the int8 model's
    /// accuracy in float.
    Frozen,
}

/// The fake-quantizers of one layer and their shared logic.
#[derive(Debug, Clone)]
struct Quantizers {
    weight: FakeQuantize,
    input: FakeQuantize,
}

impl Quantizers {
    fn new(cfg: QatConfig) -> Result<Self> {
        Ok(Self {
            weight: FakeQuantize::new(cfg.weight)?,
            input: FakeQuantize::new(cfg.input)?,
        })
    }

    fn set_mode(&mut self, mode: QatMode) {
        let (observe, quantize) = match mode {
            QatMode::Train => (true, true),
            QatMode::Calibrate => (true, false),
            QatMode::Frozen => (false, true),
        };
        for fq in [&mut self.weight, &mut self.input] {
            fq.enable_observer(observe);
            fq.enable_fake_quant(quantize);
        }
    }

    fn input_qparams(&self, block: &'static str) -> Result<QParams> {
        self.input.qparams().ok_or_else(|| {
            Error::config(
                block,
                "input_qparams() before any forward with the observer on",
            )
        })
    }

    /// The weight's parameters: those of the last observing forward, or (before any) those
    /// of the current weight.
    fn weight_qparams(&self, weight: &Tensor) -> Result<QParams> {
        if let Some(qp) = self.weight.qparams() {
            return Ok(qp);
        }
        let mut observer = self.weight.observer();
        observer.observe(weight)?;
        observer.qparams()
    }
}

/// `candle_nn::Linear` trained with a fake-quantized weight on a fake-quantized input:
/// $y = Q_{in}(x)\thinspace Q_{w}(W)^\top + b$ ($Q$ the fake-quantizers), gradients reaching $W$ (and
/// $x$) through the straight-through estimator. The bias stays float (int8 inference adds it
/// in i32 or f32).
///
/// # Shapes
/// - input `(…, in_features)`, output `(…, out_features)`; weight `(out_features,
///   in_features)`, bias `(out_features)` (torch's names `weight`, `bias`).
#[derive(Debug, Clone)]
pub struct QatLinear {
    linear: Linear,
    fq: Quantizers,
}

impl QatLinear {
    const BLOCK: &'static str = "QatLinear";

    /// Wraps a float linear layer (e.g. a trained one, for QAT fine-tuning or calibration).
    ///
    /// # Errors
    /// An invalid observer configuration; a weight that is not 2-D.
    pub fn new(linear: Linear, cfg: QatConfig) -> Result<Self> {
        let w = linear.weight();
        if w.rank() != 2 {
            let e = Error::shape(
                Self::BLOCK,
                "weight",
                "(out_features, in_features)",
                w.shape().clone(),
            );
            return Err(e);
        }
        Ok(Self {
            linear,
            fq: Quantizers::new(cfg)?,
        })
    }

    /// Sets what the fake-quantizers do (default [`QatMode::Train`]).
    pub fn set_mode(&mut self, mode: QatMode) {
        self.fq.set_mode(mode);
    }

    /// The float weight `(out_features, in_features)`.
    pub fn weight(&self) -> &Tensor {
        self.linear.weight()
    }

    /// The float bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.linear.bias()
    }

    /// The wrapped float layer.
    pub fn linear(&self) -> &Linear {
        &self.linear
    }

    /// The input's fake-quantizer.
    pub fn input_fake_quant(&self) -> &FakeQuantize {
        &self.fq.input
    }

    /// The weight's fake-quantizer.
    pub fn weight_fake_quant(&self) -> &FakeQuantize {
        &self.fq.weight
    }

    /// The input's quantization parameters (for the int8 layer's activation quantization).
    ///
    /// # Errors
    /// No forward with the observer on yet.
    pub fn input_qparams(&self) -> Result<QParams> {
        self.fq.input_qparams(Self::BLOCK)
    }

    /// The weight's quantization parameters: those of the last observing forward, or, before
    /// any, those of the current weight.
    ///
    /// # Errors
    /// A non-finite weight.
    pub fn weight_qparams(&self) -> Result<QParams> {
        self.fq.weight_qparams(self.linear.weight())
    }
}

impl Module for QatLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.fq.input.forward(x)?;
        let w = self.fq.weight.forward(self.linear.weight())?;
        Linear::new(w, self.linear.bias().cloned()).forward(&x)
    }
}

/// Creates (or loads, under `weight` and `bias`) a [`QatLinear`] from `in_features` to
/// `out_features`, initialised as `candle_nn::linear`.
///
/// # Errors
/// As [`QatLinear::new`], and a load error naming the prefix.
pub fn qat_linear(
    in_features: usize,
    out_features: usize,
    cfg: QatConfig,
    vb: VarBuilder,
) -> Result<QatLinear> {
    let prefix = vb.prefix();
    let linear = candle_nn::linear(in_features, out_features, vb)
        .map_err(|e| Error::from(e).in_load(QatLinear::BLOCK, prefix))?;
    QatLinear::new(linear, cfg)
}

/// [`crate::conv::Conv2d`] trained with a fake-quantized weight (per output channel) on a
/// fake-quantized input; see [`QatLinear`].
///
/// # Shapes
/// - input `(B, Cin, H, W)`, output `(B, Cout, H_out, W_out)`; weight `(Cout, Cin/groups, kh,
///   kw)`, bias `(Cout)`.
#[derive(Debug, Clone)]
pub struct QatConv2d {
    conv: Conv2d,
    fq: Quantizers,
}

impl QatConv2d {
    const BLOCK: &'static str = "QatConv2d";

    /// Wraps a float convolution.
    ///
    /// # Errors
    /// An invalid observer configuration.
    pub fn new(conv: Conv2d, cfg: QatConfig) -> Result<Self> {
        Ok(Self {
            conv,
            fq: Quantizers::new(cfg)?,
        })
    }

    /// Sets what the fake-quantizers do (default [`QatMode::Train`]).
    pub fn set_mode(&mut self, mode: QatMode) {
        self.fq.set_mode(mode);
    }

    /// The float weight `(Cout, Cin/groups, kh, kw)`.
    pub fn weight(&self) -> &Tensor {
        self.conv.weight()
    }

    /// The float bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.conv.bias()
    }

    /// The wrapped float layer.
    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    /// The input's fake-quantizer.
    pub fn input_fake_quant(&self) -> &FakeQuantize {
        &self.fq.input
    }

    /// The weight's fake-quantizer.
    pub fn weight_fake_quant(&self) -> &FakeQuantize {
        &self.fq.weight
    }

    /// The input's quantization parameters; see [`QatLinear::input_qparams`].
    ///
    /// # Errors
    /// No forward with the observer on yet.
    pub fn input_qparams(&self) -> Result<QParams> {
        self.fq.input_qparams(Self::BLOCK)
    }

    /// The weight's quantization parameters; see [`QatLinear::weight_qparams`].
    ///
    /// # Errors
    /// A non-finite weight.
    pub fn weight_qparams(&self) -> Result<QParams> {
        self.fq.weight_qparams(self.conv.weight())
    }
}

impl Module for QatConv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.fq.input.forward(x)?;
        let w = self.fq.weight.forward(self.conv.weight())?;
        let conv = Conv2d::new(w, self.conv.bias().cloned(), self.conv.config())?;
        conv.forward(&x)
    }
}

/// Creates (or loads, under `weight` and `bias`) a [`QatConv2d`] with a square `kernel_size`
/// kernel, initialised as [`crate::conv::conv2d()`].
///
/// # Errors
/// As [`crate::conv::conv2d()`] and [`QatConv2d::new`].
pub fn qat_conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    conv_cfg: Conv2dConfig,
    cfg: QatConfig,
    vb: VarBuilder,
) -> Result<QatConv2d> {
    let conv = conv2d(in_channels, out_channels, kernel_size, conv_cfg, vb)?;
    QatConv2d::new(conv, cfg)
}
