//! `use candle_tricks::prelude::*;` — the blocks, optimizers, schedules and traits of a training
//! program in one import, plus the candle items every such program names (`Tensor`, `Device`,
//! `DType`, `D`, `Var`, `VarBuilder`, `VarMap` and the `Module` / `ModuleT` / `Optimizer`
//! traits).
//!
//! **Layers and ops.** The prelude holds the *layers*: a config, the block and its constructor
//! (`conv::depthwise_conv2d(channels, …, vb)` builds a [`DepthwiseConv2d`]), as `torch.nn` does.
//! The functional ops of the same name live in [`crate::ops`] (`ops::depthwise_conv2d(x, w, cfg)`,
//! PyTorch's `torch.nn.functional`) and are not in the prelude, so the two never collide: call
//! them by path.
//!
//! **Names shared with candle-nn.** [`BatchNorm`], [`LayerNorm`], [`Conv2d`], [`AdamW`],
//! `layer_norm`, `conv2d` and a few others exist in `candle_nn` too. Import candle-nn's items by name (`candle_nn::linear`,
//! `candle_nn::loss`), not with a glob next to this prelude, and the names stay unambiguous;
//! everything the prelude re-exports from candle is the same item as candle's, so importing it
//! again is harmless.
//!
//! Not in the prelude: [`crate::Result`] (it would shadow `std`'s two-parameter `Result` in your
//! code; write `candle_tricks::Result<T>`), the ops, the `*_reference` compositions and the less
//! common items; they are one module away.
//!
//! ```
//! use candle_tricks::prelude::*;
//!
//! # fn main() -> candle_tricks::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let block = basic_block(8, 8, ResBlockConfig::default(), vb.pp("layer1.0"))?;
//! let x = Tensor::randn(0f32, 1., (2, 8, 6, 6), &Device::Cpu)?;
//! let loss = block.forward_t(&x, true)?.sqr()?.mean_all()?;
//! let groups = ParamGroups::no_decay_for_bias_and_norm(&varmap, 0.05);
//! let mut opt = AdamW::with_groups(groups, AdamWConfig::default())?;
//! let mut sched = Scheduler::new(Warmup::new(CosineAnnealing::new(1e-3, 90)?, 10, 0.0)?);
//! let mut grads = loss.backward()?;
//! let norm = clip_grad_norm(&mut grads, &opt.vars(), 1.0)?;
//! sched.step(&mut opt)?;
//! opt.step(&grads)?;
//! assert!(norm > 0.0);
//! # Ok(())
//! # }
//! ```

pub use candle_core::{DType, Device, Module, ModuleT, Tensor, Var, D};
pub use candle_nn::{Optimizer, VarBuilder, VarMap};

pub use crate::attention::{
    axial_attention, cbam, hybrid_vit_embedding, linformer_attention, local_attention,
    multi_head_attention, patch_embed, squeeze_excite, transformer_encoder,
    transformer_encoder_layer, vit_embedding, AxialAttention, Cbam, CbamConfig, FfnActivation,
    LinformerAttention, LinformerConfig, LocalAttention, LocalAttentionConfig, MhaConfig,
    MultiHeadAttention, PatchEmbed, PatchEmbedConfig, RotaryEmbedding,
    SinusoidalPositionalEncoding, SqueezeExcite, SqueezeExciteConfig, TransformerEncoder,
    TransformerEncoderConfig, TransformerEncoderLayer, TransformerEncoderLayerConfig, VitEmbedding,
};
pub use crate::augment::{
    Augment, ColorJitter, Mixup, MixupConfig, RandomCrop, RandomErasing, RandomHorizontalFlip,
    RandomResizedCrop, RandomRotation, RandomVerticalFlip, Transform,
};
pub use crate::blocks::{
    basic_block, bottleneck, convnext_block, down_block, layer_scale, mb_conv,
    multi_scale_pathways, up_block, BasicBlock, Bottleneck, ConvNextBlock, ConvNextBlockConfig,
    DownBlock, DownBlockConfig, DropPath, DropPathConfig, Dropout2d, EarlyExit, EarlyExitConfig,
    LayerScale, LayerScaleConfig, MbConv, MbConvConfig, MultiScaleConfig, MultiScalePathways,
    PreNorm, ResBlockConfig, Residual, UpBlock, UpBlockConfig,
};
pub use crate::compress::quantize::{
    qat_conv2d, qat_linear, FakeQuantize, InputQuant, Observer, ObserverConfig, ObserverKind,
    QatConfig, QatConv2d, QatLinear, QatMode, QuantizedConv2d, QuantizedLinear,
};
pub use crate::conv::{
    aspp, conv2d, conv2d_no_bias, conv3d, conv_transpose2d, conv_transpose3d, depthwise_conv2d,
    receptive_field, separable_conv2d, Aspp, AsppConfig, Conv2d, Conv2dConfig, Conv3d,
    Conv3dConfig, ConvTranspose2d, ConvTranspose2dConfig, ConvTranspose3d, ConvTranspose3dConfig,
    DepthwiseConv2d, DepthwiseConv2dConfig, LayerGeometry, PadMode, Padding, PixelShuffle,
    PixelUnshuffle, SeparableConv2d, SeparableConv2dConfig,
};
pub use crate::loss::{
    BceConfig, CrossEntropyConfig, DistillationConfig, FocalConfig, Reduction, TripletConfig,
};
pub use crate::norm::{
    batch_norm, group_norm, instance_norm, layer_norm, layer_norm2d, rms_norm, BatchNorm,
    BatchNormConfig, GroupNorm, GroupNormConfig, InstanceNorm, InstanceNormConfig, LayerNorm,
    LayerNorm2d, LayerNorm2dConfig, LayerNormConfig, Norm, RmsNorm, RmsNormConfig,
};
pub use crate::optim::{
    agc, clip_grad_norm, clip_grad_value, Adadelta, AdadeltaConfig, Adagrad, AdagradConfig, Adam,
    AdamConfig, AdamW, AdamWConfig, Adamax, AdamaxConfig, AdjustLr, Ema, EmaConfig,
    GradAccumulator, GradAccumulatorConfig, GradScaler, GradScalerConfig, Lion, LionConfig,
    Lookahead, LookaheadConfig, Momentum, Muon, MuonConfig, MuonWithAdamW, NAdam, NAdamConfig,
    NonFinite, OptimizerState, ParamGroup, ParamGroups, RAdam, RAdamConfig, RmsProp, RmsPropConfig,
    Sam, SamConfig, ScheduleFreeAdamW, ScheduleFreeAdamWConfig, Sgd, SgdConfig,
};
pub use crate::pool::{
    adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, gem, max_pool2d, sppf, AdaptiveAvgPool3d,
    AdaptiveMaxPool3d, AdaptivePool2d, AvgPool2d, AvgPool3d, GeM, GeMConfig, GlobalPool, MaxPool2d,
    MaxPool3d, Pool2dConfig, Pool3dConfig, SelectAdaptivePool2d, SpatialPyramidPooling, SppConfig,
    Sppf,
};
pub use crate::rnn::{gru, lstm, Gru, GruConfig, Lstm, LstmConfig, RnnConfig};
pub use crate::schedule::{
    Chained, Constant, CosineAnnealing, CosineWarmRestarts, CyclicLr, CyclicLrConfig, CyclicMode,
    LrSchedule, OneCycle, OneCycleConfig, PerGroup, PhasedOneCycle, ReduceLrOnPlateau, Scheduler,
    StepLr, Warmup, Wsd, WsdConfig,
};
pub use crate::ssm::{
    mamba_block, mamba_model, MambaBlock, MambaConfig, MambaModel, MambaModelConfig,
};
pub use crate::train::{
    dann_lambda, fixmatch_loss, fomaml_step, grad_reverse, lr_range_test, mean_teacher_consistency,
    pseudo_label_loss, reptile_step, semantic_embedding, sigmoid_rampup, GradReverse, LrRangeCurve,
    LrRangeTestConfig, PseudoLabelLoss, SemanticEmbedding, SemanticEmbeddingConfig,
};
pub use crate::transfer::{
    bottleneck_adapter, frozen_batch_norm2d, lora_conv2d, lora_linear, lora_multi_head_attention,
    resample_pos_embed, BottleneckAdapter, BottleneckAdapterConfig, FrozenBatchNorm2d,
    FrozenBatchNorm2dConfig, LoraConfig, LoraConv2d, LoraLinear, LoraMultiHeadAttention,
    ResamplePosEmbedConfig,
};
pub use crate::tune::{
    bayesian_optimization, ensemble_predict, expected_calibration_error, gaussian_process,
    mc_predict, random_search, regularized_evolution, Acquisition, ArchSpace, Asha, AshaConfig,
    BayesianOptimization, BayesianOptimizationConfig, Config, Decision, Direction, EvolutionConfig,
    GaussianProcess, GaussianProcessConfig, Genome, GpKernel, HyperPrior, NasHistory, OutputWarp,
    RandomSampler, Sampler, SobolSampler, Space, Study, TemperatureScaling, TrialState,
};
