//! The conventions every route follows: the error shape, 400 never 422, 404/405/413, rate-limit
//! headers and 429, client IPs, CORS.

mod common;

use common::{PASSWORD, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn an_unknown_route_is_a_404_with_the_error_shape() {
    let app = TestApp::spawn().await;
    let answer = app.get("/api/no/such/route", None).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.error_tag(), "not_found");
}

#[tokio::test]
async fn a_wrong_method_is_a_405_with_the_error_shape() {
    let app = TestApp::spawn().await;
    let answer = app.call(Method::DELETE, "/api/auth/login", None, None).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.error_tag(), "method_not_allowed");
}

#[tokio::test]
async fn malformed_json_wrong_types_and_missing_content_type_are_400s() {
    let app = TestApp::spawn().await;
    let raw = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/api/auth/login"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    for (body, content_type, needle) in [
        ("{\"email\":", "application/json", "malformed JSON"),
        ("[1,2]", "application/json", "invalid request body"),
        ("{\"email\": 1, \"password\": \"x\"}", "application/json", "email"),
        ("", "application/json", "malformed JSON"),
        ("email=a", "application/x-www-form-urlencoded", "Content-Type"),
    ] {
        let answer = common::read(raw(body, content_type).await.unwrap()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}: {}", answer.text);
        assert_eq!(answer.error_tag(), "bad_request");
        assert!(
            answer.body["message"].as_str().unwrap().contains(needle),
            "{}",
            answer.text
        );
    }
}

#[tokio::test]
async fn a_body_over_1_mib_is_refused_with_413() {
    let app = TestApp::spawn().await;
    let big = format!(
        "{{\"email\":\"{}\",\"password\":\"x\"}}",
        "a".repeat(1024 * 1024 + 10)
    );
    let declared = app
        .client
        .post(app.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body(big.clone());
    let answer = common::read(declared.send().await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.error_tag(), "payload_too_large");
    assert!(answer.headers.contains_key("x-ratelimit-remaining"));

    // Without a Content-Length (chunked), the body is cut while it is read.
    let chunks = futures_stream(big.into_bytes());
    let chunked = app
        .client
        .post(app.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks));
    let answer = common::read(chunked.send().await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", answer.text);
    answer.error_tag();
}

fn futures_stream(
    bytes: Vec<u8>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    tokio_stream::iter(chunks)
}

#[tokio::test]
async fn every_answer_carries_the_rate_limit_headers() {
    let app = TestApp::spawn().await;
    for path in ["/", "/health", "/api/health", "/api/auth/me", "/nowhere"] {
        let answer = app.get(path, None).await;
        for header in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
            assert!(answer.headers.contains_key(header), "{path} lacks {header}");
        }
    }
    let first = app.get("/health", None).await;
    let second = app.get("/health", None).await;
    assert_eq!(first.headers["x-ratelimit-limit"], "200");
    let remaining = |a: &common::Answer| {
        a.headers["x-ratelimit-remaining"]
            .to_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    assert_eq!(remaining(&first), remaining(&second) + 1);
}

#[tokio::test]
async fn the_general_limit_answers_429_with_retry_after() {
    let app = TestApp::with(&[("HYPRBOX_RATE_LIMIT", "3")]).await;
    for _ in 0..3 {
        assert_eq!(app.get("/health", None).await.status, StatusCode::OK);
    }
    let limited = app.get("/health", None).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.error_tag(), "too_many_requests");
    let retry: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
}

#[tokio::test]
async fn signed_in_users_are_limited_per_user_not_per_address() {
    let app = TestApp::with(&[("HYPRBOX_RATE_LIMIT", "4")]).await;
    let admin = app.register_admin().await;
    let viewer = app.user_with_role(&admin, "v@example.com", "VIEWER").await;
    while app.get("/api/auth/me", Some(&admin.token)).await.status == StatusCode::OK {}
    assert_eq!(
        app.get("/api/auth/me", Some(&admin.token)).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        app.get("/api/auth/me", Some(&viewer.token)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn x_forwarded_for_counts_only_when_the_proxy_is_trusted() {
    let untrusted = TestApp::with(&[("HYPRBOX_RATE_LIMIT", "2")]).await;
    let from = |app: &TestApp, ip: &str| {
        app.client
            .get(app.url("/health"))
            .header("x-forwarded-for", ip)
            .send()
    };
    from(&untrusted, "10.0.0.1").await.unwrap();
    from(&untrusted, "10.0.0.2").await.unwrap();
    assert_eq!(
        from(&untrusted, "10.0.0.3").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    let trusted = TestApp::with(&[("HYPRBOX_RATE_LIMIT", "2"), ("HYPRBOX_TRUST_PROXY", "true")]).await;
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        assert_eq!(from(&trusted, ip).await.unwrap().status(), StatusCode::OK);
    }
    // The last hop is the one the trusted proxy appended; earlier hops are the client's claim.
    let admin = trusted.register_admin().await;
    trusted
        .client
        .post(trusted.url("/api/auth/login"))
        .header("x-forwarded-for", "1.2.3.4, 192.0.2.7")
        .json(&json!({"email": "admin@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let events = trusted
        .get("/api/audit?action=user.login", Some(&admin.token))
        .await;
    assert_eq!(events.body["events"][0]["ip"], "192.0.2.7");
}

#[tokio::test]
async fn cors_allows_the_configured_origins_with_credentials_and_no_others() {
    let app = TestApp::with(&[("FRONTEND_URL", "http://localhost:5173, https://ops.example.com")]).await;
    let preflight = app
        .client
        .request(Method::OPTIONS, app.url("/api/auth/me"))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    assert_eq!(preflight.headers()["access-control-allow-credentials"], "true");

    let simple = app
        .client
        .get(app.url("/health"))
        .header("origin", "https://ops.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        simple.headers()["access-control-allow-origin"],
        "https://ops.example.com"
    );
    let exposed = simple.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("x-ratelimit-remaining") && exposed.contains("retry-after"));

    let foreign = app
        .client
        .get(app.url("/health"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(foreign.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn every_answer_has_a_request_id() {
    let app = TestApp::spawn().await;
    let a = app.get("/health", None).await;
    let b = app.get("/nowhere", None).await;
    assert_ne!(a.headers["x-request-id"], b.headers["x-request-id"]);
}
