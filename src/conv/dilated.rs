//! Atrous Spatial Pyramid Pooling (DeepLabv3's `ASPP`, as torchvision builds it): parallel dilated
//! convolutions at several rates, a 1×1 branch and an image-pooling branch, concatenated and
//! projected.
//!
//! # Shapes
//! - input `(B, C_in, H, W)`, output `(B, C_out, H, W)`: every branch keeps the resolution.
//! - Branches (tensor names are torchvision's `ASPP` state dict, every convolution without bias):
//!   - `convs.0`: 1×1 conv `convs.0.0.weight` `(C_out, C_in, 1, 1)` → BatchNorm `convs.0.1.*`
//!     → ReLU;
//!   - `convs.i` for the $i$-th rate $r_i$ ($i = 1..n$): 3×3 conv at dilation $r_i$, padding $r_i$,
//!     `convs.i.0.weight` `(C_out, C_in, 3, 3)` → BatchNorm `convs.i.1.*` → ReLU;
//!   - `convs.{n+1}` (image pooling): global average pool → 1×1 conv `convs.{n+1}.1.weight` →
//!     BatchNorm `convs.{n+1}.2.*` → ReLU → back to $H \times W$ (bilinear upsampling of a 1×1
//!     map is a broadcast);
//!   - `project`: concat of the $n + 2$ branches → 1×1 conv `project.0.weight`
//!     `(C_out, (n+2)·C_out, 1, 1)` → BatchNorm `project.1.*` → ReLU → dropout (training only).
//! - BatchNorm tensors are `weight`, `bias`, `running_mean`, `running_var`. With the default rates
//!   6, 12, 18 the pooling branch is `convs.4`, exactly torchvision's keys.
//! - dtypes: those of candle's `conv2d` and `matmul` on the device (on CPU f32 and f16; bf16 is
//!   refused there by candle's matmul with an error).
//!
//! # Tip
//! **Dilate to see wider without losing resolution.** A $k \times k$ kernel at dilation (rate) $r$
//! spreads its taps $r$ pixels apart and covers $r(k-1)+1$ pixels per axis: a 3×3 at rate $r$ sees
//! $2r+1$ with the same 9 weights, and with padding $r$ the output keeps the input's $H \times W$.
//! Classification nets shrink the map 32× by striding; for dense prediction (segmentation, depth)
//! DeepLab replaces the last strides by dilation, keeping an output stride of 8 or 16 while the
//! receptive field keeps growing. The cost is compute: the map stays large, so every later layer
//! runs on $s^2$ times more positions than its strided counterpart.
//!
//! **Gridding.** Stacking convolutions of the *same* rate $r$ only ever combines pixels whose
//! coordinates agree modulo $r$: the output sees a sparse checkerboard of the input and
//! neighbouring outputs are computed from disjoint pixel sets, which shows up as grid artefacts.
//! Mixing rates avoids it — in sequence, rates without a common factor (HDC: 1, 2, 5 rather than
//! 2, 2, 2) fill the holes; in parallel, as here, the branches are single layers so their holes
//! do not compound, the 1×1 branch keeps a dense undilated path, and the image-pooling branch
//! summarises every pixel, so no input pixel is invisible to an output whatever the rates.
//!
//! **Large rates degenerate.** As the rate approaches the size of the map, fewer taps land on real
//! pixels; once $r \ge H$ and $r \ge W$ all eight outer taps read zero padding and the 3×3 filter
//! is silently a 1×1 on its centre weight, capturing no context at all. DeepLabv3 observed this on
//! small feature maps, which is why it adds the image-level (global pooling) branch. Pick rates
//! relative to the feature map: 6, 12, 18 at output stride 16 on 513-pixel crops (a 33×33 map),
//! doubled at output stride 8, and much smaller rates on the maps of small images.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::conv::{aspp, extent, AsppConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! // A 3x3 kernel at rate r covers 2r + 1 pixels per axis with the same 9 weights.
//! for r in [1, 6, 12, 18] {
//!     assert_eq!(extent(3, r), 2 * r + 1);
//! }
//! // ... and the block keeps the input's H x W, whatever H and W are.
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! let block = aspp(8, 16, AsppConfig::default(), vb)?;
//! let x = Tensor::randn(0f32, 1., (2, 8, 17, 13), &dev)?;
//! assert_eq!(block.forward_t(&x, false)?.dims(), &[2, 16, 17, 13]);
//!
//! // Gridding: two stacked 3x3 convolutions at rate 2 never mix odd and even pixels. An impulse at
//! // an odd offset from the centre does not reach the centre output; rates (1, 2) do reach it.
//! let mut impulse = vec![0f32; 17 * 17];
//! impulse[8 * 17 + 9] = 1.0;
//! let x = Tensor::from_vec(impulse, (1, 1, 17, 17), &dev)?;
//! let k = Tensor::ones((1, 1, 3, 3), DType::F32, &dev)?;
//! let centre = |rates: [usize; 2]| -> candle_core::Result<f32> {
//!     let y = x.conv2d(&k, rates[0], 1, rates[0], 1)?.conv2d(&k, rates[1], 1, rates[1], 1)?;
//!     y.get(0)?.get(0)?.get(8)?.get(8)?.to_scalar::<f32>()
//! };
//! assert_eq!(centre([2, 2])?, 0.0);
//! assert!(centre([1, 2])? > 0.0);
//!
//! // Degeneration: on a 12x12 map a 3x3 at rate 18 equals a 1x1 holding its centre weight.
//! let x = Tensor::randn(0f32, 1., (1, 4, 12, 12), &dev)?;
//! let w = Tensor::randn(0f32, 1., (4, 4, 3, 3), &dev)?;
//! let dilated = x.conv2d(&w, 18, 1, 18, 1)?;
//! let centre_only = x.conv2d(&w.narrow(2, 1, 1)?.narrow(3, 1, 1)?.contiguous()?, 0, 1, 1, 1)?;
//! let diff = (dilated - centre_only)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(diff < 1e-5);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Chen, Papandreou, Schroff & Adam, *Rethinking Atrous Convolution for Semantic Image
//!   Segmentation* (DeepLabv3), 2017, <https://arxiv.org/abs/1706.05587>
//! - Yu & Koltun, *Multi-Scale Context Aggregation by Dilated Convolutions*, 2015,
//!   <https://arxiv.org/abs/1511.07122>
//! - Wang et al., *Understanding Convolution for Semantic Segmentation* (hybrid dilated
//!   convolution, gridding), 2017, <https://arxiv.org/abs/1702.08502>

use crate::conv::{Conv2d, Padding};
use crate::norm::batch::batch_norm_with;
use crate::norm::BatchNorm;
use crate::ops::Conv2dConfig;
use crate::{check, Error, Result};
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;

const BLOCK: &str = "Aspp";

/// Configuration of an [`Aspp`] block; the defaults are torchvision's DeepLabv3 head.
#[derive(Debug, Clone, PartialEq)]
pub struct AsppConfig {
    /// Dilation rates of the 3×3 branches, one branch per rate, each > 0 and at least one.
    /// Default `[6, 12, 18]` (output stride 16; use `[12, 24, 36]` at output stride 8).
    pub rates: Vec<usize>,
    /// Dropout probability after the projection, applied in training only, in `[0, 1)`.
    /// Default 0.5.
    pub dropout: f32,
    /// Whether to include the image-pooling branch (global context). Default `true`; without it
    /// the projection takes $(n+1) \cdot C_{out}$ channels.
    pub image_pooling: bool,
    /// BatchNorm epsilon, > 0. Default 1e-5 (PyTorch's).
    pub bn_eps: f64,
    /// BatchNorm running-statistics momentum, in `[0, 1]`. Default 0.1 (PyTorch's).
    pub bn_momentum: f64,
}

impl Default for AsppConfig {
    fn default() -> Self {
        Self {
            rates: vec![6, 12, 18],
            dropout: 0.5,
            image_pooling: true,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
        }
    }
}

impl AsppConfig {
    /// Sets the dilation rates of the 3×3 branches.
    pub fn with_rates(mut self, rates: impl Into<Vec<usize>>) -> Self {
        self.rates = rates.into();
        self
    }

    /// Sets the dropout probability after the projection.
    pub fn with_dropout(mut self, dropout: f32) -> Self {
        self.dropout = dropout;
        self
    }

    /// Includes or drops the image-pooling branch.
    pub fn with_image_pooling(mut self, image_pooling: bool) -> Self {
        self.image_pooling = image_pooling;
        self
    }

    /// Sets the BatchNorm epsilon.
    pub fn with_bn_eps(mut self, eps: f64) -> Self {
        self.bn_eps = eps;
        self
    }

    /// Sets the BatchNorm momentum.
    pub fn with_bn_momentum(mut self, momentum: f64) -> Self {
        self.bn_momentum = momentum;
        self
    }

    /// Checks every value; errors name `Aspp`.
    pub fn validate(&self) -> Result<()> {
        if self.rates.is_empty() {
            return Err(Error::config(
                BLOCK,
                "rates must hold at least one dilation rate, got []",
            ));
        }
        if let Some(i) = self.rates.iter().position(|&r| r == 0) {
            return Err(Error::config(
                BLOCK,
                format!(
                    "every rate must be > 0, got rates[{i}] = 0 in {:?}",
                    self.rates
                ),
            ));
        }
        if let Some(&r) = self
            .rates
            .iter()
            .find(|&&r| crate::conv::checked_extent(3, r).is_none())
        {
            return Err(Error::config(
                BLOCK,
                format!("rate {r}: the 3×3 extent 2·rate + 1 overflows usize"),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config(
                BLOCK,
                format!("dropout must be in [0, 1), got {}", self.dropout),
            ));
        }
        check::eps(BLOCK, "bn_eps", self.bn_eps)?;
        check::unit_interval(BLOCK, "bn_momentum", self.bn_momentum)?;
        Ok(())
    }
}

/// Convolution → BatchNorm → ReLU, the unit every ASPP branch is made of.
#[derive(Debug, Clone)]
struct ConvBnRelu {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBnRelu {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(xs)?, train)?.relu()
    }
}

/// Checks one `(conv, bn)` pair of a branch: weight `(c_out, c_in, k, k)`, no groups, stride 1,
/// padding that keeps the size, and a norm over `c_out` features.
fn check_unit(
    what: &'static str,
    conv: &Conv2d,
    bn: &BatchNorm,
    c_in: usize,
    c_out: usize,
    kernel: usize,
) -> Result<()> {
    let w = conv.weight();
    check::rank(BLOCK, what, w, 4, "(C_out, C_in, k, k)")?;
    check::float_dtype(BLOCK, what, w)?;
    if w.dims() != [c_out, c_in, kernel, kernel] {
        return Err(Error::shape(
            BLOCK,
            what,
            format!("({c_out}, {c_in}, {kernel}, {kernel})"),
            w.shape().clone(),
        ));
    }
    let cfg = conv.config();
    // At stride 1 the padding of `Same` and `Explicit` does not depend on the input size.
    let keeps_size = crate::conv::checked_extent(kernel, cfg.dilation).is_some_and(|e| {
        let half = (e - 1) / 2;
        cfg.padding.checked_resolve(e, kernel, 1, cfg.dilation) == Some((half, half))
    });
    if cfg.groups != 1 || cfg.stride != 1 || cfg.dilation == 0 || !keeps_size {
        return Err(Error::config(
            BLOCK,
            format!(
                "{what}: convolution must have groups 1, stride 1 and padding dilation·(k-1)/2, \
                 got groups {}, stride {}, padding {:?}, dilation {}",
                cfg.groups, cfg.stride, cfg.padding, cfg.dilation
            ),
        ));
    }
    if let Some(b) = conv.bias() {
        check::same_dtype_device(BLOCK, what, w, b)?;
        if b.dims() != [c_out] {
            return Err(Error::shape(
                BLOCK,
                what,
                format!("bias ({c_out})"),
                b.shape().clone(),
            ));
        }
    }
    if bn.channels() != c_out {
        return Err(Error::config(
            BLOCK,
            format!(
                "{what}: batch norm over {c_out} features expected, got {}",
                bn.channels()
            ),
        ));
    }
    if let Some(g) = bn.weight() {
        check::same_dtype_device(BLOCK, what, w, g)?;
    }
    Ok(())
}

/// DeepLabv3's Atrous Spatial Pyramid Pooling head (torchvision's `ASPP`); see the
/// [module docs](self) for the branches and tensor names.
///
/// Implements [`ModuleT`]: `train = true` uses batch statistics in the BatchNorms (and updates
/// their running statistics) and applies the dropout; `train = false` is inference.
#[derive(Debug, Clone)]
pub struct Aspp {
    branches: Vec<ConvBnRelu>,
    pooling: Option<ConvBnRelu>,
    project: ConvBnRelu,
    dropout: f32,
    in_channels: usize,
    out_channels: usize,
}

impl Aspp {
    /// Builds the block from its parts: `branches` (the 1×1 branch then one 3×3 per rate, dilation
    /// and padding read from each `Conv2dConfig`), the optional image-pooling `(1×1 conv, norm)`,
    /// the projection `(1×1 conv, norm)` and the dropout probability.
    ///
    /// Errors (naming `Aspp`) when the branches disagree on channels, a convolution does not keep
    /// the size (stride 1, padding $d(k-1)/2$, no groups), a norm has the wrong width, the
    /// projection does not take every branch, or the dropout is outside `[0, 1)`.
    pub fn new(
        branches: Vec<(Conv2d, BatchNorm)>,
        pooling: Option<(Conv2d, BatchNorm)>,
        project: (Conv2d, BatchNorm),
        dropout: f32,
    ) -> Result<Self> {
        if branches.len() < 2 {
            return Err(Error::config(
                BLOCK,
                format!(
                    "needs the 1x1 branch and at least one dilated branch, got {} branch(es)",
                    branches.len()
                ),
            ));
        }
        if !(0.0..1.0).contains(&dropout) {
            return Err(Error::config(
                BLOCK,
                format!("dropout must be in [0, 1), got {dropout}"),
            ));
        }
        let w0 = branches[0].0.weight();
        check::rank(BLOCK, "convs.0 weight", w0, 4, "(C_out, C_in, 1, 1)")?;
        let (c_out, c_in, _, _) = w0.dims4()?;
        if c_out == 0 || c_in == 0 {
            return Err(Error::shape(
                BLOCK,
                "convs.0 weight",
                "(C_out, C_in, 1, 1) non-empty",
                w0.shape().clone(),
            ));
        }
        for (i, (conv, bn)) in branches.iter().enumerate() {
            let kernel = if i == 0 { 1 } else { 3 };
            let what = if i == 0 {
                "convs.0 (1x1 branch)"
            } else {
                "dilated branch"
            };
            check_unit(what, conv, bn, c_in, c_out, kernel)?;
            check::same_dtype_device(BLOCK, what, w0, conv.weight())?;
        }
        if let Some((conv, bn)) = &pooling {
            check_unit("image-pooling branch", conv, bn, c_in, c_out, 1)?;
            check::same_dtype_device(BLOCK, "image-pooling branch", w0, conv.weight())?;
        }
        let cat = (branches.len() + usize::from(pooling.is_some())) * c_out;
        check_unit("project", &project.0, &project.1, cat, c_out, 1)?;
        check::same_dtype_device(BLOCK, "project", w0, project.0.weight())?;
        let unit = |(conv, bn): (Conv2d, BatchNorm)| ConvBnRelu { conv, bn };
        Ok(Self {
            branches: branches.into_iter().map(unit).collect(),
            pooling: pooling.map(unit),
            project: unit(project),
            dropout,
            in_channels: c_in,
            out_channels: c_out,
        })
    }

    /// Number of input channels `C_in`.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Number of output channels `C_out` (also the width of every branch).
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Dilation rates of the 3×3 branches, in order.
    pub fn rates(&self) -> Vec<usize> {
        self.branches[1..]
            .iter()
            .map(|b| b.conv.config().dilation)
            .collect()
    }

    /// Whether the image-pooling branch is present.
    pub fn has_image_pooling(&self) -> bool {
        self.pooling.is_some()
    }

    /// Dropout probability applied after the projection in training.
    pub fn dropout(&self) -> f32 {
        self.dropout
    }

    fn check_input(&self, xs: &Tensor, train: bool) -> Result<()> {
        check::rank(BLOCK, "input", xs, 4, "(B, C_in, H, W)")?;
        check::non_empty(BLOCK, "input", xs)?;
        check::float_dtype(BLOCK, "input", xs)?;
        let (b, c, h, w) = xs.dims4()?;
        if c != self.in_channels {
            return Err(Error::shape(
                BLOCK,
                "input",
                format!("(B, {}, H, W)", self.in_channels),
                (b, c, h, w),
            ));
        }
        check::same_dtype_device(BLOCK, "input", self.project.conv.weight(), xs)?;
        if train && b < 2 && self.pooling.is_some() {
            return Err(Error::config(
                BLOCK,
                "training needs a batch of at least 2: the image-pooling branch normalises one \
                 value per channel and sample, so a batch of 1 has no variance (PyTorch refuses it \
                 too)",
            ));
        }
        Ok(())
    }
}

impl ModuleT for Aspp {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.check_input(xs, train)?;
        let (b, _, h, w) = xs.dims4()?;
        let mut outs = Vec::with_capacity(self.branches.len() + 1);
        for branch in &self.branches {
            outs.push(branch.forward_t(xs, train)?);
        }
        if let Some(pool) = &self.pooling {
            let g = xs.mean_keepdim(3)?.mean_keepdim(2)?;
            let g = pool.forward_t(&g, train)?;
            // Bilinear upsampling of a 1x1 map is a broadcast.
            outs.push(g.broadcast_as((b, self.out_channels, h, w))?.contiguous()?);
        }
        let ys = self.project.forward_t(&Tensor::cat(&outs, 1)?, train)?;
        if train && self.dropout > 0.0 {
            candle_nn::ops::dropout(&ys, self.dropout)
        } else {
            Ok(ys)
        }
    }
}

/// A bias-free convolution weight with PyTorch's default init (uniform, bound $1/\sqrt{fan_{in}}$).
fn conv_no_bias(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    dilation: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let (weight, _) =
        crate::conv::init::weight_and_bias(BLOCK, &vb, (c_out, c_in, kernel, kernel), false)?;
    // Validated rates: the extent fits (`AsppConfig::validate`).
    let padding = (crate::conv::extent(kernel, dilation) - 1) / 2;
    let cfg = Conv2dConfig::default()
        .with_padding(Padding::Explicit(padding))
        .with_dilation(dilation);
    Conv2d::new(weight, None, cfg)
}

/// Creates (or loads, under torchvision's `ASPP` names) an [`Aspp`] block from `in_channels` to
/// `out_channels`.
///
/// Errors (naming `Aspp`) on zero channels, an invalid [`AsppConfig`], or tensors of the wrong
/// shape in `vb`.
pub fn aspp(
    in_channels: usize,
    out_channels: usize,
    cfg: AsppConfig,
    vb: VarBuilder,
) -> Result<Aspp> {
    check::loading(BLOCK, vb, |vb| build(in_channels, out_channels, cfg, vb))
}

fn build(in_channels: usize, out_channels: usize, cfg: AsppConfig, vb: VarBuilder) -> Result<Aspp> {
    cfg.validate()?;
    check::positive(BLOCK, "in_channels", in_channels)?;
    check::positive(BLOCK, "out_channels", out_channels)?;
    // A conv (at `vb.pp(at)`) and its batch norm (at `vb.pp(at + 1)`), torchvision's layout.
    let unit = |vb: VarBuilder, c_in, kernel, dilation, at: usize| {
        let conv = conv_no_bias(c_in, out_channels, kernel, dilation, vb.pp(at))?;
        let (eps, momentum) = (cfg.bn_eps, cfg.bn_momentum);
        let bn = batch_norm_with(out_channels, eps, momentum, vb.pp(at + 1))?;
        Ok::<_, Error>((conv, bn))
    };
    let convs = vb.pp("convs");
    let mut branches = vec![unit(convs.pp(0), in_channels, 1, 1, 0)?];
    for (i, &rate) in cfg.rates.iter().enumerate() {
        branches.push(unit(convs.pp(i + 1), in_channels, 3, rate, 0)?);
    }
    // torchvision's ASPPPooling is Sequential(AdaptiveAvgPool2d, Conv2d, BatchNorm2d, ReLU).
    let pool_vb = convs.pp(cfg.rates.len() + 1);
    let pooling = match cfg.image_pooling {
        true => Some(unit(pool_vb, in_channels, 1, 1, 1)?),
        false => None,
    };
    let parts = branches.len() + usize::from(cfg.image_pooling);
    let cat = check::numel_of(BLOCK, "concatenated channels", &[parts, out_channels], 1)?;
    let project = unit(vb.pp("project"), cat, 1, 1, 0)?;
    Aspp::new(branches, pooling, project, cfg.dropout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_block() {
        assert!(AsppConfig::default().validate().is_ok());
        for (cfg, needle) in [
            (AsppConfig::default().with_rates(vec![]), "rates"),
            (AsppConfig::default().with_rates([6, 0, 18]), "rate"),
            (AsppConfig::default().with_dropout(1.0), "dropout"),
            (AsppConfig::default().with_dropout(-0.1), "dropout"),
            (AsppConfig::default().with_bn_eps(0.0), "bn_eps"),
            (AsppConfig::default().with_bn_momentum(1.5), "bn_momentum"),
        ] {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains("Aspp") && err.contains(needle), "{err}");
        }
    }
}
