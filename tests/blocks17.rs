//! MBConv and the ConvNeXt block against timm (fixtures from
//! `tests/fixtures/gen_blocks_timm.py`, blocks taken from timm's `efficientnet_b0`,
//! `mobilenetv2_100` and `convnext_atto`): eval output, train-mode output (batch statistics),
//! input and parameter gradients; plus drop path, f16 and the identity at init.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{Activation, VarBuilder, VarMap};
use candle_tricks::blocks::{convnext_block, mb_conv, ConvNextBlockConfig, MbConv, MbConvConfig};
use common::{assert_close, assert_err_names, field, fixtures, Fixtures, R};

const TOL_EVAL: f64 = 1e-5;
const TOL_TRAIN: f64 = 1e-4;

/// The case's state dict (`<case>.w.<name>` → `<name>`), float tensors as Vars so their
/// gradients can be read back.
fn state_dict(f: &Fixtures, case: &str) -> R<HashMap<String, Tensor>> {
    let prefix = format!("{case}.w.");
    let mut sd = HashMap::new();
    for (k, v) in f {
        if let Some(name) = k.strip_prefix(&prefix) {
            let t = if v.dtype() == DType::F32 {
                Var::from_tensor(v)?.as_tensor().clone()
            } else {
                v.clone()
            };
            sd.insert(name.to_string(), t);
        }
    }
    Ok(sd)
}

/// Eval output, then one train step (output, input and parameter gradients) against timm.
fn check_case<B: ModuleT>(case: &str, build: impl FnOnce(VarBuilder) -> R<B>) -> R<()> {
    let f = fixtures("blocks_timm");
    let sd = state_dict(&f, case)?;
    let block = build(VarBuilder::from_tensors(
        sd.clone(),
        DType::F32,
        &Device::Cpu,
    ))?;
    let x = Var::from_tensor(field(&f, case, "x"))?;
    let y_eval = block.forward_t(x.as_tensor(), false)?;
    assert_close(
        &format!("{case} y_eval"),
        &y_eval,
        field(&f, case, "y_eval"),
        TOL_EVAL,
    );

    let y = block.forward_t(x.as_tensor(), true)?;
    assert_close(
        &format!("{case} y_train"),
        &y,
        field(&f, case, "y_train"),
        TOL_TRAIN,
    );
    let grads = (&y * field(&f, case, "gy"))?.sum_all()?.backward()?;
    let gx = grads.get(x.as_tensor()).ok_or("no gradient for x")?;
    assert_close(&format!("{case} gx"), gx, field(&f, case, "gx"), TOL_TRAIN);
    let prefix = format!("{case}.g.");
    let mut checked = 0;
    for (k, want) in &f {
        let Some(name) = k.strip_prefix(&prefix) else {
            continue;
        };
        let got = grads
            .get(&sd[name])
            .ok_or(format!("{case}: no gradient for {name}"))?;
        assert_close(&format!("{case} grad {name}"), got, want, TOL_TRAIN);
        checked += 1;
    }
    assert!(checked >= 2, "{case}: only {checked} parameter gradients");
    Ok(())
}

#[test]
fn efficientnet_b0_depthwise_separable_matches_timm() -> R<()> {
    check_case("effnet_ds", |vb| {
        let cfg = MbConvConfig::default().with_expand_ratio(1.0);
        let b = mb_conv(32, 16, cfg, vb)?;
        assert!(!b.has_skip());
        assert_eq!(b.se_channels(), Some(8));
        Ok(b)
    })
}

#[test]
fn efficientnet_b0_inverted_residual_with_skip_matches_timm() -> R<()> {
    check_case("effnet_ir_skip", |vb| {
        let b = mb_conv(24, 24, MbConvConfig::default(), vb)?;
        assert!(b.has_skip());
        assert_eq!((b.mid_channels(), b.se_channels()), (144, Some(6)));
        Ok(b)
    })
}

#[test]
fn efficientnet_b0_k5_stride2_matches_timm() -> R<()> {
    check_case("effnet_ir_k5s2", |vb| {
        let cfg = MbConvConfig::default().with_kernel_size(5).with_stride(2);
        Ok(mb_conv(24, 40, cfg, vb)?)
    })
}

#[test]
fn mobilenet_v2_relu6_block_matches_timm() -> R<()> {
    check_case("mnv2_ir", |vb| {
        let b = mb_conv(24, 24, MbConvConfig::mobilenet_v2(), vb)?;
        assert_eq!(b.se_channels(), None);
        Ok(b)
    })
}

#[test]
fn dilated_inverted_residual_matches_timm() -> R<()> {
    check_case("ir_dilated", |vb| {
        let cfg = MbConvConfig::default()
            .with_expand_ratio(4.0)
            .with_dilation(2);
        let b = mb_conv(8, 8, cfg, vb)?;
        assert_eq!((b.mid_channels(), b.se_channels()), (32, Some(2)));
        Ok(b)
    })
}

#[test]
fn convnext_atto_block_matches_timm() -> R<()> {
    check_case("cnx_atto", |vb| {
        let b = convnext_block(40, ConvNextBlockConfig::default(), vb)?;
        assert_eq!(b.hidden_channels(), 160);
        Ok(b)
    })
}

#[test]
fn convnext_k3_ratio2_without_layer_scale_matches_timm() -> R<()> {
    check_case("cnx_k3_nols", |vb| {
        let cfg = ConvNextBlockConfig::default()
            .with_kernel_size(3)
            .with_mlp_ratio(2.0)
            .with_ls_init_value(None);
        let b = convnext_block(16, cfg, vb)?;
        assert!(b.gamma().is_none());
        Ok(b)
    })
}

/// The training-mode batch norms update the running statistics that eval then uses.
#[test]
fn mbconv_train_updates_running_stats() -> R<()> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let b = mb_conv(
        8,
        8,
        MbConvConfig::default(),
        VarBuilder::from_varmap(&vm, DType::F32, &dev),
    )?;
    let x = Tensor::randn(3f32, 2., (4, 8, 6, 6), &dev)?;
    let before = b.forward_t(&x, false)?;
    for _ in 0..3 {
        b.forward_t(&x, true)?;
    }
    let after = b.forward_t(&x, false)?;
    let moved = (after - before)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(
        moved > 1e-3,
        "eval output did not change after training steps"
    );
    let data = vm.data().lock().map_err(|_| "lock")?;
    let mean = data["bn1.running_mean"]
        .as_tensor()
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert!(mean > 0.0);
    Ok(())
}

/// Drop path: each sample's branch is either kept (scaled) or dropped, so a sample's output is
/// either `x + branch / (1 - p)` or exactly `x`; eval and p = 0 are deterministic.
#[test]
fn drop_path_drops_whole_branches() -> R<()> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let cfg = ConvNextBlockConfig::default()
        .with_ls_init_value(Some(1.0))
        .with_drop_path(0.5);
    let b = convnext_block(8, cfg, vb.clone())?;
    let full = convnext_block(8, cfg.with_drop_path(0.0), vb)?; // same weights
    let x = Tensor::randn(0f32, 1., (16, 8, 5, 5), &dev)?;
    let branch = (full.forward_t(&x, true)? - &x)?;
    let y = (b.forward_t(&x, true)? - &x)?;
    let (mut kept, mut dropped) = (0, 0);
    for i in 0..16 {
        let yi = y.get(i)?;
        let bi = branch.get(i)?;
        let zero = yi.abs()?.max_all()?.to_scalar::<f32>()? == 0.0;
        if zero {
            dropped += 1;
        } else {
            assert_close("kept branch", &yi, &(bi * 2.0)?, 1e-5);
            kept += 1;
        }
    }
    assert!(kept > 0 && dropped > 0, "kept {kept}, dropped {dropped}");
    let e1 = b.forward_t(&x, false)?;
    assert_close("eval", &e1, &full.forward_t(&x, false)?, 0.0);
    Ok(())
}

/// f16 runs end to end and stays near the f32 result (f32 accumulation inside the kernels).
#[test]
fn f16_close_to_f32() -> R<()> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let mb = mb_conv(8, 8, MbConvConfig::default(), vb.pp("mb"))?;
    let cfg = ConvNextBlockConfig::default().with_ls_init_value(Some(0.5));
    let cn = convnext_block(8, cfg, vb.pp("cn"))?;
    let x = Tensor::randn(0f32, 1., (2, 8, 7, 7), &dev)?;
    let y32 = cn.forward_t(&mb.forward_t(&x, false)?, false)?;

    let half: HashMap<String, Tensor> = vm
        .data()
        .lock()
        .map_err(|_| "lock")?
        .iter()
        .map(|(k, v)| {
            let t = v.as_tensor();
            let t = if t.dtype() == DType::F32 {
                t.to_dtype(DType::F16)
            } else {
                Ok(t.clone())
            };
            t.map(|t| (k.clone(), t))
        })
        .collect::<candle_core::Result<_>>()?;
    let vb16 = VarBuilder::from_tensors(half, DType::F16, &dev);
    let mb16: MbConv = mb_conv(8, 8, MbConvConfig::default(), vb16.pp("mb"))?;
    let cn16 = convnext_block(8, cfg, vb16.pp("cn"))?;
    let y16 = cn16.forward_t(&mb16.forward_t(&x.to_dtype(DType::F16)?, false)?, false)?;
    assert_eq!(y16.dtype(), DType::F16);
    assert_close("f16 vs f32", &y16.to_dtype(DType::F32)?, &y32, 1e-2);
    Ok(())
}

#[test]
fn bad_input_names_the_block() -> R<()> {
    let dev = Device::Cpu;
    let vb = VarBuilder::zeros(DType::F32, &dev);
    let mb = mb_conv(
        8,
        8,
        MbConvConfig::default().with_act(Activation::Relu6),
        vb.clone(),
    )?;
    let cn = convnext_block(8, ConvNextBlockConfig::default(), vb.clone())?;
    let wrong_c = Tensor::zeros((1, 4, 5, 5), DType::F32, &dev)?;
    let rank3 = Tensor::zeros((8, 5, 5), DType::F32, &dev)?;
    let f64x = Tensor::zeros((1, 8, 5, 5), DType::F64, &dev)?;
    for x in [&wrong_c, &rank3, &f64x] {
        assert_err_names(mb.apply(x, true), "MbConv", "input");
        assert_err_names(cn.apply(x, true), "ConvNextBlock", "input");
    }
    assert_err_names(
        mb_conv(0, 8, MbConvConfig::default(), vb.clone()),
        "MbConv",
        "in_ch",
    );
    assert_err_names(
        mb_conv(
            8,
            8,
            MbConvConfig::default().with_se_ratio(Some(0.01)),
            vb.clone(),
        ),
        "MbConv",
        "squeeze-excite",
    );
    assert_err_names(
        convnext_block(4, ConvNextBlockConfig::default().with_mlp_ratio(0.1), vb),
        "ConvNextBlock",
        "MLP width",
    );
    Ok(())
}
