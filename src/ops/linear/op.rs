//! The custom ops of [`super::linear`]: the forward `(x, w[, b]) -> y` (a `CustomOp3` with a
//! bias, a `CustomOp2` without) and its three gradient kernels, each applied without a graph
//! of its own.

use candle_core::backend::BackendStorage;
use candle_core::{Shape, Tensor};

use super::cpu::{self, Dims};
use super::OP;
use crate::cpu::{expect_shape, f32_pair, f32_view, store};
use crate::ops::fused::{Fused, FusedOp, Grads, Operand, Output};

/// `y = x wᵀ (+ b)` for a contiguous `x` `(rows, in)`, `w` `(out, in)` and `b` `(out)`.
pub(super) fn apply(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let (rows, inp) = x.dims2()?;
    let out = w.dim(0)?;
    let op = Fused(LinearOp(Dims { rows, inp, out }));
    match b {
        Some(b) => x.apply_op3(w, b, op),
        None => x.apply_op2(w, op),
    }
}

/// The forward op.
#[derive(Debug, Clone, Copy)]
struct LinearOp(Dims);

impl LinearOp {
    fn forward(
        &self,
        (xs, xl): Operand<'_>,
        (ws, wl): Operand<'_>,
        b: Option<Operand<'_>>,
    ) -> Output {
        let d = self.0;
        expect_shape(OP, xl, &Shape::from((d.rows, d.inp)))?;
        expect_shape(OP, wl, &Shape::from((d.out, d.inp)))?;
        let (dtype, x, w) = f32_pair(xs, xl, ws, wl, OP)?;
        let b = match b {
            Some((bs, bl)) => {
                expect_shape(OP, bl, &Shape::from(d.out))?;
                if bs.dtype() != dtype {
                    return Err(candle_core::Error::DTypeMismatchBinaryOp {
                        lhs: dtype,
                        rhs: bs.dtype(),
                        op: OP,
                    });
                }
                Some(f32_view(bs, bl, OP)?)
            }
            None => None,
        };
        let y = cpu::forward(d, &x, &w, b.as_deref())?;
        Ok((store(dtype, y, OP)?, Shape::from((d.rows, d.out))))
    }

    /// The gradients of `x` and `w` (and `b`), each only where that operand needs one.
    fn grads(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, grad: &Tensor) -> Grads<3> {
        let d = self.0;
        let g = grad.contiguous()?;
        let dx = x
            .track_op()
            .then(|| g.apply_op2_no_bwd(w, &Fused(GradOp::Input(d))))
            .transpose()?;
        let dw = w
            .track_op()
            .then(|| g.apply_op2_no_bwd(x, &Fused(GradOp::Weight(d))))
            .transpose()?;
        let db = b
            .filter(|b| b.track_op())
            .map(|_| g.apply_op1_no_bwd(&Fused(BiasGradOp(d))))
            .transpose()?;
        Ok([dx, dw, db])
    }
}

impl FusedOp<2> for LinearOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu(&self, [x, w]: [Operand<'_>; 2]) -> Output {
        self.forward(x, w, None)
    }

    fn grads(&self, [x, w]: [&Tensor; 2], _res: &Tensor, grad: &Tensor) -> Grads<2> {
        let [dx, dw, _] = LinearOp::grads(self, x, w, None, grad)?;
        Ok([dx, dw])
    }
}

impl FusedOp<3> for LinearOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu(&self, [x, w, b]: [Operand<'_>; 3]) -> Output {
        self.forward(x, w, Some(b))
    }

    fn grads(&self, [x, w, b]: [&Tensor; 3], _res: &Tensor, grad: &Tensor) -> Grads<3> {
        LinearOp::grads(self, x, w, Some(b), grad)
    }
}

/// The matrix-product gradients `(g, other)`: `dx = g w` (other = `w`) or `dw = gᵀ x`
/// (other = `x`).
#[derive(Debug, Clone, Copy)]
enum GradOp {
    Input(Dims),
    Weight(Dims),
}

impl FusedOp<2> for GradOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu(&self, [(gs, gl), (os, ol)]: [Operand<'_>; 2]) -> Output {
        let (GradOp::Input(d) | GradOp::Weight(d)) = *self;
        expect_shape(OP, gl, &Shape::from((d.rows, d.out)))?;
        let (other, result) = match self {
            GradOp::Input(_) => ((d.out, d.inp), (d.rows, d.inp)),
            GradOp::Weight(_) => ((d.rows, d.inp), (d.out, d.inp)),
        };
        expect_shape(OP, ol, &Shape::from(other))?;
        let (dtype, g, o) = f32_pair(gs, gl, os, ol, OP)?;
        let v = match self {
            GradOp::Input(_) => cpu::input_grad(d, &g, &o)?,
            GradOp::Weight(_) => cpu::weight_grad(d, &g, &o)?,
        };
        Ok((store(dtype, v, OP)?, Shape::from(result)))
    }
}

/// The bias gradient `g -> Σ_r g_r`.
#[derive(Debug, Clone, Copy)]
struct BiasGradOp(Dims);

impl FusedOp<1> for BiasGradOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu(&self, [(gs, gl)]: [Operand<'_>; 1]) -> Output {
        let d = self.0;
        expect_shape(OP, gl, &Shape::from((d.rows, d.out)))?;
        let g = f32_view(gs, gl, OP)?;
        Ok((
            store(gs.dtype(), cpu::bias_grad(d, &g), OP)?,
            Shape::from(d.out),
        ))
    }
}
