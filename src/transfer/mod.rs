//! Transfer learning: start from a pre-trained checkpoint, load what fits, freeze what should
//! not move, and give the layers learning rates by depth.
//!
//! - [`load_state_dict`] / [`load_safetensors`]: a partial load with a [`LoadReport`] of the
//!   missing, unexpected and shape-mismatched keys (strict or lenient).
//! - [`freeze`] / [`unfreeze`] / [`trainable_by`]: the vars the optimizer sees, by name prefix
//!   or predicate.
//! - [`FrozenBatchNorm2d`] and [`fold_batch_norm`]: BatchNorm as a constant affine map, and
//!   folded into the preceding conv for inference.
//! - [`layer_decay_groups`]: layer-wise learning-rate decay as [`crate::optim::ParamGroups`].
//! - [`resample_pos_embed`]: a ViT's position embeddings resized to a new patch grid (timm's
//!   bicubic with antialiasing), to fine-tune at another resolution.
//! - [`LoraLinear`] / [`LoraConv2d`] / [`LoraMultiHeadAttention`] (peft's names,
//!   `merge`/`unmerge`) and [`BottleneckAdapter`] (Houlsby et al.): train a few parameters next
//!   to frozen weights.
//!
//! # Tip
//! **Tip 30: fine-tune a pre-trained model rather than train from scratch.** Features learned
//! on a large data set transfer: the early layers (edges, textures) are generic, the late ones
//! specific to the original task. The usual recipe, from least to most data:
//! 1. Replace the head, load everything else with [`load_state_dict`] in lenient mode and assert
//!    that the report lists only the head (a prefix typo otherwise leaves the backbone random).
//! 2. With a few hundred examples, train the head alone ([`unfreeze`] of the head; "linear
//!    probing"), with the backbone's BatchNorms frozen ([`FrozenBatchNorm2d`]) or in eval mode.
//! 3. With more, fine-tune everything at a learning rate 10–100× below the pre-training one,
//!    lower still for early layers ([`layer_decay_groups`], $d \approx 0.65$–$0.75$ for ViTs),
//!    and a short warmup so the random head does not wreck the backbone in the first steps.
//!
//! The trade-off: freezing more is cheaper and overfits less, but cannot adapt features that
//! the new domain needs (medical images, satellite bands); the further the domain, the more
//! layers to unfreeze. For inference, fold each BatchNorm into its conv ([`fold_batch_norm`]).
//!
//! # Example
//! ```
//! use std::collections::HashMap;
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{Optimizer, VarBuilder, VarMap};
//! use candle_tricks::optim::{AdamW, AdamWConfig};
//! use candle_tricks::transfer::{load_state_dict, unfreeze};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! let _backbone = candle_nn::linear(8, 16, vb.pp("backbone"))?;
//! let _fc = candle_nn::linear(16, 2, vb.pp("fc"))?; // new head: 2 classes
//! // A "pre-trained" checkpoint with a 10-class head.
//! let mut ckpt = HashMap::new();
//! ckpt.insert("backbone.weight".into(), Tensor::ones((16, 8), DType::F32, &dev)?);
//! ckpt.insert("backbone.bias".into(), Tensor::zeros(16, DType::F32, &dev)?);
//! ckpt.insert("fc.weight".into(), Tensor::ones((10, 16), DType::F32, &dev)?);
//! ckpt.insert("fc.bias".into(), Tensor::zeros(10, DType::F32, &dev)?);
//! let report = load_state_dict(&varmap, &ckpt, false)?;
//! let skipped: Vec<&str> = report.mismatched.iter().map(|m| m.name.as_str()).collect();
//! assert_eq!(skipped, ["fc.bias", "fc.weight"]); // only the head
//! // Linear probing: the optimizer sees the head only.
//! let opt = AdamW::new(unfreeze(&varmap, &["fc"])?, AdamWConfig::default())?;
//! assert_eq!(opt.num_params(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Kornblith et al., *Do Better ImageNet Models Transfer Better?*, 2018,
//!   <https://arxiv.org/abs/1805.08974>
//! - Yosinski et al., *How transferable are features in deep neural networks?*, 2014,
//!   <https://arxiv.org/abs/1411.1792>

pub mod adapter;
pub mod lora;
pub mod lora_mha;
pub mod pos_embed;
pub use adapter::{bottleneck_adapter, BottleneckAdapter, BottleneckAdapterConfig};
pub use lora::{lora_conv2d, lora_linear, LoraConfig, LoraConv2d, LoraLinear};
pub use lora_mha::{lora_multi_head_attention, LoraMultiHeadAttention};
pub use pos_embed::{resample_pos_embed, ResamplePosEmbedConfig};
mod batch_norm;
mod freeze;
mod llrd;
mod load;

pub use batch_norm::{
    fold_batch_norm, frozen_batch_norm2d, FrozenBatchNorm2d, FrozenBatchNorm2dConfig,
};
pub use freeze::{freeze, has_prefix, trainable_by, unfreeze};
pub use llrd::{layer_decay_groups, layer_id};
pub use load::{load_safetensors, load_state_dict, KeyMismatch, LoadReport};
