//! Guide pages: advice that no single layer implements, with the measurements behind it.
//!
//! - [`architecture`] — choosing a CNN, an RNN, a transformer or Mamba for a problem, and starting
//!   small (tip 1).
//! - [`invariances`] — which symmetries a model should respect, what augmentations, pooling and
//!   striding do to them (tip 20).

pub mod architecture;
pub mod invariances;
