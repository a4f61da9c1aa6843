//! `BatchNorm::forward_act` (batch norm + ReLU / ReLU6 as one op) and `ops::relu`: PyTorch
//! fixtures (`tests/fixtures/gen_bn_act.py`) on the fused kernel and on the forced composition,
//! finite differences on both sides of the clamps, equality with the unfused norm + activation,
//! half precision, eval mode, the blocks that use it (`BasicBlock`, `SeparableConv2d`) on both
//! paths, and bad input.
mod common;

use candle_core::{DType, Device, Module, ModuleT, Tensor, Var};
use candle_nn::{Activation, VarBuilder, VarMap};
use candle_tricks::blocks::{basic_block, ResBlockConfig};
use candle_tricks::conv::{separable_conv2d, Padding, SeparableConv2dConfig};
use candle_tricks::norm::{BatchNorm, BatchNormConfig};
use candle_tricks::ops::{activation, relu, relu_reference, with_backend, Backend};
use common::*;

const CPU: Device = Device::Cpu;

/// A tracked, affine BatchNorm (momentum 0.25, fresh running statistics) on `weight`, `bias`.
fn bn(w: &Tensor, b: &Tensor) -> R<BatchNorm> {
    let c = w.dim(0)?;
    let running = (
        Tensor::zeros(c, w.dtype(), &CPU)?,
        Tensor::ones(c, w.dtype(), &CPU)?,
    );
    let cfg = BatchNormConfig::default().with_momentum(0.25);
    Ok(BatchNorm::new(
        c,
        Some((w.clone(), b.clone())),
        Some(running),
        cfg,
    )?)
}

/// `[y, gx, gw, gb, running_mean, running_var]` of one training step of `act(bn(x))` against
/// the cotangent `gy`, through `forward_act` (`fused`) or the norm then `ops::activation`.
fn step(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    gy: &Tensor,
    act: &Activation,
    fused: bool,
) -> R<Vec<Tensor>> {
    let cell = std::cell::RefCell::new(None);
    let (y, g) = fwd_bwd_n(&[x, w, b], gy, |t| {
        let bn = bn(&t[1], &t[2]).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let y = if fused {
            bn.forward_act(&t[0], act, true)
        } else {
            bn.forward_train_eval(&t[0], true)
                .and_then(|y| activation(&y, act))
        };
        *cell.borrow_mut() = Some(bn);
        y.map_err(candle_core::Error::from)
    })?;
    let bn = cell.into_inner().ok_or("bn")?;
    let mut out = vec![y];
    out.extend(g);
    out.push(bn.running_mean().ok_or("rm")?.clone());
    out.push(bn.running_var().ok_or("rv")?.clone());
    Ok(out)
}

const FIELDS: [&str; 6] = ["y", "gx", "gw", "gb", "rm", "rv"];

#[test]
fn matches_pytorch_on_the_kernel_and_the_composition() -> R<()> {
    let f = fixtures("bn_act");
    for (case, act) in [("relu", Activation::Relu), ("relu6", Activation::Relu6)] {
        let (x, w, b, gy) = (
            field(&f, case, "x"),
            field(&f, case, "weight"),
            field(&f, case, "bias"),
            field(&f, case, "gy"),
        );
        let y = field(&f, case, "y").flatten_all()?.to_vec1::<f32>()?;
        // The fixture hits the clamps: some outputs at 0 (and at 6 for ReLU6), some inside.
        assert!(y.contains(&0.0) && y.iter().any(|&v| v > 0.0 && v < 6.0));
        if case == "relu6" {
            assert!(y.contains(&6.0));
        }
        let fused = step(x, w, b, gy, &act, true)?;
        let composed = with_backend(Backend::Composition, || step(x, w, b, gy, &act, true))?;
        for (path, got) in [("kernel", &fused), ("composition", &composed)] {
            for (i, what) in FIELDS.iter().enumerate() {
                let want = field(&f, case, what);
                assert_close(&format!("{case} {path} {what}"), &got[i], want, 2e-5);
            }
        }
    }
    Ok(())
}

/// `(4, C, 3, 5)` with each channel's 60 values in clusters around `10·k` for `k < clusters`
/// (spread 0.1): after the norm the clusters sit far from the clamps' kinks.
fn clustered(c: usize, clusters: usize) -> R<Tensor> {
    let mut v = Vec::new();
    for bi in 0..4 {
        for ch in 0..c {
            for p in 0..15 {
                let i = bi * 15 + p;
                let k = (i % clusters) as f32;
                v.push(10.0 * k + 0.1 * (1.3 * i as f32 + ch as f32).sin());
            }
        }
    }
    Ok(Tensor::from_vec(v, (4, c, 3, 5), &CPU)?)
}

#[test]
fn fused_backward_matches_finite_differences() -> R<()> {
    // ReLU: two clusters, normalised to about ∓1, then w = 2, b = 1: one cluster clamped at 0,
    // one inside. ReLU6: three clusters, about −1.22, 0, 1.22, then w = 4, b = 2: at 0, inside,
    // at 6. Every pre-activation is about 1 away from a kink, far beyond a step's reach.
    for (act, clusters, (w, b)) in [
        (Activation::Relu, 2, (2f32, 1f32)),
        (Activation::Relu6, 3, (4., 2.)),
    ] {
        let c = 2;
        let x = clustered(c, clusters)?;
        let gy = Tensor::randn(0f32, 1., x.dims(), &CPU)?;
        let (w, b) = (Tensor::full(w, c, &CPU)?, Tensor::full(b, c, &CPU)?);
        let cfg = BatchNormConfig::default().with_track_running_stats(false);
        let bn = BatchNorm::new(c, Some((w, b)), None, cfg)?;
        let run = |x: &Tensor| bn.forward_act(x, &act, true);
        let y = run(&x)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(y.contains(&0.0), "{act:?}: none clamped at 0");
        assert!(
            y.iter().any(|&v| v > 0.5 && v < 5.5),
            "{act:?}: none inside"
        );
        if act == Activation::Relu6 {
            assert!(y.contains(&6.0), "none clamped at 6");
        }
        let (_, gx) = fwd_bwd1(&x, &gy, run)?;
        let fd = finite_diff(&x, &gy, 1e-2, run)?;
        assert_matches_fd(&format!("{act:?} dx"), &gx, &fd, 1e-2)?;
    }
    Ok(())
}

#[test]
fn fused_equals_norm_then_activation() -> R<()> {
    for shape in [vec![6usize, 5, 33, 29], vec![20011, 3], vec![3, 4, 5, 6, 7]] {
        let c = shape[1];
        let x = Tensor::randn(1f32, 2., shape.as_slice(), &CPU)?;
        let gy = Tensor::randn(0f32, 1., shape.as_slice(), &CPU)?;
        let w = Tensor::rand(0.5f32, 3., c, &CPU)?;
        let b = Tensor::randn(1f32, 2., c, &CPU)?;
        for act in [Activation::Relu, Activation::Relu6] {
            let fused = step(&x, &w, &b, &gy, &act, true)?;
            let unfused = step(&x, &w, &b, &gy, &act, false)?;
            for (i, what) in FIELDS.iter().enumerate() {
                let what = format!("{shape:?} {act:?} {what}");
                assert_close(&what, &fused[i], &unfused[i], 1e-6);
            }
        }
    }
    Ok(())
}

#[test]
fn half_precision_eval_and_other_activations() -> R<()> {
    let x = Tensor::randn(1f32, 2., (4, 3, 6, 5), &CPU)?;
    let w = Tensor::rand(0.5f32, 3., 3, &CPU)?;
    let b = Tensor::randn(1f32, 2., 3, &CPU)?;
    let want = bn(&w, &b)?.forward_act(&x, &Activation::Relu6, true)?;
    for (dt, tol) in [(DType::F16, 1e-2), (DType::BF16, 5e-2)] {
        let m = bn(&w.to_dtype(dt)?, &b.to_dtype(dt)?)?;
        let y = m.forward_act(&x.to_dtype(dt)?, &Activation::Relu6, true)?;
        assert_eq!(y.dtype(), dt);
        assert_close(&format!("{dt:?}"), &y.to_dtype(DType::F32)?, &want, tol);
    }
    // Eval mode (running statistics) and an activation without a fused epilogue: the norm,
    // then the activation.
    let m = bn(&w, &b)?;
    m.forward_train_eval(&x, true)?;
    for (train, act) in [
        (false, Activation::Relu),
        (true, Activation::Silu),
        (false, Activation::Relu6),
    ] {
        let got = m.forward_act(&x, &act, train)?;
        let want = act.forward(&m.forward_train_eval(&x, train)?)?;
        // Both train-mode calls move the running stats the same way; compare the outputs.
        assert_close(&format!("{act:?} train {train}"), &got, &want, 1e-6);
    }
    Ok(())
}

#[test]
fn relu_matches_pytorch_and_its_composition() -> R<()> {
    let f = fixtures("hardtanh");
    let (x, gy) = (field(&f, "relu", "x"), field(&f, "relu", "gy"));
    let kernel = fwd_bwd1(x, gy, relu)?;
    let composed = fwd_bwd1(x, gy, relu_reference)?;
    let forced = with_backend(Backend::Composition, || fwd_bwd1(x, gy, relu))?;
    for (path, (y, gx)) in [
        ("kernel", kernel),
        ("reference", composed),
        ("forced", forced),
    ] {
        // Piecewise identity: exact, the gradient zero at and below 0 as in PyTorch.
        for (what, got) in [("y", y), ("gx", gx)] {
            let d = (got - field(&f, "relu", what))?.abs()?.max_all()?;
            assert_eq!(d.to_scalar::<f32>()?, 0.0, "relu {path} {what}");
        }
    }
    // Half precision, NaN, and `ops::activation` routes Relu to it.
    for dt in [DType::F16, DType::BF16] {
        let y = relu(&x.to_dtype(dt)?)?;
        assert_eq!(y.dtype(), dt);
        let want = x.relu()?;
        assert_close(&format!("{dt:?}"), &y.to_dtype(DType::F32)?, &want, 1e-2);
    }
    let y = relu(&Tensor::new(&[f32::NAN, -1.0, 2.0], &CPU)?)?.to_vec1::<f32>()?;
    assert!(y[0].is_nan() && y[1] == 0.0 && y[2] == 2.0);
    assert_eq!(
        (activation(x, &Activation::Relu)? - x.relu()?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?,
        0.0
    );
    Ok(())
}

/// Every Var of `vm` and the input: gradients of `sum(f(x) · cot)` on the kernel path and on the
/// forced composition agree within `tol`, and so do the outputs.
fn block_paths(
    what: &str,
    vm: &VarMap,
    x: &Var,
    tol: f64,
    f: impl Fn(&Tensor) -> R<Tensor>,
) -> R<()> {
    let kernel = f(x.as_tensor())?;
    let composed = with_backend(Backend::Composition, || f(x.as_tensor()))?;
    assert_close(&format!("{what} y"), &kernel, &composed, tol);
    let cot = Tensor::randn(0f32, 1., kernel.dims(), &CPU)?;
    let gk = (kernel * &cot)?.sum_all()?.backward()?;
    let gc = (composed * &cot)?.sum_all()?.backward()?;
    let mut vars = vm.all_vars();
    vars.push(x.clone());
    for (i, v) in vars.iter().enumerate() {
        let (k, c) = (gk.get(v.as_tensor()), gc.get(v.as_tensor()));
        match (k, c) {
            (Some(k), Some(c)) => {
                assert_close(&format!("{what} grad {i} {:?}", v.dims()), k, c, tol)
            }
            (None, None) => {}
            (k, c) => panic!(
                "{what}: var {i}: kernel {}, composition {}",
                k.is_some(),
                c.is_some()
            ),
        }
    }
    Ok(())
}

#[test]
fn blocks_with_the_fused_epilogue_agree_with_the_composition() -> R<()> {
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 4, 9, 8), &CPU)?)?;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &CPU);
    let cfg = ResBlockConfig {
        zero_init_last: false,
        ..Default::default()
    }
    .with_stride(2);
    let rb = basic_block(4, 6, cfg, vb)?;
    block_paths("BasicBlock", &vm, &x, 1e-4, |x| Ok(rb.forward_t(x, true)?))?;

    // MobileNetV2's depthwise + BN + ReLU6, then the 1×1 (no norm after it, whose batch
    // statistics would cancel the depthwise stage's bias gradient).
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &CPU);
    let cfg = SeparableConv2dConfig::default()
        .with_padding(Padding::Explicit(1))
        .with_dw_norm_act(true, Some(Activation::Relu6));
    let sep = separable_conv2d(4, 5, 3, cfg, vb)?;
    block_paths("SeparableConv2d", &vm, &x, 1e-4, |x| {
        Ok(sep.forward_t(x, true)?)
    })
}

#[test]
fn bad_input_is_an_error_naming_the_block() -> R<()> {
    let w = Tensor::ones(3, DType::F32, &CPU)?;
    let b = Tensor::zeros(3, DType::F32, &CPU)?;
    let m = bn(&w, &b)?;
    for act in [Activation::Relu, Activation::Relu6, Activation::Silu] {
        let wrong_c = Tensor::zeros((2, 4, 5), DType::F32, &CPU)?;
        assert_err(
            "channels",
            m.forward_act(&wrong_c, &act, true),
            &["BatchNorm", "4"],
        );
        let one = Tensor::zeros((1, 3), DType::F32, &CPU)?;
        assert_err("one value", m.forward_act(&one, &act, true), &["BatchNorm"]);
        let int = Tensor::zeros((2, 3, 5), DType::U32, &CPU)?;
        assert_err("integer", m.forward_act(&int, &act, true), &["BatchNorm"]);
    }
    let empty = Tensor::zeros((2, 0), DType::F32, &CPU)?;
    assert_err("empty", relu(&empty), &["hardtanh"]);
    assert_err("integer", relu(&w.to_dtype(DType::U32)?), &["hardtanh"]);
    assert_err("f64", relu(&w.to_dtype(DType::F64)?), &["hardtanh"]);
    assert!(relu_reference(&w.to_dtype(DType::F64)?).is_ok());
    Ok(())
}
