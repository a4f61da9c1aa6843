//! Squeeze-and-excitation (SE): a per-channel gate computed from the globally pooled feature map.
//!
//! # Shapes
//! - input `(B, C, H, W)`, output `(B, C, H, W)`: $y = x \cdot \sigma(W_2\thinspace
//!   \mathrm{ReLU}(W_1 \bar x + b_1) + b_2)$ with $\bar x$ the `(B, C)` spatial mean,
//!   broadcast over `H × W`.
//! - weights (timm's `SEModule` names, 1×1 convolutions): `fc1.weight` `(R, C, 1, 1)`,
//!   `fc1.bias` `(R)`, `fc2.weight` `(C, R, 1, 1)`, `fc2.bias` `(C)`, where `R` is the reduced
//!   width ([`SqueezeExciteConfig::reduced_channels`]).
//!
//! # Tip
//! **Cheap channel reweighting.** A convolution mixes channels with weights that are the same for
//! every image; SE lets the network re-weight its channels *per image*, from a summary of the
//! whole map (the global average), so a 3×3 stage gets global context without any large kernel.
//! The cost is two tiny matrices: $2 C R + C + R$ parameters with $R \approx C/16$, about
//! $C^2/8$ — for a 3×3 conv with $C$ in and out channels ($9 C^2$ weights) that is under 2 %
//! more parameters, and the FLOPs are negligible (they act on a `(B, C)` vector, not on the
//! map). Put it at the end of a residual branch, before the sum (SE-ResNet, EfficientNet's
//! MBConv). The reduction trades capacity for cost; the original paper found $1/16$ a good
//! balance.
//!
//! Departures: the reduced width follows timm's rule (round $C \cdot r$ to a multiple of
//! `rd_divisor` = 8, at least 8, never more than 10 % below $C \cdot r$), not plain division;
//! set [`SqueezeExciteConfig::rd_channels`] to choose it directly.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::attention::{squeeze_excite, SqueezeExciteConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! let c = 256;
//! let se = squeeze_excite(c, SqueezeExciteConfig::default(), vb.pp("se"))?;
//! assert_eq!(se.reduced_channels(), 16); // 256 / 16
//! // Parameters: 2·C·R + R + C = 8 464, against 9·C² = 589 824 for one 3×3 conv: 1.4 %.
//! let params: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
//! assert_eq!(params, 2 * c * 16 + 16 + c);
//! assert!((params as f64) < 0.02 * (9 * c * c) as f64);
//! let x = Tensor::randn(0f32, 1., (2, c, 7, 7), &dev)?;
//! let y = se.forward(&x)?;
//! assert_eq!(y.dims(), &[2, c, 7, 7]);
//! // The gate is in (0, 1): |y| <= |x| everywhere.
//! let excess = (y.abs()? - x.abs()?)?.max_all()?.to_scalar::<f32>()?;
//! assert!(excess <= 0.0);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Hu, Shen, Albanie, Sun, Wu, *Squeeze-and-Excitation Networks*, CVPR 2018,
//!   <https://arxiv.org/abs/1709.01507>.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::conv::init::weight_and_bias;
use crate::{check, Error, Result};

const BLOCK: &str = "SqueezeExcite";

/// timm's `make_divisible`: `v` rounded to the nearest multiple of `divisor`, at least `divisor`,
/// and bumped up one step when rounding lost more than 10 %.
pub(crate) fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor.max(1);
    let mut n = d.max(((v + d as f64 / 2.0) as usize) / d * d);
    if (n as f64) < 0.9 * v {
        n += d;
    }
    n
}

/// Checks the hidden-width settings of a channel-attention block: `0 < rd_ratio <= 1`,
/// `rd_divisor > 0` and `rd_channels`, when set, positive.
pub(crate) fn check_reduction(
    block: &'static str,
    rd_ratio: f64,
    rd_divisor: usize,
    rd_channels: Option<usize>,
) -> Result<()> {
    if !(rd_ratio > 0.0 && rd_ratio <= 1.0) {
        let msg = format!("rd_ratio must be in (0, 1], got {rd_ratio}");
        return Err(Error::config(block, msg));
    }
    check::positive(block, "rd_divisor", rd_divisor)?;
    if let Some(r) = rd_channels {
        check::positive(block, "rd_channels", r)?;
    }
    Ok(())
}

/// Configuration of [`SqueezeExcite`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SqueezeExciteConfig {
    /// Reduction ratio $r$: the hidden width is about $C \cdot r$. Default $1/16$ (the paper's).
    pub rd_ratio: f64,
    /// The hidden width is rounded to a multiple of this. Default 8 (timm); 1 disables rounding.
    pub rd_divisor: usize,
    /// Explicit hidden width, overriding `rd_ratio` and `rd_divisor`. Default `None`.
    pub rd_channels: Option<usize>,
}

impl Default for SqueezeExciteConfig {
    fn default() -> Self {
        Self {
            rd_ratio: 1.0 / 16.0,
            rd_divisor: 8,
            rd_channels: None,
        }
    }
}

impl SqueezeExciteConfig {
    /// Sets [`SqueezeExciteConfig::rd_ratio`].
    pub fn with_rd_ratio(mut self, rd_ratio: f64) -> Self {
        self.rd_ratio = rd_ratio;
        self
    }

    /// Sets [`SqueezeExciteConfig::rd_divisor`].
    pub fn with_rd_divisor(mut self, rd_divisor: usize) -> Self {
        self.rd_divisor = rd_divisor;
        self
    }

    /// Sets [`SqueezeExciteConfig::rd_channels`].
    pub fn with_rd_channels(mut self, rd_channels: usize) -> Self {
        self.rd_channels = Some(rd_channels);
        self
    }

    /// Errors (naming `SqueezeExcite`) unless `0 < rd_ratio <= 1`, `rd_divisor > 0` and
    /// `rd_channels`, when set, is positive.
    pub fn validate(&self) -> Result<()> {
        check_reduction(BLOCK, self.rd_ratio, self.rd_divisor, self.rd_channels)
    }

    /// The hidden width for `channels` input channels.
    pub fn reduced_channels(&self, channels: usize) -> usize {
        self.rd_channels
            .unwrap_or_else(|| make_divisible(channels as f64 * self.rd_ratio, self.rd_divisor))
    }
}

/// A 1×1 convolution applied to pooled `(B, Cin)` vectors: a matrix product with the
/// `(Cout, Cin, 1, 1)` weight seen as `(Cout, Cin)`.
#[derive(Debug, Clone)]
pub(crate) struct PointwiseFc {
    weight: Tensor,
    matrix: Tensor,
    bias: Option<Tensor>,
}

impl PointwiseFc {
    /// Checks a `(cout, cin, 1, 1)` weight and optional `(cout)` bias.
    pub(crate) fn new(
        block: &'static str,
        what: &'static str,
        weight: Tensor,
        bias: Option<Tensor>,
        cout: usize,
        cin: usize,
    ) -> Result<Self> {
        check::float_dtype(block, what, &weight)?;
        if weight.dims() != [cout, cin, 1, 1] {
            return Err(Error::shape(
                block,
                what,
                format!("({cout}, {cin}, 1, 1)"),
                weight.shape().clone(),
            ));
        }
        check::bias(block, &weight, bias.as_ref(), cout)?;
        let matrix = weight.reshape((cout, cin))?;
        Ok(Self {
            weight,
            matrix,
            bias,
        })
    }

    /// Loads (or creates with PyTorch's conv init) `vb`'s `weight` and optional `bias`.
    pub(crate) fn load(
        block: &'static str,
        cout: usize,
        cin: usize,
        with_bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (w, b) = weight_and_bias(BLOCK, &vb, (cout, cin, 1, 1), with_bias)?;
        Self::new(block, "weight", w, b, cout, cin)
    }

    pub(crate) fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `(B, Cin)` → `(B, Cout)`.
    pub(crate) fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.matmul(&self.matrix.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Squeeze-and-excitation block (timm `SEModule` without its optional norm).
#[derive(Debug, Clone)]
pub struct SqueezeExcite {
    fc1: PointwiseFc,
    fc2: PointwiseFc,
    channels: usize,
    reduced: usize,
}

impl SqueezeExcite {
    /// Builds the block from `fc1` `(R, C, 1, 1)` + `(R)` and `fc2` `(C, R, 1, 1)` + `(C)`;
    /// `C` and `R` are read from `fc1_weight`. Errors (naming `SqueezeExcite`) on any other
    /// shape, a non-float dtype or mixed dtypes.
    pub fn new(
        fc1_weight: Tensor,
        fc1_bias: Tensor,
        fc2_weight: Tensor,
        fc2_bias: Tensor,
    ) -> Result<Self> {
        check::rank(BLOCK, "fc1.weight", &fc1_weight, 4, "(R, C, 1, 1)")?;
        let (reduced, channels) = (fc1_weight.dims()[0], fc1_weight.dims()[1]);
        check::positive(BLOCK, "channels", channels)?;
        check::positive(BLOCK, "reduced channels", reduced)?;
        let fc1 = PointwiseFc::new(
            BLOCK,
            "fc1.weight",
            fc1_weight,
            Some(fc1_bias),
            reduced,
            channels,
        )?;
        let fc2 = PointwiseFc::new(
            BLOCK,
            "fc2.weight",
            fc2_weight,
            Some(fc2_bias),
            channels,
            reduced,
        )?;
        check::same_dtype_device(BLOCK, "fc2.weight", fc1.weight(), fc2.weight())?;
        Ok(Self {
            fc1,
            fc2,
            channels,
            reduced,
        })
    }

    /// The number of channels `C`.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The hidden width `R`.
    pub fn reduced_channels(&self) -> usize {
        self.reduced
    }

    /// The gate $\sigma(\cdot)$ alone, `(B, C, 1, 1)`.
    pub fn gate(&self, x: &Tensor) -> Result<Tensor> {
        check::image_batch(BLOCK, "input", x, self.channels, self.fc1.weight())?;
        let (b, c) = (x.dims()[0], self.channels);
        let pooled = x.flatten_from(2)?.mean(2)?; // (B, C)
        let h = self.fc1.apply(&pooled)?.relu()?;
        let g = candle_nn::ops::sigmoid(&self.fc2.apply(&h)?)?;
        Ok(g.reshape((b, c, 1, 1))?)
    }

    /// Like [`Module::forward`], returning this crate's error.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let g = self.gate(x)?;
        Ok(x.broadcast_mul(&g)?)
    }
}

impl Module for SqueezeExcite {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.apply(x)?)
    }
}

/// A [`SqueezeExcite`] over `channels` channels whose `fc1` / `fc2` weights and biases come from
/// `vb` (timm names), created with PyTorch's conv init when `vb` is backed by a `VarMap`.
/// Errors (naming `SqueezeExcite`) when `channels` is 0 or `cfg` is invalid.
pub fn squeeze_excite(
    channels: usize,
    cfg: SqueezeExciteConfig,
    vb: VarBuilder,
) -> Result<SqueezeExcite> {
    cfg.validate()?;
    check::positive(BLOCK, "channels", channels)?;
    let r = cfg.reduced_channels(channels);
    let fc1 = PointwiseFc::load(BLOCK, r, channels, true, vb.pp("fc1"))?;
    let fc2 = PointwiseFc::load(BLOCK, channels, r, true, vb.pp("fc2"))?;
    Ok(SqueezeExcite {
        fc1,
        fc2,
        channels,
        reduced: r,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_divisible_matches_timm() {
        assert_eq!(make_divisible(4.0, 8), 8);
        assert_eq!(make_divisible(16.0, 8), 16);
        assert_eq!(make_divisible(20.0, 8), 24);
        assert_eq!(make_divisible(3.0, 1), 3);
        assert_eq!(make_divisible(37.5, 8), 40);
    }

    #[test]
    fn config_errors_name_the_block() {
        let bad = [
            SqueezeExciteConfig::default().with_rd_ratio(0.0),
            SqueezeExciteConfig::default().with_rd_ratio(1.5),
            SqueezeExciteConfig::default().with_rd_divisor(0),
            SqueezeExciteConfig::default().with_rd_channels(0),
        ];
        for cfg in bad {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(BLOCK), "{e}");
        }
    }
}
