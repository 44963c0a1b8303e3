//! The accept loop: HTTP/1.1 connections under a cap, each with deadlines for what a client
//! owes the server, served until shutdown.
//!
//! `axum::serve` sets no timer (so hyper's header deadline is off) and accepts connections
//! without limit; a client that connects and stays silent, trickles its headers, or never reads
//! its answer would hold a descriptor and memory for ever. Here:
//! - at most `max_connections` are open; one more is answered 503 `overloaded` and closed;
//! - a request's headers must arrive within `header_timeout`, counted from when the server
//!   waits for them: on a new connection and on an idle keep-alive one alike (so this is the
//!   idle timeout too), after which the connection is closed;
//! - a write the client leaves blocked (its receive window full) for `write_timeout` closes the
//!   connection ([`WriteDeadline`]);
//! - the body's own deadline and size are the request's (`super::body`).
//!
//! HTTP/1.1 only, as vLLM's and SGLang's servers: no client of a rollout server needs HTTP/2,
//! whose streams multiply what one connection may hold.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;

use crate::telemetry::metrics;

/// What one client may hold and how long it may make the server wait.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Until a request's headers have arrived (on a new or an idle connection).
    pub header_timeout: Duration,
    /// Until a blocked write of the answer makes progress.
    pub write_timeout: Duration,
}

/// Serves `app` on `listener` until `stop` resolves; then stops accepting, lets every
/// connection finish its request in flight and close, and returns once all have.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(&stream, limits.max_connections);
            continue;
        };
        // Small answers (errors, /health) go out at once rather than after Nagle's delay.
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(WriteDeadline::new(stream, limits.write_timeout));
        let connection =
            graceful.watch(http.serve_connection(io, TowerToHyperService::new(app.clone())));
        tokio::spawn(async move {
            let _open = metrics::OpenConnection::start();
            if let Err(e) = connection.await {
                if let Some(reason) = deadline_missed(&e) {
                    metrics::connection_timed_out(reason);
                    tracing::debug!(reason, "connection closed: the client missed a deadline");
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// An accept that failed: a connection reset before it was taken is the client's affair; any
/// other error (out of descriptors, say) is logged and the loop pauses a moment rather than
/// spin on it.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Answers a connection over the cap with 503 `overloaded` and closes it. One non-blocking
/// write: the answer fits any socket's send buffer, and a client that cannot take it gets the
/// close alone.
fn refuse(stream: &TcpStream, max_connections: usize) {
    metrics::connection_refused();
    let body = serde_json::json!({
        "error": format!(
            "the server has its {max_connections} connections open (max_connections); retry later"
        ),
        "error_type": "overloaded",
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

/// Which deadline a connection's error is, if any: `header` (hyper's header deadline) or
/// `write` ([`WriteDeadline`]).
fn deadline_missed(e: &hyper::Error) -> Option<&'static str> {
    if e.is_timeout() {
        return Some("header");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
        {
            return Some("write");
        }
        source = cause.source();
    }
    None
}

/// A stream whose writes fail with `TimedOut` once one has been blocked for `limit`: a client
/// that stops reading its answer loses its connection instead of holding it, and the answer's
/// memory, for ever. Reads pass through (a rollout may rightly take hours to answer).
pub struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    blocked: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    /// `inner` with writes bounded by `limit`.
    pub fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            blocked: None,
        }
    }

    /// Passes a ready result on (and forgets the blocked time); a pending one starts or polls
    /// the deadline.
    fn bound<R>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if result.is_ready() {
            self.blocked = None;
            return result;
        }
        let limit = self.limit;
        let blocked = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match blocked.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing of its answer for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.bound(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.bound(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.bound(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.bound(cx, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_fails_after_the_limit_and_one_read_resets_it() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut stream = WriteDeadline::new(near, Duration::from_secs(30));
        // The pipe takes 64 bytes; the rest blocks until the far end reads.
        let chunk = [7u8; 256];
        let write = tokio::spawn(async move {
            let r = stream.write_all(&chunk).await;
            (r, stream)
        });
        tokio::time::sleep(Duration::from_secs(20)).await;
        // Progress within the limit: the far end reads 64 bytes, the write goes on.
        let mut got = [0u8; 64];
        far.read_exact(&mut got).await.unwrap();
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(
            !write.is_finished(),
            "the deadline counted from the first block, not from the last progress"
        );
        tokio::time::sleep(Duration::from_secs(15)).await;
        let (result, _stream) = write.await.unwrap();
        let error = result.expect_err("a write blocked for 30 s fails");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
