//! What the optimizer test crates share: the `Stepper` view of every
//! optimizer, the fixture gradients of gen_optim.py and the trajectory comparison.

// Each test crate uses a different subset.
#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_tricks::optim::{Algorithm, NonFinite, Optim, OptimizerState};

/// The operations the tests need, over every optimizer type.
pub trait Stepper {
    fn step_grads(&mut self, g: &GradStore) -> candle_tricks::Result<()>;
    fn state(&self) -> HashMap<String, Tensor>;
    fn load(&mut self, sd: &HashMap<String, Tensor>) -> candle_tricks::Result<()>;
    fn skipped(&self) -> u64;
    fn save(&self, path: &std::path::Path) -> candle_tricks::Result<()>;
    fn load_file(&mut self, path: &std::path::Path) -> candle_tricks::Result<()>;
}

impl<C: Algorithm> Stepper for Optim<C> {
    fn step_grads(&mut self, g: &GradStore) -> candle_tricks::Result<()> {
        self.try_step(g)
    }
    fn state(&self) -> HashMap<String, Tensor> {
        self.state_dict().expect("state_dict")
    }
    fn load(&mut self, sd: &HashMap<String, Tensor>) -> candle_tricks::Result<()> {
        self.load_state_dict(sd)
    }
    fn skipped(&self) -> u64 {
        self.skipped_steps()
    }
    fn save(&self, path: &std::path::Path) -> candle_tricks::Result<()> {
        self.save_state(path)
    }
    fn load_file(&mut self, path: &std::path::Path) -> candle_tricks::Result<()> {
        self.load_state(path)
    }
}

/// The fixture gradients of step `t` for (w, b) in their dtype; `b` left out on the no-grad
/// steps of the `_nograd` cases.
pub fn grads(f: &HashMap<String, Tensor>, case: &str, t: usize, w: &Var, b: &Var) -> GradStore {
    let mut g = GradStore::default();
    let dt = w.dtype();
    g.insert(
        w.as_tensor(),
        f[&format!("grad.{t}.w")].to_dtype(dt).unwrap(),
    );
    if !(case.ends_with("_nograd") && (5..8).contains(&t)) {
        g.insert(
            b.as_tensor(),
            f[&format!("grad.{t}.b")].to_dtype(dt).unwrap(),
        );
    }
    g
}

pub fn vars(f: &HashMap<String, Tensor>, dtype: DType) -> (Var, Var) {
    let w = Var::from_tensor(&f["init.w"].to_dtype(dtype).unwrap()).unwrap();
    let b = Var::from_tensor(&f["init.b"].to_dtype(dtype).unwrap()).unwrap();
    (w, b)
}

pub fn to_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Max over elements of |a - b| / max(|b|, 1).
pub fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    to_f64(a)
        .iter()
        .zip(to_f64(b))
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f64::max)
}

/// Runs a fixture case in `dtype`; returns the worst relative error over the trajectory.
pub fn trajectory_error(
    f: &HashMap<String, Tensor>,
    case: &str,
    dtype: DType,
    make: impl Fn(&str, Vec<Var>, NonFinite) -> Box<dyn Stepper>,
) -> f64 {
    let (w, b) = vars(f, dtype);
    let mut opt = make(case, vec![w.clone(), b.clone()], NonFinite::Error);
    let mut worst = 0f64;
    for t in 0..20 {
        opt.step_grads(&grads(f, case, t, &w, &b)).unwrap();
        let ew = f[&format!("{case}.w")].get(t).unwrap();
        let eb = f[&format!("{case}.b")].get(t).unwrap();
        worst = worst.max(max_rel(w.as_tensor(), &ew));
        worst = worst.max(max_rel(b.as_tensor(), &eb));
    }
    worst
}

pub fn load_fixture(name: &str) -> HashMap<String, Tensor> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    candle_core::safetensors::load(path, &Device::Cpu).expect("fixture file")
}

pub fn boxed<C: Algorithm + 'static>(opt: candle_tricks::Result<Optim<C>>) -> Box<dyn Stepper> {
    Box::new(opt.expect("optimizer"))
}

/// A state dict's tensors as bit patterns, to compare exactly.
pub fn bits(sd: &HashMap<String, Tensor>) -> Vec<(String, Vec<u64>)> {
    let mut v: Vec<_> = sd
        .iter()
        .map(|(k, t)| (k.clone(), to_f64(t).iter().map(|x| x.to_bits()).collect()))
        .collect();
    v.sort();
    v
}

pub fn param_bits(v: &Var) -> Vec<u64> {
    to_f64(v.as_tensor()).iter().map(|x| x.to_bits()).collect()
}

/// Deterministic gradients for step `t` (any values do).
pub fn synth(shape: &[usize], t: usize, salt: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| (i as f32 * 0.37 + t as f32 * 1.3 + salt).sin() * (1.0 + (i % 7) as f32))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

pub fn fresh_vars(init: &[Tensor], dtype: DType) -> Vec<Var> {
    init.iter()
        .map(|t| Var::from_tensor(&t.to_dtype(dtype).unwrap().copy().unwrap()).unwrap())
        .collect()
}

pub fn step_synth(opt: &mut dyn Stepper, vs: &[Var], t: usize) {
    let mut g = GradStore::default();
    for (j, v) in vs.iter().enumerate() {
        let d = synth(v.dims(), t, j as f32).to_dtype(v.dtype()).unwrap();
        g.insert(v.as_tensor(), d);
    }
    opt.step_grads(&g).unwrap();
}

/// Builds case `name`'s optimizer over the vars with a NaN/Inf policy.
pub type MakeStepper = dyn Fn(&str, Vec<Var>, NonFinite) -> Box<dyn Stepper>;

/// Three fixture steps of each of `cases`, then a step whose gradient of `b` holds `bad`: under
/// either policy the weights and the state (but the skip counter) stay bit-identical; `Error`
/// names the parameter, `Skip` counts the step.
pub fn assert_non_finite_leaves_everything(
    f: &HashMap<String, Tensor>,
    cases: &[&str],
    make: &MakeStepper,
    bad: f32,
) {
    for &case in cases {
        for policy in [NonFinite::Error, NonFinite::Skip] {
            let (w, b) = vars(f, DType::F32);
            let mut opt = make(case, vec![w.clone(), b.clone()], policy);
            for t in 0..3 {
                opt.step_grads(&grads(f, case, t, &w, &b)).unwrap();
            }
            let before = (bits(&opt.state()), param_bits(&w), param_bits(&b));
            let mut g = grads(f, case, 3, &w, &b);
            let mut gb = f["grad.3.b"].to_vec1::<f32>().unwrap();
            gb[2] = bad;
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
