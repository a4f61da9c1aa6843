//! Dense Cholesky factorisation and triangular solves on row-major `n × n` buffers (the
//! Gaussian process keeps `n` at a few thousand at most).

pub(super) fn add_diagonal(a: &mut [f64], n: usize, v: f64) {
    for i in 0..n {
        a[i * n + i] += v;
    }
}

/// Overwrites the lower triangle of `a` with its Cholesky factor (the upper one with zeros);
/// `false` when `a` is not (numerically) positive definite.
pub(super) fn cholesky_in_place(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let row_j = &mut a[j * n..(j + 1) * n];
        let pivot = row_j[j] - row_j[..j].iter().map(|v| v * v).sum::<f64>();
        if !(pivot.is_finite() && pivot > 0.0) {
            return false;
        }
        let ljj = pivot.sqrt();
        row_j[j] = ljj;
        row_j[j + 1..].iter_mut().for_each(|v| *v = 0.0);
        // Column j of the rows below, from the finished row j.
        for i in j + 1..n {
            let (head, tail) = a.split_at_mut(i * n);
            let row_j = &head[j * n..j * n + j];
            let row_i = &mut tail[..n];
            let dot: f64 = row_i[..j].iter().zip(row_j).map(|(p, q)| p * q).sum();
            row_i[j] = (row_i[j] - dot) / ljj;
        }
    }
    true
}

/// How many times the diagonal jitter grows (tenfold each) before giving up.
pub(super) const JITTER_TRIES: i32 = 6;

/// The Cholesky factor of `a`, retried with a jitter of `1e-10`, `1e-9`, … times the mean
/// diagonal when the matrix is only semi-definite; `None` when even the largest jitter fails.
pub(super) fn cholesky_jittered(a: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    let mut l = a.clone();
    if cholesky_in_place(&mut l, n) {
        return Some(l);
    }
    let mean_diag = (0..n).map(|i| a[i * n + i].abs()).sum::<f64>() / n.max(1) as f64;
    let base = mean_diag.max(f64::MIN_POSITIVE);
    for t in 0..JITTER_TRIES {
        l.copy_from_slice(&a);
        add_diagonal(&mut l, n, base * 1e-10 * 10f64.powi(t));
        if cholesky_in_place(&mut l, n) {
            return Some(l);
        }
    }
    None
}

/// Solves `L z = b` for the lower factor `L`.
pub(super) fn solve_lower(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut z = b.to_vec();
    for i in 0..n {
        let dot: f64 = l[i * n..i * n + i]
            .iter()
            .zip(&z[..i])
            .map(|(p, q)| p * q)
            .sum();
        z[i] = (z[i] - dot) / l[i * n + i];
    }
    z
}

/// Solves `L L^T z = b`.
pub(super) fn cho_solve(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut z = solve_lower(l, n, b);
    for i in (0..n).rev() {
        let dot: f64 = (i + 1..n).map(|k| l[k * n + i] * z[k]).sum();
        z[i] = (z[i] - dot) / l[i * n + i];
    }
    z
}
