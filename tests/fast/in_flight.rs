//! Weight updates while requests run, on the real engine: `in_flight: abort` answers 409
//! `weights_changed` with what each sample drew (a prefix of what it draws uninterrupted, the
//! same seed on the same weights; all of it for a group done before), whole or streamed (the
//! groups already sent left out); `continue` moves the samples to the new
//! weights at their next token: onto the same checkpoint the draw goes on as if nothing
//! happened (same keys, same tokens), onto other weights an independent re-scoring (the
//! oracle: one plain forward per version) finds each run of tokens drawn by the version the
//! answer names; the watched directory's updates follow `weights_in_flight`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use entroll::api::weights::InFlight;
use entroll::engine::native::Oracle;
use entroll::engine::{
    Engine, EngineError, ModelInfo, PromptInput, SequenceOutput, SequenceRequest,
};
use serde_json::{json, Value};

use crate::common::{floats, ids, post_to, samples, Lines};
use crate::harness::{self, InProcess};
use crate::weights::{post_weights, served_version, sharper, variant};

/// Tokens per sample: the tiny model draws them for seconds, so an update lands mid-way.
const TOKENS: usize = 600;
/// Samples per request (two prompts of two).
const SAMPLES: usize = 4;

fn request(seed: u64, max_tokens: usize) -> Value {
    json!({
        "prompts": [{"id": "a", "text": "The capital of France is"},
                    {"id": "b", "text": "Two plus two is"}],
        "group_size": 2,
        "sampling": {"temperature": 1.0, "max_tokens": max_tokens, "seed": seed}
    })
}

/// The token ids of every sample of an answer (or of an abort's `partial`), by group id and
/// index.
fn token_ids(groups: &Value) -> HashMap<(String, u64), Vec<u64>> {
    let mut ids = HashMap::new();
    for g in groups.as_array().unwrap() {
        for s in g["samples"].as_array().unwrap() {
            let tokens = s["token_ids"].as_array().unwrap();
            ids.insert(
                (
                    g["id"].as_str().unwrap().to_string(),
                    s["index"].as_u64().unwrap(),
                ),
                tokens.iter().map(|t| t.as_u64().unwrap()).collect(),
            );
        }
    }
    ids
}

/// Waits until `n` sequences run in the engine and it has drawn for them: two decode steps of
/// all `n` (each step adds its batch size to the decode-batch histogram's sum), so every one
/// has drawn tokens.
pub async fn drawing(server: &InProcess, n: usize) {
    const DRAWS: &str = "entroll_engine_decode_batch_sum";
    let started = std::time::Instant::now();
    let waited = |what: &str| {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the samples never {what}"
        );
    };
    while server.metric("entroll_sequences_running").await < n as f64 {
        waited("ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = server.metric(DRAWS).await;
    while server.metric(DRAWS).await < before + 2.0 * n as f64 {
        waited("drew");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The real engine, except that the samples of the prompt [`SHORT`] end after 3 tokens: a
/// group that is done before an update comes.
struct ShortFor {
    inner: Arc<dyn Engine>,
}

/// The prompt whose samples [`ShortFor`] ends early.
const SHORT: [u32; 3] = [504, 3575, 282];

#[async_trait]
impl Engine for ShortFor {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }

    async fn detokenize(&self, ids: &[u32], skip_special: bool) -> Result<String, EngineError> {
        self.inner.detokenize(ids, skip_special).await
    }

    async fn tokenize(&self, prompt: &PromptInput) -> Result<Vec<u32>, EngineError> {
        self.inner.tokenize(prompt).await
    }

    async fn generate(&self, mut request: SequenceRequest) -> Result<SequenceOutput, EngineError> {
        if *request.prompt == SHORT {
            request.max_tokens = 3;
        }
        self.inner.generate(request).await
    }
}

/// [`request`] with a first group, `short`, whose samples [`ShortFor`] ends early.
fn with_short(seed: u64) -> Value {
    let mut body = request(seed, TOKENS);
    let prompts = body["prompts"].as_array_mut().unwrap();
    prompts.insert(0, json!({"id": "short", "token_ids": SHORT}));
    body
}

/// Checks an abort's `partial` against the uninterrupted draw `full`: it lists `groups`, every
/// sample of each; one cut by the update drew a strict prefix of its full draw, one done
/// before drew all of it. Returns how many were cut.
fn check_partial(
    partial: &Value,
    groups: &[&str],
    full: &HashMap<(String, u64), Vec<u64>>,
) -> usize {
    let ids: Vec<&str> = partial
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, groups, "partial lists the groups not answered");
    let drawn = token_ids(partial);
    assert_eq!(drawn.len(), groups.len() * 2);
    let mut cut = 0;
    for g in partial.as_array().unwrap() {
        for s in g["samples"].as_array().unwrap() {
            let key = (
                g["id"].as_str().unwrap().to_string(),
                s["index"].as_u64().unwrap(),
            );
            let (drawn, whole) = (&drawn[&key], &full[&key]);
            if s["finish_reason"] == "abort" {
                assert!(
                    drawn.len() < whole.len() && whole.starts_with(drawn),
                    "{key:?}: {} drawn tokens are not a strict prefix of the {} drawn uninterrupted",
                    drawn.len(),
                    whole.len()
                );
                cut += 1;
            } else {
                assert_eq!(drawn, whole, "{key:?}: done before the update");
            }
            assert_eq!(s["weights_version"], 0);
            assert!(s.get("weights_versions").is_none());
        }
    }
    cut
}

#[tokio::test]
async fn abort_answers_each_sample_s_tokens_so_far_whole_or_streamed() {
    let model = harness::tiny_model();
    let config = harness::config(|c| c.max_running_sequences = 3 * SAMPLES);
    let server = harness::start_engine(config, |inner| Arc::new(ShortFor { inner }));
    let base = server.base.clone();
    let (status, reference) = post_to(&base, with_short(7).to_string()).await;
    assert_eq!(status, 200, "{}", reference["error"]);
    let full = token_ids(&reference["groups"]);
    assert_eq!(full[&("short".to_string(), 0)].len(), 3);

    // The same request twice, whole and streamed, both running when the update comes, their
    // group `short` already done.
    let whole = tokio::spawn({
        let base = base.clone();
        async move { post_to(&base, with_short(7).to_string()).await }
    });
    let mut streamed = Lines::post(&server, &with_short(7)).await;
    assert_eq!(streamed.status, 200);
    let first = streamed.next().await.unwrap();
    assert_eq!(first["group"]["id"], "short", "{first}");
    drawing(&server, 2 * SAMPLES).await;
    let (status, swapped) = post_weights(
        &base,
        json!({"path": model.display().to_string(), "version": 1, "in_flight": "abort"}),
    )
    .await;
    assert_eq!(status, 200, "{swapped}");
    assert_eq!(swapped["in_flight"], "abort");

    // The whole answer had answered nothing: every group is in `partial`, `short` whole.
    let (status, aborted) = whole.await.unwrap();
    assert_eq!(status, 409, "{}", aborted["error"]);
    assert_eq!(aborted["error_type"], "weights_changed");
    let message = aborted["error"].as_str().unwrap();
    assert!(message.contains("from version 0 to 1"), "{message}");
    let mut cut = check_partial(&aborted["partial"], &["short", "a", "b"], &full);

    // The stream sent `short`: it ends with the error line, the other groups in `partial`.
    let lines = streamed.rest().await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["error_type"], "weights_changed");
    cut += check_partial(&lines[0]["partial"], &["a", "b"], &full);
    assert!(cut >= 1, "no sample was cut by the update");
    assert_eq!(
        server
            .metric("entroll_samples_interrupted_total{in_flight=\"abort\"}")
            .await,
        cut as f64
    );
    assert_eq!(
        server
            .metric("entroll_requests_failed_total{error_type=\"weights_changed\"}")
            .await,
        2.0
    );

    // Retried, the request runs on version 1 from its first token.
    let (status, retried) = post_to(&base, request(7, 5).to_string()).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["weights_version"], 1);
    for s in samples(&retried) {
        assert_eq!(s["weights_version"], 1);
        assert!(s.get("weights_versions").is_none());
    }
}

/// The runs `[version, from_token]` of a sample moved by `continue`, checked to be version 0
/// then version 1 from a token inside the sample; returns that token.
fn switch_point(sample: &Value) -> usize {
    let runs = sample["weights_versions"]
        .as_array()
        .unwrap_or_else(|| panic!("a running sample reports no runs: {sample}"));
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!((&runs[0][0], &runs[0][1]), (&json!(0), &json!(0)));
    assert_eq!(runs[1][0], 1);
    let from = runs[1][1].as_u64().unwrap() as usize;
    let length = sample["length"].as_u64().unwrap() as usize;
    assert!(from > 0 && from < length, "switched at {from} of {length}");
    assert_eq!(sample["weights_version"], 0);
    from
}

#[tokio::test]
async fn continue_onto_the_same_weights_draws_the_same_tokens() {
    let model = harness::tiny_model();
    let server = harness::start(|c| c.max_running_sequences = SAMPLES);
    let base = server.base.clone();
    let (status, reference) = post_to(&base, request(11, TOKENS).to_string()).await;
    assert_eq!(status, 200, "{reference}");

    let running = tokio::spawn({
        let base = base.clone();
        async move { post_to(&base, request(11, TOKENS).to_string()).await }
    });
    drawing(&server, SAMPLES).await;
    let (status, swapped) = post_weights(
        &base,
        json!({"path": model.display().to_string(), "version": 1, "in_flight": "continue"}),
    )
    .await;
    assert_eq!((status, &swapped["in_flight"]), (200, &json!("continue")));
    let (status, moved) = running.await.unwrap();
    assert_eq!(status, 200, "{moved}");
    assert_eq!(
        moved["weights_version"], 0,
        "the version the request started on"
    );

    for (a, b) in samples(&reference).iter().zip(samples(&moved)) {
        let from = switch_point(b);
        // The new engine reads the tokens drawn so far after the prompt and draws on with the
        // same keys: the same checkpoint draws the same tokens (a draw may only differ where
        // its uniform falls within float noise of a boundary, and then far from the switch).
        let (ta, tb) = (
            a["token_ids"].as_array().unwrap(),
            b["token_ids"].as_array().unwrap(),
        );
        let common = ta.iter().zip(tb).take_while(|(x, y)| x == y).count();
        assert!(
            common == ta.len().max(tb.len()) || common > from + 100,
            "the draw changed at token {common}, the switch was at {from}"
        );
        let (la, lb) = (floats(a, "logprobs"), floats(b, "logprobs"));
        for t in 0..common {
            assert!(
                (la[t] - lb[t]).abs() < 1e-3,
                "logprob {t}: {} vs {}",
                la[t],
                lb[t]
            );
        }
        if common == ta.len() && common == tb.len() {
            assert_eq!(a["text"], b["text"]);
        }
    }
    assert_eq!(
        server
            .metric("entroll_samples_interrupted_total{in_flight=\"continue\"}")
            .await,
        SAMPLES as f64
    );
}

/// The largest difference between `logprobs` and the oracle's re-scoring of the same tokens.
fn largest_difference(logprobs: &[f64], oracle: &[entroll::engine::native::Rescored]) -> f64 {
    logprobs
        .iter()
        .zip(oracle)
        .map(|(a, b)| (a - b.logprob).abs())
        .fold(0.0, f64::max)
}

#[tokio::test]
async fn continue_onto_other_weights_draws_each_run_from_its_version() {
    let model = harness::tiny_model();
    let other = std::env::temp_dir().join(format!("entroll-in-flight-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&other);
    sharper(&model, &other);
    let (before, after) = (Oracle::load(&model).unwrap(), Oracle::load(&other).unwrap());
    let server = harness::start(|c| {
        c.max_running_sequences = SAMPLES;
        c.weights_root = std::env::temp_dir();
    });
    let base = server.base.clone();

    // Streamed, so the learner's way of reading is the one checked.
    let mut lines = Lines::post(&server, &request(5, TOKENS)).await;
    drawing(&server, SAMPLES).await;
    let (status, swapped) = post_weights(
        &base,
        json!({"path": other.display().to_string(), "in_flight": "continue"}),
    )
    .await;
    assert_eq!(status, 200, "{swapped}");
    let lines = lines.rest().await;
    let summary = lines.last().unwrap();
    assert!(summary.get("summary").is_some(), "{summary}");
    assert_eq!(lines.len(), 3);
    for line in &lines[..2] {
        let group = &line["group"];
        let prompt = ids(&group["prompt_token_ids"]);
        for s in group["samples"].as_array().unwrap() {
            let from = switch_point(s);
            let tokens = ids(&s["token_ids"]);
            let logprobs = floats(s, "logprobs");
            let on_0 = before.rescore(&prompt, &tokens, 1.0).unwrap();
            let on_1 = after.rescore(&prompt, &tokens, 1.0).unwrap();
            let (first, rest) = (&logprobs[..from], &logprobs[from..]);
            assert!(
                largest_difference(first, &on_0[..from]) < 1e-3,
                "tokens before {from}"
            );
            assert!(
                largest_difference(rest, &on_1[from..]) < 1e-3,
                "tokens from {from}"
            );
            // The versions differ enough that the check above could fail.
            assert!(largest_difference(rest, &on_0[from..]) > 0.1);
        }
    }
    std::fs::remove_dir_all(&other).unwrap();
}

#[tokio::test]
async fn the_watched_directory_s_updates_follow_weights_in_flight() {
    let model = harness::tiny_model();
    let dir = std::env::temp_dir().join(format!("entroll-in-flight-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server = harness::start(|c| {
        c.max_running_sequences = SAMPLES;
        c.watch_weights = dir.clone();
        c.watch_interval_ms = 50;
        c.weights_in_flight = InFlight::Abort;
    });
    let running = tokio::spawn({
        let base = server.base.clone();
        async move { post_to(&base, request(3, TOKENS).to_string()).await }
    });
    drawing(&server, SAMPLES).await;
    variant(&model, &dir.join("1"), |_| {}, None);
    std::fs::write(dir.join("1").join("READY"), "").unwrap();
    let (status, aborted) = running.await.unwrap();
    assert_eq!(status, 409, "{}", aborted["error"]);
    assert_eq!(aborted["error_type"], "weights_changed");
    assert_eq!(aborted["partial"].as_array().unwrap().len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_update_past_max_engines_waits_for_the_requests_on_older_weights() {
    let path = harness::tiny_model().display().to_string();
    let server = harness::start(|c| {
        c.max_running_sequences = SAMPLES;
        c.max_engines = 2;
    });
    // Runs on version 0 until its 2,000 tokens are drawn: the first update keeps its engine
    // alive.
    let running = tokio::spawn({
        let base = server.base.clone();
        async move { post_to(&base, request(5, 2_000).to_string()).await }
    });
    drawing(&server, SAMPLES).await;
    let (status, body) = post_weights(&server.base, json!({"path": path})).await;
    assert_eq!(status, 200, "{body}");
    // Versions 0 (still drawing) and 1 are in memory: a third engine may not load.
    let (status, busy) = post_weights(&server.base, json!({"path": path})).await;
    assert_eq!(
        (status, busy["error_type"].as_str()),
        (429, Some("overloaded")),
        "{busy}"
    );
    assert_eq!(served_version(&server.base).await, 1);
    let (status, done) = running.await.unwrap();
    assert_eq!(status, 200, "{done}");
    // Version 0 went with its last request: the update loads now.
    let started = std::time::Instant::now();
    loop {
        let (status, body) = post_weights(&server.base, json!({"path": path})).await;
        if status == 200 {
            assert_eq!(body["weights_version"], 2);
            break;
        }
        assert_eq!(status, 429, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the old engine outlived its requests"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server
            .metric("entroll_weight_updates_total{outcome=\"busy\",source=\"http\"}")
            .await
            >= 1.0
    );
}
