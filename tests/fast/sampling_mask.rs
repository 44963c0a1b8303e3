//! Sampling-mask replay (`return_sampling_mask`): every truncated draw carries the ids its
//! truncation kept and their mass, consistent with the token's own statistics; asking for the
//! mask changes no draw; nothing is returned when nothing truncates. The learner's test
//! (docker/learner/tests/test_replay.py) replays the masks against its own recomputation of
//! the model.

use std::collections::HashSet;

use entroll::engine::native::Oracle;
use entroll::stats::mask_codec;
use serde_json::{json, Value};

use crate::common::{check_sample, rollout, samples};
use crate::harness;

/// The requests' sampling temperature.
const TEMPERATURE: f64 = 0.8;

fn request(mask: bool, top_p: f64, top_k: Option<u64>) -> Value {
    json!({
        "prompts": [
            {"text": "The capital of France is"},
            {"messages": [{"role": "user", "content": "Name three colours."}]}
        ],
        "group_size": 3,
        "sampling": {"max_tokens": 32, "seed": 11, "temperature": TEMPERATURE, "top_p": top_p, "top_k": top_k},
        "return_sampling_mask": mask
    })
}

fn ids(sample: &Value, field: &str) -> Vec<u64> {
    sample[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

/// Checks a draw's kept set against the distribution it cut (`lp`: the oracle's `ln π` over
/// the vocabulary): the `k` most probable tokens, then the shortest prefix of them that holds
/// `top_p` of their mass (inclusive), with `mass` its share of the whole distribution. Two
/// computations of the same logits round apart by about 1e-5, so ties and the boundary are
/// judged within 1e-3.
fn check_truncation(lp: &[f64], kept: &[u32], k: usize, top_p: f64, mass: f64, what: &str) {
    let prob = |id: u32| lp[id as usize].exp();
    let mut ranked: Vec<u32> = (0..lp.len() as u32).collect();
    ranked.sort_by(|&a, &b| lp[b as usize].total_cmp(&lp[a as usize]).then(a.cmp(&b)));
    let top_k_mass: f64 = ranked[..k].iter().map(|&id| prob(id)).sum();
    let kept_mass: f64 = kept.iter().map(|&id| prob(id)).sum();
    assert!(
        (kept_mass - mass).abs() < 1e-3 * mass,
        "{what}: sampling_mass {mass}, the oracle's {kept_mass}"
    );
    // The most probable tokens: none left out is clearly more probable than one kept.
    let least_kept = kept
        .iter()
        .map(|&id| prob(id))
        .fold(f64::INFINITY, f64::min);
    let kept_set: HashSet<u32> = kept.iter().copied().collect();
    let most_left_out = ranked
        .iter()
        .find(|id| !kept_set.contains(id))
        .map_or(0.0, |&id| prob(id));
    assert!(
        most_left_out <= least_kept * (1.0 + 1e-3),
        "{what}: a token of probability {most_left_out} left out, one of {least_kept} kept"
    );
    // Top-p over what top-k left: the set holds p of it, and would not without its least
    // probable token.
    assert!(
        kept_mass >= (top_p - 1e-3) * top_k_mass,
        "{what}: {kept_mass} of the top {k}'s {top_k_mass} kept, under p"
    );
    assert!(
        kept_mass - least_kept < (top_p + 1e-3) * top_k_mass,
        "{what}: {kept_mass} of the top {k}'s {top_k_mass} kept, more than the shortest prefix"
    );
}

#[tokio::test]
async fn truncated_draws_carry_their_kept_set_and_its_mass() {
    let server = harness::start(|_| {});
    // The distributions the draws cut, recomputed independently of the engine.
    let oracle = Oracle::load(&harness::tiny_model()).unwrap();
    let vocab = 49_152;
    for (top_p, top_k) in [(0.9, None), (1.0, Some(20)), (0.7, Some(50))] {
        let r = rollout(&server, &request(true, top_p, top_k)).await;
        let (mut truncated, mut cut) = (0, 0);
        assert_eq!(samples(&r).len(), 6, "2 prompts x 3 samples");
        for (g, s) in r["groups"].as_array().unwrap().iter().flat_map(|g| {
            let samples = g["samples"].as_array().unwrap();
            samples.iter().map(move |s| (g, s))
        }) {
            check_sample(s, vocab, 32, false);
            let prompt: Vec<u32> = ids(g, "prompt_token_ids")
                .iter()
                .map(|&t| t as u32)
                .collect();
            let drawn: Vec<u32> = ids(s, "token_ids").iter().map(|&t| t as u32).collect();
            let distributions = oracle.log_probs(&prompt, &drawn, TEMPERATURE).unwrap();
            let tokens = ids(s, "token_ids");
            let masks = s["sampling_mask"].as_array().expect("sampling_mask");
            let masses = s["sampling_mass"].as_array().expect("sampling_mass");
            assert_eq!(masks.len(), tokens.len());
            assert_eq!(masses.len(), tokens.len());
            for t in 0..tokens.len() {
                let (lp, slp) = (
                    s["logprobs"][t].as_f64().unwrap(),
                    s["sampling_logprobs"][t].as_f64().unwrap(),
                );
                let mass = masses[t].as_f64().unwrap();
                let Some(wire) = masks[t].as_str() else {
                    // Every token kept: the draw was from the full distribution.
                    assert_eq!(mass, 1.0);
                    assert_eq!(lp, slp);
                    continue;
                };
                truncated += 1;
                let kept = mask_codec::decode(wire).unwrap();
                assert!(kept.windows(2).all(|w| w[0] < w[1]), "ascending, distinct");
                assert!(kept.len() < vocab && kept.iter().all(|&id| (id as usize) < vocab));
                assert!(
                    kept.contains(&(tokens[t] as u32)),
                    "the drawn token is in its set"
                );
                if let Some(k) = top_k {
                    assert!(kept.len() as u64 <= k, "{} ids under top_k {k}", kept.len());
                }
                // The mass is the set's share of the full distribution: ln mass = lp - slp.
                assert!(mass > 0.0 && mass <= 1.0, "{mass}");
                assert!(
                    (mass.ln() - (lp - slp)).abs() < 1e-4 * (1.0 + lp.abs()),
                    "token {t}: ln {mass} vs {lp} - {slp}"
                );
                match top_k {
                    // Top-p alone keeps at least p of the distribution.
                    None => assert!(mass >= top_p * 0.999, "{mass} < {top_p}"),
                    Some(k) => check_truncation(
                        &distributions[t],
                        &kept,
                        k as usize,
                        top_p,
                        mass,
                        &format!("top_p {top_p}, top_k {k}, token {t}"),
                    ),
                }
                if mass < 0.999 {
                    cut += 1;
                }
            }
        }
        assert!(
            truncated > 0 && cut > 0,
            "top_p {top_p}, top_k {top_k:?}: nothing was cut"
        );
    }
}

#[tokio::test]
async fn asking_for_the_mask_changes_no_draw() {
    let server = harness::start(|_| {});
    let plain = rollout(&server, &request(false, 0.9, Some(40))).await;
    let masked = rollout(&server, &request(true, 0.9, Some(40))).await;
    // 2 prompts x 3 samples each, counted before zipping.
    assert_eq!(samples(&plain).len(), 6);
    assert_eq!(samples(&masked).len(), 6);
    for (a, b) in samples(&plain).into_iter().zip(samples(&masked)) {
        assert!(a.get("sampling_mask").is_none() && a.get("sampling_mass").is_none());
        let mut b = b.clone();
        let object = b.as_object_mut().unwrap();
        assert!(object.remove("sampling_mask").is_some());
        assert!(object.remove("sampling_mass").is_some());
        assert_eq!(a, &b);
    }
}

#[tokio::test]
async fn nothing_is_returned_when_nothing_truncates() {
    let server = harness::start(|_| {});
    let r = rollout(&server, &request(true, 1.0, None)).await;
    for s in samples(&r) {
        assert!(s.get("sampling_mask").is_none(), "{s}");
        assert!(s.get("sampling_mass").is_none());
    }
    // Streamed groups carry the masks too.
    let mut stream = crate::common::Lines::post(&server, &request(true, 0.9, None)).await;
    let line = stream.next().await.unwrap();
    assert!(
        line["group"]["samples"][0]["sampling_mask"].is_array(),
        "{line}"
    );
}

#[tokio::test]
async fn masks_beyond_the_request_s_budget_fail_it_with_422() {
    // The probe's request: a nucleus of nearly the whole vocabulary at every token (the tiny
    // random model's distributions are nearly flat: top_p 0.99 keeps ~99% of the ids).
    let wide = json!({
        "prompts": [{"text": "The capital of France is"}],
        "group_size": 4,
        "sampling": {"max_tokens": 64, "seed": 3, "temperature": 1.0, "top_p": 0.99},
        "return_sampling_mask": true
    });
    // A budget of twenty tokens' worth of the whole vocabulary (49,152 ids each).
    const BUDGET: usize = 20 * 49_152;
    let server = harness::start(|c| c.max_mask_ids = BUDGET);
    let (status, body) = crate::common::post_raw(&server, wide.to_string()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error_type"], "validation");
    assert!(
        body["error"].as_str().unwrap().contains("max_mask_ids"),
        "{body}"
    );
    // Narrow masks within the budget are answered whole, and hold no more than it.
    let narrow = request(true, 0.9, Some(20));
    let answer = rollout(&server, &narrow).await;
    let held: usize = samples(&answer)
        .iter()
        .flat_map(|s| s["sampling_mask"].as_array().unwrap())
        .filter_map(Value::as_str)
        .map(|m| mask_codec::decode(m).unwrap().len())
        .sum();
    assert!(held > 0 && held <= BUDGET, "{held} ids");
    // The server serves on.
    rollout(&server, &request(false, 1.0, None)).await;
}
