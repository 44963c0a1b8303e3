//! A real Prometheus (Debian's `prometheus` package) scrapes a real entroll serving the real
//! model; what it stores must agree with the rollout responses.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{rollout, samples, spawn};
use serde_json::{json, Value};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(target: &str) -> (KillOnDrop, String) {
    let dir = std::env::temp_dir().join(format!("entroll-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: entroll\n    \
             static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus (Debian's `prometheus` package; scripts/test installs it)");
    (KillOnDrop(child), format!("http://127.0.0.1:{port}"))
}

/// Waits (up to 60 s, then fails with `why`) until Prometheus holds `value` for `q`.
async fn scraped(prom: &str, q: &str, value: f64, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while query(prom, q).await != Some(value) {
        assert!(Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of an instant query's first series, if there is one.
async fn query(prom: &str, q: &str) -> Option<f64> {
    let r: Value = common::client()
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    r["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test]
async fn prometheus_scrapes_statistics_consistent_with_the_responses() {
    let server = spawn(&[]);
    let target = server.base.trim_start_matches("http://").to_string();
    let (_prometheus, prom) = start_prometheus(&target);
    // A scrape before any request, so the generated-token counter's rate below has a sample
    // at 0 to rise from.
    scraped(
        &prom,
        "entroll_generated_tokens_total",
        0.0,
        "Prometheus never scraped entroll",
    )
    .await;

    let mut responses = Vec::new();
    for seed in [1, 2] {
        let request = json!({
            "prompts": [
                {"text": "Question: What is 2 + 2?\nAnswer:", "answer": "4"},
                {"messages": [{"role": "user", "content": "What is 10 - 3?"}], "answer": "7"}
            ],
            "group_size": 2,
            "sampling": {"max_tokens": 10, "seed": seed}
        });
        responses.push(rollout(&server, &request).await);
    }
    let tokens: f64 = responses
        .iter()
        .map(|r| r["summary"]["tokens"].as_f64().unwrap())
        .sum();
    let entropy_sum: f64 = responses
        .iter()
        .flat_map(|r| {
            samples(r)
                .into_iter()
                .map(|s| s["entropy_sum"].as_f64().unwrap())
                .collect::<Vec<_>>()
        })
        .sum();
    let groups: Vec<&Value> = responses
        .iter()
        .flat_map(|r| r["groups"].as_array().unwrap())
        .collect();
    let pass_rates: f64 = groups
        .iter()
        .map(|g| g["pass_rate"].as_f64().unwrap())
        .sum();
    let zero_variance = groups
        .iter()
        .filter(|g| g["all_equal"].as_bool().unwrap())
        .count() as f64;

    // Wait for a scrape that saw both requests.
    scraped(
        &prom,
        "entroll_requests_succeeded_total",
        2.0,
        "Prometheus never saw the two requests",
    )
    .await;
    let get = |q: &'static str| {
        let prom = prom.clone();
        async move {
            query(&prom, q)
                .await
                .unwrap_or_else(|| panic!("no series for {q}"))
        }
    };
    assert_eq!(get("entroll_token_entropy_nats_count").await, tokens);
    assert!(
        (get("entroll_token_entropy_nats_sum").await - entropy_sum).abs()
            < 1e-3 * entropy_sum.max(1.0)
    );
    assert_eq!(get("entroll_token_top_p_entropy_nats_count").await, tokens);
    assert_eq!(get("entroll_token_top_p_size_count").await, tokens);
    assert_eq!(get("entroll_generated_tokens_total").await, tokens);
    assert_eq!(get("entroll_response_tokens_total").await, tokens);
    assert_eq!(
        get("entroll_group_pass_rate_count").await,
        groups.len() as f64
    );
    assert!((get("entroll_group_pass_rate_sum").await - pass_rates).abs() < 1e-9);
    assert_eq!(get("entroll_groups_total").await, groups.len() as f64);
    // Exported at 0 from the start: a missing series is a failure, not a zero.
    assert_eq!(
        get("entroll_zero_variance_groups_total").await,
        zero_variance
    );
    assert_eq!(get("entroll_weights_version").await, 0.0);
    assert_eq!(get("sum(entroll_verdicts_total)").await, 8.0);
    // Throughput is a rate over the scraped counter: it rose from 0 to `tokens` in the window.
    let rate = get("rate(entroll_generated_tokens_total[5m])").await;
    assert!(rate > 0.0, "generated tokens at rate {rate}");
    // The process metrics are there too: the model alone is tens of MB resident.
    assert!(get("process_resident_memory_bytes").await > 50e6);
    assert!(get("process_threads").await >= 2.0);
    // Nothing is left running.
    assert_eq!(get("entroll_requests_running").await, 0.0);
    assert_eq!(get("entroll_sequences_running").await, 0.0);
    // Every panel of the shipped dashboards has data: each expression returns a series. A
    // histogram is exported from its first observation, so its rate needs a second scrape
    // after the requests: each query may wait for it, not for ever.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut checked = 0;
    for expr in dashboard_expressions() {
        let q = expr.replace("$__rate_interval", "1m");
        while series(&prom, &q).await == 0 {
            assert!(
                Instant::now() < deadline,
                "dashboard query with no data: {expr}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} dashboard queries found");
}

/// Every PromQL expression of the dashboards in `configs/grafana/dashboards/`.
fn dashboard_expressions() -> Vec<String> {
    let mut exprs = Vec::new();
    for entry in std::fs::read_dir("configs/grafana/dashboards").unwrap() {
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                exprs.extend(target["expr"].as_str().map(str::to_string));
            }
        }
    }
    exprs
}

/// How many series the instant query `q` returns.
async fn series(prom: &str, q: &str) -> usize {
    let r: Value = common::client()
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "success", "{q}: {r}");
    r["data"]["result"].as_array().map_or(0, Vec::len)
}
