//! Streamed `/rollouts` answers (`"stream": true`): `application/x-ndjson`, one line per group
//! as soon as all its samples are done, then the summary; an error ends the stream with an
//! error line. The body owns the running request: when the client goes away the body is
//! dropped, and with it the request's sequences.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::api::StreamLine;
use crate::error::ApiError;
use crate::metrics::{request_failed, RunningRequest};
use crate::rollout::Running;
use crate::server::AppState;

/// A request's deadline (`timeout_ms`), counted from when it was validated, and the server's
/// shutdown: whichever comes first ends what the request waits for.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Option<(Instant, Duration)>,
}

impl Deadline {
    /// The deadline `timeout` from now; none without one.
    pub fn after(timeout: Option<Duration>) -> Self {
        Self {
            at: timeout.map(|t| (Instant::now() + t, t)),
        }
    }

    /// Runs `work` until it ends, the deadline passes (504 `timeout`) or shutdown cancels the
    /// requests in flight (503 `shutting_down`). Dropping `work` cancels its sequences.
    pub async fn bound<T>(
        &self,
        state: &AppState,
        work: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let bounded = async {
            match self.at {
                Some((at, timeout)) => tokio::time::timeout_at(at, work)
                    .await
                    .unwrap_or(Err(ApiError::Timeout(timeout.as_millis() as u64))),
                None => work.await,
            }
        };
        tokio::select! {
            result = bounded => result,
            () = state.shutdown.cancelled() => Err(ApiError::ShuttingDown),
        }
    }
}

/// The streamed answer of a started request. `running` counts it as running until its last
/// line.
pub fn ndjson(
    state: Arc<AppState>,
    started: Running,
    deadline: Deadline,
    running: RunningRequest,
) -> Response {
    let lines = futures_util::stream::unfold(Some((started, running)), move |request| {
        let state = state.clone();
        async move {
            let (mut started, running) = request?;
            let line = match deadline.bound(&state, started.next_group()).await {
                Ok(Some(group)) => {
                    return Some((
                        encode(&StreamLine::Group { group }),
                        Some((started, running)),
                    ))
                }
                Ok(None) => {
                    let (summary, served) = started.finish();
                    StreamLine::Summary { summary, served }
                }
                Err(e) => {
                    request_failed(e.error_type());
                    StreamLine::Error(e.body())
                }
            };
            Some((encode(&line), None))
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// One NDJSON line.
fn encode(line: &StreamLine) -> Result<Bytes, Infallible> {
    let mut bytes = serde_json::to_vec(line).expect("a stream line serializes");
    bytes.push(b'\n');
    Ok(Bytes::from(bytes))
}
