//! What [`super::Lstm`] and [`super::Gru`] share: the configuration, loading PyTorch's
//! per-layer, per-direction weights, and the forward through layers and directions on the fused
//! recurrence ([`crate::ops::recurrent`]).

use candle_core::{DType, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::ops::{linear, recurrent::recurrence_dyn, CellKind, RecurrenceConfig};
use crate::{check, Error, Result};

/// Configuration of a stacked recurrent net ([`super::Lstm`], [`super::Gru`]); PyTorch's
/// `nn.LSTM` / `nn.GRU` arguments. There is no `proj_size` (LSTM with projections): not
/// implemented.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RnnConfig {
    /// Stacked layers; layer $k > 0$ reads layer $k - 1$'s output. Default 1.
    pub num_layers: usize,
    /// A second, reverse-time recurrence per layer, outputs concatenated (`D = 2`). Default
    /// `false`.
    pub bidirectional: bool,
    /// Input and output are `(B, L, ·)` instead of `(L, B, ·)` (the states stay
    /// `(D·num_layers, B, H)`, as in PyTorch). Default `false`.
    pub batch_first: bool,
    /// The biases `b_ih`, `b_hh`. Default `true`.
    pub bias: bool,
    /// Dropout probability on every layer's output but the last, in training only. Default 0.
    pub dropout: f64,
}

/// [`RnnConfig`] for the LSTM.
pub type LstmConfig = RnnConfig;
/// [`RnnConfig`] for the GRU.
pub type GruConfig = RnnConfig;

impl Default for RnnConfig {
    fn default() -> Self {
        Self {
            num_layers: 1,
            bidirectional: false,
            batch_first: false,
            bias: true,
            dropout: 0.0,
        }
    }
}

impl RnnConfig {
    /// Sets the number of layers.
    pub fn with_num_layers(mut self, num_layers: usize) -> Self {
        self.num_layers = num_layers;
        self
    }

    /// Sets whether each layer runs in both directions.
    pub fn with_bidirectional(mut self, on: bool) -> Self {
        self.bidirectional = on;
        self
    }

    /// Sets whether input and output are batch-first.
    pub fn with_batch_first(mut self, on: bool) -> Self {
        self.batch_first = on;
        self
    }

    /// Sets whether the layers have biases.
    pub fn with_bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }

    /// Sets the dropout between layers.
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// Directions per layer, `D`.
    pub fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// Checks the values: at least one layer, a dropout in `[0, 1)`.
    pub fn validate(&self, block: &'static str) -> Result<()> {
        check::positive(block, "num_layers", self.num_layers)?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config(
                block,
                format!("dropout must be in [0, 1), got {}", self.dropout),
            ));
        }
        Ok(())
    }
}

/// One direction of one layer: PyTorch's `weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`,
/// `bias_hh_l{k}` (suffix `_reverse` for the reverse direction).
#[derive(Debug, Clone)]
pub struct DirectionWeights {
    /// `(G·H, in)`.
    pub weight_ih: Tensor,
    /// `(G·H, H)`.
    pub weight_hh: Tensor,
    /// `(G·H)`.
    pub bias_ih: Option<Tensor>,
    /// `(G·H)`.
    pub bias_hh: Option<Tensor>,
}

/// The shared stack: cell, sizes, config and weights `[layer][direction]`.
#[derive(Debug, Clone)]
pub(super) struct Stack {
    pub(super) block: &'static str,
    pub(super) cell: CellKind,
    pub(super) input_size: usize,
    pub(super) hidden_size: usize,
    pub(super) cfg: RnnConfig,
    pub(super) layers: Vec<Vec<DirectionWeights>>,
}

/// The forward's results: output, `h_n`, and `c_n` for the LSTM.
pub(super) type StackOutput = (Tensor, Tensor, Option<Tensor>);

impl Stack {
    /// Loads (or initialises with PyTorch's $U(-1/\sqrt H, 1/\sqrt H)$) every layer's weights.
    pub(super) fn load(
        block: &'static str,
        cell: CellKind,
        input_size: usize,
        hidden_size: usize,
        cfg: RnnConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        cfg.validate(block)?;
        check::positive(block, "input_size", input_size)?;
        check::positive(block, "hidden_size", hidden_size)?;
        let gh = cell
            .gates()
            .checked_mul(hidden_size)
            .ok_or_else(|| Error::config(block, "gates × hidden_size overflows"))?;
        let bound = 1.0 / (hidden_size as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let d = cfg.directions();
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for k in 0..cfg.num_layers {
            let inp = if k == 0 { input_size } else { d * hidden_size };
            let mut dirs = Vec::with_capacity(d);
            for dir in 0..d {
                let sfx = if dir == 1 { "_reverse" } else { "" };
                let get = |dims: &[usize], name: &str| {
                    check::loading(block, vb.clone(), |vb| {
                        check::param(block, &vb, dims, &format!("{name}_l{k}{sfx}"), init)
                    })
                };
                let bias = |name: &str| cfg.bias.then(|| get(&[gh], name)).transpose();
                dirs.push(DirectionWeights {
                    weight_ih: get(&[gh, inp], "weight_ih")?,
                    weight_hh: get(&[gh, hidden_size], "weight_hh")?,
                    bias_ih: bias("bias_ih")?,
                    bias_hh: bias("bias_hh")?,
                });
            }
            layers.push(dirs);
        }
        Ok(Stack {
            block,
            cell,
            input_size,
            hidden_size,
            cfg,
            layers,
        })
    }

    /// Takes given weights, `[layer][direction]`, after checking their count and shapes
    /// against `cfg` (sizes read from layer 0: `H` from `weight_hh`, `in` from `weight_ih`).
    pub(super) fn from_weights(
        block: &'static str,
        cell: CellKind,
        layers: Vec<Vec<DirectionWeights>>,
        cfg: RnnConfig,
    ) -> Result<Self> {
        cfg.validate(block)?;
        let d = cfg.directions();
        if layers.len() != cfg.num_layers || layers.iter().any(|l| l.len() != d) {
            return Err(Error::config(
                block,
                format!(
                    "expected {} layers of {d} direction(s), got {:?}",
                    cfg.num_layers,
                    layers.iter().map(Vec::len).collect::<Vec<_>>()
                ),
            ));
        }
        let first = &layers[0][0];
        check::rank(block, "weight_hh", &first.weight_hh, 2, "(G·H, H)")?;
        check::rank(block, "weight_ih", &first.weight_ih, 2, "(G·H, in)")?;
        let h = first.weight_hh.dim(1)?;
        let input_size = first.weight_ih.dim(1)?;
        check::positive(block, "hidden_size", h)?;
        check::positive(block, "input_size", input_size)?;
        let gh = cell.gates() * h;
        for (k, dirs) in layers.iter().enumerate() {
            let inp = if k == 0 { input_size } else { d * h };
            for w in dirs {
                let shaped = |what: &'static str, t: &Tensor, want: &[usize]| -> Result<()> {
                    check::same_dtype_device(block, what, &first.weight_hh, t)?;
                    if t.dims() != want {
                        return Err(Error::shape(
                            block,
                            what,
                            format!("{want:?}"),
                            t.shape().clone(),
                        ));
                    }
                    Ok(())
                };
                shaped("weight_ih", &w.weight_ih, &[gh, inp])?;
                shaped("weight_hh", &w.weight_hh, &[gh, h])?;
                for (what, b) in [("bias_ih", &w.bias_ih), ("bias_hh", &w.bias_hh)] {
                    match b {
                        Some(b) if cfg.bias => shaped(what, b, &[gh])?,
                        None if !cfg.bias => {}
                        _ => {
                            let msg = format!("{what} must be given exactly when cfg.bias is set");
                            return Err(Error::config(block, msg));
                        }
                    }
                }
            }
        }
        Ok(Stack {
            block,
            cell,
            input_size,
            hidden_size: h,
            cfg,
            layers,
        })
    }

    fn dtype(&self) -> DType {
        self.layers[0][0].weight_ih.dtype()
    }

    /// Checks an initial state: `(D·num_layers, B, H)`.
    fn check_state(&self, what: &'static str, s: &Tensor, b: usize) -> Result<()> {
        let want = [
            self.cfg.num_layers * self.cfg.directions(),
            b,
            self.hidden_size,
        ];
        check::same_dtype_device(self.block, what, &self.layers[0][0].weight_ih, s)?;
        if s.dims() != want {
            return Err(Error::shape(
                self.block,
                what,
                format!("(D·num_layers, B, H) = {want:?}"),
                s.shape().clone(),
            ));
        }
        Ok(())
    }

    /// The whole net on `x`; `c0` only for the LSTM; dropout between layers when `train`.
    pub(super) fn forward(
        &self,
        x: &Tensor,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<StackOutput> {
        let block = self.block;
        let (h, i) = (self.hidden_size, self.input_size);
        let pattern = if self.cfg.batch_first {
            format!("(B, L, {i})")
        } else {
            format!("(L, B, {i})")
        };
        check::rank(block, "input", x, 3, &pattern)?;
        check::non_empty(block, "input", x)?;
        if x.dim(2)? != i {
            return Err(Error::shape(block, "input", pattern, x.shape().clone()));
        }
        check::same_dtype_device(block, "input", &self.layers[0][0].weight_ih, x)?;
        let x = if self.cfg.batch_first {
            x.transpose(0, 1)?.contiguous()?
        } else {
            x.clone()
        };
        let b = x.dim(1)?;
        if let Some(s) = h0 {
            self.check_state("h0", s, b)?;
        }
        if let Some(s) = c0 {
            self.check_state("c0", s, b)?;
        }
        let zeros = Tensor::zeros((b, h), self.dtype(), x.device())?;
        let state = |s: Option<&Tensor>, k: usize| -> Result<Tensor> {
            Ok(match s {
                Some(s) => s.get(k)?,
                None => zeros.clone(),
            })
        };
        let lstm = self.cell == CellKind::Lstm;
        let d = self.cfg.directions();
        let (mut h_n, mut c_n) = (Vec::new(), Vec::new());
        let mut input = x;
        for (k, dirs) in self.layers.iter().enumerate() {
            let mut outs = Vec::with_capacity(d);
            for (dir, w) in dirs.iter().enumerate() {
                let xproj = linear(&input, &w.weight_ih, w.bias_ih.as_ref())?;
                let mut rc = RecurrenceConfig::default().with_reverse(dir == 1);
                rc.lengths = lengths;
                let c = if lstm {
                    Some(state(c0, k * d + dir)?)
                } else {
                    None
                };
                let (out, hk, ck) = recurrence_dyn(
                    self.cell,
                    &xproj,
                    &w.weight_hh,
                    w.bias_hh.as_ref(),
                    &state(h0, k * d + dir)?,
                    c.as_ref(),
                    &rc,
                )
                .map_err(|e| rename(e, block))?;
                outs.push(out);
                h_n.push(hk);
                c_n.extend(ck);
            }
            input = if d == 1 {
                outs.swap_remove(0)
            } else {
                Tensor::cat(&outs, 2)?
            };
            if train && self.cfg.dropout > 0.0 && k + 1 < self.layers.len() {
                input = candle_nn::ops::dropout(&input, self.cfg.dropout as f32)?;
            }
        }
        let out = if self.cfg.batch_first {
            input.transpose(0, 1)?.contiguous()?
        } else {
            input
        };
        let c_n = if lstm {
            Some(Tensor::stack(&c_n, 0)?)
        } else {
            None
        };
        Ok((out, Tensor::stack(&h_n, 0)?, c_n))
    }
}

/// A lengths error of the op, reported under the block's name.
fn rename(e: Error, block: &'static str) -> Error {
    match e {
        Error::InvalidConfig { msg, .. } => Error::InvalidConfig { block, msg },
        other => other,
    }
}

/// Per-sample lengths from a 1-D tensor of non-negative integers (any integer or float dtype,
/// e.g. the `lengths` a PyTorch pipeline passes to `pack_padded_sequence`).
///
/// Errors (naming `rnn`) on a tensor that is not 1-D or values that are negative, fractional or
/// not finite. The range `1..=L` is checked by the forward.
pub fn lengths_from_tensor(t: &Tensor) -> Result<Vec<usize>> {
    check::rank("rnn", "lengths", t, 1, "(B)")?;
    let v = t.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    v.iter()
        .map(|&n| {
            if n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= usize::MAX as f64 {
                Ok(n as usize)
            } else {
                Err(Error::config(
                    "rnn",
                    format!("lengths must be non-negative integers, got {n}"),
                ))
            }
        })
        .collect()
}
