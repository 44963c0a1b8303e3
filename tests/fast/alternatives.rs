//! Each token's most probable alternatives (`top_logprobs` on `/rollouts`, `logprobs: N` on
//! `/v1/completions`, `top_logprobs: N` on `/v1/chat/completions`): the distribution's top N
//! by an independent recomputation of the model, with its log-probabilities under the full and
//! the truncated distribution; asking for them changes no draw; OpenAI's listings show the
//! sample's alternatives in their own form.

use std::collections::HashMap;

use entroll::engine::native::Oracle;
use entroll::engine::settings::DeviceKernels;
use serde_json::{json, Value};

use crate::common::{floats, ids, post_path, rollout, samples};
use crate::harness;

/// The requests' sampling temperature.
const TEMPERATURE: f64 = 0.9;
/// Alternatives asked for.
const TOP: usize = 5;

fn request(top: usize) -> Value {
    json!({
        "prompts": [{"text": "The capital of France is"}, {"token_ids": [1, 2, 3]}],
        "group_size": 2,
        "sampling": {"max_tokens": 16, "seed": 5, "temperature": TEMPERATURE, "top_p": 0.8, "top_k": 4},
        "top_logprobs": top
    })
}

/// Checks every token's alternatives in `response` against the oracle's distributions: the
/// top `TOP` by probability (ties and rounding judged within 1e-3), highest first, their
/// log-probs, and their truncated log-probs (the kept ones' share of the kept mass).
fn check_against_the_oracle(response: &Value, oracle: &Oracle) {
    let mut cut = 0;
    for group in response["groups"].as_array().unwrap() {
        let prompt = ids(&group["prompt_token_ids"]);
        for sample in group["samples"].as_array().unwrap() {
            let drawn = ids(&sample["token_ids"]);
            let distributions = oracle.log_probs(&prompt, &drawn, TEMPERATURE).unwrap();
            let (full, processed) = (
                floats(sample, "logprobs"),
                floats(sample, "sampling_logprobs"),
            );
            let all = sample["top_logprobs"].as_array().expect("top_logprobs");
            assert_eq!(all.len(), drawn.len());
            for (t, alternatives) in all.iter().enumerate() {
                let lp = &distributions[t];
                let alternatives = alternatives.as_array().unwrap();
                assert_eq!(alternatives.len(), TOP, "token {t}");
                let mut ranked: Vec<f64> = lp.clone();
                ranked.sort_by(|a, b| b.total_cmp(a));
                // ln of the kept mass: the drawn token's two log-probs apart.
                let ln_mass = full[t] - processed[t];
                let mut previous = f64::INFINITY;
                for (rank, a) in alternatives.iter().enumerate() {
                    let id = a["id"].as_u64().unwrap() as usize;
                    let logprob = a["logprob"].as_f64().unwrap();
                    assert!(
                        (logprob - lp[id]).abs() < 1e-3,
                        "token {t} rank {rank}: {logprob} vs the oracle's {}",
                        lp[id]
                    );
                    assert!(
                        (lp[id] - ranked[rank]).abs() < 1e-3,
                        "token {t} rank {rank}: id {id} at {}, the oracle's rank {rank} at {}",
                        lp[id],
                        ranked[rank]
                    );
                    assert!(logprob <= previous, "token {t}: not highest first");
                    previous = logprob;
                    match a["sampling_logprob"].as_f64() {
                        Some(slp) => assert!(
                            (slp - (logprob - ln_mass)).abs() < 1e-4,
                            "token {t} rank {rank}: {slp} under the truncation, {logprob} in all"
                        ),
                        None => cut += 1,
                    }
                    if id as u32 == drawn[t] {
                        // The same number as the token's own, not one within rounding.
                        assert_eq!(logprob, full[t]);
                        assert_eq!(a["sampling_logprob"].as_f64(), Some(processed[t]));
                    }
                }
            }
        }
    }
    // Top-k 4 leaves the fifth alternative out at least, so the nulls were tested.
    assert!(cut > 0, "the truncation cut no alternative");
}

fn alternatives_follow_the_oracle(kernels: DeviceKernels) {
    let server = harness::start(|c| c.device_kernels = kernels);
    let oracle = Oracle::load(&harness::tiny_model()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let with = rollout(&server, &request(TOP)).await;
        check_against_the_oracle(&with, &oracle);
        // Asking for alternatives changes no token.
        let without = rollout(&server, &request(0)).await;
        let tokens = |r: &Value| -> Vec<Value> {
            samples(r).iter().map(|s| s["token_ids"].clone()).collect()
        };
        assert_eq!(tokens(&with), tokens(&without));
        assert!(samples(&without)
            .iter()
            .all(|s| s.get("top_logprobs").is_none()));
        // More than the bound is refused, naming the field.
        let (status, body) = post_path(&server.base, "/rollouts", request(21).to_string()).await;
        assert_eq!(status, 422, "{body}");
        assert!(body["error"].as_str().unwrap().contains("top_logprobs"));
    });
}

#[test]
fn alternatives_are_the_most_probable_tokens_of_the_oracle_s_distribution() {
    alternatives_follow_the_oracle(DeviceKernels::Off);
}

#[test]
fn alternatives_with_the_device_kernels_are_the_oracle_s_too() {
    alternatives_follow_the_oracle(DeviceKernels::On);
}

/// `/v1/completions`' listing: per token, the alternatives the sample holds under the
/// processed distribution (those the truncation kept), most probable first, then the drawn
/// token if it is not among them; chat's lists the alternatives alone, named by their text.
#[tokio::test]
async fn openai_listings_show_the_sample_s_alternatives() {
    let server = harness::start(|_| {});
    let sampling =
        json!({"temperature": TEMPERATURE, "top_p": 0.8, "top_k": 30, "max_tokens": 16, "seed": 5});
    let mut body = sampling.clone();
    body["prompt"] = json!("The capital of France is");
    body["logprobs"] = json!(TOP);
    body["return_tokens_as_token_ids"] = json!(true);
    let (status, answer) = post_path(&server.base, "/v1/completions", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let choice = &answer["choices"][0];
    let sample = &choice["entroll"];
    let drawn = ids(&sample["token_ids"]);
    let maps = choice["logprobs"]["top_logprobs"].as_array().unwrap();
    assert_eq!(maps.len(), drawn.len());
    let mut added = 0;
    for (t, map) in maps.iter().enumerate() {
        // As a map: the order of its keys is the SDK test's to check (tests/clients), since
        // serde_json keeps a document's order only with a feature this crate does not ask for.
        let listed: HashMap<String, f64> = map
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
            .collect();
        let kept: Vec<(String, f64)> = sample["top_logprobs"][t]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| {
                Some((
                    format!("token_id:{}", a["id"]),
                    a["sampling_logprob"].as_f64()?,
                ))
            })
            .collect();
        for (name, lp) in &kept {
            assert_eq!(listed.get(name), Some(lp), "token {t}: {name}");
        }
        let own = format!("token_id:{}", drawn[t]);
        if !kept.iter().any(|(k, _)| *k == own) {
            added += 1;
            assert_eq!(listed.len(), kept.len() + 1);
            assert_eq!(
                listed.get(&own),
                Some(&floats(sample, "sampling_logprobs")[t])
            );
        } else {
            assert_eq!(listed.len(), kept.len());
        }
    }
    // Some token was drawn from outside its top 5 (the seed fixes which), so the listing's
    // added entry was tested.
    assert!(added > 0, "no token was drawn outside its top {TOP}");

    let mut body = sampling;
    body["messages"] = json!([{"role": "user", "content": "Name a colour."}]);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(3);
    let (status, answer) = post_path(&server.base, "/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let choice = &answer["choices"][0];
    let sample = &choice["entroll"];
    let content = choice["logprobs"]["content"].as_array().unwrap();
    for (t, token) in content.iter().enumerate() {
        let kept: Vec<f64> = sample["top_logprobs"][t]
            .as_array()
            .unwrap()
            .iter()
            .take(3)
            .filter_map(|a| a["sampling_logprob"].as_f64())
            .collect();
        let listed = token["top_logprobs"].as_array().unwrap();
        let values: Vec<f64> = listed
            .iter()
            .map(|a| a["logprob"].as_f64().unwrap())
            .collect();
        assert_eq!(values, kept, "token {t}");
        for a in listed {
            let name = a["token"].as_str().unwrap();
            assert!(!name.starts_with("token_id:"), "named by text: {name}");
            assert_eq!(a["bytes"], json!(name.as_bytes()));
        }
    }
}

/// A server that draws with the engine's own sampler measures nothing, so it refuses to list
/// alternatives rather than answer without them.
#[tokio::test]
async fn the_engine_s_sampler_refuses_alternatives() {
    let server = harness::start(|c| c.sampler = entroll::engine::settings::SamplerKind::Engine);
    let (status, body) = post_path(&server.base, "/rollouts", request(TOP).to_string()).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("top_logprobs"));
    let (status, body) = post_path(&server.base, "/rollouts", request(0).to_string()).await;
    assert_eq!(status, 200, "{body}");
}
