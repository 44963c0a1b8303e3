//! [`Engine`] on entroll's own batched decoder, built on candle.
//!
//! The model: [`config`] (its architecture), [`load`] (its weights), [`model`] (the forward),
//! [`batch`] (what one forward computes), [`attention`]. A thread runs the batching loop
//! ([`scheduler`]): every decode step is one forward for all running sequences over a paged KV
//! cache ([`kv`] holds the memory, [`blocks`] counts it, [`plan`] keeps each sequence's block
//! table); new prompts are prefilled between steps, once per group of samples that share them
//! (and share their blocks), and a prompt whose leading blocks the prefix cache holds computes
//! only the rest. With the device kernels off (the default on the
//! CPU) each logits row is measured and drawn on the host by the same
//! [`crate::stats::sampling::TokenSampler`] as under mistral.rs (both engines report identical
//! statistics for identical logits); with them on (`device_kernels`, the default on CUDA) by the
//! token-statistics kernel where the logits are ([`token_stats`]: the same tokens, statistics
//! equal within float32 rounding), attention by [`kernel_attention`] over the cache in place.
//! Dropping a `generate` future closes its answer channel; the loop releases that sequence's
//! blocks at the next step. Setting its interrupt answers it there with what it drew; a request
//! with tokens already drawn prefills them after its prompt and draws on from their count.

mod attention;
mod batch;
mod blocks;
mod config;
mod device_index;
pub mod gpu;
mod kernel_attention;
pub mod kernel_bench;
pub mod kernel_check;
pub mod kernels;
mod kv;
mod load;
mod model;
mod oracle;
mod plan;
mod queries;
mod scheduler;
pub mod step_counts;
mod text;
mod token_stats;

use std::path::Path;
use std::sync::{mpsc, Arc};

use async_trait::async_trait;
use candle_core::{DType, Device};

use super::settings::{DeviceKernels, DeviceKind, EngineSettings, WeightsDType};
use super::{
    Engine, EngineError, KvCacheState, ModelInfo, PromptInput, SequenceOutput, SequenceRequest,
};
pub use config::{Architecture, HfConfig, ModelError};
use model::Transformer;
pub use oracle::{Oracle, Rescored};
use scheduler::{Job, Limits, Message, Scheduler};
use text::TextCodec;

/// The native engine serving one model.
pub struct NativeEngine {
    info: ModelInfo,
    text: Arc<TextCodec>,
    jobs: mpsc::Sender<Message>,
    /// The KV cache's state, as the loop last published it.
    cache: Arc<std::sync::Mutex<KvCacheState>>,
}

/// The architecture of the model at `path` if the native engine can serve it, or why not.
pub fn architecture(path: &Path) -> Result<Architecture, ModelError> {
    if path.is_dir() {
        Architecture::from_config(&config::read_config(path)?)
    } else {
        let (content, _) = load::read_gguf(path)?;
        let arch = Architecture::from_gguf(&content)?;
        match text::unsupported_gguf_tokenizer(&content) {
            Some(why) => Err(ModelError::Unsupported(why)),
            None => Ok(arch),
        }
    }
}

/// The KV cache's block limit: `kv_cache_tokens` in blocks, or by default enough for every
/// running sequence at the model's whole context (the most the engine could ever hold at once;
/// the tensors grow only as blocks are used). Never less than one whole context, so that any
/// one sequence fits.
fn kv_blocks(settings: &EngineSettings, slots: usize, max_context: usize) -> usize {
    let per_sequence = max_context.div_ceil(scheduler::BLOCK_SIZE);
    match settings.kv_cache_tokens {
        0 => slots * per_sequence,
        n => n.div_ceil(scheduler::BLOCK_SIZE).max(per_sequence),
    }
}

/// The candle device of `kind`; a GPU the build cannot run on is refused here ([`gpu`]).
pub fn device(kind: DeviceKind) -> anyhow::Result<Device> {
    Ok(match kind {
        DeviceKind::Cpu => Device::Cpu,
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => gpu::open(0)?,
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => anyhow::bail!("device = cuda needs a build with --features cuda"),
    })
}

impl NativeEngine {
    /// Loads `settings.model` (a GGUF file or a safetensors directory) and starts its loop.
    pub async fn load(settings: &EngineSettings) -> anyhow::Result<Self> {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || Self::load_blocking(&settings)).await?
    }

    fn load_blocking(settings: &EngineSettings) -> anyhow::Result<Self> {
        let path = settings.model.as_path();
        let shape = super::inspect_model(path)?;
        let device = device(settings.device)?;
        // `auto`: float32 on CPU (GGUF weights dequantized: exact, and with a batch several
        // times faster there than candle's quantized kernels); on CUDA bf16 for safetensors and
        // the file's own quantization for GGUF.
        let dtype = match (settings.dtype, &device) {
            (WeightsDType::Auto, Device::Cpu) | (WeightsDType::F32, _) => Some(DType::F32),
            (WeightsDType::Auto, _) => None,
            (WeightsDType::Bf16, _) => Some(DType::BF16),
            (WeightsDType::F16, _) => Some(DType::F16),
        };
        let (model, text) = if path.is_dir() {
            let dtype = dtype.unwrap_or(DType::BF16);
            (
                Transformer::from_safetensors(path, dtype, &device)?,
                TextCodec::from_dir(path)?,
            )
        } else {
            // The header (vocabulary and merges included) is read once, for both.
            let (content, file) = load::read_gguf(path)?;
            let text = TextCodec::from_gguf(&content)?;
            (
                Transformer::from_gguf(content, file, path, dtype, &device)?,
                text,
            )
        };
        let arch = model.arch().clone();
        let model_dtype = model.dtype();
        let slots = settings.max_running_sequences.max(1);
        let device_kernels = match settings.device_kernels {
            DeviceKernels::On => true,
            DeviceKernels::Off => false,
            DeviceKernels::Auto => !device.is_cpu(),
        };
        let text = Arc::new(text);
        let kv_blocks = kv_blocks(settings, slots, arch.max_context);
        let mut scheduler = Scheduler::new(
            model,
            text.clone(),
            Limits {
                max_running: slots,
                kv_blocks,
                prefix_cache: settings.prefix_cache,
                prefill_chunk: settings.prefill_chunk,
                device_kernels,
            },
        );
        scheduler.probe().map_err(|why| {
            anyhow::anyhow!(
                "the native engine cannot run this model with dtype {:?} on {:?}: {why}",
                model_dtype,
                settings.device
            )
        })?;
        let cache = scheduler.cache_state();
        let (jobs, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("entroll-native".into())
            .spawn(move || scheduler.run(receiver))?;
        let id = super::model_id(path);
        tracing::info!(
            "native engine: {} ({} layers, V = {}), {slots} sequences at once over at most {} \
             KV blocks of {} on {:?}, device kernels {}",
            arch.family,
            arch.layers,
            arch.vocab,
            kv_blocks,
            scheduler::BLOCK_SIZE,
            settings.device,
            if device_kernels { "on" } else { "off" }
        );
        Ok(Self {
            info: ModelInfo {
                engine: "native",
                device_kernels,
                id,
                vocab_size: arch.vocab,
                max_context: Some(arch.max_context),
                max_token_bytes: Some(text.max_token_bytes()),
                max_batch: slots,
                eos_ids: text.eos_ids.clone(),
                source: path.to_path_buf(),
                shape,
            },
            text,
            jobs,
            cache,
        })
    }
}

#[async_trait]
impl Engine for NativeEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    async fn tokenize(&self, prompt: &PromptInput) -> Result<Vec<u32>, EngineError> {
        if let PromptInput::TokenIds(ids) = prompt {
            return Ok(ids.clone());
        }
        let (text, prompt) = (self.text.clone(), prompt.clone());
        tokio::task::spawn_blocking(move || text.encode(&prompt))
            .await
            .map_err(|e| EngineError::Unavailable(format!("tokenization task failed: {e}")))?
    }

    async fn generate(&self, request: SequenceRequest) -> Result<SequenceOutput, EngineError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Message::Generate(Job { request, reply }))
            .map_err(|_| EngineError::Unavailable("the engine loop has stopped".into()))?;
        answer
            .await
            .map_err(|_| EngineError::Unavailable("the engine loop dropped the sequence".into()))?
    }

    async fn detokenize(&self, ids: &[u32], skip_special: bool) -> Result<String, EngineError> {
        let (text, ids) = (self.text.clone(), ids.to_vec());
        tokio::task::spawn_blocking(move || text.decode_with(&ids, skip_special))
            .await
            .map_err(|e| EngineError::Unavailable(format!("detokenization task failed: {e}")))?
    }

    fn kv_cache(&self) -> Option<KvCacheState> {
        Some(*self.cache.lock().unwrap_or_else(|e| e.into_inner()))
    }

    async fn flush_cache(&self) -> Result<Option<usize>, EngineError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Message::Flush(reply))
            .map_err(|_| EngineError::Unavailable("the engine loop has stopped".into()))?;
        let dropped = answer
            .await
            .map_err(|_| EngineError::Unavailable("the engine loop stopped".into()))?;
        Ok(Some(dropped))
    }

    async fn token_texts(&self, ids: &[u32]) -> Result<Vec<String>, EngineError> {
        let (text, ids) = (self.text.clone(), ids.to_vec());
        tokio::task::spawn_blocking(move || {
            ids.iter()
                .map(|&id| text.decode_with(&[id], false))
                .collect()
        })
        .await
        .map_err(|e| EngineError::Unavailable(format!("detokenization task failed: {e}")))?
    }
}
