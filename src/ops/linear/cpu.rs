//! The CPU kernels of [`super::linear`], on f32 values: the three matrix products (forward,
//! input gradient, weight gradient) as tiles of one `gemm` call each on candle's pool, and the
//! bias gradient as a parallel column sum.

use crate::cpu::gemm::{matmul, Parallelism, Strided};
use crate::cpu::{num_threads, par_fold, par_tasks, Isa, Kernel, Level, SharedMut};

/// The sizes of one linear layer: `x` `(rows, inp)`, `w` `(out, inp)`, `y` `(rows, out)`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dims {
    pub(super) rows: usize,
    pub(super) inp: usize,
    pub(super) out: usize,
}

/// `y = x wᵀ (+ b)`: `(rows, out)`, the bias written into each tile before the product
/// accumulates onto it.
pub(super) fn forward(
    d: Dims,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
) -> candle_core::Result<Vec<f32>> {
    // wᵀ (inp × out) is w read column-major.
    let (x, wt) = (Mat::row_major(x, d.inp), Mat::col_major(w, d.inp));
    par_matmul((d.rows, d.out, d.inp), x, wt, b)
}

/// `dx = g w`: `(rows, inp)`.
pub(super) fn input_grad(d: Dims, g: &[f32], w: &[f32]) -> candle_core::Result<Vec<f32>> {
    let (g, w) = (Mat::row_major(g, d.out), Mat::row_major(w, d.inp));
    par_matmul((d.rows, d.inp, d.out), g, w, None)
}

/// `dw = gᵀ x`: `(out, inp)`, written in the weight's layout (no transposed copy).
pub(super) fn weight_grad(d: Dims, g: &[f32], x: &[f32]) -> candle_core::Result<Vec<f32>> {
    // gᵀ (out × rows) is g read column-major.
    let (gt, x) = (Mat::col_major(g, d.out), Mat::row_major(x, d.inp));
    par_matmul((d.out, d.inp, d.rows), gt, x, None)
}

/// Values of `g` one bias-gradient task sums (a block of whole rows, at least one).
const SUM_TASK_ELEMS: usize = 64 * 1024;

/// `db = Σ_r g_r`: `(out)`. Each task sums a fixed block of rows into its own partial row (in
/// f32); the partials are then added in block order, so the result does not depend on which
/// worker took which block.
pub(super) fn bias_grad(d: Dims, g: &[f32]) -> Vec<f32> {
    let out = d.out.max(1);
    let block_rows = (SUM_TASK_ELEMS / out).max(1);
    let blocks = d.rows.div_ceil(block_rows);
    let mut partials = vec![0f32; blocks * out];
    let level = Level::detect();
    par_tasks(&mut partials, out, |i, acc, _: &mut ()| {
        let start = i * block_rows * out;
        let end = (start + block_rows * out).min(g.len());
        level.run(ColumnSum {
            g: &g[start..end],
            acc,
        })
    });
    let mut db = vec![0f32; out];
    for part in partials.chunks_exact(out) {
        for (s, v) in db.iter_mut().zip(part) {
            *s += v;
        }
    }
    db
}

/// `acc += Σ rows of g` (rows of `acc.len()` values), compiled per SIMD level.
struct ColumnSum<'a> {
    g: &'a [f32],
    acc: &'a mut [f32],
}

impl Kernel for ColumnSum<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        for row in self.g.chunks_exact(self.acc.len()) {
            for (a, v) in self.acc.iter_mut().zip(row) {
                *a += v;
            }
        }
    }
}

/// A matrix operand read in place: element `(i, j)` is `data[i·rs + j·cs]`, one stride being 1.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major with rows `rs` apart.
    fn row_major(data: &'a [f32], rs: usize) -> Self {
        Mat { data, rs, cs: 1 }
    }

    /// Column-major with columns `cs` apart (a row-major matrix read transposed).
    fn col_major(data: &'a [f32], cs: usize) -> Self {
        Mat { data, rs: 1, cs }
    }

    /// Whether `data` holds every element of a `rows × cols` matrix.
    fn holds(&self, rows: usize, cols: usize) -> bool {
        let last = (rows - 1)
            .checked_mul(self.rs)
            .zip((cols - 1).checked_mul(self.cs))
            .and_then(|(a, b)| a.checked_add(b));
        matches!(last, Some(l) if l < self.data.len())
    }

    /// The operand from element `(i, j)` on, as `gemm` reads it.
    fn from(&self, i: usize, j: usize) -> Strided<*const f32> {
        let ptr = self.data[i * self.rs + j * self.cs..].as_ptr();
        if self.cs == 1 {
            Strided::rows(ptr, self.rs)
        } else {
            Strided::cols(ptr, self.cs)
        }
    }
}

/// Multiply-adds below which a tile is not worth a task of its own.
const MIN_TILE_WORK: usize = 1 << 18;
/// Row and column granularity of the tiles (a multiple of `gemm`'s register blocks).
const TILE_ALIGN: usize = 16;

/// Tile sizes `(mt, nt)` of an `m × n` product over `k`: about four tasks per thread (a worker
/// slowed down by another process holds back one small tile), whole rows while there are rows
/// enough, never tiles under [`MIN_TILE_WORK`].
fn tile_shape(m: usize, n: usize, k: usize) -> (usize, usize) {
    let work = m.saturating_mul(n).saturating_mul(k);
    let tasks = (4 * num_threads()).min(work / MIN_TILE_WORK).max(1);
    let align = |v: usize| v.next_multiple_of(TILE_ALIGN);
    let mt = align(m.div_ceil(tasks)).min(m);
    let col_tasks = tasks.div_ceil(m.div_ceil(mt));
    let nt = align(n.div_ceil(col_tasks)).min(n);
    (mt, nt)
}

/// `lhs (m × k) · rhs (k × n)` into a new row-major `m × n` matrix (each row starting as
/// `init` when given), tiled over candle's pool with one single-threaded `gemm` call per tile.
fn par_matmul(
    (m, n, k): (usize, usize, usize),
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    init: Option<&[f32]>,
) -> candle_core::Result<Vec<f32>> {
    let len = m.checked_mul(n);
    let fits = m > 0 && n > 0 && k > 0 && lhs.holds(m, k) && rhs.holds(k, n);
    let (Some(len), true) = (len, fits && init.is_none_or(|b| b.len() == n)) else {
        candle_core::bail!("linear: operands do not hold a ({m} × {k}) · ({k} × {n}) product");
    };
    let mut dst = vec![0f32; len];
    let (mt, nt) = tile_shape(m, n, k);
    let (row_tiles, col_tiles) = (m.div_ceil(mt), n.div_ceil(nt));
    let shared = SharedMut::new(&mut dst);
    let tile = |t: usize| {
        let (i0, j0) = ((t / col_tiles) * mt, (t % col_tiles) * nt);
        let (rows, cols) = (mt.min(m - i0), nt.min(n - j0));
        // SAFETY: tiles are disjoint blocks of `dst` (m × n, row-major, alive until the tasks
        // are joined); this task alone writes rows i0..i0+rows, columns j0..j0+cols.
        let at = |i: usize| unsafe { shared.ptr().add(i * n + j0) };
        if let Some(b) = init {
            for i in i0..i0 + rows {
                // SAFETY: as above, `cols` values of this task's tile in row `i`.
                let row = unsafe { std::slice::from_raw_parts_mut(at(i), cols) };
                row.copy_from_slice(&b[j0..j0 + cols]);
            }
        }
        // SAFETY: `lhs` holds rows i0.. and `rhs` columns j0.. of the checked extents, and the
        // destination block is this task's tile, as above.
        unsafe {
            matmul(
                (rows, cols, k),
                Strided::rows(at(i0), n),
                init.is_some(),
                lhs.from(i0, 0),
                rhs.from(0, j0),
                1.0,
                Parallelism::None,
            )
        }
    };
    let tiles = row_tiles * col_tiles;
    if tiles == 1 {
        tile(0);
    } else {
        par_fold(tiles, |t, _: &mut ()| tile(t));
    }
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_product_and_keep_whole_rows_when_they_can() {
        for (m, n, k) in [
            (2080, 768, 192),
            (768, 192, 2080),
            (8, 10, 3),
            (3, 4096, 512),
        ] {
            let (mt, nt) = tile_shape(m, n, k);
            assert!(mt >= 1 && mt <= m && nt >= 1 && nt <= n, "{m} {n} {k}");
            if m >= 16 * 4 * num_threads() {
                assert_eq!(nt, n);
            }
        }
    }

    #[test]
    fn undersized_operands_are_an_error() {
        let a = [1f32; 6];
        let r = par_matmul(
            (2, 3, 3),
            Mat::row_major(&a, 3),
            Mat::row_major(&a, 3),
            None,
        );
        assert!(r.is_err());
    }
}
