//! The answers of `/v1/completions` and `/v1/chat/completions`, whole and streamed, and how a
//! `/rollouts` sample becomes a choice: its text, its log-probs in OpenAI's two listings, vLLM's
//! `token_ids`, and entroll's statistics under `entroll`.

use std::collections::HashMap;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::{finish_reason, ChoiceStats, Extension, LogprobsMode, Usage};
use crate::api::rollouts::{Sample, TopLogprob as Alternative};

/// Every answer and every streamed chunk: OpenAI's envelope around the route's choices.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope<C> {
    /// `cmpl-…` or `chatcmpl-…`, the same on every chunk of a stream.
    pub id: String,
    /// `text_completion`, `chat.completion` or `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds when the request arrived.
    pub created: u64,
    /// The served model's id.
    pub model: String,
    /// The choices (none on a stream's last chunk).
    pub choices: Vec<C>,
    /// Chat, with `return_token_ids`: the rendered conversation's tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<Vec<u32>>,
    /// Token counts (a stream's last chunk, with `stream_options.include_usage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// What served the request, its aggregates and its groups' statistics (a stream's last
    /// chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entroll: Option<Extension>,
}

/// A choice of either route.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Choice {
    /// `/v1/completions`.
    Text(TextChoice),
    /// `/v1/chat/completions`.
    Chat(ChatChoice),
}

/// What a choice's token listing names each token by, and which log-probs it lists.
#[derive(Debug, Clone, Copy)]
pub struct Listing {
    /// Which log-probs.
    pub mode: LogprobsMode,
    /// `token_id:N` instead of the token's text (vLLM's `return_tokens_as_token_ids`).
    pub as_ids: bool,
}

/// The names of a listing's tokens: their texts by id, or `token_id:N` for every token.
#[derive(Debug, Clone, Default)]
pub struct Names(pub Option<HashMap<u32, String>>);

impl Names {
    /// Token `id`'s name.
    fn of(&self, id: u32) -> String {
        match self.0.as_ref().and_then(|texts| texts.get(&id)) {
            Some(text) => text.clone(),
            None => format!("token_id:{id}"),
        }
    }
}

/// Every token id a listing of `sample` names (its own and its alternatives), once each.
pub fn listed_ids(sample: &Sample) -> Vec<u32> {
    let mut ids = sample.token_ids.clone();
    for alternatives in sample.top_logprobs.iter().flatten() {
        ids.extend(alternatives.iter().map(|a| a.id));
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl Listing {
    /// The listed log-prob of each token of `sample`.
    pub fn logprobs<'a>(&self, sample: &'a Sample) -> &'a [f32] {
        match self.mode {
            LogprobsMode::Processed => &sample.sampling_logprobs,
            LogprobsMode::Full => &sample.logprobs,
        }
    }

    /// Token `t`'s alternatives (as many as the request asked for: the sample holds them) with
    /// their listed log-probs, highest first: those the listed distribution gives a
    /// probability (a processed listing leaves out what truncation cut).
    pub fn alternatives(&self, sample: &Sample, t: usize) -> Vec<(u32, f32)> {
        let Some(all) = sample.top_logprobs.as_ref().and_then(|all| all.get(t)) else {
            return Vec::new();
        };
        all.iter()
            .filter_map(|a: &Alternative| {
                let lp = match self.mode {
                    LogprobsMode::Processed => a.sampling_logprob?,
                    LogprobsMode::Full => a.logprob,
                };
                Some((a.id, lp))
            })
            .collect()
    }
}

/// A JSON object whose keys keep the order they are given in (the first of equal keys wins):
/// the completions listing's alternatives, most probable first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RankedMap(pub Vec<(String, f32)>);

impl RankedMap {
    /// Adds `key` unless it is there already.
    fn push(&mut self, key: String, value: f32) {
        if !self.0.iter().any(|(k, _)| *k == key) {
            self.0.push((key, value));
        }
    }
}

impl Serialize for RankedMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A `/v1/completions` choice.
#[derive(Debug, Clone, Serialize)]
pub struct TextChoice {
    /// `prompt_index × n + sample index`.
    pub index: usize,
    /// The generated text (cut before a stop string).
    pub text: String,
    /// With `logprobs`: the drawn tokens' listing.
    pub logprobs: Option<TextLogprobs>,
    /// `stop`, `length` or `abort`.
    pub finish_reason: Option<&'static str>,
    /// With `return_token_ids`: the prompt's tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<Vec<u32>>,
    /// With `return_token_ids`: the generated tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
    /// entroll's statistics of this choice's tokens.
    pub entroll: ChoiceStats,
}

/// The legacy completions listing: four arrays, one entry per generated token.
#[derive(Debug, Clone, Serialize)]
pub struct TextLogprobs {
    /// Each token's name.
    pub tokens: Vec<String>,
    /// Each token's log-prob.
    pub token_logprobs: Vec<f32>,
    /// Per token, its `logprobs` most probable alternatives, most probable first, and the
    /// drawn token (as OpenAI: up to `logprobs + 1` entries).
    pub top_logprobs: Vec<RankedMap>,
    /// Where each token's text starts in `text`, in characters.
    pub text_offset: Vec<usize>,
}

impl TextChoice {
    /// The choice of `sample`, listing its log-probs when `listing` is given (`texts`: each
    /// token's text, unless it is named by id).
    pub fn new(
        index: usize,
        sample: Sample,
        prompt_token_ids: Option<Vec<u32>>,
        token_ids: bool,
        listing: Option<(Listing, Names)>,
    ) -> Self {
        let logprobs = listing.map(|(listing, names)| {
            let tokens: Vec<String> = sample.token_ids.iter().map(|&id| names.of(id)).collect();
            let token_logprobs = listing.logprobs(&sample).to_vec();
            let mut at = 0;
            let text_offset = tokens
                .iter()
                .map(|t| {
                    let start = at;
                    at += t.chars().count();
                    start
                })
                .collect();
            let top_logprobs = tokens
                .iter()
                .zip(&token_logprobs)
                .enumerate()
                .map(|(t, (name, &lp))| {
                    let mut map = RankedMap::default();
                    for (id, lp) in listing.alternatives(&sample, t) {
                        map.push(names.of(id), lp);
                    }
                    map.push(name.clone(), lp);
                    map
                })
                .collect();
            TextLogprobs {
                tokens,
                token_logprobs,
                top_logprobs,
                text_offset,
            }
        });
        Self {
            index,
            text: sample.text.clone(),
            logprobs,
            finish_reason: Some(finish_reason(sample.finish_reason)),
            prompt_token_ids,
            token_ids: token_ids.then(|| sample.token_ids.clone()),
            entroll: sample,
        }
    }
}

/// A `/v1/chat/completions` choice (whole) or chunk choice (streamed).
#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    /// `sample index` (a chat has one prompt).
    pub index: usize,
    /// The whole answer's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<AssistantMessage>,
    /// A streamed chunk's message: the whole message, once its choice is done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<AssistantMessage>,
    /// With `logprobs: true`: the drawn tokens' listing.
    pub logprobs: Option<ChatLogprobs>,
    /// `stop`, `length` or `abort`.
    pub finish_reason: Option<&'static str>,
    /// With `return_token_ids`: the generated tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
    /// entroll's statistics of this choice's tokens.
    pub entroll: ChoiceStats,
}

/// The assistant's turn.
#[derive(Debug, Clone, Serialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// The generated text.
    pub content: String,
}

/// The chat listing: one entry per generated token.
#[derive(Debug, Clone, Serialize)]
pub struct ChatLogprobs {
    /// The tokens in order.
    pub content: Vec<TokenLogprob>,
}

/// One token of a chat listing.
#[derive(Debug, Clone, Serialize)]
pub struct TokenLogprob {
    /// Its name.
    pub token: String,
    /// Its log-prob.
    pub logprob: f32,
    /// The UTF-8 bytes of its name.
    pub bytes: Vec<u8>,
    /// Its `top_logprobs` most probable alternatives, most probable first.
    pub top_logprobs: Vec<TopLogprob>,
}

/// One alternative of a chat listing's token.
#[derive(Debug, Clone, Serialize)]
pub struct TopLogprob {
    /// Its name.
    pub token: String,
    /// Its log-prob.
    pub logprob: f32,
    /// The UTF-8 bytes of its name.
    pub bytes: Vec<u8>,
}

impl ChatLogprobs {
    /// The listing of `sample`'s tokens, each named as `names` says.
    pub fn of(sample: &Sample, listing: Listing, names: &Names) -> Self {
        Self {
            content: sample
                .token_ids
                .iter()
                .zip(listing.logprobs(sample))
                .enumerate()
                .map(|(t, (&id, &logprob))| {
                    let token = names.of(id);
                    TokenLogprob {
                        bytes: token.as_bytes().to_vec(),
                        token,
                        logprob,
                        top_logprobs: listing
                            .alternatives(sample, t)
                            .into_iter()
                            .map(|(id, logprob)| {
                                let token = names.of(id);
                                TopLogprob {
                                    bytes: token.as_bytes().to_vec(),
                                    token,
                                    logprob,
                                }
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }
}

impl ChatChoice {
    /// The choice of `sample`, whole (`streamed` false: `message`) or as one chunk (`delta`).
    pub fn new(
        index: usize,
        sample: Sample,
        streamed: bool,
        token_ids: bool,
        listing: Option<(Listing, Names)>,
    ) -> Self {
        let logprobs = listing.map(|(listing, names)| ChatLogprobs::of(&sample, listing, &names));
        let message = AssistantMessage {
            role: "assistant",
            content: sample.text.clone(),
        };
        let (message, delta) = if streamed {
            (None, Some(message))
        } else {
            (Some(message), None)
        };
        Self {
            index,
            message,
            delta,
            logprobs,
            finish_reason: Some(finish_reason(sample.finish_reason)),
            token_ids: token_ids.then(|| sample.token_ids.clone()),
            entroll: sample,
        }
    }
}
