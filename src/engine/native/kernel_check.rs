//! `entroll check-kernels`: the token-statistics kernel run on a device, against its CPU
//! harness bit for bit and against the host sampler, on generated adversarial rows. On a new
//! GPU machine this is the first check (`loadtest/gpu/check.sh` runs it): the PTX and the
//! harness are one source, so any difference is a compiler or hardware disagreement the tests
//! on the CPU could not see.

use candle_core::{Device, Tensor};

use super::kernels::{token_stats_cpu_with_tops, RowIn, RowOut};
use super::token_stats;
use crate::stats::distribution::{NucleusParams, NucleusRule, Truncation, Workspace};
use crate::stats::sampling::{DrawKey, TokenSampler};
use crate::stats::test_rng::TestRng;

/// The rows a check runs: each adversarial case the kernel's tests use, then `random` rows of
/// N(0, 2²) logits.
pub fn adversarial_rows(vocab: usize, random: usize, seed: u64) -> Vec<(&'static str, Vec<f32>)> {
    let v = vocab;
    let mut rng = TestRng(seed);
    let mut rows = vec![("flat", vec![0.5f32; v])];
    // Ties at the top and -inf entries (masked tokens).
    let mut tied: Vec<f32> = (0..v).map(|_| (rng.normal() * 2.0) as f32).collect();
    for i in (0..v).step_by(997) {
        tied[i] = 9.0;
    }
    for i in (5..v).step_by(13) {
        tied[i] = f32::NEG_INFINITY;
    }
    rows.push(("ties and -inf", tied));
    let mut peaked: Vec<f32> = (0..v).map(|_| rng.normal() as f32).collect();
    peaked[v / 2] = 60.0;
    rows.push(("near one-hot", peaked));
    rows.push((
        "bf16-rounded",
        (0..v)
            .map(|_| bf16_round((rng.normal() * 4.0) as f32))
            .collect(),
    ));
    rows.push(("wide (σ = 6)", rng.row(v, 6.0)));
    let mut single = vec![f32::NEG_INFINITY; v];
    single[v - 1] = -3.0;
    rows.push(("one finite entry", single));
    let mut nan = rng.row(v, 1.0);
    nan[v / 3] = f32::NAN;
    rows.push(("NaN (flagged)", nan));
    rows.push(("all -inf (flagged)", vec![f32::NEG_INFINITY; v]));
    for _ in 0..random {
        rows.push(("random", rng.row(v, 2.0)));
    }
    rows
}

/// Rounds to bf16 (to nearest, ties to even), as a bf16 model's logits are.
pub fn bf16_round(x: f32) -> f32 {
    let bits = x.to_bits();
    f32::from_bits((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF_0000)
}

/// The samplers a check runs every row with: the statistics' defaults, a truncated draw with
/// the inclusive nucleus and 20 alternatives, a tight nucleus over the whole vocabulary with 5,
/// and a greedy draw whose 7 candidates are fewer than its 20 alternatives.
pub fn settings(vocab: usize) -> Vec<(&'static str, TokenSampler)> {
    let key = DrawKey {
        seed: 0x5EED_0000_0000_0007,
        prompt: 3,
        sample: 1,
    };
    let sampler =
        |temperature, truncation, top_p, max_candidates, rule, alternatives| TokenSampler {
            temperature,
            truncation,
            nucleus: NucleusParams {
                top_p,
                max_candidates,
                rule,
            },
            key,
            mask: false,
            alternatives,
        };
    vec![
        (
            "T 1, untruncated, strict p 0.8 K 10000",
            sampler(1.0, Truncation::NONE, 0.8, 10_000, NucleusRule::Strict, 0),
        ),
        (
            "T 0.7, top-k 50 top-p 0.95, inclusive p 0.95 K 1024, 20 alternatives",
            sampler(
                0.7,
                Truncation {
                    top_k: Some(50),
                    top_p: 0.95,
                },
                0.95,
                1_024,
                NucleusRule::Inclusive,
                20,
            ),
        ),
        (
            "T 1.3, top-p 0.5, strict p 0.999 K V+5, 5 alternatives",
            sampler(
                1.3,
                Truncation {
                    top_k: None,
                    top_p: 0.5,
                },
                0.999,
                vocab + 5,
                NucleusRule::Strict,
                5,
            ),
        ),
        (
            "T 1, top-k 1, inclusive p 0.3 K 7, 20 alternatives",
            sampler(
                1.0,
                Truncation {
                    top_k: Some(1),
                    top_p: 1.0,
                },
                0.3,
                7,
                NucleusRule::Inclusive,
                20,
            ),
        ),
    ]
}

/// What one setting gave over all rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The setting's name.
    pub setting: &'static str,
    /// Rows run.
    pub rows: usize,
    /// Rows whose device result (its alternatives included) equals the CPU harness's bit for
    /// bit.
    pub identical: usize,
    /// The first row that differs, by case name.
    pub first_difference: Option<&'static str>,
    /// Rows (of those the host measures) where the device drew the host sampler's token and
    /// flagged the rows the host refuses.
    pub host_tokens: usize,
    /// Rows the host compared.
    pub host_rows: usize,
    /// The largest difference of a statistic from the host sampler's (nats, or mass).
    pub worst_host_difference: f64,
}

impl Outcome {
    /// Whether the device agreed everywhere it must.
    pub fn passed(&self) -> bool {
        self.identical == self.rows && self.host_tokens == self.host_rows
    }
}

/// Runs every setting over `rows` on `device`, against the harness and the host sampler.
pub fn check(
    device: &Device,
    vocab: usize,
    rows: &[(&'static str, Vec<f32>)],
) -> candle_core::Result<Vec<Outcome>> {
    let flat: Vec<f32> = rows.iter().flat_map(|(_, r)| r.iter().copied()).collect();
    let logits = Tensor::from_slice(&flat, (rows.len(), vocab), device)?;
    let mut outcomes = Vec::new();
    let mut ws = Workspace::default();
    for (setting, sampler) in settings(vocab) {
        let inputs: Vec<RowIn> = (0..rows.len())
            .map(|i| RowIn::for_token(&sampler, i as u32))
            .collect();
        let (on_device, device_tops) = token_stats::run(&logits, inputs.clone())?;
        let (harness, harness_tops) = token_stats_cpu_with_tops(&flat, vocab, &inputs);
        let mut outcome = Outcome {
            setting,
            rows: rows.len(),
            identical: 0,
            first_difference: None,
            host_tokens: 0,
            host_rows: 0,
            worst_host_difference: 0.0,
        };
        for (i, ((case, row), (device_out, harness_out))) in
            rows.iter().zip(on_device.iter().zip(&harness)).enumerate()
        {
            let tops_agree = token_stats::as_bytes(device_tops.get(i..=i).unwrap_or_default())
                == token_stats::as_bytes(harness_tops.get(i..=i).unwrap_or_default());
            if same_bits(device_out, harness_out) && tops_agree {
                outcome.identical += 1;
            } else if outcome.first_difference.is_none() {
                outcome.first_difference = Some(case);
            }
            outcome.host_rows += 1;
            match (sampler.step(row, i as u32, &mut ws), device_out.record()) {
                (Ok(host), Ok(kernel)) if host.token == kernel.token => {
                    outcome.host_tokens += 1;
                    for (a, b) in [
                        (host.logprob, kernel.logprob),
                        (host.sampling_logprob, kernel.sampling_logprob),
                        (host.entropy, kernel.entropy),
                        (host.top_p_mass, kernel.top_p_mass),
                        (host.top_p_entropy, kernel.top_p_entropy),
                    ] {
                        let d = (a as f64 - b as f64).abs();
                        outcome.worst_host_difference = outcome.worst_host_difference.max(d);
                    }
                }
                (Err(_), Err(_)) => outcome.host_tokens += 1,
                _ => {}
            }
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Whether two results are the same bits (NaN payloads included).
fn same_bits(a: &RowOut, b: &RowOut) -> bool {
    token_stats::as_bytes(std::slice::from_ref(a)) == token_stats::as_bytes(std::slice::from_ref(b))
}

/// The outcomes as a markdown table.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| setting | rows | bit-identical to the CPU harness | host sampler's tokens | largest statistic difference from the host |\n|---|---|---|---|---|\n",
    );
    for o in outcomes {
        out.push_str(&format!(
            "| {} | {} | {}{} | {}/{} | {:.1e} |\n",
            o.setting,
            o.rows,
            o.identical,
            o.first_difference
                .map_or(String::new(), |case| format!(" (first difference: {case})")),
            o.host_tokens,
            o.host_rows,
            o.worst_host_difference
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the CPU the device is the harness itself: every row is identical, and the host
    /// agrees on every token. A changed bit in one output is seen.
    #[test]
    fn the_cpu_check_passes_and_sees_a_difference() {
        let vocab = 5_000;
        let rows = adversarial_rows(vocab, 4, 9);
        let outcomes = check(&Device::Cpu, vocab, &rows).unwrap();
        assert_eq!(outcomes.len(), settings(vocab).len());
        for o in &outcomes {
            assert!(o.passed(), "{o:?}");
            assert_eq!(o.rows, rows.len());
            assert!(o.worst_host_difference < 1e-5, "{o:?}");
        }
        let a = RowOut {
            entropy: 1.0,
            ..RowOut::default()
        };
        let b = RowOut {
            entropy: f64::from_bits(1.0f64.to_bits() + 1),
            ..a
        };
        assert!(same_bits(&a, &a) && !same_bits(&a, &b));
        assert!(table(&outcomes).lines().count() == 2 + outcomes.len());
    }
}
