//! Transfer learning: fine-tuning a pre-trained model cheaply, with low-rank (LoRA) and
//! bottleneck adapters that train a small number of parameters next to frozen weights.

pub mod adapter;
pub mod lora;
pub use adapter::{bottleneck_adapter, BottleneckAdapter, BottleneckAdapterConfig};
pub use lora::{lora_conv2d, lora_linear, LoraConfig, LoraConv2d, LoraLinear};
