//! [`Gru`]: PyTorch's `nn.GRU` (multi-layer, bidirectional, batch-first, variable lengths) on
//! the fused recurrence.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::stack::{DirectionWeights, GruConfig, Stack};
use crate::ops::CellKind;
use crate::Result;

const BLOCK: &str = "Gru";

/// A stacked GRU with PyTorch's tensor names, gate order ($r, z, n$) and candidate
/// $n = \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn}))$.
///
/// Shapes as [`super::Lstm`], without the cell state: `h_n` `(D·num_layers, B, H)`.
#[derive(Debug, Clone)]
pub struct Gru {
    stack: Stack,
}

/// Builds a [`Gru`] from `vb` (PyTorch's names, as [`super::lstm()`]), initialising missing
/// weights with $U(-1/\sqrt H, 1/\sqrt H)$.
pub fn gru(input_size: usize, hidden_size: usize, cfg: GruConfig, vb: VarBuilder) -> Result<Gru> {
    let stack = Stack::load(BLOCK, CellKind::Gru, input_size, hidden_size, cfg, vb)?;
    Ok(Gru { stack })
}

impl Gru {
    /// From given weights, `[layer][direction]` (PyTorch's `weight_ih_l{k}`, … in
    /// [`DirectionWeights`]). Errors (naming `Gru`) on a count of layers or directions other
    /// than `cfg`'s, shapes that do not fit one hidden size, biases present when `cfg.bias` is
    /// off or missing when it is on, and mixed dtypes or devices.
    pub fn new(weights: Vec<Vec<DirectionWeights>>, cfg: GruConfig) -> Result<Self> {
        let stack = Stack::from_weights(BLOCK, CellKind::Gru, weights, cfg)?;
        Ok(Self { stack })
    }

    /// The forward in evaluation mode (no dropout). `h0` zeros when `None`; `lengths` one per
    /// sample, each in `1..=L`. Returns `(output, h_n)`.
    ///
    /// Errors (naming `Gru`) as [`super::Lstm::forward`].
    pub fn forward(
        &self,
        x: &Tensor,
        h0: Option<&Tensor>,
        lengths: Option<&[usize]>,
    ) -> Result<(Tensor, Tensor)> {
        self.forward_t(x, h0, lengths, false)
    }

    /// [`Gru::forward`] with dropout between layers when `train`.
    pub fn forward_t(
        &self,
        x: &Tensor,
        h0: Option<&Tensor>,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<(Tensor, Tensor)> {
        let (out, h_n, _) = self.stack.forward(x, h0, None, lengths, train)?;
        Ok((out, h_n))
    }

    /// The configuration.
    pub fn config(&self) -> &GruConfig {
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
/// blanket `ModuleT` follows from it; for dropout in training call [`Gru::forward_t`].
impl Module for Gru {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(Gru::forward(self, x, None, None)?.0)
    }
}
