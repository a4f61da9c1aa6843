//! Compression: the quickstart's residual CNN in f32, quantized to int8 after training (PTQ) and
//! during training (QAT), and pruned to 50 / 80 / 90 % sparsity with fine-tuning — size,
//! latency and accuracy in one table.
//!
//! ```sh
//! cargo run --release --example compress
//! ```
//!
//! The recipe, in the order a deployment would follow it:
//! 1. **Train in f32 with batch norm** (the quickstart's `Net`, at one image size).
//! 2. **Fold each batch norm into its conv** ([`FrozenBatchNorm2d::from_batch_norm`] +
//!    [`fold_batch_norm`]): in evaluation a BN is a per-channel affine map, so
//!    `conv → BN` is one conv with a new weight and bias. The folded network computes the same
//!    function with fewer layers, and it is what gets quantized: quantizing the conv alone and
//!    then applying a float BN would waste the int8 range on a scale that BN undoes.
//! 3. **Post-training quantization**: wrap each conv and the head in a QAT layer in
//!    *calibration* mode, run a few hundred training images through it so the observers see
//!    the activation ranges, then convert every layer to an int8 one (per-channel symmetric
//!    int8 weights, per-tensor affine 7-bit activations, int32 accumulation).
//! 4. **Quantization-aware training**: the same wrapped network with fake-quantization on,
//!    fine-tuned for one epoch at a small learning rate, so the weights adapt to the rounding;
//!    then converted the same way.
//! 5. **Pruning**: from the trained f32 network, raise the global magnitude sparsity of all conv
//!    and linear weights gradually (Zhu & Gupta's cubic schedule) while fine-tuning, with the
//!    masks re-applied after every AdamW step, then fold and evaluate.
//!
//! What to expect (one run on two AVX2 cores, ~40 s in all; accuracy on 2048 validation images,
//! latency per batch of 32, the models timed in turn):
//!
//! | model | size | ratio | ms / batch | accuracy |
//! |---|---:|---:|---:|---:|
//! | f32 (BN folded) | 575.3 KB | 1.0× | 4.05 | 99.76 % |
//! | int8, post-training | 146.8 KB | 3.9× | 8.64 | 99.71 % |
//! | int8, quantization-aware | 146.8 KB | 3.9× | 7.43 | 99.66 % |
//! | pruned 50 % + fine-tuned | 433.6 KB | 1.3× | 4.56 | 99.80 % |
//! | pruned 80 % + fine-tuned | 175.5 KB | 3.3× | 4.75 | 98.88 % |
//! | pruned 90 % + fine-tuned | 89.5 KB | 6.4× | 4.02 | 93.55 % |
//!
//! Int8 is 3.9× smaller with accuracy within a tenth of a point of f32 (PTQ already; QAT
//! matters for smaller or harder models). It is *slower* here: each int8 conv quantizes its
//! input, unfolds it and dequantizes its output, passes over the activations that cost more
//! than the int8 product saves on layers this small (see `QuantizedConv2d`'s docs); the int8
//! *linear* layer is where the kernel wins (2–3× at batch 64, 1024 → 4096). Pruning to 50 %
//! costs nothing and 80 % under a point after fine-tuning; 90 % starts to hurt. The pruned
//! networks are no faster: their zeros sit in dense tensors, and the "size" column is what a
//! compressed-sparse-row store (f32 value + 16-bit column index per non-zero, plus row
//! offsets) would take — below 80 % sparsity that is no smaller than dense. To get speed from
//! pruning, prune whole channels (`compress::ln_structured`) and rebuild the layers smaller.
//!
//! Weight init is not seeded (candle's CPU generator cannot be), so the numbers vary by a point
//! or so between runs; data and batches are seeded.

// mimalloc with freed memory kept mapped (README, "allocator" tip): training steps free and
// reallocate the same large temporaries every iteration. One module, shared with the benches.
#[path = "../benches/common/alloc.rs"]
mod alloc;

use std::cell::RefCell;
use std::time::Instant;

use candle_core::{DType, Device, Module, ModuleT, Tensor, Var, D};
use candle_nn::{linear, Linear, Optimizer, VarBuilder, VarMap};
use candle_tricks::blocks::{basic_block, BasicBlock, ResBlockConfig};
use candle_tricks::compress::quantize::{
    QatConfig, QatConv2d, QatLinear, QatMode, QuantizedConv2d, QuantizedLinear,
};
use candle_tricks::compress::{GradualPruning, GradualPruningConfig, Pruner};
use candle_tricks::conv::{conv2d_no_bias, Conv2d, Conv2dConfig, Padding};
use candle_tricks::data::{shapes_batch, SHAPE_CLASSES};
use candle_tricks::norm::{batch_norm, BatchNorm, BatchNormConfig, Norm};
use candle_tricks::optim::{AdamW, AdamWConfig, ParamGroups};
use candle_tricks::pool::{PoolMode, SpatialPyramidPooling};
use candle_tricks::schedule::{CosineAnnealing, Scheduler, Warmup};
use candle_tricks::transfer::{fold_batch_norm, FrozenBatchNorm2d};
use rand::rngs::StdRng;
use rand::SeedableRng;

const SIZE: usize = 32;
const BATCH: usize = 32;
const STEPS: usize = 360;
const VALID_BATCHES: usize = 64; // 2048 images: one image is 0.05 points
const CALIBRATION_BATCHES: usize = 8;
const QAT_STEPS: usize = 48;
const PRUNE_STEPS: usize = 120;
const SPARSITIES: [f64; 3] = [0.5, 0.8, 0.9];
const PEAK_LR: f64 = 6e-3;
const SEED: u64 = 42;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The quickstart's network: strided stem conv + BN, three residual blocks, pyramid pooling,
/// linear head.
struct Net {
    stem: Conv2d,
    stem_bn: BatchNorm,
    layers: Vec<BasicBlock>,
    spp: SpatialPyramidPooling,
    head: Linear,
}

impl Net {
    fn new(vb: VarBuilder) -> candle_tricks::Result<Self> {
        let stem_cfg = Conv2dConfig::default()
            .with_stride(2)
            .with_padding(Padding::Explicit(1));
        let block = ResBlockConfig::default();
        let spp = SpatialPyramidPooling::new(vec![1, 2], PoolMode::Max)?;
        Ok(Self {
            stem: conv2d_no_bias(1, 16, 3, stem_cfg, vb.pp("stem"))?,
            stem_bn: batch_norm(16, BatchNormConfig::default(), vb.pp("stem_bn"))?,
            layers: vec![
                basic_block(16, 32, block.clone().with_stride(2), vb.pp("layers.0"))?,
                basic_block(32, 64, block.clone().with_stride(2), vb.pp("layers.1"))?,
                basic_block(64, 64, block, vb.pp("layers.2"))?,
            ],
            head: linear(spp.output_features(64), SHAPE_CLASSES.len(), vb.pp("head"))?,
            spp,
        })
    }

    /// The inference network with every BN folded into its conv.
    fn fold(&self) -> Res<Folded<Conv2d, Linear>> {
        let block = |b: &BasicBlock| -> Res<FoldedBlock<Conv2d>> {
            let fold = |(conv, norm): (&Conv2d, &Norm)| fold_conv(conv, norm);
            Ok(FoldedBlock {
                conv1: fold(b.conv1())?,
                conv2: fold(b.conv2())?,
                down: b.downsample().map(fold).transpose()?,
            })
        };
        Ok(Folded {
            stem: fold_conv(&self.stem, &Norm::Batch(self.stem_bn.clone()))?,
            blocks: self.layers.iter().map(block).collect::<Res<_>>()?,
            spp: self.spp.clone(),
            head: self.head.clone(),
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
        self.head.forward(&self.spp.forward(&xs)?)
    }
}

/// `conv → BN` (eval) as one conv with a bias.
fn fold_conv(conv: &Conv2d, norm: &Norm) -> Res<Conv2d> {
    let Norm::Batch(bn) = norm else {
        return Err("the quickstart model uses batch norm".into());
    };
    let frozen = FrozenBatchNorm2d::from_batch_norm(bn)?;
    let (w, b) = fold_batch_norm(conv.weight(), conv.bias(), &frozen)?;
    Ok(Conv2d::new(w, Some(b), conv.config())?)
}

/// The folded network, generic over the conv layer `C` and the linear layer `L`, so the same
/// forward runs in f32, with fake-quantization and in int8.
struct Folded<C, L> {
    stem: C,
    blocks: Vec<FoldedBlock<C>>,
    spp: SpatialPyramidPooling,
    head: L,
}

struct FoldedBlock<C> {
    conv1: C,
    conv2: C,
    down: Option<C>,
}

impl Folded<QatConv2d, QatLinear> {
    fn set_mode(&mut self, mode: QatMode) {
        self.for_each_mut(|c| c.set_mode(mode), |l| l.set_mode(mode));
    }

    /// The int8 network: weights quantized per channel, inputs with the observed ranges.
    fn to_int8(&self) -> Res<Folded<QuantizedConv2d, QuantizedLinear>> {
        self.convert(
            |c| Ok(QuantizedConv2d::from_qat(c)?),
            |l| Ok(QuantizedLinear::from_qat(l)?),
        )
    }
}

impl Folded<QuantizedConv2d, QuantizedLinear> {
    fn size_bytes(&self) -> usize {
        let convs: usize = self.convs().iter().map(|c| c.size_bytes()).sum();
        convs + self.head.size_bytes()
    }
}

/// Wraps every layer of the folded f32 network for QAT. With `trainable`, the weights become
/// fresh vars (returned) so an optimizer can fine-tune them; otherwise they are shared.
fn wrap_qat(
    folded: &Folded<Conv2d, Linear>,
    trainable: bool,
) -> Res<(Folded<QatConv2d, QatLinear>, Vec<Var>)> {
    let vars = RefCell::new(Vec::new());
    let var = |t: &Tensor| -> Res<Tensor> {
        if !trainable {
            return Ok(t.clone());
        }
        let v = Var::from_tensor(t)?;
        vars.borrow_mut().push(v.clone());
        Ok(v.as_tensor().clone())
    };
    let qat = folded.convert(
        |c| {
            let bias = c.bias().map(&var).transpose()?;
            let conv = Conv2d::new(var(c.weight())?, bias, c.config())?;
            Ok(QatConv2d::new(conv, QatConfig::default())?)
        },
        |l| {
            let bias = l.bias().map(&var).transpose()?;
            let linear = Linear::new(var(l.weight())?, bias);
            Ok(QatLinear::new(linear, QatConfig::default())?)
        },
    )?;
    Ok((qat, vars.into_inner()))
}

impl<C: Module, L: Module> Module for Folded<C, L> {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mut xs = self.stem.forward(xs)?.relu()?;
        for b in &self.blocks {
            let h = b.conv2.forward(&b.conv1.forward(&xs)?.relu()?)?;
            let shortcut = match &b.down {
                Some(down) => down.forward(&xs)?,
                None => xs,
            };
            xs = (h + shortcut)?.relu()?;
        }
        self.head.forward(&self.spp.forward(&xs)?)
    }
}

impl<C, L> Folded<C, L> {
    /// The same network with every conv and the head converted.
    fn convert<C2, L2>(
        &self,
        mut conv: impl FnMut(&C) -> Res<C2>,
        head: impl FnOnce(&L) -> Res<L2>,
    ) -> Res<Folded<C2, L2>> {
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            blocks.push(FoldedBlock {
                conv1: conv(&b.conv1)?,
                conv2: conv(&b.conv2)?,
                down: b.down.as_ref().map(&mut conv).transpose()?,
            });
        }
        Ok(Folded {
            stem: conv(&self.stem)?,
            blocks,
            spp: self.spp.clone(),
            head: head(&self.head)?,
        })
    }

    /// Every layer, the head last, as one of the two kinds.
    fn for_each_mut(&mut self, mut conv: impl FnMut(&mut C), head: impl FnOnce(&mut L)) {
        conv(&mut self.stem);
        for b in &mut self.blocks {
            conv(&mut b.conv1);
            conv(&mut b.conv2);
            b.down.iter_mut().for_each(&mut conv);
        }
        head(&mut self.head);
    }

    fn convs(&self) -> Vec<&C> {
        let mut all = vec![&self.stem];
        for b in &self.blocks {
            all.extend([&b.conv1, &b.conv2]);
            all.extend(&b.down);
        }
        all
    }
}

/// Accuracy in percent of `model` on the validation batches.
fn accuracy(model: &impl Module, valid: &[(Tensor, Tensor)]) -> Res<f64> {
    let mut hits = 0f64;
    for (x, y) in valid {
        let pred = model.forward(x)?.argmax(D::Minus1)?;
        hits += pred
            .eq(y)?
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    Ok(100.0 * hits / (valid.len() * BATCH) as f64)
}

/// Milliseconds per validation batch of each model: passes over the validation set taken in
/// turn, model after model, keeping each model's best, so that a busy machine slows all of
/// them alike.
fn latencies(models: &[&dyn Module], valid: &[(Tensor, Tensor)]) -> Res<Vec<f64>> {
    let mut best = vec![f64::INFINITY; models.len()];
    for _ in 0..5 {
        for (model, best) in models.iter().zip(&mut best) {
            let t = Instant::now();
            for (x, _) in valid {
                model.forward(x)?;
            }
            *best = best.min(t.elapsed().as_secs_f64() * 1e3 / valid.len() as f64);
        }
    }
    Ok(best)
}

/// `steps` AdamW steps on fresh batches with a warmup + cosine rate; `after_step` runs after each
/// optimizer step (the pruner re-applies its masks there).
fn train(
    model: &impl ModuleT,
    mut opt: AdamW,
    steps: usize,
    peak_lr: f64,
    rng: &mut StdRng,
    mut after_step: impl FnMut(usize) -> Res<()>,
) -> Res<()> {
    let warmup = (steps / 10).max(1);
    let cosine = CosineAnnealing::new(peak_lr, steps - warmup)?.with_eta_min(peak_lr / 100.0)?;
    let mut sched = Scheduler::new(Warmup::new(cosine, warmup, 0.0)?);
    for step in 0..steps {
        let (x, y) = shapes_batch(rng, BATCH, SIZE, &Device::Cpu)?;
        let loss = candle_nn::loss::cross_entropy(&model.forward_t(&x, true)?, &y)?;
        sched.step(&mut opt)?;
        opt.backward_step(&loss)?;
        after_step(step)?;
    }
    Ok(())
}

/// Bytes of the f32 tensors.
fn f32_bytes(tensors: &[&Tensor]) -> usize {
    tensors.iter().map(|t| t.elem_count() * 4).sum()
}

/// Bytes of a compressed-sparse-row store of the weights: f32 value + u16 column index per
/// non-zero, plus a u32 row offset per output channel.
fn sparse_bytes(tensors: &[&Tensor]) -> Res<usize> {
    let mut bytes = 0;
    for t in tensors {
        let nonzero = t
            .ne(0f32)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()? as usize;
        bytes += nonzero * 6 + (t.dim(0)? + 1) * 4;
    }
    Ok(bytes)
}

struct Row {
    method: String,
    model: Box<dyn Module>,
    bytes: usize,
    acc: f64,
}

fn main() -> Res<()> {
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(SEED);
    let valid: Vec<(Tensor, Tensor)> = (0..VALID_BATCHES)
        .map(|_| shapes_batch(&mut rng, BATCH, SIZE, &dev))
        .collect::<candle_tricks::Result<_>>()?;

    // 1. Train in f32.
    let varmap = VarMap::new();
    let net = Net::new(VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let t = Instant::now();
    let groups = ParamGroups::no_decay_for_bias_and_norm(&varmap, 0.01);
    let opt = AdamW::with_groups(groups, AdamWConfig::default().with_lr(PEAK_LR))?;
    train(&net, opt, STEPS, PEAK_LR, &mut rng, |_| Ok(()))?;
    println!(
        "f32 training: {STEPS} steps in {:.1}s",
        t.elapsed().as_secs_f32()
    );

    // 2. Fold BN: same function, fewer layers.
    let folded = net.fold()?;
    let (x, _) = &valid[0];
    let gap = (net.forward_t(x, false)? - folded.forward(x)?)?
        .abs()?
        .max_all()?;
    println!(
        "folded BN: largest logit change {:.1e}",
        gap.to_scalar::<f32>()?
    );
    let f32_acc = accuracy(&folded, &valid)?;
    let mut weights: Vec<&Tensor> = folded.convs().iter().map(|c| c.weight()).collect();
    weights.push(folded.head.weight());
    let mut all: Vec<&Tensor> = weights.clone();
    all.extend(folded.convs().iter().filter_map(|c| c.bias()));
    all.extend(folded.head.bias());
    let f32_size = f32_bytes(&all);
    let mut rows = vec![Row {
        method: "f32 (BN folded)".into(),
        bytes: f32_size,
        acc: f32_acc,
        model: Box::new(net.fold()?), // the same network; `folded` is wrapped below
    }];

    // 3. Post-training quantization: observe the activation ranges on a few training batches.
    let (mut calibrated, _) = wrap_qat(&folded, false)?;
    calibrated.set_mode(QatMode::Calibrate);
    for _ in 0..CALIBRATION_BATCHES {
        calibrated.forward(&shapes_batch(&mut rng, BATCH, SIZE, &dev)?.0)?;
    }
    let ptq = calibrated.to_int8()?;
    rows.push(Row {
        method: "int8, post-training".into(),
        bytes: ptq.size_bytes(),
        acc: accuracy(&ptq, &valid)?,
        model: Box::new(ptq),
    });

    // 4. Quantization-aware training: fine-tune through the fake-quantizers, then convert.
    let (mut qat, vars) = wrap_qat(&folded, true)?;
    qat.set_mode(QatMode::Train);
    let lr = PEAK_LR / 20.0;
    let opt = AdamW::new(vars, AdamWConfig::default().with_lr(lr))?;
    let t = Instant::now();
    train(&qat, opt, QAT_STEPS, lr, &mut rng, |_| Ok(()))?;
    println!(
        "QAT: {QAT_STEPS} steps in {:.1}s",
        t.elapsed().as_secs_f32()
    );
    let qat = qat.to_int8()?;
    rows.push(Row {
        method: "int8, quantization-aware".into(),
        bytes: qat.size_bytes(),
        acc: accuracy(&qat, &valid)?,
        model: Box::new(qat),
    });

    // 5. Pruning: each sparsity from a copy of the trained weights.
    for &sparsity in &SPARSITIES {
        let copy = VarMap::new();
        let pruned = Net::new(VarBuilder::from_varmap(&copy, DType::F32, &dev))?;
        for (name, var) in copy.data().lock().expect("varmap lock").iter() {
            let trained = varmap.data().lock().expect("varmap lock")[name]
                .as_tensor()
                .clone();
            var.set(&trained)?;
        }
        let prunable: Vec<(String, Var)> = copy
            .data()
            .lock()
            .expect("varmap lock")
            .iter()
            .filter(|(n, v)| n.ends_with("weight") && v.rank() > 1)
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let mut pruner = Pruner::new(prunable)?;
        let schedule = GradualPruning::new(
            GradualPruningConfig::default()
                .with_final_sparsity(sparsity)
                .with_num_updates(8)
                .with_frequency(PRUNE_STEPS / 12),
        )?;
        let groups = ParamGroups::no_decay_for_bias_and_norm(&copy, 0.01);
        let opt = AdamW::with_groups(groups, AdamWConfig::default().with_lr(PEAK_LR / 10.0))?;
        train(
            &pruned,
            opt,
            PRUNE_STEPS,
            PEAK_LR / 10.0,
            &mut rng,
            |step| {
                if let Some(s) = schedule.update_at(step) {
                    pruner.global_unstructured(s)?;
                }
                Ok(pruner.apply()?)
            },
        )?;
        let report = pruner.sparsity()?;
        let folded = pruned.fold()?;
        let mut weights: Vec<&Tensor> = folded.convs().iter().map(|c| c.weight()).collect();
        weights.push(folded.head.weight());
        let mut biases: Vec<&Tensor> = folded.convs().iter().filter_map(|c| c.bias()).collect();
        biases.extend(folded.head.bias());
        rows.push(Row {
            method: format!("pruned {:.0} % + fine-tuned", 100.0 * report.fraction()),
            bytes: sparse_bytes(&weights)? + f32_bytes(&biases),
            acc: accuracy(&folded, &valid)?,
            model: Box::new(folded),
        });
    }

    let models: Vec<&dyn Module> = rows.iter().map(|r| r.model.as_ref()).collect();
    let ms = latencies(&models, &valid)?;
    println!(
        "\n{:<28} {:>10} {:>7} {:>12} {:>9}",
        "model", "size", "ratio", "ms / batch", "accuracy"
    );
    for (r, ms) in rows.iter().zip(ms) {
        println!(
            "{:<28} {:>7.1} KB {:>6.1}× {:>12.2} {:>8.2}%",
            r.method,
            r.bytes as f64 / 1024.0,
            f32_size as f64 / r.bytes as f64,
            ms,
            r.acc
        );
    }
    Ok(())
}
