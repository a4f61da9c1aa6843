//! Training recipes that are more than a layer: learning classes from their descriptions
//! (zero-shot).
//!
//! - [`zero_shot::SemanticEmbedding`] — recognise classes never seen in training from attribute
//!   vectors or other side information (tip 17).

pub mod zero_shot;
pub use zero_shot::{semantic_embedding, SemanticEmbedding, SemanticEmbeddingConfig};
