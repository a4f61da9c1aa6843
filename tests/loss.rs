//! The losses against PyTorch (`tests/fixtures/gen_loss.py`): forward and gradients for every
//! reduction and option, the fused cross-entropy against its composition and finite
//! differences, large logits, f16 / bf16, and bad input.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_tricks::loss::{self, CrossEntropyConfig, Reduction};
use candle_tricks::ops::{self, with_backend, Backend};
use candle_tricks::Error;
use common::*;

/// f32 tolerance against PyTorch (relative, see `rel_err`).
const TOL: f64 = 1e-6;

fn reduction(code: f64) -> Reduction {
    match code as i64 {
        0 => Reduction::Mean,
        1 => Reduction::Sum,
        2 => Reduction::None,
        _ => Reduction::BatchMean,
    }
}

fn cfg_of(f: &Fixtures, case: &str) -> Vec<f64> {
    field(f, case, "cfg").to_vec1::<f64>().expect("cfg")
}

fn opt_field(f: &Fixtures, case: &str, what: &str) -> Option<Tensor> {
    f.get(&format!("{case}.{what}")).cloned()
}

/// Runs `op` on Vars of `inputs`; returns `y` and the gradient of `sum(y * gy)` for each.
fn run(
    inputs: &[Tensor],
    gy: &Tensor,
    op: impl Fn(&[Tensor]) -> candle_tricks::Result<Tensor>,
) -> R<(Tensor, Vec<Option<Tensor>>)> {
    let vars: Vec<Var> = inputs
        .iter()
        .map(Var::from_tensor)
        .collect::<Result<_, _>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = op(&ts)?;
    let grads = (&y * gy.to_dtype(y.dtype())?)?.sum_all()?.backward()?;
    Ok((y, ts.iter().map(|t| grads.get(t).cloned()).collect()))
}

/// Checks `y` and the gradients wrt the inputs named in `inputs` (fixture `g<name>`).
fn check_case(
    f: &Fixtures,
    case: &str,
    inputs: &[&str],
    op: impl Fn(&[Tensor]) -> candle_tricks::Result<Tensor>,
) -> R<()> {
    let ts: Vec<Tensor> = inputs.iter().map(|n| field(f, case, n).clone()).collect();
    let (y, gs) = run(&ts, field(f, case, "gy"), op)?;
    assert_close(&format!("{case} y"), &y, field(f, case, "y"), TOL);
    for (name, g) in inputs.iter().zip(gs) {
        if let Some(want) = opt_field(f, case, &format!("g{name}")) {
            let g = g.ok_or(format!("{case}: no gradient for {name}"))?;
            assert_close(&format!("{case} g{name}"), &g, &want, TOL);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy
// ---------------------------------------------------------------------------------------------

fn ce_cases(f: &Fixtures) -> Vec<String> {
    let mut cases: Vec<String> = f
        .keys()
        .filter_map(|k| {
            k.strip_prefix("ce.")?
                .strip_suffix(".cfg")
                .map(|c| format!("ce.{c}"))
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 28, "{} cross-entropy cases", cases.len());
    cases
}

fn ce_config(f: &Fixtures, case: &str) -> CrossEntropyConfig {
    let c = cfg_of(f, case);
    let mut cfg = CrossEntropyConfig::default()
        .with_ignore_index(c[0] as i64)
        .with_label_smoothing(c[1])
        .with_reduction(reduction(c[2]));
    if let Some(w) = opt_field(f, case, "w") {
        cfg = cfg.with_weight(w);
    }
    cfg
}

/// The case's inputs: the logits, and the targets as a second input when they are
/// probabilities (they get a gradient then).
fn ce_inputs(f: &Fixtures, case: &str) -> Vec<&'static str> {
    if field(f, case, "t").dtype().is_float() {
        vec!["x", "t"]
    } else {
        vec!["x"]
    }
}

fn ce_op<'a>(
    f: &'a Fixtures,
    case: &'a str,
    reference: bool,
) -> impl Fn(&[Tensor]) -> candle_tricks::Result<Tensor> + 'a {
    let cfg = ce_config(f, case);
    move |ts: &[Tensor]| {
        let t = ts
            .get(1)
            .cloned()
            .unwrap_or_else(|| field(f, case, "t").clone());
        if reference {
            ops::cross_entropy_reference(&ts[0], &t, &cfg)
        } else {
            loss::cross_entropy(&ts[0], &t, &cfg)
        }
    }
}

#[test]
fn cross_entropy_matches_pytorch() -> R<()> {
    let f = fixtures("loss");
    for case in ce_cases(&f) {
        check_case(&f, &case, &ce_inputs(&f, &case), ce_op(&f, &case, false))?;
    }
    Ok(())
}

#[test]
fn cross_entropy_composition_matches_pytorch() -> R<()> {
    let f = fixtures("loss");
    for case in ce_cases(&f) {
        check_case(&f, &case, &ce_inputs(&f, &case), ce_op(&f, &case, true))?;
        // The public op on the composition path (what a GPU runs) gives the same.
        with_backend(Backend::Composition, || {
            check_case(&f, &case, &ce_inputs(&f, &case), ce_op(&f, &case, false))
        })?;
    }
    Ok(())
}

#[test]
fn cross_entropy_large_logits_are_finite() -> R<()> {
    let f = fixtures("loss");
    for case in ["ce.large_mean", "ce.large_soft_none"] {
        let ts: Vec<Tensor> = ce_inputs(&f, case)
            .iter()
            .map(|n| field(&f, case, n).clone())
            .collect();
        let (y, gs) = run(&ts, field(&f, case, "gy"), ce_op(&f, case, false))?;
        for t in std::iter::once(y).chain(gs.into_iter().flatten()) {
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            assert!(v.iter().all(|v| v.is_finite()), "{case}: non-finite values");
        }
    }
    Ok(())
}

/// Finite differences of the fused backward: f64 through the composition, f32 through the
/// kernel (wrt the logits, and wrt probability targets).
#[test]
fn cross_entropy_backward_matches_finite_differences() -> R<()> {
    let f = fixtures("loss");
    for case in [
        "ce.all_none",
        "ce.soft_all_mean",
        "ce.spatial_mean",
        "ce.ignore_class_mean",
    ] {
        let cfg = ce_config(&f, case);
        let (x, t, gy) = (
            field(&f, case, "x"),
            field(&f, case, "t"),
            field(&f, case, "gy"),
        );
        // f64 composition: exact gradients to compare the kernel's against.
        let cfg64 = CrossEntropyConfig {
            weight: cfg.weight.as_ref().map(|w| w.to_dtype(DType::F64).unwrap()),
            ..cfg.clone()
        };
        let up = |t: &Tensor| {
            if t.dtype().is_float() {
                t.to_dtype(DType::F64).unwrap()
            } else {
                t.clone()
            }
        };
        let fd64 = finite_diff64(&up(x), &up(gy), |x| {
            ops::cross_entropy_reference(x, &up(t), &cfg64)
        })?;
        let (_, g) = run(std::slice::from_ref(x), gy, |ts| {
            loss::cross_entropy(&ts[0], t, &cfg)
        })?;
        let g = g[0].clone().ok_or("no gradient")?;
        assert_matches_fd(&format!("{case} f64 fd"), &g, &fd64, 1e-5)?;
        let fd32 = finite_diff(x, gy, 1e-2, |x| loss::cross_entropy(x, t, &cfg))?;
        assert_matches_fd(&format!("{case} f32 fd"), &g, &fd32, 2e-3)?;
        if t.dtype().is_float() {
            let (_, g) = run(std::slice::from_ref(t), gy, |ts| {
                loss::cross_entropy(x, &ts[0], &cfg)
            })?;
            let g = g[0].clone().ok_or("no target gradient")?;
            // Moving one probability breaks the sum-to-1 check: differentiate the composition,
            // which validates too, so perturb all entries through an unchecked path instead.
            let fd = finite_diff64(&up(t), &up(gy), |t| soft_ce_unchecked(&up(x), t, &cfg64))?;
            assert_matches_fd(&format!("{case} dt f64 fd"), &g, &fd, 1e-5)?;
        }
    }
    Ok(())
}

/// Soft-target cross-entropy written out (no validation), for finite differences wrt the targets.
fn soft_ce_unchecked(
    x: &Tensor,
    t: &Tensor,
    cfg: &CrossEntropyConfig,
) -> candle_core::Result<Tensor> {
    let c = x.dims()[1] as f64;
    let eps = cfg.label_smoothing;
    let logp = candle_nn::ops::log_softmax(x, 1)?;
    let mut wlogp = logp;
    if let Some(w) = &cfg.weight {
        wlogp = wlogp.broadcast_mul(&w.unsqueeze(0)?)?;
    }
    let l = (wlogp * ((t * (1.0 - eps))? + eps / c)?)?.sum(1)?.neg()?;
    match cfg.reduction {
        Reduction::None => Ok(l),
        Reduction::Sum => l.sum_all(),
        _ => l.mean_all(),
    }
}

/// Central finite differences in f64 (step 1e-6) of `sum(op(x) * gy)`.
fn finite_diff64<E: std::error::Error + 'static>(
    x: &Tensor,
    gy: &Tensor,
    op: impl Fn(&Tensor) -> Result<Tensor, E>,
) -> R<Tensor> {
    let xs = x.flatten_all()?.to_vec1::<f64>()?;
    let loss = |v: Vec<f64>| -> R<f64> {
        let y = op(&Tensor::from_vec(v, x.shape(), x.device())?)?;
        Ok((y * gy)?.sum_all()?.to_scalar::<f64>()?)
    };
    let h = 1e-6;
    let mut g = Vec::with_capacity(xs.len());
    for i in 0..xs.len() {
        let (mut p, mut m) = (xs.clone(), xs.clone());
        p[i] += h;
        m[i] -= h;
        g.push((loss(p)? - loss(m)?) / (2.0 * h));
    }
    Ok(Tensor::from_vec(g, x.shape(), x.device())?)
}

#[test]
fn cross_entropy_half_precision_close_to_f32() -> R<()> {
    let f = fixtures("loss");
    for case in [
        "ce.all_mean",
        "ce.soft_all_none",
        "ce.wide_mean",
        "ce.spatial_mean",
    ] {
        let cfg = ce_config(&f, case);
        let inputs = ce_inputs(&f, case);
        for dtype in [DType::F16, DType::BF16] {
            let ts: Vec<Tensor> = inputs
                .iter()
                .map(|n| {
                    let t = field(&f, case, n);
                    if t.dtype().is_float() {
                        t.to_dtype(dtype).unwrap()
                    } else {
                        t.clone()
                    }
                })
                .collect();
            let op = |ts: &[Tensor]| {
                let t = ts
                    .get(1)
                    .cloned()
                    .unwrap_or_else(|| field(&f, case, "t").clone());
                loss::cross_entropy(&ts[0], &t, &cfg)
            };
            let gy = field(&f, case, "gy");
            let (yh, gh) = run(&ts, gy, op)?;
            assert_eq!(yh.dtype(), dtype);
            let ts32: Vec<Tensor> = ts
                .iter()
                .map(|t| {
                    if t.dtype().is_float() {
                        t.to_dtype(DType::F32).unwrap()
                    } else {
                        t.clone()
                    }
                })
                .collect();
            let (y, g) = run(&ts32, gy, op)?;
            let tol = if dtype == DType::BF16 { 2e-2 } else { 3e-3 };
            assert_close(&format!("{case} {dtype:?} y"), &yh, &y, tol);
            for (a, b) in gh.iter().zip(&g) {
                let (a, b) = (a.as_ref().ok_or("grad")?, b.as_ref().ok_or("grad")?);
                assert_eq!(a.dtype(), dtype);
                assert_close(&format!("{case} {dtype:?} g"), a, b, tol);
            }
        }
    }
    Ok(())
}

#[test]
fn cross_entropy_soft_targets_equal_one_hot() -> R<()> {
    // One-hot probabilities give the class-index loss; timm's SoftTargetCrossEntropy is the mean.
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 2., (5, 8), &dev)?;
    let y = Tensor::new(&[3u32, 0, 7, 7, 1], &dev)?;
    let one_hot = candle_nn::encoding::one_hot(y.clone(), 8, 1f32, 0f32)?;
    let hard = loss::cross_entropy(&x, &y, &CrossEntropyConfig::default())?;
    let soft = loss::soft_target_cross_entropy(&x, &one_hot)?;
    assert_close("one-hot", &soft, &hard, 1e-6);
    Ok(())
}

#[test]
fn cross_entropy_bad_input() -> R<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (4, 5), &dev)?;
    let cfg = CrossEntropyConfig::default();
    let ce = |x: &Tensor, t: &Tensor, cfg: &CrossEntropyConfig| loss::cross_entropy(x, t, cfg);
    let is_config = |r: candle_tricks::Result<Tensor>| {
        matches!(
            r,
            Err(Error::InvalidConfig {
                block: "cross_entropy",
                ..
            })
        )
    };
    let is_shape = |r: candle_tricks::Result<Tensor>| {
        matches!(
            r,
            Err(Error::ShapeMismatch {
                block: "cross_entropy",
                ..
            })
        )
    };
    // A class index out of range, negative, and ignore_index that does not cover it.
    assert!(is_config(ce(
        &x,
        &Tensor::new(&[0u32, 5, 1, 2], &dev)?,
        &cfg
    )));
    assert!(is_config(ce(
        &x,
        &Tensor::new(&[0i64, -1, 1, 2], &dev)?,
        &cfg
    )));
    assert!(ce(
        &x,
        &Tensor::new(&[0i64, -1, 1, 2], &dev)?,
        &cfg.clone().with_ignore_index(-1)
    )
    .is_ok());
    // Wrong target shapes: indices and probabilities.
    assert!(is_shape(ce(&x, &Tensor::new(&[0u32, 1, 2], &dev)?, &cfg)));
    assert!(is_shape(ce(
        &x,
        &Tensor::zeros((4, 1), DType::U32, &dev)?,
        &cfg
    )));
    assert!(is_shape(ce(
        &x,
        &Tensor::ones((4, 6), DType::F32, &dev)?,
        &cfg
    )));
    // Probabilities that do not sum to 1 or are negative.
    assert!(is_config(ce(
        &x,
        &Tensor::ones((4, 5), DType::F32, &dev)?,
        &cfg
    )));
    let neg = Tensor::new(&[[1.5f32, -0.5, 0., 0., 0.]; 4], &dev)?;
    assert!(is_config(ce(&x, &neg, &cfg)));
    // Probabilities of another dtype than the logits.
    let p = (Tensor::ones((4, 5), DType::F64, &dev)? / 5.0)?;
    assert!(matches!(ce(&x, &p, &cfg), Err(Error::DTypeMismatch { .. })));
    // Smoothing outside [0, 1] (NaN too), a weight of the wrong length, BatchMean.
    let y = Tensor::new(&[0u32, 1, 2, 3], &dev)?;
    for ls in [-0.1, 1.5, f64::NAN] {
        assert!(is_config(ce(&x, &y, &cfg.clone().with_label_smoothing(ls))));
    }
    assert!(is_shape(ce(
        &x,
        &y,
        &cfg.clone().with_weight(Tensor::ones(4, DType::F32, &dev)?)
    )));
    assert!(is_config(ce(
        &x,
        &y,
        &cfg.clone().with_reduction(Reduction::BatchMean)
    )));
    // Logits of rank 1, empty, integer.
    assert!(is_shape(ce(&Tensor::zeros(5, DType::F32, &dev)?, &y, &cfg)));
    assert!(is_shape(ce(
        &Tensor::zeros((0, 5), DType::F32, &dev)?,
        &Tensor::zeros(0, DType::U32, &dev)?,
        &cfg
    )));
    assert!(matches!(
        ce(&x.to_dtype(DType::U32)?, &y, &cfg),
        Err(Error::UnsupportedDType { .. })
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The other losses
// ---------------------------------------------------------------------------------------------

/// The case names `<prefix>.<name>` of the fixture.
fn cases(f: &Fixtures, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = f
        .keys()
        .filter_map(|k| {
            k.strip_prefix(&format!("{prefix}."))?
                .strip_suffix(".cfg")
                .map(|c| format!("{prefix}.{c}"))
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no {prefix} cases");
    v
}

#[test]
fn bce_with_logits_matches_pytorch() -> R<()> {
    let f = fixtures("loss");
    for case in cases(&f, "bce") {
        let c = cfg_of(&f, &case);
        let mut cfg = loss::BceConfig::default().with_reduction(reduction(c[0]));
        if let Some(w) = opt_field(&f, &case, "w") {
            cfg = cfg.with_weight(w);
        }
        if let Some(pw) = opt_field(&f, &case, "pw") {
            cfg = cfg.with_pos_weight(pw);
        }
        let t = field(&f, &case, "t").clone();
        check_case(&f, &case, &["x"], |ts| {
            loss::binary_cross_entropy_with_logits(&ts[0], &t, &cfg)
        })?;
    }
    Ok(())
}

#[test]
fn focal_loss_matches_torchvision() -> R<()> {
    let f = fixtures("loss");
    for case in cases(&f, "focal") {
        let c = cfg_of(&f, &case);
        let cfg = loss::FocalConfig::default()
            .with_alpha(c[0])
            .with_gamma(c[1])
            .with_reduction(reduction(c[2]));
        let t = field(&f, &case, "t").clone();
        check_case(&f, &case, &["x"], |ts| {
            loss::sigmoid_focal_loss(&ts[0], &t, &cfg)
        })?;
    }
    Ok(())
}

#[test]
fn kl_div_matches_pytorch() -> R<()> {
    let f = fixtures("loss");
    for case in cases(&f, "kl") {
        let c = cfg_of(&f, &case);
        check_case(&f, &case, &["x", "t"], |ts| {
            loss::kl_div(&ts[0], &ts[1], reduction(c[1]), c[0] != 0.0)
        })?;
    }
    Ok(())
}

#[test]
fn distillation_matches_pytorch() -> R<()> {
    let f = fixtures("loss");
    for case in cases(&f, "distill") {
        let c = cfg_of(&f, &case);
        let cfg = loss::DistillationConfig::default()
            .with_temperature(c[0])
            .with_alpha(c[1]);
        let (teacher, labels) = (
            field(&f, &case, "teacher").clone(),
            field(&f, &case, "t").clone(),
        );
        check_case(&f, &case, &["x"], |ts| {
            loss::distillation(&ts[0], &teacher, &labels, &cfg)
        })?;
    }
    Ok(())
}

#[test]
fn prototypical_matches_pytorch() -> R<()> {
    let f = fixtures("loss");
    let case = "proto.3way";
    let (sl, ql) = (
        field(&f, case, "support_labels").clone(),
        field(&f, case, "query_labels").clone(),
    );
    let n_way = cfg_of(&f, case)[0] as usize;
    check_case(&f, case, &["support", "query"], |ts| {
        Ok(loss::prototypical(&ts[0], &sl, &ts[1], &ql, n_way)?.loss)
    })?;
    let out = loss::prototypical(
        field(&f, case, "support"),
        &sl,
        field(&f, case, "query"),
        &ql,
        n_way,
    )?;
    assert_close("proto logits", &out.logits, field(&f, case, "logits"), TOL);
    let want: Vec<u32> = field(&f, case, "logits").argmax(1)?.to_vec1()?;
    let labels: Vec<i64> = ql.to_vec1()?;
    let hits = want
        .iter()
        .zip(&labels)
        .filter(|(a, b)| **a as i64 == **b)
        .count();
    assert_eq!(out.accuracy, hits as f64 / labels.len() as f64);
    Ok(())
}

#[test]
fn nt_xent_matches_simclr() -> R<()> {
    let f = fixtures("loss");
    for case in cases(&f, "ntxent") {
        let tau = cfg_of(&f, &case)[0];
        check_case(&f, &case, &["z1", "z2"], |ts| {
            loss::nt_xent(&ts[0], &ts[1], tau)
        })?;
    }
    Ok(())
}

#[test]
fn triplet_margin_matches_pytorch() -> R<()> {
    let f = fixtures("loss");
    for case in cases(&f, "triplet") {
        let c = cfg_of(&f, &case);
        let cfg = loss::TripletConfig::default()
            .with_margin(c[0])
            .with_p(c[1])
            .with_eps(c[2])
            .with_swap(c[3] != 0.0)
            .with_reduction(reduction(c[4]));
        check_case(&f, &case, &["a", "p", "n"], |ts| {
            loss::triplet_margin(&ts[0], &ts[1], &ts[2], &cfg)
        })?;
    }
    Ok(())
}

#[test]
fn contrastive_and_batch_hard_match_pytorch() -> R<()> {
    let f = fixtures("loss");
    for case in cases(&f, "contrastive") {
        let c = cfg_of(&f, &case);
        let same = field(&f, &case, "same").clone();
        check_case(&f, &case, &["x1", "x2"], |ts| {
            loss::contrastive(&ts[0], &ts[1], &same, c[0], reduction(c[1]))
        })?;
    }
    for case in cases(&f, "batchhard") {
        let margin = cfg_of(&f, &case)[0];
        let labels = field(&f, &case, "labels").clone();
        check_case(&f, &case, &["emb"], |ts| {
            loss::batch_hard_triplet(&ts[0], &labels, margin)
        })?;
    }
    Ok(())
}

#[test]
fn dice_matches_monai_definition() -> R<()> {
    let f = fixtures("loss");
    for case in cases(&f, "dice") {
        let smooth = cfg_of(&f, &case)[0];
        let t = field(&f, &case, "t").clone();
        check_case(&f, &case, &["x"], |ts| loss::dice(&ts[0], &t, smooth))?;
    }
    Ok(())
}

#[test]
fn other_losses_bad_input() -> R<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (4, 5), &dev)?;
    let config = |r: candle_tricks::Result<Tensor>, block: &str| {
        assert!(
            matches!(&r, Err(Error::InvalidConfig { block: b, .. }) if *b == block),
            "{block}: {r:?}"
        );
    };
    let shape = |r: candle_tricks::Result<Tensor>, block: &str| {
        assert!(
            matches!(&r, Err(Error::ShapeMismatch { block: b, .. }) if *b == block),
            "{block}: {r:?}"
        );
    };
    // Negative margins and temperatures.
    config(loss::nt_xent(&x, &x, -0.5), "nt_xent");
    config(loss::nt_xent(&x, &x, 0.0), "nt_xent");
    let same = Tensor::ones(4, DType::F32, &dev)?;
    config(
        loss::contrastive(&x, &x, &same, -1.0, Reduction::Mean),
        "contrastive",
    );
    let neg = loss::TripletConfig::default().with_margin(-0.1);
    config(loss::triplet_margin(&x, &x, &x, &neg), "triplet_margin");
    let labels = Tensor::new(&[0u32, 1, 0, 1], &dev)?;
    config(
        loss::batch_hard_triplet(&x, &labels, -1.0),
        "batch_hard_triplet",
    );
    let y = Tensor::new(&[0u32, 1, 2, 3], &dev)?;
    for cfg in [
        loss::DistillationConfig::default().with_temperature(-1.0),
        loss::DistillationConfig::default().with_temperature(0.0),
        loss::DistillationConfig::default().with_alpha(1.5),
    ] {
        config(loss::distillation(&x, &x, &y, &cfg), "distillation");
    }
    config(
        loss::sigmoid_focal_loss(&x, &x, &loss::FocalConfig::default().with_gamma(-1.0)),
        "sigmoid_focal_loss",
    );
    config(
        loss::dice(
            &x.reshape((1, 4, 5, 1))?,
            &Tensor::zeros((1, 5, 1), DType::U32, &dev)?,
            -1.0,
        ),
        "dice",
    );
    config(
        loss::binary_cross_entropy_with_logits(
            &x,
            &x,
            &loss::BceConfig::default().with_reduction(Reduction::BatchMean),
        ),
        "binary_cross_entropy_with_logits",
    );
    // Shapes.
    shape(loss::nt_xent(&x, &x.narrow(0, 0, 3)?, 0.5), "nt_xent");
    shape(
        loss::binary_cross_entropy_with_logits(&x, &x.t()?, &Default::default()),
        "binary_cross_entropy_with_logits",
    );
    let pw = loss::BceConfig::default().with_pos_weight(Tensor::ones(3, DType::F32, &dev)?);
    shape(
        loss::binary_cross_entropy_with_logits(&x, &x, &pw),
        "binary_cross_entropy_with_logits",
    );
    shape(
        loss::kl_div(&x, &x.narrow(1, 0, 2)?, Reduction::Sum, false),
        "kl_div",
    );
    shape(
        loss::batch_hard_triplet(&x, &y.narrow(0, 0, 3)?, 1.0),
        "batch_hard_triplet",
    );
    shape(
        loss::distillation(&x, &x.narrow(1, 0, 4)?, &y, &Default::default()),
        "distillation",
    );
    // Labels out of range and a class without support examples.
    let r = loss::prototypical(&x, &Tensor::new(&[0u32, 1, 2, 3], &dev)?, &x, &y, 3);
    assert!(matches!(
        r,
        Err(Error::InvalidConfig {
            block: "prototypical",
            ..
        })
    ));
    let r = loss::prototypical(
        &x,
        &Tensor::new(&[0u32, 0, 0, 0], &dev)?,
        &x,
        &Tensor::zeros(4, DType::U32, &dev)?,
        2,
    );
    assert!(matches!(
        r,
        Err(Error::InvalidConfig {
            block: "prototypical",
            ..
        })
    ));
    let bad = Tensor::new(&[[[4u32]]], &dev)?;
    config(
        loss::dice(&Tensor::zeros((1, 3, 1, 1), DType::F32, &dev)?, &bad, 1.0),
        "dice",
    );
    Ok(())
}

#[test]
fn fused_cross_entropy_equals_its_composition() -> R<()> {
    // Several tasks' worth of rows, spatial logits, every option at once.
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 4., (3, 37, 5, 7), &dev)?;
    let y = Tensor::rand(0f32, 37., (3, 5, 7), &dev)?
        .floor()?
        .to_dtype(DType::I64)?;
    let w = Tensor::rand(0.5f32, 1.5, 37, &dev)?;
    let soft = candle_nn::ops::softmax(&Tensor::randn(0f32, 2., (3, 37, 5, 7), &dev)?, 1)?;
    for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let cfg = CrossEntropyConfig::default()
            .with_weight(w.clone())
            .with_ignore_index(4)
            .with_label_smoothing(0.15)
            .with_reduction(red);
        for t in [&y, &soft] {
            let inputs = if t.dtype().is_float() {
                vec![x.clone(), t.clone()]
            } else {
                vec![x.clone()]
            };
            let gy = match red {
                Reduction::None => Tensor::randn(0f32, 1., (3, 5, 7), &dev)?,
                _ => Tensor::new(1.3f32, &dev)?,
            };
            let op = |ts: &[Tensor]| loss::cross_entropy(&ts[0], ts.get(1).unwrap_or(t), &cfg);
            let (yf, gf) = run(&inputs, &gy, op)?;
            let (yr, gr) = with_backend(Backend::Composition, || run(&inputs, &gy, op))?;
            assert_close(&format!("{red:?} y"), &yf, &yr, 1e-6);
            for (a, b) in gf.iter().zip(&gr) {
                let (a, b) = (a.as_ref().ok_or("grad")?, b.as_ref().ok_or("grad")?);
                assert_close(&format!("{red:?} grad"), a, b, 1e-6);
            }
        }
    }
    Ok(())
}
