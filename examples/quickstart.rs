//! Quickstart: a small residual CNN built from candle-tricks blocks, trained from scratch on a
//! synthetic shapes dataset with images of *several sizes*.
//!
//! ```sh
//! cargo run --release --example quickstart
//! ```
//!
//! What it shows:
//! - a model struct assembled from the crate's blocks: a strided 3×3 stem with batch norm
//!   ([`batch_norm`]), three residual [`BasicBlock`]s (torchvision's ResNet block: two 3×3
//!   conv → BN layers plus a shortcut; a strided block gets a 1×1 projection shortcut by itself,
//!   and the last BN of each branch starts at zero so every block starts as the identity) and a
//!   spatial-pyramid-pooling head ([`SpatialPyramidPooling`]) that turns any `H × W` into a
//!   fixed-length vector, so the same weights accept every size;
//! - a dataset generated in code ([`shapes_batch`]: circles, squares, triangles and crosses of
//!   random size, position and intensity, on noise) from a seeded generator;
//! - a training loop on mini-batches of mixed sizes (each batch at one size, 32, 40 and 48
//!   pixels in turn), with `forward_t(x, true)` in training and `forward_t(x, false)` in
//!   evaluation, then validation at those sizes and at 56, a size the model never saw;
//! - this crate's optimizer stack: [`AdamW`] with two parameter groups
//!   ([`ParamGroups::no_decay_for_bias_and_norm`]: weight decay on the conv and linear weights
//!   only, none on biases and batch-norm parameters), a linear warmup into a cosine decay
//!   ([`Warmup`] + [`CosineAnnealing`], applied each step by a [`Scheduler`]), and global-norm
//!   gradient clipping ([`clip_grad_norm`]), with the learning rate and the pre-clip gradient
//!   norm in the progress output. Norms well above `MAX_GRAD_NORM` in the first epochs are
//!   normal (clipping then bounds the early steps, together with the warmup); one that is still
//!   clipped at the end, or that jumps by orders of magnitude, points at a rate that is too
//!   high. To save and resume such a run exactly, see the `resume` example.
//!
//! Batch norm and mixed sizes: in training, batch norm normalises with the statistics of the
//! current batch, which here always has a single image size; in evaluation it uses running
//! averages, which with momentum 0.1 mostly reflect the last ~20 batches. Feature statistics
//! change with the size, so if those batches happen to be mostly one size, evaluation at the
//! others suffers. Taking the sizes in turn keeps the running averages an even mix of all of
//! them (with sizes drawn at random the validation accuracy here is about a point lower and
//! varies more). A per-sample norm (`ResBlockConfig::default().with_norm("group")`) has no
//! running statistics and no such issue, at some speed.
//!
//! To adapt it: replace `shapes_batch` ([`candle_tricks::data::shapes`]) by your data (any
//! `(B, C, H, W)` f32 tensor with `u32` labels), set `IN_CHANNELS` and `CLASSES`, and grow `Net` (more blocks per stage, wider
//! channels, `bottleneck` blocks for deeper stages). The blocks use torchvision's tensor names
//! (`layers.0.conv1.weight`, `layers.0.bn1.running_mean`, `layers.0.downsample.0.weight`, …), so
//! `VarBuilder::from_mmaped_safetensors` can load a checkpoint in place of the random init. On a
//! machine busy with other work, running with `CANDLE_NUM_THREADS=1` keeps candle's element-wise
//! ops off its spinning thread barrier (the convolutions and our kernels still use every core).

// mimalloc with freed memory kept mapped (README, "allocator" tip): training steps free and
// reallocate the same large temporaries every iteration. One module, shared with the benches.
#[path = "../benches/common/alloc.rs"]
mod alloc;

use std::time::Instant;

use candle_core::{DType, Device, Module, ModuleT, Tensor, D};
use candle_nn::{conv2d_no_bias, linear, Conv2d, Conv2dConfig, Linear, Optimizer};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::blocks::{basic_block, BasicBlock, ResBlockConfig};
use candle_tricks::data::{shapes_batch, SHAPE_CLASSES};
use candle_tricks::norm::{batch_norm, BatchNorm, BatchNormConfig};
use candle_tricks::optim::{clip_grad_norm, AdamW, AdamWConfig, ParamGroups};
use candle_tricks::pool::{PoolMode, SpatialPyramidPooling};
use candle_tricks::schedule::{CosineAnnealing, Scheduler, Warmup};
use rand::rngs::StdRng;
use rand::SeedableRng;

const IN_CHANNELS: usize = 1;
const CLASSES: [&str; 4] = SHAPE_CLASSES;
const TRAIN_SIZES: [usize; 3] = [32, 40, 48];
const VALID_SIZES: [usize; 4] = [32, 40, 48, 56]; // 56 is never seen in training
const BATCH: usize = 32;
const BATCHES_PER_EPOCH: usize = 48;
const EPOCHS: usize = 6;
const SEED: u64 = 42;
const PEAK_LR: f64 = 6e-3;
const WARMUP_STEPS: usize = 20;
const WEIGHT_DECAY: f64 = 0.01; // on the weight matrices and kernels only
const MAX_GRAD_NORM: f64 = 1.0;

/// stem (16 channels, stride 2) → residual blocks (32 channels stride 2, 64 stride 2, 64
/// stride 1) → pyramid pooling → linear.
struct Net {
    stem: Conv2d,
    stem_bn: BatchNorm,
    layers: Vec<BasicBlock>,
    spp: SpatialPyramidPooling,
    head: Linear,
}

impl Net {
    fn new(vb: VarBuilder) -> candle_tricks::Result<Self> {
        let stem_cfg = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        // conv → BN → ReLU; the conv needs no bias, BN's shift replaces it.
        let stem = conv2d_no_bias(IN_CHANNELS, 16, 3, stem_cfg, vb.pp("stem"))?;
        let stem_bn = batch_norm(16, BatchNormConfig::default(), vb.pp("stem_bn"))?;
        // A strided or widening block gets its projection shortcut by itself. The last block
        // keeps the resolution and grows the receptive field to ~71 px, the largest shapes.
        let block = ResBlockConfig::default();
        let layers = vec![
            basic_block(16, 32, block.clone().with_stride(2), vb.pp("layers.0"))?,
            basic_block(32, 64, block.clone().with_stride(2), vb.pp("layers.1"))?,
            basic_block(64, 64, block, vb.pp("layers.2"))?,
        ];
        // The map is now H/8: 4x4 to 7x7, pooled into 1 + 4 bins per channel.
        let spp = SpatialPyramidPooling::new(vec![1, 2], PoolMode::Max)?;
        let head = linear(spp.output_features(64), CLASSES.len(), vb.pp("head"))?;
        Ok(Self {
            stem,
            stem_bn,
            layers,
            spp,
            head,
        })
    }
}

impl ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut xs = self
            .stem_bn
            .forward_t(&xs.apply(&self.stem)?, train)?
            .relu()?;
        for block in &self.layers {
            xs = block.forward_t(&xs, train)?;
        }
        self.head.forward(&self.spp.forward(&xs)?) // (B, 64·5) whatever H × W
    }
}

/// Number of correct predictions in a batch.
fn correct(logits: &Tensor, labels: &Tensor) -> candle_core::Result<f32> {
    let hits = logits.argmax(D::Minus1)?.eq(labels)?.to_dtype(DType::F32)?;
    hits.sum_all()?.to_scalar::<f32>()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(SEED);
    // Validation: 4 batches per size, fixed up front. Training draws fresh batches as it goes.
    let valid: Vec<(usize, Tensor, Tensor)> = VALID_SIZES
        .iter()
        .flat_map(|&size| std::iter::repeat_n(size, 4))
        .map(|size| shapes_batch(&mut rng, BATCH, size, &dev).map(|(x, y)| (size, x, y)))
        .collect::<candle_tricks::Result<_>>()?;

    let varmap = VarMap::new();
    let net = Net::new(VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let params: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    println!("model: {params} parameters; training on sizes {TRAIN_SIZES:?}");
    // Two groups, sorted by name: decayed weights, and biases / norm parameters without decay.
    let groups = ParamGroups::no_decay_for_bias_and_norm(&varmap, WEIGHT_DECAY);
    let mut opt = AdamW::with_groups(groups, AdamWConfig::default().with_lr(PEAK_LR))?;
    let vars = opt.vars();
    // Linear warmup over the first steps, then a cosine down to 1 % of the peak at the end.
    let total_steps = EPOCHS * BATCHES_PER_EPOCH;
    let cosine =
        CosineAnnealing::new(PEAK_LR, total_steps - WARMUP_STEPS)?.with_eta_min(PEAK_LR / 100.0)?;
    let mut sched = Scheduler::new(Warmup::new(cosine, WARMUP_STEPS, 0.0)?);

    let start = Instant::now();
    for epoch in 1..=EPOCHS {
        let t = Instant::now();
        let (mut loss_sum, mut hits, mut norm_sum, mut norm_max) = (0f32, 0f32, 0f64, 0f64);
        for step in 0..BATCHES_PER_EPOCH {
            // Sizes in turn, not at random: batch norm's running averages (momentum 0.1, so
            // mostly the last ~20 batches) then always mix the sizes in equal parts.
            let size = TRAIN_SIZES[step % TRAIN_SIZES.len()];
            let (x, y) = shapes_batch(&mut rng, BATCH, size, &dev)?;
            let logits = net.forward_t(&x, true)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            let mut grads = loss.backward()?;
            // Returns the norm before clipping: the number to watch.
            let norm = clip_grad_norm(&mut grads, &vars, MAX_GRAD_NORM)?;
            sched.step(&mut opt)?; // sets this step's rate
            opt.step(&grads)?;
            (norm_sum, norm_max) = (norm_sum + norm, norm_max.max(norm));
            loss_sum += loss.to_scalar::<f32>()?;
            hits += correct(&logits, &y)?;
        }
        println!(
            "epoch {epoch}/{EPOCHS}: loss {:.4}, train acc {:.1}%, lr {:.2e}, \
             grad norm before clip {:.2} (max {:.2}), {:.1}s",
            loss_sum / BATCHES_PER_EPOCH as f32,
            100.0 * hits / (BATCHES_PER_EPOCH * BATCH) as f32,
            opt.learning_rate(),
            norm_sum / BATCHES_PER_EPOCH as f64,
            norm_max,
            t.elapsed().as_secs_f32()
        );
    }

    let (mut total, mut per_size) = (0f32, Vec::new());
    for size in VALID_SIZES {
        let mut hits = 0f32;
        for (_, x, y) in valid.iter().filter(|(s, _, _)| *s == size) {
            hits += correct(&net.forward_t(x, false)?, y)?;
        }
        per_size.push(format!(
            "{size}px {:.1}%",
            100.0 * hits / (4 * BATCH) as f32
        ));
        total += hits;
    }
    println!(
        "training: {:.1}s; per size: {}",
        start.elapsed().as_secs_f32(),
        per_size.join(", ")
    );
    println!(
        "validation accuracy: {:.1}%",
        100.0 * total / (valid.len() * BATCH) as f32
    );
    Ok(())
}
