//! `/rollouts`, `/health` and `/info` on the real server, engine and model.

use crate::common;

use common::{check_sample, floats, quantile_linear, rollout, samples, server};
use serde_json::json;

#[tokio::test]
async fn rollout_returns_groups_with_consistent_statistics() {
    common::check_rollout_consistency(server()).await;
}

#[tokio::test]
async fn token_id_prompts_reproduce_text_prompts() {
    let s = server();
    let by_text = rollout(
        s,
        &json!({"prompts": [{"text": "Once upon a time"}], "group_size": 2,
                "sampling": {"max_tokens": 8, "seed": 5}}),
    )
    .await;
    let ids = by_text["groups"][0]["prompt_token_ids"].clone();
    let by_ids = rollout(
        s,
        &json!({"prompts": [{"token_ids": ids}], "group_size": 2,
                "sampling": {"max_tokens": 8, "seed": 5}}),
    )
    .await;
    assert_eq!(
        by_text["groups"][0]["samples"],
        by_ids["groups"][0]["samples"]
    );
}

#[tokio::test]
async fn seeded_samples_are_identical_under_concurrent_load() {
    let s = server();
    let target = json!({
        "prompts": [{"text": "A list of prime numbers:"}, {"messages": [{"role": "user", "content": "Name a color."}]}],
        "group_size": 3,
        "sampling": {"max_tokens": 10, "seed": 1234}
    });
    let alone = rollout(s, &target).await;
    // The same request again, now batched with other traffic of other lengths and seeds.
    let noise = |i: u64| {
        json!({"prompts": [{"text": format!("Noise request number {i} says")}], "group_size": 4,
               "sampling": {"max_tokens": 6 + i as usize, "seed": i}})
    };
    let (n1, n2, n3) = (noise(1), noise(2), noise(3));
    let (loaded, _, _, _) = tokio::join!(
        rollout(s, &target),
        rollout(s, &n1),
        rollout(s, &n2),
        rollout(s, &n3)
    );
    assert_eq!(alone["groups"], loaded["groups"]);
    // A different seed gives different samples.
    let mut other = target.clone();
    other["sampling"]["seed"] = json!(4321);
    let reseeded = rollout(s, &other).await;
    assert_ne!(alone["groups"], reseeded["groups"]);
}

#[tokio::test]
async fn truncated_sampling_reports_renormalised_logprobs() {
    let s = server();
    // top_k = 1 is greedy: every sample is the same and has sampling log-prob 0.
    let greedy = rollout(
        s,
        &json!({"prompts": [{"text": "1, 2, 3, 4,"}], "group_size": 2,
                "sampling": {"max_tokens": 6, "top_k": 1, "seed": 3}}),
    )
    .await;
    let g = samples(&greedy);
    assert_eq!(g[0]["token_ids"], g[1]["token_ids"]);
    assert!(floats(g[0], "sampling_logprobs").iter().all(|&x| x == 0.0));
    assert!(floats(g[0], "logprobs").iter().all(|&x| x <= 0.0));
    // top_p = 0.5: the renormalised log-prob is at least the full one.
    let nucleus = rollout(
        s,
        &json!({"prompts": [{"text": "My favourite animal is the"}], "group_size": 2,
                "sampling": {"max_tokens": 6, "top_p": 0.5, "seed": 3}}),
    )
    .await;
    for sample in samples(&nucleus) {
        check_sample(sample, 49152, 6, false);
        let (lp, slp) = (
            floats(sample, "logprobs"),
            floats(sample, "sampling_logprobs"),
        );
        assert!(lp.iter().zip(&slp).all(|(a, b)| b >= a));
    }
}

#[tokio::test]
async fn batch_peak_scope_and_inclusive_nucleus() {
    let s = server();
    let r = rollout(
        s,
        &json!({"prompts": [{"text": "The weather today"}, {"text": "In mathematics,"}],
                "group_size": 2,
                "sampling": {"max_tokens": 10, "seed": 9},
                "stats": {"peak_scope": "batch", "peak_on": "entropy", "nucleus": "inclusive",
                          "top_p": 0.9}}),
    )
    .await;
    let th = r["summary"]["peak_threshold"]
        .as_f64()
        .expect("batch threshold");
    let all = samples(&r);
    let every: Vec<f64> = all.iter().flat_map(|s| floats(s, "entropy")).collect();
    // The server's threshold is taken on its f32 values; these went through JSON decimals.
    assert!((quantile_linear(&every, 0.8) - th).abs() < 1e-5);
    let th = quantile_linear(&every, 0.8);
    for sample in all {
        let h = floats(sample, "entropy");
        let flags = common::flags(sample, "peak");
        assert_eq!(flags, h.iter().map(|&x| x > th).collect::<Vec<_>>());
        // Inclusive nucleus: it reaches p unless capped, so it always has a member.
        for (&size, &mass) in floats(sample, "top_p_size")
            .iter()
            .zip(&floats(sample, "top_p_mass"))
        {
            assert!(size >= 1.0);
            assert!(mass >= 0.9 - 1e-6 || size == 10_000.0);
        }
    }
}

#[tokio::test]
async fn health_and_info_describe_the_server() {
    let s = server();
    let c = common::client();
    let health = c.get(format!("{}/health", s.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let info = common::get_json(&s.base, "/info").await;
    assert_eq!(info["vocab_size"], 49152);
    // The default model is a Llama GGUF file, which the native engine serves.
    assert_eq!(info["engine"], "native");
    assert_eq!(info["sampler"], "entroll");
    assert_eq!(info["device_kernels"], false);
    assert_eq!(info["weights_version"], 0);
    assert_eq!(info["limits"]["max_running_sequences"], 32);
    // The native engine batches every running sequence: its batch is max_running_sequences.
    assert_eq!(info["engine_batch"], 32);
    assert_eq!(info["defaults"]["stats"]["top_k_candidates"], 10_000);
    assert!(info["max_context"].as_u64().unwrap() >= 2048);
}

#[tokio::test]
async fn repeated_prompt_ids_are_labels_echoed_back() {
    // Training batches repeat problems: the id is a label, not a key.
    let r = rollout(
        server(),
        &json!({"prompts": [{"id": "add", "text": "1 + 1 ="}, {"id": "add", "text": "2 + 2 ="},
                            {"text": "3 + 3 ="}],
                "group_size": 1, "sampling": {"max_tokens": 2, "seed": 1}}),
    )
    .await;
    let ids: Vec<&str> = r["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["add", "add", "2"]);
}

#[tokio::test]
async fn without_a_subcommand_entroll_serves_with_its_environment() {
    let model = common::default_model();
    let s = common::spawn_command(
        &["--exit-on-stdin-eof"],
        &[
            ("ENTROLL_PORT", "0"),
            ("ENTROLL_MODEL", model.to_str().unwrap()),
            ("ENTROLL_MAX_PROMPTS", "1"),
        ],
    );
    let two = json!({"prompts": [{"text": "a"}, {"text": "b"}], "sampling": {"max_tokens": 1}});
    let (status, body) = common::post_raw(&s, two.to_string()).await;
    assert_eq!(status, 422, "ENTROLL_MAX_PROMPTS=1 ignored: {body}");
    let one = json!({"prompts": [{"text": "a"}], "group_size": 1, "sampling": {"max_tokens": 1}});
    rollout(&s, &one).await;
}
