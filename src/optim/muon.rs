//! Muon (Jordan et al. 2024): momentum whose update is orthogonalised by a Newton–Schulz
//! iteration before it is applied, for 2-D weight matrices; PyTorch's `torch.optim.Muon`.
//! [`MuonWithAdamW`](super::MuonWithAdamW) pairs it with AdamW for the other parameters.
//!
//! # Update
//! With gradient $G_t$, momentum $\mu$, learning rate $\gamma$, weight decay $\lambda$, for a
//! parameter of shape $(A, B)$:
//!
//! $$M_t = \mu M_{t-1} + (1 - \mu) G_t, \qquad
//!   U_t = (1 - \mu) G_t + \mu M_t \text{ (Nesterov) or } M_t$$
//! $$O_t = S_k(U_t), \qquad
//!   \theta_t = (1 - \gamma\lambda)\thinspace\theta_{t-1} - s(A, B)\thinspace\gamma\thinspace O_t$$
//!
//! $S_k$, the Newton–Schulz map: $X_0 = U / \max(\lVert U \rVert_F, \epsilon)$ (transposed first when
//! $A > B$, so the Gram matrix is the smaller one), then $k$ times
//! $X \leftarrow a X + (b\thinspace X X^T + c\thinspace (X X^T)^2) X$ with the quintic
//! coefficients $(a, b, c) = (3.4445, -4.7750, 2.0315)$: every singular value of $U$ is pushed
//! towards 1 (to about 0.7–1.2) while the singular vectors stay. The scale $s$
//! (`adjust_lr_fn`): `Original` $\sqrt{\max(1, A / B)}$, `MatchRmsAdamW`
//! $0.2 \sqrt{\max(A, B)}$, `SpectralUnclamped` $\sqrt{A / B}$.
//!
//! The iteration runs as candle matrix products on the parameter's device (on the CPU the
//! `gemm` crate through candle), in f32: PyTorch runs it in bf16, so this matches a PyTorch
//! run whose iteration is kept in f32 (the fixture patches it) to about $10^{-6}$; against
//! `torch.optim.Muon` itself the difference is the rounding of its bf16 iteration. State per
//! parameter: `momentum_buffer`, f32.
//!
//! # Shapes
//! 2-D parameters only, `(out, in)` as `Linear` weights; f32, f16 or bf16. Any other rank is
//! refused at construction.
//!
//! # Tip
//! **Muon for the hidden 2-D weights of a transformer, AdamW for everything else.** The
//! gradient of a weight matrix is typically dominated by a few directions (it has a low stable
//! rank); orthogonalising the momentum gives every direction the same step size, so the rare
//! directions learn too. It set the NanoGPT and CIFAR-10 speed-run records (about 1.35× fewer
//! steps than AdamW for GPT-2 small) and scales to LLM pre-training (Moonlight, with
//! `MatchRmsAdamW` so AdamW's learning rate and weight decay can be reused). It is *not* meant
//! for embeddings, the output head, biases or norm gains: an embedding's rows are looked up,
//! not multiplied, and the head is better trained with AdamW (the speed runs do so);
//! [`MuonWithAdamW`](super::MuonWithAdamW) does the split. Cost: $k = 5$ iterations of
//! three matrix products per matrix and step, up to $30 m$ FLOPs per weight for an $m \times n$
//! matrix ($m \le n$): small next to the $6 B$ per weight of a training step over a batch of
//! $B$ tokens once $B \gg m$ (the Muon post puts it under 1 % for NanoGPT), but on a CPU with
//! small batches it can dominate the step (see docs/PERFORMANCE.md).
//!
//! # Example
//! The update is (nearly) orthogonal: from a gradient whose two directions differ 100-fold in
//! scale, one step moves both by about $0.7\thinspace\gamma$ (SGD would move them 100:1):
//! ```
//! use candle_core::{DType, Device, Tensor, Var};
//! use candle_nn::Optimizer;
//! use candle_tricks::optim::{Muon, MuonConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let w = Var::zeros((2, 2), DType::F32, &dev)?;
//! let cfg = MuonConfig::default().with_lr(0.1).with_weight_decay(0.0);
//! let mut opt = Muon::new(vec![w.clone()], cfg)?;
//! // loss = sum(c * w): the gradient is diag(100, 1).
//! let c = Tensor::new(&[[100.0f32, 0.0], [0.0, 1.0]], &dev)?;
//! opt.backward_step(&(w.as_tensor() * c)?.sum_all()?)?;
//! let d = w.as_tensor().to_vec2::<f32>()?;
//! for step in [d[0][0], d[1][1]] {
//!     assert!((-0.075..-0.065).contains(&step), "{d:?}");
//! }
//! assert!((d[0][0] / d[1][1] - 1.0).abs() < 0.01, "{d:?}");
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Jordan et al., *Muon: An optimizer for hidden layers in neural networks*, 2024,
//!   <https://kellerjordan.github.io/posts/muon/>
//! - Liu et al., *Muon is Scalable for LLM Training*, 2025, <https://arxiv.org/abs/2502.16982>
//! - Bernstein, *Deriving Muon*, 2025, <https://jeremybernste.in/writing/deriving-muon>

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use super::checkpoint::{check_beta, check_lr, check_nonneg, flag, meta, StateReader};
use super::path::UpdatePath;
use super::slots::Core;
use super::tensor_ops::{apply_slot_with, lerp, mul};
use super::{NonFinite, OptimizerState, ParamGroups};
use crate::{Error, Result};

const NAME: &str = "Muon";

/// How the learning rate is scaled with the shape $(A, B)$ of the matrix (PyTorch's
/// `adjust_lr_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdjustLr {
    /// $\sqrt{\max(1, A / B)}$, Keller Jordan's (PyTorch's default, `"original"`).
    #[default]
    Original,
    /// $0.2 \sqrt{\max(A, B)}$: the update's RMS matches AdamW's, so AdamW's learning rate and
    /// weight decay carry over (Moonshot, `"match_rms_adamw"`).
    MatchRmsAdamW,
    /// $\sqrt{A / B}$, Bernstein's spectral scaling (`"spectral_unclamped"`).
    SpectralUnclamped,
}

impl AdjustLr {
    /// The factor for a matrix of `a` rows and `b` columns.
    pub fn ratio(self, a: usize, b: usize) -> f64 {
        let (a, b) = (a as f64, b as f64);
        match self {
            AdjustLr::Original => (a / b).max(1.0).sqrt(),
            AdjustLr::MatchRmsAdamW => 0.2 * a.max(b).sqrt(),
            AdjustLr::SpectralUnclamped => (a / b).sqrt(),
        }
    }

    /// The state-dict code (0, 1, 2).
    fn code(self) -> f64 {
        match self {
            AdjustLr::Original => 0.0,
            AdjustLr::MatchRmsAdamW => 1.0,
            AdjustLr::SpectralUnclamped => 2.0,
        }
    }

    fn from_code(v: f64) -> Result<Self> {
        match v {
            0.0 => Ok(AdjustLr::Original),
            1.0 => Ok(AdjustLr::MatchRmsAdamW),
            2.0 => Ok(AdjustLr::SpectralUnclamped),
            v => Err(Error::config(
                NAME,
                format!("state `__meta.adjust_lr_fn` must be 0, 1 or 2, got {v}"),
            )),
        }
    }
}

/// PyTorch's limit on the Newton–Schulz steps.
const MAX_NS_STEPS: usize = 100;

/// Configuration of [`Muon`]; `Default` is PyTorch's (lr 1e-3, weight decay 0.1, momentum
/// 0.95, Nesterov, coefficients (3.4445, -4.7750, 2.0315), eps 1e-7, 5 steps, `Original`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MuonConfig {
    /// Learning rate (default 1e-3; the speed runs use about 0.02 with `Original`).
    pub lr: f64,
    /// Decoupled weight decay: the weights shrink by `lr * weight_decay` (default 0.1).
    pub weight_decay: f64,
    /// Momentum $\mu$ (default 0.95).
    pub momentum: f64,
    /// Nesterov momentum (default true).
    pub nesterov: bool,
    /// The Newton–Schulz coefficients $(a, b, c)$.
    pub ns_coefficients: [f64; 3],
    /// Floor of the Frobenius norm the iteration divides by (default 1e-7).
    pub eps: f64,
    /// Newton–Schulz iterations, fewer than 100 (default 5).
    pub ns_steps: usize,
    /// Learning-rate scaling with the matrix shape (default [`AdjustLr::Original`]).
    pub adjust_lr_fn: AdjustLr,
    /// What a NaN/Inf gradient does (default [`NonFinite::Error`]).
    pub non_finite: NonFinite,
}

impl Default for MuonConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            weight_decay: 0.1,
            momentum: 0.95,
            nesterov: true,
            ns_coefficients: [3.4445, -4.7750, 2.0315],
            eps: 1e-7,
            ns_steps: 5,
            adjust_lr_fn: AdjustLr::Original,
            non_finite: NonFinite::Error,
        }
    }
}

impl MuonConfig {
    /// Checks the values: lr and weight decay finite and >= 0, momentum in [0, 1), eps finite
    /// and > 0, coefficients finite, `ns_steps < 100`.
    pub fn validate(&self) -> Result<()> {
        check_lr(NAME, self.lr)?;
        check_nonneg(NAME, "weight_decay", self.weight_decay)?;
        check_beta(NAME, "momentum", self.momentum)?;
        crate::check::eps(NAME, "eps", self.eps)?;
        if self.ns_coefficients.iter().any(|c| !c.is_finite()) {
            return Err(Error::config(
                NAME,
                format!(
                    "ns_coefficients must be finite, got {:?}",
                    self.ns_coefficients
                ),
            ));
        }
        if self.ns_steps >= MAX_NS_STEPS {
            return Err(Error::config(
                NAME,
                format!("ns_steps must be < {MAX_NS_STEPS}, got {}", self.ns_steps),
            ));
        }
        Ok(())
    }

    /// Sets the learning rate.
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    /// Sets the weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Sets the momentum.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Turns Nesterov momentum on or off.
    pub fn with_nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// Sets the Newton–Schulz coefficients $(a, b, c)$.
    pub fn with_ns_coefficients(mut self, ns_coefficients: [f64; 3]) -> Self {
        self.ns_coefficients = ns_coefficients;
        self
    }

    /// Sets eps.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Sets the number of Newton–Schulz iterations.
    pub fn with_ns_steps(mut self, ns_steps: usize) -> Self {
        self.ns_steps = ns_steps;
        self
    }

    /// Sets the learning-rate scaling.
    pub fn with_adjust_lr_fn(mut self, adjust_lr_fn: AdjustLr) -> Self {
        self.adjust_lr_fn = adjust_lr_fn;
        self
    }

    /// Sets the non-finite gradient policy.
    pub fn with_non_finite(mut self, non_finite: NonFinite) -> Self {
        self.non_finite = non_finite;
        self
    }

    /// The hyper-parameters as state-dict entries (`__meta.{name}`), besides lr and the policy.
    fn to_state(self) -> [(&'static str, f64); 9] {
        let [a, b, c] = self.ns_coefficients;
        [
            ("weight_decay", self.weight_decay),
            ("momentum", self.momentum),
            ("nesterov", flag(self.nesterov)),
            ("ns_a", a),
            ("ns_b", b),
            ("ns_c", c),
            ("eps", self.eps),
            ("ns_steps", self.ns_steps as f64),
            ("adjust_lr_fn", self.adjust_lr_fn.code()),
        ]
    }
}

/// The orthogonalisation $S_k(U)$ of a 2-D f32 tensor (see the module docs), as
/// candle matrix products on its device.
pub(crate) fn newton_schulz(u: &Tensor, cfg: &MuonConfig) -> candle_core::Result<Tensor> {
    let (rows, cols) = u.dims2()?;
    let transposed = rows > cols;
    let x = if transposed { u.t()? } else { u.clone() };
    let norm = x.sqr()?.sum_all()?.sqrt()?.maximum(cfg.eps)?;
    let mut x = x.broadcast_div(&norm)?;
    let [a, b, c] = cfg.ns_coefficients.map(|v| v as f32);
    for _ in 0..cfg.ns_steps {
        let gram = x.matmul(&x.t()?)?;
        let poly = (mul(&gram, b)? + mul(&gram.matmul(&gram)?, c)?)?;
        x = (mul(&x, a)? + poly.matmul(&x)?)?;
    }
    if transposed {
        x.t()?.contiguous()
    } else {
        Ok(x)
    }
}

/// Muon over 2-D parameters; see the [module docs](self).
#[derive(Debug)]
pub struct Muon {
    core: Core,
    cfg: MuonConfig,
}

impl Muon {
    /// Builds the optimizer over `vars` (one group); every var must be 2-D.
    pub fn new(vars: Vec<Var>, cfg: MuonConfig) -> Result<Self> {
        Self::with_groups(vars, cfg)
    }

    /// Builds the optimizer over parameter groups (learning-rate multiplier and weight decay
    /// per group); every var must be 2-D.
    pub fn with_groups(groups: impl Into<ParamGroups>, cfg: MuonConfig) -> Result<Self> {
        cfg.validate()?;
        let core = Core::new(NAME, &["momentum_buffer"], |_, s| s.clone(), groups.into())?;
        if let Some(s) = core.slots.iter().find(|s| s.var.rank() != 2) {
            return Err(Error::shape(
                NAME,
                "parameter",
                format!(
                    "a 2-D matrix (parameter {}; optimize other ranks with AdamW, e.g. through \
                     MuonWithAdamW)",
                    s.name
                ),
                s.var.shape().clone(),
            ));
        }
        Ok(Self { core, cfg })
    }

    /// One step from `grads`; the hyper-parameters are checked first.
    pub fn try_step(&mut self, grads: &GradStore) -> Result<()> {
        let cfg = self.cfg;
        cfg.validate()?;
        let Some(list) = self.core.gather(grads, cfg.non_finite)? else {
            return Ok(());
        };
        for (i, g) in list {
            let (lr, wd) = self.core.lr_wd(i, cfg.lr, cfg.weight_decay);
            let slot = &mut self.core.slots[i];
            slot.step += 1;
            slot.ensure(0, 0.0)?;
            // The iteration needs the whole matrix: the state lives as tensors on every device.
            for b in slot
                .bufs
                .iter_mut()
                .chain(std::iter::once(&mut slot.master))
            {
                b.migrate(UpdatePath::Tensor, &slot.var)?;
            }
            let (rows, cols) = slot.var.dims2()?;
            let scaled_lr = lr * cfg.adjust_lr_fn.ratio(rows, cols);
            apply_slot_with(slot, &g, |p, g, s| {
                let [Some(buf), ..] = s else {
                    return Err(Error::config(NAME, "momentum buffer missing"));
                };
                let m = cfg.momentum as f32;
                let nb = lerp(buf, g, 1.0 - m)?;
                let u = if cfg.nesterov {
                    lerp(g, &nb, m)?
                } else {
                    nb.clone()
                };
                let o = newton_schulz(&u, &cfg)?;
                *buf = nb;
                Ok((mul(p, (1.0 - lr * wd) as f32)? - mul(&o, scaled_lr as f32)?)?)
            })?;
        }
        Ok(())
    }

    /// Steps skipped because a gradient held NaN or Inf (policy `NonFinite::Skip`).
    pub fn skipped_steps(&self) -> u64 {
        self.core.skipped
    }

    /// The configuration (its `lr` is the current base learning rate).
    pub fn config(&self) -> &MuonConfig {
        &self.cfg
    }

    /// The parameters, in state order.
    pub fn vars(&self) -> Vec<Var> {
        self.core.slots.iter().map(|s| s.var.clone()).collect()
    }

    /// Sets the base learning rate after checking it (finite, >= 0).
    pub fn try_set_learning_rate(&mut self, lr: f64) -> Result<()> {
        check_lr(NAME, lr)?;
        self.cfg.lr = lr;
        Ok(())
    }
}

impl candle_nn::Optimizer for Muon {
    type Config = MuonConfig;

    fn new(vars: Vec<Var>, config: MuonConfig) -> candle_core::Result<Self> {
        Ok(Self::with_groups(vars, config)?)
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        Ok(self.try_step(grads)?)
    }

    fn learning_rate(&self) -> f64 {
        self.cfg.lr
    }

    /// An invalid rate is reported by the next step.
    fn set_learning_rate(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }
}

impl OptimizerState for Muon {
    fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        self.core
            .state_dict(self.cfg.lr, self.cfg.non_finite, &self.cfg.to_state())
    }

    fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let st = StateReader::new(NAME, state);
        let ns_steps = st.value("ns_steps")?;
        if !(ns_steps.is_finite() && ns_steps >= 0.0 && ns_steps.fract() == 0.0) {
            return Err(Error::config(
                NAME,
                format!("state `__meta.ns_steps` must be a whole number >= 0, got {ns_steps}"),
            ));
        }
        let cfg = MuonConfig {
            lr: meta(NAME, state, "__meta.lr")?,
            weight_decay: st.value("weight_decay")?,
            momentum: st.value("momentum")?,
            nesterov: st.flag("nesterov")?,
            ns_coefficients: [st.value("ns_a")?, st.value("ns_b")?, st.value("ns_c")?],
            eps: st.value("eps")?,
            ns_steps: ns_steps.min(MAX_NS_STEPS as f64) as usize,
            adjust_lr_fn: AdjustLr::from_code(st.value("adjust_lr_fn")?)?,
            non_finite: self.cfg.non_finite,
        };
        cfg.validate()?;
        let loaded = self.core.read_state(state)?;
        let non_finite = loaded.non_finite;
        self.core.commit(loaded);
        self.cfg = MuonConfig { non_finite, ..cfg };
        Ok(())
    }
}
