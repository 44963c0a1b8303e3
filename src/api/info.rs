//! `GET /info`: what is served, the defaults applied to absent request fields, and the limits
//! enforced on requests.

use serde::Serialize;

use super::rollouts::{AdvantageSpec, StatsParams};
pub use crate::engine::KvCacheState;

/// `GET /info` response.
#[derive(Debug, Clone, Serialize)]
pub struct InfoResponse {
    /// Model id.
    pub model: String,
    /// Model source path.
    pub model_path: String,
    /// Engine implementation serving the model (`native` or `mistralrs`).
    pub engine: String,
    /// Who draws tokens.
    pub sampler: String,
    /// Whether the engine runs entroll's device kernels (token statistics, attention, cache
    /// writes).
    pub device_kernels: bool,
    /// Output rows (V).
    pub vocab_size: usize,
    /// The model's context length, if known.
    pub max_context: Option<usize>,
    /// Sequences the engine runs in one forward (1 for mistral.rs on CPU).
    pub engine_batch: usize,
    /// Current weights version.
    pub weights_version: u64,
    /// The paged KV cache's blocks (the native engine; absent for mistral.rs): block size,
    /// total, allocated, used, shared and cached, preemptions and prefix-cache hits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_cache: Option<KvCacheState>,
    /// Defaults applied to absent request fields.
    pub defaults: Defaults,
    /// Limits enforced on requests.
    pub limits: Limits,
}

/// Defaults for absent request fields.
#[derive(Debug, Clone, Serialize)]
pub struct Defaults {
    /// Group size.
    pub group_size: usize,
    /// Sampling defaults (seed omitted: random per request).
    pub sampling: SamplingDefaults,
    /// Statistics defaults.
    pub stats: StatsParams,
    /// Advantage estimator.
    pub advantage: AdvantageSpec,
}

/// Sampling defaults.
#[derive(Debug, Clone, Serialize)]
pub struct SamplingDefaults {
    /// Temperature.
    pub temperature: f64,
    /// Top-p.
    pub top_p: f64,
    /// Top-k.
    pub top_k: Option<usize>,
    /// Max tokens.
    pub max_tokens: usize,
}

/// Request limits.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Most prompts per request.
    pub max_prompts: usize,
    /// Largest group size.
    pub max_group_size: usize,
    /// Largest `max_tokens`.
    pub max_new_tokens: usize,
    /// Sequences the engine runs at once.
    pub max_running_sequences: usize,
    /// Requests admitted at once.
    pub max_requests: usize,
    /// Largest body in bytes.
    pub max_body_bytes: usize,
    /// Most tokens one request may ask to sample (group sizes x `max_tokens`).
    pub max_request_tokens: usize,
    /// Largest `timeout_ms`.
    pub max_timeout_ms: u64,
}
