//! What tests/optim.rs and tests/optim_adaptive.rs share: the `Stepper` view of every
//! optimizer, the fixture gradients of gen_optim.py and the trajectory comparison.

// Each test crate uses a different subset.
#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
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
