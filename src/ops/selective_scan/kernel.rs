//! What the forward and backward kernels share: the prepared inputs, the row partition and the
//! chunk buffers.

use super::{Geom, MAX_NB, TASK_STEPS, W};
use crate::cpu::lanes::Blk;
use crate::cpu::par_parts;

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// The read-only inputs in kernel layout.
pub(super) struct Prepared<'a> {
    pub(super) u: &'a [f32],
    pub(super) delta: &'a [f32],
    pub(super) z: &'a [f32],
    pub(super) dskip: &'a [f32],
    pub(super) bias: &'a [f32],
    /// `a` and `a · log2(e)` as `(D, nbk)` blocks, zero-padded.
    pub(super) a: Vec<Blk>,
    pub(super) a2: Vec<Blk>,
    /// `b`, `c` transposed to `(B, G, L, nbk)` blocks, zero-padded.
    pub(super) bt: Vec<Blk>,
    pub(super) ct: Vec<Blk>,
}

/// `(B, G, N, L)` values → `(B, G, L, nbk)` blocks (states padded with zeros).
fn transpose_bc(gm: &Geom, v: &[f32]) -> Vec<Blk> {
    let (l, n, nbk) = (gm.l, gm.n, gm.nbk);
    let mut out = vec![[0f32; W]; gm.b * gm.g * l * nbk];
    for (src, dst) in v.chunks_exact(n * l).zip(out.chunks_exact_mut(l * nbk)) {
        for s in 0..n {
            let row = &src[s * l..(s + 1) * l];
            for (t, &val) in row.iter().enumerate() {
                dst[t * nbk + s / W][s % W] = val;
            }
        }
    }
    out
}

pub(super) fn prepare<'a>(
    gm: &Geom,
    u: &'a [f32],
    delta: &'a [f32],
    rest: &'a [f32],
) -> Prepared<'a> {
    let [zo, bo, co, ao, dof, bio, end] = gm.offsets();
    let (n, nbk) = (gm.n, gm.nbk);
    let mut a = vec![[0f32; W]; gm.d * nbk];
    for (ch, row) in rest[ao..dof].chunks_exact(n).enumerate() {
        for (s, &v) in row.iter().enumerate() {
            a[ch * nbk + s / W][s % W] = v;
        }
    }
    let a2 = a
        .iter()
        .map(|b| b.map(|v| v * std::f32::consts::LOG2_E))
        .collect();
    Prepared {
        u,
        delta,
        z: &rest[zo..bo],
        dskip: &rest[dof..bio],
        bias: &rest[bio..end],
        a,
        a2,
        bt: transpose_bc(gm, &rest[bo..co]),
        ct: transpose_bc(gm, &rest[co..ao]),
    }
}

/// Rows per task: about `TASK_STEPS` time steps, at least one row.
pub(super) fn rows_per_task(gm: &Geom) -> usize {
    (TASK_STEPS / gm.l).clamp(1, gm.rows().div_ceil(crate::cpu::num_threads()).max(1))
}

/// Runs `f(first_row, outs, scratch)` over tasks of `per_task` rows on
/// [`par_parts`]; `outs[k]` is the task's part of output `k`, which holds `stride_k` values per
/// row (0: absent, an empty slice). Returns the per-worker scratch states.
pub(super) fn par_rows<S: Default + Send, const K: usize>(
    rows: usize,
    per_task: usize,
    outs: [(&mut [f32], usize); K],
    f: impl Fn(usize, &mut [&mut [f32]; K], &mut S) + Sync + Send,
) -> Vec<S> {
    let parts = outs.map(|(buf, stride)| match stride {
        0 => Vec::new(),
        _ => buf.chunks_mut(stride * per_task).collect(),
    });
    par_parts(rows.div_ceil(per_task), parts, |i, outs, scr: &mut S| {
        f(i * per_task, outs, scr)
    })
}

/// Per-worker chunk buffers of the group kernels (`chunk · MAX_NB` blocks, `chunk` rows).
#[derive(Default)]
pub(super) struct ChunkScratch {
    pub(super) es: Vec<Blk>,
    pub(super) xs: Vec<Blk>,
    pub(super) accs: Vec<Blk>,
    pub(super) accs2: Vec<Blk>,
    pub(super) s1: Vec<f32>,
    pub(super) s2: Vec<f32>,
}

impl ChunkScratch {
    pub(super) fn size(&mut self, chunk: usize) {
        self.es.resize(chunk * MAX_NB, [0.0; W]);
        self.xs.resize(chunk * MAX_NB, [0.0; W]);
        self.accs.resize(chunk, [0.0; W]);
        self.accs2.resize(chunk, [0.0; W]);
        self.s1.resize(chunk, 0.0);
        self.s2.resize(chunk, 0.0);
    }
}
