//! Clients that hold connections without finishing requests (slowloris), trickled bodies, too many
//! connections and too many streams: the server stays available to everyone else.

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, get_streaming};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw HTTP/1.1 GET of /health on a fresh connection; the status line.
async fn health(app: &TestApp) -> String {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn slowloris_clients_are_cut_at_the_header_deadline_while_health_keeps_answering() {
    let app = TestApp::with(&[("HYPRBOX_MAX_CONNECTIONS", "8"), ("HYPRBOX_HEADER_TIMEOUT", "1s")]).await;
    // Eight clients take every connection and send half a request line, a byte now and then.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    // The slow clients themselves: a byte each 300 ms is what keeps a naive server waiting.
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            for stream in &mut slow {
                let _ = stream.write_all(b"a").await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        slow
    });
    // With every connection taken, a real client waits at most about one header deadline.
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(5), health(&app))
        .await
        .expect("health answers while slow clients hold the connections");
    assert!(status.contains("200"), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    // The slow clients were cut off, trickling or not.
    let mut slow = trickle.await.unwrap();
    for stream in &mut slow {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the server closed the slow connection");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_trickled_past_the_request_deadline_gets_408_with_the_error_shape() {
    let app = TestApp::with(&[("HYPRBOX_REQUEST_TIMEOUT", "1s")]).await;
    let admin = app.register_admin().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/tokens HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\n\
         content-length: 100\r\nconnection: close\r\n\r\n{{\"name\":",
        admin.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered at the deadline")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
    let tokens = app.get("/api/tokens", Some(&admin.token)).await;
    assert_eq!(
        tokens.body["tokens"],
        serde_json::json!([]),
        "nothing half-read was stored"
    );
}

#[tokio::test]
async fn one_user_holds_at_most_the_stream_cap_and_a_closed_stream_frees_its_place() {
    let app = TestApp::with(&[("HYPRBOX_MAX_STREAMS_PER_USER", "2")]).await;
    let admin = app.register_admin().await;
    let first = get_streaming(&app, "/api/stream/nodes", &admin.token).await;
    let second = get_streaming(&app, "/api/stream/nodes", &admin.token).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::OK);
    let third = app.get("/api/stream/nodes", Some(&admin.token)).await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS, "{}", third.text);
    assert_eq!(third.error_tag(), "too_many_requests");
    let other = app.user_with_role(&admin, "v@example.com", "VIEWER").await;
    let theirs = get_streaming(&app, "/api/stream/nodes", &other.token).await;
    assert_eq!(theirs.status(), StatusCode::OK, "the cap is per user");
    drop(first);
    // The server notices a client gone when it next writes to it: a heartbeat gives it something.
    app.eventually("the closed stream's place to be free", || async {
        app.heartbeat(None, serde_json::json!({"node_id": "n1", "cpu_percent": 1.0}))
            .await;
        get_streaming(&app, "/api/stream/nodes", &admin.token)
            .await
            .status()
            == StatusCode::OK
    })
    .await;
}
