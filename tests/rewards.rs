//! Rewards, pass rates and advantages on real samples from the real model and engine.
//!
//! A 135M model rarely solves anything, so the test makes a known-correct sample: it runs a
//! seeded request, takes the answer the verifier extracts from one sample as the gold answer,
//! and runs the same request again (same seed, same samples) under each estimator.

mod common;

use common::{rollout, samples, server};
use serde_json::{json, Value};

fn request(answer: &str, advantage: Value) -> Value {
    json!({
        "prompts": [{"id": "sum", "text": "Question: What is 3 + 4?\nAnswer: The answer is", "answer": answer}],
        "group_size": 6,
        "sampling": {"max_tokens": 12, "seed": 2024},
        "advantage": advantage,
    })
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Checks every reward against the verifier run here, and the group fields and advantages
/// against their definitions.
fn check_group(r: &Value, gold: &str, estimator: &Value) -> Vec<bool> {
    let g = &r["groups"][0];
    let config = verifier::Config::default();
    let mut rewards = Vec::new();
    let mut correct = Vec::new();
    for s in samples(r) {
        let v = verifier::verify(gold, s["text"].as_str().unwrap(), &config);
        assert_eq!(s["correct"].as_bool().unwrap(), v.correct, "{}", s["text"]);
        assert_eq!(
            s["reward"].as_f64().unwrap(),
            if v.correct { 1.0 } else { 0.0 }
        );
        assert_eq!(s["extracted_answer"].as_str(), v.extracted_pred.as_deref());
        assert_eq!(s["verdict"], serde_json::to_value(v.status).unwrap());
        rewards.push(s["reward"].as_f64().unwrap());
        correct.push(v.correct);
    }
    let n = rewards.len() as f64;
    let mean = rewards.iter().sum::<f64>() / n;
    let std = (rewards.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    assert!(
        (g["pass_rate"].as_f64().unwrap() - correct.iter().filter(|&&c| c).count() as f64 / n)
            .abs()
            < 1e-12
    );
    assert!((g["reward_mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!((g["reward_std"].as_f64().unwrap() - std).abs() < 1e-12);
    assert_eq!(
        g["all_equal"].as_bool().unwrap(),
        rewards.iter().all(|&x| x == rewards[0])
    );
    let mut sorted = rewards.clone();
    sorted.sort_by(f64::total_cmp);
    for (s, &reward) in samples(r).iter().zip(&rewards) {
        let want = match estimator {
            Value::String(e) if e == "grpo" => (reward - mean) / (std + 1e-6),
            Value::String(e) if e == "drgrpo" => reward - mean,
            Value::Object(o) => reward - quantile(&sorted, o["qae"].as_f64().unwrap()),
            other => panic!("unknown estimator {other}"),
        };
        assert!(
            (s["advantage"].as_f64().unwrap() - want).abs() < 1e-9,
            "{estimator}: {s}"
        );
    }
    assert_eq!(r["advantage"], *estimator);
    correct
}

#[tokio::test]
async fn rewards_pass_rates_and_advantages_on_real_samples() {
    let s = server();
    // First pass: a gold answer the model is unlikely to produce.
    let first = rollout(s, &request("-98765", json!("grpo"))).await;
    let correct = check_group(&first, "-98765", &json!("grpo"));
    assert!(correct.iter().all(|&c| !c));
    assert_eq!(first["groups"][0]["pass_rate"], 0.0);
    assert_eq!(first["groups"][0]["all_equal"], true);
    // One sample's own answer becomes the gold answer.
    let chosen = samples(&first)
        .iter()
        .find_map(|s| s["extracted_answer"].as_str().map(str::to_string))
        .expect("some sample holds an answer");
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
        let correct = check_group(&again, &chosen, &estimator);
        assert!(
            correct.iter().any(|&c| c),
            "the sample whose answer is gold is correct"
        );
    }
}
