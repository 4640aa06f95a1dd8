//! The authorisation matrix: every route that needs a role × every role.

mod common;

use common::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Need {
    User,
    Operator,
    Admin,
}

#[tokio::test]
async fn every_protected_route_answers_401_anonymous_403_below_its_role_and_serves_its_role() {
    let app = TestApp::with(&[("HYPRBOX_RATE_LIMIT", "1000")]).await;
    let admin = app.register_admin().await;
    let operator = app.user_with_role(&admin, "op@example.com", "OPERATOR").await;
    let viewer = app.user_with_role(&admin, "viewer@example.com", "VIEWER").await;
    let target = app.user_with_role(&admin, "target@example.com", "VIEWER").await;
    app.heartbeat(None, json!({"node_id": "n1"})).await;

    let routes: Vec<(Method, String, Option<Value>, Need)> = vec![
        (Method::GET, "/api/auth/me".into(), None, Need::User),
        (
            Method::PUT,
            "/api/auth/me".into(),
            Some(json!({"language": "en"})),
            Need::User,
        ),
        (
            Method::PATCH,
            "/api/auth/me".into(),
            Some(json!({"language": "en"})),
            Need::User,
        ),
        (
            Method::POST,
            "/api/auth/change-password".into(),
            Some(json!({"currentPassword": "x", "newPassword": "y"})),
            Need::User,
        ),
        (Method::GET, "/api/users".into(), None, Need::Admin),
        (
            Method::POST,
            "/api/users".into(),
            Some(json!({"email": "bad", "role": "VIEWER", "password": "p"})),
            Need::Admin,
        ),
        (
            Method::PATCH,
            format!("/api/users/{}/role", target.id),
            Some(json!({"role": "VIEWER"})),
            Need::Admin,
        ),
        (
            Method::DELETE,
            "/api/users/does-not-exist".into(),
            None,
            Need::Admin,
        ),
        (Method::GET, "/api/audit".into(), None, Need::Admin),
        (Method::GET, "/api/audit?format=csv".into(), None, Need::Admin),
        (Method::GET, "/api/tokens".into(), None, Need::Operator),
        (
            Method::POST,
            "/api/tokens".into(),
            Some(json!({"name": ""})),
            Need::Operator,
        ),
        (
            Method::DELETE,
            "/api/tokens/does-not-exist".into(),
            None,
            Need::Operator,
        ),
        (Method::GET, "/api/nodes".into(), None, Need::User),
        (Method::GET, "/api/nodes/sparks".into(), None, Need::User),
        (Method::GET, "/api/nodes/n1/status".into(), None, Need::User),
        (Method::GET, "/api/nodes/n1/history".into(), None, Need::User),
        (Method::GET, "/api/nodes/n1/activity".into(), None, Need::User),
        (
            Method::PATCH,
            "/api/nodes/n1/config".into(),
            Some(json!({"colour": "x"})),
            Need::Operator,
        ),
        (
            Method::DELETE,
            "/api/nodes/does-not-exist".into(),
            None,
            Need::Operator,
        ),
    ];
    let callers = [
        ("anonymous", None, None),
        ("VIEWER", Some(viewer.token.as_str()), Some(Need::User)),
        ("OPERATOR", Some(operator.token.as_str()), Some(Need::Operator)),
        ("ADMIN", Some(admin.token.as_str()), Some(Need::Admin)),
    ];
    for (method, path, body, need) in &routes {
        for (who, token, level) in &callers {
            let answer = app.call(method.clone(), path, *token, body.clone()).await;
            let expected = match level {
                None => Some(StatusCode::UNAUTHORIZED),
                Some(level) if level < need => Some(StatusCode::FORBIDDEN),
                Some(_) => None,
            };
            match expected {
                Some(status) => {
                    assert_eq!(answer.status, status, "{who} {method} {path}: {}", answer.text);
                    answer.error_tag();
                }
                None => assert!(
                    answer.status != StatusCode::UNAUTHORIZED && answer.status != StatusCode::FORBIDDEN,
                    "{who} {method} {path} was refused: {}",
                    answer.text
                ),
            }
        }
    }
}

#[tokio::test]
async fn a_node_token_is_never_accepted_where_a_user_is_required() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let (real, _) = app.mint_token(&admin, None).await;
    let node = real.as_str();
    for path in [
        "/api/auth/me",
        "/api/users",
        "/api/audit",
        "/api/nodes",
        "/api/tokens",
    ] {
        let answer = app.get(path, Some(node)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
    }
}
