//! Runs an evaluation against a server: each problem is one POST /rollouts of one group of k
//! samples with the gold answer, so the server's verifier judges every sample; several
//! problems are in flight at once, and the server batches them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::json;

use super::dataset::{Dataset, Problem};
use super::report::{DatasetReport, ProblemResult, Report, Scores};
use crate::api::error::ErrorBody;
use crate::http::auth::Secret;

/// The instruction the papers' evaluations append to each problem (Qwen2.5-Math's).
pub const DEFAULT_INSTRUCTION: &str =
    "\nPlease reason step by step, and put your final answer within \\boxed{}.";

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server's base URL.
    pub url: String,
    /// Samples per problem.
    pub k: usize,
    /// Most generated tokens per sample (the server's default when absent).
    pub max_tokens: Option<usize>,
    /// Sampling temperature.
    pub temperature: f64,
    /// Nucleus sampling's p.
    pub top_p: f64,
    /// Problem i of a dataset is drawn with seed + i.
    pub seed: u64,
    /// Problems in flight at once.
    pub concurrency: usize,
    /// Appended to each problem in the user message.
    pub instruction: String,
    /// The server's API key, sent as `Authorization: Bearer` (empty: none).
    pub api_key: Secret,
}

impl Settings {
    /// The sampling block of every request, seed aside.
    fn sampling(&self, seed: u64) -> serde_json::Value {
        let mut sampling =
            json!({"temperature": self.temperature, "top_p": self.top_p, "seed": seed});
        if let Some(max_tokens) = self.max_tokens {
            sampling["max_tokens"] = json!(max_tokens);
        }
        sampling
    }

    /// The request that evaluates one problem.
    pub fn request(&self, problem: &Problem, seed: u64) -> serde_json::Value {
        json!({
            "prompts": [{
                "id": problem.id,
                "messages": [{"role": "user", "content": format!("{}{}", problem.question, self.instruction)}],
                "answer": problem.gold,
            }],
            "group_size": self.k,
            "sampling": self.sampling(seed),
        })
    }
}

/// The fields of an answer that an evaluation reads.
#[derive(Deserialize)]
struct Answer {
    model: String,
    weights_version: u64,
    groups: Vec<AnswerGroup>,
}

#[derive(Deserialize)]
struct AnswerGroup {
    samples: Vec<AnswerSample>,
}

#[derive(Deserialize)]
struct AnswerSample {
    correct: Option<bool>,
    length: u64,
    truncated: bool,
    entropy_sum: f64,
}

/// What one problem's request came to.
enum Outcome {
    /// Answered: the problem's result, the model and weights version that answered.
    Answered(ProblemResult, String, u64),
    /// Refused with a 4xx validation error (a prompt too long for the context, say).
    Refused(ProblemResult),
}

/// Attempts at a request the server could not take (overloaded, shutting down, a weight
/// update aborting it) or that did not reach it, before the evaluation fails.
const ATTEMPTS: u32 = 6;

/// When this many problems in a row were refused, the settings are wrong, not the problems.
const REFUSED_IN_A_ROW: usize = 8;

/// Evaluates every problem of `datasets` (each cut to `limit` problems), calling `progress`
/// after each problem with the number done and the pass@1 of those answered so far.
pub async fn evaluate(
    datasets: &[Dataset],
    limit: Option<usize>,
    settings: &Settings,
    progress: impl Fn(usize, f64) + Send + Sync + 'static,
) -> anyhow::Result<Report> {
    anyhow::ensure!(settings.k >= 1, "--k must be at least 1");
    anyhow::ensure!(
        settings.concurrency >= 1,
        "--concurrency must be at least 1"
    );
    let mut names = BTreeSet::new();
    for d in datasets {
        anyhow::ensure!(
            names.insert(d.name.clone()),
            "two datasets are named {}",
            d.name
        );
    }
    let jobs: Vec<(usize, u64, Problem)> = datasets
        .iter()
        .enumerate()
        .flat_map(|(d, dataset)| {
            let n = limit.unwrap_or(usize::MAX).min(dataset.problems.len());
            dataset.problems[..n]
                .iter()
                .enumerate()
                .map(move |(i, p)| (d, settings.seed.wrapping_add(i as u64), p.clone()))
        })
        .collect();
    let mut headers = reqwest::header::HeaderMap::new();
    if !settings.api_key.is_empty() {
        let mut bearer = reqwest::header::HeaderValue::from_str(&format!(
            "Bearer {}",
            settings.api_key.expose()
        ))
        .context("the API key is not a valid header value")?;
        bearer.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        // Below the server's idle close (`header_timeout_ms`, 10 s by default): no request goes
        // out on a connection the server is closing (docs/api.md, Errors).
        .pool_idle_timeout(Duration::from_secs(4))
        .build()
        .context("building the HTTP client")?;
    let started = Instant::now();
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::new(jobs.len())));
    let progress = Arc::new(progress);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..settings.concurrency.min(jobs.len()) {
        let (jobs, next, tally, progress) =
            (jobs.clone(), next.clone(), tally.clone(), progress.clone());
        let (client, settings) = (client.clone(), settings.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((_, seed, problem)) = jobs.get(i) else {
                    return anyhow::Ok(());
                };
                let outcome = attempt(&client, &settings, problem, *seed).await?;
                let mut tally = tally.lock().expect("not poisoned");
                tally.record(i, outcome)?;
                progress(tally.done, tally.pass_at_1());
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        if let Err(e) = joined.context("an evaluation task panicked")? {
            workers.abort_all();
            return Err(e);
        }
    }
    let outcomes = std::mem::take(&mut tally.lock().expect("not poisoned").outcomes);
    let mut per_dataset: Vec<Vec<ProblemResult>> = vec![Vec::new(); datasets.len()];
    let (mut model, mut versions) = (None, BTreeSet::new());
    for ((d, _, _), outcome) in jobs.iter().zip(outcomes) {
        match outcome.context("a problem was never evaluated")? {
            Outcome::Answered(result, m, v) => {
                model.get_or_insert(m);
                versions.insert(v);
                per_dataset[*d].push(result);
            }
            Outcome::Refused(result) => per_dataset[*d].push(result),
        }
    }
    let all: Vec<ProblemResult> = per_dataset.iter().flatten().cloned().collect();
    let Some(model) = model else {
        bail!("the server refused every problem: {}", first_error(&all));
    };
    let datasets = datasets
        .iter()
        .zip(per_dataset)
        .map(|(d, results)| {
            (
                d.name.clone(),
                DatasetReport::new(d.source.clone(), results),
            )
        })
        .collect::<BTreeMap<_, _>>();
    Ok(Report {
        model,
        url: settings.url.clone(),
        weights_versions: versions.into_iter().collect(),
        k: settings.k,
        sampling: settings.sampling(settings.seed),
        instruction: settings.instruction.clone(),
        elapsed_s: started.elapsed().as_secs_f64(),
        overall: Scores::of(&all),
        datasets,
    })
}

/// The outcomes so far, in job order, with the running figures the progress line and the
/// refusal rule need.
struct Tally {
    outcomes: Vec<Option<Outcome>>,
    done: usize,
    answered: usize,
    correct_share_sum: f64,
    refused_in_a_row: usize,
}

impl Tally {
    fn new(jobs: usize) -> Tally {
        Tally {
            outcomes: (0..jobs).map(|_| None).collect(),
            done: 0,
            answered: 0,
            correct_share_sum: 0.0,
            refused_in_a_row: 0,
        }
    }

    /// Records job `i`'s outcome; fails when too many problems in a row were refused.
    fn record(&mut self, i: usize, outcome: Outcome) -> anyhow::Result<()> {
        self.done += 1;
        match &outcome {
            Outcome::Answered(r, _, _) => {
                self.refused_in_a_row = 0;
                self.answered += 1;
                self.correct_share_sum += r.c as f64 / r.n.max(1) as f64;
            }
            Outcome::Refused(r) => {
                self.refused_in_a_row += 1;
                if self.refused_in_a_row >= REFUSED_IN_A_ROW {
                    bail!(
                        "the server refused {} problems in a row: {}",
                        self.refused_in_a_row,
                        r.error.as_deref().unwrap_or("no reason given")
                    );
                }
            }
        }
        self.outcomes[i] = Some(outcome);
        Ok(())
    }

    /// pass@1 over the problems answered so far.
    fn pass_at_1(&self) -> f64 {
        if self.answered == 0 {
            0.0
        } else {
            self.correct_share_sum / self.answered as f64
        }
    }
}

/// The first refusal's message.
fn first_error(results: &[ProblemResult]) -> String {
    results
        .iter()
        .find_map(|r| r.error.clone())
        .unwrap_or_else(|| "no problem".into())
}

/// Evaluates one problem, retrying what the server could not take yet.
async fn attempt(
    client: &reqwest::Client,
    settings: &Settings,
    problem: &Problem,
    seed: u64,
) -> anyhow::Result<Outcome> {
    let url = format!("{}/rollouts", settings.url.trim_end_matches('/'));
    let body = settings.request(problem, seed);
    let mut wait = Duration::from_millis(500);
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match client.post(&url).json(&body).send().await {
            Err(e) => last = format!("POST {url}: {e}"),
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                if status.is_success() {
                    let answer: Answer = serde_json::from_str(&text).with_context(|| {
                        format!("problem {}: an answer that is not a rollout", problem.id)
                    })?;
                    return Ok(Outcome::Answered(
                        result(problem, seed, &answer)?,
                        answer.model,
                        answer.weights_version,
                    ));
                }
                let error: Option<ErrorBody> = serde_json::from_str(&text).ok();
                let (message, kind) = error
                    .map(|e| (e.error, e.error_type))
                    .unwrap_or_else(|| (text.clone(), String::new()));
                match (status.as_u16(), kind.as_str()) {
                    (_, "overloaded" | "shutting_down" | "weights_changed") | (503, _) => {
                        last = format!("{status}: {message}")
                    }
                    (400..=499, "validation") => {
                        return Ok(Outcome::Refused(ProblemResult::refused(
                            problem.id.clone(),
                            seed,
                            message,
                        )))
                    }
                    _ => bail!("problem {}: {status} {kind}: {message}", problem.id),
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    bail!(
        "problem {}: gave up after {ATTEMPTS} attempts: {last}",
        problem.id
    )
}

/// A problem's result from its answer.
fn result(problem: &Problem, seed: u64, answer: &Answer) -> anyhow::Result<ProblemResult> {
    let [group] = answer.groups.as_slice() else {
        bail!(
            "problem {}: {} groups for one prompt",
            problem.id,
            answer.groups.len()
        );
    };
    let mut r = ProblemResult {
        id: problem.id.clone(),
        seed,
        n: group.samples.len(),
        c: 0,
        tokens: 0,
        truncated: 0,
        entropy_sum: 0.0,
        error: None,
    };
    for s in &group.samples {
        let correct = s
            .correct
            .with_context(|| format!("problem {}: a sample without a verdict", problem.id))?;
        r.c += usize::from(correct);
        r.tokens += s.length;
        r.truncated += usize::from(s.truncated);
        r.entropy_sum += s.entropy_sum;
    }
    Ok(r)
}
