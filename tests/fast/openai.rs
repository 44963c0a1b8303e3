//! OpenAI's dialect (`/v1/completions`, `/v1/chat/completions`, `/v1/models`, `/tokenize`,
//! `/detokenize`): for the same seed every choice is the `/rollouts` sample it stands for, token
//! for token and statistic for statistic, whole and streamed; what would change the sampling
//! distribution is refused naming the field, in OpenAI's error form.

use serde_json::{json, Value};

use crate::common::{client, get_json, post_path, rollout, samples, Base};
use crate::harness::{self, InProcess};

/// POSTs `body` to `path`: the status and the JSON answer.
pub async fn post(server: &InProcess, path: &str, body: &Value) -> (u16, Value) {
    post_path(server.base(), path, body.to_string()).await
}

/// POSTs `body` to `path` and expects 200.
pub async fn ok(server: &InProcess, path: &str, body: &Value) -> Value {
    let (status, answer) = post(server, path, body).await;
    assert_eq!(status, 200, "{path} failed: {answer}");
    answer
}

/// A streamed answer's events: every `data:` payload before `[DONE]`, which must end it.
pub async fn events(server: &InProcess, path: &str, body: &Value) -> Vec<Value> {
    let response = client()
        .post(format!("{}{path}", server.base()))
        .json(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(content_type, "text/event-stream");
    let text = response.text().await.unwrap();
    let payloads: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e}"))
        })
        .collect();
    assert_eq!(
        payloads.last(),
        Some(&"[DONE]"),
        "the stream must end with [DONE]"
    );
    payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect()
}

const PROMPTS: [&str; 2] = ["What is 6 times 7?", "Count to five."];

fn sampling() -> Value {
    json!({"temperature": 0.9, "top_p": 0.9, "top_k": 40, "max_tokens": 12, "seed": 11})
}

/// The `/rollouts` request the OpenAI requests of these tests stand for.
fn rollouts_request(prompts: Value, n: usize) -> Value {
    json!({"prompts": prompts, "group_size": n, "sampling": sampling()})
}

/// `sampling()`'s fields at the top level, as OpenAI puts them, with `extra`.
fn openai_request(extra: Value) -> Value {
    let mut body = sampling();
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Checks that `choice` is `sample` of `group`: its text, tokens, finish reason, listing and
/// statistics.
fn check_choice(choice: &Value, sample: &Value, listed: &str) {
    assert_eq!(
        choice["entroll"], *sample,
        "the choice's statistics are the sample's"
    );
    assert_eq!(choice["token_ids"], sample["token_ids"]);
    assert_eq!(choice["finish_reason"], sample["finish_reason"]);
    let text = choice
        .get("text")
        .unwrap_or_else(|| &choice["message"]["content"]);
    assert_eq!(*text, sample["text"]);
    let listing: Vec<f64> = match choice["logprobs"].get("token_logprobs") {
        Some(lp) => lp
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect(),
        None => choice["logprobs"]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["logprob"].as_f64().unwrap())
            .collect(),
    };
    assert_eq!(listing, crate::common::floats(sample, listed));
}

#[tokio::test]
async fn completions_are_the_rollouts_samples_for_the_same_seed() {
    let server = harness::start(|_| {});
    let expected = rollout(
        &server,
        &rollouts_request(json!(PROMPTS.map(|t| json!({"text": t}))), 2),
    )
    .await;
    let groups = expected["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    // With what clients send that changes nothing: vLLM's routing header and fields.
    let answer: Value = client()
        .post(format!("{}/v1/completions", server.base()))
        .header("x-data-parallel-rank", "0")
        .json(&openai_request(json!({
            "prompt": PROMPTS, "n": 2, "logprobs": 0, "return_token_ids": true,
            "user": "u", "cache_salt": "s", "priority": 0, "skip_special_tokens": true,
            "min_p": 0.0, "repetition_penalty": 1.0, "logit_bias": {}
        })))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["object"], "text_completion");
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    let mut cut = 0;
    for (i, group) in groups.iter().enumerate() {
        let group_samples = group["samples"].as_array().unwrap();
        assert_eq!(group_samples.len(), 2);
        for (j, sample) in group_samples.iter().enumerate() {
            let choice = &choices[i * 2 + j];
            assert_eq!(choice["index"], i * 2 + j);
            assert_eq!(choice["prompt_token_ids"], group["prompt_token_ids"]);
            // Processed log-probs: under the truncated distribution drawn from.
            check_choice(choice, sample, "sampling_logprobs");
            let lp = &choice["logprobs"];
            let tokens = lp["tokens"].as_array().unwrap();
            assert_eq!(tokens.len(), sample["token_ids"].as_array().unwrap().len());
            // Each token's text, laid end to end, starts where text_offset says.
            let mut at = 0;
            for (t, offset) in tokens.iter().zip(lp["text_offset"].as_array().unwrap()) {
                assert_eq!(offset, at);
                at += t.as_str().unwrap().chars().count();
            }
            cut += crate::common::floats(sample, "logprobs")
                .iter()
                .zip(crate::common::floats(sample, "sampling_logprobs"))
                .filter(|(full, processed)| **full != *processed)
                .count();
        }
    }
    // The truncation cut somewhere, so listing the processed log-probs was a choice.
    assert!(cut > 0, "top-p 0.9 and top-k 40 cut nothing");
    let prompt_tokens: usize = groups
        .iter()
        .map(|g| g["prompt_token_ids"].as_array().unwrap().len())
        .sum();
    let completion_tokens: u64 = samples(&expected)
        .iter()
        .map(|s| s["length"].as_u64().unwrap())
        .sum();
    assert_eq!(answer["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(answer["usage"]["completion_tokens"], completion_tokens);
    assert_eq!(answer["entroll"]["sampling"], expected["sampling"]);
    assert_eq!(answer["entroll"]["logprobs_mode"], "processed");

    // The same prompts as token ids draw the same choices.
    let ids: Vec<Value> = groups
        .iter()
        .map(|g| g["prompt_token_ids"].clone())
        .collect();
    let by_ids = ok(
        &server,
        "/v1/completions",
        &openai_request(json!({"prompt": ids, "n": 2})),
    )
    .await;
    let entroll = |a: &Value| -> Vec<Value> {
        a["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["entroll"].clone())
            .collect()
    };
    assert_eq!(entroll(&by_ids), entroll(&answer));
}

#[tokio::test]
async fn chat_choices_are_the_rollouts_samples_for_the_same_seed() {
    let server = harness::start(|_| {});
    let messages = json!([{"role": "user", "content": "Name a colour."}]);
    let expected = rollout(
        &server,
        &rollouts_request(json!([{"messages": messages}]), 3),
    )
    .await;
    let group = &expected["groups"][0];
    let answer = ok(
        &server,
        "/v1/chat/completions",
        &openai_request(json!({
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}],
            "n": 3, "logprobs": true, "return_token_ids": true, "return_tokens_as_token_ids": true
        })),
    )
    .await;
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["prompt_token_ids"], group["prompt_token_ids"]);
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (j, sample) in group["samples"].as_array().unwrap().iter().enumerate() {
        let choice = &choices[j];
        assert_eq!(choice["message"]["role"], "assistant");
        check_choice(choice, sample, "sampling_logprobs");
        let named: Vec<String> = sample["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| format!("token_id:{id}"))
            .collect();
        let listed: Vec<&str> = choice["logprobs"]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["token"].as_str().unwrap())
            .collect();
        assert_eq!(listed, named);
    }
}

#[tokio::test]
async fn the_full_logprobs_mode_lists_the_untruncated_distribution_s() {
    let server = harness::start(|c| c.openai_logprobs = entroll::api::openai::LogprobsMode::Full);
    let expected = rollout(&server, &rollouts_request(json!([{"text": PROMPTS[0]}]), 1)).await;
    let answer = ok(
        &server,
        "/v1/completions",
        &openai_request(json!({"prompt": PROMPTS[0], "logprobs": 0, "return_token_ids": true})),
    )
    .await;
    assert_eq!(answer["entroll"]["logprobs_mode"], "full");
    check_choice(&answer["choices"][0], samples(&expected)[0], "logprobs");
    // Alternatives too: every one of them, with its untruncated log-prob, cut or kept.
    let chat = ok(
        &server,
        "/v1/chat/completions",
        &openai_request(json!({
            "messages": [{"role": "user", "content": "Name a colour."}],
            "logprobs": true, "top_logprobs": 4, "return_tokens_as_token_ids": true, "top_k": 2
        })),
    )
    .await;
    let choice = &chat["choices"][0];
    let (mut cut, tokens) = (0, choice["logprobs"]["content"].as_array().unwrap());
    for (t, token) in tokens.iter().enumerate() {
        let alternatives = choice["entroll"]["top_logprobs"][t].as_array().unwrap();
        let want: Vec<(String, f64)> = alternatives
            .iter()
            .map(|a| {
                (
                    format!("token_id:{}", a["id"]),
                    a["logprob"].as_f64().unwrap(),
                )
            })
            .collect();
        let listed: Vec<(String, f64)> = token["top_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["token"].as_str().unwrap().to_string(),
                    a["logprob"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(listed, want, "token {t}");
        cut += alternatives
            .iter()
            .filter(|a| a["sampling_logprob"].is_null())
            .count();
    }
    assert!(
        cut > 0,
        "top-k 2 cut no alternative: nothing told the modes apart"
    );
}

#[tokio::test]
async fn streamed_choices_are_the_whole_answer_s() {
    let server = harness::start(|_| {});
    for (path, extra) in [
        (
            "/v1/completions",
            json!({"prompt": PROMPTS, "n": 2, "logprobs": 0}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Name a colour."}], "n": 2, "logprobs": true}),
        ),
    ] {
        let whole = ok(&server, path, &openai_request(extra.clone())).await;
        let mut streamed = openai_request(extra);
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        let chunks = events(&server, path, &streamed).await;
        let (last, chunks) = chunks.split_last().unwrap();
        let mut choices: Vec<Value> = chunks
            .iter()
            .flat_map(|c| {
                assert_eq!(c["id"], chunks[0]["id"], "one id for every chunk");
                c["choices"].as_array().unwrap().clone()
            })
            .collect();
        choices.sort_by_key(|c| c["index"].as_u64().unwrap());
        let expected = whole["choices"].as_array().unwrap();
        assert_eq!(choices.len(), expected.len(), "{path}");
        for (got, want) in choices.iter().zip(expected) {
            let mut got = got.clone();
            if let Some(delta) = got.as_object_mut().unwrap().remove("delta") {
                got["message"] = delta;
            }
            assert_eq!(got, *want, "{path}");
        }
        assert!(last["choices"].as_array().unwrap().is_empty());
        assert_eq!(last["usage"], whole["usage"], "{path}");
        let (mut a, mut b) = (last["entroll"].clone(), whole["entroll"].clone());
        a["summary"]["elapsed_ms"] = Value::Null;
        b["summary"]["elapsed_ms"] = Value::Null;
        assert_eq!(a, b, "{path}");
    }
    // Without include_usage no chunk comes without choices (a client may read choices[0]).
    let plain = openai_request(json!({"prompt": PROMPTS, "n": 2, "stream": true}));
    let chunks = events(&server, "/v1/completions", &plain).await;
    assert_eq!(chunks.len(), 2, "one chunk a prompt");
    assert!(chunks
        .iter()
        .all(|c| !c["choices"].as_array().unwrap().is_empty() && c.get("usage").is_none()));
}
#[tokio::test]
async fn temperature_0_draws_the_most_likely_token() {
    let server = harness::start(|_| {});
    let answer = ok(
        &server,
        "/v1/completions",
        &json!({"prompt": PROMPTS[1], "n": 2, "temperature": 0, "max_tokens": 16, "seed": 3, "logprobs": 0}),
    )
    .await;
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(
        choices[0]["entroll"]["token_ids"],
        choices[1]["entroll"]["token_ids"]
    );
    assert_eq!(answer["entroll"]["sampling"]["top_k"], 1);
    let sample = &choices[0]["entroll"];
    let full = crate::common::floats(sample, "logprobs");
    let entropy = crate::common::floats(sample, "entropy");
    assert_eq!(full.len(), 16);
    for (t, (lp, h)) in full.iter().zip(&entropy).enumerate() {
        // The most likely token has -ln p_max <= H (min-entropy is at most the entropy); a
        // token drawn at random breaks this on a flat row.
        assert!(-lp <= h + 1e-4, "token {t}: -ln p = {} > H = {h}", -lp);
    }
    assert!(crate::common::floats(sample, "sampling_logprobs")
        .iter()
        .all(|&v| v == 0.0));
    // The listing gives the untruncated log-probs, as vLLM's greedy path does, not top-k 1's
    // zeros.
    let listed: Vec<f64> = choices[0]["logprobs"]["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(listed, full);
}

#[tokio::test]
async fn an_areal_shaped_request_is_served() {
    // AReaL's vLLM backend (areal/engine/vllm_remote.py) sends exactly these fields.
    let server = harness::start(|_| {});
    let eos = ok(&server, "/tokenize", &json!({"prompt": "<|im_end|>"})).await["tokens"].clone();
    assert_eq!(
        eos.as_array().unwrap().len(),
        1,
        "<|im_end|> is one token: {eos}"
    );
    let prompt = ok(&server, "/tokenize", &json!({"prompt": PROMPTS[0]})).await["tokens"].clone();
    let body = json!({
        "top_p": 1.0, "top_k": -1, "max_tokens": 12, "temperature": 1.0, "seed": 5,
        "stop_token_ids": eos, "return_tokens_as_token_ids": true, "logprobs": 0,
        "stream": false, "prompt": prompt
    });
    let answer = ok(&server, "/v1/completions", &body).await;
    let choice = &answer["choices"][0];
    // AReaL reads the ids back from the names.
    let ids: Vec<u64> = choice["logprobs"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t.as_str()
                .unwrap()
                .split(':')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let drawn: Vec<u64> = choice["entroll"]["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(!ids.is_empty());
    assert_eq!(ids, drawn);
    // Switches at the values entroll serves are accepted; other values are refused by name.
    let mut neutral = body.clone();
    for (k, v) in [
        ("ignore_eos", json!(false)),
        ("use_beam_search", json!(false)),
        ("include_stop_str_in_output", json!(false)),
        ("min_tokens", json!(0)),
        ("best_of", json!(1)),
        ("skip_special_tokens", json!(true)),
        ("stop_token_ids", json!([])),
        ("stream", Value::Null),
    ] {
        neutral[k] = v;
    }
    ok(&server, "/v1/completions", &neutral).await;
    let chat = json!({
        "messages": [
            {"role": "user", "content": "hi", "name": "ann"},
            {"role": "assistant", "content": null},
            {"role": "user", "content": "again"}
        ],
        "max_tokens": 4, "chat_template_kwargs": {}
    });
    ok(&server, "/v1/chat/completions", &chat).await;
}

#[tokio::test]
async fn a_gold_answer_is_scored_as_in_rollouts() {
    let server = harness::start(|_| {});
    let mut expected = rollouts_request(json!([{"text": PROMPTS[0], "answer": "42"}]), 2);
    expected["sampling"]["max_tokens"] = json!(8);
    let expected = rollout(&server, &expected).await;
    let mut request = openai_request(json!({"prompt": PROMPTS[0], "n": 2, "answer": "42"}));
    request["max_tokens"] = json!(8);
    let answer = ok(&server, "/v1/completions", &request).await;
    for (choice, sample) in answer["choices"]
        .as_array()
        .unwrap()
        .iter()
        .zip(samples(&expected))
    {
        assert!(sample["correct"].is_boolean());
        assert_eq!(choice["entroll"], *sample);
    }
    assert_eq!(
        answer["entroll"]["groups"][0]["pass_rate"],
        expected["groups"][0]["pass_rate"]
    );
}

#[tokio::test]
async fn what_cannot_be_served_is_refused_naming_the_field() {
    let server = harness::start(|_| {});
    let context = get_json(server.base(), "/info").await["max_context"]
        .as_u64()
        .unwrap() as usize;
    let completion = |extra: Value| {
        let mut body = json!({"prompt": "hi", "max_tokens": 4});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let chat = |extra: Value| {
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (
            "/v1/completions",
            completion(json!({"stop_token_ids": [5]})),
            400,
            "stop_token_ids",
        ),
        (
            "/v1/completions",
            completion(json!({"ignore_eos": true})),
            400,
            "ignore_eos",
        ),
        (
            "/v1/completions",
            completion(json!({"min_tokens": 3})),
            400,
            "min_tokens",
        ),
        (
            "/v1/completions",
            completion(json!({"skip_special_tokens": false})),
            400,
            "skip_special_tokens",
        ),
        (
            "/v1/completions",
            completion(json!({"top_k": -2})),
            400,
            "top_k",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"chat_template_kwargs": {"enable_thinking": true}})),
            400,
            "chat_template_kwargs",
        ),
        (
            "/v1/completions",
            completion(json!({"min_p": 0.1})),
            400,
            "min_p",
        ),
        (
            "/v1/completions",
            completion(json!({"repetition_penalty": 1.2})),
            400,
            "repetition_penalty",
        ),
        (
            "/v1/completions",
            completion(json!({"presence_penalty": 0.5})),
            400,
            "presence_penalty",
        ),
        (
            "/v1/completions",
            completion(json!({"frequency_penalty": -0.5})),
            400,
            "frequency_penalty",
        ),
        (
            "/v1/completions",
            completion(json!({"logit_bias": {"5": 3}})),
            400,
            "logit_bias",
        ),
        (
            "/v1/completions",
            completion(json!({"logprobs": 21})),
            400,
            "logprobs",
        ),
        (
            "/v1/completions",
            completion(json!({"logprobs": true})),
            400,
            "logprobs",
        ),
        (
            "/v1/completions",
            completion(json!({"echo": true})),
            400,
            "echo",
        ),
        (
            "/v1/completions",
            completion(json!({"best_of": 2})),
            400,
            "best_of",
        ),
        (
            "/v1/completions",
            completion(json!({"model": "gpt-5"})),
            404,
            "model",
        ),
        (
            "/v1/completions",
            completion(json!({"messages": []})),
            400,
            "messages",
        ),
        (
            "/v1/completions",
            completion(json!({"temperature": -1})),
            400,
            "temperature",
        ),
        (
            "/v1/completions",
            completion(json!({"top_p": 1.5})),
            400,
            "top_p",
        ),
        ("/v1/completions", completion(json!({"n": 0})), 400, "n"),
        (
            "/v1/completions",
            completion(json!({"max_tokens": 0})),
            400,
            "max_tokens",
        ),
        (
            "/v1/completions",
            completion(json!({"prompt": []})),
            400,
            "prompt",
        ),
        (
            "/v1/completions",
            completion(json!({"prompt": [[1, 999999]]})),
            400,
            "prompt",
        ),
        (
            "/v1/completions",
            completion(json!({"stream_options": {"include_usage": true}})),
            400,
            "stream_options",
        ),
        (
            "/v1/completions",
            completion(json!({"answer": ["1", "2"]})),
            400,
            "answer",
        ),
        (
            "/v1/completions",
            completion(json!({"seed": -1})),
            400,
            "seed",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"prompt": "hi"})),
            400,
            "prompt",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"logprobs": true, "top_logprobs": 21})),
            400,
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"logprobs": 1})),
            400,
            "logprobs",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"tools": []})),
            400,
            "tools",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})),
            400,
            "messages[0].content[0]",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"messages": []})),
            400,
            "messages",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"add_generation_prompt": false})),
            400,
            "add_generation_prompt",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"max_completion_tokens": 0})),
            400,
            "max_tokens",
        ),
        // Refused once tokenized: longer than the model's context.
        (
            "/v1/completions",
            completion(json!({"prompt": vec![1; context]})),
            400,
            "prompt",
        ),
    ];
    for (path, body, status, param) in cases {
        let (got, answer) = post(&server, path, &body).await;
        assert_eq!(got, status, "{path} {body}: {answer}");
        let error = &answer["error"];
        assert_eq!(error["param"], param, "{path} {body}: {answer}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        let kind = if status == 404 {
            "not_found_error"
        } else {
            "invalid_request_error"
        };
        assert_eq!(error["type"], kind, "{answer}");
    }
    // Malformed JSON: a 400 that blames no field.
    let response = client()
        .post(format!("{}/v1/completions", server.base()))
        .body("{\"prompt\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["param"], Value::Null);
    assert_eq!(answer["error"]["code"], "validation");
    // The server still serves.
    ok(&server, "/v1/completions", &completion(json!({}))).await;
}

#[tokio::test]
async fn models_and_the_tokenizer_routes_agree_with_the_generation_routes() {
    let server = harness::start(|_| {});
    let info = get_json(server.base(), "/info").await;
    let models = get_json(server.base(), "/v1/models").await;
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"].as_array().unwrap().len(), 1);
    assert_eq!(models["data"][0]["id"], info["model"]);
    assert_eq!(models["data"][0]["max_model_len"], info["max_context"]);

    let messages = json!([{"role": "user", "content": "Name a colour."}]);
    let expected = rollout(
        &server,
        &rollouts_request(json!([{"text": PROMPTS[0]}, {"messages": messages}]), 1),
    )
    .await;
    let text = ok(
        &server,
        "/tokenize",
        &json!({"prompt": PROMPTS[0], "return_token_strs": true}),
    )
    .await;
    assert_eq!(text["tokens"], expected["groups"][0]["prompt_token_ids"]);
    assert_eq!(text["count"], text["tokens"].as_array().unwrap().len());
    assert_eq!(text["max_model_len"], info["max_context"]);
    let strs: String = text["token_strs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(strs.contains("6 times 7"), "{strs}");
    // SkyRL's form: the generation routes' tokenization, asked for by name.
    let skyrl = ok(
        &server,
        "/tokenize",
        &json!({"prompt": PROMPTS[0], "add_special_tokens": true}),
    )
    .await;
    assert_eq!(skyrl["tokens"], text["tokens"]);
    let (status, answer) = post(
        &server,
        "/tokenize",
        &json!({"prompt": "a", "add_special_tokens": false}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["param"], "add_special_tokens");
    let chat = ok(
        &server,
        "/tokenize",
        &json!({"messages": messages, "model": info["model"]}),
    )
    .await;
    assert_eq!(chat["tokens"], expected["groups"][1]["prompt_token_ids"]);

    // Without stop strings a sample's text is its tokens' text.
    for sample in samples(&expected) {
        let back = ok(
            &server,
            "/detokenize",
            &json!({"tokens": sample["token_ids"]}),
        )
        .await;
        assert_eq!(back["prompt"], sample["text"]);
    }
    let (status, answer) = post(&server, "/detokenize", &json!({"tokens": [1, 10_000_000]})).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["param"], "tokens");
    let (status, answer) = post(
        &server,
        "/tokenize",
        &json!({"prompt": "a", "messages": messages}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
}

/// `served_model_name`: the model answers to those names and to its id, answers name it by the
/// first, `/v1/models` lists each; any other name is 404 naming `model`.
#[tokio::test]
async fn the_model_answers_to_its_served_names() {
    let server = harness::start(|c| c.served_model_name = "default, policy".into());
    let models = get_json(server.base(), "/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[..2], ["default", "policy"]);
    assert_eq!(ids.len(), 3, "and the model's id: {ids:?}");
    for name in ids.clone() {
        let answer = ok(
            &server,
            "/v1/completions",
            &json!({"model": name, "prompt": "hi", "max_tokens": 2}),
        )
        .await;
        assert_eq!(answer["model"], "default");
    }
    let (status, body) = post(
        &server,
        "/v1/completions",
        &json!({"model": "gpt-4", "prompt": "hi", "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["param"], "model");
}
