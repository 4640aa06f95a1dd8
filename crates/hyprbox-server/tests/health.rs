//! `GET /`, `/health`, `/api/health`, the API documentation, and graceful shutdown.

mod common;

use common::TestApp;
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn the_root_says_the_api_is_running() {
    let app = TestApp::spawn().await;
    let answer = app.get("/", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body,
        serde_json::json!({"message": "HyprBox API is running"})
    );
}

#[tokio::test]
async fn the_probe_answers_ok_with_the_version() {
    let app = TestApp::spawn().await;
    let answer = app.get("/health", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["status"], "ok");
    assert_eq!(answer.body["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn api_health_reports_the_database_latency() {
    let app = TestApp::spawn().await;
    let answer = app.get("/api/health", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["status"], "healthy");
    assert_eq!(answer.body["components"]["api"], "up");
    assert_eq!(answer.body["components"]["database"], "up");
    assert!(answer.body["database_latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(chrono::DateTime::parse_from_rfc3339(answer.body["timestamp"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn api_health_answers_503_when_the_database_is_down() {
    let app = TestApp::spawn().await;
    app.state.store.close().await;
    let answer = app.get("/api/health", None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body["status"], "unhealthy");
    assert_eq!(answer.body["components"]["database"], "down");
    assert_eq!(answer.error_tag(), "unavailable");
    // The probe does not touch the database and stays up.
    assert_eq!(app.get("/health", None).await.status, StatusCode::OK);
    // Routes that need the database answer 503 in the error shape, never a 500.
    let login = app
        .post(
            "/api/auth/login",
            None,
            serde_json::json!({"email": "a@example.com", "password": "whatever pw"}),
        )
        .await;
    assert_eq!(login.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(login.error_tag(), "unavailable");
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_with_its_security() {
    let app = TestApp::spawn().await;
    let answer = app.get("/openapi.json", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = &answer.body["paths"];
    for (path, methods) in [
        ("/", &["get"][..]),
        ("/health", &["get"]),
        ("/api/health", &["get"]),
        ("/api/auth/register", &["post"]),
        ("/api/auth/signup", &["post"]),
        ("/api/auth/login", &["post"]),
        ("/api/auth/logout", &["post"]),
        ("/api/auth/me", &["get", "put", "patch"]),
        ("/api/auth/change-password", &["post"]),
        ("/api/auth/forgot-password", &["post"]),
        ("/api/auth/reset-password", &["post"]),
        ("/api/users", &["get", "post"]),
        ("/api/users/{id}/role", &["patch"]),
        ("/api/users/{id}", &["delete"]),
        ("/api/audit", &["get"]),
        ("/api/tokens", &["get", "post"]),
        ("/api/tokens/{id}", &["delete"]),
        ("/api/nodes", &["get"]),
        ("/api/nodes/heartbeat", &["post"]),
        ("/api/nodes/sparks", &["get"]),
        ("/api/nodes/me/config", &["get"]),
        ("/api/nodes/{nodeId}", &["delete"]),
        ("/api/nodes/{nodeId}/status", &["get"]),
        ("/api/nodes/{nodeId}/history", &["get"]),
        ("/api/nodes/{nodeId}/activity", &["get"]),
        ("/api/nodes/{nodeId}/config", &["patch"]),
        ("/api/stream/nodes", &["get"]),
    ] {
        for method in methods {
            assert!(
                paths[path][method].is_object(),
                "{method} {path} is not documented"
            );
        }
    }
    assert!(paths["/api/users"]["get"]["security"].is_array());
    assert!(paths["/api/auth/register"]["post"]["requestBody"].is_object());
    let schemes = &answer.body["components"]["securitySchemes"];
    assert!(schemes["bearer"].is_object() && schemes["cookie"].is_object());
    assert!(answer.body["components"]["schemas"]["ErrorBody"].is_object());
}

/// The router's routes are registered only through `utoipa_axum::routes!`, which documents each one
/// as it registers it; this checks the outcome path by path: every documented operation is served,
/// and every other method on a documented path is the router's 405, so nothing is served on those
/// paths that the document leaves out. (`/docs` and `/openapi.json` themselves are not in it.)
#[tokio::test]
async fn the_openapi_document_lists_exactly_the_methods_each_route_serves() {
    let app = TestApp::with(&[("HYPRBOX_RATE_LIMIT", "100000")]).await;
    let document = app.get("/openapi.json", None).await;
    let paths = document.body["paths"].as_object().unwrap();
    assert!(paths.len() >= 49, "{} paths", paths.len());
    for (template, operations) in paths {
        let path = template
            .replace("{nodeId}", "web-1")
            .replace("{id}", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
            .replace("{runId}", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c")
            .replace("{name}", "no-such-preset");
        assert!(!path.contains('{'), "{template}");
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            let documented = operations.get(method.as_str().to_lowercase()).is_some();
            let answer = app.call(method.clone(), &path, None, None).await;
            let unrouted = answer.status == StatusCode::METHOD_NOT_ALLOWED
                || (answer.status == StatusCode::NOT_FOUND && answer.body["message"] == "no such route");
            if documented {
                assert!(
                    !unrouted,
                    "{method} {template} is documented but not served: {}",
                    answer.text
                );
            } else {
                assert_eq!(
                    answer.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {template} is served but not documented: {}",
                    answer.text
                );
            }
        }
    }
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = TestApp::spawn().await;
    let page = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("cdn") && !html.contains("unpkg"));
}

#[tokio::test]
async fn production_hides_the_docs_unless_enabled() {
    let app = TestApp::with(&[("HYPRBOX_ENV", "production")]).await;
    assert_eq!(app.get("/openapi.json", None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.client.get(app.url("/docs/")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let enabled = TestApp::with(&[("HYPRBOX_ENV", "production"), ("HYPRBOX_ENABLE_DOCS", "true")]).await;
    assert_eq!(enabled.get("/openapi.json", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let app = TestApp::spawn().await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // A first, complete request proves the server is serving this connection.
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The second request's handler is running (it asked for the body: `100 Continue`) when
    // shutdown starts; it still gets its answer.
    let body = br#"{"email":"a@example.com","password":"whatever pw"}"#;
    let head = format!(
        "POST /api/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         expect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"));
    let stopping = tokio::spawn(app.stop());
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    stopping.await.unwrap().unwrap();
}
