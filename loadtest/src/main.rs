//! Drives `POST /rollouts` with prompts from a dataset file and reports throughput and latency.
//!
//! Each request carries `--prompts-per-request` problems (cycling through the dataset) as chat
//! messages with `--group-size` samples each. `--concurrency` workers send requests until
//! `--requests` have been sent or `--duration` seconds have passed. The report (stdout, and
//! `--output` as JSON) gives generated tokens/s, samples/s, request latency percentiles and the
//! time until the first group came back.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

#[derive(Parser, Debug, Clone, Serialize)]
#[command(about = "Load generator for entroll's POST /rollouts")]
struct Args {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// JSON-lines dataset; each line has `problem` or `question` (and optionally `answer`).
    #[arg(long)]
    dataset: PathBuf,
    /// Prompts per request.
    #[arg(long, default_value_t = 4)]
    prompts_per_request: usize,
    /// Samples per prompt (G).
    #[arg(long, default_value_t = 8)]
    group_size: usize,
    /// Generated tokens per sample at most.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Total requests to send (0: until --duration).
    #[arg(long, default_value_t = 8)]
    requests: usize,
    /// Stop sending new requests after this many seconds (0: no limit).
    #[arg(long, default_value_t = 0.0)]
    duration: f64,
    /// Write the JSON report here.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Label stored in the report.
    #[arg(long, default_value = "")]
    label: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<f64>,
    tokens: u64,
    samples: u64,
    ok: usize,
    overloaded: usize,
    failed: usize,
    first_group: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    label: String,
    args: Args,
    wall_s: f64,
    requests_ok: usize,
    requests_overloaded: usize,
    requests_failed: usize,
    generated_tokens: u64,
    samples: u64,
    tokens_per_s: f64,
    samples_per_s: f64,
    latency_p50_s: f64,
    latency_p90_s: f64,
    latency_p99_s: f64,
    time_to_first_group_s: Option<f64>,
}

fn load_prompts(path: &PathBuf) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut prompts = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)?;
        let problem = v["problem"]
            .as_str()
            .or_else(|| v["question"].as_str())
            .context("a dataset line has neither problem nor question")?;
        let answer = match &v["answer"] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        prompts.push((problem.to_string(), answer));
    }
    anyhow::ensure!(!prompts.is_empty(), "{} holds no prompts", path.display());
    Ok(prompts)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn request_body(args: &Args, prompts: &[(String, Option<String>)], n: usize) -> Value {
    let batch: Vec<Value> = (0..args.prompts_per_request)
        .map(|j| {
            let (problem, answer) = &prompts[(n * args.prompts_per_request + j) % prompts.len()];
            let content = format!(
                "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
            );
            let mut p = json!({"messages": [{"role": "user", "content": content}]});
            if let Some(a) = answer {
                p["answer"] = json!(a);
            }
            p
        })
        .collect();
    json!({
        "prompts": batch,
        "group_size": args.group_size,
        "sampling": {"temperature": args.temperature, "max_tokens": args.max_tokens, "seed": n},
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.requests > 0 || args.duration > 0.0,
        "give --requests or --duration"
    );
    let prompts = Arc::new(load_prompts(&args.dataset)?);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let bar = if args.quiet || args.requests == 0 {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(args.requests as u64)
    };
    let started = Instant::now();
    let deadline = (args.duration > 0.0).then(|| started + Duration::from_secs_f64(args.duration));

    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (args, prompts, client) = (args.clone(), prompts.clone(), client.clone());
        let (next, tally, bar) = (next.clone(), tally.clone(), bar.clone());
        workers.push(tokio::spawn(async move {
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                if args.requests > 0 && n >= args.requests {
                    break;
                }
                let body = request_body(&args, &prompts, n);
                let sent = Instant::now();
                let result = client
                    .post(format!("{}/rollouts", args.url))
                    .json(&body)
                    .send()
                    .await;
                let latency = sent.elapsed().as_secs_f64();
                let mut t = tally.lock().await;
                match result {
                    Ok(resp) if resp.status().is_success() => match resp.json::<Value>().await {
                        Ok(v) => {
                            t.ok += 1;
                            t.latencies.push(latency);
                            t.tokens += v["summary"]["tokens"].as_u64().unwrap_or(0);
                            t.samples += v["groups"].as_array().map_or(0, |g| {
                                g.iter()
                                    .map(|g| g["samples"].as_array().map_or(0, |s| s.len() as u64))
                                    .sum()
                            });
                            t.first_group.get_or_insert(started.elapsed().as_secs_f64());
                        }
                        Err(_) => t.failed += 1,
                    },
                    Ok(resp) if resp.status().as_u16() == 429 => t.overloaded += 1,
                    _ => t.failed += 1,
                }
                bar.inc(1);
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    let mut t = std::mem::take(&mut *tally.lock().await);
    t.latencies.sort_by(f64::total_cmp);
    let report = Report {
        label: args.label.clone(),
        wall_s: wall,
        requests_ok: t.ok,
        requests_overloaded: t.overloaded,
        requests_failed: t.failed,
        generated_tokens: t.tokens,
        samples: t.samples,
        tokens_per_s: t.tokens as f64 / wall,
        samples_per_s: t.samples as f64 / wall,
        latency_p50_s: percentile(&t.latencies, 0.5),
        latency_p90_s: percentile(&t.latencies, 0.9),
        latency_p99_s: percentile(&t.latencies, 0.99),
        time_to_first_group_s: t.first_group,
        args,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(path) = &report.args.output {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    anyhow::ensure!(
        report.requests_failed == 0,
        "{} requests failed",
        report.requests_failed
    );
    Ok(())
}
