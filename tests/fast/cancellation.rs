//! A client that goes away cancels its sequences: the engine is free for the next request
//! instead of generating the abandoned tokens, and the running gauges return to zero.

use std::time::Duration;

use crate::common::rollout;
use crate::harness::{self, InProcess};
use entroll::engine::settings::EngineKind;
use serde_json::json;

/// Sequences of a 4-sample request that are inside the engine at once: the engine's batch,
/// at most 4. Those are the ones the engine drops on cancellation; the rest never reach it.
async fn in_engine(server: &InProcess) -> f64 {
    let batch = crate::common::get_json(&server.base, "/info").await["engine_batch"]
        .as_f64()
        .unwrap();
    batch.min(4.0)
}

/// Waits (up to 10 s) until the engine came back to every cancelled sequence and dropped it.
async fn wait_for_cancelled_steps(server: &InProcess) {
    let mut waited = 0;
    let expected = in_engine(server).await;
    while server.metric("entroll_sequences_cancelled_total").await < expected {
        assert!(
            waited < 100,
            "the engine never came back to the cancelled sequence"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
}

#[tokio::test]
async fn a_disconnected_client_frees_the_engine() {
    let server = harness::start(|_| {});
    // 4 samples of up to 2,000 tokens (the tiny model's context is 2,048): far more work than
    // the client waits for if nothing cancels it.
    let long = json!({
        "prompts": [{"text": "Write a very long story about a dragon."}],
        "group_size": 4,
        "sampling": {"max_tokens": 2000, "seed": 1}
    });
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_secs(4))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(format!("{}/rollouts", server.base))
        .json(&long)
        .send()
        .await;
    assert!(
        gave_up.is_err(),
        "the long request should still be running when the client leaves"
    );
    // The handler is dropped with the connection: its sequences leave the queue and engine
    // within a second of the client leaving.
    let left = std::time::Instant::now();
    while server.metric("entroll_sequences_running").await
        + server.metric("entroll_sequences_waiting").await
        > 0.0
    {
        assert!(
            left.elapsed() < Duration::from_secs(1),
            "sequences still held 1 s after the client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("sequences freed {:?} after the client left", left.elapsed());
    assert_eq!(server.metric("entroll_requests_running").await, 0.0);
    // The sequences that were inside the engine were dropped there, each once (had the engine
    // kept one, it would be counted again at every later step).
    wait_for_cancelled_steps(&server).await;
    // The engine is free: a small request is served.
    let r = rollout(
        &server,
        &json!({"prompts": [{"text": "Hi"}], "group_size": 1, "sampling": {"max_tokens": 4, "seed": 2}}),
    )
    .await;
    assert_eq!(
        r["groups"][0]["samples"][0]["length"]
            .as_u64()
            .map(|l| l <= 4),
        Some(true)
    );
    // No abandoned sequence was counted as finished, and the engine stopped asking for steps
    // of the cancelled one.
    assert_eq!(server.metric("entroll_requests_succeeded_total").await, 1.0);
    assert_eq!(
        server.metric("entroll_sequences_cancelled_total").await,
        in_engine(&server).await
    );
}

#[tokio::test]
async fn a_passed_deadline_answers_504_and_frees_the_engine() {
    let server = harness::start(|_| {});
    let (status, err) = crate::common::post_raw(
        &server,
        json!({
            "prompts": [{"text": "Write a very long story about a dragon."}],
            "group_size": 4,
            "sampling": {"max_tokens": 2000, "seed": 1},
            "timeout_ms": 3000
        })
        .to_string(),
    )
    .await;
    assert_eq!(status, 504, "{err}");
    assert_eq!(err["error_type"], "timeout");
    assert_eq!(
        server
            .metric("entroll_requests_failed_total{error_type=\"timeout\"}")
            .await,
        1.0
    );
    wait_for_cancelled_steps(&server).await;
    let r = rollout(
        &server,
        &json!({"prompts": [{"text": "Hi"}], "group_size": 1, "sampling": {"max_tokens": 4, "seed": 2}, "timeout_ms": 600000}),
    )
    .await;
    assert_eq!(r["groups"][0]["samples"].as_array().unwrap().len(), 1);
    assert_eq!(
        server.metric("entroll_sequences_cancelled_total").await,
        in_engine(&server).await
    );
    assert_eq!(server.metric("entroll_sequences_running").await, 0.0);
}

#[tokio::test]
async fn clients_leaving_while_their_prompt_is_tokenized_do_not_hurt_others() {
    // mistral.rs tokenizes on its engine thread, between decode steps, and panics that thread
    // if the caller has stopped waiting; entroll must keep waiting on the caller's behalf. So
    // the server runs mistral.rs (the tiny Llama would get the native engine by default).
    let server = harness::start(|c| c.engine = EngineKind::Mistralrs);
    let info = crate::common::get_json(&server.base, "/info").await;
    assert_eq!(info["engine"], "mistralrs");
    let base = server.base.clone();
    // Long enough to still run while the hasty clients come and go (checked below).
    let busy = tokio::spawn(async move {
        crate::common::post_to(
            &base,
            json!({"prompts": [{"text": "Tell me about the moon."}], "group_size": 1,
                   "sampling": {"max_tokens": 2000, "seed": 3}})
            .to_string(),
        )
        .await
    });
    let started = std::time::Instant::now();
    while server.metric("entroll_sequences_running").await < 1.0 {
        assert!(
            !busy.is_finished() && started.elapsed() < Duration::from_secs(60),
            "the long request never ran beside the hasty clients"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut gave_up = 0;
    for i in 0..30u64 {
        let hasty = reqwest::Client::builder()
            .timeout(Duration::from_millis(20 + 3 * i))
            .build()
            .unwrap();
        let sent = hasty
            .post(format!("{}/rollouts", server.base))
            .json(&json!({"prompts": [{"messages": [{"role": "user", "content": format!("Question {i}?")}]}],
                          "group_size": 1, "sampling": {"max_tokens": 4}}))
            .send()
            .await;
        gave_up += usize::from(sent.is_err());
    }
    assert!(gave_up > 0, "no client gave up; the test exercised nothing");
    assert!(
        !busy.is_finished(),
        "the long request ended before the hasty clients did: nothing ran beside them"
    );
    let (status, body) = busy.await.unwrap();
    assert_eq!(
        status, 200,
        "a request beside the hasty clients failed: {body}"
    );
    assert!(body["groups"][0]["samples"][0]["length"].as_u64().unwrap() >= 1);
    assert_eq!(
        server
            .metric("entroll_requests_failed_total{error_type=\"engine\"}")
            .await,
        0.0
    );
}
