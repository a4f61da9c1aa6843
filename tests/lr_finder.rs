//! The LR range test against torch-lr-finder 0.2.2 (`tests/fixtures/gen_lr_finder.py`): the rate
//! schedule, the smoothed losses, the divergence stop and the suggestion, in torch-lr-finder's
//! smoothing and in fastai's bias-corrected one; restored weights; NaN losses.

mod common;

use candle_core::{DType, IndexOp, Tensor, Var};
use candle_nn::{Optimizer, SGD};
use candle_tricks::train::lr_finder::{
    lr_range_test, LrRamp, LrRangeCurve, LrRangeTestConfig, LrStop,
};
use candle_tricks::Error;
use common::{field, fixtures, get, Fixtures};

/// The linear regression of the fixture: `W`, `b` and the loss of batch `i`.
struct Problem {
    w: Var,
    b: Var,
    x: Tensor,
    y: Tensor,
}

impl Problem {
    fn new(f: &Fixtures) -> Self {
        Self {
            w: Var::from_tensor(get(f, "weight")).unwrap(),
            b: Var::from_tensor(get(f, "bias")).unwrap(),
            x: get(f, "x").clone(),
            y: get(f, "y").clone(),
        }
    }

    fn vars(&self) -> Vec<Var> {
        vec![self.w.clone(), self.b.clone()]
    }

    fn loss(&self, i: usize) -> candle_core::Result<Tensor> {
        let pred = self
            .x
            .i(i)?
            .matmul(&self.w.as_tensor().t()?)?
            .broadcast_add(self.b.as_tensor())?;
        candle_nn::loss::mse(&pred, &self.y.i(i)?)
    }
}

fn vec64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().to_vec1().unwrap()
}

fn assert_rel(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let e = (g - w).abs() / w.abs().max(1e-12);
        assert!(e <= tol, "{what}[{i}]: {g} vs {w} (relative error {e:.2e})");
    }
}

/// Runs the test on the fixture's problem and compares it with case `name`.
fn check_case(name: &str, cfg: &LrRangeTestConfig) -> LrRangeCurve {
    let f = fixtures("lr_finder");
    let p = Problem::new(&f);
    let mut sgd = SGD::new(p.vars(), 0.123).unwrap();
    let curve = lr_range_test(&p.vars(), &mut sgd, |i| p.loss(i), cfg).unwrap();
    assert_rel(
        &format!("{name} lr"),
        &curve.lrs,
        &vec64(field(&f, name, "lr")),
        1e-12,
    );
    assert_rel(
        &format!("{name} smoothed loss"),
        &curve.smoothed,
        &vec64(field(&f, name, "loss")),
        1e-4,
    );
    let diverged = vec64(field(&f, name, "diverged"))[0] == 1.0;
    let last = curve.lrs.len() - 1;
    let want_stop = if diverged {
        LrStop::Diverged { iteration: last }
    } else {
        LrStop::Completed
    };
    assert_eq!(curve.stop, want_stop, "{name}");
    let suggested = vec64(field(&f, name, "suggested"))[0];
    let got = curve.suggested_lr.unwrap();
    assert!(
        (got / suggested - 1.0).abs() < 1e-12,
        "{name}: suggested {got} vs {suggested}"
    );
    // Weights and the optimizer's rate are back where they started.
    assert_eq!(
        p.w.as_tensor().to_vec2::<f32>().unwrap(),
        get(&f, "weight").to_vec2::<f32>().unwrap()
    );
    assert_eq!(
        p.b.as_tensor().to_vec1::<f32>().unwrap(),
        get(&f, "bias").to_vec1::<f32>().unwrap()
    );
    assert_eq!(sgd.learning_rate(), 0.123);
    println!(
        "{name}: {} points, {:?}, suggested lr {got:.4e} (torch-lr-finder {suggested:.4e}), \
         min-loss lr / 10 = {:.4e}",
        curve.lrs.len(),
        curve.stop,
        curve.min_loss_lr().unwrap() / 10.0
    );
    curve
}

/// torch-lr-finder's own `range_test`: smooth_f 0.05 is beta 0.95 without bias correction.
fn torch_cfg() -> LrRangeTestConfig {
    LrRangeTestConfig::default()
        .with_start_lr(1e-4)
        .with_end_lr(10.0)
        .with_num_iters(80)
        .with_beta(0.95)
        .with_bias_correction(false)
}

#[test]
fn exponential_ramp_matches_torch_lr_finder() {
    let curve = check_case("torch_exp", &torch_cfg());
    assert!(matches!(curve.stop, LrStop::Diverged { .. }));
}

#[test]
fn linear_ramp_matches_torch_lr_finder() {
    let cfg = torch_cfg()
        .with_ramp(LrRamp::Linear)
        .with_start_lr(1e-3)
        .with_end_lr(1.5)
        .with_num_iters(40);
    check_case("torch_linear", &cfg);
}

#[test]
fn fastai_smoothing_matches_reference() {
    let cfg = LrRangeTestConfig::default()
        .with_start_lr(1e-4)
        .with_end_lr(10.0)
        .with_num_iters(80);
    let curve = check_case("fastai", &cfg);
    let f = fixtures("lr_finder");
    assert_rel(
        "fastai raw loss",
        &curve.losses,
        &vec64(field(&f, "fastai", "raw")),
        1e-4,
    );
    // Bias correction: the first smoothed value is the first loss, not 2 % of it.
    assert_eq!(curve.smoothed[0], curve.losses[0]);
}

/// An optimizer that counts its steps (to see that a NaN loss never reaches the weights).
struct Counting {
    inner: SGD,
    steps: usize,
}

impl Optimizer for Counting {
    type Config = f64;
    fn new(vars: Vec<Var>, lr: f64) -> candle_core::Result<Self> {
        Ok(Self {
            inner: SGD::new(vars, lr)?,
            steps: 0,
        })
    }
    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> candle_core::Result<()> {
        self.steps += 1;
        self.inner.step(grads)
    }
    fn learning_rate(&self) -> f64 {
        self.inner.learning_rate()
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.inner.set_learning_rate(lr)
    }
}

#[test]
fn nan_loss_ends_the_test_before_any_step_on_it() {
    let f = fixtures("lr_finder");
    let p = Problem::new(&f);
    let cfg = LrRangeTestConfig::default()
        .with_start_lr(1e-4)
        .with_end_lr(1e-2)
        .with_num_iters(30);
    for nan_at in [0, 5] {
        let mut opt = Counting::new(p.vars(), 0.5).unwrap();
        let loss = |i: usize| {
            let l = p.loss(i)?;
            if i == nan_at {
                l.affine(f64::NAN, 0.0)
            } else {
                Ok(l)
            }
        };
        let curve = lr_range_test(&p.vars(), &mut opt, loss, &cfg).unwrap();
        assert_eq!(curve.stop, LrStop::NonFiniteLoss { iteration: nan_at });
        assert_eq!(curve.lrs.len(), nan_at);
        assert_eq!(opt.steps, nan_at);
        assert_eq!(curve.suggested_lr, None); // too few points
        assert_eq!(opt.learning_rate(), 0.5);
        let w = p.w.as_tensor().to_vec2::<f32>().unwrap();
        assert_eq!(w, get(&f, "weight").to_vec2::<f32>().unwrap());
    }
}

#[test]
fn closure_errors_and_non_scalar_losses_restore_the_weights() {
    let f = fixtures("lr_finder");
    let p = Problem::new(&f);
    let cfg = LrRangeTestConfig::default().with_num_iters(20);
    let mut sgd = SGD::new(p.vars(), 0.01).unwrap();
    let failing = |i: usize| {
        if i == 7 {
            candle_core::bail!("data loader ran dry")
        }
        p.loss(i)
    };
    let e = lr_range_test(&p.vars(), &mut sgd, failing, &cfg).unwrap_err();
    assert!(e.to_string().contains("data loader ran dry"), "{e}");
    let vector = |i: usize| p.loss(i)?.reshape(1);
    let e = lr_range_test(&p.vars(), &mut sgd, vector, &cfg).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ShapeMismatch {
                block: "lr_range_test",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(sgd.learning_rate(), 0.01);
    let w = p.w.as_tensor().to_vec2::<f32>().unwrap();
    assert_eq!(w, get(&f, "weight").to_vec2::<f32>().unwrap());
}

#[test]
fn ramps_start_and_end_at_the_configured_rates() {
    let cfg = LrRangeTestConfig::default()
        .with_start_lr(1e-3)
        .with_end_lr(1.0)
        .with_num_iters(4);
    for (i, want) in [1e-3, 1e-2, 1e-1, 1.0].into_iter().enumerate() {
        let got = cfg.lr_at(i);
        assert!((got / want - 1.0).abs() < 1e-12, "{got} vs {want}");
    }
    let lin = cfg.with_ramp(LrRamp::Linear);
    assert_eq!(lin.lr_at(0), 1e-3);
    assert!((lin.lr_at(3) - 1.0).abs() < 1e-15);
    assert!((lin.lr_at(1) - (1e-3 + 0.999 / 3.0)).abs() < 1e-15);
}

#[test]
fn steepest_is_numpy_gradient_argmin() {
    let curve = LrRangeCurve {
        lrs: vec![1.0, 2.0, 3.0, 4.0, 5.0],
        losses: vec![0.0; 5],
        smoothed: vec![5.0, 4.5, 3.0, 2.5, 2.0],
        stop: LrStop::Completed,
        suggested_lr: None,
    };
    // np.gradient: [-0.5, -1.0, -1.0, -0.5, -0.5]; argmin takes the first.
    assert_eq!(curve.steepest(0, 0), Some(2.0));
    assert_eq!(curve.steepest(2, 0), Some(3.0));
    assert_eq!(curve.steepest(3, 1), None); // one point left
    assert_eq!(curve.steepest(9, 0), None);
    assert_eq!(curve.min_loss_lr(), Some(5.0));
}
