//! The `CustomOp3` glue: forward on the CPU kernel, backward as a second kernel call.

use std::sync::{Arc, Mutex};

use super::backward::backward;
use super::forward::forward;
use super::kernel::Problem;
use super::mask::{Band, Bias, Dropout};
use super::{Geom, OP};
use crate::cpu::{f32_view, store};
use candle_core::{CpuStorage, CustomOp3, Device, Layout, Shape, Storage, Tensor};

// ---------------------------------------------------------------------------------------------
// Custom op
// ---------------------------------------------------------------------------------------------

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

impl CustomOp3 for SdpaOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        use crate::cpu::expect_shape;
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

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if !q.device().is_cpu() {
            return Err(candle_core::Error::BackwardNotSupported { op: OP });
        }
        // f32 views of the contiguous storages (borrowed for f32, widened for f16/bf16).
        let ts = [
            q.contiguous()?,
            k.contiguous()?,
            v.contiguous()?,
            res.contiguous()?,
            grad_res.contiguous()?,
        ];
        let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
        let mut views = Vec::with_capacity(5);
        for (st, l) in &guards {
            match &**st {
                Storage::Cpu(c) => views.push(f32_view(c, l, OP)?),
                _ => return Err(candle_core::Error::BackwardNotSupported { op: OP }),
            }
        }
        let [qf, kf, vf, of, dof] = [0, 1, 2, 3, 4].map(|i| &*views[i]);
        let p = self.problem();
        let saved = self.lse.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let lse = match saved {
            Some(l) => l,
            None => forward(&p, qf, kf, vf).1,
        };
        let (dq, dk, dv) = backward(&p, qf, kf, vf, of, dof, &lse);
        let g = self.g;
        let dt = q.dtype();
        let mk = |x: Vec<f32>, s: Shape| Tensor::from_vec(x, s, &Device::Cpu)?.to_dtype(dt);
        Ok((
            Some(mk(dq, g.q_shape())?),
            Some(mk(dk, g.kv_shape())?),
            Some(mk(dv, g.kv_shape())?),
        ))
    }
}
