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

use std::fmt;

use candle_core::Tensor;

use super::checkpoint::{check_beta, check_lr, check_nonneg, grad_sign};
use super::fused::Kernel;
use super::optimizer::internal::{AlgorithmImpl, Hyper, MomentumParam};
use super::optimizer::{Algorithm, Optim};
use super::slots::Slot;
use super::tensor_ops::{add, diff_mul, div, mul};
use super::NonFinite;
use crate::cpu::simd::{self, Isa, Level};
use crate::Result;

/// Adam with L2 weight decay folded into the gradient (PyTorch's `Adam`); see the
/// [module docs](self). The methods are [`Optim`]'s.
pub type Adam = Optim<AdamConfig>;

/// AdamW: Adam with decoupled weight decay (PyTorch's `AdamW`); see the [module docs](self).
/// The methods are [`Optim`]'s.
pub type AdamW = Optim<AdamWConfig>;

/// Configuration of [`Adam`]; `Default` is PyTorch's (lr 1e-3, betas (0.9, 0.999), eps 1e-8,
/// weight decay 0).
pub type AdamConfig = AdamFamilyConfig<false>;

/// Configuration of [`AdamW`]; `Default` is PyTorch's (lr 1e-3, betas (0.9, 0.999), eps 1e-8,
/// weight decay 1e-2).
pub type AdamWConfig = AdamFamilyConfig<true>;

/// The fields and builders [`AdamConfig`] (`DECOUPLED = false`) and [`AdamWConfig`]
/// (`DECOUPLED = true`) share; use it through those two names.
#[derive(Clone, Copy, PartialEq)]
pub struct AdamFamilyConfig<const DECOUPLED: bool> {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay of the first-moment average (default 0.9).
    pub beta1: f64,
    /// Decay of the second-moment average (default 0.999).
    pub beta2: f64,
    /// Added to the denominator for stability (default 1e-8).
    pub eps: f64,
    /// Adam: L2 penalty added to the gradient (default 0). AdamW: decoupled weight decay, the
    /// weights shrink by `lr * weight_decay` each step (default 1e-2).
    pub weight_decay: f64,
    /// AMSGrad: divide by the running maximum of the second moment (default false).
    pub amsgrad: bool,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
    /// What a NaN/Inf gradient does (default [`NonFinite::Error`]).
    pub non_finite: NonFinite,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self::pytorch(0.0)
    }
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self::pytorch(1e-2)
    }
}

impl<const DECOUPLED: bool> AdamFamilyConfig<DECOUPLED> {
    /// PyTorch's defaults, which differ only in the weight decay.
    fn pytorch(weight_decay: f64) -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            amsgrad: false,
            maximize: false,
            non_finite: NonFinite::Error,
        }
    }

    /// Checks the values: lr and weight decay finite and >= 0, betas in [0, 1), eps finite
    /// and > 0.
    pub fn validate(&self) -> Result<()> {
        let name = <Self as Algorithm>::NAME;
        check_lr(name, self.lr)?;
        check_beta(name, "beta1", self.beta1)?;
        check_beta(name, "beta2", self.beta2)?;
        crate::check::eps(name, "eps", self.eps)?;
        check_nonneg(name, "weight_decay", self.weight_decay)
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

// Written by hand so that it names the alias (`AdamConfig { .. }`), as the derive did when the two
// were separate structs.
impl<const DECOUPLED: bool> fmt::Debug for AdamFamilyConfig<DECOUPLED> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if DECOUPLED {
            "AdamWConfig"
        } else {
            "AdamConfig"
        };
        f.debug_struct(name)
            .field("lr", &self.lr)
            .field("beta1", &self.beta1)
            .field("beta2", &self.beta2)
            .field("eps", &self.eps)
            .field("weight_decay", &self.weight_decay)
            .field("amsgrad", &self.amsgrad)
            .field("maximize", &self.maximize)
            .field("non_finite", &self.non_finite)
            .finish()
    }
}

/// The same values, the weight decay now L2.
impl From<AdamWConfig> for AdamConfig {
    fn from(c: AdamWConfig) -> Self {
        Self {
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

/// One block of [`AdamKernel::run`]: parameter, gradient and state slices of equal length.
struct AdamLoop<'a> {
    k: &'a AdamKernel,
    p: &'a mut [f32],
    g: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    /// AMSGrad's running maximum of `v`.
    vm: Option<&'a mut [f32]>,
}

impl simd::Kernel for AdamLoop<'_> {
    type Output = ();

    #[inline(always)]
    fn run<S: Isa>(self, _: S) {
        let AdamLoop { k, p, g, m, v, vm } = self;
        let (gs, l2, decay, w1, b2, w2) = (k.gs, k.l2, k.decay, k.w1, k.b2, k.w2);
        let (bc, eps, ss) = (k.bc2_sqrt, k.eps, k.step_size);
        match vm {
            None => {
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
            Some(vm) => {
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
        }
    }
}

impl Kernel for AdamKernel {
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize) {
        let n = p.len();
        let (m, v, vm) = match (self.amsgrad, s) {
            (false, [m, v, ..]) => (&mut m[off..off + n], &mut v[off..off + n], None),
            (true, [m, v, vm, ..]) => (
                &mut m[off..off + n],
                &mut v[off..off + n],
                Some(&mut vm[off..off + n]),
            ),
            _ => return,
        };
        // Memory-bound with a square root and a division per element: the loop is compiled
        // for the widest vectors this CPU has (plain multiplies and adds, no fused ones, so every
        // level rounds alike).
        Level::detect().run(AdamLoop {
            k: self,
            p,
            g,
            m,
            v,
            vm,
        });
    }

    fn run_tensor(
        &self,
        p: &Tensor,
        g: &Tensor,
        s: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let [Some(m), Some(v), rest @ ..] = s else {
            return Err(candle_core::Error::Msg(
                "Adam: state buffers missing".into(),
            ));
        };
        let g = (mul(g, self.gs)? + mul(p, self.l2)?)?;
        let nm = (&*m + diff_mul(&g, m, self.w1)?)?;
        let nv = (mul(v, self.b2)? + mul(&g.sqr()?, self.w2)?)?;
        let den = match (self.amsgrad, rest) {
            (true, [Some(vm), ..]) => {
                let mx = vm.maximum(&nv)?;
                let den = mx.sqrt()?;
                *vm = mx;
                den
            }
            _ => nv.sqrt()?,
        };
        let den = add(&div(&den, self.bc2_sqrt)?, self.eps)?;
        let new = (mul(p, self.decay)? - mul(&(&nm / den)?, self.step_size)?)?;
        *m = nm;
        *v = nv;
        Ok(new)
    }
}

impl<const DECOUPLED: bool> Algorithm for AdamFamilyConfig<DECOUPLED> {
    const NAME: &'static str = if DECOUPLED { "AdamW" } else { "Adam" };
    const BUFFERS: &'static [&'static str] = &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"];

    fn validate(&self) -> Result<()> {
        AdamFamilyConfig::validate(self)
    }
}

impl<const DECOUPLED: bool> AlgorithmImpl for AdamFamilyConfig<DECOUPLED> {
    fn hyper(&mut self) -> Hyper<'_> {
        Hyper {
            lr: &mut self.lr,
            weight_decay: &mut self.weight_decay,
            non_finite: &mut self.non_finite,
            options: vec![],
            values: vec![
                ("beta1", &mut self.beta1),
                ("beta2", &mut self.beta2),
                ("eps", &mut self.eps),
            ],
            flags: vec![
                ("amsgrad", &mut self.amsgrad),
                ("maximize", &mut self.maximize),
            ],
        }
    }

    fn kernel(&self, slot: &mut Slot, lr: f64, wd: f64) -> Result<Box<dyn Kernel>> {
        slot.ensure(0, 0.0)?;
        slot.ensure(1, 0.0)?;
        if self.amsgrad {
            slot.ensure(2, 0.0)?;
        }
        let t = slot.step as f64;
        let bc1 = 1.0 - self.beta1.powf(t);
        let bc2 = 1.0 - self.beta2.powf(t);
        let (l2, decay) = weight_decay_terms(DECOUPLED, lr, wd);
        Ok(Box::new(AdamKernel {
            gs: grad_sign(self.maximize),
            l2: l2 as f32,
            decay: decay as f32,
            w1: (1.0 - self.beta1) as f32,
            b2: self.beta2 as f32,
            w2: (1.0 - self.beta2) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            eps: self.eps as f32,
            step_size: (lr / bc1) as f32,
            amsgrad: self.amsgrad,
        }))
    }
}

impl<const DECOUPLED: bool> MomentumParam for AdamFamilyConfig<DECOUPLED> {
    fn momentum_mut(&mut self) -> &mut f64 {
        &mut self.beta1
    }
}

/// The `(l2, decay)` factors of a step with weight decay `wd` at rate `lr`: L2 adds `wd · p` to
/// the gradient (`(wd, 1)`), decoupled decay (AdamW, Loshchilov & Hutter) shrinks the weight by
/// `1 − lr · wd` outside the adaptive step (`(0, 1 − lr · wd)`). Shared by the Adam variants.
pub(super) fn weight_decay_terms(decoupled: bool, lr: f64, wd: f64) -> (f64, f64) {
    if decoupled {
        (0.0, 1.0 - lr * wd)
    } else {
        (wd, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::simd::{with_cap, Cap};

    /// The kernel gives the same bits at every SIMD level (plain multiplies and adds, correctly
    /// rounded square root and divisions), with and without AMSGrad.
    #[test]
    fn same_bits_at_every_level() {
        let n = 1000;
        let wave = |k: f32| (0..n).map(|i| (k * i as f32).sin()).collect::<Vec<f32>>();
        for amsgrad in [false, true] {
            let k = AdamKernel {
                gs: 1.0,
                l2: 0.0,
                decay: 1.0 - 1e-3 * 1e-2,
                w1: 0.1,
                b2: 0.999,
                w2: 1e-3,
                bc2_sqrt: (1.0f32 - 0.999 * 0.999).sqrt(),
                eps: 1e-8,
                step_size: 1e-3 / (1.0 - 0.81),
                amsgrad,
            };
            let run = |cap| {
                let (mut p, g) = (wave(0.3), wave(1.7));
                let (mut m, mut v, mut vm) = (wave(0.9), wave(0.2), wave(0.4));
                for x in v.iter_mut().chain(vm.iter_mut()) {
                    *x = x.abs();
                }
                with_cap(cap, || {
                    let mut s: [&mut [f32]; 3] = [&mut m, &mut v, &mut vm];
                    Kernel::run(&k, &mut p, &g, &mut s, 0);
                });
                [p, m, v, vm].map(|b| b.iter().map(|x| x.to_bits()).collect::<Vec<u32>>())
            };
            let want = run(Cap::All);
            for cap in [Cap::Scalar, Cap::Avx2] {
                assert_eq!(run(cap), want, "cap {cap:?}, amsgrad {amsgrad}");
            }
        }
    }
}
