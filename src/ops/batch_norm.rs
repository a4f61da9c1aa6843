//! The fused training-mode batch norm of [`crate::norm::BatchNorm`]: `x̂ = (x − μ_c)·rstd_c`
//! over `(B, C, L)` with the batch statistics of each channel, one reduction pass and one
//! writing pass (both multi-threaded), and its backward, which includes the statistics'
//! dependence on `x`. An optional clamp epilogue (ReLU, ReLU6) runs in the writing pass, and its
//! gradient mask in the backward's passes, so that `BatchNorm` + activation is one op in the graph.

use std::sync::{Arc, Mutex};

use crate::cpu::{f32_pair, f32_view, par_fold, par_tasks, store};
use crate::ops::fused::{Fused, FusedOp, Grads, Operand, Output};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Tensor};

const NAME: &str = "batch-norm-train";

/// Batch norm in training mode of `x` `(B, C, L)` with the statistics of this batch, then
/// `x̂·weight + bias` per channel when `affine` is given: `(y, mean, biased variance)`, the
/// statistics as `(C)` f32 tensors on `x`'s device for the running averages. CPU only (the
/// caller picks it through [`crate::ops::backend()`]); f32, f16 and bf16. With `clamp =
/// Some((lo, hi))` the output is clamped to `[lo, hi]` (ReLU: `(0, ∞)`, ReLU6: `(0, 6)`) and the
/// gradient passes where the output lies strictly inside, PyTorch's `hardtanh` convention.
pub(crate) fn batch_norm_train(
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f64,
    clamp: Option<(f32, f32)>,
) -> crate::Result<(Tensor, Tensor, Tensor)> {
    let (_, c, l) = x.dims3()?;
    let stats = Arc::new(Mutex::new(Stats::default()));
    let op = Normalize {
        c,
        l,
        eps,
        clamp,
        stats: stats.clone(),
    };
    let x = x.contiguous()?;
    let y = match affine {
        Some((w, b)) => x.apply_op3(&w.contiguous()?, &b.contiguous()?, Fused(op))?,
        None => x.apply_op1(Fused(op))?,
    };
    let st = stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mean = Tensor::from_vec(st.mean, c, x.device())?;
    let var = Tensor::from_vec(st.var, c, x.device())?;
    Ok((y, mean, var))
}

/// Per-channel batch statistics: mean, biased variance and `1/sqrt(var + eps)`.
#[derive(Debug, Default, Clone)]
struct Stats {
    mean: Vec<f32>,
    var: Vec<f32>,
    rstd: Vec<f32>,
}

/// `(B, C, L)` → `x̂`; the statistics it used are left in `stats` for the caller (running
/// averages) and for the backward.
struct Normalize {
    c: usize,
    l: usize,
    eps: f64,
    /// The activation epilogue: clamp the output to `[lo, hi]`.
    clamp: Option<(f32, f32)>,
    stats: Arc<Mutex<Stats>>,
}

/// `v` clamped to `[lo, hi]` (comparisons, so that a NaN passes through as in the unfused ops).
#[inline(always)]
fn clamp_to(v: f32, (lo, hi): (f32, f32)) -> f32 {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

/// The epilogue's gradient: `g` where the clamped output `y` lies strictly inside `(lo, hi)`.
#[inline(always)]
fn pass_inside(g: f32, y: f32, (lo, hi): (f32, f32)) -> f32 {
    if y <= lo || y >= hi {
        0.0
    } else {
        g
    }
}

fn dims(l: &Layout, c: usize, len: usize) -> Result<usize> {
    let d = l.shape().dims();
    if d.len() != 3 || d[1] != c || d[2] != len {
        return Err(candle_core::Error::Msg(format!(
            "{NAME}: expected (B, {c}, {len}), got {:?}",
            l.shape()
        )));
    }
    Ok(d[0])
}

/// Rows of `l` values handed to one task.
fn rows_per_task(l: usize) -> usize {
    (16384 / l.max(1)).max(1)
}

/// Per-channel `f(c) -> (a, b)` in parallel, gathered in channel order.
fn per_channel(c: usize, f: impl Fn(usize) -> (f64, f64) + Sync + Send) -> Vec<(f64, f64)> {
    let parts = par_fold(c, |ch, acc: &mut Vec<(usize, (f64, f64))>| {
        acc.push((ch, f(ch)))
    });
    let mut out = vec![(0.0, 0.0); c];
    for (ch, v) in parts.into_iter().flatten() {
        out[ch] = v;
    }
    out
}

/// Independent f32 partial sums per reduction: the loop vectorises and no add waits on the
/// previous one (a single f64 running sum is bound by the add's latency, several times
/// slower than reading the values).
const LANES: usize = 16;
/// Values summed in f32 lanes before their total joins the f64 sum, bounding the f32 error.
const BLOCK: usize = 4096;

/// `Σ f(a_i, b_i, c_i)` over one channel (rows `(bi·C + ch)·L .. +L` of each operand, all of
/// length `B·C·L`), each of the `K` terms in f32 lanes per block and in f64 across blocks.
#[inline(always)]
fn channel_sums<const K: usize>(
    [a, b, c]: [&[f32]; 3],
    (nb, nc, l, ch): (usize, usize, usize, usize),
    f: impl Fn(f32, f32, f32) -> [f32; K],
) -> [f64; K] {
    let mut out = [0f64; K];
    for bi in 0..nb {
        let row = (bi * nc + ch) * l..(bi * nc + ch + 1) * l;
        let (ra, rb, rc) = (&a[row.clone()], &b[row.clone()], &c[row]);
        for ((ba, bb), bc) in ra.chunks(BLOCK).zip(rb.chunks(BLOCK)).zip(rc.chunks(BLOCK)) {
            let mut acc = [[0f32; LANES]; K];
            let (ca, cb, cc) = (
                ba.chunks_exact(LANES),
                bb.chunks_exact(LANES),
                bc.chunks_exact(LANES),
            );
            let tail = ca
                .remainder()
                .iter()
                .zip(cb.remainder())
                .zip(cc.remainder());
            for (&va, &vb, &vc) in tail.map(|((a, b), c)| (a, b, c)) {
                let t = f(va, vb, vc);
                for k in 0..K {
                    out[k] += t[k] as f64;
                }
            }
            for ((xa, xb), xc) in ca.zip(cb).zip(cc) {
                for j in 0..LANES {
                    let t = f(xa[j], xb[j], xc[j]);
                    for k in 0..K {
                        acc[k][j] += t[k];
                    }
                }
            }
            for k in 0..K {
                out[k] += acc[k].iter().map(|&v| v as f64).sum::<f64>();
            }
        }
    }
    out
}

impl Normalize {
    /// `x̂·w + b` per channel (`w`, `b` when affine).
    fn fwd(&self, s: &CpuStorage, layout: &Layout, wb: Option<(&[f32], &[f32])>) -> Output {
        let (c, l) = (self.c, self.l);
        let b = dims(layout, c, l)?;
        let x = f32_view(s, layout, NAME)?;
        let n = (b * l) as f64;
        // Two passes (the mean, then squares about it): exact enough without Welford.
        let mv = per_channel(c, |ch| {
            let ops = [&x[..], &x[..], &x[..]];
            let [sum] = channel_sums(ops, (b, c, l, ch), |v, _, _| [v]);
            let mean = sum / n;
            let m = mean as f32;
            let [ss] = channel_sums(ops, (b, c, l, ch), |v, _, _| [(v - m) * (v - m)]);
            (mean, ss / n)
        });
        let stats = Stats {
            mean: mv.iter().map(|m| m.0 as f32).collect(),
            var: mv.iter().map(|m| m.1 as f32).collect(),
            rstd: mv
                .iter()
                .map(|m| (1.0 / (m.1 + self.eps).sqrt()) as f32)
                .collect(),
        };
        let mut out = vec![0f32; x.len()];
        let rows = rows_per_task(l);
        par_tasks(&mut out, rows * l, |i, chunk, _: &mut ()| {
            for (r, row) in chunk.chunks_mut(l).enumerate() {
                let g = i * rows + r;
                let ch = g % c;
                let (w, sh) = wb.map_or((1.0, 0.0), |(w, b)| (w[ch], b[ch]));
                // y = (x − μ)·(rstd·w) + b; subtracting μ first keeps precision when the
                // mean is large against the spread.
                let (m, scale) = (stats.mean[ch], stats.rstd[ch] * w);
                let src = &x[g * l..(g + 1) * l];
                match self.clamp {
                    None => {
                        for (o, &v) in row.iter_mut().zip(src) {
                            *o = (v - m) * scale + sh;
                        }
                    }
                    Some(bounds) => {
                        for (o, &v) in row.iter_mut().zip(src) {
                            *o = clamp_to((v - m) * scale + sh, bounds);
                        }
                    }
                }
            }
        });
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = stats;
        Ok((store(s.dtype(), out, NAME)?, layout.shape().clone()))
    }

    /// `(dx, Some((dw, db)))` (the latter when `w` is given) for the output gradient `g` of
    /// the forward's result `y`.
    fn bwd_impl(
        &self,
        x: &Tensor,
        y: &Tensor,
        g: &Tensor,
        w: Option<&Tensor>,
    ) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let w_vals = match w {
            Some(w) => Some(w.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            None => None,
        };
        let sums = Arc::new(Mutex::new(Vec::new()));
        let op = Backward {
            c: self.c,
            l: self.l,
            stats,
            w: w_vals,
            clamp: self.clamp,
            sums: sums.clone(),
        };
        // The output is read only for the epilogue's mask.
        let dx = x.apply_op3_no_bwd(&g.contiguous()?, &y.contiguous()?, &Fused(op))?;
        let dwb = match w {
            Some(w) => {
                let s = sums.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let dw: Vec<f32> = s.iter().map(|v| v.1 as f32).collect();
                let db: Vec<f32> = s.iter().map(|v| v.0 as f32).collect();
                let t = |v| Tensor::from_vec(v, self.c, x.device())?.to_dtype(w.dtype());
                Some((t(dw)?, t(db)?))
            }
            None => None,
        };
        Ok((dx, dwb))
    }
}

impl FusedOp<1> for Normalize {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu(&self, [(s, layout)]: [Operand<'_>; 1]) -> Output {
        self.fwd(s, layout, None)
    }

    fn grads(&self, [x]: [&Tensor; 1], res: &Tensor, grad: &Tensor) -> Grads<1> {
        Ok([Some(self.bwd_impl(x, res, grad, None)?.0)])
    }
}

impl FusedOp<3> for Normalize {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu(&self, [(s1, l1), (s2, l2), (s3, l3)]: [Operand<'_>; 3]) -> Output {
        let w = f32_view(s2, l2, NAME)?;
        let b = f32_view(s3, l3, NAME)?;
        if w.len() != self.c || b.len() != self.c {
            return Err(candle_core::Error::Msg(format!(
                "{NAME}: weight and bias need {} values, got {} and {}",
                self.c,
                w.len(),
                b.len()
            )));
        }
        self.fwd(s1, l1, Some((&w, &b)))
    }

    fn grads(&self, [x, w, _]: [&Tensor; 3], res: &Tensor, grad: &Tensor) -> Grads<3> {
        let (dx, dwb) = self.bwd_impl(x, res, grad, Some(w))?;
        let (dw, db) = dwb.map_or((None, None), |(w, b)| (Some(w), Some(b)));
        Ok([Some(dx), dw, db])
    }
}

/// `(x, g, y)` → `dx = rstd·w·(g − mean(g) − x̂·mean(g·x̂))` per channel, with `g` first
/// masked by the epilogue's gradient (read from the output `y`) when there is one; leaves the
/// per-channel `(Σg, Σg·x̂)` (= `db`, `dw`) in `sums`.
struct Backward {
    c: usize,
    l: usize,
    stats: Stats,
    w: Option<Vec<f32>>,
    clamp: Option<(f32, f32)>,
    sums: Arc<Mutex<Vec<(f64, f64)>>>,
}

impl FusedOp<3> for Backward {
    fn name(&self) -> &'static str {
        "batch-norm-train-bwd"
    }

    fn cpu(&self, [(s1, l1), (s2, l2), (s3, l3)]: [Operand<'_>; 3]) -> Output {
        let (c, l) = (self.c, self.l);
        let b = dims(l1, c, l)?;
        dims(l2, c, l)?;
        dims(l3, c, l)?;
        let (dtype, x, g) = f32_pair(s1, l1, s2, l2, NAME)?;
        let y = match self.clamp {
            Some(_) => Some(f32_view(s3, l3, NAME)?),
            None => None,
        };
        let y = y.as_deref();
        let st = &self.stats;
        let n = (b * l) as f64;
        let sums = per_channel(c, |ch| {
            let (m, rs) = (st.mean[ch], st.rstd[ch]);
            let dims = (b, c, l, ch);
            let [sg, sgx] = match (self.clamp, y) {
                (Some(bounds), Some(y)) => channel_sums([&x, &g, y], dims, |xv, gv, yv| {
                    let gv = pass_inside(gv, yv, bounds);
                    [gv, gv * (xv - m) * rs]
                }),
                _ => channel_sums([&x, &g, &g], dims, |xv, gv, _| [gv, gv * (xv - m) * rs]),
            };
            (sg, sgx)
        });
        let mut out = vec![0f32; x.len()];
        let rows = rows_per_task(l);
        par_tasks(&mut out, rows * l, |i, chunk, _: &mut ()| {
            for (r, row) in chunk.chunks_mut(l).enumerate() {
                let gi = i * rows + r;
                let ch = gi % c;
                let (m, rs) = (st.mean[ch], st.rstd[ch]);
                let (mg, mgx) = ((sums[ch].0 / n) as f32, (sums[ch].1 / n) as f32);
                let k = rs * self.w.as_ref().map_or(1.0, |w| w[ch]);
                let off = gi * l;
                let span = off..off + l;
                let dx = |gv: f32, xv: f32| k * (gv - mg - (xv - m) * rs * mgx);
                let it = row.iter_mut().zip(&x[span.clone()]).zip(&g[span.clone()]);
                match (self.clamp, y) {
                    (Some(bounds), Some(y)) => {
                        for (((o, &xv), &gv), &yv) in it.zip(&y[span]) {
                            *o = dx(pass_inside(gv, yv, bounds), xv);
                        }
                    }
                    _ => {
                        for ((o, &xv), &gv) in it {
                            *o = dx(gv, xv);
                        }
                    }
                }
            }
        });
        *self.sums.lock().unwrap_or_else(|e| e.into_inner()) = sums;
        Ok((store(dtype, out, NAME)?, l1.shape().clone()))
    }
}
