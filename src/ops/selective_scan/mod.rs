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
//! when $N$ is a multiple of 16), AVX2 + FMA and portable code, picked at run time. No second
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

use std::sync::{Arc, Mutex};

use crate::check;
use crate::ops::backend::{backend, upcast, upcast_opt, Op};
use crate::ops::cpu::{f32_view, par_fold, store};
use crate::ops::simd::{detect_simd, dot, sum, Simd};
use crate::ops::softmax::exp_approx;
use crate::{Error, Result};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Shape, Storage, Tensor};

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
    let out = u.apply_op3(&delta, &rest, op)?;
    let Geom { b: bs, d, l, n, .. } = geom;
    if cfg.return_last_state {
        let y = out.narrow(0, 0, bs * d * l)?.reshape((bs, d, l))?;
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
        y = (y * z.silu()?)?;
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
        same(
            "z",
            t,
            &[bs, d, l],
            format!("(B, D, L) = ({bs}, {d}, {l}) as u"),
        )?;
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

// ---------------------------------------------------------------------------------------------
// Custom op
// ---------------------------------------------------------------------------------------------

/// The op `(u, delta, packed rest) -> y` (flat `[y | last state]` with `return_last_state`).
/// Keeps the forward's state checkpoints for its backward when a gradient is tracked.
struct ScanOp {
    geom: Geom,
    save: bool,
    ckpt: Mutex<Option<Arc<Vec<f32>>>>,
}

fn cpu_of(s: &Storage) -> candle_core::Result<&CpuStorage> {
    match s {
        Storage::Cpu(c) => Ok(c),
        _ => candle_core::bail!("{OP}: the backward pass runs on CPU only"),
    }
}

fn expect_len(l: &Layout, len: usize, what: &str) -> candle_core::Result<()> {
    if l.shape().elem_count() != len {
        candle_core::bail!(
            "{OP}: {what} has {} elements, expected {len}",
            l.shape().elem_count()
        );
    }
    Ok(())
}

impl CustomOp3 for ScanOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let gm = self.geom;
        expect_len(l1, gm.bdl(), "u")?;
        expect_len(l2, gm.bdl(), "delta")?;
        expect_len(l3, gm.offsets()[6], "the packed inputs")?;
        let dtype = s1.dtype();
        if s2.dtype() != dtype || s3.dtype() != dtype {
            candle_core::bail!("{OP}: inputs of different dtypes");
        }
        let u = f32_view(s1, l1, OP)?;
        let delta = f32_view(s2, l2, OP)?;
        let rest = f32_view(s3, l3, OP)?;
        let (out, ckpt) = forward(&gm, &u, &delta, &rest, self.save);
        if self.save {
            *self.ckpt.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(ckpt));
        }
        let shape = if gm.last {
            Shape::from(gm.out_len())
        } else {
            Shape::from((gm.b, gm.d, gm.l))
        };
        Ok((store(dtype, out, OP)?, shape))
    }

    fn bwd(
        &self,
        u: &Tensor,
        delta: &Tensor,
        rest: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let gm = self.geom;
        let dtype = u.dtype();
        let (u, delta, rest) = (u.contiguous()?, delta.contiguous()?, rest.contiguous()?);
        let grad = grad_res.contiguous()?.to_dtype(dtype)?;
        let saved = self.ckpt.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (gu, gdelta, grest) = {
            let (us, ul) = u.storage_and_layout();
            let (ds, dl) = delta.storage_and_layout();
            let (rs, rl) = rest.storage_and_layout();
            let (gs, gl) = grad.storage_and_layout();
            let (us, ds, rs, gs) = (cpu_of(&us)?, cpu_of(&ds)?, cpu_of(&rs)?, cpu_of(&gs)?);
            expect_len(ul, gm.bdl(), "u")?;
            expect_len(dl, gm.bdl(), "delta")?;
            expect_len(rl, gm.offsets()[6], "the packed inputs")?;
            expect_len(gl, gm.out_len(), "the output gradient")?;
            let u = f32_view(us, ul, OP)?;
            let delta = f32_view(ds, dl, OP)?;
            let rest = f32_view(rs, rl, OP)?;
            let g = f32_view(gs, gl, OP)?;
            let ckpt = match saved {
                Some(c) => c,
                None => Arc::new(forward(&gm, &u, &delta, &rest, true).1),
            };
            backward(&gm, &u, &delta, &rest, &g, &ckpt)
        };
        let dev = &Device::Cpu;
        let shape = (gm.b, gm.d, gm.l);
        let gu = Tensor::from_vec(gu, shape, dev)?.to_dtype(dtype)?;
        let gdelta = Tensor::from_vec(gdelta, shape, dev)?.to_dtype(dtype)?;
        let n_rest = grest.len();
        let grest = Tensor::from_vec(grest, n_rest, dev)?.to_dtype(dtype)?;
        Ok((Some(gu), Some(gdelta), Some(grest)))
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

type Blk = [f32; W];

/// $\ln(1 + e^v)$ as $\max(v, 0) + \ln(1 + e^{-|v|})$, the logarithm from
/// $\ln(1+e) = 2\thinspace\mathrm{atanh}(s)$, $s = e/(2+e) \le 1/3$, seven terms of the series
/// (relative error below $10^{-8}$ plus the exponential's $2 \cdot 10^{-7}$); branch-free so it
/// vectorises.
#[inline(always)]
fn softplus(v: f32) -> f32 {
    let e = exp_approx(-v.abs());
    let s = e / (2.0 + e);
    let s2 = s * s;
    let mut p = 1.0 / 13.0;
    p = p * s2 + 1.0 / 11.0;
    p = p * s2 + 1.0 / 9.0;
    p = p * s2 + 1.0 / 7.0;
    p = p * s2 + 1.0 / 5.0;
    p = p * s2 + 1.0 / 3.0;
    p = p * s2 + 1.0;
    v.max(0.0) + 2.0 * s * p
}

/// Coefficients of $2^f$ on $f \in [-1/2, 1/2]$, degree 6 (a Chebyshev fit weighted for
/// relative error; $1.9 \cdot 10^{-9}$ in exact arithmetic, about $10^{-7}$ in f32).
const EXP2_POLY: [f32; 7] = [
    1.0,
    std::f32::consts::LN_2,
    0.240_226_46,
    0.055_503_29,
    0.009_618_52,
    0.001_339_986,
    0.000_153_375_77,
];

/// $2^x$ from $x = n + f$, $n = \mathrm{round}(x)$: $2^n$ built in the exponent bits times a
/// polynomial in $f$. Relative error below $2 \cdot 10^{-7}$ (unit test) on $[-126, 127]$; below
/// $-126$ (and `-inf`) it returns 0, in $(127, 128)$ $2^{127}$, from 128 on (where $2^x$
/// overflows f32) `+inf`, so that an infinite $\Delta A$ stays infinite; NaN stays NaN. The kernels
/// get $e^{\Delta A}$ as $2^{\Delta \cdot (A \log_2 e)}$ with $A \log_2 e$ computed once per
/// channel (one multiply per state and step less than a natural-base exponential).
#[inline(always)]
fn exp2_approx(x: f32) -> f32 {
    // 1.5 * 2^23: adding it rounds to an integer (to nearest even) held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let v = x.clamp(-126.0, 127.0);
    let n = (v + MAGIC) - MAGIC;
    let f = v - n;
    let mut p = EXP2_POLY[6];
    for c in EXP2_POLY[..6].iter().rev() {
        p = p * f + c;
    }
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -126.0 {
        0.0
    } else if x >= 128.0 {
        f32::INFINITY
    } else {
        p * scale
    }
}

/// $1 / (1 + e^{-v})$.
#[inline(always)]
fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + exp_approx(-v))
}

/// Sum of the 8 lanes as a tree (vector shuffles, not a serial chain).
#[inline(always)]
fn hsum(a: Blk) -> f32 {
    let s = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (s[0] + s[2]) + (s[1] + s[3])
}

/// The read-only inputs in kernel layout.
struct Prepared<'a> {
    u: &'a [f32],
    delta: &'a [f32],
    z: &'a [f32],
    dskip: &'a [f32],
    bias: &'a [f32],
    /// `a` and `a · log2(e)` as `(D, nbk)` blocks, zero-padded.
    a: Vec<Blk>,
    a2: Vec<Blk>,
    /// `b`, `c` transposed to `(B, G, L, nbk)` blocks, zero-padded.
    bt: Vec<Blk>,
    ct: Vec<Blk>,
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

fn prepare<'a>(gm: &Geom, u: &'a [f32], delta: &'a [f32], rest: &'a [f32]) -> Prepared<'a> {
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
fn rows_per_task(gm: &Geom) -> usize {
    (TASK_STEPS / gm.l).clamp(1, gm.rows().div_ceil(crate::ops::cpu::num_threads()).max(1))
}

/// Runs `f(first_row, outs, scratch)` over tasks of `per_task` rows; `outs[k]` is the task's
/// part of output `k`, which holds `stride_k` values per row (0: absent, an empty slice).
/// Returns the per-worker scratch states.
fn par_rows<S: Default + Send, const K: usize>(
    rows: usize,
    per_task: usize,
    outs: [(&mut [f32], usize); K],
    f: impl Fn(usize, &mut [&mut [f32]; K], &mut S) + Sync + Send,
) -> Vec<S> {
    let tasks = rows.div_ceil(per_task);
    let mut iters: Vec<std::vec::IntoIter<&mut [f32]>> = outs
        .into_iter()
        .map(|(buf, stride)| {
            if stride == 0 {
                Vec::new().into_iter()
            } else {
                buf.chunks_mut(stride * per_task)
                    .collect::<Vec<_>>()
                    .into_iter()
            }
        })
        .collect();
    let slots: Vec<Mutex<[&mut [f32]; K]>> = (0..tasks)
        .map(|_| Mutex::new(std::array::from_fn(|k| iters[k].next().unwrap_or_default())))
        .collect();
    par_fold(tasks, |i, scr: &mut S| {
        let mut parts = slots[i].lock().unwrap_or_else(|e| e.into_inner());
        f(i * per_task, &mut parts, scr);
    })
}

/// Per-worker scratch of the forward.
#[derive(Default)]
struct FwdScratch {
    dt: Vec<f32>,
    du: Vec<f32>,
    ck: ChunkScratch,
}

/// Forward over all rows: returns the flat output (`[y | last state]`) and, if `want_ckpt`,
/// the state checkpoints `(B·D, nck, nbk·W)`.
fn forward(
    gm: &Geom,
    u: &[f32],
    delta: &[f32],
    rest: &[f32],
    want_ckpt: bool,
) -> (Vec<f32>, Vec<f32>) {
    let p = prepare(gm, u, delta, rest);
    let simd = detect_simd();
    let wide = use_avx512(gm);
    let mut out = vec![0f32; gm.out_len()];
    let ck_stride = if want_ckpt { gm.nck() * gm.nbk * W } else { 0 };
    let mut ckpt = vec![0f32; gm.rows() * ck_stride];
    let (y, last) = out.split_at_mut(gm.bdl());
    let last_stride = if gm.last { gm.n } else { 0 };
    let per = rows_per_task(gm);
    par_rows(
        gm.rows(),
        per,
        [(y, gm.l), (last, last_stride), (&mut ckpt, ck_stride)],
        |r0, outs, scr: &mut FwdScratch| {
            let [y, last, ck] = outs;
            match simd {
                // SAFETY: `detect_simd` returned `Avx2Fma` only after detecting AVX2 and FMA,
                // and `wide` (`use_avx512`) is true only after detecting AVX-512F.
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2Fma if wide => unsafe { fwd_rows_avx512(gm, &p, r0, y, last, ck, scr) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2Fma => unsafe { fwd_rows_avx2(gm, &p, r0, y, last, ck, scr) },
                Simd::Portable | Simd::Fma => {
                    fwd_rows::<Portable>((), gm, &p, r0, y, last, ck, scr)
                }
            }
        },
    );
    (out, ckpt)
}

/// Whether the AVX-512 kernels run: the CPU has AVX-512F and the states fill whole 16-lane
/// registers (`N` padded to a multiple of 16).
fn use_avx512(gm: &Geom) -> bool {
    #[cfg(target_arch = "x86_64")]
    if gm.nbk.is_multiple_of(2) && is_x86_feature_detected!("avx512f") {
        return true;
    }
    let _ = gm;
    false
}

/// [`fwd_rows`] on AVX-512 registers.
///
/// # Safety
/// The CPU supports AVX-512F, AVX2 and FMA (the caller matched `detect_simd()` to `Avx2Fma`
/// and `use_avx512` returned true).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn fwd_rows_avx512(
    gm: &Geom,
    p: &Prepared,
    r0: usize,
    y: &mut [f32],
    last: &mut [f32],
    ck: &mut [f32],
    scr: &mut FwdScratch,
) {
    // SAFETY: this function's contract: the CPU has AVX-512F, AVX2 and FMA.
    let isa = unsafe { HasAvx512::new_unchecked() };
    fwd_rows::<Avx512>(isa, gm, p, r0, y, last, ck, scr)
}

/// [`fwd_rows`] on AVX2 registers.
///
/// # Safety
/// The CPU supports AVX2 and FMA (the caller matched `detect_simd()` to `Avx2Fma`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fwd_rows_avx2(
    gm: &Geom,
    p: &Prepared,
    r0: usize,
    y: &mut [f32],
    last: &mut [f32],
    ck: &mut [f32],
    scr: &mut FwdScratch,
) {
    // SAFETY: this function's contract: the CPU has AVX2 and FMA.
    let isa = unsafe { HasAvx2Fma::new_unchecked() };
    fwd_rows::<Avx>(isa, gm, p, r0, y, last, ck, scr)
}

/// The forward of the rows `r0..` whose outputs `y` (L per row), `last` (N per row or empty)
/// and `ck` (checkpoints per row or empty) are given.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fwd_rows<V: Vf>(
    isa: V::Isa,
    gm: &Geom,
    p: &Prepared,
    r0: usize,
    y: &mut [f32],
    last: &mut [f32],
    ck: &mut [f32],
    scr: &mut FwdScratch,
) {
    let (l, n, nbk) = (gm.l, gm.n, gm.nbk);
    let count = y.len() / l;
    let ck_stride = ck.len() / count;
    let dg = gm.d / gm.g;
    scr.dt.resize(l, 0.0);
    scr.du.resize(l, 0.0);
    scr.ck.size(gm.chunk);
    for i in 0..count {
        let row = r0 + i;
        let (bi, di) = (row / gm.d, row % gm.d);
        let gi = di / dg;
        let u = &p.u[row * l..(row + 1) * l];
        let delta = &p.delta[row * l..(row + 1) * l];
        let bias = if gm.has_bias { p.bias[di] } else { 0.0 };
        step_sizes(gm.softplus, bias, delta, u, &mut scr.dt, &mut scr.du);
        let yr = &mut y[i * l..(i + 1) * l];
        yr.fill(0.0);
        let ckr = &mut ck[i * ck_stride..(i + 1) * ck_stride];
        let bg = (bi * gm.g + gi) * l * nbk;
        let (bt, ct) = (&p.bt[bg..bg + l * nbk], &p.ct[bg..bg + l * nbk]);
        let a = &p.a[di * nbk..(di + 1) * nbk];
        let a2 = &p.a2[di * nbk..(di + 1) * nbk];
        let mut xlast = [[0f32; W]; MAX_NB];
        let mut g0 = 0;
        while g0 < nbk {
            let nb = (nbk - g0).min(MAX_NB);
            let args = GroupFwd {
                dt: &scr.dt,
                du: &scr.du,
                a: &a[g0..g0 + nb],
                a2: &a2[g0..g0 + nb],
                bt,
                ct,
                nbk,
                g0,
                chunk: gm.chunk,
            };
            match nb {
                1 => fwd_group::<V, 1>(isa, &args, yr, ckr, &mut xlast, &mut scr.ck),
                2 => fwd_group::<V, 2>(isa, &args, yr, ckr, &mut xlast, &mut scr.ck),
                3 => fwd_group::<V, 3>(isa, &args, yr, ckr, &mut xlast, &mut scr.ck),
                _ => fwd_group::<V, 4>(isa, &args, yr, ckr, &mut xlast, &mut scr.ck),
            }
            if !last.is_empty() {
                // The group's states, without the padding lanes past N.
                let lr = &mut last[i * n..(i + 1) * n];
                let states = xlast[..nb].iter().flatten();
                for (dst, v) in lr[g0 * W..].iter_mut().zip(states) {
                    *dst = *v;
                }
            }
            g0 += nb;
        }
        // Skip connection and gate.
        let dd = if gm.has_d { p.dskip[di] } else { 0.0 };
        for (yv, uv) in yr.iter_mut().zip(u) {
            *yv += dd * uv;
        }
        if gm.has_z {
            let z = &p.z[row * l..(row + 1) * l];
            for (yv, &zv) in yr.iter_mut().zip(z) {
                *yv *= zv * sigmoid(zv);
            }
        }
    }
}

/// `dt = softplus(delta + bias)` (or `delta + bias`) and `du = dt * u`.
#[inline(always)]
fn step_sizes(sp: bool, bias: f32, delta: &[f32], u: &[f32], dt: &mut [f32], du: &mut [f32]) {
    if sp {
        for (t, &v) in dt.iter_mut().zip(delta) {
            *t = softplus(v + bias);
        }
    } else {
        for (t, &v) in dt.iter_mut().zip(delta) {
            *t = v + bias;
        }
    }
    for ((w, &t), &uv) in du.iter_mut().zip(dt.iter()).zip(u) {
        *w = t * uv;
    }
}

/// The inputs of one group of state blocks of one row.
struct GroupFwd<'a> {
    dt: &'a [f32],
    du: &'a [f32],
    /// This group's blocks of `a` and of `a · log2(e)`.
    a: &'a [Blk],
    a2: &'a [Blk],
    /// The row's `(L, nbk)` blocks of B and C.
    bt: &'a [Blk],
    ct: &'a [Blk],
    nbk: usize,
    /// First block of the group.
    g0: usize,
    chunk: usize,
}

/// Phase one of a chunk, free of the recurrence (so it pipelines): for the steps `l0..l1`
/// and the group's `NB` blocks, `es = 2^(dt · A log2 e) = e^(dt A)` and `us = du · B`.
#[inline(always)]
fn decays_and_inputs<V: Vf, const NB: usize>(
    isa: V::Isa,
    p: &GroupFwd,
    a2: &[V; NB],
    l0: usize,
    l1: usize,
    es: &mut [Blk],
    us: &mut [Blk],
) {
    let (dts, dus) = (&p.dt[l0..l1], &p.du[l0..l1]);
    let bts = &p.bt[l0 * p.nbk..l1 * p.nbk];
    let es = &mut es[..(l1 - l0) * NB];
    let us = &mut us[..(l1 - l0) * NB];
    // One block at a time over the chunk: few live registers besides the constants.
    for (j, &aj) in a2.iter().take(NB / V::K).enumerate() {
        let (jb, col) = (j * V::K, p.g0 + j * V::K);
        let steps = es
            .chunks_exact_mut(NB)
            .zip(us.chunks_exact_mut(NB))
            .zip(dts.iter().zip(dus))
            .zip(bts.chunks_exact(p.nbk));
        for (((eo, uo), (&dt, &du)), bl) in steps {
            V::splat(isa, dt).mul(aj).exp2().store(&mut eo[jb..]);
            V::splat(isa, du)
                .mul(V::load(isa, &bl[col..]))
                .store(&mut uo[jb..]);
        }
    }
}

/// Phase two of a chunk: the recurrence `x = e · x + u` over the steps of `es`/`xs`, `NB`
/// blocks at a time, overwriting `xs` (the inputs `u`) with the states when `keep`; with
/// `accs` non-empty, `accs[i] = Σ_j x_j · C_j` (lane-wise; the lanes are summed later).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn recur<V: Vf, const NB: usize>(
    isa: V::Isa,
    p: &GroupFwd,
    l0: usize,
    x: &mut [V; NB],
    es: &[Blk],
    xs: &mut [Blk],
    accs: &mut [Blk],
    keep: bool,
) {
    let steps = es.len() / NB;
    let cts = &p.ct[l0 * p.nbk..(l0 + steps) * p.nbk];
    for (i, (eo, xo)) in es.chunks_exact(NB).zip(xs.chunks_exact_mut(NB)).enumerate() {
        for (j, xj) in x.iter_mut().take(NB / V::K).enumerate() {
            let jb = j * V::K;
            *xj = V::load(isa, &eo[jb..]).mul_add(*xj, V::load(isa, &xo[jb..]));
            if keep {
                xj.store(&mut xo[jb..]);
            }
        }
        if !accs.is_empty() {
            let cl = &cts[i * p.nbk + p.g0..i * p.nbk + p.g0 + NB];
            let mut acc = V::zero(isa);
            for j in 0..NB / V::K {
                acc = x[j].mul_add(V::load(isa, &cl[j * V::K..]), acc);
            }
            acc.store_folded(&mut accs[i]);
        }
    }
}

/// Runs `NB` state blocks over the whole sequence: adds their contribution to `y`, stores
/// their checkpoints in `ck` (unless empty) and their final state in `xlast[..NB]`.
#[inline(always)]
fn fwd_group<V: Vf, const NB: usize>(
    isa: V::Isa,
    p: &GroupFwd,
    y: &mut [f32],
    ck: &mut [f32],
    xlast: &mut [Blk; MAX_NB],
    scr: &mut ChunkScratch,
) {
    let l_len = p.dt.len();
    let mut a2 = [V::zero(isa); NB];
    for (j, av) in a2.iter_mut().take(NB / V::K).enumerate() {
        *av = V::load(isa, &p.a2[j * V::K..]);
    }
    let mut x = [V::zero(isa); NB];
    let mut l0 = 0;
    let mut k = 0;
    while l0 < l_len {
        let l1 = (l0 + p.chunk).min(l_len);
        if !ck.is_empty() {
            let mut blks = [[0f32; W]; NB];
            for (j, xv) in x.iter().take(NB / V::K).enumerate() {
                xv.store(&mut blks[j * V::K..]);
            }
            let o = (k * p.nbk + p.g0) * W;
            for (dst, v) in ck[o..o + NB * W].iter_mut().zip(blks.iter().flatten()) {
                *dst = *v;
            }
        }
        let n = (l1 - l0) * NB;
        decays_and_inputs::<V, NB>(isa, p, &a2, l0, l1, &mut scr.es, &mut scr.xs);
        let accs = &mut scr.accs[..l1 - l0];
        recur::<V, NB>(
            isa,
            p,
            l0,
            &mut x,
            &scr.es[..n],
            &mut scr.xs[..n],
            accs,
            false,
        );
        V::hsum_rows(isa, accs, &mut y[l0..l1]);
        l0 = l1;
        k += 1;
    }
    for (j, xv) in x.iter().take(NB / V::K).enumerate() {
        xv.store(&mut xlast[j * V::K..]);
    }
}

/// Per-worker chunk buffers of the group kernels (`chunk · MAX_NB` blocks, `chunk` rows).
#[derive(Default)]
struct ChunkScratch {
    es: Vec<Blk>,
    xs: Vec<Blk>,
    accs: Vec<Blk>,
    accs2: Vec<Blk>,
    s1: Vec<f32>,
    s2: Vec<f32>,
}

impl ChunkScratch {
    fn size(&mut self, chunk: usize) {
        self.es.resize(chunk * MAX_NB, [0.0; W]);
        self.xs.resize(chunk * MAX_NB, [0.0; W]);
        self.accs.resize(chunk, [0.0; W]);
        self.accs2.resize(chunk, [0.0; W]);
        self.s1.resize(chunk, 0.0);
        self.s2.resize(chunk, 0.0);
    }
}

/// Per-worker scratch and partial sums of the backward.
#[derive(Default)]
struct BwdScratch {
    dt: Vec<f32>,
    du: Vec<f32>,
    go: Vec<f32>,
    gdt: Vec<f32>,
    y: Vec<f32>,
    ck: ChunkScratch,
    /// Partial gradients of B and C in the `(B, G, L, nbk)` block layout.
    gb: Vec<Blk>,
    gc: Vec<Blk>,
}

/// Backward over all rows; returns `(grad u, grad delta, grad of the packed rest)`.
fn backward(
    gm: &Geom,
    u: &[f32],
    delta: &[f32],
    rest: &[f32],
    g: &[f32],
    ckpt: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let p = prepare(gm, u, delta, rest);
    let simd = detect_simd();
    let wide = use_avx512(gm);
    let (gy, gs) = g.split_at(gm.bdl());
    let rows = gm.rows();
    let mut gu = vec![0f32; gm.bdl()];
    let mut gdelta = vec![0f32; gm.bdl()];
    let z_stride = if gm.has_z { gm.l } else { 0 };
    let mut gz = vec![0f32; rows * z_stride];
    let mut ga = vec![0f32; rows * gm.nbk * W];
    let mut gd = vec![0f32; rows];
    let mut gbias = vec![0f32; rows];
    let ck_stride = gm.nck() * gm.nbk * W;
    let per = rows_per_task(gm);
    let ctx = BwdCtx {
        gm,
        p: &p,
        gy,
        gs,
        ckpt,
        ck_stride,
    };
    let states = par_rows(
        rows,
        per,
        [
            (&mut gu, gm.l),
            (&mut gdelta, gm.l),
            (&mut gz, z_stride),
            (&mut ga, gm.nbk * W),
            (&mut gd, 1),
            (&mut gbias, 1),
        ],
        |r0, outs, scr: &mut BwdScratch| match simd {
            // SAFETY: `detect_simd` returned `Avx2Fma` only after detecting AVX2 and FMA,
            // and `wide` (`use_avx512`) is true only after detecting AVX-512F.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2Fma if wide => unsafe { bwd_rows_avx512(&ctx, r0, outs, scr) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2Fma => unsafe { bwd_rows_avx2(&ctx, r0, outs, scr) },
            Simd::Portable | Simd::Fma => bwd_rows::<Portable>((), &ctx, r0, outs, scr),
        },
    );
    // Reduce the per-worker B/C gradients and the per-row channel parameters.
    let (n, l, nbk) = (gm.n, gm.l, gm.nbk);
    let [zo, bo, co, ao, dof, bio, end] = gm.offsets();
    let mut grest = vec![0f32; end];
    grest[zo..bo].copy_from_slice(&gz);
    for (dst, pick) in [(bo, 0usize), (co, 1)] {
        let out = &mut grest[dst..dst + gm.bc_len()];
        for st in &states {
            let src = if pick == 0 { &st.gb } else { &st.gc };
            if src.is_empty() {
                continue;
            }
            for (o, blocks) in out.chunks_exact_mut(n * l).zip(src.chunks_exact(l * nbk)) {
                for s in 0..n {
                    let orow = &mut o[s * l..(s + 1) * l];
                    for (t, v) in orow.iter_mut().enumerate() {
                        *v += blocks[t * nbk + s / W][s % W];
                    }
                }
            }
        }
    }
    for row in 0..rows {
        let di = row % gm.d;
        for s in 0..n {
            grest[ao + di * n + s] += ga[row * nbk * W + s];
        }
        if gm.has_d {
            grest[dof + di] += gd[row];
        }
        if gm.has_bias {
            grest[bio + di] += gbias[row];
        }
    }
    (gu, gdelta, grest)
}

/// What every backward task reads.
struct BwdCtx<'a> {
    gm: &'a Geom,
    p: &'a Prepared<'a>,
    /// Gradient of the output `(B, D, L)`.
    gy: &'a [f32],
    /// Gradient of the last state `(B, D, N)`, or empty.
    gs: &'a [f32],
    ckpt: &'a [f32],
    ck_stride: usize,
}

/// [`bwd_rows`] on AVX-512 registers.
///
/// # Safety
/// The CPU supports AVX-512F, AVX2 and FMA (the caller matched `detect_simd()` to `Avx2Fma`
/// and `use_avx512` returned true).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn bwd_rows_avx512(c: &BwdCtx, r0: usize, outs: &mut [&mut [f32]; 6], scr: &mut BwdScratch) {
    // SAFETY: this function's contract: the CPU has AVX-512F, AVX2 and FMA.
    let isa = unsafe { HasAvx512::new_unchecked() };
    bwd_rows::<Avx512>(isa, c, r0, outs, scr)
}

/// [`bwd_rows`] on AVX2 registers.
///
/// # Safety
/// The CPU supports AVX2 and FMA (the caller matched `detect_simd()` to `Avx2Fma`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bwd_rows_avx2(c: &BwdCtx, r0: usize, outs: &mut [&mut [f32]; 6], scr: &mut BwdScratch) {
    // SAFETY: this function's contract: the CPU has AVX2 and FMA.
    let isa = unsafe { HasAvx2Fma::new_unchecked() };
    bwd_rows::<Avx>(isa, c, r0, outs, scr)
}

/// The backward of the rows `r0..`; `outs` = the rows' grad u, grad delta, grad z (or empty),
/// partial grad a (`nbk·W` per row), partial grad d and grad delta_bias (one per row).
#[inline(always)]
fn bwd_rows<V: Vf>(
    isa: V::Isa,
    c: &BwdCtx,
    r0: usize,
    outs: &mut [&mut [f32]; 6],
    scr: &mut BwdScratch,
) {
    let gm = c.gm;
    let p = c.p;
    let (l, n, nbk) = (gm.l, gm.n, gm.nbk);
    let [gu, gdl, gz, ga, gd, gbias] = outs;
    let count = gu.len() / l;
    let dg = gm.d / gm.g;
    let chunk = gm.chunk;
    if scr.gb.is_empty() {
        scr.gb = vec![[0f32; W]; gm.b * gm.g * l * nbk];
        scr.gc = vec![[0f32; W]; gm.b * gm.g * l * nbk];
    }
    scr.dt.resize(l, 0.0);
    scr.du.resize(l, 0.0);
    scr.go.resize(l, 0.0);
    scr.gdt.resize(l, 0.0);
    scr.y.resize(l, 0.0);
    scr.ck.size(chunk);
    for i in 0..count {
        let row = r0 + i;
        let (bi, di) = (row / gm.d, row % gm.d);
        let gi = di / dg;
        let rl = row * l..(row + 1) * l;
        let u = &p.u[rl.clone()];
        let delta = &p.delta[rl.clone()];
        let gy = &c.gy[rl.clone()];
        let bias = if gm.has_bias { p.bias[di] } else { 0.0 };
        let dd = if gm.has_d { p.dskip[di] } else { 0.0 };
        step_sizes(gm.softplus, bias, delta, u, &mut scr.dt, &mut scr.du);
        // Gradient reaching y (before the gate).
        if gm.has_z {
            let z = &p.z[rl.clone()];
            for ((o, &g), &zv) in scr.go.iter_mut().zip(gy).zip(z) {
                *o = g * zv * sigmoid(zv);
            }
        } else {
            scr.go.copy_from_slice(gy);
        }
        let gur = &mut gu[i * l..(i + 1) * l];
        gur.fill(0.0);
        scr.gdt.fill(0.0);
        scr.y.fill(0.0);
        let bg = (bi * gm.g + gi) * l * nbk;
        let gs = if c.gs.is_empty() {
            &[][..]
        } else {
            &c.gs[row * n..(row + 1) * n]
        };
        let gar = &mut ga[i * nbk * W..(i + 1) * nbk * W];
        let mut g0 = 0;
        while g0 < nbk {
            let nb = (nbk - g0).min(MAX_NB);
            let args = GroupBwd {
                f: GroupFwd {
                    dt: &scr.dt,
                    du: &scr.du,
                    a: &p.a[di * nbk + g0..di * nbk + g0 + nb],
                    a2: &p.a2[di * nbk + g0..di * nbk + g0 + nb],
                    bt: &p.bt[bg..bg + l * nbk],
                    ct: &p.ct[bg..bg + l * nbk],
                    nbk,
                    g0,
                    chunk,
                },
                u,
                go: &scr.go,
                ck: &c.ckpt[row * c.ck_stride..(row + 1) * c.ck_stride],
                gs,
                n,
                want_y: gm.has_z,
            };
            let acc = GroupAcc {
                gb: &mut scr.gb[bg..bg + l * nbk],
                gc: &mut scr.gc[bg..bg + l * nbk],
                ga: gar,
                gu: gur,
                gdt: &mut scr.gdt,
                y: &mut scr.y,
                scr: &mut scr.ck,
            };
            match nb {
                1 => bwd_group::<V, 1>(isa, &args, acc),
                2 => bwd_group::<V, 2>(isa, &args, acc),
                3 => bwd_group::<V, 3>(isa, &args, acc),
                _ => bwd_group::<V, 4>(isa, &args, acc),
            }
            g0 += nb;
        }
        // Skip connection, gate, softplus and bias (zipped loops so that they vectorize).
        for (gv, &o) in gur.iter_mut().zip(&scr.go) {
            *gv += o * dd;
        }
        gd[i] = dot(&scr.go, u);
        if gm.has_z {
            let z = &p.z[rl];
            let gzr = &mut gz[i * l..(i + 1) * l];
            let vals = z.iter().zip(&scr.y).zip(u).zip(gy);
            for (g, (((&zv, &yv), &uv), &gv)) in gzr.iter_mut().zip(vals) {
                let s = sigmoid(zv);
                *g = gv * (yv + dd * uv) * s * (1.0 + zv * (1.0 - s));
            }
        }
        let gdr = &mut gdl[i * l..(i + 1) * l];
        if gm.softplus {
            for ((g, &gt), &dv) in gdr.iter_mut().zip(&scr.gdt).zip(delta) {
                *g = gt * sigmoid(dv + bias);
            }
        } else {
            gdr.copy_from_slice(&scr.gdt);
        }
        gbias[i] = sum(gdr);
    }
}

/// The inputs of one group's backward.
struct GroupBwd<'a> {
    f: GroupFwd<'a>,
    u: &'a [f32],
    /// Gradient reaching y (after the gate's factor).
    go: &'a [f32],
    /// The row's checkpoints.
    ck: &'a [f32],
    /// The row's last-state gradient (N values) or empty.
    gs: &'a [f32],
    n: usize,
    /// Accumulate the group's part of y (needed for the gate's gradient).
    want_y: bool,
}

/// Where one group's backward accumulates, and its chunk buffers.
struct GroupAcc<'a> {
    gb: &'a mut [Blk],
    gc: &'a mut [Blk],
    ga: &'a mut [f32],
    gu: &'a mut [f32],
    gdt: &'a mut [f32],
    y: &'a mut [f32],
    scr: &'a mut ChunkScratch,
}

/// The adjoint recurrence of `NB` state blocks, chunk by chunk from the end: recompute the
/// chunk's states and decays from its checkpoint, then walk it backwards.
#[inline(always)]
fn bwd_group<V: Vf, const NB: usize>(isa: V::Isa, p: &GroupBwd, acc: GroupAcc) {
    let f = &p.f;
    let GroupAcc {
        gb,
        gc,
        ga,
        gu,
        gdt,
        y,
        scr,
    } = acc;
    let l_len = f.dt.len();
    let mut a = [V::zero(isa); NB];
    let mut a2 = [V::zero(isa); NB];
    for j in 0..NB / V::K {
        a[j] = V::load(isa, &f.a[j * V::K..]);
        a2[j] = V::load(isa, &f.a2[j * V::K..]);
    }
    // h = dL/dx_t, starting from the last state's gradient.
    let mut h = [V::zero(isa); NB];
    if !p.gs.is_empty() {
        let mut blks = [[0f32; W]; NB];
        let s0 = f.g0 * W;
        let gs = &p.gs[s0.min(p.n)..(s0 + NB * W).min(p.n)];
        for (dst, v) in blks.iter_mut().flatten().zip(gs) {
            *dst = *v;
        }
        for (j, hv) in h.iter_mut().take(NB / V::K).enumerate() {
            *hv = V::load(isa, &blks[j * V::K..]);
        }
    }
    let mut gaa = [V::zero(isa); NB];
    let nck = l_len.div_ceil(f.chunk);
    for k in (0..nck).rev() {
        let l0 = k * f.chunk;
        let l1 = (l0 + f.chunk).min(l_len);
        let steps = l1 - l0;
        let mut x0 = [[0f32; W]; NB];
        for (j, xb) in x0.iter_mut().enumerate() {
            let o = (k * f.nbk + f.g0 + j) * W;
            xb.copy_from_slice(&p.ck[o..o + W]);
        }
        // Recompute the chunk's decays e^{dt A} and states x_t.
        let mut x = [V::zero(isa); NB];
        for (j, xv) in x.iter_mut().take(NB / V::K).enumerate() {
            *xv = V::load(isa, &x0[j * V::K..]);
        }
        let n = steps * NB;
        decays_and_inputs::<V, NB>(isa, f, &a2, l0, l1, &mut scr.es, &mut scr.xs);
        let accs: &mut [Blk] = if p.want_y {
            &mut scr.accs[..steps]
        } else {
            &mut []
        };
        recur::<V, NB>(
            isa,
            f,
            l0,
            &mut x,
            &scr.es[..n],
            &mut scr.xs[..n],
            accs,
            true,
        );
        if p.want_y {
            V::hsum_rows(isa, &scr.accs[..steps], &mut y[l0..l1]);
        }
        // Walk back through the chunk; the per-step lane sums of h·B and of
        // h·x_{t-1}·e·A go to `accs` / `accs2` and are reduced after the walk.
        let (es, xs) = (&scr.es[..n], &scr.xs[..n]);
        let (sbs, sxs) = (&mut scr.accs[..steps], &mut scr.accs2[..steps]);
        let r = l0 * f.nbk..l1 * f.nbk;
        let (bts, cts) = (&f.bt[r.clone()], &f.ct[r.clone()]);
        let (gbs, gcs) = (&mut gb[r.clone()], &mut gc[r]);
        let (dus, gos, dts) = (&f.du[l0..l1], &p.go[l0..l1], &f.dt[l0..l1]);
        for i in (0..steps).rev() {
            let (du, gy, dt) = (
                V::splat(isa, dus[i]),
                V::splat(isa, gos[i]),
                V::splat(isa, dts[i]),
            );
            let o = i * f.nbk + f.g0..i * f.nbk + f.g0 + NB;
            let (bl, cl) = (&bts[o.clone()], &cts[o.clone()]);
            let (gbl, gcl) = (&mut gbs[o.clone()], &mut gcs[o]);
            let xt = &xs[i * NB..(i + 1) * NB];
            let et = &es[i * NB..(i + 1) * NB];
            let xp: &[Blk] = if i > 0 {
                &xs[(i - 1) * NB..i * NB]
            } else {
                &x0[..]
            };
            let mut sb = V::zero(isa);
            let mut sx = V::zero(isa);
            for j in 0..NB / V::K {
                let jb = j * V::K;
                let e = V::load(isa, &et[jb..]);
                let hv = gy.mul_add(V::load(isa, &cl[jb..]), h[j]);
                gy.mul_add(V::load(isa, &xt[jb..]), V::load(isa, &gcl[jb..]))
                    .store(&mut gcl[jb..]);
                du.mul_add(hv, V::load(isa, &gbl[jb..]))
                    .store(&mut gbl[jb..]);
                let w = hv.mul(V::load(isa, &xp[jb..])).mul(e);
                gaa[j] = w.mul_add(dt, gaa[j]);
                sx = w.mul_add(a[j], sx);
                sb = hv.mul_add(V::load(isa, &bl[jb..]), sb);
                h[j] = hv.mul(e);
            }
            sb.store_folded(&mut sbs[i]);
            sx.store_folded(&mut sxs[i]);
        }
        let (s1, s2) = (&mut scr.s1[..steps], &mut scr.s2[..steps]);
        s1.fill(0.0);
        s2.fill(0.0);
        V::hsum_rows(isa, sbs, s1);
        V::hsum_rows(isa, sxs, s2);
        let (gus, gdts, us) = (&mut gu[l0..l1], &mut gdt[l0..l1], &p.u[l0..l1]);
        for ((((gu, gd), &dt), &uv), (&a1, &a2)) in gus
            .iter_mut()
            .zip(gdts.iter_mut())
            .zip(dts)
            .zip(us)
            .zip(s1.iter().zip(s2.iter()))
        {
            *gu += dt * a1;
            *gd += a2 + uv * a1;
        }
    }
    let mut blks = [[0f32; W]; NB];
    for (j, gv) in gaa.iter().take(NB / V::K).enumerate() {
        gv.store(&mut blks[j * V::K..]);
    }
    let s0 = f.g0 * W;
    for (dst, v) in ga[s0..s0 + NB * W].iter_mut().zip(blks.iter().flatten()) {
        *dst += v;
    }
}

// ---------------------------------------------------------------------------------------------
// 8-lane vectors
// ---------------------------------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
use lanes::{Avx, Avx512, HasAvx2Fma, HasAvx512};
use lanes::{Portable, Vf};

/// The vector abstraction of the group kernels, in its own module so that its privacy enforces
/// [`Vf`]'s soundness invariant: nothing outside can build a vector register or a feature token
/// except through an `unsafe` constructor.
mod lanes {
    use super::{exp2_approx, hsum, Blk, EXP2_POLY, W};

    /// Eight f32 lanes: the state block the group kernels work on. [`Portable`] is plain arrays;
    /// [`Avx`] is one AVX2 register, [`Avx512`] one AVX-512 register (two blocks).
    ///
    /// # Soundness
    /// The methods are safe although [`Avx`] and [`Avx512`] run CPU-specific intrinsics: every
    /// function that makes a vector out of nothing (`zero`, `splat`, `load`, and the static
    /// `hsum_rows`) takes a [`Vf::Isa`] token, a zero-sized proof that the CPU has the features
    /// ([`HasAvx2Fma`], [`HasAvx512`]; `()` for [`Portable`]). The tokens and the registers'
    /// fields are private to this module, so outside it a vector exists only if a token did, and a
    /// token only comes from an `unsafe` constructor whose caller vouches for the features (the
    /// `#[target_feature]` kernels, dispatched after `detect_simd` / `use_avx512`). The methods that
    /// take `self` need no token: the value is the proof.
    pub(super) trait Vf: Copy {
        /// The proof that this implementor's instructions run on this CPU.
        type Isa: Copy;
        fn zero(isa: Self::Isa) -> Self;
        fn splat(isa: Self::Isa, v: f32) -> Self;
        /// State blocks per vector (1: 8 lanes, 2: 16 lanes).
        const K: usize;
        /// The first `K` blocks of `b`.
        fn load(isa: Self::Isa, b: &[Blk]) -> Self;
        /// Into the first `K` blocks of `b`.
        fn store(self, b: &mut [Blk]);
        /// The `K` blocks summed lane-wise into one.
        fn store_folded(self, b: &mut Blk);
        fn mul(self, o: Self) -> Self;
        /// `self * m + a`.
        fn mul_add(self, m: Self, a: Self) -> Self;
        /// [`exp2_approx`] on every lane.
        fn exp2(self) -> Self;
        /// `dst[t] += hsum(src[t])` for every row.
        #[inline(always)]
        fn hsum_rows(isa: Self::Isa, src: &[Blk], dst: &mut [f32]) {
            let _ = isa;
            for (d, s) in dst.iter_mut().zip(src) {
                *d += hsum(*s);
            }
        }
    }

    /// Portable lanes (what the compiler makes of the array loops).
    #[derive(Clone, Copy)]
    pub(super) struct Portable(pub(super) Blk);

    impl Vf for Portable {
        type Isa = ();
        #[inline(always)]
        fn zero((): ()) -> Self {
            Portable([0.0; W])
        }
        #[inline(always)]
        fn splat((): (), v: f32) -> Self {
            Portable([v; W])
        }
        const K: usize = 1;
        #[inline(always)]
        fn load((): (), b: &[Blk]) -> Self {
            Portable(b[0])
        }
        #[inline(always)]
        fn store(self, b: &mut [Blk]) {
            b[0] = self.0;
        }
        #[inline(always)]
        fn store_folded(self, b: &mut Blk) {
            *b = self.0;
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            Portable(std::array::from_fn(|q| self.0[q] * o.0[q]))
        }
        #[inline(always)]
        fn mul_add(self, m: Self, a: Self) -> Self {
            Portable(std::array::from_fn(|q| self.0[q] * m.0[q] + a.0[q]))
        }
        #[inline(always)]
        fn exp2(self) -> Self {
            Portable(std::array::from_fn(|q| exp2_approx(self.0[q])))
        }
    }

    /// Proof that the CPU has AVX2 and FMA (see [`Vf`]'s soundness notes).
    #[cfg(target_arch = "x86_64")]
    #[derive(Clone, Copy)]
    pub(super) struct HasAvx2Fma(());

    #[cfg(target_arch = "x86_64")]
    impl HasAvx2Fma {
        /// The token, unchecked.
        ///
        /// # Safety
        /// The CPU supports AVX2 and FMA.
        #[inline(always)]
        pub(super) unsafe fn new_unchecked() -> Self {
            HasAvx2Fma(())
        }
    }

    /// Proof that the CPU has AVX-512F, AVX2 and FMA (see [`Vf`]'s soundness notes).
    #[cfg(target_arch = "x86_64")]
    #[derive(Clone, Copy)]
    pub(super) struct HasAvx512(());

    #[cfg(target_arch = "x86_64")]
    impl HasAvx512 {
        /// The token, unchecked.
        ///
        /// # Safety
        /// The CPU supports AVX-512F, AVX2 and FMA.
        #[inline(always)]
        pub(super) unsafe fn new_unchecked() -> Self {
            HasAvx512(())
        }

        /// AVX-512F machines in this sense also have AVX2 and FMA.
        #[inline(always)]
        fn avx2(self) -> HasAvx2Fma {
            HasAvx2Fma(())
        }
    }

    /// One AVX2 register. Only made by the constructors, which take a [`HasAvx2Fma`], so a value
    /// proves that AVX2 and FMA are available: that is the invariant every `SAFETY` below relies on.
    #[cfg(target_arch = "x86_64")]
    #[derive(Clone, Copy)]
    pub(super) struct Avx(std::arch::x86_64::__m256);

    #[cfg(target_arch = "x86_64")]
    impl Vf for Avx {
        type Isa = HasAvx2Fma;
        #[inline(always)]
        fn zero(_: HasAvx2Fma) -> Self {
            // SAFETY: the token proves AVX2 and FMA are available.
            unsafe { Avx(std::arch::x86_64::_mm256_setzero_ps()) }
        }
        #[inline(always)]
        fn splat(_: HasAvx2Fma, v: f32) -> Self {
            // SAFETY: the token proves AVX2 and FMA are available.
            unsafe { Avx(std::arch::x86_64::_mm256_set1_ps(v)) }
        }
        const K: usize = 1;
        #[inline(always)]
        fn load(_: HasAvx2Fma, b: &[Blk]) -> Self {
            // SAFETY: the token proves AVX2 is available; `b[0]` (bounds-checked) is 8 f32, the
            // 32 bytes an unaligned load reads.
            unsafe { Avx(std::arch::x86_64::_mm256_loadu_ps(b[0].as_ptr())) }
        }
        #[inline(always)]
        fn store(self, b: &mut [Blk]) {
            // SAFETY: `self` exists, so AVX2 is available (type docs); `b[0]` (bounds-checked) is
            // 8 writable f32, the 32 bytes an unaligned store writes.
            unsafe { std::arch::x86_64::_mm256_storeu_ps(b[0].as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn store_folded(self, b: &mut Blk) {
            // SAFETY: `self` exists, so AVX2 is available (type docs); `b` is 8 writable f32.
            unsafe { std::arch::x86_64::_mm256_storeu_ps(b.as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: `self` exists, so AVX2 is available (type docs).
            unsafe { Avx(std::arch::x86_64::_mm256_mul_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn mul_add(self, m: Self, a: Self) -> Self {
            // SAFETY: `self` exists, so AVX2 and FMA are available (type docs).
            unsafe { Avx(std::arch::x86_64::_mm256_fmadd_ps(self.0, m.0, a.0)) }
        }
        #[inline(always)]
        fn exp2(self) -> Self {
            use std::arch::x86_64::*;
            // The algorithm of `exp2_approx`, lane-wise.
            // SAFETY: `self` exists, so AVX2 and FMA are available (type docs); register-only
            // arithmetic, no memory access.
            unsafe {
                let x = self.0;
                // max/min return their second operand when one is NaN: NaN stays NaN.
                let v = _mm256_min_ps(
                    _mm256_set1_ps(127.0),
                    _mm256_max_ps(_mm256_set1_ps(-126.0), x),
                );
                let n = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                let f = _mm256_sub_ps(v, n);
                let mut p = _mm256_set1_ps(EXP2_POLY[6]);
                p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_POLY[5]));
                p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_POLY[4]));
                p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_POLY[3]));
                p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_POLY[2]));
                p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_POLY[1]));
                p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_POLY[0]));
                let k = _mm256_cvtps_epi32(n);
                let scale = _mm256_castsi256_ps(_mm256_slli_epi32(
                    _mm256_add_epi32(k, _mm256_set1_epi32(127)),
                    23,
                ));
                let y = _mm256_mul_ps(p, scale);
                // Below -126 (and -inf): exactly 0, as `exp2_approx`.
                let under = _mm256_cmp_ps(x, _mm256_set1_ps(-126.0), _CMP_LT_OQ);
                // From 128 on (and +inf): +inf, not a clamped 2^127.
                let over = _mm256_cmp_ps(x, _mm256_set1_ps(128.0), _CMP_GE_OQ);
                let y = _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), over);
                Avx(_mm256_andnot_ps(under, y))
            }
        }
        #[inline(always)]
        fn hsum_rows(_: HasAvx2Fma, src: &[Blk], dst: &mut [f32]) {
            use std::arch::x86_64::*;
            let mut rows = src.chunks_exact(8);
            let mut outs = dst.chunks_exact_mut(8);
            for (v, d) in (&mut rows).zip(&mut outs) {
                // Eight horizontal sums at once: two rounds of pairwise adds, then the halves.
                // SAFETY: the token proves AVX2 is available; `v` is 8 blocks and `d` 8 f32
                // (`chunks_exact`), so each load reads one whole block `v[0..8]` and the load and
                // store of `d` cover exactly its 8 f32.
                unsafe {
                    let h01 = _mm256_hadd_ps(
                        _mm256_loadu_ps(v[0].as_ptr()),
                        _mm256_loadu_ps(v[1].as_ptr()),
                    );
                    let h23 = _mm256_hadd_ps(
                        _mm256_loadu_ps(v[2].as_ptr()),
                        _mm256_loadu_ps(v[3].as_ptr()),
                    );
                    let h45 = _mm256_hadd_ps(
                        _mm256_loadu_ps(v[4].as_ptr()),
                        _mm256_loadu_ps(v[5].as_ptr()),
                    );
                    let h67 = _mm256_hadd_ps(
                        _mm256_loadu_ps(v[6].as_ptr()),
                        _mm256_loadu_ps(v[7].as_ptr()),
                    );
                    let h03 = _mm256_hadd_ps(h01, h23);
                    let h47 = _mm256_hadd_ps(h45, h67);
                    let lo = _mm256_permute2f128_ps(h03, h47, 0x20);
                    let hi = _mm256_permute2f128_ps(h03, h47, 0x31);
                    let acc = _mm256_add_ps(_mm256_loadu_ps(d.as_ptr()), _mm256_add_ps(lo, hi));
                    _mm256_storeu_ps(d.as_mut_ptr(), acc);
                }
            }
            for (d, s) in outs.into_remainder().iter_mut().zip(rows.remainder()) {
                *d += hsum(*s);
            }
        }
    }

    /// One AVX-512 register: two state blocks (16 lanes, all of `N = 16` at once). Only made by
    /// the constructors, which take a [`HasAvx512`], so a value proves that AVX-512F, AVX2 and FMA
    /// are available: that is the invariant every `SAFETY` below relies on.
    #[cfg(target_arch = "x86_64")]
    #[derive(Clone, Copy)]
    pub(super) struct Avx512(std::arch::x86_64::__m512);

    #[cfg(target_arch = "x86_64")]
    impl Vf for Avx512 {
        type Isa = HasAvx512;
        const K: usize = 2;
        #[inline(always)]
        fn zero(_: HasAvx512) -> Self {
            // SAFETY: the token proves AVX-512F is available.
            unsafe { Avx512(std::arch::x86_64::_mm512_setzero_ps()) }
        }
        #[inline(always)]
        fn splat(_: HasAvx512, v: f32) -> Self {
            // SAFETY: the token proves AVX-512F is available.
            unsafe { Avx512(std::arch::x86_64::_mm512_set1_ps(v)) }
        }
        #[inline(always)]
        fn load(_: HasAvx512, b: &[Blk]) -> Self {
            let b = &b[..2];
            // SAFETY: the token proves AVX-512F is available; `b` (bounds-checked) is two blocks,
            // 16 contiguous f32 (arrays have no padding), the 64 bytes an unaligned load reads.
            unsafe { Avx512(std::arch::x86_64::_mm512_loadu_ps(b.as_ptr().cast::<f32>())) }
        }
        #[inline(always)]
        fn store(self, b: &mut [Blk]) {
            let b = &mut b[..2];
            // SAFETY: `self` exists, so AVX-512F is available (type docs); `b` (bounds-checked) is
            // 16 contiguous writable f32, the 64 bytes an unaligned store writes.
            unsafe { std::arch::x86_64::_mm512_storeu_ps(b.as_mut_ptr().cast::<f32>(), self.0) }
        }
        #[inline(always)]
        fn store_folded(self, b: &mut Blk) {
            use std::arch::x86_64::*;
            // SAFETY: `self` exists, so AVX-512F and AVX2 are available (type docs); the store
            // writes the 8 f32 of `b`.
            unsafe {
                let lo = _mm512_castps512_ps256(self.0);
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self.0)));
                _mm256_storeu_ps(b.as_mut_ptr(), _mm256_add_ps(lo, hi));
            }
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: `self` exists, so AVX-512F is available (type docs).
            unsafe { Avx512(std::arch::x86_64::_mm512_mul_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn mul_add(self, m: Self, a: Self) -> Self {
            // SAFETY: `self` exists, so AVX-512F is available (type docs).
            unsafe { Avx512(std::arch::x86_64::_mm512_fmadd_ps(self.0, m.0, a.0)) }
        }
        #[inline(always)]
        fn exp2(self) -> Self {
            use std::arch::x86_64::*;
            // The algorithm of `exp2_approx`, lane-wise.
            // SAFETY: `self` exists, so AVX-512F is available (type docs); register-only
            // arithmetic, no memory access.
            unsafe {
                let x = self.0;
                let v = _mm512_min_ps(
                    _mm512_set1_ps(127.0),
                    _mm512_max_ps(_mm512_set1_ps(-126.0), x),
                );
                let magic = _mm512_set1_ps(12_582_912.0);
                let t = _mm512_add_ps(v, magic);
                let n = _mm512_sub_ps(t, magic);
                let f = _mm512_sub_ps(v, n);
                let mut p = _mm512_set1_ps(EXP2_POLY[6]);
                p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_POLY[5]));
                p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_POLY[4]));
                p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_POLY[3]));
                p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_POLY[2]));
                p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_POLY[1]));
                p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_POLY[0]));
                // The low mantissa bits of t hold n (+ 2^22); shifted into the exponent field
                // after adding the bias, only n + 127 survives.
                let k = _mm512_add_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(127));
                let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(k));
                let y = _mm512_mul_ps(p, scale);
                let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(-126.0));
                // From 128 on (and +inf): +inf, not a clamped 2^127.
                let over = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(128.0));
                let y = _mm512_mask_mov_ps(y, over, _mm512_set1_ps(f32::INFINITY));
                Avx512(_mm512_maskz_mov_ps(!under, y))
            }
        }
        #[inline(always)]
        fn hsum_rows(isa: HasAvx512, src: &[Blk], dst: &mut [f32]) {
            <Avx as Vf>::hsum_rows(isa.avx2(), src, dst)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{exp2_approx, sigmoid, softplus, Portable, Vf};

    #[test]
    fn exp2_within_documented_error() {
        let mut worst = 0f64;
        let check = |x: f32, got: f32, worst: &mut f64| {
            let want = 2f64.powf(x as f64);
            *worst = worst.max((got as f64 - want).abs() / want);
        };
        for i in 0..=2_000_000 {
            let x = -126.0 + 253.0 * i as f32 / 2_000_000.0;
            check(x, exp2_approx(x), &mut worst);
            check(x, Portable::splat((), x).exp2().0[3], &mut worst);
            #[cfg(target_arch = "x86_64")]
            if super::detect_simd() == super::Simd::Avx2Fma {
                // SAFETY: `detect_simd` found AVX2 and FMA.
                check(x, unsafe { avx_exp2(x) }, &mut worst);
            }
            #[cfg(target_arch = "x86_64")]
            if super::detect_simd() == super::Simd::Avx2Fma && is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX2, FMA (`detect_simd`) and AVX-512F were detected.
                check(x, unsafe { avx512_exp2(x) }, &mut worst);
            }
        }
        assert!(worst < 2e-7, "max relative error {worst:e}");
        assert_eq!(exp2_approx(0.0), 1.0);
        assert_eq!(exp2_approx(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp2_approx(-200.0), 0.0);
        assert!(exp2_approx(f32::NAN).is_nan());
        assert_eq!(exp2_approx(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp2_approx(128.0), f32::INFINITY);
        #[cfg(target_arch = "x86_64")]
        if super::detect_simd() == super::Simd::Avx2Fma {
            for x in [
                f32::NEG_INFINITY,
                -200.0,
                0.0,
                1.0,
                -1.0,
                128.0,
                f32::INFINITY,
            ] {
                // SAFETY: `detect_simd` found AVX2 and FMA (checked above).
                assert_eq!(unsafe { avx_exp2(x) }, exp2_approx(x), "{x}");
            }
            // SAFETY: as above.
            assert!(unsafe { avx_exp2(f32::NAN) }.is_nan());
        }
    }

    /// [`exp2_approx`] of `x` through [`super::Avx512`], lane 13.
    ///
    /// # Safety
    /// The CPU supports AVX-512F, AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512_exp2(x: f32) -> f32 {
        // SAFETY: this function's contract.
        let isa = unsafe { super::HasAvx512::new_unchecked() };
        let mut b = [[0f32; 8]; 2];
        super::Avx512::splat(isa, x).exp2().store(&mut b);
        b[1][5]
    }

    /// [`exp2_approx`] of `x` through [`super::Avx`], lane 5.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx_exp2(x: f32) -> f32 {
        // SAFETY: this function's contract.
        let isa = unsafe { super::HasAvx2Fma::new_unchecked() };
        let mut b = [0f32; 8];
        super::Avx::splat(isa, x).exp2().store_folded(&mut b);
        b[5]
    }

    #[test]
    fn softplus_and_sigmoid_match_libm() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let v = -60.0 + 120.0 * i as f32 / 200_000.0;
            let want = if v > 30.0 {
                v as f64
            } else {
                (v as f64).exp().ln_1p()
            };
            let got = softplus(v) as f64;
            worst = worst.max((got - want).abs() / want.abs().max(1e-30));
            let s = sigmoid(v) as f64;
            let sw = 1.0 / (1.0 + (-(v as f64)).exp());
            assert!(
                (s - sw).abs() <= 1e-6 * sw.max(1e-30) + 1e-37,
                "sigmoid({v})"
            );
        }
        assert!(worst < 1e-6, "softplus max relative error {worst:e}");
    }
}
