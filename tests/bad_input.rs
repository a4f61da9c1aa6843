//! The bad-input sweep (issue 10): every public op, constructor, optimizer, schedule and loader
//! fed wrong ranks, empty dims, mismatched channels and dtypes, bad strides / dilations /
//! paddings, NaN / Inf / out-of-range hyper-parameters, non-contiguous inputs and broken
//! checkpoints. Each case runs under `catch_unwind` and must give a clean [`Error`] naming the
//! block, or (for legal-but-unusual input) the right value, checked against the op's
//! `*_reference` composition or a hand-computed result. Every failure is collected, so one run
//! lists them all.
//!
//! `.ci/run` runs this binary under `ulimit -v 4194304` (4 GiB of address space): an impossible
//! size must be refused before anything is allocated.
//!
//! The groups:
//! - [`sweep`]: the main sweep (≥ 150 cases), green.
//! - [`size_overflow_sweep`]: size arithmetic (huge padding / stride / dilation / output sizes,
//!   overflowing products). Each case runs in a child process, so a case that aborts the process
//!   (an impossible allocation cannot be caught by `catch_unwind`) is reported like any other.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use candle_core::{DType, Device, IndexOp, Module, ModuleT, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use candle_tricks::attention::{
    axial_attention, cbam, hybrid_vit_embedding, linformer_attention, local_attention,
    multi_head_attention, patch_embed, squeeze_excite, transformer_encoder,
    transformer_encoder_layer, vit_embedding, CbamConfig, ConvStemConfig, KvCache,
    LearnedPositionalEmbedding, LinformerConfig, LocalAttentionConfig, MhaConfig, PatchEmbedConfig,
    RotaryEmbedding, SinusoidalPositionalEncoding, SqueezeExciteConfig, TransformerEncoderConfig,
    TransformerEncoderLayerConfig,
};
use candle_tricks::blocks::{
    basic_block, bottleneck, down_block, early_exit::exit_confidence, early_exit::ExitCriterion,
    early_exit_loss, layer_scale, multi_scale_pathways, multiscale::conv_stack,
    multiscale::downsample_avg, multiscale::upsample_nearest, multiscale::ConvStackConfig,
    up_block, DownBlockConfig, DropPath, DropPathConfig, Dropout2d, EarlyExit, EarlyExitConfig,
    LayerScale, LayerScaleConfig, MultiScaleConfig, MultiScalePathways, PreNorm, ResBlockConfig,
    Residual, UpBlockConfig,
};
use candle_tricks::conv::{
    aspp, conv3d as conv3d_layer, depthwise_conv2d as dw_layer, output_size, receptive_field,
    separable_conv2d, AsppConfig, Conv3d, DepthwiseConv2d, LayerGeometry, Padding,
    SeparableConv2dConfig,
};
use candle_tricks::norm::{
    self, batch_norm, group_norm as group_norm_layer, instance_norm,
    layer_norm as layer_norm_layer, layer_norm2d, rms_norm as rms_norm_layer, BatchNorm,
    BatchNormConfig, GroupNorm, GroupNormConfig, InstanceNormConfig, LayerNorm, LayerNorm2dConfig,
    LayerNormConfig, RmsNorm, RmsNormConfig,
};
use candle_tricks::ops::{
    self, AttentionMask, Conv3dConfig, DepthwiseConv1dConfig, DepthwiseConv2dConfig, PoolMode,
    SelectiveScanConfig,
};
use candle_tricks::optim::{
    agc, clip_grad_norm, clip_grad_norm_inf, clip_grad_value, Adagrad, AdagradConfig, Adam,
    AdamConfig, AdamW, AdamWConfig, Ema, EmaConfig, GradAccumulator, GradScaler, GradScalerConfig,
    Lion, LionConfig, Momentum, OptimizerState, ParamGroup, ParamGroups, RmsProp, RmsPropConfig,
    Sgd, SgdConfig,
};
use candle_tricks::pool::{sppf, AdaptivePool2d, SpatialPyramidPooling};
use candle_tricks::schedule::{
    Constant, CosineAnnealing, CosineWarmRestarts, ExponentialLr, LrSchedule, MultiStepLr, Noam,
    OneCycle, OneCycleConfig, PlateauConfig, Polynomial, ReduceLrOnPlateau, Scheduler, Sequential,
    StepLr, Warmup, Wsd, WsdConfig,
};
use candle_tricks::ssm::{mamba_block, mamba_model, MambaConfig, MambaModelConfig, MambaState};
use candle_tricks::Error;

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

/// Why a case body stopped: an error (ours, or candle's unwrapped by `From`), or a wrong value.
enum Got {
    Err(Error),
    Wrong(String),
}

impl From<Error> for Got {
    fn from(e: Error) -> Self {
        Got::Err(e)
    }
}

impl From<candle_core::Error> for Got {
    /// Unwraps our [`Error`] carried through candle's traits (`Module::forward`, `Optimizer::step`).
    fn from(e: candle_core::Error) -> Self {
        Got::Err(Error::from(e))
    }
}

type Res = Result<(), Got>;

/// What a case must produce.
enum Expect {
    /// A clean error whose message names the block (compared without case and underscores, so
    /// `DepthwiseConv2d` matches `depthwise_conv2d`).
    Error(&'static str),
    /// `Ok`: the body checked the value itself.
    Value,
    /// Either a clean error naming the block, or `Ok` with the value checked by the body.
    ErrorOrValue(&'static str),
}

struct Case {
    group: &'static str,
    name: String,
    expect: Expect,
    body: Box<dyn FnOnce() -> Res>,
}

/// Cases of one group, built with [`Cases::err`], [`Cases::val`] and [`Cases::either`].
struct Cases {
    group: &'static str,
    list: Vec<Case>,
}

impl Cases {
    fn new(group: &'static str) -> Self {
        Self {
            group,
            list: Vec::new(),
        }
    }
    fn push(&mut self, name: &str, expect: Expect, body: impl FnOnce() -> Res + 'static) {
        self.list.push(Case {
            group: self.group,
            name: name.to_string(),
            expect,
            body: Box::new(body),
        });
    }
    /// The case must fail with an error naming `block`.
    fn err(&mut self, name: &str, block: &'static str, body: impl FnOnce() -> Res + 'static) {
        self.push(name, Expect::Error(block), body)
    }
    /// The case must succeed (its body checks the value).
    fn val(&mut self, name: &str, body: impl FnOnce() -> Res + 'static) {
        self.push(name, Expect::Value, body)
    }
    /// Either an error naming `block` or a correct value.
    fn either(&mut self, name: &str, block: &'static str, body: impl FnOnce() -> Res + 'static) {
        self.push(name, Expect::ErrorOrValue(block), body)
    }
}

fn norm_name(s: &str) -> String {
    s.to_lowercase().replace('_', "")
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<non-string panic>".into())
}

/// Runs one case; `None` when it passed, else what went wrong.
fn run_case(case: Case) -> Option<String> {
    let Case {
        group,
        name,
        expect,
        body,
    } = case;
    let outcome = catch_unwind(AssertUnwindSafe(body));
    let fail = |why: String| Some(format!("[{group}] {name}: {why}"));
    let check_err = |block: &str, e: &Error| -> Option<String> {
        let msg = e.to_string();
        if matches!(e, Error::Candle(_)) {
            fail(format!("a bare candle error, not naming `{block}`: {msg}"))
        } else if !norm_name(&msg).contains(&norm_name(block)) {
            fail(format!("error does not name `{block}`: {msg}"))
        } else {
            None
        }
    };
    match (outcome, expect) {
        (Err(p), _) => fail(format!("PANIC: {}", panic_message(&*p))),
        (Ok(Err(Got::Wrong(w))), _) => fail(format!("WRONG VALUE: {w}")),
        (Ok(Ok(())), Expect::Error(block)) => fail(format!(
            "unexpected Ok (expected an error naming `{block}`)"
        )),
        (Ok(Ok(())), _) => None,
        (Ok(Err(Got::Err(e))), Expect::Value) => fail(format!("unexpected error: {e}")),
        (Ok(Err(Got::Err(e))), Expect::Error(block) | Expect::ErrorOrValue(block)) => {
            check_err(block, &e)
        }
    }
}

/// Runs every case in-process (panics caught) and asserts that none failed, listing them all.
fn run_all(cases: Vec<Case>, min_count: usize) {
    let n = cases.len();
    let mut per_group: Vec<(&'static str, usize)> = Vec::new();
    for c in &cases {
        match per_group.iter_mut().find(|(g, _)| *g == c.group) {
            Some((_, k)) => *k += 1,
            None => per_group.push((c.group, 1)),
        }
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {})); // panics are reported below, with the case name
    let failures: Vec<String> = cases.into_iter().filter_map(run_case).collect();
    std::panic::set_hook(hook);
    eprintln!("bad-input sweep: {n} cases {per_group:?}");
    assert!(
        failures.is_empty(),
        "{} of {n} bad-input cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(n >= min_count, "only {n} cases, want >= {min_count}");
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn cpu() -> Device {
    Device::Cpu
}

/// A deterministic f32 tensor of `shape` (values in about [-1, 1]).
fn t<S: Into<candle_core::Shape>>(shape: S) -> Tensor {
    let shape: candle_core::Shape = shape.into();
    let n = shape.elem_count();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 + 13) % 97) as f32 / 48.5 - 1.0)
        .collect();
    Tensor::from_vec(v, shape, &cpu()).unwrap()
}

/// `t(shape)` in `dtype`.
fn td<S: Into<candle_core::Shape>>(shape: S, dtype: DType) -> Tensor {
    t(shape).to_dtype(dtype).unwrap()
}

/// A positive f32 tensor (for `A`-like and `delta`-like inputs).
fn tpos<S: Into<candle_core::Shape>>(shape: S) -> Tensor {
    (t(shape).abs().unwrap() + 0.1).unwrap()
}

/// A tensor of `shape` that is not contiguous, with the same values as `t(shape)`: the last two
/// dims are stored swapped.
fn noncontig<S: Into<candle_core::Shape>>(shape: S) -> Tensor {
    let shape: candle_core::Shape = shape.into();
    let mut dims = shape.dims().to_vec();
    let r = dims.len();
    dims.swap(r - 2, r - 1);
    let x = t(shape)
        .transpose(r - 2, r - 1)
        .unwrap()
        .contiguous()
        .unwrap();
    let y = x.transpose(r - 2, r - 1).unwrap();
    assert!(!y.is_contiguous());
    y
}

/// A VarBuilder creating fresh (randomly initialised) f32 vars.
fn vb() -> VarBuilder<'static> {
    VarBuilder::from_varmap(&VarMap::new(), DType::F32, &cpu())
}

/// A VarBuilder over exactly `tensors`.
fn vb_of(tensors: Vec<(&str, Tensor)>) -> VarBuilder<'static> {
    let m: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    VarBuilder::from_tensors(m, DType::F32, &cpu())
}

/// Max |a - b| over all elements, in f64; shapes must match.
fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64, Got> {
    if a.dims() != b.dims() {
        return Err(Got::Wrong(format!(
            "shape {:?} vs expected {:?}",
            a.dims(),
            b.dims()
        )));
    }
    if a.elem_count() == 0 {
        return Ok(0.0);
    }
    let a = a.to_dtype(DType::F64)?;
    let b = b.to_dtype(DType::F64)?;
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f64>()?)
}

/// `Ok` when `got` matches `want` within `tol` (absolute), else a wrong-value report.
fn close(what: &str, got: &Tensor, want: &Tensor, tol: f64) -> Res {
    let d = max_diff(got, want)?;
    if d <= tol {
        Ok(())
    } else {
        Err(Got::Wrong(format!(
            "{what}: max |diff| {d:.3e} > {tol:.1e}"
        )))
    }
}

fn ensure(cond: bool, what: impl Into<String>) -> Res {
    if cond {
        Ok(())
    } else {
        Err(Got::Wrong(what.into()))
    }
}

fn dw2(stride: usize, padding: Padding, dilation: usize) -> DepthwiseConv2dConfig {
    DepthwiseConv2dConfig {
        stride,
        padding,
        dilation,
    }
}

fn dw1(stride: usize, padding: Padding, dilation: usize) -> DepthwiseConv1dConfig {
    DepthwiseConv1dConfig {
        stride,
        padding,
        dilation,
    }
}

fn c3(stride: usize, padding: Padding, dilation: usize) -> Conv3dConfig {
    Conv3dConfig {
        stride,
        padding,
        dilation,
        ..Default::default()
    }
}

/// One var `w` (2×3, f32) and the gradient store of `sum(w²)`.
fn var_and_grads() -> (Var, candle_core::backprop::GradStore) {
    let w = Var::from_tensor(&t((2, 3))).unwrap();
    let g = w
        .as_tensor()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    (w, g)
}

// ---------------------------------------------------------------------------------------------
// ops
// ---------------------------------------------------------------------------------------------

fn bcfg() -> BatchNormConfig {
    BatchNormConfig::default()
}

fn scfg() -> SeparableConv2dConfig {
    SeparableConv2dConfig::default()
}

fn ops_cases() -> Vec<Case> {
    let mut c = Cases::new("ops");
    let d2 = DepthwiseConv2dConfig::default();
    let dw = "depthwise_conv2d";

    // depthwise_conv2d
    c.err("dw2d: rank-3 input", dw, move || {
        ops::depthwise_conv2d(&t((2, 5, 5)), &t((2, 1, 3, 3)), d2)?;
        Ok(())
    });
    c.err("dw2d: rank-3 weight", dw, move || {
        ops::depthwise_conv2d(&t((1, 2, 5, 5)), &t((2, 3, 3)), d2)?;
        Ok(())
    });
    c.either("dw2d: zero batch", dw, move || {
        let y = ops::depthwise_conv2d(&t((0, 2, 5, 5)), &t((2, 1, 3, 3)), d2)?;
        ensure(y.dims() == [0, 2, 3, 3], format!("shape {:?}", y.dims()))
    });
    c.err("dw2d: zero channels", dw, move || {
        ops::depthwise_conv2d(&t((1, 0, 5, 5)), &t((0, 1, 3, 3)), d2)?;
        Ok(())
    });
    c.err("dw2d: weight channels not a multiple", dw, move || {
        ops::depthwise_conv2d(&t((1, 3, 5, 5)), &t((4, 1, 3, 3)), d2)?;
        Ok(())
    });
    c.err("dw2d: weight in-channels 2", dw, move || {
        ops::depthwise_conv2d(&t((1, 3, 5, 5)), &t((3, 2, 3, 3)), d2)?;
        Ok(())
    });
    c.err("dw2d: u32 input", dw, move || {
        ops::depthwise_conv2d(
            &td((1, 2, 5, 5), DType::U32),
            &td((2, 1, 3, 3), DType::U32),
            d2,
        )?;
        Ok(())
    });
    c.err("dw2d: i64 weight", dw, move || {
        ops::depthwise_conv2d(&t((1, 2, 5, 5)), &td((2, 1, 3, 3), DType::I64), d2)?;
        Ok(())
    });
    c.err("dw2d: f64 (unsupported by the kernel)", dw, move || {
        ops::depthwise_conv2d(
            &td((1, 2, 5, 5), DType::F64),
            &td((2, 1, 3, 3), DType::F64),
            d2,
        )?;
        Ok(())
    });
    c.err("dw2d: f32 input, f16 weight", dw, move || {
        ops::depthwise_conv2d(&t((1, 2, 5, 5)), &td((2, 1, 3, 3), DType::F16), d2)?;
        Ok(())
    });
    c.err("dw2d: stride 0", dw, move || {
        ops::depthwise_conv2d(
            &t((1, 2, 5, 5)),
            &t((2, 1, 3, 3)),
            dw2(0, Padding::Valid, 1),
        )?;
        Ok(())
    });
    c.err("dw2d: dilation 0", dw, move || {
        ops::depthwise_conv2d(
            &t((1, 2, 5, 5)),
            &t((2, 1, 3, 3)),
            dw2(1, Padding::Valid, 0),
        )?;
        Ok(())
    });
    c.err(
        "dw2d: kernel larger than the input (valid)",
        dw,
        move || {
            ops::depthwise_conv2d(
                &t((1, 2, 3, 3)),
                &t((2, 1, 5, 5)),
                dw2(1, Padding::Valid, 1),
            )?;
            Ok(())
        },
    );
    c.err("dw2d: zero-sized kernel", dw, move || {
        ops::depthwise_conv2d(&t((1, 2, 3, 3)), &t((2, 1, 0, 3)), d2)?;
        Ok(())
    });
    c.val(
        "dw2d: stride larger than the input == reference",
        move || {
            let (x, w, cfg) = (
                t((1, 2, 3, 3)),
                t((4, 1, 2, 2)),
                dw2(7, Padding::Explicit(1), 1),
            );
            let y = ops::depthwise_conv2d(&x, &w, cfg)?;
            close(
                "y",
                &y,
                &ops::depthwise_conv2d_reference(&x, &w, cfg)?,
                1e-5,
            )
        },
    );
    c.val(
        "dw2d: kernel larger than the input (same) == reference",
        move || {
            let (x, w, cfg) = (t((1, 2, 2, 2)), t((2, 1, 5, 5)), dw2(1, Padding::Same, 2));
            let y = ops::depthwise_conv2d(&x, &w, cfg)?;
            close(
                "y",
                &y,
                &ops::depthwise_conv2d_reference(&x, &w, cfg)?,
                1e-5,
            )
        },
    );
    c.val("dw2d: non-contiguous input == contiguous", move || {
        let x = noncontig((2, 3, 5, 6));
        let w = t((3, 1, 3, 3));
        let cfg = dw2(2, Padding::Same, 1);
        let y = ops::depthwise_conv2d(&x, &w, cfg)?;
        close(
            "y",
            &y,
            &ops::depthwise_conv2d(&x.contiguous()?, &w, cfg)?,
            0.0,
        )?;
        close(
            "y",
            &y,
            &ops::depthwise_conv2d_reference(&x, &w, cfg)?,
            1e-5,
        )
    });
    c.val("dw2d: non-contiguous weight == contiguous", move || {
        let x = t((1, 3, 5, 5));
        let w = noncontig((3, 1, 3, 3));
        let y = ops::depthwise_conv2d(&x, &w, d2)?;
        close(
            "y",
            &y,
            &ops::depthwise_conv2d(&x, &w.contiguous()?, d2)?,
            0.0,
        )
    });
    c.val(
        "dw2d: 1x1 spatial input, same padding == hand value",
        move || {
            // Only the kernel's centre tap sees the pixel: y = x * w[1, 1].
            let x = Tensor::new(&[[[[2f32]]]], &cpu())?;
            let w = t((1, 1, 3, 3));
            let y = ops::depthwise_conv2d(&x, &w, dw2(1, Padding::Same, 1))?;
            let want = (w.i((.., .., 1..2, 1..2))? * 2.0)?;
            close("y", &y, &want, 1e-6)
        },
    );

    // depthwise_conv1d
    let dc1 = "depthwise_conv1d";
    let d1 = DepthwiseConv1dConfig::default();
    c.err("dw1d: rank-4 input", dc1, move || {
        ops::depthwise_conv1d(&t((1, 2, 5, 5)), &t((2, 1, 3)), d1)?;
        Ok(())
    });
    c.err("dw1d: channel mismatch", dc1, move || {
        ops::depthwise_conv1d(&t((1, 2, 5)), &t((3, 1, 3)), d1)?;
        Ok(())
    });
    c.err("dw1d: stride 0", dc1, move || {
        ops::depthwise_conv1d(&t((1, 2, 5)), &t((2, 1, 3)), dw1(0, Padding::Valid, 1))?;
        Ok(())
    });
    c.err("dw1d: u32", dc1, move || {
        ops::depthwise_conv1d(&td((1, 2, 5), DType::U32), &td((2, 1, 3), DType::U32), d1)?;
        Ok(())
    });
    c.err("dw1d: kernel longer than the input", dc1, move || {
        ops::depthwise_conv1d(&t((1, 2, 2)), &t((2, 1, 3)), dw1(1, Padding::Valid, 1))?;
        Ok(())
    });
    c.val("dw1d: non-contiguous input == reference", move || {
        let x = t((2, 5, 3)).transpose(1, 2)?; // (2, 3, 5)
        let w = t((3, 1, 2));
        let cfg = dw1(3, Padding::Explicit(1), 2);
        let y = ops::depthwise_conv1d(&x, &w, cfg)?;
        close(
            "y",
            &y,
            &ops::depthwise_conv1d_reference(&x, &w, cfg)?,
            1e-5,
        )
    });

    // conv3d
    let cv = "conv3d";
    let cc = Conv3dConfig::default();
    c.err("conv3d: rank-4 input", cv, move || {
        ops::conv3d(&t((2, 4, 4, 4)), &t((3, 2, 1, 1, 1)), cc)?;
        Ok(())
    });
    c.err("conv3d: channel mismatch", cv, move || {
        ops::conv3d(&t((1, 2, 4, 4, 4)), &t((3, 4, 1, 1, 1)), cc)?;
        Ok(())
    });
    c.err("conv3d: groups 0", cv, move || {
        ops::conv3d(&t((1, 2, 4, 4, 4)), &t((2, 2, 1, 1, 1)), cc.with_groups(0))?;
        Ok(())
    });
    c.err("conv3d: groups not dividing the channels", cv, move || {
        ops::conv3d(&t((1, 3, 4, 4, 4)), &t((2, 1, 1, 1, 1)), cc.with_groups(2))?;
        Ok(())
    });
    c.err("conv3d: stride 0", cv, move || {
        ops::conv3d(
            &t((1, 2, 4, 4, 4)),
            &t((2, 2, 1, 1, 1)),
            c3(0, Padding::Valid, 1),
        )?;
        Ok(())
    });
    c.err("conv3d: u32", cv, move || {
        ops::conv3d(
            &td((1, 2, 4, 4, 4), DType::U32),
            &td((2, 2, 1, 1, 1), DType::U32),
            cc,
        )?;
        Ok(())
    });
    c.err("conv3d: f64", cv, move || {
        ops::conv3d(
            &td((1, 2, 4, 4, 4), DType::F64),
            &td((2, 2, 1, 1, 1), DType::F64),
            cc,
        )?;
        Ok(())
    });
    c.err("conv3d: bf16 input, f32 weight", cv, move || {
        ops::conv3d(&td((1, 2, 4, 4, 4), DType::BF16), &t((2, 2, 1, 1, 1)), cc)?;
        Ok(())
    });
    c.err("conv3d: kernel larger than the input", cv, move || {
        ops::conv3d(
            &t((1, 2, 2, 4, 4)),
            &t((2, 2, 3, 3, 3)),
            c3(1, Padding::Valid, 1),
        )?;
        Ok(())
    });
    c.err("conv3d: empty batch or channels", cv, move || {
        ops::conv3d(&t((1, 0, 4, 4, 4)), &t((2, 0, 1, 1, 1)), cc)?;
        Ok(())
    });
    c.val(
        "conv3d: stride larger than the input == reference",
        move || {
            let (x, w, cfg) = (
                t((1, 2, 3, 3, 3)),
                t((2, 2, 2, 2, 2)),
                c3(9, Padding::Same, 1),
            );
            let y = ops::conv3d(&x, &w, cfg)?;
            close("y", &y, &ops::conv3d_reference(&x, &w, cfg)?, 1e-5)
        },
    );
    c.val("conv3d: non-contiguous input == contiguous", move || {
        let x = noncontig((1, 4, 3, 4, 5));
        let w = t((2, 2, 3, 3, 3));
        let cfg = c3(1, Padding::Same, 1).with_groups(2);
        let y = ops::conv3d(&x, &w, cfg)?;
        close("y", &y, &ops::conv3d(&x.contiguous()?, &w, cfg)?, 0.0)?;
        close("y", &y, &ops::conv3d_reference(&x, &w, cfg)?, 1e-4)
    });

    // adaptive pools and max_pool2d_same
    c.err(
        "adaptive_avg_pool2d: rank-2 input",
        "adaptive_avg_pool2d",
        || {
            ops::adaptive_avg_pool2d(&t((4, 4)), (2, 2))?;
            Ok(())
        },
    );
    c.err(
        "adaptive_max_pool2d: rank-5 input",
        "adaptive_max_pool2d",
        || {
            ops::adaptive_max_pool2d(&t((1, 1, 2, 4, 4)), (2, 2))?;
            Ok(())
        },
    );
    c.val(
        "adaptive_avg_pool2d: unbatched (C, H, W) == batched",
        || {
            let x = t((2, 5, 4));
            let y = ops::adaptive_avg_pool2d(&x, (3, 3))?;
            let yb = ops::adaptive_avg_pool2d(&x.unsqueeze(0)?, (3, 3))?.squeeze(0)?;
            close("y", &y, &yb, 0.0)
        },
    );
    c.err(
        "adaptive_avg_pool2d: output 0",
        "adaptive_avg_pool2d",
        || {
            ops::adaptive_avg_pool2d(&t((1, 2, 4, 4)), (0, 2))?;
            Ok(())
        },
    );
    c.err(
        "adaptive_max_pool2d: output 0",
        "adaptive_max_pool2d",
        || {
            ops::adaptive_max_pool2d(&t((1, 2, 4, 4)), (2, 0))?;
            Ok(())
        },
    );
    c.err("adaptive_max_pool2d: u32", "adaptive_max_pool2d", || {
        ops::adaptive_max_pool2d(&td((1, 2, 4, 4), DType::U32), (2, 2))?;
        Ok(())
    });
    c.err(
        "adaptive_avg_pool2d: empty input",
        "adaptive_avg_pool2d",
        || {
            ops::adaptive_avg_pool2d(&t((1, 2, 0, 4)), (2, 2))?;
            Ok(())
        },
    );
    c.err(
        "adaptive_avg_pool1d: rank-4 input",
        "adaptive_avg_pool1d",
        || {
            ops::adaptive_avg_pool1d(&t((1, 2, 4, 4)), 2)?;
            Ok(())
        },
    );
    c.err(
        "adaptive_max_pool1d: output 0",
        "adaptive_max_pool1d",
        || {
            ops::adaptive_max_pool1d(&t((1, 2, 4)), 0)?;
            Ok(())
        },
    );
    c.val(
        "adaptive_avg_pool2d: output larger than input == reference",
        || {
            let x = t((1, 2, 3, 2));
            let y = ops::adaptive_avg_pool2d(&x, (7, 5))?;
            close(
                "y",
                &y,
                &ops::adaptive_avg_pool2d_reference(&x, (7, 5))?,
                1e-6,
            )
        },
    );
    c.val("adaptive_max_pool2d: non-contiguous == reference", || {
        let x = noncontig((2, 3, 7, 5));
        let y = ops::adaptive_max_pool2d(&x, (3, 2))?;
        close(
            "y",
            &y,
            &ops::adaptive_max_pool2d(&x.contiguous()?, (3, 2))?,
            0.0,
        )?;
        close(
            "y",
            &y,
            &ops::adaptive_max_pool2d_reference(&x, (3, 2))?,
            0.0,
        )
    });
    c.val(
        "adaptive_avg_pool2d: 1x1 input, 1x1 output is the identity",
        || {
            let x = t((2, 3, 1, 1));
            close("y", &ops::adaptive_avg_pool2d(&x, (1, 1))?, &x, 0.0)
        },
    );
    c.err("max_pool2d_same: even kernel", "max_pool2d_same", || {
        ops::max_pool2d_same(&t((1, 2, 4, 4)), 2)?;
        Ok(())
    });
    c.err("max_pool2d_same: kernel 0", "max_pool2d_same", || {
        ops::max_pool2d_same(&t((1, 2, 4, 4)), 0)?;
        Ok(())
    });
    c.err("max_pool2d_same: rank-3", "max_pool2d_same", || {
        ops::max_pool2d_same(&t((2, 4, 4)), 3)?;
        Ok(())
    });
    c.err("max_pool2d_same: i64", "max_pool2d_same", || {
        ops::max_pool2d_same(&td((1, 2, 4, 4), DType::I64), 3)?;
        Ok(())
    });
    c.val(
        "max_pool2d_same: kernel larger than the input == reference",
        || {
            let x = noncontig((1, 2, 3, 2));
            let y = ops::max_pool2d_same(&x, 9)?;
            close("y", &y, &ops::max_pool2d_same_reference(&x, 9)?, 0.0)?;
            // Every output sees the whole map: the per-channel max.
            let m = x.flatten_from(2)?.max_keepdim(2)?.unsqueeze(3)?;
            close("y", &y, &m.broadcast_as(y.shape())?.contiguous()?, 0.0)
        },
    );

    // layer_norm / rms_norm / group_norm
    let ln = "layer_norm";
    c.err("layer_norm: eps NaN", ln, || {
        ops::layer_norm(&t((2, 4)), None, None, f64::NAN)?;
        Ok(())
    });
    c.err("layer_norm: eps negative", ln, || {
        ops::layer_norm(&t((2, 4)), None, None, -1e-5)?;
        Ok(())
    });
    c.err("layer_norm: eps +Inf", ln, || {
        ops::layer_norm(&t((2, 4)), None, None, f64::INFINITY)?;
        Ok(())
    });
    c.err("layer_norm: weight of the wrong size", ln, || {
        ops::layer_norm(&t((2, 4)), Some(&t(5)), None, 1e-5)?;
        Ok(())
    });
    c.err("layer_norm: bias dtype mismatch", ln, || {
        ops::layer_norm(&t((2, 4)), Some(&t(4)), Some(&td(4, DType::F16)), 1e-5)?;
        Ok(())
    });
    c.err("layer_norm: u32 input", ln, || {
        ops::layer_norm(&td((2, 4), DType::U32), None, None, 1e-5)?;
        Ok(())
    });
    c.err("layer_norm: scalar input", ln, || {
        ops::layer_norm(&Tensor::new(1f32, &cpu())?, None, None, 1e-5)?;
        Ok(())
    });
    c.err("layer_norm: empty last dim", ln, || {
        ops::layer_norm(&t((2, 0)), None, None, 1e-5)?;
        Ok(())
    });
    c.val("layer_norm: non-contiguous == reference", || {
        let x = noncontig((2, 3, 5));
        let (w, b) = (t(5), t(5));
        let y = ops::layer_norm(&x, Some(&w), Some(&b), 1e-5)?;
        close(
            "y",
            &y,
            &ops::layer_norm_reference(&x, Some(&w), Some(&b), 1e-5)?,
            1e-5,
        )
    });
    c.val(
        "layer_norm: a single feature normalises to the bias",
        || {
            let x = t((3, 1));
            let b = Tensor::new(&[0.25f32], &cpu())?;
            let y = ops::layer_norm(&x, None, Some(&b), 1e-5)?;
            close("y", &y, &Tensor::full(0.25f32, (3, 1), &cpu())?, 1e-6)
        },
    );
    c.err("rms_norm: eps NaN", "rms_norm", || {
        ops::rms_norm(&t((2, 4)), None, f64::NAN)?;
        Ok(())
    });
    c.err("rms_norm: weight rank 2", "rms_norm", || {
        ops::rms_norm(&t((2, 4)), Some(&t((1, 4))), 1e-5)?;
        Ok(())
    });
    c.err("rms_norm: f64", "rms_norm", || {
        ops::rms_norm(&td((2, 4), DType::F64), None, 1e-5)?;
        Ok(())
    });
    c.val("rms_norm: non-contiguous == reference", || {
        let x = noncontig((3, 4, 6));
        let w = t(6);
        let y = ops::rms_norm(&x, Some(&w), 1e-6)?;
        close("y", &y, &ops::rms_norm_reference(&x, Some(&w), 1e-6)?, 1e-5)
    });
    let gn = "group_norm";
    c.err("group_norm: groups 0", gn, || {
        ops::group_norm(&t((2, 4, 3)), 0, None, None, 1e-5)?;
        Ok(())
    });
    c.err("group_norm: groups not dividing the channels", gn, || {
        ops::group_norm(&t((2, 4, 3)), 3, None, None, 1e-5)?;
        Ok(())
    });
    c.err("group_norm: rank-1 input", gn, || {
        ops::group_norm(&t(4), 2, None, None, 1e-5)?;
        Ok(())
    });
    c.err("group_norm: weight of the wrong size", gn, || {
        ops::group_norm(&t((2, 4, 3)), 2, Some(&t(3)), None, 1e-5)?;
        Ok(())
    });
    c.err("group_norm: eps -Inf", gn, || {
        ops::group_norm(&t((2, 4, 3)), 2, None, None, f64::NEG_INFINITY)?;
        Ok(())
    });
    c.val("group_norm: non-contiguous == reference", || {
        let x = noncontig((2, 4, 3, 5));
        let (w, b) = (t(4), t(4));
        let y = ops::group_norm(&x, 2, Some(&w), Some(&b), 1e-5)?;
        let r = ops::group_norm_reference(&x, 2, Some(&w), Some(&b), 1e-5)?;
        close("y", &y, &r, 1e-5)
    });

    // softmax
    let sm = "softmax_last_dim";
    c.err("softmax: scalar", sm, || {
        ops::softmax_last_dim(&Tensor::new(1f32, &cpu())?)?;
        Ok(())
    });
    c.err("softmax: u32", sm, || {
        ops::softmax_last_dim(&td((2, 3), DType::U32))?;
        Ok(())
    });
    c.err("softmax: empty last dim", sm, || {
        ops::softmax_last_dim(&t((2, 0)))?;
        Ok(())
    });
    c.val("softmax: non-contiguous == reference", || {
        let x = noncontig((2, 5, 7));
        let y = ops::softmax_last_dim(&x)?;
        close("y", &y, &ops::softmax_last_dim_reference(&x)?, 1e-6)
    });
    c.val("softmax: a single logit is 1", || {
        let y = ops::softmax_last_dim(&t((4, 1)))?;
        close("y", &y, &Tensor::ones((4, 1), DType::F32, &cpu())?, 0.0)
    });

    // upsample_bilinear2d
    let up = "upsample_bilinear2d";
    c.err("upsample: rank-3", up, || {
        ops::upsample_bilinear2d(&t((2, 3, 3)), 4, 4, false)?;
        Ok(())
    });
    c.err("upsample: output 0", up, || {
        ops::upsample_bilinear2d(&t((1, 2, 3, 3)), 0, 4, false)?;
        Ok(())
    });
    c.err("upsample: u32", up, || {
        ops::upsample_bilinear2d(&td((1, 2, 3, 3), DType::U32), 4, 4, true)?;
        Ok(())
    });
    c.err("upsample: empty input", up, || {
        ops::upsample_bilinear2d(&t((1, 2, 0, 3)), 4, 4, true)?;
        Ok(())
    });
    c.val("upsample: non-contiguous == reference", || {
        let x = noncontig((1, 2, 3, 4));
        for ac in [false, true] {
            let y = ops::upsample_bilinear2d(&x, 7, 5, ac)?;
            close(
                "y",
                &y,
                &ops::upsample_bilinear2d_reference(&x, 7, 5, ac)?,
                1e-5,
            )?;
        }
        Ok(())
    });
    c.val("upsample: 1x1 input gives a constant map", || {
        let x = t((1, 2, 1, 1));
        for ac in [false, true] {
            let y = ops::upsample_bilinear2d(&x, 3, 4, ac)?;
            close("y", &y, &x.broadcast_as((1, 2, 3, 4))?.contiguous()?, 1e-6)?;
        }
        Ok(())
    });

    // scaled_dot_product_attention
    let sd = "scaled_dot_product_attention";
    let q = || t((1, 2, 4, 8));
    let sdpa = |q: &Tensor, k: &Tensor, v: &Tensor, m: &AttentionMask| -> Res {
        ops::scaled_dot_product_attention(q, k, v, m, None, 0.0)?;
        Ok(())
    };
    c.err("sdpa: rank-3 q", sd, move || {
        sdpa(&t((2, 4, 8)), &q(), &q(), &AttentionMask::None)
    });
    c.err("sdpa: head-dim mismatch", sd, move || {
        sdpa(&q(), &t((1, 2, 4, 6)), &q(), &AttentionMask::None)
    });
    c.err("sdpa: k and v lengths differ", sd, move || {
        sdpa(&q(), &q(), &t((1, 2, 5, 8)), &AttentionMask::None)
    });
    c.err("sdpa: batch mismatch", sd, move || {
        sdpa(
            &q(),
            &t((2, 2, 4, 8)),
            &t((2, 2, 4, 8)),
            &AttentionMask::None,
        )
    });
    c.err("sdpa: q heads not a multiple of kv heads", sd, move || {
        sdpa(&t((1, 3, 4, 8)), &q(), &q(), &AttentionMask::None)
    });
    c.err("sdpa: f16 k with f32 q", sd, move || {
        sdpa(
            &q(),
            &td((1, 2, 4, 8), DType::F16),
            &q(),
            &AttentionMask::None,
        )
    });
    c.err("sdpa: u32", sd, move || {
        let x = td((1, 2, 4, 8), DType::U32);
        sdpa(&x, &x, &x, &AttentionMask::None)
    });
    c.err("sdpa: empty sequence", sd, move || {
        let x = t((1, 2, 0, 8));
        sdpa(&x, &x, &x, &AttentionMask::None)
    });
    for (name, p) in [
        ("NaN", f64::NAN),
        ("1.5", 1.5),
        ("-0.1", -0.1),
        ("1.0", 1.0),
    ] {
        c.err(&format!("sdpa: dropout_p {name}"), sd, move || {
            ops::scaled_dot_product_attention(&q(), &q(), &q(), &AttentionMask::None, None, p)?;
            Ok(())
        });
    }
    for (name, s) in [("NaN", f64::NAN), ("Inf", f64::INFINITY)] {
        c.err(&format!("sdpa: scale {name}"), sd, move || {
            ops::scaled_dot_product_attention(&q(), &q(), &q(), &AttentionMask::None, Some(s), 0.)?;
            Ok(())
        });
    }
    c.err("sdpa: bool mask of the wrong shape", sd, move || {
        let m = Tensor::ones((3, 3), DType::U8, &cpu())?;
        sdpa(&q(), &q(), &q(), &AttentionMask::Bool(m))
    });
    c.err("sdpa: bool mask of dtype f32", sd, move || {
        let m = Tensor::ones((4, 4), DType::F32, &cpu())?;
        sdpa(&q(), &q(), &q(), &AttentionMask::Bool(m))
    });
    c.err("sdpa: additive mask of dtype u8", sd, move || {
        let m = Tensor::zeros((4, 4), DType::U8, &cpu())?;
        sdpa(&q(), &q(), &q(), &AttentionMask::Additive(m))
    });
    c.err("sdpa: additive mask of the wrong shape", sd, move || {
        sdpa(&q(), &q(), &q(), &AttentionMask::Additive(t((4, 5))))
    });
    c.err("sdpa: key padding of the wrong batch", sd, move || {
        sdpa(&q(), &q(), &q(), &AttentionMask::KeyPadding(vec![4, 4]))
    });
    c.err("sdpa: key padding longer than the keys", sd, move || {
        sdpa(&q(), &q(), &q(), &AttentionMask::KeyPadding(vec![5]))
    });
    c.err("sdpa: sliding window 0", sd, move || {
        let m = AttentionMask::SlidingWindow {
            window: 0,
            causal: true,
            global: 0,
        };
        sdpa(&q(), &q(), &q(), &m)
    });
    c.val("sdpa: non-contiguous q, k, v == reference", move || {
        let q = t((1, 2, 8, 5)).transpose(2, 3)?; // (1, 2, 5, 8)
        let k = noncontig((1, 2, 6, 8));
        let v = noncontig((1, 2, 6, 8));
        let m = AttentionMask::Causal { kv_offset: 1 };
        let y = ops::scaled_dot_product_attention(&q, &k, &v, &m, None, 0.0)?;
        let r = ops::sdpa_reference(&q, &k, &v, &m, None)?;
        close("y", &y, &r, 1e-5)?;
        let yc = ops::scaled_dot_product_attention(
            &q.contiguous()?,
            &k.contiguous()?,
            &v.contiguous()?,
            &m,
            None,
            0.0,
        )?;
        close("y", &y, &yc, 0.0)
    });
    c.val(
        "sdpa: window wider than the sequence == no mask",
        move || {
            let m = AttentionMask::SlidingWindow {
                window: 1000,
                causal: false,
                global: 0,
            };
            let (q, k) = (t((1, 2, 3, 4)), noncontig((1, 2, 3, 4)));
            let y = ops::scaled_dot_product_attention(&q, &k, &k, &m, None, 0.0)?;
            let r = ops::sdpa_reference(&q, &k, &k, &AttentionMask::None, None)?;
            close("y", &y, &r, 1e-5)
        },
    );
    c.err("attention_dropout_keep: p NaN", "attention", || {
        ops::attention_dropout_keep((1, 1, 2, 2), f64::NAN, 0)?;
        Ok(())
    });

    // selective_scan
    let ss = "selective_scan";
    let scan = |u: Tensor, dl: Tensor, a: Tensor, b: Tensor, cc: Tensor| -> Res {
        ops::selective_scan(&u, &dl, &a, &b, &cc, &SelectiveScanConfig::default())?;
        Ok(())
    };
    let a = || tpos((4, 3)).neg().unwrap();
    c.err("selective_scan: rank-2 u", ss, move || {
        scan(t((4, 5)), tpos((4, 5)), a(), t((1, 3, 5)), t((1, 3, 5)))
    });
    c.err("selective_scan: delta shape mismatch", ss, move || {
        scan(
            t((1, 4, 5)),
            tpos((1, 4, 6)),
            a(),
            t((1, 3, 5)),
            t((1, 3, 5)),
        )
    });
    c.err("selective_scan: A with the wrong D", ss, move || {
        scan(
            t((1, 4, 5)),
            tpos((1, 4, 5)),
            t((3, 3)),
            t((1, 3, 5)),
            t((1, 3, 5)),
        )
    });
    c.err("selective_scan: B with the wrong N", ss, move || {
        scan(
            t((1, 4, 5)),
            tpos((1, 4, 5)),
            a(),
            t((1, 2, 5)),
            t((1, 3, 5)),
        )
    });
    c.err("selective_scan: C rank 2", ss, move || {
        scan(t((1, 4, 5)), tpos((1, 4, 5)), a(), t((1, 3, 5)), t((3, 5)))
    });
    c.err("selective_scan: groups not dividing D", ss, move || {
        scan(
            t((1, 4, 5)),
            tpos((1, 4, 5)),
            a(),
            t((1, 3, 3, 5)),
            t((1, 3, 3, 5)),
        )
    });
    c.err("selective_scan: f16 delta with f32 u", ss, move || {
        let d = td((1, 4, 5), DType::F16);
        scan(t((1, 4, 5)), d, a(), t((1, 3, 5)), t((1, 3, 5)))
    });
    c.err("selective_scan: u32", ss, move || {
        let u = td((1, 4, 5), DType::U32);
        scan(u.clone(), u, a(), t((1, 3, 5)), t((1, 3, 5)))
    });
    c.err("selective_scan: empty L", ss, move || {
        scan(
            t((1, 4, 0)),
            tpos((1, 4, 0)),
            a(),
            t((1, 3, 0)),
            t((1, 3, 0)),
        )
    });
    c.err("selective_scan: chunk 0", ss, move || {
        let (u, dl, b) = (t((1, 4, 5)), tpos((1, 4, 5)), t((1, 3, 5)));
        let cfg = SelectiveScanConfig::default().with_chunk(0);
        ops::selective_scan(&u, &dl, &a(), &b, &b, &cfg)?;
        Ok(())
    });
    c.err("selective_scan: D of the wrong size", ss, move || {
        let (u, dl, b, d) = (t((1, 4, 5)), tpos((1, 4, 5)), t((1, 3, 5)), t(3));
        let cfg = SelectiveScanConfig::default().with_d(&d);
        ops::selective_scan(&u, &dl, &a(), &b, &b, &cfg)?;
        Ok(())
    });
    c.err("selective_scan: z of the wrong shape", ss, move || {
        let (u, dl, b, z) = (t((1, 4, 5)), tpos((1, 4, 5)), t((1, 3, 5)), t((1, 4, 4)));
        let cfg = SelectiveScanConfig::default().with_z(&z);
        ops::selective_scan(&u, &dl, &a(), &b, &b, &cfg)?;
        Ok(())
    });
    c.err(
        "selective_scan: delta_bias of the wrong size",
        ss,
        move || {
            let (u, dl, b, db) = (t((1, 4, 5)), tpos((1, 4, 5)), t((1, 3, 5)), t(5));
            let cfg = SelectiveScanConfig::default().with_delta_bias(&db);
            ops::selective_scan(&u, &dl, &a(), &b, &b, &cfg)?;
            Ok(())
        },
    );
    c.val(
        "selective_scan: non-contiguous inputs == reference",
        move || {
            let u = noncontig((2, 4, 6));
            let dl = (noncontig((2, 4, 6)).abs()? * 0.5)?;
            let b = noncontig((2, 3, 6));
            let cc = t((2, 6, 3)).transpose(1, 2)?;
            let (d, z) = (t(4), noncontig((2, 4, 6)));
            let cfg = SelectiveScanConfig::default()
                .with_d(&d)
                .with_z(&z)
                .with_delta_softplus(true)
                .with_return_last_state(true)
                .with_chunk(4);
            let (y, s) = ops::selective_scan(&u, &dl, &a(), &b, &cc, &cfg)?;
            let (yr, sr) = ops::selective_scan_reference(&u, &dl, &a(), &b, &cc, &cfg)?;
            close("y", &y, &yr, 1e-4)?;
            close("state", &s.unwrap(), &sr.unwrap(), 1e-4)
        },
    );

    // causal_conv1d
    let cc1 = "causal_conv1d";
    c.err("causal_conv1d: rank-2 input", cc1, || {
        ops::causal_conv1d(&t((4, 5)), &t((4, 3)), None, false)?;
        Ok(())
    });
    c.err("causal_conv1d: weight channel mismatch", cc1, || {
        ops::causal_conv1d(&t((1, 4, 5)), &t((3, 3)), None, false)?;
        Ok(())
    });
    c.err("causal_conv1d: weight K = 0", cc1, || {
        ops::causal_conv1d(&t((1, 4, 5)), &t((4, 0)), None, false)?;
        Ok(())
    });
    c.err("causal_conv1d: bias of the wrong size", cc1, || {
        ops::causal_conv1d(&t((1, 4, 5)), &t((4, 3)), Some(&t(3)), true)?;
        Ok(())
    });
    c.err("causal_conv1d: i64", cc1, || {
        let x = td((1, 4, 5), DType::I64);
        ops::causal_conv1d(&x, &td((4, 3), DType::I64), None, false)?;
        Ok(())
    });
    c.err("causal_conv1d: bf16 weight with f32 input", cc1, || {
        ops::causal_conv1d(&t((1, 4, 5)), &td((4, 3), DType::BF16), None, false)?;
        Ok(())
    });
    c.val(
        "causal_conv1d: non-contiguous, kernel longer than L == reference",
        || {
            let x = noncontig((2, 4, 3));
            let w = noncontig((4, 5));
            let b = t(4);
            let y = ops::causal_conv1d(&x, &w, Some(&b), true)?;
            close(
                "y",
                &y,
                &ops::causal_conv1d_reference(&x, &w, Some(&b), true)?,
                1e-5,
            )
        },
    );
    c.list
}

// ---------------------------------------------------------------------------------------------
// conv
// ---------------------------------------------------------------------------------------------

fn conv_cases() -> Vec<Case> {
    let mut c = Cases::new("conv");
    let dcfg = DepthwiseConv2dConfig::default();
    let dwb = "DepthwiseConv2d";
    c.err("DepthwiseConv2d::new: rank-3 weight", dwb, move || {
        DepthwiseConv2d::new(t((2, 3, 3)), None, dcfg)?;
        Ok(())
    });
    c.err(
        "DepthwiseConv2d::new: bias of the wrong size",
        dwb,
        move || {
            DepthwiseConv2d::new(t((4, 1, 3, 3)), Some(t(3)), dcfg)?;
            Ok(())
        },
    );
    c.err("DepthwiseConv2d::new: stride 0", dwb, move || {
        DepthwiseConv2d::new(t((4, 1, 3, 3)), None, dw2(0, Padding::Same, 1))?;
        Ok(())
    });
    c.err("depthwise_conv2d layer: 0 channels", dwb, move || {
        dw_layer(0, 1, 3, dcfg, vb())?;
        Ok(())
    });
    c.err("depthwise_conv2d layer: multiplier 0", dwb, move || {
        dw_layer(2, 0, 3, dcfg, vb())?;
        Ok(())
    });
    c.err("depthwise_conv2d layer: kernel 0", dwb, move || {
        dw_layer(2, 1, 0, dcfg, vb())?;
        Ok(())
    });
    c.err("DepthwiseConv2d forward: wrong channels", dwb, move || {
        let l = dw_layer(2, 1, 3, dcfg, vb())?;
        l.forward(&t((1, 3, 5, 5)))?;
        Ok(())
    });
    c.val(
        "DepthwiseConv2d forward: non-contiguous == contiguous",
        move || {
            let l = dw_layer(3, 2, 3, dcfg, vb())?;
            let x = noncontig((2, 3, 4, 6));
            close("y", &l.forward(&x)?, &l.forward(&x.contiguous()?)?, 0.0)
        },
    );

    let sep = "SeparableConv2d";
    c.err("separable_conv2d: 0 in-channels", sep, move || {
        separable_conv2d(0, 4, 3, scfg(), vb())?;
        Ok(())
    });
    c.err("separable_conv2d: multiplier 0", sep, move || {
        separable_conv2d(2, 4, 3, scfg().with_multiplier(0), vb())?;
        Ok(())
    });
    c.err("separable_conv2d: bn_eps NaN", sep, move || {
        let cfg = SeparableConv2dConfig {
            bn_eps: f64::NAN,
            ..SeparableConv2dConfig::xception()
        };
        separable_conv2d(2, 4, 3, cfg, vb())?;
        Ok(())
    });
    c.err("separable_conv2d: bn_momentum 2", sep, move || {
        let cfg = SeparableConv2dConfig {
            bn_momentum: 2.0,
            ..SeparableConv2dConfig::xception()
        };
        separable_conv2d(2, 4, 3, cfg, vb())?;
        Ok(())
    });
    c.err("separable_conv2d: dilation 0", sep, move || {
        separable_conv2d(2, 4, 3, scfg().with_dilation(0), vb())?;
        Ok(())
    });
    c.err("SeparableConv2d forward: wrong channels", sep, move || {
        let l = separable_conv2d(2, 4, 3, scfg(), vb())?;
        l.forward_t(&t((1, 3, 5, 5)), false)?;
        Ok(())
    });
    c.err("SeparableConv2d forward: rank 3", sep, move || {
        let l = separable_conv2d(2, 4, 3, scfg(), vb())?;
        l.forward_t(&t((2, 5, 5)), false)?;
        Ok(())
    });
    c.val(
        "SeparableConv2d forward: non-contiguous == contiguous",
        move || {
            let l = separable_conv2d(2, 4, 3, SeparableConv2dConfig::xception(), vb())?;
            let x = noncontig((2, 2, 5, 6));
            close(
                "y",
                &l.forward_t(&x, false)?,
                &l.forward_t(&x.contiguous()?, false)?,
                1e-6,
            )
        },
    );

    let asp = "Aspp";
    c.err("aspp: no rates", asp, || {
        aspp(4, 4, AsppConfig::default().with_rates(Vec::new()), vb())?;
        Ok(())
    });
    c.err("aspp: rate 0", asp, || {
        aspp(4, 4, AsppConfig::default().with_rates([1, 0]), vb())?;
        Ok(())
    });
    c.err("aspp: dropout 1.5", asp, || {
        aspp(4, 4, AsppConfig::default().with_dropout(1.5), vb())?;
        Ok(())
    });
    c.err("aspp: dropout NaN", asp, || {
        aspp(4, 4, AsppConfig::default().with_dropout(f32::NAN), vb())?;
        Ok(())
    });
    c.err("aspp: bn_eps negative", asp, || {
        aspp(4, 4, AsppConfig::default().with_bn_eps(-1.0), vb())?;
        Ok(())
    });
    c.err("aspp: bn_momentum NaN", asp, || {
        aspp(4, 4, AsppConfig::default().with_bn_momentum(f64::NAN), vb())?;
        Ok(())
    });
    c.err("aspp: 0 out-channels", asp, || {
        aspp(4, 0, AsppConfig::default(), vb())?;
        Ok(())
    });
    c.err("Aspp forward: wrong channels", asp, || {
        let a = aspp(4, 4, AsppConfig::default().with_rates([1, 2]), vb())?;
        a.forward_t(&t((1, 3, 6, 6)), false)?;
        Ok(())
    });
    c.val(
        "Aspp forward: 1x1 input, non-contiguous batch == contiguous",
        || {
            let a = aspp(2, 3, AsppConfig::default().with_rates([1, 6]), vb())?;
            let x = t((1, 1, 2, 2)).permute((2, 3, 0, 1))?; // (2, 2, 1, 1), strided
            let y = a.forward_t(&x, false)?;
            close("y", &y, &a.forward_t(&x.contiguous()?, false)?, 1e-6)
        },
    );

    let c3b = "Conv3d";
    c.err("Conv3d::new: rank-4 weight", c3b, || {
        Conv3d::new(t((2, 2, 3, 3)), None, Conv3dConfig::default())?;
        Ok(())
    });
    c.err("Conv3d::new: bias of the wrong size", c3b, || {
        Conv3d::new(t((2, 2, 1, 1, 1)), Some(t(3)), Conv3dConfig::default())?;
        Ok(())
    });
    c.err("Conv3d::new: groups not dividing out-channels", c3b, || {
        Conv3d::new(
            t((3, 1, 1, 1, 1)),
            None,
            Conv3dConfig::default().with_groups(2),
        )?;
        Ok(())
    });
    c.err("conv3d layer: 0 in-channels", c3b, || {
        conv3d_layer(0, 2, 3, Conv3dConfig::default(), vb())?;
        Ok(())
    });
    c.err("conv3d layer: groups 0", c3b, || {
        conv3d_layer(2, 2, 3, Conv3dConfig::default().with_groups(0), vb())?;
        Ok(())
    });
    c.err("Conv3d forward: wrong channels", c3b, || {
        let l = conv3d_layer(2, 2, 3, Conv3dConfig::default(), vb())?;
        l.forward(&t((1, 3, 4, 4, 4)))?;
        Ok(())
    });
    c.err("Conv3d forward: rank 4", c3b, || {
        let l = conv3d_layer(2, 2, 3, Conv3dConfig::default(), vb())?;
        l.forward(&t((2, 4, 4, 4)))?;
        Ok(())
    });

    // Padding, output_size, receptive_field
    c.val("output_size: degenerate arguments give None", || {
        ensure(output_size(5, 0, 1, 1, 0, 0).is_none(), "kernel 0")?;
        ensure(output_size(5, 3, 0, 1, 0, 0).is_none(), "stride 0")?;
        ensure(output_size(5, 3, 1, 0, 0, 0).is_none(), "dilation 0")?;
        ensure(output_size(2, 3, 1, 1, 0, 0).is_none(), "kernel > input")?;
        ensure(
            Padding::Same.output_size(3, 3, 10, 1) == Some(1),
            "stride > input",
        )
    });
    let rf = "receptive_field";
    c.err("receptive_field: kernel 0", rf, || {
        receptive_field(&[LayerGeometry::conv(0, 1)])?;
        Ok(())
    });
    c.err("receptive_field: stride 0", rf, || {
        receptive_field(&[LayerGeometry::conv(3, 1), LayerGeometry::conv(3, 0)])?;
        Ok(())
    });
    c.err("receptive_field: dilation 0", rf, || {
        receptive_field(&[LayerGeometry::conv(3, 1).with_dilation(0)])?;
        Ok(())
    });
    c.val("receptive_field: no layers is one pixel", || {
        let r = receptive_field(&[])?;
        ensure(
            r.size == 1 && r.jump == 1 && r.center == 0.0,
            format!("{r:?}"),
        )
    });
    c.list
}

// ---------------------------------------------------------------------------------------------
// pool
// ---------------------------------------------------------------------------------------------

fn pool_cases() -> Vec<Case> {
    let mut c = Cases::new("pool");
    let spp = "SpatialPyramidPooling";
    c.err("Spp: no levels", spp, || {
        SpatialPyramidPooling::new(vec![], PoolMode::Max)?;
        Ok(())
    });
    c.err("Spp: level 0", spp, || {
        SpatialPyramidPooling::new(vec![1, 0], PoolMode::Max)?;
        Ok(())
    });
    c.err(
        "Spp forward: input smaller than the largest level",
        spp,
        || {
            let p = SpatialPyramidPooling::new(vec![1, 2, 4], PoolMode::Max)?;
            p.forward(&t((1, 2, 3, 8)))?;
            Ok(())
        },
    );
    c.err("Spp forward: u32", spp, || {
        let p = SpatialPyramidPooling::new(vec![1, 2], PoolMode::Avg)?;
        p.forward(&td((1, 2, 4, 4), DType::U32))?;
        Ok(())
    });
    c.err("Spp forward: rank 3", spp, || {
        let p = SpatialPyramidPooling::new(vec![1, 2], PoolMode::Avg)?;
        p.forward(&t((2, 4, 4)))?;
        Ok(())
    });
    c.val(
        "Spp forward: non-contiguous == levels of adaptive pools",
        || {
            let p = SpatialPyramidPooling::new(vec![1, 2], PoolMode::Max)?;
            let x = noncontig((2, 3, 4, 5));
            let y = p.forward(&x)?;
            let want = Tensor::cat(
                &[
                    ops::adaptive_max_pool2d_reference(&x, (1, 1))?.flatten_from(1)?,
                    ops::adaptive_max_pool2d_reference(&x, (2, 2))?.flatten_from(1)?,
                ],
                1,
            )?;
            close("y", &y, &want, 0.0)
        },
    );
    let sf = "Sppf";
    c.err("sppf: even kernel", sf, || {
        sppf(4, 4, 4, vb())?;
        Ok(())
    });
    c.err("sppf: kernel 0", sf, || {
        sppf(4, 4, 0, vb())?;
        Ok(())
    });
    c.err("sppf: 0 in-channels", sf, || {
        sppf(0, 4, 5, vb())?;
        Ok(())
    });
    c.err("sppf: odd in-channels (c1 / 2 hidden)", sf, || {
        sppf(1, 4, 5, vb())?;
        Ok(())
    });
    c.err("Sppf forward: wrong channels", sf, || {
        let p = sppf(4, 4, 5, vb())?;
        p.forward_t(&t((1, 3, 6, 6)), false)?;
        Ok(())
    });
    c.err("Sppf forward: f16 input, f32 weights", sf, || {
        let p = sppf(4, 4, 5, vb())?;
        p.forward_t(&td((1, 4, 6, 6), DType::F16), false)?;
        Ok(())
    });
    c.val("Sppf forward: non-contiguous == contiguous", || {
        let p = sppf(4, 2, 5, vb())?;
        let x = noncontig((1, 4, 3, 7));
        close(
            "y",
            &p.forward_t(&x, false)?,
            &p.forward_t(&x.contiguous()?, false)?,
            1e-6,
        )
    });
    let ap = "AdaptivePool2d";
    c.err("AdaptivePool2d::new: output 0", ap, || {
        AdaptivePool2d::new((0, 1), PoolMode::Avg)?;
        Ok(())
    });
    c.err("AdaptivePool2d forward: i64", "adaptive", || {
        let p = AdaptivePool2d::new((1, 1), PoolMode::Max)?;
        p.forward(&td((1, 2, 3, 3), DType::I64))?;
        Ok(())
    });
    c.list
}

// ---------------------------------------------------------------------------------------------
// norm
// ---------------------------------------------------------------------------------------------

fn norm_cases() -> Vec<Case> {
    let mut c = Cases::new("norm");
    let bn = "BatchNorm";
    for (name, cfg) in [
        ("eps NaN", bcfg().with_eps(f64::NAN)),
        ("eps negative", bcfg().with_eps(-1e-5)),
        ("momentum NaN", bcfg().with_momentum(f64::NAN)),
        ("momentum 1.5", bcfg().with_momentum(1.5)),
        ("momentum -0.1", bcfg().with_momentum(-0.1)),
    ] {
        c.err(&format!("batch_norm: {name}"), bn, move || {
            batch_norm(3, cfg, vb())?;
            Ok(())
        });
    }
    c.err("batch_norm: 0 channels", bn, || {
        batch_norm(0, bcfg(), vb())?;
        Ok(())
    });
    c.err("BatchNorm::new: running mean of the wrong size", bn, || {
        BatchNorm::new(3, None, Some((t(4), t(3))), BatchNormConfig::default())?;
        Ok(())
    });
    c.err("BatchNorm::new: weight of dtype u32", bn, || {
        let w = td(3, DType::U32);
        BatchNorm::new(3, Some((w.clone(), w)), None, BatchNormConfig::default())?;
        Ok(())
    });
    c.err("BatchNorm forward: wrong channels", bn, || {
        let b = batch_norm(3, bcfg(), vb())?;
        b.forward_t(&t((2, 4, 5)), true)?;
        Ok(())
    });
    c.err("BatchNorm forward: rank 1", bn, || {
        let b = batch_norm(3, bcfg(), vb())?;
        b.forward_t(&t(3), false)?;
        Ok(())
    });
    c.err("BatchNorm forward: u32", bn, || {
        let b = batch_norm(3, bcfg(), vb())?;
        b.forward_t(&td((2, 3, 4), DType::U32), false)?;
        Ok(())
    });
    c.err(
        "BatchNorm forward (train): a single value per channel",
        bn,
        || {
            let b = batch_norm(3, bcfg(), vb())?;
            b.forward_t(&t((1, 3, 1, 1)), true)?;
            Ok(())
        },
    );
    c.val("BatchNorm forward: non-contiguous == reference", || {
        let b = batch_norm(3, bcfg(), vb())?;
        let x = noncontig((2, 3, 4, 5));
        close(
            "train",
            &b.forward_train_eval(&x, false)?,
            &b.forward_reference(&x, false)?,
            1e-5,
        )
    });
    let gnb = "GroupNorm";
    c.err("group_norm layer: groups 0", gnb, || {
        group_norm_layer(0, 4, GroupNormConfig::default(), vb())?;
        Ok(())
    });
    c.err("group_norm layer: groups not dividing", gnb, || {
        group_norm_layer(3, 4, GroupNormConfig::default(), vb())?;
        Ok(())
    });
    c.err("group_norm layer: eps NaN", gnb, || {
        group_norm_layer(2, 4, GroupNormConfig::default().with_eps(f64::NAN), vb())?;
        Ok(())
    });
    c.err("GroupNorm::new: weight of the wrong size", gnb, || {
        GroupNorm::new(2, 4, Some(t(3)), Some(t(4)), GroupNormConfig::default())?;
        Ok(())
    });
    c.err("GroupNorm forward: wrong channels", gnb, || {
        let g = group_norm_layer(2, 4, GroupNormConfig::default(), vb())?;
        g.forward(&t((2, 6, 3)))?;
        Ok(())
    });
    let inb = "InstanceNorm";
    c.err("instance_norm: momentum 2", inb, || {
        let cfg = InstanceNormConfig {
            track_running_stats: true,
            momentum: 2.0,
            ..Default::default()
        };
        instance_norm(3, cfg, vb())?;
        Ok(())
    });
    c.err("instance_norm: eps -1", inb, || {
        let cfg = InstanceNormConfig {
            eps: -1.0,
            ..Default::default()
        };
        instance_norm(3, cfg, vb())?;
        Ok(())
    });
    c.err("InstanceNorm forward: wrong channels", inb, || {
        let cfg = InstanceNormConfig {
            affine: true,
            ..Default::default()
        };
        let n = instance_norm(3, cfg, vb())?;
        n.forward_t(&t((2, 4, 5)), true)?;
        Ok(())
    });
    c.err("InstanceNorm forward: rank 2", inb, || {
        let n = instance_norm(3, InstanceNormConfig::default(), vb())?;
        n.forward_t(&t((2, 3)), true)?;
        Ok(())
    });
    let lnb = "LayerNorm";
    c.err("layer_norm layer: dim 0", lnb, || {
        layer_norm_layer(0, LayerNormConfig::default(), vb())?;
        Ok(())
    });
    c.err("layer_norm layer: eps Inf", lnb, || {
        let cfg = LayerNormConfig {
            eps: f64::INFINITY,
            ..Default::default()
        };
        layer_norm_layer(4, cfg, vb())?;
        Ok(())
    });
    c.err("LayerNorm::new: bias of the wrong size", lnb, || {
        LayerNorm::new(4, Some(t(4)), Some(t(5)), LayerNormConfig::default())?;
        Ok(())
    });
    c.err("LayerNorm forward: wrong last dim", lnb, || {
        let l = layer_norm_layer(4, LayerNormConfig::default(), vb())?;
        l.forward(&t((2, 5)))?;
        Ok(())
    });
    c.val("LayerNorm forward: non-contiguous == contiguous", || {
        let l = layer_norm_layer(4, LayerNormConfig::default(), vb())?;
        let x = t((2, 4, 3)).transpose(1, 2)?;
        close("y", &l.forward(&x)?, &l.forward(&x.contiguous()?)?, 0.0)
    });
    let l2 = "LayerNorm2d";
    c.err("layer_norm2d: eps NaN", l2, || {
        let cfg = LayerNorm2dConfig {
            eps: f64::NAN,
            ..Default::default()
        };
        layer_norm2d(3, cfg, vb())?;
        Ok(())
    });
    c.err("LayerNorm2d forward: rank 3", l2, || {
        let l = layer_norm2d(3, LayerNorm2dConfig::default(), vb())?;
        l.forward(&t((3, 4, 4)))?;
        Ok(())
    });
    c.err("LayerNorm2d forward: wrong channels", l2, || {
        let l = layer_norm2d(3, LayerNorm2dConfig::default(), vb())?;
        l.forward(&t((1, 4, 4, 4)))?;
        Ok(())
    });
    c.val(
        "LayerNorm2d forward: 1x1 spatial, non-contiguous == contiguous",
        || {
            let l = layer_norm2d(3, LayerNorm2dConfig::default(), vb())?;
            let x = t((1, 1, 2, 3)).permute((2, 3, 0, 1))?; // (2, 3, 1, 1)
            close("y", &l.forward(&x)?, &l.forward(&x.contiguous()?)?, 1e-6)
        },
    );
    let rmb = "RmsNorm";
    c.err("rms_norm layer: eps NaN", rmb, || {
        let cfg = RmsNormConfig {
            eps: f64::NAN,
            ..Default::default()
        };
        rms_norm_layer(4, cfg, vb())?;
        Ok(())
    });
    c.err("RmsNorm::new: weight rank 2", rmb, || {
        RmsNorm::new(4, Some(t((1, 4))), RmsNormConfig::default())?;
        Ok(())
    });
    c.err("RmsNorm forward: wrong last dim", rmb, || {
        let l = rms_norm_layer(4, RmsNormConfig::default(), vb())?;
        l.forward(&t((2, 3)))?;
        Ok(())
    });
    let cr = "norm::create";
    for spec in [
        "", "bogus", "group:0", "group:x", "group:3", "batch:2", "group:-1",
    ] {
        c.err(
            &format!("norm::create({spec:?}) with 8 channels"),
            cr,
            move || {
                norm::create(spec, 8, vb())?;
                Ok(())
            },
        );
    }
    c.err("norm::create(\"layer\") with 0 channels", cr, || {
        norm::create("layer", 0, vb())?;
        Ok(())
    });
    c.val("norm::create(\" GROUP : 4 \") parses", || {
        let n = norm::create(" GROUP : 4 ", 8, vb())?;
        ensure(matches!(n, norm::Norm::Group(_)), "not a group norm")
    });
    c.list
}

// ---------------------------------------------------------------------------------------------
// blocks
// ---------------------------------------------------------------------------------------------

/// A module that keeps only the first channel (changes the shape).
fn first_channel(x: &Tensor) -> candle_core::Result<Tensor> {
    x.narrow(1, 0, 1)
}

fn blocks_cases() -> Vec<Case> {
    let mut c = Cases::new("blocks");
    let dp = "DropPath";
    for (name, p) in [
        ("NaN", f32::NAN),
        ("-0.1", -0.1),
        ("1.5", 1.5),
        ("1.0", 1.0),
        ("Inf", f32::INFINITY),
    ] {
        c.err(&format!("DropPath::new({name})"), dp, move || {
            DropPath::new(p)?;
            Ok(())
        });
    }
    c.err("DropPath::from_config: p NaN", dp, || {
        DropPath::from_config(DropPathConfig {
            p: f32::NAN,
            scale_by_keep: false,
        })?;
        Ok(())
    });
    c.err("DropPath apply: scalar input", dp, || {
        DropPath::new(0.5)?.apply(&Tensor::new(1f32, &cpu())?, true)?;
        Ok(())
    });
    c.err("DropPath apply: u32 input", dp, || {
        DropPath::new(0.5)?.apply(&td((2, 3), DType::U32), true)?;
        Ok(())
    });
    c.val(
        "DropPath apply: non-contiguous, eval is the identity",
        || {
            let x = noncontig((2, 3, 4));
            close("y", &DropPath::new(0.5)?.apply(&x, false)?, &x, 0.0)
        },
    );
    c.val(
        "DropPath apply (train): each sample all-zero or scaled by 1/keep",
        || {
            let x = (noncontig((64, 3, 4)).abs()? + 1.0)?; // no zeros
            let y = DropPath::new(0.5)?.apply(&x, true)?;
            let r = (y / x)?.flatten_from(1)?; // 0 or 2 per sample, the same in a row
            let (lo, hi) = (r.min_keepdim(1)?, r.max_keepdim(1)?);
            close("row const", &lo, &hi, 1e-6)?;
            for v in lo.flatten_all()?.to_vec1::<f32>()? {
                ensure(v == 0.0 || (v - 2.0).abs() < 1e-6, format!("ratio {v}"))?;
            }
            Ok(())
        },
    );
    let d2 = "Dropout2d";
    for (name, p) in [("NaN", f32::NAN), ("2.0", 2.0), ("-1", -1.0)] {
        c.err(&format!("Dropout2d::new({name})"), d2, move || {
            Dropout2d::new(p)?;
            Ok(())
        });
    }
    c.err("Dropout2d apply: rank 2 (no spatial dims)", d2, || {
        Dropout2d::new(0.5)?.apply(&t((2, 3)), true)?;
        Ok(())
    });
    c.err("Dropout2d apply: i64", d2, || {
        Dropout2d::new(0.5)?.apply(&td((2, 3, 4, 4), DType::I64), true)?;
        Ok(())
    });
    c.val("Dropout2d apply (train): whole channels dropped", || {
        let x = (t((4, 16, 3, 3)).abs()? + 1.0)?.transpose(2, 3)?;
        let y = Dropout2d::new(0.5)?.apply(&x, true)?;
        let r = (y / x)?.flatten_from(2)?;
        close(
            "channel const",
            &r.min_keepdim(2)?,
            &r.max_keepdim(2)?,
            1e-6,
        )
    });

    c.err("Residual: branch changes the shape", "Residual", || {
        Residual::new(first_channel).forward(&t((2, 3, 4)))?;
        Ok(())
    });
    c.err("PreNorm: branch changes the shape", "PreNorm", || {
        let n = layer_norm_layer(4, LayerNormConfig::default(), vb())?;
        PreNorm::new(n, first_channel).forward(&t((2, 3, 4)))?;
        Ok(())
    });
    c.val("Residual: non-contiguous input == x + f(x)", || {
        let x = noncontig((2, 3, 4));
        let y = Residual::new(|x: &Tensor| x.sqr()).forward(&x)?;
        close("y", &y, &(&x + x.sqr()?)?, 1e-6)
    });
    let ls = "LayerScale";
    c.err("LayerScale::new: gamma rank 2", ls, || {
        LayerScale::new(t((2, 2)), LayerScaleConfig::default())?;
        Ok(())
    });
    c.err("layer_scale: init NaN", ls, || {
        let cfg = LayerScaleConfig {
            init_value: f64::NAN,
            ..Default::default()
        };
        layer_scale(4, cfg, vb())?;
        Ok(())
    });
    c.err("layer_scale: dim 0", ls, || {
        layer_scale(0, LayerScaleConfig::default(), vb())?;
        Ok(())
    });
    c.err("LayerScale forward: wrong last dim", ls, || {
        layer_scale(4, LayerScaleConfig::default(), vb())?.forward(&t((2, 5)))?;
        Ok(())
    });
    c.err(
        "LayerScale forward (channels first): wrong channels",
        ls,
        || {
            let cfg = LayerScaleConfig {
                channels_first: true,
                ..Default::default()
            };
            layer_scale(4, cfg, vb())?.forward(&t((2, 5, 3, 3)))?;
            Ok(())
        },
    );

    let bb = "BasicBlock";
    let rc = ResBlockConfig::default;
    c.err("basic_block: 0 in-channels", bb, move || {
        basic_block(0, 4, rc(), vb())?;
        Ok(())
    });
    c.err("basic_block: stride 0", bb, move || {
        basic_block(4, 4, ResBlockConfig { stride: 0, ..rc() }, vb())?;
        Ok(())
    });
    c.err("basic_block: groups 2", bb, move || {
        basic_block(4, 4, ResBlockConfig { groups: 2, ..rc() }, vb())?;
        Ok(())
    });
    c.err("basic_block: unknown norm", bb, move || {
        let cfg = ResBlockConfig {
            norm: "bogus".into(),
            ..rc()
        };
        basic_block(4, 4, cfg, vb())?;
        Ok(())
    });
    c.err("basic_block: drop_path 1.5", bb, move || {
        basic_block(
            4,
            4,
            ResBlockConfig {
                drop_path: 1.5,
                ..rc()
            },
            vb(),
        )?;
        Ok(())
    });
    c.err("BasicBlock forward: wrong channels", bb, move || {
        basic_block(4, 4, rc(), vb())?.forward_t(&t((1, 3, 5, 5)), false)?;
        Ok(())
    });
    c.val(
        "BasicBlock forward: non-contiguous == contiguous",
        move || {
            let b = basic_block(3, 4, ResBlockConfig { stride: 2, ..rc() }, vb())?;
            let x = noncontig((2, 3, 5, 6));
            close(
                "y",
                &b.forward_t(&x, false)?,
                &b.forward_t(&x.contiguous()?, false)?,
                1e-5,
            )
        },
    );
    let bt = "Bottleneck";
    c.err("bottleneck: planes 0", bt, move || {
        bottleneck(4, 0, rc(), vb())?;
        Ok(())
    });
    c.err("bottleneck: groups 0", bt, move || {
        bottleneck(4, 4, ResBlockConfig { groups: 0, ..rc() }, vb())?;
        Ok(())
    });
    c.err("bottleneck: dilation 0", bt, move || {
        bottleneck(
            4,
            4,
            ResBlockConfig {
                dilation: 0,
                ..rc()
            },
            vb(),
        )?;
        Ok(())
    });
    c.err("Bottleneck forward: wrong channels", bt, move || {
        bottleneck(16, 4, rc(), vb())?.forward_t(&t((1, 8, 4, 4)), false)?;
        Ok(())
    });
    let db = "DownBlock";
    c.err("down_block: 0 out-channels", db, || {
        down_block(4, 0, DownBlockConfig::default(), vb())?;
        Ok(())
    });
    c.err("down_block: group norm not dividing", db, || {
        let cfg = DownBlockConfig {
            norm: "group:3".into(),
            ..Default::default()
        };
        down_block(4, 8, cfg, vb())?;
        Ok(())
    });
    c.err("DownBlock forward: wrong channels", db, || {
        let d = down_block(4, 8, DownBlockConfig::default(), vb())?;
        d.forward_t(&t((1, 3, 8, 8)), false)?;
        Ok(())
    });
    c.err("DownBlock forward: 1x1 input with downsampling", db, || {
        let cfg = DownBlockConfig {
            downsample: true,
            ..Default::default()
        };
        let d = down_block(4, 8, cfg, vb())?;
        d.forward_t(&t((1, 4, 1, 1)), false)?;
        Ok(())
    });
    let ub = "UpBlock";
    c.err("up_block: 0 skip-channels", ub, || {
        up_block(8, 0, 8, UpBlockConfig::default(), vb())?;
        Ok(())
    });
    c.err("UpBlock forward: skip of the wrong channels", ub, || {
        let u = up_block(8, 8, 8, UpBlockConfig::default(), vb())?;
        u.forward_t(&t((1, 8, 4, 4)), &t((1, 4, 8, 8)), false)?;
        Ok(())
    });
    c.err("UpBlock forward: skip of a different batch", ub, || {
        let u = up_block(8, 8, 8, UpBlockConfig::default(), vb())?;
        u.forward_t(&t((1, 8, 4, 4)), &t((2, 8, 8, 8)), false)?;
        Ok(())
    });
    c.err("UpBlock forward: x of the wrong channels", ub, || {
        let u = up_block(8, 8, 8, UpBlockConfig::default(), vb())?;
        u.forward_t(&t((1, 4, 4, 4)), &t((1, 8, 8, 8)), false)?;
        Ok(())
    });

    let ms = "multiscale";
    let stack = || ConvStackConfig {
        spatial_dims: 2,
        widths: vec![4],
        kernel_size: 3,
        norm: "none".into(),
    };
    c.err("multi_scale_pathways: factor 0", ms, move || {
        let cfg = MultiScaleConfig {
            factor: 0,
            ..Default::default()
        };
        multi_scale_pathways(2, &stack(), cfg, vb())?;
        Ok(())
    });
    c.err("conv_stack: no widths", "ConvStack", move || {
        let cfg = ConvStackConfig {
            widths: vec![],
            ..stack()
        };
        conv_stack(2, &cfg, vb())?;
        Ok(())
    });
    c.err("conv_stack: 4 spatial dims", "ConvStack", move || {
        let cfg = ConvStackConfig {
            spatial_dims: 4,
            ..stack()
        };
        conv_stack(2, &cfg, vb())?;
        Ok(())
    });
    c.err("conv_stack: even kernel", "ConvStack", move || {
        let cfg = ConvStackConfig {
            kernel_size: 2,
            ..stack()
        };
        conv_stack(2, &cfg, vb())?;
        Ok(())
    });
    c.err(
        "MultiScalePathways forward: input smaller than the factor",
        ms,
        move || {
            let m = multi_scale_pathways(2, &stack(), MultiScaleConfig::default(), vb())?;
            m.forward_t(&t((1, 2, 2, 2)), false)?;
            Ok(())
        },
    );
    // The error names the inner stage that received the input.
    c.err(
        "MultiScalePathways forward: wrong channels",
        "ConvStack",
        move || {
            let m = multi_scale_pathways(2, &stack(), MultiScaleConfig::default(), vb())?;
            m.forward_t(&t((1, 3, 6, 6)), false)?;
            Ok(())
        },
    );
    c.err(
        "MultiScalePathways::new: sum of different widths",
        ms,
        move || {
            let full = conv_stack(2, &stack(), vb())?;
            let low = conv_stack(
                2,
                &ConvStackConfig {
                    widths: vec![3],
                    ..stack()
                },
                vb(),
            )?;
            let cfg = MultiScaleConfig {
                fusion: candle_tricks::blocks::multiscale::PathwayFusion::Sum,
                ..Default::default()
            };
            let m = MultiScalePathways::new(full, low, cfg)?;
            m.forward_t(&t((1, 2, 6, 6)), false)?;
            Ok(())
        },
    );
    let dn = "downsample_avg";
    c.err("downsample_avg: factor 0", dn, || {
        downsample_avg(&t((1, 2, 4, 4)), 0)?;
        Ok(())
    });
    c.err("downsample_avg: rank 2", dn, || {
        downsample_avg(&t((4, 4)), 2)?;
        Ok(())
    });
    c.val("downsample_avg: rank 3 (1-D) == hand value", || {
        let x = Tensor::new(&[[[1f32, 3., 5., 7., 9.]]], &cpu())?;
        let y = downsample_avg(&x, 2)?;
        close("y", &y, &Tensor::new(&[[[2f32, 6., 9.]]], &cpu())?, 1e-6)
    });
    c.err("downsample_avg: u32", dn, || {
        downsample_avg(&td((1, 2, 4, 4), DType::U32), 2)?;
        Ok(())
    });
    c.either(
        "downsample_avg: size not divisible by the factor",
        dn,
        || {
            let x = t((1, 1, 5, 4));
            let y = downsample_avg(&x, 2)?;
            // Ceil mode: the last row averages what it has (as `avg_pool(ceil_mode=True)`).
            let (h, w) = (y.dim(2)?, y.dim(3)?);
            ensure(
                (h, w) == (3, 2) || (h, w) == (2, 2),
                format!("shape {:?}", y.dims()),
            )
        },
    );
    c.val("downsample_avg: non-contiguous == contiguous", || {
        let x = noncontig((1, 2, 6, 4));
        close(
            "y",
            &downsample_avg(&x, 2)?,
            &downsample_avg(&x.contiguous()?, 2)?,
            0.0,
        )
    });
    c.err("upsample_nearest: factor 0", "upsample_nearest", || {
        upsample_nearest(&t((1, 2, 4, 4)), 0)?;
        Ok(())
    });

    let ee = "EarlyExit";
    let lin = |i: usize, o: usize| candle_nn::linear(i, o, vb()).unwrap();
    c.err("EarlyExit::new: heads != stages", ee, move || {
        EarlyExit::new(
            vec![lin(4, 4)],
            vec![lin(4, 3), lin(4, 3)],
            EarlyExitConfig::default(),
        )?;
        Ok(())
    });
    c.err("EarlyExit::new: no stages", ee, move || {
        EarlyExit::<candle_nn::Linear, candle_nn::Linear>::new(
            vec![],
            vec![],
            EarlyExitConfig::default(),
        )?;
        Ok(())
    });
    c.err("EarlyExit::new: threshold NaN", ee, move || {
        let cfg = EarlyExitConfig {
            threshold: f64::NAN,
            ..Default::default()
        };
        EarlyExit::new(vec![lin(4, 4)], vec![lin(4, 3)], cfg)?;
        Ok(())
    });
    c.err(
        "EarlyExit forward: heads of different class counts",
        ee,
        move || {
            let e = EarlyExit::new(
                vec![lin(4, 4), lin(4, 4)],
                vec![lin(4, 3), lin(4, 5)],
                EarlyExitConfig::default(),
            )?;
            e.forward_all(&t((2, 4)), false)?;
            Ok(())
        },
    );
    c.err(
        "early_exit_loss: weights of the wrong length",
        "early_exit_loss",
        || {
            let targets = Tensor::new(&[0u32, 1], &cpu())?;
            early_exit_loss(&[t((2, 3)), t((2, 3))], &targets, &[1.0])?;
            Ok(())
        },
    );
    c.err("early_exit_loss: no exits", "early_exit_loss", || {
        let targets = Tensor::new(&[0u32, 1], &cpu())?;
        early_exit_loss(&[], &targets, &[])?;
        Ok(())
    });
    c.err("early_exit_loss: NaN weight", "early_exit_loss", || {
        let targets = Tensor::new(&[0u32, 1], &cpu())?;
        early_exit_loss(&[t((2, 3))], &targets, &[f64::NAN])?;
        Ok(())
    });
    c.err(
        "early_exit_loss: target out of range",
        "early_exit_loss",
        || {
            let targets = Tensor::new(&[0u32, 7], &cpu())?;
            early_exit_loss(&[t((2, 3))], &targets, &[1.0])?;
            Ok(())
        },
    );
    c.err("exit_confidence: rank-3 logits", "EarlyExit", || {
        exit_confidence(&t((2, 3, 4)), ExitCriterion::MaxProb)?;
        Ok(())
    });
    c.list
}

// ---------------------------------------------------------------------------------------------
// attention
// ---------------------------------------------------------------------------------------------

fn attention_cases() -> Vec<Case> {
    let mut c = Cases::new("attention");
    let mha = "MultiHeadAttention";
    let mc = MhaConfig::new;
    c.err("mha: 0 heads", mha, move || {
        multi_head_attention(8, mc(0), vb())?;
        Ok(())
    });
    c.err("mha: embed not divisible by heads", mha, move || {
        multi_head_attention(8, mc(3), vb())?;
        Ok(())
    });
    c.err("mha: kv heads not dividing heads", mha, move || {
        let cfg = MhaConfig {
            num_kv_heads: Some(3),
            ..mc(4)
        };
        multi_head_attention(8, cfg, vb())?;
        Ok(())
    });
    c.err("mha: dropout 1.5", mha, move || {
        let cfg = MhaConfig {
            dropout: 1.5,
            ..mc(2)
        };
        multi_head_attention(8, cfg, vb())?;
        Ok(())
    });
    c.err("mha: dropout NaN", mha, move || {
        let cfg = MhaConfig {
            dropout: f64::NAN,
            ..mc(2)
        };
        multi_head_attention(8, cfg, vb())?;
        Ok(())
    });
    c.err("mha: kdim 0", mha, move || {
        let cfg = MhaConfig {
            kdim: Some(0),
            ..mc(2)
        };
        multi_head_attention(8, cfg, vb())?;
        Ok(())
    });
    c.err("mha: embed 0", mha, move || {
        multi_head_attention(0, mc(1), vb())?;
        Ok(())
    });
    c.err("MHA forward: wrong embed dim", mha, move || {
        let m = multi_head_attention(8, mc(2), vb())?;
        m.forward(&t((1, 3, 6)))?;
        Ok(())
    });
    c.err("MHA forward: rank 2", mha, move || {
        let m = multi_head_attention(8, mc(2), vb())?;
        m.forward(&t((3, 8)))?;
        Ok(())
    });
    c.err(
        "MHA forward_t: key and value lengths differ",
        mha,
        move || {
            let m = multi_head_attention(8, mc(2), vb())?;
            let q = t((1, 3, 8));
            m.forward_t(
                &q,
                &t((1, 4, 8)),
                &t((1, 5, 8)),
                &AttentionMask::None,
                false,
            )?;
            Ok(())
        },
    );
    c.err("MHA forward_t: f16 key", mha, move || {
        let m = multi_head_attention(8, mc(2), vb())?;
        let q = t((1, 3, 8));
        let k = td((1, 3, 8), DType::F16);
        m.forward_t(&q, &k, &k, &AttentionMask::None, false)?;
        Ok(())
    });
    c.err(
        "MHA forward_cached: batch changes between calls",
        mha,
        move || {
            let m = multi_head_attention(8, mc(2), vb())?;
            let mut cache = KvCache::new();
            m.forward_cached(&t((1, 2, 8)), &mut cache, true)?;
            m.forward_cached(&t((2, 1, 8)), &mut cache, true)?;
            Ok(())
        },
    );
    c.err("MHA forward_cached: wrong embed dim", mha, move || {
        let m = multi_head_attention(8, mc(2), vb())?;
        m.forward_cached(&t((1, 2, 6)), &mut KvCache::new(), true)?;
        Ok(())
    });
    c.err(
        "MHA forward_cached: cache filled by a different model",
        mha,
        move || {
            let m = multi_head_attention(8, mc(2), vb())?;
            let other = multi_head_attention(12, mc(3), vb())?;
            let mut cache = KvCache::new();
            other.forward_cached(&t((1, 2, 12)), &mut cache, true)?;
            m.forward_cached(&t((1, 1, 8)), &mut cache, true)?;
            Ok(())
        },
    );
    c.val(
        "MHA forward_cached: token by token == full causal",
        move || {
            let m = multi_head_attention(8, mc(2), vb())?;
            let x = noncontig((1, 4, 8));
            let full = m.forward_t(&x, &x, &x, &AttentionMask::Causal { kv_offset: 0 }, false)?;
            let mut cache = KvCache::new();
            let mut outs = Vec::new();
            for i in 0..4 {
                outs.push(m.forward_cached(&x.narrow(1, i, 1)?, &mut cache, true)?);
            }
            close("y", &Tensor::cat(&outs, 1)?, &full, 1e-5)
        },
    );

    let sin = "SinusoidalPositionalEncoding";
    c.err("sinusoidal: max_len 0", sin, || {
        SinusoidalPositionalEncoding::new(0, 8, DType::F32, &cpu())?;
        Ok(())
    });
    c.err("sinusoidal: dtype u32", sin, || {
        SinusoidalPositionalEncoding::new(4, 8, DType::U32, &cpu())?;
        Ok(())
    });
    c.err(
        "sinusoidal forward: sequence longer than max_len",
        sin,
        || {
            let p = SinusoidalPositionalEncoding::new(4, 8, DType::F32, &cpu())?;
            p.forward(&t((1, 5, 8)))?;
            Ok(())
        },
    );
    c.err("sinusoidal forward_at: offset past max_len", sin, || {
        let p = SinusoidalPositionalEncoding::new(4, 8, DType::F32, &cpu())?;
        p.forward_at(&t((1, 2, 8)), 3)?;
        Ok(())
    });
    c.err("sinusoidal forward: wrong dim", sin, || {
        let p = SinusoidalPositionalEncoding::new(4, 8, DType::F32, &cpu())?;
        p.forward(&t((1, 2, 6)))?;
        Ok(())
    });
    let lp = "LearnedPositionalEmbedding";
    c.err("learned: weight rank 1", lp, || {
        LearnedPositionalEmbedding::new(t(8))?;
        Ok(())
    });
    c.err("learned forward: too long", lp, || {
        LearnedPositionalEmbedding::new(t((4, 8)))?.forward(&t((1, 5, 8)))?;
        Ok(())
    });
    let rope = "RotaryEmbedding";
    c.err("rope: odd head_dim", rope, || {
        RotaryEmbedding::new(7, 16, 10_000.0, DType::F32, &cpu())?;
        Ok(())
    });
    for (name, base) in [("NaN", f64::NAN), ("0", 0.0), ("-1", -1.0), ("1", 1.0)] {
        c.err(&format!("rope: base (theta) {name}"), rope, move || {
            RotaryEmbedding::new(8, 16, base, DType::F32, &cpu())?;
            Ok(())
        });
    }
    c.err("rope rotate: offset past max_len", rope, || {
        let r = RotaryEmbedding::new(8, 4, 10_000.0, DType::F32, &cpu())?;
        r.rotate(&t((1, 2, 3, 8)), 2)?;
        Ok(())
    });
    c.err("rope apply: q and k head dims differ", rope, || {
        let r = RotaryEmbedding::new(8, 16, 10_000.0, DType::F32, &cpu())?;
        r.apply(&t((1, 2, 3, 8)), &t((1, 2, 3, 6)), 0)?;
        Ok(())
    });
    c.err("rope rotate: f16 input, f32 table", rope, || {
        let r = RotaryEmbedding::new(8, 16, 10_000.0, DType::F32, &cpu())?;
        r.rotate(&td((1, 2, 3, 8), DType::F16), 0)?;
        Ok(())
    });
    c.val("rope rotate: non-contiguous == contiguous", || {
        let r = RotaryEmbedding::new(8, 16, 10_000.0, DType::F32, &cpu())?;
        let x = t((1, 3, 2, 8)).transpose(1, 2)?;
        close("y", &r.rotate(&x, 1)?, &r.rotate(&x.contiguous()?, 1)?, 0.0)
    });

    let la = "LocalAttention";
    c.err("local_attention: window 0", la, || {
        local_attention(8, LocalAttentionConfig::new(MhaConfig::new(2), 0), vb())?;
        Ok(())
    });
    // Names the inner attention that checks the input.
    c.err("LocalAttention forward: wrong dim", mha, || {
        let l = local_attention(8, LocalAttentionConfig::new(MhaConfig::new(2), 2), vb())?;
        l.forward(&t((1, 4, 6)))?;
        Ok(())
    });
    let ax = "AxialAttention";
    c.err("AxialAttention forward: rank 3", ax, || {
        axial_attention(4, MhaConfig::new(2), vb())?.forward(&t((4, 3, 3)))?;
        Ok(())
    });
    c.err("AxialAttention forward: wrong channels", ax, || {
        axial_attention(4, MhaConfig::new(2), vb())?.forward(&t((1, 6, 3, 3)))?;
        Ok(())
    });
    c.val(
        "AxialAttention forward: 1x1 map, non-contiguous == contiguous",
        || {
            let a = axial_attention(4, MhaConfig::new(2), vb())?;
            let x = t((1, 1, 2, 4)).permute((2, 3, 0, 1))?; // (2, 4, 1, 1)
            close("y", &a.forward(&x)?, &a.forward(&x.contiguous()?)?, 1e-6)
        },
    );
    let lf = "LinformerAttention";
    c.err("linformer: k 0", lf, || {
        linformer_attention(8, LinformerConfig::new(MhaConfig::new(2), 0, 16), vb())?;
        Ok(())
    });
    c.err("linformer: max_len 0", lf, || {
        linformer_attention(8, LinformerConfig::new(MhaConfig::new(2), 4, 0), vb())?;
        Ok(())
    });
    c.err("Linformer forward: longer than max_len", lf, || {
        let l = linformer_attention(8, LinformerConfig::new(MhaConfig::new(2), 4, 8), vb())?;
        l.forward(&t((1, 9, 8)))?;
        Ok(())
    });
    let tl = "TransformerEncoderLayer";
    let tc = || TransformerEncoderLayerConfig::new(2, 16);
    for (name, cfg) in [
        ("0 heads", TransformerEncoderLayerConfig::new(0, 16)),
        (
            "dim_feedforward 0",
            TransformerEncoderLayerConfig::new(2, 0),
        ),
        (
            "dropout 1.5",
            TransformerEncoderLayerConfig {
                dropout: 1.5,
                ..tc()
            },
        ),
        (
            "attn_dropout NaN",
            TransformerEncoderLayerConfig {
                attn_dropout: f64::NAN,
                ..tc()
            },
        ),
        (
            "layer_norm_eps NaN",
            TransformerEncoderLayerConfig {
                layer_norm_eps: f64::NAN,
                ..tc()
            },
        ),
        (
            "drop_path -1",
            TransformerEncoderLayerConfig {
                drop_path: -1.0,
                ..tc()
            },
        ),
        (
            "layer_scale NaN",
            TransformerEncoderLayerConfig {
                layer_scale: Some(f64::NAN),
                ..tc()
            },
        ),
    ] {
        c.err(
            &format!("transformer_encoder_layer: {name}"),
            tl,
            move || {
                transformer_encoder_layer(8, cfg, vb())?;
                Ok(())
            },
        );
    }
    c.err(
        "TransformerEncoderLayer forward: wrong dim",
        tl,
        move || {
            let l = transformer_encoder_layer(8, tc(), vb())?;
            l.forward_t(&t((1, 3, 6)), &AttentionMask::None, false)?;
            Ok(())
        },
    );
    c.err(
        "TransformerEncoderLayer forward: mask of the wrong shape",
        "",
        move || {
            let l = transformer_encoder_layer(8, tc(), vb())?;
            let m = AttentionMask::Additive(t((2, 2)));
            l.forward_t(&t((1, 3, 8)), &m, false)?;
            Ok(())
        },
    );
    c.err(
        "transformer_encoder: 0 layers",
        "TransformerEncoder",
        move || {
            transformer_encoder(8, TransformerEncoderConfig::new(tc(), 0), vb())?;
            Ok(())
        },
    );
    c.val(
        "TransformerEncoder forward: non-contiguous == contiguous",
        move || {
            let e = transformer_encoder(8, TransformerEncoderConfig::new(tc(), 2), vb())?;
            let x = t((1, 8, 3)).transpose(1, 2)?;
            let m = AttentionMask::None;
            close(
                "y",
                &e.forward_t(&x, &m, false)?,
                &e.forward_t(&x.contiguous()?, &m, false)?,
                1e-5,
            )
        },
    );
    let pe = "PatchEmbed";
    c.err("patch_embed: patch 0", pe, || {
        patch_embed(8, PatchEmbedConfig::new(0, 3), vb())?;
        Ok(())
    });
    c.err("patch_embed: 0 in-channels", pe, || {
        patch_embed(8, PatchEmbedConfig::new(4, 0), vb())?;
        Ok(())
    });
    c.err(
        "PatchEmbed forward: image not divisible by the patch",
        pe,
        || {
            patch_embed(8, PatchEmbedConfig::new(4, 3), vb())?.forward(&t((1, 3, 6, 8)))?;
            Ok(())
        },
    );
    c.err("PatchEmbed forward: wrong channels", pe, || {
        patch_embed(8, PatchEmbedConfig::new(4, 3), vb())?.forward(&t((1, 1, 8, 8)))?;
        Ok(())
    });
    let ve = "VitEmbedding";
    c.err(
        "vit_embedding: image not divisible by the patch",
        pe,
        || {
            vit_embedding((10, 8), 8, PatchEmbedConfig::new(4, 3), vb())?;
            Ok(())
        },
    );
    c.err("VitEmbedding forward: another image size", ve, || {
        let v = vit_embedding((8, 8), 8, PatchEmbedConfig::new(4, 3), vb())?;
        v.forward_t(&t((1, 3, 12, 8)), false)?;
        Ok(())
    });
    c.err("hybrid_vit_embedding: no stem channels", "ConvStem", || {
        hybrid_vit_embedding((8, 8), 8, ConvStemConfig::new(3, vec![]), vb())?;
        Ok(())
    });
    let se = "SqueezeExcite";
    for (name, r) in [("NaN", f64::NAN), ("0", 0.0), ("-0.25", -0.25)] {
        c.err(&format!("squeeze_excite: rd_ratio {name}"), se, move || {
            let cfg = SqueezeExciteConfig {
                rd_ratio: r,
                rd_channels: None,
                ..Default::default()
            };
            squeeze_excite(8, cfg, vb())?;
            Ok(())
        });
    }
    c.err("squeeze_excite: rd_divisor 0", se, || {
        let cfg = SqueezeExciteConfig {
            rd_divisor: 0,
            rd_channels: None,
            ..Default::default()
        };
        squeeze_excite(8, cfg, vb())?;
        Ok(())
    });
    c.err("SqueezeExcite forward: wrong channels", se, || {
        squeeze_excite(8, SqueezeExciteConfig::default(), vb())?.forward(&t((1, 4, 3, 3)))?;
        Ok(())
    });
    let cb = "Cbam";
    c.err("cbam: even spatial kernel", cb, || {
        let cfg = CbamConfig {
            spatial_kernel: 4,
            ..Default::default()
        };
        cbam(8, cfg, vb())?;
        Ok(())
    });
    c.err("cbam: spatial kernel 0", cb, || {
        let cfg = CbamConfig {
            spatial_kernel: 0,
            ..Default::default()
        };
        cbam(8, cfg, vb())?;
        Ok(())
    });
    c.err("Cbam forward: wrong channels", cb, || {
        cbam(8, CbamConfig::default(), vb())?.forward(&t((1, 4, 5, 5)))?;
        Ok(())
    });
    c.err("Cbam forward: rank 3", cb, || {
        cbam(8, CbamConfig::default(), vb())?.forward(&t((8, 5, 5)))?;
        Ok(())
    });
    c.val(
        "Cbam forward: 1x1 map, non-contiguous == contiguous",
        || {
            let m = cbam(8, CbamConfig::default(), vb())?;
            let x = t((1, 1, 2, 8)).permute((2, 3, 0, 1))?;
            close("y", &m.forward(&x)?, &m.forward(&x.contiguous()?)?, 1e-6)
        },
    );
    c.list
}

// ---------------------------------------------------------------------------------------------
// ssm
// ---------------------------------------------------------------------------------------------

fn ssm_cases() -> Vec<Case> {
    let mut c = Cases::new("ssm");
    let mb = "MambaBlock";
    let m = || MambaConfig::new(8);
    for (name, cfg) in [
        ("d_model 0", MambaConfig::new(0)),
        ("d_state 0", MambaConfig { d_state: 0, ..m() }),
        ("d_conv 0", MambaConfig { d_conv: 0, ..m() }),
        ("expand 0", MambaConfig { expand: 0, ..m() }),
        (
            "dt_rank 0",
            MambaConfig {
                dt_rank: Some(0),
                ..m()
            },
        ),
        (
            "dt_min > dt_max",
            MambaConfig {
                dt_min: 0.1,
                dt_max: 0.01,
                ..m()
            },
        ),
        (
            "dt_min NaN",
            MambaConfig {
                dt_min: f64::NAN,
                ..m()
            },
        ),
        (
            "dt_max Inf",
            MambaConfig {
                dt_max: f64::INFINITY,
                ..m()
            },
        ),
        (
            "dt_init_floor -1",
            MambaConfig {
                dt_init_floor: -1.0,
                ..m()
            },
        ),
    ] {
        c.err(&format!("mamba_block: {name}"), mb, move || {
            mamba_block(cfg, vb())?;
            Ok(())
        });
    }
    c.err("MambaBlock forward: wrong d_model", mb, move || {
        mamba_block(m(), vb())?.forward(&t((1, 4, 6)))?;
        Ok(())
    });
    c.err("MambaBlock forward: rank 2", mb, move || {
        mamba_block(m(), vb())?.forward(&t((4, 8)))?;
        Ok(())
    });
    c.err("MambaBlock forward: u32", mb, move || {
        mamba_block(m(), vb())?.forward(&td((1, 4, 8), DType::U32))?;
        Ok(())
    });
    c.err("MambaBlock step: state of another batch", mb, move || {
        let b = mamba_block(m(), vb())?;
        let mut s = b.zero_state(2)?;
        b.step(&t((1, 8)), &mut s)?;
        Ok(())
    });
    c.err(
        "MambaBlock step: conv state of the wrong shape",
        mb,
        move || {
            let b = mamba_block(m(), vb())?;
            let s0 = b.zero_state(1)?;
            let mut s = MambaState {
                conv: t((1, 16, 7)),
                ssm: s0.ssm,
            };
            b.step(&t((1, 8)), &mut s)?;
            Ok(())
        },
    );
    c.err("MambaBlock step: ssm state of dtype f16", mb, move || {
        let b = mamba_block(m(), vb())?;
        let s0 = b.zero_state(1)?;
        let mut s = MambaState {
            conv: s0.conv,
            ssm: s0.ssm.to_dtype(DType::F16)?,
        };
        b.step(&t((1, 8)), &mut s)?;
        Ok(())
    });
    c.err("MambaBlock step: input of the wrong width", mb, move || {
        let b = mamba_block(m(), vb())?;
        let mut s = b.zero_state(1)?;
        b.step(&t((1, 6)), &mut s)?;
        Ok(())
    });
    c.val(
        "MambaBlock: non-contiguous forward == contiguous, == step by step",
        move || {
            let b = mamba_block(m(), vb())?;
            let x = t((1, 8, 5)).transpose(1, 2)?; // (1, 5, 8)
            let y = b.forward(&x)?;
            close("y", &y, &b.forward(&x.contiguous()?)?, 0.0)?;
            let mut s = b.zero_state(1)?;
            let steps = (0..5)
                .map(|i| b.step(&x.i((.., i, ..))?, &mut s))
                .collect::<candle_tricks::Result<Vec<_>>>()?;
            close("steps", &Tensor::stack(&steps, 1)?, &y, 1e-4)
        },
    );
    let mm = "MambaModel";
    let mmc = move || MambaModelConfig::new(16, 1, m());
    for (name, cfg) in [
        ("vocab 0", MambaModelConfig::new(0, 1, MambaConfig::new(8))),
        (
            "n_layer 0",
            MambaModelConfig::new(16, 0, MambaConfig::new(8)),
        ),
        (
            "norm_eps NaN",
            MambaModelConfig {
                norm_eps: f64::NAN,
                ..MambaModelConfig::new(16, 1, MambaConfig::new(8))
            },
        ),
    ] {
        c.err(&format!("mamba_model: {name}"), mm, move || {
            mamba_model(cfg, vb())?;
            Ok(())
        });
    }
    c.err(
        "MambaModel forward: token id out of the vocabulary",
        mm,
        move || {
            let model = mamba_model(mmc(), vb())?;
            model.forward(&Tensor::new(&[[1u32, 16]], &cpu())?)?;
            Ok(())
        },
    );
    c.err("MambaModel forward: f32 ids", mm, move || {
        mamba_model(mmc(), vb())?.forward(&t((1, 3)))?;
        Ok(())
    });
    c.err("MambaModel forward: rank-3 ids", mm, move || {
        let model = mamba_model(mmc(), vb())?;
        model.forward(&Tensor::zeros((1, 2, 3), DType::U32, &cpu())?)?;
        Ok(())
    });
    c.err("MambaModel step: state of another batch", mb, move || {
        let model = mamba_model(mmc(), vb())?;
        let mut s = model.zero_state(3)?;
        model.step(&Tensor::new(&[1u32], &cpu())?, &mut s)?;
        Ok(())
    });
    c.err("MambaModel generate: empty prompt", mm, move || {
        let model = mamba_model(mmc(), vb())?;
        let p = Tensor::zeros((1, 0), DType::U32, &cpu())?;
        model.generate(&p, 2, candle_tricks::ssm::Sampling::Greedy)?;
        Ok(())
    });
    c.list
}

// ---------------------------------------------------------------------------------------------
// optim
// ---------------------------------------------------------------------------------------------

/// A state dict of `opt` after one step, with `key` replaced by `value` (or removed for `None`).
fn edited_state<O: Optimizer + OptimizerState>(
    opt: &mut O,
    g: &candle_core::backprop::GradStore,
    key: &str,
    value: Option<f64>,
) -> Result<HashMap<String, Tensor>, Got> {
    opt.step(g)?;
    let mut sd = opt.state_dict()?;
    if !sd.contains_key(key) {
        return Err(Got::Wrong(format!(
            "no `{key}` in the state dict: {:?}",
            sd.keys().collect::<Vec<_>>()
        )));
    }
    match value {
        Some(v) => {
            let old = &sd[key];
            let nt = Tensor::full(v, old.shape(), &cpu())?.to_dtype(old.dtype())?;
            sd.insert(key.to_string(), nt);
        }
        None => {
            sd.remove(key);
        }
    }
    Ok(sd)
}

macro_rules! optimizer_cases {
    ($c:ident, $T:ident, $C:ident, $name:literal, $bad_cfgs:expr $(,)?) => {{
        let name: &'static str = $name;
        let bad: Vec<(&str, $C)> = $bad_cfgs;
        for (what, cfg) in bad {
            $c.err(&format!("{name}: config {what}"), name, move || {
                let (w, _) = var_and_grads();
                $T::new(vec![w], cfg)?;
                Ok(())
            });
        }
        for (what, lr) in [("NaN", f64::NAN), ("Inf", f64::INFINITY), ("-1", -1.0)] {
            $c.err(
                &format!("{name}: set_learning_rate({what}) then step"),
                name,
                move || {
                    let (w, g) = var_and_grads();
                    let before = w.as_tensor().copy()?;
                    let mut o = $T::new(vec![w.clone()], $C::default())?;
                    o.set_learning_rate(lr);
                    let r = o.step(&g);
                    // Refused without touching the weights.
                    close("weights", w.as_tensor(), &before, 0.0)?;
                    r?;
                    Ok(())
                },
            );
            $c.err(
                &format!("{name}: try_set_learning_rate({what})"),
                name,
                move || {
                    let (w, _) = var_and_grads();
                    let mut o = $T::new(vec![w], $C::default())?;
                    o.try_set_learning_rate(lr)?;
                    Ok(())
                },
            );
        }
        $c.err(&format!("{name}: f64 parameter"), name, move || {
            let w = Var::from_tensor(&td((2, 2), DType::F64))?;
            $T::new(vec![w], $C::default())?;
            Ok(())
        });
        $c.err(&format!("{name}: u32 parameter"), name, move || {
            let w = Var::from_tensor(&td((2, 2), DType::U32))?;
            $T::new(vec![w], $C::default())?;
            Ok(())
        });
        $c.err(
            &format!("{name}: a var in two param groups"),
            name,
            move || {
                let (w, _) = var_and_grads();
                let groups = ParamGroups::new(vec![
                    ParamGroup::new(vec![w.clone()]),
                    ParamGroup::new(vec![w]).with_lr_mult(0.1),
                ]);
                $T::with_groups(groups, $C::default())?;
                Ok(())
            },
        );
        $c.err(
            &format!("{name}: param group lr_mult NaN"),
            name,
            move || {
                let (w, _) = var_and_grads();
                let groups =
                    ParamGroups::new(vec![ParamGroup::new(vec![w]).with_lr_mult(f64::NAN)]);
                $T::with_groups(groups, $C::default())?;
                Ok(())
            },
        );
        $c.err(
            &format!("{name}: load_state_dict with a missing step"),
            name,
            move || {
                let (w, g) = var_and_grads();
                let mut o = $T::new(vec![w], $C::default())?;
                let sd = edited_state(&mut o, &g, "0.step", None)?;
                o.load_state_dict(&sd)?;
                Ok(())
            },
        );
        $c.err(
            &format!("{name}: load_state_dict with a negative step"),
            name,
            move || {
                let (w, g) = var_and_grads();
                let mut o = $T::new(vec![w], $C::default())?;
                let sd = edited_state(&mut o, &g, "0.step", Some(-3.0))?;
                o.load_state_dict(&sd)?;
                Ok(())
            },
        );
        $c.err(
            &format!("{name}: load_state_dict with a NaN step"),
            name,
            move || {
                let (w, g) = var_and_grads();
                let mut o = $T::new(vec![w], $C::default())?;
                let sd = edited_state(&mut o, &g, "0.step", Some(f64::NAN))?;
                o.load_state_dict(&sd)?;
                Ok(())
            },
        );
        $c.err(
            &format!("{name}: load_state_dict from another model"),
            name,
            move || {
                let (w, g) = var_and_grads();
                let mut o = $T::new(vec![w], $C::default())?;
                o.step(&g)?;
                let sd = o.state_dict()?;
                let other = Var::from_tensor(&t((2, 3)))?;
                let other2 = Var::from_tensor(&t(5))?;
                let mut o2 = $T::new(vec![other, other2], $C::default())?;
                o2.load_state_dict(&sd)?;
                Ok(())
            },
        );
        $c.err(
            &format!("{name}: load_state_dict of an empty map"),
            name,
            move || {
                let (w, _) = var_and_grads();
                let mut o = $T::new(vec![w], $C::default())?;
                o.load_state_dict(&HashMap::new())?;
                Ok(())
            },
        );
        $c.err(&format!("{name}: NaN gradient"), name, move || {
            let (w, _) = var_and_grads();
            let g = (w.as_tensor() * f64::NAN)?.sum_all()?.backward()?;
            let mut o = $T::new(vec![w], $C::default())?;
            o.step(&g)?;
            Ok(())
        });
    }};
}

/// `set_momentum` with an out-of-range value and with NaN: refused, naming the optimizer.
macro_rules! momentum_cases {
    ($c:ident, $T:ident, $C:ident, $name:literal, $m:expr) => {{
        let name: &'static str = $name;
        let m: f64 = $m;
        $c.err(&format!("{name}: set_momentum({m})"), name, move || {
            let (w, _) = var_and_grads();
            let mut o = $T::new(vec![w], $C::default())?;
            Momentum::set_momentum(&mut o, m)?;
            Ok(())
        });
        $c.err(&format!("{name}: set_momentum(NaN)"), name, move || {
            let (w, _) = var_and_grads();
            let mut o = $T::new(vec![w], $C::default())?;
            Momentum::set_momentum(&mut o, f64::NAN)?;
            Ok(())
        });
    }};
}

fn optim_cases() -> Vec<Case> {
    let mut c = Cases::new("optim");
    optimizer_cases!(
        c,
        Sgd,
        SgdConfig,
        "Sgd",
        vec![
            ("lr NaN", SgdConfig::default().with_lr(f64::NAN)),
            ("momentum -1", SgdConfig::default().with_momentum(-1.0)),
            (
                "dampening NaN",
                SgdConfig::default().with_dampening(f64::NAN)
            ),
            (
                "weight_decay -1",
                SgdConfig::default().with_weight_decay(-1.0)
            ),
            (
                "nesterov without momentum",
                SgdConfig::default().with_nesterov(true).with_momentum(0.0)
            ),
        ],
    );
    momentum_cases!(c, Sgd, SgdConfig, "Sgd", f64::INFINITY);
    optimizer_cases!(
        c,
        Adam,
        AdamConfig,
        "Adam",
        vec![
            ("beta1 1.0", AdamConfig::default().with_betas(1.0, 0.999)),
            ("beta2 NaN", AdamConfig::default().with_betas(0.9, f64::NAN)),
            ("eps 0", AdamConfig::default().with_eps(0.0)),
            ("eps -1", AdamConfig::default().with_eps(-1.0)),
        ],
    );
    momentum_cases!(c, Adam, AdamConfig, "Adam", 1.0);
    optimizer_cases!(
        c,
        AdamW,
        AdamWConfig,
        "AdamW",
        vec![
            ("lr Inf", AdamWConfig::default().with_lr(f64::INFINITY)),
            (
                "weight_decay NaN",
                AdamWConfig::default().with_weight_decay(f64::NAN)
            ),
            ("beta1 -0.1", AdamWConfig::default().with_betas(-0.1, 0.999)),
        ],
    );
    momentum_cases!(c, AdamW, AdamWConfig, "AdamW", 1.0);
    optimizer_cases!(
        c,
        RmsProp,
        RmsPropConfig,
        "RmsProp",
        vec![
            ("alpha 1.5", RmsPropConfig::default().with_alpha(1.5)),
            ("alpha NaN", RmsPropConfig::default().with_alpha(f64::NAN)),
            ("eps NaN", RmsPropConfig::default().with_eps(f64::NAN)),
            ("momentum -1", RmsPropConfig::default().with_momentum(-1.0)),
        ],
    );
    momentum_cases!(c, RmsProp, RmsPropConfig, "RmsProp", -0.5);
    optimizer_cases!(
        c,
        Adagrad,
        AdagradConfig,
        "Adagrad",
        vec![
            ("lr_decay -1", AdagradConfig::default().with_lr_decay(-1.0)),
            (
                "initial accumulator NaN",
                AdagradConfig::default().with_initial_accumulator_value(f64::NAN)
            ),
            ("eps 0", AdagradConfig::default().with_eps(0.0)),
        ],
    );
    optimizer_cases!(
        c,
        Lion,
        LionConfig,
        "Lion",
        vec![
            ("beta1 1.5", LionConfig::default().with_betas(1.5, 0.99)),
            ("beta2 NaN", LionConfig::default().with_betas(0.9, f64::NAN)),
            ("lr -1", LionConfig::default().with_lr(-1.0)),
        ],
    );
    momentum_cases!(c, Lion, LionConfig, "Lion", 1.5);
    // A momentum of exactly 1 never forgets (SGD) or zeroes Adam's bias correction
    // 1 - beta1^t: refused by every optimizer with a momentum.
    c.err("Sgd: set_momentum(1.0)", "Sgd", || {
        let (w, _) = var_and_grads();
        let mut o = Sgd::new(vec![w], SgdConfig::default())?;
        o.set_momentum(1.0)?;
        Ok(())
    });

    // clipping
    for (name, m) in [("NaN", f64::NAN), ("-1", -1.0), ("Inf", f64::INFINITY)] {
        c.err(
            &format!("clip_grad_norm: max_norm {name}"),
            "clip_grad_norm",
            move || {
                let (w, mut g) = var_and_grads();
                clip_grad_norm(&mut g, &[w], m)?;
                Ok(())
            },
        );
    }
    c.err(
        "clip_grad_norm_inf: max_norm NaN",
        "clip_grad_norm_inf",
        || {
            let (w, mut g) = var_and_grads();
            clip_grad_norm_inf(&mut g, &[w], f64::NAN)?;
            Ok(())
        },
    );
    c.err("clip_grad_value: clip -1", "clip_grad_value", || {
        let (w, mut g) = var_and_grads();
        clip_grad_value(&mut g, &[w], -1.0)?;
        Ok(())
    });
    c.err("agc: clipping -1", "agc", || {
        let (w, mut g) = var_and_grads();
        agc(&mut g, &[w], -1.0, 1e-3)?;
        Ok(())
    });
    c.err("agc: eps NaN", "agc", || {
        let (w, mut g) = var_and_grads();
        agc(&mut g, &[w], 0.01, f64::NAN)?;
        Ok(())
    });
    c.val(
        "clip_grad_norm: NaN gradient returns NaN, scales nothing",
        || {
            // Documented: the optimizer's NonFinite policy then sees the bad gradient.
            let (w, _) = var_and_grads();
            let mut g = (w.as_tensor() * f64::NAN)?.sum_all()?.backward()?;
            let n = clip_grad_norm(&mut g, std::slice::from_ref(&w), 1.0)?;
            ensure(n.is_nan(), format!("norm {n}"))
        },
    );
    c.val(
        "clip_grad_norm: returns the norm, clips to max_norm",
        || {
            let (w, mut g) = var_and_grads();
            let want = (w.as_tensor() * 2.0)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f32>()?
                .sqrt() as f64;
            let n = clip_grad_norm(&mut g, std::slice::from_ref(&w), 0.5)?;
            ensure(
                (n - want).abs() < 1e-4 * want,
                format!("norm {n} vs {want}"),
            )?;
            let after = g
                .get(w.as_tensor())
                .unwrap()
                .sqr()?
                .sum_all()?
                .to_scalar::<f32>()?
                .sqrt();
            ensure((after - 0.5).abs() < 1e-4, format!("clipped norm {after}"))
        },
    );

    // GradAccumulator, Ema, GradScaler
    c.err("GradAccumulator: n_micro 0", "GradAccumulator", || {
        let (w, _) = var_and_grads();
        GradAccumulator::new(vec![w], 0)?;
        Ok(())
    });
    c.err(
        "GradAccumulator: add past n_micro",
        "GradAccumulator",
        || {
            let (w, g) = var_and_grads();
            let mut a = GradAccumulator::new(vec![w], 1)?;
            a.add(&g)?;
            a.add(&g)?;
            Ok(())
        },
    );
    c.err(
        "GradAccumulator: take before any add",
        "GradAccumulator",
        || {
            let (w, _) = var_and_grads();
            GradAccumulator::new(vec![w], 2)?.take()?;
            Ok(())
        },
    );
    let ema = "Ema";
    for (name, cfg) in [
        ("decay 1.5", EmaConfig::default().with_decay(1.5)),
        ("decay NaN", EmaConfig::default().with_decay(f64::NAN)),
        ("min_decay -1", EmaConfig::default().with_min_decay(-1.0)),
    ] {
        c.err(&format!("Ema: {name}"), ema, move || {
            let (w, _) = var_and_grads();
            Ema::new(vec![("w".into(), w)], cfg)?;
            Ok(())
        });
    }
    c.err("Ema: update_with_decay(NaN)", ema, || {
        let (w, _) = var_and_grads();
        Ema::new(vec![("w".into(), w)], EmaConfig::default())?.update_with_decay(f64::NAN)?;
        Ok(())
    });
    c.err("Ema: load_state_dict of an empty map", ema, || {
        let (w, _) = var_and_grads();
        Ema::new(vec![("w".into(), w)], EmaConfig::default())?.load_state_dict(&HashMap::new())?;
        Ok(())
    });
    c.err(
        "Ema: load_state_dict with a wrong-shape shadow",
        ema,
        || {
            let (w, _) = var_and_grads();
            let mut e = Ema::new(vec![("w".into(), w)], EmaConfig::default())?;
            let mut sd = e.state_dict()?;
            for v in sd.values_mut() {
                if v.dims() == [2, 3] {
                    *v = t((3, 2));
                }
            }
            e.load_state_dict(&sd)?;
            Ok(())
        },
    );
    c.err("Ema: duplicate names", ema, || {
        let (w, _) = var_and_grads();
        Ema::new(
            vec![("w".into(), w.clone()), ("w".into(), w)],
            EmaConfig::default(),
        )?;
        Ok(())
    });
    let gs = "GradScaler";
    for (name, cfg) in [
        (
            "init_scale 0",
            GradScalerConfig::default().with_init_scale(0.0),
        ),
        (
            "init_scale NaN",
            GradScalerConfig::default().with_init_scale(f64::NAN),
        ),
        (
            "growth_factor 0.5",
            GradScalerConfig::default().with_growth_factor(0.5),
        ),
        (
            "backoff_factor 1.5",
            GradScalerConfig::default().with_backoff_factor(1.5),
        ),
        (
            "growth_interval 0",
            GradScalerConfig::default().with_growth_interval(0),
        ),
    ] {
        c.err(&format!("GradScaler: {name}"), gs, move || {
            GradScaler::new(cfg)?;
            Ok(())
        });
    }
    c.err("GradScaler: load_state_dict with a NaN scale", gs, || {
        let mut sc = GradScaler::new(GradScalerConfig::default())?;
        let mut sd = sc.state_dict()?;
        for v in sd.values_mut() {
            if v.dtype().is_float() {
                *v = Tensor::full(f64::NAN, v.shape(), &cpu())?.to_dtype(v.dtype())?;
            }
        }
        sc.load_state_dict(&sd)?;
        Ok(())
    });
    c.err("GradScaler: load_state_dict of an empty map", gs, || {
        GradScaler::new(GradScalerConfig::default())?.load_state_dict(&HashMap::new())?;
        Ok(())
    });
    c.err("GradScaler: scale an integer loss", gs, || {
        let sc = GradScaler::new(GradScalerConfig::default())?;
        sc.scale(&Tensor::new(3u32, &cpu())?)?;
        Ok(())
    });
    c.list
}

// ---------------------------------------------------------------------------------------------
// schedule
// ---------------------------------------------------------------------------------------------

/// A custom schedule returning NaN from step 1.
struct NanAfterFirst;

impl LrSchedule for NanAfterFirst {
    fn lr(&self, step: usize) -> f64 {
        if step == 0 {
            1e-3
        } else {
            f64::NAN
        }
    }
}

/// A custom schedule whose momentum is out of range.
struct BadMomentum;

impl LrSchedule for BadMomentum {
    fn lr(&self, _: usize) -> f64 {
        1e-3
    }
    fn momentum(&self, _: usize) -> Option<f64> {
        Some(1.5)
    }
}

fn schedule_cases() -> Vec<Case> {
    let mut c = Cases::new("schedule");
    macro_rules! bad {
        ($name:expr, $block:expr, $e:expr) => {
            c.err($name, $block, || {
                let _ = $e?;
                Ok(())
            });
        };
    }
    bad!("Constant(NaN)", "Constant", Constant::new(f64::NAN));
    bad!("Constant(-1)", "Constant", Constant::new(-1.0));
    bad!(
        "CosineAnnealing lr Inf",
        "CosineAnnealing",
        CosineAnnealing::new(f64::INFINITY, 10)
    );
    bad!(
        "CosineAnnealing t_max 0",
        "CosineAnnealing",
        CosineAnnealing::new(1e-3, 0)
    );
    bad!(
        "CosineAnnealing eta_min NaN",
        "CosineAnnealing",
        CosineAnnealing::new(1e-3, 10).and_then(|s| s.with_eta_min(f64::NAN))
    );
    bad!(
        "ExponentialLr gamma 0",
        "ExponentialLr",
        ExponentialLr::new(1e-3, 0.0)
    );
    bad!(
        "ExponentialLr gamma NaN",
        "ExponentialLr",
        ExponentialLr::new(1e-3, f64::NAN)
    );
    bad!(
        "MultiStepLr unsorted",
        "MultiStepLr",
        MultiStepLr::new(1e-3, [30, 10], 0.1)
    );
    bad!(
        "MultiStepLr gamma -1",
        "MultiStepLr",
        MultiStepLr::new(1e-3, [10], -1.0)
    );
    bad!("Noam d_model 0", "Noam", Noam::new(0, 100));
    bad!("Noam warmup 0", "Noam", Noam::new(512, 0));
    bad!(
        "Noam factor NaN",
        "Noam",
        Noam::new(512, 10).and_then(|n| n.with_factor(f64::NAN))
    );
    bad!("Noam from_peak NaN", "Noam", Noam::from_peak(f64::NAN, 10));
    bad!(
        "OneCycle total 0",
        "OneCycle",
        OneCycle::new(OneCycleConfig::new(1e-3, 0))
    );
    bad!(
        "OneCycle pct_start 1.5",
        "OneCycle",
        OneCycle::new(OneCycleConfig::new(1e-3, 100).with_pct_start(1.5))
    );
    bad!(
        "OneCycle div_factor 0",
        "OneCycle",
        OneCycle::new(OneCycleConfig::new(1e-3, 100).with_div_factors(0.0, 1e4))
    );
    bad!(
        "OneCycle momentum 1.5",
        "OneCycle",
        OneCycle::new(OneCycleConfig::new(1e-3, 100).with_momentum(0.85, 1.5))
    );
    bad!(
        "OneCycle max_lr NaN",
        "OneCycle",
        OneCycle::new(OneCycleConfig::new(f64::NAN, 100))
    );
    bad!(
        "Polynomial total 0",
        "Polynomial",
        Polynomial::new(1e-3, 0, 1.0)
    );
    bad!(
        "Polynomial power NaN",
        "Polynomial",
        Polynomial::new(1e-3, 10, f64::NAN)
    );
    bad!(
        "Polynomial end_lr -1",
        "Polynomial",
        Polynomial::new(1e-3, 10, 1.0).and_then(|p| p.with_end_lr(-1.0))
    );
    bad!(
        "Sequential milestone count",
        "Sequential",
        Sequential::new(vec![Box::new(Constant::new(1e-3)?)], vec![5])
    );
    bad!(
        "Sequential empty",
        "Sequential",
        Sequential::new(vec![], vec![])
    );
    bad!("StepLr step_size 0", "StepLr", StepLr::new(1e-3, 0, 0.1));
    bad!(
        "StepLr gamma Inf",
        "StepLr",
        StepLr::new(1e-3, 10, f64::INFINITY)
    );
    bad!(
        "CosineWarmRestarts t_0 0",
        "CosineWarmRestarts",
        CosineWarmRestarts::new(1e-3, 0, 1)
    );
    bad!(
        "CosineWarmRestarts t_mult 0",
        "CosineWarmRestarts",
        CosineWarmRestarts::new(1e-3, 10, 0)
    );
    bad!(
        "Warmup start_factor 2",
        "Warmup",
        Warmup::new(Constant::new(1e-3)?, 10, 2.0)
    );
    bad!(
        "Warmup start_factor NaN",
        "Warmup",
        Warmup::new(Constant::new(1e-3)?, 10, f64::NAN)
    );
    bad!(
        "Wsd from_fraction 1.5",
        "Wsd",
        WsdConfig::from_fraction(1e-3, 100, 10, 1.5)
    );
    c.either("Wsd: all phases 0 steps", "Wsd", || {
        let w = Wsd::new(WsdConfig::new(1e-3, 0, 0, 0))?;
        let lrs = [w.lr(0), w.lr(1), w.lr(100)];
        ensure(
            lrs.iter().all(|l| l.is_finite() && *l >= 0.0),
            format!("{lrs:?}"),
        )
    });
    bad!(
        "Wsd min_lr_ratio 2",
        "Wsd",
        Wsd::new(WsdConfig::new(1e-3, 1, 1, 1).with_min_lr_ratio(2.0))
    );
    bad!(
        "Wsd peak NaN",
        "Wsd",
        Wsd::new(WsdConfig::new(f64::NAN, 1, 1, 1))
    );
    c.err(
        "Scheduler over a schedule returning NaN",
        "Scheduler",
        || {
            let (w, _) = var_and_grads();
            let mut o = AdamW::new(vec![w], AdamWConfig::default())?;
            let mut s = Scheduler::new(NanAfterFirst);
            s.step(&mut o)?;
            let lr0 = o.learning_rate();
            let r = s.step(&mut o);
            ensure(o.learning_rate() == lr0, "the NaN lr reached the optimizer")?;
            r?;
            Ok(())
        },
    );
    // Refused by the optimizer's `set_momentum`, which names it.
    c.err("Scheduler momentum 1.5 from a schedule", "Sgd", || {
        let (w, _) = var_and_grads();
        let mut o = Sgd::new(vec![w], SgdConfig::default().with_momentum(0.9))?;
        Scheduler::new(BadMomentum).step_with_momentum(&mut o)?;
        Ok(())
    });
    c.err(
        "Scheduler load_state_dict of an empty map",
        "Scheduler",
        || {
            Scheduler::new(Constant::new(1e-3)?).load_state_dict(&HashMap::new())?;
            Ok(())
        },
    );
    c.err(
        "Scheduler load_state_dict with a negative step",
        "Scheduler",
        || {
            let mut s = Scheduler::new(Constant::new(1e-3)?);
            let mut sd = s.state_dict()?;
            for v in sd.values_mut() {
                *v = Tensor::full(-2.0f64, v.shape(), &cpu())?.to_dtype(v.dtype())?;
            }
            s.load_state_dict(&sd)?;
            Ok(())
        },
    );
    let rp = "ReduceLrOnPlateau";
    let pc = PlateauConfig::default;
    for (name, lr, cfg) in [
        ("initial lr NaN", f64::NAN, pc()),
        ("factor 1", 1e-3, pc().with_factor(1.0)),
        ("factor NaN", 1e-3, pc().with_factor(f64::NAN)),
        ("factor 0", 1e-3, pc().with_factor(0.0)),
        ("min_lr -1", 1e-3, pc().with_min_lr(-1.0)),
        (
            "threshold NaN",
            1e-3,
            pc().with_threshold(f64::NAN, Default::default()),
        ),
    ] {
        c.err(&format!("ReduceLrOnPlateau: {name}"), rp, move || {
            ReduceLrOnPlateau::new(lr, cfg)?;
            Ok(())
        });
    }
    c.err(
        "ReduceLrOnPlateau: load_state_dict of an empty map",
        rp,
        move || {
            ReduceLrOnPlateau::new(1e-3, pc())?.load_state_dict(&HashMap::new())?;
            Ok(())
        },
    );
    c.err(
        "ReduceLrOnPlateau: load_state_dict with NaN lr",
        rp,
        move || {
            let mut p = ReduceLrOnPlateau::new(1e-3, pc())?;
            let mut sd = p.state_dict()?;
            let key = sd.keys().find(|k| k.contains("lr")).cloned();
            let key = key.ok_or_else(|| Got::Wrong("no lr key".into()))?;
            sd.insert(key, Tensor::new(f64::NAN, &cpu())?);
            p.load_state_dict(&sd)?;
            Ok(())
        },
    );
    c.val(
        "ReduceLrOnPlateau: NaN metrics count as bad, lr stays finite",
        move || {
            let mut p = ReduceLrOnPlateau::new(1e-3, pc().with_patience(1))?;
            p.step(1.0);
            let mut lr = 0.0;
            for _ in 0..4 {
                lr = p.step(f64::NAN);
            }
            ensure(lr.is_finite() && lr < 1e-3 && lr > 0.0, format!("lr {lr}"))?;
            ensure(p.best() == 1.0, format!("best {}", p.best()))
        },
    );
    c.list
}

// ---------------------------------------------------------------------------------------------
// loaders
// ---------------------------------------------------------------------------------------------

fn loader_cases() -> Vec<Case> {
    let mut c = Cases::new("loaders");
    let bn_tensors = |w: Tensor| {
        vec![
            ("bn.weight", w),
            ("bn.bias", t(3)),
            ("bn.running_mean", t(3)),
            ("bn.running_var", tpos(3)),
        ]
    };
    c.err("BatchNorm: wrong-shape weight", "BatchNorm", move || {
        batch_norm(3, bcfg(), vb_of(bn_tensors(t(4))).pp("bn"))?;
        Ok(())
    });
    c.err("BatchNorm: missing running_var", "BatchNorm", move || {
        let mut ts = bn_tensors(t(3));
        ts.pop();
        batch_norm(3, bcfg(), vb_of(ts).pp("bn"))?;
        Ok(())
    });
    c.err(
        "BatchNorm: num_batches_tracked negative",
        "BatchNorm",
        move || {
            let mut ts = bn_tensors(t(3));
            ts.push(("bn.num_batches_tracked", Tensor::new(-5i64, &cpu())?));
            batch_norm(3, bcfg(), vb_of(ts).pp("bn"))?;
            Ok(())
        },
    );
    c.err("BatchNorm: running_var negative", "BatchNorm", move || {
        let mut ts = bn_tensors(t(3));
        ts.pop();
        ts.push(("bn.running_var", Tensor::new(&[1f32, -1., 1.], &cpu())?));
        batch_norm(3, bcfg(), vb_of(ts).pp("bn"))?;
        Ok(())
    });
    c.err(
        "MultiHeadAttention: wrong-shape in_proj_weight",
        "MultiHeadAttention",
        || {
            let ts = vec![
                ("attn.in_proj_weight", t((24, 6))),
                ("attn.in_proj_bias", t(24)),
                ("attn.out_proj.weight", t((8, 8))),
                ("attn.out_proj.bias", t(8)),
            ];
            multi_head_attention(8, MhaConfig::new(2), vb_of(ts).pp("attn"))?;
            Ok(())
        },
    );
    c.err(
        "MultiHeadAttention: missing out_proj",
        "MultiHeadAttention",
        || {
            let ts = vec![
                ("attn.in_proj_weight", t((24, 8))),
                ("attn.in_proj_bias", t(24)),
            ];
            multi_head_attention(8, MhaConfig::new(2), vb_of(ts).pp("attn"))?;
            Ok(())
        },
    );
    c.err("MambaBlock: empty checkpoint", "MambaBlock", || {
        mamba_block(MambaConfig::new(8), vb_of(vec![]).pp("mixer"))?;
        Ok(())
    });
    c.err("MambaBlock: wrong-shape A_log", "MambaBlock", || {
        // Build the right tensors from a fresh block, then break A_log.
        let vm = VarMap::new();
        mamba_block(
            MambaConfig::new(8),
            VarBuilder::from_varmap(&vm, DType::F32, &cpu()),
        )?;
        let mut ts: Vec<(String, Tensor)> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        for (k, v) in ts.iter_mut() {
            if k.contains("A_log") {
                *v = t((3, 3));
            }
        }
        let m: HashMap<String, Tensor> = ts.into_iter().collect();
        mamba_block(
            MambaConfig::new(8),
            VarBuilder::from_tensors(m, DType::F32, &cpu()),
        )?;
        Ok(())
    });
    c.err("MambaModel: empty checkpoint", "MambaModel", || {
        mamba_model(
            MambaModelConfig::new(16, 1, MambaConfig::new(8)),
            vb_of(vec![]),
        )?;
        Ok(())
    });
    c.err(
        "SeparableConv2d: wrong-shape conv_pw",
        "SeparableConv2d",
        || {
            let ts = vec![
                ("sep.conv_dw.weight", t((2, 1, 3, 3))),
                ("sep.conv_pw.weight", t((4, 3, 1, 1))),
            ];
            separable_conv2d(2, 4, 3, scfg(), vb_of(ts).pp("sep"))?;
            Ok(())
        },
    );
    c.err("SeparableConv2d: missing bn_dw", "SeparableConv2d", || {
        let ts = vec![
            ("sep.conv_dw.weight", t((2, 1, 3, 3))),
            ("sep.conv_pw.weight", t((4, 2, 1, 1))),
        ];
        separable_conv2d(
            2,
            4,
            3,
            SeparableConv2dConfig::xception(),
            vb_of(ts).pp("sep"),
        )?;
        Ok(())
    });
    c.err("Sppf: wrong-shape cv1", "Sppf", || {
        let bn = |p: &str, n: usize| {
            vec![
                (format!("{p}.bn.weight"), t(n)),
                (format!("{p}.bn.bias"), t(n)),
                (format!("{p}.bn.running_mean"), t(n)),
                (format!("{p}.bn.running_var"), tpos(n)),
            ]
        };
        let mut ts = vec![
            ("s.cv1.conv.weight".to_string(), t((2, 5, 1, 1))),
            ("s.cv2.conv.weight".to_string(), t((4, 8, 1, 1))),
        ];
        ts.extend(bn("s.cv1", 2));
        ts.extend(bn("s.cv2", 4));
        let m: HashMap<String, Tensor> = ts.into_iter().collect();
        sppf(
            4,
            4,
            5,
            VarBuilder::from_tensors(m, DType::F32, &cpu()).pp("s"),
        )?;
        Ok(())
    });
    c.err("Sppf: empty checkpoint", "Sppf", || {
        sppf(4, 4, 5, vb_of(vec![]).pp("s"))?;
        Ok(())
    });
    c.err("LayerNorm: wrong-shape weight", "LayerNorm", || {
        let ts = vec![("ln.weight", t(5)), ("ln.bias", t(4))];
        layer_norm_layer(4, LayerNormConfig::default(), vb_of(ts).pp("ln"))?;
        Ok(())
    });
    c.err("GroupNorm: missing bias", "GroupNorm", || {
        let ts = vec![("gn.weight", t(4))];
        group_norm_layer(2, 4, GroupNormConfig::default(), vb_of(ts).pp("gn"))?;
        Ok(())
    });
    c.list
}

// ---------------------------------------------------------------------------------------------
// size arithmetic (see `size_overflow_sweep`)
// ---------------------------------------------------------------------------------------------

const HUGE: usize = usize::MAX / 2;
const T40: usize = 1 << 40;

/// Impossible sizes: overflowing padding / stride / dilation / output sizes and products. Each
/// must be refused (before any allocation) with an error naming the block, or give the right
/// value. `size_overflow_sweep` runs each in its own process, since an impossible allocation
/// aborts the process (no `catch_unwind` can catch it).
fn size_overflow_cases() -> Vec<Case> {
    let mut c = Cases::new("size_overflow");
    let dw = "depthwise_conv2d";
    c.err("dw2d: padding usize::MAX/2", dw, || {
        ops::depthwise_conv2d(
            &t((1, 2, 5, 5)),
            &t((2, 1, 3, 3)),
            dw2(1, Padding::Explicit(HUGE), 1),
        )?;
        Ok(())
    });
    c.err("dw2d: padding 2^40 (huge output)", dw, || {
        ops::depthwise_conv2d(
            &t((1, 2, 5, 5)),
            &t((2, 1, 3, 3)),
            dw2(1, Padding::Explicit(T40), 1),
        )?;
        Ok(())
    });
    c.err("dw2d: dilation usize::MAX/2", dw, || {
        ops::depthwise_conv2d(
            &t((1, 2, 5, 5)),
            &t((2, 1, 3, 3)),
            dw2(1, Padding::Same, HUGE),
        )?;
        Ok(())
    });
    c.either("dw2d: stride usize::MAX (same) == reference", dw, || {
        let (x, w) = (t((1, 2, 5, 5)), t((2, 1, 3, 3)));
        let cfg = dw2(usize::MAX, Padding::Same, 1);
        let y = ops::depthwise_conv2d(&x, &w, cfg)?;
        close(
            "y",
            &y,
            &ops::depthwise_conv2d_reference(&x, &w, cfg)?,
            1e-5,
        )
    });
    c.err("dw1d: padding usize::MAX/2", "depthwise_conv1d", || {
        ops::depthwise_conv1d(
            &t((1, 2, 5)),
            &t((2, 1, 3)),
            dw1(1, Padding::Explicit(HUGE), 1),
        )?;
        Ok(())
    });
    c.err("conv3d: padding 2^40", "conv3d", || {
        ops::conv3d(
            &t((1, 2, 3, 3, 3)),
            &t((2, 2, 1, 1, 1)),
            c3(1, Padding::Explicit(T40), 1),
        )?;
        Ok(())
    });
    c.err("conv3d: dilation usize::MAX/2", "conv3d", || {
        ops::conv3d(
            &t((1, 2, 3, 3, 3)),
            &t((2, 2, 3, 3, 3)),
            c3(1, Padding::Same, HUGE),
        )?;
        Ok(())
    });
    c.err(
        "adaptive_avg_pool2d: output 2^40 x 2^40",
        "adaptive_avg_pool2d",
        || {
            ops::adaptive_avg_pool2d(&t((1, 2, 4, 4)), (T40, T40))?;
            Ok(())
        },
    );
    c.err(
        "adaptive_max_pool1d: output usize::MAX/2",
        "adaptive_max_pool1d",
        || {
            ops::adaptive_max_pool1d(&t((1, 2, 4)), HUGE)?;
            Ok(())
        },
    );
    c.err(
        "AdaptivePool2d forward: output 2^40 x 2^40",
        "adaptive",
        || {
            AdaptivePool2d::new((T40, T40), PoolMode::Max)?.forward(&t((1, 2, 4, 4)))?;
            Ok(())
        },
    );
    c.either(
        "max_pool2d_same: kernel usize::MAX == per-channel max",
        "max_pool2d_same",
        || {
            let x = t((1, 2, 4, 3));
            let y = ops::max_pool2d_same(&x, usize::MAX)?;
            let m = x.flatten_from(2)?.max_keepdim(2)?.unsqueeze(3)?;
            close("y", &y, &m.broadcast_as(y.shape())?.contiguous()?, 0.0)
        },
    );
    c.err(
        "upsample: output 2^40 x 2^40",
        "upsample_bilinear2d",
        || {
            ops::upsample_bilinear2d(&t((1, 2, 3, 3)), T40, T40, false)?;
            Ok(())
        },
    );
    c.err(
        "upsample: output usize::MAX/2 x 2",
        "upsample_bilinear2d",
        || {
            ops::upsample_bilinear2d(&t((1, 2, 3, 3)), HUGE, 2, true)?;
            Ok(())
        },
    );
    c.either(
        "sdpa: causal kv_offset usize::MAX == no mask",
        "scaled_dot_product_attention",
        || {
            let q = t((1, 2, 3, 4));
            let m = AttentionMask::Causal {
                kv_offset: usize::MAX,
            };
            let y = ops::scaled_dot_product_attention(&q, &q, &q, &m, None, 0.0)?;
            let r = ops::sdpa_reference(&q, &q, &q, &AttentionMask::None, None)?;
            close("y", &y, &r, 1e-5)
        },
    );
    c.either(
        "sdpa: sliding window usize::MAX == no mask",
        "scaled_dot_product_attention",
        || {
            let q = t((1, 2, 3, 4));
            let m = AttentionMask::SlidingWindow {
                window: usize::MAX,
                causal: false,
                global: usize::MAX,
            };
            let y = ops::scaled_dot_product_attention(&q, &q, &q, &m, None, 0.0)?;
            let r = ops::sdpa_reference(&q, &q, &q, &AttentionMask::None, None)?;
            close("y", &y, &r, 1e-5)
        },
    );
    c.err(
        "attention_dropout_keep: dims overflowing usize",
        "attention",
        || {
            ops::attention_dropout_keep((1 << 20, 1 << 20, 1 << 20, 1 << 20), 0.5, 0)?;
            Ok(())
        },
    );
    c.err("attention_dropout_keep: 2^40 elements", "attention", || {
        ops::attention_dropout_keep((1, 1, 1 << 20, 1 << 20), 0.5, 0)?;
        Ok(())
    });
    c.err(
        "Dropout2d: mask dims overflowing usize",
        "Dropout2d",
        || {
            // An empty input whose (B, C) mask has (2^40 + 1)^2 elements (wraps to 2^41 + 1).
            let x = Tensor::zeros((T40 + 1, T40 + 1, 0, 1), DType::F32, &cpu())?;
            Dropout2d::new(0.5)?.apply(&x, true)?;
            Ok(())
        },
    );
    c.err(
        "receptive_field: jump overflows (70 stride-2 layers)",
        "receptive_field",
        || {
            let layers = vec![LayerGeometry::conv(3, 2); 70];
            let r = receptive_field(&layers)?;
            Err(Got::Wrong(format!("returned {r:?}")))
        },
    );
    c.err("receptive_field: size overflows", "receptive_field", || {
        let layers = vec![LayerGeometry::conv(HUGE, 1).with_dilation(4)];
        let r = receptive_field(&layers)?;
        Err(Got::Wrong(format!("returned {r:?}")))
    });
    c.val("Padding::output_size: padding usize::MAX is None", || {
        let o = Padding::Explicit(usize::MAX).output_size(5, 3, 1, 1);
        ensure(o.is_none(), format!("{o:?}"))?;
        let o = output_size(5, 3, 1, HUGE, 0, 0);
        ensure(o.is_none(), format!("dilation: {o:?}"))
    });
    c.err(
        "SinusoidalPositionalEncoding: 2^40 x 512 table",
        "SinusoidalPositionalEncoding",
        || {
            SinusoidalPositionalEncoding::new(T40, 512, DType::F32, &cpu())?;
            Ok(())
        },
    );
    c.err("RotaryEmbedding: max_len 2^50", "RotaryEmbedding", || {
        RotaryEmbedding::new(8, 1 << 50, 10_000.0, DType::F32, &cpu())?;
        Ok(())
    });
    c.err(
        "depthwise_conv2d layer: 2^40 channels",
        "DepthwiseConv2d",
        || {
            dw_layer(T40, 1, 3, DepthwiseConv2dConfig::default(), vb())?;
            Ok(())
        },
    );
    c.err("mamba_block: d_model 2^40", "MambaBlock", || {
        mamba_block(MambaConfig::new(T40), vb())?;
        Ok(())
    });
    c.err("MambaBlock zero_state: batch 2^40", "MambaBlock", || {
        mamba_block(MambaConfig::new(8), vb())?.zero_state(T40)?;
        Ok(())
    });
    c.err("upsample_nearest: factor 2^40", "upsample_nearest", || {
        upsample_nearest(&t((1, 1, 2, 2)), T40)?;
        Ok(())
    });
    c.val("StepLr: lr at step usize::MAX <= base", || {
        let lr = StepLr::new(1e-3, 1, 0.5)?.lr(usize::MAX);
        ensure((0.0..=1e-3).contains(&lr), format!("lr {lr}"))
    });
    c.either(
        "CosineWarmRestarts: t_mult usize::MAX, far step",
        "CosineWarmRestarts",
        || {
            let s = CosineWarmRestarts::new(1e-3, 10, usize::MAX)?;
            let lr = s.lr(usize::MAX - 1);
            ensure((0.0..=1e-3).contains(&lr), format!("lr {lr}"))
        },
    );
    c.either("Wsd: phases summing past usize::MAX", "Wsd", || {
        let w = Wsd::new(WsdConfig::new(1e-3, usize::MAX, usize::MAX, usize::MAX))?;
        let lr = w.lr(usize::MAX);
        ensure((0.0..=1e-3).contains(&lr), format!("lr {lr}"))
    });
    c.either("OneCycle: total usize::MAX", "OneCycle", || {
        let o = OneCycle::new(OneCycleConfig::new(1e-3, usize::MAX))?;
        let lr = [o.lr(0), o.lr(usize::MAX / 3), o.lr(usize::MAX)];
        ensure(
            lr.iter().all(|l| (0.0..=1e-3).contains(l)),
            format!("{lr:?}"),
        )
    });
    c.either("Warmup: warmup_steps usize::MAX", "Warmup", || {
        let w = Warmup::new(Constant::new(1e-3)?, usize::MAX, 0.1)?;
        let lr = [w.lr(0), w.lr(usize::MAX)];
        ensure(
            lr.iter().all(|l| (0.0..=1e-3).contains(l)),
            format!("{lr:?}"),
        )
    });
    c.list
}

#[test]
fn sweep() {
    let mut cases = ops_cases();
    cases.extend(conv_cases());
    cases.extend(pool_cases());
    cases.extend(norm_cases());
    cases.extend(blocks_cases());
    cases.extend(attention_cases());
    cases.extend(ssm_cases());
    cases.extend(optim_cases());
    cases.extend(schedule_cases());
    cases.extend(loader_cases());
    run_all(cases, 150);
}

/// The environment variable that makes [`size_overflow_child`] run one case.
const CHILD_CASE: &str = "BAD_INPUT_SIZE_CASE";
/// What the child prints before a failure, for the parent to pick up.
const CHILD_FAIL: &str = "BAD-INPUT-FAIL: ";

/// The size-arithmetic group, each case in a child process (this test binary, running
/// [`size_overflow_child`]) with a 60 s limit: a panic, an abort (impossible allocation under
/// the memory cap), an OOM kill or a hang is reported as that case's failure and the other
/// cases still run.
#[test]
fn size_overflow_sweep() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let names: Vec<String> = size_overflow_cases().into_iter().map(|c| c.name).collect();
    let exe = std::env::current_exe().expect("test binary");
    let mut failures = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut child = Command::new(&exe)
            .args(["--ignored", "--exact", "size_overflow_child", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_CASE, i.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the test binary");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break Some(s);
            }
            if Instant::now() > deadline {
                child.kill().ok();
                child.wait().ok();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        if let Some(mut so) = child.stdout.take() {
            use std::io::Read;
            so.read_to_string(&mut out).ok();
        }
        let reported = out.lines().find_map(|l| {
            l.find(CHILD_FAIL)
                .map(|i| l[i + CHILD_FAIL.len()..].to_string())
        });
        match (status, reported) {
            (None, _) => failures.push(format!("[size_overflow] {name}: TIMEOUT (> 60 s)")),
            (Some(_), Some(msg)) => failures.push(msg),
            (Some(s), None) if s.success() => {}
            (Some(s), None) => {
                use std::os::unix::process::ExitStatusExt;
                let how = match s.signal() {
                    Some(6) => "ABORT (SIGABRT: impossible allocation?)".to_string(),
                    Some(9) => "KILLED (SIGKILL: out of memory?)".to_string(),
                    Some(sig) => format!("killed by signal {sig}"),
                    None => format!("exit status {s}"),
                };
                failures.push(format!("[size_overflow] {name}: {how}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} size-overflow cases failed:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}

/// Runs the size-overflow case numbered by `BAD_INPUT_SIZE_CASE` (set by
/// [`size_overflow_sweep`]); does nothing without it.
#[test]
#[ignore = "a child of size_overflow_sweep"]
fn size_overflow_child() {
    let Ok(i) = std::env::var(CHILD_CASE) else {
        return;
    };
    let i: usize = i.parse().expect("case index");
    let case = size_overflow_cases().into_iter().nth(i).expect("case");
    std::panic::set_hook(Box::new(|_| {}));
    if let Some(msg) = run_case(case) {
        println!("{CHILD_FAIL}{}", msg.replace('\n', " "));
        std::process::exit(1);
    }
}
