//! Training objectives: cross-entropy with label smoothing and soft targets, focal, KL and
//! distillation, Dice, and the metric losses of one-shot learning.
