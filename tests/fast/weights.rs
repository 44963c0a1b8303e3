//! `POST /weights` on the real engine: a swap under concurrent rollout load loses no accepted
//! request, every sample reports a weights version that was live when its request ran (requests
//! in flight finish on the weights they started with), and bad paths, other architectures and
//! unreadable weights are refused while the old weights keep serving.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{post_to, samples};
use crate::harness;
use serde_json::{json, Value};

pub(crate) async fn post_weights(base: &str, body: Value) -> (u16, Value) {
    let resp = crate::common::client()
        .post(format!("{base}/weights"))
        .json(&body)
        .send()
        .await
        .expect("an answer");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON body"))
}

pub(crate) async fn served_version(base: &str) -> u64 {
    crate::common::get_json(base, "/info").await["weights_version"]
        .as_u64()
        .unwrap()
}

/// One rollout request and when it was sent and answered.
struct Timed {
    sent: Instant,
    answered: Instant,
    status: u16,
    body: Value,
}

async fn timed_rollout(base: String, seed: u64, max_tokens: usize) -> Timed {
    let body = json!({
        "prompts": [{"text": "The capital of France is"}],
        "group_size": 2,
        "sampling": {"max_tokens": max_tokens, "seed": seed}
    });
    let sent = Instant::now();
    let (status, body) = post_to(&base, body.to_string()).await;
    Timed {
        sent,
        answered: Instant::now(),
        status,
        body,
    }
}

/// The version every sample of a response reports (they must agree with the response's).
fn version_of(t: &Timed) -> u64 {
    let v = t.body["weights_version"].as_u64().unwrap();
    for s in samples(&t.body) {
        assert_eq!(
            s["weights_version"].as_u64(),
            Some(v),
            "a request split across weights"
        );
    }
    v
}

/// A copy of `model` in `dir` whose files are links, with `config.json` edited by `edit` or the
/// weights replaced by `weights`.
pub(crate) fn variant(model: &Path, dir: &Path, edit: impl Fn(&mut Value), weights: Option<&[u8]>) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(model).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let is = |n: &str| name.to_str() == Some(n);
        if is("config.json") || (is("model.safetensors") && weights.is_some()) {
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), dir.join(&name)).unwrap();
    }
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    if let Some(bytes) = weights {
        std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    }
}

#[tokio::test]
async fn a_swap_under_load_loses_nothing_and_bad_weights_change_nothing() {
    let model = harness::tiny_model();
    let server = harness::start(|c| c.max_running_sequences = 4);
    let base = server.base.clone();
    assert_eq!(served_version(&base).await, 0);

    // Load before, during and after the swap: the requests before it are long enough to be in
    // flight across it.
    let before: Vec<_> = (0..4)
        .map(|i| tokio::spawn(timed_rollout(base.clone(), i, 600)))
        .collect();
    // Wait until the engine is busy with them, then swap to the same checkpoint as version 1.
    while server.metric("entroll_sequences_running").await < 1.0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let swap_started = Instant::now();
    let (status, swapped) = post_weights(
        &base,
        json!({"path": model.display().to_string(), "version": 1}),
    )
    .await;
    let swap_done = Instant::now();
    assert_eq!(status, 200, "{swapped}");
    assert_eq!(swapped["weights_version"], 1);
    assert_eq!(swapped["previous_version"], 0);
    // The default policy: requests in flight finish on the weights they started with.
    assert_eq!(swapped["in_flight"], "finish");
    let after: Vec<_> = (10..13)
        .map(|i| tokio::spawn(timed_rollout(base.clone(), i, 10)))
        .collect();

    let mut finished_on_old = 0;
    for handle in before.into_iter().chain(after) {
        let t = handle.await.unwrap();
        assert_eq!(t.status, 200, "an accepted request was lost: {}", t.body);
        assert_eq!(samples(&t.body).len(), 2);
        let v = version_of(&t);
        if t.answered < swap_started {
            assert_eq!(v, 0, "finished before the swap began");
        } else if t.sent > swap_done {
            assert_eq!(v, 1, "sent after the swap finished");
        } else {
            assert!(v <= 1);
            if v == 0 && t.answered > swap_done {
                finished_on_old += 1;
            }
        }
    }
    assert!(
        finished_on_old >= 1,
        "no request in flight across the swap finished on the weights it started with"
    );
    assert_eq!(served_version(&base).await, 1);

    // Refused updates leave version 1 serving.
    let root = std::env::temp_dir().join(format!("entroll-weights-{}", std::process::id()));
    let (other, unreadable) = (root.join("other-architecture"), root.join("unreadable"));
    variant(&model, &other, |c| c["num_hidden_layers"] = json!(12), None);
    variant(&model, &unreadable, |_| {}, Some(&[7u8; 4096]));
    for (body, mentions) in [
        (json!({"path": "/no/such/checkpoint"}), "does not exist"),
        (
            json!({"path": other.display().to_string()}),
            "num_hidden_layers",
        ),
        (
            json!({"path": unreadable.display().to_string()}),
            "cannot load",
        ),
        (
            json!({"path": model.display().to_string(), "version": 1}),
            "must exceed",
        ),
        (json!({"path": 3}), "invalid"),
        (
            json!({"path": model.display().to_string(), "in_flight": "later"}),
            "unknown variant",
        ),
    ] {
        let (status, err) = post_weights(&base, body.clone()).await;
        assert_eq!(status, 422, "{body}: {err}");
        assert_eq!(err["error_type"], "validation");
        assert!(
            err["error"].as_str().unwrap().contains(mentions),
            "{body}: {err}"
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
    assert_eq!(served_version(&base).await, 1);
    let t = timed_rollout(base.clone(), 99, 10).await;
    assert_eq!(t.status, 200, "{}", t.body);
    assert_eq!(version_of(&t), 1);
    assert_eq!(
        server
            .metric("entroll_weight_updates_total{outcome=\"rejected\",source=\"http\"}")
            .await,
        6.0
    );
    assert_eq!(
        server
            .metric("entroll_weight_updates_total{outcome=\"swapped\",source=\"http\"}")
            .await,
        1.0
    );
    assert_eq!(server.metric("entroll_weights_version").await, 1.0);
}
