//! ResNet residual blocks, torchvision's v1.5 flavour: [`BasicBlock`] (two 3×3 convs, ResNet-18
//! and -34) and [`Bottleneck`] (1×1 → 3×3 → 1×1, ResNet-50 and deeper, ResNeXt with `groups`),
//! with a switchable norm, stochastic depth and zero-initialised last norm.
//!
//! # Shapes
//! - input `(B, in_ch, H, W)` → output `(B, out, H', W')` with $H^\prime = \lceil H / s \rceil$,
//!   $W^\prime = \lceil W / s \rceil$ for stride $s$ (the 3×3 convs pad by their dilation);
//!   `out = out_ch` for [`BasicBlock`], `out = 4 · planes` for [`Bottleneck`]
//!   ([`Bottleneck::EXPANSION`]).
//! - Tensors (torchvision's names, so a slice `layer1.0.` of a torchvision `resnet*` state dict
//!   loads unchanged): `conv1.weight`, `bn1.*`, `conv2.weight`, `bn2.*`, for the bottleneck
//!   `conv3.weight`, `bn3.*`, and with a projection shortcut `downsample.0.weight` (1×1 conv,
//!   stride $s$) and `downsample.1.*` (its norm). Convolutions have no bias; `bn*.*` are the
//!   norm's own names (`weight`, `bias`, `running_mean`, `running_var`,
//!   `num_batches_tracked` for batch norm).
//! - The bottleneck's inner width is `planes * base_width / 64 * groups` (integer division;
//!   torchvision's formula: `planes` for a ResNet, e.g. 4·32 = 128 for the first
//!   ResNeXt-50 32×4d stage with `planes = 64`).
//!
//! # Tip
//! - **Identity shortcuts let deep networks train.** Each block computes
//!   $y = \mathrm{relu}(x + F(x))$: the branch $F$ only has to learn a correction to the
//!   identity, and the gradient reaches earlier blocks through the sum even when $F$'s own
//!   Jacobian is small. Without shortcuts a 34-layer stack of 3×3 convs reaches a *higher*
//!   training error than an 18-layer one; with them, depth keeps paying off up to 152 layers.
//!   The shortcut is a 1×1 projection (`downsample`) only where the shape changes (stride
//!   $\neq 1$ or new width).
//! - **v1.5: stride on the 3×3 conv.** The original bottleneck strided its first 1×1 conv,
//!   which simply skips three quarters of the input pixels; torchvision (and NVIDIA's
//!   "ResNet v1.5") moves the stride to the 3×3 conv so every input pixel is seen, for about
//!   +0.5 % ImageNet top-1 at a few % more FLOPs (He et al. 2018, "Bag of Tricks", who also
//!   propose ResNet-D: an average pool before a stride-1 projection shortcut).
//! - **Bottlenecks buy depth cheaply.** A 1×1 conv reduces the width 4×, the 3×3 conv works at
//!   the reduced width, a 1×1 conv expands it back: at 256 channels that is
//!   $256 \cdot 64 + 9 \cdot 64^2 + 64 \cdot 256 \approx 70\thinspace\mathrm{k}$ weights (and
//!   multiply-adds per pixel) against $2 \cdot 9 \cdot 256^2 \approx 1.18\thinspace\mathrm{M}$ for
//!   two 3×3 convs at full width — 17× less, about the cost of a basic block at 64 channels.
//!   `groups` (ResNeXt) splits the 3×3 conv into parallel paths for more width at equal cost.
//! - **Zero-init the last norm of each branch** (`zero_init_last`, timm's default, Goyal et al.
//!   2017): with $\gamma = 0$ in `bn2` / `bn3` the branch outputs 0 at init, so every block
//!   starts as the identity (or as its shortcut) and the network starts as a shallow one; this
//!   helps large-batch training with high learning rates. It only affects fresh
//!   initialisation — loaded weights are used as they are.
//! - **Stochastic depth** (`drop_path`, timm style) drops the branch for whole samples before
//!   the sum: about 0.05 for long (300–600 epoch) ResNet-50 schedules, 0 for short ones.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::blocks::{basic_block, bottleneck, ResBlockConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! // Count the convolution weights of a block (norm parameters excluded).
//! let conv_weights = |varmap: &VarMap| -> usize {
//!     let data = varmap.data().lock().unwrap();
//!     data.iter()
//!         .filter(|(name, _)| name.starts_with("conv"))
//!         .map(|(_, v)| v.elem_count())
//!         .sum()
//! };
//! let (vm_bottle, vm_basic) = (VarMap::new(), VarMap::new());
//! let vb = |vm: &VarMap| VarBuilder::from_varmap(vm, DType::F32, &dev);
//! let bottle = bottleneck(256, 64, ResBlockConfig::default(), vb(&vm_bottle))?;
//! let basic = basic_block(256, 256, ResBlockConfig::default(), vb(&vm_basic))?;
//! // At 256 channels: 69 632 weights against 1 179 648, and at stride 1 the multiply-adds
//! // per output pixel equal the weight counts, so the FLOPs shrink by the same 17x.
//! assert_eq!(conv_weights(&vm_bottle), 256 * 64 + 9 * 64 * 64 + 64 * 256);
//! assert_eq!(conv_weights(&vm_basic), 2 * 9 * 256 * 256);
//! assert!(conv_weights(&vm_basic) > 16 * conv_weights(&vm_bottle));
//!
//! // zero_init_last (default): at init every block is the identity followed by the ReLU.
//! let x = Tensor::randn(0f32, 1., (2, 256, 6, 6), &dev)?;
//! for y in [bottle.forward_t(&x, false)?, basic.forward_t(&x, false)?] {
//!     let gap = (y - x.relu()?)?.abs()?.max_all()?.to_scalar::<f32>()?;
//!     assert!(gap < 1e-6);
//! }
//! // Stride 2 with a new width: a projection shortcut, the map halves, the width becomes 4x64.
//! let down = bottleneck(256, 64, ResBlockConfig::default().with_stride(2), vb(&VarMap::new()))?;
//! assert!(down.downsample().is_some());
//! assert_eq!(down.forward_t(&x, true)?.dims(), &[2, 256, 3, 3]);
//! // A wrong input width is an error naming the block, not a panic.
//! let bad = Tensor::zeros((2, 128, 6, 6), DType::F32, &dev)?;
//! assert!(basic.apply(&bad, false).unwrap_err().to_string().contains("BasicBlock"));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - He et al., *Deep Residual Learning for Image Recognition*, 2015,
//!   <https://arxiv.org/abs/1512.03385>
//! - Goyal et al., *Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour*, 2017 (zero-init
//!   of the last BN $\gamma$), <https://arxiv.org/abs/1706.02677>
//! - He et al., *Bag of Tricks for Image Classification with Convolutional Neural Networks*,
//!   2018 (ResNet-B = v1.5 stride placement, ResNet-D), <https://arxiv.org/abs/1812.01187>
//! - Xie et al., *Aggregated Residual Transformations for Deep Neural Networks* (ResNeXt), 2016,
//!   <https://arxiv.org/abs/1611.05431>
//! - torchvision `torchvision/models/resnet.py` (`BasicBlock`, `Bottleneck`),
//!   <https://github.com/pytorch/vision>

use crate::blocks::DropPath;
use crate::conv::{Conv2d, Padding};
use crate::norm::{create, Norm};
use crate::ops::Conv2dConfig;
use crate::{check, Error, Result};
use candle_core::{ModuleT, Tensor};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Activation, Init, VarBuilder};

const BASIC: &str = "BasicBlock";
const BOTTLENECK: &str = "Bottleneck";

/// Settings shared by [`BasicBlock`] and [`Bottleneck`]; `Default` is torchvision's block
/// (stride 1, batch norm) plus timm's `zero_init_last`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResBlockConfig {
    /// Stride of the block (> 0), on the (first) 3×3 conv and on the projection shortcut.
    /// Default 1.
    pub stride: usize,
    /// Groups of the bottleneck's 3×3 conv (> 0; ResNeXt uses 32). [`BasicBlock`] needs 1.
    /// Default 1.
    pub groups: usize,
    /// Width per group of the bottleneck (> 0): inner width
    /// `planes * base_width / 64 * groups`. [`BasicBlock`] needs 64.
    /// Default 64.
    pub base_width: usize,
    /// Dilation of the 3×3 convs (> 0), which pad by it so the map size only depends on the
    /// stride. Default 1. (torchvision's `BasicBlock` rejects dilation > 1; here it applies to
    /// both of its convs, as in timm.)
    pub dilation: usize,
    /// Use the projection shortcut even when the shape does not change. Default `false`: a
    /// projection exactly when the stride is not 1 or the output width differs from the input's.
    pub force_downsample: bool,
    /// Norm after each conv, a spec of [`crate::norm::create`]: `"batch"`, `"group"`,
    /// `"group:N"`, `"layer2d"`, `"instance"` or `"none"` (`"layer"` and `"rms"` normalize the
    /// last axis and are rejected). Default `"batch"`.
    pub norm: String,
    /// Stochastic-depth rate on the residual branch, in `[0, 1)`. Default 0.
    pub drop_path: f32,
    /// Create the last norm's weight ($\gamma$) at 0 instead of 1, so the block starts as its
    /// shortcut (only at fresh initialisation; loaded weights win). Default `true`.
    pub zero_init_last: bool,
}

impl Default for ResBlockConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            groups: 1,
            base_width: 64,
            dilation: 1,
            force_downsample: false,
            norm: "batch".to_string(),
            drop_path: 0.0,
            zero_init_last: true,
        }
    }
}

impl ResBlockConfig {
    /// Sets the stride.
    pub fn with_stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the groups and the width per group of the bottleneck (ResNeXt `32x4d`:
    /// `with_groups(32, 4)`).
    pub fn with_groups(mut self, groups: usize, base_width: usize) -> Self {
        self.groups = groups;
        self.base_width = base_width;
        self
    }

    /// Sets the dilation of the 3×3 convs.
    pub fn with_dilation(mut self, dilation: usize) -> Self {
        self.dilation = dilation;
        self
    }

    /// Sets whether the projection shortcut is always used.
    pub fn with_force_downsample(mut self, force: bool) -> Self {
        self.force_downsample = force;
        self
    }

    /// Sets the norm spec (see [`crate::norm::create`]).
    pub fn with_norm(mut self, spec: impl Into<String>) -> Self {
        self.norm = spec.into();
        self
    }

    /// Sets the stochastic-depth rate.
    pub fn with_drop_path(mut self, rate: f32) -> Self {
        self.drop_path = rate;
        self
    }

    /// Sets whether the last norm's weight starts at 0.
    pub fn with_zero_init_last(mut self, zero: bool) -> Self {
        self.zero_init_last = zero;
        self
    }

    /// Checks what does not depend on the block's widths: stride, groups, base width and
    /// dilation > 0, drop-path rate in `[0, 1)` and a norm spec for NCHW maps (its group count
    /// is checked when the block is built). Errors name `ResBlockConfig`.
    pub fn validate(&self) -> Result<()> {
        self.validate_for("ResBlockConfig").map(|_| ())
    }

    /// [`ResBlockConfig::validate`] naming `block`; returns whether the norm has a weight.
    fn validate_for(&self, block: &'static str) -> Result<bool> {
        check::stride_dilation(block, self.stride, self.dilation)?;
        check::positive(block, "groups", self.groups)?;
        check::positive(block, "base_width", self.base_width)?;
        crate::blocks::drop_path::check_p(block, self.drop_path)?;
        let spec = self.norm.trim().to_ascii_lowercase();
        let name = spec.split(':').next().unwrap_or("").trim();
        match name {
            "batch" | "group" | "layer2d" => Ok(true),
            "instance" | "none" => Ok(false),
            "layer" | "rms" => Err(Error::config(
                block,
                format!(
                    "norm {:?} normalizes the last axis, not the channels of an NCHW map; \
                     use \"layer2d\", \"group\" or \"batch\"",
                    self.norm
                ),
            )),
            // Let the factory word the error (it lists the valid specs).
            _ => Ok(false),
        }
    }
}

/// Kaiming-normal with fan-out and the ReLU gain, $\mathcal N(0, 2 / (C_{out} k^2))$:
/// torchvision's and timm's init of ResNet convolutions.
const CONV_INIT: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanOut,
    non_linearity: NonLinearity::ReLU,
};

/// A bias-free `k × k` conv: `weight` of shape `(cout, cin / groups, k, k)` under `vb`.
fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    groups: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let w = check::param(
        "ResNet block",
        &vb,
        (cout, cin / groups, k, k),
        "weight",
        CONV_INIT,
    )?;
    let padding = if k == 1 { 0 } else { dilation * (k / 2) };
    let cfg = Conv2dConfig::default()
        .with_padding(Padding::Explicit(padding))
        .with_stride(stride)
        .with_dilation(dilation)
        .with_groups(groups);
    Conv2d::new(w, None, cfg)
}

/// The norm `spec` over `channels` under `vb`; with `zero_gamma` (and a norm that has a weight)
/// a fresh `weight` is created at 0 first, so the factory picks it up. A `vb` that already
/// holds `weight` (a checkpoint) is left alone.
/// A config error of the factory (unknown spec, groups not dividing `channels`) is reworded to
/// name `block`.
fn norm(
    block: &'static str,
    spec: &str,
    channels: usize,
    zero_gamma: bool,
    has_weight: bool,
    vb: VarBuilder,
) -> Result<Norm> {
    if zero_gamma && has_weight && !vb.contains_tensor("weight") {
        check::param(block, &vb, channels, "weight", Init::Const(0.0))?;
    }
    create(spec, channels, vb).map_err(|e| match e {
        Error::InvalidConfig { .. } => {
            Error::config(block, format!("norm over {channels} channels: {e}"))
        }
        other => other,
    })
}

/// The projection shortcut `downsample.0` (1×1 conv, stride) + `downsample.1` (norm).
#[derive(Debug, Clone)]
struct Shortcut {
    conv: Conv2d,
    norm: Norm,
}

/// Shared parts of the two blocks: the projection shortcut (when built), drop path, config.
#[derive(Debug, Clone)]
struct Common {
    block: &'static str,
    in_ch: usize,
    out_ch: usize,
    downsample: Option<Shortcut>,
    drop_path: Option<DropPath>,
    cfg: ResBlockConfig,
}

impl Common {
    fn new(
        block: &'static str,
        in_ch: usize,
        out_ch: usize,
        cfg: &ResBlockConfig,
        has_weight: bool,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let downsample = if cfg.force_downsample || cfg.stride != 1 || in_ch != out_ch {
            let vb = vb.pp("downsample");
            let conv = conv(in_ch, out_ch, 1, cfg.stride, 1, 1, vb.pp("0"))?;
            let norm = norm(block, &cfg.norm, out_ch, false, has_weight, vb.pp("1"))?;
            Some(Shortcut { conv, norm })
        } else {
            None
        };
        let drop_path = if cfg.drop_path > 0.0 {
            Some(DropPath::new(cfg.drop_path)?)
        } else {
            None
        };
        Ok(Self {
            block,
            in_ch,
            out_ch,
            downsample,
            drop_path,
            cfg: cfg.clone(),
        })
    }

    /// Checks `x` against the first conv's weight: `(B, in_ch, H, W)`, non-empty, same dtype
    /// and device.
    fn check_input(&self, x: &Tensor, conv1: &Conv2d) -> Result<()> {
        check::image_batch(self.block, "input", x, self.in_ch, conv1.weight())
    }

    /// `relu(drop_path(branch) + shortcut(x))`.
    fn merge(&self, x: &Tensor, branch: Tensor, train: bool) -> Result<Tensor> {
        let branch = match &self.drop_path {
            Some(dp) => dp.apply(&branch, train)?,
            None => branch,
        };
        let shortcut = match &self.downsample {
            Some(s) => s.norm.forward_t(&x.apply(&s.conv)?, train)?,
            None => x.clone(),
        };
        crate::ops::relu(&(branch + shortcut)?)
    }

    fn downsample(&self) -> Option<(&Conv2d, &Norm)> {
        self.downsample.as_ref().map(|s| (&s.conv, &s.norm))
    }
}

/// conv → norm, with the norm's train flag.
fn conv_norm(x: &Tensor, conv: &Conv2d, norm: &Norm, train: bool) -> Result<Tensor> {
    Ok(norm.forward_t(&x.apply(conv)?, train)?)
}

/// conv → norm → ReLU, the last two one op for a batch norm in training.
fn conv_norm_relu(x: &Tensor, conv: &Conv2d, norm: &Norm, train: bool) -> Result<Tensor> {
    norm.forward_act(&x.apply(conv)?, &Activation::Relu, train)
}

// ---------------------------------------------------------------------------------------------
// BasicBlock
// ---------------------------------------------------------------------------------------------

/// The basic residual block of ResNet-18/34: $\mathrm{relu}(x^\prime +
/// \mathrm{bn_2}(\mathrm{conv_2}( \mathrm{relu}(\mathrm{bn_1}(\mathrm{conv_1}(x))))))$ with 3×3
/// convs (`conv1` strided) and $x^\prime$ the input or its projection; built by [`basic_block`].
#[derive(Debug, Clone)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: Norm,
    conv2: Conv2d,
    bn2: Norm,
    common: Common,
}

impl BasicBlock {
    /// Output width over the block's width argument (1).
    pub const EXPANSION: usize = 1;

    /// Like [`ModuleT::forward_t`], returning this crate's error (naming `BasicBlock` when the
    /// input is not `(B, in_ch, H, W)` or its dtype/device differ from the weights').
    pub fn apply(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.common.check_input(x, &self.conv1)?;
        let h = conv_norm_relu(x, &self.conv1, &self.bn1, train)?;
        let h = conv_norm(&h, &self.conv2, &self.bn2, train)?;
        self.common.merge(x, h, train)
    }

    /// The first 3×3 conv (strided) and its norm.
    pub fn conv1(&self) -> (&Conv2d, &Norm) {
        (&self.conv1, &self.bn1)
    }

    /// The second 3×3 conv and its norm (the zero-initialised one).
    pub fn conv2(&self) -> (&Conv2d, &Norm) {
        (&self.conv2, &self.bn2)
    }

    /// The projection shortcut (1×1 conv and norm), if the block has one.
    pub fn downsample(&self) -> Option<(&Conv2d, &Norm)> {
        self.common.downsample()
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.common.in_ch
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.common.out_ch
    }

    /// The configuration.
    pub fn config(&self) -> &ResBlockConfig {
        &self.common.cfg
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(self.apply(xs, train)?)
    }
}

/// A [`BasicBlock`] from `in_ch` to `out_ch` channels with weights from `vb` under
/// torchvision's names (`conv1`, `bn1`, `conv2`, `bn2`, `downsample.0`, `downsample.1`); with a
/// `VarMap` the convs are created Kaiming-normal (fan-out) and the norms at weight 1, bias 0
/// (`bn2.weight` at 0 with `zero_init_last`).
///
/// Errors (naming `BasicBlock`) on zero channels, stride / dilation 0, groups ≠ 1 or
/// base_width ≠ 64 (torchvision's restriction), a drop-path rate outside `[0, 1)`, or a norm
/// spec that does not fit (see [`ResBlockConfig::norm`]).
pub fn basic_block(
    in_ch: usize,
    out_ch: usize,
    cfg: ResBlockConfig,
    vb: VarBuilder,
) -> Result<BasicBlock> {
    let has_weight = cfg.validate_for(BASIC)?;
    check::positive(BASIC, "in_ch", in_ch)?;
    check::positive(BASIC, "out_ch", out_ch)?;
    if cfg.groups != 1 || cfg.base_width != 64 {
        return Err(Error::config(
            BASIC,
            format!(
                "groups must be 1 and base_width 64 (use a Bottleneck for ResNeXt), got groups \
                 {} and base_width {}",
                cfg.groups, cfg.base_width
            ),
        ));
    }
    let (s, d) = (cfg.stride, cfg.dilation);
    let conv1 = conv(in_ch, out_ch, 3, s, d, 1, vb.pp("conv1"))?;
    let bn1 = norm(BASIC, &cfg.norm, out_ch, false, has_weight, vb.pp("bn1"))?;
    let conv2 = conv(out_ch, out_ch, 3, 1, d, 1, vb.pp("conv2"))?;
    let bn2 = norm(
        BASIC,
        &cfg.norm,
        out_ch,
        cfg.zero_init_last,
        has_weight,
        vb.pp("bn2"),
    )?;
    let common = Common::new(BASIC, in_ch, out_ch, &cfg, has_weight, &vb)?;
    Ok(BasicBlock {
        conv1,
        bn1,
        conv2,
        bn2,
        common,
    })
}

// ---------------------------------------------------------------------------------------------
// Bottleneck
// ---------------------------------------------------------------------------------------------

/// The bottleneck residual block of ResNet-50/101/152 and ResNeXt, v1.5: 1×1 conv to the inner
/// width → 3×3 conv (strided, grouped, dilated) → 1×1 conv to `4 · planes`, each followed by a
/// norm (and a ReLU but for the last), plus the shortcut, then a ReLU; built by [`bottleneck`].
#[derive(Debug, Clone)]
pub struct Bottleneck {
    conv1: Conv2d,
    bn1: Norm,
    conv2: Conv2d,
    bn2: Norm,
    conv3: Conv2d,
    bn3: Norm,
    width: usize,
    common: Common,
}

impl Bottleneck {
    /// Output width over `planes` (4).
    pub const EXPANSION: usize = 4;

    /// Like [`ModuleT::forward_t`], returning this crate's error (naming `Bottleneck` when the
    /// input is not `(B, in_ch, H, W)` or its dtype/device differ from the weights').
    pub fn apply(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.common.check_input(x, &self.conv1)?;
        let h = conv_norm_relu(x, &self.conv1, &self.bn1, train)?;
        let h = conv_norm_relu(&h, &self.conv2, &self.bn2, train)?;
        let h = conv_norm(&h, &self.conv3, &self.bn3, train)?;
        self.common.merge(x, h, train)
    }

    /// The 1×1 reduction conv and its norm.
    pub fn conv1(&self) -> (&Conv2d, &Norm) {
        (&self.conv1, &self.bn1)
    }

    /// The 3×3 conv (strided, grouped) and its norm.
    pub fn conv2(&self) -> (&Conv2d, &Norm) {
        (&self.conv2, &self.bn2)
    }

    /// The 1×1 expansion conv and its norm (the zero-initialised one).
    pub fn conv3(&self) -> (&Conv2d, &Norm) {
        (&self.conv3, &self.bn3)
    }

    /// The projection shortcut (1×1 conv and norm), if the block has one.
    pub fn downsample(&self) -> Option<(&Conv2d, &Norm)> {
        self.common.downsample()
    }

    /// The inner width, `planes * base_width / 64 * groups`.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.common.in_ch
    }

    /// Output channels, `4 · planes`.
    pub fn out_channels(&self) -> usize {
        self.common.out_ch
    }

    /// The configuration.
    pub fn config(&self) -> &ResBlockConfig {
        &self.common.cfg
    }
}

impl ModuleT for Bottleneck {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(self.apply(xs, train)?)
    }
}

/// A [`Bottleneck`] from `in_ch` channels to `4 · planes`, inner width
/// `planes * base_width / 64 * groups`, with weights from `vb` under
/// torchvision's names (`conv1`..`conv3`, `bn1`..`bn3`, `downsample.0`, `downsample.1`); with
/// a `VarMap` the convs are created Kaiming-normal (fan-out) and the norms at weight 1, bias 0
/// (`bn3.weight` at 0 with `zero_init_last`).
///
/// Errors (naming `Bottleneck`) on zero channels or planes, stride / dilation / groups /
/// base_width 0, an inner width of 0, a drop-path rate outside `[0, 1)`, or a norm spec that
/// does not fit the widths (see [`ResBlockConfig::norm`]).
pub fn bottleneck(
    in_ch: usize,
    planes: usize,
    cfg: ResBlockConfig,
    vb: VarBuilder,
) -> Result<Bottleneck> {
    let has_weight = cfg.validate_for(BOTTLENECK)?;
    check::positive(BOTTLENECK, "in_ch", in_ch)?;
    check::positive(BOTTLENECK, "planes", planes)?;
    let out_ch = planes
        .checked_mul(Bottleneck::EXPANSION)
        .ok_or_else(|| Error::config(BOTTLENECK, format!("planes {planes} is too large")))?;
    let width = planes
        .checked_mul(cfg.base_width)
        .and_then(|w| (w / 64).checked_mul(cfg.groups))
        .unwrap_or(0);
    if width == 0 {
        return Err(Error::config(
            BOTTLENECK,
            format!(
                "inner width floor(planes * base_width / 64) * groups must be > 0, got \
                 floor({planes} * {} / 64) * {}",
                cfg.base_width, cfg.groups
            ),
        ));
    }
    let (s, d, g) = (cfg.stride, cfg.dilation, cfg.groups);
    let conv1 = conv(in_ch, width, 1, 1, 1, 1, vb.pp("conv1"))?;
    let bn1 = norm(
        BOTTLENECK,
        &cfg.norm,
        width,
        false,
        has_weight,
        vb.pp("bn1"),
    )?;
    let conv2 = conv(width, width, 3, s, d, g, vb.pp("conv2"))?;
    let bn2 = norm(
        BOTTLENECK,
        &cfg.norm,
        width,
        false,
        has_weight,
        vb.pp("bn2"),
    )?;
    let conv3 = conv(width, out_ch, 1, 1, 1, 1, vb.pp("conv3"))?;
    let bn3 = norm(
        BOTTLENECK,
        &cfg.norm,
        out_ch,
        cfg.zero_init_last,
        has_weight,
        vb.pp("bn3"),
    )?;
    let common = Common::new(BOTTLENECK, in_ch, out_ch, &cfg, has_weight, &vb)?;
    Ok(Bottleneck {
        conv1,
        bn1,
        conv2,
        bn2,
        conv3,
        bn3,
        width,
        common,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn vb() -> VarBuilder<'static> {
        VarBuilder::zeros(DType::F32, &Device::Cpu)
    }

    #[test]
    fn config_validation() {
        let ok = ResBlockConfig::default();
        assert!(ok.validate().is_ok());
        let bad = [
            ok.clone().with_stride(0),
            ok.clone().with_dilation(0),
            ok.clone().with_groups(0, 64),
            ok.clone().with_groups(1, 0),
            ok.clone().with_drop_path(1.0),
            ok.clone().with_drop_path(-0.1),
            ok.clone().with_norm("layer"),
            ok.clone().with_norm("rms"),
        ];
        for cfg in bad {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains("ResBlockConfig"), "{e}");
            let e = bottleneck(8, 4, cfg, vb()).unwrap_err().to_string();
            assert!(e.contains("Bottleneck"), "{e}");
        }
    }

    #[test]
    fn width_formula() -> Result<()> {
        // ResNeXt-50 32x4d, first stage: planes 64 -> width 128, out 256.
        let b = bottleneck(64, 64, ResBlockConfig::default().with_groups(32, 4), vb())?;
        assert_eq!((b.width(), b.out_channels()), (128, 256));
        // Wide ResNet-50-2: base width 128 doubles the inner width.
        let b = bottleneck(64, 64, ResBlockConfig::default().with_groups(1, 128), vb())?;
        assert_eq!(b.width(), 128);
        Ok(())
    }
}
