//! Bad input for `augment`: the pipeline's transforms, the fixed-parameter functions and Mixup.

use super::*;
use candle_tricks::augment::{
    adjust_contrast, adjust_hue, crop, erase, hflip, mixup_target, resized_crop, rotate,
    rotate_with_mask, Augment, ColorJitter, EraseValue, Mixup, MixupConfig, RandomCrop,
    RandomErasing, RandomHorizontalFlip, RandomResizedCrop, RandomRotation, RandomVerticalFlip,
    Transform,
};

fn img(dims: &[usize]) -> Tensor {
    Tensor::rand(0f32, 1.0, dims, &Device::Cpu).expect("image")
}

fn apply(t: impl Into<Transform>, x: Tensor) -> Res {
    Augment::new([t.into()])?.apply(&x, 0)?;
    Ok(())
}

pub(super) fn augment_cases() -> Vec<Case> {
    let mut c = Cases::new("augment");
    let x = || img(&[2, 3, 8, 8]);
    // Configs.
    c.err("flip p 1.5", "RandomHorizontalFlip", move || {
        apply(RandomHorizontalFlip::new(1.5), x())
    });
    c.err("flip p NaN", "RandomVerticalFlip", move || {
        apply(RandomVerticalFlip::new(f64::NAN), x())
    });
    c.err("crop larger than padded", "RandomCrop", move || {
        apply(RandomCrop::new((13, 8)).with_padding(2), x())
    });
    c.err("crop size 0", "RandomCrop", move || {
        apply(RandomCrop::new((0, 4)), x())
    });
    c.err("crop padding overflows", "RandomCrop", move || {
        apply(RandomCrop::new((4, 4)).with_padding(usize::MAX), x())
    });
    c.err("crop fill NaN", "RandomCrop", move || {
        apply(RandomCrop::new((4, 4)).with_fill(f32::NAN), x())
    });
    c.err(
        "resized crop scale reversed",
        "RandomResizedCrop",
        move || apply(RandomResizedCrop::new((4, 4)).with_scale((0.9, 0.1)), x()),
    );
    c.err("resized crop ratio 0", "RandomResizedCrop", move || {
        apply(RandomResizedCrop::new((4, 4)).with_ratio((0.0, 1.0)), x())
    });
    c.err("resized crop size 0", "RandomResizedCrop", move || {
        apply(RandomResizedCrop::new((4, 0)), x())
    });
    c.err("rotation Inf", "RandomRotation", move || {
        apply(RandomRotation::new(f64::INFINITY), x())
    });
    c.err("rotation min > max", "RandomRotation", move || {
        apply(RandomRotation::new(0.0).with_range((10.0, -10.0)), x())
    });
    c.err("jitter negative", "ColorJitter", move || {
        apply(ColorJitter::new(0.0, -1.0, 0.0, 0.0), x())
    });
    c.err("jitter hue 0.7", "ColorJitter", move || {
        apply(ColorJitter::new(0.0, 0.0, 0.0, 0.7), x())
    });
    c.err(
        "jitter saturation on 4 channels",
        "ColorJitter",
        move || apply(ColorJitter::new(0.0, 0.0, 0.5, 0.0), img(&[1, 4, 4, 4])),
    );
    c.err("erasing p 2", "RandomErasing", move || {
        apply(RandomErasing::new(2.0), x())
    });
    c.err("erasing scale > 1", "RandomErasing", move || {
        apply(RandomErasing::new(0.5).with_scale((0.5, 1.5)), x())
    });
    c.err(
        "erasing value of 2 for 3 channels",
        "RandomErasing",
        move || {
            apply(
                RandomErasing::new(0.5).with_value(EraseValue::Constant(vec![0.0, 1.0])),
                x(),
            )
        },
    );
    // Inputs.
    c.err("rank 3", "Augment", move || {
        apply(RandomHorizontalFlip::default(), img(&[3, 8, 8]))
    });
    c.err("empty batch", "Augment", move || {
        apply(RandomHorizontalFlip::default(), img(&[0, 3, 8, 8]))
    });
    c.err("integer image", "Augment", move || {
        let u = Tensor::zeros((1, 3, 4, 4), DType::U32, &Device::Cpu)?;
        apply(RandomHorizontalFlip::default(), u)
    });
    c.err("mask of another size", "Augment", move || {
        let aug = Augment::new([RandomHorizontalFlip::default().into()])?;
        aug.apply_with_mask(&x(), &img(&[2, 1, 8, 7]), 0.0, 0)?;
        Ok(())
    });
    c.err("mask of another batch", "Augment", move || {
        rotate_with_mask(&x(), &img(&[1, 1, 8, 8]), 10.0, 0.0, 0.0)?;
        Ok(())
    });
    c.err("mask fill NaN", "Augment", move || {
        rotate_with_mask(&x(), &img(&[2, 1, 8, 8]), 10.0, 0.0, f32::NAN)?;
        Ok(())
    });
    c.err("crop of 2^22 x 2^22", "Augment", move || {
        crop(&x(), 0, 0, 1 << 22, 1 << 22, 0.0)?;
        Ok(())
    });
    c.err("crop height 0", "Augment", move || {
        crop(&x(), 0, 0, 0, 4, 0.0)?;
        Ok(())
    });
    c.err("resized crop box outside", "resized_crop", move || {
        resized_crop(&x(), 6, 0, 4, 4, (4, 4))?;
        Ok(())
    });
    c.err("resized crop box overflow", "resized_crop", move || {
        resized_crop(&x(), usize::MAX, 0, 4, 4, (4, 4))?;
        Ok(())
    });
    c.err("rotate NaN angle", "RandomRotation", move || {
        rotate(&x(), f64::NAN, 0.0)?;
        Ok(())
    });
    c.err("contrast factor -1", "ColorJitter", move || {
        adjust_contrast(&x(), -1.0)?;
        Ok(())
    });
    c.err("hue factor 0.8", "ColorJitter", move || {
        adjust_hue(&x(), 0.8)?;
        Ok(())
    });
    c.err("erase NaN value", "erase", move || {
        erase(&x(), 0, 0, 2, 2, &[f32::NAN])?;
        Ok(())
    });
    // Legal but unusual: a box past the edge is clipped; a 1 x 1 image flips to itself.
    c.val("erase box past the edge", move || {
        let y = erase(
            &Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu)?,
            1,
            1,
            usize::MAX,
            9,
            &[0.0],
        )?;
        let s = y.sum_all()?.to_scalar::<f32>()?;
        if s != 3.0 {
            return Err(Got::Wrong(format!("sum {s}, want 3")));
        }
        Ok(())
    });
    c.val("flip of 1 x 1", move || {
        let one = img(&[1, 2, 1, 1]);
        let y = hflip(&one)?;
        if y.flatten_all()?.to_vec1::<f32>()? != one.flatten_all()?.to_vec1::<f32>()? {
            return Err(Got::Wrong("1 x 1 flip changed the image".into()));
        }
        Ok(())
    });
    // Mixup.
    c.err("mixup alpha -1", "Mixup", move || {
        Mixup::new(MixupConfig::new(3).with_mixup_alpha(-1.0))?;
        Ok(())
    });
    c.err("mixup alpha NaN", "Mixup", move || {
        Mixup::new(MixupConfig::new(3).with_cutmix_alpha(f64::NAN))?;
        Ok(())
    });
    c.err("mixup both alphas 0", "Mixup", move || {
        Mixup::new(MixupConfig::new(3).with_mixup_alpha(0.0))?;
        Ok(())
    });
    c.err("mixup smoothing 1", "Mixup", move || {
        Mixup::new(MixupConfig::new(3).with_label_smoothing(1.0))?;
        Ok(())
    });
    c.err("mixup switch_prob 2", "Mixup", move || {
        Mixup::new(MixupConfig::new(3).with_switch_prob(2.0))?;
        Ok(())
    });
    c.err("mixup 0 classes", "Mixup", move || {
        Mixup::new(MixupConfig::new(0))?;
        Ok(())
    });
    c.err("mixup odd batch", "Mixup", move || {
        let y = Tensor::new(&[0u32, 1, 2], &Device::Cpu)?;
        Mixup::new(MixupConfig::new(3))?.apply(&img(&[3, 3, 4, 4]), &y, 0)?;
        Ok(())
    });
    c.err("mixup target length", "Mixup", move || {
        let y = Tensor::new(&[0u32, 1, 2, 0], &Device::Cpu)?;
        Mixup::new(MixupConfig::new(3))?.apply(&x(), &y, 0)?;
        Ok(())
    });
    c.err("mixup class out of range", "Mixup", move || {
        let y = Tensor::new(&[0u32, 3], &Device::Cpu)?;
        Mixup::new(MixupConfig::new(3))?.apply(&x(), &y, 0)?;
        Ok(())
    });
    c.err("mixup negative class", "Mixup", move || {
        let y = Tensor::new(&[0i64, -1], &Device::Cpu)?;
        mixup_target(&y, 3, 0.5, 0.0)?;
        Ok(())
    });
    c.err("mixup float targets", "Mixup", move || {
        let y = Tensor::new(&[0f32, 1.0], &Device::Cpu)?;
        mixup_target(&y, 3, 0.5, 0.0)?;
        Ok(())
    });
    c.err("cutmix on rank 2", "Mixup", move || {
        let cfg = MixupConfig::new(3)
            .with_mixup_alpha(0.0)
            .with_cutmix_alpha(1.0);
        let y = Tensor::new(&[0u32, 1], &Device::Cpu)?;
        Mixup::new(cfg)?.apply(&img(&[2, 5]), &y, 0)?;
        Ok(())
    });
    c.list
}
