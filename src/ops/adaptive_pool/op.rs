//! The fused ops: the forward `x -> y` and its gradient `(x, y, grad_y) -> grad_x`.

use super::cpu::{backward, forward};
use super::{Geom, PoolMode, OP_GRAD};
use crate::cpu::{contiguous, dispatch_float, dispatch_float_triple, expect_shape, store};
use crate::ops::fused::{Fused, FusedOp, Grads, Operand, Output};
use candle_core::{Tensor, WithDType};

/// Forward: `x -> y`.
pub(super) struct PoolFwd {
    pub(super) g: Geom,
    pub(super) mode: PoolMode,
    pub(super) op: &'static str,
}

/// Gradient wrt the input: `(x, y, grad_y) -> grad_x`. Max pooling finds each bin's arg-max in
/// the input as the first element equal to the pooled value `y` (the last NaN when `y` is NaN),
/// which is PyTorch's choice; average pooling reads only `grad_y`. No backward of its own;
/// applied only from [`PoolFwd`]'s gradients.
struct PoolGrad {
    g: Geom,
    mode: PoolMode,
}

impl FusedOp<1> for PoolFwd {
    fn name(&self) -> &'static str {
        self.op
    }

    fn cpu(&self, [(s, l)]: [Operand<'_>; 1]) -> Output {
        expect_shape(self.op, l, &self.g.x_shape())?;
        let out = dispatch_float!(s, self.op, |x: T| {
            let x = contiguous(x, l, self.op)?;
            Ok::<_, candle_core::Error>(T::to_cpu_storage_owned(forward::<T>(
                &self.g, self.mode, x,
            )?))
        })?;
        Ok((out, self.g.y_shape()))
    }

    fn grads(&self, [x]: [&Tensor; 1], y: &Tensor, grad: &Tensor) -> Grads<1> {
        let op = PoolGrad {
            g: self.g.clone(),
            mode: self.mode,
        };
        let [x, y, grad] = [x, y, grad].map(|t| t.contiguous());
        Ok([Some(x?.apply_op3_no_bwd(&y?, &grad?, &Fused(op))?)])
    }
}

impl FusedOp<3> for PoolGrad {
    fn name(&self) -> &'static str {
        OP_GRAD
    }

    fn cpu(&self, [(s1, l1), (s2, l2), (s3, l3)]: [Operand<'_>; 3]) -> Output {
        let g = &self.g;
        expect_shape(OP_GRAD, l1, &g.x_shape())?;
        expect_shape(OP_GRAD, l2, &g.y_shape())?;
        expect_shape(OP_GRAD, l3, &g.y_shape())?;
        let out = dispatch_float_triple!(s1, s2, s3, OP_GRAD, |x, y, gy: T| {
            let x = contiguous(x, l1, OP_GRAD)?;
            let y = contiguous(y, l2, OP_GRAD)?;
            let gy = contiguous(gy, l3, OP_GRAD)?;
            let gx = backward::<T>(g, self.mode, x, y, gy);
            store(<T as WithDType>::DTYPE, gx, OP_GRAD)
        })?;
        Ok((out, g.x_shape()))
    }
}
