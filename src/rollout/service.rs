//! The rollout service behind `POST /rollouts`: admission ([`super::admission`]), then for each
//! request its steps: tokenization ([`super::request::tokenize`]), one engine sequence per
//! sample, and the request's answer as its samples finish ([`Running`]).
//!
//! Sequences take permits of a fair semaphore of `min(max_running_sequences, engine batch)`
//! before they reach the engine, so waiting sequences queue here, in arrival order, and a
//! cancelled request never reaches the engine. Each sequence runs in a task owned by the
//! request's `JoinSet`: when the request is dropped (the client went away, whole or streamed)
//! the tasks are aborted and their engine futures dropped. Weight swaps and pauses are published
//! to every sample task, which follows them as the swap's `in_flight` policy or the pause's mode
//! says ([`super::in_flight`]); a request that starts while generation is paused waits for the
//! resume before its first sample.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::admission::{Admission, Gate, Started, StartedGuard};
use super::in_flight::{self, Generated, Live, Paused, Switch};
use super::request::{tokenize, TokenizedRollout, ValidRollout};
use super::rewards::{score, RewardValues};
use super::running::{PendingGroup, Running, SampleDone};
use crate::api::error::ApiError;
use crate::api::rollouts::{RolloutResponse, Served};
use crate::api::weights::{InFlight, PauseMode};
use crate::engine::settings::SamplerKind;
use crate::engine::{Drawing, Engine, MaskBudget, SequenceRequest};
use crate::stats::distribution::{NucleusParams, Truncation};
use crate::stats::sampling::{DrawKey, TokenSampler};
use crate::telemetry::metrics::{self, SequenceGauge};

/// What a [`RolloutService`] is built with: its part of the server's settings.
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    /// Who draws the tokens.
    pub sampler: SamplerKind,
    /// Sequences the engine runs at once; more wait in the service's queue.
    pub max_running_sequences: usize,
    /// Requests admitted at once (running or queued); beyond this, `overloaded`.
    pub max_requests: usize,
    /// Token ids the sampling masks of one request may hold in all.
    pub max_mask_ids: u64,
    /// The rewards of a correct and of any other sample.
    pub rewards: RewardValues,
}

/// Serves rollout requests on the live engine.
pub struct RolloutService {
    /// The live engine, and the policy of the swap that made it live; every sample task
    /// watches it.
    switches: watch::Sender<Switch>,
    sampler: SamplerKind,
    gate: Gate,
    sequences: Arc<Semaphore>,
    sequence_slots: usize,
    /// Requests tokenizing at once: at most one per core, so admitted requests with long text
    /// prompts cannot take every blocking thread and all the memory tokenizing at once.
    tokenizing: Semaphore,
    rewards: RewardValues,
    verifier: Arc<verifier::Config>,
    max_mask_ids: u64,
    /// Requests past the pause gate and not yet answered (a pause under `wait` waits for
    /// them).
    started: Started,
}

impl RolloutService {
    /// A service over `engine` with the limits of `settings`.
    pub fn new(engine: Arc<dyn Engine>, settings: &ServiceSettings) -> Self {
        let sequence_slots = settings
            .max_running_sequences
            .min(engine.info().max_batch)
            .max(1);
        Self {
            sequences: Arc::new(Semaphore::new(sequence_slots)),
            sequence_slots,
            tokenizing: Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            ),
            switches: watch::Sender::new(Switch::first(Live { engine, version: 0 })),
            sampler: settings.sampler,
            gate: Gate::new(settings.max_requests),
            rewards: settings.rewards,
            verifier: Arc::new(verifier::Config::default()),
            max_mask_ids: settings.max_mask_ids,
            started: Started::default(),
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

    /// Pauses generation under `mode` ([`PauseMode`]); a pause in force changes to `mode`.
    /// Returns at once; [`RolloutService::drained`] waits for the requests already started.
    pub fn pause(&self, mode: PauseMode) {
        self.switches.send_modify(|switch| {
            switch.pause(mode);
            metrics::paused(true);
        });
        tracing::info!(mode = mode.as_str(), "generation paused");
    }

    /// Generates again: the requests waiting start, the frozen samples go on.
    pub fn resume(&self) {
        let mut was = None;
        self.switches.send_modify(|switch| {
            was = switch.paused.mode;
            switch.resume();
            metrics::paused(false);
        });
        if was.is_some() {
            tracing::info!("generation resumed");
        }
    }

    /// Stops every sample started so far, with what it drew (as a pause under `abort`), and
    /// leaves the pause as it is: SGLang's `abort_request {abort_all}`.
    pub fn abort_all(&self) {
        self.switches.send_modify(Switch::abort_all);
        tracing::info!("every running sample aborted");
    }

    /// The pause in force, if any.
    pub fn paused(&self) -> Option<PauseMode> {
        self.switches.borrow().paused.mode
    }

    /// Waits until no request that started before the pause `mode` in force is still running
    /// (those waiting for the resume have not started), or until that pause is lifted or
    /// changed (then requests start again, and waiting for none would never end).
    pub async fn drained(&self, mode: PauseMode) {
        let mut switches = self.switches.subscribe();
        tokio::select! {
            _ = self.started.none() => {}
            _ = switches.wait_for(|switch| switch.paused.mode != Some(mode)) => {}
        }
    }

    /// Admits a request, or answers overloaded at once.
    pub fn admit(&self) -> Result<Admission, ApiError> {
        self.gate.admit()
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
                alternatives: req.top_logprobs,
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
        if req.top_logprobs > 0 && matches!(self.sampler, SamplerKind::Engine) {
            return Err(ApiError::Invalid(
                "top_logprobs needs entroll's sampler: this server draws with the engine's \
                 (sampler = engine), which measures nothing"
                    .into(),
            ));
        }
        let turn =
            self.tokenizing.acquire().await.map_err(|_| {
                ApiError::Internal("the tokenization queue is closed (a bug)".into())
            })?;
        let TokenizedRollout {
            request,
            prompt_ids,
        } = tokenize(req, self.live().engine.as_ref()).await?;
        drop(turn);
        // Taken after tokenization and any pause, so that an update swapped in meanwhile serves
        // the request from its start (same architecture, same vocabulary) rather than stopping
        // it at once.
        let (live, since, started_guard) = self.unpaused().await;
        let mask_budget = MaskBudget::new(self.max_mask_ids);
        let answer_aborted = request.answer_aborted;
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
                        mask_budget: mask_budget.clone(),
                    },
                    gold: p.answer.clone(),
                };
                tasks.spawn(self.sample_task(sequence, live.clone(), since, answer_aborted));
            }
            groups.push(PendingGroup::new(
                p.id.clone(),
                ids,
                p.answer.is_some(),
                p.group_size,
            ));
        }
        let info = live.engine.info();
        let served = Served {
            model: info.id.clone(),
            vocab_size: info.vocab_size,
            weights_version: live.version,
            sampling: request.sampling,
            stats: request.stats,
            advantage: request.advantage,
        };
        Ok(Running::new(
            served,
            groups,
            tasks,
            started,
            (admission, started_guard),
            answer_aborted,
        ))
    }

    /// Waits until generation is not paused; then the engine serving new requests, the pauses
    /// so far (the samples started now follow only later ones), and the request's mark among
    /// the started ones, taken together.
    async fn unpaused(&self) -> (Live, Paused, StartedGuard) {
        let mut switches = self.switches.subscribe();
        let switch = switches
            .wait_for(|switch| switch.paused.mode.is_none())
            .await
            .expect("the service holds the sender");
        (switch.live.clone(), switch.paused, self.started.enter())
    }

    /// One sample: waits for a sequence slot (the fair queue), generates on `live` and the
    /// weights that swaps move it to ([`in_flight::generate`]), and verifies the answer off
    /// the executor, overlapping the generation of the other samples. A swap or a pause under
    /// `abort` (after `since`, the pauses its request started after) stops it, waiting or running,
    /// with what it drew; a stopped sample is scored only if its request answers it
    /// (`answer_aborted`).
    fn sample_task(
        &self,
        sequence: Sequence,
        live: Live,
        since: Paused,
        answer_aborted: bool,
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
                why = in_flight::stopped(&mut switches, live.version, &since), if follows => {
                    let generated = Generated::stopped_before_start(live.version, why);
                    let output = (generated, None);
                    return Ok(SampleDone { prompt, sample, output, entered: None });
                }
            };
            let entered = Instant::now();
            gauge.run(capacity - slots.available_permits() - 1);
            let prompt_len = sequence.request.prompt.len();
            let generated =
                in_flight::generate(live, since, sequence.request, &mut switches).await?;
            let length = generated.output.length;
            metrics::sequence_finished(prompt_len, length, entered.elapsed());
            drop((slot, gauge));
            let scored = generated.stopped.is_none() || answer_aborted;
            let score = match sequence.gold.filter(|_| scored) {
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
