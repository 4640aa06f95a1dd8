//! `/api/users` (ADMIN): provisioning, roles, deletion, and the last-admin guards.

mod common;

use common::{PASSWORD, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn an_admin_lists_and_creates_users() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let created = app
        .post(
            "/api/users",
            Some(&admin.token),
            json!({"email": "Op@Example.com", "name": "Op", "role": "OPERATOR", "password": PASSWORD}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["user"]["role"], "OPERATOR");
    assert_eq!(created.body["user"]["email"], "op@example.com");
    let list = app.get("/api/users", Some(&admin.token)).await;
    assert_eq!(list.status, StatusCode::OK);
    let emails: Vec<&str> = list.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["admin@example.com", "op@example.com"]);
    assert!(!list.text.contains("argon2") && !list.text.contains("password"));
    app.login("op@example.com", PASSWORD).await;
}

#[tokio::test]
async fn creating_a_user_validates_every_field_and_refuses_duplicates() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    for (body, field) in [
        (
            json!({"email": "x", "role": "VIEWER", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"email": "x@example.com", "role": "ROOT", "password": PASSWORD}),
            "role",
        ),
        (
            json!({"email": "x@example.com", "role": "VIEWER", "password": "short"}),
            "password",
        ),
        (json!({"email": "x@example.com", "password": PASSWORD}), "role"),
    ] {
        let answer = app.post("/api/users", Some(&admin.token), body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert!(
            answer.body["message"].as_str().unwrap().contains(field),
            "{}",
            answer.text
        );
    }
    let dup = app
        .post(
            "/api/users",
            Some(&admin.token),
            json!({"email": "ADMIN@example.com", "role": "VIEWER", "password": PASSWORD}),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(
        app.get("/api/users", Some(&admin.token)).await.body["users"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_role_change_revokes_the_targets_tokens() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let viewer = app.user_with_role(&admin, "v@example.com", "VIEWER").await;
    let answer = app
        .call(
            Method::PATCH,
            &format!("/api/users/{}/role", viewer.id),
            Some(&admin.token),
            Some(json!({"role": "OPERATOR"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["user"]["role"], "OPERATOR");
    assert_eq!(
        app.get("/api/auth/me", Some(&viewer.token)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = app.login("v@example.com", PASSWORD).await;
    assert_eq!(
        app.get("/api/auth/me", Some(&again.token)).await.body["role"],
        "OPERATOR"
    );
}

#[tokio::test]
async fn role_changes_answer_400_404_and_409_as_the_contract_says() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let path = format!("/api/users/{}/role", admin.id);
    let bad = app
        .call(
            Method::PATCH,
            &path,
            Some(&admin.token),
            Some(json!({"role": "KING"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let missing = app
        .call(
            Method::PATCH,
            "/api/users/nobody/role",
            Some(&admin.token),
            Some(json!({"role": "VIEWER"})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_tag(), "not_found");
    let last = app
        .call(
            Method::PATCH,
            &path,
            Some(&admin.token),
            Some(json!({"role": "VIEWER"})),
        )
        .await;
    assert_eq!(last.status, StatusCode::CONFLICT);
    assert_eq!(
        app.get("/api/auth/me", Some(&admin.token)).await.body["role"],
        "ADMIN"
    );
}

#[tokio::test]
async fn deleting_a_user_ends_their_sessions() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let op = app.user_with_role(&admin, "op@example.com", "OPERATOR").await;
    let answer = app
        .call(
            Method::DELETE,
            &format!("/api/users/{}", op.id),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(answer.text.is_empty());
    assert_eq!(
        app.get("/api/auth/me", Some(&op.token)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let gone = app
        .call(
            Method::DELETE,
            &format!("/api/users/{}", op.id),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_admin_cannot_delete_themselves_nor_the_last_admin() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let own = app
        .call(
            Method::DELETE,
            &format!("/api/users/{}", admin.id),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(own.status, StatusCode::CONFLICT);
    // With a second admin, each may delete the other, but never the last one standing.
    let second = app.user_with_role(&admin, "second@example.com", "ADMIN").await;
    let deleted = app
        .call(
            Method::DELETE,
            &format!("/api/users/{}", admin.id),
            Some(&second.token),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let users = app.get("/api/users", Some(&second.token)).await;
    assert_eq!(users.body["users"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn user_changes_are_audited() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let op = app.user_with_role(&admin, "op@example.com", "OPERATOR").await;
    app.call(
        Method::PATCH,
        &format!("/api/users/{}/role", op.id),
        Some(&admin.token),
        Some(json!({"role": "VIEWER"})),
    )
    .await;
    app.call(
        Method::DELETE,
        &format!("/api/users/{}", op.id),
        Some(&admin.token),
        None,
    )
    .await;
    for action in ["user.create", "user.role", "user.delete"] {
        let events = app
            .get(&format!("/api/audit?action={action}"), Some(&admin.token))
            .await;
        assert_eq!(events.body["total"], 1, "{action}: {}", events.text);
        let event = &events.body["events"][0];
        assert_eq!(event["userId"], admin.id.as_str());
        assert_eq!(event["userEmail"], "admin@example.com");
        assert_eq!(event["resourceType"], "user");
        assert_eq!(event["resourceId"], op.id.as_str());
        assert_eq!(event["ip"], "127.0.0.1");
    }
}
