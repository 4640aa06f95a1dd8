//! Thin wrappers around axum's extractors whose rejections are [`ApiError`]s, so no rejection ever
//! reaches a client in axum's plain-text format, and a 422 becomes the contract's 400.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::http::error::ApiError;

/// A JSON body (request) or answer (response).
pub struct Json<T>(pub T);

fn serde_message(text: &str) -> String {
    // axum prefixes serde's message (which already names the field path) with a generic sentence.
    text.split_once(": ").map_or(text, |(_, rest)| rest).to_string()
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::bad_request("Content-Type must be application/json")
            }
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::bad_request(format!("malformed JSON: {}", serde_message(&e.body_text())))
            }
            JsonRejection::JsonDataError(e) => {
                ApiError::bad_request(format!("invalid request body: {}", serde_message(&e.body_text())))
            }
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge("request body must be at most 1 MiB".into())
            }
            other => ApiError::bad_request(other.body_text()),
        }
    }
}

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Json(value))
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query-string parameters.
pub struct Query<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(format!(
            "invalid query string: {}",
            serde_message(&rejection.body_text())
        ))
    }
}

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(value))
    }
}

/// The client's address: the socket peer, or the last `X-Forwarded-For` hop (the one our own proxy
/// appended) when `HYPRBOX_TRUST_PROXY=true`. Resolved once per request by the gate.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    pub fn resolve(
        parts_headers: &axum::http::HeaderMap,
        peer: Option<&ConnectInfo<SocketAddr>>,
        trust_proxy: bool,
    ) -> ClientIp {
        let forwarded = trust_proxy
            .then(|| {
                parts_headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
                    .next_back()
            })
            .flatten();
        ClientIp(
            forwarded
                .unwrap_or_else(|| peer.map_or(IpAddr::from([127, 0, 0, 1]), |ConnectInfo(addr)| addr.ip())),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .unwrap_or(ClientIp(IpAddr::from([127, 0, 0, 1]))))
    }
}
