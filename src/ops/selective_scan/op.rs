//! The [`ScanOp`] fused op: the forward kernel on CPU storage, the backward as a second kernel
//! call.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use super::backward::backward;
use super::forward::forward;
use super::{Geom, OP};
use crate::cpu::{f32_view, par_tasks, store};
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

/// `v` `(B, R, C)` as `(B, C, R)`, one batch entry per task, in tiles that keep reads and writes
/// in cache.
fn swap_last(v: &[f32], b: usize, r: usize, c: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0f32; v.len()];
    let plane = r * c;
    par_tasks(&mut out[..b * plane], plane, |bi, dst, _: &mut ()| {
        let src = &v[bi * plane..(bi + 1) * plane];
        for i0 in (0..r).step_by(TILE) {
            for j0 in (0..c).step_by(TILE) {
                for i in i0..(i0 + TILE).min(r) {
                    for j in j0..(j0 + TILE).min(c) {
                        dst[j * r + i] = src[i * c + j];
                    }
                }
            }
        }
    });
    out
}

/// The packed inputs with a token-major gate `(B, L, D)` turned channels-first, as the kernels
/// read it (borrowed unchanged otherwise).
fn gate_channels_first<'a>(gm: &Geom, rest: &'a [f32]) -> Cow<'a, [f32]> {
    if !(gm.seq_major && gm.has_z) {
        return Cow::Borrowed(rest);
    }
    let [zo, bo, ..] = gm.offsets();
    let mut v = rest.to_vec();
    v[zo..bo].copy_from_slice(&swap_last(&rest[zo..bo], gm.b, gm.l, gm.d));
    Cow::Owned(v)
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
        let (mut out, ckpt) = forward(&gm, &u, &delta, &gate_channels_first(&gm, &rest), self.save);
        if gm.seq_major {
            let y = swap_last(&out[..gm.bdl()], gm.b, gm.d, gm.l);
            out[..gm.bdl()].copy_from_slice(&y);
        }
        if self.save {
            *self.ckpt.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(ckpt));
        }
        let shape = if gm.last {
            Shape::from(gm.out_len())
        } else if gm.seq_major {
            Shape::from((gm.b, gm.l, gm.d))
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
                let rest = gate_channels_first(&gm, rest);
                let g = if gm.seq_major {
                    let mut v = g.to_vec();
                    v[..gm.bdl()].copy_from_slice(&swap_last(&g[..gm.bdl()], gm.b, gm.l, gm.d));
                    Cow::Owned(v)
                } else {
                    Cow::Borrowed(g)
                };
                let ckpt = match saved {
                    Some(c) => c,
                    None => Arc::new(forward(&gm, u, delta, &rest, true).1),
                };
                let (gu, gdelta, mut grest) = backward(&gm, u, delta, &rest, &g, &ckpt);
                if gm.seq_major && gm.has_z {
                    // The gate's gradient goes back in the gate's own (B, L, D) layout.
                    let [zo, bo, ..] = gm.offsets();
                    let gz = swap_last(&grest[zo..bo], gm.b, gm.d, gm.l);
                    grest[zo..bo].copy_from_slice(&gz);
                }
                Ok((gu, gdelta, grest))
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
