//! Dense / grouped path: vol2col tiles + gemm (pointwise convolutions multiply the input in
//! place: their column tiles are blocks of it).

use std::borrow::Cow;

use super::cpu::*;
use super::patches;
use super::*;
use crate::cpu::gemm::{matmul, Parallelism, Strided};
use crate::cpu::{Isa, Kernel, Level, SharedMut};

/// `dst = src` for short runs, in fixed 16-wide blocks the compiler inlines (a `memcpy`
/// call per 32-value row costs as much as the copy).
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (a, b) in (&mut d).zip(&mut s) {
        a.copy_from_slice(b);
    }
    for (a, b) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *a = *b;
    }
}

/// Output position `p` as `(oz, oy, ox)`.
#[inline(always)]
fn decompose(g: &Geom, p: usize) -> (usize, usize, usize) {
    let [_, oh, ow] = g.o;
    (p / (oh * ow), (p / ow) % oh, p % ow)
}

/// The runs of output positions `p0 + i .. p0 + i + len` that lie on one output row, as
/// `(i, len, row, ox0)`: `row` is the padded-volume offset of the input row that kernel taps
/// `(kz, ky, ·)` read for it and `ox0` the run's first output column. An iterator rather
/// than a callback, so that it inlines into the feature-specific copies of the loops.
struct Runs {
    hp: usize,
    row_len: usize,
    oh: usize,
    ow: usize,
    s: usize,
    z_off: usize,
    y_off: usize,
    oz: usize,
    oy: usize,
    ox0: usize,
    i: usize,
    n: usize,
}

impl Runs {
    #[inline(always)]
    fn new(g: &Geom, p0: usize, n: usize, kz: usize, ky: usize) -> Self {
        let [_, hp, row_len] = padded(g);
        let [_, oh, ow] = g.o;
        let (oz, oy, ox0) = decompose(g, p0);
        Runs {
            hp,
            row_len,
            oh,
            ow,
            s: g.stride,
            z_off: kz * g.dilation,
            y_off: ky * g.dilation,
            oz,
            oy,
            ox0,
            i: 0,
            n,
        }
    }
}

impl Iterator for Runs {
    type Item = (usize, usize, usize, usize);

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.i >= self.n {
            return None;
        }
        let (i, s) = (self.i, self.s);
        let len = (self.ow - self.ox0).min(self.n - i);
        let row = ((self.oz * s + self.z_off) * self.hp + self.oy * s + self.y_off) * self.row_len;
        let ox0 = self.ox0;
        self.i += len;
        self.ox0 = 0;
        self.oy += 1;
        if self.oy == self.oh {
            self.oy = 0;
            self.oz += 1;
        }
        Some((i, len, row, ox0))
    }
}

/// Unfolds output positions `p0..p0 + n` of one group into `col` (`kg` rows of `n`):
/// `col[r][j]` is the padded-input value tap `r = (ci, kz, ky, kx)` reads for output `p0 + j`.
fn vol2col(g: &Geom, xg: &[f32], p0: usize, n: usize, col: &mut [f32]) {
    if g.patches() {
        patches::gather(g, xg, p0, n, col)
    } else {
        Level::detect().run(Vol2Col { g, xg, p0, n, col })
    }
}

/// [`vol2col`]'s arguments: the copy loops vectorise to the level's width.
struct Vol2Col<'a> {
    g: &'a Geom,
    xg: &'a [f32],
    p0: usize,
    n: usize,
    col: &'a mut [f32],
}

impl Kernel for Vol2Col<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        vol2col_body(self.g, self.xg, self.p0, self.n, self.col)
    }
}

#[inline(always)]
fn vol2col_body(g: &Geom, xg: &[f32], p0: usize, n: usize, col: &mut [f32]) {
    let vol_p = padded_vol(g);
    let [kd, kh, kw] = g.k;
    let offs = tap_offsets(g);
    for ci in 0..g.cig() {
        let xc = &xg[ci * vol_p..(ci + 1) * vol_p];
        for kz in 0..kd {
            for ky in 0..kh {
                let r0 = ((ci * kd + kz) * kh + ky) * kw;
                let rows = &mut col[r0 * n..(r0 + kw) * n];
                for (i, len, row, ox0) in Runs::new(g, p0, n, kz, ky) {
                    for (crow, off) in rows.chunks_exact_mut(n).zip(&offs) {
                        let start = row + off + ox0;
                        copy_run(&mut crow[i..i + len], &xc[start..start + len]);
                    }
                }
            }
        }
    }
}

/// The adjoint of [`vol2col`]: adds `col[r][j]` into the padded-input value tap `r` reads
/// for output `p0 + j`.
///
/// # Safety
/// `gxg` points to one group's `cig` padded volumes, and no other thread touches the
/// padded input depths that output depths of `p0..p0 + n` read while this runs.
unsafe fn col2vol(g: &Geom, col: &[f32], p0: usize, n: usize, gxg: *mut f32) {
    Level::detect().run(Col2Vol { g, col, p0, n, gxg })
}

/// [`col2vol`]'s arguments. Only built by [`col2vol`], so they satisfy its contract.
struct Col2Vol<'a> {
    g: &'a Geom,
    col: &'a [f32],
    p0: usize,
    n: usize,
    gxg: *mut f32,
}

impl Kernel for Col2Vol<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        // SAFETY: the fields come from `col2vol`'s caller, who upholds its contract, which is
        // `col2vol_body`'s.
        unsafe { col2vol_body(self.g, self.col, self.p0, self.n, self.gxg) }
    }
}

/// # Safety
/// As [`col2vol`].
#[inline(always)]
unsafe fn col2vol_body(g: &Geom, col: &[f32], p0: usize, n: usize, gxg: *mut f32) {
    let [_, _, row_len] = padded(g);
    let vol_p = padded_vol(g);
    let [kd, kh, kw] = g.k;
    let offs = tap_offsets(g);
    for ci in 0..g.cig() {
        for kz in 0..kd {
            for ky in 0..kh {
                let r0 = ((ci * kd + kz) * kh + ky) * kw;
                let rows = &col[r0 * n..(r0 + kw) * n];
                for (i, len, row, ox0) in Runs::new(g, p0, n, kz, ky) {
                    // SAFETY: one padded input row of this group's volumes (`row` is a
                    // multiple of `row_len` below `vol_p`); only this task writes its depth
                    // (see the function contract).
                    let xrow = unsafe {
                        std::slice::from_raw_parts_mut(gxg.add(ci * vol_p + row), row_len)
                    };
                    for (crow, off) in rows.chunks_exact(n).zip(&offs) {
                        let dst = &mut xrow[off + ox0..off + ox0 + len];
                        for (d, v) in dst.iter_mut().zip(&crow[i..i + len]) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
}

/// `gemm`'s threads: none when our tasks already cover the pool. When they do not (a tiny
/// problem with fewer tiles than threads) `gemm` splits each product on rayon's pool, the
/// only parallelism it offers.
pub(super) fn parallelism(tasks: usize) -> Parallelism {
    let threads = crate::cpu::num_threads();
    if tasks >= threads || threads == 1 {
        Parallelism::None
    } else {
        Parallelism::Rayon(threads)
    }
}

/// The input in the layout the column tiles read: the input itself for a pointwise or a patch
/// convolution (read in place), a padded copy otherwise.
fn padded_input<'a>(g: &Geom, x: &'a [f32]) -> Result<Cow<'a, [f32]>> {
    Ok(if g.pointwise() || g.patches() {
        Cow::Borrowed(x)
    } else {
        Cow::Owned(pad_input(g, x)?)
    })
}

/// Values per channel in [`padded_input`]'s layout.
fn source_vol(g: &Geom) -> usize {
    if g.patches() {
        g.n.iter().product()
    } else {
        padded_vol(g)
    }
}

pub(super) fn forward(g: &Geom, x: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    let (cig, cog, kg, p_vol) = (g.cig(), g.cog(), g.kg(), g.out_vol());
    let vol_p = source_vol(g);
    let xp = padded_input(g, x)?;
    let pointwise = g.pointwise();
    let nt = g.tile();
    let tiles = p_vol.div_ceil(nt);
    let tasks = g.b * g.groups * tiles;
    let par = parallelism(tasks);
    let mut y = try_zeros::<f32>(g.names()[0], g.b * g.cout * p_vol)?;
    let yp = SharedMut::new(&mut y);
    par_fold(tasks, |task, col: &mut Vec<f32>| {
        let (bg, tile) = (task / tiles, task % tiles);
        let (bi, gi) = (bg / g.groups, bg % g.groups);
        let p0 = tile * nt;
        let n = nt.min(p_vol - p0);
        let x0 = (bi * g.cin + gi * cig) * vol_p;
        // A pointwise convolution's column tile is a block of the input itself.
        let rhs = if pointwise {
            Strided::rows(xp[x0 + p0..].as_ptr(), vol_p)
        } else {
            col.resize(kg * nt, 0.0);
            vol2col(g, &xp[x0..x0 + cig * vol_p], p0, n, &mut col[..kg * n]);
            Strided::rows(col.as_ptr(), n)
        };
        // SAFETY: in bounds: dst the (cog x n) block of y at rows `bi, gi * cog..`, columns
        // `p0..`, written by this task only; lhs the group's (cog x kg) weight; rhs the column
        // tile (kg x n), or for a pointwise conv the input's block of rows `bi, gi * cig..`.
        unsafe {
            matmul(
                (cog, n, kg),
                Strided::rows(yp.ptr().add((bi * g.cout + gi * cog) * p_vol + p0), p_vol),
                false,
                Strided::rows(w.as_ptr().add(gi * cog * kg), kg),
                rhs,
                1.0,
                par,
            )
        }
    });
    Ok(y)
}

pub(super) fn grad_input(g: &Geom, gy: &[f32], w: &[f32]) -> Vec<f32> {
    if g.patches() {
        return patches::grad_input(g, gy, w);
    }
    let (cig, cog, kg, p_vol) = (g.cig(), g.cog(), g.kg(), g.out_vol());
    let vol_p = padded_vol(g);
    let nt = g.tile();
    let plane = g.o[1] * g.o[2];
    // Slabs of `t` output depths: slab j reads padded depths up to (t(j+1) - 1)s + e - 1
    // and slab j + 2 starts at t(j+2)s, so they are disjoint once (t + 1)s >= e.
    let t = extent(g.k[0], g.dilation)
        .div_ceil(g.stride)
        .saturating_sub(1)
        .max(1);
    let slabs = g.o[0].div_ceil(t);
    let pointwise = g.pointwise();
    let mut gxp = vec![0f32; g.b * g.cin * vol_p];
    let gxptr = SharedMut::new(&mut gxp);
    for phase in 0..2 {
        let per_bg = (slabs + 1 - phase) / 2;
        let tasks = g.b * g.groups * per_bg;
        let par = parallelism(tasks);
        // `par_fold` returns once every task of the phase is done, so the two phases
        // never overlap.
        par_fold(tasks, |task, gcol: &mut Vec<f32>| {
            if !pointwise {
                gcol.resize(kg * nt, 0.0);
            }
            let (bg, j) = (task / per_bg, 2 * (task % per_bg) + phase);
            let (bi, gi) = (bg / g.groups, bg % g.groups);
            let p_end = ((j + 1) * t).min(g.o[0]) * plane;
            let mut p0 = j * t * plane;
            while p0 < p_end {
                let n = nt.min(p_end - p0);
                let base = gxptr.ptr().wrapping_add((bi * g.cin + gi * cig) * vol_p);
                // A pointwise convolution's column tile is a block of the input gradient
                // itself: the product goes straight there, no scatter.
                let gcol = &mut gcol[..if pointwise { 0 } else { kg * n }];
                let dst = if pointwise {
                    Strided::rows(base.wrapping_add(p0), vol_p)
                } else {
                    Strided::rows(gcol.as_mut_ptr(), n)
                };
                // SAFETY: in bounds: lhs the group's weight transposed (kg x cog), rhs the
                // (cog x n) block of grad_y, dst the task's scratch or (pointwise) its own
                // columns `p0..p0 + n` of the input gradient's rows `bi, gi * cig..`.
                unsafe {
                    matmul(
                        (kg, n, cog),
                        dst,
                        false,
                        Strided::cols(w.as_ptr().add(gi * cog * kg), kg),
                        Strided::rows(
                            gy.as_ptr().add((bi * g.cout + gi * cog) * p_vol + p0),
                            p_vol,
                        ),
                        1.0,
                        par,
                    );
                    // SAFETY: tasks of one phase hold slabs two apart, whose padded
                    // input depths are disjoint (see `t` above); different (b, group)
                    // pairs write different channels.
                    if !pointwise {
                        col2vol(g, gcol, p0, n, base);
                    }
                }
                p0 += n;
            }
        });
    }
    if pointwise {
        gxp
    } else {
        crop_input(g, &gxp)
    }
}

pub(super) fn grad_weight(g: &Geom, x: &[f32], gy: &[f32]) -> Result<Vec<f32>> {
    let (cig, cog, kg, p_vol) = (g.cig(), g.cog(), g.kg(), g.out_vol());
    let vol_p = source_vol(g);
    let xp = padded_input(g, x)?;
    let pointwise = g.pointwise();
    let nt = g.tile();
    let tiles = p_vol.div_ceil(nt);
    let tasks = g.b * g.groups * tiles;
    let par = parallelism(tasks);
    let total = g.cout * kg;
    let partials = par_fold(tasks, |task, (acc, col): &mut (Vec<f32>, Vec<f32>)| {
        acc.resize(total, 0.0);
        let (bg, tile) = (task / tiles, task % tiles);
        let (bi, gi) = (bg / g.groups, bg % g.groups);
        let p0 = tile * nt;
        let n = nt.min(p_vol - p0);
        let x0 = (bi * g.cin + gi * cig) * vol_p;
        let rhs = if pointwise {
            Strided::cols(xp[x0 + p0..].as_ptr(), vol_p)
        } else {
            col.resize(kg * nt, 0.0);
            vol2col(g, &xp[x0..x0 + cig * vol_p], p0, n, &mut col[..kg * n]);
            Strided::cols(col.as_ptr(), n)
        };
        // SAFETY: in bounds: dst the group's (cog x kg) block of this fold's accumulator,
        // column-major (see below); lhs the (cog x n) block of grad_y; rhs the column tile
        // (pointwise: the input block) read transposed (n x kg).
        unsafe {
            matmul(
                (cog, kg, n),
                Strided::cols(acc.as_mut_ptr().add(gi * cog * kg), cog),
                true,
                Strided::rows(
                    gy.as_ptr().add((bi * g.cout + gi * cog) * p_vol + p0),
                    p_vol,
                ),
                rhs,
                1.0,
                par,
            )
        }
    });
    // One partial sum per worker that ran a task; add them up.
    let mut partials = partials.into_iter().map(|(acc, _)| acc);
    let mut acc_t = partials.next().unwrap_or_else(|| vec![0f32; total]);
    for p in partials {
        acc_t.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
    }
    // The accumulator holds each group's block transposed, `[r][co]`: with the reduction
    // along the column tile in that orientation `gemm` reads the tile in place instead of
    // repacking it. Put it back in the weight's `[co][r]` layout.
    let mut gw = vec![0f32; total];
    for (dst, src) in gw
        .chunks_exact_mut(cog * kg)
        .zip(acc_t.chunks_exact(cog * kg))
    {
        for (r, row) in src.chunks_exact(cog).enumerate() {
            for (co, v) in row.iter().enumerate() {
                dst[co * kg + r] = *v;
            }
        }
    }
    Ok(gw)
}

#[cfg(test)]
mod tests {
    use crate::geometry::extent;

    #[test]
    fn slabs_two_apart_read_disjoint_input_depths() {
        for k in 1..6 {
            for s in 1..4 {
                for d in 1..4 {
                    let e = extent(k, d);
                    let t = e.div_ceil(s).saturating_sub(1).max(1);
                    // Last input depth of slab 0 (pad 0) vs first of slab 2.
                    let last0 = (t - 1) * s + e - 1;
                    assert!(last0 < 2 * t * s, "k {k} s {s} d {d} t {t}");
                }
            }
        }
    }
}
