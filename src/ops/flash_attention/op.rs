//! The [`SdpaOp`] fused op: forward on the CPU kernel, backward as a second kernel call.

use std::sync::{Arc, Mutex};

use super::backward::backward;
use super::forward::forward;
use super::kernel::Problem;
use super::mask::{Band, Bias, Dropout};
use super::{Geom, OP};
use crate::cpu::{expect_shape, f32_view, store};
use crate::ops::fused::{with_f32_views, FusedOp, Grads, Operand, Output};
use candle_core::{Device, Shape, Tensor};

/// The forward op `(q, k, v) -> o`; keeps the log-sum-exp of its run for the backward pass.
#[derive(Debug, Clone)]
pub(super) struct SdpaOp {
    pub(super) g: Geom,
    pub(super) band: Band,
    pub(super) lens: Option<Arc<Vec<usize>>>,
    pub(super) bias: Option<Arc<Bias>>,
    pub(super) dropout: Dropout,
    /// Log-sum-exp per query row `(B, H, Lq)` of the forward run (+inf for a fully masked row).
    pub(super) lse: Arc<Mutex<Option<Vec<f32>>>>,
}

impl SdpaOp {
    fn problem(&self) -> Problem<'_> {
        Problem {
            g: self.g,
            band: self.band,
            lens: self.lens.as_deref().map(|v| v.as_slice()),
            bias: self.bias.as_deref(),
            dropout: self.dropout,
            scale: self.g.scale as f32,
        }
    }
}

impl FusedOp<3> for SdpaOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu(&self, [(s1, l1), (s2, l2), (s3, l3)]: [Operand<'_>; 3]) -> Output {
        let g = self.g;
        expect_shape(OP, l1, &g.q_shape())?;
        expect_shape(OP, l2, &g.kv_shape())?;
        expect_shape(OP, l3, &g.kv_shape())?;
        let dtype = candle_core::backend::BackendStorage::dtype(s1);
        let q = f32_view(s1, l1, OP)?;
        let k = f32_view(s2, l2, OP)?;
        let v = f32_view(s3, l3, OP)?;
        let (o, lse) = forward(&self.problem(), &q, &k, &v);
        *self.lse.lock().unwrap_or_else(|e| e.into_inner()) = Some(lse);
        Ok((store(dtype, o, OP)?, g.q_shape()))
    }

    fn grads(&self, [q, k, v]: [&Tensor; 3], res: &Tensor, grad_res: &Tensor) -> Grads<3> {
        let p = self.problem();
        let saved = self.lse.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (dq, dk, dv) = with_f32_views(OP, [q, k, v, res, grad_res], |[qf, kf, vf, of, dof]| {
            let lse = match saved {
                Some(l) => l,
                None => forward(&p, qf, kf, vf).1,
            };
            Ok(backward(&p, qf, kf, vf, of, dof, &lse))
        })?;
        let g = self.g;
        let dt = q.dtype();
        let mk = |x: Vec<f32>, s: Shape| Tensor::from_vec(x, s, &Device::Cpu)?.to_dtype(dt);
        Ok([
            Some(mk(dq, g.q_shape())?),
            Some(mk(dk, g.kv_shape())?),
            Some(mk(dv, g.kv_shape())?),
        ])
    }
}
