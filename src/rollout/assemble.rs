//! Builds the `/rollouts` response from finished sequences: per-token arrays, peak flags,
//! per-sample sums, per-group fields and the request summary (`docs/statistics.md`).
//! Pure functions over engine outputs, so every rule is testable without a model.

use super::in_flight::VersionRuns;
use super::rewards::{group_stats, Score};
use crate::api::rollouts::{
    AdvantageSpec, FinishReason, Group, PeakOn, PeakScope, Sample, StatsParams, Summary, TopLogprob,
};
use crate::engine::SequenceOutput;
use crate::stats::mask_codec;
use crate::stats::quantile::quantile_sorted;

/// One prompt's finished sequences, in sample order.
pub struct FinishedGroup {
    /// Prompt id.
    pub id: String,
    /// Prompt tokens.
    pub prompt_token_ids: Vec<u32>,
    /// The G outputs, index order.
    pub outputs: Vec<SequenceOutput>,
    /// The weights versions that drew each output's tokens, index order.
    pub versions: Vec<VersionRuns>,
    /// The verifier's scores, index order, when the prompt has a gold answer.
    pub scores: Option<Vec<Score>>,
}

fn peak_values(out: &SequenceOutput, on: PeakOn) -> Vec<f32> {
    out.tokens
        .iter()
        .map(|r| match on {
            PeakOn::TopPEntropy => r.top_p_entropy,
            PeakOn::Entropy => r.entropy,
        })
        .collect()
}

fn sample(
    index: usize,
    out: SequenceOutput,
    peak: Vec<bool>,
    score: Option<(Score, f64)>,
    versions: VersionRuns,
) -> Sample {
    let t = &out.tokens;
    let entropy: Vec<f32> = t.iter().map(|r| r.entropy).collect();
    let top_p_entropy: Vec<f32> = t.iter().map(|r| r.top_p_entropy).collect();
    let peak_count = peak.iter().filter(|&&p| p).count();
    let masks = out.masks.as_deref();
    let sampling_mask = masks.map(|masks| {
        masks
            .iter()
            .map(|m| m.as_ref().map(|m| mask_codec::encode(&m.ids)))
            .collect()
    });
    let sampling_mass = masks.map(|masks| {
        masks
            .iter()
            .map(|m| m.as_ref().map_or(1.0, |m| m.mass as f32))
            .collect()
    });
    let top_logprobs = out.alternatives.map(|all| {
        all.iter()
            .map(|alternatives| {
                alternatives
                    .iter()
                    .map(|a| TopLogprob {
                        id: a.token,
                        logprob: a.logprob as f32,
                        sampling_logprob: a.sampling_logprob.map(|lp| lp as f32),
                    })
                    .collect()
            })
            .collect()
    });
    let peak_sum: f64 = top_p_entropy
        .iter()
        .zip(&peak)
        .filter(|(_, &p)| p)
        .map(|(&h, _)| h as f64)
        .sum();
    Sample {
        index,
        token_ids: t.iter().map(|r| r.token).collect(),
        logprobs: t.iter().map(|r| r.logprob).collect(),
        sampling_logprobs: t.iter().map(|r| r.sampling_logprob).collect(),
        sampling_mask,
        sampling_mass,
        top_logprobs,
        top_p_size: t.iter().map(|r| r.top_p_size).collect(),
        top_p_mass: t.iter().map(|r| r.top_p_mass).collect(),
        entropy_sum: entropy.iter().map(|&h| h as f64).sum(),
        top_p_entropy_sum: top_p_entropy.iter().map(|&h| h as f64).sum(),
        entropy,
        top_p_entropy,
        peak,
        peak_count,
        peak_top_p_entropy_mean: if peak_count > 0 {
            peak_sum / peak_count as f64
        } else {
            0.0
        },
        finish_reason: out.finish_reason,
        length: out.length,
        truncated: out.finish_reason == FinishReason::Length,
        text: out.text,
        reward: score.as_ref().map(|(s, _)| s.reward),
        correct: score.as_ref().map(|(s, _)| s.correct),
        verdict: score.as_ref().map(|(s, _)| s.status),
        advantage: score.as_ref().map(|(_, a)| *a),
        extracted_answer: score.and_then(|(s, _)| s.extracted_answer),
        weights_version: versions.first(),
        weights_versions: versions.switched(),
    }
}

/// Assembles groups and the summary, with the sums it was taken from. `elapsed_ms` is the
/// request's wall time.
pub fn assemble(
    groups: Vec<FinishedGroup>,
    stats: &StatsParams,
    advantage: AdvantageSpec,
    elapsed_ms: u64,
) -> (Vec<Group>, Summary, Totals) {
    let batch_threshold = match stats.peak_scope {
        PeakScope::Batch => peak_threshold(
            groups
                .iter()
                .flat_map(|g| g.outputs.iter())
                .flat_map(|o| peak_values(o, stats.peak_on))
                .collect::<Vec<_>>()
                .iter(),
            stats.peak_quantile,
        ),
        PeakScope::Response => None,
    };
    let groups: Vec<Group> = groups
        .into_iter()
        .map(|g| assemble_group(g, stats, advantage, batch_threshold))
        .collect();
    let mut totals = Totals::default();
    for g in &groups {
        totals.merge(&Totals::of(g));
    }
    let summary = totals.summary(batch_threshold, elapsed_ms);
    (groups, summary, totals)
}

/// Assembles one group. Under `peak_scope: batch` its peaks are taken against
/// `batch_threshold`, the request's; under `response` each sample's own.
pub fn assemble_group(
    g: FinishedGroup,
    stats: &StatsParams,
    advantage: AdvantageSpec,
    batch_threshold: Option<f64>,
) -> Group {
    let rewards = g.scores.as_ref().map(|s| group_stats(s, advantage));
    let mut scores = g.scores.map(|s| s.into_iter());
    Group {
        id: g.id,
        prompt_token_ids: g.prompt_token_ids,
        pass_rate: rewards.as_ref().map(|r| r.pass_rate),
        reward_mean: rewards.as_ref().map(|r| r.reward_mean),
        reward_std: rewards.as_ref().map(|r| r.reward_std),
        all_equal: rewards.as_ref().map(|r| r.all_equal),
        samples: g
            .outputs
            .into_iter()
            .zip(g.versions)
            .enumerate()
            .map(|(i, (out, versions))| {
                let values = peak_values(&out, stats.peak_on);
                let threshold = match stats.peak_scope {
                    PeakScope::Response => peak_threshold(&values, stats.peak_quantile),
                    PeakScope::Batch => batch_threshold,
                };
                let flags = peak_flags(&values, threshold);
                let score = scores.as_mut().and_then(Iterator::next);
                let adv = rewards.as_ref().map_or(0.0, |r| r.advantages[i]);
                sample(i, out, flags, score.map(|s| (s, adv)), versions)
            })
            .collect(),
    }
}

/// Sums over samples, for a request's [`Summary`]: each group's are taken alone and merged in
/// request order, so a streamed answer (groups in completion order) sums exactly as the whole
/// answer does.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    tokens: usize,
    entropy: f64,
    top_p_entropy: f64,
    anchor: f64,
    samples: usize,
    reward: f64,
    rewarded: usize,
}

impl Totals {
    /// The sums over the samples of `group`.
    pub fn of(group: &Group) -> Self {
        let mut t = Self::default();
        for s in &group.samples {
            t.tokens += s.length;
            t.entropy += s.entropy_sum;
            t.top_p_entropy += s.top_p_entropy_sum;
            t.anchor += s.peak_top_p_entropy_mean;
            t.samples += 1;
            if let Some(r) = s.reward {
                t.reward += r;
                t.rewarded += 1;
            }
        }
        t
    }

    /// Adds `other`'s sums.
    pub fn merge(&mut self, other: &Totals) {
        self.tokens += other.tokens;
        self.entropy += other.entropy;
        self.top_p_entropy += other.top_p_entropy;
        self.anchor += other.anchor;
        self.samples += other.samples;
        self.reward += other.reward;
        self.rewarded += other.rewarded;
    }

    /// Mean reward over the samples that have one; `None` if none has.
    pub fn reward_mean(&self) -> Option<f64> {
        (self.rewarded > 0).then(|| self.reward / self.rewarded as f64)
    }

    /// The request's summary.
    pub fn summary(&self, peak_threshold: Option<f64>, elapsed_ms: u64) -> Summary {
        let per_token = |x: f64| {
            if self.tokens > 0 {
                x / self.tokens as f64
            } else {
                0.0
            }
        };
        Summary {
            tokens: self.tokens,
            entropy_mean: per_token(self.entropy),
            top_p_entropy_mean: per_token(self.top_p_entropy),
            siren_anchor: if self.samples > 0 {
                self.anchor / self.samples as f64
            } else {
                0.0
            },
            peak_threshold,
            elapsed_ms,
        }
    }
}

/// The peak-entropy threshold `Q_q` over `values`; `None` for no values.
pub fn peak_threshold<'v>(values: impl IntoIterator<Item = &'v f32>, q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.into_iter().map(|&x| x as f64).collect();
    sorted.sort_unstable_by(f64::total_cmp);
    quantile_sorted(&sorted, q)
}

/// Peak flags: `x_t > threshold`, strictly. With no threshold, no token is a peak.
pub fn peak_flags(values: &[f32], threshold: Option<f64>) -> Vec<bool> {
    match threshold {
        Some(th) => values.iter().map(|&x| x as f64 > th).collect(),
        None => vec![false; values.len()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::validation::DEFAULT_STATS;
    use crate::stats::sampling::TokenRecord;

    fn output(top_p_entropy: &[f32]) -> SequenceOutput {
        SequenceOutput {
            tokens: top_p_entropy
                .iter()
                .enumerate()
                .map(|(i, &h)| TokenRecord {
                    token: i as u32,
                    entropy: h * 2.0,
                    top_p_entropy: h,
                    ..Default::default()
                })
                .collect(),
            masks: None,
            alternatives: None,
            length: top_p_entropy.len(),
            text: String::new(),
            finish_reason: FinishReason::Length,
            first_token_at: None,
        }
    }

    /// A group whose first output version 3 drew up to its token 4, and version 5 after; the
    /// others version 3 alone.
    fn group(outputs: Vec<SequenceOutput>) -> FinishedGroup {
        let mut versions = vec![VersionRuns::starting(3); outputs.len()];
        versions[0].switch(5, 4);
        FinishedGroup {
            id: "g".into(),
            prompt_token_ids: vec![1],
            outputs,
            versions,
            scores: None,
        }
    }

    #[test]
    fn response_scope_flags_each_response_on_its_own() {
        let values: Vec<f32> = (0..10).map(|i| i as f32 / 10.0).collect();
        let (groups, summary, _) = assemble(
            vec![group(vec![output(&values), output(&[5.0])])],
            &DEFAULT_STATS,
            AdvantageSpec::Grpo,
            0,
        );
        let s0 = &groups[0].samples[0];
        assert_eq!(s0.peak_count, 2);
        assert!(s0.peak[8] && s0.peak[9]);
        assert!((s0.peak_top_p_entropy_mean - 0.85).abs() < 1e-6);
        assert!((s0.top_p_entropy_sum - 4.5).abs() < 1e-5);
        assert!((s0.entropy_sum - 9.0).abs() < 1e-5);
        assert!(s0.truncated && s0.weights_version == 3);
        assert_eq!(s0.weights_versions, Some(vec![(3, 0), (5, 4)]));
        let s1 = &groups[0].samples[1];
        assert_eq!((s1.weights_version, &s1.weights_versions), (3, &None));
        // A one-token response has no peaks even with a large value.
        assert_eq!(groups[0].samples[1].peak_count, 0);
        assert_eq!(summary.tokens, 11);
        assert!((summary.siren_anchor - 0.425).abs() < 1e-6);
        assert!((summary.top_p_entropy_mean - 9.5 / 11.0).abs() < 1e-6);
        assert_eq!(summary.peak_threshold, None);
    }

    #[test]
    fn batch_scope_uses_one_threshold_for_the_request() {
        let stats = StatsParams {
            peak_scope: PeakScope::Batch,
            ..DEFAULT_STATS
        };
        let low: Vec<f32> = vec![0.1; 5];
        let high: Vec<f32> = vec![0.1, 0.1, 0.1, 0.9, 0.9];
        let (groups, summary, _) = assemble(
            vec![group(vec![output(&low), output(&high)])],
            &stats,
            AdvantageSpec::Grpo,
            0,
        );
        // Threshold over 10 values: sorted position 7.2 lies between 0.1 and 0.9.
        let th = summary.peak_threshold.unwrap();
        assert!(th > 0.1 && th < 0.9);
        assert_eq!(groups[0].samples[0].peak_count, 0);
        assert_eq!(groups[0].samples[1].peak_count, 2);
    }

    #[test]
    fn peaks_on_full_entropy_when_asked() {
        let stats = StatsParams {
            peak_on: PeakOn::Entropy,
            ..DEFAULT_STATS
        };
        let mut out = output(&[0.5, 0.5, 0.5, 0.5, 0.5]);
        out.tokens[2].entropy = 9.0;
        let (groups, ..) = assemble(vec![group(vec![out])], &stats, AdvantageSpec::Grpo, 0);
        assert_eq!(
            groups[0].samples[0].peak,
            vec![false, false, true, false, false]
        );
    }

    #[test]
    fn peak_edge_cases() {
        // One token: never a peak.
        let one = [1.5f32];
        assert_eq!(peak_flags(&one, peak_threshold(&one, 0.8)), vec![false]);
        // All equal: none.
        let flat = [0.7f32; 6];
        assert!(peak_flags(&flat, peak_threshold(&flat, 0.8))
            .iter()
            .all(|&f| !f));
        // Ten distinct values at q = 0.8: the threshold lies between the 8th and 9th, so two peaks.
        let ten: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let flags = peak_flags(&ten, peak_threshold(&ten, 0.8));
        assert_eq!(flags.iter().filter(|&&f| f).count(), 2);
        assert!(flags[8] && flags[9]);
        // q = 1 flags nothing (strict), q = 0 flags all but the minimum.
        assert_eq!(
            peak_flags(&ten, peak_threshold(&ten, 1.0))
                .iter()
                .filter(|&&f| f)
                .count(),
            0
        );
        assert_eq!(
            peak_flags(&ten, peak_threshold(&ten, 0.0))
                .iter()
                .filter(|&&f| f)
                .count(),
            9
        );
    }
}
