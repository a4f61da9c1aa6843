//! Optimizers with fused in-place update kernels, parameter groups, NaN/Inf guards and exact
//! save/resume, with PyTorch's `torch.optim` semantics.
//!
//! [`Sgd`], [`Adam`], [`AdamW`], [`NAdam`], [`RAdam`], [`Adamax`], [`RmsProp`], [`Adagrad`],
//! [`Adadelta`], [`Lion`], [`Lamb`] and [`Adafactor`] implement
//! [`candle_nn::Optimizer`] (so `backward_step` works), [`OptimizerState`] and, where there is a
//! momentum coefficient, [`Momentum`]. [`Muon`] (2-D matrices; [`MuonWithAdamW`] pairs it with
//! AdamW for a whole model) and [`ScheduleFreeAdamW`] run on the same core; [`Lookahead`] and
//! [`Sam`] wrap any of them. Each step runs one fused in-place kernel per parameter:
//! one pass over the weights, the gradient and the state buffers, no temporaries, on candle's
//! CPU worker pool (parameters of 1M elements or more split in 64K-element chunks, smaller ones
//! spread whole over the threads in one parallel region per step). Before anything is touched, every
//! gradient of the step is checked for NaN/Inf ([`NonFinite`]: fail naming the parameter, or
//! skip the whole step and count it). Parameters without a gradient are skipped and their step
//! count does not advance, as in PyTorch. On CUDA/Metal the same update runs as candle tensor
//! ops on the parameters' device, with the state kept there ([`path`]: the one decision between
//! the two, and how to force the tensor path on the CPU). [`Lamb`]'s and [`Adafactor`]'s
//! updates need norms of the whole parameter first: their kernels run in two passes (reduce,
//! then update), Adafactor's row and column averages are reduced with candle ops before.
//!
//! [`Lbfgs`] is apart: it re-evaluates the objective within a step, so it takes a closure
//! instead of gradients and is not a `candle_nn::Optimizer`; it implements [`OptimizerState`].
//!
//! Every optimizer is [`Optim`] over its configuration type (`Sgd = Optim<SgdConfig>`, …): the
//! config is the [`Algorithm`] and the only copy of the hyper-parameters, learning rate included.
//!
//! # Shapes
//! Any parameter shape; f32, f16 or bf16 parameters (L-BFGS also f64). State buffers are f32, of the parameter's
//! size (host `Vec`s for CPU parameters, tensors on the device otherwise): SGD 0–1, Adam/AdamW 2 (3 with AMSGrad), NAdam/RAdam/Adamax 2,
//! RMSProp 1–3, Adagrad 1, Adadelta 2, Lion 1, LAMB 2, Muon 1, ScheduleFreeAdamW 2 (`z`,
//! `exp_avg_sq`); Adafactor 1 for 0-d and 1-D parameters, otherwise two small ones
//! (`[..., n, 1]` and `[..., 1, m]`); Lookahead one slow copy on top of its inner optimizer's,
//! SAM none of its own; plus for f16/bf16 parameters an f32 master copy. L-BFGS:
//! $2 \cdot$ `history_size` $+ 3$ f64 vectors of the total parameter count, on the host.
//!
//! # Tip
//! **Which optimizer when.**
//! - **AdamW** for transformers and most fine-tuning: per-coordinate step sizes make it robust to
//!   badly scaled gradients; weight decay ~0.01–0.1 on the matrices only.
//! - **SGD with (Nesterov) momentum** for CNNs trained from scratch with a good schedule: it
//!   often generalizes better than Adam on image classification, at the price of tuning the
//!   learning rate and schedule.
//! - **Lion** when optimizer memory matters: one state buffer instead of Adam's two (4 bytes per
//!   parameter less); use a learning rate 3–10× smaller than AdamW's and a larger weight decay.
//! - **Muon** for the hidden 2-D weight matrices of transformers (the NanoGPT speed-run record
//!   holder): it orthogonalises the momentum so every direction of a matrix update gets the same
//!   step size; never for embeddings, the output head, biases or norms — [`MuonWithAdamW`]
//!   hands those to AdamW.
//! - **Schedule-free AdamW** when the training length is unknown or the decay schedule is not
//!   worth tuning: a constant rate plus an average of the iterates matches a tuned cosine
//!   decay, and you can stop at any step. Call `eval()` before evaluating or saving (the
//!   weights to use are the average), `train()` before stepping again.
//! - **SAM** (wrapping any optimizer) when generalisation matters more than compute: it steps
//!   with the gradient at the worst point of a small ball, steering towards flat minima, at
//!   twice the cost per step (two forward/backward passes).
//! - **Lookahead** (wrapping any optimizer) for lower variance: every `k` steps the weights are
//!   pulled back towards a slow average, which makes the inner optimizer's settings less
//!   critical, for one extra copy of the weights.
//! - **Adagrad** for sparse features (embeddings, linear models on bag-of-words): rare
//!   coordinates keep large steps while frequent ones slow down; its steps only shrink, so it is a
//!   poor fit for long non-convex training. **RMSProp** fixes that shrinkage with a moving
//!   average (RNNs, reinforcement learning).
//! - **NAdam** when Adam's momentum overshoots: it takes the gradient step from where the
//!   momentum is about to carry the weights (Nesterov's look-ahead), which damps oscillation and
//!   often converges a little faster for the same learning rate; `decoupled_weight_decay` makes
//!   it "NAdamW". Same memory as Adam.
//! - **RAdam** as Adam without a warmup schedule: while the second-moment estimate rests on too
//!   few gradients ($\rho_t \le 5$, the first 5 steps with $\beta_2 = 0.999$) it takes plain
//!   momentum steps $\gamma \hat m_t$, then switches to Adam's step scaled by a rectification
//!   factor that grows from about 0.03 to 1, a warmup derived from the variance instead of
//!   tuned. Those first momentum steps are not normalized: with large raw gradients pick a
//!   learning rate that suits SGD for five steps (or clip).
//! - **Adamax** when gradients are sparse or come in rare large bursts (embeddings, noisy
//!   reinforcement-learning returns): its denominator is a decaying maximum
//!   $u = \max(\beta_2 u, |g|)$, so $|m| \le u$ and no step exceeds $\gamma / (1 - \beta_1^t)$.
//!   Adam's $m / \sqrt{v}$ is not bounded that way: a coordinate whose gradient arrives after a
//!   long silence gets $m / \sqrt{v} = (1 - \beta_1) / \sqrt{1 - \beta_2} \approx 3.2$ times
//!   $\gamma$ (default betas), Adamax $0.1\thinspace\gamma$. PyTorch adds $\epsilon$ to $|g|$
//!   inside the maximum, not to the denominator.
//! - **Adadelta** when no learning rate is to be tuned: the step is
//!   $\sqrt{a + \epsilon} / \sqrt{s + \epsilon}\thinspace g$, the RMS of past updates over the
//!   RMS of past gradients, so it has the units of the weights and rescaling the loss leaves it
//!   unchanged; $\gamma = 1$ by default. The price: steps start at about
//!   $\sqrt{\epsilon / (1 - \rho)}$, and it stalls in curved valleys (on Rosenbrock it stops
//!   about 0.1 short of the minimum where NAdam, RAdam and Adamax get within $10^{-2}$).
//! - **Adafactor** when optimizer memory is the limit (the T5 / PaLM choice): an $n \times m$
//!   matrix keeps $n + m$ second-moment values instead of Adam's $2nm$, and the step is relative
//!   to the weights' RMS and clipped, so it needs little tuning; no momentum, and a coarser
//!   estimate than Adam's.
//! - **LAMB** for very large batches (BERT with 32K–64K sequences per batch in 76 minutes):
//!   Adam's step rescaled per tensor by the trust ratio $\lVert\theta\rVert / \lVert u\rVert$,
//!   so every layer moves by the same fraction of its norm and one learning rate fits all
//!   layers; at ordinary batch sizes AdamW is as good and one pass cheaper.
//! - **L-BFGS** for small, deterministic, full-batch problems (a few physical parameters, style
//!   transfer, a small regression): curvature from the last steps, a line search instead of a
//!   tuned learning rate, tens of iterations where Adam needs thousands. Not for noisy
//!   minibatches: the curvature pairs then measure noise.
//!
//! **Decoupled weight decay is not L2.** Adam's `weight_decay` adds $\lambda\theta$ to the
//! gradient, which then goes through the adaptive normalization $m / \sqrt{v}$: coordinates with
//! large gradients are barely decayed. AdamW shrinks the weights directly,
//! $\theta \leftarrow (1 - \gamma\lambda)\theta$, the same for every coordinate (Loshchilov &
//! Hutter 2019); its decay and learning rate can be tuned separately, and it generalizes
//! better. With plain SGD the two coincide (up to the $\gamma$ scaling).
//!
//! **No decay on biases and norm weights** — [`ParamGroups::no_decay_for_bias_and_norm`]
//! builds the two usual groups from a [`candle_nn::VarMap`].
//!
//! **f32 master weights.** With f16/bf16 parameters, an update smaller than half the spacing of
//! the format vanishes on rounding ($\gamma = 10^{-4}$ next to a weight of 1 in bf16, spacing
//! $2^{-7}$), so training stalls. The optimizers keep their state *and* a master copy of each
//! half parameter in f32, update the master copy and round it into the parameter (if the stored
//! value is changed from outside, the master copy follows it). Cheaper still when memory allows:
//! keep the `Var`s in f32 and cast to half in the forward pass.
//!
//! # Example
//! Adam's L2 decay and AdamW's decoupled decay give different updates from the same gradient:
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_nn::Optimizer;
//! use candle_tricks::optim::{Adam, AdamConfig, AdamW, AdamWConfig, Lion, LionConfig, OptimizerState};
//! # fn main() -> candle_tricks::Result<()> {
//! let init = [2.0f32, -3.0];
//! let loss = |w: &Var| w.as_tensor().sum_all(); // gradient 1 everywhere
//! let (a, b) = (Var::new(&init, &Device::Cpu)?, Var::new(&init, &Device::Cpu)?);
//! let mut adam = Adam::new(vec![a.clone()], AdamConfig::default().with_lr(0.1).with_weight_decay(0.5))?;
//! let mut adamw = AdamW::new(vec![b.clone()], AdamWConfig::default().with_lr(0.1).with_weight_decay(0.5))?;
//! adam.backward_step(&loss(&a)?)?;
//! adamw.backward_step(&loss(&b)?)?;
//! let (a, b) = (a.as_tensor().to_vec1::<f32>()?, b.as_tensor().to_vec1::<f32>()?);
//! // Adam: g + wd * w went through m / sqrt(v): each coordinate moved by exactly lr, in the
//! // direction of sign(g + wd * w), however large the decay term.
//! assert!((a[0] - 1.9).abs() < 1e-5 && (a[1] + 2.9).abs() < 1e-5);
//! // AdamW: lr also shrank each weight by lr * wd = 5 %.
//! assert!((b[0] - (2.0 * 0.95 - 0.1)).abs() < 1e-5 && (b[1] - (-3.0 * 0.95 - 0.1)).abs() < 1e-5);
//!
//! // Lion keeps one buffer per parameter, Adam two.
//! let buffers = |sd: std::collections::HashMap<String, Tensor>| {
//!     sd.keys().filter(|k| !k.starts_with("__") && !k.ends_with(".step")).count()
//! };
//! let w = Var::new(&init, &Device::Cpu)?;
//! let mut lion = Lion::new(vec![w.clone()], LionConfig::default())?;
//! lion.backward_step(&loss(&w)?)?;
//! assert_eq!(buffers(lion.state_dict()?), 1);
//! assert_eq!(buffers(adam.state_dict()?), 2);
//! # Ok(())
//! # }
//! ```
//!
//! The four adaptive variants side by side: RAdam's first step is a plain momentum step
//! $\gamma g$ (Adam's would be $\gamma$ per coordinate), Adadelta's first step does not depend
//! on the gradient's scale, and Adamax's step stays within $\gamma / (1 - \beta_1^t)$ after a
//! gradient spike:
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_nn::Optimizer;
//! use candle_tricks::optim::{
//!     Adadelta, AdadeltaConfig, Adamax, AdamaxConfig, NAdam, NAdamConfig, RAdam, RAdamConfig,
//! };
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! // loss = sum(c * w): the gradient is c.
//! let linear = |w: &Var, c: &[f32]| -> candle_core::Result<Tensor> {
//!     (w.as_tensor() * Tensor::new(c, &dev)?)?.sum_all()
//! };
//! let w = Var::new(&[0.0f32, 0.0], &dev)?;
//! let mut radam = RAdam::new(vec![w.clone()], RAdamConfig::default().with_lr(0.1))?;
//! radam.backward_step(&linear(&w, &[0.5, 3.0])?)?;
//! let v = w.as_tensor().to_vec1::<f32>()?;
//! assert!((v[0] + 0.05).abs() < 1e-6 && (v[1] + 0.3).abs() < 1e-6);
//!
//! // Adadelta: gradients 1 and 1000 give the same first step (the unit-free update).
//! let w = Var::new(&[0.0f32, 0.0], &dev)?;
//! let mut adadelta = Adadelta::new(vec![w.clone()], AdadeltaConfig::default())?;
//! adadelta.backward_step(&linear(&w, &[1.0, 1000.0])?)?;
//! let v = w.as_tensor().to_vec1::<f32>()?;
//! assert!((v[0] / v[1] - 1.0).abs() < 1e-3, "{v:?}");
//!
//! // Adamax: 20 gradients of 1, then a spike of 10^4; the spike's step is at most lr / (1 - 0.9^21).
//! let w = Var::new(&[0.0f32], &dev)?;
//! let cfg = AdamaxConfig::default().with_lr(0.01);
//! let mut adamax = Adamax::new(vec![w.clone()], cfg)?;
//! for _ in 0..20 {
//!     adamax.backward_step(&linear(&w, &[1.0])?)?;
//! }
//! let before = w.as_tensor().to_vec1::<f32>()?[0];
//! adamax.backward_step(&linear(&w, &[1e4])?)?;
//! let step = (w.as_tensor().to_vec1::<f32>()?[0] - before).abs();
//! assert!(f64::from(step) <= 0.01 / (1.0 - 0.9f64.powi(21)) + 1e-6, "{step}");
//!
//! // NAdam runs on the same fused core, with the decoupled ("NAdamW") decay as an option.
//! let w = Var::new(&[1.0f32], &dev)?;
//! let cfg = NAdamConfig::default().with_weight_decay(0.1).with_decoupled_weight_decay(true);
//! let mut nadam = NAdam::new(vec![w.clone()], cfg)?;
//! nadam.backward_step(&linear(&w, &[0.0])?)?; // zero gradient: only the decay acts
//! assert!((w.as_tensor().to_vec1::<f32>()?[0] - (1.0 - 2e-3 * 0.1)).abs() < 1e-7);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Loshchilov, Hutter, *Decoupled Weight Decay Regularization*, ICLR 2019,
//!   <https://arxiv.org/abs/1711.05101>
//! - Kingma, Ba, *Adam: A Method for Stochastic Optimization*, 2014,
//!   <https://arxiv.org/abs/1412.6980>
//! - Chen et al., *Symbolic Discovery of Optimization Algorithms* (Lion), 2023,
//!   <https://arxiv.org/abs/2302.06675>
//! - Wilson et al., *The Marginal Value of Adaptive Gradient Methods in Machine Learning*, 2017,
//!   <https://arxiv.org/abs/1705.08292> (SGD vs adaptive methods on CNNs)
//! - Micikevicius et al., *Mixed Precision Training*, 2017, <https://arxiv.org/abs/1710.03740>
//!   (f32 master weights)
//! - Duchi, Hazan, Singer, *Adaptive Subgradient Methods*, JMLR 2011 (Adagrad)
//! - Dozat, *Incorporating Nesterov Momentum into Adam*, ICLR 2016 workshop (NAdam),
//!   <https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ>
//! - Liu et al., *On the Variance of the Adaptive Learning Rate and Beyond*, ICLR 2020 (RAdam),
//!   <https://arxiv.org/abs/1908.03265>
//! - Zeiler, *ADADELTA: An Adaptive Learning Rate Method*, 2012,
//!   <https://arxiv.org/abs/1212.5701>
//! - Jordan et al., *Muon: An optimizer for hidden layers in neural networks*, 2024,
//!   <https://kellerjordan.github.io/posts/muon/>; Liu et al., *Muon is Scalable for LLM
//!   Training*, 2025, <https://arxiv.org/abs/2502.16982>
//! - Defazio et al., *The Road Less Scheduled*, 2024, <https://arxiv.org/abs/2405.15682>
//! - Foret et al., *Sharpness-Aware Minimization for Efficiently Improving Generalization*,
//!   2020, <https://arxiv.org/abs/2010.01412>
//! - Zhang et al., *Lookahead Optimizer: k steps forward, 1 step back*, 2019,
//!   <https://arxiv.org/abs/1907.08610>
//! - Shazeer, Stern, *Adafactor: Adaptive Learning Rates with Sublinear Memory Cost*, ICML
//!   2018, <https://arxiv.org/abs/1804.04235>
//! - You et al., *Large Batch Optimization for Deep Learning: Training BERT in 76 minutes*,
//!   ICLR 2020 (LAMB), <https://arxiv.org/abs/1904.00962>
//! - Liu, Nocedal, *On the limited memory BFGS method for large scale optimization*,
//!   Mathematical Programming 45, 1989; Nocedal, Wright, *Numerical Optimization*, 2006, ch. 3
//!   and 7 (L-BFGS)

pub mod accumulate;
pub mod adadelta;
pub mod adafactor;
pub mod adagrad;
pub mod adam;
pub mod adamax;
mod checkpoint;
pub mod clip;
pub mod ema;
pub(crate) mod fused;
pub mod groups;
pub mod lamb;
pub mod lbfgs;
mod line_search;
pub mod lion;
pub mod lookahead;
pub mod muon;
pub mod muon_adamw;
pub mod nadam;
mod optimizer;
pub mod path;
pub mod radam;
pub mod rmsprop;
pub mod sam;
pub mod scaler;
pub mod schedule_free;
pub mod sgd;
mod slots;
pub mod state;
mod tensor_ops;

pub use accumulate::{GradAccumulator, GradAccumulatorConfig, GradReduction};
pub use adadelta::{Adadelta, AdadeltaConfig};
pub use adafactor::{Adafactor, AdafactorConfig};
pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig, AdamW, AdamWConfig};
pub use adamax::{Adamax, AdamaxConfig};
pub use clip::{agc, clip_grad_norm, clip_grad_norm_inf, clip_grad_value, grad_norm};
pub use ema::{Ema, EmaConfig, EmaWarmup};
pub use groups::{is_buffer_name, is_no_decay, ParamGroup, ParamGroups};
pub use lamb::{Lamb, LambConfig};
pub use lbfgs::{Lbfgs, LbfgsConfig, StrongWolfe};
pub use lion::{Lion, LionConfig};
pub use lookahead::{Lookahead, LookaheadConfig};
pub use muon::{AdjustLr, Muon, MuonConfig};
pub use muon_adamw::{is_muon_param, MuonWithAdamW};
pub use nadam::{NAdam, NAdamConfig};
pub use optimizer::{Algorithm, Optim};
pub use path::{update_path, UpdatePath};
pub use radam::{RAdam, RAdamConfig};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use sam::{Sam, SamConfig};
pub use scaler::{GradScaler, GradScalerConfig};
pub use schedule_free::{ScheduleFreeAdamW, ScheduleFreeAdamWConfig};
pub use sgd::{Sgd, SgdConfig};
pub use state::OptimizerState;

/// What an optimizer step does when a gradient holds NaN or ±Inf.
///
/// Either way the weights and the optimizer state are never touched by a non-finite value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonFinite {
    /// Return an [`crate::Error`] naming the optimizer and the offending parameter (default).
    #[default]
    Error,
    /// Skip the whole step (no parameter or state changes) and count it.
    Skip,
}

/// Optimizers whose momentum coefficient can change between steps — SGD's `momentum`, Adam's
/// and Lion's `beta1`, RMSProp's `momentum` — so a schedule such as one-cycle can cycle it.
pub trait Momentum {
    /// The current momentum coefficient (`momentum` or `beta1`).
    fn momentum(&self) -> f64;
    /// Sets the momentum coefficient used by the following steps, after checking it as the
    /// optimizer's constructor does (an error leaves the optimizer unchanged).
    fn set_momentum(&mut self, momentum: f64) -> crate::Result<()>;
}
