//! The gate: the one middleware between CORS and the router. On the way in it refuses a declared
//! oversized body, resolves the client IP and the caller (user, node token or anonymous) and
//! charges the rate limit; on the way out it renews a cookie session past half its life, writes the
//! rate-limit headers, gives any error without it the `{error, message}` shape and times the request
//! for the dashboard's user-experience figures.
//!
//! Each step is a function of its own below, but they run in ONE `from_fn` layer rather than five,
//! because each layer costs a boxed future on every request of the hot paths.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyprbox_store::users::User;

use super::error::{ApiError, error_response};
use super::extract::ClientIp;
use super::ratelimit::Decision;
use crate::auth::node_tokens::NodeIdentity;
use crate::auth::{self, Caller};
use crate::state::AppState;

/// The largest request body accepted, for every route.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The steps, in order; see the module documentation.
pub async fn gate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let too_large = declared_too_large(request.headers());
    let ip = ClientIp::resolve(
        request.headers(),
        request.extensions().get::<ConnectInfo<SocketAddr>>(),
        state.settings.trust_proxy,
    );
    // A client whose credentials keep failing is charged per address before any lookup, on every
    // route (the streams and the agent socket included): guessing tokens costs no database work
    // once it is over the limit.
    let guessing = auth::carries_credential(request.headers())
        && state
            .limiter
            .exhausted(("rejected", ip.bucket()), state.settings.rate_limit);
    let caller = if guessing {
        Ok(Caller::Rejected)
    } else {
        auth::resolve_caller(&state, request.headers()).await
    };
    let rejected = matches!(caller, Ok(Caller::Rejected))
        .then(|| {
            state
                .limiter
                .check(("rejected", ip.bucket()), state.settings.rate_limit)
        })
        .filter(|decision| !decision.allowed);
    // A fleet-wide token's requests for jobs that do not exist share one budget per token, so
    // made-up job ids are not each a fresh allowance.
    let miss_key = match &caller {
        Ok(Caller::Node(node)) if node.pinned.is_none() && request.uri().path().starts_with("/api/jobs/") => {
            Some(node.prefix.clone())
        }
        _ => None,
    };
    let missing_too_often = miss_key.as_deref().is_some_and(|prefix| {
        state
            .limiter
            .exhausted(("node-miss", prefix), state.settings.rate_limit)
    });

    let path = request.uri().path();
    let node_keyed = is_node_keyed(request.method(), path) && !is_exempt(path);
    // Timed for the user-experience metrics, except the streams that stay open for hours.
    let timed = !is_exempt(path);
    let swagger = path.starts_with("/docs");
    let user = signed_in(&caller);
    let decision = rejected.or_else(|| charge(&state, request.method(), request.uri(), ip, &caller));
    let decision = match decision {
        Some(d) if d.allowed && missing_too_often => Some(Decision { allowed: false, ..d }),
        other => other,
    };
    let renewal = caller.as_ref().ok().and_then(auth::renewal);

    let cross_site = is_cross_site_cookie_request(&state, request.method(), request.headers(), &caller);
    let mut response = match (refusal(decision, too_large), caller) {
        (Some(refused), _) => refused.into_response(),
        (None, Ok(_)) if cross_site => {
            ApiError::Forbidden("cross-site request refused: sign in on this site to change anything".into())
                .into_response()
        }
        (None, Err(err)) => err.into_response(),
        (None, Ok(caller)) => {
            request.extensions_mut().insert(ip);
            request.extensions_mut().insert(caller);
            // A client that trickles its body (or a handler stuck past all reason) does not hold
            // the connection forever. Streams answer their headers at once and then go on.
            match tokio::time::timeout(state.settings.request_timeout, next.run(request)).await {
                Ok(response) => error_shape(response),
                Err(_) => ApiError::RequestTimeout.into_response(),
            }
        }
    };
    renew(&state, &mut response, renewal);
    protect_html(&mut response, swagger);
    if let Some(prefix) = miss_key.filter(|_| response.status() == StatusCode::NOT_FOUND) {
        state
            .limiter
            .check(("node-miss", prefix.as_str()), state.settings.rate_limit);
    }
    if let Some(decision) = settle(&state, decision, &response, node_keyed, ip) {
        set_rate_headers(&mut response, decision);
    }
    if timed {
        record_timing(&state, started, user.as_deref());
    }
    response
}

/// A body whose declared length is over [`MAX_BODY_BYTES`] is refused before it is read (a chunked
/// one is cut while it is read, by the body-limit layer).
fn declared_too_large(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > MAX_BODY_BYTES as u64)
}

/// A cookie-authenticated unsafe request that a browser sent from another site (CSRF). A browser
/// names the page's origin in `Origin` on every unsafe request: it must be this server's own (its
/// `Host`, or `HYPRBOX_PUBLIC_URL`) or one of `FRONTEND_URL` (the Hyperion client, which may live on
/// another site). Without `Origin`, `Sec-Fetch-Site: cross-site` still gives a browser away. A
/// non-browser client (curl with a cookie jar) sends neither and is left alone, and so is a
/// request that carries its token in `Authorization`, which another site cannot make a browser send.
fn is_cross_site_cookie_request(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    caller: &Result<Caller, ApiError>,
) -> bool {
    let via_cookie = matches!(caller, Ok(Caller::User(identity)) if identity.via_cookie);
    if !via_cookie || matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    match headers.get(header::ORIGIN) {
        Some(origin) => !origin
            .to_str()
            .is_ok_and(|origin| is_trusted_origin(state, headers, origin)),
        None => headers
            .get("sec-fetch-site")
            .is_some_and(|site| site.as_bytes().eq_ignore_ascii_case(b"cross-site")),
    }
}

/// `origin` is this server (as the browser reached it, or as configured) or a listed front end.
fn is_trusted_origin(state: &AppState, headers: &HeaderMap, origin: &str) -> bool {
    let origin = origin.trim_end_matches('/');
    let own_host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let is_own_host = own_host.is_some_and(|host| {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
    });
    is_own_host
        || origin.eq_ignore_ascii_case(origin_of(&state.settings.public_url))
        || state
            .settings
            .frontend_urls
            .iter()
            .any(|front| origin.eq_ignore_ascii_case(front.trim_end_matches('/')))
}

/// The policy of every HTML page the server answers: scripts, styles and everything else only from
/// this server's own files, no inline script or style, no framing, no `<base>` games.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

/// Puts the content security policy and the anti-framing headers on an HTML answer. The Swagger UI
/// (`/docs`, off in production) is a third-party page that needs inline code; it gets the
/// anti-framing headers only.
fn protect_html(response: &mut Response, swagger: bool) {
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"text/html"));
    if !is_html {
        return;
    }
    let headers = response.headers_mut();
    let policy = if swagger {
        "frame-ancestors 'none'"
    } else {
        CONTENT_SECURITY_POLICY
    };
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
}

/// `scheme://host[:port]` of a URL: what a browser's `Origin` holds for a page under it.
fn origin_of(url: &str) -> &str {
    let authority_at = url.find("://").map_or(0, |i| i + 3);
    let end = url[authority_at..]
        .find('/')
        .map_or(url.len(), |i| authority_at + i);
    &url[..end]
}

/// The signed-in user, kept for the user-experience metrics after the caller moves into the request.
fn signed_in(caller: &Result<Caller, ApiError>) -> Option<Arc<User>> {
    match caller {
        Ok(Caller::User(identity)) => Some(Arc::clone(&identity.user)),
        _ => None,
    }
}

/// Charges the request before its handler runs: a route with a limit of its own per client IP,
/// else the general limit per user, per (node token, node it speaks for) or per IP. `None` when the
/// request is not charged here: a long-lived stream, or a node-keyed route whose handler charges
/// (token, node) itself, because the node is in the body and a whole fleet may share one token
/// behind one NAT address.
fn charge(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    ip: ClientIp,
    caller: &Result<Caller, ApiError>,
) -> Option<Decision> {
    let path = uri.path();
    match (route_limit(method, path), caller) {
        _ if is_exempt(path) => None,
        (Some((bucket, limit)), _) => Some(state.limiter.check((bucket, ip.bucket()), limit)),
        (None, _) if is_node_keyed(method, path) => None,
        (None, Ok(Caller::User(identity))) => Some(
            state
                .limiter
                .check(("user", identity.user.id.as_str()), state.settings.rate_limit),
        ),
        (None, Ok(Caller::Node(node))) => {
            let scope = match &node.pinned {
                Some(pin) => pin.clone(),
                None => node_scope(uri),
            };
            Some(state.limiter.check(
                ("node", node.prefix.as_str(), scope.as_str()),
                state.settings.rate_limit,
            ))
        }
        (None, _) => Some(
            state
                .limiter
                .check(("ip", ip.bucket()), state.settings.rate_limit),
        ),
    }
}

/// Why the request is refused before its handler, in this order: over its rate limit (429), then a
/// declared body over 1 MiB (413). Bad credentials (401) come after both, from the caller itself.
fn refusal(decision: Option<Decision>, too_large: bool) -> Option<ApiError> {
    match decision {
        Some(decision) if !decision.allowed => Some(ApiError::TooManyRequests {
            retry_after_secs: decision.reset_secs,
        }),
        _ if too_large => Some(ApiError::PayloadTooLarge(
            "request body must be at most 1 MiB".into(),
        )),
        _ => None,
    }
}

/// Adds a fresh session cookie when the request came with a cookie session past half its life.
fn renew(state: &AppState, response: &mut Response, renewal: Option<(String, i64)>) {
    if let Some(renewal) = renewal {
        auth::renew_cookie(state, response, renewal);
    }
}

/// The decision the rate-limit headers report: the gate's own charge, else the one a node-keyed
/// handler made (it rides on the response), else — a node-keyed request refused before its handler
/// charged it, e.g. for a malformed body — a charge against the client's address.
fn settle(
    state: &AppState,
    charged: Option<Decision>,
    response: &Response,
    node_keyed: bool,
    ip: ClientIp,
) -> Option<Decision> {
    charged
        .or_else(|| response.extensions().get::<Decision>().copied())
        .or_else(|| {
            node_keyed.then(|| {
                state
                    .limiter
                    .check(("ip", ip.bucket()), state.settings.rate_limit)
            })
        })
}

/// Notes the request's duration and user for the dashboard's user-experience figures.
fn record_timing(state: &AppState, started: Instant, user: Option<&User>) {
    state.ux.record(
        started.elapsed(),
        user.map(|u| u.id.as_str()),
        hyprbox_store::now_ms(),
    );
}

/// Gives every error the `{error, message}` shape, whatever produced it (axum's own 404/405
/// responses and rejections included), keeping headers such as `Allow` and `Retry-After`.
fn error_shape(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // JSON errors already have the shape; the dashboard's error pages are HTML on purpose.
    let shaped = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if shaped {
        return response;
    }
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    let message = match status {
        StatusCode::NOT_FOUND => "no such route",
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed for this route",
        StatusCode::PAYLOAD_TOO_LARGE => "request body must be at most 1 MiB",
        StatusCode::BAD_REQUEST => "the request is invalid",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported content type",
        _ => status.canonical_reason().unwrap_or("request failed"),
    };
    let (mut parts, _) = response.into_parts();
    let shaped = error_response(status, message);
    parts.status = status;
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in shaped.headers() {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, shaped.into_body())
}

fn set_rate_headers(response: &mut Response<Body>, decision: Decision) {
    let headers = response.headers_mut();
    headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(decision.limit));
    headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(decision.remaining));
    headers.insert(X_RATELIMIT_RESET, HeaderValue::from(decision.reset_secs));
}

/// Routes with a limit of their own (per client IP, per minute), as the contract lists them.
fn route_limit(method: &Method, path: &str) -> Option<(&'static str, u32)> {
    if method != Method::POST {
        return None;
    }
    match path {
        "/api/auth/register" | "/api/auth/signup" => Some(("register", 5)),
        "/api/auth/login" => Some(("login", 10)),
        "/api/auth/forgot-password" => Some(("forgot", 5)),
        "/api/auth/reset-password" => Some(("reset", 10)),
        "/api/auth/change-password" => Some(("change", 10)),
        _ => None,
    }
}

/// Server-sent event streams stay open for hours; counting them would be meaningless.
/// The same goes for the agents' WebSocket.
fn is_exempt(path: &str) -> bool {
    path == "/api/stream/nodes"
        || path == "/api/agent/ws"
        || (path.starts_with("/api/jobs/") && path.ends_with("/stream"))
}

/// Routes whose handler charges the rate limit itself, per (token, node): the node they speak for
/// is in the body.
fn is_node_keyed(method: &Method, path: &str) -> bool {
    path == "/api/nodes/heartbeat" || (path == "/api/findings" && method == Method::POST)
}

/// What a fleet-wide token's request speaks for, so that one token shared by a fleet is limited
/// per node: the `nodeId` it names, else the job in its path (a job belongs to one node). Ids are
/// decoded and validated first: `web%2D1` is `web-1`'s budget, and anything that is not a valid id
/// shares the token's one budget for nonsense (`""`).
fn node_scope(uri: &Uri) -> String {
    let named = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("nodeId="))
            .filter(|v| !v.is_empty())
    });
    if let Some(raw) = named {
        return percent_decode(raw)
            .filter(|id| hyprbox_proto::validate_node_id("nodeId", id).is_ok())
            .unwrap_or_default();
    }
    uri.path()
        .strip_prefix("/api/jobs/")
        .and_then(|rest| rest.split('/').next())
        .filter(|id| crate::auth::users::plausible_id(id))
        .map(str::to_ascii_lowercase)
        .unwrap_or_default()
}

/// A query value with its `%XX` escapes and `+` decoded; `None` when that is not UTF-8 or an escape
/// is broken.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// For the routes of [`is_node_keyed`]: charges the request to (token, `node_id`), or to the address
/// without a token (the node id is then only the client's claim), and runs `work` when the token may
/// act for the node (403) and the budget allows (429). The decision rides on the response for the
/// gate to turn into headers.
pub async fn charge_node(
    state: &AppState,
    node: Option<&NodeIdentity>,
    node_id: &str,
    ip: ClientIp,
    work: impl std::future::Future<Output = Response>,
) -> Response {
    let limit = state.settings.rate_limit;
    let decision = match node {
        Some(node) => state
            .limiter
            .check(("node", node.prefix.as_str(), node_id), limit),
        None => state.limiter.check(("ip", ip.bucket()), limit),
    };
    // Known nodes keep their own budget; registering new ones is capped per token (or address),
    // so one leaked fleet-wide token cannot fill the fleet with made-up nodes.
    let decision = if decision.allowed && !state.fleet.contains(node_id) {
        let created = state.settings.node_create_limit;
        let new_node = match node {
            Some(node) => state.limiter.check(("new-node", node.prefix.as_str()), created),
            None => state.limiter.check(("new-node-ip", ip.bucket()), created),
        };
        if new_node.allowed { decision } else { new_node }
    } else {
        decision
    };
    let mut response = if node.is_some_and(|n| !n.may_act_for(node_id)) {
        ApiError::Forbidden("this token is pinned to another node".into()).into_response()
    } else if !decision.allowed {
        ApiError::TooManyRequests {
            retry_after_secs: decision.reset_secs,
        }
        .into_response()
    } else {
        work.await
    };
    response.extensions_mut().insert(decision);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_scopes_are_decoded_and_validated_ids() {
        let scope = |uri: &str| node_scope(&uri.parse::<Uri>().unwrap());
        assert_eq!(scope("/api/jobs/pending?nodeId=web-1"), "web-1");
        assert_eq!(
            scope("/api/jobs/pending?nodeId=web%2D1"),
            "web-1",
            "an escape is the same node"
        );
        assert_eq!(
            scope("/api/jobs/pending?nodeId=web%2"),
            "",
            "a broken escape is nonsense"
        );
        assert_eq!(
            scope("/api/jobs/pending?nodeId=a%20b"),
            "",
            "an invalid id is nonsense"
        );
        assert_eq!(scope("/api/jobs/pending?nodeId=%FF"), "");
        let job = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(scope(&format!("/api/jobs/{job}/output")), job);
        assert_eq!(scope(&format!("/api/jobs/{}/output", job.to_uppercase())), job);
        assert_eq!(scope("/api/jobs/%2e%2e/output"), "");
    }
}
