//! The fused causal convolution op: convolution, bias and SiLU in one pass over each
//! `(b, d)` row, and a backward that recomputes the pre-activation instead of storing it.

use crate::cpu::math::sigmoid;
use crate::cpu::{f32_view, items_per_task, par_parts, par_tasks, store};
use crate::ops::fused::{with_f32_views, FusedOp, Grads, Operand, Output};
use candle_core::backend::BackendStorage;
use candle_core::{Device, Tensor};

use super::OP;

/// Sizes and switches of one convolution.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geom {
    pub(super) b: usize,
    pub(super) d: usize,
    pub(super) l: usize,
    pub(super) k: usize,
    pub(super) has_bias: bool,
    pub(super) silu: bool,
}

impl Geom {
    /// Values per channel in the packed parameters: the `K` taps, then the bias if any.
    fn per_channel(&self) -> usize {
        self.k + usize::from(self.has_bias)
    }
}

/// The op `(x (B, D, L), params (D, K [+ 1])) -> y (B, D, L)`.
pub(super) struct ConvOp(pub(super) Geom);

fn expect_len(what: &str, got: usize, want: usize) -> candle_core::Result<()> {
    if got != want {
        candle_core::bail!("{OP}: {what} has {got} elements, expected {want}");
    }
    Ok(())
}

/// The pre-activation of one row: bias plus the taps times the left-zero-padded input.
fn pre_activation(x: &[f32], taps: &[f32], bias: f32, out: &mut [f32]) {
    let k = taps.len();
    out.fill(bias);
    for (j, &w) in taps.iter().enumerate() {
        // Tap j reads the input `K - 1 - j` steps back; earlier outputs see the zero padding,
        // and 0 · w keeps a NaN or infinite tap poisoning them as in the reference.
        let shift = k - 1 - j;
        for o in &mut out[..shift.min(x.len())] {
            *o += w * 0.0;
        }
        if shift >= x.len() {
            continue;
        }
        for (o, &v) in out[shift..].iter_mut().zip(x) {
            *o += w * v;
        }
    }
}

/// Rows `(b, d)` one task takes.
fn rows_per_task(l: usize) -> usize {
    items_per_task(l)
}

fn forward(gm: &Geom, x: &[f32], params: &[f32]) -> Vec<f32> {
    let (l, pk) = (gm.l, gm.per_channel());
    let mut y = vec![0f32; gm.b * gm.d * l];
    let rpt = rows_per_task(l);
    par_tasks(&mut y, rpt * l, |i, chunk, _: &mut ()| {
        for (r, out) in chunk.chunks_mut(l).enumerate() {
            let row = i * rpt + r;
            let p = &params[(row % gm.d) * pk..][..pk];
            let bias = if gm.has_bias { p[gm.k] } else { 0.0 };
            pre_activation(&x[row * l..][..l], &p[..gm.k], bias, out);
            if gm.silu {
                for v in out.iter_mut() {
                    *v *= sigmoid(*v);
                }
            }
        }
    });
    y
}

/// A worker's scratch in the backward: the pre-activation gradient of one row and its share of
/// the parameter gradient.
#[derive(Default)]
struct BwdScratch {
    g: Vec<f32>,
    gp: Vec<f32>,
}

/// Input gradient `(B, D, L)` and parameter gradient `(D, K [+ 1])`.
fn backward(gm: &Geom, x: &[f32], params: &[f32], gy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (l, k, pk) = (gm.l, gm.k, gm.per_channel());
    let mut gx = vec![0f32; gm.b * gm.d * l];
    let rpt = rows_per_task(l);
    let parts: Vec<&mut [f32]> = gx.chunks_mut(rpt * l).collect();
    let states = par_parts(parts.len(), [parts], |i, [gx], st: &mut BwdScratch| {
        st.g.resize(l, 0.0);
        st.gp.resize(gm.d * pk, 0.0);
        for (r, gxr) in gx.chunks_mut(l).enumerate() {
            let row = i * rpt + r;
            let ch = row % gm.d;
            let p = &params[ch * pk..][..pk];
            let gpr = &mut st.gp[ch * pk..][..pk];
            let (xr, gyr, g) = (&x[row * l..][..l], &gy[row * l..][..l], &mut st.g);
            // g = dL/d(pre-activation), recomputed rather than stored by the forward.
            if gm.silu {
                let bias = if gm.has_bias { p[k] } else { 0.0 };
                pre_activation(xr, &p[..k], bias, g);
                for (gv, &go) in g.iter_mut().zip(gyr) {
                    let s = sigmoid(*gv);
                    *gv = go * s * (1.0 + *gv * (1.0 - s));
                }
            } else {
                g.copy_from_slice(gyr);
            }
            for (j, &w) in p[..k].iter().enumerate() {
                let shift = k - 1 - j;
                // The padded positions add g · 0 (NaN for a NaN g, as in the reference).
                let mut acc: f32 = g[..shift.min(l)].iter().map(|&v| v * 0.0).sum();
                if shift >= l {
                    gpr[j] += acc;
                    continue;
                }
                for ((gxv, &gv), &xv) in gxr.iter_mut().zip(&g[shift..]).zip(xr) {
                    *gxv += w * gv;
                    acc += gv * xv;
                }
                gpr[j] += acc;
            }
            if gm.has_bias {
                gpr[k] += g.iter().sum::<f32>();
            }
        }
    });
    let mut gp = vec![0f32; gm.d * pk];
    for st in &states {
        for (a, &v) in gp.iter_mut().zip(&st.gp) {
            *a += v;
        }
    }
    (gx, gp)
}

impl FusedOp<2> for ConvOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu(&self, [(s1, l1), (s2, l2)]: [Operand<'_>; 2]) -> Output {
        let gm = self.0;
        expect_len("x", l1.shape().elem_count(), gm.b * gm.d * gm.l)?;
        expect_len("params", l2.shape().elem_count(), gm.d * gm.per_channel())?;
        let dtype = s1.dtype();
        if s2.dtype() != dtype {
            candle_core::bail!("{OP}: input and weight of different dtypes");
        }
        let x = f32_view(s1, l1, OP)?;
        let params = f32_view(s2, l2, OP)?;
        let y = forward(&gm, &x, &params);
        Ok((store(dtype, y, OP)?, (gm.b, gm.d, gm.l).into()))
    }

    fn grads(&self, [x, params]: [&Tensor; 2], _res: &Tensor, grad: &Tensor) -> Grads<2> {
        let gm = self.0;
        let dtype = x.dtype();
        let grad = grad.to_dtype(dtype)?;
        expect_len("x", x.elem_count(), gm.b * gm.d * gm.l)?;
        expect_len("params", params.elem_count(), gm.d * gm.per_channel())?;
        expect_len("the output gradient", grad.elem_count(), x.elem_count())?;
        let (gx, gp) = with_f32_views(OP, [x, params, &grad], |[x, p, g]| {
            Ok(backward(&gm, x, p, g))
        })?;
        let dev = &Device::Cpu;
        let gx = Tensor::from_vec(gx, (gm.b, gm.d, gm.l), dev)?.to_dtype(dtype)?;
        let gp = Tensor::from_vec(gp, (gm.d, gm.per_channel()), dev)?.to_dtype(dtype)?;
        Ok([Some(gx), Some(gp)])
    }
}
