//! The [`DepthwiseOp`] custom op: candle glue, device dispatch and the backward.

use super::backward::{grad_input, grad_weight};
use super::forward::forward;
use super::{Geom, OP2, OP_GRAD_INPUT, OP_GRAD_WEIGHT};
use crate::cpu::{contiguous, dispatch_float_pair, expect_shape, Element};
use crate::ops::direct_conv::conv_bwd;
use crate::ops::fused::{FusedOp, Grads, Operand, Output};
use crate::Result;
use candle_core::{Tensor, WithDType};

/// What a [`DepthwiseOp`] computes from its two operands.
#[derive(Clone, Copy)]
enum Role {
    /// `(x, w) -> y`.
    Forward,
    /// `(grad_y, w) -> grad_x`.
    GradInput,
    /// `(x, grad_y) -> grad_w`.
    GradWeight,
}

/// The depthwise convolution and its two gradients as one custom op. Only the forward has a
/// backward; the gradient roles are applied without a graph from it (no second derivatives).
pub(super) struct DepthwiseOp {
    g: Geom,
    role: Role,
}

impl DepthwiseOp {
    pub(super) fn forward(g: Geom) -> Self {
        Self {
            g,
            role: Role::Forward,
        }
    }
}

impl FusedOp<2> for DepthwiseOp {
    fn name(&self) -> &'static str {
        match self.role {
            Role::Forward => OP2,
            Role::GradInput => OP_GRAD_INPUT,
            Role::GradWeight => OP_GRAD_WEIGHT,
        }
    }

    fn cpu(&self, [(s1, l1), (s2, l2)]: [Operand<'_>; 2]) -> Output {
        let (g, role, op) = (self.g, self.role, self.name());
        let (a_shape, b_shape, out_shape) = match role {
            Role::Forward => (g.x_shape(), g.w_shape(), g.y_shape()),
            Role::GradInput => (g.y_shape(), g.w_shape(), g.x_shape()),
            Role::GradWeight => (g.x_shape(), g.y_shape(), g.w_shape()),
        };
        expect_shape(op, l1, &a_shape)?;
        expect_shape(op, l2, &b_shape)?;
        let out = dispatch_float_pair!(s1, s2, op, |a, b: T| {
            let a = contiguous(a, l1, op)?;
            let b = contiguous(b, l2, op)?;
            let v = match role {
                _ if g.direct => direct::<T>(&g, role, a, b)?,
                Role::Forward => forward::<T>(&g, a, b)?,
                Role::GradInput => grad_input::<T>(&g, a, b),
                Role::GradWeight => grad_weight::<T>(&g, a, b),
            };
            Ok::<_, candle_core::Error>(T::to_cpu_storage_owned(v))
        })?;
        Ok((out, out_shape))
    }

    fn grads(&self, [x, w]: [&Tensor; 2], _res: &Tensor, grad_res: &Tensor) -> Grads<2> {
        if !matches!(self.role, Role::Forward) {
            return Err(candle_core::Error::BackwardNotSupported { op: self.name() });
        }
        // `x` and `w` are the (contiguous) tensors the forward saw; for the 1-D op they are the
        // 4-D views with H = 1, and so is `grad_res`.
        let g = self.g;
        conv_bwd(
            x,
            w,
            grad_res,
            DepthwiseOp {
                g,
                role: Role::GradInput,
            },
            DepthwiseOp {
                g,
                role: Role::GradWeight,
            },
        )
    }
}

/// [`DirectConv`](crate::ops::direct_conv::DirectConv) for one role, widening to f32 and rounding the result once.
fn direct<T: Element>(g: &Geom, role: Role, a: &[T], b: &[T]) -> Result<Vec<T>> {
    let conv = g.direct_conv();
    let wide = |v: &[T]| v.iter().map(|e| e.to_f32()).collect::<Vec<f32>>();
    let (a, b) = (wide(a), wide(b));
    let v = match role {
        Role::Forward => conv.forward(&a, &b)?,
        Role::GradInput => conv.grad_input(&a, &b),
        Role::GradWeight => conv.grad_weight(&a, &b),
    };
    Ok(v.into_iter().map(T::from_f32).collect())
}
