//! Normalization layers, on our fused kernels that keep the gradients.
//!
//! - [`BatchNorm`] (`nn.BatchNorm1d/2d/3d`, train / eval with running statistics).
//! - [`LayerNorm`] (`nn.LayerNorm` over the last dimension) on [`crate::ops::layer_norm()`].
//! - [`RmsNorm`] (`nn.RMSNorm` over the last dimension) on [`crate::ops::rms_norm()`].
//! - [`GroupNorm`] (`nn.GroupNorm`) and [`InstanceNorm`] (`nn.InstanceNorm1d/2d/3d`) on
//!   [`crate::ops::group_norm()`].
//! - [`LayerNorm2d`] (timm's `LayerNorm2d`, ConvNeXt: over the channels of each pixel of an
//!   NCHW map) on [`crate::ops::layer_norm()`].
//! - [`Norm`] and [`create()`]: pick any of them by name (`"batch"`, `"group:32"`, `"layer2d"`,
//!   …), timm's `create_norm_layer`; its page says which norm suits which batch size and data.
//!
//! # Tip
//! Normalize sequences per token, not per batch: a layer norm or RMS norm computes its
//! statistics over the features of one row, so it behaves the same for a batch of 1 or 1024,
//! in training and in inference, and needs no running statistics. In a transformer put it
//! *before* each sub-layer (pre-LN, $x + f(\mathrm{LN}(x))$): the residual path stays an
//! identity and deep stacks train without the learning-rate warm-up post-LN needs. RMS norm
//! drops the mean subtraction and the bias — one reduction instead of two, fewer parameters —
//! and works as well in practice, which is why LLaMA and Mamba use it.
//!
//! Why this crate has its own kernels: candle-nn's fused `layer_norm` / `rms_norm` ops have no
//! backward pass (candle issues #2168 and #3569), so a model trained through them silently gets
//! no gradient upstream of the norm; the differentiable composition is several times slower.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor, Var, D};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::norm::{layer_norm, LayerNormConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let ln = layer_norm(64, LayerNormConfig::default(), vb)?;
//! // The statistics are per row: a batch of one gives the same result as inside a batch.
//! let x = Tensor::randn(5f32, 3., (4, 64), &Device::Cpu)?;
//! let all = ln.forward(&x)?;
//! let one = ln.forward(&x.narrow(0, 2, 1)?)?;
//! let diff = (all.narrow(0, 2, 1)? - one)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(diff < 1e-6);
//! // Each row has mean 0 and variance 1 (weight 1, bias 0 at init).
//! let mean = all.mean(D::Minus1)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! let var = all.sqr()?.mean(D::Minus1)?.to_vec1::<f32>()?;
//! assert!(mean < 1e-5);
//! assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-3));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Ba, Kiros, Hinton, *Layer Normalization*, 2016, <https://arxiv.org/abs/1607.06450>
//! - Xiong et al., *On Layer Normalization in the Transformer Architecture* (pre-LN), 2020,
//!   <https://arxiv.org/abs/2002.04745>
//! - Zhang, Sennrich, *Root Mean Square Layer Normalization*, 2019,
//!   <https://arxiv.org/abs/1910.07467>

pub mod batch;
pub mod factory;
pub mod group;
pub mod instance;
pub mod layer;
pub mod layer2d;
mod params;
pub mod rms;

pub use batch::{batch_norm, BatchNorm, BatchNormConfig};
pub use factory::{create, Norm};
pub use group::{group_norm, GroupNorm, GroupNormConfig};
pub use instance::{instance_norm, InstanceNorm, InstanceNormConfig};
pub use layer::{layer_norm, LayerNorm, LayerNormConfig};
pub use layer2d::{layer_norm2d, LayerNorm2d, LayerNorm2dConfig};
pub use rms::{rms_norm, RmsNorm, RmsNormConfig};
