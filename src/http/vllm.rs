//! vLLM's own routes over the same admission, validation, engine, seeds and statistics as
//! `/rollouts`: token-in/token-out generation (`POST /inference/v1/generate`, which prime-rl and
//! SkyRL train through) and the control routes around a weight update (`/pause`, `/resume`,
//! `/is_paused`, `/update_weights`, `/get_world_size`, `/reset_prefix_cache`). Failures answer
//! in OpenAI's error form, as vLLM's do.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::body::RequestBody;
use super::control;
use super::deadline::Deadline;
use super::openai::answer::group_stats;
use super::openai::error::OpenAiError;
use super::openai::request::{
    check_model, check_stop_token_ids, in_openai_words, only, parse, refuse, served_names,
    Distortions, Route, Sampling,
};
use super::state::AppState;
use super::validation::{random_seed, validate};
use crate::api::error::ApiError;
use crate::api::openai::answer::{ChatLogprobs, Listing, Names};
use crate::api::openai::{finish_reason, Extension, LogprobsMode};
use crate::api::rollouts::{PromptSpec, RolloutRequest, RolloutResponse, MAX_TOP_LOGPROBS};
use crate::api::vllm::{
    GenerateChoice, GenerateRequest, GenerateResponse, IsPaused, Status, UpdateWeightsRequest,
    WorldSize,
};
use crate::api::weights::{PauseMode, WeightsRequest};
use crate::telemetry::metrics::{request_failed, request_received, RunningRequest};

/// What the answer holds besides the rollout's samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// List each token's log-prob (with the alternatives the rollout's `top_logprobs` asks
    /// for).
    pub logprobs: bool,
    /// Temperature 0: the listing gives the full distribution's log-probs.
    pub greedy: bool,
    /// The caller's request id.
    pub request_id: Option<String>,
}

/// The `/rollouts` request a generate request stands for (one prompt, `n` samples), and what
/// its answer holds besides. `served` are the served model's names, `eos_ids` the ids that end
/// its sequences.
pub fn rollout_request(
    req: GenerateRequest,
    served: &[String],
    eos_ids: &[u32],
) -> Result<(RolloutRequest, Asked), OpenAiError> {
    check_model(req.model.as_deref(), served)?;
    only(
        "stream",
        req.stream,
        false,
        "/inference/v1/generate answers whole (stream with /v1/completions or SGLang's \
         /generate)",
    )?;
    if req
        .kv_transfer_params
        .as_ref()
        .is_some_and(|v| !v.is_null())
    {
        return Err(refuse(
            "kv_transfer_params",
            "kv_transfer_params is not served: entroll prefills its own prompts",
        ));
    }
    if req.token_ids.is_empty() {
        return Err(refuse("token_ids", "token_ids is empty"));
    }
    let sp = req.sampling_params;
    Distortions {
        prefix: "sampling_params.",
        min_p: sp.min_p,
        repetition_penalty: sp.repetition_penalty,
        presence_penalty: sp.presence_penalty,
        frequency_penalty: sp.frequency_penalty,
        ignore_eos: sp.ignore_eos,
        logit_bias: sp.logit_bias.as_ref(),
        min_tokens: ("min_tokens", sp.min_tokens),
        top_k: sp.top_k,
    }
    .check()?;
    check_stop_token_ids(sp.stop_token_ids.as_deref(), eos_ids)
        .map_err(|e| OpenAiError::new(e.error, Some("sampling_params.stop_token_ids".into())))?;
    if sp.prompt_logprobs.is_some() {
        return Err(refuse(
            "sampling_params.prompt_logprobs",
            "prompt_logprobs is not served: entroll reports on the generated tokens",
        ));
    }
    let top = sp.logprobs.unwrap_or(0) as usize;
    if top > MAX_TOP_LOGPROBS {
        return Err(refuse(
            "sampling_params.logprobs",
            format!("logprobs must be at most {MAX_TOP_LOGPROBS}, got {top}"),
        ));
    }
    let (sampling, greedy) = Sampling {
        temperature: sp.temperature,
        top_p: sp.top_p,
        top_k: sp.top_k,
        max_tokens: sp.max_tokens,
        stop: sp.stop,
        seed: sp.seed,
    }
    .spec();
    let rollout = RolloutRequest {
        prompts: vec![PromptSpec {
            id: Some("0".into()),
            messages: None,
            text: None,
            token_ids: Some(req.token_ids),
            answer: None,
            group_size: None,
        }],
        group_size: Some(sp.n.unwrap_or(1)),
        sampling,
        stats: req.stats.unwrap_or_default(),
        advantage: req.advantage,
        timeout_ms: req.timeout_ms,
        stream: false,
        return_sampling_mask: req.return_sampling_mask.unwrap_or(false),
        top_logprobs: top,
    };
    let asked = Asked {
        logprobs: sp.logprobs.is_some(),
        greedy,
        request_id: req.request_id,
    };
    Ok((rollout, asked))
}

/// A `/rollouts` error in this route's words: a sampling field by its place in
/// `sampling_params`, a prompt's by `token_ids`.
pub fn in_vllm_words(error: ApiError) -> OpenAiError {
    let mut e = in_openai_words(error, Route::Completions);
    e.param = e.param.map(|p| match p.as_str() {
        "prompt" => "token_ids".to_string(),
        "n" | "temperature" | "top_p" | "top_k" | "max_tokens" | "stop" => {
            format!("sampling_params.{p}")
        }
        _ => p,
    });
    e
}

/// The generate answer of `response`, listing log-probs as `mode` says.
pub fn answer(response: RolloutResponse, asked: &Asked, mode: LogprobsMode) -> GenerateResponse {
    let listing = Listing {
        mode: if asked.greedy {
            LogprobsMode::Full
        } else {
            mode
        },
        as_ids: true,
    };
    let groups = response
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| group_stats(i, g))
        .collect();
    let choices = response
        .groups
        .into_iter()
        .flat_map(|g| g.samples)
        .map(|sample| GenerateChoice {
            index: sample.index,
            token_ids: sample.token_ids.clone(),
            logprobs: asked
                .logprobs
                .then(|| ChatLogprobs::of(&sample, listing, &Names(None))),
            finish_reason: finish_reason(sample.finish_reason),
            entroll: sample,
        })
        .collect();
    let id = match &asked.request_id {
        Some(id) => id.clone(),
        None => format!("{:016x}{:016x}", random_seed(), random_seed()),
    };
    GenerateResponse {
        request_id: format!("generate-tokens-{id}"),
        choices,
        prompt_logprobs: None,
        kv_transfer_params: None,
        entroll: Extension {
            served: response.served,
            logprobs_mode: listing.mode,
            summary: response.summary,
            groups,
        },
    }
}

/// `POST /inference/v1/generate`: one prompt's token ids, `n` samples, answered whole; the
/// samples a pause or an update under `abort` stopped answer with what they drew
/// (`finish_reason` `abort`).
pub async fn generate(
    State(state): State<Arc<AppState>>,
    body: Result<RequestBody, ApiError>,
) -> Response {
    request_received();
    let result: Result<Response, OpenAiError> = async {
        state.accepting()?;
        let RequestBody(body) = body?;
        let admission = state.service.admit()?;
        let _running = RunningRequest::start();
        let live = state.service.live();
        let info = live.engine.info();
        let names = served_names(&state.config.served_model_name, &info.id);
        let request: GenerateRequest = parse(&body)?;
        let (rollout, asked) = rollout_request(request, &names, &info.eos_ids)?;
        let mut valid = validate(rollout, &state.config).map_err(in_vllm_words)?;
        valid.answer_aborted = true;
        let deadline = Deadline::after(valid.timeout);
        let response = deadline
            .bound(&state.shutdown, state.service.run(valid, admission))
            .await
            .map_err(in_vllm_words)?;
        Ok(Json(answer(response, &asked, state.config.openai_logprobs)).into_response())
    }
    .await;
    result.unwrap_or_else(|e| {
        request_failed(e.error.error_type());
        e.into_response()
    })
}

/// `/pause`'s query: `mode` (`abort`, the default, `keep` or `wait`), `clear_cache`
/// (accepted: a swap starts an empty prefix cache) and `wait_for_inflight_requests`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseQuery {
    /// How to pause.
    #[serde(default)]
    pub mode: Option<PauseMode>,
    /// Accepted, see above.
    #[serde(default)]
    pub clear_cache: Option<bool>,
    /// vLLM's older form: `true` is mode `wait` (when no mode is given).
    #[serde(default)]
    pub wait_for_inflight_requests: Option<bool>,
}

fn status(state: &AppState, status: &'static str) -> Json<Status> {
    Json(Status {
        status,
        weights_version: state.service.live().version,
    })
}

/// `POST /pause?mode=keep|abort|wait`: answers once the pause holds
/// ([`control::pause`]); requests that arrive meanwhile wait for `/resume`.
pub async fn pause(
    State(state): State<Arc<AppState>>,
    query: Result<Query<PauseQuery>, QueryRejection>,
) -> Result<Json<Status>, OpenAiError> {
    let Query(query) = query.map_err(|e| {
        OpenAiError::new(
            ApiError::Invalid(format!(
                "{}; mode is one of keep, abort and wait",
                e.body_text()
            )),
            Some("mode".into()),
        )
    })?;
    let mode = match (query.mode, query.wait_for_inflight_requests) {
        (Some(mode), _) => mode,
        (None, Some(true)) => PauseMode::Wait,
        (None, _) => PauseMode::Abort,
    };
    control::pause(&state, mode).await;
    Ok(status(&state, "paused"))
}

/// `POST /resume`: the waiting requests start, the frozen samples go on.
pub async fn resume(State(state): State<Arc<AppState>>) -> Json<Status> {
    state.service.resume();
    status(&state, "resumed")
}

/// `GET /is_paused`.
pub async fn is_paused(State(state): State<Arc<AppState>>) -> Json<IsPaused> {
    Json(IsPaused {
        is_paused: state.service.paused().is_some(),
    })
}

/// `POST /update_weights {weight_dir}` (prime-rl's filesystem transport): the update runs as
/// `POST /weights`' under the server's `weights_in_flight` policy.
pub async fn update_weights(
    State(state): State<Arc<AppState>>,
    body: Result<RequestBody, ApiError>,
) -> Result<Json<Status>, OpenAiError> {
    let parsed = body
        .map_err(OpenAiError::from)
        .and_then(|RequestBody(body)| parse::<UpdateWeightsRequest>(&body));
    // A refusal names the field at fault: the one the parser named, else the path.
    let (request, param) = match parsed {
        Ok(r) => (
            Ok(WeightsRequest {
                path: r.weight_dir,
                version: r.version,
                in_flight: None,
            }),
            Some("weight_dir".to_string()),
        ),
        Err(e) => (Err(e.error), e.param),
    };
    control::update_weights(&state, request)
        .await
        .map_err(|e| {
            let param = param.filter(|_| matches!(e, ApiError::Invalid(_)));
            OpenAiError::new(e, param)
        })?;
    Ok(status(&state, "ok"))
}

/// `GET /get_world_size`: one copy of the model on one device.
pub async fn world_size() -> Json<WorldSize> {
    Json(WorldSize { world_size: 1 })
}

/// `POST /reset_prefix_cache`: empties the engine's prefix cache (a swap starts an empty one
/// anyway).
pub async fn reset_prefix_cache(
    State(state): State<Arc<AppState>>,
) -> Result<StatusCode, OpenAiError> {
    control::flush_cache(&state).await?;
    Ok(StatusCode::OK)
}
