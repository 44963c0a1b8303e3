//! What a weight update does to the samples in flight: they `finish` on the weights they
//! started with (the default), `abort` at their next token with what they drew, or `continue`
//! under the new weights from their next token.
//!
//! The service publishes every update as a [`Switch`] on a watch channel; each sample follows
//! it through [`generate`]. A switch holds what every update so far asks of older versions,
//! so a sample that sees only the latest one (the channel keeps no history) still does what
//! each update asked. A sample that must stop is interrupted in the engine
//! ([`crate::engine::Interrupt`]), which answers with the tokens drawn so far; under
//! `continue` they are sent to the new engine as [`SequenceRequest::drawn`], so the draw goes on
//! at the same index with the same keys and stop strings are checked across the switch, and
//! the sample records which version drew which tokens ([`VersionRuns`]). Samples drawn by the
//! engine's own sampler (`sampler = "engine"`, no statistics) always finish on their version.
//! The policy's values ([`InFlight`]) are part of the wire format (`api::weights`).
//!
//! A pause ([`Paused`]) travels on the same channel: under `keep` a running sample is
//! interrupted the same way, waits for the resume and goes on on the weights served then; under
//! `abort` every sample started before the pause ends with what it drew; under `wait` the
//! samples run on. Requests that start while paused wait before their first sample
//! ([`crate::rollout::service::RolloutService::start`]).

use std::sync::Arc;

use tokio::sync::watch;

use crate::api::weights::{InFlight, PauseMode};
use crate::engine::{
    Drawing, Engine, EngineError, FinishReason, Interrupt, SequenceOutput, SequenceRequest,
};
use crate::telemetry::metrics;

/// The engine being served and the version of its weights. A request takes one snapshot when
/// it starts; its samples run on it unless a swap's `in_flight` policy moves or stops them.
#[derive(Clone)]
pub struct Live {
    /// The engine, with the weights loaded.
    pub engine: Arc<dyn Engine>,
    /// The weights version every sample it produces reports.
    pub version: u64,
}

/// The engine that serves new requests, and what the updates so far ask of the samples
/// running on older weights.
#[derive(Clone)]
pub struct Switch {
    /// The engine and its weights version.
    pub live: Live,
    /// What the updates so far ask of older versions.
    asked: Asked,
    /// Whether generation is paused, and how.
    pub paused: Paused,
}

/// Whether generation is paused (and how), and how many pauses under `abort` and `keep` there
/// were: a sample stops when more of the first came than when its request started, and goes on
/// on the weights served at the resume when more of the second did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Paused {
    /// The pause in force, if any.
    pub mode: Option<PauseMode>,
    /// Pauses under `abort` so far (and `abort_all`s).
    pub aborts: u64,
    /// Pauses under `keep` so far.
    pub keeps: u64,
}

impl Switch {
    /// The first engine served: nothing asked of anyone yet, not paused.
    pub fn first(live: Live) -> Self {
        Self {
            live,
            asked: Asked::default(),
            paused: Paused::default(),
        }
    }

    /// The switch that makes `next` live after this one, under `in_flight`; a pause stays.
    pub fn then(&self, next: Live, in_flight: InFlight) -> Self {
        Self {
            asked: self.asked.then(next.version, in_flight),
            live: next,
            paused: self.paused,
        }
    }

    /// This switch, paused under `mode` (a pause in force changes to `mode`).
    pub fn pause(&mut self, mode: PauseMode) {
        self.paused.mode = Some(mode);
        match mode {
            PauseMode::Abort => self.paused.aborts += 1,
            PauseMode::Keep => self.paused.keeps += 1,
            PauseMode::Wait => {}
        }
    }

    /// This switch, with every sample started so far stopped (as by a pause under `abort`),
    /// paused or not as it was.
    pub fn abort_all(&mut self) {
        self.paused.aborts += 1;
    }

    /// This switch, generating again.
    pub fn resume(&mut self) {
        self.paused.mode = None;
    }

    /// Why a sample on `version`, started under `since`, must stop now, if it must.
    fn stops(&self, version: u64, since: &Paused) -> Option<Stopped> {
        if self.paused.aborts > since.aborts {
            Some(Stopped::Paused)
        } else if self.asks(version) == Some(InFlight::Abort) {
            Some(Stopped::Updated {
                to: self.live.version,
            })
        } else {
            None
        }
    }

    /// Whether a running sample on `version` (started under `since`) must leave the engine
    /// now: to stop, to freeze, or to move to newer weights.
    fn interrupts(&self, version: u64, since: &Paused) -> bool {
        self.stops(version, since).is_some()
            || self.paused.mode == Some(PauseMode::Keep)
            || self.asks(version).is_some()
    }

    /// What the updates so far ask of a sample running on `version` ([`Asked::of`]).
    pub fn asks(&self, version: u64) -> Option<InFlight> {
        self.asked.of(version)
    }
}

/// What every update so far asks of the samples on the versions it replaced, kept as two
/// bounds so that it does not matter which updates a sample saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Asked {
    /// Samples on a version below this abort: the highest version an `abort` update made live.
    abort_below: u64,
    /// Samples on a version below this (and not aborted) move to the live weights: the highest
    /// version a `continue` update made live.
    move_below: u64,
}

impl Asked {
    /// After an update that makes `version` live under `in_flight`.
    pub fn then(self, version: u64, in_flight: InFlight) -> Self {
        match in_flight {
            InFlight::Finish => self,
            InFlight::Abort => Self {
                abort_below: version,
                ..self
            },
            InFlight::Continue => Self {
                move_below: version,
                ..self
            },
        }
    }

    /// What is asked of a sample running on `version`: `Some(Abort)` if an update under
    /// `abort` replaced it, else `Some(Continue)` if one under `continue` did, else nothing (it
    /// finishes there).
    pub fn of(self, version: u64) -> Option<InFlight> {
        if version < self.abort_below {
            Some(InFlight::Abort)
        } else if version < self.move_below {
            Some(InFlight::Continue)
        } else {
            None
        }
    }
}

/// Which weights version drew which of a sample's tokens: runs of `(version, from_token)`,
/// from token 0, in token order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRuns(Vec<(u64, usize)>);

impl VersionRuns {
    /// Every token drawn by `version` (until a switch).
    pub fn starting(version: u64) -> Self {
        Self(vec![(version, 0)])
    }

    /// From token `from` on, `version` draws. A version that drew nothing is not kept.
    pub fn switch(&mut self, version: u64, from: usize) {
        match self.0.last_mut() {
            Some(last) if last.1 == from => last.0 = version,
            _ => self.0.push((version, from)),
        }
    }

    /// The version that drew the first token.
    pub fn first(&self) -> u64 {
        self.0[0].0
    }

    /// The runs, when more than one version drew tokens; `None` when one did (the one
    /// [`VersionRuns::first`] names).
    pub fn switched(&self) -> Option<Vec<(u64, usize)>> {
        (self.0.len() > 1).then(|| self.0.clone())
    }
}

/// What stopped a sample before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// An update to version `to` under `abort`.
    Updated {
        /// The version it made live.
        to: u64,
    },
    /// A pause under `abort`.
    Paused,
}

impl Stopped {
    /// The cause a request reports when its samples stopped for `self` and `other`: an update
    /// (the latest) over a pause.
    pub fn or(self, other: Stopped) -> Stopped {
        match (self, other) {
            (Stopped::Updated { to: a }, Stopped::Updated { to: b }) => {
                Stopped::Updated { to: a.max(b) }
            }
            (Stopped::Paused, b) => b,
            (a, Stopped::Paused) => a,
        }
    }

    fn metric(self) -> &'static str {
        match self {
            Stopped::Updated { .. } => InFlight::Abort.as_str(),
            Stopped::Paused => "pause",
        }
    }
}

/// A sample's tokens, with the versions that drew them.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The whole sample: its tokens, masks and length across every version; its text and
    /// finish reason from the last.
    pub output: SequenceOutput,
    /// Which version drew which tokens.
    pub versions: VersionRuns,
    /// What stopped the sample, if something did: `output` holds what it drew until then
    /// (`finish_reason: abort`).
    pub stopped: Option<Stopped>,
}

impl Generated {
    /// A sample stopped (`why`) before it reached the engine of version `version`: nothing
    /// drawn.
    pub fn stopped_before_start(version: u64, why: Stopped) -> Self {
        metrics::sample_interrupted(why.metric());
        Self {
            output: nothing_drawn(),
            versions: VersionRuns::starting(version),
            stopped: Some(why),
        }
    }
}

/// An output with nothing drawn, for a sample stopped before it reached the engine.
fn nothing_drawn() -> SequenceOutput {
    SequenceOutput {
        tokens: Vec::new(),
        masks: None,
        alternatives: None,
        length: 0,
        text: String::new(),
        finish_reason: FinishReason::Abort,
        first_token_at: None,
    }
}

/// `earlier` followed by `later`, the tokens `later` drew after `earlier`'s.
fn append(earlier: Option<SequenceOutput>, later: SequenceOutput) -> SequenceOutput {
    let Some(mut whole) = earlier else {
        return later;
    };
    whole.tokens.extend(later.tokens);
    whole.masks = joined(whole.masks, later.masks);
    whole.alternatives = joined(whole.alternatives, later.alternatives);
    whole.length += later.length;
    whole.text = later.text;
    whole.finish_reason = later.finish_reason;
    whole.first_token_at = whole.first_token_at.or(later.first_token_at);
    whole
}

/// Per-token lists of two parts, one after the other (either part's alone if the other has
/// none).
fn joined<T>(earlier: Option<Vec<T>>, later: Option<Vec<T>>) -> Option<Vec<T>> {
    match (earlier, later) {
        (Some(mut a), Some(b)) => {
            a.extend(b);
            Some(a)
        }
        (a, b) => a.or(b),
    }
}

/// Whether an update can stop a sample drawn this way: only entroll's sampler records the
/// tokens a stopped sample drew.
pub fn interruptible(request: &SequenceRequest) -> bool {
    matches!(request.drawing, Drawing::Entroll(_))
}

/// Waits until a sample on `version`, started under `since`, must stop (an update under
/// `abort` or a pause under `abort`), and says why (never, if nothing stops it): a sample still
/// waiting for its turn stops then.
pub async fn stopped(
    switches: &mut watch::Receiver<Switch>,
    version: u64,
    since: &Paused,
) -> Stopped {
    loop {
        if let Some(why) = switches.borrow_and_update().stops(version, since) {
            return why;
        }
        if switches.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Generates `request`, started on `live` under `since` (the pauses so far), following
/// what is published on `switches`: a sample stopped by an update under `continue` goes on on
/// the new engine from the token it reached; one frozen by a pause under `keep` waits for the
/// resume and goes on on the weights served then; one stopped by an update or a pause under
/// `abort` ends with what it drew.
pub async fn generate(
    mut live: Live,
    mut since: Paused,
    mut request: SequenceRequest,
    switches: &mut watch::Receiver<Switch>,
) -> Result<Generated, EngineError> {
    let follows = interruptible(&request);
    let mut versions = VersionRuns::starting(live.version);
    let mut so_far: Option<SequenceOutput> = None;
    loop {
        // What is asked of this sample: before it starts, and after it was interrupted.
        if follows {
            loop {
                let switch = switches.borrow_and_update().clone();
                if let Some(why) = switch.stops(live.version, &since) {
                    metrics::sample_interrupted(why.metric());
                    return Ok(Generated {
                        output: so_far.unwrap_or_else(nothing_drawn),
                        versions,
                        stopped: Some(why),
                    });
                }
                if switch.paused.mode == Some(PauseMode::Keep) {
                    if switches.changed().await.is_err() {
                        break;
                    }
                    continue;
                }
                // A sample a pause under `keep` froze (or found waiting) goes on on the weights
                // served at the resume, as one moved by an update under `continue`: counted, so
                // that a pause, an update and a resume all before it looked are not missed.
                let kept = switch.paused.keeps > since.keeps;
                since.keeps = switch.paused.keeps;
                let moves = switch.asks(live.version) == Some(InFlight::Continue)
                    || (kept && switch.live.version != live.version);
                if moves {
                    metrics::sample_interrupted(InFlight::Continue.as_str());
                    let drawn = so_far.as_ref().map_or(0, |o| o.length);
                    versions.switch(switch.live.version, drawn);
                    live = switch.live;
                }
                break;
            }
        }
        request.interrupt = Interrupt::default();
        let mut interrupted = false;
        let output = {
            let mut run = std::pin::pin!(live.engine.generate(request.clone()));
            let mut watching = follows;
            loop {
                tokio::select! {
                    output = &mut run => break output?,
                    changed = switches.changed(), if watching => {
                        if changed.is_err() {
                            watching = false;
                        } else if switches.borrow_and_update().interrupts(live.version, &since) {
                            request.interrupt.set();
                            interrupted = true;
                            watching = false;
                        }
                    }
                }
            }
        };
        let whole = append(so_far.take(), output);
        // A sample that ended before the engine saw its interruption ends as it is.
        if whole.finish_reason != FinishReason::Abort || !interrupted {
            return Ok(Generated {
                output: whole,
                versions,
                stopped: None,
            });
        }
        request.drawn = whole.tokens.iter().map(|r| r.token).collect();
        so_far = Some(whole);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_update_so_far_applies_whichever_one_a_sample_sees() {
        use InFlight::{Abort, Continue, Finish};
        let none = Asked::default();
        assert_eq!(none.of(0), None);
        // 1 under continue, then 2 under finish: a sample on 0 that sees only the second still
        // moves; one on 1 finishes there.
        let second = none.then(1, Continue);
        let third = second.then(2, Finish);
        assert_eq!(second.of(0), Some(Continue));
        assert_eq!(
            (third.of(0), third.of(1), third.of(2)),
            (Some(Continue), None, None)
        );
        // 3 under abort: every older version aborts, whatever came before.
        let fourth = third.then(3, Abort);
        for v in 0..3 {
            assert_eq!(fourth.of(v), Some(Abort), "version {v}");
        }
        assert_eq!(fourth.of(3), None);
        // 4 under continue: 3 moves, older ones still abort.
        let fifth = fourth.then(4, Continue);
        assert_eq!(
            (fifth.of(2), fifth.of(3), fifth.of(4)),
            (Some(Abort), Some(Continue), None)
        );
    }

    #[test]
    fn runs_keep_only_versions_that_drew_tokens() {
        let mut runs = VersionRuns::starting(3);
        assert_eq!((runs.first(), runs.switched()), (3, None));
        // Switched before drawing anything: version 3 drew nothing.
        runs.switch(4, 0);
        assert_eq!((runs.first(), runs.switched()), (4, None));
        runs.switch(5, 7);
        runs.switch(6, 7);
        runs.switch(8, 9);
        assert_eq!(runs.switched(), Some(vec![(4, 0), (6, 7), (8, 9)]));
        assert_eq!(runs.first(), 4);
    }

    fn output(tokens: &[u32], masked: bool, text: &str, finish: FinishReason) -> SequenceOutput {
        let records = tokens
            .iter()
            .map(|&token| crate::stats::sampling::TokenRecord {
                token,
                ..Default::default()
            })
            .collect::<Vec<_>>();
        SequenceOutput {
            masks: masked.then(|| vec![None; records.len()]),
            alternatives: masked.then(|| vec![Box::default(); records.len()]),
            length: records.len(),
            tokens: records,
            text: text.into(),
            finish_reason: finish,
            first_token_at: None,
        }
    }

    #[test]
    fn appended_parts_keep_every_token_and_the_last_part_s_ending() {
        let first = output(&[1, 2], true, "ab", FinishReason::Abort);
        let whole = append(Some(first), output(&[3], true, "abc", FinishReason::Stop));
        let ids: Vec<u32> = whole.tokens.iter().map(|r| r.token).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(whole.masks.as_ref().map(Vec::len), Some(3));
        assert_eq!(whole.alternatives.as_ref().map(Vec::len), Some(3));
        assert_eq!((whole.length, whole.text.as_str()), (3, "abc"));
        assert_eq!(whole.finish_reason, FinishReason::Stop);
        let alone = append(None, output(&[9], false, "z", FinishReason::Length));
        assert_eq!((alone.length, alone.masks.is_none()), (1, true));
    }
}
