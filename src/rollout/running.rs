//! A started request ([`Running`]): its samples' tasks, the regrouping of finished samples into
//! groups, and the assembly of the answer, whole ([`Running::collect`]) or group by group
//! ([`Running::next_group`], then [`Running::finish`]), with the metrics of what it answered.
//! When an update or a pause under `abort` stopped a sample, the request fails with what every
//! group not handed out drew, unless it answers such samples as they are (`answer_aborted`).

use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;

use super::admission::{Admission, StartedGuard};
use super::assemble::{assemble, assemble_group, FinishedGroup, Totals};
use super::in_flight::{Generated, Stopped};
use super::rewards::Score;
use crate::api::error::{ApiError, PartialGroup, PartialSample};
use crate::api::rollouts::{Group, RolloutResponse, Served, Summary};
use crate::telemetry::metrics::{self, ServedSample, TokenMeans};

/// A sample's tokens and its verifier score (when its prompt has a gold answer and the sample
/// was not aborted).
pub(super) type ScoredOutput = (Generated, Option<Score>);

/// A finished sample task.
pub(super) struct SampleDone {
    /// The prompt it belongs to.
    pub(super) prompt: usize,
    /// Its index in the prompt's group.
    pub(super) sample: usize,
    /// What it drew, and its score.
    pub(super) output: ScoredOutput,
    /// When it got its sequence slot (never, if an update aborted it before).
    pub(super) entered: Option<Instant>,
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
    /// Set when an update or a pause under `abort` stopped a sample the request does not
    /// answer.
    stopped: Option<Stopped>,
    /// Answer stopped samples as they are instead of failing.
    answer_aborted: bool,
    first_entered: Option<Instant>,
    first_token: Option<Instant>,
    started: Instant,
    /// Each group's sums, once `next_group` handed it out.
    totals: Vec<Option<Totals>>,
    _admission: (Admission, StartedGuard),
}

/// A prompt's samples as they finish.
pub(super) struct PendingGroup {
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
    /// The group of prompt `id`, waiting for its `group_size` samples.
    pub(super) fn new(
        id: String,
        prompt_ids: Arc<[u32]>,
        rewarded: bool,
        group_size: usize,
    ) -> Self {
        Self {
            id,
            prompt_ids,
            rewarded,
            outputs: vec![None; group_size],
            waiting: group_size,
            handed_out: false,
        }
    }

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
    /// A request answered as `served`, whose samples run as `tasks` and complete `groups`.
    pub(super) fn new(
        served: Served,
        groups: Vec<PendingGroup>,
        tasks: JoinSet<Result<SampleDone, ApiError>>,
        started: Instant,
        admission: (Admission, StartedGuard),
        answer_aborted: bool,
    ) -> Self {
        Self {
            served,
            ready: groups
                .iter()
                .enumerate()
                .filter(|(_, g)| g.waiting == 0)
                .map(|(i, _)| i)
                .collect(),
            totals: groups.iter().map(|_| None).collect(),
            groups,
            tasks,
            stopped: None,
            answer_aborted,
            first_entered: None,
            first_token: None,
            started,
            _admission: admission,
        }
    }

    /// The model, weights version and effective parameters of the answer.
    pub fn served(&self) -> &Served {
        &self.served
    }

    /// The index of the next group whose samples are all done, in completion order; `None`
    /// once every sample is done. When an update or a pause under `abort` stopped a sample (and
    /// the request does not answer such samples), waits for every other sample (the same cause
    /// stops them too) and fails with what the groups not handed out drew.
    async fn next_done(&mut self) -> Result<Option<usize>, ApiError> {
        loop {
            if self.stopped.is_none() {
                if let Some(index) = self.ready.pop() {
                    return Ok(Some(index));
                }
            }
            let Some(joined) = self.tasks.join_next().await else {
                let partial = || {
                    self.groups
                        .iter()
                        .filter(|g| !g.handed_out)
                        .map(PendingGroup::partial)
                        .collect()
                };
                return match self.stopped {
                    Some(Stopped::Updated { to }) => Err(ApiError::WeightsChanged {
                        from: self.served.weights_version,
                        to,
                        partial: partial(),
                    }),
                    Some(Stopped::Paused) => Err(ApiError::Aborted { partial: partial() }),
                    None => Ok(None),
                };
            };
            let done = joined.map_err(|e| {
                // A panic's text is for the log: it may name the server's internals.
                tracing::error!(error = ?e.to_string(), "a sequence task failed");
                ApiError::Engine(if e.is_panic() {
                    "a sequence task panicked (a bug); the server's log has the details".into()
                } else {
                    "a sequence task was cancelled".into()
                })
            })??;
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
        if let Some(why) = done.output.0.stopped.filter(|_| !self.answer_aborted) {
            self.stopped = Some(self.stopped.map_or(why, |was| was.or(why)));
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
        record_served(&group);
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
            record_served(g);
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
        let means = (summary.tokens > 0).then_some(TokenMeans {
            entropy: summary.entropy_mean,
            top_p_entropy: summary.top_p_entropy_mean,
            siren_anchor: summary.siren_anchor,
        });
        metrics::request_succeeded(
            summary.elapsed_ms,
            means,
            reward_mean,
            since(self.first_entered).unwrap_or_default(),
            since(self.first_token),
        );
    }
}

/// Records an answered group's statistics and rewards ([`metrics::group_served`]).
fn record_served(group: &Group) {
    let samples = group.samples.iter().map(|s| ServedSample {
        entropy: &s.entropy,
        top_p_entropy: &s.top_p_entropy,
        top_p_size: &s.top_p_size,
        entropy_sum: s.entropy_sum,
        length: s.length,
        peak_count: s.peak_count,
        verdict: s.verdict,
    });
    metrics::group_served(samples, group.pass_rate.zip(group.all_equal));
}
