//! Gradient reversal (exact identity forward, exactly −λ times the gradient backward, finite
//! differences), the DANN λ ramp, Reptile and first-order MAML against a hand-written PyTorch
//! reference, weights kept intact on NaN losses, and a short seeded sine-regression
//! meta-training against a jointly trained baseline.

mod common;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::Optimizer;
use candle_tricks::train::{
    dann_lambda, fomaml_step, grad_reverse, reptile_step, GradReverse, DANN_GAMMA,
};
use candle_tricks::Error;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Uniform values in `[-scale, scale)` from a seeded generator.
fn uniform(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Equal bits, or both zeros (a zero's sign is not a value).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (*x == 0.0 && *y == 0.0))
}

#[test]
fn reversal_is_the_identity_forward_and_minus_lambda_backward_bit_for_bit() -> R<()> {
    let mut rng = StdRng::seed_from_u64(1);
    let mut xs = uniform(&mut rng, 200, 3.0);
    xs.extend([0.0, -0.0, 1e-30, -1e-40, 3.4e38, f32::MIN_POSITIVE]);
    let x = Var::from_vec(xs.clone(), xs.len(), &Device::Cpu)?;
    let gy = Tensor::from_vec(uniform(&mut rng, xs.len(), 2.0), xs.len(), &Device::Cpu)?;
    // The identity's gradient of sum(y * gy) is gy.
    let identity = (x.as_tensor() * &gy)?.sum_all()?.backward()?;
    let identity = identity.get(x.as_tensor()).expect("x").to_vec1::<f32>()?;
    for lambda in [0.0, 0.3, 1.0, 2.5] {
        let y = grad_reverse(x.as_tensor(), lambda)?;
        assert!(
            same_bits(&y.to_vec1::<f32>()?, &xs),
            "forward, lambda {lambda}"
        );
        let g = (y * &gy)?.sum_all()?.backward()?;
        // candle drops the gradient of a product with zero: a zero gradient.
        let g = match g.get(x.as_tensor()) {
            Some(g) => g.to_vec1::<f32>()?,
            None => vec![0.0; xs.len()],
        };
        let want: Vec<f32> = identity.iter().map(|g| g * -(lambda as f32)).collect();
        assert!(same_bits(&g, &want), "backward, lambda {lambda}");
        // The layer is the same op.
        let layer = GradReverse::new(lambda)?;
        let g2 = (layer.forward(x.as_tensor())? * &gy)?
            .sum_all()?
            .backward()?;
        let g2 = match g2.get(x.as_tensor()) {
            Some(g) => g.to_vec1::<f32>()?,
            None => vec![0.0; xs.len()],
        };
        assert!(same_bits(&g2, &want), "layer backward, lambda {lambda}");
    }
    Ok(())
}

#[test]
fn reversed_gradient_matches_finite_differences_in_f64() -> R<()> {
    // sum(tanh(W · grad_reverse(x)) * gy): the parameters before the reversal get -λ times the
    // finite-difference gradient of the same function without it (its forward is the same).
    let mut rng = StdRng::seed_from_u64(2);
    let dev = Device::Cpu;
    let to64 = |v: Vec<f32>, s: &[usize]| -> R<Tensor> {
        Ok(Tensor::from_vec(v, s, &dev)?.to_dtype(DType::F64)?)
    };
    let w = to64(uniform(&mut rng, 12, 1.0), &[4, 3])?;
    let gy = to64(uniform(&mut rng, 8, 1.0), &[4, 2])?;
    let x0 = to64(uniform(&mut rng, 6, 1.0), &[3, 2])?;
    let lambda = 0.7;
    let f = |x: &Tensor, reverse: bool| -> R<Tensor> {
        let x = if reverse {
            grad_reverse(x, lambda)?
        } else {
            x.clone()
        };
        Ok(w.matmul(&x)?.tanh()?)
    };
    let x = Var::from_tensor(&x0)?;
    let g = (f(x.as_tensor(), true)? * &gy)?.sum_all()?.backward()?;
    let g = g
        .get(x.as_tensor())
        .expect("x")
        .flatten_all()?
        .to_vec1::<f64>()?;
    let base = x0.flatten_all()?.to_vec1::<f64>()?;
    let eps = 1e-6;
    for (i, gi) in g.iter().enumerate() {
        let loss = |d: f64| -> R<f64> {
            let mut v = base.clone();
            v[i] += d;
            let xv = Tensor::from_vec(v, (3, 2), &dev)?;
            Ok((f(&xv, true)? * &gy)?.sum_all()?.to_scalar::<f64>()?)
        };
        let fd = (loss(eps)? - loss(-eps)?) / (2.0 * eps);
        assert!(
            (gi + lambda * fd).abs() < 1e-8,
            "x[{i}]: {gi} vs -λ·fd {}",
            -lambda * fd
        );
    }
    // And the forward is that of the plain function, exactly.
    let plain = f(&x0, false)?.flatten_all()?.to_vec1::<f64>()?;
    let rev = f(&x0, true)?.flatten_all()?.to_vec1::<f64>()?;
    assert_eq!(plain, rev);
    Ok(())
}

#[test]
fn half_precision_keeps_dtype_and_values() -> R<()> {
    let x = Tensor::new(&[1.5f32, -0.125, 3.0e4, 6.0e-5], &Device::Cpu)?;
    for dtype in [DType::F16, DType::BF16] {
        let xh = x.to_dtype(dtype)?;
        let y = grad_reverse(&xh, 1.0)?;
        assert_eq!(y.dtype(), dtype);
        assert_eq!(
            y.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            xh.to_dtype(DType::F32)?.to_vec1::<f32>()?
        );
    }
    Ok(())
}

#[test]
fn dann_lambda_matches_the_closed_form() -> R<()> {
    for (p, want) in [
        (0.0, 0.0),
        (0.5, 2.0 / (1.0 + (-5f64).exp()) - 1.0),
        (1.0, 2.0 / (1.0 + (-10f64).exp()) - 1.0),
    ] {
        let got = dann_lambda(p, DANN_GAMMA)?;
        assert!((got - want).abs() < 1e-15, "p {p}: {got} vs {want}");
        // The same curve as tanh(γp/2).
        assert!((got - (DANN_GAMMA * p / 2.0).tanh()).abs() < 1e-15);
    }
    assert!(dann_lambda(1.0, DANN_GAMMA)? > 0.999);
    Ok(())
}

#[test]
fn bad_hyper_parameters_are_refused() {
    let x = Tensor::new(&[1f32], &Device::Cpu).unwrap();
    assert_err_names(grad_reverse(&x, f64::NAN), "grad_reverse", "lambda");
    assert_err_names(GradReverse::new(-1.0), "GradReverse", "lambda");
    let ints = Tensor::new(&[1u32], &Device::Cpu).unwrap();
    assert_err_names(grad_reverse(&ints, 1.0), "grad_reverse", "U32");
    assert_err_names(dann_lambda(1.5, 10.0), "dann_lambda", "progress");
    assert_err_names(dann_lambda(0.5, 0.0), "dann_lambda", "gamma");
}

/// `mean((x W^T + b - y)^2)`.
fn mse(w: &Var, b: &Var, x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    x.matmul(&w.as_tensor().t()?)?
        .broadcast_add(b.as_tensor())?
        .sub(y)?
        .sqr()?
        .mean_all()
}

#[test]
fn reptile_and_fomaml_match_pytorch_over_three_meta_steps() -> R<()> {
    let f = fixtures("meta");
    let t = |k: String| get(&f, &k).clone();
    for algo in ["reptile", "fomaml"] {
        let w = Var::from_tensor(get(&f, "w0"))?;
        let b = Var::from_tensor(get(&f, "b0"))?;
        let vars = [w.clone(), b.clone()];
        let mut outer = candle_nn::SGD::new(vars.to_vec(), 0.05)?;
        for s in 0..3 {
            let (xs, ys) = (t(format!("task{s}.xs")), t(format!("task{s}.ys")));
            let (xq, yq) = (t(format!("task{s}.xq")), t(format!("task{s}.yq")));
            let support = |_: usize| mse(&w, &b, &xs, &ys);
            let losses = if algo == "reptile" {
                reptile_step(&vars, support, 3, 0.1, 0.5)?
            } else {
                let query = || mse(&w, &b, &xq, &yq);
                fomaml_step(&vars, support, query, 2, 0.1, &mut outer)?
            };
            let got: Vec<f64> = losses.inner.iter().chain(&losses.query).copied().collect();
            let want = t(format!("{algo}{s}.losses")).to_vec1::<f64>()?;
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-5 * (1.0 + w.abs()),
                    "{algo}{s}: {g} vs {w}"
                );
            }
            let what = format!("{algo} step {s}");
            assert_close(&what, w.as_tensor(), &t(format!("{algo}{s}.w")), 1e-5);
            assert_close(&what, b.as_tensor(), &t(format!("{algo}{s}.b")), 1e-5);
        }
    }
    Ok(())
}

#[test]
fn a_nan_loss_leaves_the_meta_weights_untouched() -> R<()> {
    let dev = Device::Cpu;
    let w = Var::new(&[[0.5f32, -1.0], [2.0, 0.25]], &dev)?;
    let b = Var::new(&[0.1f32, -0.2], &dev)?;
    let vars = [w.clone(), b.clone()];
    let before = (w.to_vec2::<f32>()?, b.to_vec1::<f32>()?);
    let x = Tensor::new(&[[1f32, 2.], [3., 4.]], &dev)?;
    let y = Tensor::new(&[[0f32, 1.], [1., 0.]], &dev)?;
    let nan = Tensor::new(f32::NAN, &dev)?;
    // The loss turns NaN at inner step 2, after two updates.
    let task = |step: usize| {
        let l = mse(&w, &b, &x, &y)?;
        if step == 2 {
            l.broadcast_add(&nan)
        } else {
            Ok(l)
        }
    };
    let e = reptile_step(&vars, task, 4, 0.01, 1.0).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFinite {
                block: "reptile_step",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!((w.to_vec2::<f32>()?, b.to_vec1::<f32>()?), before);

    let mut outer = candle_nn::SGD::new(vars.to_vec(), 0.1)?;
    let query = || mse(&w, &b, &x, &y)?.broadcast_mul(&nan);
    let e = fomaml_step(&vars, |_| mse(&w, &b, &x, &y), query, 3, 0.01, &mut outer).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFinite {
                block: "fomaml_step",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!((w.to_vec2::<f32>()?, b.to_vec1::<f32>()?), before);

    // A non-scalar loss and a closure error leave them as well.
    let e = reptile_step(&vars, |_| w.as_tensor().sqr(), 2, 0.01, 1.0).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    let failing = |step: usize| {
        if step == 1 {
            Err(candle_core::Error::Msg("data loader failed".into()))
        } else {
            mse(&w, &b, &x, &y)
        }
    };
    assert!(reptile_step(&vars, failing, 3, 0.01, 1.0).is_err());
    assert_eq!((w.to_vec2::<f32>()?, b.to_vec1::<f32>()?), before);
    Ok(())
}

#[test]
fn bad_meta_arguments_are_refused() -> R<()> {
    let w = Var::new(&[1f32], &Device::Cpu)?;
    let loss = |_: usize| w.as_tensor().sqr()?.sum_all();
    let vars = [w.clone()];
    assert_err_names(reptile_step(&[], loss, 1, 0.1, 0.1), "reptile_step", "vars");
    assert_err_names(
        reptile_step(&vars, loss, 0, 0.1, 0.1),
        "reptile_step",
        "inner_steps",
    );
    assert_err_names(
        reptile_step(&vars, loss, 1, 0.0, 0.1),
        "reptile_step",
        "inner_lr",
    );
    assert_err_names(
        reptile_step(&vars, loss, 1, 0.1, -1.),
        "reptile_step",
        "outer_lr",
    );
    let mut outer = candle_nn::SGD::new(vars.to_vec(), 0.1)?;
    let query = || w.as_tensor().sqr()?.sum_all();
    let r = fomaml_step(&vars, loss, query, 1, f64::NAN, &mut outer);
    assert_err_names(r, "fomaml_step", "inner_lr");
    assert_eq!(w.to_vec1::<f32>()?, [1.0]);
    Ok(())
}

/// A 1 → 40 → 40 → 1 ReLU network on its own seeded [`Var`]s.
struct Mlp {
    vars: Vec<Var>,
}

impl Mlp {
    fn new(rng: &mut StdRng) -> R<Self> {
        let mut vars = Vec::new();
        for (fan_in, fan_out) in [(1, 40), (40, 40), (40, 1)] {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let w = uniform(rng, fan_in * fan_out, bound);
            vars.push(Var::from_vec(w, (fan_in, fan_out), &Device::Cpu)?);
            let b = uniform(rng, fan_out, bound);
            vars.push(Var::from_vec(b, fan_out, &Device::Cpu)?);
        }
        Ok(Self { vars })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (i, pair) in self.vars.chunks(2).enumerate() {
            h = h
                .matmul(pair[0].as_tensor())?
                .broadcast_add(pair[1].as_tensor())?;
            if i < 2 {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    fn loss(&self, (x, y): &(Tensor, Tensor)) -> candle_core::Result<Tensor> {
        self.forward(x)?.sub(y)?.sqr()?.mean_all()
    }
}

/// A sine task of Finn et al.: amplitude in [0.1, 5], phase in [0, π].
struct Sine {
    amplitude: f32,
    phase: f32,
}

impl Sine {
    fn sample(rng: &mut StdRng) -> Self {
        Self {
            amplitude: rng.random_range(0.1..5.0),
            phase: rng.random_range(0.0..std::f32::consts::PI),
        }
    }

    /// `(x, y)` as `(n, 1)` tensors for inputs `xs`.
    fn at(&self, xs: Vec<f32>) -> R<(Tensor, Tensor)> {
        let ys = xs.iter().map(|x| self.amplitude * (x - self.phase).sin());
        let n = xs.len();
        let y = Tensor::from_iter(ys, &Device::Cpu)?.reshape((n, 1))?;
        Ok((Tensor::from_vec(xs, (n, 1), &Device::Cpu)?, y))
    }

    fn batch(&self, rng: &mut StdRng, n: usize) -> R<(Tensor, Tensor)> {
        self.at(uniform(rng, n, 5.0))
    }
}

const INNER_LR: f64 = 0.02;
const SHOTS: usize = 5;
const ADAPT_STEPS: usize = 10;

/// Mean query MSE over `tasks` after [`ADAPT_STEPS`] SGD steps on [`SHOTS`] points each; the
/// weights are restored after each task.
fn adapted_mse(model: &Mlp, tasks: &[(Sine, (Tensor, Tensor))]) -> R<f64> {
    let grid: Vec<f32> = (0..50).map(|i| -5.0 + 10.0 * i as f32 / 49.0).collect();
    let mut total = 0.0;
    for (task, shots) in tasks {
        let saved: Vec<Tensor> = model
            .vars
            .iter()
            .map(|v| v.as_tensor().copy())
            .collect::<Result<_, _>>()?;
        for _ in 0..ADAPT_STEPS {
            let grads = model.loss(shots)?.backward()?;
            for v in &model.vars {
                let g = grads.get(v.as_tensor()).expect("grad");
                v.set(&(v.as_tensor() - (g * INNER_LR)?)?)?;
            }
        }
        total += model.loss(&task.at(grid.clone())?)?.to_scalar::<f32>()? as f64;
        for (v, s) in model.vars.iter().zip(&saved) {
            v.set(s)?;
        }
    }
    Ok(total / tasks.len() as f64)
}

#[test]
fn reptile_beats_joint_training_on_few_shot_sine_regression() -> R<()> {
    const META_STEPS: usize = 600;
    const INNER_STEPS: usize = 10;
    let mut rng = StdRng::seed_from_u64(31);
    let reptile = Mlp::new(&mut rng)?;
    let joint = Mlp::new(&mut StdRng::seed_from_u64(31))?;

    let mut joint_opt = candle_nn::SGD::new(joint.vars.clone(), INNER_LR)?;
    for step in 0..META_STEPS {
        let task = Sine::sample(&mut rng);
        // Reptile's outer rate, annealed linearly from 1 as in Nichol et al.
        let outer_lr = 1.0 - step as f64 / META_STEPS as f64;
        let batches = (0..INNER_STEPS)
            .map(|_| task.batch(&mut rng, 10))
            .collect::<R<Vec<_>>>()?;
        reptile_step(
            &reptile.vars,
            |k| reptile.loss(&batches[k]),
            INNER_STEPS,
            INNER_LR,
            outer_lr,
        )?;
        // The baseline sees the same data, trained jointly on all tasks.
        for batch in &batches {
            joint_opt.backward_step(&joint.loss(batch)?)?;
        }
    }

    let mut eval_rng = StdRng::seed_from_u64(7);
    let tasks = (0..30)
        .map(|_| {
            let task = Sine::sample(&mut eval_rng);
            let shots = task.batch(&mut eval_rng, SHOTS)?;
            Ok((task, shots))
        })
        .collect::<R<Vec<_>>>()?;
    let meta = adapted_mse(&reptile, &tasks)?;
    let base = adapted_mse(&joint, &tasks)?;
    println!("after {ADAPT_STEPS} steps on {SHOTS} shots: Reptile MSE {meta:.3}, joint {base:.3}");
    assert!(meta < 0.75 * base, "Reptile {meta} vs joint {base}");
    Ok(())
}
