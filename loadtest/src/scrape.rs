//! Reads the server's own figures from `GET /metrics` (Prometheus text): memory, tokens,
//! engine steps, batch sizes, cancellations.

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
}

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
}

impl ServerDelta {
    /// The difference `end - start`.
    pub fn between(start: &Snapshot, end: &Snapshot) -> Self {
        let steps = end.steps - start.steps;
        let batches = end.batches - start.batches;
        Self {
            generated_tokens: end.generated_tokens - start.generated_tokens,
            steps,
            mean_step_ms: (steps > 0.0)
                .then(|| 1e3 * (end.step_seconds_sum - start.step_seconds_sum) / steps),
            mean_batch: (batches > 0.0)
                .then(|| (end.batch_size_sum - start.batch_size_sum) / batches),
            sequences_cancelled: end.sequences_cancelled - start.sequences_cancelled,
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
                    process_resident_memory_bytes 1e6\n";
        let s = parse(text, 0.0);
        assert_eq!(s.generated_tokens, 12.0);
        assert_eq!(s.step_seconds_sum, 2.0);
        assert_eq!(s.resident_bytes, 1e6);
        let d = ServerDelta::between(&Snapshot::default(), &s);
        assert_eq!(d.mean_step_ms, Some(500.0));
        assert_eq!(d.mean_batch, None);
    }
}
