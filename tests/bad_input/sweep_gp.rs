//! Bad input for `tune::gp`.

use super::*;
use candle_tricks::tune::gp::{gaussian_process, GaussianProcessConfig, GpKernel, HyperPrior};

fn xy(n: usize, d: usize) -> (Tensor, Tensor) {
    let x: Vec<f64> = (0..n * d).map(|i| (i as f64 * 0.37).sin()).collect();
    let y: Vec<f64> = (0..n).map(|i| (i as f64).cos()).collect();
    (
        Tensor::from_vec(x, (n, d), &cpu()).unwrap(),
        Tensor::from_vec(y, n, &cpu()).unwrap(),
    )
}

fn fixed() -> GaussianProcessConfig {
    GaussianProcessConfig::default().with_optimize(false)
}

pub(super) fn gp_cases() -> Vec<Case> {
    let mut c = Cases::new("gp");
    let gp = "GaussianProcess";
    let cfg_err = |c: &mut Cases, name: &str, cfg: GaussianProcessConfig| {
        c.err(name, gp, move || {
            gaussian_process(cfg)?;
            Ok(())
        });
    };
    let base = GaussianProcessConfig::default;
    cfg_err(
        &mut c,
        "gp: length scale 0",
        base().with_length_scale(vec![1.0, 0.0]),
    );
    cfg_err(
        &mut c,
        "gp: length scale -1",
        base().with_length_scale(vec![-1.0]),
    );
    cfg_err(
        &mut c,
        "gp: length scale NaN",
        base().with_length_scale(vec![f64::NAN]),
    );
    cfg_err(
        &mut c,
        "gp: no length scale",
        base().with_length_scale(vec![]),
    );
    cfg_err(&mut c, "gp: constant 0", base().with_constant_value(0.0));
    cfg_err(
        &mut c,
        "gp: constant Inf",
        base().with_constant_value(f64::INFINITY),
    );
    cfg_err(&mut c, "gp: alpha -1e-3", base().with_alpha(-1e-3));
    cfg_err(
        &mut c,
        "gp: length-scale prior shape 0",
        base().with_priors(
            Some(HyperPrior::Gamma {
                concentration: 0.0,
                rate: 6.0,
            }),
            None,
        ),
    );
    cfg_err(
        &mut c,
        "gp: signal prior loc inf",
        base().with_priors(
            None,
            Some(HyperPrior::LogNormal {
                loc: f64::INFINITY,
                scale: 1.0,
            }),
        ),
    );
    cfg_err(&mut c, "gp: alpha NaN", base().with_alpha(f64::NAN));
    let reversed = GaussianProcessConfig {
        length_scale_bounds: (10.0, 0.1),
        ..base()
    };
    cfg_err(&mut c, "gp: length-scale bounds reversed", reversed);
    let zero_bound = GaussianProcessConfig {
        constant_value_bounds: (0.0, 1.0),
        ..base()
    };
    cfg_err(&mut c, "gp: constant bound 0", zero_bound);

    let fit_err = |c: &mut Cases, name: &str, cfg: GaussianProcessConfig, x: Tensor, y: Tensor| {
        c.err(name, gp, move || {
            gaussian_process(cfg)?.fit(&x, &y)?;
            Ok(())
        });
    };
    let (x0, y0) = xy(0, 2);
    fit_err(&mut c, "gp fit: empty data", base(), x0, y0);
    let (x, _) = xy(5, 2);
    let (_, y4) = xy(4, 2);
    fit_err(&mut c, "gp fit: x/y length mismatch", base(), x, y4);
    let (x, y) = xy(5, 2);
    let x_nan = x
        .slice_assign(&[0..1, 0..1], &Tensor::new(&[[f64::NAN]], &cpu()).unwrap())
        .unwrap();
    fit_err(&mut c, "gp fit: NaN in x", base(), x_nan, y.clone());
    let y_inf = Tensor::new(&[0.0, 1.0, f64::INFINITY, 3.0, 4.0], &cpu()).unwrap();
    fit_err(&mut c, "gp fit: Inf in y", base(), x.clone(), y_inf);
    fit_err(
        &mut c,
        "gp fit: y rank 2",
        base(),
        x.clone(),
        y.reshape((5, 1)).unwrap(),
    );
    fit_err(
        &mut c,
        "gp fit: x rank 3",
        base(),
        x.reshape((5, 2, 1)).unwrap(),
        y.clone(),
    );
    let xi = x.to_dtype(DType::U32).unwrap();
    fit_err(&mut c, "gp fit: x u32", base(), xi, y.clone());
    let three = base().with_length_scale(vec![1.0, 1.0, 1.0]);
    fit_err(
        &mut c,
        "gp fit: 3 length scales for 2 features",
        three,
        x.clone(),
        y.clone(),
    );
    // +Inf on the diagonal: no jitter can rescue it.
    let huge = fixed().with_constant_value(1e308).with_alpha(1e308);
    fit_err(
        &mut c,
        "gp fit: kernel not PD after jitter",
        huge,
        x.clone(),
        y.clone(),
    );

    let (xp, yp) = (x.clone(), y.clone());
    c.err("gp predict: before fit", gp, move || {
        gaussian_process(base())?.predict(&xp)?;
        Ok(())
    });
    let (xp, yp2) = (x.clone(), yp.clone());
    c.err("gp predict: 3 features for 2", gp, move || {
        let mut m = gaussian_process(fixed())?;
        m.fit(&xp, &yp2)?;
        m.predict(&Tensor::zeros((2, 3), DType::F64, &cpu())?)?;
        Ok(())
    });
    let (xp, yp2) = (x.clone(), yp.clone());
    c.err("gp sample_y: NaN query", gp, move || {
        let mut m = gaussian_process(fixed())?;
        m.fit(&xp, &yp2)?;
        m.sample_y(&Tensor::new(&[[f64::NAN, 0.0]], &cpu())?, 3, 0)?;
        Ok(())
    });
    c.val(
        "gp: equal bounds keep the hyper-parameter fixed",
        move || {
            let cfg = GaussianProcessConfig {
                kernel: GpKernel::Rbf,
                constant_value: 2.0,
                constant_value_bounds: (2.0, 2.0),
                ..base()
            };
            let mut m = gaussian_process(cfg)?;
            m.fit(&x, &yp)?;
            if (m.constant_value() - 2.0).abs() > 1e-12 {
                return Err(Got::Wrong(format!(
                    "constant moved to {}",
                    m.constant_value()
                )));
            }
            Ok(())
        },
    );
    c.list
}
