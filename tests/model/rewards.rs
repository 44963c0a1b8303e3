//! Rewards, pass rates and advantages on real samples from the real model and engine.
//!
//! A 135M model rarely solves anything, so the test makes a known-correct sample: it runs a
//! seeded request, takes the answer the verifier extracts from one sample as the gold answer,
//! and runs the same request again (same seed, same samples) under each estimator.

use crate::common;

use common::{check_rewards, rollout, samples, server};
use serde_json::{json, Value};

fn request(answer: &str, advantage: Value) -> Value {
    json!({
        "prompts": [{"id": "sum", "text": "Question: What is 3 + 4?\nAnswer: The answer is", "answer": answer}],
        "group_size": 6,
        "sampling": {"max_tokens": 12, "seed": 2024},
        "advantage": advantage,
    })
}

#[tokio::test]
async fn rewards_pass_rates_and_advantages_on_real_samples() {
    let s = server();
    // First pass: a gold answer the model is unlikely to produce.
    let first = rollout(s, &request("-98765", json!("grpo"))).await;
    let correct = check_rewards(&first, "-98765", &json!("grpo"));
    assert!(correct.iter().all(|&c| !c));
    assert_eq!(first["groups"][0]["pass_rate"], 0.0);
    assert_eq!(first["groups"][0]["all_equal"], true);
    // One sample's own answer becomes the gold answer: one that some samples hold and others
    // do not, so the group mixes rewards and every estimator's advantages are non-trivial (an
    // all-correct group has zero variance and would leave them untested).
    let answers: Vec<Option<&str>> = samples(&first)
        .iter()
        .map(|s| s["extracted_answer"].as_str())
        .collect();
    let chosen = answers
        .iter()
        .flatten()
        .find(|&&a| answers.iter().filter(|&&b| b == Some(a)).count() < answers.len())
        .map(|a| a.to_string())
        .expect("a sample holds an answer that not every sample holds");
    for estimator in [json!("grpo"), json!("drgrpo"), json!({"qae": 0.5})] {
        let again = rollout(s, &request(&chosen, estimator.clone())).await;
        // Same seed, same samples.
        let texts = |r: &Value| {
            samples(r)
                .iter()
                .map(|s| s["text"].clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(&first), texts(&again));
        let correct = check_rewards(&again, &chosen, &estimator);
        assert!(
            correct.iter().any(|&c| c) && !correct.iter().all(|&c| c),
            "the group mixes right and wrong: {correct:?}"
        );
        assert_eq!(again["groups"][0]["all_equal"], false);
    }
}
