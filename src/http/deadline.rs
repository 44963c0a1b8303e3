//! A request's deadline (`timeout_ms`) and the server's shutdown: whichever comes first ends
//! what the request waits for, whole or streamed.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::shutdown::Shutdown;
use crate::api::error::ApiError;

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

    /// Runs `work` until it ends, the deadline passes (504 `timeout`) or `shutdown` cancels the
    /// requests in flight (503 `shutting_down`). Dropping `work` cancels its sequences.
    pub async fn bound<T>(
        &self,
        shutdown: &Shutdown,
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
            () = shutdown.cancelled() => Err(ApiError::ShuttingDown),
        }
    }
}
