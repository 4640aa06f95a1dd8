//! `GET /api/audit` (ADMIN): what is recorded, filters, paging and the CSV export.

mod common;

use common::{PASSWORD, TestApp};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn sign_in_events_are_recorded_newest_first() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    app.post(
        "/api/auth/login",
        None,
        json!({"email": "admin@example.com", "password": "wrong password"}),
    )
    .await;
    app.post(
        "/api/auth/login",
        None,
        json!({"email": "ghost@example.com", "password": "wrong password"}),
    )
    .await;
    let session = app.login("admin@example.com", PASSWORD).await;
    app.post("/api/auth/logout", Some(&session.token), json!({}))
        .await;
    let answer = app.get("/api/audit", Some(&admin.token)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let actions: Vec<&str> = answer.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "user.logout",
            "user.login",
            "user.login_failed",
            "user.login_failed",
            "user.register"
        ]
    );
    assert_eq!(answer.body["total"], 5);
    assert_eq!(answer.body["page"], 1);
    let ghost = &answer.body["events"][2];
    assert_eq!(ghost["userEmail"], "ghost@example.com");
    assert!(ghost["userId"].is_null());
    assert!(answer.body["events"][0]["at"].as_str().unwrap().ends_with('Z'));
    assert!(answer.body["events"][0]["metadata"].is_object());
    assert!(
        !answer.text.contains("wrong password"),
        "passwords are never recorded"
    );
}

#[tokio::test]
async fn password_flows_are_recorded() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    app.post(
        "/api/auth/change-password",
        Some(&admin.token),
        json!({"currentPassword": PASSWORD, "newPassword": "another password"}),
    )
    .await;
    app.post(
        "/api/auth/forgot-password",
        None,
        json!({"email": "admin@example.com"}),
    )
    .await;
    let admin = app.login("admin@example.com", "another password").await;
    for action in ["user.password_change", "password.reset_request"] {
        let answer = app
            .get(&format!("/api/audit?action={action}"), Some(&admin.token))
            .await;
        assert_eq!(answer.body["total"], 1, "{action}");
    }
}

#[tokio::test]
async fn filters_narrow_and_pages_hold_50_events() {
    let app = TestApp::with(&[("HYPRBOX_RATE_LIMIT", "1000")]).await;
    let admin = app.register_admin().await;
    let viewer = app.user_with_role(&admin, "v@example.com", "VIEWER").await;
    for _ in 0..55 {
        app.post(
            "/api/auth/logout",
            Some(&app.state.keys.issue(&viewer.id, 0).0),
            json!({}),
        )
        .await;
    }
    let page1 = app.get("/api/audit?action=user.logout", Some(&admin.token)).await;
    assert_eq!(page1.body["total"], 55);
    assert_eq!(page1.body["events"].as_array().unwrap().len(), 50);
    let page2 = app
        .get("/api/audit?action=user.logout&page=2", Some(&admin.token))
        .await;
    assert_eq!(page2.body["page"], 2);
    assert_eq!(page2.body["events"].as_array().unwrap().len(), 5);
    let first_ids: Vec<_> = page1.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert!(
        page2.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !first_ids.contains(&e["id"]))
    );

    let by_email = app.get("/api/audit?user=V@example.com", Some(&admin.token)).await;
    assert_eq!(by_email.body["total"], 56, "55 logouts and one login");
    let by_id = app
        .get(
            &format!("/api/audit?user={}&action=user.login", viewer.id),
            Some(&admin.token),
        )
        .await;
    assert_eq!(by_id.body["total"], 1);
    let by_resource = app
        .get(
            &format!(
                "/api/audit?resourceType=user&resourceId={}&action=user.create",
                viewer.id
            ),
            Some(&admin.token),
        )
        .await;
    assert_eq!(by_resource.body["total"], 1);
    let none = app
        .get("/api/audit?action=nothing.like.this", Some(&admin.token))
        .await;
    assert_eq!(none.body["total"], 0);
}

#[tokio::test]
async fn a_bad_page_or_format_is_a_400() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    for query in ["page=0", "page=-1", "page=two", "page=1.5", "format=xml"] {
        let answer = app.get(&format!("/api/audit?{query}"), Some(&admin.token)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        answer.error_tag();
    }
}

#[tokio::test]
async fn the_csv_export_is_an_attachment_with_formula_cells_neutralised() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    app.post(
        "/api/auth/login",
        None,
        json!({"email": "=cmd|'/c calc'!A1@x.com", "password": "whatever pw"}),
    )
    .await;
    app.post(
        "/api/auth/login",
        None,
        json!({"email": "+1@x.com", "password": "whatever pw"}),
    )
    .await;
    let answer = app.get("/api/audit?format=csv", Some(&admin.token)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let disposition = answer.headers["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment") && disposition.contains(".csv"));
    let lines: Vec<&str> = answer.text.lines().collect();
    assert_eq!(
        lines[0],
        "id,at,userId,userEmail,action,resourceType,resourceId,ip,metadata"
    );
    assert_eq!(lines.len(), 4, "header + 2 failed logins + register");
    assert!(answer.text.contains("\"'+1@x.com\""), "{}", answer.text);
    assert!(
        answer.text.contains("\"'=cmd|'/c calc'!a1@x.com\""),
        "{}",
        answer.text
    );
    assert!(!answer.text.contains(",\"=") && !answer.text.contains(",\"+"));

    let filtered = app
        .get("/api/audit?format=csv&action=user.register", Some(&admin.token))
        .await;
    assert_eq!(filtered.text.lines().count(), 2);
}

#[tokio::test]
async fn repeated_anonymous_failures_are_written_a_few_at_a_time_and_summarised_not_lost() {
    let app = TestApp::with(&[("HYPRBOX_TRUST_PROXY", "true")]).await;
    let admin = app.register_admin().await;
    for n in 0..9 {
        let failed = app
            .post_from(
                "203.0.113.50",
                "/api/auth/login",
                json!({"email": format!("guess{n}@example.com"), "password": "wrong password"}),
            )
            .await;
        assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
    }
    app.post_from(
        "198.51.100.1",
        "/api/auth/login",
        json!({"email": "other@example.com", "password": "wrong password"}),
    )
    .await;
    let logged = app
        .get("/api/audit?action=user.login_failed", Some(&admin.token))
        .await;
    assert_eq!(
        logged.body["total"], 4,
        "three from the guessing address, one from the other: {}",
        logged.text
    );
    // The repeats are not lost: they are written as one summary when the window ends, or at
    // shutdown at the latest.
    let (stopped, db) = app.stop_keeping_database().await;
    stopped.unwrap();
    let again = TestApp::with(&[("DATABASE_URL", db.url.as_str())]).await;
    let admin = again.login("admin@example.com", PASSWORD).await;
    let logged = again
        .get("/api/audit?action=user.login_failed", Some(&admin.token))
        .await;
    assert_eq!(logged.body["total"], 5, "{}", logged.text);
    let summary = &logged.body["events"][0];
    assert_eq!(summary["metadata"]["repeats"], 6, "{summary}");
    assert_eq!(summary["ip"], "203.0.113.50");
    assert_eq!(summary["userEmail"], "guess8@example.com");
    drop(db);
}
