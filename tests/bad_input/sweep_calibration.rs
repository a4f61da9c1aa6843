//! Bad input for calibration and predictive uncertainty (issue 16): zero bins, shape and dtype
//! mismatches, labels out of range, NaN logits or probabilities, zero samples or members.

use super::*;
use candle_tricks::tune::calibration::{expected_calibration_error, Scores, TemperatureScaling};
use candle_tricks::tune::uncertainty::{ensemble_predict, mc_predict, predictive_uncertainty};

const ECE: &str = "expected_calibration_error";
const TS: &str = "TemperatureScaling";

/// Labels `0, 1, 2, 0, …` of length `n` (u32).
fn labels(n: usize) -> Tensor {
    Tensor::from_vec((0..n as u32).map(|i| i % 3).collect(), n, &cpu()).unwrap()
}

/// `t((4, 3))` with one NaN.
fn with_nan() -> Tensor {
    let mut v = t((4, 3)).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[5] = f32::NAN;
    Tensor::from_vec(v, (4, 3), &cpu()).unwrap()
}

pub(super) fn calibration_cases() -> Vec<Case> {
    let mut c = Cases::new("calibration");
    c.err("ece: n_bins 0", ECE, || {
        expected_calibration_error(Scores::Logits(&t((4, 3))), &labels(4), 0)?;
        Ok(())
    });
    c.err("ece: labels length mismatch", ECE, || {
        expected_calibration_error(Scores::Logits(&t((4, 3))), &labels(5), 10)?;
        Ok(())
    });
    c.err("ece: rank-1 logits", ECE, || {
        expected_calibration_error(Scores::Logits(&t(4)), &labels(4), 10)?;
        Ok(())
    });
    c.err("ece: empty batch", ECE, || {
        expected_calibration_error(Scores::Logits(&t((0, 3))), &labels(0), 10)?;
        Ok(())
    });
    c.err("ece: label out of range", ECE, || {
        let y = Tensor::new(&[0u32, 1, 3, 2], &cpu())?;
        expected_calibration_error(Scores::Logits(&t((4, 3))), &y, 10)?;
        Ok(())
    });
    c.err("ece: negative i64 label", ECE, || {
        let y = Tensor::new(&[0i64, -1, 2, 2], &cpu())?;
        expected_calibration_error(Scores::Logits(&t((4, 3))), &y, 10)?;
        Ok(())
    });
    c.err("ece: f32 labels", ECE, || {
        expected_calibration_error(Scores::Logits(&t((4, 3))), &t(4), 10)?;
        Ok(())
    });
    c.err("ece: u32 logits", ECE, || {
        let z = Tensor::zeros((4, 3), DType::U32, &cpu())?;
        expected_calibration_error(Scores::Logits(&z), &labels(4), 10)?;
        Ok(())
    });
    c.err("ece: NaN logits", ECE, || {
        expected_calibration_error(Scores::Logits(&with_nan()), &labels(4), 10)?;
        Ok(())
    });
    c.err("ece: probs that do not sum to 1", ECE, || {
        expected_calibration_error(Scores::Probs(&tpos((4, 3))), &labels(4), 10)?;
        Ok(())
    });
    c.err("ece: negative probs", ECE, || {
        let p = Tensor::new(&[[1.5f32, -0.5, 0.0]], &cpu())?;
        expected_calibration_error(Scores::Probs(&p), &labels(1), 10)?;
        Ok(())
    });
    c.val("ece: non-contiguous logits", || {
        let z = noncontig((4, 3));
        let got = expected_calibration_error(Scores::Logits(&z), &labels(4), 5)?;
        let want = expected_calibration_error(Scores::Logits(&z.contiguous()?), &labels(4), 5)?;
        ensure(got == want, "non-contiguous and contiguous differ")
    });
    c.err("temperature: zero", TS, || {
        TemperatureScaling::new(0.0)?;
        Ok(())
    });
    c.err("temperature: NaN", TS, || {
        TemperatureScaling::new(f64::NAN)?;
        Ok(())
    });
    c.err("temperature fit: NaN logits", TS, || {
        TemperatureScaling::fit(&with_nan(), &labels(4))?;
        Ok(())
    });
    c.err("temperature fit: label out of range", TS, || {
        TemperatureScaling::fit(&t((4, 3)), &Tensor::new(&[0u32, 1, 2, 7], &cpu())?)?;
        Ok(())
    });
    c.err("temperature fit: labels shape", TS, || {
        TemperatureScaling::fit(&t((4, 3)), &labels(3))?;
        Ok(())
    });
    c.err("temperature apply: integer logits", TS, || {
        let z = Tensor::zeros((2, 3), DType::U8, &cpu())?;
        TemperatureScaling::new(1.5)?.apply(&z)?;
        Ok(())
    });
    c.err("mc_predict: n_samples 0", "mc_predict", || {
        let model = candle_nn::Dropout::new(0.5);
        mc_predict(&model, &t((4, 3)), 0)?;
        Ok(())
    });
    c.err("mc_predict: NaN logits", "mc_predict", || {
        let model = candle_nn::Dropout::new(0.0);
        mc_predict(&model, &with_nan(), 3)?;
        Ok(())
    });
    c.err("mc_predict: rank-3 output", "mc_predict", || {
        let model = candle_nn::Dropout::new(0.5);
        mc_predict(&model, &t((2, 4, 3)), 3)?;
        Ok(())
    });
    c.err("ensemble: no members", "ensemble_predict", || {
        ensemble_predict(&[])?;
        Ok(())
    });
    c.err("ensemble: member shapes differ", "ensemble_predict", || {
        ensemble_predict(&[t((4, 3)), t((4, 2))])?;
        Ok(())
    });
    c.err("ensemble: zero classes", "ensemble_predict", || {
        ensemble_predict(&[t((4, 0))])?;
        Ok(())
    });
    c.err("ensemble: NaN member", "ensemble_predict", || {
        ensemble_predict(&[t((4, 3)), with_nan()])?;
        Ok(())
    });
    c.err(
        "predictive_uncertainty: rank 2",
        "predictive_uncertainty",
        || {
            predictive_uncertainty(&t((4, 3)))?;
            Ok(())
        },
    );
    c.err(
        "predictive_uncertainty: not distributions",
        "predictive_uncertainty",
        || {
            predictive_uncertainty(&tpos((2, 4, 3)))?;
            Ok(())
        },
    );
    c.err(
        "predictive_uncertainty: NaN",
        "predictive_uncertainty",
        || {
            predictive_uncertainty(&with_nan().unsqueeze(0)?)?;
            Ok(())
        },
    );
    c.val(
        "predictive_uncertainty: one sample has no mutual information",
        || {
            let p = candle_nn::ops::softmax_last_dim(&t((1, 4, 3)))?;
            let u = predictive_uncertainty(&p)?;
            let mi = u.mutual_information.max_all()?.to_scalar::<f32>()?;
            ensure(mi.abs() < 1e-6, format!("mutual information {mi}"))
        },
    );
    c.list
}
