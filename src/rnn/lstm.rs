//! [`Lstm`]: PyTorch's `nn.LSTM` (multi-layer, bidirectional, batch-first, variable lengths) on
//! the fused recurrence.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::stack::{DirectionWeights, LstmConfig, Stack};
use crate::ops::CellKind;
use crate::{Error, Result};

const BLOCK: &str = "Lstm";

/// A stacked LSTM with PyTorch's tensor names and gate order ($i, f, g, o$).
///
/// Input `(L, B, in)` (or `(B, L, in)` with `batch_first`); output `(L, B, D·H)` (or
/// `(B, L, D·H)`); states `h_n`, `c_n` `(D·num_layers, B, H)`, direction-major within a layer
/// as in PyTorch. With lengths, outputs past a sample's length are 0 and its final states
/// those of its last valid step (what `pack_padded_sequence` then `pad_packed_sequence` with
/// `total_length = L` give).
#[derive(Debug, Clone)]
pub struct Lstm {
    stack: Stack,
}

/// Builds an [`Lstm`] from `vb` (`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`,
/// `…_l0_reverse`, …), initialising missing weights with PyTorch's $U(-1/\sqrt H, 1/\sqrt H)$.
///
/// Errors on a config that does not validate, zero sizes, or a checkpoint tensor of the wrong
/// shape.
pub fn lstm(
    input_size: usize,
    hidden_size: usize,
    cfg: LstmConfig,
    vb: VarBuilder,
) -> Result<Lstm> {
    let stack = Stack::load(BLOCK, CellKind::Lstm, input_size, hidden_size, cfg, vb)?;
    Ok(Lstm { stack })
}

impl Lstm {
    /// From given weights, `[layer][direction]` (PyTorch's `weight_ih_l{k}`, … in
    /// [`DirectionWeights`]). Errors (naming `Lstm`) on a count of layers or directions other
    /// than `cfg`'s, shapes that do not fit one hidden size, biases present when `cfg.bias` is
    /// off or missing when it is on, and mixed dtypes or devices.
    pub fn new(weights: Vec<Vec<DirectionWeights>>, cfg: LstmConfig) -> Result<Self> {
        let stack = Stack::from_weights(BLOCK, CellKind::Lstm, weights, cfg)?;
        Ok(Self { stack })
    }

    /// The forward in evaluation mode (no dropout). `state`: `(h0, c0)`, zeros when `None`;
    /// `lengths`: one per sample, each in `1..=L`. Returns `(output, (h_n, c_n))`.
    ///
    /// Errors (naming `Lstm`) on an input that is not 3-D or whose last dimension is not
    /// `input_size`, states of the wrong shape, dtype or device, and bad lengths.
    pub fn forward(
        &self,
        x: &Tensor,
        state: Option<(&Tensor, &Tensor)>,
        lengths: Option<&[usize]>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        self.forward_t(x, state, lengths, false)
    }

    /// [`Lstm::forward`] with dropout between layers when `train`.
    pub fn forward_t(
        &self,
        x: &Tensor,
        state: Option<(&Tensor, &Tensor)>,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let (h0, c0) = state.unzip();
        let (out, h_n, c_n) = self.stack.forward(x, h0, c0, lengths, train)?;
        let c_n = c_n.ok_or_else(|| Error::config(BLOCK, "no cell state"))?;
        Ok((out, (h_n, c_n)))
    }

    /// The configuration.
    pub fn config(&self) -> &LstmConfig {
        &self.stack.cfg
    }

    /// `H`.
    pub fn hidden_size(&self) -> usize {
        self.stack.hidden_size
    }

    /// The weights, `[layer][direction]`.
    pub fn weights(&self) -> &[Vec<DirectionWeights>] {
        &self.stack.layers
    }
}

/// Evaluation mode (no dropout), zero initial states, full lengths: the output only. candle's
/// blanket `ModuleT` follows from it; for dropout in training call [`Lstm::forward_t`].
impl Module for Lstm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(Lstm::forward(self, x, None, None)?.0)
    }
}
