//! Drives `POST /rollouts` with prompts from a dataset file and reports throughput and latency.
//!
//! Each request carries `--prompts-per-request` problems (cycling through the dataset) as chat
//! messages with `--group-size` samples each. `--concurrency` workers send requests until
//! `--requests` have been sent or `--duration` seconds have passed. The report (stdout, and
//! `--output` as JSON) gives generated tokens/s, samples/s, request latency percentiles, the
//! time until the first group came back, and the server's own figures from `/metrics` (engine
//! steps, batch sizes, cancellations, resident memory sampled every `--scrape-every` seconds).
//!
//! `--mix` turns it into an overload and soak test: oversized bodies, clients that disconnect
//! and requests with deadlines run beside normal ones (see [`workload`]); any answer a correct
//! server would not give is counted as unexpected and makes the run fail.

mod scrape;
mod workload;

use std::collections::BTreeMap;
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
    /// The server's API key, sent as `Authorization: Bearer` (empty: none).
    #[arg(
        long,
        env = "ENTROLL_API_KEY",
        hide_env_values = true,
        default_value = ""
    )]
    #[serde(skip)]
    api_key: String,
    /// JSON-lines dataset; each line has `problem` or `question` (and optionally `answer`).
    #[arg(long)]
    dataset: PathBuf,
    /// The route the load goes to (`chat` takes one prompt a request).
    #[arg(long, value_enum, default_value = "rollouts")]
    api: workload::Api,
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
    /// Request kinds by weight: normal, oversized, disconnect, deadline (e.g.
    /// `normal=6,oversized=1,disconnect=2,deadline=1`).
    #[arg(long, default_value = "normal=1")]
    #[serde(skip)]
    mix: workload::Mix,
    /// After a 429, the worker waits this long before its next request (milliseconds).
    #[arg(long, default_value_t = 100)]
    backoff_ms: u64,
    /// Sends a normal request again, up to this many times, after an answer a client may
    /// retry (429, 502, 503, 504, a cut connection), waiting `backoff_ms` between attempts.
    #[arg(long, default_value_t = 0)]
    retries: usize,
    /// Closes a pooled connection idle this long (milliseconds): below the server's
    /// `header_timeout_ms` (10 s by default), after which the server closes it, so no request
    /// is sent on a connection the server is closing.
    #[arg(long, default_value_t = 4_000)]
    pool_idle_ms: u64,
    /// Seconds between `/metrics` scrapes (resident memory series).
    #[arg(long, default_value_t = 10.0)]
    scrape_every: f64,
}

#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<f64>,
    tokens: u64,
    samples: u64,
    first_group: Option<f64>,
    /// Outcome counts per request kind.
    outcomes: BTreeMap<String, BTreeMap<String, usize>>,
    unexpected: usize,
    unexpected_examples: Vec<String>,
    /// Attempts sent again after a retryable answer.
    retries: usize,
    /// Complete requests by the weights version they ran on.
    versions: BTreeMap<u64, usize>,
    /// Complete requests whose samples reported different versions.
    mixed_versions: usize,
}

#[derive(Debug, Serialize)]
struct Memory {
    start_bytes: f64,
    end_bytes: f64,
    max_bytes: f64,
    /// Growth from the first scrape after the first tenth of the run (warm-up) to the end.
    growth_after_warmup_bytes: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    label: String,
    args: Args,
    wall_s: f64,
    requests_ok: usize,
    requests_overloaded: usize,
    requests_unexpected: usize,
    unexpected_examples: Vec<String>,
    outcomes: BTreeMap<String, BTreeMap<String, usize>>,
    /// Attempts sent again after a retryable answer (`--retries`).
    retries: usize,
    /// Complete requests by the weights version they ran on.
    versions: BTreeMap<u64, usize>,
    /// Complete requests whose samples reported different weights versions (must be 0).
    mixed_version_requests: usize,
    generated_tokens: u64,
    samples: u64,
    tokens_per_s: f64,
    samples_per_s: f64,
    latency_p50_s: f64,
    latency_p90_s: f64,
    latency_p99_s: f64,
    time_to_first_group_s: Option<f64>,
    server: scrape::ServerDelta,
    memory: Memory,
    scrapes: Vec<scrape::Snapshot>,
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
    let batch: Vec<(Value, Option<&String>)> = (0..args.prompts_per_request)
        .map(|j| {
            let (problem, answer) = &prompts[(n * args.prompts_per_request + j) % prompts.len()];
            let content = format!(
                "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
            );
            (json!([{"role": "user", "content": content}]), answer.as_ref())
        })
        .collect();
    match args.api {
        workload::Api::Rollouts => {
            let prompts: Vec<Value> = batch
                .into_iter()
                .map(|(messages, answer)| {
                    let mut p = json!({ "messages": messages });
                    if let Some(a) = answer {
                        p["answer"] = json!(a);
                    }
                    p
                })
                .collect();
            json!({
                "prompts": prompts,
                "group_size": args.group_size,
                "sampling": {"temperature": args.temperature, "max_tokens": args.max_tokens, "seed": n},
            })
        }
        workload::Api::Chat => {
            let (messages, answer) = batch.into_iter().next().expect("one prompt a request");
            let mut body = json!({
                "messages": messages,
                "n": args.group_size,
                "temperature": args.temperature,
                "max_tokens": args.max_tokens,
                "seed": n,
            });
            if let Some(a) = answer {
                body["answer"] = json!(a);
            }
            body
        }
    }
}

/// The server's body limit, from `GET /info`.
async fn max_body_bytes(client: &reqwest::Client, url: &str) -> anyhow::Result<usize> {
    let info: Value = client
        .get(format!("{url}/info"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    info["limits"]["max_body_bytes"]
        .as_u64()
        .map(|b| b as usize)
        .context("/info has no limits.max_body_bytes")
}

fn memory(scrapes: &[scrape::Snapshot], wall: f64) -> Memory {
    let rss = |s: &scrape::Snapshot| s.resident_bytes;
    let start = scrapes.first().map_or(0.0, rss);
    let end = scrapes.last().map_or(0.0, rss);
    let warm = scrapes
        .iter()
        .find(|s| s.at_s >= wall / 10.0)
        .map_or(start, rss);
    Memory {
        start_bytes: start,
        end_bytes: end,
        max_bytes: scrapes.iter().map(rss).fold(0.0, f64::max),
        growth_after_warmup_bytes: end - warm,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.api != workload::Api::Chat || args.prompts_per_request == 1,
        "--api chat sends one conversation a request: --prompts-per-request 1"
    );
    anyhow::ensure!(
        args.requests > 0 || args.duration > 0.0,
        "give --requests or --duration"
    );
    let prompts = Arc::new(load_prompts(&args.dataset)?);
    let mut headers = reqwest::header::HeaderMap::new();
    if !args.api_key.is_empty() {
        let mut bearer =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", args.api_key))
                .context("the API key is not a valid header value")?;
        bearer.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .pool_idle_timeout(Duration::from_millis(args.pool_idle_ms))
        .default_headers(headers)
        .build()?;
    let body_limit = max_body_bytes(&client, &args.url).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let bar = if args.quiet || args.requests == 0 {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(args.requests as u64)
    };
    let started = Instant::now();
    let deadline = (args.duration > 0.0).then(|| started + Duration::from_secs_f64(args.duration));

    let scrapes = Arc::new(Mutex::new(vec![
        scrape::scrape(&client, &args.url, 0.0).await?,
    ]));
    let scraper = {
        let (client, url, scrapes) = (client.clone(), args.url.clone(), scrapes.clone());
        let every = Duration::from_secs_f64(args.scrape_every.max(0.1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let at = started.elapsed().as_secs_f64();
                if let Ok(s) = scrape::scrape(&client, &url, at).await {
                    scrapes.lock().await.push(s);
                }
            }
        })
    };

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
                let kind = args.mix.kind(n);
                let planned = workload::plan(kind, n, request_body(&args, &prompts, n), body_limit);
                let sent = Instant::now();
                let mut outcome =
                    workload::send(&client, &args.url, args.api, planned.clone()).await;
                let mut retries = 0;
                while kind == workload::Kind::Normal
                    && outcome.is_retryable()
                    && retries < args.retries
                {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(args.backoff_ms)).await;
                    outcome = workload::send(&client, &args.url, args.api, planned.clone()).await;
                }
                let latency = sent.elapsed().as_secs_f64();
                let overloaded = outcome.is_overloaded();
                let mut t = tally.lock().await;
                t.retries += retries;
                *t.outcomes
                    .entry(kind.to_string())
                    .or_default()
                    .entry(outcome.label())
                    .or_default() += 1;
                if !outcome.expected_for(kind) {
                    t.unexpected += 1;
                    if t.unexpected_examples.len() < 10 {
                        t.unexpected_examples
                            .push(format!("{kind} request {n}: {outcome}"));
                    }
                }
                if let workload::Outcome::Complete {
                    tokens,
                    samples,
                    version,
                    mixed,
                } = outcome
                {
                    if let Some(v) = version {
                        *t.versions.entry(v).or_default() += 1;
                    }
                    t.mixed_versions += mixed as usize;
                    t.latencies.push(latency);
                    t.tokens += tokens;
                    t.samples += samples;
                    t.first_group.get_or_insert(started.elapsed().as_secs_f64());
                }
                bar.inc(1);
                drop(t);
                if overloaded {
                    tokio::time::sleep(Duration::from_millis(args.backoff_ms)).await;
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    scraper.abort();
    let mut scrapes = std::mem::take(&mut *scrapes.lock().await);
    scrapes.push(scrape::scrape(&client, &args.url, wall).await?);
    let mut t = std::mem::take(&mut *tally.lock().await);
    t.latencies.sort_by(f64::total_cmp);
    let count = |label: &str| -> usize { t.outcomes.values().filter_map(|o| o.get(label)).sum() };
    let report = Report {
        label: args.label.clone(),
        wall_s: wall,
        requests_ok: count("200"),
        requests_overloaded: count("429 overloaded"),
        requests_unexpected: t.unexpected,
        unexpected_examples: t.unexpected_examples,
        retries: t.retries,
        versions: t.versions,
        mixed_version_requests: t.mixed_versions,
        generated_tokens: t.tokens,
        samples: t.samples,
        tokens_per_s: t.tokens as f64 / wall,
        samples_per_s: t.samples as f64 / wall,
        latency_p50_s: percentile(&t.latencies, 0.5),
        latency_p90_s: percentile(&t.latencies, 0.9),
        latency_p99_s: percentile(&t.latencies, 0.99),
        time_to_first_group_s: t.first_group,
        outcomes: t.outcomes,
        server: scrape::ServerDelta::between(&scrapes[0], scrapes.last().unwrap()),
        memory: memory(&scrapes, wall),
        scrapes,
        args,
    };
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(path) = &report.args.output {
        std::fs::write(path, &text)?;
    }
    anyhow::ensure!(
        report.requests_unexpected == 0,
        "{} requests got an answer a correct server would not give: {:?}",
        report.requests_unexpected,
        report.unexpected_examples
    );
    Ok(())
}
