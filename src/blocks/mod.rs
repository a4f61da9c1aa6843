//! Regularization and residual blocks: stochastic depth, channel dropout, residual and pre-norm
//! connections, LayerScale.
//!
//! | item | input → output | use it to |
//! | --- | --- | --- |
//! | [`DropPath`] | `(B, …)` → same | drop whole residual branches per sample (stochastic depth) |
//! | [`Dropout`] | any → same | drop single activations (dense layers, attention) |
//! | [`Dropout2d`] | `(B, C, …)` → same | drop whole feature maps of conv features |
//! | [`Residual`] | any → same | add an identity path around a block: $x + f(x)$ |
//! | [`PreNorm`] | any → same | normalize the branch input only: $x + f(\mathrm{norm}(x))$ |
//! | [`LayerScale`] | `(…, C)` or `(B, C, …)` → same | start a deep residual stack near the identity |
//!
//! # Shapes
//! Every block here preserves the input's shape. The random layers take f32, f16 or bf16 and are
//! [`candle_nn::ModuleT`]s: the train flag turns them on, eval is the identity.
//!
//! # Tip
//! - **Regularize deep residual networks by depth, not only by width.** [`DropPath`] drops a
//!   sample's whole residual branch with probability $p_l$ growing linearly with the depth of
//!   block $l$; element [`Dropout`] is for dense layers, [`Dropout2d`] for conv features, whose
//!   neighbouring pixels are too correlated for element dropout to matter.
//! - **Keep an identity path for the gradient.** [`Residual`] and [`PreNorm`] give
//!   $\partial y / \partial x = I + \partial f / \partial x$; [`LayerScale`] makes every branch
//!   start near zero so a very deep stack starts near the identity.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, ModuleT, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::blocks::{layer_scale, DropPath, LayerScaleConfig, Residual};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
//! // timm's schedule: drop-path rates rising linearly to 0.1 over 4 blocks.
//! let rates: Vec<f32> = (0..4).map(|l| 0.1 * l as f32 / 3.0).collect();
//! let x = Tensor::randn(0f32, 1., (2, 5, 16), &dev)?;
//! let mut h = x.clone();
//! for (l, &p) in rates.iter().enumerate() {
//!     let ls = layer_scale(16, LayerScaleConfig::default(), vb.pp(format!("blocks.{l}.ls1")))?;
//!     let dp = DropPath::new(p)?;
//!     let branch = move |t: &Tensor| dp.forward_t(&ls.forward(&t.gelu()?)?, true);
//!     h = Residual::new(branch).forward(&h)?;
//! }
//! assert_eq!(h.dims(), x.dims());
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Huang et al., *Deep Networks with Stochastic Depth*, 2016, <https://arxiv.org/abs/1603.09382>
//! - Tompson et al., *Efficient Object Localization Using Convolutional Networks*, 2015,
//!   <https://arxiv.org/abs/1411.4280>
//! - He et al., *Deep Residual Learning for Image Recognition*, 2015,
//!   <https://arxiv.org/abs/1512.03385>
//! - Touvron et al., *Going deeper with Image Transformers*, 2021,
//!   <https://arxiv.org/abs/2103.17239>

pub mod drop_path;
pub use drop_path::{DropPath, DropPathConfig};
pub mod dropout;
pub use candle_nn::Dropout;
pub use dropout::Dropout2d;
pub mod residual;
pub use residual::{layer_scale, LayerScale, LayerScaleConfig, PreNorm, Residual};
