//! Streamed answers. [`events`] is what a started request yields, in order: each group as soon
//! as all its samples are done, then the end (the summary, or the error that stopped it), each
//! bounded by the request's deadline and the server's shutdown. [`ndjson`] writes them as
//! `/rollouts`' `application/x-ndjson` lines; the OpenAI routes write them as server-sent events
//! (`super::openai`). The body owns the running request: when the client goes away the body is
//! dropped, and with it the request's sequences.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};

use super::deadline::Deadline;
use super::shutdown::Shutdown;
use crate::api::error::ApiError;
use crate::api::rollouts::{Group, Served, StreamLine, Summary};
use crate::rollout::running::Running;
use crate::telemetry::metrics::{request_failed, RunningRequest};

/// One step of a streamed request.
pub enum Event {
    /// A group, as soon as all its samples are done (completion order).
    Group(Group),
    /// Every group was sent: the request's aggregates and what served it.
    Finished(Summary, Served),
    /// The request failed (counted in the metrics); nothing follows.
    Failed(ApiError),
}

/// The events of a started request, each bounded by `deadline` and `shutdown`. `running`
/// counts it as running until its last event.
pub fn events(
    shutdown: Arc<Shutdown>,
    started: Running,
    deadline: Deadline,
    running: RunningRequest,
) -> impl Stream<Item = Event> + Send + 'static {
    futures_util::stream::unfold(Some((started, running)), move |request| {
        let shutdown = shutdown.clone();
        async move {
            let (mut started, running) = request?;
            let event = match deadline.bound(&shutdown, started.next_group()).await {
                Ok(Some(group)) => return Some((Event::Group(group), Some((started, running)))),
                Ok(None) => {
                    let (summary, served) = started.finish();
                    Event::Finished(summary, served)
                }
                Err(e) => {
                    request_failed(e.error_type());
                    Event::Failed(e)
                }
            };
            Some((event, None))
        }
    })
}

/// The `/rollouts` streamed answer: one NDJSON line per event.
pub fn ndjson(
    shutdown: Arc<Shutdown>,
    started: Running,
    deadline: Deadline,
    running: RunningRequest,
) -> Response {
    let lines = events(shutdown, started, deadline, running).map(|event| {
        let line = match event {
            Event::Group(group) => StreamLine::Group { group },
            Event::Finished(summary, served) => StreamLine::Summary { summary, served },
            Event::Failed(e) => StreamLine::Error(e.body()),
        };
        encode(&line)
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
