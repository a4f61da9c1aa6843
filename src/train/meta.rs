//! Meta-learning an initialisation: Reptile and first-order MAML over a user closure that
//! returns a task's loss.
//!
//! # Shapes
//! - `vars`: the model's [`Var`]s (the meta-weights $\theta$), any shapes, float dtypes; the
//!   closures compute their loss from the current values of these same `Var`s, so the
//!   adaptation is seen by the model.
//! - the closures return a scalar (rank 0) loss; the inner one gets the inner step's index, to
//!   draw a fresh batch of the task per step if it likes.
//!
//! # Tip
//! With five examples of a new task, training from a random or a jointly trained
//! initialisation barely moves; meta-learning instead learns an initialisation $\theta$ from
//! which a few SGD steps on a new task already fit it (few-shot regression, per-user
//! personalisation, a new class from a handful of images). Each meta-step samples a task,
//! adapts a copy of the weights with $k$ SGD steps of rate $\alpha$ to $\phi$, and moves
//! $\theta$:
//!
//! - **Reptile** ([`reptile_step`]): toward the adapted weights,
//!   $\theta \leftarrow \theta + \epsilon (\phi - \theta)$. No query set, no second
//!   derivatives; $\phi - \theta$ acts as a gradient that favours weights good for every task
//!   *and* quick to adapt.
//! - **First-order MAML** ([`fomaml_step`]): adapt on the task's support loss, take the
//!   gradient of its *query* loss at $\phi$, $\nabla_{\phi} L_{q}(\phi)$, and apply it to
//!   $\theta$ with any outer optimizer (`candle_nn::SGD` for plain SGD, or an adaptive one).
//!
//! Full (second-order) MAML differentiates through the inner steps, which needs the Hessian
//! of the inner loss, i.e. a backward pass through a backward pass. candle 0.11 has no double
//! backward (its gradients are not themselves differentiable), so only the first-order
//! variants are offered; Nichol et al. and Finn et al. report them close to full MAML at a
//! fraction of the memory. Trade-offs: each meta-step costs $k + 1$ (FOMAML) or $k$ (Reptile)
//! forward-backward passes on one task; use the same $k$ and $\alpha$ at meta-test time as in
//! meta-training, since the initialisation is tuned for them.
//!
//! Both steps validate before touching anything and keep the weights consistent: a non-finite
//! or non-scalar loss, a non-finite gradient or a closure error restores the meta-weights
//! exactly and returns the error. `tests/train16.rs` meta-trains a small MLP on Finn et al.'s
//! sine regression (5 shots) and checks that Reptile's initialisation, after 10 SGD steps,
//! beats a jointly trained one on the same data.
//!
//! # Example
//! ```
//! use candle_core::{Device, Var};
//! use candle_nn::Optimizer;
//! use candle_tricks::train::{fomaml_step, reptile_step};
//! # fn main() -> candle_tricks::Result<()> {
//! let w = Var::new(&[0f32], &Device::Cpu)?;
//! let vars = [w.clone()];
//! // Task loss (w - 2)²: one SGD step of rate 0.25 takes w from 0 to 1; Reptile with ε = 0.5
//! // moves the meta-weight halfway there.
//! let task = |_step: usize| w.as_tensor().affine(1.0, -2.0)?.sqr()?.sum_all();
//! let losses = reptile_step(&vars, task, 1, 0.25, 0.5)?;
//! assert_eq!(losses.inner, [4.0]);
//! assert_eq!(w.to_vec1::<f32>()?, [0.5]);
//!
//! // FOMAML from w = 0: adapt to 1 on the support loss, then the query loss (w - 3)² has
//! // gradient -4 there; outer SGD with rate 0.1 moves the meta-weight to 0.4.
//! w.set(&candle_core::Tensor::new(&[0f32], &Device::Cpu)?)?;
//! let query = || w.as_tensor().affine(1.0, -3.0)?.sqr()?.sum_all();
//! let mut outer = candle_nn::SGD::new(vec![w.clone()], 0.1)?;
//! let losses = fomaml_step(&vars, task, query, 1, 0.25, &mut outer)?;
//! assert_eq!(losses.query, Some(4.0));
//! assert!((w.to_vec1::<f32>()?[0] - 0.4).abs() < 1e-7);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Finn, Abbeel, Levine, *Model-Agnostic Meta-Learning for Fast Adaptation of Deep
//!   Networks*, ICML 2017, <https://arxiv.org/abs/1703.03400> (MAML, its first-order
//!   approximation, the sine-regression benchmark).
//! - Nichol, Achiam, Schulman, *On First-Order Meta-Learning Algorithms*, 2018,
//!   <https://arxiv.org/abs/1803.02999> (Reptile; the analysis of first-order MAML).

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::Optimizer;

use crate::optim::fused::first_non_finite;
use crate::{check, Error, Result};

/// The losses seen during one meta-step.
#[derive(Debug, Clone, PartialEq)]
pub struct MetaLosses {
    /// The task (support) loss before each inner SGD step, `inner_steps` values.
    pub inner: Vec<f64>,
    /// The query loss at the adapted weights ([`fomaml_step`]); `None` for [`reptile_step`].
    pub query: Option<f64>,
}

/// One Reptile meta-step: adapts `vars` with `inner_steps` plain SGD steps of rate `inner_lr`
/// on the loss returned by `inner` (called with the step's index), giving $\phi$, then sets
/// the meta-weights to $\theta + \epsilon (\phi - \theta)$ with $\epsilon$ = `outer_lr`.
///
/// Errors (the weights are then left as they were): empty `vars`, `inner_steps` 0, a rate
/// that is not finite and $> 0$, a non-float variable, a non-scalar or non-finite loss, a
/// non-finite gradient, or an error of the closure.
pub fn reptile_step<F>(
    vars: &[Var],
    mut inner: F,
    inner_steps: usize,
    inner_lr: f64,
    outer_lr: f64,
) -> Result<MetaLosses>
where
    F: FnMut(usize) -> candle_core::Result<Tensor>,
{
    const BLOCK: &str = "reptile_step";
    validate(BLOCK, vars, inner_steps, inner_lr)?;
    check::eps(BLOCK, "outer_lr", outer_lr)?;
    let meta = snapshot(vars)?;
    let adapted = adapt(BLOCK, vars, &mut inner, inner_steps, inner_lr).and_then(|losses| {
        let moved = vars
            .iter()
            .zip(&meta)
            .map(|(phi, theta)| theta + ((phi.as_tensor() - theta)? * outer_lr)?)
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok((losses, moved))
    });
    match adapted {
        Ok((inner, moved)) => {
            restore(vars, &moved)?;
            Ok(MetaLosses { inner, query: None })
        }
        Err(e) => {
            restore(vars, &meta)?;
            Err(e)
        }
    }
}

/// One first-order MAML meta-step: adapts `vars` with `inner_steps` plain SGD steps of rate
/// `inner_lr` on the `support` loss, takes the gradient of the `query` loss at the adapted
/// weights, restores the meta-weights and lets `outer` apply that gradient to them
/// (`candle_nn::SGD` built on the same `vars` for plain SGD).
///
/// Errors (the weights are then left as they were): as [`reptile_step`], for both losses.
pub fn fomaml_step<S, Q, O>(
    vars: &[Var],
    mut support: S,
    query: Q,
    inner_steps: usize,
    inner_lr: f64,
    outer: &mut O,
) -> Result<MetaLosses>
where
    S: FnMut(usize) -> candle_core::Result<Tensor>,
    Q: FnOnce() -> candle_core::Result<Tensor>,
    O: Optimizer,
{
    const BLOCK: &str = "fomaml_step";
    validate(BLOCK, vars, inner_steps, inner_lr)?;
    let meta = snapshot(vars)?;
    let adapted = adapt(BLOCK, vars, &mut support, inner_steps, inner_lr).and_then(|inner| {
        let loss = query()?;
        let value = read_loss(BLOCK, "query loss", &loss)?;
        let grads = loss.backward()?;
        finite_grads(BLOCK, vars, &grads, "the query loss")?;
        Ok((inner, value, grads))
    });
    restore(vars, &meta)?;
    let (inner, query, grads) = adapted?;
    // The store is keyed by the variables' ids, which `Var::set` keeps: the gradient taken at
    // the adapted weights lands on the meta-weights.
    outer.step(&grads)?;
    Ok(MetaLosses {
        inner,
        query: Some(query),
    })
}

/// The checks shared by both meta-steps.
fn validate(block: &'static str, vars: &[Var], inner_steps: usize, inner_lr: f64) -> Result<()> {
    if vars.is_empty() {
        return Err(Error::config(
            block,
            "vars must hold at least one Var, got 0",
        ));
    }
    check::positive(block, "inner_steps", inner_steps)?;
    check::eps(block, "inner_lr", inner_lr)?;
    for (i, v) in vars.iter().enumerate() {
        if !v.dtype().is_float() {
            let what = format!("variable {i}");
            return Err(Error::unsupported_dtype(
                block,
                what,
                "a float dtype",
                v.dtype(),
            ));
        }
    }
    Ok(())
}

/// Copies of the variables' current values.
fn snapshot(vars: &[Var]) -> Result<Vec<Tensor>> {
    Ok(vars
        .iter()
        .map(|v| v.as_tensor().copy())
        .collect::<candle_core::Result<_>>()?)
}

/// Writes `values` into `vars`.
fn restore(vars: &[Var], values: &[Tensor]) -> Result<()> {
    for (v, t) in vars.iter().zip(values) {
        v.set(t)?;
    }
    Ok(())
}

/// `steps` plain SGD steps of rate `lr` on `loss`, in place on `vars`; the loss before each.
fn adapt<F>(
    block: &'static str,
    vars: &[Var],
    loss: &mut F,
    steps: usize,
    lr: f64,
) -> Result<Vec<f64>>
where
    F: FnMut(usize) -> candle_core::Result<Tensor>,
{
    let mut losses = Vec::with_capacity(steps);
    for step in 0..steps {
        let l = loss(step)?;
        losses.push(read_loss(
            block,
            &format!("task loss at inner step {step}"),
            &l,
        )?);
        let grads = l.backward()?;
        finite_grads(block, vars, &grads, "the task loss")?;
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                v.set(&(v.as_tensor() - (g * lr)?)?)?;
            }
        }
    }
    Ok(losses)
}

/// The value of a scalar loss; an error for a non-scalar or a NaN / ±Inf.
fn read_loss(block: &'static str, what: &str, loss: &Tensor) -> Result<f64> {
    if loss.rank() != 0 {
        return Err(Error::shape(
            block,
            "loss",
            "a scalar ()",
            loss.shape().clone(),
        ));
    }
    let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if !value.is_finite() {
        return Err(Error::non_finite(block, format!("{what} ({value})")));
    }
    Ok(value)
}

/// An error when a variable's gradient in `grads` holds a NaN or ±Inf.
fn finite_grads(block: &'static str, vars: &[Var], grads: &GradStore, of: &str) -> Result<()> {
    let (index, present): (Vec<usize>, Vec<&Tensor>) = vars
        .iter()
        .enumerate()
        .filter_map(|(i, v)| grads.get(v.as_tensor()).map(|g| (i, g)))
        .unzip();
    match first_non_finite(&present)? {
        Some(k) => Err(Error::non_finite(
            block,
            format!("gradient of {of} for variable {}", index[k]),
        )),
        None => Ok(()),
    }
}
