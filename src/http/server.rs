//! HTTP routes: thin axum handlers over [`RolloutService`] and [`WeightUpdater`], the state
//! they share ([`AppState`]), and [`serve`], which runs them until shutdown. The OpenAI
//! dialect's handlers are in [`super::openai`], vLLM's and SGLang's own routes in
//! [`super::vllm`] and [`super::sglang`].

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;

use super::auth::{self, Access};
use super::body::{self, RequestBody};
use super::control;
use super::deadline::Deadline;
use super::listen::serve_connections;
use super::openai;
use super::sglang;
use super::shutdown::Phase;
/// The state every handler shares (its own module, so that the OpenAI routes share it too).
pub use super::state::AppState;
use super::stream;
use super::validation::{
    parse_json, validate, DEFAULT_ADVANTAGE, DEFAULT_STATS, DEFAULT_TEMPERATURE, DEFAULT_TOP_P,
};
use super::vllm;
use crate::api::error::ApiError;
use crate::api::info::{Defaults, InfoResponse, Limits, SamplingDefaults};
use crate::api::weights::{WeightsRequest, WeightsResponse};
use crate::telemetry::metrics::{request_failed, request_received, RunningRequest};
use crate::telemetry::panic::panic_message;
use crate::weights::watch::Watcher;

/// Serves `state` on `listener` until `signal` resolves, then shuts down the way
/// [`Shutdown`] says: the listener closes, admitted requests finish within
/// `shutdown_grace_ms` (a paused server resumes for them), the rest are cancelled and answered
/// 503. Connections are accepted under
/// the settings' cap and deadlines ([`serve_connections`]). With `watch_weights` it first
/// loads the directory's highest complete version, then watches it ([`Watcher`]). The binary
/// and the in-process tests both run this.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    if !state.config.keys().any() && !local {
        tracing::warn!(
            "no api_key or admin_key is set and the server listens beyond this host: anyone who \
             reaches the port may sample and swap the weights (docs/security.md)"
        );
    }
    if let Some(dir) = state.config.watched_weights() {
        // Catch up before serving: a replica never answers with an older version than the
        // directory offers.
        let mut watcher = Watcher::new(
            dir.to_path_buf(),
            state.service.clone(),
            state.weights.clone(),
        );
        watcher.catch_up().await;
        let every = Duration::from_millis(state.config.watch_interval_ms);
        let shutdown = state.shutdown.clone();
        tokio::spawn(watcher.run(every, move || shutdown.phase() == Phase::Serving));
    }
    // A paused server that shuts down resumes: the requests it admitted (waiting, or frozen
    // under `keep`) finish within the grace period like every other, instead of losing what
    // they drew.
    let (service, draining) = (state.service.clone(), state.shutdown.draining());
    tokio::spawn(async move {
        draining.await;
        service.resume();
    });
    let announce = Duration::from_millis(state.config.shutdown_announce_ms);
    let grace = Duration::from_millis(state.config.shutdown_grace_ms);
    let shutdown = state.shutdown.clone();
    let limits = state.config.connections();
    serve_connections(
        listener,
        router(state),
        limits,
        shutdown.on_signal(signal, announce, grace),
    )
    .await
}

/// The router with every route, each behind the key its [`Access`] needs.
pub fn router(state: Arc<AppState>) -> Router {
    let keys = Arc::new(state.config.keys());
    let in_dialect = |access, answer: auth::Answer| {
        middleware::from_fn_with_state((keys.clone(), access, answer), auth::authorize)
    };
    let guard = |access| in_dialect(access, |e| e.into_response());
    let generate = Router::new()
        .route("/rollouts", post(rollouts))
        .route("/info", get(info))
        .route_layer(guard(Access::Generate));
    // OpenAI's clients read its error form, a refused key included.
    let openai = Router::new()
        .route("/v1/completions", post(openai::completions))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .route("/tokenize", post(openai::tokenize))
        .route("/detokenize", post(openai::detokenize))
        .route_layer(in_dialect(Access::Generate, |e| {
            openai::error::OpenAiError::from(e).into_response()
        }));
    let vllm_answer = |e: ApiError| openai::error::OpenAiError::from(e).into_response();
    let vllm_generate = Router::new()
        .route("/inference/v1/generate", post(vllm::generate))
        .route("/is_paused", get(vllm::is_paused))
        .route("/get_world_size", get(vllm::world_size))
        .route_layer(in_dialect(Access::Generate, vllm_answer));
    let vllm_control = Router::new()
        .route("/pause", post(vllm::pause))
        .route("/resume", post(vllm::resume))
        .route("/update_weights", post(vllm::update_weights))
        .route("/reset_prefix_cache", post(vllm::reset_prefix_cache))
        .route_layer(in_dialect(Access::Control, vllm_answer));
    let sglang_answer = |e: ApiError| sglang::SglangError(e).into_response();
    let sglang_generate = Router::new()
        .route("/generate", post(sglang::generate))
        .route("/get_weight_version", get(sglang::get_weight_version))
        .route("/get_server_info", get(sglang::server_info))
        .route("/server_info", get(sglang::server_info))
        .route("/model_info", get(sglang::model_info))
        .route_layer(in_dialect(Access::Generate, sglang_answer));
    let sglang_control = Router::new()
        .route(
            "/update_weights_from_disk",
            post(sglang::update_weights_from_disk),
        )
        .route("/pause_generation", post(sglang::pause_generation))
        .route("/continue_generation", post(sglang::continue_generation))
        .route(
            "/flush_cache",
            post(sglang::flush_cache).get(sglang::flush_cache),
        )
        .route("/abort_request", post(sglang::abort_request))
        .route_layer(in_dialect(Access::Control, sglang_answer));
    let control = Router::new()
        .route("/weights", post(weights))
        .route_layer(guard(Access::Control));
    let probes = Router::new()
        .route("/health", get(health))
        .route("/health_generate", get(health))
        .route("/metrics", get(metrics))
        .route_layer(guard(Access::Probe));
    generate
        .merge(openai)
        .merge(vllm_generate)
        .merge(vllm_control)
        .merge(sglang_generate)
        .merge(sglang_control)
        .merge(control)
        .merge(probes)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(body::close_if_unread))
        .with_state(state)
}

/// Turns a handler's panic into a 500 `internal` answer; the server keeps serving.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic_message(panic.as_ref());
    tracing::error!(panic = ?message, "a request handler panicked");
    // The panic's text is for the log: it may name the server's internals.
    let error = ApiError::Internal(
        "the request handler panicked (a bug); the server's log has the details".into(),
    );
    request_failed(error.error_type());
    error.into_response()
}

async fn rollouts(
    State(state): State<Arc<AppState>>,
    body: Result<RequestBody, ApiError>,
) -> Response {
    request_received();
    let result: Result<Response, ApiError> = async {
        state.accepting()?;
        // A body that could not be read (too large) is refused before admission: it is the
        // request's fault, whatever the load.
        let RequestBody(body) = body?;
        let admission = state.service.admit()?;
        let running = RunningRequest::start();
        let request = parse_json(&body)?;
        let valid = validate(request, &state.config)?;
        let deadline = Deadline::after(valid.timeout);
        if valid.stream {
            // Tokenization errors still answer with their status; the lines follow once every
            // sequence started.
            let started = deadline
                .bound(&state.shutdown, state.service.start(valid, admission))
                .await?;
            return Ok(stream::ndjson(
                state.shutdown.clone(),
                started,
                deadline,
                running,
            ));
        }
        let response = deadline
            .bound(&state.shutdown, state.service.run(valid, admission))
            .await?;
        Ok(Json(response).into_response())
    }
    .await;
    result.unwrap_or_else(|e| {
        request_failed(e.error_type());
        e.into_response()
    })
}

async fn weights(
    State(state): State<Arc<AppState>>,
    body: Result<RequestBody, ApiError>,
) -> Result<Json<WeightsResponse>, ApiError> {
    let request = body.and_then(|RequestBody(body)| parse_json::<WeightsRequest>(&body));
    Ok(Json(control::update_weights(&state, request).await?))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}

/// 200 while serving (the server only listens once the model is loaded and probed); once
/// shutdown has begun, 503 `shutting_down`, so a load balancer stops sending work here. Also
/// SGLang's `/health_generate` (which runs no generation here).
async fn health(State(state): State<Arc<AppState>>) -> Result<StatusCode, ApiError> {
    match state.shutdown.phase() {
        Phase::Serving => Ok(StatusCode::OK),
        _ => Err(ApiError::ShuttingDown),
    }
}

async fn info(State(state): State<Arc<AppState>>) -> Json<InfoResponse> {
    let c = &state.config;
    let live = state.service.live();
    let model = live.engine.info();
    Json(InfoResponse {
        model: model.id.clone(),
        model_path: model.source.display().to_string(),
        engine: model.engine.to_string(),
        sampler: format!("{:?}", c.sampler).to_lowercase(),
        device_kernels: model.device_kernels,
        vocab_size: model.vocab_size,
        max_context: model.max_context,
        engine_batch: model.max_batch,
        weights_version: live.version,
        kv_cache: live.engine.kv_cache(),
        defaults: Defaults {
            group_size: c.default_group_size,
            sampling: SamplingDefaults {
                temperature: DEFAULT_TEMPERATURE,
                top_p: DEFAULT_TOP_P,
                top_k: None,
                max_tokens: c.default_max_tokens,
            },
            stats: DEFAULT_STATS,
            advantage: DEFAULT_ADVANTAGE,
        },
        limits: Limits {
            max_prompts: c.max_prompts,
            max_group_size: c.max_group_size,
            max_new_tokens: c.max_new_tokens,
            max_running_sequences: c.max_running_sequences,
            max_requests: c.max_requests,
            max_body_bytes: c.max_body_bytes,
            max_request_tokens: c.max_request_tokens,
            max_timeout_ms: c.max_timeout_ms,
        },
    })
}
