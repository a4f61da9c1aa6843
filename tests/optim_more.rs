//! LAMB against optax trajectories (fixtures from `tests/fixtures/gen_optim_more.py` on the
//! gradients of `gen_optim.py`), f16/bf16 parameters, the tensor path against the fused
//! kernels, Rosenbrock, exact resume, the NaN/Inf guard and parallel chunks.

mod optim_shared;

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use candle_tricks::optim::path::force_tensor_path;
use candle_tricks::optim::{Algorithm, Lamb, LambConfig, NonFinite, Optim, ParamGroup};
use optim_shared::{grads, max_rel, to_f64, trajectory_error, vars, Stepper};

fn load_fixture(name: &str) -> HashMap<String, Tensor> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    candle_core::safetensors::load(path, &Device::Cpu).expect("fixture file")
}

/// The shared gradients and initial values (optim.safetensors) with the trajectories of this
/// file's cases (optim_more.safetensors).
fn fixtures() -> HashMap<String, Tensor> {
    let mut f = load_fixture("optim.safetensors");
    f.extend(load_fixture("optim_more.safetensors"));
    f
}

fn boxed<C: Algorithm + 'static>(opt: candle_tricks::Result<Optim<C>>) -> Box<dyn Stepper> {
    Box::new(opt.expect("optimizer"))
}

/// The optimizer of a fixture case (hyper-parameters as in gen_optim_more.py).
fn make(case: &str, vars: Vec<Var>, nf: NonFinite) -> Box<dyn Stepper> {
    let lamb = LambConfig::default().with_lr(0.01).with_non_finite(nf);
    match case {
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
        "lamb_groups" => boxed(Lamb::with_groups(
            vec![
                ParamGroup::new(vec![vars[0].clone()]).with_weight_decay(0.1),
                ParamGroup::new(vec![vars[1].clone()])
                    .with_weight_decay(0.0)
                    .with_lr_mult(0.5),
            ],
            lamb,
        )),
        other => panic!("unknown case {other}"),
    }
}

const CASES: &[&str] = &["lamb", "lamb_wd", "lamb_all", "lamb_groups"];

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

/// A state dict's tensors as bit patterns, to compare exactly.
fn bits(sd: &HashMap<String, Tensor>) -> Vec<(String, Vec<u64>)> {
    let mut v: Vec<_> = sd
        .iter()
        .map(|(k, t)| (k.clone(), to_f64(t).iter().map(|x| x.to_bits()).collect()))
        .collect();
    v.sort();
    v
}

fn param_bits(v: &Var) -> Vec<u64> {
    to_f64(v.as_tensor()).iter().map(|x| x.to_bits()).collect()
}

/// Deterministic gradients for step `t` (any values do).
fn synth(shape: &[usize], t: usize, salt: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| (i as f32 * 0.37 + t as f32 * 1.3 + salt).sin() * (1.0 + (i % 7) as f32))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A fresh optimizer of kind `k` with every option that changes the state in use.
fn make_full(k: usize, vars: Vec<Var>, lr: f64) -> Box<dyn Stepper> {
    match k {
        _ => boxed(Lamb::with_groups(
            vars,
            LambConfig::default().with_lr(lr).with_weight_decay(0.01),
        )),
    }
}

const KINDS: usize = 1;

fn fresh_vars(init: &[Tensor], dtype: DType) -> Vec<Var> {
    init.iter()
        .map(|t| Var::from_tensor(&t.to_dtype(dtype).unwrap().copy().unwrap()).unwrap())
        .collect()
}

fn step_synth(opt: &mut dyn Stepper, vs: &[Var], t: usize) {
    let mut g = GradStore::default();
    for (j, v) in vs.iter().enumerate() {
        let d = synth(v.dims(), t, j as f32).to_dtype(v.dtype()).unwrap();
        g.insert(v.as_tensor(), d);
    }
    opt.step_grads(&g).unwrap();
}

#[test]
fn resume_from_saved_state_is_bit_identical() {
    // 1100 x 1000 takes the parallel-chunk path (a reduction across threads).
    let shapes: [&[usize]; 3] = [&[1100, 1000], &[7], &[3, 5]];
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
    let f = fixtures();
    for case in ["lamb_all"] {
        for policy in [NonFinite::Error, NonFinite::Skip] {
            let (w, b) = vars(&f, DType::F32);
            let mut opt = make(case, vec![w.clone(), b.clone()], policy);
            for t in 0..3 {
                opt.step_grads(&grads(&f, case, t, &w, &b)).unwrap();
            }
            let before = (bits(&opt.state()), param_bits(&w), param_bits(&b));
            let mut g = grads(&f, case, 3, &w, &b);
            let mut gb = f["grad.3.b"].to_vec1::<f32>().unwrap();
            gb[2] = f32::INFINITY;
            g.insert(b.as_tensor(), Tensor::new(gb, &Device::Cpu).unwrap());
            let r = opt.step_grads(&g);
            match policy {
                NonFinite::Error => {
                    let msg = r.expect_err("non-finite gradient must fail").to_string();
                    assert!(msg.contains("param1"), "{case}: {msg}");
                }
                NonFinite::Skip => {
                    r.unwrap();
                    assert_eq!(opt.skipped(), 1, "{case}");
                }
            }
            let strip = |s: Vec<(String, Vec<u64>)>| {
                s.into_iter()
                    .filter(|(k, _)| k != "__meta.skipped_steps")
                    .collect::<Vec<_>>()
            };
            assert_eq!(strip(before.0), strip(bits(&opt.state())), "{case}: state");
            assert_eq!(before.1, param_bits(&w), "{case}: w");
            assert_eq!(before.2, param_bits(&b), "{case}: b");
        }
    }
}

#[test]
fn parallel_chunks_match_one_whole_pass() {
    // A 2M-element parameter runs in parallel 64K chunks; the same values under the tensor
    // path reduce in one go. The per-tensor norms make the two agree to rounding only.
    let n = 2_000_000;
    let init = synth(&[n], 7, 0.1);
    for k in 0..KINDS {
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
