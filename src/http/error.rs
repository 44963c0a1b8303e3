//! The HTTP form of a failed request: the status each [`ApiError`] is answered with, and its
//! body (`{error, error_type}`, [`ApiError::body`]). Engine errors reach here already mapped to
//! error kinds (`From<EngineError>`), and leave as statuses.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::error::ApiError;

/// HTTP status for `error`.
pub fn status(error: &ApiError) -> StatusCode {
    match error {
        ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
        ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        ApiError::Overloaded(_) | ApiError::EnginesBusy { .. } => StatusCode::TOO_MANY_REQUESTS,
        ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        ApiError::SlowBody(_) => StatusCode::REQUEST_TIMEOUT,
        ApiError::Engine(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        // Not 503: a balancer that retries 503 elsewhere would drop the partial tokens.
        ApiError::WeightsChanged { .. } | ApiError::Aborted { .. } => StatusCode::CONFLICT,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        with_headers(&self, (status(&self), Json(self.body())).into_response())
    }
}

/// `response`, answering `error` in whichever dialect, with the headers that error calls for:
/// when to retry an overloaded server, which scheme a missing key takes.
pub fn with_headers(error: &ApiError, mut response: Response) -> Response {
    match error {
        ApiError::Overloaded(_) | ApiError::EnginesBusy { .. } => {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        ApiError::Unauthorized(_) => {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        _ => {}
    }
    response
}
