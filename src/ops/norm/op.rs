//! The [`NormOp`] custom op: candle glue (one, two or three operands), parameter checks and
//! dispatch to the CPU kernels.

use super::backward::backward;
use super::forward::forward;
use super::forward::Need;
use super::{OP_GN, OP_LN, OP_RMS};

use crate::cpu::f32_view;
use crate::cpu::{contiguous, dispatch_float, dispatch_float_pair};
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Shape, Storage, Tensor,
};

// ---------------------------------------------------------------------------------------------
// Custom op
// ---------------------------------------------------------------------------------------------

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

    fn fwd(
        &self,
        x: (&CpuStorage, &Layout),
        w: Option<(&CpuStorage, &Layout)>,
        b: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
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

impl CustomOp1 for NormOp {
    fn name(&self) -> &'static str {
        NormOp::name(self)
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd((s, l), None, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (gx, _, _) = self.bwd_impl(x, None, grad_res)?;
        Ok(Some(gx))
    }
}

impl CustomOp2 for NormOp {
    fn name(&self) -> &'static str {
        NormOp::name(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if self.has_w {
            self.fwd((s1, l1), Some((s2, l2)), None)
        } else {
            self.fwd((s1, l1), None, Some((s2, l2)))
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        if self.has_w {
            let (gx, gw, _) = self.bwd_impl(x, Some(p), grad_res)?;
            Ok((Some(gx), gw))
        } else {
            let (gx, _, gb) = self.bwd_impl(x, None, grad_res)?;
            Ok((Some(gx), gb))
        }
    }
}

impl CustomOp3 for NormOp {
    fn name(&self) -> &'static str {
        NormOp::name(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd((s1, l1), Some((s2, l2)), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, gb) = self.bwd_impl(x, Some(w), grad_res)?;
        Ok((Some(gx), gw, gb))
    }
}
