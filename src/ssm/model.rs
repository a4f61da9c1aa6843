//! A Mamba language model (mamba-ssm's `MambaLMHeadModel`): token embedding, a residual stack
//! of pre-norm Mamba blocks, a final RMSNorm and an LM head tied to the embedding; parallel
//! forward for training and O(1)-per-token generation.
//!
//! # Shapes
//! - input token ids `(B, L)` (u32), output logits `(B, L, vocab)`.
//! - parameters (mamba-ssm's names): `backbone.embedding.weight` `(vocab, d_model)`,
//!   `backbone.layers.{i}.mixer.*` (a [`MambaBlock`]), `backbone.layers.{i}.norm.weight`
//!   `(d_model)`, `backbone.norm_f.weight` `(d_model)`. The LM head reuses the embedding matrix
//!   (tied weights), so a checkpoint's `lm_head.weight` (a copy of it) is not read; loading
//!   works with or without it.
//!
//! # Tip
//! Each layer is $h \leftarrow h + \mathrm{Mamba}(\mathrm{RMSNorm}(h))$ (pre-norm residual, as in
//! mamba-ssm's `Block` with the residual carried separately). Generation is where a Mamba model
//! differs from a Transformer: after the prompt, every new token costs the same —
//! $O(n_{layer} \cdot E \cdot (N + K))$ work and memory for the states, however long the
//! context — while a Transformer's key/value cache, and its per-token attention cost, grows
//! linearly with the context. [`MambaModel::generate`] fills the states with one parallel
//! forward over the prompt ([`MambaModel::prefill`]) and then runs [`MambaModel::step`] per
//! token.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::ssm::{mamba_model, MambaConfig, MambaModelConfig, Sampling};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! let cfg = MambaModelConfig::new(32, 2, MambaConfig::new(16));
//! let model = mamba_model(cfg, vb)?;
//! let ids = Tensor::new(&[[1u32, 5, 7, 2, 9]], &dev)?;
//! assert_eq!(model.forward(&ids)?.dims(), &[1, 5, 32]);
//! let new = model.generate(&ids, 4, Sampling::Greedy)?;
//! assert_eq!(new.dims(), &[1, 4]);
//! // Greedy generation continues with the argmax of the parallel forward's last logits.
//! let first = model.forward(&ids)?.narrow(1, 4, 1)?.argmax(2)?.flatten_all()?;
//! assert_eq!(first.to_vec1::<u32>()?[0], new.to_vec2::<u32>()?[0][0]);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Gu, Dao, *Mamba: Linear-Time Sequence Modeling with Selective State Spaces*, 2023,
//!   <https://arxiv.org/abs/2312.00752>
//! - Press, Wolf, *Using the Output Embedding to Improve Language Models*, 2016,
//!   <https://arxiv.org/abs/1608.05859> (tied input and output embeddings)

use crate::norm::{rms_norm, RmsNorm, RmsNormConfig};
use crate::ssm::mamba::{mamba_block, MambaBlock, MambaConfig, MambaState};
use crate::{check, Error, Result};
use candle_core::{DType, Module, Tensor, D};
use candle_nn::{Init, VarBuilder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BLOCK: &str = "MambaModel";

/// Configuration of [`MambaModel`] (mamba-ssm's `MambaConfig` with RMSNorm, tied embeddings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MambaModelConfig {
    /// Vocabulary size (mamba-ssm pads it to a multiple of 8 first; pass the padded size to
    /// load its checkpoints), > 0.
    pub vocab_size: usize,
    /// Number of layers, > 0.
    pub n_layer: usize,
    /// The mixer of every layer (its `d_model` is the model width).
    pub mixer: MambaConfig,
    /// Epsilon of every RMSNorm, finite and > 0. Default 1e-5 (mamba-ssm's `norm_epsilon`).
    pub norm_eps: f64,
}

impl Default for MambaModelConfig {
    fn default() -> Self {
        Self::new(50280, 24, MambaConfig::new(768))
    }
}

impl MambaModelConfig {
    /// A model with `vocab_size` tokens, `n_layer` layers of `mixer` and `norm_eps` 1e-5.
    /// [`Default`] is mamba-130m's shape (vocab 50280, 24 layers, d_model 768).
    pub fn new(vocab_size: usize, n_layer: usize, mixer: MambaConfig) -> Self {
        Self {
            vocab_size,
            n_layer,
            mixer,
            norm_eps: 1e-5,
        }
    }

    /// Sets `norm_eps`.
    pub fn with_norm_eps(mut self, eps: f64) -> Self {
        self.norm_eps = eps;
        self
    }

    /// Checks the sizes, the epsilon and the mixer config.
    pub fn validate(&self) -> Result<()> {
        check::positive(BLOCK, "vocab_size", self.vocab_size)?;
        check::positive(BLOCK, "n_layer", self.n_layer)?;
        check::eps(BLOCK, "norm_eps", self.norm_eps)?;
        self.mixer.validate()
    }
}

/// How [`MambaModel::generate`] picks the next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The most likely token.
    Greedy,
    /// A draw from `softmax(logits / temperature)`, reproducible from `seed`.
    Temperature {
        /// Softmax temperature, finite and > 0.
        temperature: f64,
        /// Seed of the random generator.
        seed: u64,
    },
}

/// One layer: `RMSNorm` then a [`MambaBlock`] on the residual stream.
#[derive(Debug, Clone)]
struct Layer {
    norm: RmsNorm,
    mixer: MambaBlock,
}

/// A Mamba language model (mamba-ssm's `MambaLMHeadModel`); see the [module docs](self).
#[derive(Debug, Clone)]
pub struct MambaModel {
    embedding: Tensor,
    layers: Vec<Layer>,
    norm_f: RmsNorm,
    cfg: MambaModelConfig,
}

/// The decoding state of a [`MambaModel`]: one [`MambaState`] per layer.
#[derive(Debug, Clone)]
pub struct MambaModelState {
    /// Per-layer states, first layer first.
    pub layers: Vec<MambaState>,
}

impl MambaModel {
    /// The configuration.
    pub fn config(&self) -> MambaModelConfig {
        self.cfg
    }

    /// The `(vocab, d_model)` embedding, also the LM head.
    pub fn embedding(&self) -> &Tensor {
        &self.embedding
    }

    /// The mixer of layer `i`, if any.
    pub fn mixer(&self, i: usize) -> Option<&MambaBlock> {
        self.layers.get(i).map(|l| &l.mixer)
    }

    /// A zero state for `batch` sequences.
    pub fn zero_state(&self, batch: usize) -> Result<MambaModelState> {
        let layers = self
            .layers
            .iter()
            .map(|l| l.mixer.zero_state(batch))
            .collect::<Result<_>>()?;
        Ok(MambaModelState { layers })
    }

    fn check_ids(&self, ids: &Tensor, rank: usize, pattern: &str) -> Result<()> {
        if ids.rank() != rank || ids.dims().contains(&0) {
            return Err(Error::shape(
                BLOCK,
                "token ids",
                format!("{pattern}, non-empty"),
                ids.shape().clone(),
            ));
        }
        if ids.dtype() != DType::U32 {
            return Err(Error::DTypeMismatch {
                block: BLOCK,
                what: "token ids",
                expected: DType::U32,
                actual: ids.dtype(),
            });
        }
        // Out-of-range ids would make the embedding gather fail deep inside candle.
        let max = ids.max_all()?.to_scalar::<u32>()? as usize;
        if max >= self.cfg.vocab_size {
            return Err(Error::config(
                BLOCK,
                format!(
                    "token id {max} out of range for vocab_size {}",
                    self.cfg.vocab_size
                ),
            ));
        }
        Ok(())
    }

    fn embed(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let dims = ids.dims().to_vec();
        let flat = ids.flatten_all()?;
        let h = self.embedding.index_select(&flat, 0)?;
        let mut out = dims;
        out.push(self.cfg.mixer.d_model);
        h.reshape(out)
    }

    fn head(&self, residual: &Tensor) -> Result<Tensor> {
        let h = self.norm_f.forward(residual)?;
        let dims = h.dims().to_vec();
        let dm = self.cfg.mixer.d_model;
        let rows = h.reshape(((), dm))?.matmul(&self.embedding.t()?)?;
        let mut out = dims[..dims.len() - 1].to_vec();
        out.push(self.cfg.vocab_size);
        Ok(rows.reshape(out)?)
    }

    fn run(&self, ids: &Tensor, want_state: bool) -> Result<(Tensor, Option<MambaModelState>)> {
        self.check_ids(ids, 2, "(B, L) u32")?;
        let mut residual = self.embed(ids)?;
        let mut states = Vec::new();
        for layer in &self.layers {
            let h = layer.norm.forward(&residual)?;
            let y = if want_state {
                let (y, s) = layer.mixer.forward_with_state(&h)?;
                states.push(s);
                y
            } else {
                layer.mixer.forward(&h)?
            };
            residual = (residual + y)?;
        }
        let logits = self.head(&residual)?;
        Ok((
            logits,
            want_state.then_some(MambaModelState { layers: states }),
        ))
    }

    /// The parallel forward over a prompt `(B, L)` returning the logits `(B, L, vocab)` and
    /// the state after its last token, from which [`MambaModel::step`] continues.
    pub fn prefill(&self, ids: &Tensor) -> Result<(Tensor, MambaModelState)> {
        match self.run(ids, true)? {
            (logits, Some(s)) => Ok((logits, s)),
            _ => Err(Error::config(BLOCK, "no state from the prefill")),
        }
    }

    /// One decoding step: token ids `(B)` → logits `(B, vocab)`, updating `state` in place.
    /// Equal to the parallel forward's logits at the same position.
    pub fn step(&self, ids: &Tensor, state: &mut MambaModelState) -> Result<Tensor> {
        self.check_ids(ids, 1, "(B) u32")?;
        if state.layers.len() != self.layers.len() {
            return Err(Error::config(
                BLOCK,
                format!(
                    "state has {} layers, the model {}",
                    state.layers.len(),
                    self.layers.len()
                ),
            ));
        }
        let mut residual = self.embed(ids)?;
        for (layer, s) in self.layers.iter().zip(state.layers.iter_mut()) {
            let h = layer.norm.forward(&residual)?;
            residual = (residual + layer.mixer.step(&h, s)?)?;
        }
        self.head(&residual)
    }

    /// Generates `n_new` tokens after `prompt` `(B, L)` and returns them, `(B, n_new)` u32:
    /// one parallel forward over the prompt, then one [`MambaModel::step`] per new token.
    ///
    /// Errors (naming `MambaModel`) on a bad prompt (rank, dtype, empty, id ≥ vocab) or a
    /// temperature that is not finite and > 0.
    pub fn generate(&self, prompt: &Tensor, n_new: usize, sampling: Sampling) -> Result<Tensor> {
        let mut rng = match sampling {
            Sampling::Greedy => None,
            Sampling::Temperature { temperature, seed } => {
                if !(temperature.is_finite() && temperature > 0.0) {
                    return Err(Error::config(
                        BLOCK,
                        format!("temperature must be finite and > 0, got {temperature}"),
                    ));
                }
                Some((temperature, StdRng::seed_from_u64(seed)))
            }
        };
        let (logits, mut state) = self.prefill(prompt)?;
        let (bs, l) = prompt.dims2()?;
        let mut last = logits.narrow(1, l - 1, 1)?.squeeze(1)?; // (B, vocab)
        let mut out: Vec<Tensor> = Vec::with_capacity(n_new);
        for i in 0..n_new {
            let next = match rng.as_mut() {
                None => last.argmax(D::Minus1)?,
                Some((temp, rng)) => {
                    let p =
                        candle_nn::ops::softmax_last_dim(&(last.to_dtype(DType::F32)? / *temp)?)?;
                    let rows = p.to_vec2::<f32>()?;
                    let ids: Vec<u32> = rows.iter().map(|row| sample(row, rng)).collect();
                    Tensor::from_vec(ids, bs, prompt.device())?
                }
            };
            out.push(next.clone());
            if i + 1 < n_new {
                last = self.step(&next, &mut state)?;
            }
        }
        if out.is_empty() {
            return Ok(Tensor::zeros((bs, 0), DType::U32, prompt.device())?);
        }
        Ok(Tensor::stack(&out, 1)?)
    }
}

/// Draws an index from the probabilities `p` (summing to about 1).
fn sample(p: &[f32], rng: &mut StdRng) -> u32 {
    let u: f32 = rng.random();
    let mut acc = 0.0;
    for (i, v) in p.iter().enumerate() {
        acc += v;
        if u < acc {
            return i as u32;
        }
    }
    p.len().saturating_sub(1) as u32
}

impl Module for MambaModel {
    /// Logits `(B, L, vocab)` for token ids `(B, L)` (u32).
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.run(xs, false)?.0)
    }
}

/// A [`MambaModel`] whose parameters come from `vb` under mamba-ssm's `MambaLMHeadModel` names
/// (see the [module docs](self)); a fresh `VarMap` gets a normal(0, 0.02) embedding, norms at 1
/// and each mixer's [`mamba_block`] initialisation.
pub fn mamba_model(cfg: MambaModelConfig, vb: VarBuilder) -> Result<MambaModel> {
    check::loading("MambaModel", vb, |vb| load_model(cfg, vb))
}

fn load_model(cfg: MambaModelConfig, vb: VarBuilder) -> Result<MambaModel> {
    cfg.validate()?;
    let dm = cfg.mixer.d_model;
    let bb = vb.pp("backbone");
    let embedding = check::param(
        BLOCK,
        &bb.pp("embedding"),
        (cfg.vocab_size, dm),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        },
    )?;
    let ncfg = RmsNormConfig::default().with_eps(cfg.norm_eps);
    let layers = (0..cfg.n_layer)
        .map(|i| {
            let lvb = bb.pp("layers").pp(i.to_string());
            Ok(Layer {
                norm: rms_norm(dm, ncfg, lvb.pp("norm"))?,
                mixer: mamba_block(cfg.mixer, lvb.pp("mixer"))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let norm_f = rms_norm(dm, ncfg, bb.pp("norm_f"))?;
    Ok(MambaModel {
        embedding,
        layers,
        norm_f,
        cfg,
    })
}
