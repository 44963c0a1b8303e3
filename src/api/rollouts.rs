//! `POST /rollouts`: the request, the effective parameters echoed back, and the answer, whole
//! or streamed line by line.

use serde::{Deserialize, Serialize};

use super::error::ErrorBody;
use crate::stats::distribution::NucleusRule;

/// The engine layer owns these; the wire format re-exports them.
pub use crate::engine::{ChatMessage, FinishReason};

/// `POST /rollouts` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// The prompts; each becomes one group.
    pub prompts: Vec<PromptSpec>,
    /// Samples per prompt (G); the server default if absent.
    #[serde(default)]
    pub group_size: Option<usize>,
    /// Sampling parameters.
    #[serde(default)]
    pub sampling: SamplingSpec,
    /// Statistics parameters.
    #[serde(default)]
    pub stats: StatsSpec,
    /// Advantage estimator (applies once rewards exist).
    #[serde(default)]
    pub advantage: Option<AdvantageSpec>,
    /// Deadline for the whole request in milliseconds; past it the request is answered 504
    /// `timeout` and its sequences are cancelled.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Answer `application/x-ndjson`: one [`StreamLine`] per group as soon as its samples are
    /// done, then the summary.
    #[serde(default)]
    pub stream: bool,
    /// Return, for every token whose draw top-k or top-p truncated, the ids the truncation
    /// kept and their mass (`sampling_mask`, `sampling_mass`), so a learner can replay the
    /// sampling distribution.
    #[serde(default)]
    pub return_sampling_mask: bool,
    /// Return each token's `top_logprobs` most probable alternatives (at most
    /// [`MAX_TOP_LOGPROBS`]; 0: none).
    #[serde(default)]
    pub top_logprobs: usize,
}

/// The most alternatives a token's listing may hold (vLLM's default `max_logprobs`).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// One prompt: exactly one of `messages`, `text`, `token_ids`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    /// Echoed back; defaults to the prompt's position.
    #[serde(default)]
    pub id: Option<String>,
    /// Chat messages, rendered with the model's chat template.
    #[serde(default)]
    pub messages: Option<Vec<ChatMessage>>,
    /// Raw text, tokenized without a chat template.
    #[serde(default)]
    pub text: Option<String>,
    /// Token ids, used as they are.
    #[serde(default)]
    pub token_ids: Option<Vec<u32>>,
    /// Gold answer; enables rewards.
    #[serde(default)]
    pub answer: Option<String>,
    /// Per-prompt group size.
    #[serde(default)]
    pub group_size: Option<usize>,
}

/// Requested sampling parameters; absent ones take the server's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingSpec {
    /// Temperature `T > 0`.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus truncation of the sampling distribution, in (0, 1].
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Top-k truncation; null for none.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Most generated tokens per sample.
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Option<Vec<String>>,
    /// Seed of the counter-based RNG; drawn at random (and echoed) if absent.
    #[serde(default)]
    pub seed: Option<u64>,
}

/// Requested statistics parameters; absent ones take `docs/statistics.md`'s defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsSpec {
    /// Nucleus mass `p` (default 0.8).
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Candidates considered for the nucleus (default 10,000).
    #[serde(default)]
    pub top_k_candidates: Option<usize>,
    /// Nucleus boundary rule (default strict).
    #[serde(default)]
    pub nucleus: Option<NucleusRule>,
    /// Quantile `q` of the peak threshold (default 0.8).
    #[serde(default)]
    pub peak_quantile: Option<f64>,
    /// Scope of the peak quantile (default response).
    #[serde(default)]
    pub peak_scope: Option<PeakScope>,
    /// Which per-token value peaks are taken on (default top_p_entropy).
    #[serde(default)]
    pub peak_on: Option<PeakOn>,
}

/// Over which tokens the peak quantile is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeakScope {
    /// Each response's own tokens (SIREN).
    Response,
    /// All response tokens of the request.
    Batch,
}

/// The per-token value peak flags are computed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeakOn {
    /// Entropy of the SIREN nucleus (SIREN).
    TopPEntropy,
    /// Full-vocabulary entropy (80/20 forking tokens).
    Entropy,
}

/// Advantage estimator: `"grpo"`, `"drgrpo"` or `{"qae": K}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageSpec {
    /// `(r - mean) / (std + 1e-6)`.
    Grpo,
    /// `r - mean`.
    Drgrpo,
    /// `r - Q_K(group rewards)`, K in [0, 1].
    Qae(f64),
}

/// Effective sampling parameters, echoed in every response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SamplingParams {
    /// Temperature.
    pub temperature: f64,
    /// Sampling top-p.
    pub top_p: f64,
    /// Sampling top-k.
    pub top_k: Option<usize>,
    /// Most generated tokens per sample.
    pub max_tokens: usize,
    /// Stop strings.
    pub stop: Vec<String>,
    /// The seed used.
    pub seed: u64,
}

/// Effective statistics parameters, echoed in every response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsParams {
    /// Nucleus mass `p`.
    pub top_p: f64,
    /// Candidates considered for the nucleus.
    pub top_k_candidates: usize,
    /// Nucleus boundary rule.
    pub nucleus: NucleusRule,
    /// Peak quantile.
    pub peak_quantile: f64,
    /// Peak scope.
    pub peak_scope: PeakScope,
    /// Peak value.
    pub peak_on: PeakOn,
}

/// `POST /rollouts` response.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutResponse {
    /// What served the request and with which parameters.
    #[serde(flatten)]
    pub served: Served,
    /// Groups in request order.
    pub groups: Vec<Group>,
    /// Request-level aggregates.
    pub summary: Summary,
}

/// The fields of a `/rollouts` answer besides its groups: the model, its weights version and
/// the effective parameters.
#[derive(Debug, Clone, Serialize)]
pub struct Served {
    /// Model id.
    pub model: String,
    /// Rows of the model's output distribution (V).
    pub vocab_size: usize,
    /// Weights version that served the request.
    pub weights_version: u64,
    /// Effective sampling parameters.
    pub sampling: SamplingParams,
    /// Effective statistics parameters.
    pub stats: StatsParams,
    /// Effective advantage estimator.
    pub advantage: AdvantageSpec,
}

/// One line of a streamed `/rollouts` answer (`"stream": true`, `application/x-ndjson`).
/// Its groups and last line together hold exactly the fields of the unstreamed answer.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum StreamLine {
    /// `{"group": {...}}`: a group, as soon as all its samples are done (completion order).
    Group {
        /// The group, exactly as in the unstreamed answer.
        group: Group,
    },
    /// `{"error": ..., "error_type": ...}`: the request failed; no line follows.
    Error(ErrorBody),
    /// The last line: `{"summary": {...}}` with the unstreamed answer's other fields.
    Summary {
        /// Request-level aggregates.
        summary: Summary,
        /// Model, weights version and effective parameters.
        #[serde(flatten)]
        served: Served,
    },
}

/// One of a token's most probable alternatives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TopLogprob {
    /// Its token id.
    pub id: u32,
    /// `ln pi(id)`, full distribution at the temperature (as `logprobs`).
    pub logprob: f32,
    /// `ln` of its probability under the truncated distribution the token was drawn from (as
    /// `sampling_logprobs`); null where the truncation cut it.
    pub sampling_logprob: Option<f32>,
}

/// The samples of one prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// The prompt's id.
    pub id: String,
    /// The prompt's tokens as the model saw them.
    pub prompt_token_ids: Vec<u32>,
    /// Mean of `correct`; null without a gold answer.
    pub pass_rate: Option<f64>,
    /// Mean reward; null without a gold answer.
    pub reward_mean: Option<f64>,
    /// Unbiased reward standard deviation; null without a gold answer.
    pub reward_std: Option<f64>,
    /// All rewards equal (zero-variance group); null without a gold answer.
    pub all_equal: Option<bool>,
    /// Samples in index order.
    pub samples: Vec<Sample>,
}

/// One generated response with its per-token statistics.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Index within the group.
    pub index: usize,
    /// Decoded text.
    pub text: String,
    /// Generated token ids (the stop token included).
    pub token_ids: Vec<u32>,
    /// `ln pi(y_t)`, full distribution.
    pub logprobs: Vec<f32>,
    /// ln probability under the truncated sampling distribution.
    pub sampling_logprobs: Vec<f32>,
    /// Per token, the ids its truncated draw could pick, in the compact form of
    /// [`crate::stats::mask_codec`]; null where the draw kept every token. Only with
    /// `return_sampling_mask` on a request whose sampling truncates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling_mask: Option<Vec<Option<String>>>,
    /// Per token, the full-distribution mass of that set (1 where nothing was cut), so
    /// `logprob - sampling_logprob = ln sampling_mass`. With `sampling_mask` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling_mass: Option<Vec<f32>>,
    /// Per token, its distribution's most probable tokens, highest first (ties by lower id).
    /// Only with `top_logprobs` above 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<Vec<Vec<TopLogprob>>>,
    /// Full-vocabulary entropy per token.
    pub entropy: Vec<f32>,
    /// SIREN nucleus size per token.
    pub top_p_size: Vec<u32>,
    /// SIREN nucleus mass per token.
    pub top_p_mass: Vec<f32>,
    /// SIREN nucleus entropy per token.
    pub top_p_entropy: Vec<f32>,
    /// Peak-entropy flags.
    pub peak: Vec<bool>,
    /// `stop`, `length` or `abort`.
    pub finish_reason: FinishReason,
    /// Number of generated tokens.
    pub length: usize,
    /// Cut by `max_tokens` (or the context) before a stop.
    pub truncated: bool,
    /// Sum of `entropy`.
    pub entropy_sum: f64,
    /// Sum of `top_p_entropy`.
    pub top_p_entropy_sum: f64,
    /// Number of peak tokens.
    pub peak_count: usize,
    /// Mean `top_p_entropy` over peak tokens; 0 if none.
    pub peak_top_p_entropy_mean: f64,
    /// Reward; null without a gold answer.
    pub reward: Option<f64>,
    /// Verifier verdict; null without a gold answer.
    pub correct: Option<bool>,
    /// Answer the verifier extracted; null without a gold answer.
    pub extracted_answer: Option<String>,
    /// How verification ended (`correct`, `wrong`, `no_answer`, `unparsable`, `timed_out`);
    /// null without a gold answer.
    pub verdict: Option<verifier::Status>,
    /// Advantage under the request's estimator; null without a gold answer.
    pub advantage: Option<f64>,
    /// Weights version that drew this sample's first token (all of them, unless
    /// `weights_versions` is given).
    pub weights_version: u64,
    /// Which version drew which tokens, as runs `[version, from_token]`, when an update under
    /// `in_flight: continue` moved the sample to new weights mid-way; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights_versions: Option<Vec<(u64, usize)>>,
}

/// Request-level aggregates.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Response tokens in the request.
    pub tokens: usize,
    /// `sum entropy / tokens`.
    pub entropy_mean: f64,
    /// `sum top_p_entropy / tokens`.
    pub top_p_entropy_mean: f64,
    /// Mean over samples of `peak_top_p_entropy_mean` (SIREN's `H_anchor` at the initial weights).
    pub siren_anchor: f64,
    /// The batch peak threshold when `peak_scope` is `batch`.
    pub peak_threshold: Option<f64>,
    /// Wall time of the request in milliseconds.
    pub elapsed_ms: u64,
}
