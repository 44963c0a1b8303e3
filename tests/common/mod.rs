//! Starts the real `entroll` binary on the real default model for integration tests.
//!
//! One server per test binary, started on first use on a free port. It is tied to the test
//! process through its standard input (`--exit-on-stdin-eof`): when the tests exit, it exits.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

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
    let path = entroll::model_store::default_model_path();
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
    let path = entroll::model_store::default_safetensors_path();
    assert!(
        path.join("model.safetensors").exists(),
        "{} is missing: run `scripts/learner-env` first (scripts/test does)",
        path.display()
    );
    path
}

/// A small random `family` (llama, qwen2, qwen3) checkpoint, failing with the command that makes it.
pub fn tiny_random_model(family: &str) -> std::path::PathBuf {
    let path = entroll::model_store::entroll_home()
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_entroll"))
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
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

/// An HTTP client with a generous timeout (CPU generation is slow).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(900))
        .build()
        .unwrap()
}

/// POSTs a raw body to `/rollouts`, returning the status and parsed JSON body.
pub async fn post_raw(server: &Server, body: impl Into<reqwest::Body>) -> (u16, Value) {
    post_to(&server.base, body).await
}

/// POSTs a raw body to `{base}/rollouts`, returning the status and parsed JSON body.
pub async fn post_to(base: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = client()
        .post(format!("{base}/rollouts"))
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
pub async fn rollout(server: &Server, request: &Value) -> Value {
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
