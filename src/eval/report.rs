//! The numbers an evaluation reports, from each problem's samples: pass@1 (the mean over the
//! k samples), pass@k by the unbiased estimator, token-mean entropy and mean response length,
//! per dataset and over all problems.

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::pass_at_k::pass_at_k;

/// What the samples of one problem came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemResult {
    /// The dataset's id of the problem.
    pub id: String,
    /// The seed its samples were drawn with (the same seed draws the same samples again).
    pub seed: u64,
    /// Samples drawn.
    pub n: usize,
    /// Samples the verifier judged correct.
    pub c: usize,
    /// Tokens generated, over all samples.
    pub tokens: u64,
    /// Samples that stopped at the token limit.
    pub truncated: usize,
    /// Sum of the full-vocabulary entropy over every generated token (nats).
    pub entropy_sum: f64,
    /// Why the server refused the problem (then `n` is 0 and the problem is left out of the
    /// scores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ProblemResult {
    /// A problem the server refused.
    pub fn refused(id: String, seed: u64, error: String) -> ProblemResult {
        ProblemResult {
            id,
            seed,
            n: 0,
            c: 0,
            tokens: 0,
            truncated: 0,
            entropy_sum: 0.0,
            error: Some(error),
        }
    }
}

/// Scores over a set of problems.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Problems scored (refused ones are not).
    pub problems: usize,
    /// Problems the server refused.
    pub refused: usize,
    /// Samples over the scored problems.
    pub samples: usize,
    /// Correct samples.
    pub correct: usize,
    /// `(k, pass@k)`, the mean over problems, for k = 1, 2, 4, ... and the samples per problem.
    pub pass_at: Vec<(usize, f64)>,
    /// Token-mean entropy: every generated token's entropy, averaged (nats).
    pub entropy_mean: f64,
    /// Mean tokens per sample.
    pub length_mean: f64,
    /// Share of samples that stopped at the token limit.
    pub truncated_rate: f64,
}

impl Scores {
    /// Scores of these problems, with pass@k for the ks that every scored problem allows.
    pub fn of<'a>(results: impl IntoIterator<Item = &'a ProblemResult>) -> Scores {
        let all: Vec<&ProblemResult> = results.into_iter().collect();
        let scored: Vec<&ProblemResult> =
            all.iter().copied().filter(|r| r.error.is_none()).collect();
        let samples: usize = scored.iter().map(|r| r.n).sum();
        let tokens: u64 = scored.iter().map(|r| r.tokens).sum();
        let entropy: f64 = scored.iter().map(|r| r.entropy_sum).sum();
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let k_max = scored.iter().map(|r| r.n).min().unwrap_or(0);
        let pass_at = ks(k_max)
            .into_iter()
            .map(|k| {
                let sum: f64 = scored
                    .iter()
                    .map(|r| pass_at_k(r.n, r.c, k).expect("k <= n and c <= n"))
                    .sum();
                (k, sum / scored.len() as f64)
            })
            .collect();
        Scores {
            problems: scored.len(),
            refused: all.len() - scored.len(),
            samples,
            correct: scored.iter().map(|r| r.c).sum(),
            pass_at,
            entropy_mean: ratio(entropy, tokens as f64),
            length_mean: ratio(tokens as f64, samples as f64),
            truncated_rate: ratio(
                scored.iter().map(|r| r.truncated).sum::<usize>() as f64,
                samples as f64,
            ),
        }
    }

    /// pass@k for this k, if it was computed.
    pub fn pass(&self, k: usize) -> Option<f64> {
        self.pass_at.iter().find(|(j, _)| *j == k).map(|(_, p)| *p)
    }
}

/// The ks reported for `k_max` samples a problem: powers of two below it, and itself.
fn ks(k_max: usize) -> Vec<usize> {
    let mut out: Vec<usize> = std::iter::successors(Some(1usize), |k| k.checked_mul(2))
        .take_while(|&k| k < k_max)
        .collect();
    if k_max > 0 {
        out.push(k_max);
    }
    out
}

/// Written as one JSON object with a `pass@k` key per k, in increasing k.
impl Serialize for Scores {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("problems", &self.problems)?;
        map.serialize_entry("refused", &self.refused)?;
        map.serialize_entry("samples", &self.samples)?;
        map.serialize_entry("correct", &self.correct)?;
        for (k, p) in &self.pass_at {
            map.serialize_entry(&format!("pass@{k}"), p)?;
        }
        map.serialize_entry("entropy_mean", &self.entropy_mean)?;
        map.serialize_entry("length_mean", &self.length_mean)?;
        map.serialize_entry("truncated_rate", &self.truncated_rate)?;
        map.end()
    }
}

/// One dataset's part of a report.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetReport {
    /// The file it was read from.
    pub file: String,
    /// Its scores.
    pub scores: Scores,
    /// Each problem evaluated, in file order.
    pub problems: Vec<ProblemResult>,
}

impl DatasetReport {
    /// The report of one dataset's problem results.
    pub fn new(file: String, problems: Vec<ProblemResult>) -> DatasetReport {
        DatasetReport {
            file,
            scores: Scores::of(&problems),
            problems,
        }
    }
}

/// The whole evaluation: its settings, the scores over every problem and per dataset.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The served model.
    pub model: String,
    /// The server evaluated.
    pub url: String,
    /// The weights versions the samples came from (more than one if weights changed mid-way).
    pub weights_versions: Vec<u64>,
    /// Samples per problem.
    pub k: usize,
    /// The sampling settings every request carried (`seed` is the first problem's; problem i
    /// of a dataset uses seed + i).
    pub sampling: serde_json::Value,
    /// What follows each problem in the user message.
    pub instruction: String,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
    /// Scores over every problem of every dataset.
    pub overall: Scores,
    /// Each dataset by name.
    pub datasets: BTreeMap<String, DatasetReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(n: usize, c: usize, tokens: u64, entropy_sum: f64) -> ProblemResult {
        ProblemResult {
            id: format!("{n}/{c}"),
            seed: 0,
            n,
            c,
            tokens,
            truncated: c,
            entropy_sum,
            error: None,
        }
    }

    #[test]
    fn scores_average_problems_and_weigh_tokens() {
        let results = [
            result(4, 0, 10, 5.0),
            result(4, 1, 20, 2.0),
            result(4, 4, 10, 1.0),
            ProblemResult::refused("x".into(), 3, "too long".into()),
        ];
        let s = Scores::of(&results);
        assert_eq!((s.problems, s.refused, s.samples, s.correct), (3, 1, 12, 5));
        assert_eq!(
            s.pass_at.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [1, 2, 4]
        );
        // pass@1 is the mean correct share: (0 + 1/4 + 1) / 3.
        assert!((s.pass(1).unwrap() - 1.25 / 3.0).abs() < 1e-12);
        // pass@2 of 1 in 4: 1 - C(3,2)/C(4,2) = 1/2.
        assert!((s.pass(2).unwrap() - 1.5 / 3.0).abs() < 1e-12);
        assert!((s.pass(4).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // Token-weighted entropy: 8 nats over 40 tokens, not the mean of per-problem means.
        assert!((s.entropy_mean - 0.2).abs() < 1e-12);
        assert!((s.length_mean - 40.0 / 12.0).abs() < 1e-12);
        assert!((s.truncated_rate - 5.0 / 12.0).abs() < 1e-12);
    }

    #[test]
    fn ks_are_powers_of_two_and_the_sample_count() {
        assert_eq!(ks(0), Vec::<usize>::new());
        assert_eq!(ks(1), [1]);
        assert_eq!(ks(6), [1, 2, 4, 6]);
        assert_eq!(ks(8), [1, 2, 4, 8]);
        let refused_only = Scores::of(&[ProblemResult::refused("a".into(), 0, "no".into())]);
        assert_eq!((refused_only.problems, refused_only.pass_at.len()), (0, 0));
        assert_eq!(refused_only.entropy_mean, 0.0);
    }

    #[test]
    fn scores_serialize_with_a_key_per_k_in_order() {
        let s = Scores::of(&[result(8, 2, 4, 1.0)]);
        let text = serde_json::to_string(&s).unwrap();
        let keys: Vec<&str> = text
            .match_indices("pass@")
            .map(|(i, _)| &text[i..i + 6])
            .collect();
        assert_eq!(keys, ["pass@1", "pass@2", "pass@4", "pass@8"]);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["pass@1"], 0.25);
        assert_eq!(value["correct"], 2);
    }
}
