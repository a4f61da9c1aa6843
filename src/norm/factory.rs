//! Pick a model's normalization layer by name: the [`Norm`] enum over every norm of this crate
//! and the [`create`] factory that builds one from a spec string such as `"batch"` or
//! `"group:32"` (the idea of timm's `create_norm_layer`).
//!
//! # Shapes
//! - `batch`, `group:N`, `instance`: input `(B, C, *)` (normalized over `C` per batch / group /
//!   sample); `layer2d`: input `(B, C, H, W)`, normalized over `C` per pixel.
//! - `layer`, `rms`: input `(…, C)`, normalized over the last dimension (tokens of a sequence,
//!   or a channels-last feature map).
//! - `none`: any shape, returned unchanged.
//! - Parameters are registered under `vb` with PyTorch's names: `weight`, `bias` and, for
//!   `batch`, `running_mean`, `running_var` (and `num_batches_tracked` when present).
//!
//! # Tip
//! Which norm for which batch and data:
//! - **`batch`** needs real batch statistics: about 16 or more samples per device. Below that
//!   the per-batch mean and variance are noisy and accuracy drops; it is also the only norm
//!   whose training and inference behaviour differ (running statistics).
//! - **`group:N`** has no batch dependence: the choice for small per-device batches, so for
//!   detection and segmentation with large images. `"group"` alone means 32 groups (the paper's
//!   and timm's default) or, when 32 does not divide the channels, $\gcd(32, C)$ groups — the
//!   largest power of two up to 32 that divides $C$ (1 group for odd $C$, i.e. a layer norm over
//!   $(C, H, W)$).
//! - **`instance`** normalizes each channel of each sample on its own, removing per-image
//!   contrast and intensity: style transfer, and medical images whose intensity scale varies
//!   between scanners. Built as PyTorch's default (`affine = false`, no running statistics).
//! - **`layer`** / **`rms`** for sequences `(B, L, C)`, before each transformer sub-layer
//!   (pre-LN, $x + f(\mathrm{LN}(x))$).
//! - **`layer2d`** for ConvNeXt-style convnets on NCHW maps (timm's `LayerNorm2d`, eps `1e-6`).
//!
//! Placement: in a conv stack put the norm between the convolution and the activation
//! (conv → norm → ReLU); the conv before a `batch` or `group` norm needs no
//! bias, the norm's `bias` replaces it. Every built layer uses its block's default config; build
//! the block directly (e.g. [`crate::norm::batch_norm`]) for another eps or momentum.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use candle_nn::{conv2d_no_bias, Conv2dConfig, VarBuilder, VarMap};
//! use candle_tricks::norm::{create, Norm};
//! # fn main() -> candle_tricks::Result<()> {
//! let x = Tensor::randn(0f32, 1., (2, 3, 8, 8), &Device::Cpu)?;
//! let cfg = Conv2dConfig { padding: 1, ..Default::default() };
//! for spec in ["batch", "group:4", "layer2d"] {
//!     let varmap = VarMap::new();
//!     let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//!     // The same conv -> norm -> ReLU model, its norm switched by a string.
//!     let conv = conv2d_no_bias(3, 16, 3, cfg, vb.pp("conv"))?;
//!     let norm: Norm = create(spec, 16, vb.pp("norm"))?;
//!     let y = norm.forward_t(&x.apply(&conv)?, true)?.relu()?;
//!     assert_eq!(y.dims(), &[2, 16, 8, 8]);
//!     // The norm's tensors carry PyTorch's names.
//!     let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
//!     names.sort();
//!     if spec == "batch" {
//!         assert!(names.contains(&"norm.running_mean".to_string()));
//!     }
//!     assert!(names.contains(&"norm.weight".to_string()));
//!     assert!(names.contains(&"norm.bias".to_string()));
//! }
//! // A typo is an error that lists the valid specs, not a panic.
//! let err = create("btach", 16, VarBuilder::zeros(DType::F32, &Device::Cpu)).unwrap_err();
//! assert!(err.to_string().contains("norm::create"));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Ioffe, Szegedy, *Batch Normalization*, 2015, <https://arxiv.org/abs/1502.03167>
//! - Wu, He, *Group Normalization*, 2018, <https://arxiv.org/abs/1803.08494>
//! - Ulyanov, Vedaldi, Lempitsky, *Instance Normalization*, 2016,
//!   <https://arxiv.org/abs/1607.08022>
//! - Ba, Kiros, Hinton, *Layer Normalization*, 2016, <https://arxiv.org/abs/1607.06450>
//! - Liu et al., *A ConvNet for the 2020s* (ConvNeXt), 2022, <https://arxiv.org/abs/2201.03545>

use crate::norm::{
    batch_norm, group_norm, instance_norm, layer_norm, layer_norm2d, rms_norm, BatchNorm,
    BatchNormConfig, GroupNorm, GroupNormConfig, InstanceNorm, InstanceNormConfig, LayerNorm,
    LayerNorm2d, LayerNorm2dConfig, LayerNormConfig, RmsNorm, RmsNormConfig,
};
use crate::{check, Error, Result};
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{Activation, VarBuilder};

const BLOCK: &str = "norm::create";

/// The specs [`create`] accepts, as listed in its error messages.
pub const SPECS: &str =
    "\"batch\", \"group\", \"group:N\", \"layer\", \"layer2d\", \"rms\", \"instance\", \"none\"";

/// The default number of groups of `"group"` (Wu & He, timm).
pub const DEFAULT_GROUPS: usize = 32;

/// One of this crate's normalization layers, chosen at run time (see [`create`]).
#[derive(Debug, Clone)]
pub enum Norm {
    /// [`BatchNorm`]: uses the `train` flag of [`ModuleT::forward_t`].
    Batch(BatchNorm),
    /// [`GroupNorm`].
    Group(GroupNorm),
    /// [`LayerNorm`] over the last dimension.
    Layer(LayerNorm),
    /// [`LayerNorm2d`] over the channels of an NCHW map.
    LayerNorm2d(LayerNorm2d),
    /// [`RmsNorm`] over the last dimension.
    Rms(RmsNorm),
    /// [`InstanceNorm`]: uses the `train` flag of [`ModuleT::forward_t`].
    Instance(InstanceNorm),
    /// No normalization: the input is returned unchanged.
    Identity,
}

impl Norm {
    /// The norm (with the `train` flag, as [`ModuleT::forward_t`]) then `act`; a batch norm
    /// fuses a ReLU / ReLU6 into its training kernel ([`BatchNorm::forward_act`]), the other
    /// norms apply [`crate::ops::activation()`] to their output.
    pub fn forward_act(&self, xs: &Tensor, act: &Activation, train: bool) -> Result<Tensor> {
        match self {
            Norm::Batch(n) => n.forward_act(xs, act, train),
            other => crate::ops::activation(&other.forward_t(xs, train)?, act),
        }
    }
}

impl ModuleT for Norm {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Norm::Batch(n) => n.forward_t(xs, train),
            Norm::Group(n) => n.forward(xs),
            Norm::Layer(n) => n.forward(xs),
            Norm::LayerNorm2d(n) => n.forward(xs),
            Norm::Rms(n) => n.forward(xs),
            Norm::Instance(n) => n.forward_t(xs, train),
            Norm::Identity => Ok(xs.clone()),
        }
    }
}

/// Builds the norm named by `spec` over `channels` channels (or features), with its block's
/// default config and its parameters from `vb` under PyTorch's names:
///
/// | spec | layer |
/// |---|---|
/// | `"batch"` | [`BatchNorm`] (`nn.BatchNorm2d(C)`) |
/// | `"group"` | [`GroupNorm`] with [`DEFAULT_GROUPS`] groups, or $\gcd(32, C)$ when 32 does not divide `C` |
/// | `"group:N"` | [`GroupNorm`] with `N` groups |
/// | `"layer"` | [`LayerNorm`] over the last dimension |
/// | `"layer2d"` | [`LayerNorm2d`] over the channels of `(B, C, H, W)` |
/// | `"rms"` | [`RmsNorm`] over the last dimension |
/// | `"instance"` | [`InstanceNorm`] (`nn.InstanceNorm2d(C)`: no affine, no running stats) |
/// | `"none"` | [`Norm::Identity`] |
///
/// Specs are case-insensitive and may carry surrounding spaces.
///
/// Errors (naming `norm::create` and listing the valid specs) on an unknown spec, `channels` 0,
/// a group count that is not a positive integer or does not divide `channels`.
pub fn create(spec: &str, channels: usize, vb: VarBuilder) -> Result<Norm> {
    check::positive(BLOCK, "channels", channels)?;
    let spec = spec.trim().to_ascii_lowercase();
    let (name, arg) = match spec.split_once(':') {
        Some((n, a)) => (n.trim(), Some(a.trim())),
        None => (spec.as_str(), None),
    };
    let unknown = || {
        Error::config(
            BLOCK,
            format!("unknown norm spec {spec:?}; valid specs: {SPECS}"),
        )
    };
    if arg.is_some() && name != "group" {
        return Err(unknown());
    }
    Ok(match name {
        "batch" => Norm::Batch(batch_norm(channels, BatchNormConfig::default(), vb)?),
        "group" => {
            let groups = match arg {
                None => gcd(DEFAULT_GROUPS, channels),
                Some(a) => parse_groups(a, channels)?,
            };
            Norm::Group(group_norm(
                groups,
                channels,
                GroupNormConfig::default(),
                vb,
            )?)
        }
        "layer" => Norm::Layer(layer_norm(channels, LayerNormConfig::default(), vb)?),
        "layer2d" => Norm::LayerNorm2d(layer_norm2d(channels, LayerNorm2dConfig::default(), vb)?),
        "rms" => Norm::Rms(rms_norm(channels, RmsNormConfig::default(), vb)?),
        "instance" => Norm::Instance(instance_norm(channels, InstanceNormConfig::default(), vb)?),
        "none" => Norm::Identity,
        _ => return Err(unknown()),
    })
}

/// Parses the `N` of `"group:N"`: a positive integer dividing `channels`.
fn parse_groups(arg: &str, channels: usize) -> Result<usize> {
    match arg.parse::<usize>() {
        Ok(g) if g > 0 && channels.is_multiple_of(g) => Ok(g),
        _ => Err(Error::config(
            BLOCK,
            format!(
                "\"group:N\" needs N a positive integer dividing the {channels} channels, \
                 got {arg:?}; valid specs: {SPECS}"
            ),
        )),
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
