//! The dashboard's pages over HTTP: sign-in redirects, the content security policy, escaping,
//! role-aware controls, the cross-site refusal for cookie sessions, compression and the fleet's
//! server-side paging.

mod common;

use common::{PASSWORD, Session, TestApp};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, COOKIE, LOCATION};
use serde_json::json;

const PROBE: &str = "<img src=x onerror=alert(1)>";

/// A page as a browser with the session cookie gets it: (status, headers, body).
async fn page(
    app: &TestApp,
    session: Option<&Session>,
    path: &str,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = app.client.get(app.url(path)).header(ACCEPT, "text/html");
    if let Some(session) = session {
        request = request.header(COOKIE, format!("hb_token={}", session.token));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

const PAGES: [&str; 13] = [
    "/dashboard",
    "/dashboard/nodes/web-1",
    "/dashboard/account",
    "/dashboard/jobs",
    "/dashboard/jobs/new?nodeId=web-1&preset=server-light",
    "/dashboard/findings",
    "/dashboard/backups",
    "/dashboard/backups/new",
    "/dashboard/tokens",
    "/dashboard/users",
    "/dashboard/audit",
    "/dashboard/logs",
    "/dashboard/hyperion",
];

#[tokio::test]
async fn a_browser_at_the_root_is_sent_to_the_dashboard_while_api_clients_keep_the_json() {
    let app = TestApp::spawn().await;
    let (status, headers, _) = page(&app, None, "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[LOCATION], "/dashboard");
    let api = app.get("/", None).await;
    assert_eq!(api.status, StatusCode::OK);
    assert_eq!(api.body["message"], "HyprBox API is running");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_page_without_a_session_sends_the_browser_to_sign_in_and_back_afterwards() {
    let app = TestApp::spawn().await;
    let (status, headers, _) = page(&app, None, "/dashboard/jobs?status=FAILED").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers[LOCATION],
        "/login?next=%2Fdashboard%2Fjobs%3Fstatus%3DFAILED"
    );
    let (status, _, body) = page(&app, None, "/login?next=%2Fdashboard%2Fjobs").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"data-then="go:/dashboard/jobs""#), "{body}");
    // Another site is never a place to return to, however the path is dressed up (a browser drops
    // the tab of `/\t/evil.example`), and the sign-in answer's token is never spliced into it.
    for evil in [
        "https%3A%2F%2Fevil.example",
        "%2F%09%2Fevil.example",
        "%2F%7Btoken%7D",
    ] {
        let (_, _, body) = page(&app, None, &format!("/login?next={evil}")).await;
        assert!(body.contains(r#"data-then="go:/dashboard""#), "{evil}");
    }
    let admin = app.register_admin().await;
    let (status, headers, _) = page(&app, Some(&admin), "/login?next=%2F%09%2Fevil.example").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[LOCATION], "/dashboard");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn every_page_carries_a_strict_content_security_policy_and_refuses_framing() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    app.heartbeat(None, json!({"node_id": "web-1", "cpu_percent": 5.0}))
        .await;
    let public = ["/login", "/forgot-password", "/reset-password?token=t"];
    for path in PAGES.iter().chain(public.iter()) {
        let session = (!public.contains(path)).then_some(&admin);
        let (status, headers, body) = page(&app, session, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{path}: {csp}"
        );
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        // Nothing on the page would need 'unsafe-inline'.
        for inline in ["<script>", " style=\"", " onclick=", " onload=", "javascript:"] {
            assert!(!body.contains(inline), "{path} holds {inline}");
        }
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_hostname_holding_markup_shows_as_text_on_every_page() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let hb = app
        .heartbeat(
            None,
            json!({"node_id": "web-1", "hostname": PROBE, "region": PROBE, "cpu_percent": 1.0}),
        )
        .await;
    assert_eq!(hb.status, StatusCode::ACCEPTED);
    let (token, _) = app.mint_token(&admin, Some("web-1")).await;
    let report = app
        .post(
            "/api/findings",
            Some(&token),
            json!({"nodeId": "web-1", "findings": [{"type": "disk.full", "key": PROBE, "severity": "WARN", "title": PROBE, "message": PROBE}]}),
        )
        .await;
    assert_eq!(report.status, StatusCode::ACCEPTED, "{}", report.text);
    for path in [
        "/dashboard",
        "/dashboard/nodes/web-1",
        "/dashboard/findings",
        "/dashboard?q=%3Cimg",
    ] {
        let (status, _, body) = page(&app, Some(&admin), path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!body.contains(PROBE), "{path} let the markup through");
        assert!(
            body.contains("&#60;img src=x onerror=alert(1)&#62;"),
            "{path} lost the text"
        );
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_viewer_sees_no_control_that_would_fail() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let viewer = app.user_with_role(&admin, "viewer@example.com", "VIEWER").await;
    app.heartbeat(None, json!({"node_id": "web-1", "cpu_percent": 5.0}))
        .await;
    let (token, _) = app.mint_token(&admin, Some("web-1")).await;
    app.post(
        "/api/findings",
        Some(&token),
        json!({"nodeId": "web-1", "findings": [{"type": "disk.full", "key": "/", "severity": "WARN", "title": "Disk", "message": "full"}]}),
    )
    .await;
    for path in [
        "/dashboard",
        "/dashboard/nodes/web-1",
        "/dashboard/jobs",
        "/dashboard/findings",
        "/dashboard/backups",
        "/dashboard/hyperion",
    ] {
        let (status, _, body) = page(&app, Some(&viewer), path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let controls: Vec<&str> = body
            .match_indices("data-api=\"")
            .map(|(i, _)| &body[i..i + 40])
            .collect();
        assert!(
            controls
                .iter()
                .all(|c| c.starts_with("data-api=\"/api/auth/logout")),
            "{path} offers a viewer {controls:?}"
        );
        assert!(
            !body.contains("/dashboard/jobs/new"),
            "{path} offers a viewer to run a preset"
        );
    }
    // The same pages offer them to an admin.
    let (_, _, body) = page(&app, Some(&admin), "/dashboard/findings").await;
    assert!(body.contains("/snooze") && body.contains("/resolve"));
    // Operator pages answer a viewer 403, admin pages too, as the API would.
    for path in [
        "/dashboard/tokens",
        "/dashboard/jobs/new",
        "/dashboard/backups/new",
        "/dashboard/users",
        "/dashboard/audit",
    ] {
        let (status, headers, _) = page(&app, Some(&viewer), path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert!(headers.contains_key(CONTENT_SECURITY_POLICY));
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn another_users_job_is_a_not_found_page() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let operator = app.user_with_role(&admin, "op@example.com", "OPERATOR").await;
    let other = app.user_with_role(&admin, "op2@example.com", "OPERATOR").await;
    app.heartbeat(None, json!({"node_id": "web-1"})).await;
    let job = app
        .post(
            "/api/jobs",
            Some(&operator.token),
            json!({"nodeId": "web-1", "presetName": "server-light", "variables": {}}),
        )
        .await;
    assert_eq!(job.status, StatusCode::CREATED, "{}", job.text);
    let path = format!("/dashboard/jobs/{}", job.body["job"]["id"].as_str().unwrap());
    let (status, _, body) = page(&app, Some(&operator), &path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("data-live=\"job\""));
    let (status, headers, _) = page(&app, Some(&other), &path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_run_form_has_one_field_per_preset_variable_filled_with_its_default() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let preset = app.get("/api/presets/server-light", Some(&admin.token)).await;
    let variables = preset.body["preset"]["variables"].as_array().unwrap().clone();
    assert!(!variables.is_empty());
    let (status, _, body) = page(
        &app,
        Some(&admin),
        "/dashboard/jobs/new?nodeId=web-1&preset=server-light",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for variable in &variables {
        let name = variable["name"].as_str().unwrap();
        assert!(
            body.contains(&format!("name=\"variables.{name}\"")),
            "no field for {name}"
        );
    }
    assert!(body.contains("data-preview=\"/api/presets/server-light/render\""));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_reset_page_carries_the_token_of_the_emailed_link() {
    let app = TestApp::spawn().await;
    let (status, _, body) = page(&app, None, "/reset-password?token=abc%22def").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"name="token" value="abc&#34;def""#), "{body}");
    assert!(body.contains(r#"data-api="/api/auth/reset-password""#));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_cron_preview_lists_the_next_runs_or_says_what_is_wrong() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let ok = app
        .get("/dashboard/cron?expr=15+2+*+*+*", Some(&admin.token))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let runs = ok.body["nextRuns"].as_array().unwrap();
    assert_eq!(runs.len(), 5);
    assert!(runs.iter().all(|r| r.as_str().unwrap().contains("T02:15:00")));
    let bad = app.get("/dashboard/cron?expr=nope", Some(&admin.token)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_tag(), "bad_request");
    assert_eq!(
        app.get("/dashboard/cron?expr=nope", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await.unwrap();
}

/// Mints a token with the session cookie and the given browser headers.
async fn mint_with_cookie(app: &TestApp, session: &Session, headers: &[(&str, &str)]) -> StatusCode {
    let mut request = app
        .client
        .post(app.url("/api/tokens"))
        .header(COOKIE, format!("hb_token={}", session.token))
        .json(&json!({"name": "x"}));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn a_cookie_session_request_sent_from_another_site_is_refused() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let own = format!("http://{}", app.addr);
    // From another site: refused, whether the browser names the origin or only the fetch site.
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
    ] {
        assert_eq!(
            mint_with_cookie(&app, &admin, &headers).await,
            StatusCode::FORBIDDEN,
            "{headers:?}"
        );
    }
    // From this server's own pages, from the configured front end, or from a client that is not a
    // browser (no Origin, no Sec-Fetch-Site): accepted.
    for headers in [
        vec![("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
        vec![
            ("origin", "http://localhost:5173"),
            ("sec-fetch-site", "same-site"),
        ],
        vec![("sec-fetch-site", "same-origin")],
        vec![],
    ] {
        assert_eq!(
            mint_with_cookie(&app, &admin, &headers).await,
            StatusCode::CREATED,
            "{headers:?}"
        );
    }
    // A body-less unsafe request is covered too.
    let tokens = app.get("/api/tokens", Some(&admin.token)).await;
    let id = tokens.body["tokens"][0]["id"].as_str().unwrap().to_string();
    let revoke = app
        .client
        .delete(app.url(&format!("/api/tokens/{id}")))
        .header(COOKIE, format!("hb_token={}", admin.token))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = revoke.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    // A token in Authorization cannot be sent by another site: left alone.
    let bearer = app
        .client
        .post(app.url("/api/tokens"))
        .bearer_auth(&admin.token)
        .header("origin", "https://evil.example")
        .json(&json!({"name": "y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::CREATED);
    // Reading is not refused (the browser keeps the answer from the other site anyway).
    let read = app
        .client
        .get(app.url("/api/tokens"))
        .header(COOKIE, format!("hb_token={}", admin.token))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn json_and_html_answers_are_compressed_as_the_client_accepts() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    for i in 0..50 {
        app.heartbeat(
            None,
            json!({"node_id": format!("node-{i:03}"), "hostname": "host", "cpu_percent": 10.0}),
        )
        .await;
    }
    for (accept, expected) in [("gzip", "gzip"), ("br", "br"), ("br, gzip", "br")] {
        for path in ["/api/nodes", "/dashboard"] {
            let response = app
                .client
                .get(app.url(path))
                .header(COOKIE, format!("hb_token={}", admin.token))
                .header(ACCEPT_ENCODING, accept)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(
                response.headers()[CONTENT_ENCODING],
                expected,
                "{path} with {accept}"
            );
        }
    }
    let plain = app.get("/api/nodes", Some(&admin.token)).await;
    assert!(!plain.headers.contains_key(CONTENT_ENCODING));
    assert_eq!(plain.body["nodes"].as_array().unwrap().len(), 50);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_node_list_pages_filters_and_sorts_on_the_server() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    for i in 0..5 {
        let region = if i % 2 == 0 { "eu" } else { "us" };
        app.heartbeat(
            None,
            json!({"node_id": format!("n{i}"), "cpu_percent": f64::from(i) * 10.0, "region": region}),
        )
        .await;
    }
    let first = app.get("/api/nodes?sort=-cpu&limit=2", Some(&admin.token)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.body["total"], 5);
    let ids = |a: &common::Answer| -> Vec<String> {
        a.body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["nodeId"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&first), ["n4", "n3"]);
    let cursor = first.body["nextCursor"].as_str().unwrap();
    let second = app
        .get(
            &format!("/api/nodes?sort=-cpu&limit=2&cursor={cursor}"),
            Some(&admin.token),
        )
        .await;
    assert_eq!(ids(&second), ["n2", "n1"]);
    let last = app
        .get("/api/nodes?sort=-cpu&limit=2&cursor=4", Some(&admin.token))
        .await;
    assert_eq!(ids(&last), ["n0"]);
    assert!(last.body.get("nextCursor").is_none());
    let eu = app.get("/api/nodes?region=EU&q=n", Some(&admin.token)).await;
    assert_eq!(ids(&eu), ["n0", "n2", "n4"]);
    assert_eq!(eu.body["total"], 3);
    for bad in ["sort=cpux", "limit=0", "limit=5000", "status=UP", "cursor=x"] {
        let answer = app.get(&format!("/api/nodes?{bad}"), Some(&admin.token)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(answer.error_tag(), "bad_request");
    }
    // The fleet page shows the same page of the same order.
    let (_, _, body) = page(&app, Some(&admin), "/dashboard?sort=-cpu&limit=2").await;
    let n4 = body.find("data-node=\"n4\"").unwrap();
    let n3 = body.find("data-node=\"n3\"").unwrap();
    assert!(n4 < n3 && !body.contains("data-node=\"n2\""));
    assert!(body.contains("cursor=2"), "a link to the next page");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_sign_in_pages_post_to_the_auth_api() {
    let app = TestApp::spawn().await;
    for (path, api) in [
        ("/login", "/api/auth/login"),
        ("/register", "/api/auth/register"),
        ("/forgot-password", "/api/auth/forgot-password"),
    ] {
        let (status, _, body) = page(&app, None, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(body.contains(&format!("data-api=\"{api}\"")), "{path}");
    }
    let admin = app.register_admin().await;
    let (_, _, body) = page(&app, Some(&admin), "/dashboard/account").await;
    assert!(
        body.contains("data-api=\"/api/auth/me\"") && body.contains("data-api=\"/api/auth/change-password\"")
    );
    let _ = PASSWORD;
    app.stop().await.unwrap();
}
