//! Transfer learning: start from a pre-trained checkpoint, load what fits, freeze what should
//! not move, and give the layers learning rates by depth.
//!
//! - [`load_state_dict`] / [`load_safetensors`]: a partial load with a [`LoadReport`] of the
//!   missing, unexpected and shape-mismatched keys (strict or lenient).
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

mod load;

pub use load::{load_safetensors, load_state_dict, KeyMismatch, LoadReport};
