//! Gradient clipping: by global norm, by value, and adaptive (unit-wise, AGC).
//!
//! Each function takes the [`GradStore`] returned by `loss.backward()` and the parameters to
//! clip, rewrites their gradients in the store, and is meant to run between `backward` and the
//! optimizer step. Parameters without a gradient are skipped; a parameter listed twice counts
//! once.
//!
//! # Shapes
//! Any: the global norm treats all listed gradients as one long vector; AGC compares each output
//! unit's gradient (row `i` of a weight of shape `(out, …)`, the whole tensor for biases and
//! gains of rank ≤ 1) with the same unit's weights.
//!
//! # Tip
//! - **Why clip.** Backpropagating through many steps multiplies Jacobians; where their norm
//!   exceeds one the gradient grows exponentially, and a single huge step can throw the weights
//!   off a cliff of the loss surface (Pascanu et al. 2013, for RNNs; the same spikes appear in
//!   transformer pretraining). Clipping bounds the step while keeping its direction.
//! - **Global norm first** ([`clip_grad_norm`]): if $\lVert g \rVert_2 > c$ for the whole model's
//!   gradient $g$, every gradient is scaled by $c / (\lVert g \rVert_2 + 10^{-6})$ — the direction is
//!   unchanged, and with $c$ around 1 only the rare spikes are touched (the returned pre-clip norm
//!   is the thing to log: frequent clipping means $c$ or the rate is too small/large).
//!   [`clip_grad_value`] clamps each element to $[-v, v]$ instead: cheaper to reason about but it
//!   changes the direction, so prefer the norm.
//! - **AGC for normalizer-free nets** ([`agc`]): a fixed threshold ignores scale — a gradient that
//!   is huge for a small-weight layer is fine for a large one. Adaptive clipping bounds each
//!   unit's update relative to its weights, $\lVert G_i \rVert \le \lambda \max(\lVert W_i \rVert, \epsilon)$,
//!   which let Brock et al. (2021) train batch-norm-free ResNets (NFNets) at large batch sizes;
//!   typical $\lambda$ is 0.01–0.16 (smaller for larger batches), $\epsilon = 10^{-3}$, and the
//!   final classifier layer is usually left out.
//! - **Non-finite gradients are not hidden.** When the total norm is NaN or ±Inf,
//!   [`clip_grad_norm`] returns it and leaves the gradients as they are (torch would scale them
//!   by 0 or NaN): the optimizer's [`super::NonFinite`] policy then errors or skips the step.
//!
//! # Example
//! Clipping scales the whole gradient down to norm `max_norm` without turning it, and returns
//! the norm it had before.
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_tricks::optim::{clip_grad_norm, grad_norm};
//! # fn main() -> candle_tricks::Result<()> {
//! let w = Var::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu)?;
//! let b = Var::new(&[0.5f32, -0.5], &Device::Cpu)?;
//! let loss = (w.as_tensor().sqr()?.sum_all()? * 10.0)?.add(&b.as_tensor().sum_all()?)?;
//! let mut grads = loss.backward()?;
//! let before = grad_norm(&grads, &[w.clone(), b.clone()])?; // sqrt(20² · 30 + 2) ≈ 109.5
//! let returned = clip_grad_norm(&mut grads, &[w.clone(), b.clone()], 1.0)?;
//! assert_eq!(returned, before);
//! let after = grad_norm(&grads, &[w.clone(), b.clone()])?;
//! assert!((after - 1.0).abs() < 1e-5);
//! // Direction kept: the bias gradient is still 1/20 of the weight gradient's first entry.
//! let gw = grads.get(w.as_tensor()).unwrap().flatten_all()?.to_vec1::<f32>()?;
//! let gb = grads.get(b.as_tensor()).unwrap().to_vec1::<f32>()?;
//! assert!((gw[0] / gb[0] - 20.0).abs() < 1e-4);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Pascanu, Mikolov & Bengio 2013, *On the difficulty of training recurrent neural networks*,
//!   <https://arxiv.org/abs/1211.5063>
//! - Brock, De, Smith & Simonyan 2021, *High-Performance Large-Scale Image Recognition Without
//!   Normalization* (AGC), <https://arxiv.org/abs/2102.06171>; timm's `adaptive_clip_grad` is
//!   the unit-wise form implemented here.

use std::collections::HashSet;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Storage, Tensor, Var};

use super::path::{update_path, UpdatePath};
use super::tensor_ops;
use crate::cpu::simd::dot;
use crate::cpu::{contiguous, par_tasks, widen, Element};
use crate::cpu::{Isa, Kernel, Level};
use crate::{Error, Result};

/// The constant torch adds to the total norm in the clip coefficient.
const CLIP_EPS: f64 = 1e-6;
/// Elements per task of the parallel reductions.
const CHUNK: usize = 32 * 1024;

/// The listed parameters that have a gradient, each once, with that gradient.
fn present(grads: &GradStore, vars: &[Var]) -> Vec<(Tensor, Tensor)> {
    let mut seen = HashSet::new();
    vars.iter()
        .filter(|v| seen.insert(v.as_tensor().id()))
        .filter_map(|v| {
            grads
                .get(v.as_tensor())
                .map(|g| (v.as_tensor().clone(), g.clone()))
        })
        .collect()
}

fn check_float(block: &'static str, g: &Tensor) -> Result<()> {
    match g.dtype() {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => Ok(()),
        other => Err(Error::unsupported_dtype(
            block,
            "gradient",
            "f32, f64, f16 or bf16",
            other,
        )),
    }
}

fn check_limit(block: &'static str, name: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(Error::config(
            block,
            format!("{name} must be finite and >= 0, got {v}"),
        ));
    }
    Ok(())
}

/// $\sum x^2$ of an f32 slice at the best SIMD level: `LANES` f32 partial sums, widened to
/// f64 per call.
struct SumSq<'a>(&'a [f32]);

impl Kernel for SumSq<'_> {
    type Output = f64;
    #[inline(always)]
    fn run<S: Isa>(self, _: S) -> f64 {
        dot(self.0, self.0) as f64
    }
}

/// Which statistic of a gradient to compute.
#[derive(Clone, Copy, PartialEq)]
enum Stat {
    /// Sum of squares.
    SumSq,
    /// Largest absolute value (NaN if any element is NaN).
    MaxAbs,
}

fn max_abs(c: &[f32]) -> f64 {
    let (m, nan) = c.iter().fold((0f32, false), |(m, nan), &x| {
        (m.max(x.abs()), nan | x.is_nan())
    });
    if nan {
        f64::NAN
    } else {
        m as f64
    }
}

/// One pass over the contiguous values: per-chunk results in parallel, combined in chunk order
/// (so the result does not depend on the thread count).
fn stat_slice<T: Element>(v: &[T], stat: Stat) -> f64 {
    let level = Level::detect();
    let one = |c: &[T], scratch: &mut Vec<f32>| -> f64 {
        let c32: &[f32] = match T::as_f32(c) {
            Some(s) => s,
            None => {
                widen(c, scratch);
                scratch
            }
        };
        match stat {
            Stat::SumSq => level.run(SumSq(c32)),
            Stat::MaxAbs => max_abs(c32),
        }
    };
    if v.len() <= CHUNK {
        return one(v, &mut Vec::new());
    }
    let mut partial = vec![0f64; v.len().div_ceil(CHUNK)];
    par_tasks(&mut partial, 1, |i, out, scratch: &mut Vec<f32>| {
        out[0] = one(&v[i * CHUNK..((i + 1) * CHUNK).min(v.len())], scratch);
    });
    match stat {
        Stat::SumSq => partial.iter().sum(),
        Stat::MaxAbs => partial.iter().fold(0f64, |m, &x| {
            if m.is_nan() || x.is_nan() {
                f64::NAN
            } else {
                m.max(x)
            }
        }),
    }
}

/// The statistic of one gradient on the fused path (a CPU f32/f16/bf16 tensor); `None` for
/// the others.
fn host_stat(block: &'static str, g: &Tensor, stat: Stat) -> Result<Option<f64>> {
    if update_path(g.device()) != UpdatePath::Fused {
        return Ok(None);
    }
    let g = g.contiguous()?;
    let (s, l) = g.storage_and_layout();
    let Storage::Cpu(c) = &*s else {
        return Ok(None);
    };
    Ok(match c {
        CpuStorage::F32(v) => Some(stat_slice(contiguous(v, l, block)?, stat)),
        CpuStorage::F16(v) => Some(stat_slice(contiguous(v, l, block)?, stat)),
        CpuStorage::BF16(v) => Some(stat_slice(contiguous(v, l, block)?, stat)),
        _ => None,
    })
}

/// NaN-propagating maximum.
fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// The statistic over all gradients of `list`: the sum of squares or the max-abs. Fused-path
/// gradients by our one-pass kernels; the others (off the CPU, f64) with candle ops on their
/// device and one scalar read per device and dtype.
fn total_stat(block: &'static str, list: &[(Tensor, Tensor)], stat: Stat) -> Result<f64> {
    let mut total = 0f64;
    let mut rest = Vec::new();
    for (_, g) in list {
        check_float(block, g)?;
        match (host_stat(block, g, stat)?, stat) {
            (Some(v), Stat::SumSq) => total += v,
            (Some(v), Stat::MaxAbs) => total = max_nan(total, v),
            (None, _) => rest.push(g.clone()),
        }
    }
    if rest.is_empty() {
        return Ok(total);
    }
    Ok(match stat {
        Stat::SumSq => total + tensor_ops::total_sum_sq(&rest)?,
        Stat::MaxAbs => max_nan(total, tensor_ops::total_max_abs(&rest)?),
    })
}

/// The global L2 norm $\sqrt{\sum_p \lVert g_p \rVert_2^2}$ of the listed parameters' gradients,
/// without changing them (for logging; [`clip_grad_norm`] returns the same value).
pub fn grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    Ok(total_stat("grad_norm", &present(grads, vars), Stat::SumSq)?.sqrt())
}

/// Scales every gradient by `coef` when the clip coefficient is below one.
fn scale_all(
    grads: &mut GradStore,
    list: &[(Tensor, Tensor)],
    total: f64,
    max_norm: f64,
) -> Result<()> {
    let coef = max_norm / (total + CLIP_EPS);
    if coef < 1.0 {
        for (p, g) in list {
            grads.insert(p, g.affine(coef, 0.0)?);
        }
    }
    Ok(())
}

/// Clips the gradients of `vars` so that their global L2 norm is at most `max_norm`, and returns
/// the norm they had *before* clipping — `torch.nn.utils.clip_grad_norm_` with `norm_type = 2`.
///
/// With total norm $n$ every gradient is multiplied by $\min(1,\ c / (n + 10^{-6}))$. The norm is
/// one fused pass per CPU gradient (f32 SIMD partial sums per chunk, combined in f64); off the
/// CPU, candle ops on the device with one scalar read per device and dtype. If $n$ is NaN
/// or ±Inf nothing is scaled and $n$ is returned, so the optimizer's [`super::NonFinite`] policy
/// sees the bad gradient. Errors when `max_norm` is negative or not finite, or a gradient is not
/// a float tensor.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    const BLOCK: &str = "clip_grad_norm";
    check_limit(BLOCK, "max_norm", max_norm)?;
    let list = present(grads, vars);
    let total = total_stat(BLOCK, &list, Stat::SumSq)?.sqrt();
    if total.is_finite() {
        scale_all(grads, &list, total, max_norm)?;
    }
    Ok(total)
}

/// [`clip_grad_norm`] with the max norm $\max_i |g_i|$ over all gradients (torch's
/// `norm_type = inf`); returns the pre-clip max norm, NaN if any element is NaN.
pub fn clip_grad_norm_inf(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    const BLOCK: &str = "clip_grad_norm_inf";
    check_limit(BLOCK, "max_norm", max_norm)?;
    let list = present(grads, vars);
    let total = total_stat(BLOCK, &list, Stat::MaxAbs)?;
    if total.is_finite() {
        scale_all(grads, &list, total, max_norm)?;
    }
    Ok(total)
}

/// Clamps every gradient element of `vars` to `[-clip_value, clip_value]`
/// (`torch.nn.utils.clip_grad_value_`); NaN stays NaN, ±Inf becomes ±`clip_value`. Errors when
/// `clip_value` is negative or not finite.
pub fn clip_grad_value(grads: &mut GradStore, vars: &[Var], clip_value: f64) -> Result<()> {
    const BLOCK: &str = "clip_grad_value";
    check_limit(BLOCK, "clip_value", clip_value)?;
    for (p, g) in present(grads, vars) {
        check_float(BLOCK, &g)?;
        let clamped = g.clamp(-clip_value, clip_value)?;
        // candle's clamp may turn NaN into a bound; keep it visible.
        let is_nan = g.ne(&g)?;
        grads.insert(&p, is_nan.where_cond(&g, &clamped)?);
    }
    Ok(())
}

/// Unit-wise L2 norms in f32: per row (dims 1.. flattened) for rank ≥ 2, shape `(out, 1)`; the
/// whole tensor for rank ≤ 1, shape `(1, 1)`.
fn unit_norms(t: &Tensor) -> Result<Tensor> {
    let rows = if t.rank() >= 2 { t.dim(0)? } else { 1 };
    let t = t.to_dtype(DType::F32)?.reshape((rows, ()))?;
    Ok(t.sqr()?.sum_keepdim(1)?.sqrt()?)
}

/// Adaptive gradient clipping (Brock et al. 2021), unit-wise as timm's `adaptive_clip_grad`:
/// for each unit $i$ (output row of a weight of rank ≥ 2, the whole tensor otherwise) with
/// $m_i = \lambda \max(\lVert W_i \rVert_2, \epsilon)$, the gradient row becomes
/// $G_i \cdot m_i / \max(\lVert G_i \rVert_2, 10^{-6})$ when $\lVert G_i \rVert_2 \ge m_i$ and
/// stays as is otherwise.
///
/// `clipping` is $\lambda$ (0.01 in timm, up to 0.16 in the paper for small batches), `eps`
/// is $\epsilon$ (1e-3). Norms are computed in f32. Leave the final classifier out of `vars`, as
/// the paper does. Errors when `clipping` or `eps` is not finite and > 0.
pub fn agc(grads: &mut GradStore, vars: &[Var], clipping: f64, eps: f64) -> Result<()> {
    const BLOCK: &str = "agc";
    for (name, v) in [("clipping", clipping), ("eps", eps)] {
        if !(v.is_finite() && v > 0.0) {
            return Err(Error::config(
                BLOCK,
                format!("{name} must be finite and > 0, got {v}"),
            ));
        }
    }
    for (p, g) in present(grads, vars) {
        check_float(BLOCK, &g)?;
        if g.dims() != p.dims() {
            return Err(Error::shape(
                BLOCK,
                "gradient",
                format!("{:?} (the parameter's shape)", p.dims()),
                g.shape().clone(),
            ));
        }
        let max_norm = (unit_norms(&p)?.maximum(eps)? * clipping)?;
        let g_norm = unit_norms(&g)?;
        let scale = (&max_norm / g_norm.maximum(1e-6)?)?;
        let keep = g_norm.lt(&max_norm)?;
        let factor = keep.where_cond(&scale.ones_like()?, &scale)?;
        let rows = factor.dim(0)?;
        let g32 = g.to_dtype(DType::F32)?.reshape((rows, ()))?;
        let clipped = g32
            .broadcast_mul(&factor)?
            .reshape(g.shape())?
            .to_dtype(g.dtype())?;
        grads.insert(&p, clipped);
    }
    Ok(())
}
