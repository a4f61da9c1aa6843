//! Training recipes that are more than a layer: learning classes from their descriptions
//! (zero-shot), adapting to a shifted domain, and learning to learn from a few examples.
//!
//! - [`zero_shot::SemanticEmbedding`] — recognise classes never seen in training from attribute
//!   vectors or other side information (tip 17).
//! - [`grad_reverse::grad_reverse`] — the gradient-reversal layer of domain-adversarial training
//!   (DANN) with its λ ramp [`grad_reverse::dann_lambda`]: features a domain classifier cannot
//!   tell apart (tip 26).
//! - [`meta::reptile_step`], [`meta::fomaml_step`] — Reptile and first-order MAML: learn an
//!   initialisation that fits a new task in a few SGD steps (tip 31).
//! - [`lr_finder::lr_range_test`] — the learning-rate range test: the loss against a growing
//!   rate in one short run, with a suggested rate (steepest descent of the smoothed loss).
//! - [`semi_supervised::fixmatch_loss`], [`semi_supervised::pseudo_label_loss`],
//!   [`semi_supervised::mean_teacher_consistency`] — learn from a few labels and many unlabeled
//!   images: confident pseudo-labels, weak-to-strong consistency, a weight-averaged teacher
//!   (tip 27).

pub mod grad_reverse;
pub mod lr_finder;
pub mod meta;
pub mod semi_supervised;
pub mod zero_shot;
pub use grad_reverse::{dann_lambda, grad_reverse, GradReverse, DANN_GAMMA};
pub use lr_finder::{lr_range_test, LrRamp, LrRangeCurve, LrRangeTestConfig, LrStop};
pub use meta::{fomaml_step, reptile_step, MetaLosses};
pub use semi_supervised::{
    fixmatch_loss, mean_teacher_consistency, pseudo_label_loss, sigmoid_rampup, PseudoLabelLoss,
};
pub use zero_shot::{semantic_embedding, SemanticEmbedding, SemanticEmbeddingConfig};
