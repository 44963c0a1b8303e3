//! The rollout service behind `POST /rollouts`: admission control, then for each request its
//! steps: tokenization ([`crate::validation::tokenize`]), one engine sequence per sample, the
//! regrouping of finished samples into groups, and the assembly of the answer, whole or group
//! by group ([`Running`]).
//!
//! Admission is a semaphore of `max_requests` permits taken with `try_acquire`, so a full server
//! answers 429 at once. Sequences take permits of a second, fair semaphore of
//! `min(max_running_sequences, engine batch)` before they reach the engine, so waiting
//! sequences queue here, in arrival order, and a cancelled request never reaches the engine.
//! Each sequence runs in a task owned by the request's `JoinSet`: when the request is dropped
//! (the client went away, whole or streamed) the tasks are aborted and their engine futures
//! dropped.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::{Group, RolloutResponse, Served, Summary};
use crate::assemble::{assemble, assemble_group, FinishedGroup, Totals};
use crate::config::{Config, SamplerKind};
use crate::engine::{Drawing, Engine, SequenceOutput, SequenceRequest};
use crate::error::ApiError;
use crate::metrics::{self, SequenceGauge};
use crate::rewards::{score, RewardValues, Score};
use crate::sampling::{DrawKey, TokenSampler};
use crate::stats::{NucleusParams, Truncation};
use crate::validation::{tokenize, TokenizedRollout, ValidRollout};

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
    requests: Arc<Semaphore>,
    max_requests: usize,
    sequences: Arc<Semaphore>,
    sequence_slots: usize,
    rewards: RewardValues,
    verifier: Arc<verifier::Config>,
}

/// Proof that a request was admitted; dropping it frees the slot. It is owned, so a streamed
/// answer holds it until its last line.
pub struct Admission(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

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
            requests: Arc::new(Semaphore::new(config.max_requests)),
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
    pub fn admit(&self) -> Result<Admission, ApiError> {
        self.requests
            .clone()
            .try_acquire_owned()
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
                // Nothing to return when nothing truncates.
                mask: req.return_sampling_mask && (s.top_p < 1.0 || s.top_k.is_some()),
            }),
            SamplerKind::Engine => Drawing::Engine {
                temperature: s.temperature,
                top_p: s.top_p,
                top_k: s.top_k,
            },
        }
    }

    /// Runs an admitted, validated request to completion and answers it whole: every group in
    /// request order, then the summary. Every sample runs on the same weights.
    pub async fn run(
        &self,
        req: ValidRollout,
        admission: Admission,
    ) -> Result<RolloutResponse, ApiError> {
        self.start(req, admission).await?.collect().await
    }

    /// Starts an admitted, validated request: tokenizes its prompts on the live engine and
    /// starts one sequence per sample, each a task of the returned [`Running`]'s `JoinSet`
    /// (dropping it cancels them). Every sample runs on the same weights.
    pub async fn start(
        &self,
        req: ValidRollout,
        admission: Admission,
    ) -> Result<Running, ApiError> {
        let started = Instant::now();
        let live = self.live();
        let TokenizedRollout {
            request,
            prompt_ids,
        } = tokenize(req, live.engine.as_ref()).await?;
        let mut tasks = JoinSet::new();
        let mut groups = Vec::with_capacity(request.prompts.len());
        for (pi, (p, ids)) in request.prompts.iter().zip(prompt_ids).enumerate() {
            for si in 0..p.group_size {
                let sequence = Sequence {
                    prompt: pi,
                    sample: si,
                    request: SequenceRequest {
                        prompt: ids.clone(),
                        max_tokens: request.sampling.max_tokens,
                        stop: request.sampling.stop.clone(),
                        drawing: self.drawing(&request, pi as u32, si as u32),
                    },
                    gold: p.answer.clone(),
                };
                tasks.spawn(self.sample_task(sequence, live.engine.clone()));
            }
            groups.push(PendingGroup {
                id: p.id.clone(),
                prompt_ids: ids,
                rewarded: p.answer.is_some(),
                outputs: vec![None; p.group_size],
                waiting: p.group_size,
            });
        }
        let info = live.engine.info();
        Ok(Running {
            served: Served {
                model: info.id.clone(),
                vocab_size: info.vocab_size,
                weights_version: live.version,
                sampling: request.sampling,
                stats: request.stats,
                advantage: request.advantage,
            },
            ready: groups
                .iter()
                .enumerate()
                .filter(|(_, g)| g.waiting == 0)
                .map(|(i, _)| i)
                .collect(),
            totals: groups.iter().map(|_| None).collect(),
            groups,
            tasks,
            first_entered: None,
            first_token: None,
            started,
            _admission: admission,
        })
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

/// A started request: its samples' tasks (aborted when it is dropped) and the groups they
/// complete, answered whole ([`Running::collect`]) or group by group ([`Running::next_group`],
/// then [`Running::finish`]).
pub struct Running {
    served: Served,
    groups: Vec<PendingGroup>,
    /// Groups whose samples are all done and that were not handed out yet.
    ready: Vec<usize>,
    tasks: JoinSet<Result<SampleDone, ApiError>>,
    first_entered: Option<Instant>,
    first_token: Option<Instant>,
    started: Instant,
    /// Each group's sums, once `next_group` handed it out.
    totals: Vec<Option<Totals>>,
    _admission: Admission,
}

/// A prompt's samples as they finish.
struct PendingGroup {
    id: String,
    prompt_ids: Arc<[u32]>,
    rewarded: bool,
    outputs: Vec<Option<ScoredOutput>>,
    /// Samples not finished yet.
    waiting: usize,
}

impl PendingGroup {
    /// The finished group, its samples in index order.
    fn finished(&mut self) -> FinishedGroup {
        let (outputs, scores): (Vec<SequenceOutput>, Vec<Option<Score>>) =
            self.outputs.drain(..).flatten().unzip();
        FinishedGroup {
            id: std::mem::take(&mut self.id),
            prompt_token_ids: self.prompt_ids.to_vec(),
            outputs,
            scores: self
                .rewarded
                .then(|| scores.into_iter().flatten().collect()),
        }
    }
}

impl Running {
    /// The model, weights version and effective parameters of the answer.
    pub fn served(&self) -> &Served {
        &self.served
    }

    /// The next group whose samples are all done, with its index in the request, in
    /// completion order; `None` once every group was handed out.
    async fn next_finished(&mut self) -> Result<Option<(usize, FinishedGroup)>, ApiError> {
        loop {
            if let Some(index) = self.ready.pop() {
                return Ok(Some((index, self.groups[index].finished())));
            }
            let Some(joined) = self.tasks.join_next().await else {
                return Ok(None);
            };
            let done =
                joined.map_err(|e| ApiError::Engine(format!("sequence task failed: {e}")))??;
            self.record(done);
        }
    }

    fn record(&mut self, done: SampleDone) {
        let earliest = |a: Option<Instant>, b: Instant| Some(a.map_or(b, |a| a.min(b)));
        self.first_entered = earliest(self.first_entered, done.entered);
        if let Some(t) = done.output.0.first_token_at {
            self.first_token = earliest(self.first_token, t);
        }
        let group = &mut self.groups[done.prompt];
        group.outputs[done.sample] = Some(done.output);
        group.waiting -= 1;
        if group.waiting == 0 {
            self.ready.push(done.prompt);
        }
    }

    /// The next group whose samples are all done, assembled (in completion order), or `None`
    /// when every group was answered. Only for `peak_scope: response`, where a group's peaks
    /// do not depend on the other groups.
    pub async fn next_group(&mut self) -> Result<Option<Group>, ApiError> {
        let Some((index, finished)) = self.next_finished().await? else {
            return Ok(None);
        };
        let s = &self.served;
        let group = assemble_group(finished, &s.stats, s.advantage, s.weights_version, None);
        self.totals[index] = Some(Totals::of(&group));
        metrics::group_served(&group);
        Ok(Some(group))
    }

    /// The summary of the groups answered by [`Running::next_group`], once it returned `None`.
    pub fn finish(self) -> (Summary, Served) {
        let mut totals = Totals::default();
        for group in self.totals.iter().flatten() {
            totals.merge(group);
        }
        let summary = totals.summary(None, self.started.elapsed().as_millis() as u64);
        self.succeeded(&summary, totals.reward_mean());
        (summary, self.served)
    }

    /// Waits for every group and answers them whole, in request order.
    pub async fn collect(mut self) -> Result<RolloutResponse, ApiError> {
        let mut finished: Vec<Option<FinishedGroup>> = self.groups.iter().map(|_| None).collect();
        while let Some((index, group)) = self.next_finished().await? {
            finished[index] = Some(group);
        }
        let s = &self.served;
        let (groups, summary, totals) = assemble(
            finished.into_iter().flatten().collect(),
            &s.stats,
            s.advantage,
            s.weights_version,
            self.started.elapsed().as_millis() as u64,
        );
        for g in &groups {
            metrics::group_served(g);
        }
        self.succeeded(&summary, totals.reward_mean());
        Ok(RolloutResponse {
            served: self.served,
            groups,
            summary,
        })
    }

    fn succeeded(&self, summary: &Summary, reward_mean: Option<f64>) {
        let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(self.started));
        metrics::request_succeeded(
            summary,
            reward_mean,
            since(self.first_entered).unwrap_or_default(),
            since(self.first_token),
        );
    }
}
