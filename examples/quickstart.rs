//! Quickstart: a small CNN built from candle-tricks blocks, trained from scratch on a synthetic
//! shapes dataset with images of *several sizes*.
//!
//! ```sh
//! cargo run --release --example quickstart
//! ```
//!
//! What it shows:
//! - a model struct assembled from the crate's blocks: a strided 3×3 stem, depthwise-separable
//!   blocks ([`SeparableConv2d`]), a dilated stage that widens the receptive field without
//!   shrinking the map ([`Aspp`]) and a spatial-pyramid-pooling head ([`SpatialPyramidPooling`])
//!   that turns any `H × W` into a fixed-length vector, so the same weights accept every size;
//! - a dataset generated in code (circles, squares, triangles and crosses of random size, position
//!   and intensity, on noise) from a seeded generator;
//! - a training loop with candle-nn's `AdamW` on mini-batches of mixed sizes (each batch at one
//!   size drawn from 32, 40 and 48 pixels), then validation at those sizes and at 56, a size the
//!   model never saw.
//!
//! Why no BatchNorm in the stem and the separable blocks: in training, BatchNorm normalises with
//! the statistics of the current batch, which here always has a single image size; in inference
//! it uses running averages over *all* sizes. Feature statistics change with the size (edges are
//! a larger share of a small image), so the two disagree and validation accuracy drops by 5-15
//! points. The model keeps BatchNorm only in the ASPP stage, on the 4× downsampled map, and drops
//! ASPP's image-pooling branch (BatchNorm over one pooled value per image, the most size-sensitive
//! statistic; the pyramid head already pools globally). A per-sample norm avoids the issue.
//!
//! To adapt it: replace `make_batch` by your data (any `(B, C, H, W)` f32 tensor with `u32`
//! labels), set `IN_CHANNELS` and `CLASSES`, and grow `Net` (more blocks, wider channels). The
//! blocks use PyTorch/timm/torchvision tensor names, so `VarBuilder::from_mmaped_safetensors` can
//! load a checkpoint in place of the random init. On a machine busy with other work, running with
//! `CANDLE_NUM_THREADS=1` keeps candle's element-wise ops off its spinning thread barrier (the
//! convolutions and our kernels still use every core).

use std::time::Instant;

use candle_core::{DType, Device, Module, ModuleT, Tensor, D};
use candle_nn::{conv2d, linear, Activation, AdamW, Conv2d, Conv2dConfig, Linear, Optimizer};
use candle_nn::{ParamsAdamW, VarBuilder, VarMap};
use candle_tricks::conv::{aspp, separable_conv2d, Aspp, AsppConfig};
use candle_tricks::conv::{SeparableConv2d, SeparableConv2dConfig};
use candle_tricks::pool::{PoolMode, SpatialPyramidPooling};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const IN_CHANNELS: usize = 1;
const CLASSES: [&str; 4] = ["circle", "square", "triangle", "cross"];
const TRAIN_SIZES: [usize; 3] = [32, 40, 48];
const VALID_SIZES: [usize; 4] = [32, 40, 48, 56]; // 56 is never seen in training
const BATCH: usize = 32;
const BATCHES_PER_EPOCH: usize = 48;
const EPOCHS: usize = 6;
const SEED: u64 = 42;

/// stem (stride 2) → separable blocks (stride 2, 1) → ASPP → spatial pyramid pooling → linear.
struct Net {
    stem: Conv2d,
    blocks: Vec<SeparableConv2d>,
    aspp: Aspp,
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
        let stem = conv2d(IN_CHANNELS, 16, 3, stem_cfg, vb.pp("stem"))?;
        // Depthwise 3x3 → pointwise 1x1 with bias → ReLU.
        let sep = SeparableConv2dConfig::default()
            .with_bias(true)
            .with_pw_norm_act(false, Some(Activation::Relu));
        let blocks = vec![
            separable_conv2d(16, 32, 3, sep.with_stride(2), vb.pp("blocks.0"))?,
            separable_conv2d(32, 64, 3, sep, vb.pp("blocks.1"))?,
        ];
        // The map is now H/4: 8x8 to 14x14. Rates 2 and 4 keep the dilated taps inside it.
        let aspp_cfg = AsppConfig::default()
            .with_rates([2, 4])
            .with_dropout(0.1)
            .with_image_pooling(false);
        let aspp = aspp(64, 32, aspp_cfg, vb.pp("aspp"))?;
        let spp = SpatialPyramidPooling::new(vec![1, 2, 4], PoolMode::Max)?;
        let head = linear(spp.output_features(32), CLASSES.len(), vb.pp("head"))?;
        Ok(Self {
            stem,
            blocks,
            aspp,
            spp,
            head,
        })
    }
}

impl ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut xs = xs.apply(&self.stem)?.relu()?;
        for block in &self.blocks {
            xs = block.forward_t(&xs, train)?;
        }
        let xs = self.aspp.forward_t(&xs, train)?;
        self.head.forward(&self.spp.forward(&xs)?) // (B, 32·21) whatever H × W
    }
}

/// One `size × size` image of class `label`: a filled shape of random size, position and
/// intensity, plus uniform noise.
fn draw(rng: &mut StdRng, label: usize, size: usize) -> Vec<f32> {
    let s = size as f32;
    let r = rng.random_range(0.18 * s..0.38 * s); // half-extent of the shape
    let (cx, cy) = (rng.random_range(r..s - r), rng.random_range(r..s - r));
    let intensity = rng.random_range(0.4f32..1.0);
    let mut img = vec![0f32; size * size];
    for y in 0..size {
        for x in 0..size {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            let (ax, ay) = (dx.abs(), dy.abs());
            let inside = match label {
                0 => dx * dx + dy * dy <= r * r,
                1 => ax.max(ay) <= 0.85 * r,
                2 => ay <= r && ax <= 0.5 * (dy + r), // apex up
                _ => (ax <= r / 3.0 && ay <= r) || (ay <= r / 3.0 && ax <= r),
            };
            let noise = rng.random_range(-0.25f32..0.25);
            img[y * size + x] = if inside { intensity + noise } else { noise };
        }
    }
    img
}

/// A batch of `n` images at one size: `(n, 1, size, size)` f32 pixels and `(n)` u32 labels.
fn make_batch(
    rng: &mut StdRng,
    n: usize,
    size: usize,
    dev: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let labels: Vec<u32> = (0..n)
        .map(|_| rng.random_range(0..CLASSES.len() as u32))
        .collect();
    let pixels: Vec<f32> = labels
        .iter()
        .flat_map(|&l| draw(rng, l as usize, size))
        .collect();
    Ok((
        Tensor::from_vec(pixels, (n, IN_CHANNELS, size, size), dev)?,
        Tensor::from_vec(labels, n, dev)?,
    ))
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
        .map(|size| make_batch(&mut rng, BATCH, size, &dev).map(|(x, y)| (size, x, y)))
        .collect::<candle_core::Result<_>>()?;

    let varmap = VarMap::new();
    let net = Net::new(VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let params: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    println!("model: {params} parameters; training on sizes {TRAIN_SIZES:?}");
    let adamw = ParamsAdamW {
        lr: 6e-3,
        weight_decay: 1e-4,
        ..Default::default()
    };
    let mut opt = AdamW::new(varmap.all_vars(), adamw)?;

    let start = Instant::now();
    for epoch in 1..=EPOCHS {
        let t = Instant::now();
        let (mut loss_sum, mut hits) = (0f32, 0f32);
        for _ in 0..BATCHES_PER_EPOCH {
            let size = TRAIN_SIZES[rng.random_range(0..TRAIN_SIZES.len())];
            let (x, y) = make_batch(&mut rng, BATCH, size, &dev)?;
            let logits = net.forward_t(&x, true)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            opt.backward_step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()?;
            hits += correct(&logits, &y)?;
        }
        println!(
            "epoch {epoch}/{EPOCHS}: loss {:.4}, train acc {:.1}%, {:.1}s",
            loss_sum / BATCHES_PER_EPOCH as f32,
            100.0 * hits / (BATCHES_PER_EPOCH * BATCH) as f32,
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
