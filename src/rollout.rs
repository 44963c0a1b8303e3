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
//! dropped. Weight swaps are published to every sample task, which follows them as the swap's
//! `in_flight` policy says ([`crate::in_flight`]).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::api::{Group, PartialGroup, PartialSample, RolloutResponse, Served, Summary};
use crate::assemble::{assemble, assemble_group, FinishedGroup, Totals};
use crate::config::{Config, SamplerKind};
use crate::engine::{Drawing, Engine, SequenceRequest};
use crate::error::ApiError;
use crate::in_flight::{self, Generated, InFlight, Switch};
use crate::metrics::{self, SequenceGauge};
use crate::rewards::{score, RewardValues, Score};
use crate::sampling::{DrawKey, TokenSampler};
use crate::stats::{NucleusParams, Truncation};
use crate::validation::{tokenize, TokenizedRollout, ValidRollout};

/// A sample's tokens and its verifier score (when its prompt has a gold answer and the sample
/// was not aborted).
type ScoredOutput = (Generated, Option<Score>);

/// The engine being served and the version of its weights. A request takes one snapshot when
/// it starts; its samples run on it unless a swap's `in_flight` policy moves or stops them.
#[derive(Clone)]
pub struct Live {
    /// The engine, with the weights loaded.
    pub engine: Arc<dyn Engine>,
    /// The weights version every sample it produces reports.
    pub version: u64,
}

/// Serves rollout requests on the live engine.
pub struct RolloutService {
    /// The live engine, and the policy of the swap that made it live; every sample task
    /// watches it.
    switches: watch::Sender<Switch>,
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
            switches: watch::Sender::new(Switch::first(Live { engine, version: 0 })),
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
        self.switches.borrow().live.clone()
    }

    /// Makes `next` serve every request that starts from now on; the samples running on older
    /// weights finish there, abort or move to `next`, as `in_flight` says. An engine is dropped
    /// after the last sample running on it.
    pub fn swap(&self, next: Live, in_flight: InFlight) {
        self.switches
            .send_modify(|switch| *switch = switch.then(next, in_flight));
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
        let TokenizedRollout {
            request,
            prompt_ids,
        } = tokenize(req, self.live().engine.as_ref()).await?;
        // Taken after tokenization, so that an update swapped in meanwhile serves the request
        // from its start (same architecture, same vocabulary) rather than stopping it at once.
        let live = self.live();
        let mut tasks = JoinSet::new();
        let mut groups = Vec::with_capacity(request.prompts.len());
        for (pi, (p, ids)) in request.prompts.iter().zip(prompt_ids).enumerate() {
            for si in 0..p.group_size {
                let sequence = Sequence {
                    prompt: pi,
                    sample: si,
                    request: SequenceRequest {
                        prompt: ids.clone(),
                        drawn: Arc::new([]),
                        max_tokens: request.sampling.max_tokens,
                        stop: request.sampling.stop.clone(),
                        drawing: self.drawing(&request, pi as u32, si as u32),
                        interrupt: Default::default(),
                    },
                    gold: p.answer.clone(),
                };
                tasks.spawn(self.sample_task(sequence, live.clone()));
            }
            groups.push(PendingGroup {
                id: p.id.clone(),
                prompt_ids: ids,
                rewarded: p.answer.is_some(),
                outputs: vec![None; p.group_size],
                waiting: p.group_size,
                handed_out: false,
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
            aborted_by: None,
            first_entered: None,
            first_token: None,
            started,
            _admission: admission,
        })
    }

    /// One sample: waits for a sequence slot (the fair queue), generates on `live` and the
    /// weights that swaps move it to ([`in_flight::generate`]), and verifies the answer off
    /// the executor, overlapping the generation of the other samples. A swap under `abort`
    /// stops it, waiting or running, with what it drew.
    fn sample_task(
        &self,
        sequence: Sequence,
        live: Live,
    ) -> impl std::future::Future<Output = Result<SampleDone, ApiError>> + Send + 'static {
        let (slots, capacity) = (self.sequences.clone(), self.sequence_slots);
        let (values, verifier) = (self.rewards, self.verifier.clone());
        let mut switches = self.switches.subscribe();
        async move {
            let (prompt, sample) = (sequence.prompt, sequence.sample);
            let follows = in_flight::interruptible(&sequence.request);
            let mut gauge = SequenceGauge::waiting();
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => slot.map_err(|_| {
                    ApiError::Engine("the sequence scheduler has shut down".into())
                })?,
                by = in_flight::aborted(&mut switches, live.version), if follows => {
                    let generated = Generated::aborted_before_start(live.version, by);
                    let output = (generated, None);
                    return Ok(SampleDone { prompt, sample, output, entered: None });
                }
            };
            let entered = Instant::now();
            gauge.run(capacity - slots.available_permits() - 1);
            let prompt_len = sequence.request.prompt.len();
            let generated = in_flight::generate(live, sequence.request, &mut switches).await?;
            let length = generated.output.length;
            metrics::sequence_finished(prompt_len, length, entered.elapsed());
            drop((slot, gauge));
            let score = match sequence.gold.filter(|_| generated.aborted_by.is_none()) {
                Some(gold) => {
                    let text = generated.output.text.clone();
                    let verdict =
                        tokio::task::spawn_blocking(move || score(&gold, &text, values, &verifier))
                            .await
                            .map_err(|e| ApiError::Engine(format!("verifier failed: {e}")))?;
                    Some(verdict)
                }
                None => None,
            };
            Ok(SampleDone {
                prompt,
                sample,
                output: (generated, score),
                entered: Some(entered),
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
    /// When it got its sequence slot (never, if an update aborted it before).
    entered: Option<Instant>,
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
    /// Set when an update under `abort` stopped a sample: the version it swapped in.
    aborted_by: Option<u64>,
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
    /// Whether it was answered (then an abort's `partial` leaves it out).
    handed_out: bool,
}

impl PendingGroup {
    /// The finished group, its samples in index order; it is handed out.
    fn finished(&mut self) -> FinishedGroup {
        self.handed_out = true;
        let (samples, scores): (Vec<Generated>, Vec<Option<Score>>) =
            self.outputs.drain(..).flatten().unzip();
        let (outputs, versions) = samples.into_iter().map(|g| (g.output, g.versions)).unzip();
        FinishedGroup {
            id: std::mem::take(&mut self.id),
            prompt_token_ids: self.prompt_ids.to_vec(),
            outputs,
            versions,
            scores: self
                .rewarded
                .then(|| scores.into_iter().flatten().collect()),
        }
    }

    /// What its samples drew, for an aborted request's answer.
    fn partial(&self) -> PartialGroup {
        PartialGroup {
            id: self.id.clone(),
            prompt_token_ids: self.prompt_ids.to_vec(),
            samples: self
                .outputs
                .iter()
                .enumerate()
                .filter_map(|(index, sample)| {
                    let (generated, _) = sample.as_ref()?;
                    Some(PartialSample {
                        index,
                        token_ids: generated.output.tokens.iter().map(|r| r.token).collect(),
                        text: generated.output.text.clone(),
                        finish_reason: generated.output.finish_reason,
                        weights_version: generated.versions.first(),
                        weights_versions: generated.versions.switched(),
                    })
                })
                .collect(),
        }
    }
}

impl Running {
    /// The model, weights version and effective parameters of the answer.
    pub fn served(&self) -> &Served {
        &self.served
    }

    /// The index of the next group whose samples are all done, in completion order; `None`
    /// once every sample is done. When an update under `abort` stopped a sample, waits for
    /// every other sample (the update stops them too) and fails with what the groups not
    /// handed out drew.
    async fn next_done(&mut self) -> Result<Option<usize>, ApiError> {
        loop {
            if self.aborted_by.is_none() {
                if let Some(index) = self.ready.pop() {
                    return Ok(Some(index));
                }
            }
            let Some(joined) = self.tasks.join_next().await else {
                return match self.aborted_by {
                    Some(to) => Err(ApiError::WeightsChanged {
                        from: self.served.weights_version,
                        to,
                        partial: self
                            .groups
                            .iter()
                            .filter(|g| !g.handed_out)
                            .map(PendingGroup::partial)
                            .collect(),
                    }),
                    None => Ok(None),
                };
            };
            let done =
                joined.map_err(|e| ApiError::Engine(format!("sequence task failed: {e}")))??;
            self.record(done);
        }
    }

    fn record(&mut self, done: SampleDone) {
        let earliest = |a: Option<Instant>, b: Instant| Some(a.map_or(b, |a| a.min(b)));
        if let Some(t) = done.entered {
            self.first_entered = earliest(self.first_entered, t);
        }
        if let Some(t) = done.output.0.output.first_token_at {
            self.first_token = earliest(self.first_token, t);
        }
        if let Some(by) = done.output.0.aborted_by {
            self.aborted_by = self.aborted_by.max(Some(by));
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
        let Some(index) = self.next_done().await? else {
            return Ok(None);
        };
        let finished = self.groups[index].finished();
        let s = &self.served;
        let group = assemble_group(finished, &s.stats, s.advantage, None);
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
        while self.next_done().await?.is_some() {}
        let finished = self.groups.iter_mut().map(PendingGroup::finished).collect();
        let s = &self.served;
        let (groups, summary, totals) = assemble(
            finished,
            &s.stats,
            s.advantage,
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
