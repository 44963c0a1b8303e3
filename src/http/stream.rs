//! Streamed `/rollouts` answers (`"stream": true`): `application/x-ndjson`, one line per group
//! as soon as all its samples are done, then the summary; an error ends the stream with an
//! error line. The body owns the running request: when the client goes away the body is
//! dropped, and with it the request's sequences.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::deadline::Deadline;
use super::shutdown::Shutdown;
use crate::api::rollouts::StreamLine;
use crate::rollout::running::Running;
use crate::telemetry::metrics::{request_failed, RunningRequest};

/// The streamed answer of a started request, each line bounded by `deadline` and `shutdown`.
/// `running` counts it as running until its last line.
pub fn ndjson(
    shutdown: Arc<Shutdown>,
    started: Running,
    deadline: Deadline,
    running: RunningRequest,
) -> Response {
    let lines = futures_util::stream::unfold(Some((started, running)), move |request| {
        let shutdown = shutdown.clone();
        async move {
            let (mut started, running) = request?;
            let line = match deadline.bound(&shutdown, started.next_group()).await {
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
