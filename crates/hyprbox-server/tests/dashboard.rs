//! `/api/dashboard/system-health` and `/api/dashboard/user-experience` as the Hyperion web client
//! uses them: with the session cookie, from its own origin, reading snake_case fields.

mod common;

use common::{TestApp, cookie};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Signs in through the login form and returns the `hb_token` cookie, as the browser holds it.
async fn browser_cookie(app: &TestApp) -> String {
    app.register_admin().await;
    let login = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "admin@example.com", "password": common::PASSWORD}),
        )
        .await;
    let cookies = login.set_cookies();
    format!(
        "hb_token={}",
        cookie(&cookies, "hb_token").expect("a session cookie")
    )
}

async fn get_with_cookie(
    app: &TestApp,
    path: &str,
    cookie: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = app
        .client
        .get(app.url(path))
        .header("cookie", cookie)
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn system_health_answers_the_client_with_its_snake_case_fields() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.get("/api/dashboard/system-health", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let cookie = browser_cookie(&app).await;
    let (status, headers, body) = get_with_cookie(&app, "/api/dashboard/system-health", &cookie).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["access-control-allow-origin"], "http://localhost:5173");
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert!(
        headers
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("origin"))
    );
    assert!(["STRESSED", "HEAVY_LOAD", "ACTIVE", "STABILIZED"].contains(&body["status"].as_str().unwrap()));
    assert_eq!(body["environment"], "DEV");
    let load = body["server_load"].as_array().unwrap();
    assert_eq!(load.len(), 7);
    assert!(
        load[6].as_f64().unwrap() > 0.0,
        "today's load has this sample: {body}"
    );
    let uptime = body["uptime"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&uptime) && uptime > 0.0, "{body}");
    for field in ["cpu_percent", "memory_percent"] {
        assert!(
            (0.0..=100.0).contains(&body[field].as_f64().unwrap()),
            "{field}: {body}"
        );
    }
    assert!(body["memory_used_bytes"].as_u64().unwrap() > 0);
    assert!(body["memory_limit_bytes"].as_u64().unwrap() >= body["memory_used_bytes"].as_u64().unwrap());
    assert!(body["uptime_seconds"].is_u64());
    assert!(["cgroup_v2", "cgroup_v1", "host"].contains(&body["container"].as_str().unwrap()));
    assert!(body["last_updated"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn health_samples_and_daily_users_survive_a_restart() {
    let app = TestApp::spawn().await;
    let cookie = browser_cookie(&app).await;
    let (status, _, _) = get_with_cookie(&app, "/api/dashboard/system-health", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    let now = hyprbox_store::now_ms();
    hyprbox_server::hyperion::ux::tick(&app.state, now).await.unwrap();
    let (_, db) = app.stop_keeping_database().await;

    let store = db.store().await;
    let mut conn = store.conn().await.unwrap();
    let samples = hyprbox_store::metrics::samples_since(&mut conn, 0).await.unwrap();
    assert!(!samples.is_empty(), "the sample is in the database");
    let today = now.div_euclid(86_400_000);
    let days = hyprbox_store::metrics::daily_user_counts(&mut conn, today)
        .await
        .unwrap();
    assert_eq!(days, vec![(today, 1)], "the admin counted once today");
    drop(conn);
    store.close().await;
    drop(db);
}

#[tokio::test]
async fn user_experience_counts_active_users_and_times_requests() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.get("/api/dashboard/user-experience", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let cookie = browser_cookie(&app).await;
    for _ in 0..5 {
        get_with_cookie(&app, "/api/auth/me", &cookie).await;
    }
    hyprbox_server::hyperion::ux::tick(&app.state, hyprbox_store::now_ms())
        .await
        .unwrap();
    let (status, headers, body) = get_with_cookie(&app, "/api/dashboard/user-experience", &cookie).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(body["active_now"], 1, "{body}");
    // Seven points, oldest first (zeros before the first samples); this minute's is 1.
    let trend = body["active_trend"].as_array().unwrap();
    assert_eq!(trend.len(), 7, "{body}");
    assert_eq!(trend.last(), Some(&json!(1)), "{body}");
    let avg = body["avg_response_time"].as_f64().unwrap();
    let p95 = body["p95_response_time"].as_f64().unwrap();
    assert!(avg > 0.0 && p95 >= avg, "{body}");
    let daily = body["daily_activity"].as_array().unwrap();
    assert_eq!(daily.len(), 7);
    assert_eq!(daily[6], 1, "today, last: {body}");
    assert!(body["last_updated"].is_string());
}

#[tokio::test]
async fn live_streams_are_not_timed() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let before = app.state.ux.snapshot(hyprbox_store::now_ms());
    let stream = app
        .client
        .get(app.url("/api/stream/nodes"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    drop(stream);
    // Only the stream was requested since `before`: the averages are unchanged.
    let after = app.state.ux.snapshot(hyprbox_store::now_ms());
    assert_eq!(before.avg_response_time, after.avg_response_time);
    assert_eq!(before.p95_response_time, after.p95_response_time);
}
