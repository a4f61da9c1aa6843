//! MBConv, the mobile inverted bottleneck of MobileNetV2 and EfficientNet ([`MbConv`], timm's
//! `InvertedResidual` and, without expansion, its `DepthwiseSeparableConv`): 1×1 expand → BN →
//! act → k×k depthwise → BN → act → squeeze-excite → 1×1 project → BN, plus the input when the
//! shape allows.
//!
//! # Shapes
//! - input `(B, in_ch, H, W)` → output `(B, out_ch, H', W')` with
//!   $H^\prime = \lfloor (H + 2p - d(k - 1) - 1) / s \rfloor + 1$ for kernel $k$, stride $s$,
//!   dilation $d$ and timm's symmetric padding $p = \lfloor (s - 1 + d(k - 1)) / 2 \rfloor$
//!   (so $H^\prime = \lceil H / s \rceil$ for odd $k$).
//! - The expanded width is timm's `make_divisible(in_ch · expand_ratio, 8)` (a multiple of 8,
//!   never more than 10 % below the product); the squeeze-excite width is
//!   `round(mid · se_ratio / expand_ratio)`, i.e. `se_ratio` of the *input* channels as timm's
//!   EfficientNet builder computes it.
//! - Tensors, timm's names, so a slice `blocks.i.j.` of a timm `efficientnet_*` or
//!   `mobilenetv2_*` state dict loads unchanged. With expansion (`expand_ratio` ≠ 1,
//!   `InvertedResidual`): `conv_pw.weight` `(mid, in, 1, 1)`, `bn1.*`, `conv_dw.weight`
//!   `(mid, 1, k, k)`, `bn2.*`, `se.conv_reduce.{weight, bias}` `(rd, mid, 1, 1)`,
//!   `se.conv_expand.{weight, bias}` `(mid, rd, 1, 1)`, `conv_pwl.weight` `(out, mid, 1, 1)`,
//!   `bn3.*`. Without (`expand_ratio` = 1, `DepthwiseSeparableConv`): `conv_dw`, `bn1`, `se.*`,
//!   `conv_pw` (the projection) and `bn2`. The convolutions have no bias; `bn*.*` are batch-norm
//!   names (`weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`).
//!
//! # Tip
//! - **Expand, filter thinly, project: cheap FLOPs for a wide block.** A 1×1 conv widens the
//!   input $t$ times (6 in MobileNetV2 and EfficientNet), a depthwise $k \times k$ conv filters each
//!   channel on its own, a 1×1 conv projects back. Per pixel that is
//!   $C t C + k^2 t C + t C C^\prime$ multiply-adds against $k^2 t^2 C^2$ for a dense conv at the
//!   wide width — at $C = 24$, $t = 6$, $k = 3$: 8 208 against 186 624, 23× less. This is the
//!   workhorse of MobileNetV2/V3, MnasNet and EfficientNet.
//! - **The residual is thin and the projection linear.** The shortcut joins the narrow ends
//!   (only at stride 1 with `in_ch == out_ch`), and the projection has no activation: a ReLU on
//!   a narrow layer destroys information a low-dimensional manifold cannot spare (Sandler et al.).
//!   The memory-hungry wide tensor only lives inside the block.
//! - **Squeeze-excite for channel attention.** EfficientNet gates the wide depthwise output by a
//!   per-channel sigmoid computed from its global average ($\mathrm{SE}$, hidden width a quarter
//!   of the *input* channels) for about +1 % ImageNet top-1 at a few % more FLOPs.
//! - **Activation:** SiLU (swish) for EfficientNet, ReLU6 for MobileNetV2
//!   ([`MbConvConfig::mobilenet_v2`]), whose bounded range survived 8-bit quantization well.
//! - **Trade-off:** few FLOPs are not few milliseconds. Depthwise convs have little arithmetic
//!   per byte moved, so on GPUs an MBConv network is often memory-bound and slower than its FLOP
//!   count suggests (the reason for EfficientNetV2's fused MBConv in the early stages).
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::blocks::{mb_conv, MbConvConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let vm = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
//! // efficientnet_b0 blocks.1.1: 24 -> 24 channels, expansion 6, 3x3, SE 0.25, SiLU.
//! let block = mb_conv(24, 24, MbConvConfig::default(), vb)?;
//! assert_eq!((block.mid_channels(), block.se_channels()), (144, Some(6)));
//! assert!(block.has_skip());
//! // The three convolutions hold 24*144 + 9*144 + 144*24 = 8 208 weights (= multiply-adds per
//! // pixel); a dense 3x3 conv at the wide width would hold 9*144*144 = 186 624, 23x more.
//! let conv_weights: usize = vm.data().lock().unwrap().iter()
//!     .filter(|(name, _)| name.starts_with("conv"))
//!     .map(|(_, v)| v.elem_count())
//!     .sum();
//! assert_eq!(conv_weights, 8_208);
//! assert!(9 * 144 * 144 > 22 * conv_weights);
//!
//! let x = Tensor::randn(0f32, 1., (2, 24, 14, 14), &dev)?;
//! assert_eq!(block.forward_t(&x, true)?.dims(), &[2, 24, 14, 14]);
//! // Stride 2 and a new width: no residual, the map halves (rounding up).
//! let down = MbConvConfig::default().with_kernel_size(5).with_stride(2);
//! let down = mb_conv(24, 40, down, VarBuilder::zeros(DType::F32, &dev))?;
//! assert!(!down.has_skip());
//! assert_eq!(down.forward_t(&x, false)?.dims(), &[2, 40, 7, 7]);
//! // A wrong input width is an error naming the block.
//! let e = block.apply(&down.forward_t(&x, false)?, false).unwrap_err();
//! assert!(e.to_string().contains("MbConv"));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Sandler et al., *MobileNetV2: Inverted Residuals and Linear Bottlenecks*, 2018,
//!   <https://arxiv.org/abs/1801.04381>
//! - Tan & Le, *EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks*, 2019,
//!   <https://arxiv.org/abs/1905.11946>
//! - Hu et al., *Squeeze-and-Excitation Networks*, 2017, <https://arxiv.org/abs/1709.01507>
//! - timm `timm/models/_efficientnet_blocks.py` (`InvertedResidual`, `DepthwiseSeparableConv`,
//!   `SqueezeExcite`), <https://github.com/huggingface/pytorch-image-models>

use crate::attention::squeeze_excite::{make_divisible, PointwiseFc};
use crate::blocks::DropPath;
use crate::conv::{Conv2d, DepthwiseConv2d, DepthwiseConv2dConfig, Padding};
use crate::norm::{batch_norm, BatchNorm, BatchNormConfig};
use crate::ops::{activation, Conv2dConfig};
use crate::{check, Error, Result};
use candle_core::{ModuleT, Tensor};
use candle_nn::{Activation, Init, VarBuilder};

const BLOCK: &str = "MbConv";

/// Settings of an [`MbConv`]; `Default` is EfficientNet's MBConv6 3×3 with SE 0.25 and SiLU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MbConvConfig {
    /// Expansion ratio $t$ of the 1×1 conv (finite, ≥ 1); 1 skips the expansion (timm's
    /// `DepthwiseSeparableConv` and its tensor names). Default 6.
    pub expand_ratio: f64,
    /// Kernel size of the depthwise conv (> 0). Default 3.
    pub kernel_size: usize,
    /// Stride of the depthwise conv (> 0). Default 1.
    pub stride: usize,
    /// Dilation of the depthwise conv (> 0). Default 1.
    pub dilation: usize,
    /// Squeeze-excite hidden width as a fraction of the *input* channels, in `(0, 1]`; `None`
    /// for no SE. Default `Some(0.25)` (EfficientNet).
    pub se_ratio: Option<f64>,
    /// Activation after the first two norms and inside the SE. Default
    /// [`Activation::Silu`]; [`Activation::Relu6`] runs on the crate's fused kernel.
    pub act: Activation,
    /// Stochastic-depth rate on the residual branch, in `[0, 1)`. Default 0.
    pub drop_path: f32,
    /// Settings of the three batch norms. Default PyTorch's (eps 1e-5, momentum 0.1), as timm.
    pub bn: BatchNormConfig,
}

impl Default for MbConvConfig {
    fn default() -> Self {
        Self {
            expand_ratio: 6.0,
            kernel_size: 3,
            stride: 1,
            dilation: 1,
            se_ratio: Some(0.25),
            act: Activation::Silu,
            drop_path: 0.0,
            bn: BatchNormConfig::default(),
        }
    }
}

impl MbConvConfig {
    /// MobileNetV2's block: expansion 6, ReLU6, no squeeze-excite.
    pub fn mobilenet_v2() -> Self {
        Self {
            se_ratio: None,
            act: Activation::Relu6,
            ..Self::default()
        }
    }

    /// Sets the expansion ratio.
    pub fn with_expand_ratio(mut self, ratio: f64) -> Self {
        self.expand_ratio = ratio;
        self
    }

    /// Sets the depthwise kernel size.
    pub fn with_kernel_size(mut self, kernel_size: usize) -> Self {
        self.kernel_size = kernel_size;
        self
    }

    /// Sets the stride.
    pub fn with_stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the dilation.
    pub fn with_dilation(mut self, dilation: usize) -> Self {
        self.dilation = dilation;
        self
    }

    /// Sets the squeeze-excite ratio (`None`: no SE).
    pub fn with_se_ratio(mut self, se_ratio: Option<f64>) -> Self {
        self.se_ratio = se_ratio;
        self
    }

    /// Sets the activation.
    pub fn with_act(mut self, act: Activation) -> Self {
        self.act = act;
        self
    }

    /// Sets the stochastic-depth rate.
    pub fn with_drop_path(mut self, rate: f32) -> Self {
        self.drop_path = rate;
        self
    }

    /// Sets the batch-norm settings.
    pub fn with_bn(mut self, bn: BatchNormConfig) -> Self {
        self.bn = bn;
        self
    }

    /// Errors (naming `MbConvConfig`) unless `expand_ratio` is finite and ≥ 1, kernel size,
    /// stride and dilation are > 0, `se_ratio` (when set) lies in `(0, 1]`, `drop_path` in
    /// `[0, 1)` and the batch-norm settings are valid.
    pub fn validate(&self) -> Result<()> {
        const CFG: &str = "MbConvConfig";
        if !(self.expand_ratio.is_finite() && self.expand_ratio >= 1.0) {
            let msg = format!(
                "expand_ratio must be finite and >= 1, got {}",
                self.expand_ratio
            );
            return Err(Error::config(CFG, msg));
        }
        check::positive(CFG, "kernel_size", self.kernel_size)?;
        check::stride_dilation(CFG, self.stride, self.dilation)?;
        if let Some(r) = self.se_ratio {
            if !(r > 0.0 && r <= 1.0) {
                return Err(Error::config(
                    CFG,
                    format!("se_ratio must be in (0, 1], got {r}"),
                ));
            }
        }
        crate::blocks::drop_path::check_p(CFG, self.drop_path)?;
        self.bn
            .validate()
            .map_err(|e| Error::config(CFG, format!("bn: {e}")))
    }

    fn has_expansion(&self) -> bool {
        self.expand_ratio != 1.0
    }
}

/// timm's EfficientNet init, $\mathcal N(0, 2 / \mathrm{fan_{out}})$ with
/// $\mathrm{fan_{out}} = k^2 C_{out} / \mathrm{groups}$.
fn effnet_init(fan_out: usize) -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: (2.0 / fan_out.max(1) as f64).sqrt(),
    }
}

/// A bias-free 1×1 conv `(cout, cin, 1, 1)` under `vb`.
fn pointwise(cin: usize, cout: usize, vb: VarBuilder) -> Result<Conv2d> {
    let w = check::param(BLOCK, &vb, (cout, cin, 1, 1), "weight", effnet_init(cout))?;
    Conv2d::new(w, None, Conv2dConfig::default())
}

/// The squeeze-excite of timm's EfficientNet blocks: mean → `conv_reduce` → act →
/// `conv_expand` → sigmoid gate.
#[derive(Debug, Clone)]
struct Se {
    reduce: PointwiseFc,
    expand: PointwiseFc,
    channels: usize,
}

impl Se {
    fn apply(&self, x: &Tensor, act: &Activation) -> Result<Tensor> {
        let (b, c) = (x.dim(0)?, self.channels);
        let pooled = x.flatten_from(2)?.mean(2)?;
        let h = activation(&self.reduce.apply(&pooled)?, act)?;
        let gate = candle_nn::ops::sigmoid(&self.expand.apply(&h)?)?;
        Ok(x.broadcast_mul(&gate.reshape((b, c, 1, 1))?)?)
    }
}

/// The mobile inverted bottleneck block (MBConv); built by [`mb_conv`].
#[derive(Debug, Clone)]
pub struct MbConv {
    expand: Option<(Conv2d, BatchNorm)>,
    conv_dw: DepthwiseConv2d,
    bn_dw: BatchNorm,
    se: Option<Se>,
    project: Conv2d,
    bn_project: BatchNorm,
    drop_path: Option<DropPath>,
    in_ch: usize,
    out_ch: usize,
    mid: usize,
    cfg: MbConvConfig,
}

impl MbConv {
    /// Like [`ModuleT::forward_t`], returning this crate's error: errors (naming `MbConv`) when
    /// `x` is not `(B, in_ch, H, W)` in the weights' dtype and device.
    pub fn apply(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let first = match &self.expand {
            Some((conv, _)) => conv.weight(),
            None => self.conv_dw.weight(),
        };
        check::image_batch(BLOCK, "input", x, self.in_ch, first)?;
        let act = &self.cfg.act;
        let mut h = x.clone();
        if let Some((conv, bn)) = &self.expand {
            h = activation(&bn.forward_t(&h.apply(conv)?, train)?, act)?;
        }
        h = activation(&self.bn_dw.forward_t(&h.apply(&self.conv_dw)?, train)?, act)?;
        if let Some(se) = &self.se {
            h = se.apply(&h, act)?;
        }
        let h = self.bn_project.forward_t(&h.apply(&self.project)?, train)?;
        if !self.has_skip() {
            return Ok(h);
        }
        let h = match &self.drop_path {
            Some(dp) => dp.apply(&h, train)?,
            None => h,
        };
        Ok((h + x)?)
    }

    /// Whether the input is added back (stride 1 and `in_ch == out_ch`).
    pub fn has_skip(&self) -> bool {
        self.cfg.stride == 1 && self.in_ch == self.out_ch
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_ch
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.out_ch
    }

    /// The expanded width the depthwise conv works at (`in_ch` without expansion).
    pub fn mid_channels(&self) -> usize {
        self.mid
    }

    /// The squeeze-excite hidden width, if the block has an SE.
    pub fn se_channels(&self) -> Option<usize> {
        self.se.as_ref().map(|se| se.reduce.weight().dims()[0])
    }

    /// The configuration.
    pub fn config(&self) -> &MbConvConfig {
        &self.cfg
    }
}

impl ModuleT for MbConv {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(self.apply(xs, train)?)
    }
}

/// An [`MbConv`] from `in_ch` to `out_ch` channels with weights from `vb` under timm's names
/// (see the module docs: `conv_pw`, `bn1`, `conv_dw`, `bn2`, `se.conv_reduce`,
/// `se.conv_expand`, `conv_pwl`, `bn3`; without expansion `conv_dw`, `bn1`, `se.*`, `conv_pw`,
/// `bn2`). With a `VarMap` the convs are created as timm does ($\mathcal N(0, 2 / \mathrm{fan_{out}})$),
/// the SE convs with PyTorch's default and the norms at weight 1, bias 0.
///
/// Errors (naming `MbConv` or `MbConvConfig`) on zero channels, an invalid config, a
/// squeeze-excite width that rounds to 0, a size that overflows, or checkpoint tensors of the
/// wrong shape.
pub fn mb_conv(in_ch: usize, out_ch: usize, cfg: MbConvConfig, vb: VarBuilder) -> Result<MbConv> {
    cfg.validate()?;
    check::positive(BLOCK, "in_ch", in_ch)?;
    check::positive(BLOCK, "out_ch", out_ch)?;
    let mid = if cfg.has_expansion() {
        let wide = in_ch as f64 * cfg.expand_ratio;
        if wide > (usize::MAX / 2) as f64 {
            let msg = format!(
                "in_ch {in_ch} x expand_ratio {} overflows",
                cfg.expand_ratio
            );
            return Err(Error::config(BLOCK, msg));
        }
        make_divisible(wide, 8)
    } else {
        in_ch
    };
    let se_width = match cfg.se_ratio {
        Some(r) => {
            // As timm: round(mid * (se_ratio / exp_ratio)), ties to even like Python's round.
            let rd = (mid as f64 * (r / cfg.expand_ratio)).round_ties_even() as usize;
            if rd == 0 {
                let msg = format!(
                    "the squeeze-excite width round({mid} * {r} / {}) is 0; raise se_ratio",
                    cfg.expand_ratio
                );
                return Err(Error::config(BLOCK, msg));
            }
            Some(rd)
        }
        None => None,
    };
    check::loading(BLOCK, vb, |vb| {
        // timm's names depend on the block type: with expansion, `conv_pw` expands and
        // `conv_pwl` projects; without, `conv_pw` projects.
        let (names_dw, names_project) = if cfg.has_expansion() {
            (("conv_dw", "bn2"), ("conv_pwl", "bn3"))
        } else {
            (("conv_dw", "bn1"), ("conv_pw", "bn2"))
        };
        let expand = if cfg.has_expansion() {
            let conv = pointwise(in_ch, mid, vb.pp("conv_pw"))?;
            Some((conv, batch_norm(mid, cfg.bn, vb.pp("bn1"))?))
        } else {
            None
        };
        let (k, s, d) = (cfg.kernel_size, cfg.stride, cfg.dilation);
        let reach = d
            .checked_mul(k - 1)
            .and_then(|r| r.checked_add(s - 1))
            .ok_or_else(|| Error::config(BLOCK, format!("dilation {d} x kernel {k} overflows")))?;
        let dw_cfg = DepthwiseConv2dConfig::default()
            .with_stride(s)
            .with_dilation(d)
            .with_padding(Padding::Explicit(reach / 2));
        let init = effnet_init(k.saturating_mul(k));
        let w = check::param(BLOCK, &vb.pp(names_dw.0), (mid, 1, k, k), "weight", init)?;
        let conv_dw = DepthwiseConv2d::new(w, None, dw_cfg)?;
        let bn_dw = batch_norm(mid, cfg.bn, vb.pp(names_dw.1))?;
        let se = match se_width {
            Some(rd) => {
                let v = vb.pp("se");
                Some(Se {
                    reduce: PointwiseFc::load(BLOCK, rd, mid, true, v.pp("conv_reduce"))?,
                    expand: PointwiseFc::load(BLOCK, mid, rd, true, v.pp("conv_expand"))?,
                    channels: mid,
                })
            }
            None => None,
        };
        let project = pointwise(mid, out_ch, vb.pp(names_project.0))?;
        let bn_project = batch_norm(out_ch, cfg.bn, vb.pp(names_project.1))?;
        let drop_path = if cfg.drop_path > 0.0 {
            Some(DropPath::new(cfg.drop_path)?)
        } else {
            None
        };
        Ok(MbConv {
            expand,
            conv_dw,
            bn_dw,
            se,
            project,
            bn_project,
            drop_path,
            in_ch,
            out_ch,
            mid,
            cfg,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn config_errors_name_the_config() {
        let ok = MbConvConfig::default();
        let bad = [
            ok.with_expand_ratio(0.5),
            ok.with_expand_ratio(f64::NAN),
            ok.with_kernel_size(0),
            ok.with_stride(0),
            ok.with_dilation(0),
            ok.with_se_ratio(Some(0.0)),
            ok.with_se_ratio(Some(1.5)),
            ok.with_drop_path(1.0),
        ];
        for cfg in bad {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains("MbConvConfig"), "{e}");
        }
    }

    #[test]
    fn widths_follow_timm() -> Result<()> {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        // efficientnet_b0 blocks.2.0: 24 -> 40, mid 144, SE round(144 * 0.25 / 6) = 6.
        let b = mb_conv(24, 40, MbConvConfig::default(), vb.clone())?;
        assert_eq!((b.mid_channels(), b.se_channels()), (144, Some(6)));
        // make_divisible: 5 * 3 = 15 -> 16.
        let cfg = MbConvConfig::default().with_expand_ratio(3.0);
        assert_eq!(mb_conv(5, 5, cfg, vb.clone())?.mid_channels(), 16);
        // Depthwise-separable: no expansion, SE from the input width.
        let cfg = MbConvConfig::default().with_expand_ratio(1.0);
        let b = mb_conv(32, 16, cfg, vb)?;
        assert_eq!((b.mid_channels(), b.se_channels()), (32, Some(8)));
        Ok(())
    }
}
