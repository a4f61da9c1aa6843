//! Small real data sets shipped inside the crate, for examples, doc-tests and quick experiments
//! that must run without a download.
//!
//! Synthetic generators prove that a model *can* learn a rule; a real data set, however small,
//! shows what happens with handwriting, noise and ambiguous samples. [`digits()`] is the UCI
//! handwritten digits as scikit-learn ships them: 1797 grey 8×8 images, about 180 per class,
//! small enough (117 KB) to embed and to train on in seconds on two cores. [`shapes_batch`]
//! generates the quickstart's synthetic shapes at any image size, and [`spirals()`] interleaved
//! 2-D spirals for semi-supervised experiments.

pub mod digits;
pub use digits::{digits, Digits};
pub mod shapes;
pub use shapes::{shapes_batch, SHAPE_CLASSES};
pub mod spirals;
pub use spirals::{spirals, SpiralsConfig};
