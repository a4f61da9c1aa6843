//! # candle-tricks
//!
//! Deep-learning building blocks for [candle](https://github.com/huggingface/candle): the layers and
//! kernels that PyTorch + timm users take for granted, fast on CPU, with rustdoc that doubles as a
//! *tips & tricks* reference. Every block implements [`candle_nn::Module`] or
//! [`candle_nn::ModuleT`] and loads weights through [`candle_nn::VarBuilder`] under the PyTorch
//! reference's tensor names; every hot op is our own multi-threaded kernel with a backward pass.
//!
//! ## The tips index
//!
//! One line per tip, pointing at the item whose docs explain it (when and why, the trade-off, a
//! doc-test that asserts the claim, and the paper). `docs/TIPS.md` in the repository tracks every
//! tip of the seed list, including the ones still planned.
//!
//! ### Convolutions
//! - **Padding keeps the borders, "same" keeps the size** — [`conv::Padding`]: `Same` gives
//!   $\lceil n/s \rceil$ outputs for any kernel, stride and dilation.
//! - **Stack small kernels instead of one large one** — [`conv::receptive_field`](mod@conv::receptive_field): two 3×3 layers
//!   see 5×5 with $18C^2$ instead of $25C^2$ weights, three see 7×7 with $27C^2$ instead of $49C^2$.
//! - **Choose depth from the receptive field you need** — [`conv::receptive_field::receptive_field`]
//!   computes the field, jump and center of any stack.
//! - **Small kernels matter most in 3-D** — [`conv::Conv3d`]: weights grow with $k^3$.
//! - **Split spatial and channel mixing when compute is tight** — [`conv::DepthwiseConv2d`],
//!   [`conv::SeparableConv2d`], on the fused kernel [`ops::depthwise_conv2d`].
//! - **Dilate to see wider without losing resolution** — [`conv::Aspp`] (DeepLabv3), and dilation
//!   in every convolution op.
//! - **Upsample with a transposed convolution whose kernel the stride divides** —
//!   [`conv::ConvTranspose2d`], [`conv::ConvTranspose3d`]: the gradient of a convolution; with
//!   kernel 3 and stride 2 the taps overlap unevenly and paint checkerboards, kernel 2 or 4 cover
//!   the output evenly. `output_padding` ([`conv::ConvTranspose2d::output_padding_for`]) picks
//!   which of the $s$ input sizes a stride-$s$ convolution came from.
//! - **Reflect padding avoids dark borders in image-to-image nets** — [`ops::pad2d`],
//!   [`conv::Conv2d::with_padding_mode`]; replicate for depth or flow, circular for periodic data.
//!
//! ### Pooling
//! - **Make the head independent of the input size** — [`pool::adaptive_avg_pool2d`],
//!   [`pool::adaptive_max_pool2d`] with PyTorch's bins.
//! - **Fixed-length features from any image size** — [`pool::SpatialPyramidPooling`] and its
//!   cheaper sequential form [`pool::Sppf`] (YOLOv5/8).
//! - **Max keeps the strongest response, average keeps every position** — [`pool::MaxPool2d`],
//!   [`pool::AvgPool2d`] with PyTorch's options and a correct backward (candle's sends a scaled
//!   gradient); a strided convolution learns its downsampling, a pool costs no weights but drops
//!   what it does not select. `ceil_mode`, padding and `count_include_pad` decide what happens at
//!   odd borders.
//! - **Pool anisotropic volumes in-plane first** — [`pool::MaxPool3d`], [`pool::AvgPool3d`] with a
//!   (1, 2, 2) kernel until CT/MRI voxels are about isotropic, then (2, 2, 2).
//!
//! ### Normalization
//! - **Normalise per sample for sequences and small batches** — [`norm::LayerNorm`],
//!   [`norm::RmsNorm`] (no mean: cheaper, LLaMA / Mamba). Both run on a fused kernel
//!   ([`ops::layer_norm`], [`ops::rms_norm`]) *with a backward*: candle's fused ops are
//!   forward-only, so a model trained through them gets no gradient upstream of the norm.
//! - **Batch norm before the activation, and only with large batches** — [`norm::BatchNorm`]
//!   (train uses batch statistics, eval the running averages); fuse the activation into it when
//!   training ([`norm::BatchNorm::forward_act`]: one op, one pass and one gradient accumulation
//!   fewer).
//! - **Small batches or per-image statistics** — [`norm::GroupNorm`] (batch-size independent),
//!   [`norm::InstanceNorm`] (invariant to per-image contrast, for style and medical images).
//! - **Switch a model's norm by name** — [`norm::create`] (`"batch"`, `"group:32"`, `"layer2d"`, …),
//!   as timm does; [`norm::LayerNorm2d`] for ConvNeXt-style channel normalization.
//!
//! - **Softmax that trains** — [`ops::softmax_last_dim`] subtracts the row max (finite for any
//!   logits) and, unlike candle's fused op, has a backward.
//!
//! ### Training objectives
//! - **Smooth the labels for calibrated confidences** — [`loss::cross_entropy`] with
//!   `label_smoothing`: the loss then has a finite optimum (confidence $1 - \varepsilon + \varepsilon/C$)
//!   instead of pushing logits apart forever; one fused log-softmax + NLL pass with a backward,
//!   class weights, `ignore_index` and soft targets ([`ops::cross_entropy()`]).
//! - **Learn a distance when each class has one example** — [`loss::prototypical`],
//!   [`loss::batch_hard_triplet`], [`loss::contrastive`], [`loss::nt_xent`]: classify new classes
//!   by their nearest prototype (`examples/few_shot.rs`).
//! - **Recognise classes without examples** — [`train::SemanticEmbedding`]: score images against
//!   attribute descriptions, so unseen classes need only a description (`examples/zero_shot.rs`).
//! - **Distil a large model into a small one** — [`loss::distillation`]:
//!   $\alpha \thinspace \mathrm{CE} + (1 - \alpha) T^2 \thinspace \mathrm{KL}$ at temperature $T$; the teacher's
//!   soft outputs carry which wrong classes are similar (`examples/distillation.rs`).
//! - **Imbalanced or dense targets** — [`loss::sigmoid_focal_loss`] (down-weights easy
//!   negatives), [`loss::binary_cross_entropy_with_logits`] with `pos_weight`, [`loss::dice`]
//!   for segmentation overlap.
//!
//! ### Recurrent nets and data augmentation
//! - **LSTM / GRU for short or streaming sequences** — [`rnn::Lstm`], [`rnn::Gru`] (PyTorch
//!   names, multi-layer, bidirectional, variable lengths) on a fused recurrence
//!   ([`ops::lstm_recurrence`]) with a backward through time inside the kernel: gating keeps
//!   gradients alive over long spans, at a fixed-size state per step.
//! - **Augment with transforms that keep the label** — [`augment::Augment`]: flips, crops,
//!   resized crops, rotations (with the mask), colour jitter, erasing, composed into one
//!   resampling per image and bit-reproducible for a seed; [`augment::Mixup`] (Mixup / CutMix)
//!   as a soft-label regulariser. Augmentations encode the invariances you want: flips for mirror
//!   symmetry, crops for translation, no flips for digits or text.
//!
//! ### Uncertainty, shifted domains, few-shot tasks
//! - **Calibrated uncertainty from little data** — [`tune::gp`]: an exact Gaussian process whose
//!   variance grows away from the data, the surrogate of Bayesian optimisation ($O(n^3)$); prefer
//!   Matérn-5/2 to RBF for real objectives, and read ARD length scales to see which inputs matter.
//! - **Calibrate confidence before trusting it** — [`tune::calibration`]: measure the ECE, fit one
//!   temperature on held-out logits (the argmax does not move).
//! - **Know what the model does not know** — [`tune::uncertainty`]: MC dropout or deep ensembles;
//!   predictive entropy (total) vs mutual information (epistemic: out-of-distribution, active
//!   learning).
//! - **Make features domain-invariant** — [`train::grad_reverse()`] puts a domain classifier behind
//!   a reversed gradient (DANN); ramp $\lambda$ with [`train::dann_lambda`] so early noisy domain
//!   gradients do not wreck the features. The extractor must be able to become invariant
//!   (convolutions, not an MLP on pixels); a domain classifier near 50 % means aligned features,
//!   near 100 % means DANN is doing nothing.
//! - **Learn an initialisation that adapts in a few steps** — [`train::reptile_step`],
//!   [`train::fomaml_step`] (first-order only: candle has no double backward). Meta-learning pushes
//!   the initial weights to the edge of the inner rate's stability: keep the inner rate small and
//!   skip diverging tasks (the meta-step's `NonFinite` error leaves the weights untouched).
//! - **Learn from a few labels and many unlabeled images** — [`train::semi_supervised`]: a
//!   confidence threshold keeps wrong pseudo-labels out; FixMatch's weak-to-strong consistency
//!   teaches the invariances; a mean teacher ([`optim::Ema`]) gives a steadier target. Check
//!   that the unlabeled data can help ([`data::spirals()`]): the labels only travel along dense
//!   regions separated by empty space (the cluster assumption).
//!
//! ### Tuning: hyper-parameters and architectures
//! - **Search at random, not on a grid** — [`tune::RandomSampler`]: few hyper-parameters matter,
//!   and random points try many more distinct values of each (Bergstra & Bengio 2012); Sobol points
//!   ([`tune::SobolSampler`]) cover a small budget more evenly still — use $2^m$ trials.
//! - **Search rates and widths on a log scale, conditionally** — [`tune::space`]: log-uniform for
//!   learning rates and weight decay; dimensions active only under their parent so no trial is
//!   spent on an inactive one.
//! - **Spend expensive evaluations where improvement is likely** — [`tune::bayes_opt`]: a
//!   Matérn-5/2 Gaussian process predicts the objective and its uncertainty; expected improvement
//!   needs no knob, the confidence bound's `beta` sets exploration explicitly. Best in ≤ ~20
//!   dimensions and small budgets; random search and ASHA beyond. Put weak priors on the
//!   surrogate's hyper-parameters ([`tune::HyperPrior`]): with a few dozen points maximum
//!   likelihood picks absurd length scales (Hartmann-6: 3.8× → 17.7× random search in 30 steps).
//! - **Stop bad trials early** — [`tune::asha`]: asynchronous successive halving moves the budget to
//!   the configurations whose learning curves lead; [`tune::Study`] records diverging trials as
//!   failures and saves and resumes the search.
//! - **Find the learning rate in one short run** — [`train::lr_range_test`]: grow the rate
//!   exponentially and pick a bit below the steepest descent of the smoothed loss, not its minimum.
//! - **Search architectures by aging evolution** — [`tune::nas`]: regularized evolution removes the
//!   *oldest* architecture, not the worst, favouring ones that score well every time they are
//!   retrained; always report random search at the same budget, over several seeds.
//!
//! ### Transfer learning and compression
//! - **Fine-tune rather than train from scratch** — [`transfer::load_state_dict`] (a report of
//!   missing, unexpected and mismatched keys: only the new head should be listed),
//!   [`transfer::unfreeze`] for linear probing, [`transfer::layer_decay_groups`] for layer-wise
//!   learning-rate decay, [`transfer::FrozenBatchNorm2d`] and [`transfer::fold_batch_norm`].
//! - **Train a few parameters next to frozen weights** — [`transfer::LoraLinear`] /
//!   [`transfer::LoraConv2d`] (peft's names; `merge` makes it free at inference) and
//!   [`transfer::BottleneckAdapter`]; [`transfer::LoraMultiHeadAttention`] puts the rank-$r$
//!   update on an attention layer's in- and out-projections (a peft adapter file loads).
//! - **Fine-tune a ViT at a new resolution** — [`transfer::resample_pos_embed`]: the learned
//!   position embeddings resampled bicubically to the new patch grid (timm's, class token kept).
//!   In practice: `examples/fine_tune.rs` (lenient load with its report checked, linear probe vs
//!   full fine-tune vs layer-wise decay vs LoRA, and when each wins).
//! - **Quantize: post-training first, quantization-aware when that is not enough** —
//!   [`compress::quantize`]: observers, fake-quantization with a straight-through gradient
//!   ([`compress::quantize::QatLinear`], [`compress::quantize::QatConv2d`]), per-channel
//!   weights and per-tensor 7-bit activations (`reduce_range` for AVX2), GGUF export.
//! - **Int8 for CPU inference** — [`compress::quantize::QuantizedLinear`] /
//!   [`compress::quantize::QuantizedConv2d`]: 4× smaller weights and an int8 × int8 → i32
//!   kernel about 2× faster than f32; the input is quantized on the fly and everything after the
//!   layer stays float. In practice: `examples/compress.rs` (fold BN, PTQ, QAT, pruning).
//! - **Prune gradually, then fine-tune** — [`compress::prune`]: magnitude, global and channel
//!   pruning with masks that survive weight decay, on Zhu & Gupta's cubic schedule.
//!
//! ### Guides and data
//! - **Pick the architecture by the data, start small** — [`guide::architecture`].
//! - **Build in or teach the symmetries of the task; striding breaks shift equivariance** —
//!   [`guide::invariances`].
//! - **Real data without a download** — [`data::digits()`]: the UCI handwritten digits, embedded.
//!
//! ### Regularization and residual paths
//! - **Keep an identity path so gradients reach early layers** — [`blocks::Residual`],
//!   [`blocks::PreNorm`] (normalise the branch input, not the sum: pre-LN), and
//!   [`blocks::LayerScale`] (start each branch near zero in deep transformers).
//! - **Drop whole residual branches, not units, in deep nets** — [`blocks::DropPath`]
//!   (stochastic depth), rates growing with depth.
//! - **Drop whole channels in conv features** — [`blocks::Dropout2d`]: neighbouring pixels are
//!   correlated, so element dropout barely regularizes them.
//!
//! ### Multi-scale and adaptive-depth blocks
//! - **Add a cheap downsampled context pathway** — [`blocks::MultiScalePathways`] (DeepMedic): a
//!   pathway at 1/3 resolution sees a 3× wider context for the same weights and 1/27 of the voxels.
//! - **Stop easy samples early** — [`blocks::EarlyExit`]: exit heads after each stage, each sample
//!   leaves at the first confident one, so compute follows input difficulty.
//!
//! ### Modern conv blocks and decoders
//! - **Expand, filter depthwise, project linearly** — [`blocks::MbConv`] (MobileNetV2 /
//!   EfficientNet, timm names): a wide block with a thin residual and squeeze-excite for a small
//!   fraction of a dense convolution's FLOPs.
//! - **Modernise the ResNet** — [`blocks::ConvNextBlock`]: 7×7 depthwise, LayerNorm, an inverted
//!   4× MLP with GELU, one norm and one activation per block, layer scale.
//! - **Pooling hurts segmentation, skips fix it** — [`blocks::UpBlock`] with and without its skip
//!   (`examples/unet_segmentation.rs`): without skips the held-out mean IoU of the same U-Net
//!   drops from 0.99 to 0.55 and boundary-pixel accuracy from 0.98 to 0.55.
//!
//! ### Training: optimizers, schedules, clipping
//! - **AdamW for transformers, SGD + Nesterov momentum for CNNs** — [`optim::AdamW`],
//!   [`optim::Sgd`], [`optim::Adam`], [`optim::RmsProp`], [`optim::Adagrad`], [`optim::Lion`]: one
//!   fused in-place pass per parameter, f32 state for f16/bf16 weights, NaN/Inf never reaches
//!   the weights ([`optim::NonFinite`]).
//! - **Decouple weight decay, and don't decay biases and norms** — [`optim::AdamW`] vs
//!   [`optim::Adam`]'s L2 (a doc-test shows they differ), [`optim::ParamGroups`].
//! - **Average the weights you ship** — [`optim::Ema`] (timm's EMA with warmup).
//! - **Bigger effective batches, f16 without underflow** — [`optim::GradAccumulator`],
//!   [`optim::GradScaler`].
//! - **Resume exactly** — [`optim::OptimizerState`] saves every buffer and step count; with
//!   [`schedule::Scheduler`]'s state a resumed run is bit-identical.
//! - **Warm up, then anneal** — [`schedule::Warmup`] around [`schedule::CosineAnnealing`],
//!   [`schedule::OneCycle`] (with its momentum cycle), [`schedule::CosineWarmRestarts`] (SGDR),
//!   [`schedule::Wsd`] for long pre-training; every curve is plotted in `docs/schedules/`.
//! - **Reduce on plateau when you cannot tune** — [`schedule::ReduceLrOnPlateau`].
//! - **Adam variants for specific troubles** — [`optim::NAdam`] (Nesterov look-ahead
//!   momentum), [`optim::RAdam`] (a rectified Adam that needs no warmup), [`optim::Adamax`]
//!   (steps bounded by the learning rate under bursty gradients), [`optim::Adadelta`] (a step
//!   in the units of the weights, no rate to tune).
//! - **Optimizer memory, huge batches, full-batch problems** — [`optim::Adafactor`] ($n + m$
//!   state values per $n \times m$ matrix instead of Adam's $2nm$: T5, PaLM), [`optim::Lamb`] (a
//!   per-tensor trust ratio lets one rate suit every layer at batch 32k), [`optim::Lbfgs`] (small
//!   deterministic problems with a closure, strong-Wolfe line search; not for noisy minibatches).
//! - **Orthogonalise the momentum of hidden matrices** — [`optim::Muon`], and
//!   [`optim::MuonWithAdamW`] keeping embeddings, heads, biases and norms on AdamW.
//! - **No decay schedule to tune** — [`optim::ScheduleFreeAdamW`]: call `eval()` before evaluating
//!   or saving, or you evaluate the wrong weights.
//! - **Flatter minima generalise better** — [`optim::Sam`] (and ASAM) at twice the cost per step;
//!   [`optim::Lookahead`] lowers the variance of any inner optimizer for one copy of the weights.
//! - **Cyclical rates** — [`schedule::CyclicLr`]: sweep the rate between bounds found by an LR
//!   range test and stop at a cycle end; [`schedule::PhasedOneCycle`] reproduces optax's
//!   one-cycles step for step.
//! - **Compose, do not rewrite, schedules** — [`schedule::Chained`] multiplies independent
//!   factors on one clock; [`schedule::PerGroup`] gives a pretrained backbone and a new head
//!   their own curves.
//! - **Clip by the global norm and log it** — [`optim::clip_grad_norm`] returns the pre-clip norm;
//!   [`optim::agc`] clips unit-wise relative to the weight norm (normalizer-free nets).
//! - **Fold the tokens into rows and fuse the bias** — [`ops::linear()`]: one
//!   `(B·L, in) × (in, out)` product with the bias written into the output tiles; the backward
//!   writes the input and weight gradients without transposed copies and sums the bias gradient
//!   in parallel (candle-nn's `Linear` makes `B` small products for a 3-D input).
//! - **Keep freed memory mapped** — a training step frees and reallocates the same large
//!   temporaries every iteration: use mimalloc with purging off (`benches/common/alloc.rs`, the
//!   README's allocator tip) or every step page-faults them back in.
//!
//! ### Sequence models: selective state spaces and attention
//! - **Linear-time sequence mixing** — [`ssm::MambaBlock`] / [`ssm::MambaModel`] on the fused
//!   selective scan [`ops::selective_scan()`] (forward and backward kernels, no `(B, D, L, N)`
//!   tensor): input-dependent Δ, B, C; $O(L)$ training, $O(1)$ memory per generated token
//!   ([`ssm::MambaBlock::step`]). Fuse a short convolution with its bias and activation
//!   ([`ops::causal_conv1d()`]) and let the scan take the layout its neighbours use
//!   ([`ops::SelectiveScanConfig::with_seq_major`]): every separate full-size intermediate costs
//!   a zero-filled gradient buffer and an add in candle's backward.
//! - **Attention without the $L \times L$ matrix** — [`ops::scaled_dot_product_attention`]: tiled
//!   online softmax (FlashAttention-2) with a backward, $O(L)$ extra memory; GQA shrinks the KV
//!   cache; [`ops::AttentionMask::SlidingWindow`] makes the cost $O(L \cdot w)$
//!   (plus Longformer's global tokens at $O(L \cdot g)$).
//! - **Multi-head attention that loads PyTorch weights** — [`attention::MultiHeadAttention`]
//!   (`nn.MultiheadAttention` names, cross-attention, GQA, KV cache), positions by
//!   [`attention::RotaryEmbedding`] (relative, extrapolates) or sinusoidal / learned tables.
//! - **Cut the quadratic cost** — [`attention::LocalAttention`] (sliding window + global tokens),
//!   [`attention::AxialAttention`] (rows then columns of a 2-D map), [`attention::LinformerAttention`]
//!   (keys and values projected to $k$ along the sequence).
//! - **Pre-LN transformers train without tricks** — [`attention::TransformerEncoderLayer`]
//!   (pre-LN default, GELU / SwiGLU, DropPath, LayerScale); ViT tokens from patches or a conv stem
//!   (hybrid) with [`attention::VitEmbedding`].
//! - **Attention for CNNs** — [`attention::SqueezeExcite`] (channel gates for ~2 % of a conv's
//!   weights) and [`attention::Cbam`] (channel, then spatial).
//!
//! ## Conventions
//! - `use candle_tricks::prelude::*;` brings the layers, optimizers, schedules and candle's core
//!   types and traits ([`prelude`]).
//! - Layers and ops: `conv::depthwise_conv2d(channels, …, vb)` builds a layer (`torch.nn`);
//!   `ops::depthwise_conv2d(&x, &w, cfg)` is the functional op of the same name
//!   (`torch.nn.functional`). The same split holds for conv3d and the norms.
//! - A block is a `FooConfig` (plain struct, `Default` = the reference's defaults, `with_*`
//!   builders), the block `Foo`, and a constructor `foo(dims…, cfg, vb)`; `Foo::new` builds it from
//!   raw tensors.
//! - Ops in [`ops`] validate their input and return [`Error`] naming the op and the shapes; their
//!   kernels accept f32, f16 and bf16 and accumulate in f32.
//! - Performance claims are ratios measured in one run, recorded in `docs/PERFORMANCE.md`.
//! - Math is TeX between `$…$` or `$$…$$`, rendered by KaTeX from `katex-header.html` (see the
//!   README), and written so that markdown passes it through unchanged: no backslash before
//!   punctuation (`\thinspace`, `\lbrace`, `\rbrace`, `\Vert`, no `\_`: put identifiers in code
//!   spans), `\ast` and `^\prime` instead of `*` and `'`, and `_` only right after a letter or
//!   digit or followed by a space (`\eta_0^{in}`, `\mathrm{softmax}_ j`). `.ci/check_math.py`
//!   enforces this on the sources and on the rendered pages.
#![deny(missing_docs)]
// Every `unsafe` operation sits in its own `unsafe {}` block, even inside an `unsafe fn`, and
// every such block states why it is sound (`// SAFETY:`); every `unsafe fn` says what its
// caller must guarantee (`/// # Safety`).
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(clippy::missing_safety_doc)]

mod check;
mod cpu;
mod error;
pub use error::{Error, Result};

pub mod prelude;

/// The README's code blocks, compiled and run as doc-tests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod attention;
pub mod augment;
pub mod blocks;
pub mod compress;
pub mod conv;
pub mod data;
pub mod geometry;
pub mod guide;
pub mod loss;
pub mod norm;
pub mod ops;
pub mod optim;
pub mod pool;
pub mod rnn;
pub mod schedule;
pub mod ssm;
pub mod train;
pub mod transfer;
pub mod tune;
