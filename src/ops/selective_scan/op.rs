//! The [`ScanOp`] fused op: the forward kernel on CPU storage, the backward as a second kernel
//! call.

use std::sync::{Arc, Mutex};

use super::backward::backward;
use super::forward::forward;
use super::{Geom, OP};
use crate::cpu::{f32_view, store};
use crate::ops::fused::{with_f32_views, FusedOp, Grads, Operand, Output};
use candle_core::backend::BackendStorage;
use candle_core::{Device, Layout, Shape, Tensor};

/// The op `(u, delta, packed rest) -> y` (flat `[y | last state]` with `return_last_state`).
/// Keeps the forward's state checkpoints for its backward when a gradient is tracked.
pub(super) struct ScanOp {
    pub(super) geom: Geom,
    pub(super) save: bool,
    pub(super) ckpt: Mutex<Option<Arc<Vec<f32>>>>,
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

impl FusedOp<3> for ScanOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu(&self, [(s1, l1), (s2, l2), (s3, l3)]: [Operand<'_>; 3]) -> Output {
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

    fn grads(&self, [u, delta, rest]: [&Tensor; 3], _res: &Tensor, grad: &Tensor) -> Grads<3> {
        let gm = self.geom;
        let dtype = u.dtype();
        let grad = grad.to_dtype(dtype)?;
        let lens = [gm.bdl(), gm.bdl(), gm.offsets()[6], gm.out_len()];
        let names = ["u", "delta", "the packed inputs", "the output gradient"];
        for ((t, len), what) in [u, delta, rest, &grad].iter().zip(lens).zip(names) {
            if t.elem_count() != len {
                candle_core::bail!(
                    "{OP}: {what} has {} elements, expected {len}",
                    t.elem_count()
                );
            }
        }
        let saved = self.ckpt.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (gu, gdelta, grest) =
            with_f32_views(OP, [u, delta, rest, &grad], |[u, delta, rest, g]| {
                let ckpt = match saved {
                    Some(c) => c,
                    None => Arc::new(forward(&gm, u, delta, rest, true).1),
                };
                Ok(backward(&gm, u, delta, rest, g, &ckpt))
            })?;
        let dev = &Device::Cpu;
        let shape = (gm.b, gm.d, gm.l);
        let gu = Tensor::from_vec(gu, shape, dev)?.to_dtype(dtype)?;
        let gdelta = Tensor::from_vec(gdelta, shape, dev)?.to_dtype(dtype)?;
        let n_rest = grest.len();
        let grest = Tensor::from_vec(grest, n_rest, dev)?.to_dtype(dtype)?;
        Ok([Some(gu), Some(gdelta), Some(grest)])
    }
}
