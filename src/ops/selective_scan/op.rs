//! The `CustomOp3` glue: the forward kernel on CPU storage, the backward as a second kernel call.

use std::sync::{Arc, Mutex};

use super::backward::backward;
use super::forward::forward;
use super::{Geom, OP};
use crate::cpu::{f32_view, store};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Device, Layout, Shape, Storage, Tensor};

// ---------------------------------------------------------------------------------------------
// Custom op
// ---------------------------------------------------------------------------------------------

/// The op `(u, delta, packed rest) -> y` (flat `[y | last state]` with `return_last_state`).
/// Keeps the forward's state checkpoints for its backward when a gradient is tracked.
pub(super) struct ScanOp {
    pub(super) geom: Geom,
    pub(super) save: bool,
    pub(super) ckpt: Mutex<Option<Arc<Vec<f32>>>>,
}

fn cpu_of(s: &Storage) -> candle_core::Result<&CpuStorage> {
    match s {
        Storage::Cpu(c) => Ok(c),
        _ => candle_core::bail!("{OP}: the backward pass runs on CPU only"),
    }
}

fn expect_len(l: &Layout, len: usize, what: &str) -> candle_core::Result<()> {
    if l.shape().elem_count() != len {
        candle_core::bail!(
            "{OP}: {what} has {} elements, expected {len}",
            l.shape().elem_count()
        );
    }
    Ok(())
}

impl CustomOp3 for ScanOp {
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
        let gm = self.geom;
        expect_len(l1, gm.bdl(), "u")?;
        expect_len(l2, gm.bdl(), "delta")?;
        expect_len(l3, gm.offsets()[6], "the packed inputs")?;
        let dtype = s1.dtype();
        if s2.dtype() != dtype || s3.dtype() != dtype {
            candle_core::bail!("{OP}: inputs of different dtypes");
        }
        let u = f32_view(s1, l1, OP)?;
        let delta = f32_view(s2, l2, OP)?;
        let rest = f32_view(s3, l3, OP)?;
        let (out, ckpt) = forward(&gm, &u, &delta, &rest, self.save);
        if self.save {
            *self.ckpt.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(ckpt));
        }
        let shape = if gm.last {
            Shape::from(gm.out_len())
        } else {
            Shape::from((gm.b, gm.d, gm.l))
        };
        Ok((store(dtype, out, OP)?, shape))
    }

    fn bwd(
        &self,
        u: &Tensor,
        delta: &Tensor,
        rest: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let gm = self.geom;
        let dtype = u.dtype();
        let (u, delta, rest) = (u.contiguous()?, delta.contiguous()?, rest.contiguous()?);
        let grad = grad_res.contiguous()?.to_dtype(dtype)?;
        let saved = self.ckpt.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (gu, gdelta, grest) = {
            let (us, ul) = u.storage_and_layout();
            let (ds, dl) = delta.storage_and_layout();
            let (rs, rl) = rest.storage_and_layout();
            let (gs, gl) = grad.storage_and_layout();
            let (us, ds, rs, gs) = (cpu_of(&us)?, cpu_of(&ds)?, cpu_of(&rs)?, cpu_of(&gs)?);
            expect_len(ul, gm.bdl(), "u")?;
            expect_len(dl, gm.bdl(), "delta")?;
            expect_len(rl, gm.offsets()[6], "the packed inputs")?;
            expect_len(gl, gm.out_len(), "the output gradient")?;
            let u = f32_view(us, ul, OP)?;
            let delta = f32_view(ds, dl, OP)?;
            let rest = f32_view(rs, rl, OP)?;
            let g = f32_view(gs, gl, OP)?;
            let ckpt = match saved {
                Some(c) => c,
                None => Arc::new(forward(&gm, &u, &delta, &rest, true).1),
            };
            backward(&gm, &u, &delta, &rest, &g, &ckpt)
        };
        let dev = &Device::Cpu;
        let shape = (gm.b, gm.d, gm.l);
        let gu = Tensor::from_vec(gu, shape, dev)?.to_dtype(dtype)?;
        let gdelta = Tensor::from_vec(gdelta, shape, dev)?.to_dtype(dtype)?;
        let n_rest = grest.len();
        let grest = Tensor::from_vec(grest, n_rest, dev)?.to_dtype(dtype)?;
        Ok((Some(gu), Some(gdelta), Some(grest)))
    }
}
