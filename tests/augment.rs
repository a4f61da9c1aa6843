//! `candle_tricks::augment`: torchvision fixtures for the deterministic cores (flip, pad + crop,
//! resized crop, rotation, colour adjustments, erasing), the geometric invariants (flip∘flip,
//! rotation by 0, mask and image sharing one transform), Mixup / CutMix targets and λ,
//! reproducibility across thread counts, half precision and bad input.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_tricks::augment::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, crop, erase, hflip,
    mixup_target, resized_crop, rotate, rotate_with_mask, vflip, Augment, ColorJitter, EraseValue,
    Mixup, MixupConfig, RandomCrop, RandomErasing, RandomHorizontalFlip, RandomResizedCrop,
    RandomRotation, RandomVerticalFlip, Transform,
};
use common::{assert_close, assert_err, fixtures, get, R};

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .expect("flat")
}

fn bits(t: &Tensor) -> Vec<u32> {
    flat(t).iter().map(|v| v.to_bits()).collect()
}

#[test]
fn torchvision_fixtures() -> R<()> {
    let f = fixtures("augment");
    let x = get(&f, "x");
    let cases: Vec<(&str, Tensor, f64)> = vec![
        ("hflip", hflip(x)?, 0.0),
        ("vflip", vflip(x)?, 0.0),
        ("pad_crop", crop(x, 1 - 2, 3 - 2, 6, 8, 0.25)?, 0.0),
        ("resized_up", resized_crop(x, 1, 2, 5, 6, (11, 13))?, 1e-6),
        ("resized_down", resized_crop(x, 1, 2, 5, 6, (3, 4))?, 1e-6),
        ("rotate30", rotate(x, 30.0, 0.5)?, 1e-5),
        ("rotate_m73", rotate(x, -73.0, 0.0)?, 1e-5),
        ("brightness", adjust_brightness(x, 1.3)?, 1e-6),
        ("contrast", adjust_contrast(x, 0.6)?, 1e-6),
        ("saturation", adjust_saturation(x, 1.7)?, 1e-6),
        ("hue", adjust_hue(x, 0.2)?, 1e-5),
        ("hue_neg", adjust_hue(x, -0.35)?, 1e-5),
        ("erase", erase(x, 2, 3, 4, 5, &[0.1, -0.2, 0.3])?, 0.0),
    ];
    for (name, got, tol) in cases {
        let want = get(&f, &format!("{name}.y"));
        if tol == 0.0 {
            assert_eq!(bits(&got), bits(want), "{name}: not bit-identical");
        } else {
            assert_close(name, &got, want, tol);
        }
    }
    // The mask, nearest: identical to torchvision except where a sampling point sits on a
    // rounding tie (computed in f64 here, f32 there).
    let mask = get(&f, "rotate30_mask.x");
    let (_, m) = rotate_with_mask(x, mask, 30.0, 0.5, 0.0)?;
    let (got, want) = (flat(&m), flat(get(&f, "rotate30_mask.y")));
    let same = got.iter().zip(&want).filter(|(a, b)| a == b).count();
    assert!(
        same + 2 >= want.len(),
        "mask: {same} of {} agree",
        want.len()
    );
    Ok(())
}

#[test]
fn flip_twice_is_identity() -> R<()> {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let x = Tensor::rand(0f32, 1.0, (3, 2, 5, 6), &Device::Cpu)?.to_dtype(dtype)?;
        assert_eq!(bits(&hflip(&hflip(&x)?)?), bits(&x));
        assert_eq!(bits(&vflip(&vflip(&x)?)?), bits(&x));
        // And a flip is not the identity.
        assert_ne!(bits(&hflip(&x)?), bits(&x));
    }
    // The same through the pipeline with p = 1.
    let x = Tensor::rand(0f32, 1.0, (2, 3, 4, 5), &Device::Cpu)?;
    let twice = Augment::new([
        RandomHorizontalFlip::new(1.0).into(),
        RandomVerticalFlip::new(1.0).into(),
        RandomHorizontalFlip::new(1.0).into(),
        RandomVerticalFlip::new(1.0).into(),
    ])?;
    assert_eq!(bits(&twice.apply(&x, 3)?), bits(&x));
    Ok(())
}

#[test]
fn rotation_by_zero_is_identity() -> R<()> {
    let x = Tensor::rand(0f32, 1.0, (2, 3, 6, 9), &Device::Cpu)?;
    assert_eq!(bits(&rotate(&x, 0.0, 0.7)?), bits(&x));
    let aug = Augment::new([RandomRotation::new(0.0).with_fill(0.3).into()])?;
    let mask = Tensor::rand(0f32, 5.0, (2, 1, 6, 9), &Device::Cpu)?.floor()?;
    let (y, m) = aug.apply_with_mask(&x, &mask, 0.0, 11)?;
    assert_eq!(bits(&y), bits(&x));
    assert_eq!(bits(&m), bits(&mask));
    Ok(())
}

/// An image whose channel 0 is the mask: with transforms that sample whole pixels (flips,
/// integer crops, a quarter turn of a square image), bilinear and nearest pick the same pixel,
/// so the image's channel 0 must equal the mask everywhere.
#[test]
fn mask_and_image_share_the_transform() -> R<()> {
    let (b, s) = (6, 10);
    let mask = Tensor::rand(0f32, 7.0, (b, 1, s, s), &Device::Cpu)?.floor()?;
    let noise = Tensor::rand(0f32, 1.0, (b, 2, s, s), &Device::Cpu)?;
    let x = Tensor::cat(&[&mask, &noise], 1)?;
    let aug = Augment::new([
        RandomHorizontalFlip::new(0.5).into(),
        RandomRotation::new(0.0)
            .with_range((90.0, 90.0))
            .with_fill(-1.0)
            .into(),
        RandomCrop::new((8, 8))
            .with_padding(3)
            .with_fill(-1.0)
            .into(),
        RandomVerticalFlip::new(0.5).into(),
    ])?;
    let (y, m) = aug.apply_with_mask(&x, &mask, -1.0, 5)?;
    let img0 = flat(&y.narrow(1, 0, 1)?);
    let m = flat(&m);
    for (i, (a, b)) in img0.iter().zip(&m).enumerate() {
        assert!((a - b).abs() < 1e-4, "pixel {i}: image {a} vs mask {b}");
    }
    // The fill shows up, so the crop reached into the padding somewhere.
    assert!(m.contains(&-1.0));
    // A general angle: the mask is the nearest pixel of the image's bilinear sampling point,
    // so where the image is locally constant (a 2 x 2 block of one class) they agree.
    let blocks = mask.narrow(2, 0, 5)?.narrow(3, 0, 5)?;
    let blocks = blocks.repeat((1, 1, 1, 1))?;
    let up = blocks
        .unsqueeze(3)?
        .unsqueeze(5)?
        .repeat((1, 1, 1, 2, 1, 2))?
        .reshape((b, 1, s, s))?;
    let (y, m) = rotate_with_mask(&up, &up, 23.0, -1.0, -1.0)?;
    let (yv, mv) = (flat(&y), flat(&m));
    let pure: Vec<usize> = (0..yv.len())
        .filter(|&i| (yv[i] - yv[i].round()).abs() < 1e-5 && yv[i] >= 0.0)
        .collect();
    let agree = pure
        .iter()
        .filter(|&&i| (yv[i].round() - mv[i]).abs() < 1e-6)
        .count();
    assert!(
        agree * 10 >= pure.len() * 9,
        "{agree} of {} agree",
        pure.len()
    );
    Ok(())
}

#[test]
fn mixup_targets_sum_to_one() -> R<()> {
    let x = Tensor::rand(0f32, 1.0, (8, 3, 6, 6), &Device::Cpu)?;
    let y = Tensor::new(&[0u32, 1, 2, 3, 4, 5, 6, 7], &Device::Cpu)?;
    let mix = Mixup::new(MixupConfig::new(10).with_mixup_alpha(0.4))?;
    for seed in 0..20 {
        let out = mix.apply(&x, &y, seed)?;
        assert!(out.cutmix_box.is_none());
        for s in flat(&out.target.sum(1)?) {
            assert!((s - 1.0).abs() < 1e-6, "row sum {s}");
        }
        // The images are the same convex combination: x * lam + x.flip(0) * (1 - lam).
        let flipped =
            x.index_select(&Tensor::new(&[7u32, 6, 5, 4, 3, 2, 1, 0], &Device::Cpu)?, 0)?;
        let want = ((&x * out.lam)? + (flipped * (1.0 - out.lam))?)?;
        assert_close("mixup x", &out.x, &want, 1e-6);
        // Target: lam on the own class (plus smoothing), 1 - lam on the partner's.
        let t = flat(&out.target);
        let (off, on) = (0.01f64, 0.91f64);
        let want0 = on * out.lam + off * (1.0 - out.lam);
        assert!((f64::from(t[0]) - want0).abs() < 1e-6);
    }
    // mixup_target without mixing is one-hot with smoothing.
    let t = flat(&mixup_target(&y, 10, 1.0, 0.0)?);
    assert_eq!(t.iter().sum::<f32>(), 8.0);
    assert_eq!(t[0], 1.0);
    Ok(())
}

#[test]
fn cutmix_lambda_is_the_box_area() -> R<()> {
    let (h, w) = (7, 9);
    let x = Tensor::rand(0f32, 1.0, (4, 2, h, w), &Device::Cpu)?;
    let y = Tensor::new(&[3i64, 1, 0, 2], &Device::Cpu)?;
    let mix = Mixup::new(
        MixupConfig::new(4)
            .with_mixup_alpha(0.0)
            .with_cutmix_alpha(1.0)
            .with_label_smoothing(0.0),
    )?;
    let rev = Tensor::new(&[3u32, 2, 1, 0], &Device::Cpu)?;
    let flipped = x.index_select(&rev, 0)?;
    let mut boxes = 0;
    for seed in 0..30 {
        let out = mix.apply(&x, &y, seed)?;
        let Some([yl, yh, xl, xh]) = out.cutmix_box else {
            continue; // lam came out 1
        };
        boxes += 1;
        assert_eq!(
            out.lam,
            1.0 - ((yh - yl) * (xh - xl)) as f64 / (h * w) as f64
        );
        let got = out.x.to_vec3::<f32>().ok();
        let _ = got;
        let (o, a, b) = (
            out.x.flatten_all()?.to_vec1::<f32>()?,
            flat(&x),
            flat(&flipped),
        );
        for i in 0..o.len() {
            let (r, c) = ((i / w) % h, i % w);
            let inside = (yl..yh).contains(&r) && (xl..xh).contains(&c);
            assert_eq!(o[i], if inside { b[i] } else { a[i] }, "element {i}");
        }
        // Soft targets weigh the labels by the same lam.
        let t = out.target.to_vec2::<f32>()?;
        assert!((f64::from(t[0][3]) - out.lam).abs() < 1e-6 || y.to_vec1::<i64>()?[3] == 3);
        for row in &t {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }
    assert!(boxes > 20);
    Ok(())
}

fn reproducibility_pipeline() -> Augment {
    Augment::new([
        RandomResizedCrop::new((20, 18)).into(),
        RandomHorizontalFlip::default().into(),
        RandomRotation::new(15.0).into(),
        ColorJitter::new(0.4, 0.4, 0.4, 0.1).into(),
        RandomErasing::new(0.5)
            .with_value(EraseValue::Random)
            .into(),
    ])
    .expect("pipeline")
}

fn reproducibility_batch() -> Tensor {
    // A deterministic input (no RNG): a smooth pattern with values in [0, 1].
    let n = 16 * 3 * 24 * 28;
    let v: Vec<f32> = (0..n)
        .map(|i| (i as f32 * 0.37).sin() * 0.5 + 0.5)
        .collect();
    Tensor::from_vec(v, (16, 3, 24, 28), &Device::Cpu).expect("batch")
}

/// Run in a child process by `same_batch_whatever_the_thread_count` (ignored otherwise):
/// writes the augmented batch's bits to `$AUGMENT_DUMP`.
#[test]
#[ignore]
fn child_dump() {
    let Ok(path) = std::env::var("AUGMENT_DUMP") else {
        return;
    };
    let y = reproducibility_pipeline()
        .apply(&reproducibility_batch(), 99)
        .expect("apply");
    let bytes: Vec<u8> = bits(&y).iter().flat_map(|b| b.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("write dump");
}

/// candle's pool is sized once per process from `CANDLE_NUM_THREADS`, so each thread count
/// runs in its own child process of this test binary.
#[test]
fn same_batch_whatever_the_thread_count() -> R<()> {
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir();
    let mut dumps = Vec::new();
    for threads in [1, 2, 3] {
        let path = dir.join(format!("augment_dump_{}_{threads}", std::process::id()));
        let status = std::process::Command::new(&exe)
            .args([
                "child_dump",
                "--exact",
                "--ignored",
                "--test-threads=1",
                "--quiet",
            ])
            .env("CANDLE_NUM_THREADS", threads.to_string())
            .env("AUGMENT_DUMP", &path)
            .status()?;
        assert!(status.success(), "child with {threads} threads failed");
        dumps.push(std::fs::read(&path)?);
        std::fs::remove_file(&path)?;
    }
    assert!(!dumps[0].is_empty());
    assert_eq!(dumps[0], dumps[1], "1 vs 2 threads");
    assert_eq!(dumps[0], dumps[2], "1 vs 3 threads");
    // And this process (its own thread count) agrees.
    let y = reproducibility_pipeline().apply(&reproducibility_batch(), 99)?;
    let here: Vec<u8> = bits(&y).iter().flat_map(|b| b.to_le_bytes()).collect();
    assert_eq!(here, dumps[0]);
    // Image i depends only on (seed, i): a batch of the last 4 images gives them the stream
    // indices 0..4, so it differs, but the same image at the same index matches.
    let x = reproducibility_batch();
    let first = reproducibility_pipeline().apply(&x.narrow(0, 0, 4)?, 99)?;
    assert_eq!(bits(&first), bits(&y.narrow(0, 0, 4)?));
    Ok(())
}

#[test]
fn half_precision_matches_f32() -> R<()> {
    let aug = Augment::new([
        RandomResizedCrop::new((12, 12)).into(),
        RandomHorizontalFlip::default().into(),
        RandomRotation::new(20.0).into(),
        ColorJitter::new(0.3, 0.3, 0.3, 0.05).into(),
    ])?;
    let x = Tensor::rand(0f32, 1.0, (4, 3, 16, 16), &Device::Cpu)?;
    for dtype in [DType::F16, DType::BF16] {
        let xh = x.to_dtype(dtype)?;
        let want = aug.apply(&xh.to_dtype(DType::F32)?, 1)?;
        let got = aug.apply(&xh, 1)?;
        assert_eq!(got.dtype(), dtype);
        let tol = if dtype == DType::F16 { 2e-3 } else { 1e-2 };
        assert_close("half", &got, &want, tol);
    }
    Ok(())
}

#[test]
fn random_transforms_behave() -> R<()> {
    let x = Tensor::rand(0f32, 1.0, (8, 3, 10, 12), &Device::Cpu)?;
    // A resized crop of the whole image at its own aspect ratio is a plain resize.
    let full = RandomResizedCrop::new((5, 7))
        .with_scale((1.0, 1.0))
        .with_ratio((1.2, 1.2));
    let got = Augment::new([full.into()])?.apply(&x, 0)?;
    assert_eq!(bits(&got), bits(&resized_crop(&x, 0, 0, 10, 12, (5, 7))?));
    // Pad + crop of the unpadded size keeps every pixel of some shift of the image.
    let aug = Augment::new([RandomCrop::new((10, 12))
        .with_padding(2)
        .with_fill(9.0)
        .into()])?;
    let y = aug.apply(&x, 4)?;
    assert_eq!(y.dims(), [8, 3, 10, 12]);
    // Erasing with p = 1 changes every image; with p = 0 none.
    let on = Augment::new([RandomErasing::new(1.0)
        .with_value(EraseValue::Constant(vec![5.0]))
        .into()])?;
    let e = on.apply(&x, 2)?;
    for i in 0..8 {
        assert!(flat(&e.get(i)?).contains(&5.0), "image {i} not erased");
    }
    let off = Augment::new([RandomErasing::new(0.0).into()])?;
    assert_eq!(bits(&off.apply(&x, 2)?), bits(&x));
    // A jitter of 0 is the identity; brightness alone stays in [0, 1].
    let id = Augment::new([ColorJitter::default().into()])?;
    assert_eq!(bits(&id.apply(&x, 0)?), bits(&x));
    let b = Augment::new([ColorJitter::new(0.9, 0.0, 0.0, 0.0).into()])?.apply(&x, 1)?;
    assert!(flat(&b).iter().all(|v| (0.0..=1.0).contains(v)));
    // Different images of one batch get different draws.
    let flips = Augment::new([RandomHorizontalFlip::new(0.5).into()])?.apply(&x, 8)?;
    let flipped = (0..8)
        .filter(|&i| bits(&flips.get(i).unwrap()) != bits(&x.get(i).unwrap()))
        .count();
    assert!((1..8).contains(&flipped), "{flipped} of 8 flipped");
    // Per-channel erase values for a 4-channel image are checked against its channels.
    let four = Tensor::rand(0f32, 1.0, (2, 4, 6, 6), &Device::Cpu)?;
    let per_channel = EraseValue::Constant(vec![1.0, 2.0, 3.0, 4.0]);
    let e4 = Augment::new([RandomErasing::new(1.0).with_value(per_channel).into()])?;
    assert!(flat(&e4.apply(&four, 0)?).contains(&4.0));
    assert!(e4.apply(&x, 0).is_err());
    // Contrast of a grey image blends with its own mean (torchvision's 1-channel rule).
    let grey = Tensor::rand(0f32, 1.0, (2, 1, 4, 4), &Device::Cpu)?;
    let got = flat(&adjust_contrast(&grey, 0.5)?);
    let v = flat(&grey);
    for (img, chunk) in v.chunks(16).enumerate() {
        let mean = chunk.iter().sum::<f32>() / 16.0;
        for (k, &p) in chunk.iter().enumerate() {
            let want = (0.5 * p + 0.5 * mean).clamp(0.0, 1.0);
            assert!((got[img * 16 + k] - want).abs() < 1e-6);
        }
    }
    // Transforms are listed back.
    assert!(matches!(
        Augment::new([RandomCrop::new((2, 2)).into()])?.transforms()[0],
        Transform::Crop(_)
    ));
    Ok(())
}

#[test]
fn bad_input_is_an_error() -> R<()> {
    let x = Tensor::rand(0f32, 1.0, (2, 3, 8, 8), &Device::Cpu)?;
    let crop_too_big = Augment::new([RandomCrop::new((13, 8)).with_padding(2).into()])?;
    assert_err("crop", crop_too_big.apply(&x, 0), &["RandomCrop", "larger"]);
    assert_err(
        "p",
        Augment::new([RandomHorizontalFlip::new(1.5).into()]),
        &["RandomHorizontalFlip", "p"],
    );
    assert_err(
        "p<0",
        Augment::new([RandomVerticalFlip::new(-0.1).into()]),
        &["RandomVerticalFlip"],
    );
    assert_err(
        "alpha",
        Mixup::new(MixupConfig::new(3).with_mixup_alpha(-1.0)),
        &["Mixup", "mixup_alpha"],
    );
    assert_err(
        "alphas 0",
        Mixup::new(MixupConfig::new(3).with_mixup_alpha(0.0)),
        &["Mixup", "both 0"],
    );
    let mask = Tensor::zeros((2, 1, 8, 7), DType::F32, &Device::Cpu)?;
    let aug = Augment::new([RandomHorizontalFlip::default().into()])?;
    assert_err(
        "mask",
        aug.apply_with_mask(&x, &mask, 0.0, 0),
        &["Augment", "mask"],
    );
    assert_err(
        "rank",
        aug.apply(&x.flatten_from(2)?, 0),
        &["Augment", "(B, C, H, W)"],
    );
    let ints = Tensor::zeros((2, 3, 8, 8), DType::U8, &Device::Cpu)?;
    assert_err("dtype", aug.apply(&ints, 0), &["Augment", "U8"]);
    assert_err(
        "jitter",
        Augment::new([ColorJitter::new(-0.1, 0.0, 0.0, 0.0).into()]),
        &["ColorJitter", "brightness"],
    );
    assert_err(
        "hue",
        Augment::new([ColorJitter::new(0.0, 0.0, 0.0, 0.6).into()]),
        &["ColorJitter", "hue"],
    );
    let four = Tensor::rand(0f32, 1.0, (2, 4, 8, 8), &Device::Cpu)?;
    let jitter = Augment::new([ColorJitter::new(0.0, 0.5, 0.0, 0.0).into()])?;
    assert_err(
        "channels",
        jitter.apply(&four, 0),
        &["ColorJitter", "channels"],
    );
    assert_err(
        "scale",
        Augment::new([RandomResizedCrop::new((4, 4)).with_scale((0.9, 0.1)).into()]),
        &["RandomResizedCrop", "scale"],
    );
    assert_err(
        "erase",
        Augment::new([RandomErasing::new(0.5).with_ratio((0.0, 1.0)).into()]),
        &["RandomErasing", "ratio"],
    );
    assert_err(
        "rotation",
        Augment::new([RandomRotation::new(f64::NAN).into()]),
        &["RandomRotation", "degrees"],
    );
    let y = Tensor::new(&[0u32, 5], &Device::Cpu)?;
    let mix = Mixup::new(MixupConfig::new(3))?;
    assert_err("class", mix.apply(&x, &y, 0), &["Mixup", "out of range"]);
    let odd = Tensor::rand(0f32, 1.0, (3, 3, 8, 8), &Device::Cpu)?;
    assert_err(
        "odd",
        mix.apply(&odd, &Tensor::new(&[0u32, 1, 2], &Device::Cpu)?, 0),
        &["Mixup", "even"],
    );
    assert_err(
        "resized box",
        resized_crop(&x, 4, 0, 5, 8, (4, 4)),
        &["resized_crop", "inside"],
    );
    assert_err(
        "erase value",
        erase(&x, 0, 0, 2, 2, &[0.0, 1.0]),
        &["erase", "value"],
    );
    assert_err(
        "brightness",
        adjust_brightness(&x, -1.0),
        &["ColorJitter", "brightness_factor"],
    );
    Ok(())
}
