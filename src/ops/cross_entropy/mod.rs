//! Cross-entropy from logits as one fused log-softmax + NLL op (`F.cross_entropy`), forward
//! **and** backward, on CPU: class-index or probability ("soft") targets, class weights,
//! `ignore_index`, label smoothing and the three reductions.
//!
//! # Shapes
//! - logits $x$ `(N, C)` or `(N, C, d1, …)` (a class score per pixel); f32, f16 or bf16.
//! - targets: class indices `(N)` / `(N, d1, …)` of dtype u8, u32 or i64, each in `[0, C)` or
//!   equal to `ignore_index`; or class probabilities with the shape and dtype of $x$, each row
//!   (over $C$) summing to 1.
//! - `weight` (optional): `(C)`, a factor per class.
//! - the result: a scalar for `Mean` / `Sum`; the targets' shape `(N, d1, …)` for `None`.
//!
//! With $\log p = \log\mathrm{softmax}(x)$, smoothing $\varepsilon$ and weights $w$ (all 1 when
//! absent), PyTorch's per-element loss for a class index $y$ is
//! $\ell = -(1-\varepsilon) w_y \log p_y - \frac{\varepsilon}{C} \sum_c w_c \log p_c$
//! (0 where $y$ is `ignore_index`), and `Mean` divides the sum by $\sum w_y$ over the targets
//! kept (not by their count). For probabilities $t$ it is
//! $\ell = -\sum_c w_c \thinspace t^\prime_c \log p_c$ with
//! $t^\prime = (1-\varepsilon) t + \varepsilon / C$, and `Mean` divides by the number of rows.
//!
//! # Tip
//! Both target kinds make $\ell = -\sum_c q_c \log p_c$ for a row of non-negative coefficients
//! $q$, whose gradient is $\partial \ell / \partial x_c = (\sum_j q_j) p_c - q_c$: the softmax
//! minus the target distribution. The kernel therefore never materialises $\log p$: per row
//! (one task owns a block of whole rows, all in f32) it takes the maximum $m$, the shifted
//! logits $z = x - m \le 0$, $s = \sum_c e^{z_c}$, and returns
//! $\ell = (\sum q) \log s - \sum_c q_c z_c$, exact for logits of size $10^4$ since no
//! exponent is positive. The backward recomputes $m$ and $s$ from the logits (cheaper than
//! saving the $(N, C)$ probabilities) and writes $\partial \ell / \partial x$ in one pass. The
//! composition [`cross_entropy_reference`] (what candle-nn's `cross_entropy` does) instead
//! stores `log_softmax`, gathers, multiplies and sums, each a pass over $(N, C)$ memory, and
//! keeps the intermediates for its backward.
//!
//! Class weights are constants (no gradient); soft targets that are variables get the gradient
//! $-(1-\varepsilon) w_c \log p_c$ (PyTorch's too).
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_tricks::loss::{CrossEntropyConfig, Reduction};
//! use candle_tricks::ops::{cross_entropy, cross_entropy_reference};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let x = Var::from_tensor(&Tensor::randn(0f32, 3., (8, 10), &dev)?)?;
//! let y = Tensor::new(&[0u32, 3, 9, 1, 1, 2, 7, 5], &dev)?;
//! let cfg = CrossEntropyConfig::default().with_label_smoothing(0.1);
//! let fused = cross_entropy(&x, &y, &cfg)?;
//! let slow = cross_entropy_reference(&x, &y, &cfg)?;
//! assert!((fused.to_scalar::<f32>()? - slow.to_scalar::<f32>()?).abs() < 1e-5);
//! // The gradient is (softmax - target distribution) / N: each row sums to zero.
//! let g = fused.backward()?.get(&x).expect("gradient").sum(1)?;
//! assert!(g.abs()?.max_all()?.to_scalar::<f32>()? < 1e-6);
//! // Logits of size 1e4 stay finite; per-row losses with Reduction::None.
//! let big = Tensor::new(&[[1e4f32, -1e4, 0.0], [-1e4, 1e4, 1e4]], &dev)?;
//! let cfg = CrossEntropyConfig::default().with_reduction(Reduction::None);
//! let l = cross_entropy(&big, &Tensor::new(&[1u32, 2], &dev)?, &cfg)?.to_vec1::<f32>()?;
//! assert_eq!(l[0], 2e4);
//! assert!((l[1] - 2f32.ln()).abs() < 1e-6);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Szegedy et al., *Rethinking the Inception Architecture for Computer Vision*, 2015,
//!   <https://arxiv.org/abs/1512.00567> (label smoothing)
//! - Müller, Kornblith, Hinton, *When Does Label Smoothing Help?*, 2019,
//!   <https://arxiv.org/abs/1906.02629>

mod kernel;

use std::sync::Arc;

use candle_core::{DType, Tensor, D};

use crate::check;
use crate::loss::Reduction;
use crate::ops::backend::{backend, upcast, Op};
use crate::ops::fused::Fused;
use crate::{Error, Result};
use kernel::{CeOp, Params};

const OP: &str = "cross_entropy";

/// How far a row of probability targets may sum from 1: loose enough for targets rounded to
/// bf16 (8 significant bits), tight enough to catch counts or scores passed as probabilities.
const SUM_TOLERANCE: f64 = 1e-2;

/// The options of [`cross_entropy`], PyTorch's keyword arguments (`weight`, `ignore_index`,
/// `label_smoothing`, `reduction`) with their defaults.
#[derive(Debug, Clone)]
pub struct CrossEntropyConfig {
    /// A factor per class, `(C)` (default none: all 1). A constant: it gets no gradient.
    pub weight: Option<Tensor>,
    /// The class index whose targets contribute nothing, neither to the loss nor to the mean's
    /// denominator (default -100, PyTorch's). Unused with probability targets.
    pub ignore_index: i64,
    /// $\varepsilon \in [0, 1]$: the targets mixed with the uniform distribution (default 0).
    pub label_smoothing: f64,
    /// How the per-element losses are reduced (default [`Reduction::Mean`]).
    pub reduction: Reduction,
}

impl Default for CrossEntropyConfig {
    fn default() -> Self {
        Self {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
            reduction: Reduction::Mean,
        }
    }
}

impl CrossEntropyConfig {
    /// Sets the class weights `(C)`.
    pub fn with_weight(mut self, weight: Tensor) -> Self {
        self.weight = Some(weight);
        self
    }
    /// Sets `ignore_index`.
    pub fn with_ignore_index(mut self, ignore_index: i64) -> Self {
        self.ignore_index = ignore_index;
        self
    }
    /// Sets `label_smoothing`.
    pub fn with_label_smoothing(mut self, label_smoothing: f64) -> Self {
        self.label_smoothing = label_smoothing;
        self
    }
    /// Sets the reduction.
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }
}

/// Cross-entropy from logits with our fused kernel (`F.cross_entropy`); differentiable wrt the
/// logits and wrt probability targets.
///
/// Errors (naming `cross_entropy`) on logits of rank < 2, an empty or non-float input, targets
/// of the wrong shape or dtype, a class index outside `[0, C)` that is not `ignore_index`,
/// probability rows that do not sum to 1 within 1e-2 (or hold a negative entry), a weight that is not
/// `(C)`, `label_smoothing` outside `[0, 1]` and [`Reduction::BatchMean`].
pub fn cross_entropy(logits: &Tensor, target: &Tensor, cfg: &CrossEntropyConfig) -> Result<Tensor> {
    let v = validate(logits, target, cfg, false)?;
    if !backend(Op::CrossEntropy, logits.device()).is_kernel() {
        let up = upcast(logits)?;
        let target = if v.indices.is_some() {
            target.clone()
        } else {
            upcast(target)?
        };
        return Ok(cross_entropy_reference(&up, &target, cfg)?.to_dtype(logits.dtype())?);
    }
    let x = rows(logits)?;
    let p = Params {
        c: v.c,
        weight: v.weight.clone(),
        smoothing: cfg.label_smoothing as f32,
        ignore_index: cfg.ignore_index,
        weight_sum: v.weight.as_ref().map_or(v.c as f32, |w| w.iter().sum()),
        targets: v.indices.clone(),
    };
    let op = Fused(CeOp(Arc::new(p)));
    let losses = match v.indices {
        Some(_) => x.apply_op1(op)?,
        None => x.apply_op2(&rows(target)?, op)?,
    };
    let l = losses.reshape(v.out_shape.as_slice())?;
    Ok(cfg
        .reduction
        .apply(&l, v.denominator)?
        .to_dtype(logits.dtype())?)
}

/// [`cross_entropy`] built from candle tensor ops (log-softmax, `gather`, weighted sums), as
/// candle-nn does; same checks and result, except that f64 is accepted too (for gradient
/// checks). Slow, for tests, benches and devices without our kernel.
pub fn cross_entropy_reference(
    logits: &Tensor,
    target: &Tensor,
    cfg: &CrossEntropyConfig,
) -> Result<Tensor> {
    let v = validate(logits, target, cfg, true)?;
    let x = rows(logits)?;
    let dtype = x.dtype();
    let z = x.broadcast_sub(&x.max_keepdim(1)?)?;
    let logp = z.broadcast_sub(&z.exp()?.sum_keepdim(1)?.log()?)?;
    let eps = cfg.label_smoothing;
    let weight = match &cfg.weight {
        Some(w) => w.to_dtype(dtype)?,
        None => Tensor::ones(v.c, dtype, x.device())?,
    };
    let wlogp = logp.broadcast_mul(&weight.unsqueeze(0)?)?;
    let losses = match &v.indices {
        Some(idx) => {
            let kept: Vec<f64> = idx
                .iter()
                .map(|&y| f64::from(u8::from(y != cfg.ignore_index)))
                .collect();
            let safe: Vec<u32> = idx
                .iter()
                .map(|&y| if y == cfg.ignore_index { 0 } else { y as u32 })
                .collect();
            let kept = Tensor::new(kept, x.device())?.to_dtype(dtype)?;
            let safe = Tensor::new(safe, x.device())?;
            let nll = wlogp.gather(&safe.unsqueeze(1)?, 1)?.squeeze(1)?;
            let smooth = wlogp.sum(1)?;
            let l = ((nll * (eps - 1.0))? - (smooth * (eps / v.c as f64))?)?;
            (l * kept)?
        }
        None => {
            let t = ((rows(target)? * (1.0 - eps))? + eps / v.c as f64)?;
            (wlogp * t)?.sum(1)?.neg()?
        }
    };
    let l = losses.reshape(v.out_shape.as_slice())?;
    cfg.reduction.apply(&l, v.denominator)
}

/// `(N, C, d1, …)` as `(N·d1·…, C)` rows, the class dimension last (a copy when there are
/// spatial dimensions).
fn rows(x: &Tensor) -> Result<Tensor> {
    let (n, c) = (x.dims()[0], x.dims()[1]);
    if x.rank() == 2 {
        return Ok(x.contiguous()?);
    }
    let s = x.elem_count() / (n * c);
    Ok(x.reshape((n, c, s))?.transpose(1, 2)?.reshape((n * s, c))?)
}

/// What validation learns about the arguments.
struct Validated {
    c: usize,
    /// The class indices, for index targets (None: probability targets).
    indices: Option<Arc<[i64]>>,
    weight: Option<Arc<[f32]>>,
    /// The `Reduction::None` shape, `(N, d1, …)`.
    out_shape: Vec<usize>,
    /// The mean's denominator: the kept targets' total weight, or the number of rows.
    denominator: f64,
}

fn validate(
    logits: &Tensor,
    target: &Tensor,
    cfg: &CrossEntropyConfig,
    allow_f64: bool,
) -> Result<Validated> {
    let pattern = "(N, C) or (N, C, d1, …)";
    if logits.rank() < 2 {
        return Err(Error::shape(OP, "input", pattern, logits.shape().clone()));
    }
    check::non_empty(OP, "input", logits)?;
    if !(allow_f64 && logits.dtype() == DType::F64) {
        check::float_dtype(OP, "input", logits)?;
    }
    check::unit_interval(OP, "label_smoothing", cfg.label_smoothing)?;
    cfg.reduction.no_batchmean(OP)?;
    let dims = logits.dims();
    let c = dims[1];
    let mut out_shape = vec![dims[0]];
    out_shape.extend_from_slice(&dims[2..]);
    let rows_count = logits.elem_count() / c;
    let weight: Option<Arc<[f32]>> = match &cfg.weight {
        None => None,
        Some(w) => {
            if w.dims() != [c] {
                return Err(Error::shape(
                    OP,
                    "weight",
                    format!("({c})"),
                    w.shape().clone(),
                ));
            }
            if !w.dtype().is_float() {
                return Err(Error::unsupported_dtype(
                    OP,
                    "weight",
                    "a float dtype",
                    w.dtype(),
                ));
            }
            same_device("weight", logits, w)?;
            let w: Vec<f32> = w.to_dtype(DType::F32)?.to_vec1()?;
            Some(Arc::from(w))
        }
    };
    same_device("target", logits, target)?;
    match target.dtype() {
        DType::U8 | DType::U32 | DType::I64 => {
            if target.dims() != out_shape.as_slice() {
                let want = format!("class indices {out_shape:?} (the input's shape without C)");
                return Err(Error::shape(OP, "target", want, target.shape().clone()));
            }
            let idx: Vec<i64> = target.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?;
            let mut denominator = 0f64;
            for &y in &idx {
                if y == cfg.ignore_index {
                    continue;
                }
                if y < 0 || y >= c as i64 {
                    return Err(Error::config(
                        OP,
                        format!(
                            "target class index {y} out of range [0, {c}) (ignore_index is {})",
                            cfg.ignore_index
                        ),
                    ));
                }
                denominator += weight.as_ref().map_or(1.0, |w| f64::from(w[y as usize]));
            }
            Ok(Validated {
                c,
                indices: Some(Arc::from(idx)),
                weight,
                out_shape,
                denominator,
            })
        }
        _ => {
            if target.dims() != dims {
                let want = format!("class probabilities {dims:?} (the input's shape)");
                return Err(Error::shape(OP, "target", want, target.shape().clone()));
            }
            if target.dtype() != logits.dtype() {
                return Err(Error::DTypeMismatch {
                    block: OP,
                    what: "target",
                    expected: logits.dtype(),
                    actual: target.dtype(),
                });
            }
            check_distribution(target, c)?;
            Ok(Validated {
                c,
                indices: None,
                weight,
                out_shape,
                denominator: rows_count as f64,
            })
        }
    }
}

fn same_device(what: &'static str, logits: &Tensor, t: &Tensor) -> Result<()> {
    if t.device().same_device(logits.device()) {
        return Ok(());
    }
    Err(Error::DeviceMismatch {
        block: OP,
        what,
        expected: format!("{:?}", logits.device()),
        actual: format!("{:?}", t.device()),
    })
}

/// Checks that every class row of probability targets is non-negative and sums to 1.
fn check_distribution(target: &Tensor, c: usize) -> Result<()> {
    let tol = SUM_TOLERANCE;
    let t = rows(&target.to_dtype(DType::F64)?)?;
    let sums: Vec<f64> = t.sum(D::Minus1)?.to_vec1()?;
    if let Some((i, s)) = sums
        .iter()
        .enumerate()
        .find(|(_, s)| s.is_nan() || (*s - 1.0).abs() > tol)
    {
        return Err(Error::config(
            OP,
            format!("probability targets must sum to 1 over the {c} classes; row {i} sums to {s}"),
        ));
    }
    let min = t.min_all()?.to_scalar::<f64>()?;
    if min.is_nan() || min < -tol {
        return Err(Error::config(
            OP,
            format!("probability targets must be >= 0, got {min}"),
        ));
    }
    Ok(())
}
