//! The rollout service behind `POST /rollouts`: admission control, then for each request its
//! steps: tokenization ([`crate::validation::tokenize`]), one engine sequence per sample, the
//! regrouping of finished samples, and the assembly of the response.
//!
//! Admission is a semaphore of `max_requests` permits taken with `try_acquire`, so a full server
//! answers 429 at once. Sequences take permits of a second, fair semaphore of
//! `min(max_running_sequences, engine batch)` before they reach the engine, so waiting
//! sequences queue here, in arrival order, and a cancelled request never reaches the engine. Each sequence runs in a task owned by
//! the request's `JoinSet`: when the request future is dropped (the client went away) the
//! tasks are aborted and their engine futures dropped.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::RolloutResponse;
use crate::assemble::{assemble, FinishedGroup};
use crate::config::{Config, SamplerKind};
use crate::engine::{Drawing, Engine, SequenceOutput, SequenceRequest};
use crate::error::ApiError;
use crate::metrics::{self, SequenceGauge};
use crate::rewards::{score, RewardValues, Score};
use crate::sampling::{DrawKey, TokenSampler};
use crate::stats::{NucleusParams, Truncation};
use crate::validation::{tokenize, TokenizedRollout, ValidPrompt, ValidRollout};

/// A finished sequence and its verifier score (when its prompt has a gold answer).
type ScoredOutput = (SequenceOutput, Option<Score>);

/// The engine being served and the version of its weights. A request takes one snapshot when
/// it starts and runs every sample on it, so a weight swap never splits a request.
#[derive(Clone)]
pub struct Live {
    /// The engine, with the weights loaded.
    pub engine: Arc<dyn Engine>,
    /// The weights version every sample it produces reports.
    pub version: u64,
}

/// Serves rollout requests on the live engine.
pub struct RolloutService {
    live: RwLock<Live>,
    sampler: SamplerKind,
    requests: Semaphore,
    max_requests: usize,
    sequences: Arc<Semaphore>,
    sequence_slots: usize,
    rewards: RewardValues,
    verifier: Arc<verifier::Config>,
}

/// Proof that a request was admitted; dropping it frees the slot.
pub struct Admission<'a>(#[allow(dead_code)] tokio::sync::SemaphorePermit<'a>);

impl RolloutService {
    /// A service over `engine` with the limits of `config`.
    pub fn new(engine: Arc<dyn Engine>, config: &Config) -> Self {
        let sequence_slots = config
            .max_running_sequences
            .min(engine.info().max_batch)
            .max(1);
        Self {
            sequences: Arc::new(Semaphore::new(sequence_slots)),
            sequence_slots,
            live: RwLock::new(Live { engine, version: 0 }),
            sampler: config.sampler,
            requests: Semaphore::new(config.max_requests),
            max_requests: config.max_requests,
            rewards: RewardValues {
                correct: config.reward_correct,
                wrong: config.reward_wrong,
            },
            verifier: Arc::new(verifier::Config::default()),
        }
    }

    /// The engine and weights version now serving new requests.
    pub fn live(&self) -> Live {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes `next` serve every request that starts from now on; requests already running
    /// finish on the engine they started with, which is dropped after the last of them.
    pub fn swap(&self, next: Live) {
        *self.live.write().unwrap_or_else(PoisonError::into_inner) = next;
    }

    /// Admits a request, or answers overloaded at once.
    pub fn admit(&self) -> Result<Admission<'_>, ApiError> {
        self.requests
            .try_acquire()
            .map(Admission)
            .map_err(|_| ApiError::Overloaded(self.max_requests))
    }

    fn drawing(&self, req: &ValidRollout, prompt: u32, sample: u32) -> Drawing {
        let s = &req.sampling;
        match self.sampler {
            SamplerKind::Entroll => Drawing::Entroll(TokenSampler {
                temperature: s.temperature,
                truncation: Truncation {
                    top_k: s.top_k,
                    top_p: s.top_p,
                },
                nucleus: NucleusParams {
                    top_p: req.stats.top_p,
                    max_candidates: req.stats.top_k_candidates,
                    rule: req.stats.nucleus,
                },
                key: DrawKey {
                    seed: s.seed,
                    prompt,
                    sample,
                },
            }),
            SamplerKind::Engine => Drawing::Engine {
                temperature: s.temperature,
                top_p: s.top_p,
                top_k: s.top_k,
            },
        }
    }

    /// Runs an admitted, validated request to completion: tokenizes its prompts on the live
    /// engine, runs one sequence per sample, regroups the finished sequences and assembles the
    /// response. Every sample runs on the same weights.
    pub async fn run(
        &self,
        req: ValidRollout,
        _admission: Admission<'_>,
    ) -> Result<RolloutResponse, ApiError> {
        let started = Instant::now();
        let live = self.live();
        let req = tokenize(req, live.engine.as_ref()).await?;
        let finished = self.run_sequences(&req, &live).await?;
        let TokenizedRollout {
            request,
            prompt_ids,
        } = req;
        let groups = regroup(request.prompts, prompt_ids, finished.outputs);
        let info = live.engine.info();
        let (groups, summary) = assemble(
            groups,
            &request.stats,
            request.advantage,
            live.version,
            started.elapsed().as_millis() as u64,
        );
        let response = RolloutResponse {
            model: info.id.clone(),
            vocab_size: info.vocab_size,
            weights_version: live.version,
            sampling: request.sampling,
            stats: request.stats,
            advantage: request.advantage,
            groups,
            summary,
        };
        let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(started));
        metrics::request_succeeded(
            &response,
            since(finished.first_entered).unwrap_or_default(),
            since(finished.first_token),
        );
        Ok(response)
    }

    /// Runs every sample of `req` as its own task of a `JoinSet` (dropped with the request, which
    /// cancels them) and collects their outputs in prompt and sample order.
    async fn run_sequences(
        &self,
        req: &TokenizedRollout,
        live: &Live,
    ) -> Result<Finished, ApiError> {
        let mut tasks = JoinSet::new();
        for (pi, (p, ids)) in req.request.prompts.iter().zip(&req.prompt_ids).enumerate() {
            for si in 0..p.group_size {
                let sequence = Sequence {
                    prompt: pi,
                    sample: si,
                    request: SequenceRequest {
                        prompt: ids.clone(),
                        max_tokens: req.request.sampling.max_tokens,
                        stop: req.request.sampling.stop.clone(),
                        drawing: self.drawing(&req.request, pi as u32, si as u32),
                    },
                    gold: p.answer.clone(),
                };
                tasks.spawn(self.sample_task(sequence, live.engine.clone()));
            }
        }
        let mut finished = Finished {
            outputs: req
                .request
                .prompts
                .iter()
                .map(|p| vec![None; p.group_size])
                .collect(),
            first_entered: None,
            first_token: None,
        };
        while let Some(joined) = tasks.join_next().await {
            let done =
                joined.map_err(|e| ApiError::Engine(format!("sequence task failed: {e}")))??;
            finished.record(done);
        }
        Ok(finished)
    }

    /// One sample: waits for a sequence slot (the fair queue), generates, and verifies the
    /// answer off the executor, overlapping the generation of the other samples.
    fn sample_task(
        &self,
        sequence: Sequence,
        engine: Arc<dyn Engine>,
    ) -> impl std::future::Future<Output = Result<SampleDone, ApiError>> + Send + 'static {
        let (slots, capacity) = (self.sequences.clone(), self.sequence_slots);
        let (values, verifier) = (self.rewards, self.verifier.clone());
        async move {
            let mut gauge = SequenceGauge::waiting();
            let slot = slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ApiError::Engine("the sequence scheduler has shut down".into()))?;
            let entered = Instant::now();
            gauge.run(capacity - slots.available_permits() - 1);
            let prompt_len = sequence.request.prompt.len();
            let output = engine.generate(sequence.request).await?;
            metrics::sequence_finished(prompt_len, output.length, entered.elapsed());
            drop((slot, gauge));
            let score = match sequence.gold {
                Some(gold) => {
                    let text = output.text.clone();
                    let verdict =
                        tokio::task::spawn_blocking(move || score(&gold, &text, values, &verifier))
                            .await
                            .map_err(|e| ApiError::Engine(format!("verifier failed: {e}")))?;
                    Some(verdict)
                }
                None => None,
            };
            Ok(SampleDone {
                prompt: sequence.prompt,
                sample: sequence.sample,
                output: (output, score),
                entered,
            })
        }
    }
}

/// One sample to run: where it belongs, what the engine runs, and its gold answer.
struct Sequence {
    prompt: usize,
    sample: usize,
    request: SequenceRequest,
    gold: Option<String>,
}

/// A finished sample task.
struct SampleDone {
    prompt: usize,
    sample: usize,
    output: ScoredOutput,
    /// When it got its sequence slot.
    entered: Instant,
}

/// Every sample's output by prompt and sample index, and the request's first engine entry
/// and first token (for the queue and time-to-first-token metrics).
struct Finished {
    outputs: Vec<Vec<Option<ScoredOutput>>>,
    first_entered: Option<Instant>,
    first_token: Option<Instant>,
}

impl Finished {
    fn record(&mut self, done: SampleDone) {
        let earliest = |a: Option<Instant>, b: Instant| Some(a.map_or(b, |a| a.min(b)));
        self.first_entered = earliest(self.first_entered, done.entered);
        if let Some(t) = done.output.0.first_token_at {
            self.first_token = earliest(self.first_token, t);
        }
        self.outputs[done.prompt][done.sample] = Some(done.output);
    }
}

/// Pairs each prompt with its tokens and its samples' outputs and scores, in order.
fn regroup(
    prompts: Vec<ValidPrompt>,
    prompt_ids: Vec<Arc<[u32]>>,
    outputs: Vec<Vec<Option<ScoredOutput>>>,
) -> Vec<FinishedGroup> {
    prompts
        .into_iter()
        .zip(prompt_ids)
        .zip(outputs)
        .map(|((p, ids), outs)| {
            let (outputs, scores): (Vec<SequenceOutput>, Vec<Option<Score>>) =
                outs.into_iter().flatten().unzip();
            FinishedGroup {
                id: p.id,
                prompt_token_ids: ids.to_vec(),
                outputs,
                scores: p
                    .answer
                    .is_some()
                    .then(|| scores.into_iter().flatten().collect()),
            }
        })
        .collect()
}
