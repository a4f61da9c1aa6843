//! Custom ops: our CPU kernels behind candle `CustomOp`s, each with a real backward.
//!
//! Every op validates shapes, dtypes and devices, returns [`crate::Error`] on bad input, runs a
//! multi-threaded kernel (f32 accumulation for f16/bf16) and registers a backward so gradients
//! flow through `Tensor::backward`. Each keeps a slow plain-tensor `*_reference` that the tests
//! compare against, and which is also the op's path on a device without our kernel (CUDA,
//! Metal): see [`mod@backend`] for which op runs what where, and how to force the composition.

pub(crate) mod batch_norm;
pub(crate) mod direct_conv;
#[cfg(test)]
mod every_level;
pub(crate) mod fused;

pub mod backend;
pub use backend::{
    backend, force_backend, forced_backend, table, with_backend, Backend, BackendGuard, Op,
    OpBackends,
};

pub mod depthwise_conv;
pub use depthwise_conv::{
    depthwise_conv1d, depthwise_conv1d_reference, depthwise_conv2d, depthwise_conv2d_reference,
    DepthwiseConv1dConfig, DepthwiseConv2dConfig,
};
pub mod conv2d;
pub use conv2d::{conv2d, conv2d_reference, Conv2dConfig};
pub mod conv3d;
pub use conv3d::{conv3d, conv3d_reference, Conv3dConfig, ConvConfig};
pub mod conv_transpose;
pub use conv_transpose::{
    conv_transpose2d, conv_transpose2d_reference, conv_transpose3d, conv_transpose3d_reference,
    conv_transpose_output_size, ConvTranspose2dConfig, ConvTranspose3dConfig, ConvTransposeConfig,
};
pub mod adaptive_pool;
pub use adaptive_pool::{
    adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool2d_reference, adaptive_max_pool1d,
    adaptive_max_pool2d, adaptive_max_pool2d_reference, adaptive_pool1d_reference, adaptive_pool2d,
    adaptive_pool2d_reference, max_pool2d_same, max_pool2d_same_reference, PoolMode,
};
pub mod pool;
pub use pool::{
    adaptive_avg_pool3d, adaptive_max_pool3d, adaptive_pool3d_reference, avg_pool2d,
    avg_pool2d_reference, avg_pool3d, avg_pool3d_reference, max_pool2d, max_pool2d_reference,
    max_pool3d, max_pool3d_reference, Pool2dConfig, Pool3dConfig, PoolConfig,
};
pub mod norm;
pub use norm::{
    group_norm, group_norm_reference, layer_norm, layer_norm_reference, rms_norm,
    rms_norm_reference,
};
pub mod softmax;
pub use softmax::{softmax_last_dim, softmax_last_dim_reference};
pub mod fake_quantize;
pub use fake_quantize::{
    fake_quantize_per_channel_affine, fake_quantize_per_channel_affine_reference,
    fake_quantize_per_tensor_affine, fake_quantize_per_tensor_affine_reference,
};
pub mod gelu;
pub use gelu::{gelu_erf, gelu_erf_reference};
pub mod hardtanh;
pub use hardtanh::{activation, hardtanh, hardtanh_reference, relu, relu6, relu_reference};
pub mod linear;
pub use linear::{linear, linear_reference};
pub mod pad;
mod pointwise;
pub use pad::{pad2d, pad2d_reference, pad3d, pad3d_reference, PadMode};
pub mod upsample;
pub use upsample::{upsample_bilinear2d, upsample_bilinear2d_reference};
pub mod flash_attention;
pub use flash_attention::{
    attention_dropout_keep, scaled_dot_product_attention, scaled_dot_product_attention_seeded,
    sdpa_dropout_reference, sdpa_reference, AttentionMask,
};
pub mod selective_scan;
pub use selective_scan::{selective_scan, selective_scan_reference, SelectiveScanConfig};
pub mod causal_conv1d;
pub use causal_conv1d::{causal_conv1d, causal_conv1d_reference};
pub mod cross_entropy;
pub use cross_entropy::{cross_entropy, cross_entropy_reference, CrossEntropyConfig};
pub mod recurrent;
pub use recurrent::{
    gru_recurrence, gru_recurrence_reference, lstm_recurrence, lstm_recurrence_reference, CellKind,
    RecurrenceConfig,
};
