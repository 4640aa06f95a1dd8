//! The dashboard in a real browser (Debian's headless chromium): signing in, the fleet patched live,
//! a job's output streaming in, snoozing a finding, minting and revoking a token, a viewer's pages,
//! and the XSS probe. Every page visited is checked for CSP violations and stray script.

mod common;

use common::browser::Browser;
use common::{PASSWORD, TestApp, test_presets};
use reqwest::StatusCode;
use serde_json::json;

const PROBE: &str = "<img src=x onerror=alert(1)>";

/// Signs in through the login page as `email`, landing on the fleet.
async fn sign_in(browser: &mut Browser, app: &TestApp, email: &str) {
    browser.goto(&app.url("/login")).await;
    browser.fill("input[name=email]", email).await;
    browser.fill("input[name=password]", PASSWORD).await;
    browser.click("button[type=submit]").await;
    browser
        .wait_for(
            "the fleet after signing in",
            "location.pathname === '/dashboard' && document.documentElement.dataset.js === 'ready'",
        )
        .await;
}

#[tokio::test]
async fn registering_shows_the_fleet_and_a_heartbeat_appears_without_a_reload() {
    let Some(mut browser) = Browser::launch("fleet_live").await else {
        return;
    };
    let app = TestApp::spawn().await;
    app.heartbeat(
        None,
        json!({"node_id": "web-1", "hostname": "web", "cpu_percent": 11.0}),
    )
    .await;
    browser.goto(&app.url("/register")).await;
    browser.fill("input[name=name]", "Ann").await;
    browser.fill("input[name=email]", "ann@example.com").await;
    browser.fill("input[name=password]", PASSWORD).await;
    browser.click("button[type=submit]").await;
    browser
        .wait_for(
            "the fleet page",
            "location.pathname === '/dashboard' && document.documentElement.dataset.js === 'ready'",
        )
        .await;
    let cpu = "document.querySelector('tr[data-node=\"web-1\"] [data-f=cpu]').textContent";
    assert_eq!(browser.eval(cpu).await, json!("11"));
    browser.eval("window.__stayed = true").await;
    // Once the page's stream is open, one heartbeat shows without a reload.
    app.eventually("the page's live stream", || async {
        app.state.hub.has_subscribers()
    })
    .await;
    app.heartbeat(None, json!({"node_id": "web-1", "cpu_percent": 77.0}))
        .await;
    browser
        .wait_for("the heartbeat in the row", &format!("{cpu} === '77'"))
        .await;
    assert_eq!(
        browser.eval("window.__stayed === true").await,
        json!(true),
        "the page reloaded"
    );
    browser.assert_clean().await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_fleet_page_that_is_not_the_last_follows_only_its_own_rows_live() {
    let Some(mut browser) = Browser::launch("fleet_followed").await else {
        return;
    };
    let app = TestApp::spawn().await;
    // 101 nodes: the first page (100 rows, sorted by id) is not the last one.
    for i in 0..101 {
        app.heartbeat(
            None,
            json!({"node_id": format!("node-{i:03}"), "hostname": "h", "cpu_percent": 5.0}),
        )
        .await;
    }
    app.register_admin().await;
    // Notes the address of every stream a page opens.
    let spy = "window.__streams = []; const Source = window.EventSource; \
        window.EventSource = class extends Source { \
          constructor(url, options) { super(url, options); window.__streams.push(String(url)); } };";
    browser
        .call("Page.addScriptToEvaluateOnNewDocument", json!({"source": spy}))
        .await;
    sign_in(&mut browser, &app, "admin@example.com").await;
    let cpu = |id: &str| format!("document.querySelector('tr[data-node=\"{id}\"] [data-f=cpu]').textContent");
    assert_eq!(browser.eval(&cpu("node-000")).await, json!("5"));
    assert_eq!(
        browser
            .eval("document.querySelectorAll('tr[data-node]').length")
            .await,
        json!(100)
    );
    app.eventually("the page's live stream", || async {
        app.state.hub.has_subscribers()
    })
    .await;
    // The page's stream names its rows; a node of the next page is not among them.
    let followed = browser.eval("window.__streams.join(' ')").await;
    let followed = followed.as_str().unwrap();
    assert!(followed.contains("nodes=node-000,node-001"), "{followed}");
    assert!(!followed.contains("node-100"), "{followed}");
    app.heartbeat(None, json!({"node_id": "node-100", "cpu_percent": 66.0}))
        .await;
    // The window shows about twenty rows: node-042's heartbeat waits for its row to scroll into
    // view, while a row on screen is patched at the next rendering.
    app.heartbeat(None, json!({"node_id": "node-042", "cpu_percent": 77.0}))
        .await;
    app.heartbeat(None, json!({"node_id": "node-001", "cpu_percent": 55.0}))
        .await;
    browser
        .wait_for(
            "the heartbeat in its row on screen",
            &format!("{} === '55'", cpu("node-001")),
        )
        .await;
    assert_eq!(browser.eval(&cpu("node-042")).await, json!("5"));
    browser
        .eval("document.querySelector('tr[data-node=\"node-042\"]').scrollIntoView()")
        .await;
    browser
        .wait_for(
            "the row scrolled into view to catch up",
            &format!("{} === '77'", cpu("node-042")),
        )
        .await;
    browser.assert_clean().await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_job_run_from_its_form_streams_its_output_into_the_page() {
    let Some(mut browser) = Browser::launch("job_stream").await else {
        return;
    };
    let presets = test_presets();
    let app = TestApp::with(&[("HYPRBOX_PRESETS_DIR", presets.to_str().unwrap())]).await;
    let admin = app.register_admin().await;
    let (token, _) = app.mint_token(&admin, Some("web-1")).await;
    app.heartbeat(Some(&token), json!({"node_id": "web-1"})).await;
    sign_in(&mut browser, &app, &admin.email).await;
    browser
        .goto(&app.url("/dashboard/jobs/new?nodeId=web-1&preset=hello"))
        .await;
    // A value the preset refuses: the API's message shows next to its field.
    browser.fill("input[name='variables.who']", "World 42").await;
    browser.click("[data-preview]").await;
    browser
        .wait_for(
            "the field's error",
            "!document.querySelector('[data-field=who] .field-error').hidden",
        )
        .await;
    let error = browser
        .eval("document.querySelector('[data-field=who] .field-error').textContent")
        .await;
    assert!(error.as_str().unwrap().starts_with("who "), "{error}");
    browser.fill("input[name='variables.who']", "world").await;
    browser.click("[data-preview]").await;
    browser
        .wait_for(
            "the rendered script",
            "document.querySelector('#preview').textContent.includes('hello')",
        )
        .await;
    browser.click("#run-form button[type=submit]").await;
    browser
        .wait_for(
            "the job page",
            "document.querySelector('[data-live=job]') && document.documentElement.dataset.js === 'ready'",
        )
        .await;
    // The test plays the agent: claim, stream two pieces, complete.
    let claimed = app.get("/api/jobs/pending?nodeId=web-1", Some(&token)).await;
    let id = claimed.body["job"]["id"]
        .as_str()
        .expect("a job to claim")
        .to_string();
    let output = app
        .post(
            &format!("/api/jobs/{id}/output"),
            Some(&token),
            json!({"stdout": "hello world\n"}),
        )
        .await;
    assert_eq!(output.status, StatusCode::NO_CONTENT);
    browser
        .wait_for(
            "the first output",
            "document.querySelector('#output').textContent.includes('hello world')",
        )
        .await;
    app.post(
        &format!("/api/jobs/{id}/output"),
        Some(&token),
        json!({"stderr": "a warning\n"}),
    )
    .await;
    browser
        .wait_for("stderr", "document.querySelector('#output .err') && document.querySelector('#output .err').textContent.includes('a warning')")
        .await;
    let done = app
        .post(
            &format!("/api/jobs/{id}/complete"),
            Some(&token),
            json!({"exitCode": 0}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK);
    browser
        .wait_for(
            "the final status",
            "document.querySelector('#job-status').textContent === 'SUCCEEDED'",
        )
        .await;
    browser.assert_clean().await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn snoozing_a_finding_from_the_findings_page() {
    let Some(mut browser) = Browser::launch("snooze").await else {
        return;
    };
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let (token, _) = app.mint_token(&admin, Some("web-1")).await;
    let report = app
        .post(
            "/api/findings",
            Some(&token),
            json!({"nodeId": "web-1", "findings": [{"type": "disk.full", "key": "/", "severity": "CRITICAL", "title": "Disk almost full", "message": "97 %"}]}),
        )
        .await;
    assert_eq!(report.status, StatusCode::ACCEPTED);
    sign_in(&mut browser, &app, &admin.email).await;
    browser.goto(&app.url("/dashboard/findings")).await;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('tr[data-finding]').length")
            .await,
        json!(1)
    );
    browser
        .click("tr[data-finding] button[data-api$='/snooze']")
        .await;
    browser
        .wait_for("the snoozed finding to leave the list", "document.documentElement.dataset.js === 'ready' && document.querySelectorAll('tr[data-finding]').length === 0")
        .await;
    let all = app.get("/api/findings?include=all", Some(&admin.token)).await;
    assert_eq!(all.body["findings"][0]["status"], "SNOOZED");
    browser.assert_clean().await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn minting_shows_the_token_once_and_revoking_marks_it() {
    let Some(mut browser) = Browser::launch("tokens").await else {
        return;
    };
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    sign_in(&mut browser, &app, &admin.email).await;
    browser.goto(&app.url("/dashboard/tokens")).await;
    browser
        .fill("form[data-api='/api/tokens'] input[name=name]", "web-1 agent")
        .await;
    browser
        .fill("form[data-api='/api/tokens'] input[name=nodeId]", "web-1")
        .await;
    browser
        .click("form[data-api='/api/tokens'] button[type=submit]")
        .await;
    browser
        .wait_for("the plaintext token", "!document.querySelector('#minted').hidden")
        .await;
    let plaintext = browser
        .eval("document.querySelector('#minted [data-f=token]').textContent")
        .await;
    let plaintext = plaintext.as_str().unwrap().to_string();
    assert!(plaintext.starts_with("hbnt_"), "{plaintext}");
    // The token works for its node.
    let hb = app.heartbeat(Some(&plaintext), json!({"node_id": "web-1"})).await;
    assert_eq!(hb.status, StatusCode::ACCEPTED);
    // Shown once: the list never holds it again.
    browser.goto(&app.url("/dashboard/tokens")).await;
    let html = browser.eval("document.body.innerHTML").await;
    assert!(!html.as_str().unwrap().contains(&plaintext));
    browser.eval("window.confirm = () => true").await;
    browser.click("tr[data-token] button.danger").await;
    browser
        .wait_for("the revoked badge", "document.documentElement.dataset.js === 'ready' && document.querySelector('tr[data-token]').textContent.includes('revoked')")
        .await;
    let refused = app.heartbeat(Some(&plaintext), json!({"node_id": "web-1"})).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    browser.assert_clean().await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_viewer_is_offered_no_change_in_the_browser() {
    let Some(mut browser) = Browser::launch("viewer").await else {
        return;
    };
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    app.user_with_role(&admin, "viewer@example.com", "VIEWER").await;
    app.heartbeat(None, json!({"node_id": "web-1", "cpu_percent": 3.0}))
        .await;
    sign_in(&mut browser, &app, "viewer@example.com").await;
    for path in [
        "/dashboard",
        "/dashboard/nodes/web-1",
        "/dashboard/jobs",
        "/dashboard/findings",
        "/dashboard/backups",
        "/dashboard/hyperion",
    ] {
        browser.goto(&app.url(path)).await;
        let controls = browser
            .eval("[...document.querySelectorAll('[data-api]')].map(e => e.dataset.api).filter(a => a !== '/api/auth/logout')")
            .await;
        assert_eq!(controls, json!([]), "{path}");
        assert_eq!(browser.eval("document.querySelectorAll('a[href^=\"/dashboard/jobs/new\"], a[href=\"/dashboard/tokens\"]').length").await, json!(0), "{path}");
        browser.assert_clean().await;
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_hostname_holding_markup_stays_text_in_the_browser() {
    let Some(mut browser) = Browser::launch("xss").await else {
        return;
    };
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    app.heartbeat(
        None,
        json!({"node_id": "web-1", "hostname": PROBE, "cpu_percent": 3.0}),
    )
    .await;
    sign_in(&mut browser, &app, &admin.email).await;
    for path in ["/dashboard", "/dashboard/nodes/web-1", "/dashboard/logs"] {
        browser.goto(&app.url(path)).await;
        assert_eq!(
            browser.eval("document.querySelectorAll('main img').length").await,
            json!(0),
            "{path}"
        );
        if path != "/dashboard/logs" {
            assert_eq!(
                browser
                    .eval(&format!("document.body.textContent.includes({})", json!(PROBE)))
                    .await,
                json!(true),
                "{path}"
            );
        }
        browser.assert_clean().await;
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_node_that_goes_quiet_turns_offline_on_the_open_page() {
    let Some(mut browser) = Browser::launch("offline").await else {
        return;
    };
    let app = TestApp::with(&[("HYPRBOX_NODE_OFFLINE_AFTER", "2s")]).await;
    let admin = app.register_admin().await;
    app.heartbeat(None, json!({"node_id": "web-1", "cpu_percent": 3.0}))
        .await;
    sign_in(&mut browser, &app, &admin.email).await;
    let status = "document.querySelector('tr[data-node=\"web-1\"] [data-f=status]').textContent";
    assert_eq!(browser.eval(status).await, json!("ONLINE"));
    browser
        .wait_for(
            "the silent node to turn OFFLINE",
            &format!("{status} === 'OFFLINE'"),
        )
        .await;
    // Its next heartbeat brings it back.
    app.heartbeat(None, json!({"node_id": "web-1", "cpu_percent": 4.0}))
        .await;
    browser
        .wait_for("the node back ONLINE", &format!("{status} === 'ONLINE'"))
        .await;
    browser.assert_clean().await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_mailed_reset_link_carries_its_token_in_the_fragment_and_the_page_uses_it() {
    let Some(mut browser) = Browser::launch("reset_fragment").await else {
        return;
    };
    let (smtp_url, mut inbox) = common::smtp_listener().await;
    let app = TestApp::with(&[("HYPRBOX_SMTP_URL", &smtp_url)]).await;
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
    assert!(
        common::unwrap_mail(&mail).contains("/reset-password#token="),
        "{mail}"
    );
    let token = common::reset_token_in(&mail);
    assert_eq!(token.len(), 64);

    browser
        .goto(&app.url(&format!("/reset-password#token={token}")))
        .await;
    browser
        .wait_for(
            "the page's script",
            "document.documentElement.dataset.js === 'ready'",
        )
        .await;
    assert_eq!(
        browser.eval("location.hash").await,
        json!(""),
        "the token leaves the address bar once it is in the form"
    );
    browser
        .fill("input[name=newPassword]", "a fragment-borne password")
        .await;
    browser.click("button[type=submit]").await;
    browser
        .wait_for("the sign-in page", "location.pathname === '/login'")
        .await;
    app.login("admin@example.com", "a fragment-borne password").await;
    browser.assert_clean().await;
    app.stop().await.unwrap();
}
