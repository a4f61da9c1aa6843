//! [`RecurrenceOp`]: the fused op `(xproj, W_hh, [b_hh | h0 | c0]) -> [out | h_n | c_n]`, its
//! forward kernel on CPU storage and its backward as a second kernel call.

use std::sync::{Arc, Mutex};

use super::cell::{Cell, GruCell, LstmCell};
use super::kernel::{backward, forward, Saved};
use super::{CellKind, Geom, OP};
use crate::cpu::{f32_view, store};
use crate::ops::fused::{with_f32_views, FusedOp, Grads, Operand, Output};
use candle_core::backend::BackendStorage;
use candle_core::{Device, Shape, Tensor};

/// The op; keeps the forward's gate activations and states for its backward when a gradient is
/// tracked (else the backward recomputes them).
pub(super) struct RecurrenceOp {
    pub(super) gm: Geom,
    pub(super) save: bool,
    pub(super) saved: Mutex<Option<Arc<Saved>>>,
}

fn expect_len(len: usize, want: usize, what: &str) -> candle_core::Result<()> {
    if len != want {
        candle_core::bail!("{OP}: {what} has {len} elements, expected {want}");
    }
    Ok(())
}

impl RecurrenceOp {
    fn run_forward(
        &self,
        x: &[f32],
        w: &[f32],
        rest: &[f32],
        save: bool,
    ) -> (Vec<f32>, Option<Saved>) {
        match self.gm.cell {
            CellKind::Lstm => forward::<LstmCell>(&self.gm, x, w, rest, save),
            CellKind::Gru => forward::<GruCell>(&self.gm, x, w, rest, save),
        }
    }
}

/// The operands' expected element counts, in order.
fn lens(gm: &Geom) -> [usize; 3] {
    [gm.l * gm.b * gm.gh(), gm.gh() * gm.h, gm.rest_len()]
}

impl FusedOp<3> for RecurrenceOp {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu(&self, [(s1, l1), (s2, l2), (s3, l3)]: [Operand<'_>; 3]) -> Output {
        let want = lens(&self.gm);
        let names = [
            "the input projection",
            "the recurrent weight",
            "the packed states",
        ];
        for ((l, n), what) in [l1, l2, l3].iter().zip(want).zip(names) {
            expect_len(l.shape().elem_count(), n, what)?;
        }
        let dtype = s1.dtype();
        if s2.dtype() != dtype || s3.dtype() != dtype {
            candle_core::bail!("{OP}: inputs of different dtypes");
        }
        let x = f32_view(s1, l1, OP)?;
        let w = f32_view(s2, l2, OP)?;
        let rest = f32_view(s3, l3, OP)?;
        let (out, saved) = self.run_forward(&x, &w, &rest, self.save);
        if let Some(saved) = saved {
            *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(saved));
        }
        Ok((store(dtype, out, OP)?, Shape::from(self.gm.out_len())))
    }

    fn grads(&self, [x, w, rest]: [&Tensor; 3], _res: &Tensor, grad: &Tensor) -> Grads<3> {
        let gm = &self.gm;
        let dtype = x.dtype();
        let grad = grad.to_dtype(dtype)?;
        let want = lens(gm);
        for ((t, n), what) in [x, w, rest].iter().zip(want).zip(["xproj", "W_hh", "rest"]) {
            expect_len(t.elem_count(), n, what)?;
        }
        expect_len(grad.elem_count(), gm.out_len(), "the output gradient")?;
        let kept = self.saved.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let g = with_f32_views(OP, [x, w, rest, &grad], |[x, w, rest, g]| {
            let saved = match kept {
                Some(s) => s,
                None => match self.run_forward(x, w, rest, true).1 {
                    Some(s) => Arc::new(s),
                    None => candle_core::bail!("{OP}: the forward kept no state"),
                },
            };
            Ok(match gm.cell {
                CellKind::Lstm => backward::<LstmCell>(gm, w, g, &saved),
                CellKind::Gru => backward::<GruCell>(gm, w, g, &saved),
            })
        })?;
        let dev = &Device::Cpu;
        let gx = Tensor::from_vec(g.xproj, (gm.l, gm.b, gm.gh()), dev)?.to_dtype(dtype)?;
        let gw = Tensor::from_vec(g.w_hh, (gm.gh(), gm.h), dev)?.to_dtype(dtype)?;
        let n_rest = g.rest.len();
        let gr = Tensor::from_vec(g.rest, n_rest, dev)?.to_dtype(dtype)?;
        Ok([Some(gx), Some(gw), Some(gr)])
    }
}

/// Gates of `kind`, from the cell types (one source of truth for the kernel and the API).
pub(super) fn gates(kind: CellKind) -> usize {
    match kind {
        CellKind::Lstm => LstmCell::GATES,
        CellKind::Gru => GruCell::GATES,
    }
}
