//! `watch_weights`: a server loads the highest complete version a learner publishes in a
//! directory (`DIR/<version>/`, complete once `READY` is there), before it serves and whenever a
//! higher one appears; versions still being written wait, a refused one is counted, skipped and
//! not tried again, and samples report the version they ran on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{self, InProcess};
use crate::weights::{served_version, variant};

/// Marks version `version` in `dir` complete.
fn ready(dir: &Path, version: u64) {
    std::fs::write(dir.join(version.to_string()).join("READY"), "").unwrap();
}

/// Publishes `model` (its files linked) as version `version` in `dir`, complete if `complete`.
fn publish(model: &Path, dir: &Path, version: u64, complete: bool) {
    variant(model, &dir.join(version.to_string()), |_| {}, None);
    if complete {
        ready(dir, version);
    }
}

/// Waits until `check` holds for the server (20 s at most); whether it did.
async fn eventually<F, Fut>(server: &InProcess, check: F) -> bool
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if check(server.base.clone()).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_server_follows_the_highest_complete_version() {
    let model = harness::tiny_model();
    let dir: PathBuf = std::env::temp_dir().join(format!("entroll-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Published before the server starts: served from its first request on.
    publish(&model, &dir, 2, true);
    let server = harness::start(|c| {
        c.watch_weights = dir.clone();
        c.watch_interval_ms = 50;
    });
    assert_eq!(served_version(&server.base).await, 2);

    // Version 4 is still being written (no READY); 3 is complete.
    publish(&model, &dir, 4, false);
    publish(&model, &dir, 3, true);
    assert!(eventually(&server, |b| async move { served_version(&b).await == 3 }).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        served_version(&server.base).await,
        3,
        "an incomplete version was loaded"
    );

    // A complete version of another architecture is refused once, and not tried again.
    let refused = "entroll_weight_updates_total{outcome=\"rejected\",source=\"watch\"}";
    variant(
        &model,
        &dir.join("6"),
        |c| c["num_hidden_layers"] = json!(12),
        None,
    );
    ready(&dir, 6);
    assert!(eventually(&server, |_| async { server.metric(refused).await == 1.0 }).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.metric(refused).await,
        1.0,
        "a refused version was retried"
    );
    assert_eq!(served_version(&server.base).await, 3);

    // Once 4 is complete it is the highest version not refused.
    ready(&dir, 4);
    assert!(eventually(&server, |b| async move { served_version(&b).await == 4 }).await);
    let answer = crate::common::rollout(
        &server,
        &json!({"prompts": [{"text": "2 + 2 ="}], "group_size": 2,
                "sampling": {"max_tokens": 4, "seed": 1}}),
    )
    .await;
    assert_eq!(answer["weights_version"], 4);
    for sample in crate::common::samples(&answer) {
        assert_eq!(sample["weights_version"], 4);
    }
    let swapped = "entroll_weight_updates_total{outcome=\"swapped\",source=\"watch\"}";
    assert_eq!(server.metric(swapped).await, 3.0);
    assert_eq!(server.metric("entroll_weights_version").await, 4.0);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_version_another_update_went_ahead_of_is_reported_not_skipped_silently() {
    let model = harness::tiny_model();
    let dir: PathBuf =
        std::env::temp_dir().join(format!("entroll-watch-stale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server = harness::start(|c| {
        c.watch_weights = dir.clone();
        c.watch_interval_ms = 50;
    });
    let stale = "entroll_weight_updates_total{outcome=\"stale\",source=\"watch\"}";
    // A client loads version 1 before the learner publishes its own version 1.
    let (status, body) = crate::weights::post_weights(
        &server.base,
        json!({"path": model.display().to_string(), "version": 1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    publish(&model, &dir, 1, true);
    assert!(
        eventually(&server, |_| async { server.metric(stale).await == 1.0 }).await,
        "the learner's version 1, behind the client's, was skipped without a count"
    );
    // Reported once, however many times the directory is looked at.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.metric(stale).await, 1.0);
    assert_eq!(served_version(&server.base).await, 1);
    // The learner's next version loads.
    publish(&model, &dir, 2, true);
    assert!(eventually(&server, |b| async move { served_version(&b).await == 2 }).await);
    assert_eq!(server.metric(stale).await, 1.0);
    std::fs::remove_dir_all(&dir).unwrap();
}
