//! Adafactor (Shazeer & Stern 2018), PyTorch's `torch.optim.Adafactor`: a second-moment
//! estimate kept *factored* for matrices, as a row average and a column average, so an
//! $n \times m$ weight costs $n + m$ state values instead of Adam's $2nm$; no first moment; a
//! step relative to the weights' scale, clipped by its own RMS.
//!
//! # Update
//! With gradient $G_t$ (negated when `maximize`), step $t$, learning rate $\gamma$, weight
//! decay $\lambda$, $\hat\beta_t = t^{c}$ (`beta2_decay` $c \le 0$, so $\hat\beta_1 = 1$):
//!
//! $$\rho_t = \min(\gamma, 1 / \sqrt{t}), \qquad
//!   \alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\thinspace\rho_t$$
//! $$R_t = R_{t-1} + \hat\beta_t\thinspace(\tfrac{1}{m}\textstyle\sum_j G_t^2 - R_{t-1}), \qquad
//!   C_t = C_{t-1} + \hat\beta_t\thinspace(\tfrac{1}{n}\textstyle\sum_i G_t^2 - C_{t-1})$$
//! $$V_t = \frac{R_t C_t}{\max(\frac{1}{n}\sum_i R_t, \epsilon_1)}, \qquad
//!   U_t = \frac{G_t}{\sqrt{\max(V_t, \epsilon_1^2)}}$$
//! $$\theta_t = (1 - \gamma\lambda)\thinspace\theta_{t-1} -
//!   \frac{\alpha_t}{\max(1, \mathrm{RMS}(U_t) / d)}\thinspace U_t$$
//!
//! for parameters of two or more dimensions (factored over the last two; leading dimensions
//! are a batch of matrices); 0-d and 1-D parameters keep the full average
//! $V_t = V_{t-1} + \hat\beta_t (G_t^2 - V_{t-1})$. $\epsilon_1$ defaults to the parameter
//! dtype's machine epsilon. State: `row_var` ($R$, shape `[..., n, 1]`), `col_var` ($C$,
//! `[..., 1, m]`) or `variance` ($V$, the parameter's shape), f32.
//!
//! The row and column averages are reduced with candle ops; the update then runs as a
//! two-pass fused kernel: the first pass reduces $\mathrm{RMS}(\theta)$ and
//! $\mathrm{RMS}(U)$, the second applies the step. On the tensor path each parameter reads its
//! two norms to the host once per step.
//!
//! # Tip
//! **Adafactor when optimizer memory is the limit.** Adam keeps two f32 values per weight
//! (8 bytes); Adafactor keeps $n + m$ per $n \times m$ matrix, next to nothing, which is why
//! T5 and PaLM were trained with it. The relative step ($\alpha_t$ proportional to the weights'
//! RMS) and the update clipping ($d = 1$) replace warmup and make it robust without a tuned
//! learning rate. The price: the factored estimate is coarser than Adam's per-coordinate
//! one, there is no momentum (add it back at Adam's memory cost if training is unstable), and
//! the relative step misbehaves on parameters initialized at zero (it then uses
//! $\epsilon_2 = 10^{-3}$ as the scale).
//!
//! # Example
//! A 512 × 256 matrix keeps 768 state values, against Adam's 262 144:
//! ```
//! use candle_core::{DType, Device, Tensor, Var};
//! use candle_nn::Optimizer;
//! use candle_tricks::optim::{Adafactor, AdafactorConfig, OptimizerState};
//! # fn main() -> candle_tricks::Result<()> {
//! let w = Var::from_tensor(&Tensor::randn(0f32, 0.02, (512, 256), &Device::Cpu)?)?;
//! let mut opt = Adafactor::new(vec![w.clone()], AdafactorConfig::default())?;
//! opt.backward_step(&w.as_tensor().sqr()?.sum_all()?)?;
//! let sd = opt.state_dict()?;
//! assert_eq!(sd["0.row_var"].dims(), &[512, 1]);
//! assert_eq!(sd["0.col_var"].dims(), &[1, 256]);
//! assert!(!sd.contains_key("0.variance"));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Shazeer, Stern, *Adafactor: Adaptive Learning Rates with Sublinear Memory Cost*, ICML
//!   2018, <https://arxiv.org/abs/1804.04235>

use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Storage, Tensor};

use crate::cpu::Element;

use super::checkpoint::{check_lr, check_nonneg, grad_sign};
use super::fused::Kernel;
use super::optimizer::internal::{AlgorithmImpl, Hyper};
use super::optimizer::{Algorithm, Optim};
use super::path::UpdatePath;
use super::slots::{Buf, Slot};
use super::tensor_ops::{div, lerp, mul, read, widen};
use super::NonFinite;
use crate::{Error, Result};

const NAME: &str = "Adafactor";
/// Buffer indices.
const ROW: usize = 0;
const COL: usize = 1;
const FULL: usize = 2;

/// Adafactor; see the [module docs](self). The methods are [`Optim`]'s.
pub type Adafactor = Optim<AdafactorConfig>;

/// Configuration of [`Adafactor`]; `Default` is PyTorch's: lr 1e-2, beta2_decay -0.8,
/// eps (None, 1e-3), d 1, weight decay 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdafactorConfig {
    /// Learning rate, the cap of the relative step $\rho_t$ (default 1e-2).
    pub lr: f64,
    /// Exponent $c \le 0$ of the averaging weight $t^c$ (default -0.8).
    pub beta2_decay: f64,
    /// Floor of the second-moment estimate, squared (`None`, the default: the parameter
    /// dtype's machine epsilon).
    pub eps1: Option<f64>,
    /// Floor of the parameter RMS in the relative step (default 1e-3).
    pub eps2: f64,
    /// Update clipping threshold: the update's RMS is capped at `d` (default 1, >= 1).
    pub d: f64,
    /// Decoupled weight decay (default 0).
    pub weight_decay: f64,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
    /// What a NaN/Inf gradient does (default [`NonFinite::Error`]).
    pub non_finite: NonFinite,
}

impl Default for AdafactorConfig {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            beta2_decay: -0.8,
            eps1: None,
            eps2: 1e-3,
            d: 1.0,
            weight_decay: 0.0,
            maximize: false,
            non_finite: NonFinite::Error,
        }
    }
}

impl AdafactorConfig {
    /// Checks the values: lr and weight decay finite and >= 0, beta2_decay finite and <= 0,
    /// eps1 (when set) and eps2 finite and > 0, d finite and >= 1.
    pub fn validate(&self) -> Result<()> {
        check_lr(NAME, self.lr)?;
        if !(self.beta2_decay.is_finite() && self.beta2_decay <= 0.0) {
            return Err(Error::config(
                NAME,
                format!(
                    "beta2_decay must be finite and <= 0, got {}",
                    self.beta2_decay
                ),
            ));
        }
        if let Some(eps1) = self.eps1 {
            crate::check::eps(NAME, "eps1", eps1)?;
        }
        crate::check::eps(NAME, "eps2", self.eps2)?;
        if !(self.d.is_finite() && self.d >= 1.0) {
            return Err(Error::config(
                NAME,
                format!("d must be finite and >= 1, got {}", self.d),
            ));
        }
        check_nonneg(NAME, "weight_decay", self.weight_decay)
    }

    /// Sets the learning rate.
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    /// Sets beta2_decay.
    pub fn with_beta2_decay(mut self, beta2_decay: f64) -> Self {
        self.beta2_decay = beta2_decay;
        self
    }

    /// Sets both eps (`eps1` `None`: the dtype's machine epsilon).
    pub fn with_eps(mut self, eps1: Option<f64>, eps2: f64) -> Self {
        self.eps1 = eps1;
        self.eps2 = eps2;
        self
    }

    /// Sets the clipping threshold d.
    pub fn with_d(mut self, d: f64) -> Self {
        self.d = d;
        self
    }

    /// Sets the weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
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

/// Machine epsilon of a parameter dtype (torch's `finfo(dtype).eps`).
fn dtype_eps(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => f64::from(half::f16::EPSILON),
        DType::BF16 => f64::from(half::bf16::EPSILON),
        _ => f64::from(f32::EPSILON),
    }
}

/// Whether a parameter of these dims keeps factored statistics.
fn factored(dims: &[usize]) -> bool {
    dims.len() >= 2
}

/// The averaged statistics of the fused path, host copies for the kernel: the row and column
/// averages and, per matrix of the batch, the clamped mean of its row averages.
#[derive(Clone)]
struct Factors {
    row: Vec<f32>,
    col: Vec<f32>,
    row_mean: Vec<f32>,
    n: usize,
    m: usize,
}

/// What both passes need.
#[derive(Clone)]
struct Terms {
    gs: f32,
    /// $\epsilon_1^2$ (the floor of $V$).
    floor: f32,
    eps1: f32,
    /// Factored parameter: (rows n, cols m) of its matrices; `None`: the full `variance`.
    nm: Option<(usize, usize)>,
    /// Host statistics (fused path of a factored parameter).
    factors: Option<Factors>,
}

impl Terms {
    /// $U$ of an element with gradient `g` and second-moment estimate `v`.
    #[inline]
    fn scale(&self, g: f32, v: f32) -> f32 {
        (1.0 / v.max(self.floor).sqrt()) * (self.gs * g)
    }

    /// One block starting at element `at` of the parameter: `f(p, u)` for each element, the
    /// estimate from the row and column factors (walked row segment by row segment, so the
    /// indices cost no per-element division) or from the full average in `s`.
    fn each(
        &self,
        p: &mut [f32],
        g: &[f32],
        s: &mut [&mut [f32]],
        off: usize,
        at: usize,
        mut f: impl FnMut(&mut f32, f32),
    ) {
        let n = p.len().min(g.len());
        let Some(fa) = &self.factors else {
            let Some(full) = s.get(FULL).and_then(|v| v.get(off..off + n)) else {
                return;
            };
            for ((p, &g), &v) in p.iter_mut().zip(g).zip(full) {
                f(p, self.scale(g, v));
            }
            return;
        };
        let mut i = 0;
        while i < n {
            let idx = at + i;
            let (row, c0, b) = (idx / fa.m, idx % fa.m, idx / (fa.n * fa.m));
            let len = (fa.m - c0).min(n - i);
            let (r, mean) = (fa.row[row], fa.row_mean[b]);
            let cols = &fa.col[b * fa.m + c0..b * fa.m + c0 + len];
            let seg = p[i..i + len].iter_mut().zip(&g[i..i + len]).zip(cols);
            for ((p, &g), &c) in seg {
                f(p, self.scale(g, (r * c) / mean));
            }
            i += len;
        }
    }

    /// $U$ as tensor ops over the state tensors.
    fn update_tensor(&self, g: &Tensor, s: &[Option<Tensor>]) -> candle_core::Result<Tensor> {
        let missing = || candle_core::Error::Msg("Adafactor: state buffers missing".into());
        let v = match (self.nm, s) {
            (Some((n, _)), [Some(row), Some(col), ..]) => {
                let rank = row.rank();
                let mean = div(&row.sum_keepdim(rank - 2)?, n as f32)?.maximum(self.eps1)?;
                row.broadcast_mul(col)?.broadcast_div(&mean)?
            }
            (None, [_, _, Some(v), ..]) => v.clone(),
            _ => return Err(missing()),
        };
        v.maximum(self.floor)?.sqrt()?.recip()? * mul(g, self.gs)?
    }
}

/// Pass 1: reduces $\lVert\theta\rVert^2$ and $\lVert U\rVert^2$; the parameter is unchanged.
struct AdafactorNorms {
    t: Terms,
    numel: usize,
    /// $\rho_t$, $\epsilon_2$, d and the decay factor $1 - \gamma\lambda$.
    rho: f64,
    eps2: f64,
    d: f64,
    decay: f32,
    sums: Mutex<Vec<(f64, f64)>>,
}

impl AdafactorNorms {
    fn push(&self, part: (f64, f64)) {
        self.sums
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(part);
    }
}

impl Kernel for AdafactorNorms {
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize) {
        self.run_at(p, g, s, off, 0);
    }

    fn run_at(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize, at: usize) {
        // Four independent f64 sums: no single dependency chain through the block.
        let (mut pp, mut uu, mut k) = ([0f64; 4], [0f64; 4], 0);
        self.t.each(p, g, s, off, at, |p, u| {
            pp[k & 3] += f64::from(*p * *p);
            uu[k & 3] += f64::from(u * u);
            k += 1;
        });
        self.push((pp.iter().sum(), uu.iter().sum()));
    }

    fn run_tensor(
        &self,
        p: &Tensor,
        g: &Tensor,
        s: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let u = self.t.update_tensor(g, s)?;
        let sq = |x: &Tensor| -> candle_core::Result<f64> {
            read::<f64>(&x.to_dtype(DType::F64)?.sqr()?.sum_all()?)
                .map_err(candle_core::Error::wrap)
        };
        self.push((sq(p)?, sq(&u)?));
        Ok(p.clone())
    }

    fn then(&self) -> Option<Box<dyn Kernel>> {
        let mut parts = std::mem::take(&mut *self.sums.lock().unwrap_or_else(|e| e.into_inner()));
        // A fixed summation order whatever order the parallel blocks finished in.
        parts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let (pp, uu) = parts
            .iter()
            .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
        let root_n = (self.numel as f64).sqrt();
        let alpha = self.eps2.max(pp.sqrt() / root_n) * self.rho;
        let denom = 1f64.max(uu.sqrt() / (root_n * self.d));
        Some(Box::new(AdafactorApply {
            t: self.t.clone(),
            decay: self.decay,
            step: (alpha / denom) as f32,
        }))
    }
}

/// Pass 2: $\theta \leftarrow (1 - \gamma\lambda)\theta - s U$.
struct AdafactorApply {
    t: Terms,
    decay: f32,
    step: f32,
}

impl Kernel for AdafactorApply {
    fn run(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize) {
        self.run_at(p, g, s, off, 0);
    }

    fn run_at(&self, p: &mut [f32], g: &[f32], s: &mut [&mut [f32]], off: usize, at: usize) {
        let (decay, step) = (self.decay, self.step);
        self.t
            .each(p, g, s, off, at, |p, u| *p = *p * decay - step * u);
    }

    fn run_tensor(
        &self,
        p: &Tensor,
        g: &Tensor,
        s: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        mul(p, self.decay)? - mul(&self.t.update_tensor(g, s)?, self.step)?
    }
}

/// The statistic `j` of `slot` as a tensor (host buffers copied into one).
fn stat(slot: &Slot, j: usize) -> Result<Tensor> {
    Ok(match &slot.bufs[j] {
        Buf::Host(v) => Tensor::from_slice(v, slot.shapes[j].clone(), &Device::Cpu)?,
        Buf::Dev(t) => t.clone(),
        Buf::Empty => return Err(Error::config(NAME, "state buffer missing")),
    })
}

/// Row and column means of $g^2$ of each `n × m` matrix of the contiguous gradient `g`, in one
/// pass (the tensor path's two candle reductions, the column one strided, cost 4 passes and an
/// input-sized temporary).
fn row_col_means<T: Element>(g: &[T], n: usize, m: usize) -> (Vec<f32>, Vec<f32>) {
    let mats = g.len() / (n * m).max(1);
    let (mut rows, mut cols) = (vec![0f32; mats * n], vec![0f32; mats * m]);
    for ((mat, rs), cs) in g
        .chunks_exact((n * m).max(1))
        .zip(rows.chunks_exact_mut(n.max(1)))
        .zip(cols.chunks_exact_mut(m.max(1)))
    {
        for (row, r) in mat.chunks_exact(m.max(1)).zip(rs.iter_mut()) {
            let mut sum = 0f32;
            for (&v, c) in row.iter().zip(cs.iter_mut()) {
                let v = v.to_f32();
                sum += v * v;
                *c += v * v;
            }
            *r = sum / m as f32;
        }
        for c in cs.iter_mut() {
            *c /= n as f32;
        }
    }
    (rows, cols)
}

/// [`average`] of a host statistic on the fused path, with the same lerp.
fn average_host(slot: &mut Slot, j: usize, mean: &[f32], w: f32) -> Result<()> {
    slot.ensure(j, 0.0)?;
    let avg = slot.bufs[j].host_mut();
    if avg.len() != mean.len() {
        return Err(Error::config(NAME, "statistic of the wrong size"));
    }
    for (a, &x) in avg.iter_mut().zip(mean) {
        *a = if w < 0.5 {
            *a + (x - *a) * w
        } else {
            x - (x - *a) * (1.0 - w)
        };
    }
    Ok(())
}

/// Moves statistic `j` towards `mean` by weight `w` (torch's `lerp_`), zero-initialized.
fn average(slot: &mut Slot, j: usize, mean: &Tensor, w: f32) -> Result<()> {
    slot.ensure(j, 0.0)?;
    let new = lerp(&stat(slot, j)?, mean, w)?;
    slot.bufs[j] = match slot.path {
        UpdatePath::Fused => Buf::Host(new.flatten_all()?.to_vec1::<f32>()?),
        UpdatePath::Tensor => Buf::Dev(new),
    };
    Ok(())
}

impl Algorithm for AdafactorConfig {
    const NAME: &'static str = NAME;
    const BUFFERS: &'static [&'static str] = &["row_var", "col_var", "variance"];

    fn validate(&self) -> Result<()> {
        AdafactorConfig::validate(self)
    }
}

impl AlgorithmImpl for AdafactorConfig {
    fn hyper(&mut self) -> Hyper<'_> {
        Hyper {
            lr: &mut self.lr,
            weight_decay: &mut self.weight_decay,
            non_finite: &mut self.non_finite,
            options: vec![("eps1", &mut self.eps1)],
            values: vec![
                ("beta2_decay", &mut self.beta2_decay),
                ("eps2", &mut self.eps2),
                ("d", &mut self.d),
            ],
            flags: vec![("maximize", &mut self.maximize)],
        }
    }

    fn buffer_shape(j: usize, param: &Shape) -> Shape {
        let mut dims = param.dims().to_vec();
        let r = dims.len();
        match j {
            ROW if factored(&dims) => dims[r - 1] = 1,
            COL if factored(&dims) => dims[r - 2] = 1,
            _ => {}
        }
        Shape::from(dims)
    }

    fn prepare(&self, slot: &mut Slot, g: &Tensor) -> Result<()> {
        let w = (slot.step as f64).powf(self.beta2_decay) as f32;
        let dims = g.dims().to_vec();
        if factored(&dims) && slot.path == UpdatePath::Fused {
            let r = dims.len();
            let (n, m) = (dims[r - 2], dims[r - 1]);
            let g = g.contiguous()?;
            let (s, l) = g.storage_and_layout();
            let Storage::Cpu(c) = &*s else {
                return Err(Error::config(
                    NAME,
                    "a fused-path gradient must be on the CPU",
                ));
            };
            let (rows, cols) = crate::cpu::dispatch_float!(c, NAME, |v: T| {
                Ok::<_, candle_core::Error>(row_col_means::<T>(
                    crate::cpu::contiguous(v, l, NAME)?,
                    n,
                    m,
                ))
            })?;
            average_host(slot, ROW, &rows, w)?;
            return average_host(slot, COL, &cols, w);
        }
        let sq = mul(&widen(g)?, grad_sign(self.maximize))?.sqr()?;
        if factored(&dims) {
            let r = dims.len();
            let rows = div(&sq.sum_keepdim(r - 1)?, dims[r - 1] as f32)?;
            let cols = div(&sq.sum_keepdim(r - 2)?, dims[r - 2] as f32)?;
            average(slot, ROW, &rows, w)?;
            average(slot, COL, &cols, w)
        } else {
            average(slot, FULL, &sq, w)
        }
    }

    fn kernel(&self, slot: &mut Slot, lr: f64, wd: f64) -> Result<Box<dyn Kernel>> {
        let t = slot.step as f64;
        let eps1 = self.eps1.unwrap_or_else(|| dtype_eps(slot.var.dtype()));
        let dims = slot.var.dims().to_vec();
        let nm = factored(&dims).then(|| (dims[dims.len() - 2], dims[dims.len() - 1]));
        let factors = match (nm, slot.path) {
            (Some((n, m)), UpdatePath::Fused) => {
                let row = slot.bufs[ROW].host_mut().to_vec();
                let col = slot.bufs[COL].host_mut().to_vec();
                let row_mean = row
                    .chunks(n.max(1))
                    .map(|c| (c.iter().sum::<f32>() / n as f32).max(eps1 as f32))
                    .collect();
                Some(Factors {
                    row,
                    col,
                    row_mean,
                    n,
                    m,
                })
            }
            _ => None,
        };
        Ok(Box::new(AdafactorNorms {
            t: Terms {
                gs: grad_sign(self.maximize),
                floor: (eps1 * eps1) as f32,
                eps1: eps1 as f32,
                nm,
                factors,
            },
            numel: slot.numel(),
            rho: lr.min(1.0 / t.sqrt()),
            eps2: self.eps2,
            d: self.d,
            decay: (1.0 - lr * wd) as f32,
            sums: Mutex::new(Vec::new()),
        }))
    }
}
