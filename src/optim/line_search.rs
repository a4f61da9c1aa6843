//! torch's strong-Wolfe line search for [`Lbfgs`](super::Lbfgs) (`_strong_wolfe` in
//! `torch/optim/lbfgs.py`): bracketing then zooming with safeguarded cubic interpolation
//! (Nocedal & Wright, *Numerical Optimization*, algorithms 3.5 and 3.6).

/// The strong-Wolfe line search of [`Lbfgs`](super::Lbfgs) (torch's `line_search_fn="strong_wolfe"`);
/// `Default` is torch's constants, `c1 = 1e-4`, `c2 = 0.9`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StrongWolfe {
    /// Sufficient decrease: $f(x + t d) \le f(x) + c_1 t\thinspace g^\top d$ (default 1e-4).
    pub c1: f64,
    /// Curvature: $\lvert g(x + t d)^\top d\rvert \le c_2 \lvert g^\top d\rvert$ (default 0.9;
    /// smaller is a more exact search).
    pub c2: f64,
}

impl Default for StrongWolfe {
    fn default() -> Self {
        Self { c1: 1e-4, c2: 0.9 }
    }
}

/// The minimizer of the cubic through $(x_1, f_1)$, $(x_2, f_2)$ with slopes $g_1$, $g_2$,
/// kept within `bounds` (default: between the two points); the middle when it has none.
fn cubic_interpolate(
    (x1, f1, g1): (f64, f64, f64),
    (x2, f2, g2): (f64, f64, f64),
    bounds: Option<(f64, f64)>,
) -> f64 {
    let (lo, hi) = bounds.unwrap_or(if x1 <= x2 { (x1, x2) } else { (x2, x1) });
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        let min_pos = if x1 <= x2 {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        };
        // Not `clamp`: the bounds may cross (torch then returns the upper one).
        min_pos.max(lo).min(hi)
    } else {
        (lo + hi) / 2.0
    }
}

/// One end of a line-search bracket: step, loss, gradient, slope along the direction.
#[derive(Clone)]
pub(super) struct Point {
    pub t: f64,
    pub f: f64,
    pub g: Vec<f64>,
    pub gtd: f64,
}

/// A step along a direction from `start` (step 0: loss, gradient and slope there) satisfying
/// the strong Wolfe conditions `w`, from the trial step `t`, within `max_ls` evaluations of
/// `eval` (the point at a step). The bracket is abandoned once its width times `d_norm` (the
/// direction's largest entry) falls under `tolerance_change`. Returns the point and the
/// evaluations used.
pub(super) fn strong_wolfe<E>(
    eval: &mut dyn FnMut(f64) -> Result<Point, E>,
    mut t: f64,
    d_norm: f64,
    start: Point,
    w: StrongWolfe,
    tolerance_change: f64,
    max_ls: i64,
) -> Result<(Point, usize), E> {
    let (f, gtd) = (start.f, start.gtd);
    let mut new = eval(t)?;
    let mut evals = 1;
    let mut prev = Point {
        t: 0.0,
        ..start.clone()
    };
    let mut done = false;
    let mut ls_iter = 0i64;
    let mut bracket: Vec<Point> = Vec::new();
    while ls_iter < max_ls {
        if new.f > f + w.c1 * t * gtd || (ls_iter > 1 && new.f >= prev.f) {
            bracket = vec![prev, new.clone()];
            break;
        }
        if new.gtd.abs() <= -w.c2 * gtd {
            bracket = vec![new.clone()];
            done = true;
            break;
        }
        if new.gtd >= 0.0 {
            bracket = vec![prev, new.clone()];
            break;
        }
        // Extrapolate: the cubic's minimizer within [t + 0.01 (t - t_prev), 10 t].
        let bounds = (t + 0.01 * (t - prev.t), t * 10.0);
        t = cubic_interpolate(
            (prev.t, prev.f, prev.gtd),
            (new.t, new.f, new.gtd),
            Some(bounds),
        );
        prev = new;
        new = eval(t)?;
        evals += 1;
        ls_iter += 1;
    }
    if ls_iter == max_ls {
        bracket = vec![Point { t: 0.0, ..start }, new];
    }
    // Zoom: shrink the bracket until a point satisfies both conditions.
    let order = |b: &[Point]| {
        if b[0].f <= b[b.len() - 1].f {
            (0, 1)
        } else {
            (1, 0)
        }
    };
    let (mut low, mut high) = order(&bracket);
    let mut insuf_progress = false;
    while !done && ls_iter < max_ls {
        let (b0, b1) = (&bracket[0], &bracket[1]);
        if (b1.t - b0.t).abs() * d_norm < tolerance_change {
            break;
        }
        t = cubic_interpolate((b0.t, b0.f, b0.gtd), (b1.t, b1.f, b1.gtd), None);
        let (bmin, bmax) = (b0.t.min(b1.t), b0.t.max(b1.t));
        // Too close to an end: move to 10 % inside, unless progress was fine last time.
        let eps = 0.1 * (bmax - bmin);
        if (bmax - t).min(t - bmin) < eps {
            if insuf_progress || t >= bmax || t <= bmin {
                t = if (t - bmax).abs() < (t - bmin).abs() {
                    bmax - eps
                } else {
                    bmin + eps
                };
                insuf_progress = false;
            } else {
                insuf_progress = true;
            }
        } else {
            insuf_progress = false;
        }
        let p = eval(t)?;
        evals += 1;
        ls_iter += 1;
        if p.f > f + w.c1 * t * gtd || p.f >= bracket[low].f {
            bracket[high] = p;
            (low, high) = order(&bracket);
        } else {
            if p.gtd.abs() <= -w.c2 * gtd {
                done = true;
            } else if p.gtd * (bracket[high].t - bracket[low].t) >= 0.0 {
                bracket[high] = bracket[low].clone();
            }
            bracket[low] = p;
        }
    }
    Ok((bracket.swap_remove(low), evals))
}
