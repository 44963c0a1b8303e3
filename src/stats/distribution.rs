//! Statistics of one next-token distribution, as `docs/statistics.md` defines them.
//!
//! A [`Distribution`] is built once per generated token from the model's logits row and the
//! sampling temperature. It then answers every per-token question (log-prob, full-vocabulary
//! entropy, the SIREN nucleus) and draws the token, reusing one ranking of the vocabulary.
//!
//! Ranking is by logit, descending, ties broken by token id ascending. The temperature-scaled
//! softmax is monotone in the logit, so this is exactly the order by probability the definitions
//! ask for, with no rounding ties introduced by `exp`.

use serde::{Deserialize, Serialize};

/// Which prefix of the sorted distribution forms the SIREN nucleus `S_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum NucleusRule {
    /// `S = { j : C_j < p }` (SIREN's code): the token that reaches `p` is excluded.
    Strict,
    /// The smallest prefix with `C_j >= p` (the nucleus-sampling convention).
    Inclusive,
}

/// Parameters of the SIREN nucleus statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NucleusParams {
    /// Probability mass `p` that bounds the nucleus.
    pub top_p: f64,
    /// At most this many candidates are considered (`stats.top_k_candidates`).
    pub max_candidates: usize,
    /// Strict or inclusive boundary.
    pub rule: NucleusRule,
}

/// The SIREN nucleus of one distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Nucleus {
    /// `|S_t|`.
    pub size: usize,
    /// Probability mass of `S_t`.
    pub mass: f64,
    /// Entropy of the distribution restricted to `S_t`, renormalised; 0 when `|S_t| <= 1`.
    pub entropy: f64,
}

/// Truncation of the distribution that tokens are drawn from (top-k, then inclusive top-p).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Truncation {
    /// Keep only the `k` most probable tokens; `None` keeps all.
    pub top_k: Option<usize>,
    /// Then keep the smallest prefix whose renormalised mass reaches `top_p`; 1 keeps all.
    pub top_p: f64,
}

impl Truncation {
    /// No truncation: draw from the full distribution.
    pub const NONE: Truncation = Truncation {
        top_k: None,
        top_p: 1.0,
    };

    fn is_none(&self) -> bool {
        self.top_k.is_none() && self.top_p >= 1.0
    }
}

/// A drawn token with its log-probabilities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Draw {
    /// The token id.
    pub token: u32,
    /// `ln pi(token)` under the full, untruncated tempered distribution.
    pub logprob: f64,
    /// `ln` of the token's probability under the truncated, renormalised distribution.
    pub sampling_logprob: f64,
    /// How many of the highest-ranked tokens the truncation kept, and their mass under the
    /// full distribution; `None` when the draw was not truncated (every token kept).
    pub kept: Option<(usize, f64)>,
    /// The weight the token was drawn from, in units of `exp(x - max)`: the kept tokens', or
    /// the whole row's. A kept token's `sampling_logprob` is its weight's share of it.
    pub weight: f64,
    /// Whether the draw went through a truncation (one that kept every token included).
    pub truncated: bool,
}

/// One of a step's most probable tokens (OpenAI's top log-probs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Alternative {
    /// The token id.
    pub token: u32,
    /// `ln pi(token)` under the full, untruncated tempered distribution.
    pub logprob: f64,
    /// `ln` of its probability under the truncated distribution the step drew from; `None`
    /// when the truncation left it out (probability 0 there).
    pub sampling_logprob: Option<f64>,
}

/// Why a logits row has no distribution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// The row has no entries.
    #[error("the logits row is empty")]
    Empty,
    /// The row holds NaN or +inf, so the softmax is undefined.
    #[error("the logits row holds NaN or +inf")]
    NonFinite,
    /// Every entry is -inf, so no token has positive probability.
    #[error("every logit is -inf")]
    AllMasked,
    /// The temperature is not a positive finite number.
    #[error("temperature must be positive and finite")]
    BadTemperature,
}

/// Buffers reused across the tokens of one sequence, so a step allocates nothing.
#[derive(Default, Debug)]
pub struct Workspace {
    /// `exp(x_i - max)` per token id.
    weights: Vec<f64>,
    /// The head of the ranking: the highest-ranked token ids, in rank order.
    order: Vec<u32>,
    /// Sort keys of the head being built.
    keys: Vec<u64>,
    /// Token counts per histogram bucket of `max - x`.
    bucket_count: Vec<u32>,
    /// Weight per histogram bucket of `max - x`.
    bucket_weight: Vec<f64>,
}

/// Histogram buckets per nat of `max - x`, and the range they cover; larger gaps (and masked
/// tokens) share one overflow bucket.
const BUCKETS_PER_NAT: f64 = 32.0;
const BUCKET_RANGE_NATS: f64 = 64.0;
const BUCKETS: usize = (BUCKETS_PER_NAT * BUCKET_RANGE_NATS) as usize;

/// A key whose ascending order is the ranking: higher logit first, then lower token id.
fn rank_key(z: f32, id: u32) -> u64 {
    let bits = z.to_bits();
    let ascending = if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    ((!ascending as u64) << 32) | id as u64
}

/// `(z - max_z) / T`, the tempered distance below the largest logit: exactly 0 for the largest
/// itself, also when `1 / T` overflows (a temperature so small that the distribution is uniform
/// over the tied maxima), and never NaN for finite `T`.
fn tempered_gap(z: f32, max_z: f32, inv_t: f64) -> f64 {
    if z == max_z {
        0.0
    } else {
        (z as f64 - max_z as f64) * inv_t
    }
}

/// The tempered softmax of one logits row: `pi = softmax(z / T)`.
pub struct Distribution<'a> {
    logits: &'a [f32],
    ws: &'a mut Workspace,
    inv_t: f64,
    /// The largest logit.
    max_z: f32,
    /// `sum_i exp(x_i - max)`.
    sum: f64,
    ln_sum: f64,
    entropy: f64,
    /// Length of the head in `ws.order`.
    sorted: usize,
    /// Total weight of the head.
    sorted_weight: f64,
}

impl<'a> Distribution<'a> {
    /// Builds the distribution of `logits` at `temperature`, in f64.
    pub fn new(
        logits: &'a [f32],
        temperature: f64,
        ws: &'a mut Workspace,
    ) -> Result<Self, StatsError> {
        if logits.is_empty() {
            return Err(StatsError::Empty);
        }
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(StatsError::BadTemperature);
        }
        let mut max_z = f32::NEG_INFINITY;
        for &z in logits {
            if z.is_nan() || z == f32::INFINITY {
                return Err(StatsError::NonFinite);
            }
            max_z = max_z.max(z);
        }
        if max_z == f32::NEG_INFINITY {
            return Err(StatsError::AllMasked);
        }
        let inv_t = 1.0 / temperature;
        ws.weights.clear();
        ws.weights.reserve(logits.len());
        let (mut sum, mut weighted) = (0.0f64, 0.0f64);
        for &z in logits {
            let d = tempered_gap(z, max_z, inv_t);
            let e = d.exp();
            ws.weights.push(e);
            sum += e;
            if e > 0.0 {
                weighted += e * d;
            }
        }
        ws.order.clear();
        let ln_sum = sum.ln();
        // H = LSE(x) - sum pi x = ln(sum) - sum e (x - max) / sum; never below 0.
        let entropy = (ln_sum - weighted / sum).max(0.0);
        Ok(Self {
            logits,
            ws,
            inv_t,
            max_z,
            sum,
            ln_sum,
            entropy,
            sorted: 0,
            sorted_weight: 0.0,
        })
    }

    /// Number of entries `V` in the row.
    pub fn vocab_size(&self) -> usize {
        self.logits.len()
    }

    /// Full-vocabulary entropy in nats.
    pub fn entropy(&self) -> f64 {
        self.entropy
    }

    /// `ln pi(token)`; `token` must be below [`Self::vocab_size`].
    pub fn ln_prob(&self, token: u32) -> f64 {
        tempered_gap(self.logits[token as usize], self.max_z, self.inv_t) - self.ln_sum
    }

    /// Makes `ws.order` a head of the ranking holding at least `target` weight or `cap` ids
    /// (or every id). One pass builds a histogram of `max - x`, which fixes the last bucket
    /// the head needs; a second gathers the ids up to that bucket, which are then sorted.
    fn ensure_head(&mut self, target: f64, cap: usize) {
        let cap = cap.min(self.logits.len());
        if self.sorted >= cap || self.sorted_weight >= target {
            return;
        }
        let ws = &mut *self.ws;
        ws.bucket_count.clear();
        ws.bucket_count.resize(BUCKETS + 1, 0);
        ws.bucket_weight.clear();
        ws.bucket_weight.resize(BUCKETS + 1, 0.0);
        let (max_z, inv_t) = (self.max_z, self.inv_t);
        let bucket = |z: f32| {
            let d = -tempered_gap(z, max_z, inv_t);
            if d < BUCKET_RANGE_NATS {
                (d * BUCKETS_PER_NAT) as usize
            } else {
                BUCKETS
            }
        };
        for (&z, &w) in self.logits.iter().zip(&ws.weights) {
            let b = bucket(z);
            ws.bucket_count[b] += 1;
            ws.bucket_weight[b] += w;
        }
        let (mut count, mut weight, mut last) = (0usize, 0.0f64, BUCKETS);
        for b in 0..=BUCKETS {
            count += ws.bucket_count[b] as usize;
            weight += ws.bucket_weight[b];
            if weight >= target || count >= cap {
                last = b;
                break;
            }
        }
        ws.keys.clear();
        for (id, &z) in self.logits.iter().enumerate() {
            if bucket(z) <= last {
                ws.keys.push(rank_key(z, id as u32));
            }
        }
        ws.keys.sort_unstable();
        ws.order.clear();
        ws.order.extend(ws.keys.iter().map(|&k| k as u32));
        self.sorted = ws.order.len();
        self.sorted_weight = weight;
    }

    /// The shortest head of the ranking whose weight reaches `target` (in units of
    /// `exp(x - max)`), looking at no more than `cap` entries. Returns its length and weight,
    /// and whether `target` was reached; if not, the length is `cap`.
    fn head_reaching(&mut self, target: f64, cap: usize) -> (usize, f64, bool) {
        let cap = cap.min(self.logits.len());
        self.ensure_head(target, cap);
        let (mut len, mut acc) = (0usize, 0.0f64);
        loop {
            while len < self.sorted.min(cap) {
                acc += self.ws.weights[self.ws.order[len] as usize];
                len += 1;
                if acc >= target {
                    return (len, acc, true);
                }
            }
            if len >= cap {
                return (len, acc, false);
            }
            // Summation order left the head just short of the target: take the capped head.
            let before = self.sorted;
            self.ensure_head(f64::INFINITY, cap);
            if self.sorted <= before {
                return (len, acc, false);
            }
        }
    }

    /// The SIREN nucleus `S_t` for `params`.
    pub fn nucleus(&mut self, params: &NucleusParams) -> Nucleus {
        let target = params.top_p * self.sum;
        let (len, _, reached) = self.head_reaching(target, params.max_candidates);
        let size = match params.rule {
            NucleusRule::Inclusive => len,
            // Every member before the one that reached p; all candidates if p was never reached.
            NucleusRule::Strict if reached => len - 1,
            NucleusRule::Strict => len,
        };
        let (mut mass, mut plogp) = (0.0f64, 0.0f64);
        for &id in &self.ws.order[..size] {
            let lp = self.ln_prob(id);
            let p = lp.exp();
            mass += p;
            if p > 0.0 {
                plogp += p * lp;
            }
        }
        let entropy = if size <= 1 || mass <= 0.0 {
            0.0
        } else {
            (mass.ln() - plogp / mass).max(0.0)
        };
        Nucleus {
            size,
            mass,
            entropy,
        }
    }

    /// Draws a token from the distribution truncated by `trunc`, by inverse CDF at `u` in [0, 1).
    ///
    /// Without truncation the CDF runs over token ids in order; with it, over the ranking.
    pub fn draw(&mut self, trunc: &Truncation, u: f64) -> Draw {
        if trunc.is_none() {
            let token = self.inverse_cdf_by_id(u * self.sum);
            let logprob = self.ln_prob(token);
            return Draw {
                token,
                logprob,
                sampling_logprob: logprob,
                kept: None,
                weight: self.sum,
                truncated: false,
            };
        }
        let v = self.logits.len();
        let k = trunc.top_k.unwrap_or(v).clamp(1, v);
        let top_k_weight = |d: &mut Self| -> f64 {
            d.ensure_head(f64::INFINITY, k);
            d.ws.order[..k]
                .iter()
                .map(|&id| d.ws.weights[id as usize])
                .sum()
        };
        let (len, weight) = if trunc.top_p >= 1.0 {
            (k, top_k_weight(self))
        } else {
            let top_k_weight = if k < v { top_k_weight(self) } else { self.sum };
            let (len, w, _) = self.head_reaching(trunc.top_p * top_k_weight, k);
            (len, w)
        };
        let target = u * weight;
        let mut acc = 0.0;
        let mut token = self.ws.order[0];
        for &id in &self.ws.order[..len] {
            let w = self.ws.weights[id as usize];
            if w > 0.0 {
                token = id;
            }
            acc += w;
            if acc > target {
                break;
            }
        }
        Draw {
            token,
            logprob: self.ln_prob(token),
            // The token's share of the kept weight: exactly 0 when it is all of it (top_k = 1).
            sampling_logprob: (self.ws.weights[token as usize] / weight).ln(),
            kept: (len < v).then(|| (len, weight / self.sum)),
            weight,
            truncated: true,
        }
    }

    /// The `n` highest-ranked tokens (fewer if fewer have a finite logit: a masked token is
    /// no alternative), in rank order, with their log-probabilities under the full distribution
    /// and under the one `draw` was drawn from: the same numbers, computed the same way, as the
    /// draw's own for the token it drew.
    pub fn alternatives(&mut self, n: usize, draw: &Draw) -> Vec<Alternative> {
        let n = n.min(self.logits.len());
        if n == 0 {
            return Vec::new();
        }
        self.ensure_head(f64::INFINITY, n);
        let kept = draw.kept.map_or(self.logits.len(), |(len, _)| len);
        self.ws.order[..n]
            .iter()
            .take_while(|&&token| self.logits[token as usize] > f32::NEG_INFINITY)
            .enumerate()
            .map(|(rank, &token)| {
                let logprob = self.ln_prob(token);
                let share = self.ws.weights[token as usize] / draw.weight;
                let sampling_logprob = (rank < kept).then(|| {
                    if !draw.truncated || share == 0.0 {
                        // Untruncated; or kept with a share that underflowed, below which every
                        // cut token's share is 0 too: the kept tokens hold all the mass.
                        logprob
                    } else {
                        share.ln()
                    }
                });
                Alternative {
                    token,
                    logprob,
                    sampling_logprob,
                }
            })
            .collect()
    }

    /// The `n` highest-ranked token ids, after a [`Self::draw`] whose truncation kept `n`.
    pub fn ranked(&self, n: usize) -> &[u32] {
        &self.ws.order[..n]
    }

    /// The first id whose cumulative weight exceeds `target`; the last id of positive weight
    /// if rounding leaves the target unreached.
    fn inverse_cdf_by_id(&self, target: f64) -> u32 {
        let mut acc = 0.0;
        let mut last_positive = 0u32;
        for (id, &w) in self.ws.weights.iter().enumerate() {
            if w > 0.0 {
                last_positive = id as u32;
                acc += w;
                if acc > target {
                    return id as u32;
                }
            }
        }
        last_positive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::test_rng::TestRng as Rows;

    /// Straightforward f64 reference of every definition, sorting the whole vocabulary.
    struct Reference {
        probs: Vec<f64>,
        entropy: f64,
    }

    impl Reference {
        fn new(logits: &[f32], t: f64) -> Self {
            let x: Vec<f64> = logits.iter().map(|&z| z as f64 / t).collect();
            let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + x.iter().map(|&xi| (xi - m).exp()).sum::<f64>().ln();
            let probs: Vec<f64> = x.iter().map(|&xi| (xi - lse).exp()).collect();
            let entropy = -probs
                .iter()
                .zip(&x)
                .filter(|(&p, _)| p > 0.0)
                .map(|(&p, &xi)| p * (xi - lse))
                .sum::<f64>();
            Self { probs, entropy }
        }

        fn ranking(&self) -> Vec<usize> {
            let mut ids: Vec<usize> = (0..self.probs.len()).collect();
            ids.sort_by(|&a, &b| self.probs[b].total_cmp(&self.probs[a]).then(a.cmp(&b)));
            ids
        }

        fn nucleus(&self, p: f64, k: usize, rule: NucleusRule) -> (usize, f64, f64) {
            let ids: Vec<usize> = self.ranking().into_iter().take(k).collect();
            let mut c = 0.0;
            let mut set = Vec::new();
            for &id in &ids {
                c += self.probs[id];
                match rule {
                    NucleusRule::Strict => {
                        if c < p {
                            set.push(id)
                        } else {
                            break;
                        }
                    }
                    NucleusRule::Inclusive => {
                        set.push(id);
                        if c >= p {
                            break;
                        }
                    }
                }
            }
            let mass: f64 = set.iter().map(|&i| self.probs[i]).sum();
            let h = if set.len() <= 1 {
                0.0
            } else {
                -set.iter()
                    .map(|&i| self.probs[i] / mass)
                    .filter(|&q| q > 0.0)
                    .map(|q| q * q.ln())
                    .sum::<f64>()
            };
            (set.len(), mass, h)
        }
    }

    fn check_row(logits: &[f32], t: f64, p: f64, k: usize) {
        let r = Reference::new(logits, t);
        let mut ws = Workspace::default();
        let mut d = Distribution::new(logits, t, &mut ws).unwrap();
        assert!(
            (d.entropy() - r.entropy).abs() < 1e-4,
            "entropy {} vs {}",
            d.entropy(),
            r.entropy
        );
        for id in [0u32, (logits.len() / 2) as u32, logits.len() as u32 - 1] {
            if r.probs[id as usize] > 0.0 {
                assert!((d.ln_prob(id) - r.probs[id as usize].ln()).abs() < 1e-4);
            }
        }
        for rule in [NucleusRule::Strict, NucleusRule::Inclusive] {
            let got = d.nucleus(&NucleusParams {
                top_p: p,
                max_candidates: k,
                rule,
            });
            let (size, mass, h) = r.nucleus(p, k, rule);
            assert_eq!(got.size, size, "{rule:?} size, t={t} p={p} k={k}");
            assert!((got.mass - mass).abs() < 1e-4, "{rule:?} mass");
            assert!(
                (got.entropy - h).abs() < 1e-4,
                "{rule:?} entropy {} vs {h}",
                got.entropy
            );
        }
    }

    #[test]
    fn matches_f64_reference_on_random_rows() {
        let mut g = Rows(7);
        for (v, scale) in [
            (10, 1.0),
            (1000, 3.0),
            (49152, 2.0),
            (49152, 6.0),
            (2000, 0.1),
        ] {
            let row = g.row(v, scale);
            for t in [1.0, 0.6, 1.7] {
                check_row(&row, t, 0.8, 10_000);
                check_row(&row, t, 0.95, 50);
            }
        }
    }

    #[test]
    fn matches_reference_on_flat_row_over_100k_entries() {
        let row = vec![0.25f32; 120_000];
        check_row(&row, 1.0, 0.8, 10_000);
        check_row(&row, 1.0, 0.8, 200_000);
        let mut ws = Workspace::default();
        let d = Distribution::new(&row, 1.0, &mut ws).unwrap();
        assert!((d.entropy() - (120_000f64).ln()).abs() < 1e-6);
    }

    #[test]
    fn extreme_temperatures_give_the_limit_distributions() {
        // Found by fuzzing: 1/T overflowed to inf and (inf - inf) made every statistic NaN.
        let row = [2.5f32, -1.0, 2.5, 0.25, f32::NEG_INFINITY, 1e-3];
        for t in [1.7e-313, 1e-300, 1e-30] {
            let mut ws = Workspace::default();
            let mut d = Distribution::new(&row, t, &mut ws).unwrap();
            // Uniform over the two tied maxima.
            assert!(
                (d.entropy() - 2f64.ln()).abs() < 1e-12,
                "T={t}: {}",
                d.entropy()
            );
            for u in [0.0, 0.49, 0.51, 0.999] {
                let draw = d.draw(&Truncation::NONE, u);
                assert!([0, 2].contains(&draw.token), "T={t}: drew {}", draw.token);
                assert!((draw.logprob + 2f64.ln()).abs() < 1e-12);
            }
            let n = d.nucleus(&NucleusParams {
                top_p: 0.8,
                max_candidates: 10,
                rule: NucleusRule::Inclusive,
            });
            assert_eq!(n.size, 2);
            assert!((n.mass - 1.0).abs() < 1e-12 && (n.entropy - 2f64.ln()).abs() < 1e-12);
        }
        // A huge temperature flattens the row over its finite entries.
        let mut ws = Workspace::default();
        let d = Distribution::new(&row, 1e300, &mut ws).unwrap();
        assert!((d.entropy() - 5f64.ln()).abs() < 1e-9, "{}", d.entropy());
        assert_eq!(d.ln_prob(4), f64::NEG_INFINITY);
    }

    #[test]
    fn ties_rank_by_token_id() {
        // Three equal top tokens; the nucleus at p=0.5 must take the lowest ids first.
        let row = [1.0f32, 3.0, 3.0, 3.0, 0.0];
        let mut ws = Workspace::default();
        let mut d = Distribution::new(&row, 1.0, &mut ws).unwrap();
        let n = d.nucleus(&NucleusParams {
            top_p: 0.5,
            max_candidates: 10,
            rule: NucleusRule::Inclusive,
        });
        assert_eq!(n.size, 2);
        assert_eq!(&ws.order[..2], &[1, 2]);
        check_row(&row, 1.0, 0.5, 10);
    }

    #[test]
    fn neg_infinity_entries_get_zero_probability() {
        let mut row = vec![f32::NEG_INFINITY; 1000];
        row[3] = 1.0;
        row[500] = 1.0;
        row[999] = -2.0;
        check_row(&row, 1.0, 0.8, 10_000);
        check_row(&row, 0.7, 0.99, 10_000);
        let mut ws = Workspace::default();
        let mut d = Distribution::new(&row, 1.0, &mut ws).unwrap();
        for u in [0.0, 0.3, 0.6, 0.999_999] {
            let t = d.draw(&Truncation::NONE, u).token;
            assert!([3, 500, 999].contains(&t), "drew masked token {t}");
        }
    }

    #[test]
    fn near_one_hot_row_has_empty_strict_nucleus() {
        let mut row = vec![0.0f32; 5000];
        row[42] = 40.0;
        check_row(&row, 1.0, 0.8, 10_000);
        let mut ws = Workspace::default();
        let mut d = Distribution::new(&row, 1.0, &mut ws).unwrap();
        let strict = d.nucleus(&NucleusParams {
            top_p: 0.8,
            max_candidates: 10_000,
            rule: NucleusRule::Strict,
        });
        assert_eq!((strict.size, strict.entropy), (0, 0.0));
        let inclusive = d.nucleus(&NucleusParams {
            top_p: 0.8,
            max_candidates: 10_000,
            rule: NucleusRule::Inclusive,
        });
        assert_eq!((inclusive.size, inclusive.entropy), (1, 0.0));
        assert!(d.entropy() >= 0.0 && d.entropy() < 1e-10);
    }

    #[test]
    fn candidates_holding_less_than_p_give_all_of_them() {
        let row = vec![0.0f32; 1000];
        let mut ws = Workspace::default();
        let mut d = Distribution::new(&row, 1.0, &mut ws).unwrap();
        for rule in [NucleusRule::Strict, NucleusRule::Inclusive] {
            let n = d.nucleus(&NucleusParams {
                top_p: 0.8,
                max_candidates: 100,
                rule,
            });
            assert_eq!(n.size, 100);
            assert!((n.mass - 0.1).abs() < 1e-12);
            assert!((n.entropy - 100f64.ln()).abs() < 1e-9);
        }
    }

    #[test]
    fn rejects_rows_without_a_distribution() {
        let mut ws = Workspace::default();
        assert_eq!(
            Distribution::new(&[], 1.0, &mut ws).err(),
            Some(StatsError::Empty)
        );
        assert_eq!(
            Distribution::new(&[1.0, f32::NAN], 1.0, &mut ws).err(),
            Some(StatsError::NonFinite)
        );
        assert_eq!(
            Distribution::new(&[1.0, f32::INFINITY], 1.0, &mut ws).err(),
            Some(StatsError::NonFinite)
        );
        assert_eq!(
            Distribution::new(&[f32::NEG_INFINITY; 3], 1.0, &mut ws).err(),
            Some(StatsError::AllMasked)
        );
        assert_eq!(
            Distribution::new(&[1.0], 0.0, &mut ws).err(),
            Some(StatsError::BadTemperature)
        );
    }

    #[test]
    fn draw_frequencies_follow_the_truncated_distribution() {
        let row = [2.0f32, 1.0, 0.5, 0.0, -1.0];
        let r = Reference::new(&row, 1.0);
        let mut ws = Workspace::default();
        let mut d = Distribution::new(&row, 1.0, &mut ws).unwrap();
        let n = 20_000;
        for trunc in [
            Truncation::NONE,
            Truncation {
                top_k: Some(2),
                top_p: 1.0,
            },
            Truncation {
                top_k: None,
                top_p: 0.7,
            },
            Truncation {
                top_k: Some(4),
                top_p: 0.9,
            },
        ] {
            // The kept set by the definition: top-k, then inclusive top-p of the renormalised head.
            let ranked = r.ranking();
            let head: Vec<usize> = ranked
                .iter()
                .take(trunc.top_k.unwrap_or(5))
                .copied()
                .collect();
            let head_mass: f64 = head.iter().map(|&i| r.probs[i]).sum();
            let mut kept = Vec::new();
            let mut c = 0.0;
            for &i in &head {
                kept.push(i);
                c += r.probs[i] / head_mass;
                if c >= trunc.top_p {
                    break;
                }
            }
            let kept_mass: f64 = kept.iter().map(|&i| r.probs[i]).sum();
            let mut counts = [0usize; 5];
            for i in 0..n {
                let draw = d.draw(&trunc, (i as f64 + 0.5) / n as f64);
                counts[draw.token as usize] += 1;
                let expect = (r.probs[draw.token as usize] / kept_mass).ln();
                assert!((draw.sampling_logprob - expect).abs() < 1e-9);
                assert!((draw.logprob - r.probs[draw.token as usize].ln()).abs() < 1e-9);
            }
            for (id, &count) in counts.iter().enumerate() {
                let want = if kept.contains(&id) {
                    r.probs[id] / kept_mass
                } else {
                    0.0
                };
                let got = count as f64 / n as f64;
                assert!(
                    (got - want).abs() < 1e-3,
                    "{trunc:?} id {id}: {got} vs {want}"
                );
            }
        }
    }

    /// The alternatives are the reference's top tokens in its order, ties by id, with its
    /// log-probabilities under the full and the truncated distributions (a token the
    /// truncation cut has none there), and they give the drawn token the draw's own numbers.
    #[test]
    fn alternatives_are_the_top_tokens_of_both_distributions() {
        let mut rows = Rows(3);
        let mut row: Vec<f32> = (0..2_000)
            .map(|_| (rows.uniform() * 10.0 - 5.0) as f32)
            .collect();
        // Ties at the top, and masked tokens the alternatives can reach in a short row.
        row[7] = 9.0;
        row[3] = 9.0;
        let short = [1.0f32, f32::NEG_INFINITY, 0.5, f32::NEG_INFINITY];
        // Kept tokens whose weights underflow to 0 (gaps of 800 nats and more), and whose
        // weights do not but whose shares of the kept weight (2: two tied at the top) do.
        let steep = [0.0f32, -800.0, -900.0, -1000.0, -1100.0];
        let shallow = [0.0f32, 0.0, -744.3, -744.5, -745.0, -800.0];
        for (row, t) in [
            (&row[..], 0.8),
            (&row[..], 1.7),
            (&short[..], 1.0),
            (&steep[..], 1.0),
            (&shallow[..], 1.0),
        ] {
            let r = Reference::new(row, t);
            let ranked = r.ranking();
            for trunc in [
                Truncation::NONE,
                Truncation {
                    top_k: Some(3),
                    top_p: 1.0,
                },
                Truncation {
                    top_k: None,
                    top_p: 0.3,
                },
            ] {
                let mut ws = Workspace::default();
                let mut d = Distribution::new(row, t, &mut ws).unwrap();
                let draw = d.draw(&trunc, 0.37);
                let kept = draw.kept.map_or(row.len(), |(len, _)| len);
                let kept_mass: f64 = ranked[..kept].iter().map(|&i| r.probs[i]).sum();
                let alternatives = d.alternatives(20, &draw);
                let finite = row.iter().filter(|z| z.is_finite()).count();
                assert_eq!(alternatives.len(), 20.min(finite));
                for (rank, a) in alternatives.iter().enumerate() {
                    let id = ranked[rank];
                    assert_eq!(a.token as usize, id, "rank {rank}, {trunc:?}");
                    let p = r.probs[id];
                    assert!((a.logprob.exp() - p).abs() < 1e-12, "{a:?} vs {p}");
                    match a.sampling_logprob {
                        Some(slp) => {
                            assert!(rank < kept);
                            assert!(slp.is_finite(), "rank {rank}: {slp}");
                            assert!((slp.exp() - p / kept_mass).abs() < 1e-12);
                        }
                        None => assert!(rank >= kept, "rank {rank} of {kept} kept"),
                    }
                    if a.token == draw.token {
                        assert_eq!(a.logprob, draw.logprob);
                        assert_eq!(a.sampling_logprob, Some(draw.sampling_logprob));
                    }
                }
                if row.len() > shallow.len() {
                    assert_eq!(alternatives[0].token, 3, "ties rank by id");
                }
                assert!(d.alternatives(0, &draw).is_empty());
            }
        }
    }
}
