//! The [`NormOp`] fused op (one, two or three operands), parameter checks and
//! dispatch to the CPU kernels.

use super::backward::backward;
use super::forward::forward;
use super::forward::Need;
use super::{OP_GN, OP_LN, OP_RMS};

use crate::cpu::f32_view;
use crate::cpu::{contiguous, dispatch_float, dispatch_float_pair};
use crate::ops::fused::{FusedOp, Grads, Operand, Output};
use candle_core::{CpuStorage, DType, Device, Layout, Shape, Storage, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Layer,
    Rms,
    /// Statistics per (sample, group) of `row / spatial` channels; parameters per channel.
    Group,
}

/// The fused norm: `x` alone, `(x, weight)` or `(x, bias)`, or `(x, weight, bias)`.
#[derive(Debug, Clone, Copy)]
pub(super) struct NormOp {
    pub(super) kind: Kind,
    /// Length of the parameters: `D`, or `C` for group norm.
    pub(super) d: usize,
    /// Values per statistics row: `D`, or `C / G · spatial` for group norm.
    pub(super) row: usize,
    /// Values per channel (group norm; `1` otherwise) and groups per sample.
    pub(super) spatial: usize,
    pub(super) groups: usize,
    pub(super) eps: f32,
    pub(super) has_w: bool,
    pub(super) has_b: bool,
}

impl NormOp {
    pub(super) fn new(
        kind: Kind,
        d: usize,
        eps: f64,
        w: Option<&Tensor>,
        b: Option<&Tensor>,
    ) -> Self {
        Self {
            kind,
            d,
            row: d,
            spatial: 1,
            groups: 1,
            eps: eps as f32,
            has_w: w.is_some(),
            has_b: b.is_some(),
        }
    }

    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Layer => OP_LN,
            Kind::Rms => OP_RMS,
            Kind::Group => OP_GN,
        }
    }

    fn check_param(&self, s: &CpuStorage, l: &Layout, x: &CpuStorage) -> candle_core::Result<()> {
        use candle_core::backend::BackendStorage;
        if s.dtype() != x.dtype() {
            return Err(candle_core::Error::DTypeMismatchBinaryOp {
                lhs: x.dtype(),
                rhs: s.dtype(),
                op: self.name(),
            });
        }
        if l.shape().dims() != [self.d] {
            return Err(candle_core::Error::ShapeMismatchBinaryOp {
                lhs: l.shape().clone(),
                rhs: Shape::from(self.d),
                op: self.name(),
            });
        }
        Ok(())
    }

    fn param_view<'a>(
        &self,
        p: Option<(&'a CpuStorage, &Layout)>,
        x: &CpuStorage,
    ) -> candle_core::Result<Option<std::borrow::Cow<'a, [f32]>>> {
        match p {
            Some((s, l)) => {
                self.check_param(s, l, x)?;
                Ok(Some(f32_view(s, l, self.name())?))
            }
            None => Ok(None),
        }
    }

    fn fwd(&self, x: Operand<'_>, w: Option<Operand<'_>>, b: Option<Operand<'_>>) -> Output {
        let name = self.name();
        let (xs, xl) = x;
        let dims = xl.shape().dims();
        let ok = match self.kind {
            Kind::Group => {
                dims.len() >= 2
                    && dims[1] == self.d
                    && dims[2..].iter().product::<usize>() == self.spatial
            }
            _ => dims.last() == Some(&self.d),
        };
        if !ok {
            return Err(candle_core::Error::ShapeMismatchBinaryOp {
                lhs: xl.shape().clone(),
                rhs: Shape::from(self.d),
                op: name,
            });
        }
        let wv = self.param_view(w, xs)?;
        let bv = self.param_view(b, xs)?;
        let out = dispatch_float!(xs, name, |v: T| {
            let v = contiguous(v, xl, name)?;
            let y = forward::<T>(self, v, wv.as_deref(), bv.as_deref());
            Ok::<_, candle_core::Error>(<T as candle_core::WithDType>::to_cpu_storage_owned(y))
        })?;
        Ok((out, xl.shape().clone()))
    }

    /// `(grad_x, grad_weight if w is given, grad_bias if the op has a bias)`.
    fn bwd_impl(
        &self,
        x: &Tensor,
        w: Option<&Tensor>,
        grad: &Tensor,
    ) -> candle_core::Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let (dtype, d) = (x.dtype(), self.d);
        let x = x.contiguous()?;
        let grad = grad.contiguous()?;
        let wv = match w {
            Some(w) => Some(w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        let need = Need {
            dw: wv.is_some(),
            db: self.has_b,
        };
        let (gx, dw, db) = {
            let (xs, xl) = x.storage_and_layout();
            let (gs, gl) = grad.storage_and_layout();
            let (xc, gc) = match (&*xs, &*gs) {
                (Storage::Cpu(a), Storage::Cpu(b)) => (a, b),
                _ => candle_core::bail!("{name}: the backward pass runs on CPU only"),
            };
            if gl.shape() != xl.shape() {
                return Err(candle_core::Error::ShapeMismatchBinaryOp {
                    lhs: xl.shape().clone(),
                    rhs: gl.shape().clone(),
                    op: name,
                });
            }
            dispatch_float_pair!(xc, gc, name, |xv, gv: T| {
                let xv = contiguous(xv, xl, name)?;
                let gv = contiguous(gv, gl, name)?;
                let (gx, dw, db) = backward::<T>(self, xv, gv, wv.as_deref(), need);
                let gx = Tensor::from_vec(gx, xl.shape(), &Device::Cpu)?;
                Ok::<_, candle_core::Error>((gx, dw, db))
            })?
        };
        let param = |v: Vec<f32>| Tensor::from_vec(v, d, &Device::Cpu)?.to_dtype(dtype);
        let dw = if need.dw { Some(param(dw)?) } else { None };
        let db = if need.db { Some(param(db)?) } else { None };
        Ok((gx, dw, db))
    }
}

impl FusedOp<1> for NormOp {
    fn name(&self) -> &'static str {
        NormOp::name(self)
    }

    fn cpu(&self, [x]: [Operand<'_>; 1]) -> Output {
        self.fwd(x, None, None)
    }

    fn grads(&self, [x]: [&Tensor; 1], _res: &Tensor, grad: &Tensor) -> Grads<1> {
        let (gx, _, _) = self.bwd_impl(x, None, grad)?;
        Ok([Some(gx)])
    }
}

/// `(x, weight)` or `(x, bias)`, as `has_w` says.
impl FusedOp<2> for NormOp {
    fn name(&self) -> &'static str {
        NormOp::name(self)
    }

    fn cpu(&self, [x, p]: [Operand<'_>; 2]) -> Output {
        match self.has_w {
            true => self.fwd(x, Some(p), None),
            false => self.fwd(x, None, Some(p)),
        }
    }

    fn grads(&self, [x, p]: [&Tensor; 2], _res: &Tensor, grad: &Tensor) -> Grads<2> {
        let w = self.has_w.then_some(p);
        let (gx, gw, gb) = self.bwd_impl(x, w, grad)?;
        Ok([Some(gx), if self.has_w { gw } else { gb }])
    }
}

impl FusedOp<3> for NormOp {
    fn name(&self) -> &'static str {
        NormOp::name(self)
    }

    fn cpu(&self, [x, w, b]: [Operand<'_>; 3]) -> Output {
        self.fwd(x, Some(w), Some(b))
    }

    fn grads(&self, [x, w, _]: [&Tensor; 3], _res: &Tensor, grad: &Tensor) -> Grads<3> {
        let (gx, gw, gb) = self.bwd_impl(x, Some(w), grad)?;
        Ok([Some(gx), gw, gb])
    }
}
