//! The native engine's batching, seen through the public API and its metrics: the samples of
//! a group share one prefill, and sequences join and leave a running batch between steps.

use crate::common;

use std::time::Duration;

use common::{metric, rollout, spawn};
use serde_json::json;

#[tokio::test]
async fn a_group_shares_one_prefill() {
    let server = spawn(&["--engine", "native"]);
    let r = rollout(
        &server,
        &json!({
            "prompts": [
                {"messages": [{"role": "user", "content": "What is 6 times 7?"}], "group_size": 4},
                {"text": "Once upon a time", "group_size": 3}
            ],
            "sampling": {"max_tokens": 6, "seed": 5}
        }),
    )
    .await;
    let prompt_lengths: Vec<usize> = r["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["prompt_token_ids"].as_array().unwrap().len())
        .collect();
    let computed = metric(&server.base, "entroll_engine_prefill_tokens_total").await;
    let served = metric(&server.base, "entroll_prompt_tokens_total").await;
    // Every sequence counts its prompt; the engine computed each prompt once. (A sample that
    // reaches the engine after its group's prefill references a sibling's full blocks of 16 and
    // computes only the rest: at most the prompt's last partial block, or its last 16.)
    let once = (prompt_lengths[0] + prompt_lengths[1]) as f64;
    assert_eq!(
        served,
        (4 * prompt_lengths[0] + 3 * prompt_lengths[1]) as f64
    );
    let tail = |len: usize| (len - 16 * ((len - 1) / 16)) as f64;
    let late = 3.0 * tail(prompt_lengths[0]) + 2.0 * tail(prompt_lengths[1]);
    assert!(
        computed >= once && computed <= once + late,
        "{computed} prompt tokens computed for prompts of {prompt_lengths:?}"
    );
    // The samples of a group did not all draw the same tokens from the shared prompt.
    let group = r["groups"][0]["samples"].as_array().unwrap();
    assert!(group
        .iter()
        .any(|s| s["token_ids"] != group[0]["token_ids"]));
}

#[tokio::test]
async fn sequences_join_and_leave_a_running_batch() {
    let server = spawn(&["--engine", "native"]);
    // A long request: 2 samples of up to 3,000 tokens.
    let long = json!({
        "prompts": [{"text": "Write a very long story about a dragon."}],
        "group_size": 2,
        "sampling": {"max_tokens": 3000, "seed": 1}
    });
    let base = server.base.clone();
    let long_request = tokio::spawn(async move { common::post_to(&base, long.to_string()).await });
    while metric(&server.base, "entroll_sequences_running").await < 2.0 {
        assert!(!long_request.is_finished(), "the long request ended early");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A short request arrives while the long one decodes: it is admitted between two steps
    // and finishes while the long one is still running.
    let short = rollout(
        &server,
        &json!({"prompts": [{"text": "Hi"}], "group_size": 2, "sampling": {"max_tokens": 8, "seed": 2}}),
    )
    .await;
    assert_eq!(short["groups"][0]["samples"].as_array().unwrap().len(), 2);
    assert!(
        !long_request.is_finished(),
        "the short request waited for the long one"
    );
    // Some decode forwards ran all four sequences at once.
    let steps = metric(&server.base, "entroll_engine_decode_batch_count").await;
    let batched =
        steps - metric(&server.base, "entroll_engine_decode_batch_bucket{le=\"2\"}").await;
    assert!(batched >= 1.0, "no decode step ran more than 2 sequences");
    long_request.abort();
}

#[tokio::test]
async fn a_later_sequence_reuses_the_prompt_blocks_of_a_running_one() {
    let server = spawn(&["--engine", "native"]);
    let request = json!({
        "prompts": [{"messages": [{"role": "user", "content": "Count from one to twenty in words."}],
                     "group_size": 1}],
        "sampling": {"max_tokens": 24, "seed": 9}
    });
    // The first request runs; once its prompt is in the cache, the same request again.
    let base = server.base.clone();
    let body = request.to_string();
    let first = tokio::spawn(async move { common::post_to(&base, body).await });
    while metric(&server.base, "entroll_engine_prefill_tokens_total").await == 0.0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let computed_first = metric(&server.base, "entroll_engine_prefill_tokens_total").await;
    let second = rollout(&server, &request).await;
    let (status, first) = first.await.unwrap();
    assert_eq!(status, 200, "{first}");
    let computed = metric(&server.base, "entroll_engine_prefill_tokens_total").await;
    let len = first["groups"][0]["prompt_token_ids"]
        .as_array()
        .unwrap()
        .len() as f64;
    assert_eq!(computed_first, len);
    assert!(!first["groups"][0]["samples"][0]["text"]
        .as_str()
        .unwrap()
        .is_empty());
    // Had the first finished before the second arrived, the second would have computed its
    // whole prompt; it referenced the full blocks of 16 the first holds (all but the last
    // position at least) and computed the rest.
    let reused = 16.0 * ((len - 1.0) / 16.0).floor();
    assert_eq!(
        computed - computed_first,
        len - reused,
        "prompt of {len} tokens"
    );
    // Same seed, same key: the shared blocks give the same tokens and the same bits of every
    // statistic (a token's computation does not depend on the batch or the chunk it runs in).
    let a = &first["groups"][0]["samples"][0];
    let b = &second["groups"][0]["samples"][0];
    for field in [
        "token_ids",
        "logprobs",
        "entropy",
        "top_p_entropy",
        "top_p_size",
    ] {
        assert_eq!(a[field], b[field], "{field}");
    }
}
