//! Pseudo-labelling, FixMatch's unlabeled loss and the mean-teacher consistency against a
//! hand-written PyTorch reference (values, masks, pseudo-labels and gradients, f64 and f32),
//! f16 / bf16 against f32, the threshold's ends, no gradient on the label side, and the
//! sigmoid ramp-up.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_tricks::loss::{cross_entropy, CrossEntropyConfig};
use candle_tricks::train::{
    fixmatch_loss, mean_teacher_consistency, pseudo_label_loss, sigmoid_rampup,
};
use candle_tricks::Error;
use common::*;

/// Values and gradients agree with PyTorch's float64 run to this (max abs error / (1 + max)).
const TOL: f64 = 1e-6;

/// The fixture tensor `case.what` in `dtype`.
fn input(f: &Fixtures, case: &str, what: &str, dtype: DType) -> R<Tensor> {
    Ok(field(f, case, what).to_dtype(dtype)?)
}

/// The gradient of `loss` with respect to `v`, zeros when `v` is not in the graph.
fn grad_of(loss: &Tensor, v: &Var) -> R<Tensor> {
    let g = loss.backward()?;
    Ok(match g.get(v.as_tensor()) {
        Some(g) => g.clone(),
        None => v.as_tensor().zeros_like()?,
    })
}

#[test]
fn pseudo_labels_match_pytorch() -> R<()> {
    let f = fixtures("semi_supervised");
    for dtype in [DType::F64, DType::F32] {
        let x = Var::from_tensor(&input(&f, "pseudo", "x", dtype)?)?;
        let out = pseudo_label_loss(x.as_tensor(), 0.6)?;
        assert_eq!(out.loss.dtype(), dtype);
        let what = format!("pseudo {dtype:?}");
        assert_close(
            &format!("{what} loss"),
            &out.loss,
            get(&f, "pseudo.loss"),
            TOL,
        );
        assert_close(
            &format!("{what} mask"),
            &out.mask,
            get(&f, "pseudo.mask"),
            0.0,
        );
        let labels = out.pseudo_labels.to_dtype(DType::I64)?;
        assert_close(
            &format!("{what} labels"),
            &labels,
            get(&f, "pseudo.labels"),
            0.0,
        );
        let mask = get(&f, "pseudo.mask").to_vec1::<f64>()?;
        let rate = mask.iter().sum::<f64>() / mask.len() as f64;
        assert_eq!(out.mask_rate, rate, "{what}");
        assert!(
            rate > 0.0 && rate < 1.0,
            "the fixture masks some rows, not all"
        );
        let gx = grad_of(&out.loss, &x)?;
        assert_close(&format!("{what} gx"), &gx, get(&f, "pseudo.gx"), TOL);
    }
    Ok(())
}

#[test]
fn fixmatch_matches_pytorch_and_leaves_the_weak_view_without_gradient() -> R<()> {
    let f = fixtures("semi_supervised");
    for dtype in [DType::F64, DType::F32] {
        let weak = Var::from_tensor(&input(&f, "fixmatch", "weak", dtype)?)?;
        let strong = Var::from_tensor(&input(&f, "fixmatch", "strong", dtype)?)?;
        let out = fixmatch_loss(weak.as_tensor(), strong.as_tensor(), 0.8)?;
        let what = format!("fixmatch {dtype:?}");
        assert_close(
            &format!("{what} loss"),
            &out.loss,
            get(&f, "fixmatch.loss"),
            TOL,
        );
        assert_close(
            &format!("{what} mask"),
            &out.mask,
            get(&f, "fixmatch.mask"),
            0.0,
        );
        let labels = out.pseudo_labels.to_dtype(DType::I64)?;
        assert_close(
            &format!("{what} labels"),
            &labels,
            get(&f, "fixmatch.labels"),
            0.0,
        );
        let grads = out.loss.backward()?;
        assert!(grads.get(weak.as_tensor()).is_none(), "{what}: weak view");
        let gs = grads
            .get(strong.as_tensor())
            .ok_or("no gradient for the strong view")?;
        assert_close(
            &format!("{what} gstrong"),
            gs,
            get(&f, "fixmatch.gstrong"),
            TOL,
        );
    }
    Ok(())
}

#[test]
fn mean_teacher_matches_pytorch_and_leaves_the_teacher_without_gradient() -> R<()> {
    let f = fixtures("semi_supervised");
    for dtype in [DType::F64, DType::F32] {
        let student = Var::from_tensor(&input(&f, "teacher", "student", dtype)?)?;
        let teacher = Var::from_tensor(&input(&f, "teacher", "teacher", dtype)?)?;
        let cost = mean_teacher_consistency(student.as_tensor(), teacher.as_tensor())?;
        assert_eq!(cost.dtype(), dtype);
        let what = format!("mean teacher {dtype:?}");
        assert_close(&format!("{what} cost"), &cost, get(&f, "teacher.cost"), TOL);
        let grads = cost.backward()?;
        assert!(grads.get(teacher.as_tensor()).is_none(), "{what}: teacher");
        let gs = grads
            .get(student.as_tensor())
            .ok_or("no gradient for the student")?;
        assert_close(
            &format!("{what} gstudent"),
            gs,
            get(&f, "teacher.gstudent"),
            TOL,
        );
    }
    Ok(())
}

#[test]
fn half_precision_matches_f32_on_the_same_rounded_values() -> R<()> {
    let f = fixtures("semi_supervised");
    for dtype in [DType::F16, DType::BF16] {
        let round = |case: &str, what: &str| -> R<(Tensor, Tensor)> {
            let h = input(&f, case, what, dtype)?;
            let full = h.to_dtype(DType::F32)?;
            Ok((h, full))
        };
        let (weak_h, weak) = round("fixmatch", "weak")?;
        let (strong_h, strong) = round("fixmatch", "strong")?;
        let half = fixmatch_loss(&weak_h, &strong_h, 0.8)?;
        let full = fixmatch_loss(&weak, &strong, 0.8)?;
        assert_eq!(half.loss.dtype(), dtype);
        assert_close(&format!("fixmatch {dtype:?}"), &half.loss, &full.loss, 1e-2);
        assert_eq!(half.mask.to_vec1::<f32>()?, full.mask.to_vec1::<f32>()?);
        let (s_h, s) = round("teacher", "student")?;
        let (t_h, t) = round("teacher", "teacher")?;
        let half = mean_teacher_consistency(&s_h, &t_h)?;
        let full = mean_teacher_consistency(&s, &t)?;
        assert_eq!(half.dtype(), dtype);
        assert_close(&format!("mean teacher {dtype:?}"), &half, &full, 1e-3);
        // The gradient reaches half-precision logits in their dtype.
        let v = Var::from_tensor(&s_h)?;
        let g = grad_of(&mean_teacher_consistency(v.as_tensor(), &t_h)?, &v)?;
        assert_eq!(g.dtype(), dtype);
    }
    Ok(())
}

#[test]
fn threshold_zero_is_plain_cross_entropy_and_threshold_one_masks_everything() -> R<()> {
    let f = fixtures("semi_supervised");
    let x = input(&f, "pseudo", "x", DType::F32)?;
    let all = pseudo_label_loss(&x, 0.0)?;
    assert_eq!(all.mask_rate, 1.0);
    let ce = cross_entropy(&x, &all.pseudo_labels, &CrossEntropyConfig::default())?;
    assert_close("threshold 0", &all.loss, &ce, 1e-6);
    let none = pseudo_label_loss(&x, 1.0)?;
    assert_eq!(none.mask_rate, 0.0);
    assert_eq!(none.loss.to_scalar::<f32>()?, 0.0);
    Ok(())
}

#[test]
fn non_finite_label_logits_are_an_error_not_a_silent_mask() -> R<()> {
    let mut rows = vec![0f32; 12];
    rows[4] = f32::NAN;
    let weak = Tensor::from_vec(rows, (4, 3), &Device::Cpu)?;
    let strong = Tensor::zeros((4, 3), DType::F32, &Device::Cpu)?;
    let e = fixmatch_loss(&weak, &strong, 0.9).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFinite {
                block: "fixmatch_loss",
                ..
            }
        ),
        "{e}"
    );
    Ok(())
}

#[test]
fn rampup_matches_the_reference_formula() -> R<()> {
    let f = fixtures("semi_supervised");
    let current = get(&f, "rampup.current").to_vec1::<f64>()?;
    let value = get(&f, "rampup.value").to_vec1::<f64>()?;
    for (c, v) in current.iter().zip(&value) {
        let got = sigmoid_rampup(*c, 80.0)?;
        assert!((got - v).abs() <= 1e-15, "ramp-up at {c}: {got} vs {v}");
    }
    Ok(())
}
