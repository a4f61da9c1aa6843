//! Bounded minimisation for the hyper-parameter fit (and Bayesian optimisation's acquisition): L-BFGS on the free variables, projected
//! onto the box (a small stand-in for L-BFGS-B, which scikit-learn uses).

use crate::Result;

/// L-BFGS memory.
const HISTORY: usize = 10;
const MAX_ITERS: usize = 500;

/// Minimises `f` over the box `[lo, hi]` from `x0` (clamped into it); `None` when `f` is
/// undefined (`Ok(None)`) at the start.
pub(crate) fn minimize_in_box(
    f: &impl Fn(&[f64]) -> Result<Option<(f64, Vec<f64>)>>,
    x0: Vec<f64>,
    lo: &[f64],
    hi: &[f64],
) -> Result<Option<(f64, Vec<f64>)>> {
    let clamp = |x: &mut [f64]| {
        for ((v, l), h) in x.iter_mut().zip(lo).zip(hi) {
            *v = v.clamp(*l, *h);
        }
    };
    let mut x = x0;
    clamp(&mut x);
    let Some((mut fx, mut g)) = f(&x)? else {
        return Ok(None);
    };
    // Gradient components that would leave the box at an active bound are frozen.
    let project = |x: &[f64], g: &[f64]| -> Vec<f64> {
        (0..x.len())
            .map(|i| {
                let blocked = (x[i] <= lo[i] && g[i] > 0.0) || (x[i] >= hi[i] && g[i] < 0.0);
                if blocked {
                    0.0
                } else {
                    g[i]
                }
            })
            .collect()
    };
    let mut history: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    for _ in 0..MAX_ITERS {
        let pg = project(&x, &g);
        if pg.iter().all(|v| v.abs() < 1e-9) {
            break;
        }
        let mut dir = lbfgs_direction(&pg, &history);
        for i in 0..dir.len() {
            if pg[i] == 0.0 {
                dir[i] = 0.0;
            }
        }
        let slope: f64 = dir.iter().zip(&pg).map(|(a, b)| a * b).sum();
        if slope >= 0.0 {
            history.clear();
            dir = pg.iter().map(|v| -v).collect();
        }
        // The first steepest step moves at most one log unit.
        let max_abs = dir.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let mut step = if history.is_empty() {
            1.0f64.min(1.0 / max_abs)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..60 {
            let mut xn: Vec<f64> = x.iter().zip(&dir).map(|(a, b)| a + step * b).collect();
            clamp(&mut xn);
            let moved: f64 = xn
                .iter()
                .zip(&x)
                .zip(&g)
                .map(|((a, b), g)| (a - b) * g)
                .sum();
            if let Some((fnew, gnew)) = f(&xn)? {
                if fnew <= fx + 1e-4 * moved.min(0.0) && moved < 0.0 {
                    accepted = Some((xn, fnew, gnew));
                    break;
                }
            }
            step *= 0.5;
        }
        let Some((xn, fnew, gnew)) = accepted else {
            if history.is_empty() {
                break;
            }
            history.clear();
            continue;
        };
        let s: Vec<f64> = xn.iter().zip(&x).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = gnew.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy: f64 = s.iter().zip(&yv).map(|(a, b)| a * b).sum();
        if sy > 1e-12 {
            if history.len() == HISTORY {
                history.remove(0);
            }
            history.push((s, yv, 1.0 / sy));
        }
        let converged = (fx - fnew).abs() <= 1e-13 * fx.abs().max(fnew.abs()).max(1.0);
        x = xn;
        fx = fnew;
        g = gnew;
        if converged {
            break;
        }
    }
    Ok(Some((fx, x)))
}

/// The L-BFGS two-loop recursion: `-H g` from the stored `(s, y, 1 / s·y)` pairs.
fn lbfgs_direction(g: &[f64], history: &[(Vec<f64>, Vec<f64>, f64)]) -> Vec<f64> {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let mut q = g.to_vec();
    let mut alphas = Vec::with_capacity(history.len());
    for (s, y, rho) in history.iter().rev() {
        let a = rho * dot(s, &q);
        q.iter_mut().zip(y).for_each(|(q, y)| *q -= a * y);
        alphas.push(a);
    }
    if let Some((s, y, _)) = history.last() {
        let gamma = dot(s, y) / dot(y, y);
        q.iter_mut().for_each(|v| *v *= gamma);
    }
    for ((s, y, rho), a) in history.iter().zip(alphas.iter().rev()) {
        let b = rho * dot(y, &q);
        q.iter_mut().zip(s).for_each(|(q, s)| *q += (a - b) * s);
    }
    q.iter_mut().for_each(|v| *v = -*v);
    q
}
