//! MultiScalePathways: pooling / upsampling semantics and the identity-pathway composition
//! against PyTorch (`gen_multiscale.py`: `avg_pool(ceil_mode=True)` + nearest `interpolate`),
//! the convenience constructor's conv → norm → ReLU stacks loaded under their state-dict names
//! (3-D batch norm in eval and train, 2-D group norm with sum fusion and its input gradient),
//! shapes for concat and sum, non-divisible sizes, gradients reaching both pathways, bad input.

mod common;

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::blocks::multiscale::{downsample_avg, upsample_nearest};
use candle_tricks::blocks::{
    conv_stack, multi_scale_pathways, ConvStackConfig, MultiScaleConfig, MultiScalePathways,
    PathwayFusion,
};
use common::{assert_close, assert_err_names, field, fixtures, fwd_bwd1, Fixtures, R};

fn dev() -> Device {
    Device::Cpu
}

fn identity(t: &Tensor) -> candle_core::Result<Tensor> {
    Ok(t.clone())
}

type Ident = fn(&Tensor) -> candle_core::Result<Tensor>;

fn identity_block(factor: usize, fusion: PathwayFusion) -> MultiScalePathways<Ident, Ident> {
    let cfg = MultiScaleConfig::default()
        .with_factor(factor)
        .with_fusion(fusion);
    MultiScalePathways::new(identity as Ident, identity as Ident, cfg).expect("valid config")
}

fn weights_vb(f: &Fixtures, case: &str) -> VarBuilder<'static> {
    let prefix = format!("{case}.w.");
    let ts = f
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|n| (n.to_string(), v.clone())))
        .collect();
    VarBuilder::from_tensors(ts, DType::F32, &dev())
}

#[test]
fn identity_pathways_match_torch_composition() -> R<()> {
    let f = fixtures("multiscale");
    for (case, factor) in [("2d_f3", 3), ("2d_f2", 2), ("3d_f3", 3), ("3d_f2", 2)] {
        let c = format!("comp.{case}");
        let x = field(&f, &c, "x");
        assert_close(
            &format!("{case} down"),
            &downsample_avg(x, factor)?,
            field(&f, &c, "down"),
            1e-6,
        );
        let block = identity_block(factor, PathwayFusion::Concat);
        let (y, gx) = fwd_bwd1(x, field(&f, &c, "gy"), |t| block.forward_t(t, false))?;
        assert_close(&format!("{case} y"), &y, field(&f, &c, "y"), 1e-6);
        assert_close(&format!("{case} gx"), &gx, field(&f, &c, "gx"), 1e-6);
    }
    Ok(())
}

#[test]
fn hand_computed_composition() -> R<()> {
    // One row of 5 with factor 2: windows {1, 2}, {3, 4}, {5} -> 1.5, 3.5, 5.
    let x = Tensor::new(&[1f32, 2., 3., 4., 5.], &dev())?.reshape((1, 1, 1, 5))?;
    let d = Tensor::new(&[1f32, 2., 3., 4., 5., 6.], &dev())?.reshape((1, 1, 2, 3))?;
    let x = Tensor::cat(&[&x, &x], 2)?; // (1, 1, 2, 5), both rows equal
    let block = identity_block(2, PathwayFusion::Concat);
    let y = block.forward_t(&x, false)?;
    assert_eq!(y.dims(), &[1, 2, 2, 5]);
    let low: Vec<f32> = y.narrow(1, 1, 1)?.flatten_all()?.to_vec1()?;
    let want = [1.5f32, 1.5, 3.5, 3.5, 5.0];
    assert_eq!(&low[..5], &want);
    assert_eq!(&low[5..], &want);
    // Upsample alone repeats each value f times per axis.
    let u = upsample_nearest(&d, 2)?;
    assert_eq!(u.dims(), &[1, 1, 4, 6]);
    assert_eq!(
        u.get(0)?.get(0)?.get(1)?.to_vec1::<f32>()?,
        vec![1., 1., 2., 2., 3., 3.]
    );
    // Sum fusion of identities: x + low.
    let s = identity_block(2, PathwayFusion::Sum).forward_t(&x, false)?;
    assert_close("sum", &s, &(&x + y.narrow(1, 1, 1)?)?, 0.0);
    Ok(())
}

#[test]
fn constructor_3d_batch_norm_matches_torch() -> R<()> {
    let f = fixtures("multiscale");
    let stack = ConvStackConfig::default().with_widths(vec![3, 4]);
    let block = multi_scale_pathways(
        2,
        &stack,
        MultiScaleConfig::default(),
        weights_vb(&f, "block3d"),
    )?;
    assert_eq!(block.full().out_channels(), 4);
    assert_eq!(block.low().depth(), 2);
    let x = field(&f, "block3d", "x");
    let y = block.forward_t(x, false)?;
    assert_eq!(y.dims(), &[2, 8, 7, 8, 6]);
    assert_close("3d eval", &y, field(&f, "block3d", "y_eval"), 1e-5);
    let y = block.forward_t(x, true)?;
    assert_close("3d train", &y, field(&f, "block3d", "y_train"), 1e-4);
    Ok(())
}

#[test]
fn constructor_2d_group_norm_sum_matches_torch() -> R<()> {
    let f = fixtures("multiscale");
    let stack = ConvStackConfig::default()
        .with_spatial_dims(2)
        .with_widths(vec![4, 4])
        .with_norm("group:2");
    let cfg = MultiScaleConfig::default()
        .with_factor(2)
        .with_fusion(PathwayFusion::Sum);
    let block = multi_scale_pathways(3, &stack, cfg, weights_vb(&f, "block2d"))?;
    let (y, gx) = fwd_bwd1(field(&f, "block2d", "x"), field(&f, "block2d", "gy"), |t| {
        block.forward_t(t, false)
    })?;
    assert_eq!(y.dims(), &[2, 4, 9, 10]);
    assert_close("2d y", &y, field(&f, "block2d", "y"), 1e-5);
    assert_close("2d gx", &gx, field(&f, "block2d", "gx"), 1e-4);
    Ok(())
}

#[test]
fn shapes_concat_sum_and_non_divisible_sizes() -> R<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev());
    for (shape, dims) in [(vec![2, 3, 10, 11], 2), (vec![1, 3, 7, 5, 8], 3)] {
        let x = Tensor::randn(0f32, 1., shape.clone(), &dev())?;
        for factor in [1, 2, 3, 4] {
            let stack = ConvStackConfig::default()
                .with_spatial_dims(dims)
                .with_widths(vec![4, 6])
                .with_norm("instance");
            let concat = multi_scale_pathways(
                3,
                &stack,
                MultiScaleConfig::default().with_factor(factor),
                vb.pp(format!("c{dims}{factor}")),
            )?;
            let y = concat.forward_t(&x, true)?;
            let mut want = shape.clone();
            want[1] = 12;
            assert_eq!(y.dims(), &want[..], "concat f={factor}");
            let down = concat.downsample(&x)?;
            let pooled: Vec<usize> = shape[2..].iter().map(|n| n.div_ceil(factor)).collect();
            assert_eq!(&down.dims()[2..], &pooled[..]);
            let sum = multi_scale_pathways(
                3,
                &stack,
                MultiScaleConfig::default()
                    .with_factor(factor)
                    .with_fusion(PathwayFusion::Sum),
                vb.pp(format!("s{dims}{factor}")),
            )?;
            want[1] = 6;
            assert_eq!(
                sum.forward_t(&x, false)?.dims(),
                &want[..],
                "sum f={factor}"
            );
        }
    }
    assert_eq!(MultiScaleConfig::default().out_channels(5, 7)?, 12);
    let sum = MultiScaleConfig::default().with_fusion(PathwayFusion::Sum);
    assert_eq!(sum.out_channels(5, 5)?, 5);
    assert_err_names(sum.out_channels(5, 7), "MultiScalePathways", "sum fusion");
    Ok(())
}

#[test]
fn half_precision_composition() -> R<()> {
    let x = Tensor::randn(0f32, 1., (1, 2, 5, 7, 4), &dev())?;
    let block = identity_block(3, PathwayFusion::Concat);
    let want = block.forward_t(&x.to_dtype(DType::BF16)?.to_dtype(DType::F32)?, false)?;
    for dt in [DType::F16, DType::BF16] {
        let y = block.forward_t(&x.to_dtype(dt)?, false)?;
        assert_eq!(y.dtype(), dt);
        assert_close(&format!("{dt:?}"), &y, &want, 2e-2);
    }
    Ok(())
}

#[test]
fn gradient_reaches_both_pathways() -> R<()> {
    for (dims, shape) in [(2, vec![2, 2, 8, 7]), (3, vec![1, 2, 6, 5, 7])] {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev());
        let stack = ConvStackConfig::default()
            .with_spatial_dims(dims)
            .with_widths(vec![3])
            .with_norm("none");
        let block = multi_scale_pathways(2, &stack, MultiScaleConfig::default(), vb)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., shape, &dev())?)?;
        let y = block.forward_t(x.as_tensor(), true)?;
        let grads = (y.sqr()?.sum_all()?).backward()?;
        let data = varmap.data().lock().expect("varmap lock");
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "full.0.conv.bias",
                "full.0.conv.weight",
                "low.0.conv.bias",
                "low.0.conv.weight"
            ]
        );
        for (name, var) in data.iter() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
            assert!(norm > 0.0, "{dims}d: zero gradient for {name}");
        }
        assert!(grads.get(x.as_tensor()).is_some());
    }
    Ok(())
}

#[test]
fn user_pathways_that_change_size() -> R<()> {
    // A full pathway that halves the size (stride 2 via pooling) and a low one that keeps it:
    // the upsampled low output (ceil(n / f) * f) is cropped to the full pathway's size.
    let full = |t: &Tensor| t.avg_pool2d(2);
    let cfg = MultiScaleConfig::default().with_factor(2);
    let block = MultiScalePathways::new(full, identity as Ident, cfg)?;
    let x = Tensor::randn(0f32, 1., (1, 2, 8, 9), &dev())?;
    assert_eq!(block.forward_t(&x, false)?.dims(), &[1, 4, 4, 4]);
    // A low pathway that shrinks too much cannot be upsampled to the full size.
    let shrink = |t: &Tensor| t.narrow(2, 0, 1);
    let block = MultiScalePathways::new(identity as Ident, shrink, cfg)?;
    assert_err_names(
        block.apply_t(&x, false),
        "MultiScalePathways",
        "low pathway output",
    );
    // Pathways that disagree on the batch, or on channels under sum fusion.
    let drop_sample = |t: &Tensor| t.narrow(0, 0, 1);
    let x2 = Tensor::randn(0f32, 1., (2, 2, 8, 9), &dev())?;
    let block = MultiScalePathways::new(identity as Ident, drop_sample, cfg)?;
    assert_err_names(
        block.apply_t(&x2, false),
        "MultiScalePathways",
        "low pathway output",
    );
    let widen = |t: &Tensor| Tensor::cat(&[t, t], 1);
    let block = MultiScalePathways::new(
        identity as Ident,
        widen,
        cfg.with_fusion(PathwayFusion::Sum),
    )?;
    assert_err_names(block.apply_t(&x, false), "MultiScalePathways", "sum fusion");
    Ok(())
}

#[test]
fn bad_input_errors() -> R<()> {
    let block = identity_block(3, PathwayFusion::Concat);
    let b = "MultiScalePathways";
    for shape in [vec![2, 3, 9], vec![1, 1, 3, 3, 3, 3]] {
        let x = Tensor::zeros(shape, DType::F32, &dev())?;
        assert_err_names(
            block.apply_t(&x, false),
            b,
            "(B, C, H, W) or (B, C, D, H, W)",
        );
    }
    let small = Tensor::zeros((1, 2, 9, 2), DType::F32, &dev())?;
    assert_err_names(block.apply_t(&small, false), b, "factor 3");
    let empty = Tensor::zeros((0, 2, 9, 9), DType::F32, &dev())?;
    assert_err_names(block.apply_t(&empty, false), b, "non-zero");
    let ints = Tensor::zeros((1, 2, 9, 9), DType::U32, &dev())?;
    assert_err_names(block.apply_t(&ints, false), b, "dtype");
    // Through ModuleT the message survives.
    assert_err_names(block.forward_t(&small, false), b, "factor 3");

    let zero = MultiScaleConfig::default().with_factor(0);
    assert_err_names(
        MultiScalePathways::new(identity as Ident, identity as Ident, zero).map(|_| ()),
        b,
        "factor",
    );
    let vb = VarBuilder::zeros(DType::F32, &dev());
    let stack = ConvStackConfig::default().with_widths(vec![2]);
    assert_err_names(
        multi_scale_pathways(0, &stack, MultiScaleConfig::default(), vb.clone()).map(|_| ()),
        b,
        "in_channels",
    );
    assert_err_names(
        multi_scale_pathways(2, &stack, zero, vb.clone()).map(|_| ()),
        b,
        "factor",
    );
    let s = "ConvStack";
    for (cfg, needle) in [
        (stack.clone().with_spatial_dims(1), "spatial_dims"),
        (stack.clone().with_widths(vec![]), "widths"),
        (stack.clone().with_widths(vec![4, 0]), "widths"),
        (stack.clone().with_kernel_size(4), "kernel_size"),
    ] {
        assert_err_names(conv_stack(2, &cfg, vb.clone()).map(|_| ()), s, needle);
    }
    assert_err_names(
        conv_stack(2, &stack.clone().with_norm("btach"), vb.clone()).map(|_| ()),
        "norm::create",
        "btach",
    );
    // A stack fed the wrong channels or rank names itself.
    let st = conv_stack(2, &stack, vb)?;
    let x = Tensor::zeros((1, 3, 4, 4, 4), DType::F32, &dev())?;
    assert_err_names(st.apply_t(&x, false), s, "(B, 2, D, H, W)");
    let x = Tensor::zeros((1, 2, 4, 4), DType::F32, &dev())?;
    assert_err_names(st.apply_t(&x, false), s, "(B, 2, D, H, W)");
    // The free helpers.
    let x = Tensor::zeros((1, 2, 4), DType::F32, &dev())?;
    assert_err_names(downsample_avg(&x, 0), "downsample_avg", "factor");
    assert_err_names(downsample_avg(&x, 5), "downsample_avg", "factor 5");
    assert_err_names(upsample_nearest(&x, 0), "upsample_nearest", "factor");
    let flat = Tensor::zeros((2, 4), DType::F32, &dev())?;
    assert_err_names(downsample_avg(&flat, 2), "downsample_avg", "spatial");
    assert_err_names(upsample_nearest(&flat, 2), "upsample_nearest", "spatial");
    Ok(())
}
