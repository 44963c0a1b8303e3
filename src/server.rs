//! HTTP routes: thin axum handlers over [`RolloutService`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::error::Category;

use crate::api::{
    Defaults, InfoResponse, Limits, RolloutRequest, RolloutResponse, SamplingDefaults,
};
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::{request_failed, request_received, RunningRequest};
use crate::rollout::RolloutService;
use crate::validation::{
    validate, DEFAULT_ADVANTAGE, DEFAULT_STATS, DEFAULT_TEMPERATURE, DEFAULT_TOP_P,
};

/// Shared state of every handler.
pub struct AppState {
    /// The rollout service.
    pub service: RolloutService,
    /// The resolved settings.
    pub config: Config,
    /// Renders the Prometheus metrics.
    pub metrics: PrometheusHandle,
}

/// The router with every route.
pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .route("/rollouts", post(rollouts))
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Parses a request body, telling malformed JSON (400) from a wrong request shape (422).
fn parse_body(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<RolloutRequest, ApiError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(limit),
        _ => ApiError::Malformed(rejection.body_text()),
    })?;
    serde_json::from_slice(&body).map_err(|e| match e.classify() {
        Category::Data => ApiError::Invalid(format!("invalid request: {e}")),
        Category::Syntax | Category::Eof | Category::Io => ApiError::Malformed(e.to_string()),
    })
}

async fn rollouts(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RolloutResponse>, ApiError> {
    request_received();
    let result = async {
        let admission = state.service.admit()?;
        let _running = RunningRequest::start();
        let request = parse_body(body, state.config.max_body_bytes)?;
        let valid = validate(request, &state.config)?;
        match valid.timeout {
            // Dropping the run at the deadline cancels its sequences.
            Some(deadline) => tokio::time::timeout(deadline, state.service.run(valid, admission))
                .await
                .unwrap_or(Err(ApiError::Timeout(deadline.as_millis() as u64))),
            None => state.service.run(valid, admission).await,
        }
    }
    .await;
    if let Err(e) = &result {
        request_failed(e.error_type());
    }
    Ok(Json(result?))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}

async fn health() -> StatusCode {
    // The server only listens once the model is loaded and probed.
    StatusCode::OK
}

async fn info(State(state): State<Arc<AppState>>) -> Json<InfoResponse> {
    let c = &state.config;
    let model = state.service.engine().info();
    Json(InfoResponse {
        model: model.id.clone(),
        model_path: c.model.display().to_string(),
        engine: format!("{:?}", c.engine).to_lowercase(),
        sampler: format!("{:?}", c.sampler).to_lowercase(),
        vocab_size: model.vocab_size,
        max_context: model.max_context,
        engine_batch: model.max_batch,
        weights_version: state.service.weights_version(),
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
        },
    })
}
