//! `/api/backups` (HyprVault): policy CRUD and its validation, owner scoping, trigger, the runs the
//! agents report and the findings they raise, the scheduler driven by an injected clock, and the
//! inventory's `postgres.no-backup` cross-check.

mod common;

use common::{Session, TestApp};
use hyprbox_server::backups::scheduler;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const HOUR: i64 = 3_600_000;

/// A server with an ADMIN, two OPERATORs, a VIEWER, node `db-1` (pinned token) and `web-1`
/// (another pinned token), both known through a heartbeat.
struct Setup {
    app: TestApp,
    admin: Session,
    ops: Session,
    other_ops: Session,
    viewer: Session,
    db_token: String,
    web_token: String,
}

async fn setup() -> Setup {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let ops = app.user_with_role(&admin, "ops@example.com", "OPERATOR").await;
    let other_ops = app.user_with_role(&admin, "other@example.com", "OPERATOR").await;
    let viewer = app.user_with_role(&admin, "viewer@example.com", "VIEWER").await;
    let (db_token, _) = app.mint_token(&admin, Some("db-1")).await;
    let (web_token, _) = app.mint_token(&admin, Some("web-1")).await;
    for (token, node) in [(&db_token, "db-1"), (&web_token, "web-1")] {
        let beat = app
            .heartbeat(Some(token), json!({"node_id": node, "cpu_percent": 5}))
            .await;
        assert_eq!(beat.status, StatusCode::ACCEPTED, "{}", beat.text);
    }
    Setup {
        app,
        admin,
        ops,
        other_ops,
        viewer,
        db_token,
        web_token,
    }
}

fn policy(schedule: Option<&str>) -> Value {
    json!({
        "name": "db files",
        "nodeId": "db-1",
        "paths": ["/var/lib/app", "/etc"],
        "schedule": schedule,
        "repoUrl": "sftp:backup@vault.example:/srv/restic/db-1",
        "passwordRef": "file:/etc/hyprbox/restic.pass",
        "keepDaily": 3,
    })
}

async fn create(app: &TestApp, user: &Session, body: Value) -> Value {
    let answer = app.post("/api/backups", Some(&user.token), body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    answer.body["policy"].clone()
}

fn id(value: &Value) -> String {
    value["id"].as_str().unwrap().to_string()
}

async fn audit_actions(app: &TestApp, admin: &Session, resource: &str) -> Vec<String> {
    let answer = app
        .get(&format!("/api/audit?resourceId={resource}"), Some(&admin.token))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

async fn findings(app: &TestApp, user: &Session, node: &str, kind: &str) -> Vec<Value> {
    let answer = app
        .get(
            &format!("/api/findings?nodeId={node}&include=all"),
            Some(&user.token),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.body["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["type"] == kind)
        .cloned()
        .collect()
}

fn millis(rfc3339: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

#[tokio::test]
async fn an_operator_creates_a_policy_with_defaults_and_its_first_tick() {
    let s = setup().await;
    let body = json!({"name": "db", "nodeId": "db-1", "paths": ["/srv"], "repoUrl": "/mnt/restic",
                      "schedule": "30 3 * * *"});
    let created = create(&s.app, &s.ops, body).await;
    assert_eq!(created["passwordRef"], "file:/etc/hyprbox/restic.pass");
    assert_eq!(
        (
            created["keepDaily"].as_i64(),
            created["keepWeekly"].as_i64(),
            created["keepMonthly"].as_i64()
        ),
        (Some(7), Some(4), Some(6))
    );
    assert_eq!(created["createdBy"], s.ops.id.as_str());
    let next = chrono::DateTime::parse_from_rfc3339(created["nextRunAt"].as_str().unwrap()).unwrap();
    assert_eq!(
        next.format("%H:%M:%S").to_string(),
        "03:30:00",
        "cron is evaluated in UTC"
    );
    assert!(next.timestamp_millis() > hyprbox_store::now_ms());
    let unscheduled = create(&s.app, &s.ops, policy(None)).await;
    assert_eq!(unscheduled["nextRunAt"], Value::Null);
    assert_eq!(
        audit_actions(&s.app, &s.admin, &id(&created)).await,
        ["backup.create"]
    );
}

#[tokio::test]
async fn every_invalid_field_is_refused_with_a_400_naming_it() {
    let s = setup().await;
    let cases = [
        (json!({"paths": []}), "paths"),
        (json!({"paths": ["relative/dir"]}), "paths[0]"),
        (json!({"schedule": "every day"}), "schedule"),
        (json!({"schedule": "0 3 * * * *"}), "schedule"),
        (json!({"schedule": "0 25 * * *"}), "schedule"),
        (json!({"repoUrl": "ftp://host/repo"}), "repoUrl"),
        (json!({"repoUrl": "relative/repo"}), "repoUrl"),
        (json!({"passwordRef": "hunter2"}), "passwordRef"),
        (json!({"passwordRef": "env:1BAD"}), "passwordRef"),
        (json!({"keepDaily": 1001}), "keepDaily"),
        (json!({"keepMonthly": -1}), "keepMonthly"),
        (json!({"name": "  "}), "name"),
        (json!({"nodeId": "bad id!"}), "nodeId"),
    ];
    for (change, field) in cases {
        let mut body = policy(Some("0 3 * * *"));
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let answer = s.app.post("/api/backups", Some(&s.ops.token), body).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{change}: {}",
            answer.text
        );
        assert_eq!(answer.error_tag(), "bad_request");
        assert!(
            answer.body["message"].as_str().unwrap().contains(field),
            "{change}: {}",
            answer.text
        );
    }
    let missing = s
        .app
        .post("/api/backups", Some(&s.ops.token), json!({"name": "x"}))
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{}", missing.text);
    let listed = s.app.get("/api/backups", Some(&s.ops.token)).await;
    assert_eq!(listed.body["policies"], json!([]), "nothing refused was stored");
}

#[tokio::test]
async fn roles_and_ownership_guard_every_policy_route() {
    let s = setup().await;
    let unknown_node = s
        .app
        .post(
            "/api/backups",
            Some(&s.ops.token),
            json!({"name": "x", "nodeId": "nowhere", "paths": ["/"], "repoUrl": "/r"}),
        )
        .await;
    assert_eq!(
        unknown_node.status,
        StatusCode::NOT_FOUND,
        "{}",
        unknown_node.text
    );
    let anonymous = s.app.post("/api/backups", None, policy(None)).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let viewer = s
        .app
        .post("/api/backups", Some(&s.viewer.token), policy(None))
        .await;
    assert_eq!(viewer.status, StatusCode::FORBIDDEN);

    let mine = id(&create(&s.app, &s.ops, policy(None)).await);
    let theirs = id(&create(&s.app, &s.other_ops, policy(None)).await);
    let listed = s.app.get("/api/backups", Some(&s.ops.token)).await;
    let ids: Vec<&str> = listed.body["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine.as_str()], "another operator's policy is not listed");
    let all = s.app.get("/api/backups?nodeId=db-1", Some(&s.admin.token)).await;
    assert_eq!(
        all.body["policies"].as_array().unwrap().len(),
        2,
        "an ADMIN sees every policy"
    );
    let none = s.app.get("/api/backups?nodeId=web-1", Some(&s.admin.token)).await;
    assert_eq!(none.body["policies"], json!([]));
    let bad_filter = s.app.get("/api/backups?nodeId=a%20b", Some(&s.admin.token)).await;
    assert_eq!(bad_filter.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        s.app.get("/api/backups", None).await.status,
        StatusCode::UNAUTHORIZED
    );

    let path = format!("/api/backups/{theirs}");
    for (method, route, body) in [
        (Method::GET, path.clone(), None),
        (Method::PATCH, path.clone(), Some(json!({"name": "mine now"}))),
        (Method::DELETE, path.clone(), None),
        (Method::POST, format!("{path}/trigger"), None),
    ] {
        let answer = s.app.call(method.clone(), &route, Some(&s.ops.token), body).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{method} {route}: {}",
            answer.text
        );
    }
    for (method, route) in [
        (Method::PATCH, format!("/api/backups/{mine}")),
        (Method::DELETE, format!("/api/backups/{mine}")),
        (Method::POST, format!("/api/backups/{mine}/trigger")),
    ] {
        let answer = s
            .app
            .call(method.clone(), &route, Some(&s.viewer.token), Some(json!({})))
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {route}");
        let answer = s.app.call(method.clone(), &route, None, Some(json!({}))).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {route}");
    }
    assert_eq!(
        s.app.get(&format!("/api/backups/{mine}"), None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let admin_reads = s.app.get(&path, Some(&s.admin.token)).await;
    assert_eq!(admin_reads.status, StatusCode::OK);
    assert_eq!(admin_reads.body["runs"], json!([]));
}

#[tokio::test]
async fn a_patch_changes_only_what_it_sends_and_null_clears_the_schedule() {
    let s = setup().await;
    let created = create(&s.app, &s.ops, policy(Some("0 3 * * *"))).await;
    let path = format!("/api/backups/{}", id(&created));
    let renamed = s
        .app
        .call(
            Method::PATCH,
            &path,
            Some(&s.ops.token),
            Some(json!({"name": "renamed", "schedule": "0 4 * * *"})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text);
    let p = &renamed.body["policy"];
    assert_eq!(p["name"], "renamed");
    assert_eq!(p["paths"], created["paths"]);
    assert_eq!(p["keepDaily"], 3);
    assert!(
        p["nextRunAt"].as_str().unwrap().ends_with("T04:00:00.000Z"),
        "{p}"
    );
    let bad = s
        .app
        .call(
            Method::PATCH,
            &path,
            Some(&s.ops.token),
            Some(json!({"paths": ["x"]})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let cleared = s
        .app
        .call(
            Method::PATCH,
            &path,
            Some(&s.ops.token),
            Some(json!({"schedule": null})),
        )
        .await;
    assert_eq!(cleared.status, StatusCode::OK);
    assert_eq!(cleared.body["policy"]["schedule"], Value::Null);
    assert_eq!(cleared.body["policy"]["nextRunAt"], Value::Null);
    assert_eq!(cleared.body["policy"]["name"], "renamed");
    let gone = s.app.call(Method::DELETE, &path, Some(&s.ops.token), None).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    assert_eq!(
        s.app.get(&path, Some(&s.ops.token)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.app
            .call(Method::DELETE, &path, Some(&s.ops.token), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        audit_actions(&s.app, &s.admin, &id(&created)).await,
        ["backup.delete", "backup.update", "backup.update", "backup.create"]
    );
}

#[tokio::test]
async fn a_trigger_queues_one_backup_job_without_any_password_in_it() {
    let s = setup().await;
    let created = create(&s.app, &s.ops, policy(None)).await;
    let policy_id = id(&created);
    let trigger = format!("/api/backups/{policy_id}/trigger");
    let first = s.app.call(Method::POST, &trigger, Some(&s.ops.token), None).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert_eq!(first.body["policyId"], policy_id.as_str());
    let job_id = first.body["jobId"].as_str().unwrap().to_string();
    let job = s
        .app
        .get(&format!("/api/jobs/{job_id}"), Some(&s.ops.token))
        .await;
    assert_eq!(job.status, StatusCode::OK);
    assert_eq!(job.body["job"]["presetName"], "hypervault-restic");
    assert_eq!(job.body["job"]["nodeId"], "db-1");
    assert_eq!(job.body["job"]["variables"]["policy_id"], policy_id.as_str());
    assert_eq!(
        job.body["job"]["variables"]["password_ref"],
        "file:/etc/hyprbox/restic.pass"
    );
    assert!(job.body["job"]["variables"].get("password").is_none());
    let script = job.body["job"]["script"].as_str().unwrap();
    assert!(
        script.contains("RESTIC_PASSWORD"),
        "the script expects the agent's password"
    );
    assert!(
        !script.contains("RESTIC_PASSWORD="),
        "no password is ever assigned in the script"
    );
    // While it is queued, a second trigger answers the same job.
    let again = s.app.call(Method::POST, &trigger, Some(&s.ops.token), None).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["jobId"], job_id.as_str());
    assert_eq!(
        audit_actions(&s.app, &s.admin, &policy_id).await,
        ["backup.trigger", "backup.create"]
    );
}

async fn start_run(s: &Setup, token: &str, policy_id: &str, job_id: Option<&str>) -> common::Answer {
    s.app
        .post(
            &format!("/api/backups/{policy_id}/runs"),
            Some(token),
            json!({"jobId": job_id}),
        )
        .await
}

async fn complete_run(s: &Setup, token: &str, run_id: &str, body: Value) -> common::Answer {
    s.app
        .post(&format!("/api/backups/runs/{run_id}/complete"), Some(token), body)
        .await
}

#[tokio::test]
async fn the_agent_reports_runs_and_a_failure_raises_backup_failed_until_a_success() {
    let s = setup().await;
    let policy_id = id(&create(&s.app, &s.ops, policy(None)).await);
    let job_id = s
        .app
        .call(
            Method::POST,
            &format!("/api/backups/{policy_id}/trigger"),
            Some(&s.ops.token),
            None,
        )
        .await
        .body["jobId"]
        .as_str()
        .unwrap()
        .to_string();

    assert_eq!(
        start_run(&s, &s.web_token, &policy_id, None).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        start_run(&s, &s.db_token, "0000-nope", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.app
            .post(&format!("/api/backups/{policy_id}/runs"), None, json!({}))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let user_token = s
        .app
        .post(
            &format!("/api/backups/{policy_id}/runs"),
            Some(&s.admin.token),
            json!({}),
        )
        .await;
    assert_eq!(
        user_token.status,
        StatusCode::UNAUTHORIZED,
        "a user session is not a node token"
    );
    assert_eq!(
        start_run(&s, &s.db_token, &policy_id, Some("not-a-job"))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    let started = start_run(&s, &s.db_token, &policy_id, Some(&job_id)).await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.text);
    let run = &started.body["run"];
    assert_eq!(
        (run["status"].as_str(), run["jobId"].as_str()),
        (Some("RUNNING"), Some(job_id.as_str()))
    );
    let run_id = id(run);
    let retried = start_run(&s, &s.db_token, &policy_id, Some(&job_id)).await;
    assert_eq!(
        retried.status,
        StatusCode::OK,
        "a retried start answers the same run"
    );
    assert_eq!(retried.body["run"]["id"], run_id.as_str());

    let failed =
        json!({"status": "FAILED", "error": "Fatal: wrong password or no key found", "durationMs": 1200});
    assert_eq!(
        complete_run(&s, &s.web_token, &run_id, failed.clone())
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        complete_run(&s, &s.db_token, "0000-nope", failed.clone())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        complete_run(&s, &s.db_token, &run_id, json!({"status": "DONE"}))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        complete_run(&s, &s.db_token, &run_id, json!({"status": "SUCCEEDED"}))
            .await
            .status,
        StatusCode::BAD_REQUEST,
        "a success names its snapshot"
    );
    assert_eq!(
        complete_run(
            &s,
            &s.db_token,
            &run_id,
            json!({"status": "FAILED", "sizeBytes": -1})
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );
    let done = complete_run(&s, &s.db_token, &run_id, failed.clone()).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    assert_eq!(done.body["run"]["status"], "FAILED");
    let twice = complete_run(&s, &s.db_token, &run_id, failed).await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert_eq!(twice.error_tag(), "conflict");

    let open = findings(&s.app, &s.ops, "db-1", "backup.failed").await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["status"], "OPEN");
    assert_eq!(open[0]["key"], format!("policy:{policy_id}"));
    assert!(open[0]["message"].as_str().unwrap().contains("wrong password"));
    let detail = s
        .app
        .get(
            &format!("/api/findings/{}", open[0]["id"].as_str().unwrap()),
            Some(&s.ops.token),
        )
        .await;
    let recommendation = &detail.body["recommendation"];
    assert_eq!(
        recommendation["presetName"], "hypervault-restic",
        "{}",
        detail.text
    );
    assert_eq!(
        recommendation["variables"]["policy_id"],
        policy_id.as_str(),
        "the fix reruns this policy"
    );
    assert_eq!(
        recommendation["variables"]["repository"],
        "sftp:backup@vault.example:/srv/restic/db-1"
    );
    assert_eq!(
        recommendation["variables"]["paths"],
        json!(["/var/lib/app", "/etc"])
    );

    let second = start_run(&s, &s.db_token, &policy_id, None).await;
    assert_eq!(second.status, StatusCode::CREATED);
    let ok = json!({"status": "SUCCEEDED", "snapshotId": "4f9a1c2b", "sizeBytes": 1048576, "filesCount": 12, "durationMs": 900});
    let succeeded = complete_run(&s, &s.db_token, &id(&second.body["run"]), ok).await;
    assert_eq!(succeeded.status, StatusCode::OK, "{}", succeeded.text);
    assert_eq!(succeeded.body["run"]["snapshotId"], "4f9a1c2b");
    let after = findings(&s.app, &s.ops, "db-1", "backup.failed").await;
    assert_eq!(after[0]["status"], "RESOLVED", "a good run clears backup.failed");

    let detail = s
        .app
        .get(&format!("/api/backups/{policy_id}"), Some(&s.ops.token))
        .await;
    let statuses: Vec<&str> = detail.body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["SUCCEEDED", "FAILED"], "newest first");
    assert!(detail.body["policy"]["lastSuccessAt"].is_string());

    let activity = s.app.get("/api/nodes/db-1/activity", Some(&s.ops.token)).await;
    s.app
        .eventually("the backup runs in the node's activity", || async {
            let answer = s.app.get("/api/nodes/db-1/activity", Some(&s.ops.token)).await;
            let kinds: Vec<String> = answer.body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["type"].as_str().unwrap().to_string())
                .collect();
            kinds.contains(&"backup.succeeded".to_string()) && kinds.contains(&"backup.failed".to_string())
        })
        .await;
    assert_eq!(activity.status, StatusCode::OK);
}

#[tokio::test]
async fn a_policy_shows_at_most_its_twenty_newest_runs() {
    let s = setup().await;
    let policy_id = id(&create(&s.app, &s.ops, policy(None)).await);
    for _ in 0..23 {
        assert_eq!(
            start_run(&s, &s.db_token, &policy_id, None).await.status,
            StatusCode::CREATED
        );
    }
    let detail = s
        .app
        .get(&format!("/api/backups/{policy_id}"), Some(&s.ops.token))
        .await;
    assert_eq!(detail.body["runs"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn the_scheduler_queues_a_job_at_each_tick_and_never_two_at_once() {
    let s = setup().await;
    // Once a year, so the server's own (wall-clock) scheduler never fires it during the test.
    let created = create(&s.app, &s.ops, policy(Some("0 0 1 1 *"))).await;
    let policy_id = id(&created);
    let tick_at = millis(&created["nextRunAt"]);

    let before = scheduler::tick(&s.app.state, tick_at - 1).await.unwrap();
    assert_eq!(before.queued, 0, "not due a millisecond early");
    let at = scheduler::tick(&s.app.state, tick_at).await.unwrap();
    assert_eq!(at.queued, 1);
    let again = scheduler::tick(&s.app.state, tick_at).await.unwrap();
    assert_eq!(again.queued, 0, "a tick is taken once");
    let detail = s
        .app
        .get(&format!("/api/backups/{policy_id}"), Some(&s.ops.token))
        .await;
    let next = millis(&detail.body["policy"]["nextRunAt"]);
    assert!(next > tick_at, "the next tick moved on");

    // A year later the first job is still QUEUED: no second one.
    let busy = scheduler::tick(&s.app.state, next).await.unwrap();
    assert_eq!((busy.queued, busy.already_active), (0, 1));
    let jobs = s.app.get("/api/jobs?nodeId=db-1", Some(&s.ops.token)).await;
    let backups: Vec<&Value> = jobs.body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["presetName"] == "hypervault-restic")
        .collect();
    assert_eq!(backups.len(), 1, "{}", jobs.text);
    assert_eq!(
        backups[0]["createdBy"],
        s.ops.id.as_str(),
        "a scheduled job belongs to the policy's owner"
    );
}

#[tokio::test]
async fn ticks_missed_while_the_server_was_down_run_once_at_start() {
    let s = setup().await;
    let created = create(&s.app, &s.ops, policy(Some("0 0 1 1 *"))).await;
    let tick_at = millis(&created["nextRunAt"]);
    // Five yearly ticks went by while nothing ran.
    let late = tick_at + 5 * 365 * 24 * HOUR;
    let ticked = scheduler::tick(&s.app.state, late).await.unwrap();
    assert_eq!(ticked.queued, 1, "one job for all the missed ticks");
    let detail = s
        .app
        .get(&format!("/api/backups/{}", id(&created)), Some(&s.ops.token))
        .await;
    assert!(millis(&detail.body["policy"]["nextRunAt"]) > late);
    assert_eq!(scheduler::tick(&s.app.state, late).await.unwrap().queued, 0);
}

#[tokio::test]
async fn a_policy_without_a_success_for_48_hours_is_stale_until_a_run_succeeds() {
    let s = setup().await;
    let created = create(&s.app, &s.ops, policy(None)).await;
    let policy_id = id(&created);
    let created_at = millis(&created["createdAt"]);
    let early = scheduler::tick(&s.app.state, created_at + 47 * HOUR)
        .await
        .unwrap();
    assert_eq!(early.stale, 0);
    let late = scheduler::tick(&s.app.state, created_at + 49 * HOUR)
        .await
        .unwrap();
    assert_eq!(late.stale, 1);
    assert_eq!(
        scheduler::tick(&s.app.state, created_at + 50 * HOUR)
            .await
            .unwrap()
            .stale,
        0,
        "raised once"
    );
    let stale = findings(&s.app, &s.ops, "db-1", "backup.stale").await;
    assert_eq!((stale.len(), stale[0]["status"].as_str()), (1, Some("OPEN")));
    assert_eq!(stale[0]["severity"], "WARN");

    let run = start_run(&s, &s.db_token, &policy_id, None).await;
    let ok = json!({"status": "SUCCEEDED", "snapshotId": "abc123"});
    assert_eq!(
        complete_run(&s, &s.db_token, &id(&run.body["run"]), ok)
            .await
            .status,
        StatusCode::OK
    );
    let after = findings(&s.app, &s.ops, "db-1", "backup.stale").await;
    assert_eq!(after[0]["status"], "RESOLVED");
}

#[tokio::test]
async fn the_scheduler_does_not_skip_a_daily_schedule_for_staleness_twice_its_period() {
    let s = setup().await;
    let created = create(&s.app, &s.ops, policy(Some("0 0 1 1 *"))).await;
    let created_at = millis(&created["createdAt"]);
    // A yearly schedule is stale after two years, not 48 hours.
    let ticked = scheduler::tick(&s.app.state, created_at + 49 * HOUR)
        .await
        .unwrap();
    assert_eq!(ticked.stale, 0);
}

async fn inventory(s: &Setup, token: &str, node: &str, containers: Value) -> common::Answer {
    s.app
        .post(
            "/api/nodes/inventory",
            Some(token),
            json!({"nodeId": node, "containers": containers}),
        )
        .await
}

fn container(name: &str, image: &str, state: &str) -> Value {
    json!({"id": format!("{name}-0123456789"), "name": name, "image": image, "state": state,
           "labels": {"com.docker.compose.service": name}})
}

#[tokio::test]
async fn an_uncovered_postgres_container_raises_postgres_no_backup_until_a_policy_covers_it() {
    let s = setup().await;
    let listed = inventory(
        &s,
        &s.db_token,
        "db-1",
        json!([
            container("db", "postgres:16", "running"),
            container("cache", "redis:7", "running"),
            container("old-db", "postgis/postgis:15-3.4", "exited"),
        ]),
    )
    .await;
    assert_eq!(listed.status, StatusCode::ACCEPTED, "{}", listed.text);
    assert_eq!(listed.body, json!({"received": true, "containers": 3}));
    let open = findings(&s.app, &s.ops, "db-1", "postgres.no-backup").await;
    assert_eq!(open.len(), 1, "only the running Postgres container: {open:?}");
    assert_eq!(open[0]["key"], "container:db");
    assert_eq!(open[0]["severity"], "WARN");
    assert_eq!(open[0]["metadata"]["container"], "db");
    let detail = s
        .app
        .get(
            &format!("/api/findings/{}", open[0]["id"].as_str().unwrap()),
            Some(&s.ops.token),
        )
        .await;
    assert_eq!(detail.body["recommendation"]["presetName"], "postgres-backup");
    assert_eq!(
        detail.body["recommendation"]["variables"]["container"], "db",
        "{}",
        detail.text
    );

    // A policy that backs up the dumps covers it.
    let body = json!({"name": "dumps", "nodeId": "db-1", "paths": ["/var/backups/postgres"], "repoUrl": "/mnt/restic"});
    let covering = id(&create(&s.app, &s.ops, body).await);
    assert_eq!(
        findings(&s.app, &s.ops, "db-1", "postgres.no-backup").await[0]["status"],
        "RESOLVED"
    );
    // Without it, the next report raises it again; once the container is gone it resolves.
    assert_eq!(
        s.app
            .call(
                Method::DELETE,
                &format!("/api/backups/{covering}"),
                Some(&s.ops.token),
                None
            )
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        findings(&s.app, &s.ops, "db-1", "postgres.no-backup").await[0]["status"],
        "OPEN"
    );
    // A policy changed to cover it counts as soon as it is saved.
    let other = id(&create(&s.app, &s.ops, policy(None)).await);
    let no_backup =
        || async { findings(&s.app, &s.ops, "db-1", "postgres.no-backup").await[0]["status"].clone() };
    assert_eq!(no_backup().await, "OPEN");
    let path = format!("/api/backups/{other}");
    let patched = s
        .app
        .call(
            Method::PATCH,
            &path,
            Some(&s.ops.token),
            Some(json!({"paths": ["/srv/db/dumps"]})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(no_backup().await, "RESOLVED");
    assert_eq!(
        s.app
            .call(Method::DELETE, &path, Some(&s.ops.token), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(no_backup().await, "OPEN");
    assert_eq!(
        inventory(&s, &s.db_token, "db-1", json!([])).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        findings(&s.app, &s.ops, "db-1", "postgres.no-backup").await[0]["status"],
        "RESOLVED"
    );
}

#[tokio::test]
async fn the_inventory_route_answers_each_status_the_contract_names() {
    let s = setup().await;
    assert_eq!(
        inventory(&s, &s.web_token, "db-1", json!([])).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.app
            .post(
                "/api/nodes/inventory",
                None,
                json!({"nodeId": "db-1", "containers": []})
            )
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let (fleet, _) = s.app.mint_token(&s.admin, None).await;
    assert_eq!(
        inventory(&s, &fleet, "never-seen", json!([])).await.status,
        StatusCode::NOT_FOUND
    );
    let bad = inventory(
        &s,
        &s.db_token,
        "db-1",
        json!([{"id": "x", "name": "", "image": "i", "state": "running"}]),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body["message"]
            .as_str()
            .unwrap()
            .contains("containers[0].name")
    );
    let many: Vec<Value> = (0..1001)
        .map(|i| container(&format!("c{i}"), "nginx", "running"))
        .collect();
    assert_eq!(
        inventory(&s, &s.db_token, "db-1", json!(many)).await.status,
        StatusCode::BAD_REQUEST
    );
    let malformed = s
        .app
        .post(
            "/api/nodes/inventory",
            Some(&s.db_token),
            json!({"nodeId": "db-1"}),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_trigger_whose_policy_no_longer_renders_is_a_400_and_queues_nothing() {
    let s = setup().await;
    let policy_id = id(&create(&s.app, &s.ops, policy(None)).await);
    // The server comes back with a presets directory whose hypervault-restic only takes s3:
    // repositories: the stored policy (sftp:) no longer renders.
    let presets = std::env::temp_dir().join(format!("hyprbox-test-restic-override-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&presets);
    std::fs::create_dir_all(&presets).unwrap();
    let builtin = include_str!("../../hyprbox-presets/presets/hypervault-restic.yaml");
    let stricter = builtin.replacen(
        "  repository:\n    type: string\n    required: true\n",
        "  repository:\n    type: string\n    required: true\n    pattern: \"^s3:\"\n",
        1,
    );
    assert_ne!(stricter, builtin, "the override changes the preset");
    std::fs::write(presets.join("hypervault-restic.yaml"), stricter).unwrap();
    let mut settings = s.app.state.settings.clone();
    settings.presets_dir = Some(presets);
    let (stopped, db) = s.app.stop_keeping_database().await;
    stopped.unwrap();
    let again = hyprbox_server::Application::build(settings).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(again.serve(listener, shutdown.clone()));
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{url}/api/backups/{policy_id}/trigger"))
        .bearer_auth(&s.ops.token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    let body: Value = answer.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("repository"), "{body}");
    let jobs: Value = http
        .get(format!("{url}/api/jobs"))
        .bearer_auth(&s.ops.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jobs["jobs"], json!([]), "nothing was queued");
    shutdown.cancel();
    drop(db);
}

#[tokio::test]
async fn a_finished_run_shows_on_the_fleet_stream() {
    let s = setup().await;
    let policy_id = id(&create(&s.app, &s.ops, policy(None)).await);
    let mut stream = common::get_streaming(&s.app, "/api/stream/nodes", &s.admin.token).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let run = start_run(&s, &s.db_token, &policy_id, None).await;
    let run_id = id(&run.body["run"]);
    let ok = json!({"status": "SUCCEEDED", "snapshotId": "feed01"});
    assert_eq!(
        complete_run(&s, &s.db_token, &run_id, ok).await.status,
        StatusCode::OK
    );
    let text = common::read_sse(&mut stream, |t| t.contains("backup.succeeded")).await;
    let event = format!(
        r#"event: backup{}data: {{"nodeId":"db-1","policyId":"{policy_id}","runId":"{run_id}","status":"SUCCEEDED"}}"#,
        '\n'
    );
    assert!(text.contains(&event), "{text}");
}
