//! Thin wrappers around axum's extractors whose rejections are [`ApiError`]s, so no rejection ever
//! reaches a client in axum's plain-text format, and a 422 becomes the contract's 400.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
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
        let bytes = json_body(req, state).await?;
        refuse_nul(&bytes)?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Json(value))
    }
}

/// A JSON body whose strings may hold NUL: job output, stored as bytes, not text.
pub struct BinaryJson<T>(pub T);

impl<T, S> FromRequest<S> for BinaryJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = json_body(req, state).await?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(BinaryJson(value))
    }
}

/// The body of a request that says it is JSON (`application/json`, or a `+json` type).
async fn json_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .is_some_and(|mime| {
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if !is_json {
        return Err(ApiError::bad_request("Content-Type must be application/json"));
    }
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("request body must be at most 1 MiB".into())
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })
}

/// Refuses a JSON body holding a NUL character in a string, with a 400 naming the field: Postgres
/// refuses NUL in text and SQLite would keep it, so it is refused alike, before any write.
pub fn refuse_nul(bytes: &[u8]) -> Result<(), ApiError> {
    if !has_nul_escape(bytes) {
        return Ok(());
    }
    // The rare refusal path names the field, as every validation message does.
    let field = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|value| nul_path(&value, String::new()))
        .unwrap_or_else(|| "text".into());
    Err(ApiError::bad_request(format!(
        "{field} must not contain NUL characters (\\u0000)"
    )))
}

/// The path (`variables.note`, `findings[0].title`) of the first string or key holding a NUL.
fn nul_path(value: &serde_json::Value, at: String) -> Option<String> {
    let join = |key: &str| {
        if at.is_empty() {
            key.to_string()
        } else {
            format!("{at}.{key}")
        }
    };
    match value {
        serde_json::Value::String(text) if text.contains('\0') => {
            Some(if at.is_empty() { "text".into() } else { at })
        }
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, format!("{at}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(join(&key.replace('\0', "")))
            } else {
                nul_path(item, join(key))
            }
        }),
        _ => None,
    }
}

/// Whether a JSON text holds the escape `\u0000` inside a string (an escaped backslash followed by
/// `u0000` is not one). Raw control bytes cannot appear in a JSON string, so this is the only way.
fn has_nul_escape(body: &[u8]) -> bool {
    let mut from = 0;
    while let Some(at) = body[from..].iter().position(|&b| b == b'\\') {
        let at = from + at;
        match body.get(at + 1) {
            Some(b'u') if body.get(at + 2..at + 6) == Some(b"0000".as_slice()) => return true,
            Some(_) => from = at + 2,
            None => return false,
        }
    }
    false
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
        if parts.uri.query().is_some_and(|q| q.contains("%00")) {
            return Err(ApiError::bad_request(
                "the query string must not contain NUL characters (%00)",
            ));
        }
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
        let forwarded = trust_proxy.then(|| last_forwarded_hop(parts_headers)).flatten();
        ClientIp(
            forwarded
                .unwrap_or_else(|| peer.map_or(IpAddr::from([127, 0, 0, 1]), |ConnectInfo(addr)| addr.ip())),
        )
    }

    /// The key rate limits count this client under. An IPv6 client usually holds a whole /64 and
    /// could take a fresh address for every request, so IPv6 is keyed by its /64.
    pub fn bucket(self) -> IpAddr {
        match self.0.to_canonical() {
            IpAddr::V6(v6) => {
                let masked = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(masked))
            }
            v4 => v4,
        }
    }
}

/// Exactly the last hop of `X-Forwarded-For`: the one our own proxy appended. Earlier hops are the
/// client's to write. A last hop that is not an address fails closed (the socket peer is used).
fn last_forwarded_hop(headers: &axum::http::HeaderMap) -> Option<IpAddr> {
    let last_header = headers.get_all("x-forwarded-for").iter().next_back()?;
    let hop = last_header.to_str().ok()?.rsplit(',').next()?.trim();
    hop.parse::<IpAddr>().ok()
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

#[cfg(test)]
mod tests {
    use super::{ClientIp, has_nul_escape, nul_path};
    use axum::extract::ConnectInfo;
    use axum::http::HeaderMap;

    fn resolved(forwarded: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        let peer = ConnectInfo("10.9.9.9:1234".parse().unwrap());
        ClientIp::resolve(&headers, Some(&peer), true).0.to_string()
    }

    #[test]
    fn only_the_last_forwarded_hop_counts_and_garbage_there_falls_back_to_the_peer() {
        assert_eq!(resolved(&["1.1.1.1, 2.2.2.2"]), "2.2.2.2");
        assert_eq!(
            resolved(&["1.1.1.1", "3.3.3.3"]),
            "3.3.3.3",
            "the last header's last hop"
        );
        assert_eq!(
            resolved(&["1.1.1.1, garbage"]),
            "10.9.9.9",
            "no skipping back to a client-written hop"
        );
        assert_eq!(resolved(&["1.1.1.1, "]), "10.9.9.9");
        assert_eq!(resolved(&[]), "10.9.9.9");
        assert_eq!(resolved(&["2001:db8::7"]), "2001:db8::7");
        let untrusted = ClientIp::resolve(
            &[("x-forwarded-for", "1.1.1.1")]
                .into_iter()
                .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
                .collect(),
            Some(&ConnectInfo("10.9.9.9:1".parse().unwrap())),
            false,
        );
        assert_eq!(
            untrusted.0.to_string(),
            "10.9.9.9",
            "ignored unless the proxy is trusted"
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_ipv4_by_the_address() {
        let key = |ip: &str| ClientIp(ip.parse().unwrap()).bucket().to_string();
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(
            key("::ffff:192.0.2.1"),
            "192.0.2.1",
            "a mapped IPv4 client is that IPv4 client"
        );
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
    }

    #[test]
    fn a_nul_escape_is_found_only_where_it_is_one() {
        assert!(has_nul_escape(br#"{"title":"a\u0000b"}"#));
        assert!(
            has_nul_escape(br#"{"k":"\\\u0000"}"#),
            "an escaped backslash, then a NUL"
        );
        assert!(
            !has_nul_escape(br#"{"k":"\\u0000"}"#),
            "a backslash, then the text u0000"
        );
        assert!(!has_nul_escape(br#"{"k":"\u0001 and \n"}"#));
        assert!(!has_nul_escape(br#"{"k":"ends with \"#));
    }

    #[test]
    fn the_refusal_names_the_field_holding_the_nul() {
        let body = serde_json::json!({"nodeId": "n", "findings": [{"key": "/", "title": "a\u{0}"}]});
        assert_eq!(
            nul_path(&body, String::new()).as_deref(),
            Some("findings[0].title")
        );
        assert_eq!(
            nul_path(&serde_json::json!("x\u{0}"), String::new()).as_deref(),
            Some("text")
        );
        assert_eq!(nul_path(&serde_json::json!({"a": [1, "b"]}), String::new()), None);
    }
}
