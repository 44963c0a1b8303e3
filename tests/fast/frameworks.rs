//! vLLM's and SGLang's own routes, as the RL frameworks call them, on the real engine: for the
//! same seed each dialect's generation is the `/rollouts` sample it stands for, token for token
//! and statistic for statistic; pause under `keep` freezes running samples and an update while
//! paused moves them (each reports the versions that drew its tokens); pause under `abort`
//! answers each dialect with the tokens drawn (`/rollouts` a 409 with them); pause under `wait` lets them finish; requests
//! that arrive while paused wait; bad input answers in each dialect's error form.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{client, get_json, post_path, rollout, samples, Base};
use crate::harness::{self, InProcess};
use crate::in_flight::drawing;
use crate::openai::{ok, post};

/// A JSON array of token ids.
fn ids(array: &Value) -> Vec<u64> {
    let array = array
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {array}"));
    array.iter().map(|t| t.as_u64().unwrap()).collect()
}

/// The prompt's token ids, as the server tokenizes its text.
async fn prompt_ids(server: &InProcess, text: &str) -> Vec<u64> {
    ids(&ok(server, "/tokenize", &json!({"prompt": text})).await["tokens"])
}

const PROMPT: &str = "What is 6 times 7?";

#[tokio::test]
async fn each_dialect_s_generation_is_the_rollouts_sample_for_the_same_seed() {
    let server = harness::start(|c| c.served_model_name = "policy".into());
    let prompt = prompt_ids(&server, PROMPT).await;
    let expected = rollout(
        &server,
        &json!({"prompts": [{"token_ids": prompt}], "group_size": 2, "top_logprobs": 2,
                "sampling": {"temperature": 0.9, "top_p": 0.9, "top_k": 40, "max_tokens": 12,
                             "seed": 11}}),
    )
    .await;
    let expected = samples(&expected);

    // vLLM's token-in/token-out route, with what prime-rl's and SkyRL's clients send that
    // changes nothing drawn.
    let answer: Value = client()
        .post(format!("{}/inference/v1/generate", server.base()))
        .header("x-session-id", "trace-1")
        .json(&json!({
            "model": "policy", "token_ids": prompt, "request_id": "r1",
            "cache_salt": "step-0", "priority": 0,
            "sampling_params": {"n": 2, "temperature": 0.9, "top_p": 0.9, "top_k": 40,
                "max_tokens": 12, "seed": 11, "logprobs": 2, "skip_special_tokens": false,
                "include_stop_str_in_output": true, "min_p": 0.0, "min_tokens": 0,
                "stop": null, "repetition_penalty": 1.0}
        }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["request_id"], "generate-tokens-r1");
    assert_eq!(answer["prompt_logprobs"], Value::Null);
    assert_eq!(answer["entroll"]["weights_version"], 0);
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    for (choice, sample) in choices.iter().zip(&expected) {
        assert_eq!(
            choice["entroll"], **sample,
            "the statistics are the sample's"
        );
        assert_eq!(choice["token_ids"], sample["token_ids"]);
        assert_eq!(choice["finish_reason"], sample["finish_reason"]);
        let content = choice["logprobs"]["content"].as_array().unwrap();
        assert_eq!(content.len(), ids(&sample["token_ids"]).len());
        for (t, entry) in content.iter().enumerate() {
            let id = &sample["token_ids"][t];
            assert_eq!(entry["token"], format!("token_id:{id}"));
            assert_eq!(entry["logprob"], sample["sampling_logprobs"][t]);
            let alternatives = entry["top_logprobs"].as_array().unwrap();
            assert!(alternatives.len() <= 2, "{entry}");
        }
    }

    // SGLang's route on the same token ids: a list (n above 1), each sample's `meta_info`.
    let body = json!({
        "input_ids": prompt, "rid": "r2", "return_logprob": true, "top_logprobs_num": 2,
        "image_data": [], "lora_path": null,
        "logprob_start_len": -1,
        "sampling_params": {"n": 2, "temperature": 0.9, "top_p": 0.9, "top_k": 40,
            "max_new_tokens": 12, "sampling_seed": 11, "skip_special_tokens": true,
            "min_new_tokens": 0, "stop_token_ids": null}
    });
    let answers = ok(&server, "/generate", &body).await;
    let answers = answers
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {answers}"));
    assert_eq!(answers.len(), 2);
    for (answer, sample) in answers.iter().zip(&expected) {
        check_sglang(answer, sample, prompt.len());
        assert_eq!(answer["meta_info"]["id"], "r2");
        assert_eq!(answer["entroll"], **sample);
    }
    // Streamed: each sample's whole answer as one event.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = crate::openai::events(&server, "/generate", &streamed).await;
    assert_eq!(events.len(), 2);
    let mut by_index: Vec<&Value> = events.iter().collect();
    by_index.sort_by_key(|e| e["entroll"]["index"].as_u64());
    for (event, sample) in by_index.iter().zip(&expected) {
        check_sglang(event, sample, prompt.len());
    }

    // The prompt as text is one prompt of one sample: an object, sample 0's tokens.
    let text = ok(
        &server,
        "/generate",
        &json!({"text": PROMPT, "sampling_params": {"temperature": 0.9, "top_p": 0.9,
                "top_k": 40, "max_new_tokens": 12, "sampling_seed": 11}}),
    )
    .await;
    assert!(text.is_object(), "{text}");
    assert_eq!(text["output_ids"], expected[0]["token_ids"]);
    assert_eq!(text["text"], expected[0]["text"]);
    assert!(text["meta_info"].get("output_token_logprobs").is_none());
}

/// Checks that an SGLang answer is `sample`, of a prompt of `prompt_len` tokens.
fn check_sglang(answer: &Value, sample: &Value, prompt_len: usize) {
    assert_eq!(answer["output_ids"], sample["token_ids"]);
    assert_eq!(answer["text"], sample["text"]);
    let meta = &answer["meta_info"];
    assert_eq!(meta["prompt_tokens"], prompt_len);
    assert_eq!(meta["completion_tokens"], sample["length"]);
    assert_eq!(meta["weight_version"], "0");
    assert_eq!(meta["finish_reason"]["type"], sample["finish_reason"]);
    let listed = meta["output_token_logprobs"].as_array().unwrap();
    for (t, entry) in listed.iter().enumerate() {
        assert_eq!(
            *entry,
            json!([sample["sampling_logprobs"][t], sample["token_ids"][t], null])
        );
    }
    let top = meta["output_top_logprobs"].as_array().unwrap();
    assert_eq!(top.len(), listed.len());
}

/// Tokens per sample: the tiny model draws them for seconds, so a pause lands mid-way.
const TOKENS: usize = 600;

fn vllm_request(prompt: &[u64], seed: u64, max_tokens: usize) -> Value {
    json!({"token_ids": prompt, "sampling_params": {"n": 2, "temperature": 1.0,
           "max_tokens": max_tokens, "seed": seed, "logprobs": 0}})
}

fn sglang_request(prompt: &[u64], seed: u64, max_tokens: usize) -> Value {
    json!({"input_ids": [prompt], "return_logprob": true,
           "sampling_params": {"n": 2, "temperature": 1.0, "max_new_tokens": max_tokens,
                               "sampling_seed": seed}})
}

fn rollouts_request(prompt: &[u64], seed: u64, max_tokens: usize) -> Value {
    json!({"prompts": [{"token_ids": prompt}], "group_size": 2,
           "sampling": {"temperature": 1.0, "max_tokens": max_tokens, "seed": seed}})
}

/// Spawns a POST of `body` to `path`.
fn spawn_post(
    server: &InProcess,
    path: &'static str,
    body: Value,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let base = server.base().to_string();
    tokio::spawn(async move { post_path(&base, path, body.to_string()).await })
}

/// Checks that `task` is still waiting after a while: a request that arrived while paused.
async fn still_waiting(task: &tokio::task::JoinHandle<(u16, Value)>) {
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !task.is_finished(),
        "a request ran while generation was paused"
    );
}

/// The token at which a kept sample went on under version `to` after starting on 0.
fn resumed_at(sample: &Value, to: u64) -> usize {
    let runs = sample["weights_versions"]
        .as_array()
        .unwrap_or_else(|| panic!("a frozen sample reports no runs: {sample}"));
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0], json!([0, 0]));
    assert_eq!(runs[1][0], to);
    let from = runs[1][1].as_u64().unwrap() as usize;
    let length = sample["length"].as_u64().unwrap() as usize;
    assert!(from > 0 && from < length, "resumed at {from} of {length}");
    from
}

#[tokio::test]
async fn pause_keep_freezes_samples_and_an_update_while_paused_moves_them() {
    let model = harness::tiny_model();
    let server = harness::start(|c| c.max_running_sequences = 2);
    let prompt = prompt_ids(&server, PROMPT).await;
    let reference = ok(
        &server,
        "/inference/v1/generate",
        &vllm_request(&prompt, 5, TOKENS),
    )
    .await;

    let running = spawn_post(
        &server,
        "/inference/v1/generate",
        vllm_request(&prompt, 5, TOKENS),
    );
    drawing(&server, 2).await;
    let paused = client()
        .post(format!(
            "{}/pause?mode=keep&clear_cache=false",
            server.base()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status().as_u16(), 200);
    assert_eq!(paused.json::<Value>().await.unwrap()["status"], "paused");
    assert_eq!(
        get_json(server.base(), "/is_paused").await["is_paused"],
        true
    );
    assert_eq!(server.metric("entroll_paused").await, 1.0);
    // Frozen: the engine draws nothing (its decode steps stop), and what arrives waits.
    const DRAWS: &str = "entroll_engine_decode_batch_sum";
    tokio::time::sleep(Duration::from_millis(200)).await;
    let draws = server.metric(DRAWS).await;
    let waiting = spawn_post(&server, "/generate", sglang_request(&prompt, 6, 5));
    still_waiting(&waiting).await;
    assert!(!running.is_finished());
    assert_eq!(
        server.metric(DRAWS).await,
        draws,
        "the engine drew while paused"
    );

    // prime-rl's update while paused: the same checkpoint as version 1.
    let updated = ok(
        &server,
        "/update_weights",
        &json!({"weight_dir": model.display().to_string()}),
    )
    .await;
    assert_eq!(
        (&updated["status"], &updated["weights_version"]),
        (&json!("ok"), &json!(1))
    );
    assert_eq!(
        get_json(server.base(), "/get_weight_version").await["weight_version"],
        "1"
    );
    still_waiting(&waiting).await;
    let resumed = ok(&server, "/resume", &json!({})).await;
    assert_eq!(resumed["status"], "resumed");

    let (status, moved) = running.await.unwrap();
    assert_eq!(status, 200, "{moved}");
    let reference = reference["choices"].as_array().unwrap();
    for (a, b) in reference.iter().zip(moved["choices"].as_array().unwrap()) {
        let from = resumed_at(&b["entroll"], 1);
        assert_eq!(b["entroll"]["weights_version"], 0);
        // The same checkpoint goes on with the same keys: the same tokens (a draw may only
        // differ where its uniform falls within float noise of a boundary, far from the
        // resume).
        let (ta, tb) = (ids(&a["token_ids"]), ids(&b["token_ids"]));
        let common = ta.iter().zip(&tb).take_while(|(x, y)| x == y).count();
        assert!(
            common == ta.len().max(tb.len()) || common > from + 100,
            "the draw changed at token {common}, the resume was at {from}"
        );
    }
    let (status, later) = waiting.await.unwrap();
    assert_eq!(status, 200, "{later}");
    for answer in later.as_array().unwrap() {
        assert_eq!(answer["meta_info"]["weight_version"], "1");
        assert!(answer["entroll"].get("weights_versions").is_none());
    }
    assert_eq!(server.metric("entroll_paused").await, 0.0);
}

/// Checks that a sample `drawn` cut by a pause is a strict prefix of its uninterrupted draw.
fn check_cut(drawn: &[u64], whole: &[u64], what: &str) {
    assert!(
        drawn.len() < whole.len() && whole.starts_with(drawn),
        "{what}: {} drawn tokens are not a strict prefix of the {} drawn uninterrupted",
        drawn.len(),
        whole.len()
    );
}

#[tokio::test]
async fn pause_abort_answers_each_dialect_with_the_tokens_drawn() {
    let model = harness::tiny_model();
    let server = harness::start(|c| c.max_running_sequences = 8);
    let prompt = prompt_ids(&server, PROMPT).await;
    let reference = rollout(&server, &rollouts_request(&prompt, 9, TOKENS)).await;
    let whole: Vec<Vec<u64>> = samples(&reference)
        .iter()
        .map(|s| ids(&s["token_ids"]))
        .collect();

    let sglang = spawn_post(&server, "/generate", sglang_request(&prompt, 9, TOKENS));
    let vllm = spawn_post(
        &server,
        "/inference/v1/generate",
        vllm_request(&prompt, 9, TOKENS),
    );
    let ours = spawn_post(&server, "/rollouts", rollouts_request(&prompt, 9, TOKENS));
    let completions = spawn_post(
        &server,
        "/v1/completions",
        json!({"prompt": prompt, "n": 2, "max_tokens": TOKENS, "temperature": 1.0, "seed": 9,
               "return_token_ids": true}),
    );
    drawing(&server, 8).await;
    // SGLang's pause, under its default mode: answered once every running request was.
    let paused = ok(&server, "/pause_generation", &json!({})).await;
    assert_eq!(paused["status"], "ok");
    for task in [&sglang, &vllm, &ours, &completions] {
        assert!(
            task.is_finished()
                || tokio::time::timeout(Duration::from_secs(5), async {
                    while !task.is_finished() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
                .await
                .is_ok()
        );
    }

    let (status, answers) = sglang.await.unwrap();
    assert_eq!(status, 200, "{answers}");
    for (i, answer) in answers.as_array().unwrap().iter().enumerate() {
        assert_eq!(
            answer["meta_info"]["finish_reason"]["type"], "abort",
            "{answer}"
        );
        check_cut(&ids(&answer["output_ids"]), &whole[i], "sglang");
        let listed = answer["meta_info"]["output_token_logprobs"]
            .as_array()
            .unwrap();
        assert_eq!(listed.len(), ids(&answer["output_ids"]).len());
    }
    let (status, answer) = vllm.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    for (i, choice) in answer["choices"].as_array().unwrap().iter().enumerate() {
        assert_eq!(choice["finish_reason"], "abort", "{choice}");
        check_cut(&ids(&choice["token_ids"]), &whole[i], "vllm");
        assert_eq!(choice["entroll"]["finish_reason"], "abort");
    }
    // OpenAI's routes answer as vLLM's do: each choice with what it drew.
    let (status, answer) = completions.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    for (i, choice) in answer["choices"].as_array().unwrap().iter().enumerate() {
        assert_eq!(choice["finish_reason"], "abort", "{choice}");
        check_cut(&ids(&choice["token_ids"]), &whole[i], "completions");
    }
    let (status, refused) = ours.await.unwrap();
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error_type"], "aborted");
    for (i, sample) in refused["partial"][0]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        check_cut(&ids(&sample["token_ids"]), &whole[i], "rollouts");
    }
    assert_eq!(
        server
            .metric("entroll_samples_interrupted_total{in_flight=\"pause\"}")
            .await,
        8.0
    );

    // While paused, a request waits; an update from disk (SGLang's, as slime sends it) serves
    // the next one.
    let waiting = spawn_post(&server, "/rollouts", rollouts_request(&prompt, 9, 4));
    still_waiting(&waiting).await;
    let updated = ok(
        &server,
        "/update_weights_from_disk",
        &json!({"model_path": model.display().to_string(), "weight_version": "5",
                "abort_all_requests": true, "flush_cache": true}),
    )
    .await;
    assert_eq!(
        (&updated["success"], &updated["weight_version"]),
        (&json!(true), &json!("5"))
    );
    assert_eq!(
        ok(&server, "/flush_cache", &json!({})).await["status"],
        "ok"
    );
    still_waiting(&waiting).await;
    assert_eq!(
        ok(&server, "/continue_generation", &json!({})).await["status"],
        "ok"
    );
    let (status, later) = waiting.await.unwrap();
    assert_eq!(status, 200, "{later}");
    assert_eq!(later["weights_version"], 5);
    for s in samples(&later) {
        assert_eq!(s["weights_version"], 5);
    }
}

#[tokio::test]
async fn pause_wait_lets_running_requests_finish_first_and_abort_all_pauses_nothing() {
    let server = harness::start(|c| c.max_running_sequences = 2);
    let prompt = prompt_ids(&server, PROMPT).await;
    let reference = ok(
        &server,
        "/inference/v1/generate",
        &vllm_request(&prompt, 3, 200),
    )
    .await;
    let running = spawn_post(
        &server,
        "/inference/v1/generate",
        vllm_request(&prompt, 3, 200),
    );
    drawing(&server, 2).await;
    let (status, paused) = post(&server, "/pause?mode=wait", &json!({})).await;
    assert_eq!((status, &paused["status"]), (200, &json!("paused")));
    // By the pause's answer the running request was answered, whole.
    assert_eq!(server.metric("entroll_sequences_running").await, 0.0);
    let (status, answer) = running.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    for (a, b) in reference["choices"]
        .as_array()
        .unwrap()
        .iter()
        .zip(answer["choices"].as_array().unwrap())
    {
        assert_eq!(a["token_ids"], b["token_ids"]);
        assert_ne!(b["finish_reason"], "abort");
    }
    let waiting = spawn_post(
        &server,
        "/inference/v1/generate",
        vllm_request(&prompt, 3, 4),
    );
    still_waiting(&waiting).await;
    ok(&server, "/resume", &json!({})).await;
    let (status, later) = waiting.await.unwrap();
    assert_eq!(status, 200, "{later}");

    // SGLang's abort of every running request: it ends with what it drew, and nothing pauses.
    let running = spawn_post(&server, "/generate", sglang_request(&prompt, 3, 200));
    drawing(&server, 2).await;
    let aborted = ok(
        &server,
        "/abort_request",
        &json!({"rid": "", "abort_all": true}),
    )
    .await;
    assert_eq!(aborted["status"], "ok");
    let (status, answers) = running.await.unwrap();
    assert_eq!(status, 200, "{answers}");
    for (i, answer) in answers.as_array().unwrap().iter().enumerate() {
        assert_eq!(answer["meta_info"]["finish_reason"]["type"], "abort");
        let whole = ids(&reference["choices"][i]["token_ids"]);
        check_cut(&ids(&answer["output_ids"]), &whole, "abort_all");
    }
    assert_eq!(
        get_json(server.base(), "/is_paused").await["is_paused"],
        false
    );
    ok(&server, "/generate", &sglang_request(&prompt, 3, 2)).await;
    assert_eq!(
        server
            .metric("entroll_samples_interrupted_total{in_flight=\"pause\"}")
            .await,
        2.0,
        "only abort_all stopped samples"
    );
}

/// Checks an OpenAI-form error (vLLM's routes): `status`, and a message holding `says`.
fn check_openai_error(answer: &(u16, Value), status: u16, param: Option<&str>, says: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    let error = &body["error"];
    assert_eq!(error["param"].as_str(), param, "{body}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(says), "{message:?} does not say {says:?}");
}

/// Checks an SGLang-form error: `status`, and a message holding `says`.
fn check_sglang_error(answer: &(u16, Value), status: u16, says: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not SGLang's error form: {body}"));
    assert!(message.contains(says), "{message:?} does not say {says:?}");
}

#[tokio::test]
async fn bad_input_on_every_new_route_answers_in_its_dialect() {
    let server = harness::start(|_| {});
    let prompt = prompt_ids(&server, PROMPT).await;
    let raw = |path: &'static str, body: &'static str| {
        let base = server.base().to_string();
        async move { post_path(&base, path, body).await }
    };

    // vLLM's routes: OpenAI's form, the field named.
    let vllm = |sampling: Value| json!({"token_ids": prompt, "sampling_params": sampling});
    for (body, param, says) in [
        (
            vllm(json!({"min_tokens": 1})),
            "sampling_params.min_tokens",
            "min_tokens above 0",
        ),
        (
            vllm(json!({"logprobs": 21})),
            "sampling_params.logprobs",
            "at most 20",
        ),
        (
            vllm(json!({"min_p": 0.1})),
            "sampling_params.min_p",
            "not served",
        ),
        (vllm(json!({"best_of": 2})), "best_of", "unknown field"),
        (
            vllm(json!({"stop_token_ids": [7]})),
            "sampling_params.stop_token_ids",
            "end-of-sequence",
        ),
        (
            vllm(json!({"prompt_logprobs": 1})),
            "sampling_params.prompt_logprobs",
            "not served",
        ),
        (
            vllm(json!({"max_tokens": 0})),
            "sampling_params.max_tokens",
            "max_tokens",
        ),
        (json!({"token_ids": []}), "token_ids", "empty"),
        (json!({"token_ids": [1_000_000]}), "token_ids", "vocabulary"),
        (
            json!({"token_ids": [1], "stream": true}),
            "stream",
            "answers whole",
        ),
    ] {
        let answer = post(&server, "/inference/v1/generate", &body).await;
        check_openai_error(&answer, 400, Some(param), says);
    }
    let answer = post(
        &server,
        "/inference/v1/generate",
        &json!({"model": "gpt", "token_ids": [1]}),
    )
    .await;
    check_openai_error(&answer, 404, Some("model"), "does not exist");
    let answer = raw("/inference/v1/generate", "{\"token_ids\": [1").await;
    assert_eq!(
        (answer.0, &answer.1["error"]["type"]),
        (400, &json!("invalid_request_error"))
    );
    let answer = post(&server, "/pause?mode=sideways", &json!({})).await;
    check_openai_error(&answer, 400, Some("mode"), "keep, abort and wait");
    let answer = post(
        &server,
        "/update_weights",
        &json!({"weight_dir": "/nowhere"}),
    )
    .await;
    check_openai_error(&answer, 400, Some("weight_dir"), "weights path is refused");
    let answer = post(&server, "/update_weights", &json!({"names": ["w"]})).await;
    check_openai_error(&answer, 400, Some("names"), "unknown field");

    // SGLang's routes: its form.
    let sglang = |extra: Value| {
        let mut body = json!({"input_ids": prompt});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (body, says) in [
        (
            sglang(json!({"text": "a"})),
            "exactly one of text and input_ids",
        ),
        (
            sglang(json!({"sampling_params": {"min_new_tokens": 2}})),
            "min_new_tokens",
        ),
        (
            sglang(json!({"sampling_params": {"regex": "a+"}})),
            "regex is not served",
        ),
        (
            sglang(json!({"sampling_params": {"max_new_tokens": 0}})),
            "max_new_tokens",
        ),
        (
            sglang(json!({"sampling_params": {"frequency_penalty": 0.5}})),
            "frequency_penalty",
        ),
        (sglang(json!({"logprob_start_len": 0})), "logprob_start_len"),
        (
            sglang(json!({"top_logprobs_num": 3})),
            "needs return_logprob",
        ),
        (sglang(json!({"rid": ["a", "b"]})), "rid must be"),
        (
            sglang(json!({"input_ids": [[1], []]})),
            "input_ids[1] is empty",
        ),
        (sglang(json!({"input_ids": [1_000_000]})), "vocabulary"),
        (
            sglang(json!({"sampling_params": {"temprature": 1.0}})),
            "unknown field",
        ),
    ] {
        let answer = post(&server, "/generate", &body).await;
        check_sglang_error(&answer, 400, says);
    }
    check_sglang_error(&raw("/generate", "[").await, 400, "malformed JSON");
    check_sglang_error(
        &post(&server, "/pause_generation", &json!({"mode": "sideways"})).await,
        400,
        "abort, retract and in_place",
    );
    check_sglang_error(
        &post(&server, "/abort_request", &json!({"rid": "r"})).await,
        400,
        "abort_all",
    );
    for (body, says) in [
        (json!({"model_path": "/nowhere"}), "weights path is refused"),
        (
            json!({"model_path": harness::tiny_model(), "weight_version": "step-3"}),
            "integers",
        ),
        (
            json!({"model_path": harness::tiny_model(), "weight_version": 0}),
            "must exceed the served version",
        ),
        (
            json!({"model_path": harness::tiny_model(), "load_format": "dummy"}),
            "load_format",
        ),
    ] {
        let (status, answer) = post(&server, "/update_weights_from_disk", &body).await;
        assert_eq!(
            (status, &answer["success"]),
            (400, &json!(false)),
            "{answer}"
        );
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{message:?} does not say {says:?}");
        assert_eq!(answer["weight_version"], "0");
    }
    // Nothing broke: it serves, unpaused, on version 0.
    assert_eq!(
        get_json(server.base(), "/get_weight_version").await["weight_version"],
        "0"
    );
    assert_eq!(
        get_json(server.base(), "/is_paused").await["is_paused"],
        false
    );
    ok(
        &server,
        "/generate",
        &sglang(json!({"sampling_params": {"max_new_tokens": 2}})),
    )
    .await;
}

#[tokio::test]
async fn info_routes_describe_the_server_and_control_routes_take_the_admin_key() {
    const API: &str = "api-key-1";
    const ADMIN: &str = "admin-key-1";
    let server = harness::start(|c| {
        c.api_key = API.to_string().into();
        c.admin_key = ADMIN.to_string().into();
    });
    let call = |method: reqwest::Method, path: &'static str, key: Option<&'static str>| {
        let base = server.base().to_string();
        async move {
            let mut request = client().request(method, format!("{base}{path}"));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }
    };
    use reqwest::Method;
    let (status, world) = call(Method::GET, "/get_world_size", Some(API)).await;
    assert_eq!((status, world), (200, json!({"world_size": 1})));
    let (_, info) = call(Method::GET, "/get_server_info", Some(API)).await;
    let (_, same) = call(Method::GET, "/server_info", Some(API)).await;
    assert_eq!(info, same);
    assert_eq!(
        (&info["weight_version"], &info["paused"]),
        (&json!("0"), &json!(false))
    );
    assert!(
        info["model_path"].as_str().unwrap().contains("tiny"),
        "{info}"
    );
    let (_, model) = call(Method::GET, "/model_info", Some(API)).await;
    assert_eq!(
        (&model["model_path"], &model["is_generation"]),
        (&info["model_path"], &json!(true))
    );
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for (method, path) in [
        (Method::POST, "/pause"),
        (Method::POST, "/resume"),
        (Method::POST, "/update_weights"),
        (Method::POST, "/reset_prefix_cache"),
        (Method::POST, "/update_weights_from_disk"),
        (Method::POST, "/pause_generation"),
        (Method::POST, "/continue_generation"),
        (Method::POST, "/flush_cache"),
        (Method::POST, "/abort_request"),
    ] {
        // The API key opens generation, not control; each dialect says so in its form.
        let (status, body) = call(method.clone(), path, Some(API)).await;
        *counts.entry(status).or_default() += 1;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
        let (status, _) = call(method, path, None).await;
        assert_eq!(status, 401, "{path}");
    }
    assert_eq!(counts[&403], 9);
    let (status, _) = call(Method::POST, "/reset_prefix_cache", Some(ADMIN)).await;
    assert_eq!(status, 200);
    let (status, flushed) = call(Method::GET, "/flush_cache", Some(ADMIN)).await;
    assert_eq!((status, &flushed["status"]), (200, &json!("ok")));
    let (status, _) = call(Method::GET, "/health_generate", None).await;
    assert_eq!(status, 200);
    let (status, resumed) = call(Method::POST, "/resume", Some(ADMIN)).await;
    assert_eq!((status, &resumed["status"]), (200, &json!("resumed")));
}

#[tokio::test]
async fn a_paused_server_that_shuts_down_finishes_what_it_admitted() {
    let mut server = harness::start(|c| c.max_running_sequences = 2);
    let prompt = prompt_ids(&server, PROMPT).await;
    let reference = ok(
        &server,
        "/inference/v1/generate",
        &vllm_request(&prompt, 4, 200),
    )
    .await;
    let frozen = spawn_post(
        &server,
        "/inference/v1/generate",
        vllm_request(&prompt, 4, 200),
    );
    drawing(&server, 2).await;
    let (status, _) = post(&server, "/pause?mode=keep", &json!({})).await;
    assert_eq!(status, 200);
    let waiting = spawn_post(&server, "/generate", sglang_request(&prompt, 4, 5));
    still_waiting(&waiting).await;
    // The shutdown resumes: both finish within the grace period, whole.
    server.signal();
    let (status, answer) = frozen.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    for (a, b) in reference["choices"]
        .as_array()
        .unwrap()
        .iter()
        .zip(answer["choices"].as_array().unwrap())
    {
        assert_eq!(a["token_ids"], b["token_ids"], "the frozen sample went on");
    }
    let (status, answers) = waiting.await.unwrap();
    assert_eq!(status, 200, "{answers}");
    assert_eq!(answers.as_array().unwrap().len(), 2);
    server.wait_stopped(Duration::from_secs(30)).unwrap();
}
