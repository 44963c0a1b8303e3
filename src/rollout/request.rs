//! What the rollout service runs: a request that passed validation ([`ValidRollout`], made by
//! the HTTP layer's `validation`), and its tokenization on the engine that will run it
//! ([`tokenize`]), which checks every prompt's tokens against that model
//! ([`check_prompt_tokens`]).

use std::sync::Arc;

use crate::api::error::ApiError;
use crate::api::rollouts::{AdvantageSpec, SamplingParams, StatsParams};
use crate::engine::{Engine, ModelInfo, PromptInput};

/// A request that passed validation, with every default applied.
#[derive(Debug, Clone)]
pub struct ValidRollout {
    /// Prompts in request order.
    pub prompts: Vec<ValidPrompt>,
    /// Effective sampling parameters.
    pub sampling: SamplingParams,
    /// Effective statistics parameters.
    pub stats: StatsParams,
    /// Effective advantage estimator.
    pub advantage: AdvantageSpec,
    /// Deadline of the whole request.
    pub timeout: Option<std::time::Duration>,
    /// Answer group by group as they finish (`application/x-ndjson`).
    pub stream: bool,
    /// Return the sampling mask of every truncated draw.
    pub return_sampling_mask: bool,
    /// Alternatives to return per token (0: none).
    pub top_logprobs: usize,
    /// Answer the samples a pause or an update under `abort` stopped, with what they drew
    /// (`finish_reason: abort`), instead of failing the request (409): the vLLM, SGLang and
    /// OpenAI dialects, whose clients resubmit such samples.
    pub answer_aborted: bool,
}

/// One validated prompt.
#[derive(Debug, Clone)]
pub struct ValidPrompt {
    /// Echoed id.
    pub id: String,
    /// The prompt, not yet tokenized.
    pub input: PromptInput,
    /// Gold answer.
    pub answer: Option<String>,
    /// Samples to draw.
    pub group_size: usize,
}

/// A validated request with every prompt tokenized by the engine that runs it.
#[derive(Debug)]
pub struct TokenizedRollout {
    /// The validated request.
    pub request: ValidRollout,
    /// Each prompt's token ids, in request order (shared by the prompt's G sequences).
    pub prompt_ids: Vec<Arc<[u32]>>,
}

/// Tokenizes every prompt of `request` on `engine` and checks the tokens against its model
/// ([`check_prompt_tokens`]).
pub async fn tokenize(
    request: ValidRollout,
    engine: &dyn Engine,
) -> Result<TokenizedRollout, ApiError> {
    let mut prompt_ids = Vec::with_capacity(request.prompts.len());
    for (i, p) in request.prompts.iter().enumerate() {
        check_prompt_bytes(i, &p.input, engine.info())?;
        let ids = engine.tokenize(&p.input).await?;
        check_prompt_tokens(i, &ids, engine.info(), request.sampling.max_tokens)?;
        prompt_ids.push(Arc::from(ids));
    }
    Ok(TokenizedRollout {
        request,
        prompt_ids,
    })
}

/// Refuses a text prompt that cannot fit the context whatever its tokens, before the cost of
/// tokenizing it: more bytes than the context times the most bytes one token stands for.
pub fn check_prompt_bytes(
    index: usize,
    input: &PromptInput,
    model: &ModelInfo,
) -> Result<(), ApiError> {
    let (Some(ctx), Some(per_token)) = (model.max_context, model.max_token_bytes) else {
        return Ok(());
    };
    let bytes = match input {
        PromptInput::Text(text) => text.len(),
        PromptInput::Messages(messages) => messages.iter().map(|m| m.content.len()).sum(),
        PromptInput::TokenIds(_) => return Ok(()),
    };
    let most = ctx.saturating_mul(per_token);
    if bytes > most {
        return Err(ApiError::Invalid(format!(
            "prompts[{index}] has {bytes} bytes of text, more than the model's context of {ctx} \
             tokens can hold (at most {per_token} bytes a token: {most} bytes)"
        )));
    }
    Ok(())
}

/// Checks a tokenized prompt against the model: non-empty, ids in the vocabulary, and room in
/// the context for `max_tokens` more.
pub fn check_prompt_tokens(
    index: usize,
    ids: &[u32],
    model: &ModelInfo,
    max_tokens: usize,
) -> Result<(), ApiError> {
    if ids.is_empty() {
        return Err(ApiError::Invalid(format!("prompts[{index}] has no tokens")));
    }
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= model.vocab_size) {
        return Err(ApiError::Invalid(format!(
            "prompts[{index}] holds token id {bad}, outside the vocabulary of {}",
            model.vocab_size
        )));
    }
    if let Some(ctx) = model.max_context {
        if ids.len() + max_tokens > ctx {
            return Err(ApiError::Invalid(format!(
                "prompts[{index}] has {} tokens; with max_tokens {max_tokens} it exceeds the \
                 model's context of {ctx}",
                ids.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_tokens_are_checked_against_the_model() {
        let model = ModelInfo {
            engine: "test",
            device_kernels: false,
            id: "m".into(),
            vocab_size: 100,
            max_context: Some(50),
            max_token_bytes: Some(4),
            max_batch: 1,
            eos_ids: vec![2],
            source: Default::default(),
            shape: None,
        };
        assert!(check_prompt_tokens(0, &[1, 2, 3], &model, 10).is_ok());
        assert!(check_prompt_tokens(0, &[1, 100], &model, 10).is_err());
        assert!(check_prompt_tokens(0, &[], &model, 10).is_err());
        assert!(check_prompt_tokens(0, &[1; 45], &model, 10).is_err());
        // 50 tokens of at most 4 bytes hold 200 bytes of text, not 201.
        let text = |n: usize| PromptInput::Text("x".repeat(n));
        assert!(check_prompt_bytes(0, &text(200), &model).is_ok());
        assert!(check_prompt_bytes(0, &text(201), &model).is_err());
        let message = |n: usize| {
            PromptInput::Messages(vec![crate::engine::ChatMessage {
                role: "user".into(),
                content: "x".repeat(n),
            }])
        };
        assert!(check_prompt_bytes(0, &message(201), &model).is_err());
        assert!(check_prompt_bytes(0, &PromptInput::TokenIds(vec![1; 500]), &model).is_ok());
        let unknown = ModelInfo {
            max_token_bytes: None,
            ..model
        };
        assert!(check_prompt_bytes(0, &text(10_000), &unknown).is_ok());
    }
}
