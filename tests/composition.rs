//! The composition path (what CUDA and Metal run until they have our kernels) against the kernel
//! path, on CPU: `with_backend(Backend::Composition, …)` forces the composition, and every op and
//! block family must give the kernel's forward and every gradient (inputs and parameters) on the
//! same inputs. A small model trains to the same losses on both paths, and `docs/FEATURES.md`
//! lists every op of the backend table.

mod common;

use candle_core::{DType, Device, Module, ModuleT, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use candle_tricks::attention::{
    axial_attention, cbam, linformer_attention, local_attention, multi_head_attention,
    squeeze_excite, transformer_encoder_layer, CbamConfig, LinformerConfig, LocalAttentionConfig,
    MhaConfig, SqueezeExciteConfig, TransformerEncoderLayerConfig,
};
use candle_tricks::blocks::{basic_block, down_block, up_block, DownBlockConfig, ResBlockConfig};
use candle_tricks::blocks::{UpBlockConfig, UpMode};
use candle_tricks::conv::{self, AsppConfig, Padding, SeparableConv2dConfig};
use candle_tricks::norm::{
    self, BatchNormConfig, GroupNormConfig, InstanceNormConfig, LayerNorm2dConfig, LayerNormConfig,
    RmsNormConfig,
};
use candle_tricks::ops::{
    self, backend, table, with_backend, AttentionMask, Backend, Conv2dConfig, Conv3dConfig,
    DepthwiseConv1dConfig, DepthwiseConv2dConfig, Op, PoolMode, SelectiveScanConfig,
};
use candle_tricks::pool::{sppf, AdaptivePool2d, SpatialPyramidPooling};
use candle_tricks::ssm::{mamba_block, MambaConfig};
use common::R;

const CPU: Device = Device::Cpu;
/// Relative tolerance of f32 comparisons.
const F32_TOL: f64 = 1e-4;

/// Relative tolerance for `dt`: the paths round to f16 / bf16 at different points (the kernel
/// path of a block rounds between its ops, the composition of one op only at its end), and
/// candle sums half-precision gradients in that precision.
fn tol(dt: DType) -> f64 {
    match dt {
        DType::F16 => 1e-2,
        DType::BF16 => 5e-2,
        _ => F32_TOL,
    }
}

fn randn(shape: &[usize], dt: DType) -> R<Tensor> {
    Ok(Tensor::randn(0f32, 1., shape, &CPU)?.to_dtype(dt)?)
}

fn var(shape: &[usize], dt: DType) -> R<Var> {
    Ok(Var::from_tensor(&randn(shape, dt)?)?)
}

/// max |a - b| / max |b| (absolute below a scale of 1e-3), in f64.
fn rel(a: &Tensor, b: &Tensor) -> R<f64> {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F64)?;
    let b = b.to_dtype(DType::F64)?;
    let diff = (&a - &b)?.abs()?.max_all()?.to_scalar::<f64>()?;
    let scale = b.abs()?.max_all()?.to_scalar::<f64>()?;
    Ok(diff / scale.max(1e-3))
}

/// Runs `f` on the kernel path and on the forced composition, backpropagates the same random
/// cotangent of every output on both, and compares the outputs and the gradients of `vars`.
fn paths(
    what: &str,
    vars: &[&Var],
    tol: f64,
    f: impl Fn() -> candle_tricks::Result<Vec<Tensor>>,
) -> R<()> {
    assert_eq!(backend(Op::LayerNorm, &CPU), Backend::CpuKernel);
    let kernel = f()?;
    let composed = with_backend(Backend::Composition, &f)?;
    let cot = kernel
        .iter()
        .map(|y| randn(y.dims(), DType::F32))
        .collect::<R<Vec<_>>>()?;
    let loss = |ys: &[Tensor]| -> R<Tensor> {
        let mut l = Tensor::zeros((), DType::F32, &CPU)?;
        for (y, g) in ys.iter().zip(&cot) {
            l = (l + (y.to_dtype(DType::F32)? * g)?.sum_all()?)?;
        }
        Ok(l)
    };
    let gk = loss(&kernel)?.backward()?;
    let gc = loss(&composed)?.backward()?;
    for (i, (k, c)) in kernel.iter().zip(&composed).enumerate() {
        assert_eq!(k.dtype(), c.dtype(), "{what}: output {i} dtype");
        let e = rel(c, k)?;
        assert!(e < tol, "{what}: output {i} differs, rel err {e:e}");
    }
    for (i, v) in vars.iter().enumerate() {
        let (k, c) = (gk.get(v.as_tensor()), gc.get(v.as_tensor()));
        let (k, c) = match (k, c) {
            (Some(k), Some(c)) => (k, c),
            (k, c) => panic!(
                "{what}: gradient of var {i} {:?}: kernel {}, composition {}",
                v.dims(),
                k.is_some(),
                c.is_some()
            ),
        };
        let e = rel(c, k)?;
        assert!(
            e < tol,
            "{what}: gradient of var {i} {:?} differs, rel err {e:e}",
            v.dims()
        );
    }
    Ok(())
}

/// The vars of a var map (weights and buffers; buffers get no gradient and are skipped).
fn trainable(vm: &VarMap) -> Vec<Var> {
    vm.all_vars()
        .into_iter()
        .filter(|v| v.dtype().is_float())
        .collect()
}

/// [`paths`] for a block built on `vm`: the gradients of `x` and of every float var that has
/// one on the kernel path.
fn block_paths(
    what: &str,
    vm: &VarMap,
    x: &Var,
    f: impl Fn(&Tensor) -> candle_tricks::Result<Tensor>,
) -> R<()> {
    // Only vars that take part (buffers such as running statistics get no gradient).
    let probe = f(x.as_tensor())?.sum_all()?.backward()?;
    let mut vars: Vec<Var> = trainable(vm)
        .into_iter()
        .filter(|v| probe.get(v.as_tensor()).is_some())
        .collect();
    vars.push(x.clone());
    let refs: Vec<&Var> = vars.iter().collect();
    paths(what, &refs, F32_TOL, || Ok(vec![f(x.as_tensor())?]))
}

fn vb(vm: &VarMap) -> VarBuilder<'static> {
    VarBuilder::from_varmap(vm, DType::F32, &CPU)
}

// ---------------------------------------------------------------------------------------------
// Ops
// ---------------------------------------------------------------------------------------------

#[test]
fn depthwise_conv2d_paths_agree() -> R<()> {
    // (C, m, kh, kw, H, W, stride, padding, dilation)
    let cases = [
        (3, 1, 3, 3, 8, 8, 1, Padding::Same, 1),
        (3, 2, 3, 3, 9, 11, 2, Padding::Explicit(1), 1),
        (4, 1, 5, 3, 12, 10, 2, Padding::Same, 2),
        (2, 3, 3, 3, 13, 9, 1, Padding::Valid, 3),
        (3, 1, 3, 5, 10, 13, 3, Padding::Same, 1),
    ];
    for (c, m, kh, kw, h, w, s, p, d) in cases {
        let cfg = DepthwiseConv2dConfig::default()
            .with_stride(s)
            .with_padding(p)
            .with_dilation(d);
        let x = var(&[2, c, h, w], DType::F32)?;
        let wt = var(&[c * m, 1, kh, kw], DType::F32)?;
        paths(
            &format!("depthwise_conv2d {cfg:?} m={m} k={kh}x{kw}"),
            &[&x, &wt],
            F32_TOL,
            || Ok(vec![ops::depthwise_conv2d(&x, &wt, cfg)?]),
        )?;
    }
    let x = var(&[2, 4, 9, 9], DType::F16)?;
    let wt = var(&[4, 1, 3, 3], DType::F16)?;
    let cfg = DepthwiseConv2dConfig::default().with_stride(2);
    paths("depthwise_conv2d f16", &[&x, &wt], tol(DType::F16), || {
        Ok(vec![ops::depthwise_conv2d(&x, &wt, cfg)?])
    })
}

#[test]
fn depthwise_conv1d_and_causal_conv1d_paths_agree() -> R<()> {
    for (m, k, s, p, d) in [
        (1, 3, 1, Padding::Same, 1),
        (2, 4, 2, Padding::Explicit(2), 1),
        (1, 5, 3, Padding::Valid, 2),
    ] {
        let cfg = DepthwiseConv1dConfig::default()
            .with_stride(s)
            .with_padding(p)
            .with_dilation(d);
        let x = var(&[2, 3, 17], DType::F32)?;
        let wt = var(&[3 * m, 1, k], DType::F32)?;
        paths(
            &format!("depthwise_conv1d {cfg:?} m={m}"),
            &[&x, &wt],
            F32_TOL,
            || Ok(vec![ops::depthwise_conv1d(&x, &wt, cfg)?]),
        )?;
    }
    for (k, with_bias, silu, two_d) in [
        (4, true, true, false),
        (1, false, false, true),
        (3, true, false, true),
    ] {
        let x = var(&[2, 5, 11], DType::F32)?;
        let wt = if two_d {
            var(&[5, k], DType::F32)?
        } else {
            var(&[5, 1, k], DType::F32)?
        };
        let b = var(&[5], DType::F32)?;
        let mut vars = vec![&x, &wt];
        if with_bias {
            vars.push(&b);
        }
        let bias = with_bias.then_some(b.as_tensor());
        paths(
            &format!("causal_conv1d k={k} bias={with_bias} silu={silu}"),
            &vars,
            F32_TOL,
            || Ok(vec![ops::causal_conv1d(&x, &wt, bias, silu)?]),
        )?;
    }
    let x = var(&[2, 4, 9], DType::BF16)?;
    let wt = var(&[4, 1, 4], DType::BF16)?;
    let b = var(&[4], DType::BF16)?;
    paths(
        "causal_conv1d bf16",
        &[&x, &wt, &b],
        tol(DType::BF16),
        || Ok(vec![ops::causal_conv1d(&x, &wt, Some(&b), true)?]),
    )
}

#[test]
fn conv2d_paths_agree() -> R<()> {
    // (Cin, Cout, groups, k, stride, padding, dilation)
    for (cin, cout, g, k, s, p, d) in [
        (2, 3, 1, 3, 1, Padding::Same, 1),
        (4, 4, 2, 3, 2, Padding::Explicit(1), 1),
        (3, 6, 3, 2, 2, Padding::Same, 1),
        (3, 6, 1, 3, 1, Padding::Valid, 2),
    ] {
        let cfg = Conv2dConfig::default()
            .with_stride(s)
            .with_padding(p)
            .with_dilation(d)
            .with_groups(g);
        let x = var(&[2, cin, 9, 8], DType::F32)?;
        let wt = var(&[cout, cin / g, k, k], DType::F32)?;
        paths(&format!("conv2d {cfg:?}"), &[&x, &wt], F32_TOL, || {
            Ok(vec![ops::conv2d(&x, &wt, cfg)?])
        })?;
    }
    let x = var(&[1, 2, 7, 7], DType::BF16)?;
    let wt = var(&[2, 2, 3, 3], DType::BF16)?;
    paths("conv2d bf16", &[&x, &wt], tol(DType::BF16), || {
        Ok(vec![ops::conv2d(&x, &wt, Conv2dConfig::default())?])
    })
}

#[test]
fn conv3d_paths_agree() -> R<()> {
    // (Cin, Cout, groups, k, stride, padding, dilation)
    for (cin, cout, g, k, s, p, d) in [
        (2, 3, 1, 3, 1, Padding::Same, 1),
        (4, 4, 2, 3, 2, Padding::Explicit(1), 1),
        (3, 6, 3, 2, 1, Padding::Valid, 2),
    ] {
        let cfg = Conv3dConfig::default()
            .with_stride(s)
            .with_padding(p)
            .with_dilation(d)
            .with_groups(g);
        let x = var(&[2, cin, 6, 7, 5], DType::F32)?;
        let wt = var(&[cout, cin / g, k, k, k], DType::F32)?;
        paths(&format!("conv3d {cfg:?}"), &[&x, &wt], F32_TOL, || {
            Ok(vec![ops::conv3d(&x, &wt, cfg)?])
        })?;
    }
    let x = var(&[1, 2, 5, 5, 5], DType::BF16)?;
    let wt = var(&[2, 2, 3, 3, 3], DType::BF16)?;
    paths("conv3d bf16", &[&x, &wt], tol(DType::BF16), || {
        Ok(vec![ops::conv3d(&x, &wt, Conv3dConfig::default())?])
    })
}

#[test]
fn pool_paths_agree() -> R<()> {
    for mode in [PoolMode::Avg, PoolMode::Max] {
        for (shape, out) in [
            (vec![2, 3, 13, 10], (5, 3)),
            (vec![2, 3, 7, 6], (1, 1)),
            (vec![3, 5, 4], (7, 6)), // unbatched, output larger than the input
        ] {
            let x = var(&shape, DType::F32)?;
            paths(
                &format!("adaptive_pool2d {mode:?} {shape:?} -> {out:?}"),
                &[&x],
                F32_TOL,
                || Ok(vec![ops::adaptive_pool2d(&x, out, mode)?]),
            )?;
        }
        let x = var(&[2, 3, 11], DType::F32)?;
        paths(&format!("adaptive_pool1d {mode:?}"), &[&x], F32_TOL, || {
            Ok(vec![match mode {
                PoolMode::Avg => ops::adaptive_avg_pool1d(&x, 4)?,
                PoolMode::Max => ops::adaptive_max_pool1d(&x, 4)?,
            }])
        })?;
    }
    for k in [1, 3, 5] {
        let x = var(&[2, 3, 9, 7], DType::F32)?;
        paths(&format!("max_pool2d_same k={k}"), &[&x], F32_TOL, || {
            Ok(vec![ops::max_pool2d_same(&x, k)?])
        })?;
    }
    // Ties (a constant plane and repeated values): the gradient goes to the first maximum on
    // both paths.
    let ties =
        Tensor::new(&[[1f32, 1., 0.], [1., 1., 2.], [0., 2., 2.]], &CPU)?.reshape((1, 1, 3, 3))?;
    let x = Var::from_tensor(&ties)?;
    paths("max_pool2d_same ties", &[&x], F32_TOL, || {
        Ok(vec![ops::max_pool2d_same(&x, 3)?])
    })?;
    // Distinct values (exact in f16), so that no max-pool window holds a tie.
    let distinct: Vec<f32> = (0..384)
        .map(|i| ((i * 37) % 384) as f32 / 64.0 - 3.0)
        .collect();
    let x =
        Var::from_tensor(&Tensor::from_vec(distinct, (2, 3, 8, 8), &CPU)?.to_dtype(DType::F16)?)?;
    paths("pools f16", &[&x], tol(DType::F16), || {
        Ok(vec![
            ops::adaptive_avg_pool2d(&x, (3, 3))?,
            ops::adaptive_max_pool2d(&x, (3, 2))?,
            ops::max_pool2d_same(&x, 5)?,
        ])
    })
}

#[test]
fn norm_paths_agree() -> R<()> {
    for dt in [DType::F32, DType::BF16] {
        let tol = tol(dt);
        let x = var(&[3, 5, 16], dt)?;
        let w = var(&[16], dt)?;
        let b = var(&[16], dt)?;
        for (aw, ab) in [(false, false), (true, false), (false, true), (true, true)] {
            let (wo, bo) = (aw.then_some(w.as_tensor()), ab.then_some(b.as_tensor()));
            let mut vars = vec![&x];
            vars.extend(aw.then_some(&w));
            vars.extend(ab.then_some(&b));
            paths(
                &format!("layer_norm {dt:?} w={aw} b={ab}"),
                &vars,
                tol,
                || Ok(vec![ops::layer_norm(&x, wo, bo, 1e-5)?]),
            )?;
            if !ab {
                paths(&format!("rms_norm {dt:?} w={aw}"), &vars, tol, || {
                    Ok(vec![ops::rms_norm(&x, wo, 1e-6)?])
                })?;
            }
        }
        for (shape, groups) in [(vec![2, 6, 5, 4], 3), (vec![2, 4, 7], 4), (vec![3, 6], 2)] {
            let x = var(&shape, dt)?;
            let w = var(&[shape[1]], dt)?;
            let b = var(&[shape[1]], dt)?;
            for affine in [false, true] {
                let vars: Vec<&Var> = if affine { vec![&x, &w, &b] } else { vec![&x] };
                let (wo, bo) = (
                    affine.then_some(w.as_tensor()),
                    affine.then_some(b.as_tensor()),
                );
                paths(
                    &format!("group_norm {dt:?} {shape:?} G={groups} affine={affine}"),
                    &vars,
                    tol,
                    || Ok(vec![ops::group_norm(&x, groups, wo, bo, 1e-5)?]),
                )?;
            }
        }
    }
    Ok(())
}

#[test]
fn batch_norm_paths_agree_and_update_the_same_running_stats() -> R<()> {
    for (dt, affine) in [(DType::F32, true), (DType::F32, false), (DType::F16, true)] {
        let tol = tol(dt);
        let vm = VarMap::new();
        let bn = norm::batch_norm(
            4,
            BatchNormConfig::default().with_affine(affine),
            VarBuilder::from_varmap(&vm, dt, &CPU),
        )?;
        let x = var(&[3, 4, 5, 2], dt)?;
        let mean0 = bn.running_mean().map(|t| t.copy()).transpose()?;
        let mut vars: Vec<Var> = trainable(&vm)
            .into_iter()
            .filter(|v| {
                [bn.weight(), bn.bias()]
                    .iter()
                    .flatten()
                    .any(|p| p.id() == v.id())
            })
            .collect();
        assert_eq!(vars.len(), if affine { 2 } else { 0 });
        // Non-trivial affine parameters.
        for v in &vars {
            v.set(&(randn(&[4], dt)? + 1.0)?)?;
        }
        vars.push(x.clone());
        let refs: Vec<&Var> = vars.iter().collect();
        paths(
            &format!("BatchNorm train {dt:?} affine={affine}"),
            &refs,
            tol,
            || Ok(vec![bn.forward_train_eval(&x, true)?]),
        )?;
        // Both paths moved the running mean by the same step: twice the kernel's one.
        if let (Some(m0), Some(m)) = (mean0, bn.running_mean()) {
            let mom = 0.1;
            let batch = x
                .to_dtype(DType::F32)?
                .mean_keepdim(0)?
                .mean_keepdim(2)?
                .mean_keepdim(3)?
                .flatten_all()?;
            let want = ((m0.to_dtype(DType::F32)? * ((1.0 - mom) * (1.0 - mom)))?
                + (batch * (mom * (1.0 - mom) + mom))?)?;
            let e = rel(&m.to_dtype(DType::F32)?, &want)?;
            assert!(e < tol, "BatchNorm running mean, rel err {e:e}");
        }
        paths(&format!("BatchNorm eval {dt:?}"), &refs, tol, || {
            Ok(vec![bn.forward_train_eval(&x, false)?])
        })?;
    }
    Ok(())
}

#[test]
fn softmax_gelu_relu6_and_upsample_paths_agree() -> R<()> {
    for dt in [DType::F32, DType::F16] {
        let tol = tol(dt);
        let x = var(&[3, 4, 17], dt)?;
        paths(&format!("softmax_last_dim {dt:?}"), &[&x], tol, || {
            Ok(vec![ops::softmax_last_dim(&x)?])
        })?;
        let x = var(&[3, 70], dt)?;
        paths(&format!("gelu_erf {dt:?}"), &[&x], tol, || {
            Ok(vec![ops::gelu_erf(&x.affine(3.0, 0.0)?)?])
        })?;
        paths(&format!("relu6 {dt:?}"), &[&x], tol, || {
            Ok(vec![ops::relu6(&x.affine(5.0, 2.0)?)?])
        })?;
        let x = var(&[2, 3, 5, 4], dt)?;
        for ac in [false, true] {
            paths(
                &format!("upsample_bilinear2d {dt:?} align_corners={ac}"),
                &[&x],
                tol,
                || Ok(vec![ops::upsample_bilinear2d(&x, 9, 7, ac)?]),
            )?;
        }
    }
    Ok(())
}

#[test]
fn attention_paths_agree_for_every_mask() -> R<()> {
    let (b, h, hkv, lq, lk, d) = (2, 4, 2, 7, 9, 8);
    let bool_mask = Tensor::randn(0f32, 1., (b, 1, lq, lk), &CPU)?.ge(0.0)?;
    let additive = (Tensor::randn(0f32, 1., (1, h, lq, lk), &CPU)? * 2.0)?;
    let masks = [
        AttentionMask::None,
        AttentionMask::Causal { kv_offset: 0 },
        AttentionMask::Causal { kv_offset: 2 },
        AttentionMask::Bool(bool_mask),
        AttentionMask::Additive(additive.clone()),
        AttentionMask::KeyPadding(vec![9, 4]),
        AttentionMask::KeyPadding(vec![0, 5]), // a fully masked batch row gives 0
        AttentionMask::SlidingWindow {
            window: 3,
            causal: false,
            global: 0,
        },
        AttentionMask::SlidingWindow {
            window: 2,
            causal: true,
            global: 2,
        },
    ];
    for kv_heads in [h, hkv] {
        let q = var(&[b, h, lq, d], DType::F32)?;
        let k = var(&[b, kv_heads, lk, d], DType::F32)?;
        let v = var(&[b, kv_heads, lk, d], DType::F32)?;
        for mask in &masks {
            let what = format!("sdpa Hkv={kv_heads} {mask:?}");
            paths(&what, &[&q, &k, &v], F32_TOL, || {
                Ok(vec![ops::scaled_dot_product_attention(
                    &q, &k, &v, mask, None, 0.0,
                )?])
            })?;
        }
        // Dropout: the composition applies the kernel's pattern for the seed.
        paths(
            &format!("sdpa dropout Hkv={kv_heads}"),
            &[&q, &k, &v],
            F32_TOL,
            || {
                let m = AttentionMask::Causal { kv_offset: 0 };
                Ok(vec![ops::scaled_dot_product_attention_seeded(
                    &q,
                    &k,
                    &v,
                    &m,
                    Some(0.3),
                    0.25,
                    7,
                )?])
            },
        )?;
    }
    let q = var(&[1, 2, 5, 16], DType::BF16)?;
    let k = var(&[1, 1, 6, 16], DType::BF16)?;
    let v = var(&[1, 1, 6, 16], DType::BF16)?;
    let m = AttentionMask::Additive(
        additive
            .narrow(1, 0, 1)?
            .narrow(2, 0, 5)?
            .narrow(3, 0, 6)?
            .to_dtype(DType::BF16)?,
    );
    paths(
        "sdpa bf16 GQA additive",
        &[&q, &k, &v],
        tol(DType::BF16),
        || {
            Ok(vec![ops::scaled_dot_product_attention(
                &q, &k, &v, &m, None, 0.0,
            )?])
        },
    )
}

#[test]
fn selective_scan_paths_agree() -> R<()> {
    let (bs, d, l, n) = (2, 4, 13, 5);
    for g in [1, 2] {
        for (with_d, with_z, with_bias, softplus, last) in [
            (false, false, false, false, false),
            (true, true, true, true, true),
            (true, false, true, false, true),
            (false, true, false, true, false),
        ] {
            let u = var(&[bs, d, l], DType::F32)?;
            // Without softplus the step size must stay positive (else the state grows as
            // exp(-delta·A)): |randn|.
            let delta = Var::from_tensor(&(randn(&[bs, d, l], DType::F32)?.abs()? * 0.5)?)?;
            let a = Var::from_tensor(&randn(&[d, n], DType::F32)?.exp()?.neg()?)?;
            let b = var(&[bs, g, n, l], DType::F32)?;
            let c = var(&[bs, g, n, l], DType::F32)?;
            let dd = var(&[d], DType::F32)?;
            let z = var(&[bs, d, l], DType::F32)?;
            let db = Var::from_tensor(&(randn(&[d], DType::F32)?.abs()? * 0.1)?)?;
            let mut vars = vec![&u, &delta, &a, &b, &c];
            let mut cfg = SelectiveScanConfig::default()
                .with_delta_softplus(softplus)
                .with_return_last_state(last)
                .with_chunk(4);
            if with_d {
                cfg = cfg.with_d(&dd);
                vars.push(&dd);
            }
            if with_z {
                cfg = cfg.with_z(&z);
                vars.push(&z);
            }
            if with_bias {
                cfg = cfg.with_delta_bias(&db);
                vars.push(&db);
            }
            let what = format!("selective_scan G={g} d={with_d} z={with_z} bias={with_bias} softplus={softplus} last={last}");
            paths(&what, &vars, F32_TOL, || {
                let (y, s) = ops::selective_scan(&u, &delta, &a, &b, &c, &cfg)?;
                Ok(std::iter::once(y).chain(s).collect())
            })?;
        }
    }
    let h = |s: &[usize]| var(s, DType::F16);
    let (u, delta, b, c, z) = (
        h(&[1, 2, 6])?,
        h(&[1, 2, 6])?,
        h(&[1, 1, 3, 6])?,
        h(&[1, 1, 3, 6])?,
        h(&[1, 2, 6])?,
    );
    let a = Var::from_tensor(
        &randn(&[2, 3], DType::F32)?
            .exp()?
            .neg()?
            .to_dtype(DType::F16)?,
    )?;
    let cfg = SelectiveScanConfig::default()
        .with_z(&z)
        .with_delta_softplus(true);
    paths(
        "selective_scan f16",
        &[&u, &delta, &a, &b, &c, &z],
        tol(DType::F16),
        || Ok(vec![ops::selective_scan(&u, &delta, &a, &b, &c, &cfg)?.0]),
    )
}

// ---------------------------------------------------------------------------------------------
// Blocks
// ---------------------------------------------------------------------------------------------

#[test]
fn conv_blocks_paths_agree() -> R<()> {
    let vm = VarMap::new();
    let dw = conv::depthwise_conv2d(
        3,
        2,
        3,
        DepthwiseConv2dConfig::default().with_stride(2),
        vb(&vm).pp("dw"),
    )?;
    let x = var(&[2, 3, 9, 8], DType::F32)?;
    block_paths("DepthwiseConv2d", &vm, &x, |x| Ok(dw.forward(x)?))?;

    let vm = VarMap::new();
    // No norm right after the pointwise conv: a train-mode norm there would cancel the
    // gradient of the depthwise norm's bias (both paths then compare rounding noise).
    let cfg = SeparableConv2dConfig {
        dw_norm: true,
        bias: true,
        ..Default::default()
    };
    let sep = conv::separable_conv2d(3, 5, 3, cfg, vb(&vm))?;
    block_paths("SeparableConv2d", &vm, &x, |x| Ok(sep.forward_t(x, true)?))?;

    let vm = VarMap::new();
    let c3 = conv::conv3d(2, 4, 3, Conv3dConfig::default().with_groups(2), vb(&vm))?;
    let x3 = var(&[1, 2, 5, 6, 4], DType::F32)?;
    block_paths("Conv3d", &vm, &x3, |x| Ok(c3.forward(x)?))?;

    let vm = VarMap::new();
    let aspp = conv::aspp(3, 4, AsppConfig::default().with_rates([1, 2]), vb(&vm))?;
    block_paths("Aspp", &vm, &x, |x| Ok(aspp.forward_t(x, false)?))?;
    Ok(())
}

#[test]
fn pool_blocks_paths_agree() -> R<()> {
    let x = var(&[2, 4, 9, 8], DType::F32)?;
    let vm = VarMap::new();
    let ap = AdaptivePool2d::new((3, 2), PoolMode::Avg)?;
    block_paths("AdaptivePool2d", &vm, &x, |x| Ok(ap.forward(x)?))?;
    let spp = SpatialPyramidPooling::new(vec![3, 2, 1], PoolMode::Max)?;
    block_paths("SpatialPyramidPooling", &vm, &x, |x| Ok(spp.forward(x)?))?;
    let s = sppf(4, 6, 5, vb(&vm))?;
    block_paths("Sppf", &vm, &x, |x| Ok(s.forward_t(x, true)?))
}

#[test]
fn norm_blocks_paths_agree() -> R<()> {
    let x = var(&[2, 6, 5, 4], DType::F32)?;
    let vm = VarMap::new();
    let ln = norm::layer_norm(4, LayerNormConfig::default(), vb(&vm).pp("ln"))?;
    let rms = norm::rms_norm(4, RmsNormConfig::default(), vb(&vm).pp("rms"))?;
    let gn = norm::group_norm(3, 6, GroupNormConfig::default(), vb(&vm).pp("gn"))?;
    let inn = norm::instance_norm(
        6,
        InstanceNormConfig::default().with_affine(true),
        vb(&vm).pp("in"),
    )?;
    let ln2 = norm::layer_norm2d(6, LayerNorm2dConfig::default(), vb(&vm).pp("ln2d"))?;
    let bn = norm::batch_norm(6, BatchNormConfig::default(), vb(&vm).pp("bn"))?;
    let by_name = norm::create("group:2", 6, vb(&vm).pp("factory"))?;
    // Random affine parameters, so that every gradient is non-trivial.
    for v in trainable(&vm) {
        v.set(&randn(v.dims(), DType::F32)?)?;
    }
    block_paths("norms", &vm, &x, |x| {
        let mut y = ln.forward(x)?;
        y = (y + rms.forward(x)?)?;
        y = (y + gn.forward(x)?)?;
        y = (y + inn.forward_t(x, true)?)?;
        y = (y + ln2.forward(x)?)?;
        y = (y + bn.forward_t(x, true)?)?;
        Ok((y + by_name.forward_t(x, true)?)?)
    })
}

#[test]
fn attention_blocks_paths_agree() -> R<()> {
    let x = var(&[2, 7, 8], DType::F32)?;
    let vm = VarMap::new();
    let mha = multi_head_attention(
        8,
        MhaConfig::new(4).with_num_kv_heads(Some(2)),
        vb(&vm).pp("mha"),
    )?;
    let causal = AttentionMask::Causal { kv_offset: 0 };
    let enc = transformer_encoder_layer(
        8,
        TransformerEncoderLayerConfig::new(2, 16),
        vb(&vm).pp("enc"),
    )?;
    let local = local_attention(
        8,
        LocalAttentionConfig::new(MhaConfig::new(2), 3),
        vb(&vm).pp("local"),
    )?;
    let lin = linformer_attention(
        8,
        LinformerConfig::new(MhaConfig::new(2), 4, 7),
        vb(&vm).pp("lin"),
    )?;
    block_paths("sequence attention", &vm, &x, |x| {
        let mut y = mha.forward_t(x, x, x, &causal, true)?;
        y = (y + enc.forward_t(x, &AttentionMask::None, true)?)?;
        y = (y + local.forward_t(x, true)?)?;
        Ok((y + lin.forward_t(x, true)?)?)
    })?;

    let x = var(&[2, 8, 5, 4], DType::F32)?;
    let vm = VarMap::new();
    let cb = cbam(
        8,
        CbamConfig::default().with_rd_channels(2),
        vb(&vm).pp("cbam"),
    )?;
    let se = squeeze_excite(8, SqueezeExciteConfig::default(), vb(&vm).pp("se"))?;
    let ax = axial_attention(8, MhaConfig::new(2), vb(&vm).pp("axial"))?;
    block_paths("image attention", &vm, &x, |x| {
        let y = (cb.forward(x)? + se.forward(x)?)?;
        Ok((y + ax.forward_t(x, true)?)?)
    })
}

#[test]
fn resnet_unet_and_mamba_blocks_paths_agree() -> R<()> {
    let x = var(&[2, 4, 8, 8], DType::F32)?;
    let vm = VarMap::new();
    let cfg = ResBlockConfig {
        zero_init_last: false,
        ..Default::default()
    };
    let rb = basic_block(4, 4, cfg, vb(&vm).pp("res"))?;
    let down = down_block(
        4,
        6,
        DownBlockConfig {
            norm: "group:2".into(),
            ..Default::default()
        },
        vb(&vm).pp("down"),
    )?;
    let up = up_block(
        6,
        4,
        4,
        UpBlockConfig {
            mode: UpMode::Bilinear,
            norm: "batch".into(),
            skip: true,
        },
        vb(&vm).pp("up"),
    )?;
    block_paths("BasicBlock + DownBlock + UpBlock", &vm, &x, |x| {
        let r = rb.forward_t(x, true)?;
        let d = down.forward_t(&r, true)?;
        up.forward_t(&d, &r, true)
    })?;

    let x = var(&[2, 9, 8], DType::F32)?;
    let vm = VarMap::new();
    let mb = mamba_block(
        MambaConfig {
            d_state: 4,
            ..MambaConfig::new(8)
        },
        vb(&vm),
    )?;
    block_paths("MambaBlock", &vm, &x, |x| Ok(mb.forward(x)?))
}

// ---------------------------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------------------------

/// Separable conv (+ BatchNorm) → GroupNorm → adaptive pool → tokens → transformer encoder
/// layer → Mamba block → mean → linear head.
struct Model {
    sep: conv::SeparableConv2d,
    gn: norm::GroupNorm,
    enc: candle_tricks::attention::TransformerEncoderLayer,
    mamba: candle_tricks::ssm::MambaBlock,
    head: candle_nn::Linear,
}

impl Model {
    fn new(vb: VarBuilder) -> R<Self> {
        let cfg = SeparableConv2dConfig {
            pw_norm: true,
            ..Default::default()
        };
        Ok(Self {
            sep: conv::separable_conv2d(3, 8, 3, cfg, vb.pp("sep"))?,
            gn: norm::group_norm(2, 8, GroupNormConfig::default(), vb.pp("gn"))?,
            enc: transformer_encoder_layer(
                8,
                TransformerEncoderLayerConfig::new(2, 16),
                vb.pp("enc"),
            )?,
            mamba: mamba_block(
                MambaConfig {
                    d_state: 4,
                    ..MambaConfig::new(8)
                },
                vb.pp("mamba"),
            )?,
            head: candle_nn::linear(8, 3, vb.pp("head"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_tricks::Result<Tensor> {
        let y = self.sep.forward_t(x, true)?;
        let y = self.gn.forward(&y)?.relu()?;
        let y = ops::adaptive_avg_pool2d(&y, (4, 4))?; // (B, 8, 4, 4)
        let t = y.flatten_from(2)?.transpose(1, 2)?.contiguous()?; // (B, 16, 8)
        let t = self.enc.forward_t(&t, &AttentionMask::None, true)?;
        let t = (self.mamba.forward(&t)? + t)?;
        Ok(self.head.forward(&t.mean(1)?)?)
    }
}

#[test]
fn small_model_trains_to_the_same_losses_on_both_paths() -> R<()> {
    let vm = VarMap::new();
    let model = Model::new(vb(&vm))?;
    let x = randn(&[4, 3, 8, 8], DType::F32)?;
    let labels = Tensor::new(&[0u32, 2, 1, 2], &CPU)?;
    // Identical initial weights (and buffers) on both paths.
    let vars = vm.all_vars();
    let init = vars
        .iter()
        .map(|v| v.as_tensor().copy())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let train = || -> R<Vec<f32>> {
        for (v, t) in vars.iter().zip(&init) {
            v.set(t)?;
        }
        let mut sgd = candle_nn::SGD::new(trainable(&vm), 0.02)?;
        let mut losses = Vec::new();
        for _ in 0..5 {
            let logits = model.forward(&x)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
            losses.push(loss.to_scalar::<f32>()?);
            sgd.backward_step(&loss)?;
        }
        Ok(losses)
    };
    let kernel = train()?;
    let composed = with_backend(Backend::Composition, train)?;
    for (step, (k, c)) in kernel.iter().zip(&composed).enumerate() {
        // f32 rounding differences grow a little with every step.
        let e = (k - c).abs() / k.abs().max(1e-3);
        assert!(
            e < 1e-3,
            "step {step}: kernel loss {k}, composition loss {c}"
        );
    }
    // Weights and inputs are random (candle's CPU generator cannot be seeded): a single step of
    // lr 0.02 may overshoot, five steps reliably learn four labels.
    assert!(
        kernel[4] < kernel[0],
        "five steps lower the loss: {kernel:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The backend table and its documentation
// ---------------------------------------------------------------------------------------------

#[test]
fn features_md_shows_the_backend_table() -> R<()> {
    let path = format!("{}/docs/FEATURES.md", env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(&path)?;
    let mark = |b: bool| if b { "✓" } else { "—" };
    assert_eq!(table().len(), Op::ALL.len());
    for row in table() {
        let want = format!(
            "| `{}` | {} | {} | {} | ✓ {} |",
            row.name,
            mark(row.cpu_kernel),
            mark(row.cuda_kernel),
            mark(row.metal_kernel),
            row.composition
        );
        assert!(
            doc.contains(&want),
            "docs/FEATURES.md lacks the row\n{want}"
        );
    }
    for feature in ["`cuda`", "`metal`", "`mkl`", "`accelerate`"] {
        assert!(
            doc.contains(feature),
            "docs/FEATURES.md lacks the feature {feature}"
        );
    }
    Ok(())
}

#[test]
fn every_op_runs_on_its_table_entry() {
    for op in Op::ALL {
        let want = if op.row().cpu_kernel {
            Backend::CpuKernel
        } else {
            Backend::Composition
        };
        assert_eq!(backend(op, &CPU), want, "{op:?}");
        assert_eq!(
            with_backend(Backend::Composition, || backend(op, &CPU)),
            Backend::Composition
        );
    }
}
