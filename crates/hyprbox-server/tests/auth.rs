//! `/api/auth`: every endpoint and every status code it names.

mod common;

use common::{PASSWORD, TestApp, cookie, reset_token_in, session, smtp_listener};
use hyprbox_server::auth::jwt::Claims;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn the_first_user_becomes_admin_and_later_users_viewers() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let second = app
        .post(
            "/api/auth/register",
            None,
            json!({"email": "Two@Example.com ", "password": PASSWORD}),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(second.body["user"]["role"], "VIEWER");
    assert_eq!(second.body["user"]["email"], "two@example.com");
    assert_eq!(second.body["user"]["language"], "en");
    assert!(second.body["user"]["createdAt"].as_str().unwrap().ends_with('Z'));
    assert!(second.body["user"].get("password_hash").is_none() && !second.text.contains("argon2"));
    let me = app.get("/api/auth/me", Some(&admin.token)).await;
    assert_eq!(me.body["role"], "ADMIN");
}

#[tokio::test]
async fn registration_sets_an_http_only_lax_cookie_that_lives_as_long_as_the_token() {
    let app = TestApp::spawn().await;
    let answer = app
        .post(
            "/api/auth/register",
            None,
            json!({"email": "a@example.com", "password": PASSWORD}),
        )
        .await;
    let cookies = answer.set_cookies();
    let set = cookies
        .iter()
        .find(|c| c.starts_with("hb_token="))
        .expect("hb_token cookie");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"));
    assert!(set.contains("Max-Age=1800"));
    assert!(!set.contains("Secure"), "no Secure flag outside production");
    assert_eq!(cookie(&cookies, "hb_token"), answer.body["token"].as_str());
}

#[tokio::test]
async fn a_duplicate_email_is_a_conflict_whatever_its_case() {
    let app = TestApp::spawn().await;
    app.register_admin().await;
    let dup = app
        .post(
            "/api/auth/register",
            None,
            json!({"email": "ADMIN@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.error_tag(), "conflict");
}

#[tokio::test]
async fn invalid_registrations_are_400s_naming_the_field_and_create_nothing() {
    let app = TestApp::with(&[("HYPRBOX_TRUST_PROXY", "true")]).await;
    let cases = [
        (json!({"email": "not-an-email", "password": PASSWORD}), "email"),
        (json!({"email": "a@example.com", "password": "short"}), "password"),
        (
            json!({"email": "a@example.com", "password": "x".repeat(129)}),
            "password",
        ),
        (json!({"email": "a@example.com"}), "password"),
        (json!({"email": 5, "password": PASSWORD}), "email"),
        (
            json!({"email": "a@example.com", "password": PASSWORD, "name": "x".repeat(201)}),
            "name",
        ),
    ];
    for (i, (body, field)) in cases.into_iter().enumerate() {
        let answer = app
            .post_from(&format!("10.0.1.{i}"), "/api/auth/register", body)
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
        assert_eq!(answer.error_tag(), "bad_request");
        assert!(
            answer.body["message"].as_str().unwrap().contains(field),
            "{}",
            answer.text
        );
    }
    // Nothing was created: the next registration is still the first, hence ADMIN.
    let first = app
        .post_from(
            "10.0.0.9",
            "/api/auth/register",
            json!({"email": "a@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(first.body["user"]["role"], "ADMIN");
}

#[tokio::test]
async fn signup_is_the_hyperion_form_of_register() {
    let app = TestApp::spawn().await;
    let answer = app
        .post(
            "/api/auth/signup",
            None,
            json!({"email": "h@example.com", "password": PASSWORD, "full_name": "Hyperion User"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.body["message"], "User created successfully");
    assert_eq!(answer.body["user"]["full_name"], "Hyperion User");
    assert_eq!(answer.body["user"]["name"], "Hyperion User");
    assert!(answer.body["token"].is_string());
    let bad = app
        .post(
            "/api/auth/signup",
            None,
            json!({"email": "h2@example.com", "password": "short"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_tag(), "bad_request");
    let dup = app
        .post(
            "/api/auth/signup",
            None,
            json!({"email": "h@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn production_never_makes_an_admin_from_a_public_registration_and_stays_closed_after_create_admin() {
    let app = TestApp::with(&[("HYPRBOX_ENV", "production")]).await;
    let first = app
        .post(
            "/api/auth/register",
            None,
            json!({"email": "a@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(first.status, StatusCode::FORBIDDEN, "{}", first.text);
    assert!(first.body["message"].as_str().unwrap().contains("create-admin"));
    let admin = app.register_admin().await;
    let me = app.get("/api/auth/me", Some(&admin.token)).await;
    assert_eq!(me.body["user"]["role"], "ADMIN");
    let login = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "admin@example.com", "password": PASSWORD}),
        )
        .await;
    let set = login.set_cookies().join(";");
    assert!(set.contains("Secure"), "production cookies are Secure: {set}");
    let second = app
        .post(
            "/api/auth/register",
            None,
            json!({"email": "b@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(second.status, StatusCode::FORBIDDEN);
    assert_eq!(second.error_tag(), "forbidden");
    let signup = app
        .post(
            "/api/auth/signup",
            None,
            json!({"email": "c@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(signup.status, StatusCode::FORBIDDEN);

    let reopened = TestApp::with(&[
        ("HYPRBOX_ENV", "production"),
        ("HYPRBOX_ALLOW_PUBLIC_REGISTRATION", "true"),
    ])
    .await;
    let early = reopened
        .post(
            "/api/auth/signup",
            None,
            json!({"email": "b@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        early.status,
        StatusCode::FORBIDDEN,
        "open registration still waits for the first ADMIN"
    );
    reopened.register_admin().await;
    let second = reopened
        .post(
            "/api/auth/register",
            None,
            json!({"email": "b@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(second.body["user"]["role"], "VIEWER");
}

#[tokio::test]
async fn many_concurrent_first_registrations_make_exactly_one_admin() {
    let app = TestApp::with(&[("HYPRBOX_TRUST_PROXY", "true")]).await;
    let mut calls = Vec::new();
    for i in 0..12 {
        let request = app
            .client
            .post(app.url("/api/auth/register"))
            .header("x-forwarded-for", format!("10.0.0.{i}"))
            .json(&json!({"email": format!("u{i}@example.com"), "password": PASSWORD}));
        calls.push(tokio::spawn(async move {
            common::read(request.send().await.unwrap()).await
        }));
    }
    let mut admins = 0;
    for call in calls {
        let answer = call.await.unwrap();
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        if answer.body["user"]["role"] == "ADMIN" {
            admins += 1;
        }
    }
    assert_eq!(admins, 1);
}

#[tokio::test]
async fn registration_is_limited_to_5_a_minute_per_ip() {
    let app = TestApp::spawn().await;
    for i in 0..5 {
        let answer = app
            .post(
                "/api/auth/register",
                None,
                json!({"email": format!("u{i}@example.com"), "password": PASSWORD}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED);
        assert_eq!(answer.headers["x-ratelimit-limit"], "5");
    }
    let limited = app
        .post(
            "/api/auth/signup",
            None,
            json!({"email": "x@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.error_tag(), "too_many_requests");
    assert!(limited.headers.contains_key("retry-after"));
    assert_eq!(limited.headers["x-ratelimit-remaining"], "0");
}

#[tokio::test]
async fn login_answers_the_same_401_for_an_unknown_email_and_a_wrong_password() {
    let app = TestApp::spawn().await;
    app.register_admin().await;
    let ok = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": " Admin@Example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body["message"], "Login successful");
    assert_eq!(ok.body["user"]["email"], "admin@example.com");
    assert!(cookie(&ok.set_cookies(), "hb_token").is_some());

    let wrong = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "admin@example.com", "password": "wrong password"}),
        )
        .await;
    let unknown = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "nobody@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body, unknown.body);
    assert!(wrong.set_cookies().is_empty());
    let bad = app
        .post("/api/auth/login", None, json!({"email": "admin@example.com"}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn login_is_limited_to_10_a_minute_per_ip() {
    let app = TestApp::spawn().await;
    for _ in 0..10 {
        let answer = app
            .post(
                "/api/auth/login",
                None,
                json!({"email": "n@example.com", "password": PASSWORD}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let limited = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "n@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
}

#[tokio::test]
async fn me_answers_with_fields_at_the_top_level_and_under_user() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let me = app.get("/api/auth/me", Some(&admin.token)).await;
    assert_eq!(me.status, StatusCode::OK);
    for field in [
        "id",
        "email",
        "full_name",
        "language",
        "name",
        "role",
        "createdAt",
    ] {
        assert_eq!(me.body[field], me.body["user"][field], "{field}");
        assert!(!me.body[field].is_null(), "{field}");
    }
    assert_eq!(me.body["full_name"], "Admin");
}

#[tokio::test]
async fn me_accepts_the_session_cookie_and_the_hyperion_cookie_name() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    for name in ["hb_token", "access_token"] {
        let answer = app
            .client
            .get(app.url("/api/auth/me"))
            .header("cookie", format!("theme=dark; {name}={}", admin.token))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{name}");
    }
}

#[tokio::test]
async fn the_bearer_header_wins_over_the_cookie() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let answer = app
        .client
        .get(app.url("/api/auth/me"))
        .bearer_auth("not-a-token")
        .header("cookie", format!("hb_token={}", admin.token))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn missing_expired_wrong_signature_wrong_version_revoked_and_node_tokens_get_401() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let now = chrono::Utc::now().timestamp();
    let claims = |iat: i64, exp: i64, tv: i64| Claims {
        sub: admin.id.clone(),
        tv,
        jti: format!("j{iat}{tv}"),
        iat,
        exp,
    };
    let expired = app.state.keys.sign(&claims(now - 4000, now - 100, 0));
    let wrong_version = app.state.keys.sign(&claims(now, now + 600, 7));
    let other_key =
        hyprbox_server::auth::jwt::JwtKeys::new(b"another key", std::time::Duration::from_secs(600));
    let (wrong_signature, _) = other_key.issue(&admin.id, 0);
    let unknown_user = app.state.keys.sign(&Claims {
        sub: "nobody".into(),
        ..claims(now, now + 600, 0)
    });

    let (revoked, _) = app.state.keys.issue(&admin.id, 0);
    let logout = app.post("/api/auth/logout", Some(&revoked), json!({})).await;
    assert_eq!(logout.status, StatusCode::OK);

    let tokens = [
        expired,
        wrong_version,
        wrong_signature,
        unknown_user,
        revoked,
        "hbnt_abcdefgh0123456789abcdefghij0123456789".to_string(),
        "garbage".to_string(),
    ];
    for token in &tokens {
        let answer = app.get("/api/auth/me", Some(token)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{token}");
        assert_eq!(answer.error_tag(), "unauthorized");
    }
    assert_eq!(
        app.get("/api/auth/me", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The admin's own token is untouched by all of the above.
    assert_eq!(
        app.get("/api/auth/me", Some(&admin.token)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn updating_the_profile_keeps_absent_fields_and_refuses_empty_or_invalid_ones() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let put = app
        .call(
            Method::PUT,
            "/api/auth/me",
            Some(&admin.token),
            Some(json!({"full_name": "New Name", "language": "hu"})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert_eq!(put.body["full_name"], "New Name");
    assert_eq!(put.body["user"]["name"], "New Name");
    assert_eq!(put.body["language"], "hu");

    let patch = app
        .call(
            Method::PATCH,
            "/api/auth/me",
            Some(&admin.token),
            Some(json!({"language": "en-US"})),
        )
        .await;
    assert_eq!(patch.status, StatusCode::OK);
    assert_eq!(patch.body["full_name"], "New Name");
    assert_eq!(patch.body["language"], "en-US");

    for body in [
        json!({"full_name": ""}),
        json!({"name": "  "}),
        json!({"language": ""}),
        json!({"language": "this-is-far-too-long-a-tag"}),
        json!({"language": "en_US"}),
        json!({"full_name": 5}),
    ] {
        let answer = app
            .call(
                Method::PUT,
                "/api/auth/me",
                Some(&admin.token),
                Some(body.clone()),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        answer.error_tag();
    }
    let me = app.get("/api/auth/me", Some(&admin.token)).await;
    assert_eq!(
        (me.body["full_name"].as_str(), me.body["language"].as_str()),
        (Some("New Name"), Some("en-US"))
    );
    let anonymous = app
        .call(Method::PUT, "/api/auth/me", None, Some(json!({"language": "en"})))
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_clears_both_cookies_revokes_the_token_and_is_idempotent() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let answer = app.post("/api/auth/logout", Some(&admin.token), json!({})).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["message"], "Logout successful");
    let cookies = answer.set_cookies();
    for name in ["hb_token", "access_token"] {
        let set = cookies
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .expect(name);
        assert!(set.contains("Max-Age=0"), "{set}");
    }
    assert_eq!(
        app.get("/api/auth/me", Some(&admin.token)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = app.post("/api/auth/logout", Some(&admin.token), json!({})).await;
    assert_eq!(again.status, StatusCode::OK);
    let anonymous = app.client.post(app.url("/api/auth/logout")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_revoked_token_stays_revoked_after_a_restart() {
    let db_app = TestApp::spawn().await;
    let admin = db_app.register_admin().await;
    db_app
        .post("/api/auth/logout", Some(&admin.token), json!({}))
        .await;
    // A second server over the same database loads the revoked ids at start.
    let second = hyprbox_server::Application::build(db_app.state.settings.clone())
        .await
        .unwrap();
    assert!(
        second
            .state()
            .sessions
            .is_revoked(&db_app.state.keys.verify(&admin.token).unwrap().jti)
    );
}

#[tokio::test]
async fn changing_the_password_keeps_this_session_and_ends_the_others() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let other = app.login("admin@example.com", PASSWORD).await;
    let answer = app
        .post(
            "/api/auth/change-password",
            Some(&admin.token),
            json!({"currentPassword": PASSWORD, "newPassword": "a brand new password"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["ok"], true);
    let fresh = answer.body["token"].as_str().unwrap();
    assert_eq!(cookie(&answer.set_cookies(), "hb_token"), Some(fresh));
    assert_eq!(app.get("/api/auth/me", Some(fresh)).await.status, StatusCode::OK);
    assert_eq!(
        app.get("/api/auth/me", Some(&admin.token)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/api/auth/me", Some(&other.token)).await.status,
        StatusCode::UNAUTHORIZED
    );
    app.login("admin@example.com", "a brand new password").await;
}

#[tokio::test]
async fn change_password_refuses_a_wrong_current_password_and_reuse() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let wrong = app
        .post(
            "/api/auth/change-password",
            Some(&admin.token),
            json!({"currentPassword": "nope nope", "newPassword": "another password"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let same = app
        .post(
            "/api/auth/change-password",
            Some(&admin.token),
            json!({"currentPassword": PASSWORD, "newPassword": PASSWORD}),
        )
        .await;
    assert_eq!(same.status, StatusCode::BAD_REQUEST);
    let short = app
        .post(
            "/api/auth/change-password",
            Some(&admin.token),
            json!({"currentPassword": PASSWORD, "newPassword": "short"}),
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(short.body["message"].as_str().unwrap().contains("newPassword"));
    let anonymous = app
        .post(
            "/api/auth/change-password",
            None,
            json!({"currentPassword": PASSWORD, "newPassword": "another password"}),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    // Nothing changed: the old password and the old token still work.
    assert_eq!(
        app.get("/api/auth/me", Some(&admin.token)).await.status,
        StatusCode::OK
    );
    app.login("admin@example.com", PASSWORD).await;
}

#[tokio::test]
async fn change_password_is_limited_to_10_a_minute() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    for _ in 0..10 {
        let answer = app
            .post(
                "/api/auth/change-password",
                Some(&admin.token),
                json!({"currentPassword": PASSWORD, "newPassword": "short"}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    }
    let limited = app
        .post(
            "/api/auth/change-password",
            Some(&admin.token),
            json!({"currentPassword": PASSWORD, "newPassword": "short"}),
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_forgotten_password_is_reset_through_the_mailed_link() {
    let (smtp_url, mut inbox) = smtp_listener().await;
    let app = TestApp::with(&[
        ("HYPRBOX_SMTP_URL", &smtp_url),
        ("HYPRBOX_PUBLIC_URL", "https://hyprbox.example.com"),
        ("HYPRBOX_MAIL_FROM", "HyprBox <noreply@example.com>"),
    ])
    .await;
    let admin = app.register_admin().await;
    let answer = app
        .post(
            "/api/auth/forgot-password",
            None,
            json!({"email": "ADMIN@example.com"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, json!({"ok": true}));
    let mail = tokio::time::timeout(std::time::Duration::from_secs(10), inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        common::unwrap_mail(&mail).contains("https://hyprbox.example.com/reset-password#token="),
        "the token travels in the fragment, which no server or proxy log sees: {mail}"
    );
    assert!(mail.contains("admin@example.com"));
    let token = reset_token_in(&mail);
    assert_eq!(token.len(), 64);

    let reset = app
        .post(
            "/api/auth/reset-password",
            None,
            json!({"token": token, "newPassword": "reset password 123"}),
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.text);
    assert_eq!(reset.body, json!({"ok": true}));
    assert_eq!(
        app.get("/api/auth/me", Some(&admin.token)).await.status,
        StatusCode::UNAUTHORIZED
    );
    app.login("admin@example.com", "reset password 123").await;

    let reused = app
        .post(
            "/api/auth/reset-password",
            None,
            json!({"token": token, "newPassword": "yet another one"}),
        )
        .await;
    let invalid = app
        .post(
            "/api/auth/reset-password",
            None,
            json!({"token": "0".repeat(64), "newPassword": "yet another one"}),
        )
        .await;
    assert_eq!(reused.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reused.body, invalid.body,
        "used and invalid tokens get the same answer"
    );
}

#[tokio::test]
async fn changing_the_password_burns_every_outstanding_reset_link() {
    let (smtp_url, mut inbox) = smtp_listener().await;
    let app = TestApp::with(&[("HYPRBOX_SMTP_URL", &smtp_url)]).await;
    let admin = app.register_admin().await;
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let asked = app
            .post(
                "/api/auth/forgot-password",
                None,
                json!({"email": "admin@example.com"}),
            )
            .await;
        assert_eq!(asked.status, StatusCode::OK);
        let mail = tokio::time::timeout(std::time::Duration::from_secs(10), inbox.recv())
            .await
            .unwrap()
            .unwrap();
        tokens.push(reset_token_in(&mail));
    }
    let changed = app
        .post(
            "/api/auth/change-password",
            Some(&admin.token),
            json!({"currentPassword": PASSWORD, "newPassword": "a brand new password"}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    for token in tokens {
        let reset = app
            .post(
                "/api/auth/reset-password",
                None,
                json!({"token": token, "newPassword": "the attacker's choice"}),
            )
            .await;
        assert_eq!(
            reset.status,
            StatusCode::BAD_REQUEST,
            "a link mailed before the change is dead"
        );
    }
    app.login("admin@example.com", "a brand new password").await;
}

#[tokio::test]
async fn forgot_password_answers_200_for_an_unknown_email_and_sends_nothing() {
    let (smtp_url, mut inbox) = smtp_listener().await;
    let app = TestApp::with(&[("HYPRBOX_SMTP_URL", &smtp_url)]).await;
    app.register_admin().await;
    let answer = app
        .post(
            "/api/auth/forgot-password",
            None,
            json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, json!({"ok": true}));
    let bad = app.post("/api/auth/forgot-password", None, json!({})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), inbox.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_new_reset_burns_the_users_other_reset_tokens() {
    let (smtp_url, mut inbox) = smtp_listener().await;
    let app = TestApp::with(&[("HYPRBOX_SMTP_URL", &smtp_url)]).await;
    app.register_admin().await;
    let mut tokens = Vec::new();
    for _ in 0..2 {
        app.post(
            "/api/auth/forgot-password",
            None,
            json!({"email": "admin@example.com"}),
        )
        .await;
        let mail = tokio::time::timeout(std::time::Duration::from_secs(10), inbox.recv())
            .await
            .unwrap()
            .unwrap();
        tokens.push(reset_token_in(&mail));
    }
    let first = app
        .post(
            "/api/auth/reset-password",
            None,
            json!({"token": tokens[0], "newPassword": "first new password"}),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK);
    let sibling = app
        .post(
            "/api/auth/reset-password",
            None,
            json!({"token": tokens[1], "newPassword": "second new password"}),
        )
        .await;
    assert_eq!(sibling.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn concurrent_uses_of_one_reset_token_succeed_exactly_once() {
    let (smtp_url, mut inbox) = smtp_listener().await;
    let app = TestApp::with(&[("HYPRBOX_SMTP_URL", &smtp_url), ("HYPRBOX_TRUST_PROXY", "true")]).await;
    app.register_admin().await;
    app.post(
        "/api/auth/forgot-password",
        None,
        json!({"email": "admin@example.com"}),
    )
    .await;
    let mail = tokio::time::timeout(std::time::Duration::from_secs(10), inbox.recv())
        .await
        .unwrap()
        .unwrap();
    let token = reset_token_in(&mail);
    let mut calls = Vec::new();
    for i in 0..8 {
        let request = app
            .client
            .post(app.url("/api/auth/reset-password"))
            .header("x-forwarded-for", format!("10.1.0.{i}"))
            .json(&json!({"token": token, "newPassword": format!("concurrent password {i}")}));
        calls.push(tokio::spawn(
            async move { request.send().await.unwrap().status() },
        ));
    }
    let mut ok = 0;
    for call in calls {
        match call.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::BAD_REQUEST => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn forgot_and_reset_are_rate_limited() {
    let app = TestApp::spawn().await;
    for _ in 0..5 {
        assert_eq!(
            app.post(
                "/api/auth/forgot-password",
                None,
                json!({"email": "x@example.com"})
            )
            .await
            .status,
            StatusCode::OK
        );
    }
    let limited = app
        .post(
            "/api/auth/forgot-password",
            None,
            json!({"email": "x@example.com"}),
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    for _ in 0..10 {
        let answer = app
            .post(
                "/api/auth/reset-password",
                None,
                json!({"token": "x", "newPassword": "long enough pw"}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    }
    let limited = app
        .post(
            "/api/auth/reset-password",
            None,
            json!({"token": "x", "newPassword": "long enough pw"}),
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_cookie_session_past_half_its_life_gets_a_fresh_cookie() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let now = chrono::Utc::now().timestamp();
    let old = app.state.keys.sign(&Claims {
        sub: admin.id.clone(),
        tv: 0,
        jti: "old-session".into(),
        iat: now - 1000,
        exp: now + 800,
    });
    let renewed = app
        .client
        .get(app.url("/api/auth/me"))
        .header("cookie", format!("hb_token={old}"))
        .send()
        .await
        .unwrap();
    let renewed = common::read(renewed).await;
    assert_eq!(renewed.status, StatusCode::OK);
    let fresh = cookie(&renewed.set_cookies(), "hb_token")
        .expect("a renewed cookie")
        .to_string();
    let claims = app.state.keys.verify(&fresh).unwrap();
    assert!(claims.exp > now + 1700);

    // A young cookie and a Bearer token are left alone.
    let young = app
        .client
        .get(app.url("/api/auth/me"))
        .header("cookie", format!("hb_token={fresh}"))
        .send()
        .await
        .unwrap();
    assert!(young.headers().get("set-cookie").is_none());
    let bearer = app.get("/api/auth/me", Some(&old)).await;
    assert!(bearer.set_cookies().is_empty());
    let _ = session;
}

#[tokio::test]
async fn an_expired_reset_token_gets_the_same_400_as_an_invalid_one() {
    use sha2::Digest;
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let token = "e".repeat(64);
    let hash = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let mut conn = app.state.store.conn().await.unwrap();
    let now = hyprbox_store::now_ms();
    hyprbox_store::resets::insert(&mut conn, &hash, &admin.id, now - 7_200_000, now - 3_600_000)
        .await
        .unwrap();
    drop(conn);
    let expired = app
        .post(
            "/api/auth/reset-password",
            None,
            json!({"token": token, "newPassword": "never applied"}),
        )
        .await;
    let invalid = app
        .post(
            "/api/auth/reset-password",
            None,
            json!({"token": "f".repeat(64), "newPassword": "never applied"}),
        )
        .await;
    assert_eq!(expired.status, StatusCode::BAD_REQUEST);
    assert_eq!(expired.body, invalid.body);
    app.login("admin@example.com", PASSWORD).await;
}
