//! Reads the server's own figures from `GET /metrics` (Prometheus text): memory, tokens,
//! engine steps, batch sizes, cancellations, and the native engine's per-phase step times.

use serde::Serialize;

/// One reading of the server's counters and gauges.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Snapshot {
    /// Seconds since the load started.
    pub at_s: f64,
    /// `process_resident_memory_bytes`.
    pub resident_bytes: f64,
    /// `entroll_generated_tokens_total`.
    pub generated_tokens: f64,
    /// `entroll_engine_step_seconds` sum and count.
    pub step_seconds_sum: f64,
    pub steps: f64,
    /// `entroll_batch_size` sum and count.
    pub batch_size_sum: f64,
    pub batches: f64,
    /// `entroll_sequences_cancelled_total`.
    pub sequences_cancelled: f64,
    /// `entroll_sequences_running` + `entroll_sequences_waiting`.
    pub sequences_held: f64,
    /// `entroll_engine_decode_batch` sum and count (native engine).
    pub decode_batch_sum: f64,
    pub decode_steps: f64,
    /// `entroll_engine_prefill_tokens_total` (native engine).
    pub prefill_tokens: f64,
    /// `entroll_engine_phase_seconds_sum` by phase: prefill, forward, copy, draw.
    pub phase_seconds: [f64; 4],
}

/// The native engine's iteration phases, as labelled in `entroll_engine_phase_seconds`.
pub const PHASES: [&str; 4] = ["prefill", "forward", "copy", "draw"];

/// Sum of every sample of `name` (all label sets), or 0 if absent.
fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            // `name value` or `name{labels} value`, not a longer name sharing the prefix.
            let rest = match rest.chars().next()? {
                ' ' => rest,
                '{' => &rest[rest.find('}')? + 1..],
                _ => return None,
            };
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// The sample of `name` whose labels include `label` (`phase="draw"`), or 0 if absent.
fn labelled(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.split_once('}')?;
            labels.split(',').any(|l| l == label).then_some(value)?;
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Parses an exposition text.
pub fn parse(text: &str, at_s: f64) -> Snapshot {
    Snapshot {
        at_s,
        resident_bytes: value(text, "process_resident_memory_bytes"),
        generated_tokens: value(text, "entroll_generated_tokens_total"),
        step_seconds_sum: value(text, "entroll_engine_step_seconds_sum"),
        steps: value(text, "entroll_engine_step_seconds_count"),
        batch_size_sum: value(text, "entroll_batch_size_sum"),
        batches: value(text, "entroll_batch_size_count"),
        sequences_cancelled: value(text, "entroll_sequences_cancelled_total"),
        sequences_held: value(text, "entroll_sequences_running")
            + value(text, "entroll_sequences_waiting"),
        decode_batch_sum: value(text, "entroll_engine_decode_batch_sum"),
        decode_steps: value(text, "entroll_engine_decode_batch_count"),
        prefill_tokens: value(text, "entroll_engine_prefill_tokens_total"),
        phase_seconds: PHASES.map(|p| {
            labelled(
                text,
                "entroll_engine_phase_seconds_sum",
                &format!("phase=\"{p}\""),
            )
        }),
    }
}

/// Scrapes `{url}/metrics`.
pub async fn scrape(client: &reqwest::Client, url: &str, at_s: f64) -> anyhow::Result<Snapshot> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(parse(&text, at_s))
}

/// What the server did between two snapshots.
#[derive(Debug, Serialize)]
pub struct ServerDelta {
    /// Tokens the server generated (including those of cancelled requests).
    pub generated_tokens: f64,
    /// Engine steps and their mean duration.
    pub steps: f64,
    pub mean_step_ms: Option<f64>,
    /// Mean sequences per engine step.
    pub mean_batch: Option<f64>,
    /// Sequences stopped because their client left or their deadline passed.
    pub sequences_cancelled: f64,
    /// Decode forwards of the native engine and their mean batch.
    pub decode_steps: f64,
    pub mean_decode_batch: Option<f64>,
    /// Prompt tokens the native engine computed.
    pub prefill_tokens: f64,
    /// Native engine: seconds spent in each phase (prefill, forward, copy, draw), in all.
    pub phase_seconds: std::collections::BTreeMap<&'static str, f64>,
    /// Native engine: mean milliseconds per decode step in the forward, copy and draw phases.
    pub decode_step_ms: std::collections::BTreeMap<&'static str, f64>,
}

impl ServerDelta {
    /// The difference `end - start`.
    pub fn between(start: &Snapshot, end: &Snapshot) -> Self {
        let steps = end.steps - start.steps;
        let batches = end.batches - start.batches;
        let decode_steps = end.decode_steps - start.decode_steps;
        let phase: Vec<f64> = (0..PHASES.len())
            .map(|i| end.phase_seconds[i] - start.phase_seconds[i])
            .collect();
        Self {
            generated_tokens: end.generated_tokens - start.generated_tokens,
            steps,
            mean_step_ms: (steps > 0.0)
                .then(|| 1e3 * (end.step_seconds_sum - start.step_seconds_sum) / steps),
            mean_batch: (batches > 0.0)
                .then(|| (end.batch_size_sum - start.batch_size_sum) / batches),
            sequences_cancelled: end.sequences_cancelled - start.sequences_cancelled,
            decode_steps,
            mean_decode_batch: (decode_steps > 0.0)
                .then(|| (end.decode_batch_sum - start.decode_batch_sum) / decode_steps),
            prefill_tokens: end.prefill_tokens - start.prefill_tokens,
            phase_seconds: PHASES.iter().copied().zip(phase.iter().copied()).collect(),
            decode_step_ms: if decode_steps > 0.0 {
                PHASES[1..]
                    .iter()
                    .copied()
                    .zip(phase[1..].iter().map(|s| 1e3 * s / decode_steps))
                    .collect()
            } else {
                Default::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_label_sets_and_ignores_longer_names() {
        let text = "# HELP x\n\
                    entroll_generated_tokens_total 12\n\
                    entroll_generated_tokens_total_extra 99\n\
                    entroll_engine_step_seconds_sum{engine=\"a\"} 1.5\n\
                    entroll_engine_step_seconds_sum{engine=\"b\"} 0.5\n\
                    entroll_engine_step_seconds_count 4\n\
                    process_resident_memory_bytes 1e6\n\
                    entroll_engine_phase_seconds_sum{phase=\"draw\"} 0.25\n\
                    entroll_engine_phase_seconds_sum{phase=\"forward\"} 2\n\
                    entroll_engine_decode_batch_sum 40\n\
                    entroll_engine_decode_batch_count 10\n";
        let s = parse(text, 0.0);
        assert_eq!(s.phase_seconds, [0.0, 2.0, 0.0, 0.25]);
        assert_eq!(s.generated_tokens, 12.0);
        assert_eq!(s.step_seconds_sum, 2.0);
        assert_eq!(s.resident_bytes, 1e6);
        let d = ServerDelta::between(&Snapshot::default(), &s);
        assert_eq!(d.mean_step_ms, Some(500.0));
        assert_eq!(d.mean_batch, None);
        assert_eq!(d.mean_decode_batch, Some(4.0));
        assert_eq!(d.decode_step_ms["forward"], 200.0);
        assert_eq!(d.decode_step_ms["draw"], 25.0);
    }
}
