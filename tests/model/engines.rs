//! The two engines checked against each other through the public API.
//!
//! Both engines compute in float32 here (the default `dtype = "auto"` on CPU), so on the same
//! weights they see the same logits up to summation order, and entroll's sampler, which is
//! shared, turns equal logits into equal tokens and statistics. Three servers:
//! - native and mistral.rs on the same safetensors directory (the default model converted by
//!   `scripts/learner-env`);
//! - native on the GGUF file itself, whose weights the native engine dequantizes to the very
//!   values that directory holds, but loads through the other path (GGUF names, llama.cpp's
//!   interleaved RoPE layout, the tokenizer rebuilt from GGUF metadata).
//!
//! Tolerance: 1e-3 nats on every per-token statistic. Observed differences are ~1e-5 (float32
//! attention and matmuls in a different order); a wrong RoPE pairing, mask or head grouping
//! moves them by 0.01–1 nats.

use crate::common;

use serde_json::{json, Value};

/// Largest allowed difference of a per-token statistic between engines, nats.
const TOLERANCE: f64 = 1e-3;

fn request() -> Value {
    json!({
        "prompts": [
            {"messages": [{"role": "user", "content": "What is 7 times 8? Answer briefly."}],
             "group_size": 3},
            {"messages": [{"role": "system", "content": "You are terse."},
                          {"role": "user", "content": "Name a prime number above 20."}],
             "group_size": 2},
            {"text": "The capital of France is", "group_size": 1}
        ],
        "sampling": {"temperature": 1.0, "max_tokens": 40, "seed": 20261123},
        "stats": {"top_p": 0.9}
    })
}

/// Compares two responses to the same request; returns the tokens compared, the tokens in
/// all, and the largest difference of a statistic seen.
fn compare(a: &Value, b: &Value, what: &str) -> (usize, usize, f64) {
    let (mut compared, mut total, mut largest) = (0, 0, 0.0f64);
    let (groups_a, groups_b) = (
        a["groups"].as_array().unwrap(),
        b["groups"].as_array().unwrap(),
    );
    // Counted before zipping: an engine that returned fewer groups or samples would otherwise
    // shrink what is compared (and `total`) without a failure.
    assert!(!groups_a.is_empty(), "{what}: no groups");
    assert_eq!(
        groups_a.len(),
        groups_b.len(),
        "{what}: group counts differ"
    );
    for (ga, gb) in groups_a.iter().zip(groups_b) {
        assert_eq!(
            ga["prompt_token_ids"], gb["prompt_token_ids"],
            "{what}: the engines tokenized a prompt differently"
        );
        let (samples_a, samples_b) = (
            ga["samples"].as_array().unwrap(),
            gb["samples"].as_array().unwrap(),
        );
        assert_eq!(
            samples_a.len(),
            samples_b.len(),
            "{what}: sample counts differ"
        );
        assert!(!samples_a.is_empty(), "{what}: a group without samples");
        for (sa, sb) in samples_a.iter().zip(samples_b) {
            let (ta, tb) = (&sa["token_ids"], &sb["token_ids"]);
            let (ta, tb) = (ta.as_array().unwrap(), tb.as_array().unwrap());
            // Equal logits give equal draws; a draw may only differ where its uniform falls
            // within float noise of a CDF boundary, and from there the samples part ways.
            let common = ta.iter().zip(tb).take_while(|(x, y)| x == y).count();
            total += ta.len().max(tb.len());
            compared += common;
            // Statistics of position t depend only on the tokens before it, so they must agree
            // up to and including the first position where the draws differ.
            let context_shared = (common + 1).min(ta.len()).min(tb.len());
            for field in ["logprobs", "sampling_logprobs", "entropy", "top_p_entropy"] {
                let (xa, xb) = (common::floats(sa, field), common::floats(sb, field));
                let upto = if field.ends_with("logprobs") {
                    common
                } else {
                    context_shared
                };
                for t in 0..upto {
                    largest = largest.max((xa[t] - xb[t]).abs());
                    assert!(
                        (xa[t] - xb[t]).abs() <= TOLERANCE,
                        "{what}: {field}[{t}] {} vs {}",
                        xa[t],
                        xb[t]
                    );
                }
            }
            let (ka, kb) = (
                common::floats(sa, "top_p_size"),
                common::floats(sb, "top_p_size"),
            );
            let ma = common::floats(sa, "top_p_mass");
            for t in 0..context_shared {
                // The nucleus size may differ by one only where the mass sits on the boundary.
                assert!(
                    ka[t] == kb[t] || ((ka[t] - kb[t]).abs() == 1.0 && (ma[t] - 0.9).abs() < 1e-3),
                    "{what}: top_p_size[{t}] {} vs {}",
                    ka[t],
                    kb[t]
                );
            }
            if common == ta.len() && common == tb.len() {
                // mistral.rs trims the whitespace a completion starts with (" Paris" after
                // "The capital of France is"); the native engine returns the decoded tokens.
                let text = |s: &Value| s["text"].as_str().unwrap().trim_start().to_string();
                assert_eq!(text(sa), text(sb), "{what}: same tokens, different text");
                assert_eq!(sa["finish_reason"], sb["finish_reason"]);
            }
        }
    }
    (compared, total, largest)
}

/// Serves `dir` on both engines and compares their answers to [`request`]; at least
/// `min_common` of the tokens must be drawn alike.
///
/// A draw differs only where its uniform falls within float noise of a boundary of the
/// cumulative distribution. The trained Llama model is peaked (few boundaries matter); the
/// random Qwen models spread their mass over thousands of tokens (entropy ~8 nats), so their
/// samples part ways more often, and each parting costs the rest of that sample.
async fn native_and_mistralrs_agree_on(dir: &std::path::Path, min_common: f64) {
    let native = common::spawn_model(dir, &["--engine", "native"]);
    let reference = common::spawn_model(dir, &["--engine", "mistralrs"]);
    let native_info = common::get_json(&native.base, "/info").await;
    let reference_info = common::get_json(&reference.base, "/info").await;
    assert_eq!(native_info["engine"], "native");
    assert_eq!(reference_info["engine"], "mistralrs");
    assert_eq!(native_info["vocab_size"], reference_info["vocab_size"]);

    let (a, b) = tokio::join!(
        common::post_to(&native.base, request().to_string()),
        common::post_to(&reference.base, request().to_string())
    );
    assert_eq!(a.0, 200, "{}", a.1);
    assert_eq!(b.0, 200, "{}", b.1);
    let (compared, total, largest) = compare(&a.1, &b.1, "native vs mistral.rs");
    eprintln!("{}: native vs mistral.rs: {compared} of {total} tokens compared, largest difference {largest:.2e}", dir.display());
    assert!(
        compared as f64 >= min_common * total as f64,
        "the engines' samples parted early: {compared} of {total} tokens in common"
    );
}

#[tokio::test]
async fn a_long_prompt_prefilled_in_chunks_agrees() {
    // Over 1,500 prompt tokens: the native engine computes them in chunks of 512, each
    // attending to the cached chunks before it; mistral.rs computes the prompt at once.
    let dir = common::safetensors_model();
    let native = common::spawn_model(&dir, &["--engine", "native"]);
    let reference = common::spawn_model(&dir, &["--engine", "mistralrs"]);
    let story = "The river ran past the old mill, and the miller counted his sacks of grain. ";
    let request = json!({
        "prompts": [{"text": format!("{}How many sacks were there?", story.repeat(90)),
                     "group_size": 2}],
        "sampling": {"temperature": 1.0, "max_tokens": 12, "seed": 3},
        "stats": {"top_p": 0.9}
    });
    let (a, b) = tokio::join!(
        common::post_to(&native.base, request.to_string()),
        common::post_to(&reference.base, request.to_string())
    );
    assert_eq!(a.0, 200, "{}", a.1);
    assert_eq!(b.0, 200, "{}", b.1);
    let prompt = a.1["groups"][0]["prompt_token_ids"]
        .as_array()
        .unwrap()
        .len();
    assert!(prompt > 1500, "the prompt has only {prompt} tokens");
    let (compared, total, largest) = compare(&a.1, &b.1, "long prompt");
    eprintln!("long prompt ({prompt} tokens): {compared} of {total} tokens compared, largest difference {largest:.2e}");
    assert!(
        compared * 10 >= total * 9,
        "{compared} of {total} tokens in common"
    );
}

#[tokio::test]
async fn native_and_mistralrs_agree_on_llama() {
    native_and_mistralrs_agree_on(&common::safetensors_model(), 0.9).await;
}

#[tokio::test]
async fn native_and_mistralrs_agree_on_qwen2() {
    native_and_mistralrs_agree_on(&common::tiny_random_model("qwen2"), 0.6).await;
}

#[tokio::test]
async fn native_and_mistralrs_agree_on_qwen3() {
    native_and_mistralrs_agree_on(&common::tiny_random_model("qwen3"), 0.6).await;
}

#[tokio::test]
async fn gguf_and_safetensors_paths_agree() {
    let gguf = common::spawn_model(&common::default_model(), &["--engine", "native"]);
    let dir = common::spawn_model(&common::safetensors_model(), &["--engine", "native"]);
    let (a, b) = tokio::join!(
        common::post_to(&gguf.base, request().to_string()),
        common::post_to(&dir.base, request().to_string())
    );
    assert_eq!(a.0, 200, "{}", a.1);
    assert_eq!(b.0, 200, "{}", b.1);
    let (compared, total, largest) = compare(&a.1, &b.1, "GGUF vs safetensors");
    eprintln!("GGUF vs safetensors: {compared} of {total} tokens compared, largest difference {largest:.2e}");
    assert!(
        compared * 10 >= total * 9,
        "{compared} of {total} tokens in common"
    );
}

/// One sequence drawn by entroll's sampler (seed 9, top-p 0.9, masks returned) after `drawn`.
fn sequence(
    prompt: &std::sync::Arc<[u32]>,
    drawn: &[u32],
    max_tokens: usize,
    stop: Option<&str>,
) -> entroll::engine::SequenceRequest {
    use entroll::stats::distribution::Truncation;
    let mut sampler = entroll::stats::sampling::TokenSampler::plain(
        1.0,
        Truncation {
            top_k: None,
            top_p: 0.9,
        },
        9,
    );
    sampler.mask = true;
    entroll::engine::SequenceRequest {
        prompt: prompt.clone(),
        drawn: drawn.into(),
        max_tokens,
        stop: stop.into_iter().map(str::to_string).collect(),
        drawing: entroll::engine::Drawing::Entroll(sampler),
        interrupt: Default::default(),
        mask_budget: Default::default(),
    }
}

fn ids(output: &entroll::engine::SequenceOutput) -> Vec<u32> {
    output.tokens.iter().map(|r| r.token).collect()
}

/// The shortest piece of `text` around byte `at` that occurs first there: a stop string
/// that a sequence resumed at `at` only completes with the tokens it draws itself.
fn spanning(text: &str, at: usize) -> String {
    let start = text[..at].char_indices().last().map_or(0, |(i, _)| i);
    let ends = text[at..].char_indices().skip(1).map(|(i, _)| at + i);
    ends.chain([text.len()])
        .map(|end| &text[start..end])
        .find(|piece| text.find(piece) == Some(start))
        .unwrap_or_else(|| panic!("no piece of {text:?} at {at} occurs first there"))
        .to_string()
}

/// A sequence resumed from its first tokens (as a weight update under `continue` resumes it)
/// draws what it would have drawn uninterrupted: the same tokens with the same statistics, the
/// same text, and a stop string that spans the resumption ends it at the same token. One
/// interrupted before its first step answers at once with nothing new drawn.
async fn resuming_agrees_on(kind: entroll::engine::settings::EngineKind) {
    use entroll::engine::loader::EngineLoader;
    use entroll::engine::{ChatMessage, FinishReason, PromptInput};
    let model = common::safetensors_model();
    let config = entroll::http::config::Config {
        model: model.clone(),
        engine: kind,
        ..Default::default()
    };
    let engine = entroll::engine::loader::ConfiguredLoader(config.engine())
        .load(&model)
        .await
        .unwrap();
    let prompt: std::sync::Arc<[u32]> = engine
        .tokenize(&PromptInput::Messages(vec![ChatMessage {
            role: "user".into(),
            content: "Write a long poem about rivers and the sea.".into(),
        }]))
        .await
        .unwrap()
        .into();
    let whole = engine
        .generate(sequence(&prompt, &[], 40, None))
        .await
        .unwrap();
    let all = ids(&whole);
    assert!(all.len() >= 20, "{kind:?}: only {} tokens", all.len());
    let k = all.len() / 2;
    let head = engine
        .generate(sequence(&prompt, &[], k, None))
        .await
        .unwrap();
    assert_eq!(
        ids(&head),
        all[..k],
        "{kind:?}: the same seed drew other tokens"
    );

    let resumed = engine
        .generate(sequence(&prompt, &all[..k], 40, None))
        .await
        .unwrap();
    assert_eq!(ids(&resumed), all[k..], "{kind:?}: resumed at {k}");
    assert_eq!(resumed.length, all.len() - k);
    assert_eq!(resumed.masks.as_ref().map(Vec::len), Some(all.len() - k));
    for (a, b) in whole.tokens[k..].iter().zip(&resumed.tokens) {
        assert!(
            (a.logprob - b.logprob).abs() < 1e-3,
            "{kind:?}: {a:?} vs {b:?}"
        );
        assert!(
            (a.entropy - b.entropy).abs() < 1e-3,
            "{kind:?}: {a:?} vs {b:?}"
        );
    }
    assert_eq!(resumed.text, whole.text, "{kind:?}");
    assert_eq!(resumed.finish_reason, whole.finish_reason, "{kind:?}");

    // A stop string across the resumption point.
    assert!(whole.text.starts_with(&head.text), "{kind:?}");
    let stop = spanning(&whole.text, head.text.len());
    let stopped = engine
        .generate(sequence(&prompt, &[], 40, Some(&stop)))
        .await
        .unwrap();
    let stopped_resumed = engine
        .generate(sequence(&prompt, &all[..k], 40, Some(&stop)))
        .await
        .unwrap();
    assert_eq!(
        stopped.finish_reason,
        FinishReason::Stop,
        "{kind:?}: {stop:?}"
    );
    assert_eq!(
        (stopped_resumed.finish_reason, &stopped_resumed.text),
        (FinishReason::Stop, &stopped.text),
        "{kind:?}: {stop:?}"
    );
    assert_eq!(
        ids(&stopped_resumed),
        ids(&stopped)[k..],
        "{kind:?}: {stop:?}"
    );

    // Interrupted before its first step: nothing new, the text of what it had drawn.
    let interrupted = sequence(&prompt, &all[..k], 40, None);
    interrupted.interrupt.set();
    let cut = engine.generate(interrupted).await.unwrap();
    assert_eq!(cut.finish_reason, FinishReason::Abort, "{kind:?}");
    assert_eq!((cut.length, cut.tokens.len()), (0, 0), "{kind:?}");
    assert_eq!(cut.text, head.text, "{kind:?}");
}

#[tokio::test]
async fn a_resumed_sequence_draws_on_as_if_uninterrupted_on_native() {
    resuming_agrees_on(entroll::engine::settings::EngineKind::Native).await;
}

#[tokio::test]
async fn a_resumed_sequence_draws_on_as_if_uninterrupted_on_mistralrs() {
    resuming_agrees_on(entroll::engine::settings::EngineKind::Mistralrs).await;
}
