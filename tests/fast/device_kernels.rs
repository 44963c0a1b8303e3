//! The native engine with its device kernels on (the kernels' source compiled for the CPU: the
//! code that runs on the GPU, for the token statistics and draw, attention over the cache in
//! place and cache writes) against the engine with them off (host statistics, the row-wise
//! attention kernel, candle's scatter), on the same model and requests: the same statistics
//! for the same tokens, the same draws but where the attention kernels' rounding parts them,
//! and a response whose fields agree.

use entroll::engine::settings::DeviceKernels;
use serde_json::{json, Value};

use crate::{common, harness};

/// Prompts of several lengths (one token among them), groups, a truncated draw and the
/// inclusive nucleus under a small candidate cap: every input the kernel reads.
fn request() -> Value {
    json!({
        "prompts": [{"text": "The capital of France is"}, {"token_ids": [1]},
                    {"text": "Question: what is 2 + 2? Answer:"}],
        "group_size": 3,
        "sampling": {"max_tokens": 24, "seed": 17, "temperature": 0.9, "top_p": 0.9, "top_k": 40},
        "stats": {"nucleus": "inclusive", "top_k_candidates": 500, "top_p": 0.9}
    })
}

/// `request` on a server with the device kernels `on` or off: `/info`, and the response.
fn run(kernels: DeviceKernels) -> (Value, Value) {
    let server = harness::start(|c| c.device_kernels = kernels);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let info = common::get_json(&server.base, "/info").await;
        (info, common::rollout(&server, &request()).await)
    })
}

#[test]
fn the_device_kernels_draw_and_measure_as_the_host_does() {
    let (host_info, host) = run(DeviceKernels::Off);
    let (kernel_info, kernel) = run(DeviceKernels::On);
    assert_eq!(host_info["device_kernels"], false);
    assert_eq!(kernel_info["device_kernels"], true);
    let vocab = kernel_info["vocab_size"].as_u64().unwrap() as usize;
    let (h, k) = (common::samples(&host), common::samples(&kernel));
    assert_eq!(h.len(), 9);
    assert_eq!(h.len(), k.len());
    // The attention kernels sum in different orders, so the logits differ in their last bits
    // and a draw that lands within that of a boundary may part the samples; up to there the
    // inputs are the same tokens and every statistic must agree.
    let (mut alike, mut total) = (0, 0);
    for (i, (a, b)) in h.iter().zip(&k).enumerate() {
        let (ta, tb) = (
            common::floats(a, "token_ids"),
            common::floats(b, "token_ids"),
        );
        let prefix = ta.iter().zip(&tb).take_while(|(x, y)| x == y).count();
        (alike, total) = (alike + prefix, total + ta.len());
        for field in [
            "logprobs",
            "sampling_logprobs",
            "entropy",
            "top_p_mass",
            "top_p_entropy",
        ] {
            let (x, y) = (common::floats(a, field), common::floats(b, field));
            for (t, (x, y)) in x.iter().zip(&y).take(prefix.max(1)).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                    "sample {i} token {t}: {field}: kernels off {x} vs on {y}"
                );
            }
        }
        common::check_sample(b, vocab, 24, false);
    }
    assert!(
        alike * 10 >= total * 8,
        "only {alike} of {total} tokens drawn alike"
    );
}

#[tokio::test]
async fn rollouts_with_the_device_kernels_are_consistent() {
    let server = harness::start(|c| c.device_kernels = DeviceKernels::On);
    common::check_rollout_consistency(&server).await;
}

/// A decode step with the device kernels costs the host a fixed number of calls, whatever the
/// model's depth: six uploads (token ids, positions, the rows kept, the cache rows written,
/// the queries' cache rows, the rows' sampling inputs), one attention launch and one cache
/// write (keys and values together) per layer plus the statistics kernel, and one wait
/// (reading the drawn tokens back).
/// An index uploaded per layer, or a synchronisation between the forward and the draw, would
/// show here before it costs a GPU step its launches' latency.
#[tokio::test]
async fn a_decode_step_costs_a_fixed_number_of_uploads_launches_and_syncs() {
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(harness::tiny_model().join("config.json")).unwrap(),
    )
    .unwrap();
    let layers = config["num_hidden_layers"].as_f64().unwrap();
    let server = harness::start(|c| c.device_kernels = DeviceKernels::On);
    common::rollout(&server, &request()).await;
    let steps = server.metric("entroll_engine_decode_batch_count").await;
    assert!(steps >= 20.0, "{steps} decode steps");
    let per_step = |kind: &'static str| {
        let server = &server;
        async move {
            server
                .metric(&format!(
                    "entroll_engine_decode_host_calls_total{{kind=\"{kind}\"}}"
                ))
                .await
                / steps
        }
    };
    assert_eq!(per_step("upload").await, 6.0, "uploads per decode step");
    assert_eq!(
        per_step("launch").await,
        2.0 * layers + 1.0,
        "launches per decode step ({layers} layers)"
    );
    assert_eq!(per_step("sync").await, 1.0, "waits per decode step");
}
