//! The one error type at the HTTP boundary.
//!
//! Policy: the store returns `StoreError`; domain code returns typed errors or `ApiError` directly;
//! `anyhow` appears only in start-up and background loops. Every error a client sees has the shape
//! `{"error": "<tag>", "message": "<sentence safe for a UI>"}`. `Internal` logs its cause and answers
//! a generic sentence, so no internals (SQL, paths, panics) ever reach a client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyprbox_store::StoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error(
        "the request took too long (its body arrived too slowly, or the server could not answer in time)"
    )]
    RequestTimeout,
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(anyhow::Error),
}

/// `{error, message}`: the protocol's error body.
pub use hyprbox_proto::ErrorBody;

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }

    pub fn unauthorized() -> ApiError {
        ApiError::Unauthorized("authentication required".into())
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::NotFound(format!("{what} not found"))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The sentence the client sees: never an internal error's cause.
    pub fn message(&self) -> String {
        match self {
            ApiError::TooManyRequests { retry_after_secs } => {
                format!("too many requests: try again in {retry_after_secs} s")
            }
            ApiError::Internal(_) => "an internal error occurred".into(),
            other => other.to_string(),
        }
    }
}

/// The tag written in the `error` field for a status.
pub fn tag_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        409 => "conflict",
        413 => "payload_too_large",
        429 => "too_many_requests",
        503 => "unavailable",
        _ => "internal_error",
    }
}

/// A response with the error shape, for places that have a status but no `ApiError`.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: tag_for(status).to_string(),
        message: message.into(),
    };
    (status, axum::Json(body)).into_response()
}

/// `Retry-After` of a 503.
pub const UNAVAILABLE_RETRY_SECS: u64 = 2;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = %format!("{cause:#}"), "internal error");
        }
        let mut response = error_response(self.status(), self.message());
        let retry_after = match self {
            ApiError::TooManyRequests { retry_after_secs } => Some(retry_after_secs),
            // A dependency that is down (or a queue that is full) is worth another try soon.
            ApiError::Unavailable(_) => Some(UNAVAILABLE_RETRY_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                ApiError::Unavailable("the database is unavailable; try again shortly".into())
            }
            StoreError::Conflict { constraint } => {
                ApiError::Internal(anyhow::anyhow!("unexpected conflict on {constraint}"))
            }
            StoreError::Refused(message) => ApiError::BadRequest(message),
            other => ApiError::Internal(other.into()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
