//! Graceful shutdown: the phases a server goes through after SIGTERM/SIGINT.
//!
//! On the signal the server first *announces* it (for `shutdown_announce_ms`, 0 by default):
//! `/health` answers 503 while requests are still accepted, so a load balancer's health check
//! takes the replica out of rotation before anything is refused. Then the listener stops
//! accepting and the server starts *draining*: requests already admitted keep running, new ones
//! on open connections get 503 `shutting_down`. When the grace period ends, the remaining
//! requests are *cancelled*: their sequences stop and each is answered 503 `shutting_down`, so
//! every accepted request gets a complete answer or a clear error before the process exits.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// Where the server is in its shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving normally.
    Serving,
    /// Serving, but `/health` says the server is going away.
    Announcing,
    /// No new requests; admitted ones finish.
    Draining,
    /// Admitted requests are cancelled.
    Cancelling,
}

/// The shared shutdown state: one sender, watched by every request.
#[derive(Debug)]
pub struct Shutdown {
    phase: watch::Sender<Phase>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            phase: watch::Sender::new(Phase::Serving),
        }
    }
}

impl Shutdown {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Moves to `phase` (never back).
    pub fn advance(&self, phase: Phase) {
        self.phase.send_if_modified(|p| {
            let later = phase > *p;
            if later {
                *p = phase;
            }
            later
        });
    }

    /// Resolves once the server stops taking new work ([`Phase::Draining`] or later).
    pub fn draining(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.phase.subscribe();
        async move {
            let _ = rx.wait_for(|p| *p >= Phase::Draining).await;
        }
    }

    /// Resolves once the server reaches [`Phase::Cancelling`].
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.phase.subscribe();
        async move {
            // The sender lives as long as the server; if it is gone, so is everything else.
            let _ = rx.wait_for(|p| *p == Phase::Cancelling).await;
        }
    }

    /// Runs the shutdown sequence once `signal` resolves: announce for `announce`, then drain,
    /// then cancel after `grace`. Resolves when draining begins (the moment the listener should
    /// stop accepting).
    pub async fn on_signal(
        self: std::sync::Arc<Self>,
        signal: impl Future<Output = ()>,
        announce: Duration,
        grace: Duration,
    ) {
        signal.await;
        if !announce.is_zero() {
            tracing::info!(
                announce_ms = announce.as_millis() as u64,
                "shutting down: /health answers 503, requests are still accepted"
            );
            self.advance(Phase::Announcing);
            tokio::time::sleep(announce).await;
        }
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "shutting down: draining"
        );
        self.advance(Phase::Draining);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            tracing::warn!("grace period over: cancelling the remaining requests");
            self.advance(Phase::Cancelling);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_only_move_forward_and_wake_waiters() {
        let s = Shutdown::default();
        let waiter = tokio::spawn(s.cancelled());
        s.advance(Phase::Draining);
        assert_eq!(s.phase(), Phase::Draining);
        assert!(!waiter.is_finished());
        s.advance(Phase::Cancelling);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("waiter woke")
            .unwrap();
        s.advance(Phase::Serving);
        assert_eq!(s.phase(), Phase::Cancelling);
    }

    #[tokio::test(start_paused = true)]
    async fn the_signal_announces_then_drains_then_cancels() {
        let s = std::sync::Arc::new(Shutdown::default());
        let announcing = tokio::spawn(s.clone().on_signal(
            async {},
            Duration::from_secs(3),
            Duration::from_secs(30),
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(s.phase(), Phase::Announcing);
        assert!(
            !announcing.is_finished(),
            "the listener closed while announcing"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(s.phase(), Phase::Draining);
        assert!(announcing.is_finished());
        // The grace is counted from the end of the announcement (3 s), not from the signal:
        // still draining at 32 s, cancelling after 33 s.
        tokio::time::sleep(Duration::from_secs(28)).await;
        assert_eq!(
            s.phase(),
            Phase::Draining,
            "cancelled before announce + grace"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(s.phase(), Phase::Cancelling);
    }

    #[tokio::test(start_paused = true)]
    async fn the_signal_drains_then_cancels_after_the_grace_period() {
        let s = std::sync::Arc::new(Shutdown::default());
        s.clone()
            .on_signal(async {}, Duration::ZERO, Duration::from_secs(30))
            .await;
        assert_eq!(s.phase(), Phase::Draining);
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(s.phase(), Phase::Draining);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(s.phase(), Phase::Cancelling);
    }
}
