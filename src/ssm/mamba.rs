//! The Mamba block (mamba-ssm's `Mamba` mixer, v1): gated selective SSM with a short causal
//! convolution, a parallel forward for training and an O(1)-per-token [`MambaBlock::step`].
//!
//! # Shapes
//! - input and output `(B, L, d_model)`; [`MambaBlock::step`] takes and returns `(B, d_model)`.
//! - parameters, with $E$ = `d_inner` = `expand · d_model`, $N$ = `d_state`, $R$ = `dt_rank`,
//!   $K$ = `d_conv` (mamba-ssm's state-dict names and layouts):
//!   `in_proj.weight` `(2E, d_model)` (+ `in_proj.bias` when `bias`), `conv1d.weight`
//!   `(E, 1, K)`, `conv1d.bias` `(E)` (when `conv_bias`), `x_proj.weight` `(R + 2N, E)`,
//!   `dt_proj.weight` `(E, R)`, `dt_proj.bias` `(E)`, `A_log` `(E, N)`, `D` `(E)`,
//!   `out_proj.weight` `(d_model, E)` (+ `out_proj.bias` when `bias`).
//! - with `lti: true` the input-dependent projections `x_proj.weight` and `dt_proj.weight` are
//!   replaced by learned constants `B` `(N)` and `C` `(N)` (and $\Delta$ comes from
//!   `dt_proj.bias` alone).
//! - [`MambaState`]: `conv` `(B, E, K)` (the last $K$ inputs of the convolution) and `ssm`
//!   `(B, E, N)`.
//!
//! # Tip
//! The block: `in_proj` splits the token into a branch $x$ and a gate $z$; $x$ goes through a
//! causal depthwise convolution of width $K$ and SiLU, then `x_proj` reads from it a low-rank
//! step size $\Delta$ (rank $R$, expanded to $E$ channels by `dt_proj`) and the $N$-dimensional
//! $B_t$, $C_t$; the selective scan ([`crate::ops::selective_scan()`]) runs the SSM with
//! $A = -e^{A_{\log}}$, adds the skip $D x$ and gates by $\mathrm{silu}(z)$; `out_proj` maps back
//! to `d_model`. The initialisation matters: $A_{d,n} = -(n+1)$ (S4D-real), and the
//! `dt_proj.bias` is the inverse softplus of a step size drawn log-uniformly in
//! $[\Delta_{min}, \Delta_{max}]$, so at start channels remember over time scales from 10 to
//! 1000 steps.
//!
//! **LTI ablation (`lti: true`)**: $\Delta$, $B$ and $C$ stop depending on the token — $\Delta$
//! is $\mathrm{softplus}$ of a learned per-channel constant and $B$, $C$ are learned per-state
//! constants broadcast over time (shared by the channels, as $B_t$, $C_t$ are in S6; the
//! per-channel $A$ and $\Delta$ still give every channel its own decay rates) — so the SSM
//! inside the block is a linear time-invariant system like S4D, whose output is a fixed
//! convolution of its input (the short convolution and the gate stay). This is the
//! paper's S4-vs-S6 comparison: an LTI system applies the same kernel to every token and
//! cannot choose what to remember, so it fails at selective copying (see
//! `examples/selective_copying.rs`).
//!
//! Decoding: [`MambaBlock::step`] updates the convolution window and the $E \times N$ states
//! with a handful of $(B, E, N)$ tensor ops — constant time and memory per generated token,
//! whatever the context length — and gives the same numbers as the parallel forward
//! ([`MambaBlock::forward_with_state`] returns the state after a prompt).
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::ssm::{mamba_block, MambaConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! let cfg = MambaConfig::new(32); // d_inner 64, d_state 16, d_conv 4, dt_rank 2
//! let block = mamba_block(cfg, vb)?;
//! let x = Tensor::randn(0f32, 1., (2, 10, 32), &dev)?;
//! let y = block.forward(&x)?;
//! assert_eq!(y.dims(), &[2, 10, 32]);
//! // Token-by-token decoding gives the same output as the parallel forward.
//! let mut state = block.zero_state(2)?;
//! let y9 = (0..10).map(|t| block.step(&x.narrow(1, t, 1)?.squeeze(1)?, &mut state))
//!     .last().expect("ten steps")?;
//! let diff = (y9 - y.narrow(1, 9, 1)?.squeeze(1)?)?.abs()?.max_all()?;
//! assert!(diff.to_scalar::<f32>()? < 1e-4);
//! // The state is constant-size: E x K for the convolution, E x N for the SSM.
//! assert_eq!(state.ssm.dims(), &[2, 64, 16]);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Gu, Dao, *Mamba: Linear-Time Sequence Modeling with Selective State Spaces*, 2023,
//!   <https://arxiv.org/abs/2312.00752>
//! - Gu, Gupta, Goel, Ré, *On the Parameterization and Initialization of Diagonal State Space
//!   Models* (S4D), 2022, <https://arxiv.org/abs/2206.11893>

use crate::check;
use crate::ops::selective_scan::softplus_tensor;
use crate::ops::{causal_conv1d, linear, selective_scan, SelectiveScanConfig};
use crate::{Error, Result};
use candle_core::{DType, Module, Tensor, D};
use candle_nn::{Init, Linear, VarBuilder};

const BLOCK: &str = "MambaBlock";

/// Configuration of [`MambaBlock`] (mamba-ssm's `Mamba` arguments and defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MambaConfig {
    /// Model width (input and output features). No default in mamba-ssm; [`Default`] uses 256.
    pub d_model: usize,
    /// SSM states per channel $N$, > 0. Default 16.
    pub d_state: usize,
    /// Width $K$ of the causal depthwise convolution, > 0. Default 4.
    pub d_conv: usize,
    /// Inner width factor: `d_inner = expand · d_model`, > 0. Default 2.
    pub expand: usize,
    /// Rank $R$ of the step-size projection; `None` (mamba-ssm's `"auto"`) means
    /// `ceil(d_model / 16)`. Default `None`.
    pub dt_rank: Option<usize>,
    /// Smallest initial step size, finite and > 0. Default 0.001.
    pub dt_min: f64,
    /// Largest initial step size, finite and ≥ `dt_min`. Default 0.1.
    pub dt_max: f64,
    /// Floor of the initial step sizes, finite and ≥ 0. Default 1e-4.
    pub dt_init_floor: f64,
    /// Bias in the causal convolution (`conv1d.bias`). Default `true`.
    pub conv_bias: bool,
    /// Biases in `in_proj` and `out_proj`. Default `false`.
    pub bias: bool,
    /// Ablation: make $\Delta$, $B$, $C$ input-independent (an LTI SSM like S4D; see the
    /// [module docs](self)). Not a mamba-ssm option. Default `false`.
    pub lti: bool,
}

impl Default for MambaConfig {
    fn default() -> Self {
        Self::new(256)
    }
}

impl MambaConfig {
    /// mamba-ssm's defaults for width `d_model`.
    pub fn new(d_model: usize) -> Self {
        Self {
            d_model,
            d_state: 16,
            d_conv: 4,
            expand: 2,
            dt_rank: None,
            dt_min: 0.001,
            dt_max: 0.1,
            dt_init_floor: 1e-4,
            conv_bias: true,
            bias: false,
            lti: false,
        }
    }

    /// Sets `d_model`.
    pub fn with_d_model(mut self, d_model: usize) -> Self {
        self.d_model = d_model;
        self
    }

    /// Sets `d_state`.
    pub fn with_d_state(mut self, d_state: usize) -> Self {
        self.d_state = d_state;
        self
    }

    /// Sets `d_conv`.
    pub fn with_d_conv(mut self, d_conv: usize) -> Self {
        self.d_conv = d_conv;
        self
    }

    /// Sets `expand`.
    pub fn with_expand(mut self, expand: usize) -> Self {
        self.expand = expand;
        self
    }

    /// Sets an explicit `dt_rank`.
    pub fn with_dt_rank(mut self, dt_rank: usize) -> Self {
        self.dt_rank = Some(dt_rank);
        self
    }

    /// Sets the range of initial step sizes.
    pub fn with_dt_range(mut self, dt_min: f64, dt_max: f64) -> Self {
        self.dt_min = dt_min;
        self.dt_max = dt_max;
        self
    }

    /// Sets `dt_init_floor`.
    pub fn with_dt_init_floor(mut self, floor: f64) -> Self {
        self.dt_init_floor = floor;
        self
    }

    /// Sets `conv_bias`.
    pub fn with_conv_bias(mut self, on: bool) -> Self {
        self.conv_bias = on;
        self
    }

    /// Sets `bias`.
    pub fn with_bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }

    /// Sets the LTI ablation.
    pub fn with_lti(mut self, on: bool) -> Self {
        self.lti = on;
        self
    }

    /// `d_inner = expand · d_model`.
    pub fn d_inner(&self) -> usize {
        self.expand * self.d_model
    }

    /// The step-size rank: `dt_rank`, or `ceil(d_model / 16)` when `None`.
    pub fn dt_rank(&self) -> usize {
        self.dt_rank.unwrap_or(self.d_model.div_ceil(16))
    }

    /// `(d_model, d_inner, d_state, dt_rank, d_conv)`: the sizes the parameters are shaped by.
    fn sizes(&self) -> (usize, usize, usize, usize, usize) {
        let c = self;
        (c.d_model, c.d_inner(), c.d_state, c.dt_rank(), c.d_conv)
    }

    /// Checks that every size is > 0 and the step-size range is valid.
    pub fn validate(&self) -> Result<()> {
        check::positive(BLOCK, "d_model", self.d_model)?;
        check::positive(BLOCK, "d_state", self.d_state)?;
        check::positive(BLOCK, "d_conv", self.d_conv)?;
        check::positive(BLOCK, "expand", self.expand)?;
        check::positive(BLOCK, "dt_rank", self.dt_rank())?;
        if !(self.dt_min.is_finite() && self.dt_min > 0.0) {
            return Err(Error::config(
                BLOCK,
                format!("dt_min must be finite and > 0, got {}", self.dt_min),
            ));
        }
        if !(self.dt_max.is_finite() && self.dt_max >= self.dt_min) {
            return Err(Error::config(
                BLOCK,
                format!(
                    "dt_max must be finite and >= dt_min ({}), got {}",
                    self.dt_min, self.dt_max
                ),
            ));
        }
        if !(self.dt_init_floor.is_finite() && self.dt_init_floor >= 0.0) {
            return Err(Error::config(
                BLOCK,
                format!(
                    "dt_init_floor must be finite and >= 0, got {}",
                    self.dt_init_floor
                ),
            ));
        }
        Ok(())
    }
}

/// The raw parameters of a [`MambaBlock`] (mamba-ssm names in the field docs), for
/// [`MambaBlock::new`].
#[derive(Debug, Clone)]
pub struct MambaWeights {
    /// `in_proj.weight` `(2E, d_model)`.
    pub in_proj_weight: Tensor,
    /// `in_proj.bias` `(2E)`, present exactly when `cfg.bias`.
    pub in_proj_bias: Option<Tensor>,
    /// `conv1d.weight` `(E, 1, K)`.
    pub conv_weight: Tensor,
    /// `conv1d.bias` `(E)`, present exactly when `cfg.conv_bias`.
    pub conv_bias: Option<Tensor>,
    /// `x_proj.weight` `(R + 2N, E)`; `None` exactly when `cfg.lti`.
    pub x_proj_weight: Option<Tensor>,
    /// `dt_proj.weight` `(E, R)`; `None` exactly when `cfg.lti`.
    pub dt_proj_weight: Option<Tensor>,
    /// `dt_proj.bias` `(E)`.
    pub dt_proj_bias: Tensor,
    /// `A_log` `(E, N)`.
    pub a_log: Tensor,
    /// `D` `(E)`.
    pub d: Tensor,
    /// `out_proj.weight` `(d_model, E)`.
    pub out_proj_weight: Tensor,
    /// `out_proj.bias` `(d_model)`, present exactly when `cfg.bias`.
    pub out_proj_bias: Option<Tensor>,
    /// `B` `(N)`: the constant input vector of the LTI ablation; `Some` exactly when
    /// `cfg.lti`.
    pub lti_b: Option<Tensor>,
    /// `C` `(N)`: the constant output vector of the LTI ablation; `Some` exactly when
    /// `cfg.lti`.
    pub lti_c: Option<Tensor>,
}

/// The recurrent state of one [`MambaBlock`] for decoding with [`MambaBlock::step`].
#[derive(Debug, Clone)]
pub struct MambaState {
    /// The last `d_conv` inputs of the convolution, oldest first, `(B, E, K)`.
    pub conv: Tensor,
    /// The SSM states, `(B, E, N)`.
    pub ssm: Tensor,
}

/// The Mamba mixer (mamba-ssm's `Mamba`, v1); see the [module docs](self).
#[derive(Debug, Clone)]
pub struct MambaBlock {
    w: MambaWeights,
    in_proj: Linear,
    out_proj: Linear,
    cfg: MambaConfig,
}

/// Checks that `t` has shape `dims`.
fn expect_dims(what: &'static str, t: &Tensor, dims: &[usize]) -> Result<()> {
    if t.dims() != dims {
        return Err(Error::shape(
            BLOCK,
            what,
            format!("{dims:?}"),
            t.shape().clone(),
        ));
    }
    Ok(())
}

/// Checks that an optional parameter is present exactly when `want` and has shape `dims`.
fn expect_opt(what: &'static str, t: Option<&Tensor>, want: bool, dims: &[usize]) -> Result<()> {
    match (t, want) {
        (Some(t), true) => expect_dims(what, t, dims),
        (None, false) => Ok(()),
        (Some(_), false) => Err(Error::config(
            BLOCK,
            format!("{what} given but the config does not use it"),
        )),
        (None, true) => Err(Error::config(
            BLOCK,
            format!("{what} missing but the config needs it"),
        )),
    }
}

impl MambaBlock {
    /// Builds the block from raw parameters; checks every shape against `cfg` (errors name
    /// `MambaBlock` and the parameter).
    pub fn new(w: MambaWeights, cfg: MambaConfig) -> Result<Self> {
        cfg.validate()?;
        let (dm, e, n, r, k) = cfg.sizes();
        check::float_dtype(BLOCK, "in_proj.weight", &w.in_proj_weight)?;
        expect_dims("in_proj.weight", &w.in_proj_weight, &[2 * e, dm])?;
        expect_opt("in_proj.bias", w.in_proj_bias.as_ref(), cfg.bias, &[2 * e])?;
        expect_dims("conv1d.weight", &w.conv_weight, &[e, 1, k])?;
        expect_opt("conv1d.bias", w.conv_bias.as_ref(), cfg.conv_bias, &[e])?;
        expect_opt(
            "x_proj.weight",
            w.x_proj_weight.as_ref(),
            !cfg.lti,
            &[r + 2 * n, e],
        )?;
        expect_opt(
            "dt_proj.weight",
            w.dt_proj_weight.as_ref(),
            !cfg.lti,
            &[e, r],
        )?;
        expect_dims("dt_proj.bias", &w.dt_proj_bias, &[e])?;
        expect_dims("A_log", &w.a_log, &[e, n])?;
        expect_dims("D", &w.d, &[e])?;
        expect_dims("out_proj.weight", &w.out_proj_weight, &[dm, e])?;
        expect_opt("out_proj.bias", w.out_proj_bias.as_ref(), cfg.bias, &[dm])?;
        expect_opt("B", w.lti_b.as_ref(), cfg.lti, &[n])?;
        expect_opt("C", w.lti_c.as_ref(), cfg.lti, &[n])?;
        let all = [
            Some(&w.in_proj_weight),
            w.in_proj_bias.as_ref(),
            Some(&w.conv_weight),
            w.conv_bias.as_ref(),
            w.x_proj_weight.as_ref(),
            w.dt_proj_weight.as_ref(),
            Some(&w.dt_proj_bias),
            Some(&w.a_log),
            Some(&w.d),
            Some(&w.out_proj_weight),
            w.out_proj_bias.as_ref(),
            w.lti_b.as_ref(),
            w.lti_c.as_ref(),
        ];
        for t in all.into_iter().flatten() {
            check::same_dtype_device(BLOCK, "parameters", &w.in_proj_weight, t)?;
        }
        let in_proj = Linear::new(w.in_proj_weight.clone(), w.in_proj_bias.clone());
        let out_proj = Linear::new(w.out_proj_weight.clone(), w.out_proj_bias.clone());
        Ok(Self {
            w,
            in_proj,
            out_proj,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> MambaConfig {
        self.cfg
    }

    /// The raw parameters.
    pub fn weights(&self) -> &MambaWeights {
        &self.w
    }

    /// $A = -e^{A_{\log}}$, `(E, N)`.
    fn a(&self) -> candle_core::Result<Tensor> {
        self.w.a_log.exp()?.neg()
    }

    /// A zero state for a batch of `batch` sequences (the state before the first token).
    pub fn zero_state(&self, batch: usize) -> Result<MambaState> {
        let (e, k, n) = (self.cfg.d_inner(), self.cfg.d_conv, self.cfg.d_state);
        let (dt, dev) = (self.w.a_log.dtype(), self.w.a_log.device());
        check::allocatable(BLOCK, "state", &[batch, e, k.max(n)], dt)?;
        Ok(MambaState {
            conv: Tensor::zeros((batch, e, k), dt, dev)?,
            ssm: Tensor::zeros((batch, e, n), dt, dev)?,
        })
    }

    fn check_input(&self, x: &Tensor, rank: usize, pattern: &str) -> Result<()> {
        let dm = self.cfg.d_model;
        let ok = x.rank() == rank && x.dims().last() == Some(&dm) && !x.dims().contains(&0);
        if !ok {
            return Err(Error::shape(
                BLOCK,
                "input",
                format!("{pattern} with d_model = {dm}, non-empty"),
                x.shape().clone(),
            ));
        }
        check::same_dtype_device(BLOCK, "input", &self.w.in_proj_weight, x)
    }

    /// The parallel forward `(B, L, d_model) -> (B, L, d_model)`, also returning the state
    /// after the last token when `want_state` (to continue with [`MambaBlock::step`]).
    fn run(&self, x: &Tensor, want_state: bool) -> Result<(Tensor, Option<MambaState>)> {
        self.check_input(x, 3, "(B, L, d_model)")?;
        let (bs, l, _) = x.dims3()?;
        let (_, e, n, r, k) = self.cfg.sizes();
        // The convolution and the scan run channels-first, (B, channels, L). The wide in and
        // out projections are one 2-D product each over the B·L tokens (`ops::linear`: one GEMM
        // each way, no per-batch weight gradients to sum); the narrow inner projections
        // multiply their weight from the left, one GEMM per batch entry. The gate z and the
        // scan's output stay token-major (the scan's `seq_major`), so only x is transposed.
        let left = |w: &Tensor, t: &Tensor| w.broadcast_left(bs)?.matmul(t);
        // The two halves of in_proj as two products: a narrow of the activations would cost a
        // full-size zero-padded gradient each in the backward, a narrow of the weight only its
        // own size.
        let half = |i: usize| -> Result<Tensor> {
            let w = self.w.in_proj_weight.narrow(0, i * e, e)?;
            let b = match &self.w.in_proj_bias {
                Some(b) => Some(b.narrow(0, i * e, e)?),
                None => None,
            };
            linear(x, &w, b.as_ref()) // (B, L, E)
        };
        let xin = half(0)?.transpose(1, 2)?.contiguous()?; // (B, E, L)
        let z = half(1)?;
        let xc = causal_conv1d(&xin, &self.w.conv_weight, self.w.conv_bias.as_ref(), true)?;
        let a = self.a()?;
        let (delta, b, c) = if self.cfg.lti {
            let delta = Tensor::zeros((bs, e, l), xc.dtype(), xc.device())?;
            let expand = |p: &Tensor| -> candle_core::Result<Tensor> {
                p.reshape((1, n, 1))?.broadcast_as((bs, n, l))?.contiguous()
            };
            let (lb, lc) = match (&self.w.lti_b, &self.w.lti_c) {
                (Some(lb), Some(lc)) => (lb, lc),
                _ => return Err(Error::config(BLOCK, "lti without B and C")),
            };
            (delta, expand(lb)?, expand(lc)?)
        } else {
            let (xp, dtp) = match (&self.w.x_proj_weight, &self.w.dt_proj_weight) {
                (Some(xp), Some(dtp)) => (xp, dtp),
                _ => return Err(Error::config(BLOCK, "missing x_proj or dt_proj weight")),
            };
            let x_dbl = left(xp, &xc)?; // (B, R + 2N, L)
            let dt = left(dtp, &x_dbl.narrow(1, 0, r)?)?; // (B, E, L)
            (dt, x_dbl.narrow(1, r, n)?, x_dbl.narrow(1, r + n, n)?)
        };
        let cfg = SelectiveScanConfig::default()
            .with_d(&self.w.d)
            .with_z(&z)
            .with_delta_bias(&self.w.dt_proj_bias)
            .with_delta_softplus(true)
            .with_seq_major(true)
            .with_return_last_state(want_state);
        let (y, last) = selective_scan(&xc, &delta, &a, &b, &c, &cfg)?;
        let out_bias = self.w.out_proj_bias.as_ref();
        let out = linear(&y, &self.w.out_proj_weight, out_bias)?; // (B, L, d_model)
        let state = match last {
            Some(ssm) if want_state => {
                // The convolution window: the last K inputs, zero-padded on the left.
                let conv = if l >= k {
                    xin.narrow(2, l - k, k)?
                } else {
                    xin.pad_with_zeros(2, k - l, 0)?
                };
                Some(MambaState {
                    conv: conv.contiguous()?,
                    ssm,
                })
            }
            _ => None,
        };
        Ok((out, state))
    }

    /// The parallel forward `(B, L, d_model) -> (B, L, d_model)` plus the state after the
    /// last token, from which [`MambaBlock::step`] continues (prefill for generation).
    pub fn forward_with_state(&self, x: &Tensor) -> Result<(Tensor, MambaState)> {
        match self.run(x, true)? {
            (y, Some(s)) => Ok((y, s)),
            _ => Err(Error::config(BLOCK, "the scan returned no last state")),
        }
    }

    /// One decoding step: token features `x` `(B, d_model)` → `(B, d_model)`, updating
    /// `state` in place (constant time and memory per token). Equal to the parallel forward's
    /// output at the same position.
    pub fn step(&self, x: &Tensor, state: &mut MambaState) -> Result<Tensor> {
        self.check_input(x, 2, "(B, d_model)")?;
        let bs = x.dim(0)?;
        let (_, e, n, r, k) = self.cfg.sizes();
        if state.conv.dims() != [bs, e, k] || state.ssm.dims() != [bs, e, n] {
            return Err(Error::shape(
                BLOCK,
                "state",
                format!("conv ({bs}, {e}, {k}) and ssm ({bs}, {e}, {n})"),
                state.conv.shape().clone(),
            ));
        }
        // A state of another dtype or device would otherwise fail inside candle's ops with a
        // bare candle error that does not name the block.
        check::same_dtype_device(BLOCK, "state.conv", x, &state.conv)?;
        check::same_dtype_device(BLOCK, "state.ssm", x, &state.ssm)?;
        let xz = self.in_proj.forward(x)?; // (B, 2E)
        let xin = xz.narrow(1, 0, e)?;
        let z = xz.narrow(1, e, e)?;
        // Shift the window left by one and append the new input.
        let conv = if k > 1 {
            Tensor::cat(&[&state.conv.narrow(2, 1, k - 1)?, &xin.unsqueeze(2)?], 2)?
        } else {
            xin.unsqueeze(2)?.contiguous()?
        };
        let taps = self.w.conv_weight.squeeze(1)?; // (E, K)
        let mut xc = conv.broadcast_mul(&taps)?.sum(D::Minus1)?; // (B, E)
        if let Some(cb) = &self.w.conv_bias {
            xc = xc.broadcast_add(cb)?;
        }
        let xc = xc.silu()?;
        let (dt, b, c) = if self.cfg.lti {
            let (lb, lc) = match (&self.w.lti_b, &self.w.lti_c) {
                (Some(lb), Some(lc)) => (lb, lc),
                _ => return Err(Error::config(BLOCK, "lti without B and C")),
            };
            let dt = softplus_tensor(&self.w.dt_proj_bias)?
                .unsqueeze(0)?
                .broadcast_as((bs, e))?;
            (dt, lb.reshape((1, 1, n))?, lc.reshape((1, 1, n))?)
        } else {
            let (xp, dtp) = match (&self.w.x_proj_weight, &self.w.dt_proj_weight) {
                (Some(xp), Some(dtp)) => (xp, dtp),
                _ => return Err(Error::config(BLOCK, "missing x_proj or dt_proj weight")),
            };
            let x_dbl = xc.matmul(&xp.t()?)?; // (B, R + 2N)
            let dt = x_dbl
                .narrow(1, 0, r)?
                .matmul(&dtp.t()?)?
                .broadcast_add(&self.w.dt_proj_bias)?;
            let b = x_dbl.narrow(1, r, n)?.unsqueeze(1)?; // (B, 1, N)
            let c = x_dbl.narrow(1, r + n, n)?.unsqueeze(1)?;
            (softplus_tensor(&dt)?, b, c)
        };
        let dt3 = dt.unsqueeze(2)?; // (B, E, 1)
        let da = dt3.broadcast_mul(&self.a()?.unsqueeze(0)?)?.exp()?; // (B, E, N)
        let dbx = (dt3 * xc.unsqueeze(2)?)?.broadcast_mul(&b)?; // (B, E, N)
        let ssm = ((&state.ssm * da)? + dbx)?;
        let y = ssm.broadcast_mul(&c)?.sum(D::Minus1)?; // (B, E)
        let y = (y + xc.broadcast_mul(&self.w.d)?)?;
        let y = (y * z.silu()?)?;
        state.conv = conv;
        state.ssm = ssm;
        Ok(self.out_proj.forward(&y)?)
    }
}

impl Module for MambaBlock {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.run(xs, false)?.0)
    }
}

/// Reads `name` with `shape` from `vb`; when the backend does not hold it yet (a fresh
/// `VarMap`), the new variable, created with the hint `first`, is overwritten in place by
/// `init(first_values)` — for initialisations `Init` cannot express. The randomness still comes
/// from the backend's `Init` draw, so a seeded backend gives a reproducible model.
fn get_or_init(
    vb: &VarBuilder,
    dims: &[usize],
    name: &str,
    first: Init,
    init: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<Tensor> {
    let fresh = !vb.contains_tensor(name);
    let t = check::param(BLOCK, vb, dims, name, first)?;
    if fresh {
        let v = init(&t)?.to_dtype(t.dtype())?.to_device(t.device())?;
        t.slice_set(&v, 0, 0)?;
    }
    Ok(t)
}

/// `Init` for PyTorch's default `nn.Linear`/`nn.Conv1d` init: uniform in ±1/sqrt(fan_in).
fn uniform(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A [`MambaBlock`] whose parameters come from `vb` under mamba-ssm's names (see the
/// [module docs](self)); a fresh `VarMap` gets mamba-ssm's initialisation (PyTorch's default
/// for the projections and the convolution, uniform ±R^-1/2 for `dt_proj.weight`, the inverse
/// softplus of a log-uniform step in `[dt_min, dt_max]` for `dt_proj.bias`, S4D-real `A_log`,
/// `D` = 1; for the LTI ablation `B` = 1 and `C` normal with std N^-1/2).
pub fn mamba_block(cfg: MambaConfig, vb: VarBuilder) -> Result<MambaBlock> {
    check::loading(BLOCK, vb, |vb| load_block(cfg, vb))
}

fn load_block(cfg: MambaConfig, vb: VarBuilder) -> Result<MambaBlock> {
    cfg.validate()?;
    let (dm, e, n, r, k) = cfg.sizes();
    let dev = vb.device().clone();
    let lin = |vb: VarBuilder, out: usize, inp: usize| -> Result<(Tensor, Option<Tensor>)> {
        let w = check::param(BLOCK, &vb, (out, inp), "weight", uniform(inp))?;
        let b = if cfg.bias {
            Some(check::param(BLOCK, &vb, out, "bias", uniform(inp))?)
        } else {
            None
        };
        Ok((w, b))
    };
    let (in_proj_weight, in_proj_bias) = lin(vb.pp("in_proj"), 2 * e, dm)?;
    let (out_proj_weight, out_proj_bias) = lin(vb.pp("out_proj"), dm, e)?;
    let cvb = vb.pp("conv1d");
    let conv_weight = check::param(BLOCK, &cvb, (e, 1, k), "weight", uniform(k))?;
    let conv_bias = if cfg.conv_bias {
        Some(check::param(BLOCK, &cvb, e, "bias", uniform(k))?)
    } else {
        None
    };
    let dvb = vb.pp("dt_proj");
    let (x_proj_weight, dt_proj_weight) = if cfg.lti {
        (None, None)
    } else {
        let xp = check::param(
            BLOCK,
            &vb.pp("x_proj"),
            (r + 2 * n, e),
            "weight",
            uniform(e),
        )?;
        let std = (r as f64).powf(-0.5);
        let dtw = check::param(
            BLOCK,
            &dvb,
            (e, r),
            "weight",
            Init::Uniform { lo: -std, up: std },
        )?;
        (Some(xp), Some(dtw))
    };
    let (lo, hi, floor) = (cfg.dt_min.ln(), cfg.dt_max.ln(), cfg.dt_init_floor);
    let unit = Init::Uniform { lo: 0.0, up: 1.0 };
    let dt_proj_bias = get_or_init(&dvb, &[e], "bias", unit, |u| {
        // dt = exp(U(log dt_min, log dt_max)) floored; bias = dt + log(1 - e^{-dt}), the inverse
        // of softplus (computed in f64).
        let u = u.to_dtype(DType::F64)?;
        let dt = ((u * (hi - lo))? + lo)?
            .exp()?
            .clamp(floor, f64::INFINITY)?;
        &dt + (1.0 - dt.neg()?.exp()?)?.log()?
    })?;
    let a_log = get_or_init(&vb, &[e, n], "A_log", Init::Const(0.0), |_| {
        Tensor::arange(1u32, n as u32 + 1, &dev)?
            .to_dtype(DType::F32)?
            .log()?
            .unsqueeze(0)?
            .broadcast_as((e, n))?
            .contiguous()
    })?;
    let d = check::param(BLOCK, &vb, e, "D", Init::Const(1.0))?;
    let (lti_b, lti_c) = if cfg.lti {
        let b = check::param(BLOCK, &vb, n, "B", Init::Const(1.0))?;
        let c = check::param(
            BLOCK,
            &vb,
            n,
            "C",
            Init::Randn {
                mean: 0.0,
                stdev: (n as f64).powf(-0.5),
            },
        )?;
        (Some(b), Some(c))
    } else {
        (None, None)
    };
    MambaBlock::new(
        MambaWeights {
            in_proj_weight,
            in_proj_bias,
            conv_weight,
            conv_bias,
            x_proj_weight,
            dt_proj_weight,
            dt_proj_bias,
            a_log,
            d,
            out_proj_weight,
            out_proj_bias,
            lti_b,
            lti_c,
        },
        cfg,
    )
}
