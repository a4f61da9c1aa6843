//! Which implementation every op runs on which device: the one place that records it.
//!
//! Each op in [`crate::ops`] (and the fused train-mode [`crate::norm::BatchNorm`]) has two
//! implementations:
//!
//! - a **kernel**: our fused code behind a candle `CustomOp` with a hand-written backward. Today
//!   every kernel is a CPU kernel ([`Backend::CpuKernel`]); CUDA and Metal kernels will register
//!   here as [`Backend::CudaKernel`] / [`Backend::MetalKernel`] when they land.
//! - a **composition** ([`Backend::Composition`]): the op's `*_reference` function, built only
//!   from candle tensor ops, which candle runs (and differentiates) on every backend.
//!
//! The public op functions validate their input, then ask [`backend`] once: a kernel runs where
//! [`table`] lists one for the tensor's device, the composition everywhere else. So a model built
//! from this crate's blocks runs, forward and backward, on CPU, CUDA and Metal for every dtype the
//! op supports (f32, f16, bf16); on a device without a kernel f16 / bf16 inputs are computed in
//! f32 by the composition and rounded back, as the kernels accumulate in f32. The decision is
//! taken in the forward pass: the backward of a result follows the path its forward took.
//!
//! `docs/FEATURES.md` shows [`table`] (a test checks that it does).
//!
//! # Forcing the composition
//! [`with_backend`]`(Backend::Composition, f)` runs `f` with every op on its composition, also on
//! CPU: the tests compare both paths this way (proving the GPU fallback without a GPU), and it
//! helps to tell a kernel bug from a model bug when numbers look wrong. The override is
//! per thread (parallel tests do not see each other's) and scoped: it ends with `f`, also when
//! `f` panics. [`force_backend`] is the same as a guard.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::ops::{backend, softmax_last_dim, with_backend, Backend, Op};
//! # fn main() -> candle_tricks::Result<()> {
//! let x = Tensor::randn(0f32, 1., (4, 16), &Device::Cpu)?;
//! assert_eq!(backend(Op::SoftmaxLastDim, &Device::Cpu), Backend::CpuKernel);
//! let fast = softmax_last_dim(&x)?;
//! let slow = with_backend(Backend::Composition, || {
//!     assert_eq!(backend(Op::SoftmaxLastDim, &Device::Cpu), Backend::Composition);
//!     softmax_last_dim(&x)
//! })?;
//! let diff = (fast - slow)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(diff < 1e-5);
//! # Ok(())
//! # }
//! ```

use std::cell::Cell;

use candle_core::{DType, Device, Tensor};

/// An implementation an op can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Our fused multi-threaded CPU kernel (a candle `CustomOp` with its own backward).
    CpuKernel,
    /// Our CUDA kernel (none yet).
    CudaKernel,
    /// Our Metal kernel (none yet).
    MetalKernel,
    /// The op's `*_reference` composition of candle tensor ops, differentiated by candle's
    /// autograd; runs on every device candle supports.
    Composition,
}

impl Backend {
    /// Whether this is one of our kernels (not the composition).
    pub fn is_kernel(self) -> bool {
        !matches!(self, Backend::Composition)
    }
}

/// The ops whose implementation [`backend`] chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`crate::ops::depthwise_conv2d()`].
    DepthwiseConv2d,
    /// [`crate::ops::depthwise_conv1d()`].
    DepthwiseConv1d,
    /// [`crate::ops::causal_conv1d()`].
    CausalConv1d,
    /// [`crate::ops::conv2d()`].
    Conv2d,
    /// [`crate::ops::conv3d()`].
    Conv3d,
    /// [`crate::ops::conv_transpose2d()`].
    ConvTranspose2d,
    /// [`crate::ops::conv_transpose3d()`].
    ConvTranspose3d,
    /// [`crate::ops::adaptive_pool2d()`] and the adaptive average / max pools, 1-D, 2-D and 3-D.
    AdaptivePool,
    /// [`crate::ops::max_pool2d_same()`].
    MaxPool2dSame,
    /// [`crate::ops::max_pool2d()`], [`crate::ops::avg_pool2d()`] and their 3-D forms.
    Pool,
    /// [`crate::ops::layer_norm()`].
    LayerNorm,
    /// [`crate::ops::rms_norm()`].
    RmsNorm,
    /// [`crate::ops::group_norm()`].
    GroupNorm,
    /// The fused train-mode batch norm of [`crate::norm::BatchNorm`] (batch statistics), with
    /// its ReLU / ReLU6 epilogue ([`crate::norm::BatchNorm::forward_act`]).
    BatchNorm,
    /// [`crate::ops::softmax_last_dim()`].
    SoftmaxLastDim,
    /// [`crate::ops::gelu_erf()`].
    GeluErf,
    /// [`crate::ops::hardtanh()`], [`crate::ops::relu6()`] and [`crate::ops::relu()`].
    Hardtanh,
    /// [`crate::ops::upsample_bilinear2d()`].
    UpsampleBilinear2d,
    /// [`crate::ops::pad2d()`] and [`crate::ops::pad3d()`].
    Pad,
    /// [`crate::ops::scaled_dot_product_attention()`] and its seeded form.
    ScaledDotProductAttention,
    /// [`crate::ops::selective_scan()`].
    SelectiveScan,
    /// [`crate::ops::cross_entropy()`].
    CrossEntropy,
    /// [`crate::ops::lstm_recurrence()`] (the LSTM's time loop).
    LstmRecurrence,
    /// [`crate::ops::gru_recurrence()`] (the GRU's time loop).
    GruRecurrence,
    /// [`crate::ops::fake_quantize_per_tensor_affine()`] and its per-channel form.
    FakeQuantize,
    /// The int8 product of [`crate::compress::quantize::QuantizedLinear`] and
    /// [`crate::compress::quantize::QuantizedConv2d`] (inference only, no backward).
    QuantizedMatmul,
    /// [`crate::ops::linear()`].
    Linear,
}

impl Op {
    /// Every op, in the order of [`table`].
    pub const ALL: [Op; 27] = [
        Op::DepthwiseConv2d,
        Op::DepthwiseConv1d,
        Op::CausalConv1d,
        Op::Conv2d,
        Op::Conv3d,
        Op::ConvTranspose2d,
        Op::ConvTranspose3d,
        Op::AdaptivePool,
        Op::MaxPool2dSame,
        Op::Pool,
        Op::LayerNorm,
        Op::RmsNorm,
        Op::GroupNorm,
        Op::BatchNorm,
        Op::SoftmaxLastDim,
        Op::GeluErf,
        Op::Hardtanh,
        Op::UpsampleBilinear2d,
        Op::Pad,
        Op::ScaledDotProductAttention,
        Op::SelectiveScan,
        Op::CrossEntropy,
        Op::LstmRecurrence,
        Op::GruRecurrence,
        Op::FakeQuantize,
        Op::QuantizedMatmul,
        Op::Linear,
    ];

    /// The op's name as `docs/FEATURES.md` writes it (the public function, or the block).
    pub fn name(self) -> &'static str {
        self.row().name
    }

    /// The op's row of [`table`].
    pub fn row(self) -> &'static OpBackends {
        // TABLE lists the ops in the order of `Op::ALL`, which is the declaration order.
        &TABLE[self as usize]
    }
}

/// One row of [`table`]: the kernels an op has, and what its composition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpBackends {
    /// The op.
    pub op: Op,
    /// Its name in `docs/FEATURES.md`.
    pub name: &'static str,
    /// Whether our CPU kernel exists.
    pub cpu_kernel: bool,
    /// Whether our CUDA kernel exists.
    pub cuda_kernel: bool,
    /// Whether our Metal kernel exists.
    pub metal_kernel: bool,
    /// The composition, in words.
    pub composition: &'static str,
}

impl OpBackends {
    /// Whether this op has a kernel for `device`.
    pub fn has_kernel(&self, device: &Device) -> bool {
        match device {
            Device::Cpu => self.cpu_kernel,
            Device::Cuda(_) => self.cuda_kernel,
            Device::Metal(_) => self.metal_kernel,
        }
    }
}

const fn row(op: Op, name: &'static str, cpu: bool, composition: &'static str) -> OpBackends {
    OpBackends {
        op,
        name,
        cpu_kernel: cpu,
        cuda_kernel: false,
        metal_kernel: false,
        composition,
    }
}

static TABLE: [OpBackends; 27] = [
    row(
        Op::DepthwiseConv2d,
        "depthwise_conv2d",
        true,
        "kh·kw shifted, strided slices times the weight tap, summed",
    ),
    row(
        Op::DepthwiseConv1d,
        "depthwise_conv1d",
        true,
        "k shifted, strided slices times the weight tap, summed",
    ),
    row(
        Op::CausalConv1d,
        "causal_conv1d",
        true,
        "K shifted copies of the left-padded input times the weight tap, summed",
    ),
    row(
        Op::Conv2d,
        "conv2d",
        true,
        "candle's `conv2d` on the explicitly zero-padded input",
    ),
    row(
        Op::Conv3d,
        "conv3d",
        true,
        "one candle `conv2d` per depth tap on the depth slices folded into the batch",
    ),
    row(
        Op::ConvTranspose2d,
        "conv_transpose2d",
        true,
        "zeros inserted (stride), padded, flipped group-swapped weight, `conv2d_reference`",
    ),
    row(
        Op::ConvTranspose3d,
        "conv_transpose3d",
        true,
        "zeros inserted (stride), padded, flipped group-swapped weight, `conv3d_reference`",
    ),
    row(
        Op::AdaptivePool,
        "adaptive_pool",
        true,
        "`narrow` + `mean` / `max` per output bin, `cat`",
    ),
    row(
        Op::MaxPool2dSame,
        "max_pool2d_same",
        true,
        "separable: `argmax` over k shifted slices, `gather`, per axis",
    ),
    row(
        Op::Pool,
        "max_pool / avg_pool (2-D, 3-D)",
        true,
        "separable: k strided slices of the padded input per axis, `argmax` + `gather` or sum, divisor",
    ),
    row(
        Op::LayerNorm,
        "layer_norm",
        true,
        "mean, centre, variance, divide, affine",
    ),
    row(
        Op::RmsNorm,
        "rms_norm",
        true,
        "mean of squares, divide, scale",
    ),
    row(
        Op::GroupNorm,
        "group_norm",
        true,
        "reshape to groups, mean, variance, divide, per-channel affine",
    ),
    row(
        Op::BatchNorm,
        "batch_norm",
        true,
        "`BatchNorm::forward_reference`: per-channel sums, divide, affine (+ the activation op)",
    ),
    row(
        Op::SoftmaxLastDim,
        "softmax_last_dim",
        true,
        "max, subtract, exp, sum, divide",
    ),
    row(
        Op::GeluErf,
        "gelu_erf",
        true,
        "candle's `gelu_erf` op and its autograd",
    ),
    row(
        Op::Hardtanh,
        "hardtanh",
        true,
        "comparison masks, multiply, add (`relu`: `x · (x > 0)`)",
    ),
    row(
        Op::UpsampleBilinear2d,
        "upsample_bilinear2d",
        false,
        "two matmuls with the interpolation matrices (the only implementation)",
    ),
    row(
        Op::Pad,
        "pad2d / pad3d",
        true,
        "`pad_with_zeros` / `pad_with_same`, or `index_select` of the reflected / wrapped indices",
    ),
    row(
        Op::ScaledDotProductAttention,
        "scaled_dot_product_attention",
        true,
        "materialised q·kᵀ, additive mask, softmax, dropout mask, ·v",
    ),
    row(
        Op::SelectiveScan,
        "selective_scan",
        true,
        "a loop of (B, D, N) tensor ops per time step",
    ),
    row(
        Op::CrossEntropy,
        "cross_entropy",
        true,
        "log-softmax, `gather` of the target's log-probability, weighted sums",
    ),
    row(
        Op::LstmRecurrence,
        "lstm_recurrence",
        true,
        "a loop of (B, H)·W_hhᵀ + gate tensor ops per time step, masks for the lengths",
    ),
    row(
        Op::GruRecurrence,
        "gru_recurrence",
        true,
        "a loop of (B, H)·W_hhᵀ + gate tensor ops per time step, masks for the lengths",
    ),    row(
        Op::FakeQuantize,
        "fake_quantize",
        true,
        "multiply by 1/scale, round half to even (add and subtract 1.5·2²³), clamp, comparison masks",
    ),
    row(
        Op::QuantizedMatmul,
        "quantized_matmul",
        true,
        "fake-quantized input times the dequantized weight, f32 `matmul` / `conv2d`",
    ),
    row(
        Op::Linear,
        "linear",
        true,
        "`matmul` with the transposed weight, `broadcast_add` of the bias",
    ),
];

/// Every op with the kernels it has and its composition: what `docs/FEATURES.md` shows.
pub fn table() -> &'static [OpBackends] {
    &TABLE
}

thread_local! {
    static FORCED: Cell<Option<Backend>> = const { Cell::new(None) };
}

/// The implementation `op` runs on `device` from this thread: its kernel for that device where
/// [`table`] lists one, the composition otherwise, or the composition wherever
/// [`with_backend`]`(Backend::Composition, …)` is in force.
pub fn backend(op: Op, device: &Device) -> Backend {
    if FORCED.with(Cell::get) == Some(Backend::Composition) || !op.row().has_kernel(device) {
        return Backend::Composition;
    }
    match device {
        Device::Cpu => Backend::CpuKernel,
        Device::Cuda(_) => Backend::CudaKernel,
        Device::Metal(_) => Backend::MetalKernel,
    }
}

/// The backend forced on this thread, if any (see [`with_backend`]).
pub fn forced_backend() -> Option<Backend> {
    FORCED.with(Cell::get)
}

/// Restores the previously forced backend when dropped; made by [`force_backend`].
#[derive(Debug)]
#[must_use = "the override ends when the guard is dropped"]
pub struct BackendGuard {
    previous: Option<Backend>,
}

impl Drop for BackendGuard {
    fn drop(&mut self) {
        FORCED.with(|f| f.set(self.previous));
    }
}

/// Forces `backend` for the ops this thread runs until the returned guard is dropped (then the
/// previous setting comes back; guards nest). `Backend::Composition` makes every op take its
/// composition; a kernel variant restores the default choice (the device's kernel where one
/// exists, the composition elsewhere), e.g. inside an outer forced composition.
pub fn force_backend(backend: Backend) -> BackendGuard {
    let previous = FORCED.with(|f| f.replace(Some(backend)));
    BackendGuard { previous }
}

/// Runs `f` with `backend` forced on this thread (see [`force_backend`]); the previous setting
/// comes back when `f` returns or panics. Ops decide in their forward pass, so a `backward` run
/// after `f` still follows the path each forward took.
pub fn with_backend<T>(backend: Backend, f: impl FnOnce() -> T) -> T {
    let _guard = force_backend(backend);
    f()
}

/// The dtype the composition computes in for inputs of dtype `dt`: f32 for f16 / bf16 (the
/// kernels accumulate in f32), `dt` otherwise.
pub(crate) fn compute_dtype(dt: DType) -> DType {
    match dt {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

/// `t` in [`compute_dtype`] (a differentiable cast; a no-op for f32).
pub(crate) fn upcast(t: &Tensor) -> candle_core::Result<Tensor> {
    t.to_dtype(compute_dtype(t.dtype()))
}

/// `t` upcast, for an optional argument.
pub(crate) fn upcast_opt(t: Option<&Tensor>) -> candle_core::Result<Option<Tensor>> {
    t.map(upcast).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_follows_the_op_order() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(TABLE[i].op, *op);
            assert_eq!(*op as usize, i);
        }
    }

    #[test]
    fn override_is_scoped_and_nests() {
        let dev = Device::Cpu;
        assert_eq!(backend(Op::LayerNorm, &dev), Backend::CpuKernel);
        with_backend(Backend::Composition, || {
            assert_eq!(backend(Op::LayerNorm, &dev), Backend::Composition);
            with_backend(Backend::CpuKernel, || {
                assert_eq!(backend(Op::LayerNorm, &dev), Backend::CpuKernel);
            });
            assert_eq!(backend(Op::LayerNorm, &dev), Backend::Composition);
        });
        assert_eq!(backend(Op::LayerNorm, &dev), Backend::CpuKernel);
        assert_eq!(backend(Op::UpsampleBilinear2d, &dev), Backend::Composition);
    }

    #[test]
    fn override_is_restored_after_a_panic() {
        let r = std::panic::catch_unwind(|| {
            with_backend(Backend::Composition, || panic!("inside"));
        });
        assert!(r.is_err());
        assert_eq!(forced_backend(), None);
    }
}
