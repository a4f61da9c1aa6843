//! The [`ConvTransposeOp`] custom op: a transposed convolution is the input gradient of the
//! convolution it transposes, so its forward and its two gradients are the three roles of
//! [`Conv3dOp`] on that convolution's geometry, permuted.

use crate::ops::conv3d::{Conv3dOp, Geom, Role};
use crate::ops::fused::{Fused, FusedOp, Grads, Operand, Output};
use candle_core::Tensor;

/// `(x, w) -> y` of a transposed convolution, `g` being the geometry of the convolution it
/// transposes (whose input is `y` and whose output is `x`).
pub(super) struct ConvTransposeOp {
    pub(super) g: Geom,
}

impl ConvTransposeOp {
    fn role(&self, role: Role) -> Conv3dOp {
        Conv3dOp { g: self.g, role }
    }
}

impl FusedOp<2> for ConvTransposeOp {
    fn name(&self) -> &'static str {
        self.role(Role::GradInput).name()
    }

    fn cpu(&self, operands: [Operand<'_>; 2]) -> Output {
        // y = conv's input gradient from "grad_y" = x: GEMM of the weight with x, then col2im.
        self.role(Role::GradInput).cpu(operands)
    }

    fn grads(&self, [x, w]: [&Tensor; 2], _res: &Tensor, grad_res: &Tensor) -> Grads<2> {
        let gy = grad_res.contiguous()?;
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        // The adjoint of the conv's input gradient wrt its "grad_y" is the conv itself, and
        // wrt the weight it is the conv's weight gradient with `gy` as the conv's input.
        let gx = gy.apply_op2_no_bwd(&w, &Fused(self.role(Role::Forward)))?;
        let gw = gy.apply_op2_no_bwd(&x, &Fused(self.role(Role::GradWeight)))?;
        Ok([Some(gx), Some(gw)])
    }
}
