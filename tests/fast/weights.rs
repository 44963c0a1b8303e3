//! `POST /weights` on the real engine: a swap under concurrent rollout load loses no accepted
//! request, every sample reports a weights version that was live when its request ran (requests
//! in flight finish on the weights they started with) and was drawn from that version's weights
//! (the oracle of each checkpoint re-scores it), and bad paths, other architectures and
//! unreadable weights are refused while the new weights keep serving, unchanged.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{floats, ids, post_to, samples};
use crate::harness;
use entroll::engine::native::Oracle;
use entroll::weights::confine::REFUSED;
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

/// A copy of `model` in `dir` whose final norm is tripled: the same architecture, every logit
/// three times larger (much sharper distributions).
pub(crate) fn sharper(model: &Path, dir: &Path) {
    use candle_core::{safetensors, Device};
    variant(model, dir, |_| {}, Some(&[]));
    let mut tensors = safetensors::load(model.join("model.safetensors"), &Device::Cpu).unwrap();
    let norm = tensors["model.norm.weight"].affine(3.0, 0.0).unwrap();
    tensors.insert("model.norm.weight".into(), norm);
    safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
}

/// The largest difference between the log-probabilities of a response's samples and `oracle`'s
/// re-scoring of the same tokens (the requests here sample at temperature 1).
fn largest_difference(oracle: &Oracle, body: &Value) -> f64 {
    let mut largest = 0.0f64;
    for group in body["groups"].as_array().unwrap() {
        let prompt = ids(&group["prompt_token_ids"]);
        for s in group["samples"].as_array().unwrap() {
            let tokens = ids(&s["token_ids"]);
            let rescored = oracle.rescore(&prompt, &tokens, 1.0).unwrap();
            for (a, b) in floats(s, "logprobs").iter().zip(&rescored) {
                largest = largest.max((a - b.logprob).abs());
            }
        }
    }
    largest
}

/// Whether `t` was drawn from the weights of its version: its log-probabilities agree with that
/// checkpoint's oracle and not with the other's.
fn drawn_from(t: &Timed, version: u64, oracles: &[Oracle; 2]) {
    let (own, other) = (&oracles[version as usize], &oracles[1 - version as usize]);
    let (near, far) = (
        largest_difference(own, &t.body),
        largest_difference(other, &t.body),
    );
    assert!(
        near < 1e-3,
        "version {version}: {near} from its own weights"
    );
    assert!(
        far > 0.1,
        "version {version}: within {far} of the other weights too"
    );
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
    // Version 1 is another checkpoint of the same architecture, so a sample's weights are told
    // apart by what it drew, not only by the version it reports.
    let root = std::env::temp_dir().join(format!("entroll-weights-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let new_weights = root.join("sharper");
    sharper(&model, &new_weights);
    let oracles = [
        Oracle::load(&model).unwrap(),
        Oracle::load(&new_weights).unwrap(),
    ];
    let server = harness::start(|c| {
        c.max_running_sequences = 4;
        c.weights_root = root.clone();
    });
    let base = server.base.clone();
    assert_eq!(served_version(&base).await, 0);

    // Load before, during and after the swap: the requests before it are long enough to be in
    // flight across it.
    let before: Vec<_> = (0..4)
        .map(|i| tokio::spawn(timed_rollout(base.clone(), i, 600)))
        .collect();
    // Wait until the engine is busy with them, then swap to the other checkpoint as version 1.
    while server.metric("entroll_sequences_running").await < 1.0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let swap_started = Instant::now();
    let (status, swapped) = post_weights(
        &base,
        json!({"path": new_weights.display().to_string(), "version": 1}),
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
        drawn_from(&t, v, &oracles);
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

    // Refused updates leave version 1 serving, its weights unchanged.
    let (other, unreadable) = (root.join("other-architecture"), root.join("unreadable"));
    variant(&model, &other, |c| c["num_hidden_layers"] = json!(12), None);
    variant(&model, &unreadable, |_| {}, Some(&[7u8; 4096]));
    for (body, mentions) in [
        (json!({"path": "/no/such/checkpoint"}), REFUSED),
        (json!({"path": "../.."}), REFUSED),
        // The served model lies outside this server's weights root.
        (
            json!({"path": model.display().to_string(), "version": 2}),
            REFUSED,
        ),
        (
            json!({"path": other.display().to_string()}),
            "num_hidden_layers",
        ),
        (
            json!({"path": unreadable.display().to_string()}),
            "not a well-formed safetensors file",
        ),
        (json!({"path": "sharper", "version": 1}), "must exceed"),
        (
            json!({"path": "sharper", "version": 1u64 << 53}),
            "exceeds the largest weights version",
        ),
        (json!({"path": 3}), "invalid"),
        (
            json!({"path": "sharper", "in_flight": "later"}),
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
    drawn_from(&t, 1, &oracles);
    assert_eq!(
        server
            .metric("entroll_weight_updates_total{outcome=\"rejected\",source=\"http\"}")
            .await,
        9.0
    );
    assert_eq!(
        server
            .metric("entroll_weight_updates_total{outcome=\"swapped\",source=\"http\"}")
            .await,
        1.0
    );
    assert_eq!(server.metric("entroll_weights_version").await, 1.0);
}

/// A file of `len` bytes at `path` that begins with `head`, the rest a hole.
fn crafted(path: &Path, head: &[u8], len: u64) {
    std::fs::write(path, head).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// A GGUF v3 header declaring `tensors` tensors and `pairs` pairs, then a key of `key_len`
/// bytes (nothing after it).
fn gguf_head(pairs: u64, key_len: Option<u64>) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(pairs.to_le_bytes());
    if let Some(n) = key_len {
        b.extend(n.to_le_bytes());
    }
    b
}

#[tokio::test]
async fn crafted_gguf_files_are_refused_and_the_server_serves_and_stops() {
    // The probe's files: a header declaring a 2^46-byte key (it aborted the process), a
    // 2^63-byte key (a 500), and a sparse 20 GB file declaring 2^60 pairs (it pinned a worker
    // and outlived SIGTERM).
    let root = std::env::temp_dir().join(format!("entroll-crafted-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    crafted(&root.join("key46.gguf"), &gguf_head(1, Some(1 << 46)), 32);
    crafted(&root.join("key63.gguf"), &gguf_head(1, Some(1 << 63)), 32);
    crafted(
        &root.join("sparse.gguf"),
        &gguf_head(1 << 60, None),
        20 << 30,
    );
    let mut server = harness::start(|c| c.weights_root = root.clone());
    for name in ["key46.gguf", "key63.gguf", "sparse.gguf"] {
        let (status, err) = post_weights(&server.base, json!({"path": name})).await;
        assert_eq!(status, 422, "{name}: {err}");
        assert!(
            err["error"]
                .as_str()
                .unwrap()
                .contains("not a well-formed GGUF file"),
            "{name}: {err}"
        );
    }
    assert_eq!(served_version(&server.base).await, 0);
    let t = timed_rollout(server.base.clone(), 1, 4).await;
    assert_eq!(t.status, 200, "{}", t.body);
    server.signal();
    server.wait_stopped(Duration::from_secs(20)).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
}

/// A GGUF file holding only a header: `general.architecture` = `llama` and the u32 values
/// `pairs` under `llama.`, no tensors.
fn llama_gguf_header(pairs: &[(&str, u32)]) -> Vec<u8> {
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    };
    let mut b = gguf_head(pairs.len() as u64 + 1, None);
    string(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    string(&mut b, "llama");
    for (key, value) in pairs {
        string(&mut b, &format!("llama.{key}"));
        b.extend(4u32.to_le_bytes());
        b.extend(value.to_le_bytes());
    }
    b
}

#[tokio::test]
async fn a_gguf_file_of_another_size_is_refused_from_its_header_before_loading() {
    // The tiny Llama has 2 layers of width 128; this header declares 30 of the same width, as a
    // same-vocabulary model of another size would. No tensor is there to load: a refusal that
    // names the architecture came from the header.
    let root = std::env::temp_dir().join(format!("entroll-gguf-arch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("bigger.gguf"),
        llama_gguf_header(&[("block_count", 30), ("embedding_length", 128)]),
    )
    .unwrap();
    let server = harness::start(|c| c.weights_root = root.clone());
    let (status, err) = post_weights(&server.base, json!({"path": "bigger.gguf"})).await;
    assert_eq!(status, 422, "{err}");
    let error = err["error"].as_str().unwrap();
    assert!(
        error.contains("another architecture") && error.contains("num_hidden_layers: 2 vs 30"),
        "{error}"
    );
    assert_eq!(served_version(&server.base).await, 0);
    std::fs::remove_dir_all(&root).unwrap();
}

/// A safetensors file at `path` holding `model`'s tensors, each of `dtype` (whole bytes) and
/// of the shape `reshape` gives it, its data a hole.
pub(crate) fn hollow_safetensors(
    model: &Path,
    path: &Path,
    dtype: &str,
    reshape: impl Fn(&str, &[u64]) -> Vec<u64>,
) {
    let bytes_per_element = match dtype {
        "BOOL" | "U8" => 1,
        "F16" | "BF16" => 2,
        "F32" => 4,
        other => panic!("hollow_safetensors: no size for {other}"),
    };
    let table =
        entroll::engine::safetensors_header::check(&model.join("model.safetensors")).unwrap();
    let mut header = serde_json::Map::new();
    let mut at = 0u64;
    for (name, shape) in &table {
        let shape = reshape(name, shape);
        let bytes = bytes_per_element * shape.iter().product::<u64>();
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [at, at + bytes]}),
        );
        at += bytes;
    }
    let header = Value::Object(header).to_string();
    let mut head = (header.len() as u64).to_le_bytes().to_vec();
    head.extend(header.as_bytes());
    let len = head.len() as u64 + at;
    crafted(path, &head, len);
}

#[tokio::test]
async fn safetensors_whose_tensors_differ_from_their_config_are_refused_from_the_headers() {
    // The probe's bypass: `config.json` and the tokenizer are the served model's, so the
    // architecture keys agree, but the largest tensor is declared 2^22 wide in a sparse file
    // (hundreds of gigabytes). candle loads a tensor whole before it compares its shape; the
    // headers' tensor table is compared before anything is loaded.
    let model = harness::tiny_model();
    let root = std::env::temp_dir().join(format!("entroll-wide-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("wide");
    variant(&model, &dir, |_| {}, Some(&[]));
    let table =
        entroll::engine::safetensors_header::check(&model.join("model.safetensors")).unwrap();
    let (widest, _) = table
        .iter()
        .max_by_key(|(_, shape)| shape.iter().product::<u64>())
        .unwrap();
    hollow_safetensors(
        &model,
        &dir.join("model.safetensors"),
        "F32",
        |name, shape| {
            if name == widest {
                vec![shape[0], 1 << 22]
            } else {
                shape.to_vec()
            }
        },
    );

    let server = harness::start(|c| c.weights_root = root.clone());
    let (status, err) = post_weights(&server.base, json!({"path": "wide"})).await;
    assert_eq!(status, 422, "{err}");
    let error = err["error"].as_str().unwrap();
    assert!(
        error.contains("another architecture") && error.contains(&format!("tensor {widest}: ")),
        "{error}"
    );
    assert_eq!(served_version(&server.base).await, 0);
    let t = timed_rollout(server.base.clone(), 1, 4).await;
    assert_eq!(t.status, 200, "{}", t.body);
    std::fs::remove_dir_all(&root).unwrap();
}
