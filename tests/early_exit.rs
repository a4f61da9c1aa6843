//! EarlyExit: per-sample exits and depth reporting, threshold 1 → full depth, early-exited
//! logits equal to the head run alone, exited samples removed from later stages (counted by a
//! counting module), both confidence criteria against hand-computed values, train mode with all
//! exits and the weighted loss (value and gradient), bad input.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::Linear;
use candle_tricks::blocks::{
    early_exit_loss, exit_confidence, EarlyExit, EarlyExitConfig, ExitCriterion,
};
use common::{assert_close, assert_err_names, R};

fn dev() -> Device {
    Device::Cpu
}

/// A stage `x -> scale * x` that counts the rows (samples) and calls it processed.
#[derive(Debug, Clone)]
struct Counting {
    scale: f64,
    rows: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

impl Counting {
    fn new(scale: f64) -> Self {
        Self {
            scale,
            rows: Arc::new(AtomicUsize::new(0)),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }
    fn rows(&self) -> usize {
        self.rows.load(Ordering::SeqCst)
    }
}

impl Module for Counting {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.rows.fetch_add(x.dims()[0], Ordering::SeqCst);
        self.calls.fetch_add(1, Ordering::SeqCst);
        x.affine(self.scale, 0.0)
    }
}

/// Heads: logits = x W^T with W a fixed (3, 2) matrix, so logits are [x0, x1, 0].
fn head() -> R<Linear> {
    let w = Tensor::new(&[[1f32, 0.], [0., 1.], [0., 0.]], &dev())?;
    Ok(Linear::new(w, None))
}

/// Samples of increasing difficulty: a large margin exits early, a tie never does.
fn inputs() -> R<Tensor> {
    Ok(Tensor::new(
        &[
            [6f32, 0.], // softmax(6, 0, 0) = 0.995: exits at 0
            [0.1, 0.],  // a near tie: never confident -> last exit
            [1.5, 0.],  // 0.69 -> after x2: 0.91 (3, 0, 0) -> exits at 1
            [0., 4.],   // 0.96: exits at 0
            [0.9, 0.],  // 0.55 -> 0.75 (x2: 1.8) -> 0.95 (x4: 3.6): exits at 2
        ],
        &dev(),
    )?)
}

fn net(threshold: f64) -> R<(EarlyExit<Counting, Linear>, Vec<Counting>)> {
    let stages = vec![
        Counting::new(1.0),
        Counting::new(2.0),
        Counting::new(2.0),
        Counting::new(2.0),
    ];
    let heads = vec![head()?, head()?, head()?, head()?];
    let cfg = EarlyExitConfig::default().with_threshold(threshold);
    Ok((EarlyExit::new(stages.clone(), heads, cfg)?, stages))
}

#[test]
fn per_sample_exits_and_depths() -> R<()> {
    let (ee, stages) = net(0.9)?;
    let x = inputs()?;
    let out = ee.forward_early(&x)?;
    assert_eq!(out.exits, vec![0, 3, 1, 0, 2]);
    assert_eq!(out.depths(), vec![1, 4, 2, 1, 3]);
    assert_eq!(out.exit_counts(), vec![2, 1, 1, 1]);
    assert_eq!(out.logits.dims(), &[5, 3]);
    // Removed samples are not processed: 5, then 3, 2, 1 rows; one call per stage.
    assert_eq!(out.rows_per_stage, vec![5, 3, 2, 1]);
    let rows: Vec<usize> = stages.iter().map(Counting::rows).collect();
    assert_eq!(rows, vec![5, 3, 2, 1]);
    assert!(stages.iter().all(|s| s.calls.load(Ordering::SeqCst) == 1));
    // Each sample's logits are those of its exit head run alone on that sample.
    let all = ee.forward_all(&x, false)?;
    for (j, &e) in out.exits.iter().enumerate() {
        let alone = all[e].get(j)?;
        assert_close(&format!("sample {j}"), &out.logits.get(j)?, &alone, 0.0);
    }
    // And by hand: sample 2 exits at head 1 with logits 2 * x.
    assert_eq!(out.logits.get(2)?.to_vec1::<f32>()?, vec![3., 0., 0.]);
    Ok(())
}

#[test]
fn threshold_one_uses_full_depth() -> R<()> {
    let (ee, stages) = net(1.0)?;
    // Even a saturated softmax (max prob rounds to exactly 1 in f32) does not exit early.
    let x = Tensor::cat(&[inputs()?, Tensor::new(&[[200f32, 0.]], &dev())?], 0)?;
    let out = ee.forward_early(&x)?;
    assert_eq!(out.depths(), vec![4; 6]);
    assert_eq!(out.rows_per_stage, vec![6; 4]);
    assert!(stages.iter().all(|s| s.rows() == 6));
    let last = ee.forward_all(&x, false)?.pop().expect("four exits");
    assert_close("full depth", &out.logits, &last, 0.0);
    // A tiny threshold: everybody exits at the first head, and later stages never run.
    let (ee, stages) = net(1e-3)?;
    let out = ee.forward_early(&x)?;
    assert_eq!(out.depths(), vec![1; 6]);
    assert_eq!(out.rows_per_stage, vec![6, 0, 0, 0]);
    assert_eq!(stages[1].calls.load(Ordering::SeqCst), 0);
    Ok(())
}

#[test]
fn entropy_criterion() -> R<()> {
    // Hand-computed confidences: one-hot-ish, uniform, and a two-class case.
    let z = Tensor::new(&[[0f32, 0., 0.], [1000., 0., 0.], [1., 0., 0.]], &dev())?;
    let maxp = exit_confidence(&z, ExitCriterion::MaxProb)?;
    let ent = exit_confidence(&z, ExitCriterion::Entropy)?;
    let e = 1f64.exp();
    let s = e + 2.0;
    let p = [e / s, 1.0 / s, 1.0 / s];
    let h: f64 = -p.iter().map(|q| q * q.ln()).sum::<f64>();
    let want_max = [1.0 / 3.0, 1.0, e / s];
    let want_ent = [0.0, 1.0, 1.0 - h / 3f64.ln()];
    for i in 0..3 {
        assert!(
            (maxp[i] - want_max[i]).abs() < 1e-6,
            "maxprob {i}: {}",
            maxp[i]
        );
        assert!(
            (ent[i] - want_ent[i]).abs() < 1e-6,
            "entropy {i}: {}",
            ent[i]
        );
    }
    // On these inputs the entropy criterion is the stricter one at the same threshold.
    let stages = vec![
        Counting::new(1.0),
        Counting::new(2.0),
        Counting::new(2.0),
        Counting::new(2.0),
    ];
    let heads = vec![head()?, head()?, head()?, head()?];
    let cfg = EarlyExitConfig::default()
        .with_threshold(0.9)
        .with_criterion(ExitCriterion::Entropy);
    let ee = EarlyExit::new(stages, heads, cfg)?;
    let out = ee.forward_early(&inputs()?)?;
    let (maxp_net, _) = net(0.9)?;
    let base = maxp_net.forward_early(&inputs()?)?;
    for (a, b) in out.exits.iter().zip(&base.exits) {
        assert!(a >= b);
    }
    Ok(())
}

#[test]
fn train_mode_returns_all_exits_and_weighted_loss() -> R<()> {
    let (ee, stages) = net(0.9)?;
    let x = inputs()?;
    let all = ee.forward_all(&x, true)?;
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|z| z.dims() == [5, 3]));
    assert!(stages.iter().all(|s| s.rows() == 5));
    let y = Tensor::new(&[0u32, 1, 0, 1, 2], &dev())?;
    let w = [0.5, 1.0, 0.25, 2.0];
    let loss = early_exit_loss(&all, &y, &w)?;
    let mut want = 0.0;
    for (z, wi) in all.iter().zip(w) {
        want += wi * candle_nn::loss::cross_entropy(z, &y)?.to_scalar::<f32>()? as f64;
    }
    let got = loss.to_scalar::<f32>()? as f64;
    assert!(
        (got - want).abs() < 1e-5 * (1.0 + want.abs()),
        "{got} vs {want}"
    );

    // Differentiable: trainable heads each get a gradient scaled by their weight.
    let ws: Vec<Var> = (0..2)
        .map(|_| Var::from_tensor(&Tensor::randn(0f32, 1., (3, 2), &dev())?))
        .collect::<candle_core::Result<_>>()?;
    let heads: Vec<Linear> = ws
        .iter()
        .map(|v| Linear::new(v.as_tensor().clone(), None))
        .collect();
    let ee = EarlyExit::new(
        vec![Counting::new(1.0), Counting::new(2.0)],
        heads,
        EarlyExitConfig::default(),
    )?;
    let all = ee.forward_all(&x, true)?;
    let grads = early_exit_loss(&all, &y, &[1.0, 0.0])?.backward()?;
    let g0 = grads.get(ws[0].as_tensor()).expect("grad of head 0");
    assert!(g0.sqr()?.sum_all()?.to_scalar::<f32>()? > 0.0);
    // A zero weight: no gradient (candle prunes the branch) or an all-zero one.
    if let Some(g1) = grads.get(ws[1].as_tensor()) {
        assert_eq!(g1.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
    }
    Ok(())
}

#[test]
fn half_precision_logits() -> R<()> {
    let (ee, _) = net(0.9)?;
    let x = inputs()?.to_dtype(DType::BF16)?;
    let heads: Vec<Linear> = ee
        .heads()
        .iter()
        .map(|h| Linear::new(h.weight().to_dtype(DType::BF16).expect("cast"), None))
        .collect();
    let ee = EarlyExit::new(ee.stages().to_vec(), heads, *ee.config())?;
    let out = ee.forward_early(&x)?;
    assert_eq!(out.logits.dtype(), DType::BF16);
    assert_eq!(out.exits, vec![0, 3, 1, 0, 2]);
    Ok(())
}

#[test]
fn bad_input_errors() -> R<()> {
    let b = "EarlyExit";
    for t in [0.0, -0.5, 1.0001, f64::NAN, f64::INFINITY] {
        let cfg = EarlyExitConfig::default().with_threshold(t);
        assert_err_names(cfg.validate(), b, "threshold");
        let r = EarlyExit::new(vec![Counting::new(1.0)], vec![head()?], cfg);
        assert_err_names(r.map(|_| ()), b, "threshold");
    }
    let cfg = EarlyExitConfig::default();
    let r = EarlyExit::new(vec![Counting::new(1.0); 2], vec![head()?], cfg);
    assert_err_names(r.map(|_| ()), b, "2 stages and 1 heads");
    let r = EarlyExit::<Counting, Linear>::new(vec![], vec![], cfg);
    assert_err_names(r.map(|_| ()), b, "0 stages");

    let (ee, _) = net(0.9)?;
    let empty = Tensor::zeros((0, 2), DType::F32, &dev())?;
    assert_err_names(ee.forward_early(&empty), b, "B > 0");
    assert_err_names(ee.forward_all(&empty, true), b, "B > 0");
    // Heads that do not return (b, K) logits, or disagree on K.
    let flat = |t: &Tensor| t.flatten_all();
    let ee2 = EarlyExit::new(vec![Counting::new(1.0)], vec![flat], cfg)?;
    assert_err_names(ee2.forward_early(&inputs()?), b, "head logits");
    assert_err_names(ee2.forward_all(&inputs()?, false), b, "head logits");
    let w2 = Tensor::new(&[[1f32, 0.], [0., 1.]], &dev())?;
    let ee3 = EarlyExit::new(
        vec![Counting::new(1.0); 2],
        vec![Linear::new(w2, None), head()?],
        EarlyExitConfig::default().with_threshold(1.0),
    )?;
    assert_err_names(ee3.forward_early(&inputs()?), b, "(b, 2)");
    assert_err_names(ee3.forward_all(&inputs()?, false), b, "(b, 2)");
    // A stage that drops samples.
    let drop = |t: &Tensor| t.narrow(0, 0, 1);
    let ee4 = EarlyExit::new(vec![drop], vec![head()?], cfg)?;
    assert_err_names(ee4.forward_early(&inputs()?), b, "stage output");
    assert_err_names(ee4.forward_all(&inputs()?, true), b, "stage output");
    let ints = Tensor::zeros((2, 3), DType::U32, &dev())?;
    assert_err_names(exit_confidence(&ints, ExitCriterion::MaxProb), b, "dtype");
    let r1 = Tensor::zeros(3, DType::F32, &dev())?;
    assert_err_names(exit_confidence(&r1, ExitCriterion::MaxProb), b, "logits");

    // The loss helper.
    let l = "early_exit_loss";
    let z = Tensor::zeros((2, 3), DType::F32, &dev())?;
    let y = Tensor::new(&[0u32, 2], &dev())?;
    let one = std::slice::from_ref(&z);
    assert_err_names(early_exit_loss(&[], &y, &[]), l, "at least one");
    assert_err_names(
        early_exit_loss(one, &y, &[1.0, 1.0]),
        l,
        "1 exits and 2 weights",
    );
    assert_err_names(early_exit_loss(one, &y, &[-1.0]), l, "weights");
    assert_err_names(early_exit_loss(one, &y, &[f64::NAN]), l, "weights");
    let yf = Tensor::new(&[0f32, 2.], &dev())?;
    assert_err_names(early_exit_loss(one, &yf, &[1.0]), l, "targets");
    let y3 = Tensor::new(&[0u32, 2, 1], &dev())?;
    assert_err_names(early_exit_loss(one, &y3, &[1.0]), l, "targets");
    let z4 = Tensor::zeros((3, 3), DType::F32, &dev())?;
    assert_err_names(early_exit_loss(&[z, z4], &y, &[1.0, 1.0]), l, "exit logits");
    Ok(())
}
