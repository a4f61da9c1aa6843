//! Regularization, residual, multi-scale and adaptive-depth blocks: stochastic depth, channel
//! dropout, residual and pre-norm connections, LayerScale, ResNet and U-Net stages, DeepMedic's
//! two pathways, early exits.
//!
//! | item | input → output | use it to |
//! | --- | --- | --- |
//! | [`DropPath`] | `(B, …)` → same | drop whole residual branches per sample (stochastic depth) |
//! | [`Dropout`] | any → same | drop single activations (dense layers, attention) |
//! | [`Dropout2d`] | `(B, C, …)` → same | drop whole feature maps of conv features |
//! | [`Residual`] | any → same | add an identity path around a block: $x + f(x)$ |
//! | [`PreNorm`] | any → same | normalize the branch input only: $x + f(\mathrm{norm}(x))$ |
//! | [`LayerScale`] | `(…, C)` or `(B, C, …)` → same | start a deep residual stack near the identity |
//! | [`MultiScalePathways`] | `(B, C, [D,] H, W)` → `(B, C1 + C2, …)` | add a cheap downsampled context pathway (DeepMedic) |
//! | [`EarlyExit`] | `(B, …)` → `(B, K)` + exit per sample | stop easy samples at an early classifier (dynamic depth) |
//! | [`BasicBlock`], [`Bottleneck`] | `(B, C, H, W)` → `(B, C', H/s, W/s)` | build ResNet / ResNeXt stages (torchvision v1.5 names) |
//! | [`MbConv`] | `(B, C, H, W)` → `(B, C', H/s, W/s)` | build MobileNetV2 / EfficientNet stages (timm names) |
//! | [`ConvNextBlock`] | `(B, C, H, W)` → same | build ConvNeXt stages (timm names) |
//! | [`DownBlock`], [`UpBlock`] | `(B, C, H, W)` → `(B, C', H/2, W/2)`; + skip → skip's size | build U-Net encoders and decoders with skip concatenation |
//!
//! # Shapes
//! As in the table. The regularization and residual wrappers preserve the input's shape; the
//! random layers take f32, f16 or bf16 and are [`candle_nn::ModuleT`]s: the train flag turns them
//! on, eval is the identity. Blocks with a norm inside ([`BasicBlock`], [`DownBlock`], …) are
//! `ModuleT`s too, so the same flag switches their batch statistics.
//!
//! # Tip
//! - **Regularize deep residual networks by depth, not only by width.** [`DropPath`] drops a
//!   sample's whole residual branch with probability $p_l$ growing linearly with the depth of
//!   block $l$; element [`Dropout`] is for dense layers, [`Dropout2d`] for conv features, whose
//!   neighbouring pixels are too correlated for element dropout to matter.
//! - **Keep an identity path for the gradient.** [`Residual`] and [`PreNorm`] give
//!   $\partial y / \partial x = I + \partial f / \partial x$; [`LayerScale`] makes every branch
//!   start near zero so a very deep stack starts near the identity.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, ModuleT, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::blocks::{layer_scale, DropPath, LayerScaleConfig, Residual};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
//! // timm's schedule: drop-path rates rising linearly to 0.1 over 4 blocks.
//! let rates: Vec<f32> = (0..4).map(|l| 0.1 * l as f32 / 3.0).collect();
//! let x = Tensor::randn(0f32, 1., (2, 5, 16), &dev)?;
//! let mut h = x.clone();
//! for (l, &p) in rates.iter().enumerate() {
//!     let ls = layer_scale(16, LayerScaleConfig::default(), vb.pp(format!("blocks.{l}.ls1")))?;
//!     let dp = DropPath::new(p)?;
//!     let branch = move |t: &Tensor| dp.forward_t(&ls.forward(&t.gelu()?)?, true);
//!     h = Residual::new(branch).forward(&h)?;
//! }
//! assert_eq!(h.dims(), x.dims());
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Huang et al., *Deep Networks with Stochastic Depth*, 2016, <https://arxiv.org/abs/1603.09382>
//! - Tompson et al., *Efficient Object Localization Using Convolutional Networks*, 2015,
//!   <https://arxiv.org/abs/1411.4280>
//! - He et al., *Deep Residual Learning for Image Recognition*, 2015,
//!   <https://arxiv.org/abs/1512.03385>
//! - Touvron et al., *Going deeper with Image Transformers*, 2021,
//!   <https://arxiv.org/abs/2103.17239>

pub mod drop_path;
pub use drop_path::{DropPath, DropPathConfig};
pub mod dropout;
pub use candle_nn::Dropout;
pub use dropout::Dropout2d;
pub mod residual;
pub use residual::{layer_scale, LayerScale, LayerScaleConfig, PreNorm, Residual};
pub mod multiscale;
pub use multiscale::{
    conv_stack, downsample_avg, multi_scale_pathways, ConvStack, ConvStackConfig, MultiScaleConfig,
    MultiScalePathways, PathwayFusion,
};
pub mod early_exit;
pub use early_exit::{
    early_exit_loss, exit_confidence, EarlyExit, EarlyExitConfig, EarlyExitOutput, ExitCriterion,
};
pub mod resnet;
pub use resnet::{basic_block, bottleneck, BasicBlock, Bottleneck, ResBlockConfig};
pub mod mbconv;
pub use mbconv::{mb_conv, MbConv, MbConvConfig};
pub mod convnext;
pub use convnext::{convnext_block, ConvNextBlock, ConvNextBlockConfig};
pub mod unet;
pub use unet::{down_block, up_block, DownBlock, DownBlockConfig, UpBlock, UpBlockConfig, UpMode};
