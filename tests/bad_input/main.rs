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

mod sweep_attention;
mod sweep_augment;
mod sweep_bayes_opt;
mod sweep_blocks;
mod sweep_blocks17;
mod sweep_calibration;
mod sweep_cnn;
mod sweep_conv;
mod sweep_conv_transpose;
mod sweep_gp;
mod sweep_int8;
mod sweep_linear;
mod sweep_loaders;
mod sweep_lora;
mod sweep_lora_vit;
mod sweep_loss;
mod sweep_nas;
mod sweep_norm;
mod sweep_ops_conv;
mod sweep_ops_other;
mod sweep_optim;
mod sweep_optim_adaptive;
mod sweep_optim_more;
mod sweep_optim_wrappers;
mod sweep_pool;
mod sweep_pool2d;
mod sweep_prune;
mod sweep_quantize;
mod sweep_rnn;
mod sweep_schedule;
mod sweep_schedule_cycles;
mod sweep_semi_supervised;
mod sweep_sizes;
mod sweep_ssm;
mod sweep_train16;
mod sweep_transfer;
mod sweep_tune;

#[test]
fn sweep() {
    let mut cases = sweep_ops_conv::conv_ops_cases();
    cases.extend(sweep_ops_other::other_ops_cases());
    cases.extend(sweep_linear::linear_cases());
    cases.extend(sweep_conv::conv_cases());
    cases.extend(sweep_conv_transpose::conv_transpose_cases());
    cases.extend(sweep_pool::pool_cases());
    cases.extend(sweep_pool2d::pool2d_cases());
    cases.extend(sweep_norm::norm_cases());
    cases.extend(sweep_cnn::cnn_cases());
    cases.extend(sweep_blocks::blocks_cases());
    cases.extend(sweep_blocks17::blocks17_cases());
    cases.extend(sweep_attention::attention_cases());
    cases.extend(sweep_ssm::ssm_cases());
    cases.extend(sweep_rnn::rnn_cases());
    cases.extend(sweep_optim::optim_cases());
    cases.extend(sweep_optim_adaptive::optim_adaptive_cases());
    cases.extend(sweep_optim_wrappers::optim_wrappers_cases());
    cases.extend(sweep_optim_more::optim_more_cases());
    cases.extend(sweep_schedule::schedule_cases());
    cases.extend(sweep_schedule_cycles::schedule_cycles_cases());
    cases.extend(sweep_loaders::loader_cases());
    cases.extend(sweep_loss::loss_cases());
    cases.extend(sweep_lora::lora_cases());
    cases.extend(sweep_lora_vit::lora_vit_cases());
    cases.extend(sweep_augment::augment_cases());
    cases.extend(sweep_transfer::transfer_cases());
    cases.extend(sweep_prune::prune_cases());
    cases.extend(sweep_quantize::quantize_cases());
    cases.extend(sweep_int8::int8_cases());
    cases.extend(sweep_calibration::calibration_cases());
    cases.extend(sweep_bayes_opt::bayes_opt_cases());
    cases.extend(sweep_gp::gp_cases());
    cases.extend(sweep_train16::train16_cases());
    cases.extend(sweep_nas::nas_cases());
    cases.extend(sweep_nas::lr_finder_cases());
    cases.extend(sweep_tune::tune_cases());
    cases.extend(sweep_semi_supervised::semi_supervised_cases());
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
    let names: Vec<String> = sweep_sizes::size_overflow_cases()
        .into_iter()
        .map(|c| c.name)
        .collect();
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
    let case = sweep_sizes::size_overflow_cases()
        .into_iter()
        .nth(i)
        .expect("case");
    std::panic::set_hook(Box::new(|_| {}));
    if let Some(msg) = run_case(case) {
        println!("{CHILD_FAIL}{}", msg.replace('\n', " "));
        std::process::exit(1);
    }
}
