//! Adam (with L2 weight decay) and AdamW (with decoupled weight decay), PyTorch's
//! `torch.optim.Adam` / `torch.optim.AdamW` including AMSGrad; both run the same fused kernel,
//! a flag selects where the decay goes.
//!
//! # Update
//! With gradient $g_t$ (negated when `maximize`), step $t$ counted per parameter, learning rate
//! $\gamma$, weight decay $\lambda$:
//!
//! $$\text{Adam: } g_t \leftarrow g_t + \lambda \theta_{t-1} \qquad
//!   \text{AdamW: } \theta_{t-1} \leftarrow (1 - \gamma \lambda)\thinspace \theta_{t-1}$$
//! $$m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2$$
//! $$\hat v_t = \max(\hat v_{t-1}, v_t) \text{ (AMSGrad) or } v_t$$
//! $$\theta_t = \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} \cdot
//!   \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}$$
//!
//! State per parameter: `exp_avg` ($m$), `exp_avg_sq` ($v$) and with AMSGrad `max_exp_avg_sq`,
//! all f32 whatever the parameter dtype.
//!
//! # References
//! - Kingma, Ba, *Adam: A Method for Stochastic Optimization*, 2014,
//!   <https://arxiv.org/abs/1412.6980>
//! - Loshchilov, Hutter, *Decoupled Weight Decay Regularization*, ICLR 2019,
//!   <https://arxiv.org/abs/1711.05101>
//! - Reddi, Kale, Kumar, *On the Convergence of Adam and Beyond*, ICLR 2018 (AMSGrad),
//!   <https://arxiv.org/abs/1904.09237>

use std::collections::HashMap;

use candle_core::backprop::GradStore;

use super::fused::{check_beta, check_lr, check_nonneg, grad_sign, optimizer_common, Core, Kernel};
use super::{Momentum, NonFinite, ParamGroups};
use crate::Result;

macro_rules! adam_config {
    ($C:ident, $name:literal, $wd:expr, $wd_doc:literal, $what:literal) => {
        #[doc = concat!("Configuration of [`", $name, "`]; `Default` is PyTorch's (lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay ", $wd_doc, ").")]
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct $C {
            /// Learning rate (default 1e-3).
            pub lr: f64,
            /// Decay of the first-moment average (default 0.9).
            pub beta1: f64,
            /// Decay of the second-moment average (default 0.999).
            pub beta2: f64,
            /// Added to the denominator for stability (default 1e-8).
            pub eps: f64,
            #[doc = concat!($what, " (default ", $wd_doc, ").")]
            pub weight_decay: f64,
            /// AMSGrad: divide by the running maximum of the second moment (default false).
            pub amsgrad: bool,
            /// Maximize the objective instead of minimizing (default false).
            pub maximize: bool,
            /// What a NaN/Inf gradient does (default [`NonFinite::Error`]).
            pub non_finite: NonFinite,
        }

        impl Default for $C {
            fn default() -> Self {
                Self {
                    lr: 1e-3,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: $wd,
                    amsgrad: false,
                    maximize: false,
                    non_finite: NonFinite::Error,
                }
            }
        }

        impl $C {
            /// Checks the values: lr and weight decay finite and >= 0, betas in [0, 1),
            /// eps finite and > 0.
            pub fn validate(&self) -> Result<()> {
                check_lr($name, self.lr)?;
                check_beta($name, "beta1", self.beta1)?;
                check_beta($name, "beta2", self.beta2)?;
                crate::check::eps($name, "eps", self.eps)?;
                check_nonneg($name, "weight_decay", self.weight_decay)
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

            /// Turns AMSGrad on or off.
            pub fn with_amsgrad(mut self, amsgrad: bool) -> Self {
                self.amsgrad = amsgrad;
                self
            }

            /// Maximizes instead of minimizing.
            pub fn with_maximize(mut self, maximize: bool) -> Self {
                self.maximize = maximize;
                self
            }

            /// Sets the non-finite gradient policy.
            pub fn with_non_finite(mut self, non_finite: NonFinite) -> Self {
                self.non_finite = non_finite;
                self
            }
        }
    };
}

adam_config!(
    AdamConfig,
    "Adam",
    0.0,
    "0",
    "L2 penalty added to the gradient"
);
adam_config!(
    AdamWConfig,
    "AdamW",
    1e-2,
    "1e-2",
    "Decoupled weight decay: the weights shrink by `lr * weight_decay` each step"
);

const BUFS: &[&str] = &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"];
const HYPER: &[&str] = &[
    "beta1",
    "beta2",
    "eps",
    "weight_decay",
    "amsgrad",
    "maximize",
];

/// The fused Adam/AdamW update (see the module docs). `l2`: the L2 coefficient (0 for AdamW),
/// `decay`: the decoupled factor `1 - lr wd` (1 for Adam).
struct AdamKernel {
    gs: f32,
    l2: f32,
    decay: f32,
    w1: f32,
    b2: f32,
    w2: f32,
    bc2_sqrt: f32,
    eps: f32,
    step_size: f32,
    amsgrad: bool,
}

impl Kernel for AdamKernel {
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize) {
        let n = p.len();
        let (gs, l2, decay, w1, b2, w2) = (self.gs, self.l2, self.decay, self.w1, self.b2, self.w2);
        let (bc, eps, ss) = (self.bc2_sqrt, self.eps, self.step_size);
        match (self.amsgrad, s) {
            (false, [m, v, ..]) => {
                let (m, v) = (&mut m[off..off + n], &mut v[off..off + n]);
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    let th = *p;
                    let g = gs * g + l2 * th;
                    let nm = *m + w1 * (g - *m);
                    let nv = b2 * *v + w2 * (g * g);
                    *m = nm;
                    *v = nv;
                    *p = th * decay - ss * (nm / (nv.sqrt() / bc + eps));
                }
            }
            (true, [m, v, vm, ..]) => {
                let (m, v, vm) = (
                    &mut m[off..off + n],
                    &mut v[off..off + n],
                    &mut vm[off..off + n],
                );
                let it = p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut());
                for ((((p, &g), m), v), vm) in it.zip(vm.iter_mut()) {
                    let th = *p;
                    let g = gs * g + l2 * th;
                    let nm = *m + w1 * (g - *m);
                    let nv = b2 * *v + w2 * (g * g);
                    let mx = vm.max(nv);
                    *m = nm;
                    *v = nv;
                    *vm = mx;
                    *p = th * decay - ss * (nm / (mx.sqrt() / bc + eps));
                }
            }
            _ => {}
        }
    }
}

/// The step shared by Adam and AdamW.
fn adam_step(core: &mut Core, c: &AdamConfig, decoupled: bool, grads: &GradStore) -> Result<()> {
    let Some(list) = core.gather(grads)? else {
        return Ok(());
    };
    let mut work = Vec::with_capacity(list.len());
    for (i, g) in list {
        let (lr, wd) = core.lr_wd(i, c.weight_decay);
        let slot = &mut core.slots[i];
        slot.step += 1;
        slot.ensure(0, 0.0);
        slot.ensure(1, 0.0);
        if c.amsgrad {
            slot.ensure(2, 0.0);
        }
        let t = slot.step as f64;
        let bc1 = 1.0 - c.beta1.powf(t);
        let bc2 = 1.0 - c.beta2.powf(t);
        let (l2, decay) = if decoupled {
            (0.0, 1.0 - lr * wd)
        } else {
            (wd, 1.0)
        };
        let k = AdamKernel {
            gs: grad_sign(c.maximize),
            l2: l2 as f32,
            decay: decay as f32,
            w1: (1.0 - c.beta1) as f32,
            b2: c.beta2 as f32,
            w2: (1.0 - c.beta2) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            eps: c.eps as f32,
            step_size: (lr / bc1) as f32,
            amsgrad: c.amsgrad,
        };
        work.push((i, g, k));
    }
    core.apply_all(work)
}

fn hyper_of(c: &AdamConfig) -> Vec<(&'static str, f64)> {
    vec![
        ("beta1", c.beta1),
        ("beta2", c.beta2),
        ("eps", c.eps),
        ("weight_decay", c.weight_decay),
        ("amsgrad", c.amsgrad as u8 as f64),
        ("maximize", c.maximize as u8 as f64),
    ]
}

impl From<AdamWConfig> for AdamConfig {
    fn from(c: AdamWConfig) -> Self {
        AdamConfig {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            amsgrad: c.amsgrad,
            maximize: c.maximize,
            non_finite: c.non_finite,
        }
    }
}

macro_rules! adam_type {
    ($T:ident, $C:ident, $name:literal, $decoupled:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug)]
        pub struct $T {
            core: Core,
            cfg: $C,
        }

        impl $T {
            const HYPER: &'static [&'static str] = HYPER;

            fn build(groups: ParamGroups, cfg: $C) -> Result<Self> {
                cfg.validate()?;
                let core = Core::new($name, BUFS, groups, cfg.lr, cfg.non_finite)?;
                Ok(Self { core, cfg })
            }

            fn hyper(&self) -> Vec<(&'static str, f64)> {
                hyper_of(&self.cfg.into())
            }

            fn apply_hyper(c: &mut $C, v: &HashMap<&'static str, f64>) {
                c.beta1 = v["beta1"];
                c.beta2 = v["beta2"];
                c.eps = v["eps"];
                c.weight_decay = v["weight_decay"];
                c.amsgrad = v["amsgrad"] != 0.0;
                c.maximize = v["maximize"] != 0.0;
            }

            fn step_impl(&mut self, grads: &GradStore) -> Result<()> {
                let c: AdamConfig = self.cfg.into();
                adam_step(&mut self.core, &c, $decoupled, grads)
            }
        }

        optimizer_common!($T, $C);

        impl Momentum for $T {
            fn momentum(&self) -> f64 {
                self.cfg.beta1
            }

            fn set_momentum(&mut self, momentum: f64) -> Result<()> {
                let cfg = $C {
                    beta1: momentum,
                    ..self.cfg
                };
                cfg.validate()?;
                self.cfg = cfg;
                Ok(())
            }
        }
    };
}

adam_type!(
    Adam,
    AdamConfig,
    "Adam",
    false,
    "Adam with L2 weight decay folded into the gradient (PyTorch's `Adam`); see the [module docs](self)."
);
adam_type!(
    AdamW,
    AdamWConfig,
    "AdamW",
    true,
    "AdamW: Adam with decoupled weight decay (PyTorch's `AdamW`); see the [module docs](self)."
);
