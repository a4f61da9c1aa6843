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
//!
//! # Tip
//! **Tip 30: fine-tune a pre-trained model rather than train from scratch.** Features learned
//! on a large data set transfer: the early layers (edges, textures) are generic, the late ones
//! specific. With little data, replace the head, load the rest, and check the load report —
//! only the head should be missing.
//!
//! # References
//! - Yosinski et al., *How transferable are features in deep neural networks?*, 2014,
//!   <https://arxiv.org/abs/1411.1792>

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
