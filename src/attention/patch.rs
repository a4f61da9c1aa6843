//! Images to transformer tokens: ViT's patch embedding ([`PatchEmbed`]), a hybrid convolutional
//! stem ([`ConvStem`]), and [`VitEmbedding`], which adds the class token and the learned position
//! embeddings.
//!
//! # Shapes
//! - [`PatchEmbed`] with patch $p$: `(B, C, H, W)` → `(B, N, E)`, $N = (H/p)(W/p)$ ($H$, $W$
//!   multiples of $p$). Weights (timm): `proj.weight` `(E, C, p, p)`, `proj.bias` `(E)`, and
//!   with [`PatchEmbedConfig::norm`] a LayerNorm `norm.weight` / `norm.bias`.
//! - [`ConvStem`]: `(B, C, H, W)` → `(B, N, E)` through $s$ stride-2 3×3 conv → BN → ReLU
//!   stages (each halves the size, rounding up) and a 1×1 projection to $E$, so
//!   $N = \lceil H/2^s \rceil \lceil W/2^s \rceil$. Weights (timm's `HybridEmbed` layout):
//!   `backbone.{i}.conv.weight` `(C_i, C_{i-1}, 3, 3)`, `backbone.{i}.bn.{weight, bias,
//!   running_mean, running_var}`, `proj.weight` `(E, C_s, 1, 1)`, `proj.bias` `(E)`.
//! - [`VitEmbedding`]: `(B, C, H, W)` → `(B, 1 + N, E)`: token 0 is `cls_token` `(1, 1, E)`,
//!   then `pos_embed` `(1, 1 + N, E)` is added (timm's names; the tokenizer is under
//!   `patch_embed.`). The image size is fixed at construction because `pos_embed` has one entry
//!   per patch; another size is an error. To fine-tune at a new resolution, resample the
//!   pre-trained `pos_embed` to the new grid with [`crate::transfer::resample_pos_embed`]
//!   (timm's bicubic, class token kept) and build the embedding from it.
//!
//! # Tip
//! **Give a small-data ViT a convolutional stem.** A ViT's patchify layer is one large-stride
//! convolution: it sees each $p \times p$ patch once and has no notion of locality beyond it, so
//! a plain ViT needs very large datasets (or heavy augmentation) to learn what a CNN gets from
//! its architecture. Replacing it by a few stride-2 3×3 convolutions with batch norm (the
//! "hybrid" ViT of Dosovitskiy et al.; Xiao et al. 2021 show that a stem of stacked 3×3
//! convolutions alone makes ViT training converge faster, far less sensitive to the learning rate
//! and the optimizer, and more accurate) gives the transformer local, overlapping features and
//! a translation-equivariant start, for a few percent more compute. The attention layers then
//! only have to learn the global mixing. Two stages already give $N = HW/16$ tokens, the same
//! as $4 \times 4$ patches.
//!
//! The class token is a learned query that gathers the image summary through attention; a
//! global average of the output tokens works as well and needs no `cls_token`.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::attention::{hybrid_vit_embedding, vit_embedding, ConvStemConfig,
//!     PatchEmbedConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &dev)?;
//! // 4×4 patches of a 32×32 image: 64 tokens + the class token.
//! let vit = vit_embedding((32, 32), 48, PatchEmbedConfig::new(4, 3), vb.pp("vit"))?;
//! assert_eq!(vit.forward_t(&x, false)?.dims(), &[2, 65, 48]);
//! // Two stride-2 conv stages: also 8×8 = 64 tokens, from overlapping 3×3 windows.
//! let stem = ConvStemConfig::new(3, vec![16, 32]);
//! let hybrid = hybrid_vit_embedding((32, 32), 48, stem, vb.pp("hybrid"))?;
//! assert_eq!(hybrid.num_patches(), 64);
//! assert_eq!(hybrid.forward_t(&x, true)?.dims(), &[2, 65, 48]);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Dosovitskiy et al., *An Image is Worth 16x16 Words: Transformers for Image Recognition at
//!   Scale*, 2020, <https://arxiv.org/abs/2010.11929> (ViT, hybrid ViT).
//! - Xiao et al., *Early Convolutions Help Transformers See Better*, 2021,
//!   <https://arxiv.org/abs/2106.14881>.

use crate::conv::{Conv2d, Padding};
use crate::ops::Conv2dConfig;
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::conv::init::weight_and_bias;
use crate::norm::{batch_norm, layer_norm, BatchNorm, BatchNormConfig, LayerNorm, LayerNormConfig};
use crate::{check, Error, Result};

const PATCH: &str = "PatchEmbed";
const STEM: &str = "ConvStem";
const VIT: &str = "VitEmbedding";

/// `(B, E, h, w)` → `(B, h·w, E)`.
fn to_tokens(x: &Tensor) -> Result<Tensor> {
    Ok(x.flatten_from(2)?.transpose(1, 2)?.contiguous()?)
}

/// Configuration of a [`PatchEmbed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchEmbedConfig {
    /// Patch side $p$ (kernel = stride). No default: set by [`Self::new`].
    pub patch_size: usize,
    /// Input channels. No default: set by [`Self::new`].
    pub in_chans: usize,
    /// A bias in the projection. Default `true`.
    pub bias: bool,
    /// A LayerNorm `norm` over the tokens. Default `false` (timm's ViT).
    pub norm: bool,
}

impl PatchEmbedConfig {
    /// Patches of `patch_size` over `in_chans` channels, with bias and no norm.
    pub fn new(patch_size: usize, in_chans: usize) -> Self {
        Self {
            patch_size,
            in_chans,
            bias: true,
            norm: false,
        }
    }

    /// Sets [`Self::bias`].
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets [`Self::norm`].
    pub fn with_norm(mut self, norm: bool) -> Self {
        self.norm = norm;
        self
    }

    /// Errors (naming `PatchEmbed`) on a zero patch size or channel count.
    pub fn validate(&self) -> Result<()> {
        check::positive(PATCH, "patch_size", self.patch_size)?;
        check::positive(PATCH, "in_chans", self.in_chans)
    }
}

/// ViT patch embedding: a convolution with kernel = stride = patch, flattened to tokens.
#[derive(Debug, Clone)]
pub struct PatchEmbed {
    proj: Conv2d,
    norm: Option<LayerNorm>,
    embed_dim: usize,
    cfg: PatchEmbedConfig,
}

impl PatchEmbed {
    /// The token width `E`.
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// The configuration.
    pub fn config(&self) -> PatchEmbedConfig {
        self.cfg
    }

    /// The number of tokens for an `h × w` image; errors (naming `PatchEmbed`) unless both are
    /// positive multiples of the patch size.
    pub fn num_patches(&self, (h, w): (usize, usize)) -> Result<usize> {
        let p = self.cfg.patch_size;
        if h == 0 || w == 0 || !h.is_multiple_of(p) || !w.is_multiple_of(p) {
            return Err(Error::config(
                PATCH,
                format!(
                    "image size must be a positive multiple of the patch size {p}, got {h}×{w}"
                ),
            ));
        }
        check::numel_of(PATCH, "token grid", &[h / p, w / p], 1)
    }

    /// Like [`Module::forward`], returning this crate's error.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        check::image_batch(PATCH, "input", x, self.cfg.in_chans, self.proj.weight())?;
        self.num_patches((x.dims()[2], x.dims()[3]))?;
        let t = to_tokens(&self.proj.forward(x)?)?;
        match &self.norm {
            Some(n) => Ok(n.forward(&t)?),
            None => Ok(t),
        }
    }
}

impl Module for PatchEmbed {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.apply(x)?)
    }
}

/// A [`PatchEmbed`] to `embed_dim` features with `proj` (and `norm`) under `vb`, created with
/// PyTorch's conv init when `vb` is backed by a `VarMap`. Errors (naming `PatchEmbed`) on a
/// zero size.
pub fn patch_embed(embed_dim: usize, cfg: PatchEmbedConfig, vb: VarBuilder) -> Result<PatchEmbed> {
    cfg.validate()?;
    check::positive(PATCH, "embed_dim", embed_dim)?;
    let p = cfg.patch_size;
    let (w, b) = weight_and_bias(
        PATCH,
        &vb.pp("proj"),
        (embed_dim, cfg.in_chans, p, p),
        cfg.bias,
    )?;
    let conv = Conv2dConfig::default()
        .with_stride(p)
        .with_padding(Padding::Valid);
    let norm = if cfg.norm {
        Some(layer_norm(
            embed_dim,
            LayerNormConfig::default(),
            vb.pp("norm"),
        )?)
    } else {
        None
    };
    Ok(PatchEmbed {
        proj: Conv2d::new(w, b, conv)?,
        norm,
        embed_dim,
        cfg,
    })
}

/// Configuration of a [`ConvStem`].
#[derive(Debug, Clone, PartialEq)]
pub struct ConvStemConfig {
    /// Input channels. No default: set by [`Self::new`].
    pub in_chans: usize,
    /// Output channels of each stride-2 conv → BN → ReLU stage (at least one). No default.
    pub channels: Vec<usize>,
    /// The batch norms' configuration. Default [`BatchNormConfig::default`].
    pub bn: BatchNormConfig,
}

impl ConvStemConfig {
    /// Stages of `channels` over `in_chans` input channels.
    pub fn new(in_chans: usize, channels: Vec<usize>) -> Self {
        Self {
            in_chans,
            channels,
            bn: BatchNormConfig::default(),
        }
    }

    /// Errors (naming `ConvStem`) on zero input channels, no stage or a zero-width stage.
    pub fn validate(&self) -> Result<()> {
        check::positive(STEM, "in_chans", self.in_chans)?;
        check::positive(STEM, "number of stages", self.channels.len())?;
        for &c in &self.channels {
            check::positive(STEM, "stage channels", c)?;
        }
        Ok(())
    }
}

/// Hybrid-ViT tokenizer: stride-2 3×3 conv → BN → ReLU stages, a 1×1 projection, flattened to
/// tokens.
#[derive(Debug, Clone)]
pub struct ConvStem {
    stages: Vec<(Conv2d, BatchNorm)>,
    proj: Conv2d,
    embed_dim: usize,
    in_chans: usize,
}

impl ConvStem {
    /// The token width `E`.
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// The number of tokens for an `h × w` image (each stage rounds up); errors (naming
    /// `ConvStem`) on a zero size.
    pub fn num_patches(&self, (mut h, mut w): (usize, usize)) -> Result<usize> {
        if h == 0 || w == 0 {
            return Err(Error::config(
                STEM,
                format!("image size must be positive, got {h}×{w}"),
            ));
        }
        for _ in &self.stages {
            (h, w) = (h.div_ceil(2), w.div_ceil(2));
        }
        check::numel_of(STEM, "token grid", &[h, w], 1)
    }

    /// Like [`ModuleT::forward_t`] (`train` selects the batch-norm statistics), returning this
    /// crate's error.
    pub fn apply(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check::image_batch(STEM, "input", x, self.in_chans, self.proj.weight())?;
        let mut x = x.clone();
        for (conv, bn) in &self.stages {
            x = bn.forward_t(&conv.forward(&x)?, train)?.relu()?;
        }
        to_tokens(&self.proj.forward(&x)?)
    }
}

impl ModuleT for ConvStem {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(self.apply(x, train)?)
    }
}

/// A [`ConvStem`] to `embed_dim` features with `backbone.{i}.conv`, `backbone.{i}.bn` and
/// `proj` under `vb`. Errors (naming `ConvStem`) on an invalid config or `embed_dim` 0.
pub fn conv_stem(embed_dim: usize, cfg: ConvStemConfig, vb: VarBuilder) -> Result<ConvStem> {
    cfg.validate()?;
    check::positive(STEM, "embed_dim", embed_dim)?;
    let conv = Conv2dConfig::default()
        .with_stride(2)
        .with_padding(Padding::Explicit(1));
    let mut cin = cfg.in_chans;
    let mut stages = Vec::with_capacity(cfg.channels.len());
    for (i, &c) in cfg.channels.iter().enumerate() {
        let vbi = vb.pp(format!("backbone.{i}"));
        // conv → BN: the conv needs no bias, BN's shift replaces it.
        let (w, _) = weight_and_bias(STEM, &vbi.pp("conv"), (c, cin, 3, 3), false)?;
        let bn = batch_norm(c, cfg.bn, vbi.pp("bn"))?;
        stages.push((Conv2d::new(w, None, conv)?, bn));
        cin = c;
    }
    let (w, b) = weight_and_bias(STEM, &vb.pp("proj"), (embed_dim, cin, 1, 1), true)?;
    Ok(ConvStem {
        stages,
        proj: Conv2d::new(w, b, Conv2dConfig::default())?,
        embed_dim,
        in_chans: cfg.in_chans,
    })
}

/// How a [`VitEmbedding`] turns images into tokens.
#[derive(Debug, Clone)]
pub enum Tokenizer {
    /// Non-overlapping patches ([`PatchEmbed`]).
    Patch(PatchEmbed),
    /// A convolutional stem ([`ConvStem`]), the hybrid ViT.
    Conv(ConvStem),
}

impl Tokenizer {
    fn embed_dim(&self) -> usize {
        match self {
            Tokenizer::Patch(p) => p.embed_dim(),
            Tokenizer::Conv(c) => c.embed_dim(),
        }
    }

    fn num_patches(&self, size: (usize, usize)) -> Result<usize> {
        match self {
            Tokenizer::Patch(p) => p.num_patches(size),
            Tokenizer::Conv(c) => c.num_patches(size),
        }
    }

    fn apply(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Tokenizer::Patch(p) => p.apply(x),
            Tokenizer::Conv(c) => c.apply(x, train),
        }
    }
}

/// Tokenizer + class token + learned position embeddings (the input of a ViT encoder).
#[derive(Debug, Clone)]
pub struct VitEmbedding {
    tokenizer: Tokenizer,
    cls_token: Tensor,
    pos_embed: Tensor,
    img_size: (usize, usize),
    num_patches: usize,
}

impl VitEmbedding {
    /// Builds the embedding for `img_size` images from a tokenizer, a `(1, 1, E)` `cls_token`
    /// and a `(1, 1 + N, E)` `pos_embed`. Errors (naming `VitEmbedding`) on other shapes, mixed
    /// dtypes, or an image size the tokenizer rejects.
    pub fn new(
        tokenizer: Tokenizer,
        cls_token: Tensor,
        pos_embed: Tensor,
        img_size: (usize, usize),
    ) -> Result<Self> {
        let e = tokenizer.embed_dim();
        let n = tokenizer.num_patches(img_size)?;
        check::float_dtype(VIT, "cls_token", &cls_token)?;
        if cls_token.dims() != [1, 1, e] {
            let shape = cls_token.shape().clone();
            return Err(Error::shape(
                VIT,
                "cls_token",
                format!("(1, 1, {e})"),
                shape,
            ));
        }
        check::same_dtype_device(VIT, "pos_embed", &cls_token, &pos_embed)?;
        if pos_embed.dims() != [1, n.saturating_add(1), e] {
            let shape = pos_embed.shape().clone();
            let expected = format!("(1, {}, {e})", n.saturating_add(1));
            return Err(Error::shape(VIT, "pos_embed", expected, shape));
        }
        Ok(Self {
            tokenizer,
            cls_token,
            pos_embed,
            img_size,
            num_patches: n,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The token width `E`.
    pub fn embed_dim(&self) -> usize {
        self.tokenizer.embed_dim()
    }

    /// The number of image tokens `N` (the output has `1 + N`).
    pub fn num_patches(&self) -> usize {
        self.num_patches
    }

    /// The image size `(H, W)` the position embeddings are for.
    pub fn img_size(&self) -> (usize, usize) {
        self.img_size
    }

    /// Prepends the class token to `(B, N, E)` tokens and adds the position embeddings:
    /// `(B, 1 + N, E)`. Errors (naming `VitEmbedding`) on another shape or dtype.
    pub fn add_cls_and_pos(&self, tokens: &Tensor) -> Result<Tensor> {
        let (n, e) = (self.num_patches, self.embed_dim());
        let pattern = format!("(B, {n}, {e})");
        check::rank(VIT, "tokens", tokens, 3, &pattern)?;
        if tokens.dims()[1..] != [n, e] || tokens.dims()[0] == 0 {
            return Err(Error::shape(VIT, "tokens", pattern, tokens.shape().clone()));
        }
        check::same_dtype_device(VIT, "tokens", &self.cls_token, tokens)?;
        let cls = self.cls_token.broadcast_as((tokens.dims()[0], 1, e))?;
        let x = Tensor::cat(&[&cls, tokens], 1)?;
        Ok(x.broadcast_add(&self.pos_embed)?)
    }

    /// Images `(B, C, H, W)` at [`Self::img_size`] → `(B, 1 + N, E)`; `train` reaches the conv
    /// stem's batch norms. Errors (naming `VitEmbedding` or the tokenizer) on a wrong shape,
    /// size or dtype.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if x.rank() == 4 && (x.dims()[2], x.dims()[3]) != self.img_size {
            let (h, w) = self.img_size;
            let expected = format!("(B, C, {h}, {w}) (pos_embed is for this size)");
            return Err(Error::shape(VIT, "input", expected, x.shape().clone()));
        }
        self.add_cls_and_pos(&self.tokenizer.apply(x, train)?)
    }
}

impl ModuleT for VitEmbedding {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(VitEmbedding::forward_t(self, x, train)?)
    }
}

/// `cls_token` (init $N(0, 10^{-6})$, timm) and `pos_embed` (init $N(0, 0.02)$, timm's
/// truncated normal without the truncation) under `vb`, for `n` tokens of width `e`.
fn cls_and_pos(n: usize, e: usize, vb: &VarBuilder) -> Result<(Tensor, Tensor)> {
    let cls = check::param(
        VIT,
        vb,
        (1, 1, e),
        "cls_token",
        Init::Randn {
            mean: 0.0,
            stdev: 1e-6,
        },
    )?;
    let pos = check::param(
        VIT,
        vb,
        (1, 1 + n, e),
        "pos_embed",
        Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        },
    )?;
    Ok((cls, pos))
}

/// A ViT embedding for `img_size` images: [`PatchEmbed`] under `patch_embed.`, `cls_token` and
/// `pos_embed` under `vb` (timm names). Errors when the image size is not a multiple of the patch.
pub fn vit_embedding(
    img_size: (usize, usize),
    embed_dim: usize,
    cfg: PatchEmbedConfig,
    vb: VarBuilder,
) -> Result<VitEmbedding> {
    let pe = patch_embed(embed_dim, cfg, vb.pp("patch_embed"))?;
    let n = pe.num_patches(img_size)?;
    let (cls, pos) = cls_and_pos(n, embed_dim, &vb)?;
    VitEmbedding::new(Tokenizer::Patch(pe), cls, pos, img_size)
}

/// A hybrid ViT embedding for `img_size` images: [`ConvStem`] under `patch_embed.`, `cls_token`
/// and `pos_embed` under `vb`. Errors on an invalid stem config or a zero size.
pub fn hybrid_vit_embedding(
    img_size: (usize, usize),
    embed_dim: usize,
    stem: ConvStemConfig,
    vb: VarBuilder,
) -> Result<VitEmbedding> {
    let stem = conv_stem(embed_dim, stem, vb.pp("patch_embed"))?;
    let n = stem.num_patches(img_size)?;
    let (cls, pos) = cls_and_pos(n, embed_dim, &vb)?;
    VitEmbedding::new(Tokenizer::Conv(stem), cls, pos, img_size)
}
