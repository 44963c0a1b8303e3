//! Any body a client can send to `POST /v1/completions` or `POST /v1/chat/completions` is parsed,
//! made into the `/rollouts` request it stands for and validated without panicking, and every
//! refusal is a 4xx with a non-empty message in OpenAI's form.
#![no_main]

use entroll::http::config::Config;
use entroll::http::openai::error::OpenAiError;
use entroll::http::openai::request::{in_openai_words, parse, rollout_request, Route};
use entroll::http::validation::validate;
use libfuzzer_sys::fuzz_target;

fn check_refusal(e: &OpenAiError) {
    assert!(e.status().is_client_error(), "{e:?} is not a 4xx");
    let body = e.body();
    assert!(!body.error.message.is_empty());
    assert!(serde_json::to_vec(&body).is_ok());
}

fuzz_target!(|body: &[u8]| {
    let config = Config::default();
    let served = ["fuzz".to_string()];
    for route in [Route::Completions, Route::Chat] {
        let outcome = parse(body)
            .and_then(|request| rollout_request(route, request, &served, &[2]))
            .and_then(|(request, asked)| {
                validate(request, &config)
                    .map(|valid| (valid, asked))
                    .map_err(|e| in_openai_words(e, route))
            });
        match outcome {
            Ok((valid, asked)) => {
                assert!(!valid.prompts.is_empty());
                assert!(valid.prompts.iter().all(|p| p.group_size == asked.n));
                // Alternatives only with a listing, and within the bound.
                assert!(valid.top_logprobs <= 20 && (valid.top_logprobs == 0 || asked.logprobs));
                if route == Route::Chat {
                    assert_eq!(valid.prompts.len(), 1);
                }
            }
            Err(e) => check_refusal(&e),
        }
    }
});
