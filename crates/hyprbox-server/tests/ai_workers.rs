//! `/api/dashboard/ai-workers`: the fleet view, dispatch, the recent tasks, the workers processing
//! the durable queue, and the queue surviving a restart.

mod common;

use common::{Session, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FLEET: &str = "/api/dashboard/ai-workers";
const DISPATCH: &str = "/api/dashboard/ai-workers/dispatch";
const TASKS: &str = "/api/dashboard/ai-workers/tasks";

async fn dispatch(app: &TestApp, user: &Session, action: &str) -> Value {
    let answer = app
        .post(DISPATCH, Some(&user.token), json!({ "action": action }))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.body
}

async fn task(app: &TestApp, user: &Session, id: &str) -> Value {
    let answer = app.get(&format!("{TASKS}?limit=100"), Some(&user.token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn task_is_done(app: &TestApp, user: &Session, id: &str) -> bool {
    task(app, user, id).await["status"] == "DONE"
}

#[tokio::test]
async fn the_fleet_lists_every_configured_worker_in_order_with_snake_case_fields() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let names = [
        "Helios", "Eos", "Aethon", "Crius", "Iapetus", "Perses", "Phlegon", "Phoebe", "Theia", "Cronus",
    ];
    // The loops check in as soon as they start.
    app.eventually("all ten workers to check in", || async {
        app.get(FLEET, Some(&admin.token)).await.body["total_active_fleet"] == 10
    })
    .await;
    let answer = app.get(FLEET, Some(&admin.token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let body = answer.body.as_object().unwrap();
    let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "cluster_status",
            "last_updated",
            "nodes",
            "queue_depth",
            "total_active_fleet"
        ]
    );
    assert_eq!(body["cluster_status"], "Optimal");
    assert_eq!(body["queue_depth"], 0);
    assert!(
        chrono::DateTime::parse_from_rfc3339(body["last_updated"].as_str().unwrap()).is_ok(),
        "{}",
        answer.text
    );
    let nodes = body["nodes"].as_array().unwrap();
    let listed: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(listed, names);
    for node in nodes {
        let node = node.as_object().unwrap();
        let mut keys: Vec<&str> = node.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "current_action",
                "current_task_id",
                "name",
                "status",
                "tasks_processed_today"
            ]
        );
        assert_eq!(node["status"], "Active");
        assert_eq!(node["tasks_processed_today"], 0);
        assert!(node["current_task_id"].is_null() && node["current_action"].is_null());
    }
}

#[tokio::test]
async fn the_fleet_follows_the_configured_worker_names() {
    let app = TestApp::with(&[("HYPRBOX_AI_WORKERS", "Zeta, Alpha")]).await;
    let admin = app.register_admin().await;
    let answer = app.get(FLEET, Some(&admin.token)).await;
    let listed: Vec<&str> = answer.body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["Zeta", "Alpha"]);
}

#[tokio::test]
async fn every_ai_worker_endpoint_needs_a_signed_in_user() {
    let app = TestApp::spawn().await;
    for answer in [
        app.get(FLEET, None).await,
        app.get(TASKS, None).await,
        app.post(DISPATCH, None, json!({})).await,
        app.get(FLEET, Some("not-a-token")).await,
    ] {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
        assert_eq!(answer.error_tag(), "unauthorized");
    }
}

#[tokio::test]
async fn a_viewer_sees_the_fleet_but_cannot_dispatch() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let viewer = app.user_with_role(&admin, "viewer@example.com", "VIEWER").await;
    assert_eq!(app.get(FLEET, Some(&viewer.token)).await.status, StatusCode::OK);
    assert_eq!(app.get(TASKS, Some(&viewer.token)).await.status, StatusCode::OK);
    let answer = app
        .post(DISPATCH, Some(&viewer.token), json!({"action": "x"}))
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    assert_eq!(answer.error_tag(), "forbidden");
    let listed = app.get(TASKS, Some(&admin.token)).await;
    assert_eq!(listed.body["tasks"], json!([]), "nothing was queued");
}

#[tokio::test]
async fn an_operator_dispatches_a_task_that_a_worker_processes_and_counts() {
    let app = TestApp::with(&[("HYPRBOX_AI_TASK_SECONDS", "0.2")]).await;
    let admin = app.register_admin().await;
    let operator = app.user_with_role(&admin, "op@example.com", "OPERATOR").await;
    let body = dispatch(&app, &operator, "  Summarise the logs  ").await;
    let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["action", "message", "queue_size", "task_id"]);
    assert_eq!(body["action"], "Summarise the logs");
    assert!(body["queue_size"].as_i64().unwrap() >= 0);
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    let id = body["task_id"].as_str().unwrap().to_string();

    app.eventually("the task to be done", || task_is_done(&app, &operator, &id))
        .await;
    let done = task(&app, &operator, &id).await;
    let mut keys: Vec<&str> = done.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "action",
            "created_at",
            "created_by",
            "finished_at",
            "id",
            "started_at",
            "status",
            "worker"
        ]
    );
    assert_eq!(done["created_by"], operator.id.as_str());
    assert_eq!(done["action"], "Summarise the logs");
    let worker = done["worker"].as_str().unwrap().to_string();
    for field in ["created_at", "started_at", "finished_at"] {
        assert!(
            chrono::DateTime::parse_from_rfc3339(done[field].as_str().unwrap()).is_ok(),
            "{field}: {done}"
        );
    }

    app.eventually("the worker to count the task", || async {
        let fleet = app.get(FLEET, Some(&operator.token)).await.body;
        fleet["nodes"].as_array().unwrap().iter().any(|n| {
            n["name"] == worker.as_str() && n["tasks_processed_today"] == 1 && n["status"] == "Active"
        })
    })
    .await;
    let fleet = app.get(FLEET, Some(&operator.token)).await.body;
    let total: i64 = fleet["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["tasks_processed_today"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 1);

    let audit = app.get("/api/audit?action=ai.dispatch", Some(&admin.token)).await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.text);
    assert!(
        audit.text.contains("ai.dispatch") && audit.text.contains(&id),
        "{}",
        audit.text
    );
}

#[tokio::test]
async fn a_worker_shows_the_task_it_is_working_on() {
    let app = TestApp::with(&[
        ("HYPRBOX_AI_TASK_SECONDS", "3600"),
        ("HYPRBOX_AI_WORKERS", "Solo"),
    ])
    .await;
    let admin = app.register_admin().await;
    let first = dispatch(&app, &admin, "Long job").await;
    let id = first["task_id"].as_str().unwrap().to_string();
    app.eventually("Solo to work on the task", || async {
        let fleet = app.get(FLEET, Some(&admin.token)).await.body;
        fleet["nodes"][0]["status"] == "Working"
    })
    .await;
    let fleet = app.get(FLEET, Some(&admin.token)).await.body;
    assert_eq!(fleet["nodes"][0]["current_task_id"], id.as_str());
    assert_eq!(fleet["nodes"][0]["current_action"], "Long job");
    assert_eq!(fleet["cluster_status"], "Stressed");
    assert_eq!(fleet["total_active_fleet"], 1);
    let running = task(&app, &admin, &id).await;
    assert_eq!(running["status"], "RUNNING");
    assert_eq!(running["worker"], "Solo");
    assert!(running["finished_at"].is_null());

    // The only worker is busy: a second task waits in the queue.
    let second = dispatch(&app, &admin, "Waiting job").await;
    assert_eq!(second["queue_size"], 1);
    app.eventually("the queue depth to show the waiting task", || async {
        app.get(FLEET, Some(&admin.token)).await.body["queue_depth"] == 1
    })
    .await;
    let waiting = task(&app, &admin, second["task_id"].as_str().unwrap()).await;
    assert_eq!(waiting["status"], "QUEUED");
    assert!(waiting["worker"].is_null() && waiting["started_at"].is_null());
}

#[tokio::test]
async fn the_action_comes_from_the_query_or_the_body_and_defaults_when_absent() {
    let app = TestApp::with(&[("HYPRBOX_AI_TASK_SECONDS", "3600")]).await;
    let admin = app.register_admin().await;
    let from_query = app
        .call(
            reqwest::Method::POST,
            &format!("{DISPATCH}?action=Translate%20text"),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(from_query.status, StatusCode::OK, "{}", from_query.text);
    assert_eq!(from_query.body["action"], "Translate text");
    let no_body = app
        .call(reqwest::Method::POST, DISPATCH, Some(&admin.token), None)
        .await;
    assert_eq!(no_body.status, StatusCode::OK, "{}", no_body.text);
    assert_eq!(no_body.body["action"], "Generic AI Task");
    assert_eq!(dispatch(&app, &admin, "   ").await["action"], "Generic AI Task");
    let empty_object = app.post(DISPATCH, Some(&admin.token), json!({})).await;
    assert_eq!(empty_object.body["action"], "Generic AI Task");
    let longest = "a".repeat(200);
    assert_eq!(dispatch(&app, &admin, &longest).await["action"], longest.as_str());
}

#[tokio::test]
async fn a_dispatch_with_a_bad_action_or_body_is_a_400_naming_the_problem() {
    let app = TestApp::with(&[("HYPRBOX_AI_TASK_SECONDS", "3600")]).await;
    let admin = app.register_admin().await;
    let too_long = app
        .post(DISPATCH, Some(&admin.token), json!({"action": "a".repeat(201)}))
        .await;
    assert_eq!(too_long.status, StatusCode::BAD_REQUEST, "{}", too_long.text);
    assert_eq!(too_long.error_tag(), "bad_request");
    assert!(too_long.body["message"].as_str().unwrap().contains("action"));
    let in_query = app
        .call(
            reqwest::Method::POST,
            &format!("{DISPATCH}?action={}", "b".repeat(201)),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(in_query.status, StatusCode::BAD_REQUEST, "{}", in_query.text);
    let wrong_type = app.post(DISPATCH, Some(&admin.token), json!({"action": 5})).await;
    assert_eq!(wrong_type.status, StatusCode::BAD_REQUEST, "{}", wrong_type.text);
    assert_eq!(wrong_type.error_tag(), "bad_request");
    assert!(
        wrong_type.body["message"].as_str().unwrap().contains("action"),
        "the message names the field: {}",
        wrong_type.text
    );
    let malformed = app
        .post_raw(DISPATCH, &admin.token, "application/json", "{not json")
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST, "{}", malformed.text);
    assert_eq!(malformed.error_tag(), "bad_request");
    let listed = app.get(TASKS, Some(&admin.token)).await;
    assert_eq!(listed.body["tasks"], json!([]), "nothing was queued");
}

#[tokio::test]
async fn an_action_in_the_query_needs_no_body_whatever_its_type_and_a_null_body_is_no_body() {
    let app = TestApp::with(&[("HYPRBOX_AI_TASK_SECONDS", "3600")]).await;
    let admin = app.register_admin().await;
    let form = app
        .post_raw(
            &format!("{DISPATCH}?action=Index%20the%20wiki"),
            &admin.token,
            "application/x-www-form-urlencoded",
            "ignored=1",
        )
        .await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.text);
    assert_eq!(form.body["action"], "Index the wiki");
    // A blank action in the query (once decoded) leaves the body's in charge.
    let blank_query = app
        .call(
            reqwest::Method::POST,
            &format!("{DISPATCH}?action=%20"),
            Some(&admin.token),
            Some(json!({"action": "From the body"})),
        )
        .await;
    assert_eq!(blank_query.status, StatusCode::OK, "{}", blank_query.text);
    assert_eq!(blank_query.body["action"], "From the body");
    let null = app
        .post_raw(DISPATCH, &admin.token, "application/json", "null")
        .await;
    assert_eq!(null.status, StatusCode::OK, "{}", null.text);
    assert_eq!(null.body["action"], "Generic AI Task");
    let text = app
        .post_raw(DISPATCH, &admin.token, "text/plain", "action=x")
        .await;
    assert_eq!(
        text.status,
        StatusCode::BAD_REQUEST,
        "a body the server cannot read"
    );
}

#[tokio::test]
async fn recent_tasks_are_newest_first_and_the_limit_is_checked() {
    let app = TestApp::with(&[
        ("HYPRBOX_AI_TASK_SECONDS", "3600"),
        ("HYPRBOX_AI_WORKERS", "Solo"),
    ])
    .await;
    let admin = app.register_admin().await;
    for i in 0..3 {
        dispatch(&app, &admin, &format!("task {i}")).await;
    }
    let answer = app.get(&format!("{TASKS}?limit=2"), Some(&admin.token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let actions: Vec<&str> = answer.body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["task 2", "task 1"]);
    assert_eq!(
        app.get(TASKS, Some(&admin.token)).await.body["tasks"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    for bad in ["0", "101", "-1", "ten", "1.5"] {
        let answer = app.get(&format!("{TASKS}?limit={bad}"), Some(&admin.token)).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "limit={bad}: {}",
            answer.text
        );
        assert!(answer.body["message"].as_str().unwrap().contains("limit"));
    }
    assert_eq!(
        app.get(&format!("{TASKS}?limit=100"), Some(&admin.token))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_task_running_when_the_server_stopped_runs_again_after_a_restart() {
    let slow = TestApp::with(&[("HYPRBOX_AI_TASK_SECONDS", "3600")]).await;
    let admin = slow.register_admin().await;
    let running = dispatch(&slow, &admin, "Interrupted").await;
    let running_id = running["task_id"].as_str().unwrap().to_string();
    slow.eventually("a worker to take the task", || async {
        task(&slow, &admin, &running_id).await["status"] == "RUNNING"
    })
    .await;
    // Ten workers take ten tasks; the next ones stay queued.
    let mut queued = Vec::new();
    for i in 0..11 {
        queued.push(
            dispatch(&slow, &admin, &format!("queued {i}")).await["task_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let (stopped, db) = slow.stop_keeping_database().await;
    stopped.unwrap();

    let fast = TestApp::with(&[
        ("DATABASE_URL", db.url.as_str()),
        ("HYPRBOX_AI_TASK_SECONDS", "0.2"),
    ])
    .await;
    let admin = fast.login("admin@example.com", common::PASSWORD).await;
    for id in std::iter::once(&running_id).chain(&queued) {
        fast.eventually("every task to be done after the restart", || {
            task_is_done(&fast, &admin, id)
        })
        .await;
    }
    fast.eventually(
        "the workers to count twelve tasks and the queue to be empty",
        || async {
            let fleet = fast.get(FLEET, Some(&admin.token)).await.body;
            let total: i64 = fleet["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["tasks_processed_today"].as_i64().unwrap())
                .sum();
            total == 12 && fleet["queue_depth"] == 0
        },
    )
    .await;
    drop(db);
}

#[tokio::test]
async fn the_openapi_document_lists_the_ai_worker_endpoints_under_dashboard() {
    let app = TestApp::spawn().await;
    let answer = app.get("/openapi.json", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    for (path, method) in [(FLEET, "get"), (DISPATCH, "post"), (TASKS, "get")] {
        let operation = &answer.body["paths"][path][method];
        assert_eq!(operation["tags"], json!(["dashboard"]), "{path}");
    }
}

#[tokio::test]
async fn task_ids_differ_in_their_first_eight_characters_as_the_client_shows_them() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let mut prefixes = std::collections::HashSet::new();
    for i in 0..20 {
        let body = dispatch(&app, &admin, &format!("task {i}")).await;
        let id = body["task_id"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 36, "a UUID: {id}");
        prefixes.insert(id[..8].to_string());
    }
    assert_eq!(
        prefixes.len(),
        20,
        "tasks dispatched together are told apart by their prefix"
    );
}

#[tokio::test]
async fn a_dispatch_with_a_nul_in_its_action_is_a_400_on_every_backend() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let answer = app
        .post(
            DISPATCH,
            Some(&admin.token),
            json!({ "action": "bad\u{0}action" }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert!(
        answer.body["message"].as_str().unwrap().contains("action"),
        "{}",
        answer.text
    );
}
