//! The [`Conv3dOp`] custom op: candle glue, dispatch to the dense or depthwise CPU kernels,
//! and the backward.

use super::{dense, depthwise, Geom};
use crate::cpu::{expect_shape, f32_pair, store};
use crate::ops::direct_conv::conv_bwd;
use crate::ops::fused::{FusedOp, Grads, Operand, Output};
use candle_core::Tensor;

/// What a [`Conv3dOp`] computes from its two operands.
#[derive(Clone, Copy)]
pub(crate) enum Role {
    /// `(x, w) -> y`.
    Forward,
    /// `(grad_y, w) -> grad_x`.
    GradInput,
    /// `(x, grad_y) -> grad_w`.
    GradWeight,
}

/// The convolution and its two gradients as one custom op. Only the forward has a backward;
/// the gradient roles are applied without a graph from it (no second derivatives).
pub(crate) struct Conv3dOp {
    pub(crate) g: Geom,
    pub(crate) role: Role,
}

impl FusedOp<2> for Conv3dOp {
    fn name(&self) -> &'static str {
        let [forward, grad_input, grad_weight] = self.g.names();
        match self.role {
            Role::Forward => forward,
            Role::GradInput => grad_input,
            Role::GradWeight => grad_weight,
        }
    }

    fn cpu(&self, [(s1, l1), (s2, l2)]: [Operand<'_>; 2]) -> Output {
        let (g, op) = (self.g, self.name());
        let (a, b, out) = match self.role {
            Role::Forward => (g.x_shape(), g.w_shape(), g.y_shape()),
            Role::GradInput => (g.y_shape(), g.w_shape(), g.x_shape()),
            Role::GradWeight => (g.x_shape(), g.y_shape(), g.w_shape()),
        };
        expect_shape(op, l1, &a)?;
        expect_shape(op, l2, &b)?;
        let (dtype, a, b) = f32_pair(s1, l1, s2, l2, op)?;
        // One input channel per group: direct loops; otherwise vol2col + gemm.
        let depthwise = g.cig() == 1;
        let v = match (self.role, depthwise) {
            _ if g.direct => {
                let conv = g.direct_conv();
                match self.role {
                    Role::Forward => conv.forward(&a, &b)?,
                    Role::GradInput => conv.grad_input(&a, &b),
                    Role::GradWeight => conv.grad_weight(&a, &b),
                }
            }
            (Role::Forward, true) => depthwise::forward(&g, &a, &b)?,
            (Role::Forward, false) => dense::forward(&g, &a, &b)?,
            (Role::GradInput, true) => depthwise::grad_input(&g, &a, &b),
            (Role::GradInput, false) => dense::grad_input(&g, &a, &b),
            (Role::GradWeight, true) => depthwise::grad_weight(&g, &a, &b)?,
            (Role::GradWeight, false) => dense::grad_weight(&g, &a, &b)?,
        };
        Ok((store(dtype, v, op)?, out))
    }

    fn grads(&self, [x, w]: [&Tensor; 2], _res: &Tensor, grad_res: &Tensor) -> Grads<2> {
        let g = self.g;
        if !matches!(self.role, Role::Forward) {
            return Err(candle_core::Error::BackwardNotSupported { op: self.name() });
        }
        conv_bwd(
            x,
            w,
            grad_res,
            Conv3dOp {
                g,
                role: Role::GradInput,
            },
            Conv3dOp {
                g,
                role: Role::GradWeight,
            },
        )
    }
}
