//! LoRA, low-rank adaptation (peft's `LoraConfig`): a frozen pre-trained layer plus a trainable
//! low-rank update, for linear layers ([`LoraLinear`]) and 2-D convolutions ([`LoraConv2d`]).
//!
//! # Shapes
//! - [`LoraLinear`]: input `(…, in)`, output `(…, out)`; base `weight` `(out, in)` and `bias`
//!   `(out)`, `lora_A.weight` `(r, in)`, `lora_B.weight` `(out, r)`.
//! - [`LoraConv2d`]: input `(B, Cin, H, W)`, output `(B, Cout, Ho, Wo)`; base `weight`
//!   `(Cout, Cin, kh, kw)` and `bias` `(Cout)`, `lora_A.weight` `(r, Cin, kh, kw)` (a
//!   convolution with the base's kernel, stride, padding and dilation), `lora_B.weight`
//!   `(Cout, r, 1, 1)` (a 1×1 convolution).
//!
//! The adapter tensors carry the names of a peft adapter file (`adapter_model.safetensors`
//! stores `base_model.model.<module>.lora_A.weight`, the adapter name removed), so
//! `lora_linear(w, b, cfg, vb.pp("base_model.model.fc"))` loads a peft adapter trained in Python.
//! Inside a live peft model the same tensors are `lora_A.default.weight` and the base is
//! `base_layer.weight`: [`LoraLinear::named_tensors`] lists them under those names.
//!
//! # Tip
//! Fine-tune a large pre-trained layer by learning $\Delta W = \frac{\alpha}{r} B A$ with
//! $A \in \mathbb{R}^{r \times in}$, $B \in \mathbb{R}^{out \times r}$ and $r \ll \min(in, out)$:
//! $y = x W^\top + b + \frac{\alpha}{r} \mathrm{dropout}(x) A^\top B^\top$. The base weight
//! stays frozen (a plain tensor, outside [`LoraLinear::trainable_vars`]), so the optimizer keeps
//! state for $r (in + out)$ parameters instead of $in \cdot out$: at $r = 8$ on a `4096 × 4096`
//! layer that is 0.4 % of them, and a fine-tuned task ships as a few hundred kilobytes next to
//! the shared checkpoint. $B$ starts at zero, so training starts exactly at the pre-trained
//! model. For inference, [`merge`](LoraLinear::merge) folds $\Delta W$ into $W$ and the adapter
//! costs nothing; [`unmerge`](LoraLinear::unmerge) takes it out again to switch tasks.
//! Trade-off: a rank-$r$ update cannot express every fine-tune; raise `r` (and keep
//! $\alpha / r$ fixed) when the task is far from pre-training, or fine-tune fully.
//!
//! A base weight taken from a `VarMap` still shares storage with its var: hand the optimizer
//! [`LoraLinear::trainable_vars`] (or select with [`crate::transfer::trainable_by`]), never
//! `varmap.all_vars()`, or the "frozen" base moves.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::transfer::{lora_linear, LoraConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let (w, b) = (Tensor::randn(0f32, 1., (64, 32), &dev)?, Tensor::zeros(64, DType::F32, &dev)?);
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! let mut layer = lora_linear(w.clone(), Some(b), LoraConfig::default().with_r(4), vb)?;
//! // Only A (4 × 32) and B (64 × 4) train: 384 parameters instead of 2048 + 64.
//! let n: usize = layer.trainable_vars().iter().map(|v| v.elem_count()).sum();
//! assert_eq!(n, 4 * 32 + 64 * 4);
//! // B starts at zero: the wrapped layer is the pre-trained one.
//! let x = Tensor::randn(0f32, 1., (5, 32), &dev)?;
//! let y = layer.forward_t(&x, false)?;
//! assert!((&y - x.matmul(&w.t()?)?)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
//! // Merging folds the update into the weight; unmerging restores it.
//! layer.merge()?;
//! layer.unmerge()?;
//! assert!((layer.weight() - &w)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-6);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Hu et al., *LoRA: Low-Rank Adaptation of Large Language Models*, 2021,
//!   <https://arxiv.org/abs/2106.09685>

use crate::ops::{conv2d, linear, Conv2dConfig};
use crate::{check, Error, Result};
use candle_core::{ModuleT, Tensor, Var};
use candle_nn::{Init, VarBuilder};

const LINEAR: &str = "LoraLinear";
const CONV: &str = "LoraConv2d";

/// Configuration of a LoRA adapter, peft's `LoraConfig` names; `Default` is peft's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraConfig {
    /// Rank `r` of the update, > 0. Default 8.
    pub r: usize,
    /// `α`: the update is scaled by `α / r`, finite and > 0. Default 8.
    pub lora_alpha: f64,
    /// Dropout probability on the adapter's input (training only), in `[0, 1)`. Default 0.
    pub lora_dropout: f64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
        }
    }
}

impl LoraConfig {
    /// Sets the rank `r`.
    pub fn with_r(mut self, r: usize) -> Self {
        self.r = r;
        self
    }

    /// Sets `α` (`lora_alpha`).
    pub fn with_lora_alpha(mut self, lora_alpha: f64) -> Self {
        self.lora_alpha = lora_alpha;
        self
    }

    /// Sets the dropout probability (`lora_dropout`).
    pub fn with_lora_dropout(mut self, lora_dropout: f64) -> Self {
        self.lora_dropout = lora_dropout;
        self
    }

    /// The factor `α / r` applied to the update.
    pub fn scaling(&self) -> f64 {
        self.lora_alpha / self.r as f64
    }

    /// Checks `r > 0`, `α` finite and > 0, and the dropout in `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        self.validate_for("LoraConfig")
    }

    pub(super) fn validate_for(&self, block: &'static str) -> Result<()> {
        check::positive(block, "r", self.r)?;
        if !(self.lora_alpha.is_finite() && self.lora_alpha > 0.0) {
            let msg = format!("lora_alpha must be finite and > 0, got {}", self.lora_alpha);
            return Err(Error::config(block, msg));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            let msg = format!("lora_dropout must be in [0, 1), got {}", self.lora_dropout);
            return Err(Error::config(block, msg));
        }
        Ok(())
    }
}

/// The state both adapters share: the frozen base, the trainable pair and whether the update is
/// folded into the base.
#[derive(Debug, Clone)]
pub(super) struct LowRank {
    pub(super) weight: Tensor,
    pub(super) bias: Option<Tensor>,
    pub(super) lora_a: Var,
    pub(super) lora_b: Var,
    pub(super) cfg: LoraConfig,
    pub(super) merged: bool,
}

impl LowRank {
    /// Checks the tensors (already known to be of the right rank) against the base weight and
    /// freezes the base: `detach` leaves it out of every gradient.
    pub(super) fn new(
        block: &'static str,
        weight: Tensor,
        bias: Option<Tensor>,
        lora_a: Tensor,
        lora_b: Tensor,
        cfg: LoraConfig,
    ) -> Result<Self> {
        cfg.validate_for(block)?;
        if !weight.dtype().is_float() {
            let dt = weight.dtype();
            return Err(Error::unsupported_dtype(
                block,
                "weight",
                "a float dtype",
                dt,
            ));
        }
        check::non_empty(block, "weight", &weight)?;
        let dims = weight.dims();
        let (out, r) = (dims[0], cfg.r);
        check::bias(block, &weight, bias.as_ref(), out)?;
        let mut a_dims = dims.to_vec();
        a_dims[0] = r;
        let mut b_dims = vec![out, r];
        b_dims.resize(dims.len(), 1);
        for (what, t, want) in [("lora_A", &lora_a, a_dims), ("lora_B", &lora_b, b_dims)] {
            check::same_dtype_device(block, what, &weight, t)?;
            if t.dims() != want.as_slice() {
                return Err(Error::shape(
                    block,
                    what,
                    format!("{want:?}"),
                    t.shape().clone(),
                ));
            }
        }
        Ok(Self {
            weight: weight.detach(),
            bias: bias.map(|b| b.detach()),
            lora_a: Var::from_tensor(&lora_a)?,
            lora_b: Var::from_tensor(&lora_b)?,
            cfg,
            merged: false,
        })
    }

    /// $\frac{\alpha}{r} B A$ in the base weight's shape, outside the autograd graph.
    fn delta(&self) -> Result<Tensor> {
        let (out, r) = (self.weight.dims()[0], self.cfg.r);
        let a = self.lora_a.as_tensor().detach().flatten_from(1)?;
        let b = self.lora_b.as_tensor().detach().reshape((out, r))?;
        let d = b.matmul(&a)?.reshape(self.weight.shape())?;
        Ok(d.affine(self.cfg.scaling(), 0.0)?)
    }

    pub(super) fn merge(&mut self) -> Result<()> {
        if !self.merged {
            self.weight = (&self.weight + self.delta()?)?;
            self.merged = true;
        }
        Ok(())
    }

    pub(super) fn unmerge(&mut self) -> Result<()> {
        if self.merged {
            self.weight = (&self.weight - self.delta()?)?;
            self.merged = false;
        }
        Ok(())
    }

    /// The adapter's input: `x` through dropout when training.
    fn dropped(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let p = self.cfg.lora_dropout;
        if train && p > 0.0 {
            Ok(candle_nn::ops::dropout(x, p as f32)?)
        } else {
            Ok(x.clone())
        }
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut v = vec![("base_layer.weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("base_layer.bias".to_string(), b.clone()));
        }
        v.push((
            "lora_A.default.weight".into(),
            self.lora_a.as_tensor().clone(),
        ));
        v.push((
            "lora_B.default.weight".into(),
            self.lora_b.as_tensor().clone(),
        ));
        v
    }
}

/// Loads (or creates, from a `VarMap`) `lora_A.weight` with peft's init (Kaiming-uniform with
/// $a = \sqrt{5}$, i.e. uniform in $\pm 1/\sqrt{fan_{in}}$) and `lora_B.weight` at zero.
pub(super) fn load_pair(
    block: &'static str,
    weight: &Tensor,
    r: usize,
    vb: &VarBuilder,
) -> Result<(Tensor, Tensor)> {
    let dims = weight.dims();
    let fan_in = check::numel(block, "weight", &dims[1..], weight.dtype())?;
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    let mut a_dims = dims.to_vec();
    a_dims[0] = r;
    let mut b_dims = vec![dims[0], r];
    b_dims.resize(dims.len(), 1);
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let a = check::param(block, vb, a_dims, "lora_A.weight", init)?;
    let b = check::param(block, vb, b_dims, "lora_B.weight", Init::Const(0.0))?;
    let (a, b) = (a.to_dtype(weight.dtype())?, b.to_dtype(weight.dtype())?);
    Ok((a.to_device(weight.device())?, b.to_device(weight.device())?))
}

/// A frozen linear layer plus a trainable low-rank update (peft's `lora.Linear`); see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct LoraLinear {
    core: LowRank,
}

impl LoraLinear {
    /// Wraps the base `weight` `(out, in)` and `bias` `(out)` with the adapter `lora_a` `(r, in)`
    /// and `lora_b` `(out, r)`. A `Var` passed as `lora_a` or `lora_b` is trained in place;
    /// a plain tensor is copied into a new `Var`.
    ///
    /// Errors (naming `LoraLinear`) on an invalid config, a weight that is not 2-D or not a
    /// float dtype, a wrong bias or adapter shape, or mixed dtypes or devices.
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        lora_a: Tensor,
        lora_b: Tensor,
        cfg: LoraConfig,
    ) -> Result<Self> {
        check::rank(LINEAR, "weight", &weight, 2, "(out, in)")?;
        let core = LowRank::new(LINEAR, weight, bias, lora_a, lora_b, cfg)?;
        Ok(Self { core })
    }

    /// The base weight `(out, in)`, including the update while merged.
    pub fn weight(&self) -> &Tensor {
        &self.core.weight
    }

    /// The base bias `(out)`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.core.bias.as_ref()
    }

    /// `lora_A` `(r, in)`.
    pub fn lora_a(&self) -> &Var {
        &self.core.lora_a
    }

    /// `lora_B` `(out, r)`.
    pub fn lora_b(&self) -> &Var {
        &self.core.lora_b
    }

    /// The trainable variables, `[lora_A, lora_B]`: give these (not the model's whole
    /// `VarMap`) to the optimizer.
    pub fn trainable_vars(&self) -> Vec<Var> {
        vec![self.core.lora_a.clone(), self.core.lora_b.clone()]
    }

    /// Whether the update is folded into the weight.
    pub fn is_merged(&self) -> bool {
        self.core.merged
    }

    /// Folds the update into the weight, $W \leftarrow W + \frac{\alpha}{r} B A$, so the forward
    /// pass is one plain linear layer (a no-op when already merged). While merged, the adapter
    /// receives no gradient.
    pub fn merge(&mut self) -> Result<()> {
        self.core.merge()
    }

    /// Takes the update out again, $W \leftarrow W - \frac{\alpha}{r} B A$ (a no-op when not
    /// merged); exact up to rounding.
    pub fn unmerge(&mut self) -> Result<()> {
        self.core.unmerge()
    }

    /// The tensors under the names of a live peft model (`base_layer.weight`,
    /// `base_layer.bias`, `lora_A.default.weight`, `lora_B.default.weight`).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.core.named_tensors()
    }

    /// The configuration.
    pub fn config(&self) -> LoraConfig {
        self.core.cfg
    }
}

impl ModuleT for LoraLinear {
    /// $x W^\top + b + \frac{\alpha}{r} \mathrm{dropout}(x) A^\top B^\top$ (dropout when
    /// `train`); only $x W^\top + b$ while merged.
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let c = &self.core;
        let inp = c.weight.dims()[1];
        if xs.rank() == 0 || xs.dims()[xs.rank() - 1] != inp {
            let want = format!("(…, {inp})");
            return Err(Error::shape(LINEAR, "input", want, xs.shape().clone()).into());
        }
        let y = linear(xs, &c.weight, c.bias.as_ref())?;
        if c.merged {
            return Ok(y);
        }
        let h = linear(&c.dropped(xs, train)?, c.lora_a.as_tensor(), None)?;
        let u = linear(&h, c.lora_b.as_tensor(), None)?;
        y + u.affine(c.cfg.scaling(), 0.0)?
    }
}

/// A [`LoraLinear`] around the pre-trained `weight` `(out, in)` and `bias`, whose
/// `lora_A.weight` (Kaiming-uniform, as peft) and `lora_B.weight` (zeros) come from `vb`: a
/// `VarMap` creates them, a peft adapter file (under `base_model.model.<module>`) loads them.
pub fn lora_linear(
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: LoraConfig,
    vb: VarBuilder,
) -> Result<LoraLinear> {
    check::loading(LINEAR, vb, |vb| {
        cfg.validate_for(LINEAR)?;
        check::rank(LINEAR, "weight", &weight, 2, "(out, in)")?;
        let (a, b) = load_pair(LINEAR, &weight, cfg.r, &vb)?;
        LoraLinear::new(weight, bias, a, b, cfg)
    })
}

/// A frozen 2-D convolution plus a trainable low-rank update (peft's `lora.Conv2d`): `lora_A`
/// is a convolution with the base's kernel and geometry into `r` channels, `lora_B` a 1×1
/// convolution back to `Cout`. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct LoraConv2d {
    core: LowRank,
    conv: Conv2dConfig,
}

impl LoraConv2d {
    /// Wraps the base `weight` `(Cout, Cin, kh, kw)` and `bias` `(Cout)`, applied with `conv`
    /// (stride, padding, dilation; `groups` must be 1), with `lora_a` `(r, Cin, kh, kw)` and
    /// `lora_b` `(Cout, r, 1, 1)`.
    ///
    /// Errors (naming `LoraConv2d`) as [`LoraLinear::new`], and on a weight that is not 4-D or
    /// `groups` other than 1.
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        lora_a: Tensor,
        lora_b: Tensor,
        conv: Conv2dConfig,
        cfg: LoraConfig,
    ) -> Result<Self> {
        check_conv(&weight, conv)?;
        let core = LowRank::new(CONV, weight, bias, lora_a, lora_b, cfg)?;
        Ok(Self { core, conv })
    }

    /// The base weight, including the update while merged.
    pub fn weight(&self) -> &Tensor {
        &self.core.weight
    }

    /// The base bias `(Cout)`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.core.bias.as_ref()
    }

    /// `lora_A` `(r, Cin, kh, kw)`.
    pub fn lora_a(&self) -> &Var {
        &self.core.lora_a
    }

    /// `lora_B` `(Cout, r, 1, 1)`.
    pub fn lora_b(&self) -> &Var {
        &self.core.lora_b
    }

    /// The trainable variables, `[lora_A, lora_B]`.
    pub fn trainable_vars(&self) -> Vec<Var> {
        vec![self.core.lora_a.clone(), self.core.lora_b.clone()]
    }

    /// Whether the update is folded into the weight.
    pub fn is_merged(&self) -> bool {
        self.core.merged
    }

    /// Folds the update into the kernel: $W_{o,i} \leftarrow W_{o,i} + \frac{\alpha}{r}
    /// \sum_k B_{o,k} A_{k,i}$ at every tap (a 1×1 convolution after a $k \times k$ one is one
    /// $k \times k$ convolution). A no-op when already merged.
    pub fn merge(&mut self) -> Result<()> {
        self.core.merge()
    }

    /// Takes the update out of the kernel again (a no-op when not merged).
    pub fn unmerge(&mut self) -> Result<()> {
        self.core.unmerge()
    }

    /// The tensors under the names of a live peft model, as [`LoraLinear::named_tensors`].
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.core.named_tensors()
    }

    /// The LoRA configuration.
    pub fn config(&self) -> LoraConfig {
        self.core.cfg
    }

    /// The base convolution's geometry.
    pub fn conv_config(&self) -> Conv2dConfig {
        self.conv
    }
}

fn check_conv(weight: &Tensor, conv: Conv2dConfig) -> Result<()> {
    check::rank(CONV, "weight", weight, 4, "(Cout, Cin, kh, kw)")?;
    if conv.groups != 1 {
        let msg = format!("groups must be 1, got {}", conv.groups);
        return Err(Error::config(CONV, msg));
    }
    Ok(())
}

impl ModuleT for LoraConv2d {
    /// The base convolution plus $\frac{\alpha}{r}$ `lora_B(lora_A(dropout(x)))` (dropout when
    /// `train`); only the base while merged.
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let c = &self.core;
        check::image_batch(CONV, "input", xs, c.weight.dims()[1], &c.weight)?;
        let mut y = conv2d(xs, &c.weight, self.conv)?;
        if let Some(b) = &c.bias {
            y = y.broadcast_add(&b.reshape((1, (), 1, 1))?)?;
        }
        if c.merged {
            return Ok(y);
        }
        let h = conv2d(&c.dropped(xs, train)?, c.lora_a.as_tensor(), self.conv)?;
        let pointwise = Conv2dConfig::default();
        let u = conv2d(&h, c.lora_b.as_tensor(), pointwise)?;
        y + u.affine(c.cfg.scaling(), 0.0)?
    }
}

/// A [`LoraConv2d`] around the pre-trained `weight` and `bias` applied with `conv`, whose
/// `lora_A.weight` and `lora_B.weight` come from `vb` (initialised as peft when created).
pub fn lora_conv2d(
    weight: Tensor,
    bias: Option<Tensor>,
    conv: Conv2dConfig,
    cfg: LoraConfig,
    vb: VarBuilder,
) -> Result<LoraConv2d> {
    check::loading(CONV, vb, |vb| {
        cfg.validate_for(CONV)?;
        check_conv(&weight, conv)?;
        let (a, b) = load_pair(CONV, &weight, cfg.r, &vb)?;
        LoraConv2d::new(weight, bias, a, b, conv, cfg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        assert!(LoraConfig::default().validate().is_ok());
        assert!(LoraConfig::default().with_r(0).validate().is_err());
        for a in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(LoraConfig::default().with_lora_alpha(a).validate().is_err());
        }
        for p in [-0.1, 1.0, f64::NAN] {
            assert!(LoraConfig::default()
                .with_lora_dropout(p)
                .validate()
                .is_err());
        }
        assert_eq!(LoraConfig::default().with_r(4).scaling(), 2.0);
    }
}
