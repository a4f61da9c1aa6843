//! Neural architecture search on the 8×8 handwritten digits: regularized evolution against random
//! search at the same budget, over small CNNs built from this crate's blocks.
//!
//! ```sh
//! cargo run --release --example nas_evolution
//! ```
//!
//! The networks are tiny (8×8 inputs, at most 24 channels), so candle's element-wise ops gain
//! nothing from threads and, on a busy machine, lose a lot on its spinning barrier: with one
//! thread the first candidate trained in 7 s instead of 54 s here. `main` therefore sets
//! `CANDLE_NUM_THREADS` / `RAYON_NUM_THREADS` to 1 unless you set them.
//!
//! The space (6 dimensions, 1600 architectures): a 3×3 stem, then two stages, each choosing a
//! block (none, a plain conv + ReLU, a torchvision `BasicBlock`, an EfficientNet `MbConv` with
//! expansion 3, or a `ConvNextBlock`), a width (4, 8, 16 or 24 channels) and a kernel size (3 or
//! 5; the `BasicBlock` is 3×3 whatever the choice); a 1×1 conv changes the width between the
//! stages and a 2×2 max pool halves the map, then global average pooling and a linear head.
//! Every candidate trains for `EPOCHS` epochs with AdamW on 70 % of the digits (stratified,
//! fixed split) and is scored by its accuracy on the other 30 %. Evolution uses $P = 6$,
//! $S = 3$; each method gets `BUDGET` evaluations, for `SEEDS` search seeds.
//!
//! The search is seeded, the training is not entirely: batch order is seeded per candidate, but
//! candle's weight initialisation cannot be, so a rerun gives slightly different accuracies —
//! the noise that aging evolution is designed to cope with (a lucky score ages out of the
//! population instead of staying parent forever).
//!
//! Measured with the committed code, `CANDLE_NUM_THREADS=1`, on 2 cores shared with other
//! builds (199 s in all; each candidate 1–7 s):
//!
//! ```text
//! | seed | search | best val. acc. | winning architecture | distinct networks |
//! |---|---|---|---|---|
//! | 0 | evolution | 96.8 % | mbconv w24 k3 / basic w24 k3 | 14 / 16 |
//! | 0 | random | 92.4 % | convnext w16 k5 / mbconv w24 k3 | 16 / 16 |
//! | 1 | evolution | 93.5 % | mbconv w24 k3 / mbconv w8 k5 | 16 / 16 |
//! | 1 | random | 66.4 % | convnext w24 k5 / mbconv w4 k3 | 16 / 16 |
//! | mean | evolution 95.2 %, random 79.4 % | | | |
//! ```
//!
//! Evolution wins both seeds here, but read the log too: with three epochs per candidate the
//! score of one network varies by several points between trainings (`none w4 / mbconv w16 k5`
//! scored 45.1 % in evolution and 80.0 % when random search drew it again), which is why a
//! two-seed comparison proves little and why aging matters. Evolution bred
//! `mbconv w16 k3 / basic w24 k3` three times and it scored 94.8, 95.5 and 95.7 %: an
//! architecture that keeps its score on every retraining, the kind aging selects for. Distinct
//! networks below the budget are re-evaluations: the same network bred again (for instance by a
//! mutation of a kernel choice that its block ignores), trained afresh for an independent score.

// mimalloc with freed memory kept mapped (README, "allocator" tip): training steps free and
// reallocate the same large temporaries every iteration. One module, shared with the benches.
#[path = "../benches/common/alloc.rs"]
mod alloc;

use std::collections::HashSet;
use std::time::Instant;

use candle_core::{DType, Device, Module, ModuleT, Tensor, D};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use candle_tricks::blocks::{
    basic_block, convnext_block, mb_conv, BasicBlock, ConvNextBlock, ConvNextBlockConfig, MbConv,
    MbConvConfig, ResBlockConfig,
};
use candle_tricks::conv::{conv2d, Conv2d, Conv2dConfig};
use candle_tricks::data::{digits, Digits};
use candle_tricks::loss::{self, CrossEntropyConfig};
use candle_tricks::optim::{AdamW, AdamWConfig};
use candle_tricks::tune::nas::{
    random_search, regularized_evolution, ArchSpace, EvolutionConfig, Genome, NasHistory,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

const BUDGET: usize = 16;
const SEEDS: [u64; 2] = [0, 1];
const EPOCHS: usize = 3;
const BATCH: usize = 32;
const LR: f64 = 3e-3;
const BLOCKS: [&str; 5] = ["none", "conv", "basic", "mbconv", "convnext"];
const WIDTHS: [usize; 4] = [4, 8, 16, 24];
const KERNELS: [usize; 2] = [3, 5];

/// One stage's block.
enum Block {
    None,
    Conv(Conv2d),
    Basic(BasicBlock),
    MbConv(MbConv),
    ConvNext(ConvNextBlock),
}

impl Block {
    fn new(
        kind: usize,
        width: usize,
        kernel: usize,
        vb: VarBuilder,
    ) -> candle_tricks::Result<Self> {
        Ok(match BLOCKS[kind] {
            "none" => Block::None,
            "conv" => Block::Conv(conv2d(width, width, kernel, Conv2dConfig::default(), vb)?),
            "basic" => Block::Basic(basic_block(width, width, ResBlockConfig::default(), vb)?),
            "mbconv" => {
                let cfg = MbConvConfig {
                    expand_ratio: 3.0,
                    kernel_size: kernel,
                    ..MbConvConfig::default()
                };
                Block::MbConv(mb_conv(width, width, cfg, vb)?)
            }
            _ => {
                let cfg = ConvNextBlockConfig::default().with_kernel_size(kernel);
                Block::ConvNext(convnext_block(width, cfg, vb)?)
            }
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Block::None => Ok(x.clone()),
            Block::Conv(c) => c.forward(x)?.relu(),
            Block::Basic(b) => b.forward_t(x, train),
            Block::MbConv(b) => b.forward_t(x, train),
            Block::ConvNext(b) => b.forward_t(x, train),
        }
    }
}

/// stem 3×3 → stage 1 → 1×1 to the second width → 2×2 max pool → stage 2 → mean → linear.
struct Net {
    stem: Conv2d,
    stage1: Block,
    transition: Conv2d,
    stage2: Block,
    head: candle_nn::Linear,
}

impl Net {
    fn new(g: &[usize], vb: VarBuilder) -> candle_tricks::Result<Self> {
        let (w1, w2) = (WIDTHS[g[1]], WIDTHS[g[4]]);
        let cfg = Conv2dConfig::default();
        Ok(Self {
            stem: conv2d(1, w1, 3, cfg, vb.pp("stem"))?,
            stage1: Block::new(g[0], w1, KERNELS[g[2]], vb.pp("stage1"))?,
            transition: conv2d(w1, w2, 1, cfg, vb.pp("transition"))?,
            stage2: Block::new(g[3], w2, KERNELS[g[5]], vb.pp("stage2"))?,
            head: candle_nn::linear(w2, 10, vb.pp("head"))?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let h = self.stem.forward(x)?.relu()?;
        let h = self.stage1.forward_t(&h, train)?;
        let h = self.transition.forward(&h)?.relu()?.max_pool2d(2)?;
        let h = self.stage2.forward_t(&h, train)?;
        self.head.forward(&h.mean((2, 3))?)
    }
}

/// Trains the architecture `g` briefly and returns its validation accuracy (%).
fn evaluate(g: &Genome, train: &Digits, val: &Digits, seed: u64) -> candle_tricks::Result<f64> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let net = Net::new(
        g.choices(),
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
    )?;
    let mut opt = AdamW::new(varmap.all_vars(), AdamWConfig::default().with_lr(LR))?;
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let ce = CrossEntropyConfig::default();
    for _ in 0..EPOCHS {
        order.shuffle(&mut rng);
        for batch in order.chunks(BATCH) {
            let b = train.select(batch)?;
            let loss = loss::cross_entropy(&net.forward_t(b.images(), true)?, b.labels(), &ce)?;
            opt.backward_step(&loss)?;
        }
    }
    let pred = net.forward_t(val.images(), false)?.argmax(D::Minus1)?;
    let hits = pred
        .eq(val.labels())?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(100.0 * f64::from(hits) / val.len() as f64)
}

/// `block wWIDTH kKERNEL` per stage, e.g. `mbconv w24 k5 / none w8`: the architecture as
/// trained (a `none` or `basic` stage ignores its kernel choice, so different genomes can
/// describe the same network).
fn describe(g: &Genome) -> String {
    let c = g.choices();
    let stage = |b: usize, w: usize, k: usize| match BLOCKS[c[b]] {
        "none" => format!("none w{}", WIDTHS[c[w]]),
        "basic" => format!("basic w{} k3", WIDTHS[c[w]]),
        name => format!("{name} w{} k{}", WIDTHS[c[w]], KERNELS[c[k]]),
    };
    format!("{} / {}", stage(0, 1, 2), stage(3, 4, 5))
}

/// The best validation accuracy, its architecture, and how many distinct networks were trained.
fn summary(h: &NasHistory) -> (f64, String, usize) {
    let distinct: HashSet<String> = h.trials().iter().map(|t| describe(&t.genome)).collect();
    let (acc, arch) = h.best().map_or((f64::NAN, "all failed".into()), |t| {
        (t.outcome.score().unwrap_or(f64::NAN), describe(&t.genome))
    });
    (acc, arch, distinct.len())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Tiny tensors: candle's thread pool costs more in hand-offs than it saves here, so run
    // candle single-threaded unless the user chose otherwise (must happen before the first op).
    for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, "1");
        }
    }
    let data = digits(&Device::Cpu)?;
    let (train, val) = data.split(0.3, 0)?;
    let space = ArchSpace::new([
        ("stage1.block", BLOCKS.len()),
        ("stage1.width", WIDTHS.len()),
        ("stage1.kernel", KERNELS.len()),
        ("stage2.block", BLOCKS.len()),
        ("stage2.width", WIDTHS.len()),
        ("stage2.kernel", KERNELS.len()),
    ])?;
    println!(
        "{} architectures; {} train / {} validation digits; budget {BUDGET} per search",
        space.size().unwrap_or(0),
        train.len(),
        val.len()
    );
    let start = Instant::now();
    let mut rows = Vec::new();
    for seed in SEEDS {
        let mut calls = 0u64;
        let mut eval = |g: &Genome| {
            calls += 1;
            let acc = evaluate(g, &train, &val, seed * 1000 + calls);
            if let Ok(a) = acc {
                println!(
                    "  seed {seed} #{calls:2}: {a:5.1} %  {}  ({:.0} s)",
                    describe(g),
                    start.elapsed().as_secs_f32()
                );
            }
            acc
        };
        let cfg = EvolutionConfig::default()
            .with_population(6)
            .with_sample_size(3)
            .with_budget(BUDGET)
            .with_seed(seed);
        println!("seed {seed}: regularized evolution");
        let evo = regularized_evolution(&space, &cfg, &mut eval)?;
        println!("seed {seed}: random search");
        let rnd = random_search(&space, BUDGET, seed, &mut eval)?;
        rows.push((seed, summary(&evo), summary(&rnd)));
    }
    println!("\n| seed | search | best val. acc. | winning architecture | distinct networks |");
    println!("|---|---|---|---|---|");
    for (seed, evo, rnd) in &rows {
        for (name, (acc, arch, distinct)) in [("evolution", evo), ("random", rnd)] {
            println!("| {seed} | {name} | {acc:.1} % | {arch} | {distinct} / {BUDGET} |");
        }
    }
    let n = rows.len() as f64;
    println!(
        "| mean | evolution {:.1} %, random {:.1} % | | | |",
        rows.iter().map(|r| r.1 .0).sum::<f64>() / n,
        rows.iter().map(|r| r.2 .0).sum::<f64>() / n
    );
    println!("\n{:.0} s in all", start.elapsed().as_secs_f32());
    Ok(())
}
