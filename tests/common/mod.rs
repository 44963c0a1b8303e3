//! Helpers of every integration test: start the real `entroll` binary on the real default
//! model, find the test models, send requests and read metrics.
//!
//! One shared server per test binary, started on first use on a free port. It is tied to the test
//! process through its standard input (`--exit-on-stdin-eof`): when the tests exit, it exits.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};

/// A running server.
pub struct Server {
    pub base: String,
    child: Mutex<Child>,
    _stdin: Mutex<ChildStdin>,
}

impl Server {
    /// Sends SIGTERM to the server process.
    pub fn terminate(&self) {
        let pid = self.child.lock().unwrap().id();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits up to `within` for the process to exit, returning its status.
    pub fn wait_exit(&self, within: Duration) -> std::process::ExitStatus {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.lock().unwrap().try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < within,
                "the server did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Path of the default model, failing with the command that installs it.
pub fn default_model() -> std::path::PathBuf {
    let path = entroll::weights::model_store::default_model_path();
    assert!(
        path.exists(),
        "{} is missing: run `cargo run -- fetch-model` first (scripts/test does)",
        path.display()
    );
    path
}

/// The default model converted to a safetensors directory, failing with the command that
/// makes it.
pub fn safetensors_model() -> std::path::PathBuf {
    let path = entroll::weights::model_store::default_safetensors_path();
    assert!(
        path.join("model.safetensors").exists(),
        "{} is missing: run `scripts/learner-env` first (scripts/test does)",
        path.display()
    );
    path
}

/// A small random `family` (llama, qwen2, qwen3) checkpoint, failing with the command that makes it.
pub fn tiny_random_model(family: &str) -> std::path::PathBuf {
    let path = entroll::weights::model_store::entroll_home()
        .join("models")
        .join(format!("tiny-random-{family}"));
    assert!(
        path.join("model.safetensors").exists(),
        "{} is missing: run `scripts/learner-env` first (scripts/test does)",
        path.display()
    );
    path
}

/// Starts a server with extra flags and waits until it listens.
pub fn spawn(extra: &[&str]) -> Server {
    spawn_model(&default_model(), extra)
}

/// Starts a server on `model` with extra flags and waits until it listens.
pub fn spawn_model(model: &std::path::Path, extra: &[&str]) -> Server {
    let model = model.to_str().expect("a UTF-8 model path");
    let mut args = vec![
        "serve",
        "--port",
        "0",
        "--exit-on-stdin-eof",
        "--model",
        model,
    ];
    args.extend(extra);
    spawn_command(&args, &[])
}

/// Runs `entroll` with `args` and the environment variables `envs`, and waits until it
/// listens. The arguments must include `--exit-on-stdin-eof`.
pub fn spawn_command(args: &[&str], envs: &[(&str, &str)]) -> Server {
    spawn_with_log(args, envs, Stdio::inherit())
}

/// As [`spawn_command`], with the server's log (its standard error) written to `log`.
pub fn spawn_logging(args: &[&str], envs: &[(&str, &str)], log: &std::path::Path) -> Server {
    let file = std::fs::File::create(log).expect("create the log file");
    spawn_with_log(args, envs, Stdio::from(file))
}

fn spawn_with_log(args: &[&str], envs: &[(&str, &str)], log: Stdio) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_entroll"))
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start entroll");
    let stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("entroll listening on ") {
                    break url.trim().to_string();
                }
            }
            _ => panic!("entroll exited before listening: {:?}", child.wait()),
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        base,
        child: Mutex::new(child),
        _stdin: Mutex::new(stdin),
    }
}

/// The shared default server of this test binary.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| spawn(&["--max-running-sequences", "32"]))
}

/// An HTTP client with a generous timeout (CPU generation is slow) that drops idle
/// connections before the server's idle close (`header_timeout_ms`, 10 s by default).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(900))
        .pool_idle_timeout(Duration::from_secs(4))
        .build()
        .unwrap()
}

/// Anything that answers HTTP at a base URL: the spawned binary, or a server in the test's
/// own process.
pub trait Base {
    /// `http://host:port`.
    fn base(&self) -> &str;
}

impl Base for Server {
    fn base(&self) -> &str {
        &self.base
    }
}

/// POSTs a raw body to `/rollouts`, returning the status and parsed JSON body.
pub async fn post_raw(server: &impl Base, body: impl Into<reqwest::Body>) -> (u16, Value) {
    post_to(server.base(), body).await
}

/// POSTs a raw body to `{base}/rollouts`, returning the status and parsed JSON body.
pub async fn post_to(base: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    post_path(base, "/rollouts", body).await
}

/// POSTs a raw body to `{base}{path}`, returning the status and parsed JSON body.
pub async fn post_path(base: &str, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = client()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        panic!(
            "non-JSON body ({status}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, json)
}

/// POSTs a JSON request to `/rollouts` and expects 200.
pub async fn rollout(server: &impl Base, request: &Value) -> Value {
    let (status, body) = post_raw(server, request.to_string()).await;
    assert_eq!(status, 200, "rollout failed: {body}");
    body
}

/// Every sample of a response, in order.
pub fn samples(response: &Value) -> Vec<&Value> {
    response["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["samples"].as_array().unwrap())
        .collect()
}

/// A numeric array field as f64s.
pub fn floats(sample: &Value, field: &str) -> Vec<f64> {
    sample[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} is not an array"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// A JSON array of token ids.
pub fn ids(array: &Value) -> Vec<u32> {
    array
        .as_array()
        .unwrap_or_else(|| panic!("{array} is not an array of token ids"))
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

/// A boolean array field (such as `peak`).
pub fn flags(sample: &Value, field: &str) -> Vec<bool> {
    sample[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} is not an array"))
        .iter()
        .map(|b| b.as_bool().unwrap())
        .collect()
}

/// `GET {base}{path}`: the response.
async fn get(base: &str, path: &str) -> reqwest::Response {
    client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The value of the `/metrics` sample named exactly `name` (labels included, as in
/// `entroll_requests_failed_total{error_type="timeout"}`), or 0 if absent.
pub async fn metric(base: &str, name: &str) -> f64 {
    let text = get(base, "/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| {
            let (sample, value) = l.rsplit_once(' ')?;
            (sample == name).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// `GET {base}{path}` as JSON.
pub async fn get_json(base: &str, path: &str) -> Value {
    get(base, path).await.json().await.unwrap()
}

/// numpy's linear quantile of unsorted `values`, computed here independently of entroll.
pub fn quantile_linear(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Checks every per-token and per-sample invariant of one sample.
pub fn check_sample(s: &Value, vocab: usize, max_tokens: usize, untruncated: bool) {
    let n = s["length"].as_u64().unwrap() as usize;
    assert!(n >= 1 && n <= max_tokens, "length {n}");
    for field in [
        "token_ids",
        "logprobs",
        "sampling_logprobs",
        "entropy",
        "top_p_size",
        "top_p_mass",
        "top_p_entropy",
        "peak",
    ] {
        assert_eq!(s[field].as_array().unwrap().len(), n, "{field}");
    }
    let ln_v = (vocab as f64).ln();
    let (lp, slp) = (floats(s, "logprobs"), floats(s, "sampling_logprobs"));
    let (h, hp) = (floats(s, "entropy"), floats(s, "top_p_entropy"));
    let (size, mass) = (floats(s, "top_p_size"), floats(s, "top_p_mass"));
    for t in 0..n {
        assert!(lp[t] <= 0.0 && lp[t].is_finite(), "logprob {}", lp[t]);
        assert!(slp[t] >= lp[t] - 1e-6 && slp[t] <= 0.0);
        if untruncated {
            assert_eq!(slp[t], lp[t]);
        }
        assert!(h[t] >= 0.0 && h[t] <= ln_v + 1e-4, "entropy {}", h[t]);
        assert!(size[t] <= 10_000.0);
        // Strict nucleus: its mass stays below p = 0.8, and its entropy below ln |S|.
        assert!(mass[t] >= 0.0 && mass[t] < 0.8 + 1e-6, "mass {}", mass[t]);
        assert!(hp[t] >= 0.0 && hp[t] <= size[t].max(1.0).ln() + 1e-4);
        if size[t] <= 1.0 {
            assert_eq!(hp[t], 0.0);
        }
    }
    for id in s["token_ids"].as_array().unwrap() {
        assert!((id.as_u64().unwrap() as usize) < vocab);
    }
    let sum_h: f64 = h.iter().sum();
    assert!((s["entropy_sum"].as_f64().unwrap() - sum_h).abs() < 1e-3);
    let sum_hp: f64 = hp.iter().sum();
    assert!((s["top_p_entropy_sum"].as_f64().unwrap() - sum_hp).abs() < 1e-3);
    // Peak flags (default: response scope on top_p_entropy, q = 0.8) recomputed independently.
    let flags = flags(s, "peak");
    let th = quantile_linear(&hp, 0.8);
    let expect: Vec<bool> = hp.iter().map(|&x| x > th).collect();
    assert_eq!(flags, expect);
    let peaks = flags.iter().filter(|&&f| f).count();
    assert_eq!(s["peak_count"].as_u64().unwrap() as usize, peaks);
    let finish = s["finish_reason"].as_str().unwrap();
    assert!(finish == "stop" || finish == "length", "{finish}");
    assert_eq!(s["truncated"].as_bool().unwrap(), finish == "length");
    if finish == "length" {
        assert_eq!(n, max_tokens);
    }
    for field in ["reward", "correct", "extracted_answer", "advantage"] {
        assert!(s[field].is_null(), "{field} without an answer");
    }
    assert_eq!(s["weights_version"], 0);
}

/// A chat prompt and a text prompt, 3 samples each: every per-token, per-sample and summary
/// field is consistent with the others and with its definition.
pub async fn check_rollout_consistency(s: &impl Base) {
    let request = json!({
        "prompts": [
            {"id": "chat", "messages": [{"role": "user", "content": "What is 2 + 3?"}]},
            {"text": "The capital of France is"}
        ],
        "group_size": 3,
        "sampling": {"max_tokens": 12, "seed": 11}
    });
    let r = rollout(s, &request).await;
    let vocab = r["vocab_size"].as_u64().unwrap() as usize;
    assert_eq!(vocab, 49152);
    let groups = r["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["id"], "chat");
    assert_eq!(groups[1]["id"], "1");
    for g in groups {
        let samples = g["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 3);
        for (i, sample) in samples.iter().enumerate() {
            assert_eq!(sample["index"], i);
            check_sample(sample, vocab, 12, true);
        }
        assert!(g["pass_rate"].is_null() && g["reward_std"].is_null());
    }
    // The chat template wraps the message; raw text is tokenized as it is.
    let chat_ids = groups[0]["prompt_token_ids"].as_array().unwrap();
    let text_ids = groups[1]["prompt_token_ids"].as_array().unwrap();
    assert!(chat_ids.len() > text_ids.len() + 4);
    // Echoed parameters and the summary agree with the samples.
    assert_eq!(r["sampling"]["seed"], 11);
    assert_eq!(r["stats"]["top_p"], 0.8);
    assert_eq!(r["stats"]["nucleus"], "strict");
    let all = samples(&r);
    let tokens: u64 = all.iter().map(|s| s["length"].as_u64().unwrap()).sum();
    assert_eq!(r["summary"]["tokens"].as_u64().unwrap(), tokens);
    let h: f64 = all.iter().map(|s| s["entropy_sum"].as_f64().unwrap()).sum();
    assert!((r["summary"]["entropy_mean"].as_f64().unwrap() - h / tokens as f64).abs() < 1e-6);
    let anchor: f64 = all
        .iter()
        .map(|s| s["peak_top_p_entropy_mean"].as_f64().unwrap())
        .sum::<f64>()
        / all.len() as f64;
    assert!((r["summary"]["siren_anchor"].as_f64().unwrap() - anchor).abs() < 1e-9);
}

/// numpy's linear quantile of ascending `sorted` values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Checks every reward of the first group against the verifier run here, and the group fields
/// and advantages against their definitions; returns which samples are correct.
pub fn check_rewards(r: &Value, gold: &str, estimator: &Value) -> Vec<bool> {
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

/// A streamed `/rollouts` answer (`"stream": true`), read line by line as it arrives.
pub struct Lines {
    /// The answer's status.
    pub status: u16,
    /// Its content type.
    pub content_type: String,
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Lines {
    /// POSTs `request` with `"stream": true` to `{base}/rollouts`.
    pub async fn post(server: &impl Base, request: &Value) -> Lines {
        let mut request = request.clone();
        request["stream"] = Value::Bool(true);
        let response = client()
            .post(format!("{}/rollouts", server.base()))
            .json(&request)
            .send()
            .await
            .expect("request");
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        Lines {
            status: response.status().as_u16(),
            content_type,
            response,
            buffer: Vec::new(),
        }
    }

    /// The next line as JSON, once it has arrived whole; `None` at the end of the answer.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).unwrap_or_else(|e| {
                    panic!(
                        "a line is not JSON ({e}): {}",
                        String::from_utf8_lossy(&line)
                    )
                }));
            }
            match self.response.chunk().await.expect("the stream broke") {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => {
                    assert!(self.buffer.is_empty(), "the answer ends inside a line");
                    return None;
                }
            }
        }
    }

    /// Every remaining line.
    pub async fn rest(&mut self) -> Vec<Value> {
        let mut lines = Vec::new();
        while let Some(line) = self.next().await {
            lines.push(line);
        }
        lines
    }
}
