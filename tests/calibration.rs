//! `tune::calibration` and `tune::uncertainty`: ECE and reliability data against numpy,
//! temperature scaling against torch's LBFGS fit, entropy and mutual information against their
//! closed forms, and MC dropout on a toy problem trained here (issue 16).

mod common;

use candle_core::{DType, Device, Module, ModuleT, Tensor, Var};
use candle_nn::{Dropout, Linear, Optimizer};
use candle_tricks::tune::calibration::{expected_calibration_error, Scores, TemperatureScaling};
use candle_tricks::tune::uncertainty::{
    ensemble_predict, mc_predict, predictive_uncertainty, PredictiveUncertainty,
};
use common::{field, fixtures, R};
use rand::{Rng, SeedableRng};

fn scalar(t: &Tensor) -> f64 {
    t.to_vec1::<f64>().unwrap()[0]
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
}

#[test]
fn ece_and_reliability_match_numpy() -> R<()> {
    let f = fixtures("calibration");
    for (case, n_bins, logits) in [
        ("logits10", 10, true),
        ("logits15", 15, true),
        ("probs", 7, false),
    ] {
        let scores = field(&f, case, "scores");
        let labels = field(&f, case, "labels");
        let s = if logits {
            Scores::Logits(scores)
        } else {
            Scores::Probs(scores)
        };
        let got = expected_calibration_error(s, labels, n_bins)?;
        let want = scalar(field(&f, case, "ece"));
        assert!(
            (got.ece - want).abs() <= 1e-6,
            "{case}: ece {} vs {want}",
            got.ece
        );
        assert_eq!(got.bins.len(), n_bins);
        let count = f64s(field(&f, case, "count"));
        let conf = f64s(field(&f, case, "confidence"));
        let acc = f64s(field(&f, case, "accuracy"));
        for (m, b) in got.bins.iter().enumerate() {
            assert_eq!(b.count as f64, count[m], "{case} bin {m} count");
            assert!(
                (b.confidence - conf[m]).abs() <= 1e-6,
                "{case} bin {m} confidence"
            );
            assert!(
                (b.accuracy - acc[m]).abs() <= 1e-6,
                "{case} bin {m} accuracy"
            );
            assert!((b.lower - m as f64 / n_bins as f64).abs() < 1e-12);
        }
        assert_eq!(
            got.bins.iter().map(|b| b.count).sum::<usize>(),
            labels.dim(0)?
        );
    }
    Ok(())
}

#[test]
fn ece_accepts_half_precision_and_u32_labels() -> R<()> {
    let f = fixtures("calibration");
    let z = field(&f, "logits10", "scores");
    let y = field(&f, "logits10", "labels");
    let full = expected_calibration_error(Scores::Logits(z), y, 10)?;
    let y32 = y.to_dtype(DType::U32)?;
    let same = expected_calibration_error(Scores::Logits(z), &y32, 10)?;
    assert_eq!(full, same);
    let half = expected_calibration_error(Scores::Logits(&z.to_dtype(DType::BF16)?), &y32, 10)?;
    assert!(
        (half.ece - full.ece).abs() < 0.02,
        "bf16 ece {} vs {}",
        half.ece,
        full.ece
    );
    Ok(())
}

#[test]
fn temperature_matches_torch_lbfgs_and_cuts_ece() -> R<()> {
    let f = fixtures("calibration");
    let (vz, vy) = (field(&f, "ts", "val_logits"), field(&f, "ts", "val_labels"));
    let (tz, ty) = (
        field(&f, "ts", "test_logits"),
        field(&f, "ts", "test_labels"),
    );
    let ts = TemperatureScaling::fit(vz, vy)?;
    let want = scalar(field(&f, "ts", "temperature"));
    let rel = (ts.temperature() - want).abs() / want;
    assert!(
        rel <= 1e-4,
        "T {} vs torch {want}: rel {rel:.2e}",
        ts.temperature()
    );

    let before = expected_calibration_error(Scores::Logits(tz), ty, 15)?.ece;
    let scaled = ts.apply(tz)?;
    let after = expected_calibration_error(Scores::Logits(&scaled), ty, 15)?.ece;
    println!(
        "held-out ECE: before {before:.4}, after {after:.4} (T = {:.4})",
        ts.temperature()
    );
    assert!((before - scalar(field(&f, "ts", "ece_before"))).abs() <= 1e-6);
    assert!((after - scalar(field(&f, "ts", "ece_after"))).abs() <= 1e-4);
    assert!(after <= 0.7 * before, "ECE {before} -> {after}: cut < 30 %");
    // Scaling never moves the argmax.
    assert_eq!(
        scaled.argmax(1)?.to_vec1::<u32>()?,
        tz.argmax(1)?.to_vec1::<u32>()?
    );
    Ok(())
}

#[test]
fn temperature_scaling_apply_keeps_dtype_and_clamps() -> R<()> {
    let dev = Device::Cpu;
    let ts = TemperatureScaling::new(2.0)?;
    let z = Tensor::new(&[[2f32, -4.0]], &dev)?.to_dtype(DType::F16)?;
    let y = ts.apply(&z)?;
    assert_eq!(y.dtype(), DType::F16);
    assert_eq!(y.to_dtype(DType::F32)?.to_vec2::<f32>()?, [[1.0, -2.0]]);
    // Every validation sample right: the NLL keeps falling as T -> 0; the fit stops at the bound.
    let z = Tensor::new(&[[3f32, 0.0], [0.0, 3.0]], &dev)?;
    let y = Tensor::new(&[0u32, 1], &dev)?;
    let fit = TemperatureScaling::fit(&z, &y)?;
    assert!((fit.temperature() - TemperatureScaling::MIN_TEMPERATURE).abs() < 1e-12);
    Ok(())
}

/// Closed forms: H(p) = -sum p log p, I = H(mean) - mean H(p_s), variance over samples.
#[test]
fn entropy_and_mutual_information_match_closed_forms() -> R<()> {
    let dev = Device::Cpu;
    let h = |p: &[f64]| -> f64 {
        -p.iter()
            .filter(|&&p| p > 0.0)
            .map(|p| p * p.ln())
            .sum::<f64>()
    };
    // Three inputs, two samples: disagreeing, one-hot disagreeing, agreeing uniform.
    let samples = [
        [[0.7, 0.2, 0.1], [1.0, 0.0, 0.0], [1.0 / 3.0; 3]],
        [[0.1, 0.2, 0.7], [0.0, 1.0, 0.0], [1.0 / 3.0; 3]],
    ];
    let probs = Tensor::new(&samples, &dev)?;
    let u = predictive_uncertainty(&probs)?;
    let entropy = f64s(&u.entropy);
    let expected = f64s(&u.expected_entropy);
    let mi = f64s(&u.mutual_information);
    let mean = u.mean.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let var = u.variance.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    for n in 0..3 {
        let (a, b) = (samples[0][n], samples[1][n]);
        let m: Vec<f64> = (0..3).map(|c| (a[c] + b[c]) / 2.0).collect();
        let v: Vec<f64> = (0..3).map(|c| ((a[c] - b[c]) / 2.0).powi(2)).collect();
        let (hm, eh) = (h(&m), (h(&a) + h(&b)) / 2.0);
        for c in 0..3 {
            assert!((mean[n][c] - m[c]).abs() < 1e-6);
            assert!((var[n][c] - v[c]).abs() < 1e-6);
        }
        assert!(
            (entropy[n] - hm).abs() < 1e-6,
            "H {n}: {} vs {hm}",
            entropy[n]
        );
        assert!((expected[n] - eh).abs() < 1e-6, "E[H] {n}");
        assert!(
            (mi[n] - (hm - eh)).abs() < 1e-6,
            "I {n}: {} vs {}",
            mi[n],
            hm - eh
        );
    }
    // The named cases: one-hot disagreement is all epistemic, uniform agreement none.
    assert!((mi[1] - 2f64.ln()).abs() < 1e-6 && expected[1].abs() < 1e-6);
    assert!((entropy[2] - 3f64.ln()).abs() < 1e-6 && mi[2].abs() < 1e-6);
    Ok(())
}

#[test]
fn ensemble_is_the_statistics_of_the_members_softmaxes() -> R<()> {
    let dev = Device::Cpu;
    let members: Vec<Tensor> = (0..4)
        .map(|k| {
            Tensor::arange(0f32, 15.0, &dev)?
                .reshape((5, 3))?
                .affine(0.3 * k as f64 - 0.5, k as f64)
        })
        .collect::<candle_core::Result<_>>()?;
    let got = ensemble_predict(&members)?;
    let probs = members
        .iter()
        .map(candle_nn::ops::softmax_last_dim)
        .collect::<candle_core::Result<Vec<_>>>()?;
    let want = predictive_uncertainty(&Tensor::stack(&probs, 0)?)?;
    let pairs = |u: &PredictiveUncertainty| {
        [
            u.mean.flatten_all().unwrap(),
            u.variance.flatten_all().unwrap(),
            u.entropy.clone(),
            u.expected_entropy.clone(),
            u.mutual_information.clone(),
        ]
    };
    for (a, b) in pairs(&got).iter().zip(pairs(&want).iter()) {
        common::assert_close("ensemble", a, b, 1e-6);
    }
    Ok(())
}

/// A 2 → 64 → 64 → 2 ReLU MLP with dropout after each hidden layer, initialised from a seed.
struct Mlp {
    layers: [Linear; 3],
    drop: Dropout,
    vars: Vec<Var>,
}

impl Mlp {
    fn new(rng: &mut rand::rngs::StdRng) -> R<Self> {
        let mut vars = Vec::new();
        let mut layer = |i: usize, o: usize| -> R<Linear> {
            let bound = (1.0 / i as f32).sqrt();
            let w: Vec<f32> = (0..i * o)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let w = Var::from_tensor(&Tensor::from_vec(w, (o, i), &Device::Cpu)?)?;
            let b = Var::zeros(o, DType::F32, &Device::Cpu)?;
            let l = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
            vars.extend([w, b]);
            Ok(l)
        };
        let layers = [layer(2, 64)?, layer(64, 64)?, layer(64, 2)?];
        Ok(Self {
            layers,
            drop: Dropout::new(0.3),
            vars,
        })
    }
}

impl ModuleT for Mlp {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let h = self
            .drop
            .forward_t(&self.layers[0].forward(x)?.relu()?, train)?;
        let h = self
            .drop
            .forward_t(&self.layers[1].forward(&h)?.relu()?, train)?;
        self.layers[2].forward(&h)
    }
}

/// Mean predictive entropy of `mc_predict` at `points`.
fn mean_entropy(model: &Mlp, points: &[[f32; 2]]) -> R<f64> {
    let x = Tensor::new(points.concat(), &Device::Cpu)?.reshape((points.len(), 2))?;
    let u = mc_predict(model, &x, 200)?;
    Ok(u.entropy.mean_all()?.to_scalar::<f32>()? as f64)
}

/// Two Gaussian blobs at (±2, 0); out-of-distribution points far away across the gap
/// (x = 0, |y| = 8 to 12), where the training data says nothing about the class.
#[test]
fn mc_dropout_is_more_uncertain_out_of_distribution() -> R<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let gauss = |rng: &mut rand::rngs::StdRng| -> f32 {
        let (u, v): (f32, f32) = (rng.random_range(f32::EPSILON..1.0), rng.random());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    let n = 200;
    let mut points = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i % 2) as u32;
        let cx = if class == 0 { -2.0 } else { 2.0 };
        points.push([cx + 0.5 * gauss(&mut rng), 0.5 * gauss(&mut rng)]);
        labels.push(class);
    }
    let x = Tensor::new(points.concat(), &Device::Cpu)?.reshape((n, 2))?;
    let y = Tensor::new(labels.as_slice(), &Device::Cpu)?;
    let model = Mlp::new(&mut rng)?;
    let mut opt = candle_nn::AdamW::new_lr(model.vars.clone(), 1e-2)?;
    for _ in 0..300 {
        let loss = candle_nn::loss::cross_entropy(&model.forward_t(&x, true)?, &y)?;
        opt.backward_step(&loss)?;
    }
    let ood: Vec<[f32; 2]> = [8f32, 10.0, 12.0]
        .iter()
        .flat_map(|&r| [[0.0, r], [0.0, -r], [0.5, r], [-0.5, -r]])
        .collect();
    let h_in = mean_entropy(&model, &points)?;
    let h_out = mean_entropy(&model, &ood)?;
    println!("MC dropout predictive entropy: in-distribution {h_in:.2e}, out {h_out:.4}");
    assert!(h_out >= 2.0 * h_in, "out {h_out} < 2 × in {h_in}");
    Ok(())
}
