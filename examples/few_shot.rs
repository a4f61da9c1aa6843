//! Few-shot learning with a prototypical network: classify images of classes never seen in
//! training from one (or five) labelled examples each.
//!
//! ```sh
//! cargo run --release --example few_shot
//! ```
//!
//! The data are procedurally generated glyphs, an Omniglot stand-in: each class is a random
//! figure of three pen strokes; each sample of a class redraws it with a random rotation, scale,
//! shift, wobble of every stroke end, pen width and noise. 2000 classes are for training, 400
//! others only for testing. Training runs *episodes*: pick N classes, embed K support images and
//! some queries of each, average each class's support embeddings into a prototype, and classify
//! each query by a softmax over minus its squared distances to the prototypes. Training with more
//! classes per episode (20) than at test time (5) gives harder episodes and a better embedding,
//! as Snell et al. report.
//!
//! Why it works: the network never learns *the* classes, it learns a metric in which images of
//! one class cluster. A new class then needs no new weights — one example is its prototype.
//! Compare a plain classifier, which would need a new output row trained from that one image.
//!
//! Results on 2 cores (~4 min: 300 training episodes, then 600 test episodes with 15 queries
//! per class on the held-out classes; mean accuracy and 95 % interval, chance 20 %):
//!
//! | test episodes | accuracy |
//! |---|---|
//! | 5-way 1-shot | 91.7 % ± 0.5 |
//! | 5-way 5-shot | 98.2 % ± 0.2 |
//!
//! To adapt it: replace `Glyphs` by your classes (any source of "K images of class c"), keep
//! the episode loop and the embedding network, and evaluate on classes held out from training.

// mimalloc with freed memory kept mapped (README, "allocator" tip): training steps free and
// reallocate the same large temporaries every iteration. One module, shared with the benches.
#[path = "../benches/common/alloc.rs"]
mod alloc;

use std::time::Instant;

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use candle_tricks::conv::{conv2d, Conv2d, Conv2dConfig};
use candle_tricks::loss;
use candle_tricks::norm::{batch_norm, BatchNorm, BatchNormConfig};
use candle_tricks::optim::{AdamW, AdamWConfig};
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};

const SIZE: usize = 20;
const TRAIN_CLASSES: usize = 2000;
const TEST_CLASSES: usize = 400;
const TRAIN_WAY: usize = 20;
const TRAIN_SHOT: usize = 5;
const QUERIES: usize = 5;
const EPISODES: usize = 300;
const TEST_EPISODES: usize = 600;
const TEST_QUERIES: usize = 15;
const LR: f64 = 2e-3;
const SEED: u64 = 3;

/// A glyph class: three strokes, each a segment between two points of the canvas.
struct Glyph([[f32; 4]; 3]);

struct Glyphs {
    classes: Vec<Glyph>,
}

impl Glyphs {
    fn new(n: usize, rng: &mut StdRng) -> Self {
        let lo = 4.0;
        let hi = SIZE as f32 - 4.0;
        let mut point = || [rng.random_range(lo..hi), rng.random_range(lo..hi)];
        let classes = (0..n)
            .map(|_| {
                Glyph(std::array::from_fn(|_| {
                    let (a, b) = (point(), point());
                    [a[0], a[1], b[0], b[1]]
                }))
            })
            .collect();
        Self { classes }
    }

    /// One sample of class `c`, appended to `out` (`SIZE × SIZE` values).
    fn draw(&self, c: usize, rng: &mut StdRng, out: &mut Vec<f32>) {
        let angle = rng.random_range(-0.25f32..0.25);
        let scale = rng.random_range(0.85f32..1.15);
        let (shift_x, shift_y) = (
            rng.random_range(-1.5f32..1.5),
            rng.random_range(-1.5f32..1.5),
        );
        let width = rng.random_range(0.7f32..1.2);
        let centre = SIZE as f32 / 2.0;
        let (sin, cos) = angle.sin_cos();
        let mut place = |x: f32, y: f32| {
            let (dx, dy) = (x - centre, y - centre);
            let wobble = (
                rng.random_range(-0.8f32..0.8),
                rng.random_range(-0.8f32..0.8),
            );
            (
                centre + scale * (cos * dx - sin * dy) + shift_x + wobble.0,
                centre + scale * (sin * dx + cos * dy) + shift_y + wobble.1,
            )
        };
        let strokes: Vec<[f32; 4]> = self.classes[c]
            .0
            .iter()
            .map(|s| {
                let (ax, ay) = place(s[0], s[1]);
                let (bx, by) = place(s[2], s[3]);
                [ax, ay, bx, by]
            })
            .collect();
        for y in 0..SIZE {
            for x in 0..SIZE {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let d2 = strokes
                    .iter()
                    .map(|s| segment_distance2(px, py, s))
                    .fold(f32::INFINITY, f32::min);
                let ink = (-d2 / (2.0 * width * width)).exp();
                out.push(ink + rng.random_range(-0.1f32..0.1));
            }
        }
    }

    /// An episode: `shot` support and `queries` query images for each of `way` random classes.
    /// Returns support `(way·shot, 1, S, S)` ordered class by class, and queries likewise.
    fn episode(
        &self,
        way: usize,
        shot: usize,
        queries: usize,
        rng: &mut StdRng,
        dev: &Device,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let picked = sample(rng, self.classes.len(), way).into_vec();
        let (mut support, mut query) = (Vec::new(), Vec::new());
        for &c in &picked {
            (0..shot).for_each(|_| self.draw(c, rng, &mut support));
            (0..queries).for_each(|_| self.draw(c, rng, &mut query));
        }
        Ok((
            Tensor::from_vec(support, (way * shot, 1, SIZE, SIZE), dev)?,
            Tensor::from_vec(query, (way * queries, 1, SIZE, SIZE), dev)?,
        ))
    }
}

/// Squared distance from point `(px, py)` to segment `s = [ax, ay, bx, by]`.
fn segment_distance2(px: f32, py: f32, s: &[f32; 4]) -> f32 {
    let (vx, vy) = (s[2] - s[0], s[3] - s[1]);
    let (wx, wy) = (px - s[0], py - s[1]);
    let t = ((wx * vx + wy * vy) / (vx * vx + vy * vy).max(1e-6)).clamp(0.0, 1.0);
    let (dx, dy) = (wx - t * vx, wy - t * vy);
    dx * dx + dy * dy
}

/// Snell et al.'s embedding, narrower: conv 3×3 → BN → ReLU → 2× max pool, three times (32
/// channels), flattened: a 32·2·2 = 128-dimensional embedding of a 20×20 image.
struct Embedding {
    convs: Vec<(Conv2d, BatchNorm)>,
}

impl Embedding {
    fn new(vb: VarBuilder) -> candle_tricks::Result<Self> {
        let cfg = Conv2dConfig::default();
        let convs = [(1, 32), (32, 32), (32, 32)]
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout))| {
                let vb = vb.pp(format!("block{i}"));
                Ok((
                    conv2d(cin, cout, 3, cfg, vb.pp("conv"))?,
                    batch_norm(cout, BatchNormConfig::default(), vb.pp("bn"))?,
                ))
            })
            .collect::<candle_tricks::Result<_>>()?;
        Ok(Self { convs })
    }
}

impl ModuleT for Embedding {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (conv, bn) in &self.convs {
            h = bn
                .forward_t(&h.apply(conv)?, train)?
                .relu()?
                .max_pool2d(2)?;
        }
        h.flatten_from(1)
    }
}

/// Labels of an episode's support or query set: `n` of class 0, then `n` of class 1, …
fn episode_labels(way: usize, n: usize, dev: &Device) -> candle_core::Result<Tensor> {
    let labels: Vec<u32> = (0..way as u32)
        .flat_map(|c| std::iter::repeat_n(c, n))
        .collect();
    Tensor::from_vec(labels, way * n, dev)
}

/// Mean accuracy (%) and the half-width of its 95 % interval over `TEST_EPISODES` episodes.
fn evaluate(
    net: &Embedding,
    glyphs: &Glyphs,
    shot: usize,
    rng: &mut StdRng,
    dev: &Device,
) -> candle_tricks::Result<(f32, f32)> {
    let (support_labels, labels) = (
        episode_labels(5, shot, dev)?,
        episode_labels(5, TEST_QUERIES, dev)?,
    );
    let mut accs = Vec::with_capacity(TEST_EPISODES);
    for _ in 0..TEST_EPISODES {
        let (s, q) = glyphs.episode(5, shot, TEST_QUERIES, rng, dev)?;
        let (es, eq) = (net.forward_t(&s, false)?, net.forward_t(&q, false)?);
        let episode = loss::prototypical(&es, &support_labels, &eq, &labels, 5)?;
        accs.push(100.0 * episode.accuracy as f32);
    }
    let n = accs.len() as f32;
    let mean = accs.iter().sum::<f32>() / n;
    let var = accs.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / (n - 1.0);
    Ok((mean, 1.96 * (var / n).sqrt()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(SEED);
    let train = Glyphs::new(TRAIN_CLASSES, &mut rng);
    let test = Glyphs::new(TEST_CLASSES, &mut rng); // disjoint: drawn after the training classes

    let varmap = VarMap::new();
    let net = Embedding::new(VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let mut opt = AdamW::new(varmap.all_vars(), AdamWConfig::default().with_lr(LR))?;
    let support_labels = episode_labels(TRAIN_WAY, TRAIN_SHOT, &dev)?;
    let labels = episode_labels(TRAIN_WAY, QUERIES, &dev)?;
    let start = Instant::now();
    let (mut loss_sum, mut acc_sum) = (0f32, 0f32);
    for episode in 1..=EPISODES {
        let (s, q) = train.episode(TRAIN_WAY, TRAIN_SHOT, QUERIES, &mut rng, &dev)?;
        // Support and queries in one batch, so batch norm sees one set of statistics.
        let emb = net.forward_t(&Tensor::cat(&[&s, &q], 0)?, true)?;
        let n_support = TRAIN_WAY * TRAIN_SHOT;
        // Prototypes = mean support embedding per class; logits = minus squared distances.
        let batch = loss::prototypical(
            &emb.narrow(0, 0, n_support)?,
            &support_labels,
            &emb.narrow(0, n_support, TRAIN_WAY * QUERIES)?,
            &labels,
            TRAIN_WAY,
        )?;
        opt.backward_step(&batch.loss)?;
        loss_sum += batch.loss.to_scalar::<f32>()?;
        acc_sum += batch.accuracy as f32;
        if episode % 50 == 0 {
            println!(
                "episode {episode}/{EPISODES}: loss {:.3}, {TRAIN_WAY}-way train acc {:.1}%, {:.0}s",
                loss_sum / 50.0,
                2.0 * acc_sum, // mean over 50 episodes, in %
                start.elapsed().as_secs_f32()
            );
            (loss_sum, acc_sum) = (0.0, 0.0);
        }
    }

    println!("\nheld-out classes, {TEST_EPISODES} episodes, {TEST_QUERIES} queries per class:");
    println!("| test episodes | accuracy |\n|---|---|");
    for shot in [1, 5] {
        let (mean, ci) = evaluate(&net, &test, shot, &mut rng, &dev)?;
        println!("| 5-way {shot}-shot | {mean:.1} % ± {ci:.1} |");
    }
    println!("chance: 20 %; total {:.0}s", start.elapsed().as_secs_f32());
    Ok(())
}
