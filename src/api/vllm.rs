//! vLLM's own routes, as the RL frameworks call them: token-in/token-out generation
//! (`POST /inference/v1/generate`, prime-rl's and SkyRL's training path) and the control routes
//! around a weight update (`/pause`, `/resume`, `/is_paused`, prime-rl's `/update_weights`,
//! `/get_world_size`, `/reset_prefix_cache`).
//!
//! Field names are vLLM's; every field vLLM's clients send is read (and refused with a reason
//! where serving it would change the distribution entroll samples from and reports on), and an
//! unknown one is refused, as on every route. Each choice carries entroll's statistics under
//! `entroll`, the very [`Sample`] of `/rollouts`, and the answer the request's [`Extension`].

use serde::{Deserialize, Serialize};

use super::openai::answer::ChatLogprobs;
use super::openai::{Extension, OneOrMany};
use super::rollouts::{AdvantageSpec, Sample, StatsSpec};

/// `POST /inference/v1/generate`: one prompt's token ids and vLLM's sampling parameters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// The served model's name, if given.
    #[serde(default)]
    pub model: Option<String>,
    /// The prompt's token ids.
    pub token_ids: Vec<u32>,
    /// How to sample.
    #[serde(default)]
    pub sampling_params: SamplingParams,
    /// The caller's id of the request, echoed with vLLM's prefix (`generate-tokens-…`).
    #[serde(default)]
    pub request_id: Option<String>,
    /// Stream the answer (not served: the frameworks' clients read it whole).
    #[serde(default)]
    pub stream: Option<bool>,
    /// A prefix-cache namespace (prime-rl and SkyRL change it per weights version): accepted;
    /// entroll's prefix cache never outlives the weights it was computed with.
    #[serde(default)]
    pub cache_salt: Option<String>,
    /// Scheduling priority: accepted; entroll serves requests in arrival order.
    #[serde(default)]
    pub priority: Option<i64>,
    /// Disaggregated prefill's hand-over (only null is served).
    #[serde(default)]
    pub kv_transfer_params: Option<serde_json::Value>,
    /// Mixture-of-experts routing replay's start (verifiers' renderers send it for some
    /// models): accepted, entroll's models route nothing.
    #[serde(default)]
    pub routed_experts_prompt_start: Option<usize>,
    /// entroll: statistics parameters, as `/rollouts`' `stats`.
    #[serde(default)]
    pub stats: Option<StatsSpec>,
    /// entroll: the advantage estimator, as `/rollouts`' `advantage`.
    #[serde(default)]
    pub advantage: Option<AdvantageSpec>,
    /// entroll: the request's deadline, as `/rollouts`' `timeout_ms`.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// entroll: return each truncated draw's sampling mask, as `/rollouts`'.
    #[serde(default)]
    pub return_sampling_mask: Option<bool>,
}

/// vLLM's `SamplingParams`, the fields its clients send.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingParams {
    /// Samples of the prompt.
    #[serde(default)]
    pub n: Option<usize>,
    /// Temperature (0: greedy).
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus truncation.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Top-k truncation (0 or -1: none).
    #[serde(default)]
    pub top_k: Option<i64>,
    /// Min-p truncation (only 0 is served).
    #[serde(default)]
    pub min_p: Option<f64>,
    /// The draw's seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Option<OneOrMany<String>>,
    /// Stop ids (served when each is an end-of-sequence id of the model).
    #[serde(default)]
    pub stop_token_ids: Option<Vec<u32>>,
    /// Go on past the end of sequence (only false is served).
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    /// Tokens to generate at most (default: the server's `default_max_tokens`).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Tokens to generate at least (only 0 is served).
    #[serde(default)]
    pub min_tokens: Option<usize>,
    /// Alternatives listed per token besides the drawn one (null: no listing).
    #[serde(default)]
    pub logprobs: Option<u32>,
    /// Prompt log-probs (only null is served).
    #[serde(default)]
    pub prompt_logprobs: Option<u32>,
    /// Text options: accepted, the route answers token ids.
    #[serde(default)]
    pub skip_special_tokens: Option<bool>,
    /// Text option: accepted, the route answers token ids.
    #[serde(default)]
    pub spaces_between_special_tokens: Option<bool>,
    /// Text option: accepted, the route answers token ids.
    #[serde(default)]
    pub include_stop_str_in_output: Option<bool>,
    /// Text option: accepted, the route answers token ids.
    #[serde(default)]
    pub detokenize: Option<bool>,
    /// Penalties (only their neutral values are served).
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    /// See `presence_penalty`.
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    /// See `presence_penalty`.
    #[serde(default)]
    pub repetition_penalty: Option<f64>,
    /// Logit biases (only none is served).
    #[serde(default)]
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `POST /inference/v1/generate`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateResponse {
    /// `generate-tokens-` and the caller's id, or a fresh one.
    pub request_id: String,
    /// The samples, in index order.
    pub choices: Vec<GenerateChoice>,
    /// Always null (prompt log-probs are not served).
    pub prompt_logprobs: Option<()>,
    /// Always null.
    pub kv_transfer_params: Option<()>,
    /// What served the request, its aggregates and its group's statistics.
    pub entroll: Extension,
}

/// One sample of a generate answer.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateChoice {
    /// The sample's index.
    pub index: usize,
    /// The generated tokens.
    pub token_ids: Vec<u32>,
    /// With `logprobs`: each token's log-prob and alternatives, named `token_id:N`.
    pub logprobs: Option<ChatLogprobs>,
    /// `stop`, `length` or `abort`.
    pub finish_reason: &'static str,
    /// entroll's statistics of this sample's tokens.
    pub entroll: Sample,
}

/// `POST /update_weights` (prime-rl's filesystem transport): serve the checkpoint in
/// `weight_dir`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateWeightsRequest {
    /// A safetensors directory or a `.gguf` file on the server's filesystem.
    pub weight_dir: String,
    /// entroll: the new weights version (default: the served one + 1).
    #[serde(default)]
    pub version: Option<u64>,
}

/// The control routes' answer: `{"status": …}` (`paused`, `resumed`, `ok`).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// What happened.
    pub status: &'static str,
    /// entroll: the weights version served now.
    pub weights_version: u64,
}

/// `GET /is_paused`.
#[derive(Debug, Clone, Serialize)]
pub struct IsPaused {
    /// Whether generation is paused.
    pub is_paused: bool,
}

/// `GET /get_world_size`: the GPUs one copy of the model spans (entroll: always 1).
#[derive(Debug, Clone, Serialize)]
pub struct WorldSize {
    /// Always 1.
    pub world_size: usize,
}
