//! L-BFGS, PyTorch's `torch.optim.LBFGS`: a quasi-Newton method that builds an approximation
//! of the inverse Hessian from the last `history_size` steps $s_k$ and gradient changes $y_k$,
//! with torch's strong-Wolfe line search (cubic interpolation) as an option. All parameters
//! are one flat vector, as in torch.
//!
//! # Closure API
//! A step evaluates the objective several times (each iteration, and each line-search trial),
//! so it cannot be `candle_nn::Optimizer::backward_step`, which gets one loss computed
//! before the step. [`Lbfgs::step`] takes a closure that computes the loss from the current
//! parameter values (a scalar tensor built from the `Var`s); the optimizer writes trial
//! values into the `Var`s, calls the closure, runs `backward` on the loss itself and reads the
//! gradients of its `Var`s (a `Var` the loss does not depend on has gradient 0). It returns
//! the loss of the first evaluation, as torch does.
//!
//! # Algorithm
//! Per iteration, with gradient $g$: the direction $d = -H g$ by the two-loop recursion over the
//! stored pairs (with $H_0 = \frac{s^\top y}{y^\top y} I$ from the newest pair, and a pair kept
//! only when $y^\top s > 10^{-10}$, so $H$ stays positive definite); then a step $t$ along $d$:
//! $t = \gamma$ (the learning rate) without a line search (first iteration:
//! $\min(1, 1 / \lVert g\rVert_1)\thinspace\gamma$), or a point satisfying the strong Wolfe
//! conditions $f(x + t d) \le f(x) + c_1 t\thinspace g^\top d$ and
//! $\lvert g(x + t d)^\top d\rvert \le c_2 \lvert g^\top d\rvert$ ($c_1 = 10^{-4}$,
//! $c_2 = 0.9$). A step ends after `max_iter` iterations or `max_eval` evaluations, or when
//! $\max_i \lvert g_i\rvert \le$ `tolerance_grad`, or when the step or the loss change falls
//! under `tolerance_change`. The history persists across steps.
//!
//! The flat vectors (history, direction, gradients) are f64 on the host whatever the
//! parameters' dtype and device: L-BFGS is for small problems, and the curvature pairs need
//! the precision. With f64 parameters the iterates follow torch's float64 run.
//!
//! # Shapes
//! Any number of parameters of any shape; f32, f64, f16 or bf16. Memory: $2 \cdot$
//! `history_size` $+ 3$ f64 vectors of the total parameter count.
//!
//! # Tip
//! **L-BFGS for small, deterministic, full-batch problems**: fitting a few physical
//! parameters, neural style transfer (optimizing one image), a small regression, the last
//! layer of a frozen network. It uses curvature, so on smooth problems it converges in tens of
//! iterations where Adam needs thousands, with no learning rate to tune when the line search is
//! on. It is a poor fit for noisy minibatch gradients: the pairs $(s, y)$ then measure noise,
//! not curvature, and the line search chases the noise. On a positive-definite quadratic in
//! $n$ dimensions with exact line searches it finds the minimum in $n$ iterations (it then
//! matches conjugate gradients); torch's strong-Wolfe search with $c_2 = 0.9$ accepts inexact
//! steps and loses that property, a tight $c_2$ (e.g. $10^{-3}$, [`StrongWolfe::c2`]) restores
//! it at the price of more evaluations per iteration.
//!
//! # Example
//! ```
//! use candle_core::{Device, Var};
//! use candle_tricks::optim::{Lbfgs, LbfgsConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! // Rosenbrock (1 - x)^2 + 100 (y - x^2)^2 from (-1.5, 2), minimum at (1, 1).
//! let p = Var::new(&[-1.5f64, 2.0], &Device::Cpu)?;
//! let mut opt = Lbfgs::new(vec![p.clone()], LbfgsConfig::default().with_strong_wolfe())?;
//! let loss = || -> candle_tricks::Result<candle_core::Tensor> {
//!     let (x, y) = (p.as_tensor().get(0)?, p.as_tensor().get(1)?);
//!     Ok((x.affine(-1.0, 1.0)?.sqr()? + ((y - x.sqr()?)?.sqr()? * 100.0)?)?)
//! };
//! for _ in 0..5 {
//!     opt.step(loss)?; // up to 20 iterations each
//! }
//! let v = p.as_tensor().to_vec1::<f64>()?;
//! // Within 1e-5 (where `tolerance_change` stops it) after 55 evaluations of the loss.
//! assert!((v[0] - 1.0).abs() < 1e-5 && (v[1] - 1.0).abs() < 1e-5, "{v:?}");
//! assert_eq!(opt.func_evals(), 55); // torch's count on this problem
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Liu, Nocedal, *On the limited memory BFGS method for large scale optimization*,
//!   Mathematical Programming 45, 1989, <https://doi.org/10.1007/BF01589116>
//! - Nocedal, Wright, *Numerical Optimization*, 2nd ed., Springer 2006: ch. 3 (line searches,
//!   the strong Wolfe conditions, cubic interpolation) and ch. 7 (L-BFGS, the two-loop
//!   recursion)

use std::collections::{HashMap, HashSet, VecDeque};

use candle_core::{DType, Device, Tensor, Var};

use super::checkpoint::{check_lr, check_nonneg, flag, meta_count, StateReader};
pub use super::line_search::StrongWolfe;
use super::line_search::{strong_wolfe, Point};
use super::{NonFinite, OptimizerState};
use crate::{Error, Result};

const NAME: &str = "Lbfgs";

/// Configuration of [`Lbfgs`]; `Default` is torch's: lr 1, max_iter 20, max_eval
/// `max_iter * 5 / 4`, tolerance_grad 1e-7, tolerance_change 1e-9, history_size 100, no line
/// search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LbfgsConfig {
    /// Step length without a line search, the first trial step with one (default 1).
    pub lr: f64,
    /// Iterations per [`Lbfgs::step`] (default 20).
    pub max_iter: usize,
    /// Objective evaluations per step (`None`: `max_iter * 5 / 4`).
    pub max_eval: Option<usize>,
    /// Stop when every gradient entry is at most this in magnitude (default 1e-7).
    pub tolerance_grad: f64,
    /// Stop when the step or the loss changes by less (default 1e-9).
    pub tolerance_change: f64,
    /// Number of $(s, y)$ pairs kept (default 100).
    pub history_size: usize,
    /// The line search (default `None`: fixed steps of `lr`).
    pub line_search_fn: Option<StrongWolfe>,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
    /// What a NaN/Inf loss or gradient does (default [`NonFinite::Error`]); either way the
    /// parameters and the history are back to their values before the step.
    pub non_finite: NonFinite,
}

impl Default for LbfgsConfig {
    fn default() -> Self {
        Self {
            lr: 1.0,
            max_iter: 20,
            max_eval: None,
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
            history_size: 100,
            line_search_fn: None,
            maximize: false,
            non_finite: NonFinite::Error,
        }
    }
}

impl LbfgsConfig {
    /// Checks the values: lr finite and > 0, max_iter, max_eval and history_size >= 1,
    /// tolerances finite and >= 0, Wolfe constants $0 < c_1 < c_2 < 1$.
    pub fn validate(&self) -> Result<()> {
        check_lr(NAME, self.lr)?;
        if self.lr == 0.0 {
            return Err(Error::config(NAME, "lr must be > 0, got 0"));
        }
        for (name, v) in [
            ("max_iter", self.max_iter),
            ("max_eval", self.max_eval.unwrap_or(1)),
            ("history_size", self.history_size),
        ] {
            if v == 0 {
                return Err(Error::config(NAME, format!("{name} must be >= 1, got 0")));
            }
        }
        check_nonneg(NAME, "tolerance_grad", self.tolerance_grad)?;
        check_nonneg(NAME, "tolerance_change", self.tolerance_change)?;
        if let Some(w) = self.line_search_fn {
            if !(0.0 < w.c1 && w.c1 < w.c2 && w.c2 < 1.0) {
                return Err(Error::config(
                    NAME,
                    format!(
                        "strong Wolfe constants must satisfy 0 < c1 < c2 < 1, got c1 = {}, c2 = {}",
                        w.c1, w.c2
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The evaluation budget of a step: `max_eval`, or torch's `max_iter * 5 / 4`.
    pub fn max_eval(&self) -> usize {
        self.max_eval
            .unwrap_or(self.max_iter.saturating_mul(5) / 4)
            .max(1)
    }

    /// Sets the learning rate.
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    /// Sets the iterations per step.
    pub fn with_max_iter(mut self, max_iter: usize) -> Self {
        self.max_iter = max_iter;
        self
    }

    /// Sets the evaluations per step.
    pub fn with_max_eval(mut self, max_eval: usize) -> Self {
        self.max_eval = Some(max_eval);
        self
    }

    /// Sets the gradient tolerance.
    pub fn with_tolerance_grad(mut self, tolerance_grad: f64) -> Self {
        self.tolerance_grad = tolerance_grad;
        self
    }

    /// Sets the change tolerance.
    pub fn with_tolerance_change(mut self, tolerance_change: f64) -> Self {
        self.tolerance_change = tolerance_change;
        self
    }

    /// Sets the history size.
    pub fn with_history_size(mut self, history_size: usize) -> Self {
        self.history_size = history_size;
        self
    }

    /// Turns on torch's strong-Wolfe line search ([`StrongWolfe::default`]).
    pub fn with_strong_wolfe(self) -> Self {
        self.with_line_search(Some(StrongWolfe::default()))
    }

    /// Sets the line search (`None`: fixed steps).
    pub fn with_line_search(mut self, line_search_fn: Option<StrongWolfe>) -> Self {
        self.line_search_fn = line_search_fn;
        self
    }

    /// Maximizes instead of minimizing.
    pub fn with_maximize(mut self, maximize: bool) -> Self {
        self.maximize = maximize;
        self
    }

    /// Sets the non-finite policy.
    pub fn with_non_finite(mut self, non_finite: NonFinite) -> Self {
        self.non_finite = non_finite;
        self
    }
}

/// What persists between steps (torch's per-optimizer state).
#[derive(Debug, Clone, Default, PartialEq)]
struct History {
    func_evals: u64,
    n_iter: u64,
    /// The last direction, step length, inverse-Hessian scale, gradient and loss; `None`
    /// before the first iteration.
    last: Option<Last>,
    /// Gradient changes $y$, steps $s$ and $1 / y^\top s$, oldest first.
    old_dirs: VecDeque<Vec<f64>>,
    old_stps: VecDeque<Vec<f64>>,
    ro: VecDeque<f64>,
}

#[derive(Debug, Clone, PartialEq)]
struct Last {
    d: Vec<f64>,
    t: f64,
    h_diag: f64,
    prev_flat_grad: Vec<f64>,
    prev_loss: f64,
}

/// L-BFGS over a list of `Var`s; see the [module docs](self).
#[derive(Debug)]
pub struct Lbfgs {
    vars: Vec<Var>,
    numel: usize,
    cfg: LbfgsConfig,
    hist: History,
    skipped: u64,
}

/// An evaluation stopped by a NaN/Inf (the step is undone).
struct NonFiniteEval(Error);

impl From<Error> for NonFiniteEval {
    fn from(e: Error) -> Self {
        NonFiniteEval(e)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// `a + s · b`.
fn axpy(a: &[f64], s: f64, b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + s * y).collect()
}

impl Lbfgs {
    /// Builds the optimizer over `vars` (float `Var`s, each at most once, on one device).
    pub fn new(vars: Vec<Var>, cfg: LbfgsConfig) -> Result<Self> {
        cfg.validate()?;
        if vars.is_empty() {
            return Err(Error::config(NAME, "no parameters to optimize"));
        }
        let mut seen = HashSet::new();
        let mut numel = 0usize;
        for (i, v) in vars.iter().enumerate() {
            if !matches!(
                v.dtype(),
                DType::F32 | DType::F64 | DType::F16 | DType::BF16
            ) {
                return Err(Error::unsupported_dtype(
                    NAME,
                    format!("parameter {i}"),
                    "f32, f64, f16 or bf16",
                    v.dtype(),
                ));
            }
            if !v.device().same_device(vars[0].device()) {
                return Err(Error::config(
                    NAME,
                    format!("parameter {i} is on another device than parameter 0"),
                ));
            }
            if !seen.insert(v.as_tensor().id()) {
                return Err(Error::config(
                    NAME,
                    format!("parameter {i} appears twice; a parameter may appear once only"),
                ));
            }
            numel = numel
                .checked_add(v.elem_count())
                .ok_or_else(|| Error::config(NAME, "total parameter count overflows usize"))?;
        }
        Ok(Self {
            vars,
            numel,
            cfg,
            hist: History::default(),
            skipped: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LbfgsConfig {
        &self.cfg
    }

    /// The parameters, in flattening order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Objective evaluations over all steps (torch's `func_evals`).
    pub fn func_evals(&self) -> u64 {
        self.hist.func_evals
    }

    /// Iterations over all steps (torch's `n_iter`).
    pub fn n_iter(&self) -> u64 {
        self.hist.n_iter
    }

    /// Steps undone because of a NaN/Inf (policy [`NonFinite::Skip`]).
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }

    /// Sets the learning rate after checking it (finite, > 0).
    pub fn try_set_learning_rate(&mut self, lr: f64) -> Result<()> {
        let cfg = LbfgsConfig { lr, ..self.cfg };
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }

    /// One optimization step of up to `max_iter` iterations; `closure` computes the loss (a
    /// one-element tensor) from the current values of the `Var`s. Returns the loss of its
    /// first evaluation. A NaN/Inf loss or gradient restores the parameters and the history
    /// to their values before the step, then fails ([`NonFinite::Error`]) or returns that
    /// first loss ([`NonFinite::Skip`], counted in [`Lbfgs::skipped_steps`]).
    pub fn step(&mut self, mut closure: impl FnMut() -> Result<Tensor>) -> Result<f64> {
        self.cfg.validate()?;
        let x0 = self.read_flat()?;
        let saved = self.hist.clone();
        let mut first_loss = f64::NAN;
        match self.iterate(&mut closure, &mut first_loss) {
            Ok(()) => Ok(first_loss),
            Err(NonFiniteEval(e)) => {
                self.write_flat(&x0)?;
                self.hist = saved;
                match (e, self.cfg.non_finite) {
                    (Error::NonFinite { .. }, NonFinite::Skip) => {
                        self.skipped += 1;
                        Ok(first_loss)
                    }
                    (e, _) => Err(e),
                }
            }
        }
    }

    /// The parameters as one f64 vector.
    fn read_flat(&self) -> Result<Vec<f64>> {
        let mut x = Vec::with_capacity(self.numel);
        for v in &self.vars {
            let t = v
                .as_tensor()
                .to_device(&Device::Cpu)?
                .to_dtype(DType::F64)?;
            x.extend(t.flatten_all()?.to_vec1::<f64>()?);
        }
        Ok(x)
    }

    /// Writes the flat vector `x` into the parameters (rounded to their dtype).
    fn write_flat(&self, x: &[f64]) -> Result<()> {
        let mut off = 0;
        for v in &self.vars {
            let n = v.elem_count();
            let t = Tensor::from_slice(&x[off..off + n], v.shape(), &Device::Cpu)?
                .to_dtype(v.dtype())?
                .to_device(v.device())?;
            v.set(&t)?;
            off += n;
        }
        Ok(())
    }

    /// Writes `x`, evaluates the closure and returns the loss and the flat gradient (both
    /// negated when maximizing) with the values actually stored, read back.
    fn evaluate(
        &self,
        closure: &mut dyn FnMut() -> Result<Tensor>,
    ) -> std::result::Result<(f64, Vec<f64>), NonFiniteEval> {
        let loss = closure()?;
        if loss.elem_count() != 1 {
            return Err(Error::shape(NAME, "loss", "one element", loss.shape().clone()).into());
        }
        let value = loss
            .to_device(&Device::Cpu)
            .and_then(|l| l.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>())
            .map_err(Error::from)?[0];
        if !value.is_finite() {
            return Err(Error::non_finite(NAME, format!("the loss {value} (step undone)")).into());
        }
        let grads = loss.backward().map_err(Error::from)?;
        let mut g = Vec::with_capacity(self.numel);
        for (i, v) in self.vars.iter().enumerate() {
            match grads.get(v) {
                Some(gv) => {
                    let gv = gv
                        .to_device(&Device::Cpu)
                        .and_then(|t| t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>())
                        .map_err(Error::from)?;
                    if gv.iter().any(|x| !x.is_finite()) {
                        let what = format!("the gradient of parameter {i} (step undone)");
                        return Err(Error::non_finite(NAME, what).into());
                    }
                    g.extend(gv);
                }
                None => g.resize(g.len() + v.elem_count(), 0.0),
            }
        }
        if self.cfg.maximize {
            g.iter_mut().for_each(|x| *x = -*x);
            return Ok((-value, g));
        }
        Ok((value, g))
    }

    /// The loss and gradient at `x + t d`.
    fn evaluate_at(
        &self,
        closure: &mut dyn FnMut() -> Result<Tensor>,
        x: &[f64],
        t: f64,
        d: &[f64],
    ) -> std::result::Result<(f64, Vec<f64>), NonFiniteEval> {
        self.write_flat(&axpy(x, t, d))?;
        self.evaluate(closure)
    }

    /// torch's `LBFGS.step` loop.
    fn iterate(
        &mut self,
        closure: &mut dyn FnMut() -> Result<Tensor>,
        first_loss: &mut f64,
    ) -> std::result::Result<(), NonFiniteEval> {
        let cfg = self.cfg;
        let max_eval = cfg.max_eval();
        let (mut loss, mut flat_grad) = self.evaluate(closure)?;
        *first_loss = if cfg.maximize { -loss } else { loss };
        let mut current_evals = 1;
        self.hist.func_evals += 1;
        if max_abs(&flat_grad) <= cfg.tolerance_grad {
            return Ok(());
        }
        let mut x = self.read_flat()?;
        let mut n_iter = 0;
        while n_iter < cfg.max_iter {
            n_iter += 1;
            self.hist.n_iter += 1;
            let (d, h_diag) = self.direction(&flat_grad);
            let t0 = if self.hist.n_iter == 1 {
                let l1: f64 = flat_grad.iter().map(|g| g.abs()).sum();
                1f64.min(1.0 / l1) * cfg.lr
            } else {
                cfg.lr
            };
            let prev_loss = loss;
            self.hist.last = Some(Last {
                d: d.clone(),
                t: t0,
                h_diag,
                prev_flat_grad: flat_grad.clone(),
                prev_loss,
            });
            let gtd = dot(&flat_grad, &d);
            if gtd > -cfg.tolerance_change {
                break;
            }
            let mut ls_func_evals = 0;
            let mut opt_cond = false;
            let t = match cfg.line_search_fn {
                Some(w) => {
                    let start = Point {
                        t: 0.0,
                        f: loss,
                        g: flat_grad.clone(),
                        gtd,
                    };
                    let max_ls = max_eval as i64 - current_evals as i64;
                    let mut eval = |t: f64| {
                        self.evaluate_at(closure, &x, t, &d).map(|(f, g)| {
                            let gtd = dot(&g, &d);
                            Point { t, f, g, gtd }
                        })
                    };
                    let tol = cfg.tolerance_change;
                    let (p, evals) =
                        strong_wolfe(&mut eval, t0, max_abs(&d), start, w, tol, max_ls)?;
                    (loss, flat_grad) = (p.f, p.g);
                    ls_func_evals = evals;
                    self.write_flat(&axpy(&x, p.t, &d))?;
                    opt_cond = max_abs(&flat_grad) <= cfg.tolerance_grad;
                    p.t
                }
                None => {
                    self.write_flat(&axpy(&x, t0, &d))?;
                    if n_iter != cfg.max_iter {
                        (loss, flat_grad) = self.evaluate(closure)?;
                        opt_cond = max_abs(&flat_grad) <= cfg.tolerance_grad;
                        ls_func_evals = 1;
                    }
                    t0
                }
            };
            if let Some(l) = self.hist.last.as_mut() {
                l.t = t;
            }
            x = self.read_flat()?;
            current_evals += ls_func_evals;
            self.hist.func_evals += ls_func_evals as u64;
            if n_iter == cfg.max_iter
                || current_evals >= max_eval
                || opt_cond
                || d.iter().map(|v| (v * t).abs()).fold(0.0, f64::max) <= cfg.tolerance_change
                || (loss - prev_loss).abs() < cfg.tolerance_change
            {
                break;
            }
        }
        Ok(())
    }

    /// The new direction from gradient `g` (after storing the last pair when its curvature
    /// $y^\top s$ is positive) and the inverse-Hessian scale, by the two-loop recursion.
    fn direction(&mut self, g: &[f64]) -> (Vec<f64>, f64) {
        let h = &mut self.hist;
        let Some(last) = h.last.as_ref().filter(|_| h.n_iter > 1) else {
            h.old_dirs.clear();
            h.old_stps.clear();
            h.ro.clear();
            return (g.iter().map(|x| -x).collect(), 1.0);
        };
        let mut h_diag = last.h_diag;
        let y: Vec<f64> = g
            .iter()
            .zip(&last.prev_flat_grad)
            .map(|(a, b)| a - b)
            .collect();
        let s: Vec<f64> = last.d.iter().map(|v| v * last.t).collect();
        let ys = dot(&y, &s);
        if ys > 1e-10 {
            if h.old_dirs.len() == self.cfg.history_size {
                h.old_dirs.pop_front();
                h.old_stps.pop_front();
                h.ro.pop_front();
            }
            h_diag = ys / dot(&y, &y);
            h.old_dirs.push_back(y);
            h.old_stps.push_back(s);
            h.ro.push_back(1.0 / ys);
        }
        let k = h.old_dirs.len();
        let mut al = vec![0.0; k];
        let mut q: Vec<f64> = g.iter().map(|x| -x).collect();
        for i in (0..k).rev() {
            al[i] = dot(&h.old_stps[i], &q) * h.ro[i];
            q = axpy(&q, -al[i], &h.old_dirs[i]);
        }
        let mut r: Vec<f64> = q.iter().map(|v| v * h_diag).collect();
        let pairs = h.old_dirs.iter().zip(&h.old_stps).zip(&h.ro);
        for (((y, s), ro), al) in pairs.zip(al) {
            let be = dot(y, &r) * ro;
            r = axpy(&r, al - be, s);
        }
        (r, h_diag)
    }
}

impl OptimizerState for Lbfgs {
    /// `__meta.*`: the configuration (`max_eval` -1 when unset, `line_search` 0/1 with
    /// `wolfe_c1` / `wolfe_c2`), `__meta.numel`, `__meta.skipped_steps`; `func_evals`,
    /// `n_iter`; after the first iteration `d`, `t`, `h_diag`, `prev_flat_grad`, `prev_loss`;
    /// with stored pairs `old_dirs`, `old_stps` (pairs × numel) and `ro`. All f64.
    fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        let c = &self.cfg;
        let cpu = &Device::Cpu;
        let scalar = |v: f64| Tensor::new(v, cpu);
        let w = c.line_search_fn.unwrap_or_default();
        let nf = match c.non_finite {
            NonFinite::Error => 0.0,
            NonFinite::Skip => 1.0,
        };
        let mut m = HashMap::new();
        for (k, v) in [
            ("lr", c.lr),
            ("max_iter", c.max_iter as f64),
            ("max_eval", c.max_eval.map_or(-1.0, |e| e as f64)),
            ("tolerance_grad", c.tolerance_grad),
            ("tolerance_change", c.tolerance_change),
            ("history_size", c.history_size as f64),
            ("line_search", flag(c.line_search_fn.is_some())),
            ("wolfe_c1", w.c1),
            ("wolfe_c2", w.c2),
            ("maximize", flag(c.maximize)),
            ("non_finite", nf),
            ("numel", self.numel as f64),
            ("skipped_steps", self.skipped as f64),
        ] {
            m.insert(format!("__meta.{k}"), scalar(v)?);
        }
        let h = &self.hist;
        m.insert("func_evals".into(), scalar(h.func_evals as f64)?);
        m.insert("n_iter".into(), scalar(h.n_iter as f64)?);
        if let Some(l) = &h.last {
            m.insert("d".into(), Tensor::new(l.d.as_slice(), cpu)?);
            m.insert("t".into(), scalar(l.t)?);
            m.insert("h_diag".into(), scalar(l.h_diag)?);
            let g = Tensor::new(l.prev_flat_grad.as_slice(), cpu)?;
            m.insert("prev_flat_grad".into(), g);
            m.insert("prev_loss".into(), scalar(l.prev_loss)?);
        }
        if !h.ro.is_empty() {
            let stack = |vs: &VecDeque<Vec<f64>>| -> Result<Tensor> {
                let flat: Vec<f64> = vs.iter().flatten().copied().collect();
                Ok(Tensor::from_vec(flat, (vs.len(), self.numel), cpu)?)
            };
            m.insert("old_dirs".into(), stack(&h.old_dirs)?);
            m.insert("old_stps".into(), stack(&h.old_stps)?);
            let ro: Vec<f64> = h.ro.iter().copied().collect();
            m.insert("ro".into(), Tensor::new(ro.as_slice(), cpu)?);
        }
        Ok(m)
    }

    fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let st = StateReader::new(NAME, state);
        let count = |k: &str| meta_count(NAME, state, k);
        let whole = |k: &str| -> Result<usize> {
            usize::try_from(count(&format!("__meta.{k}"))?)
                .map_err(|_| Error::config(NAME, format!("state `__meta.{k}` too large")))
        };
        let max_eval = st.value("max_eval")?;
        let cfg = LbfgsConfig {
            lr: st.value("lr")?,
            max_iter: whole("max_iter")?,
            max_eval: if max_eval == -1.0 {
                None
            } else {
                Some(whole("max_eval")?)
            },
            tolerance_grad: st.value("tolerance_grad")?,
            tolerance_change: st.value("tolerance_change")?,
            history_size: whole("history_size")?,
            line_search_fn: st.flag("line_search")?.then_some(StrongWolfe {
                c1: st.value("wolfe_c1")?,
                c2: st.value("wolfe_c2")?,
            }),
            maximize: st.flag("maximize")?,
            non_finite: match st.value("non_finite")? {
                0.0 => NonFinite::Error,
                1.0 => NonFinite::Skip,
                v => {
                    return Err(Error::config(
                        NAME,
                        format!("state `__meta.non_finite` must be 0 or 1, got {v}"),
                    ))
                }
            },
        };
        cfg.validate()?;
        let numel = whole("numel")?;
        if numel != self.numel {
            return Err(Error::config(
                NAME,
                format!(
                    "state dict is for {numel} parameter elements, the optimizer has {} (the var order must match)",
                    self.numel
                ),
            ));
        }
        let skipped = count("__meta.skipped_steps")?;
        let vector = |k: &str, len: usize| -> Result<Vec<f64>> {
            let t = state
                .get(k)
                .ok_or_else(|| Error::config(NAME, format!("state dict: missing entry {k}")))?;
            if t.elem_count() != len {
                return Err(Error::shape(
                    NAME,
                    "state entry",
                    format!("{len} elements ({k})"),
                    t.shape().clone(),
                ));
            }
            let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::non_finite(NAME, format!("state entry {k}")));
            }
            Ok(v)
        };
        let n_iter = count("n_iter")?;
        let last = if state.contains_key("d") {
            Some(Last {
                d: vector("d", numel)?,
                t: vector("t", 1)?[0],
                h_diag: vector("h_diag", 1)?[0],
                prev_flat_grad: vector("prev_flat_grad", numel)?,
                prev_loss: vector("prev_loss", 1)?[0],
            })
        } else {
            None
        };
        let (mut old_dirs, mut old_stps, mut ro) = Default::default();
        if let Some(r) = state.get("ro") {
            let k = r.elem_count();
            if k > cfg.history_size || last.is_none() {
                return Err(Error::config(
                    NAME,
                    format!(
                        "state holds {k} curvature pairs, history_size is {}{}",
                        cfg.history_size,
                        if last.is_none() {
                            " (and no direction)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            let len = k
                .checked_mul(numel)
                .ok_or_else(|| Error::config(NAME, "state history size overflows"))?;
            let split = |v: Vec<f64>| -> VecDeque<Vec<f64>> {
                v.chunks(numel.max(1)).map(<[f64]>::to_vec).collect()
            };
            old_dirs = split(vector("old_dirs", len)?);
            old_stps = split(vector("old_stps", len)?);
            ro = vector("ro", k)?.into();
        }
        self.hist = History {
            func_evals: count("func_evals")?,
            n_iter,
            last,
            old_dirs,
            old_stps,
            ro,
        };
        self.cfg = cfg;
        self.skipped = skipped;
        Ok(())
    }
}
