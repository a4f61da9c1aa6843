//! Regularization and residual blocks: invariants of the random layers (shape, identity in eval
//! and at p = 0, drop ratio, survivor scale, mean preserved), residual forward values, LayerScale
//! loading by name, bad input.
//!
//! candle's RNG cannot be seeded, so the statistical checks use large batches and tolerances of
//! many standard deviations (B = 20 000 gives a drop-ratio std of at most 0.0035 against a
//! tolerance of 0.03).

mod common;

use candle_core::{DType, Device, Module, ModuleT, Tensor, Var};
use candle_nn::{LayerNorm, Linear, VarBuilder, VarMap};
use candle_tricks::blocks::{
    layer_scale, DropPath, DropPathConfig, Dropout, Dropout2d, LayerScale, LayerScaleConfig,
    PreNorm, Residual,
};
use common::{assert_close, assert_err, assert_err_names, R};

const N: usize = 20_000;

fn dev() -> Device {
    Device::Cpu
}

fn to_vec(t: &Tensor) -> R<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// Rows of `y / x` (per sample for DropPath, per feature map for Dropout2d), and checks that
/// each is all 0 or all `scale`; returns the fraction dropped.
fn dropped_fraction(ratio_rows: Vec<Vec<f32>>, scale: f32) -> f64 {
    let mut dropped = 0usize;
    let n = ratio_rows.len();
    for (i, row) in ratio_rows.into_iter().enumerate() {
        if row.iter().all(|&r| r == 0.0) {
            dropped += 1;
        } else {
            for &r in &row {
                assert!(
                    (r - scale).abs() <= 1e-6 * scale,
                    "row {i}: ratio {r}, want 0 or {scale} for the whole row"
                );
            }
        }
    }
    dropped as f64 / n as f64
}

#[test]
fn drop_path_shape_and_identity() -> R<()> {
    let x = Tensor::randn(0f32, 1., (6, 3, 5, 4), &dev())?;
    let xs = to_vec(&x)?;
    for p in [0.0f32, 0.3, 0.9] {
        let dp = DropPath::new(p)?;
        // Eval is the identity for any p.
        assert_eq!(to_vec(&dp.forward_t(&x, false)?)?, xs, "eval p = {p}");
        // Train keeps the shape.
        assert_eq!(dp.forward_t(&x, true)?.dims(), x.dims());
    }
    // p = 0 is the identity in training too.
    let dp = DropPath::new(0.0)?;
    assert_eq!(to_vec(&dp.forward_t(&x, true)?)?, xs);
    // Other ranks: (B), (B, T, C), (B, C, D, H, W).
    let dp = DropPath::new(0.5)?;
    for shape in [vec![7], vec![2, 3, 4], vec![2, 2, 2, 2, 2]] {
        let x = Tensor::ones(shape.clone(), DType::F32, &dev())?;
        assert_eq!(dp.forward_t(&x, true)?.dims(), &shape[..]);
    }
    Ok(())
}

#[test]
fn drop_path_ratio_and_scale() -> R<()> {
    // (B, 4) with values away from 0 so that y / x recovers the mask.
    let x = Tensor::rand(1f32, 2., (N, 4), &dev())?;
    for p in [0.1f32, 0.5, 0.8] {
        let y = DropPath::new(p)?.forward_t(&x, true)?;
        let rows = (&y / &x)?.to_vec2::<f32>()?;
        let frac = dropped_fraction(rows, 1.0 / (1.0 - p));
        assert!((frac - p as f64).abs() < 0.03, "p = {p}: dropped {frac}");
    }
    // Without scale_by_keep, survivors keep their value.
    let cfg = DropPathConfig::default()
        .with_p(0.4)
        .with_scale_by_keep(false);
    let y = DropPath::from_config(cfg)?.forward_t(&x, true)?;
    let frac = dropped_fraction((&y / &x)?.to_vec2::<f32>()?, 1.0);
    assert!((frac - 0.4).abs() < 0.03, "dropped {frac}");
    Ok(())
}

#[test]
fn drop_path_mean_preserved_and_grad() -> R<()> {
    // E[y] = x: the mean of (B, 8) ones stays 1 (std of the mean <= 0.0035 at p <= 0.2, 0.0071
    // at p = 0.5).
    let x = Tensor::ones((N, 8), DType::F32, &dev())?;
    for (p, tol) in [(0.2f32, 0.03), (0.5, 0.05)] {
        let y = DropPath::new(p)?.forward_t(&x, true)?;
        let mean = y.mean_all()?.to_scalar::<f32>()?;
        assert!((mean - 1.0).abs() < tol, "p = {p}: mean {mean}");
    }
    // The gradient is the mask itself: 0 or 1/keep per sample, equal to y / x.
    let xv = Var::from_tensor(&Tensor::rand(1f32, 2., (64, 3), &dev())?)?;
    let y = DropPath::new(0.5)?.forward_t(xv.as_tensor(), true)?;
    let grads = y.sum_all()?.backward()?;
    let gx = grads.get(xv.as_tensor()).ok_or("no gradient")?;
    assert_close("drop path grad", gx, &(&y / xv.as_tensor())?, 1e-6);
    Ok(())
}

#[test]
fn drop_path_half_precision() -> R<()> {
    for dtype in [DType::F16, DType::BF16] {
        let x = Tensor::ones((N, 2), dtype, &dev())?;
        let y = DropPath::new(0.5)?.forward_t(&x, true)?;
        assert_eq!(y.dtype(), dtype);
        let vals = to_vec(&y)?;
        assert!(vals.iter().all(|&v| v == 0.0 || v == 2.0));
        let frac = vals.iter().filter(|&&v| v == 0.0).count() as f64 / vals.len() as f64;
        assert!((frac - 0.5).abs() < 0.03, "{dtype:?}: dropped {frac}");
    }
    Ok(())
}

#[test]
fn dropout2d_zeroes_whole_channels() -> R<()> {
    // 200 · 100 = 20 000 feature maps of 3x3.
    let x = Tensor::rand(1f32, 2., (200, 100, 3, 3), &dev())?;
    for p in [0.2f32, 0.5] {
        let d = Dropout2d::new(p)?;
        let y = d.forward_t(&x, true)?;
        assert_eq!(y.dims(), x.dims());
        let rows = (&y / &x)?
            .flatten_from(2)?
            .flatten_to(1)?
            .to_vec2::<f32>()?;
        let frac = dropped_fraction(rows, 1.0 / (1.0 - p));
        assert!((frac - p as f64).abs() < 0.03, "p = {p}: dropped {frac}");
        // Eval is the identity.
        assert_eq!(to_vec(&d.forward_t(&x, false)?)?, to_vec(&x)?);
    }
    // p = 0 is the identity in training.
    assert_eq!(
        to_vec(&Dropout2d::new(0.0)?.forward_t(&x, true)?)?,
        to_vec(&x)?
    );
    // 1-D and 3-D inputs: whole (b, c) maps too.
    let d = Dropout2d::new(0.5)?;
    for shape in [vec![100, 200, 5], vec![100, 200, 2, 2, 2]] {
        let x = Tensor::ones(shape.clone(), DType::F32, &dev())?;
        let y = d.forward_t(&x, true)?;
        assert_eq!(y.dims(), &shape[..]);
        let rows = y.flatten_from(2)?.flatten_to(1)?.to_vec2::<f32>()?;
        let frac = dropped_fraction(rows, 2.0);
        assert!((frac - 0.5).abs() < 0.03, "{shape:?}: dropped {frac}");
    }
    Ok(())
}

#[test]
fn dropout2d_mean_preserved() -> R<()> {
    let x = Tensor::ones((200, 100, 2, 2), DType::F32, &dev())?;
    let y = Dropout2d::new(0.2)?.forward_t(&x, true)?;
    let mean = y.mean_all()?.to_scalar::<f32>()?;
    assert!((mean - 1.0).abs() < 0.03, "mean {mean}");
    Ok(())
}

#[test]
fn reexported_dropout_is_elementwise() -> R<()> {
    let x = Tensor::ones((N, 4), DType::F32, &dev())?;
    let y = Dropout::new(0.5).forward_t(&x, true)?;
    let vals = to_vec(&y)?;
    assert!(vals.iter().all(|&v| v == 0.0 || v == 2.0));
    // Element dropout: rows are not dropped as a whole.
    let mixed = y
        .to_vec2::<f32>()?
        .iter()
        .filter(|r| r.contains(&0.0) && r.iter().any(|&v| v != 0.0))
        .count();
    assert!(mixed > N / 2, "only {mixed} mixed rows");
    Ok(())
}

#[test]
fn residual_forward_and_grad() -> R<()> {
    let x = Tensor::arange(0f32, 12., &dev())?.reshape((3, 4))?;
    let w = Tensor::arange(0f32, 16., &dev())?
        .reshape((4, 4))?
        .affine(0.1, -0.5)?;
    let lin = Linear::new(w.clone(), None);
    let y = Residual::new(lin.clone()).forward(&x)?;
    let want = (&x + x.matmul(&w.t()?)?)?;
    assert_close("residual", &y, &want, 1e-6);
    // dy/dx = I + W^T: with gy = 1, gx = 1 + column sums of W (over the output axis).
    let xv = Var::from_tensor(&x)?;
    let grads = Residual::new(lin)
        .forward(xv.as_tensor())?
        .sum_all()?
        .backward()?;
    let gx = grads.get(xv.as_tensor()).ok_or("no gradient")?;
    let want = (w.sum_keepdim(0)? + 1.0)?.broadcast_as((3, 4))?;
    assert_close("residual grad", gx, &want, 1e-6);
    Ok(())
}

#[test]
fn pre_norm_forward() -> R<()> {
    let x = Tensor::arange(0f32, 24., &dev())?
        .reshape((2, 3, 4))?
        .sqr()?;
    let ln = LayerNorm::new(
        Tensor::new(&[1f32, 2., 0.5, 1.], &dev())?,
        Tensor::new(&[0f32, 0.1, 0., -0.2], &dev())?,
        1e-5,
    );
    let branch = |t: &Tensor| t.affine(2.0, 1.0);
    let block = PreNorm::new(ln.clone(), branch);
    let y = block.forward(&x)?;
    let want = (&x + ln.forward(&x)?.affine(2.0, 1.0)?)?;
    assert_close("pre-norm", &y, &want, 1e-6);
    // The identity path is not normalized: with a zero branch the block is exactly the identity
    // (a post-norm block would return norm(x)).
    let zero = PreNorm::new(ln, |t: &Tensor| t.affine(0.0, 0.0));
    assert_eq!(to_vec(&zero.forward(&x)?)?, to_vec(&x)?);
    Ok(())
}

#[test]
fn layer_scale_values_and_layouts() -> R<()> {
    let gamma = Tensor::new(&[0.5f32, -1., 2.], &dev())?;
    // Channels last: (B, T, C).
    let x = Tensor::arange(0f32, 12., &dev())?.reshape((2, 2, 3))?;
    let ls = LayerScale::new(gamma.clone(), LayerScaleConfig::default())?;
    let got = to_vec(&ls.forward(&x)?)?;
    let xs = to_vec(&x)?;
    let g = [0.5f32, -1., 2.];
    let want: Vec<f32> = xs.iter().enumerate().map(|(i, v)| v * g[i % 3]).collect();
    assert_eq!(got, want);
    // Channels first: (B, C, H, W).
    let cfg = LayerScaleConfig::default().with_channels_first(true);
    let ls = LayerScale::new(gamma, cfg)?;
    let x = Tensor::arange(0f32, 24., &dev())?.reshape((2, 3, 2, 2))?;
    let got = to_vec(&ls.forward(&x)?)?;
    let want: Vec<f32> = to_vec(&x)?
        .iter()
        .enumerate()
        .map(|(i, v)| v * g[(i / 4) % 3])
        .collect();
    assert_eq!(got, want);
    Ok(())
}

#[test]
fn layer_scale_loads_gamma_by_name_and_inits() -> R<()> {
    // timm state-dict key: `blocks.0.ls1.gamma`.
    let gamma = Tensor::new(&[0.1f32, 0.2, 0.3, 0.4], &dev())?;
    let ts = [("blocks.0.ls1.gamma".to_string(), gamma.clone())]
        .into_iter()
        .collect();
    let vb = VarBuilder::from_tensors(ts, DType::F32, &dev());
    let ls = layer_scale(4, LayerScaleConfig::default(), vb.pp("blocks.0.ls1"))?;
    assert_eq!(to_vec(ls.gamma())?, to_vec(&gamma)?);
    // A checkpoint with another width: an error, not a silent broadcast.
    let vb = VarBuilder::from_tensors(
        [("ls.gamma".to_string(), gamma)].into_iter().collect(),
        DType::F32,
        &dev(),
    );
    assert!(layer_scale(8, LayerScaleConfig::default(), vb.pp("ls")).is_err());
    // From a VarMap: every gamma starts at init_value, and it is trainable.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev());
    let cfg = LayerScaleConfig::default().with_init_value(1e-6);
    let ls = layer_scale(5, cfg, vb.pp("ls"))?;
    assert!(to_vec(ls.gamma())?.iter().all(|&v| v == 1e-6));
    assert_eq!(varmap.all_vars().len(), 1);
    assert!(varmap
        .data()
        .lock()
        .map_err(|e| e.to_string())?
        .contains_key("ls.gamma"));
    Ok(())
}

#[test]
fn bad_input_sweep() -> R<()> {
    // Drop probabilities out of range, negative, NaN.
    for p in [1.0f32, 1.5, -0.1, f32::NAN, f32::INFINITY] {
        assert_err_names(DropPath::new(p), "DropPath", "[0, 1)");
        assert_err_names(Dropout2d::new(p), "Dropout2d", "[0, 1)");
    }
    let cfg = DropPathConfig::default().with_p(-1.0);
    assert_err_names(DropPath::from_config(cfg), "DropPath", "[0, 1)");

    // Wrong rank / dtype for the random layers.
    let scalar = Tensor::new(1f32, &dev())?;
    assert_err_names(DropPath::new(0.5)?.apply(&scalar, true), "DropPath", "rank");
    let flat = Tensor::ones((4, 4), DType::F32, &dev())?;
    assert_err_names(Dropout2d::new(0.5)?.apply(&flat, true), "Dropout2d", "rank");
    let ints = Tensor::ones((4, 4, 2), DType::U32, &dev())?;
    assert_err_names(DropPath::new(0.5)?.apply(&ints, true), "DropPath", "dtype");
    assert_err_names(
        Dropout2d::new(0.5)?.apply(&ints, false),
        "Dropout2d",
        "dtype",
    );
    // Through ModuleT too (candle's error wraps ours).
    assert_err(
        "DropPath via ModuleT",
        DropPath::new(0.5)?.forward_t(&scalar, true),
        &["DropPath"],
    );

    // Residual / PreNorm whose branch changes the shape: an error naming the block.
    let x = Tensor::ones((2, 4), DType::F32, &dev())?;
    let widen = Linear::new(Tensor::ones((6, 4), DType::F32, &dev())?, None);
    assert_err_names(Residual::new(widen.clone()).apply(&x), "Residual", "[2, 6]");
    assert_err(
        "Residual via Module",
        Residual::new(widen.clone()).forward(&x),
        &["Residual", "branch output"],
    );
    let narrow = |t: &Tensor| t.narrow(1, 0, 2);
    assert_err_names(Residual::new(narrow).apply(&x), "Residual", "[2, 4]");
    let ident = |t: &Tensor| Ok(t.clone());
    assert_err_names(PreNorm::new(ident, widen).apply(&x), "PreNorm", "shape");
    // A branch that changes the dtype.
    let to_f64 = |t: &Tensor| t.to_dtype(DType::F64);
    assert_err_names(Residual::new(to_f64).apply(&x), "Residual", "dtype");

    // LayerScale: bad gamma, bad config, channel mismatch in both layouts, dtype mismatch.
    let g3 = Tensor::ones(3, DType::F32, &dev())?;
    let ok = LayerScaleConfig::default();
    assert_err_names(
        LayerScale::new(Tensor::ones((3, 1), DType::F32, &dev())?, ok),
        "LayerScale",
        "gamma",
    );
    assert_err_names(
        LayerScale::new(Tensor::ones(0, DType::F32, &dev())?, ok),
        "LayerScale",
        "non-zero",
    );
    for v in [f64::NAN, f64::INFINITY] {
        let cfg = ok.with_init_value(v);
        assert_err_names(LayerScale::new(g3.clone(), cfg), "LayerScale", "init_value");
    }
    let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev());
    assert_err_names(layer_scale(0, ok, vb), "LayerScale", "dim");
    let last = LayerScale::new(g3.clone(), ok)?;
    assert_err_names(last.apply(&x), "LayerScale", "(…, 3)");
    let first = LayerScale::new(g3.clone(), ok.with_channels_first(true))?;
    let x4 = Tensor::ones((2, 4, 3, 3), DType::F32, &dev())?;
    assert_err_names(first.apply(&x4), "LayerScale", "(B, 3, …)");
    assert_err_names(first.apply(&g3), "LayerScale", "channels first");
    let xh = Tensor::ones((2, 3), DType::F16, &dev())?;
    assert_err_names(last.apply(&xh), "LayerScale", "dtype");
    Ok(())
}
