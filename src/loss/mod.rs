//! Training objectives: cross-entropy with label smoothing and soft targets, focal, KL and
//! distillation, Dice, and the metric losses of one-shot learning, with PyTorch's argument
//! names, semantics and reductions ([`Reduction`]).
//!
//! | loss | PyTorch | file |
//! |---|---|---|
//! | [`cross_entropy`], [`soft_target_cross_entropy`] | `F.cross_entropy`, timm `SoftTargetCrossEntropy` | `cross_entropy.rs` (the fused op: [`crate::ops::cross_entropy()`]) |
//! | [`binary_cross_entropy_with_logits`], [`sigmoid_focal_loss`] | `F.binary_cross_entropy_with_logits`, `torchvision.ops.sigmoid_focal_loss` | `binary.rs` |
//! | [`kl_div`], [`distillation`] | `F.kl_div`, Hinton et al. 2015 | `divergence.rs` |
//! | [`dice`] | MONAI `DiceLoss(batch=True)` | `dice.rs` |
//! | [`contrastive`], [`triplet_margin`], [`batch_hard_triplet`] | Hadsell 2006, `F.triplet_margin_loss`, Hermans 2017 | `metric.rs` |
//! | [`nt_xent`] | SimCLR | `contrastive_views.rs` |
//! | [`prototypical`] | Snell et al. 2017 | `prototypical.rs` |
//!
//! # Tip 15: label smoothing
//! With one-hot targets the cross-entropy keeps decreasing as the correct logit grows: the
//! optimum is an infinite margin, and a trained network ends up over-confident (its maximum
//! softmax probability exceeds its accuracy). Label smoothing trains against
//! $(1-\varepsilon) \thinspace \mathrm{onehot} + \varepsilon / C$ instead, whose optimum is a
//! finite gap between the correct logit and the others, so the predicted confidence stays near
//! $1 - \varepsilon$ and the expected calibration error drops, usually at equal or better
//! accuracy. Use $\varepsilon = 0.1$ for ImageNet-sized problems. Trade-offs: smoothing erases
//! the information in the wrong classes' logits (the penultimate-layer clusters become tight and
//! equidistant), which makes a smoothed teacher a worse teacher for distillation. Mixup and
//! CutMix labels (probability targets) already smooth; [`CrossEntropyConfig::label_smoothing`]
//! applies on top of them as in PyTorch.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::loss::{cross_entropy, CrossEntropyConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let y = Tensor::new(&[0u32], &dev)?;
//! let smooth = CrossEntropyConfig::default().with_label_smoothing(0.1);
//! let loss = |gap: f32, cfg: &CrossEntropyConfig| -> candle_tricks::Result<f32> {
//!     let x = Tensor::new(&[[gap, 0.0, 0.0, 0.0]], &dev)?;
//!     Ok(cross_entropy(&x, &y, cfg)?.to_scalar::<f32>()?)
//! };
//! // Without smoothing a larger margin always lowers the loss: over-confidence pays.
//! let plain = CrossEntropyConfig::default();
//! assert!(loss(20.0, &plain)? < loss(10.0, &plain)?);
//! // With smoothing the loss has a finite optimum: the gap log((1 - eps + eps/C) / (eps/C)).
//! let best = ((1.0f32 - 0.1 + 0.025) / 0.025).ln(); // about 3.6 for C = 4
//! assert!(loss(best, &smooth)? < loss(10.0, &smooth)?);
//! assert!(loss(best, &smooth)? < loss(1.0, &smooth)?);
//! // At that optimum the predicted probability of the class is 1 - eps + eps / C = 0.925.
//! let p = candle_nn::ops::softmax(&Tensor::new(&[[best, 0.0, 0.0, 0.0]], &dev)?, 1)?;
//! assert!((p.get(0)?.get(0)?.to_scalar::<f32>()? - 0.925).abs() < 1e-4);
//! # Ok(())
//! # }
//! ```
//!
//! # Tip 16: one-shot and metric learning
//! With one to five examples per class a classifier head cannot be trained; learn an embedding
//! instead, in which a distance separates classes, and classify a new example by its nearest
//! class representative. [`prototypical`] trains it episodically (sample $N$ classes, $K$
//! support and some query examples, classify the queries by the nearest support mean) and is
//! the strong simple baseline; [`batch_hard_triplet`], [`triplet_margin`] and [`contrastive`]
//! shape the distance directly from pairs or triplets (faces, re-identification), and
//! [`nt_xent`] learns it without labels from two augmentations of each image. Normalise the
//! embeddings (or use a squared Euclidean distance with a learned scale), build batches of $P$
//! classes times $K$ examples, and evaluate on classes held out from training.
//!
//! # Tip 32: knowledge distillation
//! A small student trained on the soft outputs of a large teacher at temperature $T$ learns
//! more than from the labels alone: the teacher's wrong-class probabilities carry the
//! similarity structure between classes. [`distillation`] is Hinton's
//! $\alpha \thinspace \mathrm{CE} + (1-\alpha) T^2 \thinspace \mathrm{KL}$ with the batch-mean
//! KL; start from $T = 4$, $\alpha = 0.1$ to $0.5$, train the student longer than the teacher,
//! and keep the teacher in eval mode (no dropout, frozen batch-norm statistics). The teacher
//! needs no label smoothing (see tip 15), and a too-large capacity gap hurts: an intermediate
//! teacher assistant helps then.
//!
//! # References
//! - Müller, Kornblith, Hinton, *When Does Label Smoothing Help?*, 2019,
//!   <https://arxiv.org/abs/1906.02629>
//! - Guo et al., *On Calibration of Modern Neural Networks*, 2017,
//!   <https://arxiv.org/abs/1706.04599>
//! - Hinton, Vinyals, Dean, *Distilling the Knowledge in a Neural Network*, 2015,
//!   <https://arxiv.org/abs/1503.02531>
//! - Snell, Swersky, Zemel, *Prototypical Networks for Few-shot Learning*, 2017,
//!   <https://arxiv.org/abs/1703.05175>

mod binary;
mod contrastive_views;
mod cross_entropy;
mod dice;
mod divergence;
mod metric;
mod prototypical;
mod reduction;

pub use binary::{binary_cross_entropy_with_logits, sigmoid_focal_loss, BceConfig, FocalConfig};
pub use contrastive_views::nt_xent;
pub use cross_entropy::{cross_entropy, soft_target_cross_entropy, CrossEntropyConfig};
pub use dice::dice;
pub use divergence::{distillation, kl_div, DistillationConfig};
pub use metric::{batch_hard_triplet, contrastive, triplet_margin, TripletConfig};
pub use prototypical::{prototypical, Prototypical};
pub use reduction::Reduction;
