//! Bad input for the semi-supervised losses: thresholds outside [0, 1] or NaN, logits that are
//! not `(N, C)` or empty, views that differ in shape or dtype, integer logits, NaN logits on the
//! pseudo-label side, and ramp-up arguments that are not finite.

use super::*;
use candle_tricks::train::{
    fixmatch_loss, mean_teacher_consistency, pseudo_label_loss, sigmoid_rampup,
};

const PL: &str = "pseudo_label_loss";
const FM: &str = "fixmatch_loss";
const MT: &str = "mean_teacher_consistency";

/// `t((4, 3))` with one NaN.
fn with_nan() -> Tensor {
    let mut v = t((4, 3)).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[5] = f32::NAN;
    Tensor::from_vec(v, (4, 3), &cpu()).unwrap()
}

pub(super) fn semi_supervised_cases() -> Vec<Case> {
    let mut c = Cases::new("semi_supervised");
    for threshold in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
        c.err(
            &format!("pseudo_label_loss(threshold {threshold})"),
            PL,
            move || {
                pseudo_label_loss(&t((4, 3)), threshold)?;
                Ok(())
            },
        );
        c.err(
            &format!("fixmatch_loss(threshold {threshold})"),
            FM,
            move || {
                fixmatch_loss(&t((4, 3)), &t((4, 3)), threshold)?;
                Ok(())
            },
        );
    }
    for (name, shape) in [("rank 1", vec![12]), ("rank 3", vec![2, 2, 3])] {
        c.err(
            &format!("pseudo_label_loss({name} logits)"),
            PL,
            move || {
                pseudo_label_loss(&t(shape), 0.9)?;
                Ok(())
            },
        );
    }
    c.err("pseudo_label_loss(empty batch)", PL, || {
        pseudo_label_loss(&t((0, 3)), 0.9)?;
        Ok(())
    });
    c.err("pseudo_label_loss(zero classes)", PL, || {
        pseudo_label_loss(&t((4, 0)), 0.9)?;
        Ok(())
    });
    c.err("pseudo_label_loss(u32 logits)", PL, || {
        pseudo_label_loss(&Tensor::zeros((4, 3), DType::U32, &cpu())?, 0.9)?;
        Ok(())
    });
    c.err("pseudo_label_loss(NaN logits)", PL, || {
        pseudo_label_loss(&with_nan(), 0.9)?;
        Ok(())
    });
    c.err("fixmatch_loss(batch mismatch)", FM, || {
        fixmatch_loss(&t((4, 3)), &t((5, 3)), 0.9)?;
        Ok(())
    });
    c.err("fixmatch_loss(class mismatch)", FM, || {
        fixmatch_loss(&t((4, 3)), &t((4, 4)), 0.9)?;
        Ok(())
    });
    c.err("fixmatch_loss(dtype mismatch)", FM, || {
        fixmatch_loss(&t((4, 3)), &t((4, 3)).to_dtype(DType::F16)?, 0.9)?;
        Ok(())
    });
    c.err("fixmatch_loss(i64 logits)", FM, || {
        let x = Tensor::zeros((4, 3), DType::I64, &cpu())?;
        fixmatch_loss(&x, &x, 0.9)?;
        Ok(())
    });
    c.err("fixmatch_loss(NaN weak logits)", FM, || {
        fixmatch_loss(&with_nan(), &t((4, 3)), 0.9)?;
        Ok(())
    });
    c.val("fixmatch_loss(NaN strong logits) propagates NaN", || {
        let out = fixmatch_loss(&t((4, 3)), &with_nan(), 0.0)?;
        let loss = out.loss.to_scalar::<f32>()?;
        if !loss.is_nan() {
            return Err(Got::Wrong(format!("loss {loss}, expected NaN")));
        }
        Ok(())
    });
    c.err("mean_teacher_consistency(shape mismatch)", MT, || {
        mean_teacher_consistency(&t((4, 3)), &t((3, 4)))?;
        Ok(())
    });
    c.err("mean_teacher_consistency(dtype mismatch)", MT, || {
        mean_teacher_consistency(&t((4, 3)), &t((4, 3)).to_dtype(DType::BF16)?)?;
        Ok(())
    });
    c.err("mean_teacher_consistency(u8 logits)", MT, || {
        let x = Tensor::zeros((4, 3), DType::U8, &cpu())?;
        mean_teacher_consistency(&x, &x)?;
        Ok(())
    });
    c.err("mean_teacher_consistency(empty batch)", MT, || {
        mean_teacher_consistency(&t((0, 3)), &t((0, 3)))?;
        Ok(())
    });
    for (current, length) in [
        (f64::NAN, 10.0),
        (1.0, -1.0),
        (1.0, f64::NAN),
        (f64::INFINITY, 5.0),
    ] {
        c.err(
            &format!("sigmoid_rampup({current}, {length})"),
            "sigmoid_rampup",
            move || {
                sigmoid_rampup(current, length)?;
                Ok(())
            },
        );
    }
    c.list
}
