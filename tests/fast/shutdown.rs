//! SIGTERM with requests in flight: the listener closes, a request that finishes within the
//! grace period gets its complete 200, one that cannot is cancelled and answered 503
//! `shutting_down`, and the process exits with code 0.

mod common;

use std::time::{Duration, Instant};

use common::{metric, spawn};
use serde_json::{json, Value};

async fn post(base: String, body: Value) -> (u16, Value) {
    common::post_to(&base, body.to_string()).await
}

/// Waits until the gauge `name` reaches `n`.
async fn wait_for(base: &str, name: &str, n: f64) {
    let started = Instant::now();
    while metric(base, name).await < n {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "requests never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_finishes_or_cancels_accepted_requests_and_exits_0() {
    const GRACE_MS: u64 = 6_000;
    let server = spawn(&["--shutdown-grace-ms", &GRACE_MS.to_string()]);
    // Short: a few tokens, done well within the grace period.
    let short = tokio::spawn(post(
        server.base.clone(),
        json!({"prompts": [{"text": "Say hello."}], "group_size": 1,
               "sampling": {"max_tokens": 6, "seed": 1}}),
    ));
    // Its sequence is inside the engine before the long request exists, so it cannot queue
    // behind the long one (the engine runs one sequence at a time on CPU).
    wait_for(&server.base, "entroll_sequences_running", 1.0).await;
    // Long: thousands of tokens, still running when the grace period ends.
    let long = tokio::spawn(post(
        server.base.clone(),
        json!({"prompts": [{"text": "Write a very long story about a dragon."}],
               "group_size": 2, "sampling": {"max_tokens": 4000, "seed": 1}}),
    ));
    wait_for(&server.base, "entroll_requests_running", 2.0).await;

    let signalled = Instant::now();
    server.terminate();

    // The listener is closed: a new connection is refused (poll briefly for the signal to land).
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if common::client()
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
    let samples = common::samples(&body);
    assert_eq!(samples.len(), 1);
    assert!(samples[0]["length"].as_u64().unwrap() >= 1);

    let (status, body) = long.await.unwrap();
    let answered = signalled.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error_type"], "shutting_down");
    assert!(
        answered >= Duration::from_millis(GRACE_MS),
        "cancelled after {answered:?}, before the grace period ended"
    );

    let exit = tokio::task::spawn_blocking(move || server.wait_exit(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}
