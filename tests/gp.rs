//! `tune::gp` against scikit-learn's `GaussianProcessRegressor` (`tests/fixtures/gen_gp.py`):
//! posterior mean, variance, log marginal likelihood and its gradient at fixed hyper-parameters,
//! fitted hyper-parameters, the gradient against finite differences, jitter and sampling; the
//! hyper-parameter priors against torch.distributions (`tests/fixtures/gen_gp_prior.py`) and
//! the maximum a posteriori fit.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_tricks::tune::gp::{
    gaussian_process, GaussianProcess, GaussianProcessConfig, GpKernel, HyperPrior,
};
use common::{fixtures, get, R};

fn vec(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// max |a - b| / max |b|.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    diff / b.iter().fold(0.0f64, |m, b| m.max(b.abs()))
}

fn kind(name: &str) -> GpKernel {
    if name == "rbf" {
        GpKernel::Rbf
    } else {
        GpKernel::Matern52
    }
}

fn fixed_gp(k: GpKernel, theta: &[f64], alpha: f64, normalize_y: bool) -> GaussianProcess {
    let cfg = GaussianProcessConfig::default()
        .with_kernel(k)
        .with_constant_value(theta[0].exp())
        .with_length_scale(theta[1..].iter().map(|t| t.exp()).collect())
        .with_alpha(alpha)
        .with_normalize_y(normalize_y)
        .with_optimize(false);
    gaussian_process(cfg).unwrap()
}

#[test]
fn matches_sklearn_at_fixed_hyper_parameters() -> R<()> {
    let f = fixtures("gp");
    let (x, y, xs) = (
        get(&f, "fixed.x"),
        get(&f, "fixed.y"),
        get(&f, "fixed.x_star"),
    );
    for k in ["rbf", "matern"] {
        for ard in ["iso", "ard"] {
            for norm in ["raw", "norm"] {
                let name = format!("fixed.{k}.{ard}.{norm}");
                let ls: Vec<f64> = vec(get(&f, &format!("{name}.length_scale")));
                let mut theta = vec![1.7f64.ln()];
                theta.extend(ls.iter().map(|l| l.ln()));
                let mut gp = fixed_gp(kind(k), &theta, 1e-3, norm == "norm");
                gp.fit(x, y)?;
                let (mean, var) = gp.predict(xs)?;
                let (lml, grad) = gp.log_marginal_likelihood_with_gradient()?;
                let checks = [
                    ("mean", vec(&mean), vec(get(&f, &format!("{name}.mean")))),
                    ("var", vec(&var), vec(get(&f, &format!("{name}.var")))),
                    ("lml", vec![lml], vec(get(&f, &format!("{name}.lml")))),
                    ("lml grad", grad, vec(get(&f, &format!("{name}.lml_grad")))),
                ];
                for (what, got, want) in checks {
                    let e = rel(&got, &want);
                    assert!(e <= 1e-6, "{name} {what}: relative error {e:e}");
                }
                let (_, std) = gp.predict_std(xs)?;
                assert!(rel(&vec(&std.sqr()?), &vec(&var)) < 1e-12);
            }
        }
    }
    Ok(())
}

#[test]
fn f32_input_matches_f64() -> R<()> {
    let f = fixtures("gp");
    let (x, y, xs) = (
        get(&f, "fixed.x"),
        get(&f, "fixed.y"),
        get(&f, "fixed.x_star"),
    );
    let fit = |x: &Tensor, y: &Tensor| -> R<Vec<f64>> {
        let mut gp = fixed_gp(GpKernel::Rbf, &[0.0, 0.0], 1e-3, true);
        gp.fit(x, y)?;
        Ok(vec(&gp.predict(&xs.to_dtype(DType::F32)?)?.0))
    };
    let a = fit(x, y)?;
    let b = fit(&x.to_dtype(DType::F32)?, &y.to_dtype(DType::F32)?)?;
    assert!(rel(&b, &a) < 1e-4);
    Ok(())
}

#[test]
fn fitted_hyper_parameters_match_sklearn() -> R<()> {
    let f = fixtures("gp");
    for dim in ["1d", "3d"] {
        let (x, y) = (
            get(&f, &format!("fit.{dim}.x")),
            get(&f, &format!("fit.{dim}.y")),
        );
        let d = x.dim(1)?;
        for k in ["rbf", "matern"] {
            let cfg = GaussianProcessConfig::default()
                .with_kernel(kind(k))
                .with_length_scale(vec![1.0; d])
                .with_alpha(1e-2)
                .with_restarts(5, 0);
            let mut gp = gaussian_process(cfg)?;
            gp.fit(x, y)?;
            let want = vec(get(&f, &format!("fit.{dim}.{k}.theta")));
            for (i, (got, want)) in gp.theta().iter().zip(&want).enumerate() {
                let ratio = (got - want).exp();
                assert!(
                    (ratio - 1.0).abs() < 0.01,
                    "{dim} {k} hyper-parameter {i}: ours {} sklearn {}",
                    got.exp(),
                    want.exp()
                );
            }
            let lml = gp.log_marginal_likelihood()?;
            let want_lml = vec(get(&f, &format!("fit.{dim}.{k}.lml")))[0];
            assert!(
                lml >= want_lml - 1e-6 * want_lml.abs(),
                "{dim} {k}: lml {lml} < {want_lml}"
            );
        }
    }
    Ok(())
}

#[test]
fn lml_gradient_matches_finite_differences() -> R<()> {
    let f = fixtures("gp");
    let (x, y) = (get(&f, "fixed.x"), get(&f, "fixed.y"));
    for k in [GpKernel::Rbf, GpKernel::Matern52] {
        let theta = [0.3, -0.2, 0.4, 1.1];
        let lml_at = |t: &[f64]| -> R<f64> {
            let mut gp = fixed_gp(k, t, 1e-2, false);
            gp.fit(x, y)?;
            Ok(gp.log_marginal_likelihood()?)
        };
        let mut gp = fixed_gp(k, &theta, 1e-2, false);
        gp.fit(x, y)?;
        let (_, grad) = gp.log_marginal_likelihood_with_gradient()?;
        for i in 0..theta.len() {
            let h = 1e-5;
            let (mut p, mut m) = (theta, theta);
            p[i] += h;
            m[i] -= h;
            let fd = (lml_at(&p)? - lml_at(&m)?) / (2.0 * h);
            assert!(
                (fd - grad[i]).abs() <= 1e-6 * (1.0 + fd.abs()),
                "{k:?} d/dtheta_{i}: {} vs fd {fd}",
                grad[i]
            );
        }
    }
    Ok(())
}

#[test]
fn duplicate_points_without_noise_fit_with_jitter() -> R<()> {
    let x = Tensor::new(&[0.0f64, 1.0, 1.0, 2.0], &Device::Cpu)?;
    let y = Tensor::new(&[0.0f64, 1.0, 1.0, 0.5], &Device::Cpu)?;
    let mut gp = fixed_gp(GpKernel::Rbf, &[0.0, 0.0], 0.0, false);
    gp.fit(&x, &y)?; // singular without the jitter
    let (mean, _) = gp.predict(&Tensor::new(&[1.0f64], &Device::Cpu)?)?;
    assert!((vec(&mean)[0] - 1.0).abs() < 1e-3);
    Ok(())
}

#[test]
fn samples_are_seeded_and_follow_the_posterior() -> R<()> {
    let f = fixtures("gp");
    let (x, y) = (get(&f, "fit.1d.x"), get(&f, "fit.1d.y"));
    let mut gp = fixed_gp(GpKernel::Matern52, &[0.0, 0.8], 1e-2, true);
    gp.fit(x, y)?;
    // Query points include training points, where the posterior covariance is nearly singular.
    let q = Tensor::new(&[0.0f64, 0.3, 5.0, 10.0, 12.0], &Device::Cpu)?;
    let n = 4000;
    let s = gp.sample_y(&q, n, 7)?;
    assert_eq!(s.dims(), &[5, n]);
    assert_eq!(vec(&s), vec(&gp.sample_y(&q, n, 7)?));
    assert_ne!(vec(&s), vec(&gp.sample_y(&q, n, 8)?));
    let (mean, var) = gp.predict(&q)?;
    let (mean, var) = (vec(&mean), vec(&var));
    let got_mean = vec(&s.mean(1)?);
    let centred = s.broadcast_sub(&s.mean_keepdim(1)?)?;
    let got_var = vec(&centred.sqr()?.mean(1)?);
    for i in 0..5 {
        let sd = var[i].sqrt();
        assert!(
            (got_mean[i] - mean[i]).abs() < 5.0 * sd / (n as f64).sqrt() + 1e-4,
            "mean {i}"
        );
        assert!(
            (got_var[i] - var[i]).abs() < 0.1 * var[i] + 1e-4,
            "var {i}: {} vs {}",
            got_var[i],
            var[i]
        );
    }
    Ok(())
}

fn prior(name: &str) -> HyperPrior {
    match name {
        "lognormal_hvarfner" => HyperPrior::LogNormal {
            loc: std::f64::consts::SQRT_2 + 0.5 * 6f64.ln(),
            scale: 3f64.sqrt(),
        },
        "lognormal_narrow" => HyperPrior::LogNormal {
            loc: -1.0,
            scale: 0.5,
        },
        "gamma_3_6" => HyperPrior::Gamma {
            concentration: 3.0,
            rate: 6.0,
        },
        "gamma_2_0.15" => HyperPrior::Gamma {
            concentration: 2.0,
            rate: 0.15,
        },
        _ => HyperPrior::Gamma {
            concentration: 0.5,
            rate: 2.0,
        },
    }
}

/// The log density matches torch's `log_prob` at $e^t$ up to its constant (compared as
/// differences from the first grid point), and its derivative in $t$ matches autograd's.
#[test]
fn prior_log_density_matches_torch() {
    let f = fixtures("gp_prior");
    let t = vec(get(&f, "t"));
    for name in [
        "lognormal_hvarfner",
        "lognormal_narrow",
        "gamma_3_6",
        "gamma_2_0.15",
        "gamma_0.5_2",
    ] {
        let p = prior(name);
        let want = vec(get(&f, &format!("{name}.log_prob")));
        let want_grad = vec(get(&f, &format!("{name}.grad")));
        let (base, _) = p.log_density(t[0]);
        for i in 0..t.len() {
            let (lp, dlp) = p.log_density(t[i]);
            let (ours, theirs) = (lp - base, want[i] - want[0]);
            assert!(
                (ours - theirs).abs() <= 1e-9 * (1.0 + theirs.abs()),
                "{name} at t = {}: {ours} vs torch {theirs}",
                t[i]
            );
            assert!(
                (dlp - want_grad[i]).abs() <= 1e-9 * (1.0 + want_grad[i].abs()),
                "{name} d/dt at t = {}: {dlp} vs torch {}",
                t[i],
                want_grad[i]
            );
        }
    }
}

/// A maximum a posteriori fit stops where the log marginal likelihood's gradient balances the
/// log prior's, and a narrow prior pulls the length scales toward its centre.
#[test]
fn map_fit_balances_likelihood_and_prior() -> R<()> {
    let f = fixtures("gp");
    let (x, y) = (get(&f, "fixed.x"), get(&f, "fixed.y"));
    let ls_prior = HyperPrior::LogNormal {
        loc: -1.0,
        scale: 0.3,
    };
    let c_prior = HyperPrior::Gamma {
        concentration: 2.0,
        rate: 0.15,
    };
    let base = GaussianProcessConfig::default()
        .with_length_scale(vec![1.0; 3])
        .with_alpha(1e-2)
        .with_normalize_y(true);
    let mut ml = gaussian_process(base.clone())?;
    ml.fit(x, y)?;
    let mut map = gaussian_process(base.with_priors(Some(ls_prior), Some(c_prior)))?;
    map.fit(x, y)?;
    let (_, grad) = map.log_marginal_likelihood_with_gradient()?;
    for (i, t) in map.theta().iter().enumerate() {
        let p = if i == 0 { c_prior } else { ls_prior };
        let total = grad[i] + p.log_density(*t).1;
        assert!(
            total.abs() < 1e-4,
            "d/dtheta_{i} of the log posterior: {total}"
        );
    }
    for (l_map, l_ml) in map.length_scale().iter().zip(ml.length_scale()) {
        assert!(
            (l_map.ln() + 1.0).abs() <= (l_ml.ln() + 1.0).abs() + 1e-9,
            "MAP {l_map} is further from the prior's centre than ML {l_ml}"
        );
    }
    Ok(())
}
