//! OpenAI's dialect with vLLM's extensions, over the same admission, validation, engine, seeds
//! and statistics as `/rollouts`: [`request`] makes a request into the `/rollouts` request it
//! stands for, [`answer`] makes the rollout's answer into OpenAI's, whole or as server-sent
//! events, and [`error`] answers failures in OpenAI's form. The handlers here are the routes:
//! `/v1/completions`, `/v1/chat/completions`, `/v1/models`, `/tokenize`, `/detokenize`.

pub mod answer;
pub mod error;
pub mod request;

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;

use self::answer::Answerer;
use self::error::OpenAiError;
use self::request::{
    check_model, conversation, in_openai_words, parse, rollout_request, served_names, Route,
};
use super::body::RequestBody;
use super::deadline::Deadline;
use super::state::AppState;
use super::stream::{events, Event};
use super::validation::validate;
use crate::api::error::ApiError;
use crate::api::openai::tokens::{
    DetokenizeRequest, DetokenizeResponse, ModelCard, ModelList, TokenizeRequest, TokenizeResponse,
};
use crate::api::openai::GenerateRequest;
use crate::engine::PromptInput;
use crate::telemetry::metrics::{request_failed, request_received, RunningRequest};

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<RequestBody, ApiError>,
) -> Response {
    generate(Route::Completions, state, body).await
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<RequestBody, ApiError>,
) -> Response {
    generate(Route::Chat, state, body).await
}

/// The names the served model (`id`) answers to here.
fn names(state: &AppState, id: &str) -> Vec<String> {
    served_names(&state.config.served_model_name, id)
}

/// Either generation route: admitted, validated and run as `/rollouts` runs its requests.
async fn generate(
    route: Route,
    state: Arc<AppState>,
    body: Result<RequestBody, ApiError>,
) -> Response {
    request_received();
    let result: Result<Response, OpenAiError> = async {
        state.accepting()?;
        let RequestBody(body) = body?;
        let admission = state.service.admit()?;
        let running = RunningRequest::start();
        let live = state.service.live();
        let names = names(&state, &live.engine.info().id);
        let model = names[0].clone();
        let request = parse::<GenerateRequest>(&body)?;
        let eos_ids = &live.engine.info().eos_ids;
        let (rollout, asked) = rollout_request(route, request, &names, eos_ids)?;
        let mut valid = validate(rollout, &state.config).map_err(|e| in_openai_words(e, route))?;
        // As vLLM: a sample a pause or an update under `abort` stopped is a choice with what
        // it drew and `finish_reason` `abort` (AReaL resubmits those).
        valid.answer_aborted = true;
        let deadline = Deadline::after(valid.timeout);
        let answerer = Answerer::new(asked, state.config.openai_logprobs, live.engine, model);
        if asked.stream {
            let started = deadline
                .bound(&state.shutdown, state.service.start(valid, admission))
                .await
                .map_err(|e| in_openai_words(e, route))?;
            let events = events(state.shutdown.clone(), started, deadline, running);
            return Ok(server_sent_events(Arc::new(answerer), events));
        }
        let response = deadline
            .bound(&state.shutdown, state.service.run(valid, admission))
            .await
            .map_err(|e| in_openai_words(e, route))?;
        Ok(Json(answerer.whole(response).await?).into_response())
    }
    .await;
    result.unwrap_or_else(|e| {
        request_failed(e.error.error_type());
        e.into_response()
    })
}

/// A streamed answer: one `data:` event per group's chunk, the last chunk (with
/// `include_usage`), then `data: [DONE]`; a failure is an `error` event, the last before
/// `[DONE]`.
fn server_sent_events(
    answerer: Arc<Answerer>,
    events: impl futures_util::Stream<Item = Event> + Send + 'static,
) -> Response {
    let chunks = events
        .then(move |event| {
            let answerer = answerer.clone();
            async move {
                match event {
                    Event::Group(group) => answerer.chunk(group).await.map(Some),
                    Event::Finished(summary, served) => Ok(answerer.last_chunk(summary, served)),
                    Event::Failed(e) => Err(e),
                }
            }
        })
        // Nothing follows an error: its event is the last before `[DONE]`.
        .scan(false, |failed, chunk| {
            let event = match (*failed, chunk) {
                (true, _) => return futures_util::future::ready(None),
                (false, Ok(chunk)) => chunk.map(|c| data(&c)),
                (false, Err(e)) => {
                    *failed = true;
                    Some(data(&OpenAiError::from(e).body()))
                }
            };
            futures_util::future::ready(Some(event))
        })
        .filter_map(futures_util::future::ready)
        .chain(futures_util::stream::once(async {
            Ok(Bytes::from_static(b"data: [DONE]\n\n"))
        }));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// One server-sent event.
fn data(value: &impl serde::Serialize) -> Result<Bytes, Infallible> {
    let mut bytes = b"data: ".to_vec();
    serde_json::to_writer(&mut bytes, value).expect("a chunk serializes");
    bytes.extend_from_slice(b"\n\n");
    Ok(Bytes::from(bytes))
}

/// `GET /v1/models`: the one served model, with its context (`max_model_len`).
pub async fn models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    let live = state.service.live();
    let info = live.engine.info();
    Json(ModelList {
        object: "list",
        data: names(&state, &info.id)
            .into_iter()
            .map(|id| ModelCard {
                id,
                object: "model",
                created: state.started,
                owned_by: "entroll",
                root: info.id.clone(),
                max_model_len: info.max_context,
                weights_version: live.version,
            })
            .collect(),
    })
}

/// `POST /tokenize`: a prompt's or a conversation's tokens, as the generation routes would
/// tokenize it.
pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Result<RequestBody, ApiError>,
) -> Result<Json<TokenizeResponse>, OpenAiError> {
    state.accepting()?;
    let RequestBody(body) = body?;
    let request: TokenizeRequest = parse(&body)?;
    let engine = state.service.live().engine;
    check_model(request.model.as_deref(), &names(&state, &engine.info().id))?;
    request::only(
        "add_special_tokens",
        request.add_special_tokens,
        true,
        "prompts are tokenized as the generation routes tokenize them",
    )?;
    let route = match request.messages {
        Some(_) => Route::Chat,
        None => Route::Completions,
    };
    let input = match (request.prompt, request.messages) {
        (Some(text), None) => PromptInput::Text(text),
        (None, Some(messages)) => conversation(messages, request.add_generation_prompt)?,
        _ => {
            return Err(OpenAiError::new(
                ApiError::Invalid("give exactly one of prompt and messages".into()),
                Some("prompt".into()),
            ))
        }
    };
    crate::rollout::request::check_prompt_bytes(0, &input, engine.info())
        .map_err(|e| in_openai_words(e, route))?;
    let tokens = engine.tokenize(&input).await.map_err(ApiError::from)?;
    let token_strs = if request.return_token_strs {
        Some(engine.token_texts(&tokens).await.map_err(ApiError::from)?)
    } else {
        None
    };
    Ok(Json(TokenizeResponse {
        count: tokens.len(),
        max_model_len: engine.info().max_context,
        tokens,
        token_strs,
    }))
}

/// `POST /detokenize`: the text of token ids, special tokens left out.
pub async fn detokenize(
    State(state): State<Arc<AppState>>,
    body: Result<RequestBody, ApiError>,
) -> Result<Json<DetokenizeResponse>, OpenAiError> {
    state.accepting()?;
    let RequestBody(body) = body?;
    let request: DetokenizeRequest = parse(&body)?;
    let engine = state.service.live().engine;
    check_model(request.model.as_deref(), &names(&state, &engine.info().id))?;
    let vocab = engine.info().vocab_size;
    if let Some(bad) = request.tokens.iter().find(|&&id| id as usize >= vocab) {
        return Err(OpenAiError::new(
            ApiError::Invalid(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )),
            Some("tokens".into()),
        ));
    }
    let prompt = engine
        .detokenize(&request.tokens, true)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(DetokenizeResponse { prompt }))
}
