//! SGLang's native routes, as slime and AReaL call them: `POST /generate` (text or token ids in,
//! `text`, `output_ids` and `meta_info` out) and the control routes around a weight update
//! (`/update_weights_from_disk`, `/get_weight_version`, `/pause_generation`,
//! `/continue_generation`, `/flush_cache`, `/abort_request`, `/get_server_info`,
//! `/model_info`).
//!
//! Field names are SGLang's. Every field its clients send is read (and refused with a reason
//! where serving it would change the distribution entroll samples from and reports on); an
//! unknown one is refused, as on every route. Each answer carries entroll's statistics of its
//! tokens under `entroll`, the very [`Sample`] of `/rollouts`. SGLang names weights versions
//! with strings; entroll's are integers, written as their decimal strings here.

use serde::{Deserialize, Serialize};

use super::openai::OneOrMany;
use super::rollouts::{AdvantageSpec, Sample, StatsSpec};

/// `POST /generate`: one prompt or a batch, as text or token ids.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// The prompt's text, or a batch of texts.
    #[serde(default)]
    pub text: Option<OneOrMany<String>>,
    /// The prompt's token ids, or a batch of them.
    #[serde(default)]
    pub input_ids: Option<InputIds>,
    /// How to sample (one set for every prompt).
    #[serde(default)]
    pub sampling_params: SamplingParams,
    /// Return `meta_info.output_token_logprobs` (one flag for every prompt).
    #[serde(default)]
    pub return_logprob: Option<bool>,
    /// Where prompt log-probs start (only -1, none, is served).
    #[serde(default)]
    pub logprob_start_len: Option<i64>,
    /// Alternatives per token in `meta_info.output_top_logprobs`.
    #[serde(default)]
    pub top_logprobs_num: Option<u32>,
    /// Text in the log-prob lists instead of null (only false is served).
    #[serde(default)]
    pub return_text_in_logprobs: Option<bool>,
    /// Stream cumulative answers as server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// The caller's id of the request (`meta_info.id`).
    #[serde(default)]
    pub rid: Option<OneOrMany<String>>,
    /// Images (only null or an empty list, none, is served).
    #[serde(default)]
    pub image_data: Option<serde_json::Value>,
    /// A LoRA adapter (only null is served).
    #[serde(default)]
    pub lora_path: Option<serde_json::Value>,
    /// A custom logit processor (only null is served).
    #[serde(default)]
    pub custom_logit_processor: Option<serde_json::Value>,
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

/// One prompt's token ids, or a batch.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum InputIds {
    /// One prompt.
    One(Vec<u32>),
    /// A batch.
    Batch(Vec<Vec<u32>>),
}

/// SGLang's sampling parameters, the fields its clients send.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingParams {
    /// Tokens to generate at most (SGLang's default: 128).
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    /// Tokens to generate at least (only 0 is served).
    #[serde(default)]
    pub min_new_tokens: Option<usize>,
    /// Temperature (0: greedy).
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus truncation.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Top-k truncation (-1 or 0: none).
    #[serde(default)]
    pub top_k: Option<i64>,
    /// Min-p truncation (only 0 is served).
    #[serde(default)]
    pub min_p: Option<f64>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Option<OneOrMany<String>>,
    /// Stop ids (served when each is an end-of-sequence id of the model).
    #[serde(default)]
    pub stop_token_ids: Option<Vec<u32>>,
    /// Samples per prompt.
    #[serde(default)]
    pub n: Option<usize>,
    /// Go on past the end of sequence (only false is served).
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    /// Text option: special tokens left out of `text` (only true is served).
    #[serde(default)]
    pub skip_special_tokens: Option<bool>,
    /// Text option (only false is served: the text is cut before a stop string).
    #[serde(default)]
    pub no_stop_trim: Option<bool>,
    /// Text option: accepted, it changes nothing drawn.
    #[serde(default)]
    pub spaces_between_special_tokens: Option<bool>,
    /// The draw's seed.
    #[serde(default)]
    pub sampling_seed: Option<u64>,
    /// Penalties (only their neutral values are served).
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    /// See `frequency_penalty`.
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    /// See `frequency_penalty`.
    #[serde(default)]
    pub repetition_penalty: Option<f64>,
    /// Constrained decoding (only null is served).
    #[serde(default)]
    pub json_schema: Option<serde_json::Value>,
    /// See `json_schema`.
    #[serde(default)]
    pub regex: Option<serde_json::Value>,
    /// See `json_schema`.
    #[serde(default)]
    pub ebnf: Option<serde_json::Value>,
    /// Logit biases (only none is served).
    #[serde(default)]
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    /// Parameters of a custom logit processor (only null is served).
    #[serde(default)]
    pub custom_params: Option<serde_json::Value>,
}

/// One sample of a `/generate` answer (a batch, or `n` above 1, answers a list of them,
/// prompt by prompt).
#[derive(Debug, Clone, Serialize)]
pub struct GenerateAnswer {
    /// The generated text (special tokens left out, cut before a stop string).
    pub text: String,
    /// The generated tokens.
    pub output_ids: Vec<u32>,
    /// What SGLang's clients read besides.
    pub meta_info: MetaInfo,
    /// entroll's statistics of this sample's tokens.
    pub entroll: Sample,
}

/// A sample's `meta_info`.
#[derive(Debug, Clone, Serialize)]
pub struct MetaInfo {
    /// The request's id (the caller's `rid`, or a fresh one).
    pub id: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// The prompt's tokens.
    pub prompt_tokens: usize,
    /// The generated tokens.
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache (not counted: 0).
    pub cached_tokens: usize,
    /// The weights version that drew the first token, as a string.
    pub weight_version: String,
    /// Seconds from the request's arrival to its answer.
    pub e2e_latency: f64,
    /// With `return_logprob`: `[logprob, id, null]` per generated token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_token_logprobs: Option<Vec<LogprobEntry>>,
    /// With `top_logprobs_num`: per token, its alternatives as `[logprob, id, null]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_top_logprobs: Option<Vec<Vec<LogprobEntry>>>,
}

/// One token in SGLang's log-prob lists: `[logprob, id, null]` (the null stands for the
/// token's text, which SGLang gives only with `return_text_in_logprobs`).
pub type LogprobEntry = (f32, u32, Option<()>);

/// SGLang's finish reason: `{type: stop, matched}`, `{type: length, length}` or
/// `{type: abort, message}`.
#[derive(Debug, Clone, Serialize)]
pub struct FinishReason {
    /// `stop`, `length` or `abort`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// With `stop`: the end-of-sequence id that ended it, or null after a stop string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<Option<u32>>,
    /// With `length`: the tokens generated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<usize>,
    /// With `abort`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /update_weights_from_disk`: serve the checkpoint at `model_path`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateFromDiskRequest {
    /// A safetensors directory or a `.gguf` file on the server's filesystem.
    pub model_path: String,
    /// The new version's name: an integer (or its decimal string) above the served one.
    #[serde(default)]
    pub weight_version: Option<VersionName>,
    /// The checkpoint's format (only null or `auto` is served: entroll reads the path's).
    #[serde(default)]
    pub load_format: Option<String>,
    /// End the running samples with what they drew (`finish_reason` `abort`) instead of
    /// letting them finish on the old weights.
    #[serde(default)]
    pub abort_all_requests: Option<bool>,
    /// Flush the prefix cache: accepted, a swap starts an empty one.
    #[serde(default)]
    pub flush_cache: Option<bool>,
    /// Only true is served: the update loads the weights before it answers.
    #[serde(default)]
    pub is_async: Option<bool>,
}

/// A weights version's name: an integer or a string holding one.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum VersionName {
    /// An integer.
    Number(u64),
    /// A string (a decimal integer to be served).
    Text(String),
}

/// `/update_weights_from_disk`'s answer (200 with `success: true`, 400 with `false`).
#[derive(Debug, Clone, Serialize)]
pub struct UpdateAnswer {
    /// Whether the new weights serve now.
    pub success: bool,
    /// What happened, in words.
    pub message: String,
    /// Requests that waited for the update (none: entroll's updates pause nothing).
    pub num_paused_requests: usize,
    /// entroll: the version served now.
    pub weight_version: String,
}

/// `GET /get_weight_version`.
#[derive(Debug, Clone, Serialize)]
pub struct WeightVersion {
    /// The version served now, as a string.
    pub weight_version: String,
}

/// `POST /pause_generation`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// `abort` (the default: running samples end with what they drew), `retract` or
    /// `in_place` (they stop and go on after `/continue_generation`).
    #[serde(default)]
    pub mode: Option<String>,
}

/// `POST /abort_request`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortRequest {
    /// One request's id (not served: give `abort_all`).
    #[serde(default)]
    pub rid: Option<String>,
    /// End every running sample with what it drew.
    #[serde(default)]
    pub abort_all: Option<bool>,
}

/// The answer of the pause, continue, flush and abort routes.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    /// What happened, in words.
    pub message: String,
    /// Always `ok`.
    pub status: &'static str,
}

/// `GET /get_server_info` (and `/server_info`): what slime and AReaL read of the server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    /// The served checkpoint.
    pub model_path: String,
    /// Its tokenizer (the checkpoint's own).
    pub tokenizer_path: String,
    /// The name requests use.
    pub served_model_name: String,
    /// Longest prompt plus generation, in tokens (null when unknown).
    pub context_len: Option<usize>,
    /// Samples the engine runs at once.
    pub max_running_requests: usize,
    /// The version served now, as a string.
    pub weight_version: String,
    /// Copies of the model (1).
    pub dp_size: usize,
    /// GPUs one copy spans (1).
    pub tp_size: usize,
    /// Whether generation is paused.
    pub paused: bool,
    /// `entroll` and its version.
    pub version: String,
}

/// `GET /model_info`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// The served checkpoint.
    pub model_path: String,
    /// Its tokenizer (the checkpoint's own).
    pub tokenizer_path: String,
    /// Always true.
    pub is_generation: bool,
    /// The version served now, as a string.
    pub weight_version: String,
}

/// A failed SGLang-dialect request: `{"error": {"message", "error_type"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error's details.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// What is wrong, in words.
    pub message: String,
    /// entroll's `error_type`.
    pub error_type: String,
}
