//! The answer of an OpenAI-dialect request, built from the `/rollouts` answer it ran as: whole,
//! or one chunk per group as its samples finish. Listed tokens are named by their text, which
//! the engine's tokenizer gives, or by id.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::api::error::ApiError;
use crate::api::openai::answer::{
    listed_ids, ChatChoice, Choice, Envelope, Listing, Names, TextChoice,
};
use crate::api::openai::{Extension, GroupStats, LogprobsMode, Usage};
use crate::api::rollouts::{Group, RolloutResponse, Sample, Served, Summary};
use crate::engine::Engine;

use super::request::{Asked, Route};
use crate::http::state::unix_now;
use crate::http::validation::random_seed;

/// Builds the answer of one request.
pub struct Answerer {
    asked: Asked,
    mode: LogprobsMode,
    engine: Arc<dyn Engine>,
    id: String,
    created: u64,
    model: String,
    /// Prompt tokens of the groups answered so far (a stream's `usage`).
    prompt_tokens: AtomicUsize,
    /// The groups' statistics so far, by prompt (a stream's last chunk).
    groups: std::sync::Mutex<Vec<GroupStats>>,
}

/// A fresh id for an answer: `prefix` and 32 hex digits.
fn answer_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}{:016x}", random_seed(), random_seed())
}

/// The group statistics of `g`, prompt `index`, for the answer's `entroll` object.
pub fn group_stats(index: usize, g: &Group) -> GroupStats {
    GroupStats {
        prompt_index: index,
        pass_rate: g.pass_rate,
        reward_mean: g.reward_mean,
        reward_std: g.reward_std,
        all_equal: g.all_equal,
    }
}

impl Answerer {
    /// The answerer of a request asking `asked`, served by `engine` under `model`.
    pub fn new(asked: Asked, mode: LogprobsMode, engine: Arc<dyn Engine>, model: String) -> Self {
        let prefix = match asked.route {
            Route::Completions => "cmpl",
            Route::Chat => "chatcmpl",
        };
        Self {
            asked,
            mode,
            engine,
            id: answer_id(prefix),
            created: unix_now(),
            model,
            prompt_tokens: AtomicUsize::new(0),
            groups: Default::default(),
        }
    }

    fn envelope(&self, streamed: bool, choices: Vec<Choice>) -> Envelope<Choice> {
        let object = match (self.asked.route, streamed) {
            (Route::Completions, _) => "text_completion",
            (Route::Chat, false) => "chat.completion",
            (Route::Chat, true) => "chat.completion.chunk",
        };
        Envelope {
            id: self.id.clone(),
            object,
            created: self.created,
            model: self.model.clone(),
            choices,
            prompt_token_ids: None,
            usage: None,
            entroll: None,
        }
    }

    /// The listing of `sample`'s tokens, when the request asked for one.
    async fn listing(&self, sample: &Sample) -> Result<Option<(Listing, Names)>, ApiError> {
        if !self.asked.logprobs {
            return Ok(None);
        }
        let listing = Listing {
            mode: if self.asked.greedy {
                LogprobsMode::Full
            } else {
                self.mode
            },
            as_ids: self.asked.as_ids,
        };
        let names = if listing.as_ids {
            Names(None)
        } else {
            // Every token named, the drawn ones and their alternatives, in one call.
            let ids = listed_ids(sample);
            let texts = self.engine.token_texts(&ids).await?;
            Names(Some(ids.into_iter().zip(texts).collect()))
        };
        Ok(Some((listing, names)))
    }

    /// The choices of `group` (prompt `index`).
    async fn choices(
        &self,
        index: usize,
        group: Group,
        streamed: bool,
    ) -> Result<Vec<Choice>, ApiError> {
        let mut choices = Vec::with_capacity(group.samples.len());
        for sample in group.samples {
            let listing = self.listing(&sample).await?;
            let at = index * self.asked.n + sample.index;
            choices.push(match self.asked.route {
                Route::Completions => Choice::Text(TextChoice::new(
                    at,
                    sample,
                    self.asked.token_ids.then(|| group.prompt_token_ids.clone()),
                    self.asked.token_ids,
                    listing,
                )),
                Route::Chat => Choice::Chat(ChatChoice::new(
                    at,
                    sample,
                    streamed,
                    self.asked.token_ids,
                    listing,
                )),
            });
        }
        Ok(choices)
    }

    fn extension(&self, served: Served, summary: Summary, groups: Vec<GroupStats>) -> Extension {
        Extension {
            served,
            logprobs_mode: self.mode,
            summary,
            groups,
        }
    }

    /// The whole answer.
    pub async fn whole(&self, response: RolloutResponse) -> Result<Envelope<Choice>, ApiError> {
        let prompt_tokens = response
            .groups
            .iter()
            .map(|g| g.prompt_token_ids.len())
            .sum();
        let usage = usage(prompt_tokens, response.summary.tokens);
        let stats = response
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| group_stats(i, g))
            .collect();
        let chat_prompt = (self.asked.route == Route::Chat && self.asked.token_ids)
            .then(|| response.groups.first().map(|g| g.prompt_token_ids.clone()))
            .flatten();
        let mut choices = Vec::new();
        for (i, group) in response.groups.into_iter().enumerate() {
            choices.extend(self.choices(i, group, false).await?);
        }
        let mut envelope = self.envelope(false, choices);
        envelope.prompt_token_ids = chat_prompt;
        envelope.usage = Some(usage);
        envelope.entroll = Some(self.extension(response.served, response.summary, stats));
        Ok(envelope)
    }

    /// The chunk of a streamed group.
    pub async fn chunk(&self, group: Group) -> Result<Envelope<Choice>, ApiError> {
        let index: usize = group.id.parse().map_err(|_| {
            ApiError::Internal(format!("a group came back as `{}` (a bug)", group.id))
        })?;
        self.prompt_tokens
            .fetch_add(group.prompt_token_ids.len(), Ordering::Relaxed);
        self.groups
            .lock()
            .expect("group statistics")
            .push(group_stats(index, &group));
        let chat_prompt = (self.asked.route == Route::Chat && self.asked.token_ids)
            .then(|| group.prompt_token_ids.clone());
        let mut envelope = self.envelope(true, self.choices(index, group, true).await?);
        envelope.prompt_token_ids = chat_prompt;
        Ok(envelope)
    }

    /// A stream's last chunk, sent when `stream_options.include_usage` asks for it (as OpenAI
    /// sends it): no choices, `usage`, and the request's `entroll` object.
    pub fn last_chunk(&self, summary: Summary, served: Served) -> Option<Envelope<Choice>> {
        if !self.asked.include_usage {
            return None;
        }
        let prompt_tokens = self.prompt_tokens.load(Ordering::Relaxed);
        let mut groups = std::mem::take(&mut *self.groups.lock().expect("group statistics"));
        groups.sort_by_key(|g| g.prompt_index);
        let mut envelope = self.envelope(true, Vec::new());
        envelope.usage = Some(usage(prompt_tokens, summary.tokens));
        envelope.entroll = Some(self.extension(served, summary, groups));
        Some(envelope)
    }
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    }
}
