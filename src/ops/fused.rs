//! [`FusedOp`], how every op here is written whatever its operand count, and [`Fused`], which
//! hands one to candle as a `CustomOp1`, `CustomOp2` or `CustomOp3`. candle's three traits
//! differ only in arity; writing the glue once keeps each op to its kernel call and its
//! gradients, and gives a device kernel (`cuda_fwd`, `metal_fwd`) one place to plug in.

use std::borrow::Cow;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Storage, Tensor};

use crate::cpu::f32_view;

/// One operand of a CPU forward: its storage and layout.
pub(crate) type Operand<'a> = (&'a CpuStorage, &'a Layout);
/// What a CPU forward returns: the result's storage and shape.
pub(crate) type Output = candle_core::Result<(CpuStorage, Shape)>;
/// The gradients of an op's `N` operands (`None`: not differentiable in that operand).
pub(crate) type Grads<const N: usize> = candle_core::Result<[Option<Tensor>; N]>;

/// A fused op over `N` tensor operands.
pub(crate) trait FusedOp<const N: usize>: Send + Sync {
    /// The op's name, in errors.
    fn name(&self) -> &'static str;

    /// The CPU kernel.
    fn cpu(&self, operands: [Operand<'_>; N]) -> Output;

    /// The operands' gradients from the operands, the forward's result and its gradient. The
    /// default has none: the ops that are themselves gradients run without a graph.
    fn grads(&self, _operands: [&Tensor; N], _result: &Tensor, _grad: &Tensor) -> Grads<N> {
        Err(candle_core::Error::BackwardNotSupported { op: self.name() })
    }
}

/// A [`FusedOp`] as candle's custom op of the same arity: `x.apply_op2(&w, Fused(op))`.
pub(crate) struct Fused<T>(pub(crate) T);

impl<T: FusedOp<1>> CustomOp1 for Fused<T> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Output {
        self.0.cpu([(s, l)])
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let [gx] = self.0.grads([x], res, grad)?;
        Ok(gx)
    }
}

impl<T: FusedOp<2>> CustomOp2 for Fused<T> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Output {
        self.0.cpu([(s1, l1), (s2, l2)])
    }

    fn bwd(
        &self,
        x: &Tensor,
        y: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let [gx, gy] = self.0.grads([x, y], res, grad)?;
        Ok((gx, gy))
    }
}

impl<T: FusedOp<3>> CustomOp3 for Fused<T> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Output {
        self.0.cpu([(s1, l1), (s2, l2), (s3, l3)])
    }

    fn bwd(
        &self,
        x: &Tensor,
        y: &Tensor,
        z: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [gx, gy, gz] = self.0.grads([x, y, z], res, grad)?;
        Ok((gx, gy, gz))
    }
}

/// Runs `f` on f32 views (borrowed for f32, widened for f16/bf16) of the tensors' contiguous
/// CPU storages: how a backward that is a kernel call reads its tensors. An error naming `op`
/// for a tensor that is not on the CPU.
pub(crate) fn with_f32_views<const N: usize, R>(
    op: &'static str,
    tensors: [&Tensor; N],
    f: impl FnOnce([&[f32]; N]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let contiguous = tensors.map(|t| t.contiguous());
    let mut owned = Vec::with_capacity(N);
    for t in contiguous {
        owned.push(t?);
    }
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut views: Vec<Cow<'_, [f32]>> = Vec::with_capacity(N);
    for (storage, layout) in &guards {
        match &**storage {
            Storage::Cpu(c) => views.push(f32_view(c, layout, op)?),
            _ => candle_core::bail!("{op}: the backward pass runs on CPU only"),
        }
    }
    f(std::array::from_fn(|i| &*views[i]))
}
