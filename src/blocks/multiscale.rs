//! Two-pathway multi-scale block (DeepMedic): the input goes through a full-resolution pathway
//! and, average-pooled by a factor $f$, through a low-resolution pathway whose output is
//! upsampled back (nearest neighbour) and fused with the first by concatenation or sum.
//!
//! # Shapes
//! - input `(B, C, H, W)` or `(B, C, D, H, W)`; every spatial axis at least `factor` long.
//! - the full pathway maps `x` to `(B, C1, S…)`; the low pathway maps the pooled input, whose
//!   axes are $\lceil n / f \rceil$ long, to `(B, C2, s…)`. Upsampled by $f$, each low axis must
//!   reach the full pathway's length; the extra tail is cropped.
//! - output `(B, C1 + C2, S…)` ([`PathwayFusion::Concat`], full pathway's channels first) or
//!   `(B, C1, S…)` ([`PathwayFusion::Sum`], which needs `C1 = C2`).
//!
//! Sizes not divisible by $f$: the last pooling window of an axis of length $n$ holds the
//! $n - f\lfloor (n-1)/f \rfloor$ voxels that remain and averages over them only (PyTorch's
//! `avg_pool` with `ceil_mode=True`), so no voxel is dropped; after upsampling, the trailing
//! $f\lceil n/f \rceil - n$ positions are cropped off (the windows are aligned to the start of
//! each axis). An input shorter than $f$ on some axis is an error.
//!
//! The upsampling is written as reshape → broadcast → reshape, so it has a backward for any
//! rank and factor (candle's `upsample_nearest2d` has one only for 2-D integer factors and
//! there is no 3-D one).
//!
//! # Tip
//! **Widen the receptive field cheaply with a second, downsampled pathway.** A stack of $k$
//! stride-1 $3^3$ convolutions sees $2k + 1$ voxels along each axis. Running the *same* stack on
//! the input average-pooled by $f$ makes every tap $f$ voxels apart, so the low pathway sees
//! $f(2k + 1)$ voxels — $f$ times the context — with exactly the same number of weights, while
//! it processes $f^3$ times fewer voxels: $1/27$ of the full pathway's multiply-adds for $f = 3$
//! in 3-D ($1/9$ in 2-D). Fusing both keeps the fine detail (the full pathway) next to the
//! context (the low one), which is what segmentation of large volumes needs: whether a bright
//! blob is a lesion or a vessel depends on tissue several centimetres away, but the boundary
//! must stay voxel-accurate. The alternatives cost more: a deeper full-resolution stack grows
//! the field by only 2 voxels per layer, and a U-Net's encoder–decoder adds many layers and the
//! activation memory of the skips. The trade-off: the low pathway's output is blocky (nearest
//! upsampling) and carries no detail finer than $f$ voxels — that is the full pathway's job.
//! Use it when context matters more than a handful of extra layers can provide (large 3-D
//! volumes, big 2-D scenes); skip it when the objects are smaller than the field of a plain stack.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::blocks::{multi_scale_pathways, ConvStackConfig, MultiScaleConfig};
//! use candle_tricks::conv::receptive_field::{receptive_field, LayerGeometry};
//! # fn main() -> candle_tricks::Result<()> {
//! let (k, f) = (4usize, 3usize); // four 3x3x3 convs per pathway, downsampling factor 3
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let stack = ConvStackConfig::default().with_widths(vec![8; k]);
//! let block = multi_scale_pathways(2, &stack, MultiScaleConfig::default().with_factor(f), vb)?;
//! let x = Tensor::randn(0f32, 1., (1, 2, 27, 27, 27), &Device::Cpu)?;
//! let y = block.forward_t(&x, false)?;
//! assert_eq!(y.dims(), &[1, 16, 27, 27, 27]); // concat: 8 + 8 channels, full resolution
//!
//! // Receptive field along one axis: full pathway 2k+1, low pathway f(2k+1).
//! let conv = LayerGeometry::conv(3, 1).with_padding(1);
//! let full_rf = receptive_field(&vec![conv; k])?.size;
//! let mut low = vec![LayerGeometry::conv(f, f)];
//! low.extend(vec![conv; k]);
//! let low_rf = receptive_field(&low)?.size;
//! assert_eq!((full_rf, low_rf), (2 * k + 1, f * (2 * k + 1)));
//!
//! // ... for the same weights ...
//! let count = |prefix: &str| -> usize {
//!     let data = varmap.data().lock().unwrap();
//!     data.iter()
//!         .filter(|(name, _)| name.starts_with(prefix))
//!         .map(|(_, v)| v.as_tensor().elem_count())
//!         .sum()
//! };
//! assert_eq!(count("full."), count("low."));
//! // ... and 1/27 of the voxels to convolve, hence of the multiply-adds.
//! let voxels = |t: &Tensor| t.dims()[2..].iter().product::<usize>();
//! assert_eq!(voxels(&x), 27 * voxels(&block.downsample(&x)?));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Kamnitsas et al., *Efficient Multi-Scale 3D CNN with Fully Connected CRF for Accurate Brain
//!   Lesion Segmentation* (DeepMedic), 2017, <https://arxiv.org/abs/1603.05959>

use crate::conv::init::weight_and_bias;
use crate::conv::{Conv2d, Padding};
use crate::conv::{Conv3d, Conv3dConfig};
use crate::norm::{create, Norm};
use crate::ops::Conv2dConfig;
use crate::{check, Error, Result};
use candle_core::{ModuleT, Tensor};
use candle_nn::VarBuilder;

const BLOCK: &str = "MultiScalePathways";
const STACK: &str = "ConvStack";
const DOWN: &str = "multiscale::downsample_avg";
const UP: &str = "multiscale::upsample_nearest";
const SHAPES: &str = "(B, C, H, W) or (B, C, D, H, W)";

/// How [`MultiScalePathways`] fuses its two pathways' outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathwayFusion {
    /// Concatenate along the channels, full pathway first (DeepMedic): `C1 + C2` channels.
    Concat,
    /// Add element-wise: both pathways must output the same number of channels.
    Sum,
}

/// Settings of a [`MultiScalePathways`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultiScaleConfig {
    /// Downsampling factor $f$ of the low pathway on every spatial axis (average pooling with
    /// kernel and stride $f$, nearest upsampling by $f$), > 0. Default 3 (DeepMedic).
    pub factor: usize,
    /// How the two outputs are fused. Default [`PathwayFusion::Concat`] (DeepMedic).
    pub fusion: PathwayFusion,
}

impl Default for MultiScaleConfig {
    fn default() -> Self {
        Self {
            factor: 3,
            fusion: PathwayFusion::Concat,
        }
    }
}

impl MultiScaleConfig {
    /// Sets the downsampling factor.
    pub fn with_factor(mut self, factor: usize) -> Self {
        self.factor = factor;
        self
    }

    /// Sets the fusion.
    pub fn with_fusion(mut self, fusion: PathwayFusion) -> Self {
        self.fusion = fusion;
        self
    }

    /// Checks that `factor` is > 0.
    pub fn validate(&self) -> Result<()> {
        check::positive(BLOCK, "factor", self.factor)
    }

    /// Channels of the fused output for pathways with `full` and `low` output channels; errors
    /// (naming `MultiScalePathways`) for [`PathwayFusion::Sum`] when they differ.
    pub fn out_channels(&self, full: usize, low: usize) -> Result<usize> {
        match self.fusion {
            PathwayFusion::Concat => Ok(full + low),
            PathwayFusion::Sum if full == low => Ok(full),
            PathwayFusion::Sum => Err(Error::config(
                BLOCK,
                format!("sum fusion needs equal pathway channels, got {full} and {low}"),
            )),
        }
    }
}

fn float_input(block: &'static str, x: &Tensor) -> Result<()> {
    if !x.dtype().is_float() {
        return Err(Error::unsupported_dtype(
            block,
            "input",
            "a float dtype",
            x.dtype(),
        ));
    }
    Ok(())
}

fn check_spatial_input(block: &'static str, x: &Tensor, factor: usize) -> Result<()> {
    if x.rank() < 3 {
        return Err(Error::shape(
            block,
            "input",
            "(B, C, spatial…)",
            x.shape().clone(),
        ));
    }
    check::non_empty(block, "input", x)?;
    float_input(block, x)?;
    check::positive(block, "factor", factor)?;
    if x.dims()[2..].iter().any(|&n| n < factor) {
        return Err(Error::shape(
            block,
            "input",
            format!("every spatial axis >= the factor {factor}"),
            x.shape().clone(),
        ));
    }
    Ok(())
}

/// Average pooling with kernel and stride `factor` over every axis after the first two of
/// `x: (B, C, spatial…)`; each axis of length $n$ becomes $\lceil n/f \rceil$ long and the last,
/// partial window averages only the voxels it holds (PyTorch's `avg_pool{1,2,3}d(x, f, f,
/// ceil_mode=True)`). Built from candle tensor ops, so it has a backward.
///
/// Errors (naming `multiscale::downsample_avg`) on rank < 3, an empty or integer input, a
/// factor of 0, or an axis shorter than `factor`.
pub fn downsample_avg(x: &Tensor, factor: usize) -> Result<Tensor> {
    check_spatial_input(DOWN, x, factor)?;
    let mut y = x.clone();
    if factor == 1 {
        return Ok(y);
    }
    for axis in 2..x.rank() {
        let n = y.dims()[axis];
        let m = n.div_ceil(factor);
        let pad = m * factor - n;
        if pad > 0 {
            y = y.pad_with_zeros(axis, 0, pad)?;
        }
        let mut split = y.dims().to_vec();
        split.splice(axis..=axis, [m, factor]);
        y = y.reshape(split)?.sum(axis + 1)?;
        if pad == 0 {
            y = y.affine(1.0 / factor as f64, 0.0)?;
        } else {
            let inv: Vec<f32> = (0..m)
                .map(|j| 1.0 / (factor.min(n - j * factor)) as f32)
                .collect();
            let mut shape = vec![1; y.rank()];
            shape[axis] = m;
            let inv = Tensor::from_vec(inv, shape, y.device())?.to_dtype(y.dtype())?;
            y = y.broadcast_mul(&inv)?;
        }
    }
    Ok(y)
}

/// Nearest-neighbour upsampling by an integer `factor` on every axis after the first two of
/// `x: (B, C, spatial…)` (each value repeated `factor` times per axis, PyTorch's
/// `F.interpolate(x, scale_factor=f, mode="nearest")`). Built as reshape → broadcast → reshape,
/// so it has a backward for any rank.
///
/// Errors (naming `multiscale::upsample_nearest`) on rank < 3, an empty input or a factor of 0.
pub fn upsample_nearest(x: &Tensor, factor: usize) -> Result<Tensor> {
    if x.rank() < 3 {
        return Err(Error::shape(
            UP,
            "input",
            "(B, C, spatial…)",
            x.shape().clone(),
        ));
    }
    check::non_empty(UP, "input", x)?;
    check::positive(UP, "factor", factor)?;
    if factor == 1 {
        return Ok(x.clone());
    }
    let dims = x.dims();
    let mut split = dims[..2].to_vec();
    let mut spread = dims[..2].to_vec();
    let mut out = dims[..2].to_vec();
    for &n in &dims[2..] {
        split.extend([n, 1]);
        spread.extend([n, factor]);
        out.push(n.saturating_mul(factor));
    }
    // The product of the output dims is checked (a wrapped count would pass candle's reshape).
    check::allocatable(UP, "output", &out, x.dtype())?;
    Ok(x.reshape(split)?.broadcast_as(spread)?.reshape(out)?)
}

// ---------------------------------------------------------------------------------------------
// MultiScalePathways
// ---------------------------------------------------------------------------------------------

/// The DeepMedic two-pathway block around any two modules: $\mathrm{fuse}(F(x),
/// \mathrm{crop}(\mathrm{up}_ f(L(\mathrm{pool}_ f(x)))))$. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct MultiScalePathways<M1, M2> {
    full: M1,
    low: M2,
    cfg: MultiScaleConfig,
}

impl<M1, M2> MultiScalePathways<M1, M2> {
    /// Wraps the full-resolution pathway `full` and the low-resolution pathway `low` (applied to
    /// the input average-pooled by `cfg.factor`). Errors (naming `MultiScalePathways`) on an
    /// invalid `cfg`.
    pub fn new(full: M1, low: M2, cfg: MultiScaleConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { full, low, cfg })
    }

    /// The full-resolution pathway.
    pub fn full(&self) -> &M1 {
        &self.full
    }

    /// The low-resolution pathway.
    pub fn low(&self) -> &M2 {
        &self.low
    }

    /// The configuration.
    pub fn config(&self) -> &MultiScaleConfig {
        &self.cfg
    }

    /// The low pathway's input: `x` average-pooled by the factor (see [`downsample_avg`]),
    /// after the same checks as the forward.
    pub fn downsample(&self, x: &Tensor) -> Result<Tensor> {
        check_input(x, self.cfg.factor)?;
        downsample_avg(x, self.cfg.factor)
    }
}

fn check_input(x: &Tensor, factor: usize) -> Result<()> {
    if !(x.rank() == 4 || x.rank() == 5) {
        return Err(Error::shape(BLOCK, "input", SHAPES, x.shape().clone()));
    }
    check_spatial_input(BLOCK, x, factor)
}

impl<M1: ModuleT, M2: ModuleT> MultiScalePathways<M1, M2> {
    /// Like [`ModuleT::forward_t`], returning this crate's error. Errors (naming
    /// `MultiScalePathways`) on an input that is not 4-D or 5-D, is empty, not float or shorter
    /// than the factor on some axis; on pathway outputs of another rank, batch, dtype or device;
    /// on a low pathway whose upsampled output is shorter than the full pathway's on some axis;
    /// and, for [`PathwayFusion::Sum`], on different channel counts.
    pub fn apply_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let f = self.cfg.factor;
        check_input(x, f)?;
        let yf = self.full.forward_t(x, train)?;
        let yl = self.low.forward_t(&downsample_avg(x, f)?, train)?;
        for (what, y) in [("full pathway output", &yf), ("low pathway output", &yl)] {
            if y.rank() != x.rank() || y.dims()[0] != x.dims()[0] || y.dims().contains(&0) {
                return Err(Error::shape(
                    BLOCK,
                    what,
                    format!("rank {} with batch {}, non-empty", x.rank(), x.dims()[0]),
                    y.shape().clone(),
                ));
            }
        }
        check::same_dtype_device(BLOCK, "low pathway output", &yf, &yl)?;
        let target = &yf.dims()[2..];
        if yl.dims()[2..].iter().zip(target).any(|(&l, &t)| l * f < t) {
            let want: Vec<usize> = target.iter().map(|t| t.div_ceil(f)).collect();
            return Err(Error::shape(
                BLOCK,
                "low pathway output",
                format!("spatial axes >= {want:?} (the full pathway's {target:?} / factor {f})"),
                yl.shape().clone(),
            ));
        }
        let mut up = upsample_nearest(&yl, f)?;
        for (i, &t) in target.iter().enumerate() {
            if up.dims()[2 + i] != t {
                up = up.narrow(2 + i, 0, t)?;
            }
        }
        let (c1, c2) = (yf.dims()[1], up.dims()[1]);
        self.cfg.out_channels(c1, c2)?;
        Ok(match self.cfg.fusion {
            PathwayFusion::Concat => Tensor::cat(&[&yf, &up], 1)?,
            PathwayFusion::Sum => (&yf + &up)?,
        })
    }
}

impl<M1: ModuleT, M2: ModuleT> ModuleT for MultiScalePathways<M1, M2> {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(self.apply_t(x, train)?)
    }
}

// ---------------------------------------------------------------------------------------------
// ConvStack: the pathways built by `multi_scale_pathways`
// ---------------------------------------------------------------------------------------------

/// Settings of a [`ConvStack`] (one pathway of [`multi_scale_pathways`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvStackConfig {
    /// 2 (`(B, C, H, W)`, candle's `Conv2d`) or 3 (`(B, C, D, H, W)`, [`Conv3d`]). Default 3.
    pub spatial_dims: usize,
    /// Output channels of each conv → norm → ReLU layer, non-empty, each > 0. Default DeepMedic's
    /// `[30, 30, 40, 40, 40, 40, 50, 50]`.
    pub widths: Vec<usize>,
    /// Odd kernel size, padded to keep the size (stride 1). Default 3.
    pub kernel_size: usize,
    /// Norm spec for [`crate::norm::create`] (`"batch"`, `"group:N"`, `"instance"`, `"none"`, …).
    /// The convs have a bias only with `"none"`. Default `"batch"` (DeepMedic).
    pub norm: String,
}

impl Default for ConvStackConfig {
    fn default() -> Self {
        Self {
            spatial_dims: 3,
            widths: vec![30, 30, 40, 40, 40, 40, 50, 50],
            kernel_size: 3,
            norm: "batch".to_string(),
        }
    }
}

impl ConvStackConfig {
    /// Sets the number of spatial dimensions (2 or 3).
    pub fn with_spatial_dims(mut self, spatial_dims: usize) -> Self {
        self.spatial_dims = spatial_dims;
        self
    }

    /// Sets the layer widths.
    pub fn with_widths(mut self, widths: Vec<usize>) -> Self {
        self.widths = widths;
        self
    }

    /// Sets the kernel size.
    pub fn with_kernel_size(mut self, kernel_size: usize) -> Self {
        self.kernel_size = kernel_size;
        self
    }

    /// Sets the norm spec.
    pub fn with_norm(mut self, norm: impl Into<String>) -> Self {
        self.norm = norm.into();
        self
    }

    /// Checks `spatial_dims` ∈ {2, 3}, non-empty positive widths and an odd kernel size (the
    /// norm spec is checked when the layers are built).
    pub fn validate(&self) -> Result<()> {
        if !(self.spatial_dims == 2 || self.spatial_dims == 3) {
            return Err(Error::config(
                STACK,
                format!("spatial_dims must be 2 or 3, got {}", self.spatial_dims),
            ));
        }
        if self.widths.is_empty() || self.widths.contains(&0) {
            return Err(Error::config(
                STACK,
                format!("widths must be non-empty and > 0, got {:?}", self.widths),
            ));
        }
        if self.kernel_size.is_multiple_of(2) {
            return Err(Error::config(
                STACK,
                format!("kernel_size must be odd, got {}", self.kernel_size),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum StackConv {
    D2(Conv2d),
    D3(Conv3d),
}

/// A stack of conv → norm → ReLU layers that keep the spatial size (2-D or 3-D), the pathway
/// of [`multi_scale_pathways`]. Parameters under `{i}.conv.weight` (and `{i}.conv.bias` without
/// a norm) and `{i}.norm.*` for layer `i`, as a PyTorch `nn.Sequential` of blocks with `conv`
/// and `norm` members would name them.
#[derive(Debug, Clone)]
pub struct ConvStack {
    layers: Vec<(StackConv, Norm)>,
    spatial_dims: usize,
    in_channels: usize,
}

impl ConvStack {
    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Output channels (the last width).
    pub fn out_channels(&self) -> usize {
        match self.layers.last() {
            Some((StackConv::D2(c), _)) => c.weight().dims()[0],
            Some((StackConv::D3(c), _)) => c.out_channels(),
            None => self.in_channels,
        }
    }

    /// 2 or 3.
    pub fn spatial_dims(&self) -> usize {
        self.spatial_dims
    }

    /// Number of conv → norm → ReLU layers.
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// Like [`ModuleT::forward_t`], returning this crate's error (naming `ConvStack` on an
    /// input of the wrong rank or channel count).
    pub fn apply_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let rank = self.spatial_dims + 2;
        let c = self.in_channels;
        if x.rank() != rank || x.dims()[1] != c {
            let want = if rank == 4 {
                format!("(B, {c}, H, W)")
            } else {
                format!("(B, {c}, D, H, W)")
            };
            return Err(Error::shape(STACK, "input", want, x.shape().clone()));
        }
        let mut h = x.clone();
        for (conv, norm) in &self.layers {
            h = match conv {
                StackConv::D2(c) => h.apply(c)?,
                StackConv::D3(c) => h.apply(c)?,
            };
            h = norm.forward_t(&h, train)?.relu()?;
        }
        Ok(h)
    }
}

impl ModuleT for ConvStack {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(self.apply_t(x, train)?)
    }
}

/// Creates (or loads) a [`ConvStack`] from `in_channels` channels: layer `i` is a conv to
/// `cfg.widths[i]` channels (PyTorch's kaiming-uniform init), the norm `cfg.norm` and a ReLU.
/// Errors (naming `ConvStack` or `norm::create`) on `in_channels` 0, an invalid `cfg` or norm
/// spec.
pub fn conv_stack(in_channels: usize, cfg: &ConvStackConfig, vb: VarBuilder) -> Result<ConvStack> {
    cfg.validate()?;
    check::positive(STACK, "in_channels", in_channels)?;
    let k = cfg.kernel_size;
    let with_bias = cfg.norm.trim().eq_ignore_ascii_case("none");
    let mut layers = Vec::with_capacity(cfg.widths.len());
    let mut cin = in_channels;
    for (i, &cout) in cfg.widths.iter().enumerate() {
        let vbi = vb.pp(i.to_string());
        let conv = if cfg.spatial_dims == 2 {
            let (w, b) = weight_and_bias(BLOCK, &vbi.pp("conv"), (cout, cin, k, k), with_bias)?;
            let c2 = Conv2dConfig::default().with_padding(Padding::Explicit(k / 2));
            StackConv::D2(Conv2d::new(w, b, c2)?)
        } else {
            let (w, b) = weight_and_bias(BLOCK, &vbi.pp("conv"), (cout, cin, k, k, k), with_bias)?;
            StackConv::D3(Conv3d::new(w, b, Conv3dConfig::default())?)
        };
        let norm = create(&cfg.norm, cout, vbi.pp("norm"))?;
        layers.push((conv, norm));
        cin = cout;
    }
    Ok(ConvStack {
        layers,
        spatial_dims: cfg.spatial_dims,
        in_channels,
    })
}

/// A DeepMedic-style [`MultiScalePathways`] whose two pathways are [`ConvStack`]s built from the
/// same `stack` config (as in DeepMedic), under `full.*` and `low.*` in `vb`. For pathways of
/// different widths or depths, build each with [`conv_stack`] and join them with
/// [`MultiScalePathways::new`]. Errors (naming the block) on `in_channels` 0, an invalid config
/// or norm spec.
pub fn multi_scale_pathways(
    in_channels: usize,
    stack: &ConvStackConfig,
    cfg: MultiScaleConfig,
    vb: VarBuilder,
) -> Result<MultiScalePathways<ConvStack, ConvStack>> {
    cfg.validate()?;
    check::positive(BLOCK, "in_channels", in_channels)?;
    let full = conv_stack(in_channels, stack, vb.pp("full"))?;
    let low = conv_stack(in_channels, stack, vb.pp("low"))?;
    MultiScalePathways::new(full, low, cfg)
}
