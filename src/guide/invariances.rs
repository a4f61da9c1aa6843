//! Invariances and equivariances: what to build into a model, what to teach it with data, and
//! what striding quietly takes away (tip 20).
//!
//! # Tip
//! A model generalises from few samples when it already knows the symmetries of the task. A
//! symmetry can be **built in** by the architecture or **taught** by augmentation:
//!
//! | symmetry | built in by | taught by | wrong for |
//! |---|---|---|---|
//! | translation | convolution (equivariant), global pooling (invariant) | random crop, pad + crop | absolute positions that matter (a board game's corner) |
//! | mirror | — | horizontal flip | text, digits (a flipped 2 is no digit), left/right anatomy |
//! | rotation | — (group convolutions) | rotation by an angle | digits (6 vs 9), upright scenes beyond a few degrees |
//! | scale | multi-scale pathways, pyramids ([`crate::blocks::MultiScalePathways`], [`crate::pool::SpatialPyramidPooling`]) | random resized crop | tasks where size is the label |
//! | contrast, colour | instance norm ([`crate::norm::InstanceNorm`]) | colour jitter | colour-coded classes |
//! | permutation of a set | attention without positions, sum/mean pooling | — | sequences |
//!
//! An augmentation must preserve the label — flip a cat and it is still a cat, flip a "b" and
//! it is a "d". Segmentation needs the *same* geometric transform on the image and the mask
//! ([`crate::augment`]).
//!
//! **Striding breaks translation equivariance.** A stride-1 convolution commutes with shifts:
//! shifting the input shifts the output by the same amount. With total stride $s$ that holds
//! only for shifts that are multiples of $s$; a one-pixel shift of the input produces an output
//! that is no shift of the original at all, because the subsampling grid now lands on other
//! pixels. Pooling with a stride does the same. Real CNNs therefore change their prediction when
//! an image moves by one pixel, and more so the more they downsample (Azulay & Weiss); blurring
//! before subsampling (anti-aliasing, Zhang) restores much of the lost equivariance, and random
//! crops during training teach the rest. The measurement below shifts an input by one and two
//! pixels and compares a two-layer convolution stack with and without a stride of 2.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::geometry::Padding;
//! use candle_tricks::ops::{conv2d, ConvConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let x = Tensor::randn(0f32, 1., (1, 3, 24, 40), &dev)?;
//! let w1 = Tensor::randn(0f32, 0.3, (8, 3, 3, 3), &dev)?;
//! let w2 = Tensor::randn(0f32, 0.3, (8, 8, 3, 3), &dev)?;
//! // Two 3×3 convolutions with ReLU; the first has stride `s`; no padding, so borders play no role.
//! let stack = |x: &Tensor, s: usize| -> candle_tricks::Result<Tensor> {
//!     let valid = ConvConfig::default().with_padding(Padding::Valid);
//!     let h = conv2d(x, &w1, valid.with_stride(s))?.relu()?;
//!     conv2d(&h, &w2, valid)
//! };
//! // The window x[.., 0..32] and the same window shifted right by `d` pixels.
//! let window = |d: usize| x.narrow(3, d, 32);
//! // Relative distance between f(shifted) and f(original) shifted by `k` output pixels.
//! let mismatch = |a: &Tensor, b: &Tensor, k: usize| -> candle_tricks::Result<f32> {
//!     let w = a.dim(3)? - k;
//!     let diff = (b.narrow(3, 0, w)? - a.narrow(3, k, w)?)?;
//!     Ok((diff.sqr()?.sum_all()? / a.sqr()?.sum_all()?)?.sqrt()?.to_scalar::<f32>()?)
//! };
//! let best = |a: &Tensor, b: &Tensor| -> candle_tricks::Result<f32> {
//!     Ok((0..3).map(|k| mismatch(a, b, k)).collect::<candle_tricks::Result<Vec<_>>>()?
//!         .into_iter().fold(f32::INFINITY, f32::min))
//! };
//! // Stride 1: a one-pixel shift of the input is a one-pixel shift of the output (to rounding).
//! let (a, b) = (stack(&window(0)?, 1)?, stack(&window(1)?, 1)?);
//! assert!(mismatch(&a, &b, 1)? < 1e-5);
//! // Stride 2: shifts by two pixels still commute (one output pixel) …
//! let (a, b2) = (stack(&window(0)?, 2)?, stack(&window(2)?, 2)?);
//! assert!(mismatch(&a, &b2, 1)? < 1e-5);
//! // … but a one-pixel shift gives an output that no shift of the original matches.
//! let b1 = stack(&window(1)?, 2)?;
//! assert!(best(&a, &b1)? > 0.3);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Azulay, Weiss, *Why do deep convolutional networks generalize so poorly to small image
//!   transformations?*, JMLR 2019, <https://arxiv.org/abs/1805.12177>.
//! - Zhang, *Making Convolutional Networks Shift-Invariant Again*, ICML 2019,
//!   <https://arxiv.org/abs/1904.11486> (anti-aliased downsampling).
//! - Cohen, Welling, *Group Equivariant Convolutional Networks*, ICML 2016,
//!   <https://arxiv.org/abs/1602.07576> (rotations and flips built into the convolution).
//! - Bronstein, Bruna, Cohen, Veličković, *Geometric Deep Learning: Grids, Groups, Graphs,
//!   Geodesics, and Gauges*, 2021, <https://arxiv.org/abs/2104.13478>.
