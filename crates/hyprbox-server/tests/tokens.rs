//! `/api/tokens`: node tokens, shown once, owner-scoped, revoked softly and refused at once.

mod common;

use common::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn a_token_is_shown_once_and_listed_without_its_secret() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let answer = app
        .post(
            "/api/tokens",
            Some(&admin.token),
            json!({"name": "web", "nodeId": "web-1"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let token = answer.body["token"].as_str().unwrap();
    assert!(token.starts_with("hbnt_") && token.len() >= 5 + 8 + 32);
    let meta = &answer.body["meta"];
    assert_eq!(meta["name"], "web");
    assert_eq!(meta["nodeId"], "web-1");
    assert_eq!(meta["prefix"].as_str().unwrap(), &token[5..13]);
    assert!(meta["createdAt"].as_str().unwrap().ends_with('Z'));

    let list = app.get("/api/tokens", Some(&admin.token)).await;
    assert_eq!(list.status, StatusCode::OK);
    let listed = &list.body["tokens"][0];
    assert_eq!(listed["id"], meta["id"]);
    assert!(listed["lastUsedAt"].is_null() && listed["revokedAt"].is_null());
    assert!(!list.text.contains(&token[13..]), "the secret never comes back");
    assert!(!list.text.contains("hash"));
}

#[tokio::test]
async fn invalid_token_requests_are_400s() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    for body in [
        json!({"name": ""}),
        json!({"name": "x", "nodeId": "bad id"}),
        json!({"name": 5}),
        json!({}),
    ] {
        let answer = app.post("/api/tokens", Some(&admin.token), body.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        answer.error_tag();
    }
    assert_eq!(
        app.get("/api/tokens", Some(&admin.token)).await.body["tokens"],
        json!([])
    );
}

#[tokio::test]
async fn tokens_are_for_operators_and_scoped_to_their_creator() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let op1 = app.user_with_role(&admin, "op1@example.com", "OPERATOR").await;
    let op2 = app.user_with_role(&admin, "op2@example.com", "OPERATOR").await;
    let viewer = app.user_with_role(&admin, "v@example.com", "VIEWER").await;
    let (_, meta) = app.mint_token(&op1, Some("web-1")).await;
    let id = meta["id"].as_str().unwrap();

    assert_eq!(
        app.post("/api/tokens", Some(&viewer.token), json!({"name": "x"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/api/tokens", Some(&viewer.token)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/api/tokens", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/api/tokens", Some(&op2.token)).await.body["tokens"],
        json!([])
    );
    assert_eq!(
        app.get("/api/tokens", Some(&admin.token)).await.body["tokens"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let other = app
        .call(
            Method::DELETE,
            &format!("/api/tokens/{id}"),
            Some(&op2.token),
            None,
        )
        .await;
    assert_eq!(
        other.status,
        StatusCode::NOT_FOUND,
        "another user's token does not exist for them"
    );
    let missing = app
        .call(Method::DELETE, "/api/tokens/nope", Some(&op1.token), None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let by_admin = app
        .call(
            Method::DELETE,
            &format!("/api/tokens/{id}"),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(by_admin.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn only_an_admin_may_mint_a_fleet_wide_token() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let operator = app.user_with_role(&admin, "op@example.com", "OPERATOR").await;
    let refused = app
        .post("/api/tokens", Some(&operator.token), json!({"name": "fleet"}))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert!(refused.body["message"].as_str().unwrap().contains("nodeId"));
    let null_node = app
        .post(
            "/api/tokens",
            Some(&operator.token),
            json!({"name": "fleet", "nodeId": null}),
        )
        .await;
    assert_eq!(null_node.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.get("/api/tokens", Some(&operator.token)).await.body["tokens"],
        json!([]),
        "a refused mint stores nothing"
    );
    let (_, pinned) = app.mint_token(&operator, Some("web-1")).await;
    assert_eq!(
        pinned["nodeId"], "web-1",
        "an OPERATOR may still pin a token to a node"
    );
    let (_, fleet) = app.mint_token(&admin, None).await;
    assert_eq!(fleet["nodeId"], serde_json::Value::Null);
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_its_very_next_call() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let (token, meta) = app.mint_token(&admin, Some("n1")).await;
    let ok = app
        .heartbeat(Some(&token), json!({"node_id": "n1", "cpu_percent": 5}))
        .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED);
    let revoke = app
        .call(
            Method::DELETE,
            &format!("/api/tokens/{}", meta["id"].as_str().unwrap()),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT);
    let refused = app
        .heartbeat(Some(&token), json!({"node_id": "n1", "cpu_percent": 5}))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.error_tag(), "unauthorized");
    let listed = app.get("/api/tokens", Some(&admin.token)).await;
    assert!(listed.body["tokens"][0]["revokedAt"].is_string());
}

#[tokio::test]
async fn a_revoked_token_is_refused_by_a_server_that_never_saw_it_before() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let (token, meta) = app.mint_token(&admin, None).await;
    app.call(
        Method::DELETE,
        &format!("/api/tokens/{}", meta["id"].as_str().unwrap()),
        Some(&admin.token),
        None,
    )
    .await;
    let fresh = hyprbox_server::Application::build(app.state.settings.clone())
        .await
        .unwrap();
    let verified = fresh
        .state()
        .node_tokens
        .verify(&fresh.state().store, &token)
        .await
        .unwrap();
    assert!(verified.is_none());
}

#[tokio::test]
async fn a_wrong_secret_with_a_real_prefix_is_refused() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let (token, _) = app.mint_token(&admin, None).await;
    let forged = format!("{}{}", &token[..13], "A".repeat(token.len() - 13));
    let answer = app.heartbeat(Some(&forged), json!({"node_id": "n1"})).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn token_use_is_recorded_as_last_used_and_changes_are_audited() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let (token, meta) = app.mint_token(&admin, None).await;
    app.heartbeat(Some(&token), json!({"node_id": "n1"})).await;
    app.eventually("lastUsedAt", || async {
        app.get("/api/tokens", Some(&admin.token)).await.body["tokens"][0]["lastUsedAt"].is_string()
    })
    .await;
    app.call(
        Method::DELETE,
        &format!("/api/tokens/{}", meta["id"].as_str().unwrap()),
        Some(&admin.token),
        None,
    )
    .await;
    for action in ["token.create", "token.revoke"] {
        let events = app
            .get(&format!("/api/audit?action={action}"), Some(&admin.token))
            .await;
        assert_eq!(events.body["total"], 1, "{action}");
        assert_eq!(events.body["events"][0]["resourceId"], meta["id"]);
        assert!(!events.text.contains(&token[13..]));
    }
}
