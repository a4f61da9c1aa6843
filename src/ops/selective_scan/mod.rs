//! The selective scan of Mamba (S6), forward **and** backward, on CPU.
//!
//! A diagonal state-space model run over a sequence, where the step size $\Delta$ and the
//! input/output projections $B$, $C$ depend on the token. For every batch entry $b$ and channel
//! $d$ the scan carries $N$ states $x_n$ through the $L$ time steps:
//!
//! $$\Delta_t = \mathrm{softplus}(\delta_t + \beta_d) \quad(\text{or } \delta_t + \beta_d)$$
//! $$x_{t,n} = e^{\Delta_t A_{d,n}}\thinspace x_{t-1,n} + \Delta_t B_{t,n} u_t, \qquad x_{-1} = 0$$
//! $$y_t = \sum_n C_{t,n} x_{t,n} + D_d u_t, \qquad
//!   \mathrm{out}_ t = y_t \cdot \mathrm{silu}(z_t)$$
//!
//! This is mamba-ssm's `selective_scan_fn` (its `selective_scan_ref` semantics): the
//! discretisation $\bar A = e^{\Delta A}$, $\bar B u = \Delta B u$ (zero-order hold for $A$, the
//! simplified Euler rule for $B$), the skip term $D u$ and the optional gate $\mathrm{silu}(z)$.
//!
//! # Shapes
//! - `u`, `delta`: `(B, D, L)` — input and (pre-activation) step size per channel and token.
//! - `a`: `(D, N)` — the diagonal state matrix, one row of $N$ (usually negative) values per
//!   channel (Mamba stores `A_log` and uses `a = -exp(A_log)`).
//! - `b`, `c`: `(B, N, L)`, or grouped `(B, G, N, L)` where channel $d$ uses group
//!   $d / (D/G)$ ($G$ must divide $D$); `b` and `c` have the same shape.
//! - optional `d` (skip) `(D)`, `z` (gate) `(B, D, L)`, `delta_bias` `(D)` — given through
//!   [`SelectiveScanConfig`].
//! - output `(B, D, L)`; with `return_last_state` also the final state $x_{L-1}$ `(B, D, N)`.
//! - with `seq_major` (`SelectiveScanConfig::with_seq_major`) the gate `z` and the output are
//!   token-major `(B, L, D)`, the layout of the linear projections around the scan.
//!
//! Gradients flow to all of `u`, `delta`, `a`, `b`, `c`, `d`, `z`, `delta_bias` and through the
//! returned last state.
//!
//! # Tip
//! A state-space layer is a linear recurrence, so its cost grows linearly with the sequence,
//! $O(B\thinspace D\thinspace L\thinspace N)$, where attention grows as $O(L^2)$; when generating
//! token by token it carries only the $N$ states of each channel — constant memory per token
//! instead of a key/value cache that grows with the context. Selectivity is what makes the S6 layer
//! work on language: because $\Delta$, $B$ and $C$ are computed from the current token, the layer
//! decides per token how much of its state to keep ($\Delta \to 0$ gives $e^{\Delta A} \to 1$
//! and $\Delta B u \to 0$: the token is ignored and the state passes through unchanged, as the
//! example below asserts) or to overwrite ($\Delta$ large: the old state decays away and the
//! token is written in). A time-invariant SSM (S4) applies the same decay to every token and
//! cannot do this content-based selection, which is why it fails the paper's selective-copying
//! and induction-head tasks that Mamba solves.
//!
//! Written as a loop of tensor ops (mamba-minimal, or [`selective_scan_reference`]) the scan
//! launches a dozen small ops per time step, and in candle its backward is quadratic in $L$:
//! the gradient of every per-step `narrow` is padded back to the full `(B, D, L)` tensor. The
//! PyTorch reference instead materialises `(B, D, L, N)` tensors for $e^{\Delta A}$ and
//! $\Delta B u$. This kernel does neither: each task owns whole `(b, d)` rows and walks the $L$
//! steps with the $N$ states in vector registers (two AVX2 registers for $N = 16$), in chunks of
//! `chunk` steps: first the decays $e^{\Delta_t A}$ and inputs $\Delta_t B_t u_t$ of the chunk
//! (independent of the state, so they pipeline), then the recurrence itself; only $y$ is
//! written. $e^{\Delta A}$ is computed as $2^{\Delta \cdot A \log_2 e}$ with a vectorised
//! range reduction and polynomial (relative error $\le 2 \cdot 10^{-7}$, about one f32
//! rounding), softplus and silu are vectorised too; arithmetic is f32 for f16/bf16 inputs. For
//! the backward, the forward keeps the state every `chunk` steps (memory
//! $B\thinspace D\thinspace N\thinspace\lceil L/\mathrm{chunk}\rceil$ floats, only when a gradient
//! is tracked); the backward recomputes one chunk's states from its checkpoint and runs the adjoint
//! recurrence $h_{t-1} = e^{\Delta_t A} h_t + \partial L/\partial x_{t-1}$ back through it. The
//! gradients of $B$ and $C$, shared by the channels of a group, are summed in per-worker buffers
//! and reduced once (no races). The kernels are compiled for AVX-512 (16 states per register, used
//! when the padded $N$ is a multiple of 16), AVX2 + FMA and portable code, picked at run time. No second
//! derivatives.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_tricks::ops::{selective_scan, selective_scan_reference, SelectiveScanConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let (bsz, d, n, l) = (2, 8, 16, 40);
//! let u = Var::from_tensor(&Tensor::randn(0f32, 1., (bsz, d, l), &dev)?)?;
//! let delta = Tensor::randn(-1f32, 1., (bsz, d, l), &dev)?;
//! let a = (Tensor::rand(0.5f32, 2., (d, n), &dev)?.neg())?;
//! let b = Tensor::randn(0f32, 1., (bsz, n, l), &dev)?;
//! let c = Tensor::randn(0f32, 1., (bsz, n, l), &dev)?;
//! let skip = Tensor::ones(d, candle_core::DType::F32, &dev)?;
//! let cfg = SelectiveScanConfig::default()
//!     .with_d(&skip)
//!     .with_delta_softplus(true)
//!     .with_return_last_state(true);
//! let (y, last) = selective_scan(&u, &delta, &a, &b, &c, &cfg)?;
//! let last = last.expect("asked for the last state");
//! assert_eq!((y.dims(), last.dims()), (&[2, 8, 40][..], &[2, 8, 16][..]));
//! // Same values as the plain-tensor reference.
//! let (r, _) = selective_scan_reference(&u, &delta, &a, &b, &c, &cfg)?;
//! assert!((&y - &r)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
//! // Gradients reach the inputs through Tensor::backward.
//! let grads = y.sum_all()?.backward()?;
//! assert!(grads.get(&u).is_some());
//!
//! // Selectivity: a token with step size 0 has e^(0·A) = 1 and 0·B·u = 0, so it leaves the
//! // state exactly as it was. Append 10 such tokens (any u, B, C) to a sequence: the final
//! // state does not move, and each of their outputs is D·u + C·x with that same state x.
//! let plain = SelectiveScanConfig::default()
//!     .with_d(&skip)
//!     .with_return_last_state(true);
//! let dt = delta.abs()?; // positive step sizes, no softplus
//! let (_, s1) = selective_scan(&u, &dt, &a, &b, &c, &plain)?;
//! let pad = |t: &Tensor, k: usize| -> candle_core::Result<Tensor> {
//!     let extra = Tensor::randn(0f32, 1., (bsz, k, 10), &dev)?;
//!     Tensor::cat(&[t, &extra], 2)
//! };
//! let (u2, b2, c2) = (pad(&u, d)?, pad(&b, n)?, pad(&c, n)?);
//! let dt2 = Tensor::cat(&[&dt, &Tensor::zeros((bsz, d, 10), dt.dtype(), &dev)?], 2)?;
//! let (y2, s2) = selective_scan(&u2, &dt2, &a, &b2, &c2, &plain)?;
//! let (s1, s2) = (s1.expect("state"), s2.expect("state"));
//! assert_eq!((&s1 - &s2)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
//! let tail = (y2.narrow(2, l, 10)? - u2.narrow(2, l, 10)?)?; // minus D·u (D = 1)
//! let cx = c2.narrow(2, l, 10)?.unsqueeze(1)?.broadcast_mul(&s1.unsqueeze(3)?)?.sum(2)?;
//! assert!((tail - cx)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Gu, Dao, *Mamba: Linear-Time Sequence Modeling with Selective State Spaces*, 2023,
//!   <https://arxiv.org/abs/2312.00752> (the S6 layer and `selective_scan_ref`)
//! - Gu, Goel, Ré, *Efficiently Modeling Long Sequences with Structured State Spaces*, 2021,
//!   <https://arxiv.org/abs/2111.00396> (S4, the time-invariant predecessor)

mod backward;
mod forward;
mod kernel;
mod op;

use std::sync::Mutex;

use self::op::ScanOp;
use crate::check;
use crate::ops::backend::{backend, upcast, upcast_opt, Op};
use crate::ops::fused::Fused;
use crate::{Error, Result};
use candle_core::{DType, Tensor};

const OP: &str = "selective_scan";

/// Lanes of one state block (one AVX2 register of f32).
const W: usize = 8;

/// State blocks handled together in registers (32 states); larger `N` runs in several passes.
const MAX_NB: usize = 4;

/// Default checkpoint stride of the backward pass, in time steps.
const DEFAULT_CHUNK: usize = 64;

/// Target time steps per forward/backward task (whole `(b, d)` rows, at least one).
const TASK_STEPS: usize = 8 * 1024;

/// The optional inputs and switches of [`selective_scan`] (mamba-ssm's `selective_scan_fn`
/// keyword arguments). Borrows the optional tensors; build it with the `with_*` setters from
/// [`Default`] (no `d`, `z`, `delta_bias`; no softplus; no last state; unchecked; checkpoint
/// stride 64).
#[derive(Debug, Clone, Copy)]
pub struct SelectiveScanConfig<'a> {
    /// Skip weight $D$, `(D)`: adds `d * u` to the output. Default `None`.
    pub d: Option<&'a Tensor>,
    /// Gate `(B, D, L)`: the output is multiplied by `silu(z)`. Default `None`.
    pub z: Option<&'a Tensor>,
    /// Per-channel bias `(D)` added to `delta` (before the softplus). Default `None`.
    pub delta_bias: Option<&'a Tensor>,
    /// Apply `softplus` to `delta + delta_bias` (Mamba does). Default `false`.
    pub delta_softplus: bool,
    /// Also return the final state $x_{L-1}$, `(B, D, N)`. Default `false`.
    pub return_last_state: bool,
    /// Scan every input for NaN/Inf first and return an error naming the input (one extra
    /// pass over the inputs). Default `false`.
    pub checked: bool,
    /// Token-major gate and output: `z` is given, and the output returned, as `(B, L, D)`
    /// (the layout of the linear projections around the scan in a Mamba block) instead of
    /// `(B, D, L)`; the kernel turns them around inside the op, which saves the graph two
    /// full-size transposed copies and their gradient accumulations. Default `false`.
    pub seq_major: bool,
    /// Time steps between the state checkpoints the forward keeps for the backward; memory
    /// `B·D·N·⌈L/chunk⌉` floats, the backward recomputes at most `chunk` states per row at a
    /// time. Must be > 0. Default 64.
    pub chunk: usize,
}

impl Default for SelectiveScanConfig<'_> {
    fn default() -> Self {
        Self {
            d: None,
            z: None,
            delta_bias: None,
            delta_softplus: false,
            return_last_state: false,
            checked: false,
            seq_major: false,
            chunk: DEFAULT_CHUNK,
        }
    }
}

impl<'a> SelectiveScanConfig<'a> {
    /// Sets the skip weight `d` `(D)`.
    pub fn with_d(mut self, d: &'a Tensor) -> Self {
        self.d = Some(d);
        self
    }

    /// Sets the gate `z` `(B, D, L)`.
    pub fn with_z(mut self, z: &'a Tensor) -> Self {
        self.z = Some(z);
        self
    }

    /// Sets the step-size bias `(D)`.
    pub fn with_delta_bias(mut self, delta_bias: &'a Tensor) -> Self {
        self.delta_bias = Some(delta_bias);
        self
    }

    /// Sets whether `softplus` is applied to the step size.
    pub fn with_delta_softplus(mut self, on: bool) -> Self {
        self.delta_softplus = on;
        self
    }

    /// Sets whether the final state is returned.
    pub fn with_return_last_state(mut self, on: bool) -> Self {
        self.return_last_state = on;
        self
    }

    /// Sets whether the inputs are scanned for NaN/Inf.
    pub fn with_checked(mut self, on: bool) -> Self {
        self.checked = on;
        self
    }

    /// Sets whether the gate and the output are token-major `(B, L, D)`.
    pub fn with_seq_major(mut self, on: bool) -> Self {
        self.seq_major = on;
        self
    }

    /// Sets the checkpoint stride of the backward pass.
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk;
        self
    }
}

/// The selective scan with our fused kernel (mamba-ssm's `selective_scan_fn`); returns the
/// output `(B, D, L)` and, when `cfg.return_last_state`, the final state `(B, D, N)`.
/// Differentiable wrt every tensor input (see the [module docs](self)).
///
/// Errors (naming `selective_scan`, with expected and actual shapes) on a wrong rank, mismatched
/// `B`/`D`/`L`/`N`, `G` not dividing `D`, a zero-sized dimension, a dtype other than
/// f32/f16/bf16 or mixed dtypes/devices, `chunk == 0`, and, with `cfg.checked`, on NaN/Inf in
/// an input.
pub fn selective_scan(
    u: &Tensor,
    delta: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    cfg: &SelectiveScanConfig,
) -> Result<(Tensor, Option<Tensor>)> {
    let geom = validate(u, delta, a, b, c, cfg, false)?;
    if cfg.checked {
        check_finite(u, delta, a, b, c, cfg)?;
    }
    if !backend(Op::SelectiveScan, u.device()).is_kernel() {
        return composition(u, delta, a, b, c, cfg);
    }
    // Pack everything but u and delta into one flat tensor: candle's custom ops take at most
    // three inputs, and the packing (a differentiable cat) routes each gradient back.
    let mut parts = Vec::with_capacity(6);
    if let Some(z) = cfg.z {
        parts.push(z.flatten_all()?);
    }
    parts.push(b.flatten_all()?);
    parts.push(c.flatten_all()?);
    parts.push(a.flatten_all()?);
    if let Some(d) = cfg.d {
        parts.push(d.flatten_all()?);
    }
    if let Some(db) = cfg.delta_bias {
        parts.push(db.flatten_all()?);
    }
    let rest = Tensor::cat(&parts, 0)?;
    let (u, delta) = (u.contiguous()?, delta.contiguous()?);
    let save = u.track_op() || delta.track_op() || rest.track_op();
    let op = ScanOp {
        geom,
        save,
        ckpt: Mutex::new(None),
    };
    let out = u.apply_op3(&delta, &rest, Fused(op))?;
    let Geom { b: bs, d, l, n, .. } = geom;
    if cfg.return_last_state {
        let y = out.narrow(0, 0, bs * d * l)?;
        let y = if cfg.seq_major {
            y.reshape((bs, l, d))?
        } else {
            y.reshape((bs, d, l))?
        };
        let last = out.narrow(0, bs * d * l, bs * d * n)?.reshape((bs, d, n))?;
        Ok((y, Some(last)))
    } else {
        Ok((out, None))
    }
}

/// [`selective_scan_reference`] in f32 for f16 / bf16 inputs (the kernel accumulates in f32),
/// results rounded back: the path of [`selective_scan`] where our kernel does not run.
fn composition(
    u: &Tensor,
    delta: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    cfg: &SelectiveScanConfig,
) -> Result<(Tensor, Option<Tensor>)> {
    let (d, z, bias) = (
        upcast_opt(cfg.d)?,
        upcast_opt(cfg.z)?,
        upcast_opt(cfg.delta_bias)?,
    );
    let wide = SelectiveScanConfig {
        d: d.as_ref(),
        z: z.as_ref(),
        delta_bias: bias.as_ref(),
        // Already checked by the caller.
        checked: false,
        ..*cfg
    };
    let [u2, delta2, a2, b2, c2] = [u, delta, a, b, c].map(upcast);
    let (y, last) = selective_scan_reference(&u2?, &delta2?, &a2?, &b2?, &c2?, &wide)?;
    let dt = u.dtype();
    Ok((y.to_dtype(dt)?, last.map(|s| s.to_dtype(dt)).transpose()?))
}

/// `softplus(v) = max(v, 0) + ln(1 + e^{-|v|})` from candle ops (differentiable, finite for
/// any `v`): the reference scan's step size and the Mamba block's decoding step share it.
pub(crate) fn softplus_tensor(v: &Tensor) -> candle_core::Result<Tensor> {
    v.relu()? + (v.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// The selective scan built from candle tensor ops, one step of `(B, D, N)` ops per time step
/// (the mamba-minimal loop; mamba-ssm's `selective_scan_ref` semantics). Same checks and
/// results as [`selective_scan`], except that f64 is accepted too (for gradient checks).
/// Differentiable through candle's autograd on every device, and the path of [`selective_scan`]
/// where our kernel does not run (see [`crate::ops::backend()`]). Slow: `L` steps of small
/// tensor ops, whose backward also keeps every step's `(B, D, N)` state, and whose `narrow`s
/// cost $O(L^2)$ in the backward; for tests, benches and as the fallback.
pub fn selective_scan_reference(
    u: &Tensor,
    delta: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    cfg: &SelectiveScanConfig,
) -> Result<(Tensor, Option<Tensor>)> {
    let Geom {
        b: bs, d, l, n, g, ..
    } = validate(u, delta, a, b, c, cfg, true)?;
    if cfg.checked {
        check_finite(u, delta, a, b, c, cfg)?;
    }
    let dg = d / g;
    let mut dt = delta.clone();
    if let Some(db) = cfg.delta_bias {
        dt = dt.broadcast_add(&db.reshape((1, d, 1))?)?;
    }
    if cfg.delta_softplus {
        dt = softplus_tensor(&dt)?;
    }
    // Channels split as (G, D/G) so that the group's B and C broadcast over its channels.
    let b4 = b.reshape((bs, g, n, l))?;
    let c4 = c.reshape((bs, g, n, l))?;
    let a4 = a.reshape((1, g, dg, n))?;
    let dt4 = dt.reshape((bs, g, dg, l))?;
    let du4 = (&dt * u)?.reshape((bs, g, dg, l))?;
    let mut x = Tensor::zeros((bs, g, dg, n), u.dtype(), u.device())?;
    let mut ys = Vec::with_capacity(l);
    for t in 0..l {
        let dtt = dt4.narrow(3, t, 1)?; // (B, G, D/G, 1)
        let da = dtt.broadcast_mul(&a4)?.exp()?; // (B, G, D/G, N)
        let bt = b4.narrow(3, t, 1)?.reshape((bs, g, 1, n))?;
        let ct = c4.narrow(3, t, 1)?.reshape((bs, g, 1, n))?;
        let dbu = du4.narrow(3, t, 1)?.broadcast_mul(&bt)?;
        x = ((da * &x)? + dbu)?;
        ys.push(x.broadcast_mul(&ct)?.sum_keepdim(3)?); // (B, G, D/G, 1)
    }
    let mut y = Tensor::cat(&ys, 3)?.reshape((bs, d, l))?;
    if let Some(dd) = cfg.d {
        y = (y + u.broadcast_mul(&dd.reshape((1, d, 1))?)?)?;
    }
    if let Some(z) = cfg.z {
        let z = if cfg.seq_major {
            z.transpose(1, 2)?
        } else {
            z.clone()
        };
        y = (y * z.silu()?)?;
    }
    if cfg.seq_major {
        y = y.transpose(1, 2)?.contiguous()?;
    }
    let last = if cfg.return_last_state {
        Some(x.reshape((bs, d, n))?)
    } else {
        None
    };
    Ok((y, last))
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Sizes and switches of one scan.
#[derive(Debug, Clone, Copy)]
struct Geom {
    b: usize,
    d: usize,
    l: usize,
    n: usize,
    g: usize,
    /// State blocks of `W` lanes, `ceil(n / W)`.
    nbk: usize,
    chunk: usize,
    has_z: bool,
    has_d: bool,
    has_bias: bool,
    softplus: bool,
    last: bool,
    /// Gate and output token-major `(B, L, D)`.
    seq_major: bool,
}

impl Geom {
    fn rows(&self) -> usize {
        self.b * self.d
    }
    fn nck(&self) -> usize {
        self.l.div_ceil(self.chunk)
    }
    fn bdl(&self) -> usize {
        self.b * self.d * self.l
    }
    fn bc_len(&self) -> usize {
        self.b * self.g * self.n * self.l
    }
    /// Offsets of `z`, `b`, `c`, `a`, `d`, `delta_bias` in the packed tensor, and its length.
    fn offsets(&self) -> [usize; 7] {
        let z = 0;
        let b = z + if self.has_z { self.bdl() } else { 0 };
        let c = b + self.bc_len();
        let a = c + self.bc_len();
        let d = a + self.d * self.n;
        let bias = d + if self.has_d { self.d } else { 0 };
        let end = bias + if self.has_bias { self.d } else { 0 };
        [z, b, c, a, d, bias, end]
    }
    /// Length of the op's output.
    fn out_len(&self) -> usize {
        self.bdl()
            + if self.last {
                self.b * self.d * self.n
            } else {
                0
            }
    }
}

fn validate(
    u: &Tensor,
    delta: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    cfg: &SelectiveScanConfig,
    allow_f64: bool,
) -> Result<Geom> {
    check::rank(OP, "u", u, 3, "(B, D, L)")?;
    check::non_empty(OP, "u", u)?;
    if !(allow_f64 && u.dtype() == DType::F64) {
        check::float_dtype(OP, "u", u)?;
    }
    let (bs, d, l) = u.dims3()?;
    let same = |what: &'static str, t: &Tensor, want: &[usize], pat: String| -> Result<()> {
        check::same_dtype_device(OP, what, u, t)?;
        if t.dims() != want {
            return Err(Error::shape(OP, what, pat, t.shape().clone()));
        }
        Ok(())
    };
    same(
        "delta",
        delta,
        &[bs, d, l],
        format!("(B, D, L) = ({bs}, {d}, {l}) as u"),
    )?;
    check::rank(OP, "a", a, 2, &format!("(D, N) with D = {d}"))?;
    check::non_empty(OP, "a", a)?;
    let n = a.dims()[1];
    same("a", a, &[d, n], format!("(D, N) with D = {d}"))?;
    let g = match b.rank() {
        3 => 1,
        4 => b.dims()[1],
        _ => {
            return Err(Error::shape(
                OP,
                "b",
                format!("(B, N, L) or (B, G, N, L) = ({bs}, {n}, {l}) or ({bs}, G, {n}, {l})"),
                b.shape().clone(),
            ))
        }
    };
    check::non_empty(OP, "b", b)?;
    let want: Vec<usize> = if b.rank() == 3 {
        vec![bs, n, l]
    } else {
        vec![bs, g, n, l]
    };
    let pat = if b.rank() == 3 {
        format!("(B, N, L) = ({bs}, {n}, {l})")
    } else {
        format!("(B, G, N, L) = ({bs}, {g}, {n}, {l})")
    };
    same("b", b, &want, pat.clone())?;
    same("c", c, &want, format!("{pat}, the shape of b"))?;
    if d % g != 0 {
        return Err(Error::shape(
            OP,
            "b",
            format!("(B, G, N, L) with G dividing D = {d}"),
            b.shape().clone(),
        ));
    }
    if let Some(t) = cfg.d {
        same("d", t, &[d], format!("(D) = ({d})"))?;
    }
    if let Some(t) = cfg.z {
        if cfg.seq_major {
            same(
                "z",
                t,
                &[bs, l, d],
                format!("token-major (B, L, D) = ({bs}, {l}, {d})"),
            )?;
        } else {
            same(
                "z",
                t,
                &[bs, d, l],
                format!("(B, D, L) = ({bs}, {d}, {l}) as u"),
            )?;
        }
    }
    if let Some(t) = cfg.delta_bias {
        same("delta_bias", t, &[d], format!("(D) = ({d})"))?;
    }
    check::positive(OP, "chunk", cfg.chunk)?;
    Ok(Geom {
        b: bs,
        d,
        l,
        n,
        g,
        nbk: n.div_ceil(W),
        chunk: cfg.chunk.min(l),
        has_z: cfg.z.is_some(),
        has_d: cfg.d.is_some(),
        has_bias: cfg.delta_bias.is_some(),
        softplus: cfg.delta_softplus,
        last: cfg.return_last_state,
        seq_major: cfg.seq_major,
    })
}

/// Errors if any input holds NaN or ±Inf.
fn check_finite(
    u: &Tensor,
    delta: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    cfg: &SelectiveScanConfig,
) -> Result<()> {
    let inputs = [
        ("u", Some(u)),
        ("delta", Some(delta)),
        ("a", Some(a)),
        ("b", Some(b)),
        ("c", Some(c)),
        ("d", cfg.d),
        ("z", cfg.z),
        ("delta_bias", cfg.delta_bias),
    ];
    for (what, t) in inputs {
        let Some(t) = t else { continue };
        let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::non_finite(
                OP,
                format!("input `{what}` {:?}: {} at flat index {i}", t.dims(), v[i]),
            ));
        }
    }
    Ok(())
}
