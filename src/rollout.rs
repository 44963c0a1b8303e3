//! The rollout service behind `POST /rollouts`: admission control, tokenization, one engine
//! sequence per sample, and assembly of the response.
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
use crate::validation::{check_prompt_tokens, ValidRollout};

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

    /// Runs an admitted, validated request to completion.
    pub async fn run(
        &self,
        req: ValidRollout,
        _admission: Admission<'_>,
    ) -> Result<RolloutResponse, ApiError> {
        let started = Instant::now();
        let live = self.live();
        let info = live.engine.info();
        let mut prompts = Vec::with_capacity(req.prompts.len());
        for (i, p) in req.prompts.iter().enumerate() {
            let ids = live.engine.tokenize(&p.input).await?;
            check_prompt_tokens(i, &ids, info, req.sampling.max_tokens)?;
            prompts.push(Arc::<[u32]>::from(ids));
        }

        let mut tasks = JoinSet::new();
        for (pi, (p, ids)) in req.prompts.iter().zip(&prompts).enumerate() {
            for si in 0..p.group_size {
                let request = SequenceRequest {
                    prompt: ids.clone(),
                    max_tokens: req.sampling.max_tokens,
                    stop: req.sampling.stop.clone(),
                    drawing: self.drawing(&req, pi as u32, si as u32),
                };
                let engine = live.engine.clone();
                let (slots, capacity) = (self.sequences.clone(), self.sequence_slots);
                let gold = p.answer.clone();
                let (values, verifier) = (self.rewards, self.verifier.clone());
                tasks.spawn(async move {
                    let mut gauge = SequenceGauge::waiting();
                    let slot = slots.clone().acquire_owned().await.map_err(|_| {
                        ApiError::Engine("the sequence scheduler has shut down".into())
                    })?;
                    let entered = Instant::now();
                    gauge.run(capacity - slots.available_permits() - 1);
                    let prompt_len = request.prompt.len();
                    let out = engine.generate(request).await?;
                    metrics::sequence_finished(prompt_len, out.length, entered.elapsed());
                    drop((slot, gauge));
                    // Verification is CPU work with a time bound: off the executor, and
                    // overlapping the generation of the other samples.
                    let scored = match gold {
                        Some(gold) => {
                            let text = out.text.clone();
                            let s = tokio::task::spawn_blocking(move || {
                                score(&gold, &text, values, &verifier)
                            })
                            .await
                            .map_err(|e| ApiError::Engine(format!("verifier failed: {e}")))?;
                            Some(s)
                        }
                        None => None,
                    };
                    Ok::<_, ApiError>((pi, si, out, scored, entered))
                });
            }
        }

        let mut outputs: Vec<Vec<Option<ScoredOutput>>> = req
            .prompts
            .iter()
            .map(|p| vec![None; p.group_size])
            .collect();
        let (mut first_entered, mut first_token): (Option<Instant>, Option<Instant>) = (None, None);
        while let Some(joined) = tasks.join_next().await {
            let (pi, si, out, scored, entered) =
                joined.map_err(|e| ApiError::Engine(format!("sequence task failed: {e}")))??;
            first_entered = Some(first_entered.map_or(entered, |t| t.min(entered)));
            if let Some(t) = out.first_token_at {
                first_token = Some(first_token.map_or(t, |f| f.min(t)));
            }
            outputs[pi][si] = Some((out, scored));
        }

        let finished = req
            .prompts
            .into_iter()
            .zip(prompts)
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
            .collect();
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let (groups, summary) = assemble(
            finished,
            &req.stats,
            req.advantage,
            live.version,
            elapsed_ms,
        );
        let response = RolloutResponse {
            model: info.id.clone(),
            vocab_size: info.vocab_size,
            weights_version: live.version,
            sampling: req.sampling,
            stats: req.stats,
            advantage: req.advantage,
            groups,
            summary,
        };
        let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(started));
        metrics::request_succeeded(
            &response,
            since(first_entered).unwrap_or_default(),
            since(first_token),
        );
        Ok(response)
    }
}
