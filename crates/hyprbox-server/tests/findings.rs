//! `/api/findings`: agents' reports (dedup, reopen, `complete`), the list, the detail with its
//! recommendation, snooze/resolve, the health summary.

mod common;

use common::{Session, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A server with the built-in presets, an ADMIN, and nodes `web-1` (pinned token) and `web-2`,
/// `web-3` (a fleet-wide token), all known through a heartbeat.
async fn setup() -> (TestApp, Session, String, String) {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let (pinned, _) = app.mint_token(&admin, Some("web-1")).await;
    let (fleet, _) = app.mint_token(&admin, None).await;
    for (token, node) in [(&pinned, "web-1"), (&fleet, "web-2"), (&fleet, "web-3")] {
        let beat = app
            .heartbeat(
                Some(token),
                json!({"node_id": node, "cpu_percent": 5, "ram_percent": 5}),
            )
            .await;
        assert_eq!(beat.status, StatusCode::ACCEPTED, "{}", beat.text);
    }
    (app, admin, pinned, fleet)
}

fn finding(kind: &str, key: &str, severity: &str) -> Value {
    json!({"type": kind, "key": key, "severity": severity, "title": format!("{kind} on {key}"),
           "message": "details"})
}

async fn report(app: &TestApp, token: &str, node: &str, findings: Value, complete: Value) -> common::Answer {
    app.post(
        "/api/findings",
        Some(token),
        json!({"nodeId": node, "findings": findings, "complete": complete}),
    )
    .await
}

async fn list(app: &TestApp, user: &Session, query: &str) -> Vec<Value> {
    let answer = app.get(&format!("/api/findings{query}"), Some(&user.token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.body["findings"].as_array().unwrap().clone()
}

fn keys(findings: &[Value]) -> Vec<&str> {
    findings.iter().map(|f| f["key"].as_str().unwrap()).collect()
}

fn id_of<'a>(findings: &'a [Value], key: &str) -> &'a str {
    findings
        .iter()
        .find(|f| f["key"] == key)
        .unwrap_or_else(|| panic!("no finding {key}"))["id"]
        .as_str()
        .unwrap()
}

#[tokio::test]
async fn an_agent_reports_findings_and_users_see_them_by_severity_then_newest() {
    let (app, admin, pinned, _) = setup().await;
    let first = report(
        &app,
        &pinned,
        "web-1",
        json!([finding("disk.full", "/", "WARN")]),
        json!([]),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert_eq!(first.body, json!({"received": true, "upserted": 1}));
    let second = report(
        &app,
        &pinned,
        "web-1",
        json!([
            finding("tls.expiring", "a.pem", "CRITICAL"),
            finding("updates.pending", "apt", "INFO"),
            finding("tls.expiring", "b.pem", "CRITICAL"),
        ]),
        json!([]),
    )
    .await;
    assert_eq!(second.body["upserted"], 3);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    report(
        &app,
        &pinned,
        "web-1",
        json!([finding("disk.full", "/home", "WARN")]),
        json!([]),
    )
    .await;
    let findings = list(&app, &admin, "").await;
    // Within one severity the newer first; the two CRITICAL ones share a batch and a time.
    assert_eq!(&keys(&findings)[2..], ["/home", "/", "apt"]);
    let mut critical = keys(&findings)[..2].to_vec();
    critical.sort_unstable();
    assert_eq!(critical, ["a.pem", "b.pem"]);
    let disk = &findings[3];
    assert_eq!(disk["nodeId"], "web-1");
    assert_eq!(disk["type"], "disk.full");
    assert_eq!(disk["status"], "OPEN");
    assert_eq!(disk["title"], "disk.full on /");
    assert_eq!(disk["relatedEntities"], json!([]));
    assert_eq!(disk["metadata"], json!({}));
    assert!(disk["detectedAt"].as_str().unwrap().ends_with('Z'));
    for field in ["snoozedUntil", "resolvedAt", "resolvedByUserId"] {
        assert!(disk[field].is_null(), "{field}");
    }
    assert_eq!(keys(&list(&app, &admin, "?severity=CRITICAL").await).len(), 2);
    assert_eq!(list(&app, &admin, "?nodeId=web-2").await.len(), 0);
    for bad in ["?severity=HIGH", "?include=everything", "?nodeId=bad%20id"] {
        let answer = app.get(&format!("/api/findings{bad}"), Some(&admin.token)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(answer.error_tag(), "bad_request");
    }
    assert_eq!(
        app.get("/api/findings", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_rescan_updates_the_finding_and_keeps_its_detection_time_and_snooze() {
    let (app, admin, pinned, _) = setup().await;
    report(
        &app,
        &pinned,
        "web-1",
        json!([finding("disk.full", "/", "WARN")]),
        json!([]),
    )
    .await;
    let before = list(&app, &admin, "").await[0].clone();
    let id = before["id"].as_str().unwrap();
    let snoozed = app
        .post(
            &format!("/api/findings/{id}/snooze"),
            Some(&admin.token),
            json!({"hours": 2}),
        )
        .await;
    assert_eq!(snoozed.status, StatusCode::OK, "{}", snoozed.text);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut worse = finding("disk.full", "/", "CRITICAL");
    worse["title"] = json!("Disk / is 97% full");
    worse["metadata"] = json!({"percent": 97});
    let again = report(&app, &pinned, "web-1", json!([worse]), json!([])).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    let all = list(&app, &admin, "?include=all").await;
    assert_eq!(all.len(), 1, "never a second row");
    let after = &all[0];
    assert_eq!(after["id"], before["id"]);
    assert_eq!(after["detectedAt"], before["detectedAt"]);
    assert_ne!(after["lastSeenAt"], before["lastSeenAt"]);
    assert_eq!(after["status"], "SNOOZED");
    assert_eq!(after["snoozedUntil"], snoozed.body["finding"]["snoozedUntil"]);
    assert_eq!(after["severity"], "CRITICAL");
    assert_eq!(after["title"], "Disk / is 97% full");
    assert_eq!(after["metadata"], json!({"percent": 97}));
    // Still snoozed: not in the default list.
    assert!(list(&app, &admin, "").await.is_empty());
}

#[tokio::test]
async fn a_resolved_finding_seen_again_reopens() {
    let (app, admin, pinned, _) = setup().await;
    report(
        &app,
        &pinned,
        "web-1",
        json!([finding("disk.full", "/", "WARN")]),
        json!([]),
    )
    .await;
    let id = list(&app, &admin, "").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let resolved = app
        .post(
            &format!("/api/findings/{id}/resolve"),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.text);
    assert_eq!(resolved.body["finding"]["status"], "RESOLVED");
    assert_eq!(resolved.body["finding"]["resolvedByUserId"], admin.id.as_str());
    assert!(resolved.body["finding"]["resolvedAt"].is_string());
    assert!(list(&app, &admin, "").await.is_empty());
    report(
        &app,
        &pinned,
        "web-1",
        json!([finding("disk.full", "/", "WARN")]),
        json!([]),
    )
    .await;
    let reopened = list(&app, &admin, "").await;
    assert_eq!(reopened.len(), 1);
    assert_eq!(reopened[0]["id"], id.as_str());
    assert_eq!(reopened[0]["status"], "OPEN");
    assert!(reopened[0]["resolvedAt"].is_null());
    assert!(reopened[0]["resolvedByUserId"].is_null());
}

#[tokio::test]
async fn complete_resolves_absent_findings_of_the_listed_types_only_and_shows_in_the_activity() {
    let (app, admin, pinned, fleet) = setup().await;
    report(
        &app,
        &pinned,
        "web-1",
        json!([
            finding("disk.full", "/", "WARN"),
            finding("disk.full", "/var", "WARN"),
            finding("tls.expiring", "a.pem", "WARN"),
        ]),
        json!([]),
    )
    .await;
    report(
        &app,
        &fleet,
        "web-2",
        json!([finding("disk.full", "/var", "WARN")]),
        json!([]),
    )
    .await;
    let answer = report(
        &app,
        &pinned,
        "web-1",
        json!([finding("disk.full", "/", "WARN")]),
        json!(["disk.full"]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    let all = list(&app, &admin, "?include=all&nodeId=web-1").await;
    let status = |key: &str| all.iter().find(|f| f["key"] == key).unwrap()["status"].clone();
    assert_eq!(status("/"), "OPEN");
    assert_eq!(status("/var"), "RESOLVED");
    assert_eq!(status("a.pem"), "OPEN", "tls.expiring was not listed as complete");
    let var = all.iter().find(|f| f["key"] == "/var").unwrap();
    assert!(var["resolvedByUserId"].is_null());
    assert!(var["resolvedAt"].is_string());
    assert_eq!(
        list(&app, &admin, "?nodeId=web-2").await.len(),
        1,
        "other nodes untouched"
    );
    // Everything fixed: an empty batch that covers the type clears the rest.
    let cleared = report(
        &app,
        &pinned,
        "web-1",
        json!([]),
        json!(["disk.full", "tls.expiring"]),
    )
    .await;
    assert_eq!(cleared.body["upserted"], 0);
    assert!(list(&app, &admin, "?nodeId=web-1").await.is_empty());
    app.eventually("finding events in the node's activity", || async {
        let activity = app.get("/api/nodes/web-1/activity", Some(&admin.token)).await;
        let events = activity.body["events"].as_array().cloned().unwrap_or_default();
        let has = |kind: &str, severity: &str| {
            events
                .iter()
                .any(|e| e["type"] == kind && e["severity"] == severity)
        };
        has("finding.opened", "WARN") && has("finding.resolved", "INFO")
    })
    .await;
}

#[tokio::test]
async fn a_snoozed_finding_whose_problem_is_fixed_resolves_itself() {
    let (app, admin, pinned, _) = setup().await;
    report(
        &app,
        &pinned,
        "web-1",
        json!([finding("disk.full", "/", "WARN")]),
        json!([]),
    )
    .await;
    let id = id_of(&list(&app, &admin, "").await, "/").to_string();
    let snoozed = app
        .post(
            &format!("/api/findings/{id}/snooze"),
            Some(&admin.token),
            json!({"hours": 2}),
        )
        .await;
    assert_eq!(snoozed.status, StatusCode::OK, "{}", snoozed.text);
    let fixed = report(&app, &pinned, "web-1", json!([]), json!(["disk.full"])).await;
    assert_eq!(fixed.status, StatusCode::ACCEPTED, "{}", fixed.text);
    let all = list(&app, &admin, "?include=all").await;
    let found = all.iter().find(|f| f["id"] == id.as_str()).unwrap();
    assert_eq!(found["status"], "RESOLVED", "{found}");
    assert!(
        found["snoozedUntil"].is_null() && found["resolvedByUserId"].is_null(),
        "{found}"
    );
}

#[tokio::test]
async fn a_new_finding_is_announced_on_the_fleet_stream() {
    let (app, admin, pinned, _) = setup().await;
    let mut stream = app
        .client
        .get(app.url("/api/stream/nodes"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    report(
        &app,
        &pinned,
        "web-1",
        json!([finding("disk.full", "/", "CRITICAL")]),
        json!([]),
    )
    .await;
    let text = common::read_sse(&mut stream, |t| t.contains("finding.opened")).await;
    assert!(text.contains(r#""severity":"CRITICAL""#), "{text}");
}

#[tokio::test]
async fn every_field_of_a_report_is_validated_with_a_message_naming_it() {
    let (app, _, pinned, _) = setup().await;
    let long = "x".repeat(256);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"nodeId": "bad id", "findings": []}), "nodeId"),
        (json!({"nodeId": "web-1"}), "findings"),
        (
            json!({"nodeId": "web-1", "findings": [], "complete": ["Disk"]}),
            "complete[0]",
        ),
        (
            json!({"nodeId": "web-1", "findings": [finding("Disk.Full", "/", "WARN")]}),
            "findings[0].type",
        ),
        (
            json!({"nodeId": "web-1", "findings": [finding(&"a".repeat(65), "/", "WARN")]}),
            "findings[0].type",
        ),
        (
            json!({"nodeId": "web-1", "findings": [finding("disk.full", "", "WARN")]}),
            "findings[0].key",
        ),
        (
            json!({"nodeId": "web-1", "findings": [finding("disk.full", &long, "WARN")]}),
            "findings[0].key",
        ),
        (
            json!({"nodeId": "web-1", "findings": [finding("disk.full", "/", "warn")]}),
            "findings[0].severity",
        ),
        (
            json!({"nodeId": "web-1", "findings": [finding("a", "1", "INFO"), finding("disk.full", "/", "HIGH")]}),
            "findings[1].severity",
        ),
    ];
    let with = |field: &str, value: Value, named: &'static str| {
        let mut f = finding("disk.full", "/", "WARN");
        f[field] = value;
        (json!({"nodeId": "web-1", "findings": [f]}), named)
    };
    let more = vec![
        with("title", json!(""), "findings[0].title"),
        with("title", json!(long), "findings[0].title"),
        with("message", json!("m".repeat(4001)), "findings[0].message"),
        with("metadata", json!([1]), "findings[0].metadata"),
        with("metadata", json!("text"), "findings[0].metadata"),
        with("relatedEntities", json!(3), "findings[0].relatedEntities"),
        with("severity", json!(2), "findings[0].severity"),
    ];
    for (body, field) in cases.into_iter().chain(more) {
        let answer = app.post("/api/findings", Some(&pinned), body.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}: {}", answer.text);
        assert_eq!(answer.error_tag(), "bad_request");
        let message = answer.body["message"].as_str().unwrap();
        assert!(message.contains(field), "{message:?} should name {field}");
    }
    let many: Vec<Value> = (0..501)
        .map(|i| finding("disk.full", &format!("/m{i}"), "INFO"))
        .collect();
    let answer = report(&app, &pinned, "web-1", json!(many), json!([])).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert!(answer.body["message"].as_str().unwrap().contains("500"));
    let exactly: Vec<Value> = (0..500)
        .map(|i| finding("disk.full", &format!("/m{i}"), "INFO"))
        .collect();
    let answer = report(&app, &pinned, "web-1", json!(exactly), json!([])).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    assert_eq!(answer.body["upserted"], 500);
}

#[tokio::test]
async fn a_fleet_wide_token_has_a_report_budget_per_node_it_speaks_for() {
    let app = TestApp::with(&[("HYPRBOX_RATE_LIMIT", "3")]).await;
    let admin = app.register_admin().await;
    let (fleet, _) = app.mint_token(&admin, None).await;
    let batch = || json!([finding("disk.full", "/", "WARN")]);
    for _ in 0..3 {
        let answer = report(&app, &fleet, "web-2", batch(), json!([])).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
        assert!(answer.headers.contains_key("x-ratelimit-remaining"));
    }
    let over = report(&app, &fleet, "web-2", batch(), json!([])).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS, "{}", over.text);
    assert_eq!(over.error_tag(), "too_many_requests");
    assert!(over.headers.contains_key("retry-after"));
    let other = report(&app, &fleet, "web-3", batch(), json!([])).await;
    assert_eq!(
        other.status,
        StatusCode::ACCEPTED,
        "another node of the same token has its own budget: {}",
        other.text
    );
    // Reading findings is a user's request, charged to the user as before.
    assert_eq!(
        app.get("/api/findings", Some(&admin.token)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn reports_need_a_node_token_that_may_act_for_the_node() {
    let (app, admin, pinned, fleet) = setup().await;
    let body = json!({"nodeId": "web-1", "findings": [finding("disk.full", "/", "WARN")]});
    let none = app.post("/api/findings", None, body.clone()).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.error_tag(), "unauthorized");
    let jwt = app.post("/api/findings", Some(&admin.token), body.clone()).await;
    assert_eq!(jwt.status, StatusCode::UNAUTHORIZED);
    let elsewhere = report(
        &app,
        &pinned,
        "web-2",
        json!([finding("disk.full", "/", "WARN")]),
        json!([]),
    )
    .await;
    assert_eq!(elsewhere.status, StatusCode::FORBIDDEN);
    assert_eq!(elsewhere.error_tag(), "forbidden");
    let fleet_wide = report(
        &app,
        &fleet,
        "web-1",
        json!([finding("disk.full", "/", "WARN")]),
        json!([]),
    )
    .await;
    assert_eq!(fleet_wide.status, StatusCode::ACCEPTED, "{}", fleet_wide.text);
    assert!(list(&app, &admin, "?nodeId=web-2").await.is_empty());
}

#[tokio::test]
async fn the_detail_recommends_the_fixing_preset_with_variables_from_the_metadata() {
    let (app, admin, pinned, _) = setup().await;
    let mut disk = finding("disk.full", "/var", "CRITICAL");
    disk["metadata"] = json!({"mount": "/var", "percent": 97});
    report(
        &app,
        &pinned,
        "web-1",
        json!([disk, finding("custom.thing", "x", "INFO")]),
        json!([]),
    )
    .await;
    let findings = list(&app, &admin, "").await;
    let detail = app
        .get(
            &format!("/api/findings/{}", id_of(&findings, "/var")),
            Some(&admin.token),
        )
        .await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.text);
    assert_eq!(detail.body["finding"]["key"], "/var");
    let recommendation = &detail.body["recommendation"];
    assert_eq!(recommendation["presetName"], "disk-cleanup");
    assert_eq!(recommendation["risk"], "low");
    assert!(
        recommendation["description"]
            .as_str()
            .unwrap()
            .contains("disk space")
    );
    let variables = &recommendation["variables"];
    assert_eq!(variables["mount"], "/var", "pre-filled from the metadata");
    assert_eq!(variables["log_max_age_days"], 14, "the preset's default");
    assert_eq!(variables["dry_run"], false);
    assert!(variables.get("percent").is_none(), "only the preset's variables");
    let other = app
        .get(
            &format!("/api/findings/{}", id_of(&findings, "x")),
            Some(&admin.token),
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
    assert!(other.body["recommendation"].is_null());
    for missing in ["0190c0de-0000-7000-8000-000000000000", "not%20an%20id"] {
        let answer = app
            .get(&format!("/api/findings/{missing}"), Some(&admin.token))
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(answer.error_tag(), "not_found");
    }
}

#[tokio::test]
async fn operators_snooze_and_resolve_findings_and_both_are_audited() {
    let (app, admin, pinned, _) = setup().await;
    let viewer = app.user_with_role(&admin, "viewer@example.com", "VIEWER").await;
    let operator = app.user_with_role(&admin, "op@example.com", "OPERATOR").await;
    report(
        &app,
        &pinned,
        "web-1",
        json!([
            finding("disk.full", "/", "WARN"),
            finding("disk.full", "/var", "WARN")
        ]),
        json!([]),
    )
    .await;
    let findings = list(&app, &viewer, "").await;
    let (a, b) = (id_of(&findings, "/"), id_of(&findings, "/var"));
    for path in [
        format!("/api/findings/{a}/snooze"),
        format!("/api/findings/{a}/resolve"),
    ] {
        let answer = app.post(&path, Some(&viewer.token), json!({})).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(
            app.post(&path, None, json!({})).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    for hours in [json!(0), json!(721), json!(-1), json!("24"), json!(1.5)] {
        let answer = app
            .post(
                &format!("/api/findings/{a}/snooze"),
                Some(&operator.token),
                json!({"hours": hours}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{hours}: {}", answer.text);
        assert!(answer.body["message"].as_str().unwrap().contains("hours"));
    }
    let started = chrono::Utc::now();
    let snoozed = app
        .post(
            &format!("/api/findings/{a}/snooze"),
            Some(&operator.token),
            json!({"hours": 3}),
        )
        .await;
    assert_eq!(snoozed.status, StatusCode::OK, "{}", snoozed.text);
    assert_eq!(snoozed.body["finding"]["status"], "SNOOZED");
    let until =
        chrono::DateTime::parse_from_rfc3339(snoozed.body["finding"]["snoozedUntil"].as_str().unwrap())
            .unwrap();
    let ahead = until.signed_duration_since(started).num_minutes();
    assert!((179..=181).contains(&ahead), "{ahead} minutes");
    // No body at all: 24 hours.
    let default = app
        .call(
            reqwest::Method::POST,
            &format!("/api/findings/{b}/snooze"),
            Some(&operator.token),
            None,
        )
        .await;
    assert_eq!(default.status, StatusCode::OK, "{}", default.text);
    let until =
        chrono::DateTime::parse_from_rfc3339(default.body["finding"]["snoozedUntil"].as_str().unwrap())
            .unwrap();
    assert_eq!(until.signed_duration_since(started).num_hours(), 24);
    assert!(list(&app, &viewer, "").await.is_empty());
    assert_eq!(list(&app, &viewer, "?include=all").await.len(), 2);
    let resolved = app
        .post(
            &format!("/api/findings/{a}/resolve"),
            Some(&operator.token),
            json!({}),
        )
        .await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.text);
    assert_eq!(resolved.body["finding"]["status"], "RESOLVED");
    assert_eq!(resolved.body["finding"]["resolvedByUserId"], operator.id.as_str());
    let again = app
        .post(
            &format!("/api/findings/{a}/snooze"),
            Some(&operator.token),
            json!({}),
        )
        .await;
    assert_eq!(
        again.status,
        StatusCode::CONFLICT,
        "a resolved finding is not snoozed"
    );
    let twice = app
        .post(
            &format!("/api/findings/{a}/resolve"),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(twice.status, StatusCode::OK, "{}", twice.text);
    assert_eq!(
        (
            &twice.body["finding"]["resolvedByUserId"],
            &twice.body["finding"]["resolvedAt"]
        ),
        (
            &resolved.body["finding"]["resolvedByUserId"],
            &resolved.body["finding"]["resolvedAt"]
        ),
        "resolving a resolved finding changes nothing"
    );
    let missing = "0190c0de-0000-7000-8000-000000000000";
    for action in ["snooze", "resolve"] {
        let answer = app
            .post(
                &format!("/api/findings/{missing}/{action}"),
                Some(&operator.token),
                json!({}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{action}");
    }
    for (action, count) in [("finding.snooze", 2), ("finding.resolve", 1)] {
        let audit = app
            .get(&format!("/api/audit?action={action}"), Some(&admin.token))
            .await;
        let events = audit.body["events"].as_array().unwrap();
        assert_eq!(events.len(), count, "{action}: {}", audit.text);
        assert_eq!(events[0]["resourceType"], "finding");
        assert_eq!(events[0]["userId"], operator.id.as_str());
    }
}

#[tokio::test]
async fn the_health_summary_buckets_every_known_node_by_its_worst_active_finding() {
    let (app, admin, pinned, fleet) = setup().await;
    report(
        &app,
        &pinned,
        "web-1",
        json!([
            finding("disk.full", "/", "CRITICAL"),
            finding("a", "1", "WARN"),
            finding("b", "1", "INFO")
        ]),
        json!([]),
    )
    .await;
    report(
        &app,
        &fleet,
        "web-2",
        json!([finding("disk.full", "/", "WARN"), finding("c", "1", "CRITICAL")]),
        json!([]),
    )
    .await;
    report(
        &app,
        &fleet,
        "web-3",
        json!([finding("b", "1", "INFO")]),
        json!([]),
    )
    .await;
    // A node whose scanner reported before its first heartbeat is in the summary too.
    report(
        &app,
        &fleet,
        "web-4",
        json!([finding("x", "1", "WARN")]),
        json!([]),
    )
    .await;
    // web-2's CRITICAL is snoozed: it does not count until the snooze passes.
    let web2 = list(&app, &admin, "?nodeId=web-2").await;
    let snoozed = app
        .post(
            &format!("/api/findings/{}/snooze", id_of(&web2, "1")),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(snoozed.status, StatusCode::OK);
    let answer = app.get("/api/findings/health/summary", Some(&admin.token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        answer.body["summary"],
        json!([
            {"nodeId": "web-1", "bucket": "AT_RISK", "counts": {"critical": 1, "warn": 1, "info": 1}},
            {"nodeId": "web-2", "bucket": "ATTENTION", "counts": {"critical": 0, "warn": 1, "info": 0}},
            {"nodeId": "web-3", "bucket": "HEALTHY", "counts": {"critical": 0, "warn": 0, "info": 1}},
            {"nodeId": "web-4", "bucket": "ATTENTION", "counts": {"critical": 0, "warn": 1, "info": 0}},
        ])
    );
    let anonymous = app.get("/api/findings/health/summary", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn deleting_a_node_forgets_its_findings() {
    let (app, admin, pinned, _) = setup().await;
    let posted = report(
        &app,
        &pinned,
        "web-1",
        json!([finding("disk.full", "/", "CRITICAL")]),
        json!([]),
    )
    .await;
    assert_eq!(posted.status, StatusCode::ACCEPTED, "{}", posted.text);
    assert_eq!(list(&app, &admin, "?include=all").await.len(), 1);
    let deleted = app
        .call(
            reqwest::Method::DELETE,
            "/api/nodes/web-1",
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(list(&app, &admin, "?include=all").await.is_empty());
}

#[tokio::test]
async fn a_nul_character_in_a_findings_title_or_key_is_a_400_on_every_backend() {
    let (app, admin, pinned, _) = setup().await;
    for bad in [finding("disk.full", "/\u{0}", "WARN"), {
        let mut f = finding("disk.full", "/", "WARN");
        f["title"] = json!("full\u{0}");
        f
    }] {
        let answer = report(&app, &pinned, "web-1", json!([bad]), json!([])).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
        assert_eq!(answer.error_tag(), "bad_request");
    }
    assert!(list(&app, &admin, "?include=all").await.is_empty());
}

#[tokio::test]
async fn resolved_findings_past_their_retention_are_pruned_and_open_ones_stay() {
    let (app, admin, pinned, _) = setup().await;
    report(
        &app,
        &pinned,
        "web-1",
        json!([
            finding("disk.full", "/", "WARN"),
            finding("disk.full", "/var", "WARN")
        ]),
        json!([]),
    )
    .await;
    let open = list(&app, &admin, "").await;
    let resolved = app
        .post(
            &format!("/api/findings/{}/resolve", id_of(&open, "/var")),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(resolved.status, StatusCode::OK);
    let day = 86_400_000;
    let now = hyprbox_store::now_ms();
    assert_eq!(
        hyprbox_server::findings::prune_resolved(&app.state, now + day)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        hyprbox_server::findings::prune_resolved(&app.state, now + 91 * day)
            .await
            .unwrap(),
        1
    );
    assert_eq!(keys(&list(&app, &admin, "?include=all").await), ["/"]);
}

#[tokio::test]
async fn a_report_that_would_pass_the_nodes_finding_limit_is_refused_and_stores_nothing() {
    let app = TestApp::with(&[("HYPRBOX_MAX_FINDINGS_PER_NODE", "150")]).await;
    let admin = app.register_admin().await;
    let (token, _) = app.mint_token(&admin, Some("web-1")).await;
    let beat = app
        .heartbeat(Some(&token), json!({"node_id": "web-1", "cpu_percent": 5}))
        .await;
    assert_eq!(beat.status, StatusCode::ACCEPTED);
    let many = |prefix: &str, n: usize| -> Value {
        json!(
            (0..n)
                .map(|i| finding("disk.full", &format!("/{prefix}{i}"), "WARN"))
                .collect::<Vec<_>>()
        )
    };
    // 120 in one report: more than one multi-row statement, all stored.
    let first = report(&app, &token, "web-1", many("a", 120), json!([])).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert_eq!(first.body["upserted"], 120);
    assert_eq!(list(&app, &admin, "?nodeId=web-1").await.len(), 120);
    let past = report(&app, &token, "web-1", many("b", 40), json!([])).await;
    assert_eq!(past.status, StatusCode::BAD_REQUEST, "{}", past.text);
    assert!(
        past.body["message"]
            .as_str()
            .unwrap()
            .contains("HYPRBOX_MAX_FINDINGS_PER_NODE")
    );
    assert_eq!(
        list(&app, &admin, "?nodeId=web-1").await.len(),
        120,
        "nothing of it stored"
    );
    // A complete report that replaces the old ones fits.
    let replaced = report(&app, &token, "web-1", many("b", 140), json!(["disk.full"])).await;
    assert_eq!(replaced.status, StatusCode::ACCEPTED, "{}", replaced.text);
    let open = list(&app, &admin, "?nodeId=web-1").await;
    assert_eq!(open.len(), 140);
    assert!(open.iter().all(|f| f["key"].as_str().unwrap().starts_with("/b")));
}
