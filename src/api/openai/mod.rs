//! OpenAI's dialect, with vLLM's extensions: what `/v1/completions`, `/v1/chat/completions`,
//! `/v1/models`, `/tokenize` and `/detokenize` read and answer, so that evaluation harnesses,
//! agent frameworks and trainers written against vLLM reach entroll unchanged.
//!
//! One request type serves both generation routes ([`GenerateRequest`]: a completion's `prompt`
//! or a chat's `messages`), as vLLM's field names are the same on both; the HTTP layer checks
//! which fields each route takes. Every choice carries entroll's statistics of its tokens under
//! `entroll`, the very [`Sample`] of `/rollouts`.

use serde::{Deserialize, Serialize};

use super::rollouts::{AdvantageSpec, FinishReason, Sample, Served, StatsSpec, Summary};

pub mod answer;
pub mod tokens;

/// A string or a list of them (`stop`, `answer`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// One value.
    One(T),
    /// A list.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The values as a list.
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A completion's `prompt`: text, token ids, or a batch of either; each prompt gets `n`
/// choices.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One text.
    Text(String),
    /// One prompt as token ids.
    TokenIds(Vec<u32>),
    /// A batch of texts.
    Texts(Vec<String>),
    /// A batch of token-id prompts.
    TokenIdBatch(Vec<Vec<u32>>),
}

/// One chat message. `content` is a string, a list of text parts, or null (an assistant turn
/// without text).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// `system`, `user`, `assistant` or another role the chat template knows.
    pub role: String,
    /// The text, whole or in parts; null is empty.
    #[serde(default)]
    pub content: Option<Content>,
    /// A participant's name: accepted, and passed to no template (entroll's chat templates
    /// render roles and content).
    #[serde(default)]
    pub name: Option<String>,
}

/// A message's content.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts, each `{"type": "text", "text": ...}`.
    Parts(Vec<ContentPart>),
}

/// One part of a message's content; only text is served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentPart {
    /// `text` (anything else is refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The part's text.
    #[serde(default)]
    pub text: Option<String>,
}

/// `logprobs`: a count on `/v1/completions` (top alternatives beyond the drawn token), a flag on
/// `/v1/chat/completions` (with `top_logprobs` for the count).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum LogprobsField {
    /// Chat: whether to return log-probs.
    Flag(bool),
    /// Completions: how many alternatives besides the drawn token.
    Count(u32),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with the request's `usage`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// The body of `POST /v1/completions` and `POST /v1/chat/completions`, with vLLM's extensions
/// and entroll's. Fields a route does not take are refused by the HTTP layer, naming them;
/// unknown fields are refused here, so nothing that changes sampling is silently ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// The served model's id (`GET /v1/models`); any other is refused.
    #[serde(default)]
    pub model: Option<String>,
    /// Completions: the prompt or prompts.
    #[serde(default)]
    pub prompt: Option<Prompt>,
    /// Chat: the conversation, rendered with the model's chat template.
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
    /// Choices per prompt (entroll's group size).
    #[serde(default)]
    pub n: Option<usize>,
    /// Most generated tokens per choice.
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Chat: OpenAI's newer name for `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    /// Temperature; 0 is greedy.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus truncation of the sampling distribution.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Top-k truncation; 0 or -1 for none (vLLM's convention).
    #[serde(default)]
    pub top_k: Option<i64>,
    /// Seed of entroll's counter-based draws; the same seed draws the same tokens as
    /// `/rollouts`.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Option<OneOrMany<String>>,
    /// Answer as server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Log-probs of the drawn tokens (see [`LogprobsField`]).
    #[serde(default)]
    pub logprobs: Option<LogprobsField>,
    /// Chat: top alternatives per token.
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    /// Completions: prepend the prompt to the text (not served).
    #[serde(default)]
    pub echo: Option<bool>,
    /// vLLM: return `prompt_token_ids` and each choice's `token_ids`.
    #[serde(default)]
    pub return_token_ids: Option<bool>,
    /// vLLM: name tokens `token_id:N` in log-prob listings instead of by their text.
    #[serde(default)]
    pub return_tokens_as_token_ids: Option<bool>,
    /// Chat: end the rendered prompt with the assistant's turn (only `true` is served).
    #[serde(default)]
    pub add_generation_prompt: Option<bool>,
    /// Accepted, changes nothing: an end user's id.
    #[serde(default)]
    pub user: Option<String>,
    /// Accepted, changes nothing: vLLM's prefix-cache salt (entroll keeps no prefix cache
    /// across requests).
    #[serde(default)]
    pub cache_salt: Option<String>,
    /// Accepted, changes nothing: vLLM's scheduling priority (entroll serves in arrival order).
    #[serde(default)]
    pub priority: Option<i64>,
    /// The text leaves special tokens out: `true` is accepted, `false` refused.
    #[serde(default)]
    pub skip_special_tokens: Option<bool>,
    /// Accepted, changes nothing: special tokens never reach the text.
    #[serde(default)]
    pub spaces_between_special_tokens: Option<bool>,
    /// vLLM: token ids that end a choice; served when they are the model's own end-of-sequence
    /// ids (on which every choice ends anyway), refused otherwise.
    #[serde(default)]
    pub stop_token_ids: Option<Vec<u32>>,
    /// vLLM: served only `false`.
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    /// vLLM: served only `false`.
    #[serde(default)]
    pub use_beam_search: Option<bool>,
    /// vLLM: served only `false` (the text is cut before a stop string).
    #[serde(default)]
    pub include_stop_str_in_output: Option<bool>,
    /// vLLM: would change the distribution (the end of sequence masked): served only 0.
    #[serde(default)]
    pub min_tokens: Option<usize>,
    /// vLLM: extra variables of the chat template: served only empty.
    #[serde(default)]
    pub chat_template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
    /// OpenAI: candidates per choice; served only equal to `n` (no candidate is dropped).
    #[serde(default)]
    pub best_of: Option<usize>,
    /// Would change the distribution: served only at its neutral value, 0.
    #[serde(default)]
    pub min_p: Option<f64>,
    /// Would change the distribution: served only at its neutral value, 1.
    #[serde(default)]
    pub repetition_penalty: Option<f64>,
    /// Would change the distribution: served only at its neutral value, 0.
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    /// Would change the distribution: served only at its neutral value, 0.
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    /// Would change the distribution: served only empty.
    #[serde(default)]
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    /// entroll: the gold answer (one, or one per prompt) the verifier scores each choice
    /// against.
    #[serde(default)]
    pub answer: Option<OneOrMany<String>>,
    /// entroll: statistics parameters, as `/rollouts`' `stats`.
    #[serde(default)]
    pub stats: Option<StatsSpec>,
    /// entroll: advantage estimator, as `/rollouts`' `advantage`.
    #[serde(default)]
    pub advantage: Option<AdvantageSpec>,
    /// entroll: return each choice's sampling masks (as `/rollouts`).
    #[serde(default)]
    pub return_sampling_mask: Option<bool>,
    /// entroll: the request's deadline in milliseconds (as `/rollouts`).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Which log-probs `logprobs` reports (the server's `openai_logprobs`, vLLM's `logprobs_mode`).
/// Every choice's `entroll` object holds both either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogprobsMode {
    /// Under the distribution sampled from: after temperature, top-k and top-p, renormalised
    /// (vLLM's `processed_logprobs`; what an importance ratio needs).
    Processed,
    /// Under the full distribution at the temperature, before truncation.
    Full,
}

/// `usage`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, counted once per prompt.
    pub prompt_tokens: usize,
    /// Generated tokens over every choice.
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
}

/// The whole answer's `entroll` object: what served it, the request's aggregates and each
/// prompt's group statistics. Each choice carries its own sample's statistics.
#[derive(Debug, Clone, Serialize)]
pub struct Extension {
    /// Model, weights version and the effective parameters.
    #[serde(flatten)]
    pub served: Served,
    /// Which log-probs `logprobs` reports.
    pub logprobs_mode: LogprobsMode,
    /// Request-level aggregates, as `/rollouts`' `summary`.
    pub summary: Summary,
    /// Per prompt, in prompt order: its group's statistics.
    pub groups: Vec<GroupStats>,
}

/// One prompt's group statistics (null without a gold answer), as in `/rollouts`.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStats {
    /// The prompt's position in the request.
    pub prompt_index: usize,
    /// Mean of `correct`.
    pub pass_rate: Option<f64>,
    /// Mean reward.
    pub reward_mean: Option<f64>,
    /// Unbiased reward standard deviation.
    pub reward_std: Option<f64>,
    /// All rewards equal.
    pub all_equal: Option<bool>,
}

/// `finish_reason` in OpenAI's words (`stop`, `length`, `abort` as vLLM says it).
pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Abort => "abort",
    }
}

/// The `entroll` object of a choice: the sample's statistics exactly as `/rollouts` gives them.
pub type ChoiceStats = Sample;

/// Every error body in this dialect: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// In words.
    pub message: String,
    /// OpenAI's class of error (`invalid_request_error`, `authentication_error`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, where one is.
    pub param: Option<String>,
    /// entroll's `error_type` (`validation`, `overloaded`, ...), or OpenAI's
    /// `model_not_found`.
    pub code: Option<String>,
}
