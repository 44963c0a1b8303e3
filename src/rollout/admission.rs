//! Admission control: a semaphore of `max_requests` permits taken with `try_acquire`, so a full
//! server answers 429 `overloaded` at once instead of queueing without bound; and the count of
//! admitted requests that have started (past a pause), which a pause under `wait` waits on.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::error::ApiError;

/// Admits at most `max_requests` requests at once (running or queued).
pub struct Gate {
    permits: Arc<Semaphore>,
    max_requests: usize,
}

/// Proof that a request was admitted; dropping it frees the slot. It is owned, so a streamed
/// answer holds it until its last line.
pub struct Admission(#[allow(dead_code)] OwnedSemaphorePermit);

impl Gate {
    /// A gate of `max_requests` slots.
    pub fn new(max_requests: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_requests)),
            max_requests,
        }
    }

    /// Admits a request, or answers overloaded at once.
    pub fn admit(&self) -> Result<Admission, ApiError> {
        self.permits
            .clone()
            .try_acquire_owned()
            .map(Admission)
            .map_err(|_| ApiError::Overloaded(self.max_requests))
    }
}

/// Counts the requests that started generating and are not answered yet.
#[derive(Default)]
pub struct Started(Arc<tokio::sync::watch::Sender<usize>>);

/// One started request, counted until it is dropped with the request.
pub struct StartedGuard(Arc<tokio::sync::watch::Sender<usize>>);

impl Started {
    /// Counts one more started request until the guard is dropped.
    pub fn enter(&self) -> StartedGuard {
        self.0.send_modify(|n| *n += 1);
        StartedGuard(self.0.clone())
    }

    /// Waits until no started request is left.
    pub async fn none(&self) {
        let mut count = self.0.subscribe();
        // The sender lives as long as `self`.
        let _ = count.wait_for(|&n| n == 0).await;
    }
}

impl Drop for StartedGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}
