//! What a call can end with besides its answer, and the exit code each means to the CLI.

use std::time::Duration;

use hyprbox_proto::ErrorBody;
use reqwest::StatusCode;

/// A failed call. Refusals carry the API's own sentence (`message` of the error body).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The call needs a session or a token and the client has none.
    #[error("not signed in to {server}")]
    NotSignedIn { server: String },
    /// The server could not be reached (connection refused, DNS, TLS, timeout).
    #[error("cannot reach {server}: {source}")]
    Unreachable {
        server: String,
        #[source]
        source: reqwest::Error,
    },
    /// An event stream broke off and could not be opened again.
    #[error("{reason}")]
    StreamBroke { reason: String },
    /// 401: not signed in, or the token is invalid or revoked.
    #[error("{message}")]
    Unauthorized { message: String },
    /// 403: signed in, but not allowed.
    #[error("{message}")]
    Forbidden { message: String },
    /// 404.
    #[error("{message}")]
    NotFound { message: String },
    /// 409: the resource is not in a state that allows this (e.g. the job already ended).
    #[error("{message}")]
    Conflict { message: String },
    /// 429 with the server's `Retry-After`.
    #[error("{message} (retry after {retry_after:?})")]
    RateLimited { retry_after: Duration, message: String },
    /// Any other refusal or failure: 400, 413, 5xx…
    #[error("{message} ({status})")]
    Status { status: u16, message: String },
    /// The answer was not what the protocol says it is.
    #[error("the server's answer could not be read: {detail}")]
    Decode { detail: String },
}

impl Error {
    /// The operator CLI's exit code for this failure: 3 not signed in or not allowed, 4 not
    /// found, 5 conflict, 6 the server cannot be reached, 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotSignedIn { .. } | Error::Unauthorized { .. } | Error::Forbidden { .. } => 3,
            Error::NotFound { .. } => 4,
            Error::Conflict { .. } => 5,
            Error::Unreachable { .. } | Error::StreamBroke { .. } => 6,
            Error::RateLimited { .. } | Error::Status { .. } | Error::Decode { .. } => 1,
        }
    }

    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        Some(match self {
            Error::Unauthorized { .. } => 401,
            Error::Forbidden { .. } => 403,
            Error::NotFound { .. } => 404,
            Error::Conflict { .. } => 409,
            Error::RateLimited { .. } => 429,
            Error::Status { status, .. } => *status,
            _ => return None,
        })
    }

    pub(crate) fn unreachable(server: &str, source: reqwest::Error) -> Error {
        Error::Unreachable {
            server: server.to_string(),
            source: source.without_url(),
        }
    }

    pub(crate) fn decode(detail: impl std::fmt::Display) -> Error {
        Error::Decode {
            detail: detail.to_string(),
        }
    }

    /// The refusal a non-2xx answer stands for, with the API's message.
    pub(crate) async fn from_response(response: reqwest::Response) -> Error {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        let message = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => body.message,
            Err(_) if text.trim().is_empty() => "no details".to_string(),
            Err(_) => text.chars().take(300).collect(),
        };
        match status {
            StatusCode::UNAUTHORIZED => Error::Unauthorized { message },
            StatusCode::FORBIDDEN => Error::Forbidden { message },
            StatusCode::NOT_FOUND => Error::NotFound { message },
            StatusCode::CONFLICT => Error::Conflict { message },
            StatusCode::TOO_MANY_REQUESTS => Error::RateLimited {
                retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
                message,
            },
            _ => Error::Status {
                status: status.as_u16(),
                message,
            },
        }
    }
}
