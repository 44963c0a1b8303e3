//! Rewards from verified answers, and the group statistics and advantages built on them
//! (`docs/statistics.md`, "Per group").

use serde::Serialize;

use crate::api::rollouts::AdvantageSpec;
use crate::stats::quantile::quantile_sorted;

/// Reward values for correct and incorrect samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RewardValues {
    /// Reward of a correct sample.
    pub correct: f64,
    /// Reward of any other sample.
    pub wrong: f64,
}

/// The verifier's judgement of one sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// Reward.
    pub reward: f64,
    /// Whether the answer is correct.
    pub correct: bool,
    /// The answer extracted from the response.
    pub extracted_answer: Option<String>,
    /// How verification ended (`correct`, `wrong`, `no_answer`, `unparsable`, `timed_out`).
    pub status: verifier::Status,
}

/// Verifies one response against its gold answer. CPU-bound and bounded in time: call it
/// off the async executor (`spawn_blocking`).
pub fn score(gold: &str, response: &str, values: RewardValues, config: &verifier::Config) -> Score {
    let verdict = verifier::verify(gold, response, config);
    Score {
        reward: if verdict.correct {
            values.correct
        } else {
            values.wrong
        },
        correct: verdict.correct,
        extracted_answer: verdict.extracted_pred,
        status: verdict.status,
    }
}

/// Per-group reward statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStats {
    /// Mean of `correct`.
    pub pass_rate: f64,
    /// Mean reward.
    pub reward_mean: f64,
    /// Unbiased (n - 1) standard deviation of the rewards; 0 for a group of one.
    pub reward_std: f64,
    /// Whether every reward is the same (a zero-variance group).
    pub all_equal: bool,
    /// Each sample's advantage, in sample order.
    pub advantages: Vec<f64>,
}

/// Group statistics and advantages of `scores` under `estimator`.
pub fn group_stats(scores: &[Score], estimator: AdvantageSpec) -> GroupStats {
    let n = scores.len().max(1) as f64;
    let rewards: Vec<f64> = scores.iter().map(|s| s.reward).collect();
    let mean = rewards.iter().sum::<f64>() / n;
    let std = if rewards.len() > 1 {
        (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    let advantages = match estimator {
        AdvantageSpec::Grpo if rewards.len() > 1 => {
            rewards.iter().map(|r| (r - mean) / (std + 1e-6)).collect()
        }
        AdvantageSpec::Grpo => vec![0.0; rewards.len()],
        AdvantageSpec::Drgrpo => rewards.iter().map(|r| r - mean).collect(),
        AdvantageSpec::Qae(k) => {
            let mut sorted = rewards.clone();
            sorted.sort_by(f64::total_cmp);
            let baseline = quantile_sorted(&sorted, k).unwrap_or(0.0);
            rewards.iter().map(|r| r - baseline).collect()
        }
    };
    GroupStats {
        pass_rate: scores.iter().filter(|s| s.correct).count() as f64 / n,
        reward_mean: mean,
        reward_std: std,
        all_equal: rewards.windows(2).all(|w| w[0] == w[1]),
        advantages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(correct: &[bool]) -> Vec<Score> {
        correct
            .iter()
            .map(|&c| Score {
                reward: if c { 1.0 } else { 0.0 },
                correct: c,
                extracted_answer: None,
                status: if c {
                    verifier::Status::Correct
                } else {
                    verifier::Status::Wrong
                },
            })
            .collect()
    }

    #[test]
    fn grpo_normalises_by_the_unbiased_std() {
        let g = group_stats(&scores(&[true, false, false, false]), AdvantageSpec::Grpo);
        assert_eq!(g.pass_rate, 0.25);
        assert_eq!(g.reward_mean, 0.25);
        // Unbiased: sqrt((0.5625 + 3 * 0.0625) / 3) = 0.5.
        assert!((g.reward_std - 0.5).abs() < 1e-12);
        assert!((g.advantages[0] - 0.75 / (0.5 + 1e-6)).abs() < 1e-12);
        assert!((g.advantages[1] + 0.25 / (0.5 + 1e-6)).abs() < 1e-12);
        assert!(!g.all_equal);
    }

    #[test]
    fn drgrpo_and_qae_subtract_baselines() {
        let s = scores(&[true, true, false, false, false]);
        let d = group_stats(&s, AdvantageSpec::Drgrpo);
        assert!((d.advantages[0] - 0.6).abs() < 1e-12 && (d.advantages[4] + 0.4).abs() < 1e-12);
        // Rewards sorted: 0 0 0 1 1; the 0.5 quantile is 0, the 0.75 quantile is 1.
        let q = group_stats(&s, AdvantageSpec::Qae(0.5));
        assert_eq!(q.advantages, vec![1.0, 1.0, 0.0, 0.0, 0.0]);
        let q = group_stats(&s, AdvantageSpec::Qae(0.75));
        assert_eq!(q.advantages, vec![0.0, 0.0, -1.0, -1.0, -1.0]);
    }

    #[test]
    fn zero_variance_and_single_sample_groups() {
        let g = group_stats(&scores(&[false, false, false]), AdvantageSpec::Grpo);
        assert!(g.all_equal && g.reward_std == 0.0);
        assert!(g.advantages.iter().all(|&a| a == 0.0));
        let one = group_stats(&scores(&[true]), AdvantageSpec::Grpo);
        assert_eq!((one.reward_std, one.advantages.clone()), (0.0, vec![0.0]));
        assert!(one.all_equal);
    }

    #[test]
    fn scoring_uses_the_configured_values() {
        let values = RewardValues {
            correct: 2.0,
            wrong: -1.0,
        };
        let config = verifier::Config::default();
        let right = score("42", r"so \boxed{42}", values, &config);
        assert_eq!((right.reward, right.correct), (2.0, true));
        assert_eq!(right.extracted_answer.as_deref(), Some("42"));
        let wrong = score("42", r"so \boxed{41}", values, &config);
        assert_eq!(
            (wrong.reward, wrong.correct, wrong.status),
            (-1.0, false, verifier::Status::Wrong)
        );
    }
}
