//! Adafactor against torch.optim and LAMB against optax trajectories (fixtures from
//! `tests/fixtures/gen_optim_more.py` on the gradients of `gen_optim.py`), f16/bf16 parameters,
//! the tensor path against the fused kernels, Rosenbrock, exact resume, the NaN/Inf guard and
//! parallel chunks; L-BFGS iterates against torch's LBFGS (float64) on Rosenbrock and a
//! quadratic, finite termination on a quadratic, resume and the NaN/Inf guard.

mod optim_shared;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use candle_tricks::optim::path::force_tensor_path;
use candle_tricks::optim::{
    Adafactor, AdafactorConfig, Lamb, LambConfig, Lbfgs, LbfgsConfig, NonFinite, OptimizerState,
    ParamGroup, StrongWolfe,
};
use optim_shared::{
    assert_non_finite_leaves_everything, bits, boxed, fresh_vars, grads, load_fixture, max_rel,
    param_bits, step_synth, synth, to_f64, trajectory_error, vars, Stepper,
};

/// The shared gradients and initial values (optim.safetensors) with the trajectories of this
/// file's cases (optim_more.safetensors).
fn fixtures() -> HashMap<String, Tensor> {
    let mut f = load_fixture("optim.safetensors");
    f.extend(load_fixture("optim_more.safetensors"));
    f
}

/// The optimizer of a fixture case (hyper-parameters as in gen_optim_more.py).
fn make(case: &str, vars: Vec<Var>, nf: NonFinite) -> Box<dyn Stepper> {
    let lamb = LambConfig::default().with_lr(0.01).with_non_finite(nf);
    let ada = AdafactorConfig::default().with_non_finite(nf);
    let two_groups = |vars: &[Var]| {
        vec![
            ParamGroup::new(vec![vars[0].clone()]).with_weight_decay(0.1),
            ParamGroup::new(vec![vars[1].clone()])
                .with_weight_decay(0.0)
                .with_lr_mult(0.5),
        ]
    };
    match case {
        "adafactor" => boxed(Adafactor::with_groups(vars, ada)),
        "adafactor_wd" => boxed(Adafactor::with_groups(
            vars,
            ada.with_lr(0.05).with_weight_decay(0.1),
        )),
        "adafactor_all" => boxed(Adafactor::with_groups(
            vars,
            ada.with_lr(0.05)
                .with_beta2_decay(-0.5)
                .with_eps(Some(1e-3), 1e-2)
                .with_d(2.0)
                .with_maximize(true),
        )),
        "adafactor_nograd" => boxed(Adafactor::with_groups(vars, ada.with_lr(0.02))),
        "adafactor_groups" => boxed(Adafactor::with_groups(two_groups(&vars), ada.with_lr(0.02))),
        "lamb" => boxed(Lamb::with_groups(vars, lamb)),
        "lamb_wd" => boxed(Lamb::with_groups(vars, lamb.with_weight_decay(0.1))),
        "lamb_all" => boxed(Lamb::with_groups(
            vars,
            lamb.with_lr(0.02)
                .with_betas(0.8, 0.99)
                .with_eps(1e-3)
                .with_eps_root(1e-4)
                .with_weight_decay(0.05),
        )),
        "lamb_groups" => boxed(Lamb::with_groups(two_groups(&vars), lamb)),
        other => panic!("unknown case {other}"),
    }
}

const CASES: &[&str] = &[
    "adafactor",
    "adafactor_wd",
    "adafactor_all",
    "adafactor_nograd",
    "adafactor_groups",
    "lamb",
    "lamb_wd",
    "lamb_all",
    "lamb_groups",
];

#[test]
fn trajectories_match_the_references() {
    let f = fixtures();
    let mut report = Vec::new();
    for case in CASES {
        let err = trajectory_error(&f, case, DType::F32, make);
        report.push(format!("{case}: {err:.2e}"));
        assert!(err <= 1e-6, "{case}: max relative error {err:e}");
    }
    println!("{}", report.join("\n"));
}

#[test]
fn half_params_track_the_f32_trajectory() {
    let f = fixtures();
    for case in CASES {
        for (dtype, tol) in [(DType::F16, 3e-3), (DType::BF16, 2e-2)] {
            let err = trajectory_error(&f, case, dtype, make);
            println!("{case} {dtype:?}: {err:.2e}");
            assert!(err <= tol, "{case} {dtype:?}: max relative error {err:e}");
        }
    }
}

#[test]
fn tensor_path_matches_the_fused_kernels() {
    let f = fixtures();
    for case in CASES {
        for dtype in [DType::F32, DType::BF16] {
            let run = || {
                let (w, b) = vars(&f, dtype);
                let mut opt = make(case, vec![w.clone(), b.clone()], NonFinite::Error);
                for t in 0..20 {
                    opt.step_grads(&grads(&f, case, t, &w, &b)).unwrap();
                }
                (w, b, opt.state())
            };
            let fused = run();
            let _guard = force_tensor_path();
            let tensor = run();
            assert!(
                max_rel(tensor.0.as_tensor(), fused.0.as_tensor()) <= 1e-6,
                "{case} w"
            );
            assert!(
                max_rel(tensor.1.as_tensor(), fused.1.as_tensor()) <= 1e-6,
                "{case} b"
            );
            for (k, v) in &fused.2 {
                assert!(
                    max_rel(&tensor.2[k], v) <= 1e-6,
                    "{case} {dtype:?}: state {k}"
                );
            }
        }
    }
}

/// Rosenbrock $(1 - x)^2 + 100 (y - x^2)^2$ of a 2-element parameter.
fn rosenbrock_loss(p: &Var) -> Tensor {
    let x = p.as_tensor().get(0).unwrap();
    let y = p.as_tensor().get(1).unwrap();
    let a = x.affine(-1.0, 1.0).unwrap().sqr().unwrap();
    let c = ((y - x.sqr().unwrap()).unwrap().sqr().unwrap() * 100.0).unwrap();
    (a + c).unwrap()
}

fn distance_to_minimum(p: &Var) -> f64 {
    let v = to_f64(p.as_tensor());
    ((v[0] - 1.0).powi(2) + (v[1] - 1.0).powi(2)).sqrt()
}

#[test]
fn lamb_converges_on_rosenbrock() {
    // From (-1.5, 2). LAMB moves the tensor by lr times its norm each step, so it needs a
    // decaying learning rate to settle (and crawls where the path passes near the origin).
    let p = Var::new(&[-1.5f32, 2.0], &Device::Cpu).unwrap();
    let mut opt = Lamb::new(vec![p.clone()], LambConfig::default()).unwrap();
    for (lr, steps) in [(0.02, 1500), (0.002, 1000), (0.0002, 500)] {
        opt.set_learning_rate(lr);
        for _ in 0..steps {
            opt.backward_step(&rosenbrock_loss(&p)).unwrap();
        }
    }
    let d = distance_to_minimum(&p);
    println!("lamb: {d:.3e}");
    assert!(d < 1e-2, "lamb: distance to the minimum {d}");
}

#[test]
fn adafactor_converges_on_rosenbrock() {
    // The relative step is lr times the weights' RMS: slow but steady (torch: 0.011 after
    // these 10000 steps).
    let p = Var::new(&[-1.5f32, 2.0], &Device::Cpu).unwrap();
    let cfg = AdafactorConfig::default().with_lr(0.005);
    let mut opt = Adafactor::new(vec![p.clone()], cfg).unwrap();
    for _ in 0..10_000 {
        opt.backward_step(&rosenbrock_loss(&p)).unwrap();
    }
    let d = distance_to_minimum(&p);
    println!("adafactor: {d:.3e}");
    assert!(d < 3e-2, "adafactor: distance to the minimum {d}");
}

#[test]
fn adafactor_state_is_factored() {
    let w = Var::new(&[[[1.0f32; 5]; 3]; 2], &Device::Cpu).unwrap();
    let b = Var::new(&[1.0f32; 5], &Device::Cpu).unwrap();
    let s = Var::new(2.0f32, &Device::Cpu).unwrap();
    let mut opt = Adafactor::new(
        vec![w.clone(), b.clone(), s.clone()],
        AdafactorConfig::default(),
    )
    .unwrap();
    let loss = (w.as_tensor().sqr().unwrap().sum_all().unwrap()
        + b.as_tensor().sqr().unwrap().sum_all().unwrap()
        + s.as_tensor().sqr().unwrap())
    .unwrap();
    opt.backward_step(&loss).unwrap();
    let sd = opt.state_dict().unwrap();
    assert_eq!(sd["0.row_var"].dims(), &[2, 3, 1]);
    assert_eq!(sd["0.col_var"].dims(), &[2, 1, 5]);
    assert_eq!(sd["1.variance"].dims(), &[5]);
    assert_eq!(sd["2.variance"].dims(), &[] as &[usize]);
    for k in ["0.variance", "1.row_var", "1.col_var"] {
        assert!(!sd.contains_key(k), "{k}");
    }
    // A row statistic of the wrong shape is refused, naming the key.
    let mut bad = sd.clone();
    bad.insert(
        "0.row_var".into(),
        Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let e = opt.load_state_dict(&bad).unwrap_err().to_string();
    assert!(e.contains("0.row_var"), "{e}");
    opt.load_state_dict(&sd).unwrap();
}

/// A fresh optimizer of kind `k` with every option that changes the state in use.
fn make_full(k: usize, vars: Vec<Var>, lr: f64) -> Box<dyn Stepper> {
    match k {
        0 => boxed(Lamb::with_groups(
            vars,
            LambConfig::default().with_lr(lr).with_weight_decay(0.01),
        )),
        _ => boxed(Adafactor::with_groups(
            vars,
            AdafactorConfig::default()
                .with_lr(lr)
                .with_weight_decay(0.01),
        )),
    }
}

const KINDS: usize = 2;

#[test]
fn resume_from_saved_state_is_bit_identical() {
    // 1100 x 1000 takes the parallel-chunk path (a reduction across threads); 2 x 3 x 5 is a
    // batch of two factored matrices for Adafactor.
    let shapes: [&[usize]; 4] = [&[1100, 1000], &[7], &[3, 5], &[2, 3, 5]];
    let init: Vec<Tensor> = shapes.iter().map(|s| synth(s, 99, 0.5)).collect();
    for dtype in [DType::F32, DType::BF16] {
        for k in 0..KINDS {
            let a = fresh_vars(&init, dtype);
            let mut oa = make_full(k, a.clone(), 1e-3);
            for t in 0..8 {
                step_synth(oa.as_mut(), &a, t);
            }
            let b = fresh_vars(&init, dtype);
            let mut ob = make_full(k, b.clone(), 1e-3);
            for t in 0..3 {
                step_synth(ob.as_mut(), &b, t);
            }
            let path = std::env::temp_dir().join(format!(
                "candle_tricks_optim_more_resume_{k}_{}.safetensors",
                std::process::id()
            ));
            ob.save(&path).unwrap();
            let saved: Vec<Tensor> = b.iter().map(|v| v.as_tensor().copy().unwrap()).collect();
            drop(ob);
            let c = fresh_vars(&saved, dtype);
            let mut oc = make_full(k, c.clone(), 0.5);
            let loaded = oc.load_file(&path);
            std::fs::remove_file(&path).ok();
            loaded.unwrap();
            for t in 3..8 {
                step_synth(oc.as_mut(), &c, t);
            }
            for (va, vc) in a.iter().zip(&c) {
                assert_eq!(
                    param_bits(va),
                    param_bits(vc),
                    "{k} {dtype:?}: weights differ"
                );
            }
            assert_eq!(
                bits(&oa.state()),
                bits(&oc.state()),
                "{k} {dtype:?}: state differs"
            );
        }
    }
}

#[test]
fn non_finite_gradients_never_touch_weights_or_state() {
    let cases = ["lamb_all", "adafactor_all"];
    assert_non_finite_leaves_everything(&fixtures(), &cases, &make, f32::INFINITY);
}

#[test]
fn parallel_chunks_match_one_whole_pass() {
    // A 2M-element parameter runs in parallel 64K chunks; the same values under the tensor
    // path reduce in one go. The per-tensor norms make the two agree to rounding only. For
    // Adafactor the 3-D shape puts chunk borders inside rows and across matrices.
    for (k, shape) in [
        (0, &[2_000_000][..]),
        (1, &[2_000_000][..]),
        (1, &[4, 700, 800][..]),
    ] {
        let init = synth(shape, 7, 0.1);
        let run = || {
            let v = fresh_vars(std::slice::from_ref(&init), DType::F32);
            let mut o = make_full(k, v.clone(), 1e-2);
            for t in 0..3 {
                step_synth(o.as_mut(), &v, t);
            }
            v[0].as_tensor().copy().unwrap()
        };
        let fused = run();
        let _guard = force_tensor_path();
        let whole = run();
        assert!(max_rel(&fused, &whole) <= 1e-6, "optimizer {k}");
    }
}

// ---------------------------------------------------------------------------------------------
// L-BFGS

/// The objective of an L-BFGS fixture case at the flat vector of (a, b).
fn objective(f: &HashMap<String, Tensor>, kind: &str, a: &Var, b: &Var) -> Tensor {
    let x = Tensor::cat(
        &[a.as_tensor().flatten_all().unwrap(), b.as_tensor().clone()],
        0,
    )
    .unwrap();
    match kind {
        "quad" => {
            let ax = f["quad.A"]
                .matmul(&x.unsqueeze(1).unwrap())
                .unwrap()
                .squeeze(1)
                .unwrap();
            let quad = ((&x * ax).unwrap().sum_all().unwrap() * 0.5).unwrap();
            (quad - (&x * &f["quad.q"]).unwrap().sum_all().unwrap()).unwrap()
        }
        "rosen" => rosen(&x),
        "neg_rosen" => rosen(&x).neg().unwrap(),
        other => panic!("unknown objective {other}"),
    }
}

/// $\sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2$.
fn rosen(x: &Tensor) -> Tensor {
    let n = x.dim(0).unwrap();
    let (head, tail) = (
        x.narrow(0, 0, n - 1).unwrap(),
        x.narrow(0, 1, n - 1).unwrap(),
    );
    let valley = (tail - head.sqr().unwrap()).unwrap().sqr().unwrap();
    let slope = head.affine(-1.0, 1.0).unwrap().sqr().unwrap();
    ((valley * 100.0).unwrap() + slope)
        .unwrap()
        .sum_all()
        .unwrap()
}

/// (objective, config) of each fixture case, as in gen_optim_more.py.
fn lbfgs_case(case: &str) -> (&'static str, LbfgsConfig) {
    let c = LbfgsConfig::default();
    match case {
        "lbfgs_rosen" => ("rosen", c.with_max_iter(2)),
        "lbfgs_rosen_wolfe" => ("rosen", c.with_max_iter(3).with_strong_wolfe()),
        "lbfgs_rosen_hist" => (
            "rosen",
            c.with_max_iter(4)
                .with_max_eval(7)
                .with_history_size(2)
                .with_strong_wolfe(),
        ),
        "lbfgs_rosen_tol" => (
            "rosen",
            c.with_lr(0.5)
                .with_tolerance_grad(1e-1)
                .with_tolerance_change(1e-3)
                .with_strong_wolfe(),
        ),
        "lbfgs_max" => (
            "neg_rosen",
            c.with_max_iter(3).with_maximize(true).with_strong_wolfe(),
        ),
        "lbfgs_quad" => ("quad", c.with_lr(0.5).with_max_iter(2)),
        "lbfgs_quad_wolfe" => (
            "quad",
            c.with_max_iter(1).with_max_eval(10).with_strong_wolfe(),
        ),
        other => panic!("unknown case {other}"),
    }
}

const LBFGS_CASES: &[&str] = &[
    "lbfgs_rosen",
    "lbfgs_rosen_wolfe",
    "lbfgs_rosen_hist",
    "lbfgs_rosen_tol",
    "lbfgs_max",
    "lbfgs_quad",
    "lbfgs_quad_wolfe",
];

/// The two parameters (2, 2) and (2,) from a flat 6-vector.
fn split_vars(x0: &Tensor, dtype: DType) -> (Var, Var) {
    let x0 = x0.to_dtype(dtype).unwrap();
    let a = Var::from_tensor(&x0.narrow(0, 0, 4).unwrap().reshape((2, 2)).unwrap()).unwrap();
    let b = Var::from_tensor(&x0.narrow(0, 4, 2).unwrap().contiguous().unwrap()).unwrap();
    (a, b)
}

fn flat(a: &Var, b: &Var) -> Tensor {
    Tensor::cat(
        &[a.as_tensor().flatten_all().unwrap(), b.as_tensor().clone()],
        0,
    )
    .unwrap()
}

#[test]
fn lbfgs_iterates_match_torch() {
    let f = fixtures();
    let mut report = Vec::new();
    for case in LBFGS_CASES {
        let (kind, cfg) = lbfgs_case(case);
        let x0 = if kind == "quad" {
            &f["quad.x0"]
        } else {
            &f["rosen.x0"]
        };
        let (a, b) = split_vars(x0, DType::F64);
        let mut opt = Lbfgs::new(vec![a.clone(), b.clone()], cfg).unwrap();
        let mut worst = 0f64;
        for t in 0..20 {
            let loss = opt.step(|| Ok(objective(&f, kind, &a, &b))).unwrap();
            let want = f[&format!("{case}.loss")]
                .get(t)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            worst = worst.max((loss - want).abs() / want.abs().max(1.0));
            worst = worst.max(max_rel(
                &flat(&a, &b),
                &f[&format!("{case}.x")].get(t).unwrap(),
            ));
            let count = |k: &str| {
                f[&format!("{case}.{k}")]
                    .get(t)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            assert_eq!(
                opt.func_evals() as f64,
                count("evals"),
                "{case} step {t}: func_evals"
            );
            assert_eq!(
                opt.n_iter() as f64,
                count("iters"),
                "{case} step {t}: n_iter"
            );
        }
        report.push(format!("{case}: {worst:.2e}"));
        assert!(worst <= 1e-6, "{case}: max relative error {worst:e}");
    }
    println!("{}", report.join("\n"));
}

/// ½ xᵀAx − qᵀx with the fixture's A (6 × 6, positive definite): the iterations until x is
/// within `tol` of A⁻¹q, one iteration per step.
fn quadratic_iterations(f: &HashMap<String, Tensor>, wolfe: StrongWolfe, tol: f64) -> usize {
    let (a, b) = split_vars(&f["quad.x0"], DType::F64);
    let cfg = LbfgsConfig::default()
        .with_max_iter(1)
        .with_max_eval(30)
        .with_tolerance_grad(0.0)
        .with_tolerance_change(0.0)
        .with_line_search(Some(wolfe));
    let mut opt = Lbfgs::new(vec![a.clone(), b.clone()], cfg).unwrap();
    let xs = solve(&f["quad.A"], &f["quad.q"]);
    for it in 1..=20 {
        opt.step(|| Ok(objective(f, "quad", &a, &b))).unwrap();
        let x = to_f64(&flat(&a, &b));
        let err = x
            .iter()
            .zip(&xs)
            .map(|(u, v)| (u - v).powi(2))
            .sum::<f64>()
            .sqrt();
        if err < tol {
            return it;
        }
    }
    usize::MAX
}

/// A⁻¹q by Gaussian elimination with partial pivoting (f64).
fn solve(a: &Tensor, q: &Tensor) -> Vec<f64> {
    let n = q.dim(0).unwrap();
    let mut m: Vec<Vec<f64>> = a.to_vec2::<f64>().unwrap();
    let mut r = q.to_vec1::<f64>().unwrap();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| m[i][c].abs().total_cmp(&m[j][c].abs()))
            .unwrap();
        m.swap(c, p);
        r.swap(c, p);
        let (pivot, rc) = (m[c].clone(), r[c]);
        for (row, ri) in m.iter_mut().zip(r.iter_mut()).skip(c + 1) {
            let k = row[c] / pivot[c];
            for (x, p) in row.iter_mut().zip(&pivot).skip(c) {
                *x -= k * p;
            }
            *ri -= k * rc;
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|j| m[i][j] * x[j]).sum();
        x[i] = (r[i] - s) / m[i][i];
    }
    x
}

#[test]
fn lbfgs_solves_a_quadratic_in_n_iterations() {
    let f = fixtures();
    // A tight curvature condition makes the line search (nearly) exact: L-BFGS then takes
    // conjugate-gradient steps and lands on the minimum of the 6-D quadratic in <= n + 1
    // iterations.
    let exact = StrongWolfe { c1: 1e-4, c2: 1e-3 };
    let its = quadratic_iterations(&f, exact, 1e-8);
    println!("exact line search: {its} iterations");
    assert!(its <= 7, "exact-ish line search: {its} iterations");
    // torch's c2 = 0.9 accepts the unit step once it decreases enough: no finite termination,
    // but still a fast approach.
    let torch = quadratic_iterations(&f, StrongWolfe::default(), 1e-8);
    println!("torch's line search: {torch} iterations");
    assert!(
        torch > its && torch <= 20,
        "torch's line search: {torch} iterations"
    );
}

#[test]
fn lbfgs_converges_on_rosenbrock() {
    let f = fixtures();
    for dtype in [DType::F64, DType::F32] {
        let (a, b) = split_vars(&f["rosen.x0"], dtype);
        let cfg = LbfgsConfig::default().with_strong_wolfe();
        let mut opt = Lbfgs::new(vec![a.clone(), b.clone()], cfg).unwrap();
        for _ in 0..10 {
            opt.step(|| Ok(objective(&f, "rosen", &a, &b))).unwrap();
        }
        let x = to_f64(&flat(&a, &b));
        let d = x.iter().map(|v| (v - 1.0).powi(2)).sum::<f64>().sqrt();
        println!(
            "lbfgs {dtype:?}: distance {d:.2e} after {} evaluations",
            opt.func_evals()
        );
        assert!(d < 1e-3, "{dtype:?}: distance to the minimum {d}");
    }
}

fn lbfgs_state_bits(o: &Lbfgs) -> Vec<(String, Vec<u64>)> {
    bits(&o.state_dict().unwrap())
}

#[test]
fn lbfgs_resume_is_bit_identical() {
    let f = fixtures();
    for case in ["lbfgs_rosen_hist", "lbfgs_rosen", "lbfgs_max"] {
        let (kind, cfg) = lbfgs_case(case);
        let run = |steps: std::ops::Range<usize>, o: &mut Lbfgs, a: &Var, b: &Var| {
            for _ in steps {
                o.step(|| Ok(objective(&f, kind, a, b))).unwrap();
            }
        };
        let (a, b) = split_vars(&f["rosen.x0"], DType::F32);
        let mut full = Lbfgs::new(vec![a.clone(), b.clone()], cfg).unwrap();
        run(0..12, &mut full, &a, &b);
        let (a2, b2) = split_vars(&f["rosen.x0"], DType::F32);
        let mut first = Lbfgs::new(vec![a2.clone(), b2.clone()], cfg).unwrap();
        run(0..5, &mut first, &a2, &b2);
        let path = std::env::temp_dir().join(format!(
            "candle_tricks_lbfgs_resume_{case}_{}.safetensors",
            std::process::id()
        ));
        first.save_state(&path).unwrap();
        let (a3, b3) = (
            Var::from_tensor(&a2.as_tensor().copy().unwrap()).unwrap(),
            Var::from_tensor(&b2.as_tensor().copy().unwrap()).unwrap(),
        );
        drop(first);
        let other = LbfgsConfig::default().with_lr(0.3).with_history_size(50);
        let mut resumed = Lbfgs::new(vec![a3.clone(), b3.clone()], other).unwrap();
        let loaded = resumed.load_state(&path);
        std::fs::remove_file(&path).ok();
        loaded.unwrap();
        assert_eq!(resumed.config(), &cfg, "{case}: config restored");
        run(5..12, &mut resumed, &a3, &b3);
        assert_eq!(param_bits(&a), param_bits(&a3), "{case}: a");
        assert_eq!(param_bits(&b), param_bits(&b3), "{case}: b");
        assert_eq!(
            lbfgs_state_bits(&full),
            lbfgs_state_bits(&resumed),
            "{case}: state"
        );
    }
}

#[test]
fn lbfgs_non_finite_loss_restores_everything() {
    let f = fixtures();
    for policy in [NonFinite::Error, NonFinite::Skip] {
        let (kind, cfg) = lbfgs_case("lbfgs_rosen_wolfe");
        let (a, b) = split_vars(&f["rosen.x0"], DType::F64);
        let mut opt = Lbfgs::new(vec![a.clone(), b.clone()], cfg.with_non_finite(policy)).unwrap();
        for _ in 0..3 {
            opt.step(|| Ok(objective(&f, kind, &a, &b))).unwrap();
        }
        let before = (lbfgs_state_bits(&opt), param_bits(&a), param_bits(&b));
        // The third evaluation of the step (inside the line search) blows up.
        let mut calls = 0;
        let r = opt.step(|| {
            calls += 1;
            let l = objective(&f, kind, &a, &b);
            Ok(if calls == 3 {
                (l * f64::NAN).unwrap()
            } else {
                l
            })
        });
        match policy {
            NonFinite::Error => {
                let msg = r.expect_err("NaN loss must fail").to_string();
                assert!(msg.contains("Lbfgs") && msg.contains("loss"), "{msg}");
            }
            NonFinite::Skip => {
                r.unwrap();
                assert_eq!(opt.skipped_steps(), 1);
            }
        }
        let strip = |s: Vec<(String, Vec<u64>)>| {
            s.into_iter()
                .filter(|(k, _)| k != "__meta.skipped_steps")
                .collect::<Vec<_>>()
        };
        assert_eq!(
            strip(before.0),
            strip(lbfgs_state_bits(&opt)),
            "{policy:?}: state"
        );
        assert_eq!(before.1, param_bits(&a), "{policy:?}: a");
        assert_eq!(before.2, param_bits(&b), "{policy:?}: b");
        // An infinite gradient with a finite loss (sqrt at 0) is refused the same way.
        let c = Var::new(&[0.0f64], &Device::Cpu).unwrap();
        let mut o = Lbfgs::new(vec![c.clone()], LbfgsConfig::default()).unwrap();
        let e = o.step(|| Ok(c.as_tensor().sqrt()?.sum_all()?)).unwrap_err();
        assert!(e.to_string().contains("gradient of parameter 0"), "{e}");
        assert_eq!(to_f64(c.as_tensor()), [0.0]);
    }
}

#[test]
fn lbfgs_parameter_without_gradient_stays_put() {
    let p = Var::new(&[3.0f32, -1.0], &Device::Cpu).unwrap();
    let unused = Var::new(&[5.0f32], &Device::Cpu).unwrap();
    let mut opt = Lbfgs::new(vec![p.clone(), unused.clone()], LbfgsConfig::default()).unwrap();
    opt.step(|| Ok(p.as_tensor().sqr()?.sum_all()?)).unwrap();
    assert_eq!(to_f64(unused.as_tensor()), [5.0]);
    assert!(to_f64(p.as_tensor()).iter().all(|v| v.abs() < 1e-6));
}
