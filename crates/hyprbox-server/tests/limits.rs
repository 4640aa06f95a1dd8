//! Limits that one leaked or guessed credential cannot step around: new nodes per token, budgets
//! keyed on decoded ids, made-up job ids, and callers whose credentials keep failing.

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::json;

fn beat(node: &str) -> serde_json::Value {
    json!({"node_id": node, "cpu_percent": 1.0})
}

#[tokio::test]
async fn one_token_registers_at_most_the_node_create_limit_and_known_nodes_keep_their_own_budget() {
    let app = TestApp::with(&[("HYPRBOX_NODE_CREATE_LIMIT", "3")]).await;
    let admin = app.register_admin().await;
    let (fleet, _) = app.mint_token(&admin, None).await;
    for i in 0..3 {
        let answer = app.heartbeat(Some(&fleet), beat(&format!("new-{i}"))).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    }
    let fourth = app.heartbeat(Some(&fleet), beat("new-3")).await;
    assert_eq!(fourth.status, StatusCode::TOO_MANY_REQUESTS, "{}", fourth.text);
    assert!(fourth.headers.contains_key("retry-after"));
    let findings = app
        .post(
            "/api/findings",
            Some(&fleet),
            json!({"nodeId": "new-4", "findings": [{"type": "disk.full", "key": "/", "severity": "WARN", "title": "t", "message": "m"}]}),
        )
        .await;
    assert_eq!(
        findings.status,
        StatusCode::TOO_MANY_REQUESTS,
        "findings cannot invent nodes either"
    );
    for i in 0..3 {
        let known = app.heartbeat(Some(&fleet), beat(&format!("new-{i}"))).await;
        assert_eq!(
            known.status,
            StatusCode::ACCEPTED,
            "a known node is not a new one"
        );
    }
    let nodes = app.get("/api/nodes", Some(&admin.token)).await;
    assert_eq!(nodes.body["nodes"].as_array().unwrap().len(), 3, "{}", nodes.text);
    // Another token has its own allowance.
    let (other, _) = app.mint_token(&admin, Some("pinned-1")).await;
    assert_eq!(
        app.heartbeat(Some(&other), beat("pinned-1")).await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn a_percent_encoded_node_id_shares_the_budget_of_the_id_it_spells() {
    let app = TestApp::with(&[("HYPRBOX_RATE_LIMIT", "3")]).await;
    let admin = app.register_admin().await;
    let (fleet, _) = app.mint_token(&admin, None).await;
    for _ in 0..3 {
        let answer = app.get("/api/jobs/pending?nodeId=web-1", Some(&fleet)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    let encoded = app.get("/api/jobs/pending?nodeId=web%2D1", Some(&fleet)).await;
    assert_eq!(encoded.status, StatusCode::TOO_MANY_REQUESTS, "{}", encoded.text);
    let other = app.get("/api/jobs/pending?nodeId=web-2", Some(&fleet)).await;
    assert_eq!(other.status, StatusCode::OK, "another node has its own budget");
}

#[tokio::test]
async fn made_up_job_ids_share_one_budget_per_fleet_wide_token() {
    let app = TestApp::with(&[("HYPRBOX_RATE_LIMIT", "3")]).await;
    let admin = app.register_admin().await;
    let (fleet, _) = app.mint_token(&admin, None).await;
    for _ in 0..3 {
        let id = uuid::Uuid::now_v7();
        let answer = app
            .post(
                &format!("/api/jobs/{id}/output"),
                Some(&fleet),
                json!({"stdout": "x"}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
    }
    let id = uuid::Uuid::now_v7();
    let refused = app
        .post(
            &format!("/api/jobs/{id}/output"),
            Some(&fleet),
            json!({"stdout": "x"}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.text);
    let beat = app
        .heartbeat(Some(&fleet), json!({"node_id": "web-9", "cpu_percent": 1.0}))
        .await;
    assert_eq!(
        beat.status,
        StatusCode::ACCEPTED,
        "heartbeats keep their own per-node budgets"
    );
}

#[tokio::test]
async fn a_caller_whose_tokens_keep_failing_is_refused_before_any_lookup_even_on_streams() {
    let app = TestApp::with(&[("HYPRBOX_RATE_LIMIT", "3"), ("HYPRBOX_TRUST_PROXY", "true")]).await;
    let admin = app.register_admin().await;
    let guess = |n: usize| format!("hbnt_{n:08}{}", "x".repeat(40));
    let from = |ip: &str, path: &str, token: &str| {
        app.client
            .get(app.url(path))
            .header("x-forwarded-for", ip)
            .bearer_auth(token)
            .send()
    };
    for n in 0..3 {
        let answer = from("203.0.113.9", "/api/jobs/pending?nodeId=a", &guess(n))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }
    for path in ["/api/jobs/pending?nodeId=a", "/api/stream/nodes", "/api/agent/ws"] {
        let answer = from("203.0.113.9", path, &guess(99)).await.unwrap();
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
    }
    // A forged session token counts the same way, and a good credential from that address is
    // refused too until the window rolls: the address is what is limited.
    let refused = from("203.0.113.9", "/api/auth/me", &admin.token).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let elsewhere = from("198.51.100.7", "/api/auth/me", &admin.token).await.unwrap();
    assert_eq!(
        elsewhere.status(),
        StatusCode::OK,
        "other addresses are unaffected"
    );
}
