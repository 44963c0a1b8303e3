//! A failed OpenAI-dialect request: OpenAI's body (`{"error": {message, type, param, code}}`)
//! with the status and headers entroll's own routes answer the same error with, except that a
//! request it cannot serve is a 400 (OpenAI's and vLLM's status), not a 422.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::error::ApiError;
use crate::api::openai::{ErrorDetail, ErrorResponse};
use crate::http::error::{status, with_headers};

/// An [`ApiError`] and the request field at fault, if one is.
#[derive(Debug)]
pub struct OpenAiError {
    /// What went wrong.
    pub error: ApiError,
    /// The field at fault, by its name in this dialect.
    pub param: Option<String>,
}

impl OpenAiError {
    /// `error`, blamed on `param`.
    pub fn new(error: ApiError, param: Option<String>) -> Self {
        Self { error, param }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match &self.error {
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            other => status(other),
        }
    }

    /// The body.
    pub fn body(&self) -> ErrorResponse {
        let kind = match self.status().as_u16() {
            400 | 413 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            408 | 504 => "timeout_error",
            409 => "conflict_error",
            429 => "rate_limit_error",
            503 => "service_unavailable_error",
            _ => "server_error",
        };
        ErrorResponse {
            error: ErrorDetail {
                message: self.error.to_string(),
                kind: kind.to_string(),
                param: self.param.clone(),
                code: Some(match self.error {
                    ApiError::NotFound(_) => "model_not_found".to_string(),
                    _ => self.error.error_type().to_string(),
                }),
            },
        }
    }
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        Self { error, param: None }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let response = (self.status(), Json(self.body())).into_response();
        with_headers(&self.error, response)
    }
}
