//! `GET /v1/models`, `POST /tokenize` and `POST /detokenize`: what a client asks before it
//! generates (the served model and its context) and the tokenizer it may not have.

use serde::{Deserialize, Serialize};

use super::Message;

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// The one served model.
    pub data: Vec<ModelCard>,
}

/// The served model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    /// The id requests name in `model`.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds when the server started.
    pub created: u64,
    /// Always `entroll`.
    pub owned_by: &'static str,
    /// The model it derives from: itself.
    pub root: String,
    /// Longest prompt plus generation, in tokens (vLLM's field; null when unknown).
    pub max_model_len: Option<usize>,
    /// The weights version now serving (an entroll extension).
    pub weights_version: u64,
}

/// `POST /tokenize`: exactly one of `prompt` and `messages`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// The served model's id, if given.
    #[serde(default)]
    pub model: Option<String>,
    /// Text, tokenized as a completion's prompt is.
    #[serde(default)]
    pub prompt: Option<String>,
    /// A conversation, rendered as a chat's is.
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
    /// Chat: end with the assistant's turn (only `true` is served).
    #[serde(default)]
    pub add_generation_prompt: Option<bool>,
    /// Also return each token's text.
    #[serde(default)]
    pub return_token_strs: bool,
    /// Tokenize as the generation routes do, with the tokenizer's special tokens: `true` is
    /// served (SkyRL sends it), `false` refused.
    #[serde(default)]
    pub add_special_tokens: Option<bool>,
}

/// `POST /tokenize`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct TokenizeResponse {
    /// Number of tokens.
    pub count: usize,
    /// The model's context (null when unknown).
    pub max_model_len: Option<usize>,
    /// The token ids.
    pub tokens: Vec<u32>,
    /// With `return_token_strs`: each token's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_strs: Option<Vec<String>>,
}

/// `POST /detokenize`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    /// The served model's id, if given.
    #[serde(default)]
    pub model: Option<String>,
    /// The token ids.
    pub tokens: Vec<u32>,
}

/// `POST /detokenize`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct DetokenizeResponse {
    /// The text, special tokens left out.
    pub prompt: String,
}
