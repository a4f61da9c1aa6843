//! The CPU runtime under every kernel: element views and the dtype dispatch ([`element`]), the
//! parallel split on candle's worker pool ([`parallel`]), strided matrix products ([`gemm`]), the one SIMD dispatch whose tokens
//! prove the CPU features ([`simd`]), explicit vectors ([`lanes`]) and the vectorised math
//! written once over them ([`math`]).
//!
//! Nothing here knows an op: `crate::ops` builds its kernels from these pieces. All `unsafe`
//! of the kernels' SIMD and threading lives here (and in the few `gemm` calls of the ops), each
//! with its `SAFETY` argument.

pub(crate) mod element;
pub(crate) mod gemm;
pub(crate) mod int8_gemm;
pub(crate) mod lanes;
pub(crate) mod math;
pub(crate) mod parallel;
pub(crate) mod simd;

pub(crate) use element::{
    contiguous, dispatch_float, dispatch_float_pair, dispatch_float_triple, expect_shape, f32_pair,
    f32_row, f32_view, round_into, store, try_zeros, widen, Element,
};
pub(crate) use parallel::{
    items_per_task, num_threads, par_each, par_filled, par_fold, par_parts, par_tasks, SharedMut,
};
pub(crate) use simd::{Isa, Kernel, Level};
