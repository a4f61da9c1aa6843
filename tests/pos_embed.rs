//! ViT position-embedding resampling against timm's `resample_abs_pos_embed` (fixtures from
//! `tests/fixtures/gen_pos_embed.py`, timm 1.0.31): up- and down-sampling, non-square grids,
//! 0, 1 and 2 prefix tokens, with and without antialiasing; gradients; bad input.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_tricks::transfer::{resample_pos_embed, ResamplePosEmbedConfig};
use common::{assert_close, assert_err_names, field, fixtures, R};

/// A grid size `(H, W)`.
type Grid = (usize, usize);

/// (case, old_size, new_size, num_prefix_tokens, antialias, old_size given), as the generator.
const CASES: [(&str, Grid, Grid, usize, bool, bool); 8] = [
    ("up", (4, 4), (7, 7), 1, true, false),
    ("down", (9, 9), (4, 4), 1, true, false),
    ("down_strong", (14, 14), (3, 5), 1, true, true),
    ("nonsquare", (3, 5), (6, 4), 0, true, true),
    ("nonsquare_down", (8, 6), (5, 2), 0, true, true),
    ("plain_up", (4, 5), (9, 7), 1, false, true),
    ("plain_down", (9, 9), (5, 4), 0, false, false),
    ("prefix2", (5, 5), (8, 3), 2, true, true),
];

fn cfg(prefix: usize, antialias: bool) -> ResamplePosEmbedConfig {
    ResamplePosEmbedConfig::default()
        .with_num_prefix_tokens(prefix)
        .with_antialias(antialias)
}

#[test]
fn matches_timm_forward_and_gradient() -> R<()> {
    let f = fixtures("pos_embed");
    for (case, old, new, prefix, aa, explicit) in CASES {
        let old = explicit.then_some(old);
        let x = Var::from_tensor(field(&f, case, "x"))?;
        let y = resample_pos_embed(x.as_tensor(), new, old, cfg(prefix, aa))?;
        assert_close(&format!("{case} y64"), &y, field(&f, case, "y64"), 1e-12);
        let gy = field(&f, case, "gy");
        let grads = (&y * gy)?.sum_all()?.backward()?;
        let gx = grads.get(&x).expect("gradient wrt pos_embed");
        assert_close(&format!("{case} gx"), gx, field(&f, case, "gx"), 1e-12);
        // timm itself runs in f32.
        let x32 = field(&f, case, "x").to_dtype(DType::F32)?;
        let y32 = resample_pos_embed(&x32, new, old, cfg(prefix, aa))?;
        assert_eq!(y32.dtype(), DType::F32);
        assert_close(&format!("{case} y"), &y32, field(&f, case, "y"), 1e-6);
    }
    Ok(())
}

#[test]
fn half_precision_resamples_in_f32() -> R<()> {
    let f = fixtures("pos_embed");
    let want = field(&f, "down", "y");
    for dt in [DType::F16, DType::BF16] {
        let x = field(&f, "down", "x").to_dtype(dt)?;
        let y = resample_pos_embed(&x, (4, 4), None, ResamplePosEmbedConfig::default())?;
        assert_eq!(y.dtype(), dt);
        assert_close(&format!("{dt:?}"), &y, want, 1e-2);
    }
    Ok(())
}

#[test]
fn batch_and_same_size() -> R<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f64, 1., (3, 1 + 5 * 4, 2), &dev)?;
    let cfg = ResamplePosEmbedConfig::default();
    // Each batch entry is resampled on its own.
    let y = resample_pos_embed(&x, (3, 6), Some((5, 4)), cfg)?;
    for i in 0..3 {
        let one = resample_pos_embed(&x.narrow(0, i, 1)?, (3, 6), Some((5, 4)), cfg)?;
        assert_close("batch", &y.narrow(0, i, 1)?, &one, 1e-15);
    }
    // The same grid: unchanged (timm's early exit).
    let same = resample_pos_embed(&x, (5, 4), Some((5, 4)), cfg)?;
    assert_close("same size", &same, &x, 0.0);
    Ok(())
}

#[test]
fn bad_input_is_an_error() -> R<()> {
    let dev = Device::Cpu;
    let block = "resample_pos_embed";
    let d = ResamplePosEmbedConfig::default();
    let x = Tensor::zeros((1, 1 + 16, 4), DType::F32, &dev)?;
    // Grid size not matching the token count.
    assert_err_names(
        resample_pos_embed(&x, (8, 8), Some((4, 5)), d),
        block,
        "4·5",
    );
    assert_err_names(
        resample_pos_embed(&x, (8, 8), None, d.with_num_prefix_tokens(0)),
        block,
        "not a square",
    );
    assert_err_names(
        resample_pos_embed(&x, (8, 8), None, d.with_num_prefix_tokens(18)),
        block,
        "num_prefix_tokens",
    );
    assert_err_names(resample_pos_embed(&x, (0, 8), None, d), block, "new_size");
    assert_err_names(resample_pos_embed(&x, (8, 8), Some((0, 4)), d), block, "");
    let huge = 1usize << 40;
    assert_err_names(
        resample_pos_embed(&x, (huge, huge), None, d),
        block,
        "output",
    );
    let rank2 = Tensor::zeros((17, 4), DType::F32, &dev)?;
    assert_err_names(
        resample_pos_embed(&rank2, (8, 8), None, d),
        block,
        "pos_embed",
    );
    let ints = Tensor::zeros((1, 17, 4), DType::U32, &dev)?;
    assert_err_names(
        resample_pos_embed(&ints, (8, 8), None, d),
        block,
        "pos_embed",
    );
    Ok(())
}
