//! Schedule-free AdamW (Defazio et al. 2024): AdamW without a learning-rate decay schedule,
//! replaced by an online average of the iterates; the semantics of `AdamWScheduleFree` from
//! the authors' `schedulefree` package (version 1.4), on the crate's fused optimizer core.
//!
//! # Update
//! Three sequences: $z$ (the plain AdamW-like iterate), $x$ (a weighted average of the $z$s,
//! the weights to evaluate) and $y = (1 - \beta_1) z + \beta_1 x$ (where the gradient is taken,
//! and what the parameters hold in training mode). At step $t$ (from 1) with base rate
//! $\gamma$, warmup over $W$ steps, $\gamma_t = \gamma \min(1, t / W)$,
//! $\gamma_{\max} = \max_{s \le t} \gamma_s$:
//!
//! $$v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \qquad
//!   u_t = \frac{g_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon} + \lambda y_{t-1}$$
//! $$c_t = \frac{w_t}{\sum_{s \le t} w_s}, \qquad w_t = t^r \gamma_{\max}^{p}$$
//! $$y_t = (1 - c_t)\thinspace y_{t-1} + c_t z_{t-1} + \gamma_t (\beta_1 (1 - c_t) - 1)\thinspace u_t,
//!   \qquad z_t = z_{t-1} - \gamma_t u_t$$
//!
//! with $p$ = `weight_lr_power`. The parameters hold $y$ in training mode;
//! [`ScheduleFreeAdamW::eval`] replaces them by $x = (y - (1 - \beta_1) z) / \beta_1$ and
//! [`ScheduleFreeAdamW::train`] puts $y$ back (the package's `lerp`s, bit for bit). State per
//! parameter: `z` and `exp_avg_sq` ($v$), f32; the state dict also holds the step count
//! `__meta.k`, the mode `__meta.train_mode` and per group the running `weight_sum` and
//! `lr_max`.
//!
//! Save the weights and the optimizer state in the same mode: loading a state restores its
//! mode, and the weights must be the ones that go with it.
//!
//! Unlike the package, a new optimizer starts in training mode (stepping in evaluation mode is
//! an error, as there); every parameter steps together (the step count and the averaging
//! weights are the optimizer's, as the package's are per group).
//!
//! # Shapes
//! Any parameter shape; f32, f16 or bf16 parameters.
//!
//! # Tip
//! **No decay schedule to tune, and no need to know the training length.** A cosine or linear
//! decay must be told the number of steps in advance and is only good at its end; schedule-free
//! training keeps a constant rate (after a short warmup) and averages the iterates instead,
//! which the paper shows to match or beat tuned cosine schedules across vision and language
//! tasks: stop whenever the evaluation is good enough, or continue training later. Use a larger
//! rate than AdamW's (the package suggests 1–10×) and warmup as usual. **The catch: the
//! weights to evaluate or save are $x$, not the training weights $y$** — call `eval()` before
//! evaluating or saving and `train()` before the next step. Forgetting it evaluates $y$, which
//! sits $(1 - \beta_1)$ of the way towards the noisy $z$, and looks worse (example below).
//! With BatchNorm, recompute the running statistics with the $x$ weights.
//!
//! # Example
//! On a noisy quadratic, the evaluation weights (`eval()`) have a clearly lower loss than the
//! training weights the parameters hold while training:
//! ```
//! use candle_core::{DType, Device, Tensor, Var};
//! use candle_nn::Optimizer;
//! use candle_tricks::optim::{ScheduleFreeAdamW, ScheduleFreeAdamWConfig};
//! use rand::{rngs::StdRng, Rng, SeedableRng};
//! # fn main() -> candle_tricks::Result<()> {
//! let (dev, d) = (Device::Cpu, 64);
//! let target = Tensor::arange(0u32, d as u32, &dev)?.to_dtype(DType::F32)?.affine(0.06, -2.0)?;
//! let w = Var::zeros(d, DType::F32, &dev)?;
//! let cfg = ScheduleFreeAdamWConfig::default().with_lr(0.3).with_warmup_steps(20);
//! let mut opt = ScheduleFreeAdamW::new(vec![w.clone()], cfg)?;
//! let mut rng = StdRng::seed_from_u64(0);
//! for _ in 0..500 {
//!     // Gradient of |w - target|^2 / 2 plus uniform noise in [-2, 2].
//!     let noise: Vec<f32> = (0..d).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
//!     let noise = Tensor::new(noise.as_slice(), &dev)?;
//!     let loss = ((w.as_tensor() - &target)?.sqr()?.sum_all()? * 0.5)?;
//!     let loss = (loss + (w.as_tensor() * noise)?.sum_all()?)?;
//!     opt.backward_step(&loss)?;
//! }
//! let dist = |w: &Var| -> candle_core::Result<f32> {
//!     (w.as_tensor() - &target)?.sqr()?.sum_all()?.to_scalar::<f32>()
//! };
//! let train_loss = dist(&w)?; // forgot eval(): the parameters hold y
//! opt.eval()?;
//! let eval_loss = dist(&w)?; // x, the average
//! assert!(eval_loss < 0.8 * train_loss, "eval {eval_loss} train {train_loss}");
//! opt.train()?; // back to y before the next step
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Defazio, Yang, Mehta, Mishchenko, Khaled, Cutkosky, *The Road Less Scheduled*, NeurIPS
//!   2024, <https://arxiv.org/abs/2405.15682>
//! - The `schedulefree` package, <https://github.com/facebookresearch/schedule_free>

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};

use super::checkpoint::{check_beta, check_lr, check_nonneg, flag, meta, meta_count, StateReader};
use super::fused::Kernel;
use super::slots::Core;
use super::tensor_ops::{add, div, lerp, mul};
use super::{NonFinite, OptimizerState, ParamGroups};
use crate::{Error, Result};

const NAME: &str = "ScheduleFreeAdamW";

/// Configuration of [`ScheduleFreeAdamW`]; `Default` is the package's (lr 0.0025, betas (0.9,
/// 0.999), eps 1e-8, weight decay 0, no warmup, r 0, weight_lr_power 2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleFreeAdamWConfig {
    /// Learning rate (default 0.0025).
    pub lr: f64,
    /// Interpolation between $z$ and $x$ for the gradient point $y$ (default 0.9).
    pub beta1: f64,
    /// Decay of the second-moment average (default 0.999).
    pub beta2: f64,
    /// Added to the denominator for stability (default 1e-8).
    pub eps: f64,
    /// Weight decay, applied at $y$ through the normalized gradient (default 0).
    pub weight_decay: f64,
    /// Steps of linear learning-rate warmup (default 0).
    pub warmup_steps: u64,
    /// Power of the step number in the averaging weights (default 0).
    pub r: f64,
    /// Power of the largest learning rate so far in the averaging weights (default 2).
    pub weight_lr_power: f64,
    /// What a NaN/Inf gradient does (default [`NonFinite::Error`]).
    pub non_finite: NonFinite,
}

impl Default for ScheduleFreeAdamWConfig {
    fn default() -> Self {
        Self {
            lr: 0.0025,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_steps: 0,
            r: 0.0,
            weight_lr_power: 2.0,
            non_finite: NonFinite::Error,
        }
    }
}

impl ScheduleFreeAdamWConfig {
    /// Checks the values: lr, weight decay, r and weight_lr_power finite and >= 0, beta1 in
    /// (0, 1) (the evaluation weights divide by it), beta2 in [0, 1), eps finite and > 0.
    pub fn validate(&self) -> Result<()> {
        check_lr(NAME, self.lr)?;
        check_beta(NAME, "beta1", self.beta1)?;
        if self.beta1 == 0.0 {
            return Err(Error::config(
                NAME,
                "beta1 must be in (0, 1), got 0 (x = (y - (1 - beta1) z) / beta1)",
            ));
        }
        check_beta(NAME, "beta2", self.beta2)?;
        crate::check::eps(NAME, "eps", self.eps)?;
        check_nonneg(NAME, "weight_decay", self.weight_decay)?;
        check_nonneg(NAME, "r", self.r)?;
        check_nonneg(NAME, "weight_lr_power", self.weight_lr_power)
    }

    /// Sets the learning rate.
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    /// Sets both betas.
    pub fn with_betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }

    /// Sets eps.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Sets the weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Sets the warmup length in steps.
    pub fn with_warmup_steps(mut self, warmup_steps: u64) -> Self {
        self.warmup_steps = warmup_steps;
        self
    }

    /// Sets `r`.
    pub fn with_r(mut self, r: f64) -> Self {
        self.r = r;
        self
    }

    /// Sets `weight_lr_power`.
    pub fn with_weight_lr_power(mut self, weight_lr_power: f64) -> Self {
        self.weight_lr_power = weight_lr_power;
        self
    }

    /// Sets the non-finite gradient policy.
    pub fn with_non_finite(mut self, non_finite: NonFinite) -> Self {
        self.non_finite = non_finite;
        self
    }
}

/// The running averaging weights of one parameter group.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Averaging {
    weight_sum: f64,
    /// -1 before the first step, as in the package.
    lr_max: f64,
}

/// Schedule-free AdamW; see the [module docs](self).
#[derive(Debug)]
pub struct ScheduleFreeAdamW {
    core: Core,
    cfg: ScheduleFreeAdamWConfig,
    /// Steps taken.
    k: u64,
    avg: Vec<Averaging>,
    train_mode: bool,
}

/// Buffer indices.
const Z: usize = 0;
const V: usize = 1;

/// The fused step (see the module docs); `ay` is $\gamma_t (\beta_1 (1 - c_t) - 1)$.
struct StepKernel {
    b2: f32,
    w2: f32,
    bc2: f32,
    eps: f32,
    wd: f32,
    ckp1: f32,
    ay: f32,
    lr: f32,
}

/// torch's `lerp`: `a + w (b - a)` for `w < 0.5`, else `b - (1 - w)(b - a)`.
fn lerp1(a: f32, b: f32, w: f32) -> f32 {
    if w < 0.5 {
        a + w * (b - a)
    } else {
        b - (1.0 - w) * (b - a)
    }
}

impl Kernel for StepKernel {
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize) {
        let n = p.len();
        if let [z, v, ..] = s {
            let (z, v) = (&mut z[off..off + n], &mut v[off..off + n]);
            for (((y, &g), z), v) in p.iter_mut().zip(g).zip(z.iter_mut()).zip(v.iter_mut()) {
                let nv = self.b2 * *v + self.w2 * (g * g);
                *v = nv;
                let d = (nv / self.bc2).sqrt() + self.eps;
                let u = g / d + self.wd * *y;
                *y = lerp1(*y, *z, self.ckp1) + self.ay * u;
                *z -= self.lr * u;
            }
        }
    }

    fn run_tensor(
        &self,
        p: &Tensor,
        g: &Tensor,
        s: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let [Some(z), Some(v), ..] = s else {
            return Err(candle_core::Error::Msg(format!(
                "{NAME}: state buffers missing"
            )));
        };
        let nv = (mul(v, self.b2)? + mul(&g.sqr()?, self.w2)?)?;
        let d = add(&div(&nv, self.bc2)?.sqrt()?, self.eps)?;
        let u = ((g / d)? + mul(p, self.wd)?)?;
        let y = lerp(p, z, self.ckp1).map_err(candle_core::Error::wrap)?;
        let new = (y + mul(&u, self.ay)?)?;
        *z = (&*z - mul(&u, self.lr)?)?;
        *v = nv;
        Ok(new)
    }
}

/// The mode switch: the parameter moved a fraction `w` of the way to `z` (`eval`:
/// $1 - 1/\beta_1$, `train`: $1 - \beta_1$); the gradient slot is unused.
struct SwitchKernel {
    w: f32,
}

impl Kernel for SwitchKernel {
    fn run(&self, p: &mut [f32], _g: &[f32], s: &mut [&mut [f32]], off: usize) {
        if let [z, ..] = s {
            let n = p.len();
            for (y, z) in p.iter_mut().zip(&z[off..off + n]) {
                *y = lerp1(*y, *z, self.w);
            }
        }
    }

    fn run_tensor(
        &self,
        p: &Tensor,
        _g: &Tensor,
        s: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let [Some(z), ..] = s else {
            return Err(candle_core::Error::Msg(format!("{NAME}: z missing")));
        };
        lerp(p, z, self.w).map_err(candle_core::Error::wrap)
    }
}

impl ScheduleFreeAdamW {
    /// Builds the optimizer over `vars` (one group), in training mode.
    pub fn new(vars: Vec<Var>, cfg: ScheduleFreeAdamWConfig) -> Result<Self> {
        Self::with_groups(vars, cfg)
    }

    /// Builds the optimizer over parameter groups (each with its learning-rate multiplier and
    /// weight decay, and its own averaging weights), in training mode.
    pub fn with_groups(
        groups: impl Into<ParamGroups>,
        cfg: ScheduleFreeAdamWConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        let core = Core::new(NAME, &["z", "exp_avg_sq"], |_, s| s.clone(), groups.into())?;
        let avg = vec![
            Averaging {
                weight_sum: 0.0,
                lr_max: -1.0,
            };
            core.groups.len()
        ];
        Ok(Self {
            core,
            cfg,
            k: 0,
            avg,
            train_mode: true,
        })
    }

    /// One step from `grads`. Fails (changing nothing) in evaluation mode: call
    /// [`ScheduleFreeAdamW::train`] first.
    pub fn try_step(&mut self, grads: &GradStore) -> Result<()> {
        let cfg = self.cfg;
        cfg.validate()?;
        if !self.train_mode {
            return Err(Error::config(
                NAME,
                "step in evaluation mode: the parameters hold the averaged weights x; call \
                 train() before stepping",
            ));
        }
        let Some(list) = self.core.gather(grads, cfg.non_finite)? else {
            return Ok(());
        };
        let k = self.k as f64;
        let sched = if self.k < cfg.warmup_steps {
            (k + 1.0) / cfg.warmup_steps as f64
        } else {
            1.0
        };
        let bc2 = 1.0 - cfg.beta2.powf(k + 1.0);
        // Per group: (lr, ckp1) of this step, and the updated averaging weights.
        let mut avg = self.avg.clone();
        let mut per_group = Vec::with_capacity(avg.len());
        for (j, a) in avg.iter_mut().enumerate() {
            let lr = cfg.lr * self.core.groups[j].lr_mult * sched;
            a.lr_max = a.lr_max.max(lr);
            let weight = (k + 1.0).powf(cfg.r) * a.lr_max.powf(cfg.weight_lr_power);
            a.weight_sum += weight;
            let ckp1 = if a.weight_sum == 0.0 {
                0.0
            } else {
                weight / a.weight_sum
            };
            per_group.push((lr, ckp1));
        }
        let mut work = Vec::with_capacity(list.len());
        for (i, g) in list {
            let slot = &mut self.core.slots[i];
            let (lr, ckp1) = per_group[slot.group];
            let wd = self.core.groups[slot.group]
                .weight_decay
                .unwrap_or(cfg.weight_decay);
            // z starts at the parameter's value.
            slot.ensure_copy_of_param(Z)?;
            slot.ensure(V, 0.0)?;
            slot.step += 1;
            let kernel = StepKernel {
                b2: cfg.beta2 as f32,
                w2: (1.0 - cfg.beta2) as f32,
                bc2: bc2 as f32,
                eps: cfg.eps as f32,
                wd: wd as f32,
                ckp1: ckp1 as f32,
                ay: (lr * (cfg.beta1 * (1.0 - ckp1) - 1.0)) as f32,
                lr: lr as f32,
            };
            work.push((i, g, Box::new(kernel) as Box<dyn Kernel>));
        }
        self.core.apply_all(work)?;
        self.avg = avg;
        self.k += 1;
        Ok(())
    }

    /// Puts the evaluation weights $x$ in the parameters (a no-op in evaluation mode). Call it
    /// before evaluating or saving the model.
    pub fn eval(&mut self) -> Result<()> {
        if self.train_mode {
            self.switch(1.0 - 1.0 / self.cfg.beta1)?;
            self.train_mode = false;
        }
        Ok(())
    }

    /// Puts the training weights $y$ back in the parameters (a no-op in training mode). Call
    /// it before the next step after [`ScheduleFreeAdamW::eval`].
    pub fn train(&mut self) -> Result<()> {
        if !self.train_mode {
            self.switch(1.0 - self.cfg.beta1)?;
            self.train_mode = true;
        }
        Ok(())
    }

    /// Whether the parameters hold the training weights $y$ (true) or the evaluation weights
    /// $x$ (false).
    pub fn is_train_mode(&self) -> bool {
        self.train_mode
    }

    /// Every parameter with a `z` moved a fraction `w` of the way to it, through the same
    /// fused / tensor dispatch as a step (so f16/bf16 master copies follow).
    fn switch(&mut self, w: f64) -> Result<()> {
        let w = w as f32;
        self.core
            .apply_without_grad(Z, || Box::new(SwitchKernel { w }))
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.k
    }

    /// Steps skipped because a gradient held NaN or Inf (policy `NonFinite::Skip`).
    pub fn skipped_steps(&self) -> u64 {
        self.core.skipped
    }

    /// The configuration (its `lr` is the current base learning rate).
    pub fn config(&self) -> &ScheduleFreeAdamWConfig {
        &self.cfg
    }

    /// The parameters, in state order.
    pub fn vars(&self) -> Vec<Var> {
        self.core.slots.iter().map(|s| s.var.clone()).collect()
    }

    /// The hyper-parameters and counters as state-dict entries (`__meta.{name}`).
    fn meta_entries(&self) -> Vec<(String, f64)> {
        let c = &self.cfg;
        let mut v: Vec<(String, f64)> = [
            ("weight_decay", c.weight_decay),
            ("beta1", c.beta1),
            ("beta2", c.beta2),
            ("eps", c.eps),
            ("warmup_steps", c.warmup_steps as f64),
            ("r", c.r),
            ("weight_lr_power", c.weight_lr_power),
            ("k", self.k as f64),
            ("train_mode", flag(self.train_mode)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (j, a) in self.avg.iter().enumerate() {
            v.push((format!("group{j}.weight_sum"), a.weight_sum));
            v.push((format!("group{j}.lr_max"), a.lr_max));
        }
        v
    }
}

impl candle_nn::Optimizer for ScheduleFreeAdamW {
    type Config = ScheduleFreeAdamWConfig;

    fn new(vars: Vec<Var>, config: Self::Config) -> candle_core::Result<Self> {
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

impl OptimizerState for ScheduleFreeAdamW {
    fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        let mut m = self
            .core
            .state_dict(self.cfg.lr, self.cfg.non_finite, &[])?;
        for (k, v) in self.meta_entries() {
            m.insert(format!("__meta.{k}"), Tensor::new(v, &Device::Cpu)?);
        }
        Ok(m)
    }

    fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let st = StateReader::new(NAME, state);
        let cfg = ScheduleFreeAdamWConfig {
            lr: meta(NAME, state, "__meta.lr")?,
            beta1: st.value("beta1")?,
            beta2: st.value("beta2")?,
            eps: st.value("eps")?,
            weight_decay: st.value("weight_decay")?,
            warmup_steps: meta_count(NAME, state, "__meta.warmup_steps")?,
            r: st.value("r")?,
            weight_lr_power: st.value("weight_lr_power")?,
            non_finite: self.cfg.non_finite,
        };
        cfg.validate()?;
        let k = meta_count(NAME, state, "__meta.k")?;
        let train_mode = st.flag("train_mode")?;
        let mut avg = Vec::with_capacity(self.avg.len());
        for j in 0..self.avg.len() {
            let a = Averaging {
                weight_sum: st.value(&format!("group{j}.weight_sum"))?,
                lr_max: st.value(&format!("group{j}.lr_max"))?,
            };
            if !(a.weight_sum.is_finite() && a.weight_sum >= 0.0 && a.lr_max.is_finite()) {
                return Err(Error::config(
                    NAME,
                    format!(
                        "state group{j}: weight_sum must be finite and >= 0 and lr_max finite, \
                         got {} and {}",
                        a.weight_sum, a.lr_max
                    ),
                ));
            }
            avg.push(a);
        }
        let loaded = self.core.read_state(state)?;
        let non_finite = loaded.non_finite;
        self.core.commit(loaded);
        self.cfg = ScheduleFreeAdamWConfig { non_finite, ..cfg };
        self.k = k;
        self.avg = avg;
        self.train_mode = train_mode;
        Ok(())
    }
}
