//! Resampling a ViT's learned absolute position embeddings to a new patch grid (timm's
//! `resample_abs_pos_embed`): the prefix (class, distillation) tokens are kept, the grid part is
//! resized bicubically.
//!
//! # Shapes
//! - `pos_embed` `(B, P + H·W, C)` (timm stores `(1, P + H·W, C)`): `P` prefix tokens, then an
//!   `H × W` grid in row-major order. Output `(B, P + H_new·W_new, C)`.
//!
//! # Tip
//! A ViT pre-trained at 224 px with 16 px patches has a $14 \times 14$ grid of position
//! embeddings; fine-tuning at 384 px needs $24 \times 24$. Interpolating the learned grid keeps
//! what it encodes (nearby patches have similar embeddings). Fine-tuning at a higher resolution
//! than pre-training often gains accuracy (Touvron et al. 2019; the ViT paper fine-tunes at
//! 384 px for this reason), for $(24/14)^2 \approx 2.9$ times the tokens.
//!
//! This is timm's default: bicubic, `align_corners = False`, with `antialias = True`, which in
//! PyTorch is a different kernel from plain bicubic (Keys' $a = -0.5$ instead of $-0.75$, taps
//! renormalised at the borders instead of clamped) and, when shrinking by a factor $s$, widens
//! the filter by $s$ so that every old position contributes. Both variants are computed
//! exactly: each axis becomes an interpolation matrix $R \in \mathbb{R}^{new \times old}$ built
//! on the CPU, and the grid $G$ becomes $R_h G R_w^\top$ (two matrix products per channel),
//! which runs on any device and passes gradients back to `pos_embed`. Half-precision inputs are
//! resampled in f32 and rounded back, as timm does.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_tricks::transfer::{resample_pos_embed, ResamplePosEmbedConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! // 224 px / 16 px patches: class token + 14×14 grid, embedding size 32.
//! let pos = Tensor::randn(0f32, 0.02, (1, 1 + 14 * 14, 32), &dev)?;
//! let cfg = ResamplePosEmbedConfig::default(); // timm: 1 prefix token, antialias
//! let new = resample_pos_embed(&pos, (24, 24), None, cfg)?; // 384 px
//! assert_eq!(new.dims(), &[1, 1 + 24 * 24, 32]);
//! // The class token is kept as it is.
//! let diff = (new.narrow(1, 0, 1)? - pos.narrow(1, 0, 1)?)?.abs()?.max_all()?;
//! assert_eq!(diff.to_scalar::<f32>()?, 0.0);
//! // A constant grid stays constant: every row of an interpolation matrix sums to 1.
//! let flat = Tensor::ones((1, 1 + 14 * 14, 32), DType::F32, &dev)?;
//! let out = resample_pos_embed(&flat, (10, 20), None, cfg)?;
//! let err = (out - 1.0)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(err < 1e-5);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Dosovitskiy et al., *An Image is Worth 16x16 Words: Transformers for Image Recognition at
//!   Scale*, 2020, <https://arxiv.org/abs/2010.11929> (section 3.2, fine-tuning at higher
//!   resolution)
//! - Touvron et al., *Fixing the train-test resolution discrepancy*, 2019,
//!   <https://arxiv.org/abs/1906.06423>
//! - Keys, *Cubic convolution interpolation for digital image processing*, 1981

use crate::{check, Error, Result};
use candle_core::{DType, Device, Tensor};

const BLOCK: &str = "resample_pos_embed";

/// Options of [`resample_pos_embed`]; `Default` is timm's `resample_abs_pos_embed` defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResamplePosEmbedConfig {
    /// Leading tokens that are not on the grid (class, distillation, registers), kept as they
    /// are. Default 1.
    pub num_prefix_tokens: usize,
    /// PyTorch's `antialias` for bicubic `interpolate` (Keys' $a = -0.5$ with renormalised
    /// taps, widened when shrinking); `false` is plain bicubic ($a = -0.75$, clamped border).
    /// Default `true` (timm).
    pub antialias: bool,
}

impl Default for ResamplePosEmbedConfig {
    fn default() -> Self {
        Self {
            num_prefix_tokens: 1,
            antialias: true,
        }
    }
}

impl ResamplePosEmbedConfig {
    /// Sets `num_prefix_tokens`.
    pub fn with_num_prefix_tokens(mut self, num_prefix_tokens: usize) -> Self {
        self.num_prefix_tokens = num_prefix_tokens;
        self
    }

    /// Sets `antialias`.
    pub fn with_antialias(mut self, antialias: bool) -> Self {
        self.antialias = antialias;
        self
    }
}

/// Resamples the grid part of `pos_embed` `(B, P + H·W, C)` from `old_size = (H, W)` to
/// `new_size = (H_new, W_new)`, keeping the `P = cfg.num_prefix_tokens` prefix tokens; see the
/// [module docs](self). `old_size = None` assumes a square grid, as timm. The same size returns
/// `pos_embed` unchanged.
///
/// Errors (naming `resample_pos_embed`) when `pos_embed` is not a non-empty rank-3 float tensor,
/// a size is zero, the token count is not `P + H·W` (or, without `old_size`, `P` plus a
/// square), or the output would be too large.
pub fn resample_pos_embed(
    pos_embed: &Tensor,
    new_size: (usize, usize),
    old_size: Option<(usize, usize)>,
    cfg: ResamplePosEmbedConfig,
) -> Result<Tensor> {
    check::rank(BLOCK, "pos_embed", pos_embed, 3, "(B, P + H·W, C)")?;
    check::non_empty(BLOCK, "pos_embed", pos_embed)?;
    let dt = pos_embed.dtype();
    if !dt.is_float() {
        let want = "a float dtype";
        return Err(Error::unsupported_dtype(BLOCK, "pos_embed", want, dt));
    }
    check::positive(BLOCK, "new_size.0", new_size.0)?;
    check::positive(BLOCK, "new_size.1", new_size.1)?;
    let (b, n, c) = pos_embed.dims3()?;
    let p = cfg.num_prefix_tokens;
    let grid_tokens = n.checked_sub(p).ok_or_else(|| {
        let msg = format!("num_prefix_tokens ({p}) exceeds the {n} tokens of pos_embed");
        Error::config(BLOCK, msg)
    })?;
    let (h, w) = match old_size {
        Some(s) => s,
        None => {
            let side = square_side(grid_tokens).ok_or_else(|| {
                let msg = format!(
                    "cannot infer old_size: {grid_tokens} grid tokens (after {p} prefix \
                     tokens) are not a square; pass old_size"
                );
                Error::config(BLOCK, msg)
            })?;
            (side, side)
        }
    };
    check::positive(BLOCK, "old_size.0", h)?;
    check::positive(BLOCK, "old_size.1", w)?;
    if h.checked_mul(w) != Some(grid_tokens) {
        let want = format!("(B, {p} + {h}·{w}, C) for old_size ({h}, {w})");
        return Err(Error::shape(
            BLOCK,
            "pos_embed",
            want,
            pos_embed.shape().clone(),
        ));
    }
    let (nh, nw) = new_size;
    let new_tokens = nh
        .checked_mul(nw)
        .and_then(|t| t.checked_add(p))
        .unwrap_or(usize::MAX);
    check::allocatable(BLOCK, "output", &[b, new_tokens, c], pos_embed.dtype())?;
    check::allocatable(
        BLOCK,
        "interpolation matrix",
        &[nh.max(nw), h.max(w)],
        DType::F64,
    )?;
    if (nh, nw) == (h, w) {
        return Ok(pos_embed.clone());
    }
    // timm interpolates in f32; f64 stays f64.
    let dtype = match pos_embed.dtype() {
        DType::F64 => DType::F64,
        _ => DType::F32,
    };
    let dev = pos_embed.device();
    let ry = interpolation_matrix(h, nh, cfg.antialias, dtype, dev)?;
    let rx = interpolation_matrix(w, nw, cfg.antialias, dtype, dev)?;
    let grid = pos_embed
        .narrow(1, p, grid_tokens)?
        .to_dtype(dtype)?
        .reshape((b, h, w * c))?;
    let rows = ry.broadcast_matmul(&grid)?.reshape((b * nh, w, c))?;
    let resampled = rx
        .broadcast_matmul(&rows)?
        .reshape((b, nh * nw, c))?
        .to_dtype(pos_embed.dtype())?;
    if p == 0 {
        return Ok(resampled);
    }
    Ok(Tensor::cat(&[&pos_embed.narrow(1, 0, p)?, &resampled], 1)?)
}

/// `s` with `s·s = n`, if any.
fn square_side(n: usize) -> Option<usize> {
    let s = (n as f64).sqrt().round() as usize;
    (s.checked_mul(s) == Some(n)).then_some(s)
}

/// Keys' cubic convolution kernel with parameter `a`.
fn cubic(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// The `(new, old)` matrix of PyTorch's 1-D bicubic `interpolate` with `align_corners = False`
/// (`size` given, so the scale is `old / new`), row-major.
fn interpolation_weights(old: usize, new: usize, antialias: bool) -> Vec<f64> {
    let scale = old as f64 / new as f64;
    let mut m = vec![0.0; new * old];
    for (i, row) in m.chunks_exact_mut(old).enumerate() {
        if antialias {
            // PIL-style: the kernel stretched by the scale when shrinking, the taps that fall
            // inside the input renormalised to sum to 1.
            let stretch = scale.max(1.0);
            let support = 2.0 * stretch;
            let center = scale * (i as f64 + 0.5);
            let lo = (center - support + 0.5).floor().max(0.0) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(old);
            let taps: Vec<f64> = (lo..hi)
                .map(|j| cubic((j as f64 - center + 0.5) / stretch, -0.5))
                .collect();
            let total: f64 = taps.iter().sum();
            let norm = if total != 0.0 { total } else { 1.0 };
            for (j, t) in (lo..hi).zip(taps) {
                row[j] = t / norm;
            }
        } else {
            // Four taps around the source position, indices clamped to the border.
            let src = scale * (i as f64 + 0.5) - 0.5;
            let base = src.floor();
            let t = src - base;
            let coeffs = [
                cubic(t + 1.0, -0.75),
                cubic(t, -0.75),
                cubic(1.0 - t, -0.75),
                cubic(2.0 - t, -0.75),
            ];
            for (k, wk) in coeffs.into_iter().enumerate() {
                let j = (base as i64 - 1 + k as i64).clamp(0, old as i64 - 1) as usize;
                row[j] += wk;
            }
        }
    }
    m
}

fn interpolation_matrix(
    old: usize,
    new: usize,
    antialias: bool,
    dtype: DType,
    dev: &Device,
) -> Result<Tensor> {
    let m = interpolation_weights(old, new, antialias);
    Ok(Tensor::from_vec(m, (new, old), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(dev)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity_and_rows_sum_to_one() {
        for aa in [false, true] {
            let m = interpolation_weights(5, 5, aa);
            for i in 0..5 {
                for j in 0..5 {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((m[i * 5 + j] - want).abs() < 1e-12);
                }
            }
            for (old, new) in [(7, 3), (3, 8), (14, 24), (24, 14)] {
                let m = interpolation_weights(old, new, aa);
                for row in m.chunks_exact(old) {
                    assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn square_sides() {
        assert_eq!(square_side(196), Some(14));
        assert_eq!(square_side(0), Some(0));
        assert_eq!(square_side(195), None);
    }
}
