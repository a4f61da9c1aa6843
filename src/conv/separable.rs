//! Depthwise-separable convolution: a depthwise $k \times k$ convolution (one filter per channel),
//! an optional BatchNorm + activation, then a pointwise 1×1 convolution that mixes channels —
//! timm's `SeparableConv2d`, with the optional norms of its aligned-Xception variant.
//!
//! # Shapes
//! - input `(B, C_in, H, W)`, output `(B, C_out, Ho, Wo)`; $Ho, Wo$ follow
//!   [`crate::conv::Padding`] for the depthwise stage (`Same` by default: $\lceil H/s \rceil$).
//! - Tensors, under timm's names:
//!   - `conv_dw.weight` `(C_in·m, 1, k, k)` (no bias), $m$ the channel multiplier;
//!   - `bn_dw.{weight, bias, running_mean, running_var}` `(C_in·m)` when
//!     [`SeparableConv2dConfig::dw_norm`] is set;
//!   - `conv_pw.weight` `(C_out, C_in·m, 1, 1)` and `conv_pw.bias` `(C_out)` when
//!     [`SeparableConv2dConfig::bias`] is set;
//!   - `bn_pw.*` `(C_out)` when [`SeparableConv2dConfig::pw_norm`] is set.
//! - dtypes: the depthwise kernel takes f32, f16 and bf16; the 1×1 runs as a candle matmul, which
//!   on CPU takes f32 and f16 (bf16 is refused there with an error).
//!
//! # Tip
//! **Split spatial and channel mixing when compute is tight.** A dense $k \times k$ convolution
//! from $C_{in}$ to $C_{out}$ channels filters space and mixes channels at once with
//! $k^2 C_{in} C_{out}$ weights. The separable form does the two jobs one after the other: a
//! depthwise $k \times k$ ($k^2 C_{in}$ weights) and a 1×1 ($C_{in} C_{out}$), so
//!
//! $$ \frac{k^2 C_{in} + C_{in} C_{out}}{k^2 C_{in} C_{out}} = \frac{1}{C_{out}} + \frac{1}{k^2} $$
//!
//! of the weights, and the same fraction of multiply-adds since both run at every output pixel:
//! for a 3×3, about 8 times fewer at 64 output channels, approaching 9 as $C_{out}$ grows. This
//! is how MobileNet, Xception and EfficientNet afford their depth. The trade-offs: each layer has
//! less capacity (the factorisation assumes spatial and cross-channel correlations can be learned
//! separately, which is Xception's hypothesis), so separable networks need more layers or channels
//! for the same accuracy; and the depthwise half is memory-bound, so the wall-clock gain is smaller
//! than the FLOP ratio. Xception found it best to put *no* non-linearity between the two halves
//! (the default here); MobileNet v1 and DeepLab's aligned Xception put BatchNorm + ReLU after each
//! half ([`SeparableConv2dConfig::xception`]).
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::conv::{separable_conv2d, SeparableConv2dConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let (c_in, c_out, k) = (32usize, 64usize, 3usize);
//! let count = |vm: &VarMap| vm.all_vars().iter().map(|v| v.elem_count()).sum::<usize>();
//!
//! let sep_map = VarMap::new();
//! let sep = separable_conv2d(c_in, c_out, k, SeparableConv2dConfig::default(),
//!     VarBuilder::from_varmap(&sep_map, DType::F32, &dev))?;
//! let dense_map = VarMap::new();
//! let dense = candle_nn::conv2d_no_bias(c_in, c_out, k,
//!     candle_nn::Conv2dConfig { padding: 1, ..Default::default() },
//!     VarBuilder::from_varmap(&dense_map, DType::F32, &dev))?;
//!
//! // k^2 C_in + C_in C_out weights against k^2 C_in C_out.
//! assert_eq!(count(&sep_map), k * k * c_in + c_in * c_out);
//! assert_eq!(count(&dense_map), k * k * c_in * c_out);
//!
//! // Both produce the same output size, so multiply-adds are weights x output pixels and the
//! // ratio is 1/C_out + 1/k^2 (here 0.127: 7.9 times fewer).
//! let x = Tensor::randn(0f32, 1., (1, c_in, 16, 16), &dev)?;
//! let (ys, yd) = (sep.forward_t(&x, false)?, x.apply_t(&dense, false)?);
//! assert_eq!(ys.dims(), yd.dims());
//! let pixels = 16 * 16;
//! let ratio = (count(&sep_map) * pixels) as f64 / (count(&dense_map) * pixels) as f64;
//! assert!((ratio - (1.0 / c_out as f64 + 1.0 / (k * k) as f64)).abs() < 1e-12);
//! assert!(1.0 / ratio > 7.8);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Chollet, *Xception: Deep Learning with Depthwise Separable Convolutions*, 2016,
//!   <https://arxiv.org/abs/1610.02357>
//! - Howard et al., *MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
//!   Applications*, 2017, <https://arxiv.org/abs/1704.04861>

use super::depthwise::{depthwise_conv2d_no_bias, DepthwiseConv2d};
use super::Conv2d;
use crate::conv::Padding;
use crate::norm::batch::batch_norm_with;
use crate::norm::BatchNorm;
use crate::ops::DepthwiseConv2dConfig;
use crate::{check, Error, Result};
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{Activation, VarBuilder};

const BLOCK: &str = "SeparableConv2d";

/// Configuration of a [`SeparableConv2d`]; the defaults are timm's `SeparableConv2d`
/// (no norm, no activation, no bias).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeparableConv2dConfig {
    /// Stride of the depthwise convolution, > 0. Default 1.
    pub stride: usize,
    /// Padding of the depthwise convolution. Default [`Padding::Same`].
    pub padding: Padding,
    /// Dilation of the depthwise convolution, > 0. Default 1.
    pub dilation: usize,
    /// Channel multiplier $m$ of the depthwise stage (`C_in·m` channels reach the 1×1), > 0.
    /// Default 1.
    pub multiplier: usize,
    /// Whether the pointwise convolution has a bias (`conv_pw.bias`). Default `false`; leave it
    /// off when `pw_norm` follows.
    pub bias: bool,
    /// BatchNorm after the depthwise stage (`bn_dw`). Default `false`.
    pub dw_norm: bool,
    /// Activation after the depthwise stage (and its norm). Default `None` (Xception's choice).
    pub dw_act: Option<Activation>,
    /// BatchNorm after the pointwise stage (`bn_pw`). Default `false`.
    pub pw_norm: bool,
    /// Activation at the end of the block. Default `None`.
    pub pw_act: Option<Activation>,
    /// BatchNorm epsilon, > 0. Default 1e-5.
    pub bn_eps: f64,
    /// BatchNorm running-statistics momentum, in `[0, 1]`. Default 0.1.
    pub bn_momentum: f64,
}

impl Default for SeparableConv2dConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: Padding::Same,
            dilation: 1,
            multiplier: 1,
            bias: false,
            dw_norm: false,
            dw_act: None,
            pw_norm: false,
            pw_act: None,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
        }
    }
}

impl SeparableConv2dConfig {
    /// DeepLab's aligned-Xception unit (timm `xception_aligned.SeparableConv2d`): BatchNorm + ReLU
    /// after the depthwise and after the pointwise stage, no bias. Also MobileNet v1's block.
    pub fn xception() -> Self {
        Self {
            dw_norm: true,
            dw_act: Some(Activation::Relu),
            pw_norm: true,
            pw_act: Some(Activation::Relu),
            ..Self::default()
        }
    }

    /// Sets the stride.
    pub fn with_stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the padding.
    pub fn with_padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Sets the dilation.
    pub fn with_dilation(mut self, dilation: usize) -> Self {
        self.dilation = dilation;
        self
    }

    /// Sets the channel multiplier.
    pub fn with_multiplier(mut self, multiplier: usize) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets whether the pointwise convolution has a bias.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets the norm and activation after the depthwise stage.
    pub fn with_dw_norm_act(mut self, norm: bool, act: Option<Activation>) -> Self {
        self.dw_norm = norm;
        self.dw_act = act;
        self
    }

    /// Sets the norm and activation after the pointwise stage.
    pub fn with_pw_norm_act(mut self, norm: bool, act: Option<Activation>) -> Self {
        self.pw_norm = norm;
        self.pw_act = act;
        self
    }

    /// The depthwise stage's stride, padding and dilation.
    pub fn depthwise(&self) -> DepthwiseConv2dConfig {
        DepthwiseConv2dConfig {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
        }
    }

    /// Checks every value; errors name `SeparableConv2d`.
    pub fn validate(&self) -> Result<()> {
        check::positive(BLOCK, "stride", self.stride)?;
        check::positive(BLOCK, "dilation", self.dilation)?;
        check::positive(BLOCK, "multiplier", self.multiplier)?;
        check::eps(BLOCK, "bn_eps", self.bn_eps)?;
        check::unit_interval(BLOCK, "bn_momentum", self.bn_momentum)?;
        Ok(())
    }
}

/// A depthwise-separable convolution (timm's `SeparableConv2d`); see the [module docs](self).
///
/// Implements [`ModuleT`]: `train` only matters when a BatchNorm is configured (batch statistics
/// and running-statistics updates in training, running statistics in inference).
#[derive(Debug, Clone)]
pub struct SeparableConv2d {
    conv_dw: DepthwiseConv2d,
    bn_dw: Option<BatchNorm>,
    conv_pw: Conv2d,
    bn_pw: Option<BatchNorm>,
    cfg: SeparableConv2dConfig,
    in_channels: usize,
}

fn check_norm(
    what: &'static str,
    bn: Option<&BatchNorm>,
    expected: bool,
    features: usize,
) -> Result<()> {
    match (bn, expected) {
        (None, false) => Ok(()),
        (Some(bn), true) => {
            if bn.channels() != features {
                return Err(Error::config(
                    BLOCK,
                    format!(
                        "{what}: ({features}) features expected, got {}",
                        bn.channels()
                    ),
                ));
            }
            Ok(())
        }
        (got, _) => Err(Error::config(
            BLOCK,
            format!(
                "{what}: config says norm = {expected}, but a norm was{} given",
                if got.is_some() { "" } else { " not" }
            ),
        )),
    }
}

impl SeparableConv2d {
    /// Builds the block from its parts. `cfg` must agree with them: the depthwise layer's stride,
    /// padding and dilation, `C_in·m` divisible by `cfg.multiplier`, a norm present exactly when
    /// `dw_norm` / `pw_norm` is set, a `(C_out, C_in·m, 1, 1)` pointwise weight with stride 1, no
    /// padding or groups, and a bias exactly when `cfg.bias`. Errors name `SeparableConv2d`.
    pub fn new(
        conv_dw: DepthwiseConv2d,
        bn_dw: Option<BatchNorm>,
        conv_pw: Conv2d,
        bn_pw: Option<BatchNorm>,
        cfg: SeparableConv2dConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        if conv_dw.config() != cfg.depthwise() {
            return Err(Error::config(
                BLOCK,
                format!(
                    "conv_dw has {:?}, the config says {:?}",
                    conv_dw.config(),
                    cfg.depthwise()
                ),
            ));
        }
        let cm = conv_dw.out_channels();
        if !cm.is_multiple_of(cfg.multiplier) {
            return Err(Error::config(
                BLOCK,
                format!(
                    "conv_dw has {cm} channels, not a multiple of multiplier {}",
                    cfg.multiplier
                ),
            ));
        }
        let w = conv_pw.weight();
        check::rank(BLOCK, "conv_pw.weight", w, 4, "(C_out, C_in·m, 1, 1)")?;
        check::non_empty(BLOCK, "conv_pw.weight", w)?;
        check::same_dtype_device(BLOCK, "conv_pw.weight", conv_dw.weight(), w)?;
        let c_out = w.dims()[0];
        if w.dims()[1..] != [cm, 1, 1] {
            return Err(Error::shape(
                BLOCK,
                "conv_pw.weight",
                format!("(C_out, {cm}, 1, 1)"),
                w.shape().clone(),
            ));
        }
        let pc = conv_pw.config();
        // Every padding but a positive explicit one pads a 1x1 kernel by 0.
        let pads = matches!(pc.padding, crate::conv::Padding::Explicit(p) if p > 0);
        if pc.stride != 1 || pads || pc.groups != 1 || pc.dilation != 1 {
            return Err(Error::config(
                BLOCK,
                format!(
                    "conv_pw must have stride 1, padding 0, dilation 1 and groups 1, \
                     got {}, {:?}, {}, {}",
                    pc.stride, pc.padding, pc.dilation, pc.groups
                ),
            ));
        }
        match (conv_pw.bias(), cfg.bias) {
            (None, false) => {}
            (Some(b), true) => {
                check::same_dtype_device(BLOCK, "conv_pw.bias", w, b)?;
                if b.dims() != [c_out] {
                    return Err(Error::shape(
                        BLOCK,
                        "conv_pw.bias",
                        format!("({c_out})"),
                        b.shape().clone(),
                    ));
                }
            }
            (b, _) => {
                return Err(Error::config(
                    BLOCK,
                    format!(
                        "config says bias = {}, but conv_pw {} a bias",
                        cfg.bias,
                        if b.is_some() { "has" } else { "has no" }
                    ),
                ))
            }
        }
        check_norm("bn_dw", bn_dw.as_ref(), cfg.dw_norm, cm)?;
        check_norm("bn_pw", bn_pw.as_ref(), cfg.pw_norm, c_out)?;
        Ok(Self {
            conv_dw,
            bn_dw,
            conv_pw,
            bn_pw,
            cfg,
            in_channels: cm / cfg.multiplier,
        })
    }

    /// The depthwise stage.
    pub fn conv_dw(&self) -> &DepthwiseConv2d {
        &self.conv_dw
    }

    /// The pointwise stage (a 1×1 convolution, run as a matrix product).
    pub fn conv_pw(&self) -> &Conv2d {
        &self.conv_pw
    }

    /// The configuration.
    pub fn config(&self) -> SeparableConv2dConfig {
        self.cfg
    }

    /// Number of input channels `C_in`.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Number of output channels `C_out`.
    pub fn out_channels(&self) -> usize {
        self.conv_pw.weight().dims()[0]
    }

    /// Kernel size `(kh, kw)` of the depthwise stage.
    pub fn kernel_size(&self) -> (usize, usize) {
        self.conv_dw.kernel_size()
    }

    fn check_input(&self, xs: &Tensor) -> Result<()> {
        check::rank(BLOCK, "input", xs, 4, "(B, C_in, H, W)")?;
        check::non_empty(BLOCK, "input", xs)?;
        check::float_dtype(BLOCK, "input", xs)?;
        check::same_dtype_device(BLOCK, "input", self.conv_dw.weight(), xs)?;
        let (b, c, h, w) = xs.dims4()?;
        if c != self.in_channels {
            return Err(Error::shape(
                BLOCK,
                "input",
                format!("(B, {}, H, W)", self.in_channels),
                (b, c, h, w),
            ));
        }
        let (kh, kw) = self.kernel_size();
        let (s, p, d) = (self.cfg.stride, self.cfg.padding, self.cfg.dilation);
        if p.output_size(h, kh, s, d).is_none() || p.output_size(w, kw, s, d).is_none() {
            return Err(Error::shape(
                BLOCK,
                "input",
                format!(
                    "H, W at least the kernel extent {}x{} after {p:?} padding",
                    d * (kh - 1) + 1,
                    d * (kw - 1) + 1
                ),
                (b, c, h, w),
            ));
        }
        Ok(())
    }
}

impl ModuleT for SeparableConv2d {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.check_input(xs)?;
        let ys = self.conv_dw.forward(xs)?;
        let ys = norm_act(ys, self.bn_dw.as_ref(), self.cfg.dw_act.as_ref(), train)?;
        // The 1x1 convolution: `ops::conv2d` multiplies the input in place (no column copy)
        // and computes the weight gradient as one product, not one per image.
        let ys = self.conv_pw.forward(&ys)?;
        Ok(norm_act(
            ys,
            self.bn_pw.as_ref(),
            self.cfg.pw_act.as_ref(),
            train,
        )?)
    }
}

/// The optional norm then the optional activation; a batch norm in training fuses a ReLU /
/// ReLU6 into its kernel ([`BatchNorm::forward_act`]).
fn norm_act(
    ys: Tensor,
    bn: Option<&BatchNorm>,
    act: Option<&Activation>,
    train: bool,
) -> Result<Tensor> {
    match (bn, act) {
        (Some(bn), Some(act)) => bn.forward_act(&ys, act, train),
        (Some(bn), None) => bn.forward_train_eval(&ys, train),
        (None, Some(act)) => crate::ops::activation(&ys, act),
        (None, None) => Ok(ys),
    }
}

/// Creates (or loads, under timm's names `conv_dw`, `bn_dw`, `conv_pw`, `bn_pw`) a separable
/// convolution from `in_channels` to `out_channels` with a square `kernel_size` depthwise kernel.
/// Weights and bias use PyTorch's default init (uniform, bound $1/\sqrt{fan_{in}}$).
///
/// Errors (naming `SeparableConv2d`) on zero channels or kernel, an invalid config, or tensors of
/// the wrong shape in `vb`.
pub fn separable_conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: SeparableConv2dConfig,
    vb: VarBuilder,
) -> Result<SeparableConv2d> {
    check::loading(BLOCK, vb, |vb| {
        cfg.validate()?;
        check::positive(BLOCK, "in_channels", in_channels)?;
        check::positive(BLOCK, "out_channels", out_channels)?;
        check::positive(BLOCK, "kernel_size", kernel_size)?;
        let cm = in_channels.checked_mul(cfg.multiplier).ok_or_else(|| {
            let msg = format!("in_channels {in_channels} × multiplier {}", cfg.multiplier);
            Error::config(BLOCK, format!("{msg} overflows"))
        })?;
        let bn = |on: bool, channels, name| {
            on.then(|| batch_norm_with(channels, cfg.bn_eps, cfg.bn_momentum, vb.pp(name)))
                .transpose()
        };
        let dw_vb = vb.pp("conv_dw");
        let conv_dw = depthwise_conv2d_no_bias(
            in_channels,
            cfg.multiplier,
            kernel_size,
            cfg.depthwise(),
            dw_vb,
        )?;
        let bn_dw = bn(cfg.dw_norm, cm, "bn_dw")?;
        let pw_shape = (out_channels, cm, 1, 1);
        let (weight, bias) =
            crate::conv::init::weight_and_bias(BLOCK, &vb.pp("conv_pw"), pw_shape, cfg.bias)?;
        let conv_pw = Conv2d::new(weight, bias, Default::default())?;
        let bn_pw = bn(cfg.pw_norm, out_channels, "bn_pw")?;
        SeparableConv2d::new(conv_dw, bn_dw, conv_pw, bn_pw, cfg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_block() {
        assert!(SeparableConv2dConfig::default().validate().is_ok());
        assert!(SeparableConv2dConfig::xception().validate().is_ok());
        for (cfg, needle) in [
            (SeparableConv2dConfig::default().with_stride(0), "stride"),
            (
                SeparableConv2dConfig::default().with_dilation(0),
                "dilation",
            ),
            (
                SeparableConv2dConfig::default().with_multiplier(0),
                "multiplier",
            ),
            (
                SeparableConv2dConfig {
                    bn_eps: -1.0,
                    ..Default::default()
                },
                "bn_eps",
            ),
            (
                SeparableConv2dConfig {
                    bn_momentum: 2.0,
                    ..Default::default()
                },
                "bn_momentum",
            ),
        ] {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(
                err.contains("SeparableConv2d") && err.contains(needle),
                "{err}"
            );
        }
    }
}
