//! Bad input for gradient reversal, the DANN λ ramp and the meta-learning steps: NaN / negative
//! strengths, out-of-range progress, zero inner steps, non-positive rates, empty variable lists,
//! integer inputs and NaN losses (which must also leave the weights as they were).

use super::*;
use candle_tricks::train::{dann_lambda, fomaml_step, grad_reverse, reptile_step, GradReverse};

/// A one-element f32 variable holding 1.
fn one() -> Var {
    Var::new(&[1f32], &cpu()).unwrap()
}

/// The task loss `sum(w²)`.
fn square(w: &Var) -> candle_core::Result<Tensor> {
    w.as_tensor().sqr()?.sum_all()
}

pub(super) fn train16_cases() -> Vec<Case> {
    let mut c = Cases::new("train16");
    for lambda in [f64::NAN, f64::INFINITY, -1.0] {
        c.err(
            &format!("grad_reverse(lambda {lambda})"),
            "grad_reverse",
            move || {
                grad_reverse(&Tensor::new(&[1f32], &cpu())?, lambda)?;
                Ok(())
            },
        );
        c.err(
            &format!("GradReverse::new({lambda})"),
            "GradReverse",
            move || {
                GradReverse::new(lambda)?;
                Ok(())
            },
        );
    }
    c.err("GradReverse::set_lambda(NaN)", "GradReverse", || {
        GradReverse::new(1.0)?.set_lambda(f64::NAN)?;
        Ok(())
    });
    c.err("grad_reverse(u32 input)", "grad_reverse", || {
        grad_reverse(&Tensor::new(&[1u32], &cpu())?, 1.0)?;
        Ok(())
    });
    c.err("GradReverse forward(i64 input)", "GradReverse", || {
        GradReverse::new(1.0)?.forward(&Tensor::new(&[1i64], &cpu())?)?;
        Ok(())
    });
    c.val("grad_reverse(empty input)", || {
        let y = grad_reverse(&Tensor::zeros((0, 3), DType::F32, &cpu())?, 1.0)?;
        if y.dims() != [0, 3] {
            return Err(Got::Wrong(format!("shape {:?}", y.dims())));
        }
        Ok(())
    });
    for (p, g) in [
        (f64::NAN, 10.0),
        (-0.1, 10.0),
        (1.5, 10.0),
        (0.5, 0.0),
        (0.5, f64::NAN),
    ] {
        c.err(
            &format!("dann_lambda({p}, {g})"),
            "dann_lambda",
            move || {
                dann_lambda(p, g)?;
                Ok(())
            },
        );
    }
    c.err("reptile_step(no vars)", "reptile_step", || {
        let w = one();
        reptile_step(&[], |_| square(&w), 1, 0.1, 0.1)?;
        Ok(())
    });
    c.err("reptile_step(inner_steps 0)", "reptile_step", || {
        let w = one();
        reptile_step(std::slice::from_ref(&w), |_| square(&w), 0, 0.1, 0.1)?;
        Ok(())
    });
    for (inner_lr, outer_lr) in [(0.0, 0.1), (-0.1, 0.1), (f64::NAN, 0.1), (0.1, 0.0)] {
        let name = format!("reptile_step(inner_lr {inner_lr}, outer_lr {outer_lr})");
        c.err(&name, "reptile_step", move || {
            let w = one();
            reptile_step(
                std::slice::from_ref(&w),
                |_| square(&w),
                1,
                inner_lr,
                outer_lr,
            )?;
            Ok(())
        });
    }
    c.err("reptile_step(u32 var)", "reptile_step", || {
        let w = Var::new(&[1u32], &cpu())?;
        let loss = || Tensor::new(1f32, &cpu());
        reptile_step(&[w], |_| loss(), 1, 0.1, 0.1)?;
        Ok(())
    });
    c.err(
        "reptile_step(NaN loss): weights kept",
        "reptile_step",
        || {
            let w = one();
            let r = reptile_step(
                std::slice::from_ref(&w),
                |_| square(&w)?.affine(f64::NAN, 0.),
                2,
                0.1,
                1.,
            );
            if w.to_vec1::<f32>()? != [1.0] {
                return Err(Got::Wrong("weights changed".into()));
            }
            r?;
            Ok(())
        },
    );
    c.err("fomaml_step(inner_steps 0)", "fomaml_step", || {
        let w = one();
        let mut sgd = candle_nn::SGD::new(vec![w.clone()], 0.1)?;
        fomaml_step(
            std::slice::from_ref(&w),
            |_| square(&w),
            || square(&w),
            0,
            0.1,
            &mut sgd,
        )?;
        Ok(())
    });
    c.err("fomaml_step(inner_lr -1)", "fomaml_step", || {
        let w = one();
        let mut sgd = candle_nn::SGD::new(vec![w.clone()], 0.1)?;
        fomaml_step(
            std::slice::from_ref(&w),
            |_| square(&w),
            || square(&w),
            1,
            -1.0,
            &mut sgd,
        )?;
        Ok(())
    });
    c.err(
        "fomaml_step(Inf query loss): weights kept",
        "fomaml_step",
        || {
            let w = one();
            let mut sgd = candle_nn::SGD::new(vec![w.clone()], 0.1)?;
            let query = || square(&w)?.affine(f64::INFINITY, 0.);
            let r = fomaml_step(
                std::slice::from_ref(&w),
                |_| square(&w),
                query,
                1,
                0.1,
                &mut sgd,
            );
            if w.to_vec1::<f32>()? != [1.0] {
                return Err(Got::Wrong("weights changed".into()));
            }
            r?;
            Ok(())
        },
    );
    c.list
}
