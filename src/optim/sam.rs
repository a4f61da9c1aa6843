//! SAM, sharpness-aware minimisation (Foret et al. 2020), and its adaptive variant ASAM
//! (Kwon et al. 2021): a wrapper over any optimizer that takes each step with the gradient
//! measured at the worst nearby point instead of at the weights themselves.
//!
//! # Update
//! With loss $L$, weights $w$, radius $\rho$ and the gradient $g = \nabla L(w)$:
//!
//! $$\epsilon = \rho\thinspace \frac{T^2 g}{\lVert T g \rVert + 10^{-12}}, \qquad
//!   T = I \text{ (SAM) or } \operatorname{diag}(|w|) \text{ (ASAM)}$$
//!
//! the norm taken over all the parameters together; then the gradient
//! $g^\prime = \nabla L(w + \epsilon)$ is measured at the perturbed point, the weights are put
//! back to $w$ exactly, and the inner optimizer steps with $g^\prime$. This is the algorithm of
//! the widely used PyTorch implementation (davda54/sam); [`Sam::step`] takes the loss as a
//! closure because it is evaluated twice.
//!
//! # Shapes
//! Any parameter shape; f32, f16 or bf16 parameters (the perturbation is computed in f32).
//!
//! # Tip
//! **Flat minima generalise better; SAM looks for them at twice the cost per step.** A minimum
//! where the loss stays low in a whole $\rho$-ball is less sensitive to the shift between
//! training and test data than a sharp one of the same depth. SAM minimises the loss at the
//! worst point of that ball (to first order), which gave 0.5–2 points of accuracy on CIFAR
//! and ImageNet in the paper and makes models more robust to label noise. The price: two
//! forward/backward passes per step (often offset by reaching the same accuracy in fewer
//! epochs). Typical $\rho$: 0.05 for SAM (0.1–0.2 with strong augmentation); ASAM, which scales
//! the ball per weight so that rescaling a layer does not change the sharpness measured, uses
//! a larger $\rho$ (about 0.5–2).
//!
//! # Example
//! The weights after a SAM step are those of the inner step taken with the gradient at the
//! perturbed point: for $L = \sum w^4$ the perturbed gradient is larger than the plain one.
//! ```
//! use candle_core::{Device, Var};
//! use candle_nn::Optimizer;
//! use candle_tricks::optim::{Sam, SamConfig, Sgd, SgdConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let w = Var::new(&[1.0f32], &Device::Cpu)?;
//! let sgd = Sgd::new(vec![w.clone()], SgdConfig::default().with_lr(0.01))?;
//! let mut sam = Sam::new(sgd, vec![w.clone()], SamConfig::default().with_rho(0.1))?;
//! let loss = sam.step(|| w.as_tensor().powf(4.0)?.sum_all())?;
//! assert_eq!(loss.to_scalar::<f32>()?, 1.0); // the loss at w, before the step
//! // Perturbed point 1.1: gradient 4 * 1.1^3 = 5.324 instead of 4.
//! let v = w.as_tensor().to_vec1::<f32>()?[0];
//! assert!((v - (1.0 - 0.01 * 5.324)).abs() < 1e-6, "{v}");
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Foret, Kleiner, Mobahi, Neyshabur, *Sharpness-Aware Minimization for Efficiently
//!   Improving Generalization*, ICLR 2021, <https://arxiv.org/abs/2010.01412>
//! - Kwon, Kim, Park, Choi, *ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant
//!   Learning of Deep Neural Networks*, ICML 2021, <https://arxiv.org/abs/2102.11600>

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use super::checkpoint::check_nonneg;
use super::fused::first_non_finite;
use super::tensor_ops::{mul, read};
use super::{NonFinite, OptimizerState};
use crate::{Error, Result};

const NAME: &str = "Sam";

/// Configuration of [`Sam`]; `Default`: rho 0.05, not adaptive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamConfig {
    /// Radius of the neighbourhood (default 0.05).
    pub rho: f64,
    /// ASAM: scale the perturbation by $|w|$ per weight (default false).
    pub adaptive: bool,
    /// What a NaN/Inf gradient (at either point) does (default [`NonFinite::Error`]).
    pub non_finite: NonFinite,
}

impl Default for SamConfig {
    fn default() -> Self {
        Self {
            rho: 0.05,
            adaptive: false,
            non_finite: NonFinite::Error,
        }
    }
}

impl SamConfig {
    /// Checks the values: `rho` finite and >= 0.
    pub fn validate(&self) -> Result<()> {
        check_nonneg(NAME, "rho", self.rho)
    }

    /// Sets `rho`.
    pub fn with_rho(mut self, rho: f64) -> Self {
        self.rho = rho;
        self
    }

    /// Turns ASAM's per-weight scaling on or off.
    pub fn with_adaptive(mut self, adaptive: bool) -> Self {
        self.adaptive = adaptive;
        self
    }

    /// Sets the non-finite gradient policy.
    pub fn with_non_finite(mut self, non_finite: NonFinite) -> Self {
        self.non_finite = non_finite;
        self
    }
}

/// SAM over the inner optimizer `O`; see the [module docs](self).
#[derive(Debug)]
pub struct Sam<O> {
    base: O,
    vars: Vec<Var>,
    cfg: SamConfig,
    skipped: u64,
}

/// Added to the gradient norm (as the reference implementation does), so a zero gradient
/// gives a zero perturbation.
const NORM_EPS: f64 = 1e-12;

impl<O: candle_nn::Optimizer> Sam<O> {
    /// Wraps `base`, which optimizes `vars` (the same vars: SAM perturbs them).
    pub fn new(base: O, vars: Vec<Var>, cfg: SamConfig) -> Result<Self> {
        cfg.validate()?;
        if vars.is_empty() {
            return Err(Error::config(NAME, "no parameters to optimize"));
        }
        for (i, v) in vars.iter().enumerate() {
            if !matches!(v.dtype(), DType::F32 | DType::F16 | DType::BF16) {
                return Err(Error::unsupported_dtype(
                    NAME,
                    format!("parameter {i}"),
                    "f32, f16 or bf16",
                    v.dtype(),
                ));
            }
        }
        Ok(Self {
            base,
            vars,
            cfg,
            skipped: 0,
        })
    }

    /// One SAM step: `loss()` at the weights, its gradient, the perturbation, `loss()` again
    /// at the perturbed weights, its gradient, the weights restored, the inner step with the
    /// second gradient. Returns the first loss. A NaN/Inf gradient (at either point) fails or
    /// skips the step per [`SamConfig::non_finite`], with the weights as they were.
    pub fn step(
        &mut self,
        mut loss: impl FnMut() -> candle_core::Result<Tensor>,
    ) -> Result<Tensor> {
        self.cfg.validate()?;
        let first = loss()?;
        let grads = first.backward()?;
        let with_grad = self.gradients(&grads);
        if !self.finite(&with_grad)? {
            return Ok(first);
        }
        let originals = with_grad
            .iter()
            .map(|(i, _)| self.vars[*i].as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let second = self
            .perturb(&with_grad)
            .and_then(|()| Ok(loss()?.backward()?));
        // The weights go back before anything else, whatever the perturbation or the second
        // pass gave.
        for ((i, _), w) in with_grad.iter().zip(&originals) {
            self.vars[*i].set(w)?;
        }
        let grads = second?;
        if !self.finite(&self.gradients(&grads))? {
            return Ok(first);
        }
        self.base.step(&grads)?;
        Ok(first)
    }

    /// `(var index, gradient)` of the vars that have one in `grads`.
    fn gradients(&self, grads: &GradStore) -> Vec<(usize, Tensor)> {
        let with = |(i, v): (usize, &Var)| grads.get(v).map(|g| (i, g.clone()));
        self.vars.iter().enumerate().filter_map(with).collect()
    }

    /// Applies the policy to the gradients `gs`: `Ok(true)` when all are finite, `Ok(false)`
    /// (counted) when the step is to be skipped.
    fn finite(&mut self, gs: &[(usize, Tensor)]) -> Result<bool> {
        let ts: Vec<&Tensor> = gs.iter().map(|(_, g)| g).collect();
        let Some(bad) = first_non_finite(&ts)? else {
            return Ok(true);
        };
        match self.cfg.non_finite {
            NonFinite::Error => Err(Error::non_finite(
                NAME,
                format!("the gradient of parameter {} (step not taken)", gs[bad].0),
            )),
            NonFinite::Skip => {
                self.skipped += 1;
                Ok(false)
            }
        }
    }

    /// `w += rho T^2 g / (||T g|| + 1e-12)` over the parameters with a gradient, in f32.
    fn perturb(&self, gs: &[(usize, Tensor)]) -> Result<()> {
        let mut scaled = Vec::with_capacity(gs.len());
        let mut sum_sq: Option<Tensor> = None;
        for (i, g) in gs {
            let w = self.vars[*i].as_tensor().to_dtype(DType::F32)?;
            let g = g.to_dtype(DType::F32)?;
            let tg = if self.cfg.adaptive {
                (w.abs()? * &g)?
            } else {
                g.clone()
            };
            let sq = tg.sqr()?.sum_all()?;
            sum_sq = Some(match sum_sq {
                Some(s) => (s + sq)?,
                None => sq,
            });
            scaled.push((w, g));
        }
        let Some(sum_sq) = sum_sq else {
            return Ok(());
        };
        let norm = f64::from(read::<f32>(&sum_sq)?).sqrt();
        let scale = (self.cfg.rho / (norm + NORM_EPS)) as f32;
        for ((i, _), (w, g)) in gs.iter().zip(scaled) {
            let e = if self.cfg.adaptive {
                mul(&(w.sqr()? * g)?, scale)?
            } else {
                mul(&g, scale)?
            };
            let var = &self.vars[*i];
            var.set(&(w + e)?.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    /// Steps skipped because a gradient held NaN or Inf (policy `NonFinite::Skip`).
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }

    /// The inner optimizer.
    pub fn base(&self) -> &O {
        &self.base
    }

    /// The inner optimizer, mutably (its learning rate, its own settings).
    pub fn base_mut(&mut self) -> &mut O {
        &mut self.base
    }

    /// The configuration.
    pub fn config(&self) -> &SamConfig {
        &self.cfg
    }

    /// Sets `rho` (a schedule may change it), after checking it.
    pub fn set_rho(&mut self, rho: f64) -> Result<()> {
        let cfg = self.cfg.with_rho(rho);
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }
}

/// SAM itself keeps no state between steps: its state is the inner optimizer's.
impl<O: candle_nn::Optimizer + OptimizerState> OptimizerState for Sam<O> {
    fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        self.base.state_dict()
    }

    fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.base.load_state_dict(state)
    }
}
