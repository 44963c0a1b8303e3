//! Streamed answers (`"stream": true`): NDJSON lines, each group as soon as its samples are
//! done, then the summary; for the same seed exactly the groups of the whole answer; a failure
//! ends the stream with an error line; a client that leaves cancels the rest.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{post_raw, rollout, Lines};
use crate::harness::{self, InProcess};

/// Sequences waiting for the engine or inside it.
async fn sequences_held(server: &InProcess) -> f64 {
    server.metric("entroll_sequences_running").await
        + server.metric("entroll_sequences_waiting").await
}

/// Waits up to `within` for every sequence to leave the queue and the engine.
async fn wait_until_free(server: &InProcess, within: Duration) {
    let started = std::time::Instant::now();
    while sequences_held(server).await > 0.0 {
        assert!(
            started.elapsed() < within,
            "sequences still held {within:?} after the stream ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The groups of a streamed answer by id, and its last line.
fn split(lines: Vec<Value>) -> (Vec<Value>, Value) {
    let (last, groups) = lines.split_last().expect("at least the summary line");
    let mut groups: Vec<Value> = groups
        .iter()
        .map(|line| {
            let object = line.as_object().unwrap();
            assert_eq!(object.len(), 1, "a group line holds only the group: {line}");
            line["group"].clone()
        })
        .collect();
    groups.sort_by_key(|g| g["id"].as_str().unwrap().to_string());
    (groups, last.clone())
}

#[tokio::test]
async fn streamed_groups_are_the_whole_answer_s_groups() {
    let server = harness::start(|_| {});
    let request = json!({
        "prompts": [
            {"id": "a", "text": "What is 6 times 7?", "answer": "42", "group_size": 1},
            {"id": "b", "text": "Count to five.", "group_size": 3},
            {"id": "c", "messages": [{"role": "user", "content": "Name a colour."}], "answer": "red"}
        ],
        "group_size": 2,
        "sampling": {"max_tokens": 24, "seed": 7, "top_p": 0.95},
        "advantage": "grpo"
    });
    let whole = rollout(&server, &request).await;
    let mut stream = Lines::post(&server, &request).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.content_type, "application/x-ndjson");
    let (groups, last) = split(stream.rest().await);

    let mut expected: Vec<Value> = whole["groups"].as_array().unwrap().clone();
    expected.sort_by_key(|g| g["id"].as_str().unwrap().to_string());
    assert_eq!(groups.len(), 3);
    // Token for token, statistic for statistic, reward for reward.
    assert_eq!(groups, expected);
    // The last line holds every other field of the whole answer, with the same values (the
    // wall time aside).
    for key in whole.as_object().unwrap().keys() {
        if key == "groups" {
            continue;
        }
        assert!(last.get(key).is_some(), "the summary line lacks {key}");
        if key == "summary" {
            let (mut a, mut b) = (last[key].clone(), whole[key].clone());
            a["elapsed_ms"] = Value::Null;
            b["elapsed_ms"] = Value::Null;
            assert_eq!(a, b);
        } else {
            assert_eq!(last[key], whole[key], "{key}");
        }
    }
    assert_eq!(
        last.as_object().unwrap().len() + 1,
        whole.as_object().unwrap().len()
    );
    assert_eq!(server.metric("entroll_requests_succeeded_total").await, 2.0);
    // Each answer's groups were counted once.
    assert_eq!(
        server.metric("entroll_groups_total").await,
        4.0,
        "two rewarded groups per answer"
    );
}

#[tokio::test]
async fn a_group_is_sent_while_the_others_still_run() {
    // One sequence at a time, in the order the sample tasks reach the queue (not necessarily
    // the request's): whichever group completes first, the other still has samples to run.
    let server = harness::start(|c| c.max_running_sequences = 1);
    let request = json!({
        "prompts": [
            {"id": "a", "text": "Hello", "group_size": 3},
            {"id": "b", "text": "Write a long story.", "group_size": 3}
        ],
        "sampling": {"max_tokens": 200, "seed": 3}
    });
    let mut stream = Lines::post(&server, &request).await;
    let first = stream.next().await.expect("a first line");
    let first_id = first["group"]["id"]
        .as_str()
        .expect("a group line")
        .to_string();
    // The other group's samples are still queued or running when the first group arrives.
    let held = sequences_held(&server).await;
    assert!(
        held > 0.0,
        "the first group came only when everything was done"
    );
    let rest = stream.rest().await;
    assert_eq!(rest.len(), 2, "the other group, then the summary");
    assert_ne!(rest[0]["group"]["id"], first_id.as_str());
    assert_eq!(rest[0]["group"]["samples"].as_array().unwrap().len(), 3);
    assert!(rest[1]["summary"]["tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_client_that_leaves_a_stream_cancels_the_rest() {
    let server = harness::start(|c| c.max_running_sequences = 1);
    let request = json!({
        "prompts": [
            {"id": "a", "text": "Hi", "group_size": 4},
            {"id": "b", "text": "Write a very long story about a dragon.", "group_size": 4}
        ],
        "sampling": {"max_tokens": 300, "seed": 1}
    });
    let mut stream = Lines::post(&server, &request).await;
    let first = stream.next().await.expect("a first line");
    assert!(first["group"]["id"].is_string(), "{first}");
    assert!(sequences_held(&server).await > 0.0);
    drop(stream);
    // The other group's samples (up to 4 × 300 tokens, one at a time) were left: they leave
    // the queue and the engine within a second instead.
    wait_until_free(&server, Duration::from_secs(1)).await;
    assert_eq!(server.metric("entroll_requests_running").await, 0.0);
    assert_eq!(server.metric("entroll_requests_succeeded_total").await, 0.0);
    // The engine is free for the next request.
    let r = rollout(
        &server,
        &json!({"prompts": [{"text": "Hi"}], "group_size": 1, "sampling": {"max_tokens": 4, "seed": 2}}),
    )
    .await;
    assert_eq!(r["groups"][0]["samples"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_deadline_passed_mid_stream_ends_it_with_an_error_line() {
    let server = harness::start(|_| {});
    let request = json!({
        "prompts": [{"text": "Write a very long story about a dragon."}],
        "group_size": 4,
        "sampling": {"max_tokens": 2000, "seed": 1},
        "timeout_ms": 3000
    });
    let mut stream = Lines::post(&server, &request).await;
    // The answer had started (its sequences were running) when the deadline passed.
    assert_eq!(stream.status, 200);
    let lines = stream.rest().await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["error_type"], "timeout", "{}", lines[0]);
    assert!(lines[0]["error"].as_str().unwrap().contains("3000 ms"));
    assert_eq!(
        server
            .metric("entroll_requests_failed_total{error_type=\"timeout\"}")
            .await,
        1.0
    );
    wait_until_free(&server, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_stream_that_cannot_be_answered_group_by_group_is_refused() {
    let server = harness::start(|_| {});
    // A batch peak threshold needs every group before the first can be sent.
    let (status, err) = post_raw(
        &server,
        json!({"prompts": [{"text": "Hi"}], "stream": true, "stats": {"peak_scope": "batch"}})
            .to_string(),
    )
    .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error_type"], "validation");
    assert!(err["error"].as_str().unwrap().contains("peak_scope"));
    // Errors found before any line (here: a prompt outside the vocabulary) keep their status.
    let (status, err) = post_raw(
        &server,
        json!({"prompts": [{"token_ids": [99999999]}], "stream": true}).to_string(),
    )
    .await;
    assert_eq!(status, 422, "{err}");
}
