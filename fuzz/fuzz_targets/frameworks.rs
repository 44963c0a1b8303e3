//! Any body a client can send to vLLM's `POST /inference/v1/generate` or SGLang's
//! `POST /generate` is parsed, made into the `/rollouts` request it stands for and validated
//! without panicking, and every refusal is a 4xx with a non-empty message in the route's form;
//! the control routes' bodies (`/update_weights`, `/update_weights_from_disk`,
//! `/pause_generation`, `/abort_request`) parse or are refused the same way.
#![no_main]

use entroll::api::sglang::{AbortRequest, PauseRequest, UpdateFromDiskRequest};
use entroll::api::vllm::UpdateWeightsRequest;
use entroll::http::config::Config;
use entroll::http::openai::error::OpenAiError;
use entroll::http::openai::request::parse;
use entroll::http::sglang::{self, SglangError};
use entroll::http::validation::validate;
use entroll::http::vllm;
use libfuzzer_sys::fuzz_target;

fn check_openai(e: &OpenAiError) {
    assert!(e.status().is_client_error(), "{e:?} is not a 4xx");
    assert!(!e.body().error.message.is_empty());
}

fn check_sglang(e: &SglangError) {
    assert!(e.status().is_client_error(), "{e:?} is not a 4xx");
    assert!(!e.body().error.message.is_empty());
}

fuzz_target!(|body: &[u8]| {
    let config = Config::default();
    let served = ["fuzz".to_string()];
    let vllm = parse(body)
        .and_then(|request| vllm::rollout_request(request, &served, &[2]))
        .and_then(|(request, asked)| {
            validate(request, &config)
                .map(|valid| (valid, asked))
                .map_err(vllm::in_vllm_words)
        });
    match vllm {
        Ok((valid, asked)) => {
            assert_eq!(valid.prompts.len(), 1);
            assert!(valid.top_logprobs <= 20 && (valid.top_logprobs == 0 || asked.logprobs));
        }
        Err(e) => check_openai(&e),
    }
    let sglang = parse(body)
        .map_err(SglangError::from)
        .and_then(|request| sglang::rollout_request(request, &[2]))
        .and_then(|(request, asked)| {
            validate(request, &config)
                .map(|valid| (valid, asked))
                .map_err(sglang::in_sglang_words)
        });
    match sglang {
        Ok((valid, asked)) => {
            assert!(!valid.prompts.is_empty());
            assert_eq!(asked.rids.len(), valid.prompts.len());
            assert!(valid.prompts.iter().all(|p| p.group_size == asked.n));
            assert!(!asked.single || (valid.prompts.len() == 1 && asked.n == 1));
        }
        Err(e) => check_sglang(&e),
    }
    for refused in [
        parse::<UpdateWeightsRequest>(body).err(),
        parse::<UpdateFromDiskRequest>(body).err(),
        parse::<PauseRequest>(body).err(),
        parse::<AbortRequest>(body).err(),
    ]
    .into_iter()
    .flatten()
    {
        check_openai(&refused);
    }
});
