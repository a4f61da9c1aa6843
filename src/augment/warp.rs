//! The geometric core: a chain of geometric transforms as stages that map each output pixel to
//! a source position in one go, and the row kernels that sample the source there (bilinear for
//! images, nearest for masks). Flips and integer crops resolve to whole-row copies.

use crate::cpu::Element;

/// What a stage gives a point that falls outside its input canvas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Edge {
    /// The constant (padding, a rotation's corners).
    Fill(f32),
    /// The nearest edge pixel (a resize, as PyTorch's `interpolate`).
    Clamp,
}

/// One geometric transform: the affine map `m` from a pixel of its output canvas to a position
/// in its input canvas of `in_h` by `in_w` pixels (pixel centres at integers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stage {
    pub(crate) m: [f64; 6],
    pub(crate) in_h: usize,
    pub(crate) in_w: usize,
    pub(crate) edge: Edge,
}

impl Stage {
    /// The window of `in_h` by `in_w` starting at `(top, left)` (either may lie outside, the
    /// outside filled with `fill`).
    pub(crate) fn translate(top: i64, left: i64, in_h: usize, in_w: usize, fill: f32) -> Self {
        let m = [1.0, 0.0, left as f64, 0.0, 1.0, top as f64];
        Self {
            m,
            in_h,
            in_w,
            edge: Edge::Fill(fill),
        }
    }

    /// A mirror image left-right (`horizontal`) or top-bottom.
    pub(crate) fn flip(horizontal: bool, in_h: usize, in_w: usize) -> Self {
        let m = if horizontal {
            [-1.0, 0.0, in_w as f64 - 1.0, 0.0, 1.0, 0.0]
        } else {
            [1.0, 0.0, 0.0, 0.0, -1.0, in_h as f64 - 1.0]
        };
        Self {
            m,
            in_h,
            in_w,
            edge: Edge::Fill(0.0),
        }
    }

    /// A bilinear resize of the whole canvas to `out_h` by `out_w` (PyTorch's
    /// `align_corners=False` pixel-centre convention).
    pub(crate) fn resize(in_h: usize, in_w: usize, out_h: usize, out_w: usize) -> Self {
        let sx = in_w as f64 / out_w as f64;
        let sy = in_h as f64 / out_h as f64;
        let m = [sx, 0.0, 0.5 * sx - 0.5, 0.0, sy, 0.5 * sy - 0.5];
        Self {
            m,
            in_h,
            in_w,
            edge: Edge::Clamp,
        }
    }

    /// A rotation by `angle` degrees counter-clockwise about the canvas centre (torchvision's
    /// `rotate` with `expand=False`), corners filled with `fill`.
    pub(crate) fn rotate(angle: f64, in_h: usize, in_w: usize, fill: f32) -> Self {
        let r = (-angle).to_radians();
        let (s, c) = r.sin_cos();
        let (cx, cy) = ((in_w as f64 - 1.0) * 0.5, (in_h as f64 - 1.0) * 0.5);
        // x_in = cx + c (x - cx) + s (y - cy),  y_in = cy - s (x - cx) + c (y - cy)
        let m = [c, s, cx - c * cx - s * cy, -s, c, cy + s * cx - c * cy];
        Self {
            m,
            in_h,
            in_w,
            edge: Edge::Fill(fill),
        }
    }

    #[inline(always)]
    fn map(&self, x: f64, y: f64) -> (f64, f64) {
        let m = &self.m;
        (m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5])
    }

    /// An axis-aligned map by whole pixels (a flip or an integer crop): sampled by copies.
    fn is_integer(&self) -> bool {
        let m = &self.m;
        m[1] == 0.0
            && m[3] == 0.0
            && m[0].abs() == 1.0
            && m[4].abs() == 1.0
            && m[2].fract() == 0.0
            && m[5].fract() == 0.0
    }
}

/// Where an output pixel lands: in the source, or on the fill of a stage.
#[derive(Debug, Clone, Copy)]
enum Loc {
    At(f64, f64),
    Fill(f32),
}

/// Follows `(x, y)` of the final canvas back through `stages` (first = applied to the source).
/// A point leaving an intermediate canvas takes that stage's fill (or is clamped); positions in
/// the source are left to the sampler, which handles its edge.
#[inline(always)]
fn locate(stages: &[Stage], x: f64, y: f64) -> Loc {
    let (mut px, mut py) = (x, y);
    for (k, st) in stages.iter().enumerate().rev() {
        (px, py) = st.map(px, py);
        if k == 0 {
            break;
        }
        let (w, h) = (st.in_w as f64, st.in_h as f64);
        match st.edge {
            Edge::Clamp => {
                px = px.clamp(0.0, w - 1.0);
                py = py.clamp(0.0, h - 1.0);
            }
            Edge::Fill(v) => {
                if px < -0.5 || py < -0.5 || px >= w - 0.5 || py >= h - 0.5 {
                    return Loc::Fill(v);
                }
            }
        }
    }
    Loc::At(px, py)
}

/// One output pixel's recipe: `Σ w[k] src[idx[k]] * scale + add`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tap {
    idx: [u32; 4],
    w: [f32; 4],
    scale: f32,
    add: f32,
}

/// A run of one output row: `len` pixels copied from source `start` stepping `step` (±1), or
/// all set to a fill.
#[derive(Debug, Clone, Copy)]
enum Run {
    Copy {
        x0: usize,
        len: usize,
        start: usize,
        step: isize,
    },
    Fill {
        x0: usize,
        len: usize,
        v: f32,
    },
}

/// Per-worker scratch of the row kernels.
#[derive(Default)]
pub(crate) struct WarpScratch {
    taps: Vec<Tap>,
    runs: Vec<Run>,
}

/// Samples the source image `src` (`c` planes of `h` by `w`) through `stages` into `out` (`c`
/// planes of `oh` by `ow`), bilinearly; torchvision's fill rule at the source edge
/// (`(S - fill) M + fill` with `M` the in-bounds weight).
#[allow(clippy::too_many_arguments)]
pub(crate) fn warp_image<T: Element>(
    src: &[T],
    (c, h, w): (usize, usize, usize),
    stages: &[Stage],
    out: &mut [f32],
    (oh, ow): (usize, usize),
    scratch: &mut WarpScratch,
) {
    let plane = h * w;
    let oplane = oh * ow;
    if stages.iter().all(Stage::is_integer) {
        for y in 0..oh {
            integer_runs(stages, y, ow, (h, w), &mut scratch.runs);
            for ch in 0..c {
                let s = &src[ch * plane..(ch + 1) * plane];
                let o = &mut out[ch * oplane + y * ow..ch * oplane + (y + 1) * ow];
                for run in &scratch.runs {
                    match *run {
                        Run::Fill { x0, len, v } => o[x0..x0 + len].fill(v),
                        Run::Copy {
                            x0,
                            len,
                            start,
                            step,
                        } => {
                            let o = &mut o[x0..x0 + len];
                            if step > 0 {
                                for (d, v) in o.iter_mut().zip(&s[start..start + len]) {
                                    *d = v.to_f32();
                                }
                            } else {
                                let seg = &s[start + 1 - len..start + 1];
                                for (d, v) in o.iter_mut().zip(seg.iter().rev()) {
                                    *d = v.to_f32();
                                }
                            }
                        }
                    }
                }
            }
        }
        return;
    }
    scratch.taps.resize(ow, Tap::default());
    for y in 0..oh {
        for (x, tap) in scratch.taps.iter_mut().enumerate() {
            *tap = bilinear_tap(stages, x, y, (h, w));
        }
        for ch in 0..c {
            let s = &src[ch * plane..(ch + 1) * plane];
            let o = &mut out[ch * oplane + y * ow..ch * oplane + (y + 1) * ow];
            for (d, t) in o.iter_mut().zip(&scratch.taps) {
                let mut acc = 0.0f32;
                for k in 0..4 {
                    acc += t.w[k] * s[t.idx[k] as usize].to_f32();
                }
                *d = acc * t.scale + t.add;
            }
        }
    }
}

/// Row `y` of an all-integer chain as copy and fill runs.
fn integer_runs(
    stages: &[Stage],
    y: usize,
    ow: usize,
    (h, w): (usize, usize),
    runs: &mut Vec<Run>,
) {
    runs.clear();
    let src_fill = match stages.first().map(|s| s.edge) {
        Some(Edge::Fill(v)) => v,
        _ => 0.0,
    };
    for x in 0..ow {
        let pixel = match locate(stages, x as f64, y as f64) {
            Loc::Fill(v) => Err(v),
            Loc::At(px, py) => {
                let (px, py) = match stages.first().map(|s| s.edge) {
                    Some(Edge::Clamp) => {
                        (px.clamp(0.0, w as f64 - 1.0), py.clamp(0.0, h as f64 - 1.0))
                    }
                    _ => (px, py),
                };
                if px < 0.0 || py < 0.0 || px >= w as f64 || py >= h as f64 {
                    Err(src_fill)
                } else {
                    Ok(py as usize * w + px as usize)
                }
            }
        };
        // Extend the last run when this pixel continues it.
        match (runs.last_mut(), pixel) {
            (Some(Run::Fill { len, v, .. }), Err(f)) if v.to_bits() == f.to_bits() => *len += 1,
            (
                Some(Run::Copy {
                    len, start, step, ..
                }),
                Ok(i),
            ) if (*len == 1 && (i == *start + 1 || i + 1 == *start))
                || (*len > 1 && i as isize == *start as isize + *step * *len as isize) =>
            {
                if *len == 1 {
                    *step = if i > *start { 1 } else { -1 };
                }
                *len += 1;
            }
            (_, Err(v)) => runs.push(Run::Fill { x0: x, len: 1, v }),
            (_, Ok(start)) => runs.push(Run::Copy {
                x0: x,
                len: 1,
                start,
                step: 1,
            }),
        }
    }
}

/// The bilinear recipe of output pixel `(x, y)`.
#[inline(always)]
fn bilinear_tap(stages: &[Stage], x: usize, y: usize, (h, w): (usize, usize)) -> Tap {
    let (px, py) = match locate(stages, x as f64, y as f64) {
        Loc::Fill(v) => {
            return Tap {
                add: v,
                ..Tap::default()
            }
        }
        Loc::At(px, py) => (px, py),
    };
    let edge = stages.first().map_or(Edge::Clamp, |s| s.edge);
    let (px, py) = match edge {
        Edge::Clamp => (px.clamp(0.0, w as f64 - 1.0), py.clamp(0.0, h as f64 - 1.0)),
        Edge::Fill(_) => (px, py),
    };
    let (x0, y0) = (px.floor(), py.floor());
    let (fx, fy) = ((px - x0) as f32, (py - y0) as f32);
    let (x0, y0) = (x0 as i64, y0 as i64);
    let corners = [(x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)];
    let weights = [
        (1.0 - fx) * (1.0 - fy),
        fx * (1.0 - fy),
        (1.0 - fx) * fy,
        fx * fy,
    ];
    let mut tap = Tap {
        scale: 1.0,
        ..Tap::default()
    };
    let mut inside = 0.0f32;
    let mut all_in = true;
    for (k, (&(cx, cy), &wt)) in corners.iter().zip(&weights).enumerate() {
        if cx >= 0 && cy >= 0 && (cx as usize) < w && (cy as usize) < h {
            tap.idx[k] = (cy as usize * w + cx as usize) as u32;
            tap.w[k] = wt;
            inside += wt;
        } else if wt != 0.0 {
            all_in = false;
        }
    }
    if let (Edge::Fill(v), false) = (edge, all_in) {
        tap.scale = inside;
        tap.add = (1.0 - inside) * v;
    }
    tap
}

/// Samples the mask `src` (`c` planes of `h` by `w`) through `stages` into `out`, taking the
/// nearest source pixel (ties to even, as `grid_sample`'s nearest mode) and `fill` outside.
pub(crate) fn warp_mask(
    src: &[f32],
    (c, h, w): (usize, usize, usize),
    stages: &[Stage],
    out: &mut [f32],
    (oh, ow): (usize, usize),
    fill: f32,
) {
    let (plane, oplane) = (h * w, oh * ow);
    let edge = stages.first().map_or(Edge::Clamp, |s| s.edge);
    for y in 0..oh {
        for x in 0..ow {
            let at = match locate(stages, x as f64, y as f64) {
                Loc::Fill(_) => None,
                Loc::At(px, py) => {
                    let (px, py) = match edge {
                        Edge::Clamp => {
                            (px.clamp(0.0, w as f64 - 1.0), py.clamp(0.0, h as f64 - 1.0))
                        }
                        Edge::Fill(_) => (px, py),
                    };
                    let (px, py) = (px.round_ties_even(), py.round_ties_even());
                    (px >= 0.0 && py >= 0.0 && px < w as f64 && py < h as f64)
                        .then(|| py as usize * w + px as usize)
                }
            };
            for ch in 0..c {
                out[ch * oplane + y * ow + x] = match at {
                    Some(i) => src[ch * plane + i],
                    None => fill,
                };
            }
        }
    }
}
