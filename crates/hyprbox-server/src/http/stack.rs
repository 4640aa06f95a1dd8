//! The middleware stack, outermost first, in one place:
//!
//! request id → trace span → compression → panic catcher → CORS → body limit → the gate → panic catcher → router.
//!
//! Compression (gzip or brotli, as the client accepts) leaves out server-sent event streams, which
//! must reach the browser event by event, and bodies too small to gain. It runs at level 1: a
//! fleet list is still a tenth of its size or less, at a fraction of the default level's CPU.
//!
//! A panic in a handler is caught innermost, so its 500 still passes through the gate (rate-limit
//! headers) and CORS; the outer catcher covers a panic in the middleware itself.
//! CORS sits outside the gate's rate limiter so a 429 still carries the CORS headers a browser needs
//! to read it, and preflight requests are answered without counting against anyone's limit.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header::{self, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::Response;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use super::error::error_response;
use super::gate::{MAX_BODY_BYTES, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET, gate};
use crate::state::AppState;

pub fn apply(router: Router, state: &AppState) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(SequentialId::default()))
            .layer(TraceLayer::new_for_http())
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(CompressionLayer::new().quality(CompressionLevel::Precise(1)))
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
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
