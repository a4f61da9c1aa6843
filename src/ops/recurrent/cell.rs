//! The two cells' per-row arithmetic: one time step of one sample, forward and backward, on
//! f32 rows. The driver ([`super::kernel`]) owns the matrix products and the time loop; a cell
//! only sees rows of gates.

use crate::cpu::math::{sigmoid, tanh};

/// One recurrent cell's gate arithmetic. Rows: `x` and `hp` hold the input projection and the
/// hidden projection (`W_hh h + b_hh`) of `GATES · H` values; `act` the saved gate activations
/// (`GATES · H`); `aux` one more saved row of `H` (the LSTM's previous cell state, the GRU's
/// `W_hn h + b_hn`).
pub(super) trait Cell {
    /// Gates per hidden unit: 4 (LSTM: i, f, g, o) or 3 (GRU: r, z, n).
    const GATES: usize;
    /// Whether the cell carries a second state `c` (LSTM).
    const HAS_C: bool;

    /// One forward step: updates `h` (and `c`) in place, saves `act` and `aux`.
    fn forward(
        x: &[f32],
        hp: &[f32],
        h: &mut [f32],
        c: &mut [f32],
        act: &mut [f32],
        aux: &mut [f32],
    );

    /// One backward step. On entry `dh` is the whole gradient of the step's output state and
    /// `dc` that of its cell state; on exit they hold the parts of the previous states' gradients
    /// that do not flow through `hp` (the driver adds `dhp · W_hh` to `dh`). Writes the
    /// gradients of the input projection `dx` and of the hidden projection `dhp`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        act: &[f32],
        aux: &[f32],
        h_prev: &[f32],
        dh: &mut [f32],
        dc: &mut [f32],
        dx: &mut [f32],
        dhp: &mut [f32],
    );
}

/// The `G` gate rows of `n` values each in `row` (exact lengths, so that the loops over them
/// run without bounds checks and vectorise).
#[inline(always)]
fn gates<const G: usize>(row: &[f32], n: usize) -> [&[f32]; G] {
    std::array::from_fn(|k| &row[k * n..(k + 1) * n])
}

/// PyTorch's LSTM cell: gates $i, f, g, o$ in that order,
/// $c^\prime = f \odot c + i \odot g$, $h^\prime = o \odot \tanh c^\prime$.
pub(super) struct LstmCell;

impl Cell for LstmCell {
    const GATES: usize = 4;
    const HAS_C: bool = true;

    #[inline(always)]
    fn forward(
        x: &[f32],
        hp: &[f32],
        h: &mut [f32],
        c: &mut [f32],
        act: &mut [f32],
        aux: &mut [f32],
    ) {
        let n = h.len();
        let (c, aux) = (&mut c[..n], &mut aux[..n]);
        let (ai, rest) = act.split_at_mut(n);
        let (af, rest) = rest.split_at_mut(n);
        let (ag, ao) = rest.split_at_mut(n);
        let (ao, [xi, xf, xg, xo], [hi, hf, hg, ho]) = (&mut ao[..n], gates(x, n), gates(hp, n));
        for j in 0..n {
            let i = sigmoid(xi[j] + hi[j]);
            let f = sigmoid(xf[j] + hf[j]);
            let g = tanh(xg[j] + hg[j]);
            let o = sigmoid(xo[j] + ho[j]);
            let cp = c[j];
            let cn = f * cp + i * g;
            aux[j] = cp;
            c[j] = cn;
            h[j] = o * tanh(cn);
            (ai[j], af[j], ag[j], ao[j]) = (i, f, g, o);
        }
    }

    #[inline(always)]
    fn backward(
        act: &[f32],
        aux: &[f32],
        _h_prev: &[f32],
        dh: &mut [f32],
        dc: &mut [f32],
        dx: &mut [f32],
        dhp: &mut [f32],
    ) {
        let n = dh.len();
        let [ai, af, ag, ao] = gates(act, n);
        let (dc, aux) = (&mut dc[..n], &aux[..n]);
        let (di, rest) = dx.split_at_mut(n);
        let (df, rest) = rest.split_at_mut(n);
        let (dg, dout) = rest.split_at_mut(n);
        let dout = &mut dout[..n];
        for j in 0..n {
            let (i, f, g, o, cp) = (ai[j], af[j], ag[j], ao[j], aux[j]);
            let tc = tanh(f * cp + i * g);
            let dhj = dh[j];
            let dcn = dc[j] + dhj * o * (1.0 - tc * tc);
            di[j] = dcn * g * i * (1.0 - i);
            df[j] = dcn * cp * f * (1.0 - f);
            dg[j] = dcn * i * (1.0 - g * g);
            dout[j] = dhj * tc * o * (1.0 - o);
            dc[j] = dcn * f;
            dh[j] = 0.0;
        }
        dhp.copy_from_slice(dx);
    }
}

/// PyTorch's GRU cell: gates $r, z, n$ in that order,
/// $n = \tanh(x_n + r \odot (W_{hn} h + b_{hn}))$, $h^\prime = (1 - z) \odot n + z \odot h$.
pub(super) struct GruCell;

impl Cell for GruCell {
    const GATES: usize = 3;
    const HAS_C: bool = false;

    #[inline(always)]
    fn forward(
        x: &[f32],
        hp: &[f32],
        h: &mut [f32],
        _c: &mut [f32],
        act: &mut [f32],
        aux: &mut [f32],
    ) {
        let n = h.len();
        let aux = &mut aux[..n];
        let (ar, rest) = act.split_at_mut(n);
        let (az, an) = rest.split_at_mut(n);
        let an = &mut an[..n];
        let ([xr, xz, xn], [hr, hz, hn]) = (gates(x, n), gates(hp, n));
        for j in 0..n {
            let r = sigmoid(xr[j] + hr[j]);
            let z = sigmoid(xz[j] + hz[j]);
            let hn = hn[j];
            let nn = tanh(xn[j] + r * hn);
            aux[j] = hn;
            h[j] = (1.0 - z) * nn + z * h[j];
            (ar[j], az[j], an[j]) = (r, z, nn);
        }
    }

    #[inline(always)]
    fn backward(
        act: &[f32],
        aux: &[f32],
        h_prev: &[f32],
        dh: &mut [f32],
        _dc: &mut [f32],
        dx: &mut [f32],
        dhp: &mut [f32],
    ) {
        let n = dh.len();
        let [ar, az, an] = gates(act, n);
        let (aux, h_prev) = (&aux[..n], &h_prev[..n]);
        let (dxr, rest) = dx.split_at_mut(n);
        let (dxz, dxn) = rest.split_at_mut(n);
        let (dhr, rest) = dhp.split_at_mut(n);
        let (dhz, dhn) = rest.split_at_mut(n);
        let (dxn, dhn) = (&mut dxn[..n], &mut dhn[..n]);
        for j in 0..n {
            let (r, z, nn, hn) = (ar[j], az[j], an[j], aux[j]);
            let dhj = dh[j];
            let dpre = dhj * (1.0 - z) * (1.0 - nn * nn);
            let dr = dpre * hn * r * (1.0 - r);
            let dz = dhj * (h_prev[j] - nn) * z * (1.0 - z);
            (dxr[j], dxz[j], dxn[j]) = (dr, dz, dpre);
            (dhr[j], dhz[j], dhn[j]) = (dr, dz, dpre * r);
            dh[j] = dhj * z;
        }
    }
}
