//! A request's body, read whole under the server's limits: refused at once (413) when its
//! `Content-Length` says it is too large, before a byte of it is read; cut off (413) when it
//! grows past the limit without saying so; and given up (408 `timeout`) when it does not arrive
//! within `body_timeout_ms`, so a client that sends headers and then trickles or stalls its
//! body holds its connection for a bounded time. Extracted after the route's key check, so an
//! unauthorised caller's body is never read.
//!
//! An answer given before its request's body was read to its end (a 413, a 401, a 408) says
//! `connection: close` ([`close_if_unread`]): hyper closes such a connection after the answer
//! rather than read the rest of the body, and without the header a client would put it back in
//! its pool and lose its next request to the close.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use hyper::body::{Frame, SizeHint};

use crate::api::error::ApiError;

/// The limits a body is read under.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body in bytes.
    pub max_bytes: usize,
    /// Time from the headers' arrival to the body's end.
    pub timeout: Duration,
}

/// The whole body of a request, read under the state's [`BodyLimits`].
pub struct RequestBody(pub Bytes);

impl<S> FromRequest<S> for RequestBody
where
    BodyLimits: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let limits = BodyLimits::from_ref(state);
        if declared_length(request.headers()).is_some_and(|n| n > limits.max_bytes as u64) {
            return Err(ApiError::TooLarge(limits.max_bytes));
        }
        tokio::time::timeout(limits.timeout, read(request.into_body(), limits.max_bytes))
            .await
            .map_err(|_| ApiError::SlowBody(limits.timeout.as_millis() as u64))?
            .map(RequestBody)
    }
}

/// The body's length as its `Content-Length` declares it (none when absent or unreadable:
/// hyper has refused a malformed one already).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads `body` to its end, refusing it once it passes `max_bytes`.
async fn read(body: Body, max_bytes: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut whole = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::Malformed(format!("the request body could not be read: {e}")))?;
        if whole.len() + chunk.len() > max_bytes {
            return Err(ApiError::TooLarge(max_bytes));
        }
        whole.extend_from_slice(&chunk);
    }
    Ok(whole.into())
}

/// Middleware: marks the answer `connection: close` when the handler left its request's body
/// unread (in part or whole), so the client opens a new connection for its next request
/// instead of sending it on one the server is closing.
pub async fn close_if_unread(request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let ended = Arc::new(AtomicBool::new(false));
    let request = request.map(|inner| {
        Body::new(Watched {
            inner,
            ended: ended.clone(),
        })
    });
    let mut response = next.run(request).await;
    if !ended.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that records, in `ended`, when it has been read to its end.
struct Watched {
    inner: Body,
    ended: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.ended.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_declared_length_is_read_from_the_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(declared_length(&headers), None);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("40000000"));
        assert_eq!(declared_length(&headers), Some(40_000_000));
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_refused_whatever_its_chunks() {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(Bytes::from(vec![1u8; 6])), Ok(Bytes::from(vec![2u8; 5]))];
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        assert!(matches!(read(body, 10).await, Err(ApiError::TooLarge(10))));
        let body = Body::from(vec![3u8; 10]);
        assert_eq!(read(body, 10).await.unwrap().len(), 10);
    }
}
