//! Errors a request can end in ([`ApiError`]), their `error_type`, and the body every error
//! answer carries (`{error, error_type}`, [`ErrorBody`]). Which HTTP status each one is answered
//! with is the HTTP layer's (`http::error`).

use serde::{Deserialize, Serialize};

use crate::engine::{EngineError, FinishReason};

/// Everything that can go wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (400).
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// The body is JSON but not a valid request (422).
    #[error("{0}")]
    Invalid(String),
    /// The body exceeds the size limit (413).
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    /// No key, or a key the server does not know, on a keyed route (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A valid key that does not open this route: the API key on a control route (403).
    #[error("{0}")]
    Forbidden(String),
    /// The request names something the server does not serve: another model (404).
    #[error("{0}")]
    NotFound(String),
    /// The server is at capacity (429).
    #[error("server is at capacity ({0} requests admitted); retry later")]
    Overloaded(usize),
    /// A weight update would hold more engines in memory than `max_engines` (429): requests
    /// still run on older weights.
    #[error(
        "{alive} of at most {max} engines are in memory (max_engines): the requests on older \
         weights must finish before another can load; retry later"
    )]
    EnginesBusy {
        /// Engines in memory now.
        alive: usize,
        /// The server's `max_engines`.
        max: usize,
    },
    /// The request's own deadline passed (504); its sequences were cancelled.
    #[error("the request's deadline of {0} ms passed; its sequences were cancelled")]
    Timeout(u64),
    /// The request's body did not arrive within the server's `body_timeout_ms` (408).
    #[error("the request body did not arrive within {0} ms")]
    SlowBody(u64),
    /// The engine failed while serving the request (500).
    #[error("engine failure: {0}")]
    Engine(String),
    /// The server is shutting down: it takes no new requests, and past the grace period it
    /// cancels the ones it had accepted (503).
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A bug: the request's handler panicked (500). The server keeps serving.
    #[error("internal error: {0}")]
    Internal(String),
    /// A weight update with `in_flight: abort` stopped the request (409); `partial` holds what
    /// its unanswered groups drew. Retrying it runs it on the new weights.
    #[error(
        "the weights changed from version {from} to {to} while the request ran (in_flight: \
         abort); retry it, or resume its samples from `partial`"
    )]
    WeightsChanged {
        /// The version the request started on.
        from: u64,
        /// The version that replaced it.
        to: u64,
        /// Every group not answered yet, with what each sample drew.
        partial: Vec<PartialGroup>,
    },
    /// Generation was paused under `abort` (`/pause?mode=abort`, `/pause_generation`) while the
    /// request ran (409); `partial` holds what its unanswered groups drew. A retry waits for the
    /// resume.
    #[error(
        "generation was paused with mode abort while the request ran; retry it (it waits for \
         the resume), or resume its samples from `partial`"
    )]
    Aborted {
        /// Every group not answered yet, with what each sample drew.
        partial: Vec<PartialGroup>,
    },
}

impl ApiError {
    /// Every `error_type` an answer can carry.
    pub const ERROR_TYPES: [&'static str; 11] = [
        "validation",
        "unauthorized",
        "forbidden",
        "not_found",
        "overloaded",
        "timeout",
        "engine",
        "shutting_down",
        "internal",
        "weights_changed",
        "aborted",
    ];

    /// The `error_type` string clients switch on (one of [`ApiError::ERROR_TYPES`]).
    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) | ApiError::Invalid(_) | ApiError::TooLarge(_) => "validation",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Overloaded(_) | ApiError::EnginesBusy { .. } => "overloaded",
            ApiError::Timeout(_) | ApiError::SlowBody(_) => "timeout",
            ApiError::Engine(_) => "engine",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Internal(_) => "internal",
            ApiError::WeightsChanged { .. } => "weights_changed",
            ApiError::Aborted { .. } => "aborted",
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidPrompt(msg) => ApiError::Invalid(msg),
            e @ EngineError::MaskBudget(_) => ApiError::Invalid(e.to_string()),
            other => ApiError::Engine(other.to_string()),
        }
    }
}

impl ApiError {
    /// The answer's body: `{error, error_type}`, and `partial` for `weights_changed`.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.to_string(),
            error_type: self.error_type().to_string(),
            partial: match self {
                ApiError::WeightsChanged { partial, .. } | ApiError::Aborted { partial } => {
                    Some(partial.clone())
                }
                _ => None,
            },
        }
    }
}

/// Every error body: `{error, error_type}`, and for `weights_changed` and `aborted` what was
/// drawn.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What is wrong, in words.
    pub error: String,
    /// One of `validation`, `unauthorized`, `forbidden`, `not_found`, `overloaded`, `timeout`,
    /// `engine`,
    /// `shutting_down`, `internal`,
    /// `weights_changed`, `aborted`.
    pub error_type: String,
    /// With `weights_changed` and `aborted`: every group not answered yet, each sample with the tokens it
    /// drew before the update stopped it, so a client can resume it as a new prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Vec<PartialGroup>>,
}

/// A group of a request that a weight update aborted (`in_flight: abort`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartialGroup {
    /// The prompt's id.
    pub id: String,
    /// The prompt's tokens as the model saw them.
    pub prompt_token_ids: Vec<u32>,
    /// Every sample, in index order.
    pub samples: Vec<PartialSample>,
}

/// What one sample drew before a weight update stopped its request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartialSample {
    /// Index within the group.
    pub index: usize,
    /// The tokens it drew (none if it had not started).
    pub token_ids: Vec<u32>,
    /// Their text.
    pub text: String,
    /// `abort` where the update cut it; `stop` or `length` where it had ended before.
    pub finish_reason: FinishReason,
    /// Weights version that drew its first token.
    pub weights_version: u64,
    /// Runs `[version, from_token]`, when more than one version drew its tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_versions: Option<Vec<(u64, usize)>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_type_is_listed() {
        for e in [
            ApiError::Malformed(String::new()),
            ApiError::Invalid(String::new()),
            ApiError::TooLarge(1),
            ApiError::NotFound(String::new()),
            ApiError::Overloaded(1),
            ApiError::Timeout(1),
            ApiError::Engine(String::new()),
            ApiError::ShuttingDown,
            ApiError::Internal(String::new()),
            ApiError::WeightsChanged {
                from: 0,
                to: 1,
                partial: Vec::new(),
            },
            ApiError::Aborted {
                partial: Vec::new(),
            },
        ] {
            assert!(ApiError::ERROR_TYPES.contains(&e.error_type()), "{e:?}");
        }
    }
}
