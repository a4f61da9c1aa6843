//! CPU kernels of the two gradients (input and weight).

use super::forward::{axpy, load_padded, madd, ntaps, store_unpadded, weights_f32, Plan, Scratch};
use super::Geom;
use crate::ops::cpu::{par_tasks, widen, Element};
use crate::ops::simd::{detect_simd, Simd};

// --- gradient wrt the input -----------------------------------------------------------------

/// Scatters the `m` output-gradient planes of one input channel into its padded gradient.
// Index loops over `0..NT` on purpose: a compile-time trip count unrolls the taps.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn gin_planes<const NT: usize, const FMA: bool>(
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
                axpy::<FMA>(&mut gpad[off..off + g.wo], grow, wj[t]);
            }
        }
    }
}

/// One grad-input task: `m` output-gradient planes `gy`, input-gradient plane `gin`.
#[inline(always)]
fn gin_task<T: Element, const FMA: bool>(
    g: &Geom,
    plan: &Plan,
    gy: &[T],
    wk: &[f32],
    gin: &mut [T],
    scr: &mut Scratch,
) {
    let Scratch {
        gpad, row, wide, ..
    } = scr;
    let gyf: &[f32] = match T::as_f32(gy) {
        Some(gy) => gy,
        None => {
            widen(gy, wide);
            wide
        }
    };
    gpad.clear();
    gpad.resize(plan.len, 0.0);
    match g.taps() {
        9 => gin_planes::<9, FMA>(g, plan, gyf, wk, gpad),
        _ => gin_planes::<0, FMA>(g, plan, gyf, wk, gpad),
    }
    store_unpadded(g, plan, gpad, gin, row);
}

/// [`gin_task`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA (the caller checked `detect_simd() == Simd::Avx2Fma`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gin_task_avx2<T: Element>(
    g: &Geom,
    plan: &Plan,
    gy: &[T],
    wk: &[f32],
    gin: &mut [T],
    scr: &mut Scratch,
) {
    gin_task::<T, true>(g, plan, gy, wk, gin, scr)
}

pub(super) fn grad_input<T: Element>(g: &Geom, gy: &[T], w: &[T]) -> Vec<T> {
    let simd = detect_simd();
    let plan = Plan::new(g);
    let wk = weights_f32(w);
    let (inp, outp, mk) = (g.in_plane(), g.out_plane(), g.m * g.taps());
    let mut gin = vec![T::from_f32(0.0); g.b * g.c * inp];
    par_tasks(&mut gin, inp, |i, gin, scr: &mut Scratch| {
        let gy = &gy[i * g.m * outp..(i + 1) * g.m * outp];
        let c = i % g.c;
        let wk = &wk[c * mk..(c + 1) * mk];
        match simd {
            // SAFETY: `detect_simd` returned `Avx2Fma` only after detecting AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2Fma => unsafe { gin_task_avx2::<T>(g, &plan, gy, wk, gin, scr) },
            Simd::Fma => gin_task::<T, true>(g, &plan, gy, wk, gin, scr),
            Simd::Portable => gin_task::<T, false>(g, &plan, gy, wk, gin, scr),
        }
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
fn gw_plane<const NT: usize, const FMA: bool>(
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
                    a16[l] = madd::<FMA>(gc[l], xc[l], a16[l]);
                }
            }
            let mut g8 = g16.remainder().chunks_exact(8);
            let mut x8 = x16.remainder().chunks_exact(8);
            for (gc, xc) in (&mut g8).zip(&mut x8) {
                for l in 0..8 {
                    a8[l] = madd::<FMA>(gc[l], xc[l], a8[l]);
                }
            }
            for (gv, xv) in g8.remainder().iter().zip(x8.remainder()) {
                tail = madd::<FMA>(*gv, *xv, tail);
            }
        }
        acc[t] += a16.iter().sum::<f32>() + a8.iter().sum::<f32>() + tail;
    }
}

/// One grad-weight task: input channel `c`, writing its `m` output channels' gradients `gw`.
#[inline(always)]
fn gw_task<T: Element, const FMA: bool>(
    g: &Geom,
    plan: &Plan,
    x: &[T],
    gy: &[T],
    c: usize,
    gw: &mut [T],
    scr: &mut Scratch,
) {
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
            let gpf: &[f32] = match T::as_f32(gp) {
                Some(gp) => gp,
                None => {
                    widen(gp, wide);
                    wide
                }
            };
            match kk {
                9 => gw_plane::<9, FMA>(g, plan, pad, gpf, accj),
                _ => gw_plane::<0, FMA>(g, plan, pad, gpf, accj),
            }
        }
    }
    for (d, s) in gw.iter_mut().zip(acc.iter()) {
        *d = T::from_f32(*s);
    }
}

/// [`gw_task`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA (the caller checked `detect_simd() == Simd::Avx2Fma`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gw_task_avx2<T: Element>(
    g: &Geom,
    plan: &Plan,
    x: &[T],
    gy: &[T],
    c: usize,
    gw: &mut [T],
    scr: &mut Scratch,
) {
    gw_task::<T, true>(g, plan, x, gy, c, gw, scr)
}

pub(super) fn grad_weight<T: Element>(g: &Geom, x: &[T], gy: &[T]) -> Vec<T> {
    let simd = detect_simd();
    let plan = Plan::new(g);
    let mut gw = vec![T::from_f32(0.0); g.cm() * g.taps()];
    par_tasks(
        &mut gw,
        g.m * g.taps(),
        |c, gw, scr: &mut Scratch| match simd {
            // SAFETY: `detect_simd` returned `Avx2Fma` only after detecting AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2Fma => unsafe { gw_task_avx2::<T>(g, &plan, x, gy, c, gw, scr) },
            Simd::Fma => gw_task::<T, true>(g, &plan, x, gy, c, gw, scr),
            Simd::Portable => gw_task::<T, false>(g, &plan, x, gy, c, gw, scr),
        },
    );
    gw
}

#[cfg(test)]
mod tests {
    use super::super::forward::fwd_task;
    use super::super::*;
    use super::*;
    use crate::Result;
    use candle_core::{Device, Tensor};

    #[test]
    fn portable_path_matches_reference() -> Result<()> {
        // The dispatched path is covered by the integration tests; check the fallback here.
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 9, 7), &dev)?;
        let w = Tensor::randn(0f32, 1., (6, 1, 3, 3), &dev)?;
        let cfg = DepthwiseConv2dConfig::default().with_stride(2);
        let g = geom2d(&x, &w, cfg, false)?;
        let plan = Plan::new(&g);
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let wk = w.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; g.b * g.cm() * g.out_plane()];
        let mut scr = Scratch::default();
        for (i, (o, xp)) in out
            .chunks_exact_mut(g.m * g.out_plane())
            .zip(xs.chunks_exact(g.in_plane()))
            .enumerate()
        {
            let c = i % g.c;
            let wc = &wk[c * g.m * 9..(c + 1) * g.m * 9];
            fwd_task::<f32, false>(&g, &plan, xp, wc, o, &mut scr);
        }
        let r = depthwise_conv2d_reference(&x, &w, cfg)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for (a, b) in out.iter().zip(&r) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }

        // Both gradients: the fallback against the dispatched kernels.
        let gy: Vec<f32> = (0..out.len())
            .map(|i| ((i * 7) % 11) as f32 - 5.0)
            .collect();
        let mut gin = vec![0f32; xs.len()];
        for (i, (gi, gp)) in gin
            .chunks_exact_mut(g.in_plane())
            .zip(gy.chunks_exact(g.m * g.out_plane()))
            .enumerate()
        {
            let c = i % g.c;
            let wc = &wk[c * g.m * 9..(c + 1) * g.m * 9];
            gin_task::<f32, false>(&g, &plan, gp, wc, gi, &mut scr);
        }
        let mut gw = vec![0f32; wk.len()];
        for (c, gc) in gw.chunks_exact_mut(g.m * 9).enumerate() {
            gw_task::<f32, false>(&g, &plan, &xs, &gy, c, gc, &mut scr);
        }
        for (ours, fast) in [
            (&gin, grad_input::<f32>(&g, &gy, &wk)),
            (&gw, grad_weight::<f32>(&g, &xs, &gy)),
        ] {
            for (a, b) in ours.iter().zip(&fast) {
                assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
        Ok(())
    }
}
