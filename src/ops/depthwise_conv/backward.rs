//! CPU kernels of the two gradients (input and weight).

use super::forward::{load_padded, ntaps, store_unpadded, weights_f32, Plan, Scratch};
use super::Geom;
use crate::cpu::simd::axpy;
use crate::cpu::{f32_row, par_tasks, round_into, Element, Isa, Kernel, Level};

// --- gradient wrt the input -----------------------------------------------------------------

/// Scatters the `m` output-gradient planes of one input channel into its padded gradient.
// Index loops over `0..NT` on purpose: a compile-time trip count unrolls the taps.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn gin_planes<const NT: usize, S: Isa>(
    g: &Geom,
    plan: &Plan,
    gy: &[f32],
    wk: &[f32],
    gpad: &mut [f32],
) {
    let step = g.sy * plan.rl;
    for (wj, gplane) in wk
        .chunks_exact(g.taps())
        .zip(gy.chunks_exact(g.out_plane()))
    {
        for (oy, grow) in gplane.chunks_exact(g.wo).enumerate() {
            let base = oy * step;
            for t in 0..ntaps::<NT>(plan.tap_off.len()) {
                let off = base + plan.tap_off[t];
                axpy::<S>(&mut gpad[off..off + g.wo], grow, wj[t]);
            }
        }
    }
}

/// One grad-input task: `m` output-gradient planes `gy`, input-gradient plane `gin`.
struct GinTask<'a, T> {
    g: &'a Geom,
    plan: &'a Plan,
    gy: &'a [T],
    wk: &'a [f32],
    gin: &'a mut [T],
    scr: &'a mut Scratch,
}

impl<T: Element> Kernel for GinTask<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let GinTask {
            g,
            plan,
            gy,
            wk,
            gin,
            scr,
        } = self;
        let Scratch {
            gpad, row, wide, ..
        } = scr;
        let gyf: &[f32] = f32_row(gy, wide);
        gpad.clear();
        gpad.resize(plan.len, 0.0);
        match g.taps() {
            9 => gin_planes::<9, S>(g, plan, gyf, wk, gpad),
            _ => gin_planes::<0, S>(g, plan, gyf, wk, gpad),
        }
        store_unpadded(g, plan, gpad, gin, row);
    }
}

pub(super) fn grad_input<T: Element>(g: &Geom, gy: &[T], w: &[T]) -> Vec<T> {
    let level = Level::detect();
    let plan = Plan::new(g);
    let wk = weights_f32(w);
    let (inp, outp, mk) = (g.in_plane(), g.out_plane(), g.m * g.taps());
    let mut gin = vec![T::from_f32(0.0); g.b * g.c * inp];
    par_tasks(&mut gin, inp, |i, gin, scr: &mut Scratch| {
        let gy = &gy[i * g.m * outp..(i + 1) * g.m * outp];
        let c = i % g.c;
        let wk = &wk[c * mk..(c + 1) * mk];
        level.run(GinTask {
            g,
            plan: &plan,
            gy,
            wk,
            gin,
            scr,
        })
    });
    gin
}

// --- gradient wrt the weight ----------------------------------------------------------------

/// Adds `sum_{oy, ox} gy[oy, ox] * xin[tap(oy, ox)]` for every tap of one output plane into
/// `acc` (`kh·kw`): one pass over the plane per tap (it stays in L1/L2), with vector partial sums
/// kept in registers across the whole plane.
// Index loops over `0..NT` on purpose: a compile-time trip count unrolls the taps.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn gw_plane<const NT: usize, S: Isa>(
    g: &Geom,
    plan: &Plan,
    xin: &[f32],
    gy: &[f32],
    acc: &mut [f32],
) {
    let step = g.sy * plan.rl;
    for t in 0..ntaps::<NT>(plan.tap_off.len()) {
        let mut a16 = [0f32; 16];
        let mut a8 = [0f32; 8];
        let mut tail = 0f32;
        for (oy, grow) in gy.chunks_exact(g.wo).enumerate() {
            let off = oy * step + plan.tap_off[t];
            let xrow = &xin[off..off + g.wo];
            let mut g16 = grow.chunks_exact(16);
            let mut x16 = xrow.chunks_exact(16);
            for (gc, xc) in (&mut g16).zip(&mut x16) {
                for l in 0..16 {
                    a16[l] = S::madd(gc[l], xc[l], a16[l]);
                }
            }
            let mut g8 = g16.remainder().chunks_exact(8);
            let mut x8 = x16.remainder().chunks_exact(8);
            for (gc, xc) in (&mut g8).zip(&mut x8) {
                for l in 0..8 {
                    a8[l] = S::madd(gc[l], xc[l], a8[l]);
                }
            }
            for (gv, xv) in g8.remainder().iter().zip(x8.remainder()) {
                tail = S::madd(*gv, *xv, tail);
            }
        }
        acc[t] += a16.iter().sum::<f32>() + a8.iter().sum::<f32>() + tail;
    }
}

/// One grad-weight task: input channel `c`, writing its `m` output channels' gradients `gw`.
struct GwTask<'a, T> {
    g: &'a Geom,
    plan: &'a Plan,
    x: &'a [T],
    gy: &'a [T],
    c: usize,
    gw: &'a mut [T],
    scr: &'a mut Scratch,
}

impl<T: Element> Kernel for GwTask<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let GwTask {
            g,
            plan,
            x,
            gy,
            c,
            gw,
            scr,
        } = self;
        let Scratch {
            pad,
            row,
            wide,
            acc,
            ..
        } = scr;
        let (inp, outp, kk) = (g.in_plane(), g.out_plane(), g.taps());
        acc.clear();
        acc.resize(g.m * kk, 0.0);
        for bi in 0..g.b {
            let xp = &x[(bi * g.c + c) * inp..(bi * g.c + c + 1) * inp];
            load_padded(g, plan, xp, pad, row);
            let o0 = bi * g.cm() + c * g.m;
            let gys = &gy[o0 * outp..(o0 + g.m) * outp];
            for (gp, accj) in gys.chunks_exact(outp).zip(acc.chunks_exact_mut(kk)) {
                let gpf: &[f32] = f32_row(gp, wide);
                match kk {
                    9 => gw_plane::<9, S>(g, plan, pad, gpf, accj),
                    _ => gw_plane::<0, S>(g, plan, pad, gpf, accj),
                }
            }
        }
        round_into(gw, acc);
    }
}

pub(super) fn grad_weight<T: Element>(g: &Geom, x: &[T], gy: &[T]) -> Vec<T> {
    let level = Level::detect();
    let plan = Plan::new(g);
    let mut gw = vec![T::from_f32(0.0); g.cm() * g.taps()];
    par_tasks(&mut gw, g.m * g.taps(), |c, gw, scr: &mut Scratch| {
        level.run(GwTask {
            g,
            plan: &plan,
            x,
            gy,
            c,
            gw,
            scr,
        })
    });
    gw
}

#[cfg(test)]
mod tests {
    use super::super::forward::forward;
    use super::super::*;
    use super::*;
    use crate::cpu::simd::{with_cap, Cap};
    use crate::Result;
    use candle_core::{Device, Tensor};

    /// The kernels at every SIMD level this CPU has against the plain-tensor reference.
    #[test]
    fn every_level_matches_reference() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 9, 7), &dev)?;
        let w = Tensor::randn(0f32, 1., (6, 1, 3, 3), &dev)?;
        let cfg = DepthwiseConv2dConfig::default().with_stride(2);
        let g = geom2d(&x, &w, cfg, false)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let wk = w.flatten_all()?.to_vec1::<f32>()?;
        let y = depthwise_conv2d_reference(&x, &w, cfg)?;
        let gy_t = y.sin()?;
        let gy = gy_t.flatten_all()?.to_vec1::<f32>()?;
        // Reference gradients of sum(y · sin(y_ref)) through the plain-tensor path.
        let (xv, wv) = (
            candle_core::Var::from_tensor(&x)?,
            candle_core::Var::from_tensor(&w)?,
        );
        let loss = (depthwise_conv2d_reference(&xv, &wv, cfg)? * &gy_t)?.sum_all()?;
        let grads = loss.backward()?;
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let want = [
            flat(&y)?,
            flat(grads.get(&xv).expect("x grad"))?,
            flat(grads.get(&wv).expect("w grad"))?,
        ];
        for cap in [Cap::Scalar, Cap::Avx2, Cap::All] {
            let got = with_cap(cap, || -> Result<[Vec<f32>; 3]> {
                Ok([
                    forward::<f32>(&g, &xs, &wk)?,
                    grad_input::<f32>(&g, &gy, &wk),
                    grad_weight::<f32>(&g, &xs, &gy),
                ])
            })?;
            for (ours, want) in got.iter().zip(&want) {
                for (a, b) in ours.iter().zip(want) {
                    assert!(
                        (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                        "{cap:?}: {a} vs {b}"
                    );
                }
            }
        }
        Ok(())
    }
}
