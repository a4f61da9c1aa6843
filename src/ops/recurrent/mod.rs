//! The recurrence of one LSTM or GRU layer in one direction, fused: the whole time loop in one
//! op, forward and backward through time, on CPU.
//!
//! # Shapes
//! - `xproj` `(L, B, G·H)`: the input projections $x_t W_{ih}^\top + b_{ih}$ of every step,
//!   computed before the op as one matrix product (e.g. [`crate::ops::linear()`]); $G = 4$ gates
//!   for the LSTM ($i, f, g, o$), 3 for the GRU ($r, z, n$), PyTorch's order.
//! - `w_hh` `(G·H, H)`, `b_hh` `(G·H)` (optional), initial states `h0` (and `c0` for the LSTM)
//!   `(B, H)`.
//! - Returns the outputs `(L, B, H)` and the final `h_n` (and `c_n`) `(B, H)`.
//! - [`RecurrenceConfig::lengths`]: per-sample lengths, PyTorch's packed-sequence semantics:
//!   sample $b$ of length $n_b$ runs steps $0 \ldots n_b - 1$ only (the reverse direction starts
//!   at $n_b - 1$), its outputs past its length are 0 and its final states are those of its last
//!   valid step.
//!
//! # Tip
//! Only $h_{t-1} W_{hh}^\top$ depends on the previous step; the input half of every gate,
//! $x_t W_{ih}^\top$, is known for all steps up front. Computing it as one
//! `(L·B, in) × (in, G·H)` product leaves the loop a single `(B, H) × (H, G·H)` product per step
//! plus the gate arithmetic, which here runs fused on rows that stay in cache. candle-nn's
//! `LSTM` instead runs a dozen tensor ops per step (two products, adds, chunk, three sigmoids,
//! two tanh, multiplies), each allocating its result and recording a node of the autograd
//! graph, so that the backward walks $L$ times that many nodes.
//!
//! The backward runs the loop in reverse inside the kernel: per step one `(B, G·H) × (G·H, H)`
//! product for $\partial L / \partial h_{t-1}$; the gradient of $W_{hh}$ is then one large
//! `(G·H, B·L) × (B·L, H)` product over the saved states instead of $L$ small ones. Samples are
//! independent, so threads take blocks of samples for the whole sequence, with no barrier per
//! step. Saved for the backward: the gate activations and two `(B, H)` rows per step,
//! $(G + 2) \thinspace L B H$ floats. Sigmoid and tanh are branch-free exponentials that
//! vectorise (absolute error below $3 \cdot 10^{-7}$); f16/bf16 inputs are widened and the
//! states and sums stay in f32.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_tricks::ops::{lstm_recurrence, lstm_recurrence_reference, RecurrenceConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let (l, b, h) = (6, 3, 8);
//! let xproj = Var::from_tensor(&Tensor::randn(0f32, 1., (l, b, 4 * h), &dev)?)?;
//! let w_hh = Var::from_tensor(&Tensor::randn(0f32, 0.3, (4 * h, h), &dev)?)?;
//! let (h0, c0) = (Tensor::zeros((b, h), candle_core::DType::F32, &dev)?, Tensor::zeros((b, h), candle_core::DType::F32, &dev)?);
//! // Sample 1 is 4 steps long, running backwards from step 3.
//! let lengths = [6, 4, 6];
//! let cfg = RecurrenceConfig::default().with_reverse(true).with_lengths(&lengths);
//! let (out, h_n, _c_n) = lstm_recurrence(&xproj, &w_hh, None, &h0, &c0, &cfg)?;
//! let (r, _, _) = lstm_recurrence_reference(&xproj, &w_hh, None, &h0, &c0, &cfg)?;
//! assert!((&out - &r)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
//! // Past its length, sample 1's outputs are zero; its h_n is the output at step 0 (the last
//! // step the reverse direction runs).
//! assert_eq!(out.get(5)?.get(1)?.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
//! let last = (h_n.get(1)? - out.get(0)?.get(1)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert_eq!(last, 0.0);
//! // Gradients reach the input projection and the recurrent weight.
//! let grads = out.sum_all()?.backward()?;
//! assert!(grads.get(&w_hh).is_some() && grads.get(&xproj).is_some());
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Hochreiter, Schmidhuber, *Long Short-Term Memory*, Neural Computation 1997.
//! - Cho et al., *Learning Phrase Representations using RNN Encoder-Decoder for Statistical
//!   Machine Translation*, 2014, <https://arxiv.org/abs/1406.1078> (the GRU).
//! - Appleyard, Kočiský, Blunsom, *Optimizing Performance of Recurrent Neural Networks on
//!   GPUs*, 2016, <https://arxiv.org/abs/1604.01946> (input projections hoisted out of the loop,
//!   one weight-gradient product after it).

mod cell;
mod kernel;
mod op;

use std::sync::Mutex;

use crate::check;
use crate::ops::backend::{backend, upcast, Op};
use crate::ops::fused::Fused;
use crate::{Error, Result};
use candle_core::{DType, Tensor};
use op::RecurrenceOp;

const OP: &str = "recurrence";

/// Which cell a recurrence runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellKind {
    /// PyTorch's `nn.LSTM` cell: 4 gates $i, f, g, o$ and a cell state.
    Lstm,
    /// PyTorch's `nn.GRU` cell: 3 gates $r, z, n$.
    Gru,
}

impl CellKind {
    /// Gates per hidden unit, `G`.
    pub fn gates(self) -> usize {
        op::gates(self)
    }

    /// The public op's name, in errors.
    fn op_name(self) -> &'static str {
        match self {
            CellKind::Lstm => "lstm_recurrence",
            CellKind::Gru => "gru_recurrence",
        }
    }

    fn backend_op(self) -> Op {
        match self {
            CellKind::Lstm => Op::LstmRecurrence,
            CellKind::Gru => Op::GruRecurrence,
        }
    }
}

/// Options of [`lstm_recurrence`] and [`gru_recurrence`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RecurrenceConfig<'a> {
    /// Run from the last valid step to the first (the `_reverse` half of a bidirectional
    /// layer). Default `false`.
    pub reverse: bool,
    /// Per-sample lengths `(B)`, each in `1..=L`; `None`: every sample is `L` steps long.
    pub lengths: Option<&'a [usize]>,
}

impl<'a> RecurrenceConfig<'a> {
    /// Sets the direction.
    pub fn with_reverse(mut self, reverse: bool) -> Self {
        self.reverse = reverse;
        self
    }

    /// Sets the per-sample lengths.
    pub fn with_lengths(mut self, lengths: &'a [usize]) -> Self {
        self.lengths = Some(lengths);
        self
    }
}

/// The problem size the kernel sees.
#[derive(Debug, Clone)]
struct Geom {
    cell: CellKind,
    l: usize,
    b: usize,
    h: usize,
    reverse: bool,
    lengths: Vec<usize>,
}

impl Geom {
    fn gh(&self) -> usize {
        self.cell.gates() * self.h
    }

    /// `B·H` states the op carries: `h`, and `c` for the LSTM.
    fn state_len(&self) -> usize {
        let n = if self.cell == CellKind::Lstm { 2 } else { 1 };
        n * self.b * self.h
    }

    /// The flat output `[out (L, B, H) | h_n | c_n]`.
    fn out_len(&self) -> usize {
        self.l * self.b * self.h + self.state_len()
    }

    /// The packed operand `[b_hh | h0 | c0]`.
    fn rest_len(&self) -> usize {
        self.gh() + self.state_len()
    }

    /// The time position sample `b` reads and writes at its step `s`; `None` past its length.
    fn position(&self, b: usize, s: usize) -> Option<usize> {
        let len = self.lengths[b];
        (s < len).then(|| if self.reverse { len - 1 - s } else { s })
    }
}

/// Checks every argument; returns the kernel's geometry.
#[allow(clippy::too_many_arguments)]
fn validate(
    cell: CellKind,
    xproj: &Tensor,
    w_hh: &Tensor,
    b_hh: Option<&Tensor>,
    h0: &Tensor,
    c0: Option<&Tensor>,
    cfg: &RecurrenceConfig,
    allow_f64: bool,
) -> Result<Geom> {
    let name = cell.op_name();
    let g = cell.gates();
    if (cell == CellKind::Lstm) != c0.is_some() {
        return Err(Error::config(
            name,
            "the LSTM takes a cell state c0, the GRU none",
        ));
    }
    check::rank(name, "w_hh", w_hh, 2, &format!("({g}·H, H)"))?;
    check::non_empty(name, "w_hh", w_hh)?;
    let (gh, h) = w_hh.dims2()?;
    if gh != g * h {
        return Err(Error::shape(
            name,
            "w_hh",
            format!("({}, {h}) = ({g}·H, H)", g * h),
            w_hh.shape().clone(),
        ));
    }
    let pattern = format!("(L, B, {gh})");
    check::rank(name, "xproj", xproj, 3, &pattern)?;
    check::non_empty(name, "xproj", xproj)?;
    let (l, b, xg) = xproj.dims3()?;
    if xg != gh {
        return Err(Error::shape(name, "xproj", pattern, xproj.shape().clone()));
    }
    if !(allow_f64 && xproj.dtype() == DType::F64) {
        check::float_dtype(name, "xproj", xproj)?;
    }
    check::same_dtype_device(name, "w_hh", xproj, w_hh)?;
    if let Some(bias) = b_hh {
        check::same_dtype_device(name, "b_hh", xproj, bias)?;
        if bias.dims() != [gh] {
            return Err(Error::shape(
                name,
                "b_hh",
                format!("({gh})"),
                bias.shape().clone(),
            ));
        }
    }
    for (what, s) in [("h0", Some(h0)), ("c0", c0)] {
        let Some(s) = s else { continue };
        check::same_dtype_device(name, what, xproj, s)?;
        if s.dims() != [b, h] {
            return Err(Error::shape(
                name,
                what,
                format!("({b}, {h})"),
                s.shape().clone(),
            ));
        }
    }
    let lengths = match cfg.lengths {
        None => vec![l; b],
        Some(ls) => {
            if ls.len() != b {
                return Err(Error::config(
                    name,
                    format!(
                        "lengths: expected {b} values (one per sample), got {}",
                        ls.len()
                    ),
                ));
            }
            if let Some((i, bad)) = ls.iter().enumerate().find(|(_, &n)| n == 0 || n > l) {
                return Err(Error::config(
                    name,
                    format!("lengths[{i}] = {bad}: each length must be in 1..={l} (the input has L = {l} steps)"),
                ));
            }
            ls.to_vec()
        }
    };
    Ok(Geom {
        cell,
        l,
        b,
        h,
        reverse: cfg.reverse,
        lengths,
    })
}

/// The LSTM recurrence with our fused kernel: returns `(out (L, B, H), h_n (B, H), c_n (B, H))`.
/// Differentiable wrt `xproj`, `w_hh`, `b_hh`, `h0` and `c0` (see the [module docs](self)).
///
/// Errors (naming `lstm_recurrence`, with expected and actual shapes) on wrong ranks or sizes
/// (`w_hh` must be `(4·H, H)`, `xproj` `(L, B, 4·H)`, states `(B, H)`), a zero-sized dimension,
/// a dtype other than f32/f16/bf16, mixed dtypes or devices, and lengths that are not one per
/// sample in `1..=L`.
pub fn lstm_recurrence(
    xproj: &Tensor,
    w_hh: &Tensor,
    b_hh: Option<&Tensor>,
    h0: &Tensor,
    c0: &Tensor,
    cfg: &RecurrenceConfig,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (out, h_n, c_n) = recurrence(CellKind::Lstm, xproj, w_hh, b_hh, h0, Some(c0), cfg, false)?;
    Ok((
        out,
        h_n,
        c_n.ok_or_else(|| Error::config(OP, "no cell state"))?,
    ))
}

/// The GRU recurrence with our fused kernel: returns `(out (L, B, H), h_n (B, H))`; as
/// [`lstm_recurrence`] with 3 gates and no cell state.
pub fn gru_recurrence(
    xproj: &Tensor,
    w_hh: &Tensor,
    b_hh: Option<&Tensor>,
    h0: &Tensor,
    cfg: &RecurrenceConfig,
) -> Result<(Tensor, Tensor)> {
    let (out, h_n, _) = recurrence(CellKind::Gru, xproj, w_hh, b_hh, h0, None, cfg, false)?;
    Ok((out, h_n))
}

/// [`lstm_recurrence`] built from candle tensor ops, one step of `(B, 4·H)` ops per time step;
/// same checks and results, except that f64 is accepted too (for gradient checks). Slow: for
/// tests, benches, and the path of [`lstm_recurrence`] on devices without our kernel.
pub fn lstm_recurrence_reference(
    xproj: &Tensor,
    w_hh: &Tensor,
    b_hh: Option<&Tensor>,
    h0: &Tensor,
    c0: &Tensor,
    cfg: &RecurrenceConfig,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (out, h_n, c_n) = recurrence(CellKind::Lstm, xproj, w_hh, b_hh, h0, Some(c0), cfg, true)?;
    Ok((
        out,
        h_n,
        c_n.ok_or_else(|| Error::config(OP, "no cell state"))?,
    ))
}

/// [`gru_recurrence`] built from candle tensor ops; see [`lstm_recurrence_reference`].
pub fn gru_recurrence_reference(
    xproj: &Tensor,
    w_hh: &Tensor,
    b_hh: Option<&Tensor>,
    h0: &Tensor,
    cfg: &RecurrenceConfig,
) -> Result<(Tensor, Tensor)> {
    let (out, h_n, _) = recurrence(CellKind::Gru, xproj, w_hh, b_hh, h0, None, cfg, true)?;
    Ok((out, h_n))
}

/// Output, final `h` and (LSTM) final `c`.
pub(crate) type Outputs = (Tensor, Tensor, Option<Tensor>);

/// [`lstm_recurrence`] or [`gru_recurrence`] by `cell` (`c0` for the LSTM only): what the
/// stacked blocks of [`crate::rnn`] call.
pub(crate) fn recurrence_dyn(
    cell: CellKind,
    xproj: &Tensor,
    w_hh: &Tensor,
    b_hh: Option<&Tensor>,
    h0: &Tensor,
    c0: Option<&Tensor>,
    cfg: &RecurrenceConfig,
) -> Result<Outputs> {
    recurrence(cell, xproj, w_hh, b_hh, h0, c0, cfg, false)
}

/// Validates, then runs the kernel, or the composition (`reference`, or no kernel for the
/// device: then in f32 for f16/bf16, rounded back).
#[allow(clippy::too_many_arguments)]
fn recurrence(
    cell: CellKind,
    xproj: &Tensor,
    w_hh: &Tensor,
    b_hh: Option<&Tensor>,
    h0: &Tensor,
    c0: Option<&Tensor>,
    cfg: &RecurrenceConfig,
    reference: bool,
) -> Result<Outputs> {
    let gm = validate(cell, xproj, w_hh, b_hh, h0, c0, cfg, reference)?;
    if reference {
        return Ok(composition(&gm, xproj, w_hh, b_hh, h0, c0)?);
    }
    if !backend(cell.backend_op(), xproj.device()).is_kernel() {
        let wide = |t: &Tensor| upcast(t);
        let (b_w, c_w) = (b_hh.map(wide).transpose()?, c0.map(wide).transpose()?);
        let (out, h_n, c_n) = composition(
            &gm,
            &wide(xproj)?,
            &wide(w_hh)?,
            b_w.as_ref(),
            &wide(h0)?,
            c_w.as_ref(),
        )?;
        let dt = xproj.dtype();
        return Ok((
            out.to_dtype(dt)?,
            h_n.to_dtype(dt)?,
            c_n.map(|c| c.to_dtype(dt)).transpose()?,
        ));
    }
    let (l, b, h) = (gm.l, gm.b, gm.h);
    // candle's custom ops take at most three inputs: bias and states travel packed in one
    // flat tensor, whose differentiable cat routes each gradient back.
    let bias = match b_hh {
        Some(t) => t.clone(),
        None => Tensor::zeros(gm.gh(), xproj.dtype(), xproj.device())?,
    };
    let mut parts = vec![bias, h0.flatten_all()?];
    if let Some(c0) = c0 {
        parts.push(c0.flatten_all()?);
    }
    let rest = Tensor::cat(&parts, 0)?;
    let (xproj, w_hh) = (xproj.contiguous()?, w_hh.contiguous()?);
    let save = xproj.track_op() || w_hh.track_op() || rest.track_op();
    let op = RecurrenceOp {
        gm,
        save,
        saved: Mutex::new(None),
    };
    let flat = xproj.apply_op3(&w_hh, &rest, Fused(op))?;
    let out = flat.narrow(0, 0, l * b * h)?.reshape((l, b, h))?;
    let h_n = flat.narrow(0, l * b * h, b * h)?.reshape((b, h))?;
    let c_n = match cell {
        CellKind::Lstm => Some(flat.narrow(0, (l + 1) * b * h, b * h)?.reshape((b, h))?),
        CellKind::Gru => None,
    };
    Ok((out, h_n, c_n))
}

/// `(L, B, 1)` u32 index: the time position of step `s` of each sample (steps past a length
/// map to themselves, so that the map is its own inverse).
fn step_positions(gm: &Geom, dev: &candle_core::Device) -> candle_core::Result<Tensor> {
    let idx: Vec<u32> = (0..gm.l)
        .flat_map(|s| (0..gm.b).map(move |b| (s, b)))
        .map(|(s, b)| gm.position(b, s).unwrap_or(s) as u32)
        .collect();
    Tensor::from_vec(idx, (gm.l, gm.b, 1), dev)
}

/// Rows of `t` `(L, B, X)` permuted along time by `idx` `(L, B, 1)`.
fn permute_time(t: &Tensor, idx: &Tensor) -> candle_core::Result<Tensor> {
    let idx = idx.broadcast_as(t.shape())?.contiguous()?;
    t.gather(&idx, 0)
}

/// $1 / (1 + e^{-x})$ from plain ops (any float dtype, f64 included).
fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// One cell step from plain ops: `x` and `hp` `(B, G·H)`; returns the new `h` and `c`.
fn cell_step(
    cell: CellKind,
    x: &Tensor,
    hp: &Tensor,
    h: &Tensor,
    c: Option<&Tensor>,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let n = h.dim(1)?;
    let gate = |t: &Tensor, k: usize| t.narrow(1, k * n, n);
    match (cell, c) {
        (CellKind::Lstm, Some(c)) => {
            let a = (x + hp)?;
            let i = sigmoid(&gate(&a, 0)?)?;
            let f = sigmoid(&gate(&a, 1)?)?;
            let g = gate(&a, 2)?.tanh()?;
            let o = sigmoid(&gate(&a, 3)?)?;
            let c_new = ((f * c)? + (i * g)?)?;
            let h_new = (o * c_new.tanh()?)?;
            Ok((h_new, Some(c_new)))
        }
        _ => {
            let r = sigmoid(&(gate(x, 0)? + gate(hp, 0)?)?)?;
            let z = sigmoid(&(gate(x, 1)? + gate(hp, 1)?)?)?;
            let nn = (gate(x, 2)? + (r * gate(hp, 2)?)?)?.tanh()?;
            let h_new = (&nn + (z * (h - &nn)?)?)?;
            Ok((h_new, None))
        }
    }
}

/// The plain-tensor recurrence: a loop of per-step ops, masks for the lengths, a time
/// permutation for the reverse direction.
fn composition(
    gm: &Geom,
    xproj: &Tensor,
    w_hh: &Tensor,
    b_hh: Option<&Tensor>,
    h0: &Tensor,
    c0: Option<&Tensor>,
) -> candle_core::Result<Outputs> {
    let dev = xproj.device();
    let dt = xproj.dtype();
    let ragged = gm.lengths.iter().any(|&n| n < gm.l);
    let order = if gm.reverse {
        Some(step_positions(gm, dev)?)
    } else {
        None
    };
    let xs = match &order {
        Some(idx) => permute_time(xproj, idx)?,
        None => xproj.clone(),
    };
    // (L, B, 1): 1 where step s of sample b is valid.
    let mask = if ragged {
        let m: Vec<f32> = (0..gm.l)
            .flat_map(|s| gm.lengths.iter().map(move |&n| f32::from(u8::from(s < n))))
            .collect();
        Some(Tensor::from_vec(m, (gm.l, gm.b, 1), dev)?.to_dtype(dt)?)
    } else {
        None
    };
    let w_t = w_hh.t()?;
    let (mut h, mut c) = (h0.clone(), c0.cloned());
    let mut outs = Vec::with_capacity(gm.l);
    for s in 0..gm.l {
        let mut hp = h.matmul(&w_t)?;
        if let Some(bias) = b_hh {
            hp = hp.broadcast_add(bias)?;
        }
        let (h_new, c_new) = cell_step(gm.cell, &xs.get(s)?, &hp, &h, c.as_ref())?;
        match &mask {
            Some(m) => {
                let keep = m.get(s)?;
                let blend = |new: &Tensor, old: &Tensor| -> candle_core::Result<Tensor> {
                    old + new.sub(old)?.broadcast_mul(&keep)?
                };
                outs.push(h_new.broadcast_mul(&keep)?);
                h = blend(&h_new, &h)?;
                c = match (c_new, &c) {
                    (Some(cn), Some(co)) => Some(blend(&cn, co)?),
                    _ => None,
                };
            }
            None => {
                outs.push(h_new.clone());
                h = h_new;
                c = c_new;
            }
        }
    }
    let mut out = Tensor::stack(&outs, 0)?;
    if let Some(idx) = &order {
        out = permute_time(&out, idx)?;
    }
    Ok((out, h, c))
}
