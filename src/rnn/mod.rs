//! Recurrent networks: [`Lstm`] and [`Gru`] with PyTorch's tensor names, on a fused recurrence.
//!
//! # Shapes
//! - input `(L, B, in)`, or `(B, L, in)` with [`RnnConfig::batch_first`];
//! - output `(L, B, D·H)` (or batch-first), `D = 2` when bidirectional;
//! - states `h_n` (and the LSTM's `c_n`) `(D·num_layers, B, H)`;
//! - optional lengths, one per sample in `1..=L` (PyTorch's packed sequences): outputs past a
//!   sample's length are 0, its final states are those of its last valid step, and the reverse
//!   direction starts at its last valid step. [`lengths_from_tensor`] reads them from a tensor.
//!
//! # Tip
//! **Gating against vanishing gradients.** A plain recurrent net $h_t = \tanh(W h_{t-1} + U x_t)$
//! backpropagates through the product of $L$ Jacobians
//! $\mathrm{diag}(1 - h_t^2) \thinspace W$: with the largest singular value of $W$ below 1 the
//! gradient from step $L$ to step 0 shrinks geometrically, above 1 it can explode. The LSTM adds
//! a cell state updated additively, $c_t = f_t \odot c_{t-1} + i_t \odot g_t$, so
//! $\partial c_L / \partial c_0 = \prod_t f_t$ is set by the forget gate the network learns:
//! with $f \approx 1$ information (and gradient) passes hundreds of steps untouched. The GRU
//! folds the same idea into one state, $h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}$, with
//! three weight blocks instead of four (¾ of the LSTM's parameters) and usually similar
//! accuracy; try both. Clip the gradient norm anyway: gating prevents vanishing, not
//! exploding. A common trick is a forget-gate bias of 1 at initialisation.
//!
//! **LSTM/GRU vs a transformer vs Mamba.** A recurrent net carries a fixed-size state: each
//! step costs the same whatever the history, it streams (one sample in, one out, no cache that
//! grows) and it is a strong, cheap baseline on small data sets, short or medium sequences, and
//! signals (sensor data, audio features, time series). Its weakness is that training is
//! sequential in time: step $t$ needs step $t - 1$, so on parallel hardware it cannot use the
//! whole sequence at once. A transformer compares every pair of tokens: fully parallel
//! training and exact recall of any earlier token, at $O(L^2)$ time and a key/value cache that
//! grows with the context; it wins on large data and long-range retrieval. Mamba
//! ([`crate::ssm`]) sits between: a gated recurrence too, but *linear* in the state, so training
//! runs as a parallel scan over time, with the RNN's fixed-size state at inference and an
//! input-dependent gate like the LSTM's. Rule of thumb: small data or streaming → LSTM/GRU;
//! lots of data and recall over long contexts → transformer; long sequences where attention's
//! $L^2$ hurts → Mamba.
//!
//! **Speed.** The input projections of all steps are one matrix product before the time loop
//! and the loop runs inside one fused op with a real backward ([`crate::ops::recurrent`]);
//! candle-nn's `LSTM` runs a dozen tensor ops per step instead. `docs/PERFORMANCE.md`
//! ("Recurrent nets") has the measured ratio.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Tensor, Var};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::ops::{lstm_recurrence, RecurrenceConfig};
//! use candle_tricks::rnn::{gru, lstm, RnnConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! // A GRU has 3/4 of an LSTM's parameters (3 gate blocks instead of 4).
//! let count = |vm: &VarMap| vm.all_vars().iter().map(|v| v.elem_count()).sum::<usize>();
//! let (vl, vg) = (VarMap::new(), VarMap::new());
//! let cfg = RnnConfig::default().with_num_layers(2).with_bidirectional(true);
//! let net = lstm(16, 32, cfg, VarBuilder::from_varmap(&vl, DType::F32, &dev))?;
//! gru(16, 32, cfg, VarBuilder::from_varmap(&vg, DType::F32, &dev))?;
//! assert_eq!(4 * count(&vg), 3 * count(&vl));
//! let x = Tensor::randn(0f32, 1., (20, 3, 16), &dev)?;
//! let (y, (h_n, _c_n)) = net.forward(&x, None, Some(&[20, 7, 12]))?;
//! assert_eq!((y.dims(), h_n.dims()), (&[20, 3, 64][..], &[4, 3, 32][..]));
//!
//! // Vanishing gradients: over 60 steps, a tanh RNN whose weight has norm 0.5 passes back
//! // less than 0.5^60 of the gradient; an LSTM with its forget gate open (f ≈ 0.998) keeps
//! // most of it on the cell state.
//! let (l, b, h) = (60, 1, 8);
//! let c0 = Var::from_tensor(&Tensor::zeros((b, h), DType::F32, &dev)?)?;
//! let h0 = Tensor::zeros((b, h), DType::F32, &dev)?;
//! let mut pre = vec![0f32; l * 4 * h];
//! for t in 0..l {
//!     for j in 0..h {
//!         pre[t * 4 * h + h + j] = 6.0; // forget-gate pre-activation
//!     }
//! }
//! let xproj = Tensor::from_vec(pre, (l, b, 4 * h), &dev)?;
//! let w_hh = Tensor::zeros((4 * h, h), DType::F32, &dev)?;
//! let (_, _, c_n) = lstm_recurrence(&xproj, &w_hh, None, &h0, &c0, &RecurrenceConfig::default())?;
//! let g = c_n.sum_all()?.backward()?;
//! let lstm_grad = g.get(&c0).expect("grad").mean_all()?.to_scalar::<f32>()?;
//! assert!(lstm_grad > 0.8);
//!
//! let h0 = Var::from_tensor(&Tensor::zeros((b, h), DType::F32, &dev)?)?;
//! let w = (Tensor::eye(h, DType::F32, &dev)? * 0.5)?;
//! let mut state = h0.as_tensor().clone();
//! for _ in 0..l {
//!     state = state.matmul(&w)?.tanh()?;
//! }
//! let g = state.sum_all()?.backward()?;
//! let rnn_grad = g.get(&h0).expect("grad").mean_all()?.to_scalar::<f32>()?;
//! assert!(rnn_grad < 0.5f32.powi(59));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Hochreiter, Schmidhuber, *Long Short-Term Memory*, Neural Computation 1997.
//! - Gers, Schmidhuber, Cummins, *Learning to Forget: Continual Prediction with LSTM*, 2000
//!   (the forget gate).
//! - Bengio, Simard, Frasconi, *Learning Long-Term Dependencies with Gradient Descent is
//!   Difficult*, IEEE TNN 1994 (vanishing gradients).
//! - Cho et al., *Learning Phrase Representations using RNN Encoder-Decoder for Statistical
//!   Machine Translation*, 2014, <https://arxiv.org/abs/1406.1078> (the GRU).
//! - Jozefowicz, Zaremba, Sutskever, *An Empirical Exploration of Recurrent Network
//!   Architectures*, ICML 2015 (LSTM vs GRU; the forget-gate bias of 1).

mod gru;
mod lstm;
mod stack;

pub use crate::ops::{gru_recurrence, lstm_recurrence, CellKind, RecurrenceConfig};
pub use gru::{gru, Gru};
pub use lstm::{lstm, Lstm};
pub use stack::{lengths_from_tensor, DirectionWeights, GruConfig, LstmConfig, RnnConfig};
