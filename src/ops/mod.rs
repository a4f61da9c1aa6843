//! Custom ops: our CPU kernels behind candle `CustomOp`s, each with a real backward.
//!
//! Every op validates shapes, dtypes and devices, returns [`crate::Error`] on bad input, runs a
//! multi-threaded kernel (f32 accumulation for f16/bf16) and registers a backward so gradients
//! flow through `Tensor::backward`. Each keeps a slow plain-tensor `*_reference` that the tests
//! compare against.

#[allow(dead_code, unused_imports, unused_macros)] // used by the kernels as they land
pub(crate) mod cpu;

mod depthwise_conv;
mod conv3d;
mod adaptive_pool;
