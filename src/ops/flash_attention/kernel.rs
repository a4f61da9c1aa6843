//! What the forward and backward kernels share: the borrowed problem, tile masking and
//! small tile helpers.

use super::mask::{Band, Bias, Dropout, Tile};
use super::Geom;
use crate::cpu::math::exp;

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// Everything a kernel needs, borrowed from the op.
#[derive(Clone, Copy)]
pub(super) struct Problem<'a> {
    pub(super) g: Geom,
    pub(super) band: Band,
    pub(super) lens: Option<&'a [usize]>,
    pub(super) bias: Option<&'a Bias>,
    pub(super) dropout: Dropout,
    pub(super) scale: f32,
}

impl Problem<'_> {
    #[inline(always)]
    pub(super) fn len(&self, b: usize) -> usize {
        self.lens.map_or(self.g.lk, |l| l[b])
    }

    /// Whether the mask lets query row `i` of `(b, h)` attend at least one key. A row that
    /// attends none is *fully masked* (output 0); this is decided from the mask alone, never
    /// from the scores, so that NaN or infinite scores of a live row propagate to its output.
    #[inline(always)]
    pub(super) fn row_live(&self, b: usize, h: usize, i: usize) -> bool {
        // Bool and additive masks come without a band or lengths (one mask mode at a time).
        if let Some(bias) = self.bias {
            return bias.live(b, h, i);
        }
        let (len, i) = (self.len(b) as i64, i as i64);
        let (lo, hi) = self.band.range(i, len);
        lo <= hi || self.band.prefix(i, len) >= 0
    }

    /// Masks the score tile `s` (`rows x cols`, row stride `ld`) of query rows `i0..` and keys
    /// `j0..` of `(b, h)`: adds the bias, sets pairs outside the band (and the global prefix) to
    /// -inf.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn mask_tile(
        &self,
        s: &mut [f32],
        ld: usize,
        tile: Tile,
        b: usize,
        h: usize,
        i0: usize,
        rows: usize,
        j0: usize,
        cols: usize,
    ) {
        let len = self.len(b) as i64;
        for r in 0..rows {
            let row = &mut s[r * ld..r * ld + cols];
            if let Some(bias) = self.bias {
                let br = &bias.row(b, h, i0 + r, self.g.lk)[j0..j0 + cols];
                for (x, m) in row.iter_mut().zip(br) {
                    *x += m;
                }
            }
            if tile == Tile::Partial {
                let i = (i0 + r) as i64;
                let (lo, hi) = self.band.range(i, len);
                let lo = (lo - j0 as i64).clamp(0, cols as i64) as usize;
                let hi = (hi + 1 - j0 as i64).clamp(lo as i64, cols as i64) as usize;
                // Columns before `pe` are global keys this row sees (pe = 0 without globals).
                let pe = (self.band.prefix(i, len) + 1 - j0 as i64).clamp(0, cols as i64) as usize;
                row[pe..lo.max(pe)].fill(f32::NEG_INFINITY);
                row[hi.max(pe)..].fill(f32::NEG_INFINITY);
            }
        }
    }
}

/// `x`'s heads (`head` values each) cut into tiles of `tile` values (the last of a head may be
/// shorter), head by head: the disjoint parts one task per (head, tile) writes.
pub(super) fn head_tiles(x: &mut [f32], head: usize, tile: usize) -> Vec<&mut [f32]> {
    x.chunks_mut(head.max(1))
        .flat_map(|h| h.chunks_mut(tile.max(1)))
        .collect()
}

/// `a[i] = exp(a[i] - shift)` (0 for `-inf` entries or `shift = +inf`).
#[inline(always)]
pub(super) fn exp_shifted(a: &mut [f32], shift: f32) {
    for x in a.iter_mut() {
        *x = exp(*x - shift);
    }
}
