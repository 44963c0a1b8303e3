//! Every Prometheus metric entroll exports: names, meanings, buckets, and the functions that
//! record them. Nothing else in the crate names a metric.
//!
//! Statistics are recorded once per finished request from its response (per token values into
//! histograms in one loop), never on the per-token generation path. The recorders take plain
//! values ([`ServedSample`], [`TokenMeans`], the `error_type` labels), so this module imports
//! no other layer.

use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests received on `/rollouts`.
pub const REQUESTS_RECEIVED: &str = "entroll_requests_received_total";
/// Requests answered with 200.
pub const REQUESTS_SUCCEEDED: &str = "entroll_requests_succeeded_total";
/// Requests that failed, by `error_type` (`validation`, `overloaded`, `engine`).
pub const REQUESTS_FAILED: &str = "entroll_requests_failed_total";
/// Requests admitted and not yet answered.
pub const REQUESTS_RUNNING: &str = "entroll_requests_running";
/// Sequences waiting for an engine slot.
pub const SEQUENCES_WAITING: &str = "entroll_sequences_waiting";
/// Sequences in the engine.
pub const SEQUENCES_RUNNING: &str = "entroll_sequences_running";
/// Engine steps refused because the sequence's request was gone (one per cancelled sequence
/// that was inside the engine: the engine drops it after the refusal).
pub const SEQUENCES_CANCELLED: &str = "entroll_sequences_cancelled_total";
/// Prompt tokens of finished sequences.
pub const PROMPT_TOKENS: &str = "entroll_prompt_tokens_total";
/// Generated tokens of finished sequences.
pub const GENERATED_TOKENS: &str = "entroll_generated_tokens_total";
/// Wall time of successful requests.
pub const REQUEST_DURATION: &str = "entroll_request_duration_seconds";
/// Time from admission until the request's first sequence entered the engine.
pub const QUEUE_DURATION: &str = "entroll_queue_duration_seconds";
/// Time from admission until the request's first generated token.
pub const TIME_TO_FIRST_TOKEN: &str = "entroll_time_to_first_token_seconds";
/// Sequences in the engine when a sequence entered it (the batch it joined).
pub const BATCH_SIZE: &str = "entroll_batch_size";
/// Mean time per generated token of a sequence (the engine's step time as that sequence saw it).
pub const STEP_DURATION: &str = "entroll_engine_step_seconds";
/// Full-vocabulary entropy of every generated token, nats.
pub const TOKEN_ENTROPY: &str = "entroll_token_entropy_nats";
/// SIREN nucleus entropy of every generated token, nats.
pub const TOKEN_TOP_P_ENTROPY: &str = "entroll_token_top_p_entropy_nats";
/// SIREN nucleus size of every generated token.
pub const TOKEN_TOP_P_SIZE: &str = "entroll_token_top_p_size";
/// Mean entropy of each response, nats.
pub const RESPONSE_ENTROPY_MEAN: &str = "entroll_response_entropy_mean_nats";
/// Length of each response, tokens.
pub const RESPONSE_LENGTH: &str = "entroll_response_length_tokens";
/// Response tokens with statistics (the denominator of the peak fraction).
pub const RESPONSE_TOKENS: &str = "entroll_response_tokens_total";
/// Peak-entropy tokens.
pub const PEAK_TOKENS: &str = "entroll_peak_tokens_total";
/// Token-mean entropy of the last request, nats.
pub const LAST_ENTROPY_MEAN: &str = "entroll_last_entropy_mean_nats";
/// Token-mean nucleus entropy of the last request, nats.
pub const LAST_TOP_P_ENTROPY_MEAN: &str = "entroll_last_top_p_entropy_mean_nats";
/// SIREN anchor of the last request, nats.
pub const LAST_SIREN_ANCHOR: &str = "entroll_last_siren_anchor_nats";
/// Verifier verdicts, by `status`.
pub const VERDICTS: &str = "entroll_verdicts_total";
/// Pass rate of each group with a gold answer.
pub const GROUP_PASS_RATE: &str = "entroll_group_pass_rate";
/// Groups with a gold answer.
pub const GROUPS: &str = "entroll_groups_total";
/// Groups whose rewards are all equal (zero variance).
pub const ZERO_VARIANCE_GROUPS: &str = "entroll_zero_variance_groups_total";
/// Mean reward of the last request with gold answers.
pub const LAST_REWARD_MEAN: &str = "entroll_last_reward_mean";
/// Weights version being served.
pub const WEIGHTS_VERSION: &str = "entroll_weights_version";
/// 1 while generation is paused (`/pause`, `/pause_generation`), by nothing else: requests
/// that arrive meanwhile wait.
pub const PAUSED: &str = "entroll_paused";
/// Weight updates, by `outcome` (`swapped`, `rejected`, `busy`: refused while `max_engines`
/// engines are in memory, and `stale`: the watched directory's highest version is below the
/// served one) and `source` (`http`: POST /weights, `watch`: the
/// watched directory).
pub const WEIGHT_UPDATES: &str = "entroll_weight_updates_total";
/// Samples a weight update stopped, by `in_flight`: `abort` (ended with what they drew),
/// `continue` (moved to the new weights at their next token), or `pause` (ended with what they
/// drew by a pause under `abort`).
pub const SAMPLES_INTERRUPTED: &str = "entroll_samples_interrupted_total";
/// Time to load new weights before the swap.
pub const WEIGHT_LOAD_DURATION: &str = "entroll_weight_load_seconds";
/// Prompt tokens the engine computed (native engine; a group's shared prompt counts once).
pub const PREFILL_TOKENS: &str = "entroll_engine_prefill_tokens_total";
/// The native engine's KV cache blocks, by `state`: `limit` (most it may hold), `allocated`
/// (its tensors' size), `used` (referenced by a sequence), `shared` (by more than one: a
/// group's prompt, a reused prefix), `cached` (in the prefix cache, used or not).
pub const KV_BLOCKS: &str = "entroll_engine_kv_blocks";
/// Sequences the native engine preempted for lack of cache blocks (recomputed later).
pub const KV_PREEMPTIONS: &str = "entroll_engine_kv_preemptions_total";
/// Cache blocks found in the prefix cache instead of computed.
pub const KV_PREFIX_HITS: &str = "entroll_engine_kv_prefix_hit_blocks_total";
/// Sequences in each decode forward (native engine).
pub const DECODE_BATCH: &str = "entroll_engine_decode_batch";
/// What decode steps cost the host, by `kind`: `upload` (host data copied to the device),
/// `launch` (entroll's own kernels) and `sync` (waits for the whole device). Per step they are
/// fixed by design (none grows with the layers); divided by the decode steps they show on a
/// GPU run whether a step is what docs/benchmarks.md models.
pub const DECODE_HOST_CALLS: &str = "entroll_engine_decode_host_calls_total";
/// Time of each phase of a native-engine iteration, by `phase`: `prefill` (prompt forwards),
/// `forward` (the decode forward), `copy` (logits to the host), `draw` (statistics and
/// sampling of every row). The engine never waits for a GPU between phases, so there `prefill`
/// and `forward` are the times to queue the work and `draw` includes waiting for the device.
pub const ENGINE_PHASE: &str = "entroll_engine_phase_seconds";

/// HTTP connections open.
pub const CONNECTIONS_OPEN: &str = "entroll_connections_open";
/// Connections answered 503 and closed because `max_connections` were open.
pub const CONNECTIONS_REFUSED: &str = "entroll_connections_refused_total";
/// Connections closed because the client missed a deadline, by `deadline`: `header` (a
/// request's headers, on a new or idle connection) or `write` (the client stopped reading).
pub const CONNECTION_TIMEOUTS: &str = "entroll_connection_timeouts_total";

/// Entropy buckets in nats: fine near 0, up to ln(151,936) ≈ 11.9.
const ENTROPY_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0,
];
/// Nucleus sizes, log scale from 0 to 10,000.
const SIZE_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];
/// Response lengths in tokens.
const LENGTH_BUCKETS: &[f64] = &[
    8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];
/// Request-level durations in seconds (CPU requests take minutes).
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];
/// Per-token step durations in seconds.
const STEP_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
];
/// Batch sizes.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Pass rates.
const RATE_BUCKETS: &[f64] = &[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// Installs the global Prometheus recorder with entroll's buckets and describes every metric.
/// `error_types` are the `error_type` labels a failed request can carry, each exported at 0.
pub fn install(error_types: &[&'static str]) -> anyhow::Result<Exporter> {
    let buckets: &[(&str, &[f64])] = &[
        (TOKEN_ENTROPY, ENTROPY_BUCKETS),
        (TOKEN_TOP_P_ENTROPY, ENTROPY_BUCKETS),
        (RESPONSE_ENTROPY_MEAN, ENTROPY_BUCKETS),
        (TOKEN_TOP_P_SIZE, SIZE_BUCKETS),
        (RESPONSE_LENGTH, LENGTH_BUCKETS),
        (REQUEST_DURATION, DURATION_BUCKETS),
        (QUEUE_DURATION, DURATION_BUCKETS),
        (TIME_TO_FIRST_TOKEN, DURATION_BUCKETS),
        (STEP_DURATION, STEP_BUCKETS),
        (BATCH_SIZE, BATCH_BUCKETS),
        (GROUP_PASS_RATE, RATE_BUCKETS),
        (WEIGHT_LOAD_DURATION, DURATION_BUCKETS),
        (DECODE_BATCH, BATCH_BUCKETS),
        (ENGINE_PHASE, STEP_BUCKETS),
    ];
    let mut builder = PrometheusBuilder::new();
    for (name, b) in buckets {
        builder = builder.set_buckets_for_metric(Matcher::Full((*name).to_string()), b)?;
    }
    let handle = builder.install_recorder()?;
    describe();
    export_counters_at_zero(error_types);
    gauge!(WEIGHTS_VERSION).set(0.0);
    gauge!(PAUSED).set(0.0);
    let process = metrics_process::Collector::default();
    process.describe();
    Ok(Exporter { handle, process })
}

/// Renders the Prometheus exposition: entroll's metrics plus the standard `process_*` ones
/// (resident memory, CPU seconds, threads, open file descriptors).
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

impl Exporter {
    /// The current exposition text, with the process metrics sampled now.
    pub fn render(&self) -> String {
        self.process.collect();
        self.handle.render()
    }

    /// Drains the histograms' expired buckets; call every few seconds.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

fn describe() {
    describe_counter!(
        REQUESTS_RECEIVED,
        Unit::Count,
        "Requests received on /rollouts."
    );
    describe_counter!(
        REQUESTS_SUCCEEDED,
        Unit::Count,
        "Requests answered with 200."
    );
    describe_counter!(
        REQUESTS_FAILED,
        Unit::Count,
        "Requests that failed, by error_type."
    );
    describe_gauge!(
        REQUESTS_RUNNING,
        Unit::Count,
        "Requests admitted and not yet answered."
    );
    describe_gauge!(
        SEQUENCES_WAITING,
        Unit::Count,
        "Sequences waiting for an engine slot."
    );
    describe_gauge!(SEQUENCES_RUNNING, Unit::Count, "Sequences in the engine.");
    describe_counter!(
        PROMPT_TOKENS,
        Unit::Count,
        "Prompt tokens of finished sequences."
    );
    describe_counter!(
        GENERATED_TOKENS,
        Unit::Count,
        "Generated tokens of finished sequences."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Wall time of successful requests."
    );
    describe_histogram!(
        QUEUE_DURATION,
        Unit::Seconds,
        "Admission to first sequence in the engine."
    );
    describe_histogram!(
        TIME_TO_FIRST_TOKEN,
        Unit::Seconds,
        "Admission to first generated token."
    );
    describe_histogram!(
        BATCH_SIZE,
        Unit::Count,
        "Sequences in the engine when a sequence joined."
    );
    describe_histogram!(
        STEP_DURATION,
        Unit::Seconds,
        "Mean time per generated token of a sequence."
    );
    describe_histogram!(
        TOKEN_ENTROPY,
        "Full-vocabulary entropy of generated tokens, nats."
    );
    describe_histogram!(
        TOKEN_TOP_P_ENTROPY,
        "SIREN nucleus entropy of generated tokens, nats."
    );
    describe_histogram!(
        TOKEN_TOP_P_SIZE,
        Unit::Count,
        "SIREN nucleus size of generated tokens."
    );
    describe_histogram!(
        RESPONSE_ENTROPY_MEAN,
        "Mean entropy of each response, nats."
    );
    describe_histogram!(
        RESPONSE_LENGTH,
        Unit::Count,
        "Length of each response in tokens."
    );
    describe_counter!(
        RESPONSE_TOKENS,
        Unit::Count,
        "Response tokens with statistics."
    );
    describe_counter!(PEAK_TOKENS, Unit::Count, "Peak-entropy tokens.");
    describe_gauge!(
        LAST_ENTROPY_MEAN,
        "Token-mean entropy of the last request, nats."
    );
    describe_gauge!(
        LAST_TOP_P_ENTROPY_MEAN,
        "Token-mean nucleus entropy of the last request."
    );
    describe_gauge!(LAST_SIREN_ANCHOR, "SIREN anchor of the last request, nats.");
    describe_counter!(VERDICTS, Unit::Count, "Verifier verdicts, by status.");
    describe_histogram!(
        GROUP_PASS_RATE,
        "Pass rate of each group with a gold answer."
    );
    describe_counter!(GROUPS, Unit::Count, "Groups with a gold answer.");
    describe_counter!(
        ZERO_VARIANCE_GROUPS,
        Unit::Count,
        "Groups whose rewards are all equal."
    );
    describe_counter!(
        WEIGHT_UPDATES,
        Unit::Count,
        "Weight updates, by outcome (swapped, rejected)."
    );
    describe_counter!(
        SAMPLES_INTERRUPTED,
        Unit::Count,
        "Samples a weight update stopped (abort) or moved to the new weights (continue)."
    );
    describe_histogram!(
        WEIGHT_LOAD_DURATION,
        Unit::Seconds,
        "Time to load new weights before the swap."
    );
    describe_gauge!(
        LAST_REWARD_MEAN,
        "Mean reward of the last request with gold answers."
    );
    describe_gauge!(WEIGHTS_VERSION, "Weights version being served.");
    describe_gauge!(PAUSED, "1 while generation is paused.");
    describe_counter!(
        PREFILL_TOKENS,
        Unit::Count,
        "Prompt tokens computed by the engine (shared prompts once)."
    );
    describe_gauge!(
        KV_BLOCKS,
        Unit::Count,
        "KV cache blocks by state (limit, allocated, used, shared, cached)."
    );
    describe_counter!(
        KV_PREEMPTIONS,
        Unit::Count,
        "Sequences preempted for lack of KV cache blocks."
    );
    describe_counter!(
        KV_PREFIX_HITS,
        Unit::Count,
        "KV cache blocks reused from the prefix cache."
    );
    describe_counter!(
        DECODE_HOST_CALLS,
        Unit::Count,
        "Uploads, kernel launches and device synchronisations of decode steps, by kind."
    );
    describe_histogram!(
        DECODE_BATCH,
        Unit::Count,
        "Sequences in each decode forward."
    );
    describe_histogram!(
        ENGINE_PHASE,
        Unit::Seconds,
        "Time per engine iteration phase (prefill, forward, copy, draw)."
    );
    describe_gauge!(CONNECTIONS_OPEN, Unit::Count, "HTTP connections open.");
    describe_counter!(
        CONNECTIONS_REFUSED,
        Unit::Count,
        "Connections refused with 503 because max_connections were open."
    );
    describe_counter!(
        CONNECTION_TIMEOUTS,
        Unit::Count,
        "Connections closed for a missed deadline, by deadline (header, write)."
    );
}

/// Every counter, and each label value a labelled one can take, exported at 0 before its
/// first event: a dashboard then shows 0 rather than "No data", and `rate()` has a baseline.
fn export_counters_at_zero(error_types: &[&'static str]) {
    for name in [
        REQUESTS_RECEIVED,
        REQUESTS_SUCCEEDED,
        SEQUENCES_CANCELLED,
        PROMPT_TOKENS,
        GENERATED_TOKENS,
        RESPONSE_TOKENS,
        PEAK_TOKENS,
        GROUPS,
        ZERO_VARIANCE_GROUPS,
        PREFILL_TOKENS,
        KV_PREEMPTIONS,
        KV_PREFIX_HITS,
        CONNECTIONS_REFUSED,
    ] {
        counter!(name).absolute(0);
    }
    for kind in ["upload", "launch", "sync"] {
        counter!(DECODE_HOST_CALLS, "kind" => kind).absolute(0);
    }
    for deadline in ["header", "write"] {
        counter!(CONNECTION_TIMEOUTS, "deadline" => deadline).absolute(0);
    }
    for &error_type in error_types {
        counter!(REQUESTS_FAILED, "error_type" => error_type).absolute(0);
    }
    for status in verifier::Status::ALL {
        counter!(VERDICTS, "status" => status.as_str()).absolute(0);
    }
    for outcome in ["swapped", "rejected", "busy", "stale"] {
        counter!(WEIGHT_UPDATES, "outcome" => outcome).absolute(0);
    }
    for in_flight in ["abort", "continue"] {
        counter!(SAMPLES_INTERRUPTED, "in_flight" => in_flight).absolute(0);
    }
}

/// A request arrived.
pub fn request_received() {
    counter!(REQUESTS_RECEIVED).increment(1);
}

/// A request failed with `error_type`.
pub fn request_failed(error_type: &'static str) {
    counter!(REQUESTS_FAILED, "error_type" => error_type).increment(1);
}

/// Tracks one admitted request while it lives.
pub struct RunningRequest;

impl RunningRequest {
    /// Counts a request as running until dropped.
    pub fn start() -> Self {
        gauge!(REQUESTS_RUNNING).increment(1.0);
        Self
    }
}

impl Drop for RunningRequest {
    fn drop(&mut self) {
        gauge!(REQUESTS_RUNNING).decrement(1.0);
    }
}

/// Tracks one open HTTP connection while it lives.
pub struct OpenConnection;

impl OpenConnection {
    /// Counts a connection as open until dropped.
    pub fn start() -> Self {
        gauge!(CONNECTIONS_OPEN).increment(1.0);
        Self
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        gauge!(CONNECTIONS_OPEN).decrement(1.0);
    }
}

/// A connection beyond `max_connections` was answered 503 and closed.
pub fn connection_refused() {
    counter!(CONNECTIONS_REFUSED).increment(1);
}

/// A connection was closed because its client missed `deadline` (`header`, `write`).
pub fn connection_timed_out(deadline: &'static str) {
    counter!(CONNECTION_TIMEOUTS, "deadline" => deadline).increment(1);
}

/// Tracks one sequence: waiting, then running, until dropped.
pub struct SequenceGauge {
    running: bool,
}

impl SequenceGauge {
    /// Counts a sequence as waiting.
    pub fn waiting() -> Self {
        gauge!(SEQUENCES_WAITING).increment(1.0);
        Self { running: false }
    }

    /// Moves the sequence from waiting to running; `in_engine` sequences were running when it
    /// joined.
    pub fn run(&mut self, in_engine: usize) {
        gauge!(SEQUENCES_WAITING).decrement(1.0);
        gauge!(SEQUENCES_RUNNING).increment(1.0);
        histogram!(BATCH_SIZE).record((in_engine + 1) as f64);
        self.running = true;
    }
}

impl Drop for SequenceGauge {
    fn drop(&mut self) {
        let name = if self.running {
            SEQUENCES_RUNNING
        } else {
            SEQUENCES_WAITING
        };
        gauge!(name).decrement(1.0);
    }
}

/// The engine asked for a step of a sequence whose request is gone, and was refused.
pub fn sequence_cancelled() {
    counter!(SEQUENCES_CANCELLED).increment(1);
}

/// The engine computed `tokens` prompt tokens in `took`.
pub fn prefilled(tokens: usize, took: Duration) {
    counter!(PREFILL_TOKENS).increment(tokens as u64);
    histogram!(ENGINE_PHASE, "phase" => "prefill").record(took.as_secs_f64());
}

/// A decode step of `batch` sequences: its forward, logits copy and draw times.
pub fn decode_step(batch: usize, forward: Duration, copy: Duration, draw: Duration) {
    histogram!(DECODE_BATCH).record(batch as f64);
    histogram!(ENGINE_PHASE, "phase" => "forward").record(forward.as_secs_f64());
    histogram!(ENGINE_PHASE, "phase" => "copy").record(copy.as_secs_f64());
    histogram!(ENGINE_PHASE, "phase" => "draw").record(draw.as_secs_f64());
}

/// The native engine's KV cache blocks now.
pub fn kv_blocks(limit: usize, allocated: usize, used: usize, shared: usize, cached: usize) {
    for (state, n) in [
        ("limit", limit),
        ("allocated", allocated),
        ("used", used),
        ("shared", shared),
        ("cached", cached),
    ] {
        gauge!(KV_BLOCKS, "state" => state).set(n as f64);
    }
}

/// Sequences preempted and prefix-cache blocks reused since the last call.
pub fn kv_events(preemptions: u64, prefix_hits: u64) {
    counter!(KV_PREEMPTIONS).increment(preemptions);
    counter!(KV_PREFIX_HITS).increment(prefix_hits);
}

/// The uploads, launches and synchronisations of one decode step.
pub fn decode_host_calls(uploads: u64, launches: u64, syncs: u64) {
    counter!(DECODE_HOST_CALLS, "kind" => "upload").increment(uploads);
    counter!(DECODE_HOST_CALLS, "kind" => "launch").increment(launches);
    counter!(DECODE_HOST_CALLS, "kind" => "sync").increment(syncs);
}

/// A sequence finished: its prompt and generated tokens and its mean step time.
pub fn sequence_finished(prompt_tokens: usize, generated: usize, engine_time: Duration) {
    counter!(PROMPT_TOKENS).increment(prompt_tokens as u64);
    counter!(GENERATED_TOKENS).increment(generated as u64);
    if generated > 0 {
        histogram!(STEP_DURATION).record(engine_time.as_secs_f64() / generated as f64);
    }
}

/// The token means of a request that drew tokens with statistics: the `entroll_last_*` gauges.
#[derive(Debug, Clone, Copy)]
pub struct TokenMeans {
    /// Token-mean entropy, nats.
    pub entropy: f64,
    /// Token-mean nucleus entropy, nats.
    pub top_p_entropy: f64,
    /// The SIREN anchor, nats.
    pub siren_anchor: f64,
}

/// Records a successful request: its wall time (`elapsed_ms`), its latencies, and the last
/// request's means (`means` when it drew tokens with statistics, `reward_mean` when it had gold
/// answers). Its groups are recorded by [`group_served`] as they are answered.
pub fn request_succeeded(
    elapsed_ms: u64,
    means: Option<TokenMeans>,
    reward_mean: Option<f64>,
    queue: Duration,
    first_token: Option<Duration>,
) {
    counter!(REQUESTS_SUCCEEDED).increment(1);
    histogram!(REQUEST_DURATION).record(elapsed_ms as f64 / 1000.0);
    histogram!(QUEUE_DURATION).record(queue.as_secs_f64());
    if let Some(t) = first_token {
        histogram!(TIME_TO_FIRST_TOKEN).record(t.as_secs_f64());
    }
    if let Some(means) = means {
        gauge!(LAST_ENTROPY_MEAN).set(means.entropy);
        gauge!(LAST_TOP_P_ENTROPY_MEAN).set(means.top_p_entropy);
        gauge!(LAST_SIREN_ANCHOR).set(means.siren_anchor);
    }
    if let Some(reward) = reward_mean {
        gauge!(LAST_REWARD_MEAN).set(reward);
    }
}

/// One answered sample, as [`group_served`] records it.
#[derive(Debug, Clone, Copy)]
pub struct ServedSample<'a> {
    /// Full-vocabulary entropy per token.
    pub entropy: &'a [f32],
    /// SIREN nucleus entropy per token.
    pub top_p_entropy: &'a [f32],
    /// SIREN nucleus size per token.
    pub top_p_size: &'a [u32],
    /// Sum of `entropy`.
    pub entropy_sum: f64,
    /// Generated tokens.
    pub length: usize,
    /// Peak tokens.
    pub peak_count: usize,
    /// The verifier's verdict, with a gold answer.
    pub verdict: Option<verifier::Status>,
}

/// Records every statistic of an answered group's samples, and with a gold answer its pass
/// rate and whether its rewards were all equal (`rewards`: `(pass_rate, all_equal)`).
pub fn group_served<'a>(
    samples: impl IntoIterator<Item = ServedSample<'a>>,
    rewards: Option<(f64, bool)>,
) {
    let (entropy, top_p_entropy, size) = (
        histogram!(TOKEN_ENTROPY),
        histogram!(TOKEN_TOP_P_ENTROPY),
        histogram!(TOKEN_TOP_P_SIZE),
    );
    let (mean_entropy, length) = (
        histogram!(RESPONSE_ENTROPY_MEAN),
        histogram!(RESPONSE_LENGTH),
    );
    let (mut tokens, mut peaks) = (0u64, 0u64);
    for s in samples {
        for ((&h, &hp), &k) in s.entropy.iter().zip(s.top_p_entropy).zip(s.top_p_size) {
            entropy.record(h as f64);
            top_p_entropy.record(hp as f64);
            size.record(k as f64);
        }
        if !s.entropy.is_empty() {
            mean_entropy.record(s.entropy_sum / s.entropy.len() as f64);
        }
        length.record(s.length as f64);
        tokens += s.entropy.len() as u64;
        peaks += s.peak_count as u64;
        if let Some(status) = s.verdict {
            counter!(VERDICTS, "status" => status.as_str()).increment(1);
        }
    }
    if let Some((pass_rate, all_equal)) = rewards {
        histogram!(GROUP_PASS_RATE).record(pass_rate);
        counter!(GROUPS).increment(1);
        if all_equal {
            counter!(ZERO_VARIANCE_GROUPS).increment(1);
        }
    }
    counter!(RESPONSE_TOKENS).increment(tokens);
    counter!(PEAK_TOKENS).increment(peaks);
}

/// New weights were swapped in (after `load` loading them), from `source` (`http`, `watch`).
pub fn weights_swapped(version: u64, load: Duration, source: &'static str) {
    counter!(WEIGHT_UPDATES, "outcome" => "swapped", "source" => source).increment(1);
    histogram!(WEIGHT_LOAD_DURATION).record(load.as_secs_f64());
    gauge!(WEIGHTS_VERSION).set(version as f64);
}

/// A weight update from `source` (`http`, `watch`) was refused; the old weights keep serving.
pub fn weights_rejected(source: &'static str) {
    counter!(WEIGHT_UPDATES, "outcome" => "rejected", "source" => source).increment(1);
}

/// A weight update from `source` was refused for now: `max_engines` engines are in memory.
pub fn weights_busy(source: &'static str) {
    counter!(WEIGHT_UPDATES, "outcome" => "busy", "source" => source).increment(1);
}

/// The watched directory's highest version cannot load: it is not above the served one, which
/// another update loaded (counted once per version).
pub fn weights_stale() {
    counter!(WEIGHT_UPDATES, "outcome" => "stale", "source" => "watch").increment(1);
}

/// Generation was paused (`true`) or resumed.
pub fn paused(on: bool) {
    gauge!(PAUSED).set(if on { 1.0 } else { 0.0 });
}

/// A weight update stopped a sample (`in_flight`: `abort`) or moved it to the new weights
/// (`continue`), or a pause under `abort` stopped it (`pause`).
pub fn sample_interrupted(in_flight: &'static str) {
    counter!(SAMPLES_INTERRUPTED, "in_flight" => in_flight).increment(1);
}

/// Every metric name, for checks that a dashboard queries only what entroll exports.
pub const ALL: &[&str] = &[
    REQUESTS_RECEIVED,
    REQUESTS_SUCCEEDED,
    REQUESTS_FAILED,
    REQUESTS_RUNNING,
    SEQUENCES_WAITING,
    SEQUENCES_RUNNING,
    PROMPT_TOKENS,
    GENERATED_TOKENS,
    REQUEST_DURATION,
    QUEUE_DURATION,
    TIME_TO_FIRST_TOKEN,
    BATCH_SIZE,
    STEP_DURATION,
    TOKEN_ENTROPY,
    TOKEN_TOP_P_ENTROPY,
    TOKEN_TOP_P_SIZE,
    RESPONSE_ENTROPY_MEAN,
    RESPONSE_LENGTH,
    RESPONSE_TOKENS,
    PEAK_TOKENS,
    LAST_ENTROPY_MEAN,
    LAST_TOP_P_ENTROPY_MEAN,
    LAST_SIREN_ANCHOR,
    VERDICTS,
    GROUP_PASS_RATE,
    GROUPS,
    ZERO_VARIANCE_GROUPS,
    LAST_REWARD_MEAN,
    WEIGHTS_VERSION,
    PAUSED,
    WEIGHT_UPDATES,
    SAMPLES_INTERRUPTED,
    WEIGHT_LOAD_DURATION,
    PREFILL_TOKENS,
    DECODE_BATCH,
    DECODE_HOST_CALLS,
    ENGINE_PHASE,
    CONNECTIONS_OPEN,
    CONNECTIONS_REFUSED,
    CONNECTION_TIMEOUTS,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Metric names in a PromQL expression, without histogram series suffixes.
    fn names_in(expr: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = expr;
        while let Some(start) = rest.find("entroll_") {
            let tail = &rest[start..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.push(base.to_string());
            rest = &tail[end..];
        }
        out
    }

    #[test]
    fn dashboard_queries_only_exported_metrics() {
        let text = std::fs::read_to_string("configs/grafana/dashboards/entroll.json").unwrap();
        let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(panels.len() >= 10);
        let mut used = Vec::new();
        for p in panels {
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
            for t in targets {
                let names = names_in(t["expr"].as_str().unwrap());
                assert!(!names.is_empty(), "{} queries no entroll metric", t["expr"]);
                for n in names {
                    assert!(
                        ALL.contains(&n.as_str()),
                        "dashboard queries unknown metric {n}"
                    );
                    used.push(n);
                }
            }
        }
        // The panels the observability issue asks for are there.
        for needed in [
            TOKEN_ENTROPY,
            TOKEN_TOP_P_ENTROPY,
            TOKEN_TOP_P_SIZE,
            PEAK_TOKENS,
            GROUP_PASS_RATE,
            ZERO_VARIANCE_GROUPS,
            GENERATED_TOKENS,
            REQUEST_DURATION,
            SEQUENCES_WAITING,
            WEIGHTS_VERSION,
        ] {
            assert!(used.iter().any(|u| u == needed), "no panel shows {needed}");
        }
    }

    #[test]
    fn names_are_unique_and_prefixed() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(a.starts_with("entroll_"));
            assert!(!ALL[i + 1..].contains(a), "{a} listed twice");
        }
        assert_eq!(
            names_in("rate(entroll_x_bucket[1m]) / entroll_y_count"),
            vec!["entroll_x", "entroll_y"]
        );
    }
}
