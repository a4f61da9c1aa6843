//! The element-wise ops' shared kernel: one fused, multi-threaded pass forward and one backward
//! (`(x, grad_y) -> grad_x`, no saved output) for any function of one value, computed in f32
//! (f16/bf16 widened on load, rounded on store), compiled for each SIMD level.

use crate::cpu::{
    contiguous, dispatch_float, dispatch_float_pair, expect_shape, par_tasks, try_zeros, Element,
    Isa, Kernel, Level,
};
use crate::ops::fused::{Fused, FusedOp, Grads, Operand, Output};
use candle_core::{Tensor, WithDType};

/// Values per task.
const TASK_ELEMS: usize = 32 * 1024;

/// A function of one value and its derivative, the whole definition of an element-wise op.
pub(crate) trait Pointwise: Copy + Send + Sync + 'static {
    /// The op's name in errors.
    fn name(self) -> &'static str;
    /// $y = f(x)$.
    fn forward(self, x: f32) -> f32;
    /// $\partial L / \partial x = g \thinspace f^\prime(x)$ for the output gradient $g$.
    fn backward(self, x: f32, g: f32) -> f32;
}

/// `f` applied to a contiguous `x` with our kernel, differentiable wrt `x`.
pub(crate) fn apply<P: Pointwise>(f: P, x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Fused(Forward(f)))
}

/// The forward op `x -> y`.
struct Forward<P>(P);

/// The backward op `(x, grad_y) -> grad_x`, applied without a graph of its own.
struct Backward<P>(P);

impl<P: Pointwise> FusedOp<1> for Forward<P> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu(&self, [(s, l)]: [Operand<'_>; 1]) -> Output {
        let (f, op) = (self.0, self.0.name());
        let out = dispatch_float!(s, op, |x: T| {
            let x = contiguous(x, l, op)?;
            Ok::<_, candle_core::Error>(T::to_cpu_storage_owned(map(f, x, None)?))
        })?;
        Ok((out, l.shape().clone()))
    }

    fn grads(&self, [x]: [&Tensor; 1], _res: &Tensor, grad: &Tensor) -> Grads<1> {
        let (x, g) = (x.contiguous()?, grad.contiguous()?);
        Ok([Some(x.apply_op2_no_bwd(&g, &Fused(Backward(self.0)))?)])
    }
}

impl<P: Pointwise> FusedOp<2> for Backward<P> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu(&self, [(s1, l1), (s2, l2)]: [Operand<'_>; 2]) -> Output {
        let (f, op) = (self.0, self.0.name());
        expect_shape(op, l2, l1.shape())?;
        let out = dispatch_float_pair!(s1, s2, op, |x, g: T| {
            let (x, g) = (contiguous(x, l1, op)?, contiguous(g, l2, op)?);
            Ok::<_, candle_core::Error>(T::to_cpu_storage_owned(map(f, x, Some(g))?))
        })?;
        Ok((out, l1.shape().clone()))
    }
}

/// One task: `out = f(x)`, or `out = g · f'(x)` with a gradient.
struct Task<'a, T, P> {
    f: P,
    x: &'a [T],
    g: Option<&'a [T]>,
    out: &'a mut [T],
}

impl<T: Element, P: Pointwise> Kernel for Task<'_, T, P> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let f = self.f;
        match self.g {
            None => {
                for (o, x) in self.out.iter_mut().zip(self.x) {
                    *o = T::from_f32(f.forward(x.to_f32()));
                }
            }
            Some(g) => {
                let it = self.out.iter_mut().zip(self.x).zip(g);
                for ((o, x), g) in it {
                    *o = T::from_f32(f.backward(x.to_f32(), g.to_f32()));
                }
            }
        }
    }
}

/// `f` of `x`, or its gradient for the output gradient `g`, over the CPU pool.
fn map<T: Element, P: Pointwise>(f: P, x: &[T], g: Option<&[T]>) -> candle_core::Result<Vec<T>> {
    let level = Level::detect();
    let mut out = try_zeros::<T>(f.name(), x.len())?;
    par_tasks(&mut out, TASK_ELEMS, |i, out, _: &mut ()| {
        let range = i * TASK_ELEMS..i * TASK_ELEMS + out.len();
        let (x, g) = (&x[range.clone()], g.map(|g| &g[range]));
        level.run(Task { f, x, g, out })
    });
    Ok(out)
}
