//! Errors a request can end in, and their HTTP form `{error, error_type}`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::{ErrorBody, PartialGroup};
use crate::engine::EngineError;

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
    /// The server is at capacity (429).
    #[error("server is at capacity ({0} requests admitted); retry later")]
    Overloaded(usize),
    /// The request's own deadline passed (504); its sequences were cancelled.
    #[error("the request's deadline of {0} ms passed; its sequences were cancelled")]
    Timeout(u64),
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
}

impl ApiError {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Engine(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            // Not 503: a balancer that retries 503 elsewhere would drop the partial tokens.
            ApiError::WeightsChanged { .. } => StatusCode::CONFLICT,
        }
    }

    /// Every `error_type` an answer can carry.
    pub const ERROR_TYPES: [&'static str; 7] = [
        "validation",
        "overloaded",
        "timeout",
        "engine",
        "shutting_down",
        "internal",
        "weights_changed",
    ];

    /// The `error_type` string clients switch on (one of [`ApiError::ERROR_TYPES`]).
    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) | ApiError::Invalid(_) | ApiError::TooLarge(_) => "validation",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::Timeout(_) => "timeout",
            ApiError::Engine(_) => "engine",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Internal(_) => "internal",
            ApiError::WeightsChanged { .. } => "weights_changed",
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidPrompt(msg) => ApiError::Invalid(msg),
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
                ApiError::WeightsChanged { partial, .. } => Some(partial.clone()),
                _ => None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if matches!(self, ApiError::Overloaded(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
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
        ] {
            assert!(ApiError::ERROR_TYPES.contains(&e.error_type()), "{e:?}");
        }
    }
}
