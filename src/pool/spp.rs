//! Spatial pyramid pooling: a fixed-length vector from any input size
//! ([`SpatialPyramidPooling`], He et al. 2014), and YOLO's fast sequential variant [`Sppf`].
//!
//! # Shapes
//! - [`SpatialPyramidPooling`] with levels $l_1, \dots, l_n$: `(B, C, H, W)` →
//!   `(B, C·Σ l²)` for any $H, W \ge \max_i l_i$. Level $l$ pools to an $l \times l$ grid with
//!   adaptive bins; each level's `(B, C, l, l)` map is flattened in PyTorch order
//!   (`flatten(1)`: channel-major) and the levels are concatenated in the order given.
//! - [`Sppf`]: `(B, c1, H, W)` → `(B, c2, H, W)`. Weights (ultralytics names):
//!   `cv1.conv.weight` `(c1/2, c1, 1, 1)`, `cv1.bn.{weight, bias, running_mean, running_var}`
//!   `(c1/2)`, `cv2.conv.weight` `(c2, 4·(c1/2), 1, 1)` (the concatenated `[x, y1, y2, y3]`),
//!   `cv2.bn.*` `(c2)`; `c1/2` rounds down, as in ultralytics.
//!
//! # Tip
//! A fully connected head needs a fixed-length input, which is why classic CNNs crop or warp
//! every image to one resolution. Spatial pyramid pooling replaces the last pooling layer by
//! pools to several fixed grids — e.g. $\lbrace 6 \times 6, 3 \times 3, 2 \times 2, 1 \times 1
//! \rbrace$, 50 bins — so the feature length is $C \sum_i l_i^2$ whatever $H \times W$ is: the
//! network can take images at their native resolution and aspect ratio (train at several scales,
//! evaluate without distorting crops), and the coarse levels add some robustness to object
//! deformation and position. The cost is a head wider than one global pool ($\sum l^2$ times) and
//! bins that get coarse on small feature maps; inputs smaller than the finest level are rejected.
//!
//! YOLO's SPPF keeps the spatial map instead (no flattening) and uses pyramid pooling to widen
//! the receptive field of the neck: max pools of size 5, 9 and 13 (stride 1, "same" padding) of
//! the same map are concatenated. Because the maximum over a window of maxima over windows is
//! the maximum over their union, two stride-1 $5 \times 5$ pools in a row equal one $9 \times 9$
//! pool and three equal a $13 \times 13$ pool ($k^\prime = k + (k - 1)(n - 1)$). SPPF applies one
//! $5 \times 5$ pool three times in sequence, reading $3 \cdot 25 = 75$ values per output
//! instead of $25 + 81 + 169 = 275$, with an identical result.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, ModuleT, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::pool::{max_pool2d_same, sppf, PoolMode, SpatialPyramidPooling};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! // He et al.'s 4-level pyramid: 36 + 9 + 4 + 1 = 50 bins per channel.
//! let spp = SpatialPyramidPooling::new(vec![6, 3, 2, 1], PoolMode::Max)?;
//! assert_eq!(spp.output_features(256), 256 * 50);
//! // Same vector length for two input sizes.
//! for (h, w) in [(13, 13), (10, 17)] {
//!     let x = Tensor::randn(0f32, 1., (2, 256, h, w), &dev)?;
//!     assert_eq!(spp.forward(&x)?.dims(), &[2, 256 * 50]);
//! }
//!
//! // SPPF: three sequential 5x5 pools = parallel 5x5, 9x9 and 13x13 pools.
//! let x = Tensor::randn(0f32, 1., (1, 4, 20, 20), &dev)?;
//! let y1 = max_pool2d_same(&x, 5)?;
//! let y2 = max_pool2d_same(&y1, 5)?;
//! let y3 = max_pool2d_same(&y2, 5)?;
//! let diff = |a: &Tensor, b: &Tensor| -> candle_core::Result<f32> {
//!     (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
//! };
//! assert_eq!(diff(&y2, &max_pool2d_same(&x, 9)?)?, 0.0);
//! assert_eq!(diff(&y3, &max_pool2d_same(&x, 13)?)?, 0.0);
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! let block = sppf(4, 8, 5, vb.pp("model.9"))?;
//! assert_eq!(block.forward_t(&x, false)?.dims(), &[1, 8, 20, 20]);
//! # Ok(())
//! # }
//! ```
//!
//! Departures from the paper: every level uses PyTorch's adaptive bins
//! ($[\lfloor i n/l \rfloor, \lceil (i+1) n/l \rceil)$) rather than the paper's window
//! $\lceil n/l \rceil$ with stride $\lfloor n/l \rfloor$, which can leave the last rows unpooled.
//!
//! # References
//! - He et al., *Spatial Pyramid Pooling in Deep Convolutional Networks for Visual Recognition*,
//!   2014, <https://arxiv.org/abs/1406.4729>
//! - Jocher et al., ultralytics YOLOv5/YOLOv8 (`SPPF`),
//!   <https://github.com/ultralytics/ultralytics>

use crate::conv::init::weight_and_bias;
use crate::norm::BatchNorm;
use crate::ops::{adaptive_pool2d, max_pool2d_same, PoolMode};
use crate::{check, Error, Result};
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;

const SPP: &str = "SpatialPyramidPooling";
const SPPF: &str = "Sppf";

// ---------------------------------------------------------------------------------------------
// Spatial pyramid pooling
// ---------------------------------------------------------------------------------------------

/// Levels and reduction of a [`SpatialPyramidPooling`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SppConfig {
    /// Grid side of each level, in output order; each > 0, at least one. Default `[6, 3, 2, 1]`
    /// (He et al.'s 50-bin pyramid).
    pub levels: Vec<usize>,
    /// Max or average pooling. Default [`PoolMode::Max`] (the paper's choice).
    pub mode: PoolMode,
}

impl Default for SppConfig {
    fn default() -> Self {
        Self {
            levels: vec![6, 3, 2, 1],
            mode: PoolMode::Max,
        }
    }
}

impl SppConfig {
    /// Sets the pyramid levels.
    pub fn with_levels(mut self, levels: Vec<usize>) -> Self {
        self.levels = levels;
        self
    }

    /// Sets the reduction.
    pub fn with_mode(mut self, mode: PoolMode) -> Self {
        self.mode = mode;
        self
    }

    /// Checks that there is at least one level and that every level is > 0.
    pub fn validate(&self) -> Result<()> {
        if self.levels.is_empty() {
            return Err(Error::config(SPP, "levels must not be empty"));
        }
        if let Some(i) = self.levels.iter().position(|&l| l == 0) {
            return Err(Error::config(
                SPP,
                format!(
                    "every level must be > 0, got levels {:?} (index {i})",
                    self.levels
                ),
            ));
        }
        let bins = self.levels.iter().try_fold(0usize, |acc, &l| {
            l.checked_mul(l).and_then(|sq| sq.checked_add(acc))
        });
        if bins.is_none() {
            return Err(Error::config(
                SPP,
                format!(
                    "the bin count (sum of level²) overflows usize, got levels {:?}",
                    self.levels
                ),
            ));
        }
        Ok(())
    }
}

/// Spatial pyramid pooling (He et al. 2014): adaptive pools to $l \times l$ for each level $l$,
/// flattened and concatenated into a `(B, C·Σ l²)` vector for any input size. No weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpatialPyramidPooling {
    cfg: SppConfig,
}

impl SpatialPyramidPooling {
    /// A pyramid over `levels` (grid sides, in output order) with `mode`. Errors (naming
    /// `SpatialPyramidPooling`) when `levels` is empty or holds a 0.
    pub fn new(levels: Vec<usize>, mode: PoolMode) -> Result<Self> {
        Self::from_config(SppConfig { levels, mode })
    }

    /// Validates `cfg` and builds the pyramid; errors as [`SpatialPyramidPooling::new`].
    pub fn from_config(cfg: SppConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { cfg })
    }

    /// The grid side of each level.
    pub fn levels(&self) -> &[usize] {
        &self.cfg.levels
    }

    /// Max or average.
    pub fn mode(&self) -> PoolMode {
        self.cfg.mode
    }

    /// The configuration.
    pub fn config(&self) -> &SppConfig {
        &self.cfg
    }

    /// Bins per channel, $\sum_i l_i^2$.
    pub fn bins(&self) -> usize {
        self.cfg.levels.iter().map(|l| l * l).sum()
    }

    /// Length of the output vector for `channels` input channels: `channels · Σ l²` (the input
    /// width of the layer that follows); saturates at `usize::MAX` for a channel count so large
    /// that no input can have it.
    pub fn output_features(&self, channels: usize) -> usize {
        channels.saturating_mul(self.bins())
    }

    /// The smallest height and width accepted: the largest level.
    pub fn min_input_size(&self) -> usize {
        self.cfg.levels.iter().copied().max().unwrap_or(1)
    }

    fn pool(&self, x: &Tensor) -> Result<Tensor> {
        check::rank(SPP, "input", x, 4, "(B, C, H, W)")?;
        check::non_empty(SPP, "input", x)?;
        check::float_dtype(SPP, "input", x)?;
        let (_, _, h, w) = x.dims4()?;
        let m = self.min_input_size();
        if h < m || w < m {
            return Err(Error::shape(
                SPP,
                "input",
                format!("(B, C, H, W) with H, W >= {m} (the largest pyramid level)"),
                x.shape().clone(),
            ));
        }
        let x = x.contiguous()?;
        let parts = self
            .cfg
            .levels
            .iter()
            .map(|&l| Ok(adaptive_pool2d(&x, (l, l), self.cfg.mode)?.flatten_from(1)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 1)?)
    }
}

impl Module for SpatialPyramidPooling {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.pool(xs)?)
    }
}

// ---------------------------------------------------------------------------------------------
// SPPF
// ---------------------------------------------------------------------------------------------

/// A 1×1 convolution without bias, batch norm and SiLU: ultralytics' `Conv(c_in, c_out, 1, 1)`.
#[derive(Debug, Clone)]
struct ConvBnSilu {
    weight: Tensor,
    bn: BatchNorm,
}

impl ConvBnSilu {
    fn load(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        // A bias-free 1x1 convolution with PyTorch's default init.
        let (weight, _) = weight_and_bias(SPPF, &vb.pp("conv"), (c_out, c_in, 1, 1), false)
            .map_err(|e| e.in_load(SPPF, vb.prefix()))?;
        // ultralytics' BatchNorm2d(eps=1e-3, momentum=0.03).
        let bn = crate::norm::batch::batch_norm_with(c_out, 1e-3, 0.03, vb.pp("bn"))?;
        Ok(Self { weight, bn })
    }

    /// `W · x` per image as one matrix product (a 1×1 convolution), `(B, c_out, H·W)`.
    fn conv(w: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, wd) = x.dims4()?;
        let w = w.flatten_from(1)?.broadcast_left(b)?;
        w.matmul(&x.reshape((b, c, h * wd))?)
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let c_out = self.weight.dim(0)?;
        let (Some(mean), Some(var), false) = (self.bn.running_mean(), self.bn.running_var(), train)
        else {
            // Training, or no running statistics: batch statistics, on the fused kernel.
            let y = Self::conv(&self.weight, x)?.reshape((b, c_out, h, w))?;
            return self.bn.forward_t(&y, train)?.silu();
        };
        // Eval: fold the batch norm into the convolution, W' = s·W and t = β - s·μ with
        // s = γ / √(σ² + ε), computed in f32 (a per-channel vector, negligible next to the
        // product); gradients still reach W, γ and β, not the running statistics.
        let dt = self.weight.dtype();
        let f32 = |t: &Tensor| t.to_dtype(candle_core::DType::F32);
        let mean = f32(&mean.detach())?;
        let var = f32(&var.detach())?;
        let mut s = (var + self.bn.config().eps)?.sqrt()?.recip()?;
        let mut shift = (mean.neg()? * &s)?;
        if let (Some(gamma), Some(beta)) = (self.bn.weight(), self.bn.bias()) {
            s = (s * f32(gamma)?)?;
            shift = ((shift * f32(gamma)?)? + f32(beta)?)?;
        }
        let wf = f32(&self.weight)?.broadcast_mul(&s.reshape((c_out, 1, 1, 1))?)?;
        let y = Self::conv(&wf.to_dtype(dt)?, x)?
            .broadcast_add(&shift.to_dtype(dt)?.reshape((c_out, 1))?)?;
        y.reshape((b, c_out, h, w))?.silu()
    }
}

/// Checks a `(c_out, c_in, 1, 1)` conv weight and its batch norm's feature count; returns
/// `(c_out, c_in)`.
fn check_conv_bn(what: &'static str, w: &Tensor, bn: &BatchNorm) -> Result<(usize, usize)> {
    check::rank(SPPF, what, w, 4, "(c_out, c_in, 1, 1)")?;
    check::non_empty(SPPF, what, w)?;
    check::float_dtype(SPPF, what, w)?;
    let (co, ci, kh, kw) = w.dims4()?;
    if (kh, kw) != (1, 1) {
        return Err(Error::shape(
            SPPF,
            what,
            "(c_out, c_in, 1, 1)",
            w.shape().clone(),
        ));
    }
    if bn.channels() != co {
        return Err(Error::config(
            SPPF,
            format!(
                "the batch norm after {what} must have {co} channels, got {}",
                bn.channels()
            ),
        ));
    }
    Ok((co, ci))
}

/// SPPF (ultralytics YOLOv5/YOLOv8): `cv1` (1×1 conv + BN + SiLU to `c1/2` channels), the same
/// $k \times k$ stride-1 max pool applied three times in sequence, concatenation
/// `[x, y1, y2, y3]` and `cv2` (1×1 conv + BN + SiLU to `c2`). Equal to SPP with parallel pools
/// of sizes $k$, $2k - 1$ and $3k - 2$ (5, 9, 13 for the default $k = 5$), but cheaper.
///
/// Implements [`ModuleT`]: `train = true` normalises with batch statistics and updates the
/// running ones (momentum 0.03, eps 1e-3, as ultralytics).
#[derive(Debug, Clone)]
pub struct Sppf {
    cv1: ConvBnSilu,
    cv2: ConvBnSilu,
    k: usize,
    c1: usize,
}

/// Builds an [`Sppf`] with `c1` input and `c2` output channels and pool size `k` (5 in
/// YOLOv5/v8), loading or creating `cv1.conv.weight`, `cv1.bn.*`, `cv2.conv.weight` and
/// `cv2.bn.*` under `vb` (ultralytics' names, so a YOLO state dict loads unchanged).
///
/// Errors (naming `Sppf`) when `c1 < 2` (the hidden width `c1/2` would be 0), `c2 = 0`, `k` is 0
/// or even, or a loaded tensor has the wrong shape.
pub fn sppf(c1: usize, c2: usize, k: usize, vb: VarBuilder) -> Result<Sppf> {
    validate_sppf(c1, c2, k)?;
    // Both 1×1 weights, before the var builder allocates them.
    check::numel(SPPF, "cv1 weight", &[c1 / 2, c1], vb.dtype())?;
    check::numel(SPPF, "cv2 weight", &[c2, 4, c1 / 2], vb.dtype())?;
    let c_ = c1 / 2;
    let cv1 = ConvBnSilu::load(c1, c_, vb.pp("cv1"))?;
    let cv2 = ConvBnSilu::load(4 * c_, c2, vb.pp("cv2"))?;
    Ok(Sppf { cv1, cv2, k, c1 })
}

fn validate_sppf(c1: usize, c2: usize, k: usize) -> Result<()> {
    if c1 < 2 {
        return Err(Error::config(
            SPPF,
            format!("c1 must be >= 2 (hidden width c1 / 2 > 0), got {c1}"),
        ));
    }
    check::positive(SPPF, "c2", c2)?;
    if k.is_multiple_of(2) {
        return Err(Error::config(
            SPPF,
            format!("k must be odd (stride-1 pools keep the size only then), got {k}"),
        ));
    }
    Ok(())
}

impl Sppf {
    /// Builds the block from raw parts: `cv1_weight` `(c_, c1, 1, 1)` with its batch norm over
    /// `c_`, `cv2_weight` `(c2, 4·c_, 1, 1)` with its batch norm over `c2`, and pool size `k`.
    /// Errors (naming `Sppf`) on inconsistent shapes or dtypes, or an even / zero `k`.
    pub fn new(
        cv1_weight: Tensor,
        cv1_bn: BatchNorm,
        cv2_weight: Tensor,
        cv2_bn: BatchNorm,
        k: usize,
    ) -> Result<Self> {
        let (c_, c1) = check_conv_bn("cv1.conv.weight", &cv1_weight, &cv1_bn)?;
        let (c2, c4) = check_conv_bn("cv2.conv.weight", &cv2_weight, &cv2_bn)?;
        check::same_dtype_device(SPPF, "cv2.conv.weight", &cv1_weight, &cv2_weight)?;
        if c4 != 4 * c_ {
            return Err(Error::shape(
                SPPF,
                "cv2.conv.weight",
                format!("({c2}, {}, 1, 1) (4 × the {c_} channels of cv1)", 4 * c_),
                cv2_weight.shape().clone(),
            ));
        }
        check::positive(SPPF, "k", k)?;
        if k.is_multiple_of(2) {
            return Err(Error::config(SPPF, format!("k must be odd, got {k}")));
        }
        Ok(Self {
            cv1: ConvBnSilu {
                weight: cv1_weight,
                bn: cv1_bn,
            },
            cv2: ConvBnSilu {
                weight: cv2_weight,
                bn: cv2_bn,
            },
            k,
            c1,
        })
    }

    /// The pool size $k$.
    pub fn kernel_size(&self) -> usize {
        self.k
    }

    /// Input channels `c1`.
    pub fn in_channels(&self) -> usize {
        self.c1
    }

    /// Output channels `c2`.
    pub fn out_channels(&self) -> usize {
        self.cv2.weight.dims()[0]
    }

    /// The receptive fields of the three concatenated pooled maps, $k$, $2k-1$, $3k-2$
    /// (5, 9, 13 for $k = 5$): SPPF equals SPP with parallel pools of these sizes.
    pub fn equivalent_spp_kernels(&self) -> [usize; 3] {
        let k = self.k;
        [k, 2 * k - 1, 3 * k - 2]
    }

    fn run(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check::rank(SPPF, "input", x, 4, "(B, C, H, W)")?;
        check::non_empty(SPPF, "input", x)?;
        check::same_dtype_device(SPPF, "input", &self.cv1.weight, x)?;
        let c = x.dim(1)?;
        if c != self.c1 {
            return Err(Error::shape(
                SPPF,
                "input",
                format!("(B, {}, H, W)", self.c1),
                x.shape().clone(),
            ));
        }
        let y0 = self.cv1.forward_t(x, train)?;
        let y1 = max_pool2d_same(&y0, self.k)?;
        let y2 = max_pool2d_same(&y1, self.k)?;
        let y3 = max_pool2d_same(&y2, self.k)?;
        let cat = Tensor::cat(&[&y0, &y1, &y2, &y3], 1)?;
        Ok(self.cv2.forward_t(&cat, train)?)
    }
}

impl ModuleT for Sppf {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(self.run(xs, train)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let cfg = SppConfig::default();
        assert_eq!(cfg.levels, vec![6, 3, 2, 1]);
        assert_eq!(cfg.mode, PoolMode::Max);
        assert!(cfg.validate().is_ok());
        let e = SppConfig::default().with_levels(vec![]).validate();
        assert!(e.unwrap_err().to_string().contains(SPP));
        let e = SppConfig::default().with_levels(vec![2, 0]).validate();
        assert!(e.unwrap_err().to_string().contains(SPP));
        assert!(validate_sppf(1, 4, 5).is_err());
        assert!(validate_sppf(4, 0, 5).is_err());
        assert!(validate_sppf(4, 4, 4).is_err());
        assert!(validate_sppf(4, 4, 0).is_err());
        assert!(validate_sppf(4, 4, 5).is_ok());
    }

    #[test]
    fn bins_and_features() -> Result<()> {
        let spp = SpatialPyramidPooling::new(vec![4, 2, 1], PoolMode::Avg)?;
        assert_eq!(spp.bins(), 21);
        assert_eq!(spp.output_features(3), 63);
        assert_eq!(spp.min_input_size(), 4);
        Ok(())
    }
}
