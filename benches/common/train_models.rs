//! The four models of the whole-model training-step benches (issue 12), built from this crate's
//! public blocks, and one training step (forward, cross-entropy, backward, AdamW).
//!
//! Shared by `benches/train.rs` (full sizes) and `tests/train_models.rs` (small batch); the same
//! shapes are in `benches/torch_train.py`.
//!
//! - `vit`: patch 4 on 32×32×3, dim 192, 6 pre-LN layers, 3 heads, MLP 768 (exact GELU), final
//!   norm, class token → linear to 10; batch 32.
//! - `resnet`: conv 3×3 stride 2 to 64 + BN + ReLU, BasicBlocks 64, 128 (stride 2), 256
//!   (stride 2), global average pool, linear to 10; 64×64 inputs, batch 32.
//! - `mobilenet`: MobileNetV2-style: conv 3×3 stride 2 to 32 + BN + ReLU6, six inverted
//!   residuals (1×1 expand + BN + ReLU6, then a `SeparableConv2d` = depthwise 3×3 + BN + ReLU6 and
//!   1×1 project + BN, residual when the shape allows), 1×1 to 256 + BN + ReLU6, global average
//!   pool, linear to 10; 64×64 inputs, batch 32.
//! - `mamba`: `MambaModel`, 4 layers, d_model 256, d_state 16, expand 2, vocab 256 (tied head),
//!   batch 8, L 256, next-token cross-entropy.
#![allow(dead_code)]

use candle_core::{DType, Device, Module, ModuleT, Tensor, D};
use candle_nn::{Activation, Linear, Optimizer, VarBuilder, VarMap};
use candle_tricks::attention::{
    transformer_encoder, vit_embedding, PatchEmbedConfig, TransformerEncoder,
    TransformerEncoderConfig, TransformerEncoderLayerConfig, VitEmbedding,
};
use candle_tricks::blocks::{basic_block, BasicBlock, ResBlockConfig};
use candle_tricks::conv::{
    conv2d_no_bias, separable_conv2d, Conv2d, Conv2dConfig, Padding, SeparableConv2d,
    SeparableConv2dConfig,
};
use candle_tricks::norm::{batch_norm, BatchNorm, BatchNormConfig};
use candle_tricks::ops::AttentionMask;
use candle_tricks::optim::{AdamW, AdamWConfig, ParamGroups};
use candle_tricks::ssm::{mamba_model, MambaConfig, MambaModel, MambaModelConfig};

/// Which model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    Vit,
    ResNet,
    MobileNet,
    Mamba,
}

impl Model {
    pub const ALL: [Model; 4] = [Model::Vit, Model::ResNet, Model::MobileNet, Model::Mamba];

    /// The bench id suffix and `torch_train.py --model` value.
    pub fn name(self) -> &'static str {
        match self {
            Model::Vit => "vit",
            Model::ResNet => "resnet",
            Model::MobileNet => "mobilenet",
            Model::Mamba => "mamba",
        }
    }

    /// The batch size.
    pub fn batch(self) -> usize {
        match self {
            Model::Mamba => 8,
            _ => 32,
        }
    }
}

pub const CLASSES: usize = 10;
pub const VOCAB: usize = 256;
pub const SEQ_LEN: usize = 256;

type R<T> = candle_tricks::Result<T>;

// ------------------------------------------------------------------------------------------
// ViT
// ------------------------------------------------------------------------------------------

pub struct Vit {
    embed: VitEmbedding,
    encoder: TransformerEncoder,
    head: Linear,
}

impl Vit {
    pub fn new(vb: VarBuilder) -> R<Self> {
        let embed = vit_embedding((32, 32), 192, PatchEmbedConfig::new(4, 3), vb.pp("embed"))?;
        let layer = TransformerEncoderLayerConfig::new(3, 4 * 192); // pre-LN, exact GELU
        let encoder = transformer_encoder(
            192,
            TransformerEncoderConfig::new(layer, 6),
            vb.pp("encoder"),
        )?;
        let head = candle_nn::linear(192, CLASSES, vb.pp("head"))?;
        Ok(Self {
            embed,
            encoder,
            head,
        })
    }

    pub fn forward(&self, x: &Tensor) -> R<Tensor> {
        let tokens = self.embed.forward_t(x, true)?;
        let out = self
            .encoder
            .forward_t(&tokens, &AttentionMask::None, true)?;
        let cls = out.narrow(1, 0, 1)?.squeeze(1)?;
        Ok(self.head.forward(&cls)?)
    }
}

// ------------------------------------------------------------------------------------------
// Conv helpers
// ------------------------------------------------------------------------------------------

/// A bias-free convolution + BatchNorm (+ activation).
pub struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
    act: Option<Activation>,
}

impl ConvBn {
    fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        act: Option<Activation>,
        vb: VarBuilder,
    ) -> R<Self> {
        let cfg = Conv2dConfig::default()
            .with_padding(Padding::Explicit(k / 2))
            .with_stride(stride);
        let conv = conv2d_no_bias(cin, cout, k, cfg, vb.pp("conv"))?;
        let bn = batch_norm(cout, BatchNormConfig::default(), vb.pp("bn"))?;
        Ok(Self { conv, bn, act })
    }

    fn forward(&self, x: &Tensor) -> R<Tensor> {
        let y = self.conv.forward(x)?;
        // The activation fused into the train-mode norm: one op, one gradient accumulation.
        Ok(match &self.act {
            Some(a) => self.bn.forward_act(&y, a, true)?,
            None => self.bn.forward_t(&y, true)?,
        })
    }
}

/// Global average pool `(B, C, H, W)` → `(B, C)`.
fn gap(x: &Tensor) -> R<Tensor> {
    Ok(x.flatten_from(2)?.mean(D::Minus1)?)
}

// ------------------------------------------------------------------------------------------
// ResNet
// ------------------------------------------------------------------------------------------

pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<BasicBlock>,
    head: Linear,
}

impl ResNet {
    pub fn new(vb: VarBuilder) -> R<Self> {
        let stem = ConvBn::new(3, 64, 3, 2, Some(Activation::Relu), vb.pp("stem"))?;
        let mut blocks = Vec::new();
        for (i, (cin, cout, s)) in [(64, 64, 1), (64, 128, 2), (128, 256, 2)]
            .into_iter()
            .enumerate()
        {
            let cfg = ResBlockConfig::default().with_stride(s);
            blocks.push(basic_block(
                cin,
                cout,
                cfg,
                vb.pp(format!("layer{}", i + 1)),
            )?);
        }
        let head = candle_nn::linear(256, CLASSES, vb.pp("fc"))?;
        Ok(Self { stem, blocks, head })
    }

    pub fn forward(&self, x: &Tensor) -> R<Tensor> {
        let mut h = self.stem.forward(x)?;
        for b in &self.blocks {
            h = b.forward_t(&h, true)?;
        }
        Ok(self.head.forward(&gap(&h)?)?)
    }
}

// ------------------------------------------------------------------------------------------
// MobileNetV2-style
// ------------------------------------------------------------------------------------------

/// MobileNetV2's inverted residual: optional 1×1 expansion, then depthwise 3×3 + BN + ReLU6 and
/// the linear 1×1 projection + BN (a `SeparableConv2d` with both norms).
pub struct InvertedResidual {
    expand: Option<ConvBn>,
    dw_pw: SeparableConv2d,
    residual: bool,
}

impl InvertedResidual {
    fn new(cin: usize, cout: usize, stride: usize, t: usize, vb: VarBuilder) -> R<Self> {
        let hidden = cin * t;
        let expand = if t == 1 {
            None
        } else {
            Some(ConvBn::new(
                cin,
                hidden,
                1,
                1,
                Some(Activation::Relu6),
                vb.pp("expand"),
            )?)
        };
        let cfg = SeparableConv2dConfig::default()
            .with_stride(stride)
            .with_padding(Padding::Explicit(1))
            .with_dw_norm_act(true, Some(Activation::Relu6))
            .with_pw_norm_act(true, None);
        let dw_pw = separable_conv2d(hidden, cout, 3, cfg, vb.pp("dw_pw"))?;
        Ok(Self {
            expand,
            dw_pw,
            residual: stride == 1 && cin == cout,
        })
    }

    fn forward(&self, x: &Tensor) -> R<Tensor> {
        let h = match &self.expand {
            Some(e) => e.forward(x)?,
            None => x.clone(),
        };
        let y = self.dw_pw.forward_t(&h, true)?;
        Ok(if self.residual { (x + y)? } else { y })
    }
}

/// `(in, out, stride, expansion)` of the six inverted residuals.
pub const MOBILENET_BLOCKS: [(usize, usize, usize, usize); 6] = [
    (32, 16, 1, 1),
    (16, 24, 2, 6),
    (24, 24, 1, 6),
    (24, 32, 2, 6),
    (32, 32, 1, 6),
    (32, 64, 2, 6),
];

pub struct MobileNet {
    stem: ConvBn,
    blocks: Vec<InvertedResidual>,
    last: ConvBn,
    head: Linear,
}

impl MobileNet {
    pub fn new(vb: VarBuilder) -> R<Self> {
        let stem = ConvBn::new(3, 32, 3, 2, Some(Activation::Relu6), vb.pp("stem"))?;
        let blocks = MOBILENET_BLOCKS
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout, s, t))| {
                InvertedResidual::new(cin, cout, s, t, vb.pp(format!("blocks.{i}")))
            })
            .collect::<R<Vec<_>>>()?;
        let last = ConvBn::new(64, 256, 1, 1, Some(Activation::Relu6), vb.pp("last"))?;
        let head = candle_nn::linear(256, CLASSES, vb.pp("fc"))?;
        Ok(Self {
            stem,
            blocks,
            last,
            head,
        })
    }

    pub fn forward(&self, x: &Tensor) -> R<Tensor> {
        let mut h = self.stem.forward(x)?;
        for b in &self.blocks {
            h = b.forward(&h)?;
        }
        let h = self.last.forward(&h)?;
        Ok(self.head.forward(&gap(&h)?)?)
    }
}

// ------------------------------------------------------------------------------------------
// The step
// ------------------------------------------------------------------------------------------

pub enum Net {
    Vit(Vit),
    ResNet(ResNet),
    MobileNet(MobileNet),
    Mamba(MambaModel),
}

/// A model with its parameters, fixed synthetic inputs and labels, and AdamW (PyTorch's
/// defaults: lr 1e-3, weight decay 1e-2 on every parameter).
pub struct Setup {
    pub varmap: VarMap,
    pub net: Net,
    /// Images `(B, 3, H, W)` f32, or token ids `(B, L)` u32.
    pub x: Tensor,
    /// Class ids `(B)`, or the next tokens `(B·L)`, u32.
    pub y: Tensor,
    pub opt: AdamW,
}

impl Setup {
    /// `model` at `batch` (the issue's [`Model::batch`] in the bench) and, for Mamba, sequence
    /// length `seq_len`.
    pub fn new(model: Model, batch: usize, seq_len: usize) -> R<Self> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let image = |side: usize| Tensor::randn(0f32, 1., (batch, 3, side, side), &dev);
        let classes = || {
            Tensor::rand(0f32, CLASSES as f32, batch, &dev)?
                .floor()?
                .to_dtype(DType::U32)
        };
        let (net, x, y) = match model {
            Model::Vit => (Net::Vit(Vit::new(vb)?), image(32)?, classes()?),
            Model::ResNet => (Net::ResNet(ResNet::new(vb)?), image(64)?, classes()?),
            Model::MobileNet => (Net::MobileNet(MobileNet::new(vb)?), image(64)?, classes()?),
            Model::Mamba => {
                let mixer = MambaConfig::new(256).with_d_state(16).with_expand(2);
                let net = mamba_model(MambaModelConfig::new(VOCAB, 4, mixer), vb)?;
                // L + 1 tokens: inputs are the first L, targets the last L.
                let tokens = Tensor::rand(0f32, VOCAB as f32, (batch, seq_len + 1), &dev)?
                    .floor()?
                    .to_dtype(DType::U32)?;
                let x = tokens.narrow(1, 0, seq_len)?.contiguous()?;
                let y = tokens.narrow(1, 1, seq_len)?.flatten_all()?;
                (Net::Mamba(net), x, y)
            }
        };
        let opt = AdamW::with_groups(ParamGroups::from_varmap(&varmap), AdamWConfig::default())?;
        Ok(Self {
            varmap,
            net,
            x,
            y,
            opt,
        })
    }

    /// Forward in training mode and the mean cross-entropy loss.
    pub fn loss(&self) -> R<Tensor> {
        let logits = match &self.net {
            Net::Vit(m) => m.forward(&self.x)?,
            Net::ResNet(m) => m.forward(&self.x)?,
            Net::MobileNet(m) => m.forward(&self.x)?,
            Net::Mamba(m) => m.forward(&self.x)?.flatten_to(1)?,
        };
        Ok(candle_nn::loss::cross_entropy(&logits, &self.y)?)
    }

    /// One training step: forward, loss, backward, AdamW step. Returns the loss (before the
    /// step).
    pub fn step(&mut self) -> R<Tensor> {
        let loss = self.loss()?;
        let grads = loss.backward()?;
        self.opt.step(&grads)?;
        Ok(loss)
    }
}
