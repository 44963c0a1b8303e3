//! entroll's own token draw: a counter-based RNG and the per-step sampler that measures a
//! logits row and picks the next token.
//!
//! The uniform for token `t` of sample `s` of prompt `p` under seed `k` is a pure function of
//! `(k, p, s, t)` (Philox4x32-10, the generator of Random123, cuRAND and PyTorch), so a seeded
//! sample never depends on batch composition, concurrency or thread count, and a GPU kernel can
//! reproduce the same stream.

use super::distribution::{
    Alternative, Distribution, NucleusParams, StatsError, Truncation, Workspace,
};

/// Philox4x32 with 10 rounds: maps a 128-bit counter and a 64-bit key to 128 random bits.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    const M0: u64 = 0xD251_1F53;
    const M1: u64 = 0xCD9E_8D57;
    const W0: u32 = 0x9E37_79B9;
    const W1: u32 = 0xBB67_AE85;
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = M0 * c[0] as u64;
        let p1 = M1 * c[2] as u64;
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}

/// Identifies one sample's random stream: `(request seed, prompt index, sample index)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrawKey {
    /// The request's seed.
    pub seed: u64,
    /// Index of the prompt in the request.
    pub prompt: u32,
    /// Index of the sample within its group.
    pub sample: u32,
}

impl DrawKey {
    /// The uniform in [0, 1) for token `token` of this sample (53 random bits).
    pub fn uniform(&self, token: u32) -> f64 {
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        let r = philox4x32_10([token, self.sample, self.prompt, 0], key);
        let bits = ((r[0] as u64) << 32 | r[1] as u64) >> 11;
        bits as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Everything measured about one generated token (f32, as returned to clients).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TokenRecord {
    /// The drawn token id.
    pub token: u32,
    /// `ln pi(y_t)`, full distribution at the sampling temperature.
    pub logprob: f32,
    /// `ln` probability under the truncated distribution actually sampled from.
    pub sampling_logprob: f32,
    /// Full-vocabulary entropy in nats.
    pub entropy: f32,
    /// SIREN nucleus size.
    pub top_p_size: u32,
    /// SIREN nucleus mass.
    pub top_p_mass: f32,
    /// Entropy of the renormalised nucleus.
    pub top_p_entropy: f32,
}

/// The tokens a truncated draw could pick (what top-k and top-p kept), so that a learner can
/// replay the sampling distribution: `logprob - sampling_logprob = ln mass`.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingMask {
    /// The kept token ids, ascending.
    pub ids: Box<[u32]>,
    /// Their probability under the full, untruncated distribution (at the temperature).
    pub mass: f64,
}

/// The per-step sampler of one sequence: measures each logits row and draws the next token.
#[derive(Clone, Debug)]
pub struct TokenSampler {
    /// Sampling temperature `T`.
    pub temperature: f64,
    /// Truncation of the sampling distribution.
    pub truncation: Truncation,
    /// SIREN nucleus parameters (statistics only).
    pub nucleus: NucleusParams,
    /// This sample's random stream.
    pub key: DrawKey,
    /// Whether [`TokenSampler::step_with_extras`] returns the kept set of truncated draws.
    pub mask: bool,
    /// How many of each step's most probable tokens [`TokenSampler::step_with_extras`]
    /// returns (0: none).
    pub alternatives: usize,
}

/// A step's record, and what its sampler was asked for besides.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The drawn token and its statistics.
    pub record: TokenRecord,
    /// The set a truncated draw was drawn from ([`TokenSampler::mask`]).
    pub mask: Option<SamplingMask>,
    /// The step's most probable tokens ([`TokenSampler::alternatives`]); empty when none are
    /// asked for.
    pub alternatives: Box<[Alternative]>,
}

impl TokenSampler {
    /// A sampler that draws at `temperature` after `truncation` with `key` as its seed and
    /// measures the smallest nucleus (one candidate): the draw of the no-statistics baseline.
    pub fn plain(temperature: f64, truncation: Truncation, key: u64) -> Self {
        Self {
            temperature,
            truncation,
            nucleus: NucleusParams {
                top_p: 1.0,
                max_candidates: 1,
                rule: super::distribution::NucleusRule::Strict,
            },
            key: DrawKey {
                seed: key,
                prompt: 0,
                sample: 0,
            },
            mask: false,
            alternatives: 0,
        }
    }

    /// Measures `logits` and draws token number `index` of the sequence.
    pub fn step(
        &self,
        logits: &[f32],
        index: u32,
        ws: &mut Workspace,
    ) -> Result<TokenRecord, StatsError> {
        Ok(self.measure(logits, index, ws, false, 0)?.record)
    }

    /// [`TokenSampler::step`], with the sampling mask of a truncated draw when this sampler
    /// returns masks, and the step's most probable tokens when it returns alternatives.
    pub fn step_with_extras(
        &self,
        logits: &[f32],
        index: u32,
        ws: &mut Workspace,
    ) -> Result<Step, StatsError> {
        self.measure(logits, index, ws, self.mask, self.alternatives)
    }

    fn measure(
        &self,
        logits: &[f32],
        index: u32,
        ws: &mut Workspace,
        mask: bool,
        alternatives: usize,
    ) -> Result<Step, StatsError> {
        let mut dist = Distribution::new(logits, self.temperature, ws)?;
        let nucleus = dist.nucleus(&self.nucleus);
        let draw = dist.draw(&self.truncation, self.key.uniform(index));
        let mask = draw.kept.filter(|_| mask).map(|(n, mass)| {
            let mut ids: Box<[u32]> = dist.ranked(n).into();
            ids.sort_unstable();
            SamplingMask { ids, mass }
        });
        let alternatives = dist.alternatives(alternatives, &draw).into();
        let record = TokenRecord {
            token: draw.token,
            logprob: draw.logprob as f32,
            sampling_logprob: draw.sampling_logprob as f32,
            entropy: dist.entropy() as f32,
            top_p_size: nucleus.size as u32,
            top_p_mass: nucleus.mass as f32,
            top_p_entropy: nucleus.entropy as f32,
        };
        Ok(Step {
            record,
            mask,
            alternatives,
        })
    }

    /// Draws token number `index` and measures nothing else: the no-statistics baseline.
    pub fn draw_only(
        &self,
        logits: &[f32],
        index: u32,
        ws: &mut Workspace,
    ) -> Result<u32, StatsError> {
        let mut dist = Distribution::new(logits, self.temperature, ws)?;
        Ok(dist.draw(&self.truncation, self.key.uniform(index)).token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::distribution::NucleusRule;

    #[test]
    fn philox_matches_random123_known_answers() {
        // Known-answer vectors from Random123's kat_vectors (philox4x32, 10 rounds).
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniforms_are_in_range_and_depend_on_every_key_part() {
        let base = DrawKey {
            seed: 42,
            prompt: 1,
            sample: 2,
        };
        let u = base.uniform(3);
        assert!((0.0..1.0).contains(&u));
        assert_ne!(u, base.uniform(4));
        assert_ne!(u, DrawKey { seed: 43, ..base }.uniform(3));
        assert_ne!(u, DrawKey { prompt: 0, ..base }.uniform(3));
        assert_ne!(u, DrawKey { sample: 0, ..base }.uniform(3));
        assert_eq!(u, base.uniform(3));
        // Mean of many uniforms is near 1/2 (standard error 1/sqrt(12 n)).
        let n = 100_000;
        let mean = (0..n).map(|t| base.uniform(t)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 4.0 / (12.0 * n as f64).sqrt());
    }

    #[test]
    fn step_is_deterministic_and_consistent() {
        let logits: Vec<f32> = (0..500).map(|i| ((i * 37) % 101) as f32 / 17.0).collect();
        let sampler = TokenSampler {
            temperature: 0.9,
            truncation: Truncation::NONE,
            nucleus: NucleusParams {
                top_p: 0.8,
                max_candidates: 10_000,
                rule: NucleusRule::Strict,
            },
            key: DrawKey {
                seed: 7,
                prompt: 0,
                sample: 0,
            },
            mask: false,
            alternatives: 0,
        };
        let mut ws = Workspace::default();
        let a = sampler.step(&logits, 5, &mut ws).unwrap();
        let b = sampler.step(&logits, 5, &mut ws).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.logprob, a.sampling_logprob);
        assert!(a.logprob <= 0.0 && a.entropy >= 0.0 && a.entropy <= (500f32).ln());
        assert!(a.top_p_mass < 0.8 && a.top_p_entropy <= a.entropy + 1e-6);
    }
}
