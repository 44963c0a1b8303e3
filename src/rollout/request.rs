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
        let ids = engine.tokenize(&p.input).await?;
        check_prompt_tokens(i, &ids, engine.info(), request.sampling.max_tokens)?;
        prompt_ids.push(Arc::from(ids));
    }
    Ok(TokenizedRollout {
        request,
        prompt_ids,
    })
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
            max_batch: 1,
            source: Default::default(),
            shape: None,
        };
        assert!(check_prompt_tokens(0, &[1, 2, 3], &model, 10).is_ok());
        assert!(check_prompt_tokens(0, &[1, 100], &model, 10).is_err());
        assert!(check_prompt_tokens(0, &[], &model, 10).is_err());
        assert!(check_prompt_tokens(0, &[1; 45], &model, 10).is_err());
    }
}
