//! Ten times the configured capacity at once: every request gets a complete 200 or an
//! immediate 429 `overloaded` with `Retry-After`, none hangs or fails otherwise, and the server
//! then serves normally.

use std::time::{Duration, Instant};

use crate::common::{rollout, samples};
use crate::harness;
use serde_json::{json, Value};

/// What one request got: status, `Retry-After`, body, and when the answer arrived.
struct Outcome {
    status: u16,
    retry_after: Option<String>,
    body: Value,
    at: Instant,
}

#[tokio::test]
async fn ten_times_capacity_gets_complete_answers_or_immediate_429s() {
    const CAPACITY: usize = 2;
    let server = harness::start(|c| {
        c.max_requests = CAPACITY;
        c.max_running_sequences = 2;
    });
    let request = json!({
        "prompts": [{"text": "Count from one to five."}],
        "group_size": 2,
        "sampling": {"max_tokens": 12, "seed": 9}
    });
    let client = crate::common::client();
    let sent = (0..10 * CAPACITY).map(|_| {
        let (client, url, body) = (
            client.clone(),
            format!("{}/rollouts", server.base),
            request.clone(),
        );
        tokio::spawn(async move {
            let resp = client.post(url).json(&body).send().await.expect("answer");
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let body: Value = resp.json().await.expect("JSON body");
            Outcome {
                status,
                retry_after,
                body,
                at: Instant::now(),
            }
        })
    });
    let sent: Vec<_> = sent.collect();
    let mut outcomes = Vec::new();
    for handle in sent {
        // Generous: a hang is what this bound catches, not slowness.
        let outcome = tokio::time::timeout(Duration::from_secs(600), handle)
            .await
            .expect("a request hung")
            .unwrap();
        outcomes.push(outcome);
    }

    let (ok, rejected): (Vec<_>, Vec<_>) = outcomes.iter().partition(|o| o.status == 200);
    for o in &rejected {
        assert_eq!(o.status, 429, "neither 200 nor 429: {}", o.body);
        assert_eq!(o.body["error_type"], "overloaded");
        assert!(o.body["error"].as_str().unwrap().contains("capacity"));
        assert_eq!(o.retry_after.as_deref(), Some("1"));
    }
    for o in &ok {
        let samples = samples(&o.body);
        assert_eq!(samples.len(), 2, "incomplete answer: {}", o.body);
        for s in samples {
            assert_eq!(
                s["token_ids"].as_array().unwrap().len() as u64,
                s["length"].as_u64().unwrap()
            );
        }
    }
    assert!(!ok.is_empty(), "nothing was admitted");
    assert!(
        rejected.len() >= 10 * CAPACITY - 2 * CAPACITY,
        "{} of {} requests admitted with capacity {CAPACITY}",
        ok.len(),
        outcomes.len()
    );
    // A 429 is answered at once, not after waiting for work: every one arrived before the
    // first completed rollout did.
    let first_ok = ok.iter().map(|o| o.at).min().unwrap();
    assert!(rejected.iter().all(|o| o.at < first_ok));

    assert_eq!(
        server
            .metric("entroll_requests_failed_total{error_type=\"overloaded\"}")
            .await,
        rejected.len() as f64
    );
    assert_eq!(server.metric("entroll_requests_running").await, 0.0);
    assert_eq!(server.metric("entroll_sequences_waiting").await, 0.0);
    // Then it serves normally.
    let r = rollout(&server, &request).await;
    assert_eq!(samples(&r).len(), 2);
}
