//! The shutdown signal (SIGTERM or SIGINT to the binary) with requests in flight: the listener
//! closes, a request that finishes within the grace period gets its complete 200, one that
//! cannot is cancelled and answered 503 `shutting_down`, and the server stops cleanly (the
//! binary then exits 0: `loadtest/soak.sh` and `docker/demo.sh` check that on the real binary).

use std::time::{Duration, Instant};

use crate::harness::{self, InProcess};
use serde_json::{json, Value};

async fn post(base: String, body: Value) -> (u16, Value) {
    crate::common::post_to(&base, body.to_string()).await
}

/// Waits until the gauge `name` reaches `target()` (which may change as requests finish).
async fn wait_for(server: &InProcess, name: &str, target: impl Fn() -> f64) {
    let started = Instant::now();
    while server.metric(name).await < target() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "requests never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_shutdown_signal_finishes_or_cancels_accepted_requests() {
    const GRACE_MS: u64 = 10_000;
    const SHORT_TOKENS: u64 = 500;
    let mut server = harness::start(|c| c.shutdown_grace_ms = GRACE_MS);
    // Short: still running when the signal comes (asserted below), done well within the grace
    // period (a few hundred tokens of the tiny model take a fraction of a second).
    let short = tokio::spawn(post(
        server.base.clone(),
        json!({"prompts": [{"text": "Say hello."}], "group_size": 1,
               "sampling": {"max_tokens": SHORT_TOKENS, "seed": 1}}),
    ));
    // Its sequence is inside the engine before the long request exists, so it cannot queue
    // behind the long one.
    wait_for(&server, "entroll_sequences_running", || {
        if short.is_finished() {
            0.0
        } else {
            1.0
        }
    })
    .await;
    // Long: 8 samples of 2,000 tokens, still running when the grace period ends.
    let long = tokio::spawn(post(
        server.base.clone(),
        json!({"prompts": [{"text": "Write a very long story about a dragon."}],
               "group_size": 8, "sampling": {"max_tokens": 2000, "seed": 1}}),
    ));
    wait_for(&server, "entroll_requests_running", || {
        if short.is_finished() {
            1.0
        } else {
            2.0
        }
    })
    .await;

    // The path under test is a request that finishes after the signal, within the grace.
    assert!(
        !short.is_finished(),
        "the short request finished before the signal"
    );
    let signalled = Instant::now();
    server.signal();

    // The listener is closed: a new connection is refused (poll briefly for the signal to land).
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if crate::common::client()
            .get(format!("{}/health", server.base))
            .send()
            .await
            .is_err()
        {
            refused = true;
            break;
        }
    }
    assert!(
        refused,
        "the server still accepts connections after SIGTERM"
    );

    let (status, body) = short.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let samples = crate::common::samples(&body);
    assert_eq!(samples.len(), 1);
    // Complete: every token it asked for, or its own end of sequence, not a cut.
    let (length, finish) = (
        samples[0]["length"].as_u64().unwrap(),
        samples[0]["finish_reason"].as_str().unwrap(),
    );
    assert!(
        (finish == "length" && length == SHORT_TOKENS)
            || (finish == "stop" && length <= SHORT_TOKENS),
        "finish_reason {finish} after {length} tokens"
    );

    let (status, body) = long.await.unwrap();
    let answered = signalled.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error_type"], "shutting_down");
    assert!(
        answered >= Duration::from_millis(GRACE_MS),
        "cancelled after {answered:?}, before the grace period ended"
    );

    // Every request is answered; the server itself stops (blocking here is fine: it runs on
    // its own thread).
    let stopped = server.wait_stopped(Duration::from_secs(60));
    assert!(stopped.is_ok(), "{stopped:?}");
}

/// `GET /health`: its status, or `None` if the connection was refused.
async fn health(base: &str) -> Option<(u16, String)> {
    let response = crate::common::client()
        .get(format!("{base}/health"))
        .send()
        .await
        .ok()?;
    Some((response.status().as_u16(), response.text().await.ok()?))
}

#[tokio::test]
async fn a_replica_announces_its_shutdown_on_health_before_it_stops_accepting() {
    const ANNOUNCE_MS: u64 = 1_500;
    let mut server = harness::start(|c| c.shutdown_announce_ms = ANNOUNCE_MS);
    assert_eq!(health(&server.base).await.map(|h| h.0), Some(200));
    let signalled = Instant::now();
    server.signal();
    // /health says so at once (poll briefly for the signal to land) ...
    let mut said = None;
    for _ in 0..50 {
        match health(&server.base).await {
            Some((503, body)) => {
                said = Some(body);
                break;
            }
            other => assert_eq!(other.map(|h| h.0), Some(200)),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body: Value = serde_json::from_str(&said.expect("/health never answered 503")).unwrap();
    assert_eq!(body["error_type"], "shutting_down");
    // ... while work is still accepted and completed.
    let (status, answer) = post(
        server.base.clone(),
        json!({"prompts": [{"text": "Say hello."}], "group_size": 1,
               "sampling": {"max_tokens": 4, "seed": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // After the announcement the listener closes.
    let mut refused = false;
    for _ in 0..250 {
        if health(&server.base).await.is_none() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the listener never closed");
    assert!(signalled.elapsed() >= Duration::from_millis(ANNOUNCE_MS));
    let stopped = server.wait_stopped(Duration::from_secs(30));
    assert!(stopped.is_ok(), "{stopped:?}");
}
