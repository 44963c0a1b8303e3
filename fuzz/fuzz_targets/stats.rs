//! Per-token statistics and the draw on arbitrary logits rows (NaN, ±inf, all equal, huge
//! vocabularies) under any parameters validation admits: never a panic; either a typed error or
//! a record whose values respect the bounds of `docs/statistics.md`.
#![no_main]

use arbitrary::Arbitrary;
use entroll::rollout::assemble::{peak_flags, peak_threshold};
use entroll::stats::distribution::{NucleusParams, NucleusRule, Truncation, Workspace};
use entroll::stats::sampling::{DrawKey, TokenSampler};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    temperature: f64,
    sampling_top_p: f64,
    top_k: Option<u32>,
    nucleus_top_p: f64,
    max_candidates: u32,
    inclusive: bool,
    peak_quantile: f64,
    seed: u64,
    index: u32,
    /// Selects tiling of the row to a huge vocabulary (see below).
    repeat: u8,
    row: Vec<f32>,
}

/// A value in (0, 1] as validation admits it, or 1.
fn unit(x: f64) -> f64 {
    if x > 0.0 && x <= 1.0 {
        x
    } else {
        1.0
    }
}

fuzz_target!(|input: Input| {
    let temperature = if input.temperature > 0.0 && input.temperature.is_finite() {
        input.temperature
    } else {
        1.0
    };
    // One input in eight is tiled to a huge vocabulary (up to ~200k entries); the rest stay
    // small, so most executions explore values rather than size.
    let repeat = if input.repeat % 8 == 7 {
        1 + (input.repeat as usize / 8 + 1) * 6_000 / input.row.len().max(1)
    } else {
        1
    };
    let row: Vec<f32> = input.row.iter().copied().cycle().take(input.row.len() * repeat).collect();
    let sampler = TokenSampler {
        temperature,
        truncation: Truncation {
            top_k: input.top_k.map(|k| k.max(1) as usize),
            top_p: unit(input.sampling_top_p),
        },
        nucleus: NucleusParams {
            top_p: unit(input.nucleus_top_p),
            max_candidates: input.max_candidates.max(1) as usize,
            rule: if input.inclusive { NucleusRule::Inclusive } else { NucleusRule::Strict },
        },
        key: DrawKey { seed: input.seed, prompt: 0, sample: 0 },
        mask: false,
        alternatives: (input.seed % 24) as usize,
    };
    let mut ws = Workspace::default();
    let Ok(step) = sampler.step_with_extras(&row, input.index, &mut ws) else {
        return;
    };
    let r = step.record;
    let v = row.len();
    let ln_v = (v as f64).ln();
    assert!((r.token as usize) < v);
    assert!(row[r.token as usize] > f32::NEG_INFINITY, "drew a masked token");
    assert!(r.logprob <= 1e-6 && r.logprob > f32::NEG_INFINITY, "{r:?}");
    assert!(r.sampling_logprob <= 1e-6 && r.sampling_logprob >= r.logprob - 1e-3, "{r:?}");
    assert!(r.entropy >= 0.0 && f64::from(r.entropy) <= ln_v + 1e-3, "{r:?} V={v}");
    assert!(r.top_p_size as usize <= v.min(sampler.nucleus.max_candidates), "{r:?}");
    assert!(r.top_p_mass >= 0.0 && r.top_p_mass <= 1.0 + 1e-5, "{r:?}");
    let ln_size = f64::from(r.top_p_size.max(1)).ln();
    assert!(r.top_p_entropy >= 0.0 && f64::from(r.top_p_entropy) <= ln_size + 1e-3, "{r:?}");
    // The alternatives: at most as many as asked, highest first, none masked, a prefix of them
    // kept; the drawn token among them with its own log-probs.
    let alternatives = &step.alternatives;
    assert!(alternatives.len() <= sampler.alternatives.min(v));
    for pair in alternatives.windows(2) {
        assert!(pair[0].logprob >= pair[1].logprob, "{alternatives:?}");
        assert!(pair[0].sampling_logprob.is_some() || pair[1].sampling_logprob.is_none());
    }
    for a in alternatives.iter() {
        assert!(row[a.token as usize] > f32::NEG_INFINITY, "a masked alternative");
        if a.token == r.token {
            assert_eq!(a.logprob as f32, r.logprob);
            assert_eq!(a.sampling_logprob.map(|lp| lp as f32), Some(r.sampling_logprob));
        }
    }
    // Peak flags over a response made of these values.
    let values = [r.entropy, r.top_p_entropy, r.logprob.abs()];
    let threshold = peak_threshold(&values, unit(input.peak_quantile));
    assert_eq!(peak_flags(&values, threshold).len(), values.len());
});
