//! The engine layer's settings: where the model runs, in which dtype, on which engine, and who
//! draws its tokens. The server's settings file fills them (`http::config`); the enums are its
//! values, flags and variables.

use std::path::PathBuf;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// Where the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// The host CPU.
    Cpu,
    /// The first CUDA GPU (needs a build with `--features cuda`).
    Cuda,
}

/// The dtype weights are loaded in. Safetensors weights are converted to it; GGUF weights are
/// dequantized to it by the native engine (mistral.rs keeps a GGUF file's quantization).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum WeightsDType {
    /// float32 on CPU (exact, and faster there than bf16 or quantized kernels); on CUDA the
    /// engine's choice (native: bf16, or a GGUF file's own quantization).
    Auto,
    /// float32.
    F32,
    /// bfloat16.
    Bf16,
    /// float16.
    F16,
}

/// Which engine implementation serves the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// The native engine where it supports the model (Llama, Qwen2, Qwen3), mistral.rs
    /// otherwise.
    Auto,
    /// entroll's own batched engine on candle.
    Native,
    /// mistral.rs 0.8 (GGUF files and safetensors directories).
    Mistralrs,
}

/// Who draws the tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// entroll draws every token itself and measures every statistic (the normal mode).
    Entroll,
    /// The engine's own sampler, with no statistics and no seeds: a baseline for benchmarks.
    Engine,
}

/// Whether the native engine runs entroll's device kernels (`kernels/`): each token's
/// statistics and draw where the logits are, attention over the cache in place, cache writes
/// as one parallel row copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKernels {
    /// On for CUDA, off on the CPU.
    Auto,
    /// On; on the CPU the kernels' harness runs the GPU's code (slower: for tests).
    On,
    /// Off: logits rows measured on the host (`stats/distribution.rs`), candle's operations for the cache
    /// (on the CPU, the row-wise attention kernel).
    Off,
}

/// What an engine is loaded with: the model and how it runs.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// The model: a `.gguf` file or a safetensors directory.
    pub model: PathBuf,
    /// Device the model runs on.
    pub device: DeviceKind,
    /// Dtype of the weights.
    pub dtype: WeightsDType,
    /// Which engine implementation serves the model.
    pub engine: EngineKind,
    /// entroll's device kernels in the native engine.
    pub device_kernels: DeviceKernels,
    /// Sequences the engine runs at once (its batch).
    pub max_running_sequences: usize,
    /// Prompt tokens the native engine computes per forward.
    pub prefill_chunk: usize,
    /// Keep finished sequences' KV in the engine's prefix cache.
    pub prefix_cache: bool,
    /// Positions the native engine's KV cache may hold in all (0: every running sequence at
    /// the model's whole context).
    pub kv_cache_tokens: usize,
}
