//! Aspp and SeparableConv2d against PyTorch fixtures (tests/fixtures/gen_conv_blocks.py): eval
//! output, input gradient, train-mode output and running-statistics updates, loaded under the
//! PyTorch state-dict names; half precision; and bad input.

use std::collections::HashMap;

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{Activation, VarBuilder, VarMap};
use candle_tricks::conv::{
    aspp, separable_conv2d, Aspp, AsppConfig, Padding, SeparableConv2d, SeparableConv2dConfig,
};

mod common;
use common::*;

/// A VarMap holding the case's state dict (names without the case prefix): blocks built from it
/// share its variables, so the BatchNorm running statistics a train-mode forward leaves behind can
/// be read back.
fn varmap_for(f: &HashMap<String, Tensor>, case: &str) -> VarMap {
    let varmap = VarMap::new();
    let prefix = format!("{case}.");
    {
        let mut data = varmap.data().lock().unwrap();
        for (k, v) in f {
            if let Some(name) = k.strip_prefix(&prefix) {
                let is_io = ["x", "y", "gy", "gx", "y_train"].contains(&name);
                if !is_io && !name.starts_with("after.") {
                    data.insert(name.to_string(), Var::from_tensor(v).unwrap());
                }
            }
        }
    }
    varmap
}

/// Runs the block in eval mode (output and input gradient) and in train mode on a fresh copy
/// (output and running statistics), comparing each with PyTorch.
fn check_against_torch<M: ModuleT>(
    f: &HashMap<String, Tensor>,
    case: &str,
    build: impl Fn(VarBuilder) -> candle_tricks::Result<M>,
) -> R<()> {
    let x = field(f, case, "x");
    // Eval: output and d sum(y * gy) / dx.
    let vb = VarBuilder::from_tensors(f.clone(), DType::F32, &Device::Cpu).pp(case);
    let block = build(vb)?;
    let (y, gx) = fwd_bwd1(x, field(f, case, "gy"), |x| block.forward_t(x, false))?;
    assert_close(
        &format!("{case} eval output"),
        &y,
        field(f, case, "y"),
        1e-5,
    );
    assert_close(
        &format!("{case} input gradient"),
        &gx,
        field(f, case, "gx"),
        1e-5,
    );

    // Train: batch statistics, then the running statistics left in the variables.
    let varmap = varmap_for(f, case);
    let block = build(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    let y = block.forward_t(x, true)?;
    assert_close(
        &format!("{case} train output"),
        &y,
        field(f, case, "y_train"),
        1e-5,
    );
    let data = varmap.data().lock().unwrap();
    let mut checked = 0;
    for (name, var) in data.iter() {
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            let want = field(f, case, &format!("after.{name}"));
            assert_close(
                &format!("{case} {name} after a train step"),
                var.as_tensor(),
                want,
                1e-5,
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        f.keys()
            .filter(|k| k.starts_with(&format!("{case}.after.")))
            .count()
    );
    Ok(())
}

fn aspp_case(f: &HashMap<String, Tensor>, case: &str, rates: &[usize]) -> R<()> {
    let w = field(f, case, "convs.0.0.weight");
    let (c_out, c_in) = (w.dim(0)?, w.dim(1)?);
    // Dropout off so the train-mode output is deterministic (as in the fixture).
    let cfg = AsppConfig::default().with_rates(rates).with_dropout(0.0);
    check_against_torch(f, case, |vb| aspp(c_in, c_out, cfg.clone(), vb))
}

#[test]
fn aspp_matches_torchvision_small_rates() -> R<()> {
    aspp_case(&fixtures("conv_blocks"), "aspp_small", &[2, 3, 5])
}

#[test]
fn aspp_matches_torchvision_default_rates() -> R<()> {
    let f = fixtures("conv_blocks");
    // The defaults really are torchvision's: rates 6/12/18, pooling branch at convs.4.
    assert_eq!(AsppConfig::default().rates, vec![6, 12, 18]);
    assert!(f.contains_key("aspp_default.convs.4.1.weight"));
    aspp_case(&f, "aspp_default", &[6, 12, 18])
}

#[test]
fn aspp_keeps_size_and_reports_its_structure() -> R<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let block: Aspp = aspp(3, 4, AsppConfig::default().with_rates([1, 2]), vb)?;
    assert_eq!((block.in_channels(), block.out_channels()), (3, 4));
    assert_eq!(block.rates(), vec![1, 2]);
    assert!(block.has_image_pooling());
    for (h, w) in [(1, 1), (5, 3), (16, 17)] {
        let x = Tensor::randn(0f32, 1., (2, 3, h, w), &Device::Cpu)?;
        assert_eq!(block.forward_t(&x, true)?.dims(), &[2, 4, h, w]);
        assert_eq!(block.forward_t(&x, false)?.dims(), &[2, 4, h, w]);
    }
    // Without image pooling the projection takes one branch fewer.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = AsppConfig::default()
        .with_rates([3])
        .with_image_pooling(false);
    let block = aspp(3, 4, cfg, vb)?;
    assert!(!block.has_image_pooling());
    let project = varmap.data().lock().unwrap()["project.0.weight"]
        .dims()
        .to_vec();
    assert_eq!(project, vec![4, 8, 1, 1]);
    Ok(())
}

#[test]
fn aspp_dropout_only_in_training() -> R<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let block = aspp(3, 16, AsppConfig::default().with_rates([1]), vb)?;
    let x = Tensor::randn(0f32, 1., (4, 3, 8, 8), &Device::Cpu)?;
    // Eval is deterministic.
    let (a, b) = (block.forward_t(&x, false)?, block.forward_t(&x, false)?);
    assert_eq!(rel_err(&a, &b), 0.0);
    // Train at p = 0.5 zeroes about half of the (mostly positive after ReLU) outputs.
    let y = block.forward_t(&x, true)?;
    let zeros = y
        .eq(0f32)?
        .to_dtype(DType::F32)?
        .mean_all()?
        .to_scalar::<f32>()?;
    assert!(zeros > 0.5, "fraction of zeros {zeros}");
    Ok(())
}

/// f16 runs end to end and stays within f16 tolerance of the f32 fixture. (bf16 works where
/// candle's matmul does: not on its CPU backend, which returns an error.)
#[test]
fn half_precision_close_to_f32() -> R<()> {
    let f = fixtures("conv_blocks");
    let vb = || VarBuilder::from_tensors(f.clone(), DType::F16, &Device::Cpu);
    let half = |case: &str| field(&f, case, "x").to_dtype(DType::F16).unwrap();

    let block = aspp(
        4,
        6,
        AsppConfig::default().with_rates([2, 3, 5]),
        vb().pp("aspp_small"),
    )?;
    let y = block.forward_t(&half("aspp_small"), false)?;
    assert_eq!(y.dtype(), DType::F16);
    assert_close("aspp_small f16", &y, field(&f, "aspp_small", "y"), 1e-2);

    let cfg = separable_cfg("sep_m2_d2");
    let block = separable_conv2d(3, 4, 3, cfg, vb().pp("sep_m2_d2"))?;
    let y = block.forward_t(&half("sep_m2_d2"), false)?;
    assert_eq!(y.dtype(), DType::F16);
    assert_close("sep_m2_d2 f16", &y, field(&f, "sep_m2_d2", "y"), 1e-2);
    Ok(())
}

fn separable_cfg(case: &str) -> SeparableConv2dConfig {
    let relu = Some(Activation::Relu);
    let base = SeparableConv2dConfig::default();
    match case {
        "sep_plain" => base.with_bias(true),
        "sep_xception_s2" => SeparableConv2dConfig::xception().with_stride(2),
        "sep_m2_d2" => base
            .with_multiplier(2)
            .with_dilation(2)
            .with_bias(true)
            .with_dw_norm_act(true, relu),
        "sep_k5_explicit" => base
            .with_stride(2)
            .with_padding(Padding::Explicit(1))
            .with_bias(true)
            .with_pw_norm_act(true, None)
            .with_dw_norm_act(false, relu),
        other => panic!("unknown case {other}"),
    }
}

#[test]
fn separable_matches_torch_composition() -> R<()> {
    let f = fixtures("conv_blocks");
    for case in [
        "sep_plain",
        "sep_xception_s2",
        "sep_m2_d2",
        "sep_k5_explicit",
    ] {
        let cfg = separable_cfg(case);
        let w = field(&f, case, "conv_dw.weight");
        let c_in = w.dim(0)? / cfg.multiplier;
        let k = w.dim(2)?;
        let c_out = field(&f, case, "conv_pw.weight").dim(0)?;
        check_against_torch(&f, case, |vb| separable_conv2d(c_in, c_out, k, cfg, vb))?;
    }
    Ok(())
}

#[test]
fn separable_structure_and_shapes() -> R<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = SeparableConv2dConfig::xception()
        .with_stride(2)
        .with_multiplier(2);
    let block: SeparableConv2d = separable_conv2d(3, 8, 5, cfg, vb)?;
    assert_eq!((block.in_channels(), block.out_channels()), (3, 8));
    assert_eq!(block.kernel_size(), (5, 5));
    let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    let want = [
        "bn_dw.bias",
        "bn_dw.num_batches_tracked",
        "bn_dw.running_mean",
        "bn_dw.running_var",
        "bn_dw.weight",
        "bn_pw.bias",
        "bn_pw.num_batches_tracked",
        "bn_pw.running_mean",
        "bn_pw.running_var",
        "bn_pw.weight",
        "conv_dw.weight",
        "conv_pw.weight",
    ];
    assert_eq!(names, want);
    let x = Tensor::randn(0f32, 1., (2, 3, 9, 12), &Device::Cpu)?;
    assert_eq!(block.forward_t(&x, true)?.dims(), &[2, 8, 5, 6]);
    Ok(())
}

#[test]
fn aspp_bad_input_is_an_error() -> R<()> {
    let dev = Device::Cpu;
    let new_vb = |vm: &VarMap| VarBuilder::from_varmap(vm, DType::F32, &dev);
    let vm = VarMap::new();
    let block = aspp(3, 4, AsppConfig::default().with_rates([1, 2]), new_vb(&vm))?;
    let t = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &dev).unwrap();
    let fwd = |x: &Tensor, train: bool| block.forward_t(x, train).map(|y| y.dims().to_vec());
    assert_err_names(fwd(&t(&[2, 3, 8]), false), "Aspp", "(B, C_in, H, W)");
    assert_err_names(fwd(&t(&[2, 5, 8, 8]), false), "Aspp", "(B, 3, H, W)");
    assert_err_names(fwd(&t(&[2, 3, 0, 8]), false), "Aspp", "non-zero");
    assert_err_names(fwd(&t(&[1, 3, 8, 8]), true), "Aspp", "batch of at least 2");
    let x16 = Tensor::zeros((2, 3, 8, 8), DType::F16, &dev)?;
    assert_err_names(fwd(&x16, false), "Aspp", "dtype");
    let xi = Tensor::zeros((2, 3, 8, 8), DType::U32, &dev)?;
    assert_err_names(fwd(&xi, false), "Aspp", "dtype");

    let build =
        |c_in, c_out, cfg: AsppConfig| aspp(c_in, c_out, cfg, new_vb(&VarMap::new())).map(|_| ());
    assert_err_names(
        build(3, 4, AsppConfig::default().with_rates([6, 0])),
        "Aspp",
        "rate",
    );
    assert_err_names(
        build(3, 4, AsppConfig::default().with_rates(vec![])),
        "Aspp",
        "rates",
    );
    assert_err_names(
        build(3, 4, AsppConfig::default().with_dropout(1.0)),
        "Aspp",
        "dropout",
    );
    assert_err_names(build(0, 4, AsppConfig::default()), "Aspp", "in_channels");
    assert_err_names(build(3, 0, AsppConfig::default()), "Aspp", "out_channels");
    // A state dict for other channel counts.
    let f = fixtures("conv_blocks");
    let vb = VarBuilder::from_tensors(f, DType::F32, &dev).pp("aspp_small");
    let cfg = AsppConfig::default().with_rates([2, 3, 5]);
    assert_err_names(aspp(5, 6, cfg, vb).map(|_| ()), "Aspp", "shape mismatch");
    Ok(())
}

#[test]
fn separable_bad_input_is_an_error() -> R<()> {
    let dev = Device::Cpu;
    let new_vb = |vm: &VarMap| VarBuilder::from_varmap(vm, DType::F32, &dev);
    let vm = VarMap::new();
    let cfg = SeparableConv2dConfig::default().with_padding(Padding::Valid);
    let block = separable_conv2d(3, 4, 3, cfg, new_vb(&vm))?;
    let t = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &dev).unwrap();
    let fwd = |x: &Tensor| block.forward_t(x, false).map(|y| y.dims().to_vec());
    let name = "SeparableConv2d";
    assert_err_names(fwd(&t(&[3, 8, 8])), name, "(B, C_in, H, W)");
    assert_err_names(fwd(&t(&[2, 5, 8, 8])), name, "(B, 3, H, W)");
    assert_err_names(fwd(&t(&[0, 3, 8, 8])), name, "non-zero");
    // Kernel extent 3 does not fit a 2-pixel axis without padding.
    assert_err_names(fwd(&t(&[1, 3, 2, 8])), name, "kernel extent");
    let x16 = Tensor::zeros((2, 3, 8, 8), DType::BF16, &dev)?;
    assert_err_names(fwd(&x16), name, "dtype");

    let build = |k, cfg: SeparableConv2dConfig| {
        separable_conv2d(3, 4, k, cfg, new_vb(&VarMap::new())).map(|_| ())
    };
    let base = SeparableConv2dConfig::default();
    assert_err_names(build(3, base.with_stride(0)), name, "stride");
    assert_err_names(build(3, base.with_dilation(0)), name, "dilation");
    assert_err_names(build(3, base.with_multiplier(0)), name, "multiplier");
    assert_err_names(build(0, base), name, "kernel_size");
    assert_err_names(
        separable_conv2d(0, 4, 3, base, new_vb(&VarMap::new())).map(|_| ()),
        name,
        "in_channels",
    );
    // A state dict for another kernel size.
    let f = fixtures("conv_blocks");
    let vb = VarBuilder::from_tensors(f, DType::F32, &dev).pp("sep_plain");
    assert_err_names(
        separable_conv2d(4, 6, 5, base.with_bias(true), vb).map(|_| ()),
        name,
        "shape mismatch",
    );
    Ok(())
}
