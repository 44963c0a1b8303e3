//! The inference engine seen by the rest of entroll: a trait over one-sequence generation.
//!
//! The scheduler and HTTP layer only ever see these types; the engines (entroll's own batched
//! engine in [`native`], mistral.rs in [`mistralrs`]) stay behind the trait, and [`loader`]
//! picks and loads one. An engine batches concurrent [`Engine::generate`] calls itself;
//! dropping a `generate` future cancels that sequence within one engine step, and setting its
//! [`Interrupt`] ends it there with what it drew so far (a weight update's `abort` and
//! `continue`).
//!
//! The engine layer may import `stats` (every token's draw and statistics) and `telemetry`
//! (engine metrics, panic messages), nothing above them: its own settings ([`settings`]) and
//! what a checkpoint declares ([`checkpoint`]) live here. The trait's module imports none of
//! its implementations; they import it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use serde::{Deserialize, Serialize};

use crate::stats::distribution::Alternative;
use crate::stats::sampling::{SamplingMask, TokenRecord, TokenSampler};
use checkpoint::ModelShape;

pub mod checkpoint;
pub mod gguf_header;
pub mod loader;
#[cfg(feature = "mistralrs")]
pub mod mistralrs;
#[cfg(feature = "native")]
pub mod native;
pub mod safetensors_header;
pub mod settings;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or another role the template knows.
    pub role: String,
    /// The message text.
    pub content: String,
}

/// Why a sample ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// EOS or a stop string.
    Stop,
    /// `max_tokens` or the model's context.
    Length,
    /// Cancelled, or interrupted before it ended ([`Interrupt`]).
    Abort,
}

/// What the engine serves.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The engine implementation (`native` or `mistralrs`).
    pub engine: &'static str,
    /// Whether entroll's device kernels run (the native engine's `device_kernels`).
    pub device_kernels: bool,
    /// Model id (the file or directory name).
    pub id: String,
    /// Rows of the output distribution (V), the model's own padding rows included.
    pub vocab_size: usize,
    /// Longest sequence (prompt + generation) the model supports, if known.
    pub max_context: Option<usize>,
    /// An upper bound on the bytes of text one token stands for, if known: a prompt of more
    /// bytes than this times the context cannot fit, and is refused before it is tokenized.
    pub max_token_bytes: Option<usize>,
    /// Most sequences the engine runs in one forward.
    pub max_batch: usize,
    /// The token ids that end a sequence (empty where the engine does not say).
    pub eos_ids: Vec<u32>,
    /// Where the weights came from.
    pub source: PathBuf,
    /// The architecture its `config.json` declares (safetensors directories only).
    pub shape: Option<ModelShape>,
}

/// A prompt before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// Chat messages, rendered with the model's chat template and a generation prompt.
    Messages(Vec<ChatMessage>),
    /// Raw text, tokenized with the tokenizer's special tokens but no template.
    Text(String),
    /// Token ids, used as they are.
    TokenIds(Vec<u32>),
}

/// How the tokens of one sequence are drawn.
#[derive(Debug, Clone)]
pub enum Drawing {
    /// entroll draws every token with this sampler and records its statistics.
    Entroll(TokenSampler),
    /// A draw without statistics and without a seed (mistral.rs's own sampler; the native
    /// engine's plain draw): a baseline for benchmarks.
    Engine {
        /// Temperature.
        temperature: f64,
        /// Top-p.
        top_p: f64,
        /// Top-k.
        top_k: Option<usize>,
    },
}

/// Asks an engine to end one sequence at its next step and answer with what it drew so far
/// ([`FinishReason::Abort`]), instead of dropping it as a cancellation does. Clones share the
/// flag; the default is never set.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Ends the sequence at its next step.
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`Interrupt::set`] was called.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The sampling-mask ids the sequences of one request may still return, shared by all of them
/// (clones share the count): a mask that would overdraw it fails its sequence with
/// [`EngineError::MaskBudget`], so a small request cannot make the engine hold, and the server
/// answer, masks of the whole vocabulary at every token. The default is unlimited.
#[derive(Debug, Clone)]
pub struct MaskBudget {
    left: Arc<AtomicU64>,
    total: u64,
}

impl Default for MaskBudget {
    fn default() -> Self {
        Self::new(u64::MAX)
    }
}

impl MaskBudget {
    /// A budget of `ids` mask ids.
    pub fn new(ids: u64) -> Self {
        Self {
            left: Arc::new(AtomicU64::new(ids)),
            total: ids,
        }
    }

    /// Takes a mask of `ids` ids from the budget, or says it would overdraw it (taking
    /// nothing).
    pub fn spend(&self, ids: usize) -> Result<(), EngineError> {
        let ids = ids as u64;
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(ids)
            })
            .map(|_| ())
            .map_err(|_| EngineError::MaskBudget(self.total))
    }
}

/// One sequence to generate.
#[derive(Debug, Clone)]
pub struct SequenceRequest {
    /// Prompt tokens.
    pub prompt: Arc<[u32]>,
    /// Tokens this sample already drew (before an interruption, under other weights): they
    /// follow the prompt, count toward `max_tokens` and toward stop strings, and the draw goes
    /// on at their count (the same draw keys as if it had never stopped). Usually empty.
    pub drawn: Arc<[u32]>,
    /// Most tokens to generate, `drawn` included.
    pub max_tokens: usize,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Who draws the tokens, and how.
    pub drawing: Drawing,
    /// Ends the sequence early with what it drew (engines check it at every step).
    pub interrupt: Interrupt,
    /// What the request's sampling masks may still hold (with `Drawing::Entroll`'s `mask`).
    pub mask_budget: MaskBudget,
}

impl SequenceRequest {
    /// The prompt the model reads before drawing: `prompt` then `drawn`.
    pub fn context(&self) -> Arc<[u32]> {
        if self.drawn.is_empty() {
            return self.prompt.clone();
        }
        self.prompt
            .iter()
            .chain(self.drawn.iter())
            .copied()
            .collect()
    }
}

/// A finished sequence. For a request with [`SequenceRequest::drawn`] tokens, `tokens`, `masks`
/// and `length` are those of the tokens drawn after them, `text` is the whole sample's.
#[derive(Debug, Clone)]
pub struct SequenceOutput {
    /// Generated tokens with their statistics; empty under [`Drawing::Engine`], whose sampler
    /// reports neither.
    pub tokens: Vec<TokenRecord>,
    /// Each token's sampling mask (`None` where its draw kept every token), when the sampler
    /// was asked for them ([`TokenSampler::mask`]).
    pub masks: Option<Vec<Option<SamplingMask>>>,
    /// Each token's most probable alternatives, when the sampler was asked for them
    /// ([`TokenSampler::alternatives`]).
    pub alternatives: Option<Vec<Box<[Alternative]>>>,
    /// Number of generated tokens.
    pub length: usize,
    /// Decoded text (cut before a stop string).
    pub text: String,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// When the first token was drawn, if the engine reports it.
    pub first_token_at: Option<std::time::Instant>,
}

impl SequenceOutput {
    /// Keeps the first `n` tokens' records, masks and alternatives (a stop string found
    /// after the engine's own ending).
    pub fn truncate_tokens(&mut self, n: usize) {
        self.tokens.truncate(n);
        if let Some(masks) = &mut self.masks {
            masks.truncate(n);
        }
        if let Some(alternatives) = &mut self.alternatives {
            alternatives.truncate(n);
        }
    }
}

/// Engine failures.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The prompt cannot be turned into tokens (for instance, an unknown chat role).
    #[error("{0}")]
    InvalidPrompt(String),
    /// Generation failed.
    #[error("{0}")]
    Generation(String),
    /// The request's sampling masks outgrew its [`MaskBudget`].
    #[error(
        "the sampling masks outgrew the request's budget of {0} token ids (max_mask_ids): \
         lower top_p, set top_k, or ask for fewer tokens"
    )]
    MaskBudget(u64),
    /// The engine is gone (its thread stopped).
    #[error("engine unavailable: {0}")]
    Unavailable(String),
}

/// The state of an engine's paged KV cache (the native engine's), for `/info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KvCacheState {
    /// Positions per block.
    pub block_size: usize,
    /// Most blocks the cache may hold.
    pub blocks_total: usize,
    /// Blocks its memory holds now (its tensors' size).
    pub blocks_allocated: usize,
    /// Blocks referenced by a sequence.
    pub blocks_used: usize,
    /// Blocks referenced by more than one sequence (a group's prompt, a reused prefix).
    pub blocks_shared: usize,
    /// Blocks in the prefix cache (used or not).
    pub blocks_cached: usize,
    /// Sequences preempted for lack of blocks since the engine started.
    pub preemptions: u64,
    /// Blocks found in the prefix cache instead of computed since the engine started.
    pub prefix_hit_blocks: u64,
}

/// An inference engine.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// What is being served.
    fn info(&self) -> &ModelInfo;

    /// Turns a prompt into the token ids the model will see.
    async fn tokenize(&self, prompt: &PromptInput) -> Result<Vec<u32>, EngineError>;

    /// Generates one sequence. Concurrent calls are batched by the engine.
    async fn generate(&self, request: SequenceRequest) -> Result<SequenceOutput, EngineError>;

    /// The text of `ids`, with or without the special tokens' own text: what `/detokenize`
    /// answers and a generation's text is made of.
    async fn detokenize(&self, ids: &[u32], skip_special: bool) -> Result<String, EngineError>;

    /// Each token's own text (special tokens spelled out), as a log-prob listing names its
    /// tokens. An engine may decode them in one call; the default asks one token at a time.
    async fn token_texts(&self, ids: &[u32]) -> Result<Vec<String>, EngineError> {
        let mut texts = Vec::with_capacity(ids.len());
        for &id in ids {
            texts.push(self.detokenize(&[id], false).await?);
        }
        Ok(texts)
    }

    /// The paged KV cache's state, for an engine that keeps one (the native engine).
    fn kv_cache(&self) -> Option<KvCacheState> {
        None
    }

    /// Empties the engine's prefix cache (sequences running keep their blocks); returns the
    /// blocks it dropped, or `None` for an engine whose prefix cache cannot be flushed.
    async fn flush_cache(&self) -> Result<Option<usize>, EngineError> {
        Ok(None)
    }
}

/// Checks that `path` holds a model (a GGUF file or a complete safetensors directory) and
/// returns the architecture a directory declares.
#[cfg_attr(not(any(feature = "mistralrs", feature = "native")), allow(dead_code))]
fn inspect_model(path: &Path) -> anyhow::Result<Option<ModelShape>> {
    anyhow::ensure!(
        path.exists(),
        "model {} not found (run `entroll fetch-model` for the default model)",
        path.display()
    );
    Ok(checkpoint::inspect(path)?)
}

/// The id a model is served under: its file or directory name, extension left out.
#[cfg_attr(not(any(feature = "mistralrs", feature = "native")), allow(dead_code))]
fn model_id(path: &Path) -> String {
    // A directory's whole name (`Qwen2.5-Math-1.5B-Instruct`), a file's without its extension.
    let name = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    name.map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_s_id_keeps_a_directory_s_dots_and_drops_a_file_s_extension() {
        let dir = std::env::temp_dir().join(format!("Qwen2.5-Math-1.5B-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(model_id(&dir), dir.file_name().unwrap().to_str().unwrap());
        assert!(model_id(&dir).starts_with("Qwen2.5-Math-1.5B-"));
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(
            model_id(Path::new("/models/SmolLM2-135M-Instruct.Q4_1.gguf")),
            "SmolLM2-135M-Instruct.Q4_1"
        );
    }
}
