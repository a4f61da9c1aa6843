//! Seeded, batched data augmentation on image tensors `(B, C, H, W)`, and Mixup / CutMix.
//!
//! Flips, pad + random crop, random resized crop, rotation (with its segmentation mask), colour
//! jitter and random erasing follow torchvision's definitions; [`Augment`] chains them and
//! applies the geometric ones as one source map (one read of each source image), then the
//! colour steps in place while the output image is in cache, with images spread over candle's
//! CPU pool. Image `i` of a batch draws from
//! [`ImageRng::new(seed, i)`](ImageRng::new): the result is bit-identical whatever the thread
//! count. [`Mixup`] mixes a batch and its labels as timm does.
//!
//! # Shapes
//! - images `(B, C, H, W)` in f32, f16 or bf16 (colour jitter expects values in $[0, 1]$,
//!   before normalisation; erasing is usually applied after it);
//! - masks `(B, Cm, H, W)`, any dtype, nearest sampling;
//! - Mixup targets: class indices `(B)` in, soft targets `(B, num_classes)` out.
//!
//! # Tip
//! **Augmentations encode the invariances you want** (tip 20): each one tells the network that
//! a change of the input does not change the label. Horizontal flips say "mirror symmetry",
//! crops "translation", resized crops "scale", rotations "orientation", colour jitter
//! "lighting and camera". So pick them from the data, not from a recipe: flips suit photos of
//! objects but not digits or text (a mirrored 2 is not a 2, b becomes d); large rotations suit
//! microscopy and aerial images but turn a 6 into a 9; hue jitter is wrong when colour is the
//! class. The label-preserving requirement is the test: an augmentation that can change the
//! correct answer teaches the network noise.
//!
//! **Data augmentation** (tip 29) multiplies the effective data set: on small data it is often
//! worth more than any architecture change, and on large data (ImageNet) it still decides
//! a few points. A standard start: random resized crop + horizontal flip for photos, pad 4 +
//! random crop + flip for CIFAR-sized images, light colour jitter, random erasing on top.
//! Mixup and CutMix are regularisers rather than label-preserving transforms: they mix the
//! labels as they mix the inputs (soft targets), smooth the decision boundary and improve
//! calibration, but slow convergence (train longer). Augment on the fly, with a new seed every
//! step, so each epoch sees new samples; at test time use none (or average over a few
//! flips/crops, test-time augmentation).
//!
//! The claim that flips are self-inverse, and that a horizontal flip is not a symmetry of
//! a digit:
//! ```
//! # fn main() -> candle_tricks::Result<()> {
//! use candle_core::{Device, Tensor};
//! use candle_tricks::augment::hflip;
//! // A 3 x 3 "7": top bar and a stroke down the right side.
//! let seven = Tensor::new(&[1f32, 1., 1., 0., 0., 1., 0., 0., 1.], &Device::Cpu)?
//!     .reshape((1, 1, 3, 3))?;
//! let mirrored = hflip(&seven)?;
//! let diff = (&mirrored - &seven)?.abs()?.sum_all()?.to_scalar::<f32>()?;
//! assert!(diff > 0.0); // a different glyph: flips would teach a wrong invariance
//! let back = hflip(&mirrored)?;
//! assert_eq!(back.flatten_all()?.to_vec1::<f32>()?, seven.flatten_all()?.to_vec1::<f32>()?);
//! # Ok(())
//! # }
//! ```
//!
//! # Example
//! The CIFAR recipe on a batch, reproducible from its seed:
//! ```
//! # fn main() -> candle_tricks::Result<()> {
//! use candle_core::{Device, Tensor};
//! use candle_tricks::augment::{Augment, RandomCrop, RandomErasing, RandomHorizontalFlip};
//! let aug = Augment::new([
//!     RandomCrop::new((32, 32)).with_padding(4).into(),
//!     RandomHorizontalFlip::new(0.5).into(),
//!     RandomErasing::new(0.25).into(),
//! ])?;
//! let x = Tensor::rand(0f32, 1.0, (16, 3, 32, 32), &Device::Cpu)?;
//! let step = 7u64;
//! let a = aug.apply(&x, step)?;
//! let b = aug.apply(&x, step)?;
//! assert_eq!(a.flatten_all()?.to_vec1::<f32>()?, b.flatten_all()?.to_vec1::<f32>()?);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Shorten, Khoshgoftaar, *A survey on Image Data Augmentation for Deep Learning*, 2019,
//!   <https://doi.org/10.1186/s40537-019-0197-0>
//! - Cubuk et al., *AutoAugment: Learning Augmentation Policies from Data*, 2018,
//!   <https://arxiv.org/abs/1805.09501>
//! - Zhang et al., *mixup: Beyond Empirical Risk Minimization*, 2017,
//!   <https://arxiv.org/abs/1710.09412>

pub mod color;
pub mod crop;
pub mod erase;
pub mod flip;
pub mod mix;
pub mod pipeline;
pub mod resized_crop;
pub mod rng;
pub mod rotate;
mod warp;

pub use color::{adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, ColorJitter};
pub use crop::{crop, RandomCrop};
pub use erase::{erase, EraseValue, RandomErasing};
pub use flip::{hflip, vflip, RandomHorizontalFlip, RandomVerticalFlip};
pub use mix::{cutmix_box, mixup_target, MixOutput, Mixup, MixupConfig};
pub use pipeline::{Augment, Transform};
pub use resized_crop::{resized_crop, RandomResizedCrop};
pub use rng::ImageRng;
pub use rotate::{rotate, rotate_with_mask, RandomRotation};
