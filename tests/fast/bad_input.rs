//! Bad input gets a clear 4xx `{error, error_type}` and the server keeps serving.

use crate::common::{post_raw, rollout};
use crate::harness;
use serde_json::json;

#[tokio::test]
async fn bad_requests_get_4xx_and_the_server_keeps_serving() {
    let s = &harness::start(|_| {});
    let ok_prompt = json!([{"text": "hi"}]);
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "truncated JSON",
            r#"{"prompts": [{"text": "hi"}"#.into(),
            400,
        ),
        ("not JSON", "prompts=hi".into(), 400),
        ("empty body", String::new(), 400),
        ("JSON array", "[]".into(), 422),
        (
            "unknown top-level field",
            json!({"prompts": ok_prompt, "temprature": 1}).to_string(),
            422,
        ),
        (
            "unknown sampling field",
            json!({"prompts": ok_prompt, "sampling": {"topp": 1}}).to_string(),
            422,
        ),
        (
            "unknown prompt field",
            json!({"prompts": [{"text": "a", "txt": "b"}]}).to_string(),
            422,
        ),
        (
            "no prompts field",
            json!({"group_size": 2}).to_string(),
            422,
        ),
        ("empty prompts", json!({"prompts": []}).to_string(), 422),
        (
            "prompt with nothing",
            json!({"prompts": [{"id": "x"}]}).to_string(),
            422,
        ),
        (
            "text and token_ids",
            json!({"prompts": [{"text": "a", "token_ids": [1]}]}).to_string(),
            422,
        ),
        (
            "messages and text",
            json!({"prompts": [{"text": "a", "messages": [{"role": "user", "content": "b"}]}]})
                .to_string(),
            422,
        ),
        (
            "empty text",
            json!({"prompts": [{"text": ""}]}).to_string(),
            422,
        ),
        (
            "empty token_ids",
            json!({"prompts": [{"token_ids": []}]}).to_string(),
            422,
        ),
        (
            "empty messages",
            json!({"prompts": [{"messages": []}]}).to_string(),
            422,
        ),
        (
            "message without content",
            json!({"prompts": [{"messages": [{"role": "user"}]}]}).to_string(),
            422,
        ),
        (
            "G = 0",
            json!({"prompts": ok_prompt, "group_size": 0}).to_string(),
            422,
        ),
        (
            "G above the limit",
            json!({"prompts": ok_prompt, "group_size": 65}).to_string(),
            422,
        ),
        (
            "per-prompt G = 0",
            json!({"prompts": [{"text": "a", "group_size": 0}]}).to_string(),
            422,
        ),
        (
            "negative G",
            json!({"prompts": ok_prompt, "group_size": -1}).to_string(),
            422,
        ),
        (
            "G as string",
            json!({"prompts": ok_prompt, "group_size": "2"}).to_string(),
            422,
        ),
        (
            "max_tokens above the context",
            json!({"prompts": ok_prompt, "sampling": {"max_tokens": 8192}}).to_string(),
            422,
        ),
        (
            "max_tokens above the limit",
            json!({"prompts": ok_prompt, "sampling": {"max_tokens": 100000}}).to_string(),
            422,
        ),
        (
            "max_tokens 0",
            json!({"prompts": ok_prompt, "sampling": {"max_tokens": 0}}).to_string(),
            422,
        ),
        (
            "temperature 0",
            json!({"prompts": ok_prompt, "sampling": {"temperature": 0.0}}).to_string(),
            422,
        ),
        (
            "temperature negative",
            json!({"prompts": ok_prompt, "sampling": {"temperature": -0.5}}).to_string(),
            422,
        ),
        (
            "top_p 0",
            json!({"prompts": ok_prompt, "sampling": {"top_p": 0.0}}).to_string(),
            422,
        ),
        (
            "top_p above 1",
            json!({"prompts": ok_prompt, "sampling": {"top_p": 1.01}}).to_string(),
            422,
        ),
        (
            "top_k 0",
            json!({"prompts": ok_prompt, "sampling": {"top_k": 0}}).to_string(),
            422,
        ),
        (
            "seed negative",
            json!({"prompts": ok_prompt, "sampling": {"seed": -1}}).to_string(),
            422,
        ),
        (
            "seed huge",
            r#"{"prompts": [{"text": "hi"}], "sampling": {"seed": 1e400}}"#.into(),
            400,
        ),
        (
            "stats top_p 0",
            json!({"prompts": ok_prompt, "stats": {"top_p": 0}}).to_string(),
            422,
        ),
        (
            "peak_quantile above 1",
            json!({"prompts": ok_prompt, "stats": {"peak_quantile": 1.5}}).to_string(),
            422,
        ),
        (
            "unknown nucleus",
            json!({"prompts": ok_prompt, "stats": {"nucleus": "loose"}}).to_string(),
            422,
        ),
        (
            "unknown advantage",
            json!({"prompts": ok_prompt, "advantage": "ppo"}).to_string(),
            422,
        ),
        (
            "out-of-vocabulary token id",
            json!({"prompts": [{"token_ids": [1, 49152]}]}).to_string(),
            422,
        ),
        (
            "token id above u32",
            json!({"prompts": [{"token_ids": [1, 4294967296u64]}]}).to_string(),
            422,
        ),
        (
            "too many prompts",
            json!({"prompts": vec![json!({"text": "x"}); 257]}).to_string(),
            422,
        ),
        ("null body", "null".into(), 422),
        ("string body", r#""prompts""#.into(), 422),
        ("number body", "42".into(), 422),
        ("whitespace body", "  \n\t ".into(), 400),
        (
            "trailing garbage",
            r#"{"prompts": [{"text": "hi"}]} x"#.into(),
            400,
        ),
        (
            "NaN literal",
            r#"{"prompts": [{"text": "hi"}], "sampling": {"temperature": NaN}}"#.into(),
            400,
        ),
        (
            "byte-order mark",
            format!("\u{feff}{}", json!({"prompts": ok_prompt})),
            400,
        ),
        (
            "prompts not an array",
            json!({"prompts": "hi"}).to_string(),
            422,
        ),
        (
            "group_size as a string",
            json!({"prompts": ok_prompt, "group_size": "2"}).to_string(),
            422,
        ),
        (
            "group_size fractional",
            json!({"prompts": ok_prompt, "group_size": 2.5}).to_string(),
            422,
        ),
        (
            "max_tokens negative",
            json!({"prompts": ok_prompt, "sampling": {"max_tokens": -5}}).to_string(),
            422,
        ),
        (
            "message role not a string",
            json!({"prompts": [{"messages": [{"role": 1, "content": "x"}]}]}).to_string(),
            422,
        ),
        (
            "message without content",
            json!({"prompts": [{"messages": [{"role": "user"}]}]}).to_string(),
            422,
        ),
        (
            "stop not a list",
            json!({"prompts": ok_prompt, "sampling": {"stop": "\n"}}).to_string(),
            422,
        ),
        (
            "timeout_ms zero",
            json!({"prompts": ok_prompt, "timeout_ms": 0}).to_string(),
            422,
        ),
        (
            "deeply nested JSON",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            422,
        ),
        (
            "deeply nested prompt",
            format!(
                r#"{{"prompts": [{{"text": {}{}}}]}}"#,
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
            422,
        ),
    ];
    for (name, body, want) in cases {
        let (status, err) = post_raw(s, body).await;
        assert_eq!(status, want, "{name}: {err}");
        assert_eq!(err["error_type"], "validation", "{name}");
        assert!(!err["error"].as_str().unwrap().is_empty(), "{name}");
    }
    // Invalid UTF-8 inside a string.
    let mut bytes = br#"{"prompts": [{"text": ""#.to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(br#""}]}"#);
    let (status, err) = post_raw(s, bytes).await;
    assert_eq!(status, 400, "{err}");
    // A 100 MB body, over the 32 MiB limit: the server answers 413 after reading the limit and
    // closes the connection, so a client still uploading may see the close instead of the answer.
    let huge = format!(
        r#"{{"prompts": [{{"text": "{}"}}]}}"#,
        "a".repeat(100 << 20)
    );
    let sent = crate::common::client()
        .post(format!("{}/rollouts", s.base))
        .body(huge)
        .send()
        .await;
    if let Ok(resp) = sent {
        assert_eq!(resp.status(), 413);
    }
    // Still serving.
    let r = rollout(
        s,
        &json!({"prompts": ok_prompt, "group_size": 1, "sampling": {"max_tokens": 2}}),
    )
    .await;
    assert_eq!(r["groups"][0]["samples"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_oversized_body_gets_413_with_an_error_body() {
    // A small limit, so the whole upload fits in the socket buffers and the answer is read.
    let small = harness::start(|c| c.max_body_bytes = 4096);
    let body = format!(r#"{{"prompts": [{{"text": "{}"}}]}}"#, "a".repeat(64 << 10));
    let (status, err) = post_raw(&small, body).await;
    assert_eq!(status, 413, "{err}");
    assert_eq!(err["error_type"], "validation");
    assert!(err["error"].as_str().unwrap().contains("4096"));
    let r = rollout(
        &small,
        &json!({"prompts": [{"text": "hi"}], "group_size": 1, "sampling": {"max_tokens": 2}}),
    )
    .await;
    assert_eq!(r["groups"][0]["samples"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_prompt_too_long_for_any_tokenization_is_refused_before_it_is_tokenized() {
    // 24 MiB of text: far more than the tiny model's context can hold however it tokenizes
    // (the probe's 31.6 MB prompt took 17 s and 4.4 GB to tokenize before its 422).
    let server = harness::start(|_| {});
    for prompt in [
        json!({"text": "a".repeat(24 << 20)}),
        json!({"messages": [{"role": "user", "content": "a".repeat(24 << 20)}]}),
    ] {
        let body = json!({"prompts": [prompt], "group_size": 1}).to_string();
        let (status, err) = post_raw(&server, body).await;
        assert_eq!(status, 422, "{err}");
        assert!(
            err["error"].as_str().unwrap().contains("bytes of text"),
            "{err}"
        );
    }
    let r = rollout(
        &server,
        &json!({"prompts": [{"text": "hi"}], "group_size": 1, "sampling": {"max_tokens": 2}}),
    )
    .await;
    assert_eq!(r["groups"][0]["samples"].as_array().unwrap().len(), 1);
}
