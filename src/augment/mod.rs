//! Seeded, batched data augmentation on tensors, and Mixup / CutMix.
