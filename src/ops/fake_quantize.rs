//! Fake quantization (quantize, then dequantize at once) with the straight-through gradient:
//! the op of quantization-aware training, per tensor or per channel, forward bit-equal to
//! PyTorch's `torch.fake_quantize_per_tensor_affine` / `torch.fake_quantize_per_channel_affine`.
//!
//! # Shapes
//! - input $x$: any shape, f32 / f16 / bf16; the output has the shape and dtype of $x$.
//! - per channel: `scale` and `zero_point` hold one value per index of dimension `axis` of $x$
//!   (a weight's output channels: axis 0).
//! - $\hat{x} = (\mathrm{clamp}(\mathrm{round}(x \thinspace s^{-1}) + z, q_{min}, q_{max}) - z)\thinspace s$,
//!   with `round` half to even and $s^{-1}$ the f32 reciprocal of the scale, in that order (as
//!   torch's CPU kernel; dividing by $s$ instead moves some rounding ties by one step).
//!
//! # Tip
//! Quantization-aware training runs the float model with every weight (and activation) replaced
//! by its fake-quantized value, so the loss sees the rounding and clipping that int8 inference
//! will apply, and the weights learn to sit where rounding hurts least. Rounding has a zero
//! derivative almost everywhere, so the backward pass pretends it is the identity: the
//! *straight-through estimator* passes the output gradient unchanged where
//! $q_{min} \le \mathrm{round}(x \thinspace s^{-1}) + z \le q_{max}$ and zeroes it where the value was
//! clipped (the clipped values cannot move the output, and a gradient there would push them
//! further out). Finite differences cannot check a step function; the tests check the mask.
//!
//! The kernel computes the output and nothing else in one pass (torch also stores a byte mask
//! for the backward); the backward recomputes the mask from $x$, which is as cheap as reading it.
//! A NaN in $x$ is an error: it has no integer value, and a QAT run that met one is broken.
//! ±∞ clips to the end of the range.
//!
//! # Example
//! ```
//! # fn main() -> candle_tricks::Result<()> {
//! use candle_core::{Device, Var};
//! use candle_tricks::ops::fake_quantize_per_tensor_affine;
//!
//! // Scale 0.5, zero point 0, range [-4, 3]: the grid -2.0, -1.5, …, 1.5.
//! let x = Var::new(&[0.26f32, 0.25, 0.75, 1.9, 9.0, -3.0], &Device::Cpu)?;
//! let y = fake_quantize_per_tensor_affine(&x, 0.5, 0, -4, 3)?;
//! // 0.25 / 0.5 = 0.5 rounds to even (0), 0.75 / 0.5 = 1.5 to 2; 1.9 / 0.5 rounds to 4 > 3,
//! // and 9 and -3 lie outside too: all three clip.
//! assert_eq!(y.to_vec1::<f32>()?, [0.5, 0.0, 1.0, 1.5, 1.5, -2.0]);
//! // Straight-through: gradient 1 inside the range, 0 where the value was clipped.
//! let g = y.sum_all()?.backward()?;
//! assert_eq!(g.get(&x).expect("grad").to_vec1::<f32>()?, [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Jacob et al., *Quantization and Training of Neural Networks for Efficient
//!   Integer-Arithmetic-Only Inference*, 2018, <https://arxiv.org/abs/1712.05877>
//! - Bengio, Léonard, Courville, *Estimating or Propagating Gradients Through Stochastic
//!   Neurons for Conditional Computation*, 2013, <https://arxiv.org/abs/1308.3432> (the
//!   straight-through estimator)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::check;
use crate::cpu::{
    contiguous, dispatch_float, dispatch_float_pair, expect_shape, par_tasks, try_zeros, Element,
    Isa, Kernel, Level,
};
use crate::ops::backend::{backend, upcast, Op};
use crate::ops::fused::{Fused, FusedOp, Grads, Operand, Output};
use crate::{Error, Result};
use candle_core::{DType, Tensor, WithDType};

const PER_TENSOR: &str = "fake_quantize_per_tensor_affine";
const PER_CHANNEL: &str = "fake_quantize_per_channel_affine";

/// Values per task.
const TASK_ELEMS: usize = 32 * 1024;

/// Integer bounds are kept within $\pm 2^{20}$: f32 holds every level exactly, and the
/// composition's rounding trick needs levels below $2^{22}$.
const MAX_BOUND: i32 = 1 << 20;

/// `x` fake-quantized with one `scale` and `zero_point` onto `[quant_min, quant_max]`
/// (`torch.fake_quantize_per_tensor_affine`), with the straight-through gradient wrt `x`.
///
/// Errors (naming the op) on a zero-sized dimension, a dtype other than f32/f16/bf16, a scale
/// that is not positive and finite (or whose reciprocal overflows), `quant_min >= quant_max`, a
/// bound beyond $\pm 2^{20}$, a zero point outside the range, or a NaN in `x`.
pub fn fake_quantize_per_tensor_affine(
    x: &Tensor,
    scale: f32,
    zero_point: i32,
    quant_min: i32,
    quant_max: i32,
) -> Result<Tensor> {
    let p = Params::new(
        PER_TENSOR,
        x,
        vec![scale],
        vec![zero_point],
        None,
        (quant_min, quant_max),
    )?;
    run(x, p)
}

/// `x` fake-quantized with `scale[c]` and `zero_point[c]` for each index `c` of dimension `axis`
/// (`torch.fake_quantize_per_channel_affine`), with the straight-through gradient wrt `x`.
///
/// Errors as [`fake_quantize_per_tensor_affine`], and on `axis >= rank` or `scale` /
/// `zero_point` lengths other than `x.dims()[axis]`.
pub fn fake_quantize_per_channel_affine(
    x: &Tensor,
    scale: &[f32],
    zero_point: &[i32],
    axis: usize,
    quant_min: i32,
    quant_max: i32,
) -> Result<Tensor> {
    let p = Params::new(
        PER_CHANNEL,
        x,
        scale.to_vec(),
        zero_point.to_vec(),
        Some(axis),
        (quant_min, quant_max),
    )?;
    run(x, p)
}

/// [`fake_quantize_per_tensor_affine`] composed from candle ops (multiply, a rounding trick,
/// clamp, comparison masks), forward bit-equal and with the same gradient; same checks, except
/// that f64 is accepted too. The composition other devices run.
pub fn fake_quantize_per_tensor_affine_reference(
    x: &Tensor,
    scale: f32,
    zero_point: i32,
    quant_min: i32,
    quant_max: i32,
) -> Result<Tensor> {
    let p = Params::new(
        PER_TENSOR,
        x,
        vec![scale],
        vec![zero_point],
        None,
        (quant_min, quant_max),
    )?;
    reference(x, &p)
}

/// [`fake_quantize_per_channel_affine`] composed from candle ops; see
/// [`fake_quantize_per_tensor_affine_reference`].
pub fn fake_quantize_per_channel_affine_reference(
    x: &Tensor,
    scale: &[f32],
    zero_point: &[i32],
    axis: usize,
    quant_min: i32,
    quant_max: i32,
) -> Result<Tensor> {
    let p = Params::new(
        PER_CHANNEL,
        x,
        scale.to_vec(),
        zero_point.to_vec(),
        Some(axis),
        (quant_min, quant_max),
    )?;
    reference(x, &p)
}

/// Validated parameters of one call.
struct Params {
    op: &'static str,
    scale: Vec<f32>,
    zero_point: Vec<i32>,
    axis: Option<usize>,
    /// Product of the dimensions after `axis` (all of them per tensor).
    inner: usize,
    quant_min: i32,
    quant_max: i32,
}

impl Params {
    fn new(
        op: &'static str,
        x: &Tensor,
        scale: Vec<f32>,
        zero_point: Vec<i32>,
        axis: Option<usize>,
        (quant_min, quant_max): (i32, i32),
    ) -> Result<Self> {
        check::non_empty(op, "input", x)?;
        if x.dtype() != DType::F64 {
            check::float_dtype(op, "input", x)?;
        }
        if quant_min >= quant_max || quant_min < -MAX_BOUND || quant_max > MAX_BOUND {
            return Err(Error::config(
                op,
                format!(
                    "needs quant_min < quant_max within ±2^20, got quant_min {quant_min}, \
                     quant_max {quant_max}"
                ),
            ));
        }
        let channels = match axis {
            None => 1,
            Some(a) if a < x.rank() => x.dims()[a],
            Some(a) => {
                let msg = format!("axis {a} out of range for an input of rank {}", x.rank());
                return Err(Error::config(op, msg));
            }
        };
        if scale.len() != channels || zero_point.len() != channels {
            return Err(Error::config(
                op,
                format!(
                    "needs {channels} scales and zero points (x.dims()[axis]), got {} and {}",
                    scale.len(),
                    zero_point.len()
                ),
            ));
        }
        for (c, (&s, &z)) in scale.iter().zip(&zero_point).enumerate() {
            if !(s.is_finite() && s > 0.0 && (1.0 / s).is_finite()) {
                let msg = format!("scale must be positive and finite (with a finite 1 / scale), got scale[{c}] = {s}");
                return Err(Error::config(op, msg));
            }
            if !(quant_min..=quant_max).contains(&z) {
                let msg = format!(
                    "zero_point[{c}] = {z} lies outside [quant_min, quant_max] = [{quant_min}, {quant_max}]"
                );
                return Err(Error::config(op, msg));
            }
        }
        let inner = match axis {
            Some(a) => x.dims()[a + 1..].iter().product(),
            None => x.elem_count(),
        };
        Ok(Self {
            op,
            scale,
            zero_point,
            axis,
            inner,
            quant_min,
            quant_max,
        })
    }
}

fn run(x: &Tensor, p: Params) -> Result<Tensor> {
    if !backend(Op::FakeQuantize, x.device()).is_kernel() {
        return reference(x, &p);
    }
    Ok(x.contiguous()?.apply_op1(Fused(Forward(Arc::new(p))))?)
}

/// The composition: the STE as `fq(x).detach() + (m x - (m x).detach())`, whose value is
/// exactly `fq(x)` and whose gradient is the mask `m`.
fn reference(x: &Tensor, p: &Params) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = upcast(x)?;
    let nans = x
        .ne(&x)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    if nans > 0.0 {
        return Err(nan_error(p.op));
    }
    // Per-channel parameters broadcast along `axis`: shape (C, 1, …, 1) after the axis.
    let mut shape = vec![1usize; x.rank()];
    if let Some(a) = p.axis {
        shape[a] = p.scale.len();
    }
    let dev = x.device();
    let col = |v: Vec<f32>| -> candle_core::Result<Tensor> {
        Tensor::from_vec(v, shape.clone(), dev)?.to_dtype(x.dtype())
    };
    let inv = col(p.scale.iter().map(|s| 1.0 / s).collect())?;
    let scale = col(p.scale.clone())?;
    let zp = col(p.zero_point.iter().map(|&z| z as f32).collect())?;
    let (lo, hi) = (p.quant_min as f64, p.quant_max as f64);
    let t = x.detach().broadcast_mul(&inv)?;
    // Values beyond the range by more than one step stay beyond it after rounding, so they can
    // be clamped first; what is left lies well inside ±2^23, where adding and subtracting
    // 1.5 · 2^23 rounds half to even (the f32 sum keeps no fraction bits).
    let reach = (p.quant_max as f64 - p.quant_min as f64) + 2.0;
    let magic = 1.5 * 8_388_608.0;
    let r = ((t.clamp(-reach, reach)? + magic)? - magic)?;
    let q = r.broadcast_add(&zp)?;
    let inside = (q.ge(lo)?.to_dtype(x.dtype())? * q.le(hi)?.to_dtype(x.dtype())?)?;
    let fq = q.clamp(lo, hi)?.broadcast_sub(&zp)?.broadcast_mul(&scale)?;
    let passed = x.mul(&inside)?;
    Ok((fq + (&passed - passed.detach())?)?.to_dtype(dtype)?)
}

fn nan_error(op: &'static str) -> Error {
    Error::non_finite(op, "input (NaN has no quantized value)")
}

/// The forward op `x -> fq(x)`.
struct Forward(Arc<Params>);

/// The backward op `(x, g) -> g · mask(x)`, applied without a graph of its own.
struct Backward(Arc<Params>);

impl FusedOp<1> for Forward {
    fn name(&self) -> &'static str {
        self.0.op
    }

    fn cpu(&self, [(s, l)]: [Operand<'_>; 1]) -> Output {
        let (p, op) = (&*self.0, self.0.op);
        let out = dispatch_float!(s, op, |x: T| {
            let x = contiguous(x, l, op)?;
            Ok::<_, candle_core::Error>(T::to_cpu_storage_owned(map(p, x, None)?))
        })?;
        Ok((out, l.shape().clone()))
    }

    fn grads(&self, [x]: [&Tensor; 1], _res: &Tensor, grad: &Tensor) -> Grads<1> {
        let (x, g) = (x.contiguous()?, grad.contiguous()?);
        Ok([Some(
            x.apply_op2_no_bwd(&g, &Fused(Backward(self.0.clone())))?,
        )])
    }
}

impl FusedOp<2> for Backward {
    fn name(&self) -> &'static str {
        self.0.op
    }

    fn cpu(&self, [(s1, l1), (s2, l2)]: [Operand<'_>; 2]) -> Output {
        let (p, op) = (&*self.0, self.0.op);
        expect_shape(op, l2, l1.shape())?;
        let out = dispatch_float_pair!(s1, s2, op, |x, g: T| {
            let (x, g) = (contiguous(x, l1, op)?, contiguous(g, l2, op)?);
            Ok::<_, candle_core::Error>(T::to_cpu_storage_owned(map(p, x, Some(g))?))
        })?;
        Ok((out, l1.shape().clone()))
    }
}

/// One channel's constants, in the kernel's f32 arithmetic.
#[derive(Clone, Copy)]
struct Channel {
    scale: f32,
    inv_scale: f32,
    zero_point: f32,
    quant_min: f32,
    quant_max: f32,
}

impl Channel {
    /// `round(x / s) + z` as torch computes it: the product with the f32 reciprocal, rounded
    /// half to even, plus the zero point (exact: both are integers below 2^24 in magnitude).
    #[inline(always)]
    fn level(self, x: f32) -> f32 {
        (x * self.inv_scale).round_ties_even() + self.zero_point
    }
}

/// One run of values of a single channel: `out = fq(x)`, or `out = g · mask(x)`.
struct Task<'a, T> {
    ch: Channel,
    x: &'a [T],
    g: Option<&'a [T]>,
    out: &'a mut [T],
}

impl<T: Element> Kernel for Task<'_, T> {
    /// Whether a NaN was met.
    type Output = bool;

    #[inline(always)]
    fn run<S: Isa>(self, _: S) -> bool {
        let ch = self.ch;
        match self.g {
            None => {
                let mut nan = false;
                for (o, x) in self.out.iter_mut().zip(self.x) {
                    let q = ch.level(x.to_f32());
                    nan |= q.is_nan();
                    // Comparisons rather than `f32::clamp`: no panic path in the loop.
                    let c = if q < ch.quant_min {
                        ch.quant_min
                    } else if q > ch.quant_max {
                        ch.quant_max
                    } else {
                        q
                    };
                    *o = T::from_f32((c - ch.zero_point) * ch.scale);
                }
                nan
            }
            Some(g) => {
                for ((o, x), g) in self.out.iter_mut().zip(self.x).zip(g) {
                    let q = ch.level(x.to_f32());
                    let pass = q >= ch.quant_min && q <= ch.quant_max;
                    *o = T::from_f32(if pass { g.to_f32() } else { 0.0 });
                }
                false
            }
        }
    }
}

/// `fq(x)`, or the straight-through gradient for the output gradient `g`, over the CPU pool.
fn map<T: Element>(p: &Params, x: &[T], g: Option<&[T]>) -> candle_core::Result<Vec<T>> {
    let level = Level::detect();
    let channels: Vec<Channel> = p
        .scale
        .iter()
        .zip(&p.zero_point)
        .map(|(&s, &z)| Channel {
            scale: s,
            inv_scale: 1.0 / s,
            zero_point: z as f32,
            quant_min: p.quant_min as f32,
            quant_max: p.quant_max as f32,
        })
        .collect();
    let (inner, n_ch) = (p.inner.max(1), channels.len());
    let nan = AtomicBool::new(false);
    let mut out = try_zeros::<T>(p.op, x.len())?;
    par_tasks(&mut out, TASK_ELEMS, |i, out, _: &mut ()| {
        let mut start = i * TASK_ELEMS;
        let mut rest = out;
        // Runs of equal channel: `inner` consecutive values share one.
        while !rest.is_empty() {
            let len = (inner - start % inner).min(rest.len());
            let (run, tail) = rest.split_at_mut(len);
            let ch = channels[(start / inner) % n_ch];
            let range = start..start + len;
            let (x, g) = (&x[range.clone()], g.map(|g| &g[range]));
            if level.run(Task { ch, x, g, out: run }) {
                nan.store(true, Ordering::Relaxed);
            }
            start += len;
            rest = tail;
        }
    });
    if nan.load(Ordering::Relaxed) {
        return Err(nan_error(p.op).into());
    }
    Ok(out)
}
