//! Non-overlapping ("patch") convolutions: kernel = stride on every axis that has more than one
//! output, no padding, no dilation, and the input tiled exactly by the patches (a ViT patch
//! embedding, and transposed, the k = s upsampling of decoders). Every input value then lies
//! in exactly one patch, so
//! - the column matrix is a reshuffle of the input read in place (no padded, phased copy);
//! - the input gradient's col2im writes each value once, straight into the result: no zeroed
//!   scatter target, no accumulation, no crop, and no slab ordering between tasks.

use super::dense::parallelism;
use super::*;
use crate::cpu::gemm::{matmul, Strided};
use crate::cpu::{Isa, Kernel, Level, SharedMut};

impl Geom {
    /// Whether the convolution is a non-overlapping patch one (see the module docs). A
    /// pointwise convolution is one too, but the dense path already multiplies its input in
    /// place.
    pub(super) fn patches(&self) -> bool {
        !self.pointwise()
            && self.dilation == 1
            && (0..3).all(|a| {
                self.pad[a] == (0, 0)
                    && self.o[a].checked_mul(self.k[a]) == Some(self.n[a])
                    && (self.k[a] == self.stride || self.o[a] == 1)
            })
    }
}

/// The runs of output positions `p0 + i .. p0 + i + len` that lie on one output row, as
/// `(i, len, at)`: `at` is the input offset of the run's first patch at tap `(0, 0, 0)`. An
/// iterator rather than a callback, so that the loops inline into the SIMD-level copies.
struct PatchRuns<'a> {
    g: &'a Geom,
    p0: usize,
    i: usize,
    n: usize,
}

impl Iterator for PatchRuns<'_> {
    type Item = (usize, usize, usize);

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let (g, i) = (self.g, self.i);
        if i >= self.n {
            return None;
        }
        let ([_, oh, ow], [kd, kh, kw], [_, h, w]) = (g.o, g.k, g.n);
        let p = self.p0 + i;
        let (oz, oy, ox) = (p / (oh * ow), p / ow % oh, p % ow);
        let len = (ow - ox).min(self.n - i);
        self.i += len;
        Some((i, len, (oz * kd * h + oy * kh) * w + ox * kw))
    }
}

#[inline(always)]
fn runs(g: &Geom, p0: usize, n: usize) -> PatchRuns<'_> {
    PatchRuns { g, p0, i: 0, n }
}

/// `a[j] = pairs[2j]`, `b[j] = pairs[2j + 1]`: in blocks of 8, which vectorise to shuffles.
#[inline(always)]
fn split_pairs(pairs: &[f32], a: &mut [f32], b: &mut [f32]) {
    let blocks = a.chunks_exact_mut(8).zip(b.chunks_exact_mut(8));
    for ((a, b), p) in blocks.zip(pairs.chunks_exact(16)) {
        for j in 0..8 {
            a[j] = p[2 * j];
            b[j] = p[2 * j + 1];
        }
    }
    let done = a.len() / 8 * 8;
    for j in done..a.len().min(b.len()) {
        a[j] = pairs[2 * j];
        b[j] = pairs[2 * j + 1];
    }
}

/// Offset of tap row `(kz, ky)` of a patch from its `(0, 0, 0)` tap, in one input volume.
#[inline(always)]
fn tap_row(g: &Geom, kz: usize, ky: usize) -> usize {
    (kz * g.n[1] + ky) * g.n[2]
}

/// Fills `col` (`kg` rows of `n`) for output positions `p0..p0 + n` of one group: `col[r][j]`
/// is the input value tap `r = (ci, kz, ky, kx)` of patch `p0 + j` covers. `xg` holds the
/// group's `cig` input volumes.
pub(super) fn gather(g: &Geom, xg: &[f32], p0: usize, n: usize, col: &mut [f32]) {
    Level::detect().run(Gather { g, xg, p0, n, col })
}

/// [`gather`]'s arguments: the de-interleaving loops vectorise to the level's width.
struct Gather<'a> {
    g: &'a Geom,
    xg: &'a [f32],
    p0: usize,
    n: usize,
    col: &'a mut [f32],
}

impl Kernel for Gather<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        // A literal kernel width per arm, so that each inlined copy has a constant stride.
        match self.g.k[2] {
            2 => gather_body(self, 2),
            3 => gather_body(self, 3),
            4 => gather_body(self, 4),
            kw => gather_body(self, kw),
        }
    }
}

#[inline(always)]
fn gather_body(a: Gather<'_>, kw: usize) {
    let Gather { g, xg, p0, n, col } = a;
    let vol: usize = g.n.iter().product();
    let [kd, kh, _] = g.k;
    for (ci, xc) in xg.chunks_exact(vol).enumerate() {
        for kz in 0..kd {
            for ky in 0..kh {
                let r0 = ((ci * kd + kz) * kh + ky) * kw;
                let rows = &mut col[r0 * n..(r0 + kw) * n];
                let tap = tap_row(g, kz, ky);
                for (i, len, at) in runs(g, p0, n) {
                    let src = &xc[at + tap..at + tap + len * kw];
                    if kw == 2 {
                        // Both taps in one pass (one tap at a time is a strided, scalar read).
                        let (r0, r1) = rows.split_at_mut(n);
                        split_pairs(src, &mut r0[i..i + len], &mut r1[i..i + len]);
                        continue;
                    }
                    for (kx, row) in rows.chunks_exact_mut(n).enumerate() {
                        for (d, patch) in row[i..i + len].iter_mut().zip(src.chunks_exact(kw)) {
                            *d = patch[kx];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`gather`]: writes `col[r][j]` to the input-gradient value tap `r` of patch
/// `p0 + j` covers (each exactly once over all tiles, so a plain store).
///
/// # Safety
/// `gxg` points to one group's `cig` unpadded input-gradient volumes, and no other thread
/// touches the patches of output positions `p0..p0 + n` while this runs.
unsafe fn scatter(g: &Geom, col: &[f32], p0: usize, n: usize, gxg: *mut f32) {
    Level::detect().run(Scatter { g, col, p0, n, gxg })
}

/// [`scatter`]'s arguments. Only built by [`scatter`], so they satisfy its contract.
struct Scatter<'a> {
    g: &'a Geom,
    col: &'a [f32],
    p0: usize,
    n: usize,
    gxg: *mut f32,
}

impl Kernel for Scatter<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        // SAFETY: the fields come from `scatter`'s caller, who upholds its contract, which is
        // `scatter_body`'s.
        unsafe {
            match self.g.k[2] {
                2 => scatter_body(self, 2),
                3 => scatter_body(self, 3),
                4 => scatter_body(self, 4),
                kw => scatter_body(self, kw),
            }
        }
    }
}

/// # Safety
/// As [`scatter`].
#[inline(always)]
unsafe fn scatter_body(a: Scatter<'_>, kw: usize) {
    let Scatter { g, col, p0, n, gxg } = a;
    let vol: usize = g.n.iter().product();
    let [kd, kh, _] = g.k;
    for ci in 0..g.cig() {
        for kz in 0..kd {
            for ky in 0..kh {
                let r0 = ((ci * kd + kz) * kh + ky) * kw;
                let rows = &col[r0 * n..(r0 + kw) * n];
                let tap = tap_row(g, kz, ky);
                for (i, len, at) in runs(g, p0, n) {
                    // SAFETY: `len` patches of one input row of channel `ci` (in bounds: the
                    // patches tile the volume exactly), owned by this task (contract).
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(gxg.add(ci * vol + at + tap), len * kw)
                    };
                    for (j, patch) in dst.chunks_exact_mut(kw).enumerate() {
                        for (kx, d) in patch.iter_mut().enumerate() {
                            *d = rows[kx * n + i + j];
                        }
                    }
                }
            }
        }
    }
}

/// The input gradient: per tile, $W_g^\top \cdot g_{out}$ into a scratch column tile (in L2),
/// then [`scatter`]ed into place. Tasks write disjoint patches, so all run at once.
pub(super) fn grad_input(g: &Geom, gy: &[f32], w: &[f32]) -> Vec<f32> {
    let (cig, cog, kg, p_vol) = (g.cig(), g.cog(), g.kg(), g.out_vol());
    let vol: usize = g.n.iter().product();
    let nt = g.tile();
    let tiles = p_vol.div_ceil(nt);
    let tasks = g.b * g.groups * tiles;
    let par = parallelism(tasks);
    let mut gx = vec![0f32; g.b * g.cin * vol];
    let gxp = SharedMut::new(&mut gx);
    par_fold(tasks, |task, gcol: &mut Vec<f32>| {
        let (bg, tile) = (task / tiles, task % tiles);
        let (bi, gi) = (bg / g.groups, bg % g.groups);
        let p0 = tile * nt;
        let n = nt.min(p_vol - p0);
        gcol.resize(kg * nt, 0.0);
        let gcol = &mut gcol[..kg * n];
        // SAFETY: in bounds: dst the task's (kg x n) scratch, lhs the group's weight read
        // transposed (kg x cog), rhs the (cog x n) block of grad_y at rows `bi, gi * cog..`,
        // columns `p0..`. The scatter writes the patches of positions `p0..p0 + n` of the
        // channels `bi, gi * cig..`: no other task's (other tiles, groups or batch items).
        unsafe {
            matmul(
                (kg, n, cog),
                Strided::rows(gcol.as_mut_ptr(), n),
                false,
                Strided::cols(w.as_ptr().add(gi * cog * kg), kg),
                Strided::rows(
                    gy.as_ptr().add((bi * g.cout + gi * cog) * p_vol + p0),
                    p_vol,
                ),
                1.0,
                par,
            );
            scatter(
                g,
                gcol,
                p0,
                n,
                gxp.ptr().wrapping_add((bi * g.cin + gi * cig) * vol),
            );
        }
    });
    gx
}
