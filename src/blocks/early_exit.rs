//! Dynamic depth: a stack of stages, each followed by an exit head (a classifier), where at
//! inference every sample leaves at the first head confident enough about it — easy inputs pay
//! for a few stages, hard ones for the whole network (BranchyNet, MSDNet, Shallow-Deep Networks).
//!
//! # Shapes
//! - input `(B, …)` (whatever the first stage takes); stage `i` maps its input to stage `i+1`'s,
//!   keeping the batch at dim 0 (`(b, …)` → `(b, …)`); every head maps its stage's output to
//!   logits `(b, K)`, the same `K` for all heads.
//! - [`EarlyExit::forward_early`]: logits `(B, K)` (row `j` from the head where sample `j`
//!   exited), the exit index per sample (0-based; the depth used is index + 1) and the rows each
//!   stage processed. Samples that exit are removed from the batch (`index_select` of the
//!   remaining rows), so later stages really run on fewer rows.
//! - [`EarlyExit::forward_all`]: one `(B, K)` logits tensor per exit, every sample through every
//!   stage, for training with [`early_exit_loss`].
//!
//! # Tip
//! **Adapt the compute to the difficulty of each input.** Most inputs of a classification task
//! are easy and a shallow network already classifies them confidently; only a few need the full
//! depth. Attach a small classifier after some stages and stop a sample as soon as one of them
//! is confident: its max softmax probability $\max_k p_k$ (or, with
//! [`ExitCriterion::Entropy`], $1 - H(p)/\ln K$, one minus the normalised entropy) exceeds the
//! threshold $\tau$. The expected cost becomes $\sum_i q_i\thinspace c_{\le i}$ (fraction $q_i$ of
//! samples leaving at exit $i$, cost $c_{\le i}$ of the stages up to it) instead of the full cost;
//! BranchyNet reports up to about 5× faster inference (its LeNet; less for deeper networks) and
//! MSDNet several-fold fewer FLOPs on average at about the same accuracy.
//! $\tau$ trades accuracy for speed: calibrate it on held-out data with [`exit_confidence`]
//! (pick the lowest $\tau$ whose early exits keep the accuracy you need); $\tau = 1$ disables
//! early exits. Train all exits jointly on a weighted sum of their losses,
//! $\mathcal{L} = \sum_i w_i\thinspace\mathrm{CE}(z_i, y)$ ([`early_exit_loss`]), so the early
//! layers learn features that are linearly decodable early (MSDNet adds dense multi-scale
//! connections so that this does not hurt the last exit). The trade-off: the heads cost parameters
//! and compute for samples that do not exit there, the batch shrinks as it goes (less parallelism),
//! and the per-sample latency varies with the input.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_nn::Linear;
//! use candle_tricks::blocks::{EarlyExit, EarlyExitConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! // Three stages that double the features, heads that read them as two logits.
//! let eye = Tensor::eye(2, candle_core::DType::F32, &dev)?;
//! let stage = Linear::new((&eye * 2.0)?, None);
//! let head = Linear::new(eye.clone(), None);
//! let net = EarlyExit::new(vec![stage; 3], vec![head; 3], EarlyExitConfig::default())?;
//! // An easy sample (a clear margin) and a hard one (almost a tie).
//! let x = Tensor::new(&[[2.0f32, 0.0], [0.2, 0.0]], &dev)?;
//! let out = net.forward_early(&x)?;
//! assert_eq!(out.exits, vec![0, 2]); // softmax(4, 0) = 0.98 > 0.9 exits at once
//! assert_eq!(out.depths(), vec![1, 3]);
//! assert_eq!(out.rows_per_stage, vec![2, 1, 1]); // the easy one skipped two stages
//! // Threshold 1: every sample uses the full depth.
//! let full = EarlyExit::new(
//!     net.stages().to_vec(),
//!     net.heads().to_vec(),
//!     EarlyExitConfig::default().with_threshold(1.0),
//! )?;
//! assert_eq!(full.forward_early(&x)?.depths(), vec![3, 3]);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Teerapittayanon, McDanel, Kung, *BranchyNet: Fast Inference via Early Exiting from Deep
//!   Neural Networks*, 2016, <https://arxiv.org/abs/1709.01686>
//! - Huang et al., *Multi-Scale Dense Networks for Resource Efficient Image Classification*
//!   (MSDNet), 2018, <https://arxiv.org/abs/1703.09844>
//! - Kaya, Hong, Dumitras, *Shallow-Deep Networks: Understanding and Mitigating Network
//!   Overthinking*, 2019, <https://arxiv.org/abs/1810.07052>

use crate::{Error, Result};
use candle_core::{DType, ModuleT, Tensor};

const BLOCK: &str = "EarlyExit";
const LOSS: &str = "early_exit_loss";

/// How an exit head's confidence in a sample is measured (higher = more confident, in [0, 1]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCriterion {
    /// The largest softmax probability $\max_k p_k$.
    MaxProb,
    /// One minus the normalised entropy, $1 - H(p)/\ln K$ (BranchyNet's criterion, rescaled so
    /// that a larger value means more confident): 1 for a one-hot $p$, 0 for a uniform one.
    Entropy,
}

/// Settings of an [`EarlyExit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyExitConfig {
    /// A sample exits at the first head whose confidence is strictly greater than this, in
    /// (0, 1]; 1 disables early exits (every sample uses the full depth). Default 0.9.
    pub threshold: f64,
    /// The confidence measure. Default [`ExitCriterion::MaxProb`].
    pub criterion: ExitCriterion,
}

impl Default for EarlyExitConfig {
    fn default() -> Self {
        Self {
            threshold: 0.9,
            criterion: ExitCriterion::MaxProb,
        }
    }
}

impl EarlyExitConfig {
    /// Sets the threshold.
    pub fn with_threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }

    /// Sets the confidence measure.
    pub fn with_criterion(mut self, criterion: ExitCriterion) -> Self {
        self.criterion = criterion;
        self
    }

    /// Checks that the threshold lies in (0, 1] (NaN rejected).
    pub fn validate(&self) -> Result<()> {
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(Error::config(
                BLOCK,
                format!("threshold must be in (0, 1], got {}", self.threshold),
            ));
        }
        Ok(())
    }
}

/// What [`EarlyExit::forward_early`] returns.
#[derive(Debug, Clone)]
pub struct EarlyExitOutput {
    /// `(B, K)`: row `j` holds the logits of the head where sample `j` exited.
    pub logits: Tensor,
    /// The exit index (0-based) of every sample, in batch order.
    pub exits: Vec<usize>,
    /// How many rows stage `i` processed (0 for stages no sample reached).
    pub rows_per_stage: Vec<usize>,
}

impl EarlyExitOutput {
    /// The depth used by every sample: the number of stages it went through (exit index + 1).
    pub fn depths(&self) -> Vec<usize> {
        self.exits.iter().map(|e| e + 1).collect()
    }

    /// How many samples left at each of the `rows_per_stage.len()` exits.
    pub fn exit_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.rows_per_stage.len()];
        for &e in &self.exits {
            if let Some(c) = counts.get_mut(e) {
                *c += 1;
            }
        }
        counts
    }
}

fn check_logits(block: &'static str, what: &'static str, z: &Tensor, rows: usize) -> Result<()> {
    if z.rank() != 2 || z.dims()[0] != rows || z.dims()[1] == 0 {
        return Err(Error::shape(
            block,
            what,
            format!("({rows}, K) with K > 0"),
            z.shape().clone(),
        ));
    }
    if !z.dtype().is_float() {
        return Err(Error::unsupported_dtype(
            block,
            what,
            "a float dtype",
            z.dtype(),
        ));
    }
    Ok(())
}

/// The confidence of every row of `logits: (b, K)` under `criterion`, in [0, 1] (computed in
/// f64, stable for any finite logits; NaN logits give NaN, which never passes a threshold).
/// Useful to calibrate [`EarlyExitConfig::threshold`] on held-out data.
///
/// Errors (naming `EarlyExit`) on logits that are not `(b, K)` float with `K > 0`.
pub fn exit_confidence(logits: &Tensor, criterion: ExitCriterion) -> Result<Vec<f64>> {
    let rows = logits.dims().first().copied().unwrap_or(0);
    check_logits(BLOCK, "logits", logits, rows)?;
    let z = logits.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    Ok(z.iter()
        .map(|row| {
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row.iter().map(|&v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            match criterion {
                ExitCriterion::MaxProb => 1.0 / s,
                ExitCriterion::Entropy => {
                    let k = row.len();
                    if k == 1 {
                        return 1.0;
                    }
                    // H = ln s - sum p_k (z_k - m), with p_k = e_k / s.
                    let h = s.ln()
                        - e.iter()
                            .zip(row)
                            .map(|(ek, &zk)| ek / s * (zk - m))
                            .sum::<f64>();
                    (1.0 - h / (k as f64).ln()).clamp(0.0, 1.0)
                }
            }
        })
        .collect())
}

/// A stack of stages with an exit head after each. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct EarlyExit<S, H> {
    stages: Vec<S>,
    heads: Vec<H>,
    cfg: EarlyExitConfig,
}

impl<S, H> EarlyExit<S, H> {
    /// Pairs stage `i` with head `i`. Errors (naming `EarlyExit`) when there are no stages, the
    /// numbers of stages and heads differ, or `cfg` is invalid.
    pub fn new(stages: Vec<S>, heads: Vec<H>, cfg: EarlyExitConfig) -> Result<Self> {
        cfg.validate()?;
        if stages.is_empty() || stages.len() != heads.len() {
            return Err(Error::config(
                BLOCK,
                format!(
                    "needs as many heads as stages, at least one; got {} stages and {} heads",
                    stages.len(),
                    heads.len()
                ),
            ));
        }
        Ok(Self { stages, heads, cfg })
    }

    /// The stages.
    pub fn stages(&self) -> &[S] {
        &self.stages
    }

    /// The exit heads.
    pub fn heads(&self) -> &[H] {
        &self.heads
    }

    /// The number of exits (= stages).
    pub fn num_exits(&self) -> usize {
        self.stages.len()
    }

    /// The configuration.
    pub fn config(&self) -> &EarlyExitConfig {
        &self.cfg
    }
}

impl<S: ModuleT, H: ModuleT> EarlyExit<S, H> {
    /// Every sample through every stage and every head (with the `train` flag passed on): one
    /// `(B, K)` logits tensor per exit, shallowest first. Feed them to [`early_exit_loss`] when
    /// training, or to [`exit_confidence`] to calibrate the threshold.
    ///
    /// Errors (naming `EarlyExit`) on an empty batch, a stage that changes the batch size, or
    /// heads whose logits are not `(B, K)` with the same `K`.
    pub fn forward_all(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let b = batch_of(x)?;
        let mut h = x.clone();
        let mut out = Vec::with_capacity(self.stages.len());
        for (stage, head) in self.stages.iter().zip(&self.heads) {
            h = stage.forward_t(&h, train)?;
            check_stage(&h, b)?;
            let z = head.forward_t(&h, train)?;
            check_logits(BLOCK, "head logits", &z, b)?;
            check_classes(&out, &z)?;
            out.push(z);
        }
        Ok(out)
    }

    /// Inference with per-sample early exits (modules run with `train = false`): each sample
    /// stops at the first head whose confidence is > the threshold, or at the last head. The
    /// samples that exit are removed from the batch before the next stage.
    ///
    /// Errors (naming `EarlyExit`) on an empty batch, a stage that changes the batch size, or
    /// heads whose logits are not `(b, K)` with the same `K`.
    pub fn forward_early(&self, x: &Tensor) -> Result<EarlyExitOutput> {
        let b = batch_of(x)?;
        let n = self.stages.len();
        let dev = x.device();
        let never = self.cfg.threshold >= 1.0;
        let mut h = x.clone();
        let mut alive: Vec<usize> = (0..b).collect();
        let mut exits = vec![n - 1; b];
        let mut rows_per_stage = vec![0; n];
        let mut order: Vec<usize> = Vec::with_capacity(b);
        let mut chunks: Vec<Tensor> = Vec::with_capacity(n);
        let mut first: Option<Tensor> = None;
        for (i, (stage, head)) in self.stages.iter().zip(&self.heads).enumerate() {
            rows_per_stage[i] = alive.len();
            h = stage.forward_t(&h, false)?;
            check_stage(&h, alive.len())?;
            let z = head.forward_t(&h, false)?;
            check_logits(BLOCK, "head logits", &z, alive.len())?;
            if let Some(f) = &first {
                check_classes(std::slice::from_ref(f), &z)?;
            } else {
                first = Some(z.clone());
            }
            if i + 1 == n {
                order.extend(&alive);
                chunks.push(z);
                break;
            }
            let (leave, stay): (Vec<usize>, Vec<usize>) = if never {
                (Vec::new(), (0..alive.len()).collect())
            } else {
                let conf = exit_confidence(&z, self.cfg.criterion)?;
                (0..alive.len()).partition(|&r| conf[r] > self.cfg.threshold)
            };
            if leave.is_empty() {
                continue;
            }
            for &r in &leave {
                exits[alive[r]] = i;
                order.push(alive[r]);
            }
            if stay.is_empty() {
                chunks.push(z);
                break;
            }
            chunks.push(z.index_select(&index(&leave, dev)?, 0)?);
            let stay_idx = index(&stay, dev)?;
            h = h.index_select(&stay_idx, 0)?;
            alive = stay.iter().map(|&r| alive[r]).collect();
        }
        let stacked = Tensor::cat(&chunks, 0)?;
        // `order[j]` is the sample in row j of `stacked`; invert it to restore batch order.
        let mut pos = vec![0u32; b];
        for (row, &sample) in order.iter().enumerate() {
            pos[sample] = row as u32;
        }
        let logits = stacked.index_select(&Tensor::new(pos, dev)?, 0)?;
        Ok(EarlyExitOutput {
            logits,
            exits,
            rows_per_stage,
        })
    }
}

fn batch_of(x: &Tensor) -> Result<usize> {
    match x.dims().first() {
        Some(&b) if b > 0 => Ok(b),
        _ => Err(Error::shape(
            BLOCK,
            "input",
            "(B, …) with B > 0",
            x.shape().clone(),
        )),
    }
}

fn check_stage(h: &Tensor, rows: usize) -> Result<()> {
    if h.dims().first() != Some(&rows) {
        return Err(Error::shape(
            BLOCK,
            "stage output",
            format!("({rows}, …) (the batch kept at dim 0)"),
            h.shape().clone(),
        ));
    }
    Ok(())
}

fn check_classes(previous: &[Tensor], z: &Tensor) -> Result<()> {
    if let Some(p) = previous.first() {
        if p.dims()[1] != z.dims()[1] {
            return Err(Error::shape(
                BLOCK,
                "head logits",
                format!("(b, {}) like the first head's", p.dims()[1]),
                z.shape().clone(),
            ));
        }
    }
    Ok(())
}

fn index(rows: &[usize], dev: &candle_core::Device) -> Result<Tensor> {
    let v: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    Ok(Tensor::new(v, dev)?)
}

/// The joint training loss of all exits: $\sum_i w_i\thinspace\mathrm{CE}(z_i, y)$, the mean
/// cross-entropy of each exit's logits `exits[i]: (B, K)` against the class indices
/// `targets: (B)` (u8, u32 or i64), weighted by `weights[i]` (BranchyNet weights every exit, and
/// often the early ones more; all ones is MSDNet's choice). Differentiable.
///
/// Errors (naming `early_exit_loss`) on an empty list, a number of weights different from the
/// number of exits, a negative or non-finite weight, logits that are not `(B, K)` or targets
/// that are not `(B)` integers.
pub fn early_exit_loss(exits: &[Tensor], targets: &Tensor, weights: &[f64]) -> Result<Tensor> {
    if exits.is_empty() || exits.len() != weights.len() {
        return Err(Error::config(
            LOSS,
            format!(
                "needs one weight per exit, at least one exit; got {} exits and {} weights",
                exits.len(),
                weights.len()
            ),
        ));
    }
    if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
        return Err(Error::config(
            LOSS,
            format!("weights must be finite and >= 0, got {w}"),
        ));
    }
    let b = exits[0].dims().first().copied().unwrap_or(0);
    if targets.rank() != 1 || targets.dims()[0] != b || b == 0 || targets.dtype().is_float() {
        return Err(Error::shape(
            LOSS,
            "targets",
            format!("({b}) class indices (u8, u32 or i64), B > 0"),
            targets.shape().clone(),
        ));
    }
    for z in exits {
        check_logits(LOSS, "exit logits", z, b)?;
    }
    // An index outside [0, K) would fail inside candle's gather with a bare candle error (or,
    // for a negative i64, wrap around): check it here, naming the loss.
    let k = exits[0].dims()[1];
    let t = targets.to_dtype(DType::F64)?;
    let (lo, hi) = (
        t.min_all()?.to_scalar::<f64>()?,
        t.max_all()?.to_scalar::<f64>()?,
    );
    if lo < 0.0 || hi >= k as f64 {
        return Err(Error::config(
            LOSS,
            format!("targets must be class indices in [0, {k}), got values in [{lo}, {hi}]"),
        ));
    }
    let mut total: Option<Tensor> = None;
    for (z, &w) in exits.iter().zip(weights) {
        let l = candle_nn::loss::cross_entropy(z, targets)?.affine(w, 0.0)?;
        total = Some(match total {
            Some(t) => (t + l)?,
            None => l,
        });
    }
    total.ok_or_else(|| Error::config(LOSS, "no exits"))
}
