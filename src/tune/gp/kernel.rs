//! The stationary kernels (RBF, Matérn-5/2) with ARD length scales, at log hyper-parameters
//! `theta = [ln c, ln l_1, …]`.

use super::GpKernel;

/// The squared scaled distance `r^2` and the per-dimension terms `(x_k - x_k')^2 / l_k^2`
/// (written into `terms` when given).
fn scaled_sq_dist(theta: &[f64], a: &[f64], b: &[f64], mut terms: Option<&mut [f64]>) -> f64 {
    let iso = theta.len() == 2;
    let mut r2 = 0.0;
    for k in 0..a.len() {
        let l = theta[if iso { 1 } else { 1 + k }].exp();
        let t = ((a[k] - b[k]) / l).powi(2);
        r2 += t;
        if let Some(terms) = terms.as_deref_mut() {
            terms[if iso { 0 } else { k }] += t;
        }
    }
    r2
}

/// `k(a, b)` at the log hyper-parameters `theta`.
pub(super) fn kernel_value(kernel: GpKernel, theta: &[f64], a: &[f64], b: &[f64]) -> f64 {
    theta[0].exp() * shape(kernel, scaled_sq_dist(theta, a, b, None))
}

/// The unit-variance kernel shape at `r^2`.
pub(super) fn shape(kernel: GpKernel, r2: f64) -> f64 {
    match kernel {
        GpKernel::Rbf => (-0.5 * r2).exp(),
        GpKernel::Matern52 => {
            let s = (5.0 * r2).sqrt();
            (1.0 + s + s * s / 3.0) * (-s).exp()
        }
    }
}

/// The derivative of the unit-variance kernel shape with respect to `r^2`.
pub(super) fn shape_slope(kernel: GpKernel, r2: f64) -> f64 {
    match kernel {
        GpKernel::Rbf => -0.5 * (-0.5 * r2).exp(),
        GpKernel::Matern52 => {
            let s = (5.0 * r2).sqrt();
            -(5.0 / 6.0) * (1.0 + s) * (-s).exp()
        }
    }
}

/// `k(a, b)` and its gradient in log space, written into `grad` (`[d/d ln c, d/d ln l_k, …]`).
pub(super) fn kernel_value_grad(
    kernel: GpKernel,
    theta: &[f64],
    a: &[f64],
    b: &[f64],
    grad: &mut [f64],
) -> f64 {
    let c = theta[0].exp();
    grad.iter_mut().for_each(|g| *g = 0.0);
    let r2 = scaled_sq_dist(theta, a, b, Some(&mut grad[1..]));
    let k = c * shape(kernel, r2);
    // d k / d ln l_k = (dk/d r^2) (-2 t_k), with t_k = (a_k - b_k)^2 / l_k^2.
    let factor = match kernel {
        GpKernel::Rbf => k,
        GpKernel::Matern52 => {
            let s = (5.0 * r2).sqrt();
            c * (5.0 / 3.0) * (1.0 + s) * (-s).exp()
        }
    };
    grad[1..].iter_mut().for_each(|t| *t *= factor);
    grad[0] = k;
    k
}
