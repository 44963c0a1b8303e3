//! What OpenAI's dialect adds to a request beside the engine's work, on this CPU: the answer of
//! `/v1/chat/completions` and `/v1/completions` built from the `/rollouts` answer and
//! serialized, against the `/rollouts` answer serialized alone. The answer is one prompt's 8
//! samples of 128 tokens (the load `loadtest/routes.sh` measures); the listing of
//! `/v1/completions` names every token by its text, which the default model's tokenizer gives
//! (`entroll fetch-model` first), and once more with 5 alternatives per token listed.
//! docs/benchmarks.md sets the difference against the request's generation time.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use entroll::api::openai::LogprobsMode;
use entroll::api::rollouts::{
    AdvantageSpec, FinishReason, Group, RolloutResponse, Sample, SamplingParams, Served, Summary,
    TopLogprob,
};
use entroll::engine::loader::{ConfiguredLoader, EngineLoader};
use entroll::engine::Engine;
use entroll::http::config::Config;
use entroll::http::openai::answer::Answerer;
use entroll::http::openai::request::{Asked, Route};
use entroll::http::validation::DEFAULT_STATS;

const SAMPLES: usize = 8;
const TOKENS: usize = 128;
/// Alternatives per token in the listing that asks for them.
const TOP: usize = 5;

fn sample(index: usize) -> Sample {
    let floats = |base: f32| {
        (0..TOKENS)
            .map(|t| base - t as f32 * 1e-3)
            .collect::<Vec<_>>()
    };
    Sample {
        index,
        text: "The answer is 42, because six times seven is forty-two. ".repeat(8),
        token_ids: (0..TOKENS as u32)
            .map(|t| 500 + 37 * t + index as u32)
            .collect(),
        logprobs: floats(-1.25),
        sampling_logprobs: floats(-1.0),
        sampling_mask: None,
        sampling_mass: None,
        top_logprobs: None,
        entropy: floats(2.5),
        top_p_size: (0..TOKENS as u32).map(|t| 1 + t % 50).collect(),
        top_p_mass: floats(0.8),
        top_p_entropy: floats(1.5),
        peak: (0..TOKENS).map(|t| t % 5 == 0).collect(),
        finish_reason: FinishReason::Length,
        length: TOKENS,
        truncated: true,
        entropy_sum: 300.0,
        top_p_entropy_sum: 180.0,
        peak_count: TOKENS / 5,
        peak_top_p_entropy_mean: 1.6,
        reward: Some(1.0),
        correct: Some(true),
        extracted_answer: Some("42".into()),
        verdict: None,
        advantage: Some(0.5),
        weights_version: 0,
        weights_versions: None,
    }
}

/// Each token's `TOP` alternatives, the last cut by the truncation.
fn alternatives(index: usize) -> Vec<Vec<TopLogprob>> {
    (0..TOKENS)
        .map(|t| {
            (0..TOP)
                .map(|j| TopLogprob {
                    id: (900 + 53 * t + 7 * j + index) as u32,
                    logprob: -0.5 - j as f32,
                    sampling_logprob: (j + 1 < TOP).then_some(-0.25 - j as f32),
                })
                .collect()
        })
        .collect()
}

fn response() -> RolloutResponse {
    RolloutResponse {
        served: Served {
            model: "SmolLM2-135M-Instruct.Q4_1".into(),
            vocab_size: 49_152,
            weights_version: 0,
            sampling: SamplingParams {
                temperature: 1.0,
                top_p: 1.0,
                top_k: None,
                max_tokens: TOKENS,
                stop: Vec::new(),
                seed: 7,
            },
            stats: DEFAULT_STATS,
            advantage: AdvantageSpec::Grpo,
        },
        groups: vec![Group {
            id: "0".into(),
            prompt_token_ids: (0..80).collect(),
            pass_rate: Some(0.5),
            reward_mean: Some(0.5),
            reward_std: Some(0.5),
            all_equal: Some(false),
            samples: (0..SAMPLES).map(sample).collect(),
        }],
        summary: Summary {
            tokens: SAMPLES * TOKENS,
            entropy_mean: 2.4,
            top_p_entropy_mean: 1.4,
            siren_anchor: 1.6,
            peak_threshold: None,
            elapsed_ms: 20_000,
        },
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = Config::default();
    let model = runtime
        .block_on(ConfiguredLoader(config.engine()).load(&config.model))
        .expect("the default model (entroll fetch-model)");
    let answerer = |route, logprobs| {
        let asked = Asked {
            route,
            n: SAMPLES,
            logprobs,
            as_ids: false,
            token_ids: true,
            stream: false,
            include_usage: false,
            greedy: false,
        };
        let engine: Arc<dyn Engine> = model.clone();
        Answerer::new(asked, LogprobsMode::Processed, engine, "m".into())
    };
    let whole = response();
    let mut group = c.benchmark_group("answer, 8 samples x 128 tokens");
    group.bench_function("rollouts", |b| {
        b.iter(|| serde_json::to_vec(&black_box(whole.clone())).unwrap())
    });
    // The same samples with their alternatives, as a request for them returns them.
    let mut with_top = whole.clone();
    for (i, sample) in with_top.groups[0].samples.iter_mut().enumerate() {
        sample.top_logprobs = Some(alternatives(i));
    }
    for (name, route, logprobs, answer) in [
        ("chat", Route::Chat, false, &whole),
        (
            "completions, logprobs by text",
            Route::Completions,
            true,
            &whole,
        ),
        (
            "completions, logprobs 5 by text",
            Route::Completions,
            true,
            &with_top,
        ),
    ] {
        let answerer = answerer(route, logprobs);
        group.bench_function(name, |b| {
            b.iter(|| {
                let answer = runtime.block_on(answerer.whole(black_box(answer.clone())));
                serde_json::to_vec(&answer.unwrap()).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
