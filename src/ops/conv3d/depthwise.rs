//! Depthwise path (one input channel per group): direct loops.

use super::cpu::*;
use super::*;
use crate::cpu::simd::axpy;
use crate::cpu::{Isa, Kernel, Level};

/// `sum_j y[j] * x[j]` with 8 independent partial sums.
#[inline(always)]
fn dot<S: Isa>(y: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (yc, xc) = (y.chunks_exact(8), x[..y.len()].chunks_exact(8));
    let (yr, xr) = (yc.remainder(), xc.remainder());
    for (a, b) in yc.zip(xc) {
        for ((l, a), b) in acc.iter_mut().zip(a).zip(b) {
            *l = S::madd(*a, *b, *l);
        }
    }
    for (a, b) in yr.iter().zip(xr) {
        acc[0] = S::madd(*a, *b, acc[0]);
    }
    acc.iter().sum()
}

/// Offset in the padded volume of the input row that output row `(oz, oy)` reads at taps
/// `(kz, ky, ·)`; tap `kx` then reads `tap_offsets(g)[kx]` further on, contiguously.
#[inline(always)]
fn row_base(g: &Geom, oz: usize, oy: usize, kz: usize, ky: usize) -> usize {
    let [_, hp, row_len] = padded(g);
    let (s, dl) = (g.stride, g.dilation);
    ((oz * s + kz * dl) * hp + oy * s + ky * dl) * row_len
}

/// Output columns `c0..c0 + L` of output row `(oz, oy)`, summed over all taps in `L`
/// accumulators that stay in registers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fwd_block<S: Isa, const L: usize>(
    g: &Geom,
    offs: &[usize],
    xv: &[f32],
    wk: &[f32],
    oz: usize,
    oy: usize,
    c0: usize,
    out: &mut [f32],
) {
    let [kd, kh, _] = g.k;
    let mut acc = [0f32; L];
    for kz in 0..kd {
        for ky in 0..kh {
            let base = row_base(g, oz, oy, kz, ky) + c0;
            let wrow = &wk[(kz * kh + ky) * offs.len()..][..offs.len()];
            for (a, off) in wrow.iter().zip(offs) {
                let x = &xv[base + off..base + off + L];
                for (acc, x) in acc.iter_mut().zip(x) {
                    *acc = S::madd(*a, *x, *acc);
                }
            }
        }
    }
    out[..L].copy_from_slice(&acc);
}

/// One output volume from one padded input volume: `yv = w ⋆ xv`, row by row in blocks of
/// 32 and 8 columns held in registers, the rest through an AXPY per tap.
#[inline(always)]
fn fwd_volume<S: Isa>(g: &Geom, offs: &[usize], xv: &[f32], wk: &[f32], yv: &mut [f32]) {
    let [od, oh, ow] = g.o;
    let [kd, kh, _] = g.k;
    for oz in 0..od {
        for oy in 0..oh {
            let yrow = &mut yv[(oz * oh + oy) * ow..(oz * oh + oy + 1) * ow];
            let mut c0 = 0;
            while c0 + 32 <= ow {
                fwd_block::<S, 32>(g, offs, xv, wk, oz, oy, c0, &mut yrow[c0..]);
                c0 += 32;
            }
            while c0 + 8 <= ow {
                fwd_block::<S, 8>(g, offs, xv, wk, oz, oy, c0, &mut yrow[c0..]);
                c0 += 8;
            }
            if c0 < ow {
                let rest = &mut yrow[c0..];
                for kz in 0..kd {
                    for ky in 0..kh {
                        let base = row_base(g, oz, oy, kz, ky) + c0;
                        let wrow = &wk[(kz * kh + ky) * offs.len()..][..offs.len()];
                        for (a, off) in wrow.iter().zip(offs) {
                            axpy::<S>(rest, &xv[base + off..], *a);
                        }
                    }
                }
            }
        }
    }
}

/// Adds one output channel's contribution to one padded input-gradient volume:
/// `gxv += w ⋆ᵀ gyv`.
#[inline(always)]
fn grad_input_volume<S: Isa>(g: &Geom, offs: &[usize], gyv: &[f32], wk: &[f32], gxv: &mut [f32]) {
    let [od, oh, ow] = g.o;
    let [kd, kh, _] = g.k;
    for oz in 0..od {
        for oy in 0..oh {
            let gyrow = &gyv[(oz * oh + oy) * ow..(oz * oh + oy + 1) * ow];
            for kz in 0..kd {
                for ky in 0..kh {
                    let base = row_base(g, oz, oy, kz, ky);
                    let wrow = &wk[(kz * kh + ky) * offs.len()..][..offs.len()];
                    for (a, off) in wrow.iter().zip(offs) {
                        axpy::<S>(&mut gxv[base + off..base + off + ow], gyrow, *a);
                    }
                }
            }
        }
    }
}

/// One output channel's weight gradient from one batch item (padded input volume `xv`),
/// accumulated in f64 across rows: `gw += gyv ⋆ xv`.
#[inline(always)]
fn grad_weight_volume<S: Isa>(g: &Geom, offs: &[usize], xv: &[f32], gyv: &[f32], gw: &mut [f64]) {
    let [od, oh, ow] = g.o;
    let [kd, kh, _] = g.k;
    for oz in 0..od {
        for oy in 0..oh {
            let gyrow = &gyv[(oz * oh + oy) * ow..(oz * oh + oy + 1) * ow];
            for kz in 0..kd {
                for ky in 0..kh {
                    let base = row_base(g, oz, oy, kz, ky);
                    let grow = &mut gw[(kz * kh + ky) * offs.len()..][..offs.len()];
                    for (acc, off) in grow.iter_mut().zip(offs) {
                        *acc += dot::<S>(gyrow, &xv[base + off..]) as f64;
                    }
                }
            }
        }
    }
}

/// Which volume function a [`Volume`] runs.
#[derive(Clone, Copy)]
enum Pass {
    Forward,
    GradInput,
}

/// One volume of the forward or grad-input pass: `out += taps(a) · b` ([`fwd_volume`],
/// [`grad_input_volume`]), at the best SIMD level.
struct Volume<'a> {
    pass: Pass,
    g: &'a Geom,
    offs: &'a [usize],
    a: &'a [f32],
    wk: &'a [f32],
    out: &'a mut [f32],
}

impl Kernel for Volume<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let Volume {
            pass,
            g,
            offs,
            a,
            wk,
            out,
        } = self;
        match pass {
            Pass::Forward => fwd_volume::<S>(g, offs, a, wk, out),
            Pass::GradInput => grad_input_volume::<S>(g, offs, a, wk, out),
        }
    }
}

/// One volume's weight gradient ([`grad_weight_volume`]) at the best SIMD level.
struct WeightVolume<'a> {
    g: &'a Geom,
    offs: &'a [usize],
    xv: &'a [f32],
    gyv: &'a [f32],
    acc: &'a mut [f64],
}

impl Kernel for WeightVolume<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        grad_weight_volume::<S>(self.g, self.offs, self.xv, self.gyv, self.acc)
    }
}

pub(super) fn forward(g: &Geom, x: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    let (cog, taps, vol_p, p_vol) = (g.cog(), g.taps(), padded_vol(g), g.out_vol());
    let offs = tap_offsets(g);
    let level = Level::detect();
    let xp = pad_input(g, x)?;
    let mut y = try_zeros::<f32>(g.names()[0], g.b * g.cout * p_vol)?;
    // One task per input volume and the `cog` output volumes it feeds (one input channel
    // per group: group = input channel).
    par_tasks(&mut y, cog * p_vol, |idx, ys, _: &mut ()| {
        let xv = &xp[idx * vol_p..(idx + 1) * vol_p];
        let ci = idx % g.cin;
        for (j, yv) in ys.chunks_exact_mut(p_vol).enumerate() {
            let co = ci * cog + j;
            let wk = &w[co * taps..(co + 1) * taps];
            let (pass, offs, a, out) = (Pass::Forward, &offs[..], xv, yv);
            level.run(Volume {
                pass,
                g,
                offs,
                a,
                wk,
                out,
            });
        }
    });
    Ok(y)
}

pub(super) fn grad_input(g: &Geom, gy: &[f32], w: &[f32]) -> Vec<f32> {
    let (cog, taps, vol_p, p_vol) = (g.cog(), g.taps(), padded_vol(g), g.out_vol());
    let offs = tap_offsets(g);
    let level = Level::detect();
    let mut gxp = vec![0f32; g.b * g.cin * vol_p];
    // One task per (padded) input volume: it gathers from the `cog` output channels it feeds.
    par_tasks(&mut gxp, vol_p, |idx, gxv, _: &mut ()| {
        let gys = &gy[idx * cog * p_vol..(idx + 1) * cog * p_vol];
        let ci = idx % g.cin;
        for (j, gyv) in gys.chunks_exact(p_vol).enumerate() {
            let co = ci * cog + j;
            let wk = &w[co * taps..(co + 1) * taps];
            let (pass, offs, a, out) = (Pass::GradInput, &offs[..], gyv, &mut gxv[..]);
            level.run(Volume {
                pass,
                g,
                offs,
                a,
                wk,
                out,
            });
        }
    });
    crop_input(g, &gxp)
}

pub(super) fn grad_weight(g: &Geom, x: &[f32], gy: &[f32]) -> Result<Vec<f32>> {
    let (cog, taps, vol_p, p_vol) = (g.cog(), g.taps(), padded_vol(g), g.out_vol());
    let offs = tap_offsets(g);
    let level = Level::detect();
    let xp = pad_input(g, x)?;
    let mut gw = vec![0f32; g.cout * taps];
    par_tasks(&mut gw, taps, |co, gwc, acc: &mut Vec<f64>| {
        let ci = co / cog;
        acc.clear();
        acc.resize(taps, 0.0);
        for bi in 0..g.b {
            let xv = &xp[(bi * g.cin + ci) * vol_p..(bi * g.cin + ci + 1) * vol_p];
            let gyv = &gy[(bi * g.cout + co) * p_vol..(bi * g.cout + co + 1) * p_vol];
            let (offs, acc) = (&offs[..], &mut acc[..]);
            level.run(WeightVolume {
                g,
                offs,
                xv,
                gyv,
                acc,
            });
        }
        for (o, a) in gwc.iter_mut().zip(acc.iter()) {
            *o = *a as f32;
        }
    });
    Ok(gw)
}
