//! SGLang's native routes over the same admission, validation, engine, seeds and statistics as
//! `/rollouts`: `POST /generate` (which slime and AReaL's SGLang backend generate through) and
//! the control routes around a weight update (`/update_weights_from_disk`,
//! `/get_weight_version`, `/pause_generation`, `/continue_generation`, `/flush_cache`,
//! `/abort_request`, `/get_server_info` and `/server_info`, `/model_info`, `/health_generate`).
//! Failures answer in SGLang's form, `{"error": {"message"}}` (and `error_type`), with a 400 for
//! a request entroll cannot serve; a refused update answers `{"success": false, "message"}`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;

use super::body::RequestBody;
use super::control;
use super::deadline::Deadline;
use super::error::{status, with_headers};
use super::openai::request::{
    check_stop_token_ids, in_openai_words, only, parse, served_names, Distortions, Route, Sampling,
};
use super::state::AppState;
use super::stream::{events, Event};
use super::validation::{random_seed, validate};
use crate::api::error::ApiError;
use crate::api::openai::answer::Listing;
use crate::api::openai::{LogprobsMode, OneOrMany};
use crate::api::rollouts::{
    FinishReason as Finish, Group, PromptSpec, RolloutRequest, Sample, MAX_TOP_LOGPROBS,
};
use crate::api::sglang::{
    AbortRequest, Done, ErrorDetail, ErrorResponse, FinishReason, GenerateAnswer, GenerateRequest,
    InputIds, MetaInfo, ModelInfo, PauseRequest, ServerInfo, UpdateAnswer, UpdateFromDiskRequest,
    VersionName, WeightVersion,
};
use crate::api::weights::{InFlight, PauseMode, WeightsRequest};
use crate::telemetry::metrics::{request_failed, request_received, RunningRequest};

/// A failed SGLang-dialect request: the status entroll's own routes answer the error with,
/// except that a request it cannot serve is a 400 (SGLang's status), not a 422.
#[derive(Debug)]
pub struct SglangError(pub ApiError);

impl From<ApiError> for SglangError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl From<super::openai::error::OpenAiError> for SglangError {
    fn from(error: super::openai::error::OpenAiError) -> Self {
        Self(error.error)
    }
}

impl SglangError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        in_sglang_status(&self.0)
    }

    /// The body.
    pub fn body(&self) -> ErrorResponse {
        ErrorResponse {
            error: ErrorDetail {
                message: self.0.to_string(),
                error_type: self.0.error_type().to_string(),
            },
        }
    }
}

/// The status SGLang answers `error` with: 400 for a request it cannot serve.
fn in_sglang_status(error: &ApiError) -> StatusCode {
    match error {
        ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
        other => status(other),
    }
}

impl IntoResponse for SglangError {
    fn into_response(self) -> Response {
        let response = (self.status(), Json(self.body())).into_response();
        with_headers(&self.0, response)
    }
}

fn refuse(message: impl Into<String>) -> SglangError {
    SglangError(ApiError::Invalid(message.into()))
}

/// Refuses a field unless it is null.
fn null_only(field: &str, value: Option<&serde_json::Value>) -> Result<(), SglangError> {
    match value {
        Some(v) if !v.is_null() => Err(refuse(format!(
            "{field} is not served: entroll samples the model's distribution as it is"
        ))),
        _ => Ok(()),
    }
}

/// What the answer holds besides the rollout's samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// One prompt with one sample: an object, not a list.
    pub single: bool,
    /// Samples per prompt.
    pub n: usize,
    /// `meta_info.output_token_logprobs`.
    pub logprobs: bool,
    /// `meta_info.output_top_logprobs`.
    pub top_logprobs: bool,
    /// Temperature 0: log-probs of the full distribution.
    pub greedy: bool,
    /// Each prompt's id.
    pub rids: Vec<String>,
    /// Answer as server-sent events.
    pub stream: bool,
}

/// The `/rollouts` request a `/generate` request stands for (prompt `i` is group `i`), and what
/// its answer holds besides. `eos_ids` are the ids that end the model's sequences.
pub fn rollout_request(
    req: GenerateRequest,
    eos_ids: &[u32],
) -> Result<(RolloutRequest, Asked), SglangError> {
    // An empty list is no images (AReaL's default).
    let images = req
        .image_data
        .as_ref()
        .filter(|v| v.as_array().is_none_or(|a| !a.is_empty()));
    null_only("image_data", images)?;
    null_only("lora_path", req.lora_path.as_ref())?;
    null_only(
        "custom_logit_processor",
        req.custom_logit_processor.as_ref(),
    )?;
    only(
        "return_text_in_logprobs",
        req.return_text_in_logprobs,
        false,
        "log-prob entries name tokens by id",
    )?;
    if req.logprob_start_len.is_some_and(|l| l != -1) {
        return Err(refuse(
            "logprob_start_len other than -1 is not served: entroll reports on the generated \
             tokens only",
        ));
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
        min_tokens: ("min_new_tokens", sp.min_new_tokens),
        top_k: sp.top_k,
    }
    .check()?;
    only(
        "sampling_params.skip_special_tokens",
        sp.skip_special_tokens,
        true,
        "the text leaves special tokens out (output_ids has every id)",
    )?;
    only(
        "sampling_params.no_stop_trim",
        sp.no_stop_trim,
        false,
        "the text is cut before a stop string",
    )?;
    for (field, value) in [
        ("sampling_params.json_schema", &sp.json_schema),
        ("sampling_params.regex", &sp.regex),
        ("sampling_params.ebnf", &sp.ebnf),
        ("sampling_params.custom_params", &sp.custom_params),
    ] {
        null_only(field, value.as_ref())?;
    }
    check_stop_token_ids(sp.stop_token_ids.as_deref(), eos_ids)?;
    let top = req.top_logprobs_num.unwrap_or(0) as usize;
    if top > MAX_TOP_LOGPROBS {
        return Err(refuse(format!(
            "top_logprobs_num must be at most {MAX_TOP_LOGPROBS}, got {top}"
        )));
    }
    let logprobs = req.return_logprob.unwrap_or(false);
    if top > 0 && !logprobs {
        return Err(refuse("top_logprobs_num needs return_logprob: true"));
    }
    let spec = |text: Option<String>, token_ids: Option<Vec<u32>>| PromptSpec {
        id: None,
        messages: None,
        text,
        token_ids,
        answer: None,
        group_size: None,
    };
    let (mut prompts, batch) = match (req.text, req.input_ids) {
        (Some(OneOrMany::One(t)), None) => (vec![spec(Some(t), None)], false),
        (Some(OneOrMany::Many(ts)), None) => {
            (ts.into_iter().map(|t| spec(Some(t), None)).collect(), true)
        }
        (None, Some(InputIds::One(ids))) => (vec![spec(None, Some(ids))], false),
        (None, Some(InputIds::Batch(b))) => (
            b.into_iter().map(|ids| spec(None, Some(ids))).collect(),
            true,
        ),
        _ => return Err(refuse("give exactly one of text and input_ids")),
    };
    if prompts.is_empty() {
        return Err(refuse("the batch is empty"));
    }
    for (i, p) in prompts.iter_mut().enumerate() {
        if p.token_ids.as_ref().is_some_and(Vec::is_empty) {
            return Err(refuse(format!("input_ids[{i}] is empty")));
        }
        // Groups come back in completion order when streamed: the id says which prompt.
        p.id = Some(i.to_string());
    }
    let rids = match req.rid {
        None => (0..prompts.len())
            .map(|_| format!("{:016x}{:016x}", random_seed(), random_seed()))
            .collect(),
        Some(OneOrMany::One(rid)) if !batch => vec![rid],
        Some(OneOrMany::Many(rids)) if batch && rids.len() == prompts.len() => rids,
        Some(_) => {
            return Err(refuse(
                "rid must be one string for one prompt, or a list with one per prompt",
            ))
        }
    };
    let n = sp.n.unwrap_or(1);
    let stream = req.stream.unwrap_or(false);
    let (sampling, greedy) = Sampling {
        temperature: sp.temperature,
        top_p: sp.top_p,
        top_k: sp.top_k,
        max_tokens: sp.max_new_tokens,
        stop: sp.stop,
        seed: sp.sampling_seed,
    }
    .spec();
    let rollout = RolloutRequest {
        prompts,
        group_size: Some(n),
        sampling,
        stats: req.stats.unwrap_or_default(),
        advantage: req.advantage,
        timeout_ms: req.timeout_ms,
        stream,
        return_sampling_mask: req.return_sampling_mask.unwrap_or(false),
        top_logprobs: top,
    };
    let asked = Asked {
        single: !batch && n == 1,
        n,
        logprobs,
        top_logprobs: top > 0,
        greedy,
        rids,
        stream,
    };
    Ok((rollout, asked))
}

/// A `/rollouts` error in this route's words.
pub fn in_sglang_words(error: ApiError) -> SglangError {
    let e = in_openai_words(error, Route::Completions);
    SglangError(match e.error {
        ApiError::Invalid(message) => ApiError::Invalid(
            message
                .replacen("max_tokens", "sampling_params.max_new_tokens", 1)
                .replacen("prompt[", "input_ids[", 1),
        ),
        other => other,
    })
}

/// Builds the answers of one request.
struct Answerer {
    asked: Asked,
    mode: LogprobsMode,
    eos_ids: Vec<u32>,
    arrived: Instant,
}

impl Answerer {
    /// The answer of `sample`, of prompt `prompt` with `prompt_tokens` tokens.
    fn answer(&self, prompt: usize, prompt_tokens: usize, sample: Sample) -> GenerateAnswer {
        let listing = Listing {
            mode: if self.asked.greedy {
                LogprobsMode::Full
            } else {
                self.mode
            },
            as_ids: true,
        };
        let output_token_logprobs = self.asked.logprobs.then(|| {
            sample
                .token_ids
                .iter()
                .zip(listing.logprobs(&sample))
                .map(|(&id, &lp)| (lp, id, None))
                .collect()
        });
        let output_top_logprobs = self.asked.top_logprobs.then(|| {
            (0..sample.token_ids.len())
                .map(|t| {
                    listing
                        .alternatives(&sample, t)
                        .into_iter()
                        .map(|(id, lp)| (lp, id, None))
                        .collect()
                })
                .collect()
        });
        let finish_reason = match sample.finish_reason {
            Finish::Stop => FinishReason {
                kind: "stop",
                matched: Some(
                    sample
                        .token_ids
                        .last()
                        .copied()
                        .filter(|id| self.eos_ids.contains(id)),
                ),
                length: None,
                message: None,
            },
            Finish::Length => FinishReason {
                kind: "length",
                matched: None,
                length: Some(sample.length),
                message: None,
            },
            Finish::Abort => FinishReason {
                kind: "abort",
                matched: None,
                length: None,
                message: Some("aborted by a pause or a weight update".into()),
            },
        };
        GenerateAnswer {
            text: sample.text.clone(),
            output_ids: sample.token_ids.clone(),
            meta_info: MetaInfo {
                id: self.asked.rids[prompt].clone(),
                finish_reason,
                prompt_tokens,
                completion_tokens: sample.length,
                cached_tokens: 0,
                weight_version: sample.weights_version.to_string(),
                e2e_latency: self.arrived.elapsed().as_secs_f64(),
                output_token_logprobs,
                output_top_logprobs,
            },
            entroll: sample,
        }
    }

    /// The answers of `group`, in sample order.
    fn group(&self, group: Group) -> Result<Vec<GenerateAnswer>, ApiError> {
        let prompt: usize = group.id.parse().map_err(|_| {
            ApiError::Internal(format!("a group came back as `{}` (a bug)", group.id))
        })?;
        let prompt_tokens = group.prompt_token_ids.len();
        Ok(group
            .samples
            .into_iter()
            .map(|s| self.answer(prompt, prompt_tokens, s))
            .collect())
    }
}

/// `POST /generate`: text or token ids, one prompt or a batch, answered whole (an object for
/// one prompt and one sample, else a list, prompt by prompt) or streamed; the samples a pause or
/// an update under `abort` stopped answer with what they drew (`finish_reason.type` `abort`).
pub async fn generate(
    State(state): State<Arc<AppState>>,
    body: Result<RequestBody, ApiError>,
) -> Response {
    request_received();
    let arrived = Instant::now();
    let result: Result<Response, SglangError> = async {
        state.accepting()?;
        let RequestBody(body) = body?;
        let admission = state.service.admit()?;
        let running = RunningRequest::start();
        let info = state.service.live().engine.info().clone();
        let request: GenerateRequest = parse(&body)?;
        let (rollout, asked) = rollout_request(request, &info.eos_ids)?;
        let mut valid = validate(rollout, &state.config).map_err(in_sglang_words)?;
        valid.answer_aborted = true;
        let deadline = Deadline::after(valid.timeout);
        let answerer = Answerer {
            asked,
            mode: state.config.openai_logprobs,
            eos_ids: info.eos_ids.clone(),
            arrived,
        };
        let started = deadline
            .bound(&state.shutdown, state.service.start(valid, admission))
            .await
            .map_err(in_sglang_words)?;
        if answerer.asked.stream {
            let events = events(state.shutdown.clone(), started, deadline, running);
            return Ok(server_sent_events(answerer, events));
        }
        let response = deadline
            .bound(&state.shutdown, started.collect())
            .await
            .map_err(in_sglang_words)?;
        let mut answers = Vec::new();
        for group in response.groups {
            answers.extend(answerer.group(group)?);
        }
        Ok(if answerer.asked.single {
            Json(answers.pop()).into_response()
        } else {
            Json(answers).into_response()
        })
    }
    .await;
    result.unwrap_or_else(|e| {
        request_failed(e.0.error_type());
        e.into_response()
    })
}

/// A streamed `/generate`: each sample's whole answer as one `data:` event once its prompt's
/// samples are done (SGLang's events are cumulative, so a client reads the last of each as
/// the answer), then `data: [DONE]`; a failure is an `error` event, the last before `[DONE]`.
fn server_sent_events(
    answerer: Answerer,
    events: impl futures_util::Stream<Item = Event> + Send + 'static,
) -> Response {
    let chunks = events
        .flat_map(move |event| {
            let lines: Vec<Bytes> = match event {
                Event::Group(group) => match answerer.group(group) {
                    Ok(answers) => answers.iter().map(data).collect(),
                    Err(e) => vec![error_event(e)],
                },
                Event::Finished(..) => Vec::new(),
                Event::Failed(e) => vec![error_event(e)],
            };
            futures_util::stream::iter(lines)
        })
        .chain(futures_util::stream::once(async {
            Bytes::from_static(b"data: [DONE]\n\n")
        }))
        .map(Ok::<_, Infallible>);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

fn error_event(e: ApiError) -> Bytes {
    data(&SglangError(e).body())
}

/// One server-sent event.
fn data(value: &impl serde::Serialize) -> Bytes {
    let mut bytes = b"data: ".to_vec();
    serde_json::to_writer(&mut bytes, value).expect("an answer serializes");
    bytes.extend_from_slice(b"\n\n");
    Bytes::from(bytes)
}

/// A weights version named in SGLang's words, as entroll's integer.
fn version(name: VersionName) -> Result<u64, ApiError> {
    match name {
        VersionName::Number(v) => Ok(v),
        VersionName::Text(text) => text.trim().parse().map_err(|_| {
            ApiError::Invalid(format!(
                "weight_version `{text}` is not served: entroll's weights versions are \
                 integers (give one, or its decimal string)"
            ))
        }),
    }
}

fn update_answer(success: bool, message: String, state: &AppState) -> UpdateAnswer {
    UpdateAnswer {
        success,
        message,
        num_paused_requests: 0,
        weight_version: state.service.live().version.to_string(),
    }
}

/// `POST /update_weights_from_disk`: the update runs as `POST /weights`'; with
/// `abort_all_requests` the running samples end with what they drew (in-flight policy
/// `abort`), else they go as the server's `weights_in_flight` says. A refused update answers
/// `{"success": false, "message"}` with the error's status.
pub async fn update_weights_from_disk(
    State(state): State<Arc<AppState>>,
    body: Result<RequestBody, ApiError>,
) -> Response {
    let request = body.and_then(|RequestBody(body)| {
        let r: UpdateFromDiskRequest = parse(&body).map_err(|e| e.error)?;
        if r.load_format.as_deref().is_some_and(|f| f != "auto") {
            return Err(ApiError::Invalid(
                "load_format is not served: entroll reads the checkpoint's own format".into(),
            ));
        }
        if r.is_async == Some(true) {
            return Err(ApiError::Invalid(
                "is_async true is not served: the update answers once the new weights serve".into(),
            ));
        }
        Ok(WeightsRequest {
            path: r.model_path,
            version: r.weight_version.map(version).transpose()?,
            in_flight: r
                .abort_all_requests
                .unwrap_or(false)
                .then_some(InFlight::Abort),
        })
    });
    match control::update_weights(&state, request).await {
        Ok(done) => Json(update_answer(
            true,
            format!(
                "Succeeded to update model weights: version {} from {} in {} ms",
                done.weights_version, done.path, done.load_ms
            ),
            &state,
        ))
        .into_response(),
        Err(e) => {
            let code = in_sglang_status(&e);
            let answer = update_answer(false, e.to_string(), &state);
            with_headers(&e, (code, Json(answer)).into_response())
        }
    }
}

/// `GET /get_weight_version`.
pub async fn get_weight_version(State(state): State<Arc<AppState>>) -> Json<WeightVersion> {
    Json(WeightVersion {
        weight_version: state.service.live().version.to_string(),
    })
}

fn done(message: &str) -> Json<Done> {
    Json(Done {
        message: message.to_string(),
        status: "ok",
    })
}

/// `POST /pause_generation {mode}`: `abort` (the default) ends the running samples with what
/// they drew; `retract` and `in_place` stop them where they are until `/continue_generation`.
/// Requests that arrive meanwhile wait.
pub async fn pause_generation(
    State(state): State<Arc<AppState>>,
    body: Result<RequestBody, ApiError>,
) -> Result<Json<Done>, SglangError> {
    let RequestBody(body) = body?;
    let request: PauseRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PauseRequest::default()
    } else {
        parse(&body)?
    };
    let mode = match request.mode.as_deref() {
        None | Some("abort") => PauseMode::Abort,
        Some("retract" | "in_place") => PauseMode::Keep,
        Some(other) => {
            return Err(refuse(format!(
                "mode `{other}` is not one of abort, retract and in_place"
            )))
        }
    };
    control::pause(&state, mode).await;
    Ok(done("Generation paused successfully."))
}

/// `POST /continue_generation`.
pub async fn continue_generation(State(state): State<Arc<AppState>>) -> Json<Done> {
    state.service.resume();
    done("Generation continued successfully.")
}

/// `POST /flush_cache`: empties the engine's prefix cache (a swap starts an empty one anyway).
pub async fn flush_cache(State(state): State<Arc<AppState>>) -> Result<Json<Done>, SglangError> {
    let message = match control::flush_cache(&state).await? {
        Some(blocks) => format!("Cache flushed: {blocks} blocks dropped."),
        None => "Cache flushed.".to_string(),
    };
    Ok(done(&message))
}

/// `POST /abort_request {abort_all: true}`: every running sample ends with what it drew (as
/// under a pause under `abort`); a pause in force, or none, stays as it is.
pub async fn abort_request(
    State(state): State<Arc<AppState>>,
    body: Result<RequestBody, ApiError>,
) -> Result<Json<Done>, SglangError> {
    let RequestBody(body) = body?;
    let request: AbortRequest = parse(&body)?;
    // SGLang's default rid is "": no request named.
    let rid = request.rid.filter(|rid| !rid.is_empty());
    if rid.is_some() || request.abort_all != Some(true) {
        return Err(refuse(
            "only abort_all: true is served: entroll does not track requests by rid",
        ));
    }
    state.service.abort_all();
    Ok(done("Requests aborted."))
}

/// `GET /get_server_info` and `/server_info`.
pub async fn server_info(State(state): State<Arc<AppState>>) -> Json<ServerInfo> {
    let live = state.service.live();
    let info = live.engine.info();
    let path = info.source.display().to_string();
    Json(ServerInfo {
        tokenizer_path: path.clone(),
        model_path: path,
        served_model_name: served_names(&state.config.served_model_name, &info.id)[0].clone(),
        context_len: info.max_context,
        max_running_requests: state.config.max_running_sequences.min(info.max_batch),
        weight_version: live.version.to_string(),
        dp_size: 1,
        tp_size: 1,
        paused: state.service.paused().is_some(),
        version: format!("entroll {}", env!("CARGO_PKG_VERSION")),
    })
}

/// `GET /model_info`.
pub async fn model_info(State(state): State<Arc<AppState>>) -> Json<ModelInfo> {
    let live = state.service.live();
    let path = live.engine.info().source.display().to_string();
    Json(ModelInfo {
        tokenizer_path: path.clone(),
        model_path: path,
        is_generation: true,
        weight_version: live.version.to_string(),
    })
}
