//! The middleware stack, outermost first, in one place:
//!
//! request id → trace span → panic catcher → CORS → body limit → the gate → panic catcher → router.
//!
//! The gate is one function doing, in order: refuse a declared oversized body, resolve the client
//! IP, resolve the caller (user, node token or anonymous), charge the rate limit; then, on the way
//! out, renew a cookie session past half its life, write the rate-limit headers, and give any error
//! without it the `{error, message}` shape. One middleware instead of five, because each layer costs
//! a boxed future on every request of the hot paths.
//!
//! A panic in a handler is caught innermost, so its 500 still passes through the rate limiter
//! (headers) and CORS; the outer catcher covers a panic in the middleware itself.
//! CORS sits outside the rate limiter so a 429 still carries the CORS headers a browser needs to
//! read it, and preflight requests are answered without counting against anyone's limit.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::{self, Caller};
use crate::http::error::{ApiError, error_response};
use crate::http::extract::ClientIp;
use crate::http::ratelimit::Decision;
use crate::state::AppState;

/// The largest request body accepted, for every route.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

pub fn apply(router: Router, state: &AppState) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(SequentialId::default()))
            .layer(TraceLayer::new_for_http())
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(cors(state))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(from_fn_with_state(state.clone(), gate))
            .layer(CatchPanicLayer::custom(panic_response)),
    )
}

/// Request ids from a counter: unique per process and cheaper than a random UUID per request.
#[derive(Clone, Default)]
struct SequentialId(Arc<AtomicU64>);

impl MakeRequestId for SequentialId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{n:x}")).ok().map(RequestId::new)
    }
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "a request handler panicked");
    error_response(StatusCode::INTERNAL_SERVER_ERROR, "an internal error occurred")
}

/// Gives every error the `{error, message}` shape, whatever produced it (axum's own 404/405
/// responses and rejections included), keeping headers such as `Allow` and `Retry-After`.
fn error_shape(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
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

fn cors(state: &AppState) -> CorsLayer {
    let origins: Vec<HeaderValue> = state
        .settings
        .frontend_urls
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT])
        .expose_headers([
            X_RATELIMIT_LIMIT,
            X_RATELIMIT_REMAINING,
            X_RATELIMIT_RESET,
            header::RETRY_AFTER,
            header::CONTENT_DISPOSITION,
        ])
        .max_age(Duration::from_secs(600))
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

/// What a fleet-wide token's request speaks for, so that one token shared by a fleet is limited
/// per node: the `nodeId` it names, else the job in its path (a job belongs to one node).
fn node_scope(uri: &axum::http::Uri) -> &str {
    let named = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("nodeId="))
            .filter(|v| !v.is_empty())
    });
    named
        .or_else(|| {
            uri.path()
                .strip_prefix("/api/jobs/")
                .and_then(|rest| rest.split('/').next())
        })
        .unwrap_or("")
}

/// The one middleware between CORS and the router; see the module documentation.
async fn gate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let too_large = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > MAX_BODY_BYTES as u64);
    let ip = ClientIp::resolve(
        request.headers(),
        request.extensions().get::<ConnectInfo<SocketAddr>>(),
        state.settings.trust_proxy,
    );
    let caller = auth::resolve_caller(&state, request.headers()).await;

    let path = request.uri().path();
    let node_keyed = is_node_keyed(request.method(), path) && !is_exempt(path);
    // Timed for the user-experience metrics, except the streams that stay open for hours.
    let timed = !is_exempt(path);
    let user = match &caller {
        Ok(Caller::User(identity)) => Some(std::sync::Arc::clone(&identity.user)),
        _ => None,
    };
    let decision = match (route_limit(request.method(), path), &caller) {
        _ if is_exempt(path) => None,
        (Some((bucket, limit)), _) => Some(state.limiter.check((bucket, ip.0), limit)),
        // The node a heartbeat speaks for is in its body: the handler charges (token, node) itself,
        // because a whole fleet may share one token behind one NAT address.
        (None, _) if node_keyed => None,
        (None, Ok(Caller::User(identity))) => Some(
            state
                .limiter
                .check(("user", identity.user.id.as_str()), state.settings.rate_limit),
        ),
        (None, Ok(Caller::Node(node))) => {
            let scope = node
                .pinned
                .as_deref()
                .unwrap_or_else(|| node_scope(request.uri()));
            Some(
                state
                    .limiter
                    .check(("node", node.prefix.as_str(), scope), state.settings.rate_limit),
            )
        }
        (None, _) => Some(state.limiter.check(("ip", ip.0), state.settings.rate_limit)),
    };

    let renewal = caller.as_ref().ok().and_then(auth::renewal);
    let mut response = match (caller, decision) {
        (_, Some(decision)) if !decision.allowed => ApiError::TooManyRequests {
            retry_after_secs: decision.reset_secs,
        }
        .into_response(),
        _ if too_large => {
            ApiError::PayloadTooLarge("request body must be at most 1 MiB".into()).into_response()
        }
        (Err(err), _) => err.into_response(),
        (Ok(caller), _) => {
            request.extensions_mut().insert(ip);
            request.extensions_mut().insert(caller);
            error_shape(next.run(request).await)
        }
    };
    if let Some(renewal) = renewal {
        auth::renew_cookie(&state, &mut response, renewal);
    }
    let decision = decision
        .or_else(|| response.extensions().get::<Decision>().copied())
        // A node-keyed request refused before its handler charged it (e.g. a malformed body)
        // counts against its address.
        .or_else(|| node_keyed.then(|| state.limiter.check(("ip", ip.0), state.settings.rate_limit)));
    if let Some(decision) = decision {
        set_rate_headers(&mut response, decision);
    }
    if timed {
        state.ux.record(
            started.elapsed(),
            user.as_deref().map(|u| u.id.as_str()),
            hyprbox_store::now_ms(),
        );
    }
    response
}

/// For the routes of [`is_node_keyed`]: charges the request to (token, `node_id`), or to the address
/// without a token (the node id is then only the client's claim), and runs `work` when the token may
/// act for the node (403) and the budget allows (429). The decision rides on the response for the
/// gate to turn into headers.
pub async fn charge_node(
    state: &AppState,
    node: Option<&auth::node_tokens::NodeIdentity>,
    node_id: &str,
    ip: ClientIp,
    work: impl std::future::Future<Output = Response>,
) -> Response {
    let limit = state.settings.rate_limit;
    let decision = match node {
        Some(node) => state
            .limiter
            .check(("node", node.prefix.as_str(), node_id), limit),
        None => state.limiter.check(("ip", ip.0), limit),
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

/// Routes whose handler charges the rate limit itself, per (token, node): the node they speak for
/// is in the body.
fn is_node_keyed(method: &axum::http::Method, path: &str) -> bool {
    path == "/api/nodes/heartbeat" || (path == "/api/findings" && method == axum::http::Method::POST)
}

fn set_rate_headers(response: &mut Response<Body>, decision: Decision) {
    let headers = response.headers_mut();
    headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(decision.limit));
    headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(decision.remaining));
    headers.insert(X_RATELIMIT_RESET, HeaderValue::from(decision.reset_secs));
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use hyprbox_store::testing::TestDatabase;
    use tower::ServiceExt;

    use super::*;
    use crate::{Application, Settings};

    #[tokio::test]
    async fn a_panicking_handler_answers_500_with_the_error_shape_and_no_internals() {
        let db = TestDatabase::new().await;
        let settings = Settings::from_lookup(|k| match k {
            "SECRET_KEY" => Some("k".into()),
            "DATABASE_URL" => Some(db.url.clone()),
            _ => None,
        })
        .unwrap();
        let app = Application::build(settings).await.unwrap();
        async fn boom() -> &'static str {
            panic!("secret internals")
        }
        let router: Router = Router::new().route("/boom", get(boom));
        let router = apply(router, app.state());
        let response = router
            .oneshot(axum::http::Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().contains_key(X_RATELIMIT_LIMIT));
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "internal_error");
        assert!(!body.to_string().contains("secret internals"));
    }
}
