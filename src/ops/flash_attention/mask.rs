//! Masks as bands (structural) and biases (bool/additive), and attention dropout.

use super::{mask_dims, AttentionMask, Geom, OP};
use crate::{Error, Result};
use candle_core::DType;

// ---------------------------------------------------------------------------------------------
// Masks as bands and biases
// ---------------------------------------------------------------------------------------------

/// The structural masks as a band: query $i$ attends keys $j$ with
/// $i - before \le j \le i + after$ (a missing side is unbounded) and $j <$ the batch's length.
/// With `global` $= g > 0$ (sliding window only) the allowed keys of row $i$ are the union of
/// the prefix $[0, p(i)]$ (the global keys, `Band::prefix`) and `Band::range`, which for a
/// global row $i < g$ widens to $[0, i]$ (`causal`) or $[0, len)$.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Band {
    pub(super) before: Option<i64>,
    pub(super) after: Option<i64>,
    pub(super) global: i64,
    pub(super) causal: bool,
}

impl Band {
    /// Inclusive key range `(lo, hi)` of query `i` among `len` keys (empty when `hi < lo`).
    /// Without global tokens `lo` and `hi` are non-decreasing in `i`.
    #[inline(always)]
    pub(super) fn range(&self, i: i64, len: i64) -> (i64, i64) {
        if i < self.global {
            let hi = if self.causal { i.min(len - 1) } else { len - 1 };
            return (0, hi);
        }
        let lo = self.before.map_or(0, |w| (i - w).max(0));
        let hi = self.after.map_or(len - 1, |a| (i + a).min(len - 1));
        (lo, hi)
    }

    /// Inclusive end of the global-key prefix `[0, p]` query `i` attends besides its range (-1
    /// when none). Constant for the ordinary rows `i >= global`.
    #[inline(always)]
    pub(super) fn prefix(&self, i: i64, len: i64) -> i64 {
        if self.global == 0 {
            return -1;
        }
        let p = (self.global - 1).min(len - 1);
        if self.causal {
            p.min(i)
        } else {
            p
        }
    }
}

/// How a (query tile, key tile) pair meets the band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tile {
    /// No pair attends: not computed at all.
    Skip,
    /// Every pair attends.
    Full,
    /// Some do: mask per row.
    Partial,
}

/// Classifies query rows `i0..i1` against keys `j0..j1` (both ranges non-empty).
#[inline(always)]
pub(super) fn classify(band: &Band, len: i64, i0: usize, i1: usize, j0: usize, j1: usize) -> Tile {
    let (i0, i1, j0, j1) = (i0 as i64, i1 as i64 - 1, j0 as i64, j1 as i64 - 1);
    if band.global > 0 {
        return classify_global(band, len, i0, i1, j0, j1);
    }
    // lo and hi are non-decreasing in i.
    let (lo_first, hi_first) = band.range(i0, len);
    let (lo_last, hi_last) = band.range(i1, len);
    if j0 > hi_last || j1 < lo_first {
        Tile::Skip
    } else if j0 >= lo_last && j1 <= hi_first {
        Tile::Full
    } else {
        Tile::Partial
    }
}

/// [`classify`] with global tokens (inclusive bounds): the global rows `i < g` attend
/// `[0, hi(i)]`, `hi` non-decreasing; the ordinary rows attend a constant prefix `[0, p]` and
/// their band `[lo(i), hi(i)]`, both ends non-decreasing. A tile is skipped only if both
/// groups of rows miss it, full only if both cover it.
#[inline(always)]
fn classify_global(band: &Band, len: i64, i0: i64, i1: i64, j0: i64, j1: i64) -> Tile {
    let g = band.global;
    let (mut skip, mut full) = (true, true);
    if i0 < g {
        let (_, hi_first) = band.range(i0, len);
        let (_, hi_last) = band.range(i1.min(g - 1), len);
        skip &= j0 > hi_last;
        full &= j1 <= hi_first;
    }
    if i1 >= g {
        let first = i0.max(g);
        let p = band.prefix(first, len);
        let (lo_first, hi_first) = band.range(first, len);
        let (lo_last, hi_last) = band.range(i1, len);
        skip &= j0 > p && (j0 > hi_last || j1 < lo_first);
        // The keys past the prefix must lie in every row's band.
        let rest = j0.max(p + 1);
        full &= rest > j1 || (rest >= lo_last && j1 <= hi_first);
    }
    if skip {
        Tile::Skip
    } else if full {
        Tile::Full
    } else {
        Tile::Partial
    }
}

/// An additive mask as f32, with broadcast strides (0 on a size-1 axis) for `(b, h, i)`; rows
/// of `Lk` values are contiguous.
#[derive(Debug)]
pub(super) struct Bias {
    pub(super) data: Vec<f32>,
    pub(super) shape: Vec<usize>,
    pub(super) strides: [usize; 3],
    /// Per stored row of `Lk` values: whether any entry is not `-inf` (the row attends a key).
    pub(super) live: Vec<bool>,
}

impl Bias {
    #[inline(always)]
    pub(super) fn offset(&self, b: usize, h: usize, i: usize) -> usize {
        b * self.strides[0] + h * self.strides[1] + i * self.strides[2]
    }

    #[inline(always)]
    pub(super) fn row(&self, b: usize, h: usize, i: usize, lk: usize) -> &[f32] {
        let at = self.offset(b, h, i);
        &self.data[at..at + lk]
    }

    /// Whether query row `(b, h, i)` attends at least one key (its mask row is not all `-inf`;
    /// NaN or `+inf` entries count as attending, so they reach the output).
    #[inline(always)]
    pub(super) fn live(&self, b: usize, h: usize, i: usize) -> bool {
        self.live[self.offset(b, h, i) / self.shape[3]]
    }
}

type ResolvedMask = (Band, Option<Vec<usize>>, Option<Bias>);

pub(super) fn resolve_mask(g: &Geom, mask: &AttentionMask) -> Result<ResolvedMask> {
    let mut band = Band::default();
    let mut lens = None;
    let mut bias = None;
    match mask {
        AttentionMask::None => {}
        // Offsets and windows beyond the lengths change nothing; clamping keeps them in i64.
        AttentionMask::Causal { kv_offset } => band.after = Some((*kv_offset).min(g.lk) as i64),
        AttentionMask::SlidingWindow {
            window,
            causal,
            global,
        } => {
            let w = (*window).min(g.lq + g.lk) as i64;
            band.before = Some(w - 1);
            band.after = Some(if *causal { 0 } else { w - 1 });
            band.global = (*global).min(g.lq + g.lk) as i64;
            band.causal = *causal;
        }
        AttentionMask::KeyPadding(l) => lens = Some(l.clone()),
        AttentionMask::Bool(m) | AttentionMask::Additive(m) => {
            let dims = mask_dims(OP, g, m)?;
            let data: Vec<f32> = if matches!(mask, AttentionMask::Bool(_)) {
                m.flatten_all()?
                    .to_vec1::<u8>()?
                    .into_iter()
                    .map(|x| if x != 0 { 0.0 } else { f32::NEG_INFINITY })
                    .collect()
            } else {
                m.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?
            };
            let st = |a: usize, inner: usize| if dims[a] == 1 { 0 } else { inner };
            let strides = [
                st(0, dims[1] * dims[2] * dims[3]),
                st(1, dims[2] * dims[3]),
                st(2, dims[3]),
            ];
            let live = data
                .chunks_exact(dims[3])
                .map(|r| r.iter().any(|&x| x != f32::NEG_INFINITY))
                .collect();
            bias = Some(Bias {
                data,
                shape: dims.to_vec(),
                strides,
                live,
            });
        }
    }
    Ok((band, lens, bias))
}

/// Attention dropout: a probability is kept when a hash of `(seed, row, column)` is at least
/// `threshold` and then scaled by `inv_keep`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dropout {
    /// `p * 2^32`; 0 = no dropout.
    pub(super) threshold: u32,
    pub(super) inv_keep: f32,
    pub(super) seed: u64,
}

impl Dropout {
    pub(super) fn new(op: &'static str, p: f64, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::config(
                op,
                format!("dropout_p must be in [0, 1), got {p}"),
            ));
        }
        Ok(Self {
            threshold: (p * 4_294_967_296.0) as u32,
            inv_keep: (1.0 / (1.0 - p)) as f32,
            seed,
        })
    }

    pub(super) fn active(&self) -> bool {
        self.threshold > 0
    }

    /// The hash key of global score row `row` (`(b * H + h) * Lq + i`).
    #[inline(always)]
    pub(super) fn row_key(&self, row: usize) -> u32 {
        let x = splitmix64(self.seed ^ splitmix64(row as u64));
        (x ^ (x >> 32)) as u32
    }

    /// Multiplies the scores `a` of columns `j0..` of row `row` by their dropout factors.
    #[inline(always)]
    pub(super) fn apply_at(&self, a: &mut [f32], row: usize, j0: usize) {
        let key = self.row_key(row);
        let (thr, inv) = (self.threshold, self.inv_keep);
        for (c, x) in a.iter_mut().enumerate() {
            let u = lowbias32(key.wrapping_add(((j0 + c) as u32).wrapping_mul(0x9E37_79B9)));
            *x *= if u >= thr { inv } else { 0.0 };
        }
    }

    pub(super) fn apply(&self, a: &mut [f32], row: usize) {
        self.apply_at(a, row, 0)
    }
}

/// SplitMix64's output function (Steele, Lea, Flood 2014).
#[inline(always)]
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 32-bit integer hash with low bias (C. Wellons' `lowbias32`), 32-bit multiplies only, so a
/// row of them vectorises.
#[inline(always)]
fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7FEB_352D);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846C_A68B);
    x ^ (x >> 16)
}
