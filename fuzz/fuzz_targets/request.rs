//! Any body a client can send to `POST /rollouts` is parsed and validated without panicking, and
//! every rejection is a 4xx with a non-empty message. Token-id prompts that pass validation also
//! go through the post-tokenization checks against a model of fuzzed size.
#![no_main]

use entroll::api::rollouts::RolloutRequest;
use entroll::engine::{ModelInfo, PromptInput};
use entroll::http::config::Config;
use entroll::http::error::status;
use entroll::http::validation::{parse_json, validate};
use entroll::rollout::request::{check_prompt_bytes, check_prompt_tokens};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let config = Config::default();
    let outcome = parse_json::<RolloutRequest>(body).and_then(|request| validate(request, &config));
    let valid = match outcome {
        Ok(valid) => valid,
        Err(e) => {
            assert!(status(&e).is_client_error(), "{e:?} is not a 4xx");
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(!valid.prompts.is_empty());
    assert!(valid.prompts.len() <= config.max_prompts);
    assert!(valid.sampling.max_tokens <= config.max_new_tokens);
    let model = ModelInfo {
        engine: "fuzz",
        device_kernels: false,
        id: "fuzz".into(),
        vocab_size: 1 + body.len() % 50_000,
        max_context: Some(1 + body.len() % 8_192),
        max_token_bytes: Some(1 + body.len() % 64),
        max_batch: 1,
        eos_ids: vec![2],
        source: Default::default(),
        shape: None,
    };
    for (i, prompt) in valid.prompts.iter().enumerate() {
        assert!(prompt.group_size >= 1 && prompt.group_size <= config.max_group_size);
        if let Err(e) = check_prompt_bytes(i, &prompt.input, &model) {
            assert!(status(&e).is_client_error());
        }
        if let PromptInput::TokenIds(ids) = &prompt.input {
            if let Err(e) = check_prompt_tokens(i, ids, &model, valid.sampling.max_tokens) {
                assert!(status(&e).is_client_error());
            }
        }
    }
});
