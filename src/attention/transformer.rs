//! Transformer encoder layer and stack: self-attention and an MLP, each on a residual branch,
//! pre-LN by default, with dropout, stochastic depth and LayerScale.
//!
//! # Shapes
//! - input and output `(B, L, E)` (batch first); the mask is any [`AttentionMask`] of the
//!   attention op (`Causal`, `KeyPadding`, `Bool`, …), shared by every head and layer.
//! - weights (PyTorch `nn.TransformerEncoderLayer` names): `self_attn.in_proj_weight` `(3E, E)`,
//!   `self_attn.in_proj_bias` `(3E)`, `self_attn.out_proj.{weight,bias}`, `linear1.weight`
//!   `(F, E)` + `linear1.bias`, `linear2.weight` `(E, F)` + `linear2.bias`, `norm1.*`, `norm2.*`
//!   (`(E)` weight and bias). Additions: `ls1.gamma`, `ls2.gamma` `(E)` with LayerScale (timm's
//!   names). With [`FfnActivation::SwiGlu`], `linear1.weight` is `(2F, E)`: its first `F` outputs
//!   are the gate (through SiLU), the last `F` the value (timm's `SwiGLUPacked` order; PyTorch has
//!   no SwiGLU layer, and LLaMA-style checkpoints store the two halves as separate `w1` / `w3`
//!   matrices — concatenate them as `[w1; w3]`).
//! - [`TransformerEncoder`]: `layers.{i}.…` and an optional final `norm.*`, as
//!   `nn.TransformerEncoder(…, norm=nn.LayerNorm(E))`.
//!
//! # Tip
//! **Pre-LN by default.** The original transformer (and PyTorch's default, `norm_first=False`)
//! normalises *after* the residual sum, $x \leftarrow \mathrm{LN}(x + f(x))$: every layer's
//! output passes through a norm, so the gradient reaching the first layers is rescaled at each
//! depth and, at initialisation, the last layers get the largest gradients; post-LN transformers
//! need a learning-rate warm-up and careful tuning to train at all (Xiong et al. 2020). Pre-LN,
//! $x \leftarrow x + f(\mathrm{LN}(x))$, keeps a clean identity path from input to output, so
//! gradients are well-scaled at every depth and training is stable with ordinary rates (a short
//! warm-up still helps Adam); the price is that the residual stream grows with depth and needs a
//! final norm ([`TransformerEncoderConfig::final_norm`]), and post-LN can end slightly better when
//! it trains. Set [`TransformerEncoderLayerConfig::norm_first`] to `false` for PyTorch's layout.
//!
//! Deep or small-data transformers also get **stochastic depth** (drop whole residual branches,
//! [`crate::blocks::DropPath`], with rates rising linearly to
//! [`TransformerEncoderConfig::drop_path_rate`] at the last layer, as in DeiT) and
//! **LayerScale** (each branch multiplied by a learned per-channel gain that starts small, so
//! every layer starts near the identity; CaiT). **SwiGLU** ($\mathrm{SiLU}(x W_g) \odot x W_v$)
//! usually beats a GELU MLP at the same parameter count; keep the count by using
//! $F_{glu} \approx \tfrac{2}{3} F$.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::attention::{transformer_encoder, TransformerEncoderConfig,
//!     TransformerEncoderLayerConfig};
//! use candle_tricks::ops::AttentionMask;
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! let layer = TransformerEncoderLayerConfig::new(4, 128).with_layer_scale(Some(1e-5));
//! let cfg = TransformerEncoderConfig::new(layer, 2).with_drop_path_rate(0.1);
//! let enc = transformer_encoder(32, cfg, vb)?;
//! let x = Tensor::randn(0f32, 1., (2, 10, 32), &dev)?;
//! let y = enc.forward_t(&x, &AttentionMask::None, false)?;
//! assert_eq!(y.dims(), &[2, 10, 32]);
//! // Pre-LN + LayerScale 1e-5: at init each layer is almost the identity, so the output is
//! // almost the final norm of the input.
//! let ln = candle_tricks::ops::layer_norm(&x, None, None, 1e-5)?;
//! assert!((y - ln)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-2);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Vaswani et al., *Attention Is All You Need*, 2017, <https://arxiv.org/abs/1706.03762>.
//! - Xiong et al., *On Layer Normalization in the Transformer Architecture*, 2020,
//!   <https://arxiv.org/abs/2002.04745> (pre-LN vs post-LN).
//! - Huang et al., *Deep Networks with Stochastic Depth*, 2016, <https://arxiv.org/abs/1603.09382>.
//! - Touvron et al., *Going deeper with Image Transformers* (CaiT, LayerScale), 2021,
//!   <https://arxiv.org/abs/2103.17239>.
//! - Shazeer, *GLU Variants Improve Transformer*, 2020, <https://arxiv.org/abs/2002.05202>.

use candle_core::{Module, ModuleT, Tensor, D};
use candle_nn::{linear_b, Linear, VarBuilder};

use super::mha::{multi_head_attention, MhaConfig, MultiHeadAttention};
use crate::blocks::{layer_scale, DropPath, LayerScale, LayerScaleConfig};
use crate::norm::{layer_norm, LayerNorm, LayerNormConfig};
use crate::ops::AttentionMask;
use crate::{check, Error, Result};

const LAYER: &str = "TransformerEncoderLayer";
const ENCODER: &str = "TransformerEncoder";

/// The MLP's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FfnActivation {
    /// Exact (erf) GELU, PyTorch's `"gelu"` and ViT's. The default.
    #[default]
    Gelu,
    /// ReLU, PyTorch's default `"relu"`.
    Relu,
    /// SwiGLU: `linear1` produces `2F` features, $\mathrm{SiLU}(\text{first } F) \odot
    /// \text{last } F$.
    SwiGlu,
}

/// Configuration of a [`TransformerEncoderLayer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransformerEncoderLayerConfig {
    /// Attention heads (must divide `E`). No default: set by [`Self::new`].
    pub num_heads: usize,
    /// MLP hidden width `F` (PyTorch's `dim_feedforward`). No default: set by [`Self::new`].
    pub dim_feedforward: usize,
    /// Dropout after the attention output projection, after the activation and after the MLP
    /// (PyTorch's `dropout`, whose default is 0.1). Default 0.0 (timm's ViT).
    pub dropout: f64,
    /// Dropout on the attention probabilities. PyTorch uses `dropout` here too. Default 0.0.
    pub attn_dropout: f64,
    /// MLP activation. Default [`FfnActivation::Gelu`].
    pub activation: FfnActivation,
    /// Pre-LN (`true`, default) or post-LN (`false`, PyTorch's default); see the module tip.
    pub norm_first: bool,
    /// LayerNorm epsilon. Default 1e-5 (PyTorch; timm's ViT uses 1e-6).
    pub layer_norm_eps: f64,
    /// Biases in the projections, MLP and norms. Default `true`.
    pub bias: bool,
    /// Stochastic-depth rate of both residual branches (timm's `drop_path`). Default 0.0.
    pub drop_path: f32,
    /// LayerScale initial gain (`ls1.gamma`, `ls2.gamma`), or `None` (default) for none.
    pub layer_scale: Option<f64>,
}

impl TransformerEncoderLayerConfig {
    /// `num_heads` heads and an MLP of width `dim_feedforward`, other fields at their defaults.
    pub fn new(num_heads: usize, dim_feedforward: usize) -> Self {
        Self {
            num_heads,
            dim_feedforward,
            dropout: 0.0,
            attn_dropout: 0.0,
            activation: FfnActivation::Gelu,
            norm_first: true,
            layer_norm_eps: 1e-5,
            bias: true,
            drop_path: 0.0,
            layer_scale: None,
        }
    }

    /// Sets both [`Self::dropout`] and [`Self::attn_dropout`] (PyTorch's single `dropout`).
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self.attn_dropout = p;
        self
    }

    /// Sets [`Self::attn_dropout`].
    pub fn with_attn_dropout(mut self, p: f64) -> Self {
        self.attn_dropout = p;
        self
    }

    /// Sets [`Self::activation`].
    pub fn with_activation(mut self, activation: FfnActivation) -> Self {
        self.activation = activation;
        self
    }

    /// Sets [`Self::norm_first`].
    pub fn with_norm_first(mut self, norm_first: bool) -> Self {
        self.norm_first = norm_first;
        self
    }

    /// Sets [`Self::layer_norm_eps`].
    pub fn with_layer_norm_eps(mut self, eps: f64) -> Self {
        self.layer_norm_eps = eps;
        self
    }

    /// Sets [`Self::bias`].
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets [`Self::drop_path`].
    pub fn with_drop_path(mut self, p: f32) -> Self {
        self.drop_path = p;
        self
    }

    /// Sets [`Self::layer_scale`].
    pub fn with_layer_scale(mut self, init: Option<f64>) -> Self {
        self.layer_scale = init;
        self
    }

    /// Errors (naming `TransformerEncoderLayer`) on 0 heads or MLP width, a dropout or drop-path
    /// rate outside `[0, 1)`, a non-positive eps or a non-finite LayerScale value.
    pub fn validate(&self) -> Result<()> {
        check::positive(LAYER, "num_heads", self.num_heads)?;
        check::positive(LAYER, "dim_feedforward", self.dim_feedforward)?;
        for (name, p) in [
            ("dropout", self.dropout),
            ("attn_dropout", self.attn_dropout),
            ("drop_path", self.drop_path as f64),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::config(
                    LAYER,
                    format!("{name} must be in [0, 1), got {p}"),
                ));
            }
        }
        check::eps(LAYER, "layer_norm_eps", self.layer_norm_eps)?;
        if let Some(v) = self.layer_scale {
            if !v.is_finite() {
                return Err(Error::config(
                    LAYER,
                    format!("layer_scale must be finite, got {v}"),
                ));
            }
        }
        Ok(())
    }
}

/// One transformer encoder layer (self-attention + MLP), PyTorch's `nn.TransformerEncoderLayer`
/// with `batch_first=True`, plus drop path, LayerScale and SwiGLU.
#[derive(Debug, Clone)]
pub struct TransformerEncoderLayer {
    self_attn: MultiHeadAttention,
    linear1: Linear,
    linear2: Linear,
    norm1: LayerNorm,
    norm2: LayerNorm,
    ls1: Option<LayerScale>,
    ls2: Option<LayerScale>,
    drop_path: DropPath,
    embed_dim: usize,
    cfg: TransformerEncoderLayerConfig,
}

fn dropout(x: &Tensor, p: f64, train: bool) -> Result<Tensor> {
    if train && p > 0.0 {
        Ok(candle_nn::ops::dropout(x, p as f32)?)
    } else {
        Ok(x.clone())
    }
}

impl TransformerEncoderLayer {
    /// The model width `E`.
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// The configuration.
    pub fn config(&self) -> TransformerEncoderLayerConfig {
        self.cfg
    }

    /// The self-attention.
    pub fn self_attn(&self) -> &MultiHeadAttention {
        &self.self_attn
    }

    fn attention_branch(&self, x: &Tensor, mask: &AttentionMask, train: bool) -> Result<Tensor> {
        let a = self.self_attn.forward_t(x, x, x, mask, train)?;
        let a = dropout(&a, self.cfg.dropout, train)?;
        let a = match &self.ls1 {
            Some(ls) => ls.apply(&a)?,
            None => a,
        };
        self.drop_path.apply(&a, train)
    }

    fn mlp_branch(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = crate::ops::linear(x, self.linear1.weight(), self.linear1.bias())?;
        let h = match self.cfg.activation {
            FfnActivation::Gelu => crate::ops::gelu_erf(&h)?,
            FfnActivation::Relu => h.relu()?,
            FfnActivation::SwiGlu => {
                let f = self.cfg.dim_feedforward;
                (h.narrow(D::Minus1, 0, f)?.silu()? * h.narrow(D::Minus1, f, f)?)?
            }
        };
        let h = dropout(&h, self.cfg.dropout, train)?;
        let h = crate::ops::linear(&h, self.linear2.weight(), self.linear2.bias())?;
        let h = dropout(&h, self.cfg.dropout, train)?;
        let h = match &self.ls2 {
            Some(ls) => ls.apply(&h)?,
            None => h,
        };
        self.drop_path.apply(&h, train)
    }

    /// The layer on `x` `(B, L, E)` with `mask` (shared by all heads); `train` enables dropout
    /// and drop path. Errors (naming `TransformerEncoderLayer` or `MultiHeadAttention`) on an
    /// input that is not `(B, L, E)` or is empty, a dtype different from the weights, or a mask
    /// the attention op rejects.
    pub fn forward_t(&self, x: &Tensor, mask: &AttentionMask, train: bool) -> Result<Tensor> {
        check_tokens(LAYER, x, self.embed_dim)?;
        if self.cfg.norm_first {
            let x = (x + self.attention_branch(&self.norm1.forward(x)?, mask, train)?)?;
            let y = self.mlp_branch(&self.norm2.forward(&x)?, train)?;
            Ok((x + y)?)
        } else {
            let x = self
                .norm1
                .forward(&(x + self.attention_branch(x, mask, train)?)?)?;
            let y = self.mlp_branch(&x, train)?;
            Ok(self.norm2.forward(&(x + y)?)?)
        }
    }
}

/// Without a mask (every token attends every token).
impl ModuleT for TransformerEncoderLayer {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(TransformerEncoderLayer::forward_t(
            self,
            x,
            &AttentionMask::None,
            train,
        )?)
    }
}

fn check_tokens(block: &'static str, x: &Tensor, e: usize) -> Result<()> {
    let pattern = format!("(B, L, {e})");
    check::rank(block, "input", x, 3, &pattern)?;
    check::non_empty(block, "input", x)?;
    check::float_dtype(block, "input", x)?;
    if x.dims()[2] != e {
        return Err(Error::shape(block, "input", pattern, x.shape().clone()));
    }
    Ok(())
}

/// A [`TransformerEncoderLayer`] of width `embed_dim` with its weights under `vb` (PyTorch's
/// names, see the module docs), created with PyTorch's init when `vb` is backed by a `VarMap`.
/// Errors (naming the layer or `MultiHeadAttention`) on an invalid config or `num_heads` not
/// dividing `embed_dim`.
pub fn transformer_encoder_layer(
    embed_dim: usize,
    cfg: TransformerEncoderLayerConfig,
    vb: VarBuilder,
) -> Result<TransformerEncoderLayer> {
    cfg.validate()?;
    check::positive(LAYER, "embed_dim", embed_dim)?;
    let mha = MhaConfig::new(cfg.num_heads)
        .with_bias(cfg.bias)
        .with_dropout(cfg.attn_dropout);
    let self_attn = multi_head_attention(embed_dim, mha, vb.pp("self_attn"))?;
    let f = cfg.dim_feedforward;
    let f1 = if cfg.activation == FfnActivation::SwiGlu {
        2 * f
    } else {
        f
    };
    let linear1 = linear_b(embed_dim, f1, cfg.bias, vb.pp("linear1"))?;
    let linear2 = linear_b(f, embed_dim, cfg.bias, vb.pp("linear2"))?;
    let ln = LayerNormConfig::default()
        .with_eps(cfg.layer_norm_eps)
        .with_bias(cfg.bias);
    let norm1 = layer_norm(embed_dim, ln, vb.pp("norm1"))?;
    let norm2 = layer_norm(embed_dim, ln, vb.pp("norm2"))?;
    let (ls1, ls2) = match cfg.layer_scale {
        Some(v) => {
            let ls = LayerScaleConfig::default().with_init_value(v);
            (
                Some(layer_scale(embed_dim, ls, vb.pp("ls1"))?),
                Some(layer_scale(embed_dim, ls, vb.pp("ls2"))?),
            )
        }
        None => (None, None),
    };
    Ok(TransformerEncoderLayer {
        self_attn,
        linear1,
        linear2,
        norm1,
        norm2,
        ls1,
        ls2,
        drop_path: DropPath::new(cfg.drop_path)?,
        embed_dim,
        cfg,
    })
}

/// Configuration of a [`TransformerEncoder`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransformerEncoderConfig {
    /// The configuration of every layer (its `drop_path` is replaced by the linear ramp).
    pub layer: TransformerEncoderLayerConfig,
    /// Number of layers (> 0). No default: set by [`Self::new`].
    pub num_layers: usize,
    /// Stochastic-depth rate of the last layer; layer $i$ of $N$ gets
    /// $\text{rate} \cdot i / (N - 1)$ (timm's ramp). Default 0.0.
    pub drop_path_rate: f32,
    /// A final LayerNorm `norm` after the last layer. Default: `layer.norm_first` (a pre-LN stack
    /// needs one, a post-LN stack ends normalised).
    pub final_norm: bool,
}

impl TransformerEncoderConfig {
    /// `num_layers` layers of `layer`, drop path 0, a final norm when pre-LN.
    pub fn new(layer: TransformerEncoderLayerConfig, num_layers: usize) -> Self {
        Self {
            layer,
            num_layers,
            drop_path_rate: 0.0,
            final_norm: layer.norm_first,
        }
    }

    /// Sets [`Self::drop_path_rate`].
    pub fn with_drop_path_rate(mut self, rate: f32) -> Self {
        self.drop_path_rate = rate;
        self
    }

    /// Sets [`Self::final_norm`].
    pub fn with_final_norm(mut self, final_norm: bool) -> Self {
        self.final_norm = final_norm;
        self
    }

    /// Errors (naming `TransformerEncoder`) on 0 layers or a rate outside `[0, 1)`, and on an
    /// invalid layer config.
    pub fn validate(&self) -> Result<()> {
        check::positive(ENCODER, "num_layers", self.num_layers)?;
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return Err(Error::config(
                ENCODER,
                format!(
                    "drop_path_rate must be in [0, 1), got {}",
                    self.drop_path_rate
                ),
            ));
        }
        self.layer.validate()
    }
}

/// A stack of [`TransformerEncoderLayer`]s with an optional final norm
/// (`nn.TransformerEncoder`).
#[derive(Debug, Clone)]
pub struct TransformerEncoder {
    layers: Vec<TransformerEncoderLayer>,
    norm: Option<LayerNorm>,
}

impl TransformerEncoder {
    /// Builds the stack from its layers (at least one, all of one width) and an optional final
    /// norm of that width. Errors (naming `TransformerEncoder`) otherwise.
    pub fn new(layers: Vec<TransformerEncoderLayer>, norm: Option<LayerNorm>) -> Result<Self> {
        let e = match layers.first() {
            Some(l) => l.embed_dim(),
            None => return Err(Error::config(ENCODER, "needs at least one layer, got 0")),
        };
        if layers.iter().any(|l| l.embed_dim() != e) || norm.as_ref().is_some_and(|n| n.dim() != e)
        {
            return Err(Error::config(
                ENCODER,
                format!("every layer and the final norm must have width {e}"),
            ));
        }
        Ok(Self { layers, norm })
    }

    /// The layers.
    pub fn layers(&self) -> &[TransformerEncoderLayer] {
        &self.layers
    }

    /// The final norm, if any.
    pub fn norm(&self) -> Option<&LayerNorm> {
        self.norm.as_ref()
    }

    /// Every layer in turn on `x` `(B, L, E)`, then the final norm. Errors as
    /// [`TransformerEncoderLayer::forward_t`].
    pub fn forward_t(&self, x: &Tensor, mask: &AttentionMask, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward_t(&x, mask, train)?;
        }
        match &self.norm {
            Some(n) => Ok(n.forward(&x)?),
            None => Ok(x),
        }
    }
}

/// Without a mask (every token attends every token).
impl ModuleT for TransformerEncoder {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(TransformerEncoder::forward_t(
            self,
            x,
            &AttentionMask::None,
            train,
        )?)
    }
}

/// A [`TransformerEncoder`] of width `embed_dim` with its layers under `vb.pp("layers.{i}")` and
/// the final norm under `vb.pp("norm")`. Errors on an invalid config.
pub fn transformer_encoder(
    embed_dim: usize,
    cfg: TransformerEncoderConfig,
    vb: VarBuilder,
) -> Result<TransformerEncoder> {
    cfg.validate()?;
    let n = cfg.num_layers;
    let layers = (0..n)
        .map(|i| {
            let rate = if n > 1 {
                cfg.drop_path_rate * i as f32 / (n - 1) as f32
            } else {
                cfg.drop_path_rate
            };
            let lc = cfg.layer.with_drop_path(rate);
            transformer_encoder_layer(embed_dim, lc, vb.pp(format!("layers.{i}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let norm = if cfg.final_norm {
        let ln = LayerNormConfig::default()
            .with_eps(cfg.layer.layer_norm_eps)
            .with_bias(cfg.layer.bias);
        Some(layer_norm(embed_dim, ln, vb.pp("norm"))?)
    } else {
        None
    };
    TransformerEncoder::new(layers, norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_block() {
        let ok = TransformerEncoderLayerConfig::new(4, 64);
        assert!(ok.validate().is_ok());
        let bad = [
            TransformerEncoderLayerConfig::new(0, 64),
            TransformerEncoderLayerConfig::new(4, 0),
            ok.with_dropout(1.0),
            ok.with_drop_path(-0.1),
            ok.with_layer_norm_eps(0.0),
            ok.with_layer_scale(Some(f64::NAN)),
        ];
        for cfg in bad {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(LAYER), "{e}");
        }
        let e = TransformerEncoderConfig::new(ok, 0).validate().unwrap_err();
        assert!(e.to_string().contains(ENCODER));
        let e = TransformerEncoderConfig::new(ok, 2)
            .with_drop_path_rate(1.5)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains(ENCODER));
    }
}
