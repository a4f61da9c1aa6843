//! The ConvNeXt block ([`ConvNextBlock`], timm's `ConvNeXtBlock`): 7×7 depthwise conv →
//! LayerNorm over the channels → Linear to 4C → GELU → Linear back to C → layer scale →
//! drop path → plus the input.
//!
//! # Shapes
//! - input `(B, C, H, W)` → output `(B, C, H, W)` (stride 1, padding
//!   $\lfloor d(k - 1) / 2 \rfloor$ for kernel $k$ and dilation $d$; odd $k$ keeps the size).
//! - Tensors, timm's names, so a slice `stages.i.blocks.j.` of a timm `convnext_*` state dict
//!   loads unchanged: `conv_dw.{weight, bias}` `(C, 1, k, k)`, `(C)`; `norm.{weight, bias}`
//!   `(C)`; `mlp.fc1.{weight, bias}` `(F, C)`, `(F)`; `mlp.fc2.{weight, bias}` `(C, F)`, `(C)`
//!   with $F = \lfloor r C \rfloor$ for the MLP ratio $r$ (the 1×1-conv layout `(F, C, 1, 1)`,
//!   `(C, F, 1, 1)` of timm's `conv_mlp` models such as `convnext_atto` loads too); `gamma`
//!   `(C)` unless layer scale is off.
//! - Inside, the map is viewed channels-last, `(B, H, W, C)`, for the norm and the two linear
//!   layers (as timm's default path): the norm is the crate's fused last-axis LayerNorm and the
//!   linear layers are plain matrix products, with one layout change in and one out.
//!
//! # Tip
//! - **A ResNet modernised with transformer design choices.** Liu et al. start from a ResNet-50
//!   and apply, one at a time, what made Swin Transformers work: a patchify stem, fewer blocks
//!   in early stages, a depthwise conv (the analogue of per-channel attention mixing), an
//!   inverted bottleneck (wide 4× MLP, as a transformer's), a large 7×7 kernel moved to the top
//!   of the block (it runs at the narrow width, like attention before the MLP), GELU instead of
//!   ReLU, a single activation and a single norm per block, LayerNorm instead of BatchNorm.
//!   Each step adds a little; together they take ResNet-50's 78.8 % to 82.0 % ImageNet top-1 at
//!   the same FLOPs, on par with Swin-T, with nothing but convolutions.
//! - **Large kernels are cheap when depthwise.** A 7×7 depthwise conv holds $49 C$ weights;
//!   a dense 3×3 conv $9 C^2$: at $C = 96$, 4 704 against 82 944. The cost of the block sits in
//!   the two linear layers, $2 r C^2$ multiply-adds per pixel.
//! - **Layer scale** multiplies the branch by a learned per-channel $\gamma$ initialised at
//!   $10^{-6}$, so every block starts as (almost) the identity and a deep stack trains stably;
//!   drop path (0.1 for ConvNeXt-T up to 0.4–0.5 for the large models) is the main regularizer.
//! - **Trade-off:** LayerNorm cannot be folded into the conv at inference as BatchNorm can,
//!   and the channels-last round trip costs two copies of the map per block; on CPUs a depthwise
//!   7×7 conv is memory-bound, so the wall time is less favourable than the FLOP count.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::blocks::{convnext_block, ConvNextBlockConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let vm = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
//! let block = convnext_block(96, ConvNextBlockConfig::default(), vb)?;
//! assert_eq!(block.hidden_channels(), 384);
//! // The 7x7 depthwise kernel holds 49 * 96 weights, 17x fewer than a dense 3x3 conv.
//! let dw = vm.data().lock().unwrap()["conv_dw.weight"].elem_count();
//! assert_eq!(dw, 49 * 96);
//! assert!(9 * 96 * 96 > 17 * dw);
//! // Layer scale at 1e-6: a fresh block is the identity up to ~1e-6.
//! let x = Tensor::randn(0f32, 1., (2, 96, 8, 8), &dev)?;
//! let y = block.forward_t(&x, true)?;
//! let gap = (y - &x)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(gap < 1e-4);
//! // A wrong channel count is an error naming the block.
//! let bad = Tensor::zeros((2, 64, 8, 8), DType::F32, &dev)?;
//! assert!(block.apply(&bad, false).unwrap_err().to_string().contains("ConvNextBlock"));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Liu et al., *A ConvNet for the 2020s*, 2022, <https://arxiv.org/abs/2201.03545>
//! - Touvron et al., *Going deeper with Image Transformers* (layer scale), 2021,
//!   <https://arxiv.org/abs/2103.17239>
//! - timm `timm/models/convnext.py` (`ConvNeXtBlock`),
//!   <https://github.com/huggingface/pytorch-image-models>

use crate::blocks::DropPath;
use crate::conv::{DepthwiseConv2d, DepthwiseConv2dConfig, Padding};
use crate::ops::{gelu_erf, layer_norm, linear};
use crate::{check, Error, Result};
use candle_core::{ModuleT, Tensor};
use candle_nn::{Init, VarBuilder};

const BLOCK: &str = "ConvNextBlock";
const CFG: &str = "ConvNextBlockConfig";

/// timm's init of ConvNeXt convs and linear layers: weights $\mathcal N(0, 0.02^2)$.
const WEIGHT_INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

/// Settings of a [`ConvNextBlock`]; `Default` is timm's block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvNextBlockConfig {
    /// Kernel size of the depthwise conv (> 0). Default 7.
    pub kernel_size: usize,
    /// Dilation of the depthwise conv (> 0). Default 1.
    pub dilation: usize,
    /// Hidden width of the MLP over the channels, $\lfloor r C \rfloor$ (finite, > 0). Default 4.
    pub mlp_ratio: f64,
    /// Initial layer-scale value (finite); `None` for no `gamma`. Default `Some(1e-6)`.
    pub ls_init_value: Option<f64>,
    /// Stochastic-depth rate on the branch, in `[0, 1)`. Default 0.
    pub drop_path: f32,
    /// LayerNorm epsilon (finite, > 0). Default 1e-6 (timm).
    pub eps: f64,
}

impl Default for ConvNextBlockConfig {
    fn default() -> Self {
        Self {
            kernel_size: 7,
            dilation: 1,
            mlp_ratio: 4.0,
            ls_init_value: Some(1e-6),
            drop_path: 0.0,
            eps: 1e-6,
        }
    }
}

impl ConvNextBlockConfig {
    /// Sets the depthwise kernel size.
    pub fn with_kernel_size(mut self, kernel_size: usize) -> Self {
        self.kernel_size = kernel_size;
        self
    }

    /// Sets the depthwise dilation.
    pub fn with_dilation(mut self, dilation: usize) -> Self {
        self.dilation = dilation;
        self
    }

    /// Sets the MLP ratio.
    pub fn with_mlp_ratio(mut self, ratio: f64) -> Self {
        self.mlp_ratio = ratio;
        self
    }

    /// Sets the initial layer scale (`None`: no layer scale).
    pub fn with_ls_init_value(mut self, value: Option<f64>) -> Self {
        self.ls_init_value = value;
        self
    }

    /// Sets the stochastic-depth rate.
    pub fn with_drop_path(mut self, rate: f32) -> Self {
        self.drop_path = rate;
        self
    }

    /// Sets the LayerNorm epsilon.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Errors (naming `ConvNextBlockConfig`) unless kernel size and dilation are > 0,
    /// `mlp_ratio` is finite and > 0, `ls_init_value` (when set) finite, `drop_path` in `[0, 1)`
    /// and `eps` finite and > 0.
    pub fn validate(&self) -> Result<()> {
        check::positive(CFG, "kernel_size", self.kernel_size)?;
        check::stride_dilation(CFG, 1, self.dilation)?;
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) {
            let msg = format!("mlp_ratio must be finite and > 0, got {}", self.mlp_ratio);
            return Err(Error::config(CFG, msg));
        }
        if let Some(v) = self.ls_init_value.filter(|v| !v.is_finite()) {
            return Err(Error::config(
                CFG,
                format!("ls_init_value must be finite, got {v}"),
            ));
        }
        crate::blocks::drop_path::check_p(CFG, self.drop_path)?;
        check::eps(CFG, "eps", self.eps)
    }
}

/// A dense layer's `(out, in)` weight and `(out)` bias.
#[derive(Debug, Clone)]
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        let weight = match check::param(BLOCK, &vb, (cout, cin), "weight", WEIGHT_INIT) {
            Ok(w) => w,
            // timm's `conv_mlp` models (convnext_atto … convnext_nano) store the MLP as 1×1
            // convs: the same matrix with two trailing unit axes.
            Err(e) => match vb.get((cout, cin, 1, 1), "weight") {
                Ok(w) => w.reshape((cout, cin))?,
                Err(_) => return Err(e),
            },
        };
        Ok(Self {
            weight,
            bias: check::param(BLOCK, &vb, cout, "bias", Init::Const(0.0))?,
        })
    }
}

/// The ConvNeXt block; built by [`convnext_block`].
#[derive(Debug, Clone)]
pub struct ConvNextBlock {
    conv_dw: DepthwiseConv2d,
    norm_weight: Tensor,
    norm_bias: Tensor,
    fc1: Dense,
    fc2: Dense,
    gamma: Option<Tensor>,
    drop_path: Option<DropPath>,
    channels: usize,
    cfg: ConvNextBlockConfig,
}

impl ConvNextBlock {
    /// Like [`ModuleT::forward_t`], returning this crate's error: errors (naming
    /// `ConvNextBlock`) when `x` is not `(B, C, H, W)` in the weights' dtype and device.
    pub fn apply(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check::image_batch(BLOCK, "input", x, self.channels, self.conv_dw.weight())?;
        let h = x.apply(&self.conv_dw)?.permute((0, 2, 3, 1))?;
        let h = layer_norm(
            &h,
            Some(&self.norm_weight),
            Some(&self.norm_bias),
            self.cfg.eps,
        )?;
        let h = gelu_erf(&linear(&h, &self.fc1.weight, Some(&self.fc1.bias))?)?;
        // Layer scale folded into fc2: (h W^T + b) * gamma = h (gamma W)^T + gamma b costs
        // C x F multiplies instead of a pass over the whole map; the gradients stay exact.
        let h = match &self.gamma {
            Some(g) => {
                let w = self.fc2.weight.broadcast_mul(&g.unsqueeze(1)?)?;
                linear(&h, &w, Some(&(&self.fc2.bias * g)?))?
            }
            None => linear(&h, &self.fc2.weight, Some(&self.fc2.bias))?,
        };
        let h = h.permute((0, 3, 1, 2))?;
        let h = match &self.drop_path {
            Some(dp) => dp.apply(&h, train)?,
            None => h,
        };
        Ok((x + h)?)
    }

    /// Channels `C`.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The MLP's hidden width `F`.
    pub fn hidden_channels(&self) -> usize {
        self.fc1.weight.dims()[0]
    }

    /// The layer-scale `gamma` `(C)`, if any.
    pub fn gamma(&self) -> Option<&Tensor> {
        self.gamma.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &ConvNextBlockConfig {
        &self.cfg
    }
}

impl ModuleT for ConvNextBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(self.apply(xs, train)?)
    }
}

/// A [`ConvNextBlock`] over `channels` channels with weights from `vb` under timm's names
/// (`conv_dw`, `norm`, `mlp.fc1`, `mlp.fc2`, `gamma`). With a `VarMap` the conv and linear
/// weights are created $\mathcal N(0, 0.02^2)$ with zero biases (timm's init), the norm at
/// weight 1, bias 0, and `gamma` at `ls_init_value`.
///
/// Errors (naming `ConvNextBlock` or `ConvNextBlockConfig`) on zero channels, an invalid
/// config, an MLP width that is 0 or overflows, or checkpoint tensors of the wrong shape.
pub fn convnext_block(
    channels: usize,
    cfg: ConvNextBlockConfig,
    vb: VarBuilder,
) -> Result<ConvNextBlock> {
    cfg.validate()?;
    check::positive(BLOCK, "channels", channels)?;
    let hidden = cfg.mlp_ratio * channels as f64;
    if !(1.0..(usize::MAX / 2) as f64).contains(&hidden) {
        let msg = format!(
            "the MLP width floor({} * {channels}) must be in [1, usize::MAX / 2)",
            cfg.mlp_ratio
        );
        return Err(Error::config(BLOCK, msg));
    }
    let hidden = hidden as usize;
    let (k, d) = (cfg.kernel_size, cfg.dilation);
    let reach = d
        .checked_mul(k - 1)
        .ok_or_else(|| Error::config(BLOCK, format!("dilation {d} x kernel {k} overflows")))?;
    check::loading(BLOCK, vb, |vb| {
        let v = vb.pp("conv_dw");
        let w = check::param(BLOCK, &v, (channels, 1, k, k), "weight", WEIGHT_INIT)?;
        let b = check::param(BLOCK, &v, channels, "bias", Init::Const(0.0))?;
        let dw_cfg = DepthwiseConv2dConfig::default()
            .with_dilation(d)
            .with_padding(Padding::Explicit(reach / 2));
        let conv_dw = DepthwiseConv2d::new(w, Some(b), dw_cfg)?;
        let v = vb.pp("norm");
        let norm_weight = check::param(BLOCK, &v, channels, "weight", Init::Const(1.0))?;
        let norm_bias = check::param(BLOCK, &v, channels, "bias", Init::Const(0.0))?;
        let fc1 = Dense::load(channels, hidden, vb.pp("mlp.fc1"))?;
        let fc2 = Dense::load(hidden, channels, vb.pp("mlp.fc2"))?;
        let gamma = match cfg.ls_init_value {
            Some(init) => Some(check::param(
                BLOCK,
                &vb,
                channels,
                "gamma",
                Init::Const(init),
            )?),
            None => None,
        };
        let drop_path = if cfg.drop_path > 0.0 {
            Some(DropPath::new(cfg.drop_path)?)
        } else {
            None
        };
        Ok(ConvNextBlock {
            conv_dw,
            norm_weight,
            norm_bias,
            fc1,
            fc2,
            gamma,
            drop_path,
            channels,
            cfg,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_config() {
        let ok = ConvNextBlockConfig::default();
        let bad = [
            ok.with_kernel_size(0),
            ok.with_dilation(0),
            ok.with_mlp_ratio(0.0),
            ok.with_mlp_ratio(f64::INFINITY),
            ok.with_ls_init_value(Some(f64::NAN)),
            ok.with_drop_path(-0.5),
            ok.with_eps(0.0),
        ];
        for cfg in bad {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(CFG), "{e}");
        }
    }
}
