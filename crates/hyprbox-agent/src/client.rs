//! The agent's HTTP side: the API's typed client (`hyprbox-client`), built with the agent's user
//! agent and timeouts. Every body it sends or reads is defined once, in `hyprbox-proto`.

use std::time::Duration;

pub use hyprbox_client::{Client, Error as ApiError, HeartbeatAnswer};
pub use hyprbox_proto::jobs::{ClaimedJob, CompleteJob, OutputPiece};

/// A client of `base` authenticated with the node token: 10 s to connect, 60 s per request.
pub fn connect(base: &str, token: &str) -> Result<Client, ApiError> {
    let http = reqwest::Client::builder()
        .user_agent(concat!("hyprbox-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| ApiError::Decode {
            detail: format!("cannot build the HTTP client: {e}"),
        })?;
    Ok(Client::with_http(http, base, Some(token)))
}

/// A failed call as one log line: the API's message with its status, and what a 401 means here.
pub fn describe(error: &ApiError) -> String {
    match error {
        ApiError::Unauthorized { .. } => {
            "the server rejected the node token (401): it is invalid or was revoked".into()
        }
        other => match other.status() {
            Some(status) => format!("{other} ({status})"),
            None => other.to_string(),
        },
    }
}
