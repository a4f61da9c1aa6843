//! [`Augment`]: a chain of transforms applied to a batch in one pass per image. The geometric
//! transforms (flips, crops, resized crops, rotations) compose into one map from each output
//! pixel to a source position, sampled once; the photometric ones (colour jitter, erasing) then
//! run on the output image while it is still in cache. Images are spread over candle's CPU
//! pool, and image `i` draws its parameters from `ImageRng::new(seed, i)`, so the batch is the
//! same bit for bit whatever the thread count.
//!
//! # Shapes
//! - input `x`: `(B, C, H, W)`, f32 / f16 / bf16 (values in $[0, 1]$ for colour jitter);
//! - mask (optional): `(B, Cm, H, W)`, any float or integer dtype, follows the geometric
//!   transforms with nearest sampling;
//! - output: `(B, C, H_out, W_out)` where crops fix the output size.
//!
//! # Tip
//! Composing the geometric maps means resampling once: flip, crop and rotate cost one bilinear
//! read per output pixel (a flip and an integer crop are plain row copies), where applying them
//! one by one reads and writes the image once per transform, and each bilinear step blurs it
//! again. The composition is exact for flips and crops; a rotation or resize after another
//! resampling differs from the sequential result by one interpolation. Photometric steps act
//! on the output image, as when they follow the geometric ones in torchvision (the usual order).
//!
//! Tensors on another device are copied to the CPU, augmented there and copied back: data
//! augmentation usually runs in the data loader, on the CPU, anyway.
//!
//! # Example
//! ```
//! # fn main() -> candle_tricks::Result<()> {
//! use candle_core::{DType, Device, Tensor};
//! use candle_tricks::augment::{Augment, ColorJitter, RandomCrop, RandomHorizontalFlip};
//!
//! let aug = Augment::new([
//!     RandomHorizontalFlip::new(0.5).into(),
//!     RandomCrop::new((24, 24)).with_padding(4).into(),
//!     ColorJitter::new(0.4, 0.4, 0.4, 0.1).into(),
//! ])?;
//! let x = Tensor::rand(0f32, 1.0, (8, 3, 24, 24), &Device::Cpu)?;
//! let a = aug.apply(&x, 42)?;
//! assert_eq!(a.dims(), [8, 3, 24, 24]);
//! // The same seed gives the same batch; another seed another one.
//! let same = (&a - aug.apply(&x, 42)?)?.abs()?.sum_all()?.to_scalar::<f32>()?;
//! let other = (&a - aug.apply(&x, 43)?)?.abs()?.sum_all()?.to_scalar::<f32>()?;
//! assert_eq!(same, 0.0);
//! assert!(other > 0.0);
//! # Ok(())
//! # }
//! ```

use candle_core::{DType, Device, Storage, Tensor};

use super::color::{self, ColorJitter, ColorOp};
use super::erase::{self, EraseBox, RandomErasing};
use super::flip::{RandomHorizontalFlip, RandomVerticalFlip};
use super::warp::{warp_image, warp_mask, Stage, WarpScratch};
use super::{ImageRng, RandomCrop, RandomResizedCrop, RandomRotation};
use crate::check;
use crate::cpu::{contiguous, dispatch_float, par_each, try_zeros, Element};
use crate::{Error, Result};

const OP: &str = "Augment";

/// One image's drawn parameters: the geometric stages (source first) and the photometric steps.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    stages: Vec<Stage>,
    pixel: Vec<PixelOp>,
}

/// A step on the output pixels.
#[derive(Debug, Clone)]
pub(crate) enum PixelOp {
    Color(ColorOp),
    Erase(EraseBox),
}

impl Plan {
    pub(crate) fn stage(&mut self, s: Stage) {
        self.stages.push(s);
    }
    pub(crate) fn color(&mut self, op: ColorOp) {
        self.pixel.push(PixelOp::Color(op));
    }
    pub(crate) fn erase(&mut self, b: EraseBox) {
        self.pixel.push(PixelOp::Erase(b));
    }
}

/// One transform of an [`Augment`] chain (build it with `.into()` from a transform config).
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// [`RandomHorizontalFlip`].
    HorizontalFlip(RandomHorizontalFlip),
    /// [`RandomVerticalFlip`].
    VerticalFlip(RandomVerticalFlip),
    /// [`RandomCrop`].
    Crop(RandomCrop),
    /// [`RandomResizedCrop`].
    ResizedCrop(RandomResizedCrop),
    /// [`RandomRotation`].
    Rotation(RandomRotation),
    /// [`ColorJitter`].
    ColorJitter(ColorJitter),
    /// [`RandomErasing`].
    Erasing(RandomErasing),
}

macro_rules! into_transform {
    ($($t:ident => $v:ident),*) => {$(
        impl From<$t> for Transform {
            fn from(t: $t) -> Self {
                Transform::$v(t)
            }
        }
    )*};
}
into_transform!(
    RandomHorizontalFlip => HorizontalFlip, RandomVerticalFlip => VerticalFlip,
    RandomCrop => Crop, RandomResizedCrop => ResizedCrop, RandomRotation => Rotation,
    ColorJitter => ColorJitter, RandomErasing => Erasing
);

impl Transform {
    /// Validates the config against an input of `(c, h, w)`; returns the output size.
    fn output(&self, (c, h, w): (usize, usize, usize)) -> Result<(usize, usize)> {
        match self {
            Transform::HorizontalFlip(t) => t.validate().map(|_| (h, w)),
            Transform::VerticalFlip(t) => t.validate().map(|_| (h, w)),
            Transform::Crop(t) => t.output(h, w),
            Transform::ResizedCrop(t) => t.output(),
            Transform::Rotation(t) => t.validate().map(|_| (h, w)),
            Transform::ColorJitter(t) => t.validate(c).map(|_| (h, w)),
            Transform::Erasing(t) => t.validate(c).map(|_| (h, w)),
        }
    }

    fn sample(&self, rng: &mut ImageRng, (c, h, w): (usize, usize, usize), plan: &mut Plan) {
        match self {
            Transform::HorizontalFlip(t) => t.sample(rng, h, w, plan),
            Transform::VerticalFlip(t) => t.sample(rng, h, w, plan),
            Transform::Crop(t) => t.sample(rng, h, w, plan),
            Transform::ResizedCrop(t) => t.sample(rng, h, w, plan),
            Transform::Rotation(t) => t.sample(rng, h, w, plan),
            Transform::ColorJitter(t) => t.sample(rng, plan),
            Transform::Erasing(t) => t.sample(rng, (c, h, w), plan),
        }
    }
}

/// A seeded chain of transforms applied to whole batches (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Augment {
    transforms: Vec<Transform>,
}

impl Augment {
    /// The chain `transforms`, applied in order.
    pub fn new(transforms: impl IntoIterator<Item = Transform>) -> Result<Self> {
        let transforms: Vec<Transform> = transforms.into_iter().collect();
        // Validate what does not depend on the input now (channel count 0 = unknown; a crop
        // larger than the image is checked per call).
        for t in &transforms {
            if let Err(e) = t.output((0, usize::MAX / 4, usize::MAX / 4)) {
                if !matches!(t, Transform::Crop(_)) {
                    return Err(e);
                }
            }
        }
        Ok(Self { transforms })
    }

    /// The transforms of the chain.
    pub fn transforms(&self) -> &[Transform] {
        &self.transforms
    }

    /// The output size for an input of `(c, h, w)`, or the error of the first transform that
    /// cannot take its input.
    fn output(&self, (c, mut h, mut w): (usize, usize, usize)) -> Result<(usize, usize)> {
        for t in &self.transforms {
            (h, w) = t.output((c, h, w))?;
        }
        Ok((h, w))
    }

    /// The plan of image `index` under `seed`.
    fn plan(&self, seed: u64, index: usize, (c, mut h, mut w): (usize, usize, usize)) -> Plan {
        let mut rng = ImageRng::new(seed, index as u64);
        let mut plan = Plan::default();
        for t in &self.transforms {
            t.sample(&mut rng, (c, h, w), &mut plan);
            // `output` succeeded for this input in `apply`, so this repeats a checked value.
            (h, w) = t.output((c, h, w)).unwrap_or((h, w));
        }
        plan
    }

    /// Augments the batch `x` `(B, C, H, W)`; image `i` draws from `ImageRng::new(seed, i)`.
    pub fn apply(&self, x: &Tensor, seed: u64) -> Result<Tensor> {
        let out_hw = self.output(image_dims(x)?)?;
        let dims = image_dims(x)?;
        Ok(run(x, None, out_hw, |i| self.plan(seed, i, dims))?.0)
    }

    /// [`Augment::apply`] to `x` and the same geometric transforms to `mask` `(B, Cm, H, W)`
    /// (nearest sampling, `mask_fill` where the image gets a fill; photometric steps leave the
    /// mask alone). Returns `(image, mask)`.
    pub fn apply_with_mask(
        &self,
        x: &Tensor,
        mask: &Tensor,
        mask_fill: f32,
        seed: u64,
    ) -> Result<(Tensor, Tensor)> {
        let dims = image_dims(x)?;
        let out_hw = self.output(dims)?;
        let (y, m) = run(x, Some((mask, mask_fill)), out_hw, |i| {
            self.plan(seed, i, dims)
        })?;
        let m = m.ok_or_else(|| Error::config(OP, "mask output missing"))?;
        Ok((y, m))
    }
}

/// Checks an image batch and returns its `(C, H, W)`.
pub(crate) fn image_dims(x: &Tensor) -> Result<(usize, usize, usize)> {
    check::rank(OP, "input", x, 4, "(B, C, H, W)")?;
    check::non_empty(OP, "input", x)?;
    check::float_dtype(OP, "input", x)?;
    let d = x.dims();
    Ok((d[1], d[2], d[3]))
}

/// Applies the same `plan` to every image of `x` (the fixed-parameter functions); `out_hw`
/// defaults to the input size.
pub(crate) fn fixed(x: &Tensor, out_hw: Option<(usize, usize)>, plan: Plan) -> Result<Tensor> {
    let (_, h, w) = image_dims(x)?;
    Ok(run(x, None, out_hw.unwrap_or((h, w)), |_| plan.clone())?.0)
}

/// [`fixed`] on `x` and the same geometric stages on `mask`.
pub(crate) fn fixed_with_mask(
    x: &Tensor,
    mask: &Tensor,
    mask_fill: f32,
    out_hw: Option<(usize, usize)>,
    plan: Plan,
) -> Result<(Tensor, Tensor)> {
    let (_, h, w) = image_dims(x)?;
    let (y, m) = run(x, Some((mask, mask_fill)), out_hw.unwrap_or((h, w)), |_| {
        plan.clone()
    })?;
    let m = m.ok_or_else(|| Error::config(OP, "mask output missing"))?;
    Ok((y, m))
}

/// Per-worker scratch: the warp's row recipes and an f32 image for f16 / bf16 outputs.
#[derive(Default)]
struct Scratch {
    warp: WarpScratch,
    img: Vec<f32>,
}

/// A mask prepared for the kernel: f32 on the CPU, with its channel count and dtype.
struct MaskIn {
    data: Tensor,
    channels: usize,
    dtype: DType,
    fill: f32,
}

/// Validates `x` and the optional mask, runs the kernel on the CPU and returns the outputs on
/// `x`'s device.
fn run(
    x: &Tensor,
    mask: Option<(&Tensor, f32)>,
    out_hw: (usize, usize),
    plan_for: impl Fn(usize) -> Plan + Sync,
) -> Result<(Tensor, Option<Tensor>)> {
    let (c, h, w) = image_dims(x)?;
    let b = x.dims()[0];
    check::positive(OP, "output height", out_hw.0)?;
    check::positive(OP, "output width", out_hw.1)?;
    check::numel(OP, "output", &[b, c, out_hw.0, out_hw.1], x.dtype())?;
    let mask = match mask {
        None => None,
        Some((m, fill)) => {
            let d = m.dims();
            if m.rank() != 4 || d[0] != b || d[2] != h || d[3] != w || d[1] == 0 {
                let expected = format!("({b}, Cm, {h}, {w})");
                return Err(Error::shape(OP, "mask", expected, m.shape().clone()));
            }
            if !fill.is_finite() {
                return Err(Error::config(
                    OP,
                    format!("mask_fill must be finite, got {fill}"),
                ));
            }
            check::numel(
                OP,
                "mask output",
                &[b, d[1], out_hw.0, out_hw.1],
                DType::F32,
            )?;
            let data = m
                .to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?
                .contiguous()?;
            Some(MaskIn {
                data,
                channels: d[1],
                dtype: m.dtype(),
                fill,
            })
        }
    };
    let device = x.device().clone();
    let xc = x.to_device(&Device::Cpu)?.contiguous()?;
    let (storage, layout) = xc.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(Error::config(OP, "input was not moved to the CPU"));
    };
    let (y, m) = dispatch_float!(cpu, OP, |v: T| {
        let src = contiguous(v, layout, OP)?;
        run_typed::<T>(src, b, (c, h, w), out_hw, mask.as_ref(), &plan_for)
            .map_err(candle_core::Error::from)
    })?;
    let y = y.to_device(&device)?;
    let m = match (m, mask) {
        (Some(m), Some(mask)) => Some(m.to_dtype(mask.dtype)?.to_device(&device)?),
        _ => None,
    };
    Ok((y, m))
}

/// The kernel: one task per image, each drawing its plan and rendering its image (and mask).
fn run_typed<T: Element>(
    src: &[T],
    b: usize,
    (c, h, w): (usize, usize, usize),
    (oh, ow): (usize, usize),
    mask: Option<&MaskIn>,
    plan_for: &(impl Fn(usize) -> Plan + Sync),
) -> Result<(Tensor, Option<Tensor>)> {
    let img_len = c * oh * ow;
    let mut out: Vec<T> = try_zeros(OP, b * img_len)?;
    let mask_src = match mask {
        Some(m) => Some(m.data.flatten_all()?.to_vec1::<f32>()?),
        None => None,
    };
    let cm = mask.map_or(0, |m| m.channels);
    let mut mask_out: Vec<f32> = try_zeros(OP, b * cm * oh * ow)?;
    let mut mask_chunks = mask_out.chunks_mut((cm * oh * ow).max(1));
    let tasks: Vec<(&mut [T], Option<&mut [f32]>)> = out
        .chunks_mut(img_len)
        .map(|o| (o, mask_chunks.next()))
        .collect();
    par_each(tasks, |i, (o, mo), st: &mut Scratch| {
        let plan = plan_for(i);
        let s = &src[i * c * h * w..(i + 1) * c * h * w];
        if let Some(img) = T::as_f32_mut(o) {
            render(s, (c, h, w), &plan, img, (oh, ow), &mut st.warp);
        } else {
            st.img.resize(img_len, 0.0);
            render(s, (c, h, w), &plan, &mut st.img, (oh, ow), &mut st.warp);
            crate::cpu::round_into(o, &st.img);
        }
        if let (Some(ms), Some(mo), Some(m)) = (&mask_src, mo, mask) {
            let ms = &ms[i * cm * h * w..(i + 1) * cm * h * w];
            warp_mask(ms, (cm, h, w), &plan.stages, mo, (oh, ow), m.fill);
        }
    });
    let y = Tensor::from_vec(out, (b, c, oh, ow), &Device::Cpu)?;
    let m = match mask {
        Some(_) => Some(Tensor::from_vec(mask_out, (b, cm, oh, ow), &Device::Cpu)?),
        None => None,
    };
    Ok((y, m))
}

/// One image: the geometric pass into `img`, then the photometric steps in place.
fn render<T: Element>(
    src: &[T],
    (c, h, w): (usize, usize, usize),
    plan: &Plan,
    img: &mut [f32],
    (oh, ow): (usize, usize),
    scratch: &mut WarpScratch,
) {
    warp_image(src, (c, h, w), &plan.stages, img, (oh, ow), scratch);
    for op in &plan.pixel {
        match op {
            PixelOp::Color(op) => color::apply(*op, img, c, oh * ow),
            PixelOp::Erase(b) => erase::apply(b, img, (c, oh, ow)),
        }
    }
}
