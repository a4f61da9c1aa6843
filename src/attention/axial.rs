//! Axial attention over a 2-D feature map ([`AxialAttention`]): self-attention along each row,
//! then along each column (Ho et al. 2019).
//!
//! # Shapes
//! Input and output `(B, C, H, W)`, embedding size `E = C`. Parameters: two
//! [`MultiHeadAttention`] blocks under `row.` and `col.` (`row.in_proj_weight`,
//! `col.out_proj.weight`, …).
//!
//! # Tip
//! Full self-attention over an $H \times W$ map compares all $L = H W$ positions pairwise,
//! $O(L^2) = O(H^2 W^2)$. The row pass lets each position see its $W$ row neighbours and the
//! column pass its $H$ column neighbours: $O(L \cdot (H + W))$ — at $64 \times 64$ that is
//! 32× fewer scores — and after both passes information has travelled between any two
//! positions (through the position sharing the row of one and the column of the other). No
//! residual or norm is included: wrap it as a transformer sub-layer where you need one.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::attention::{axial_attention, MhaConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let vm = VarMap::new();
//! let att = axial_attention(16, MhaConfig::new(4), VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
//! let x = Tensor::randn(0f32, 1., (2, 16, 6, 5), &dev)?;
//! assert_eq!(att.forward(&x)?.dims(), &[2, 16, 6, 5]);
//! // Scores computed: L·(H + W) instead of L², here 30·11 = 330 vs 900.
//! let (h, w) = (6, 5);
//! assert!(h * w * (h + w) < (h * w) * (h * w));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Ho, Kalchbrenner, Weissenborn, Salimans, *Axial Attention in Multidimensional
//!   Transformers*, 2019, <https://arxiv.org/abs/1912.12180>
//! - Wang et al., *Axial-DeepLab*, 2020, <https://arxiv.org/abs/2003.07853>

use super::mha::{multi_head_attention, MhaConfig, MultiHeadAttention};
use crate::ops::AttentionMask;
use crate::{check, Error, Result};
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

const BLOCK: &str = "AxialAttention";

/// Row-then-column multi-head self-attention on `(B, C, H, W)`.
#[derive(Debug, Clone)]
pub struct AxialAttention {
    row: MultiHeadAttention,
    col: MultiHeadAttention,
}

impl AxialAttention {
    /// From the row and column attentions (same embedding size, self-attention). Errors
    /// (naming `AxialAttention`) otherwise.
    pub fn new(row: MultiHeadAttention, col: MultiHeadAttention) -> Result<Self> {
        for m in [&row, &col] {
            let c = m.config();
            if c.kdim.is_some() || c.vdim.is_some() {
                return Err(Error::config(
                    BLOCK,
                    "self-attention: kdim and vdim must be None",
                ));
            }
        }
        if row.embed_dim() != col.embed_dim() {
            return Err(Error::config(
                BLOCK,
                format!(
                    "row and col embed_dim differ: {} vs {}",
                    row.embed_dim(),
                    col.embed_dim()
                ),
            ));
        }
        Ok(Self { row, col })
    }

    /// The row attention.
    pub fn row(&self) -> &MultiHeadAttention {
        &self.row
    }

    /// The column attention.
    pub fn col(&self) -> &MultiHeadAttention {
        &self.col
    }

    /// Attention along rows then columns of `x` `(B, C, H, W)`, dropout when `train`. Errors
    /// (naming `AxialAttention`) on another rank or `C`, a zero dimension or a wrong dtype.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let e = self.row.embed_dim();
        check::rank(BLOCK, "input", x, 4, &format!("(B, {e}, H, W)"))?;
        check::non_empty(BLOCK, "input", x)?;
        let (b, c, h, w) = x.dims4()?;
        if c != e {
            return Err(Error::shape(
                BLOCK,
                "input",
                format!("(B, {e}, H, W)"),
                x.shape().clone(),
            ));
        }
        let none = AttentionMask::None;
        // Rows: (B, H, W, C) → (B·H, W, C).
        let r = x.permute((0, 2, 3, 1))?.reshape((b * h, w, c))?;
        let r = self.row.forward_t(&r, &r, &r, &none, train)?;
        // Columns: (B, W, H, C) → (B·W, H, C).
        let s = r
            .reshape((b, h, w, c))?
            .permute((0, 2, 1, 3))?
            .reshape((b * w, h, c))?;
        let s = self.col.forward_t(&s, &s, &s, &none, train)?;
        Ok(s.reshape((b, w, h, c))?
            .permute((0, 3, 2, 1))?
            .contiguous()?)
    }
}

impl Module for AxialAttention {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.forward_t(x, false)?)
    }
}

/// Builds an [`AxialAttention`] for `channels` features with two `cfg` attentions under
/// `row` and `col`.
pub fn axial_attention(channels: usize, cfg: MhaConfig, vb: VarBuilder) -> Result<AxialAttention> {
    let row = multi_head_attention(channels, cfg, vb.pp("row"))?;
    let col = multi_head_attention(channels, cfg, vb.pp("col"))?;
    AxialAttention::new(row, col)
}
