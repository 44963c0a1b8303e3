//! What a weight update does to the samples in flight: they `finish` on the weights they
//! started with (the default), `abort` at their next token with what they drew, or `continue`
//! under the new weights from their next token.
//!
//! The service publishes every update as a [`Switch`] on a watch channel; each sample follows
//! it through [`generate`]. A sample that must stop is interrupted in the engine
//! ([`crate::engine::Interrupt`]), which answers with the tokens drawn so far; under
//! `continue` they are sent to the new engine as [`SequenceRequest::drawn`], so the draw goes on
//! at the same index with the same keys and stop strings are checked across the switch, and
//! the sample records which version drew which tokens ([`VersionRuns`]). Samples drawn by the
//! engine's own sampler (`sampler = "engine"`, no statistics) always finish on their version.

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::engine::{
    Drawing, EngineError, FinishReason, Interrupt, SequenceOutput, SequenceRequest,
};
use crate::metrics;
use crate::rollout::Live;

/// What a weight update does to the samples running on the weights it replaces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum InFlight {
    /// They finish on the weights they started with: every request runs on one version.
    #[default]
    Finish,
    /// They stop at their next token; their request is answered 409 `weights_changed` with
    /// the tokens each sample drew, so a client can retry it or resume the samples.
    Abort,
    /// They go on under the new weights from their next token; each sample reports which
    /// version drew which of its tokens.
    Continue,
}

impl InFlight {
    /// The policy's name in the API (`finish`, `abort`, `continue`).
    pub fn as_str(self) -> &'static str {
        match self {
            InFlight::Finish => "finish",
            InFlight::Abort => "abort",
            InFlight::Continue => "continue",
        }
    }
}

/// The engine that serves new requests, and what the update that made it live asks of the
/// samples running on older weights.
#[derive(Clone)]
pub struct Switch {
    /// The engine and its weights version.
    pub live: Live,
    /// What happens to samples running on an older version.
    pub in_flight: InFlight,
}

impl Switch {
    /// Whether this switch stops a sample running on `version` (`abort` or `continue` to a
    /// newer version).
    fn stops(&self, version: u64) -> bool {
        self.live.version > version && self.in_flight != InFlight::Finish
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

/// A sample's tokens, with the versions that drew them.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The whole sample: its tokens, masks and length across every version; its text and
    /// finish reason from the last.
    pub output: SequenceOutput,
    /// Which version drew which tokens.
    pub versions: VersionRuns,
    /// `Some(v)` when an update to version `v` under `abort` stopped the sample: `output` holds
    /// what it drew until then (`finish_reason: abort`).
    pub aborted_by: Option<u64>,
}

impl Generated {
    /// A sample that an update to version `by` under `abort` stopped before it reached the
    /// engine of version `version`: nothing drawn.
    pub fn aborted_before_start(version: u64, by: u64) -> Self {
        metrics::sample_interrupted(InFlight::Abort.as_str());
        Self {
            output: nothing_drawn(),
            versions: VersionRuns::starting(version),
            aborted_by: Some(by),
        }
    }
}

/// An output with nothing drawn, for a sample stopped before it reached the engine.
fn nothing_drawn() -> SequenceOutput {
    SequenceOutput {
        tokens: Vec::new(),
        masks: None,
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
    whole.masks = match (whole.masks, later.masks) {
        (Some(mut a), Some(b)) => {
            a.extend(b);
            Some(a)
        }
        (a, b) => a.or(b),
    };
    whole.length += later.length;
    whole.text = later.text;
    whole.finish_reason = later.finish_reason;
    whole.first_token_at = whole.first_token_at.or(later.first_token_at);
    whole
}

/// Whether an update can stop a sample drawn this way: only entroll's sampler records the
/// tokens a stopped sample drew.
pub fn interruptible(request: &SequenceRequest) -> bool {
    matches!(request.drawing, Drawing::Entroll(_))
}

/// Waits until an update to a version above `version` asks the samples in flight to `abort`,
/// and returns that version (never, if none does): a sample still waiting for its turn stops
/// then.
pub async fn aborted(switches: &mut watch::Receiver<Switch>, version: u64) -> u64 {
    loop {
        {
            let switch = switches.borrow_and_update();
            if switch.stops(version) && switch.in_flight == InFlight::Abort {
                return switch.live.version;
            }
        }
        if switches.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Generates `request`, started on `live`, following the updates published on `switches`: a
/// sample stopped by an update under `continue` goes on on the new engine from the token it
/// reached, one stopped under `abort` ends with what it drew.
pub async fn generate(
    mut live: Live,
    mut request: SequenceRequest,
    switches: &mut watch::Receiver<Switch>,
) -> Result<Generated, EngineError> {
    let follows = interruptible(&request);
    let mut versions = VersionRuns::starting(live.version);
    let mut so_far: Option<SequenceOutput> = None;
    let mut pending: Option<Switch> = None;
    loop {
        // The update that interrupted the last part, then the latest one: an update published
        // before this part starts applies at once.
        let latest = follows.then(|| switches.borrow_and_update().clone());
        for switch in pending.take().into_iter().chain(latest) {
            if switch.stops(live.version) {
                let drawn = so_far.as_ref().map_or(0, |o| o.length);
                metrics::sample_interrupted(switch.in_flight.as_str());
                if switch.in_flight == InFlight::Abort {
                    return Ok(Generated {
                        output: so_far.unwrap_or_else(nothing_drawn),
                        versions,
                        aborted_by: Some(switch.live.version),
                    });
                }
                versions.switch(switch.live.version, drawn);
                live = switch.live;
            }
        }
        request.interrupt = Interrupt::default();
        let output = {
            let mut run = std::pin::pin!(live.engine.generate(request.clone()));
            let mut watching = follows;
            loop {
                tokio::select! {
                    output = &mut run => break output?,
                    changed = switches.changed(), if watching => {
                        if changed.is_err() {
                            watching = false;
                            continue;
                        }
                        let switch = switches.borrow_and_update().clone();
                        if switch.stops(live.version) {
                            request.interrupt.set();
                            pending = Some(switch);
                            watching = false;
                        }
                    }
                }
            }
        };
        let whole = append(so_far.take(), output);
        // A sample that ended before the engine saw its interruption ends as it is.
        if whole.finish_reason != FinishReason::Abort || pending.is_none() {
            return Ok(Generated {
                output: whole,
                versions,
                aborted_by: None,
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
            .map(|&token| crate::sampling::TokenRecord {
                token,
                ..Default::default()
            })
            .collect::<Vec<_>>();
        SequenceOutput {
            masks: masked.then(|| vec![None; records.len()]),
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
        assert_eq!((whole.length, whole.text.as_str()), (3, "abc"));
        assert_eq!(whole.finish_reason, FinishReason::Stop);
        let alone = append(None, output(&[9], false, "z", FinishReason::Length));
        assert_eq!((alone.length, alone.masks.is_none()), (1, true));
    }
}
