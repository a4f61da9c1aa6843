//! Plain-tensor compositions of the pools (the path on devices without our kernel, and the
//! tests' second opinion). Every pool here is separable: one axis at a time, each window a
//! set of strided slices of the padded input, reduced by `argmax` + `gather` (max) or a sum.
//! They accept f64 too (for gradient checks). A max over a window holding a NaN follows
//! candle's `argmax`, not PyTorch's NaN rule, and ties go to the first maximum per axis.

use super::geometry::{adaptive_taps, Window};
use super::{validate_input, Pool2dConfig, Pool3dConfig, PoolConfig, AAVG3, AMAX3};
use super::{AVG2, AVG3, MAX2, MAX3};
use crate::ops::adaptive_pool::PoolMode;
use crate::{check, Error, Result};
use candle_core::{Tensor, D};

/// `k` strided slices of `x` padded on `axis` (the taps of every window), reduced to the
/// pooled axis of length `out`.
fn window_axis(
    x: &Tensor,
    axis: usize,
    win: Window,
    out: usize,
    (mode, op): (PoolMode, &'static str),
) -> Result<Tensor> {
    let Window {
        kernel: k,
        stride: s,
        padding: p,
        dilation: d,
    } = win;
    if k == 1 && s == 1 && p == 0 {
        return Ok(x.clone());
    }
    let n = x.dim(axis)?;
    // Tap j of output o reads padded index o·s + j·d: slice j is [j·d, j·d + out·s).
    let needed = (k - 1)
        .checked_mul(d)
        .and_then(|e| e.checked_add(out.checked_mul(s)?));
    let too_large = || Error::config(op, "the padded input of the composition overflows usize");
    let needed = needed.ok_or_else(too_large)?;
    let right = needed.saturating_sub(n + p);
    let mut padded = x.dims().to_vec();
    padded[axis] = n.checked_add(p).ok_or_else(too_large)?.max(needed);
    check::allocatable(op, "padded input", &padded, x.dtype())?;
    let fill = match mode {
        PoolMode::Max => f64::NEG_INFINITY,
        PoolMode::Avg => 0.0,
    };
    let pad = |len: usize| -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        dims[axis] = len;
        Ok(Tensor::full(fill, dims, x.device())?.to_dtype(x.dtype())?)
    };
    let xp = Tensor::cat(&[&pad(p)?, x, &pad(right)?], axis)?;
    let mut taps = Vec::with_capacity(k);
    for j in 0..k {
        let t = xp.narrow(axis, j * d, out * s)?;
        let t = if s == 1 {
            t
        } else {
            let mut dims = t.dims().to_vec();
            dims.splice(axis..=axis, [out, s]);
            t.reshape(dims)?.narrow(axis + 1, 0, 1)?.squeeze(axis + 1)?
        };
        taps.push(t);
    }
    reduce_taps(&taps, mode)
}

/// The max (first arg-max, routed by `gather`) or the sum of equally shaped `taps`.
fn reduce_taps(taps: &[Tensor], mode: PoolMode) -> Result<Tensor> {
    match mode {
        PoolMode::Max => {
            let stacked = Tensor::stack(taps, taps[0].rank())?.contiguous()?;
            let first = stacked.argmax_keepdim(D::Minus1)?;
            Ok(stacked.gather(&first, D::Minus1)?.squeeze(D::Minus1)?)
        }
        PoolMode::Avg => {
            let mut sum = taps[0].clone();
            for t in &taps[1..] {
                sum = (sum + t)?;
            }
            Ok(sum)
        }
    }
}

/// The windowed pool of `x` (`(B, C, …)` with `N` spatial axes), checked by the caller.
pub(super) fn windowed<const N: usize>(
    x: &Tensor,
    cfg: &PoolConfig<N>,
    mode: PoolMode,
    op: &'static str,
) -> Result<Tensor> {
    let mut spatial = [0; N];
    spatial.copy_from_slice(&x.dims()[2..]);
    let out = cfg.output_size(op, spatial)?;
    let mut y = x.clone();
    for (i, &o) in out.iter().enumerate() {
        y = window_axis(&y, 2 + i, cfg.window(i), o, (mode, op))?;
    }
    if mode == PoolMode::Max {
        return Ok(y);
    }
    // The divisor of every output: a product of one factor per axis (or the override).
    let factors: Vec<Vec<usize>> = (0..N)
        .map(|i| {
            let taps = cfg.window(i).taps(spatial[i], out[i]);
            let per = |t: &super::Taps| {
                if cfg.count_include_pad {
                    t.span
                } else {
                    t.count
                }
            };
            taps.iter().map(per).collect()
        })
        .collect();
    let mut div = vec![1f64];
    for f in &factors {
        div = div
            .iter()
            .flat_map(|&a| f.iter().map(move |&b| a * b as f64))
            .collect();
    }
    let div: Vec<f64> = match cfg.divisor_override {
        Some(d) => vec![d as f64; div.len()],
        // An empty window sums to 0; divide it by 1.
        None => div.into_iter().map(|v| v.max(1.0)).collect(),
    };
    let div = Tensor::from_vec(div, out.to_vec(), x.device())?.to_dtype(x.dtype())?;
    Ok(y.broadcast_div(&div)?)
}

/// The adaptive 3-D pool of `(B, C, D, H, W)` to `out`: per axis, one `narrow` + max / mean
/// per bin, concatenated.
pub(super) fn adaptive3d(x: &Tensor, out: [usize; 3], mode: PoolMode) -> Result<Tensor> {
    let mut y = x.clone();
    for (i, &m) in out.iter().enumerate() {
        let axis = 2 + i;
        let bins = adaptive_taps(y.dim(axis)?, m);
        let mut parts = Vec::with_capacity(m);
        for t in bins {
            let bin = y.narrow(axis, t.start, t.count)?;
            parts.push(match mode {
                PoolMode::Max => bin.max_keepdim(axis)?,
                PoolMode::Avg => bin.mean_keepdim(axis)?,
            });
        }
        y = Tensor::cat(&parts, axis)?;
    }
    Ok(y)
}

fn checked<const N: usize>(
    x: &Tensor,
    cfg: &PoolConfig<N>,
    mode: PoolMode,
    op: &'static str,
) -> Result<Tensor> {
    cfg.validate(op, mode)?;
    validate_input::<N>(op, x, |s| cfg.output_size(op, s))?;
    windowed(x, cfg, mode, op)
}

/// [`super::max_pool2d`] from candle tensor ops (strided slices, `argmax`, `gather`); same
/// checks, f64 accepted too. Slow, for tests and devices without our kernel.
pub fn max_pool2d_reference(x: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    checked(x, cfg, PoolMode::Max, MAX2)
}

/// [`super::avg_pool2d`] from candle tensor ops (strided slices, sums, a divisor tensor); see
/// [`max_pool2d_reference`].
pub fn avg_pool2d_reference(x: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    checked(x, cfg, PoolMode::Avg, AVG2)
}

/// [`super::max_pool3d`] from candle tensor ops; see [`max_pool2d_reference`].
pub fn max_pool3d_reference(x: &Tensor, cfg: &Pool3dConfig) -> Result<Tensor> {
    checked(x, cfg, PoolMode::Max, MAX3)
}

/// [`super::avg_pool3d`] from candle tensor ops; see [`max_pool2d_reference`].
pub fn avg_pool3d_reference(x: &Tensor, cfg: &Pool3dConfig) -> Result<Tensor> {
    checked(x, cfg, PoolMode::Avg, AVG3)
}

/// [`super::adaptive_avg_pool3d`] / [`super::adaptive_max_pool3d`] from candle's `narrow`,
/// `mean` / `max` and `cat`, one axis at a time; same checks, f64 accepted too (a max bin's
/// gradient goes to every element equal to its maximum). Slow, for tests.
pub fn adaptive_pool3d_reference(
    x: &Tensor,
    output_size: [usize; 3],
    mode: PoolMode,
) -> Result<Tensor> {
    let op = match mode {
        PoolMode::Max => AMAX3,
        PoolMode::Avg => AAVG3,
    };
    let (_, out) = validate_input::<3>(op, x, |_| super::adaptive_out(op, output_size))?;
    adaptive3d(x, out, mode)
}
