//! `/api/jobs` and `/api/agent/ws`: dispatch, the claim, output, completion, cancel, the live
//! streams and the reaper.

mod common;

use std::time::Duration;

use common::{Session, TestApp, get_streaming, get_streaming_with, read_gzip_sse, read_sse, test_presets};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

/// A server with the test presets, an ADMIN, and node `web-1` known through its pinned token.
async fn setup() -> (TestApp, Session, String) {
    setup_with(&[]).await
}

async fn setup_with(env: &[(&str, &str)]) -> (TestApp, Session, String) {
    let dir = test_presets();
    let mut env = env.to_vec();
    env.push(("HYPRBOX_PRESETS_DIR", dir.to_str().unwrap()));
    let app = TestApp::with(&env).await;
    let admin = app.register_admin().await;
    let (token, _) = app.mint_token(&admin, Some("web-1")).await;
    let beat = app
        .heartbeat(
            Some(&token),
            json!({"node_id": "web-1", "cpu_percent": 5, "ram_percent": 5}),
        )
        .await;
    assert_eq!(beat.status, StatusCode::ACCEPTED);
    (app, admin, token)
}

async fn queue(app: &TestApp, user: &Session, who: &str) -> Value {
    let answer = app
        .post(
            "/api/jobs",
            Some(&user.token),
            json!({"nodeId": "web-1", "presetName": "hello", "variables": {"who": who}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    answer.body["job"].clone()
}

/// Queues a job of the `slow` preset (a 1-second timeout, for the reaper); returns its id.
async fn queue_slow(app: &TestApp, user: &Session) -> String {
    let answer = app
        .post(
            "/api/jobs",
            Some(&user.token),
            json!({"nodeId": "web-1", "presetName": "slow"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    answer.body["job"]["id"].as_str().unwrap().to_string()
}

async fn claim(app: &TestApp, token: &str) -> Value {
    let answer = app.get("/api/jobs/pending?nodeId=web-1", Some(token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.body["job"].clone()
}

async fn output(app: &TestApp, token: &str, id: &str, body: Value) -> common::Answer {
    app.post(&format!("/api/jobs/{id}/output"), Some(token), body)
        .await
}

async fn complete(app: &TestApp, token: &str, id: &str, exit_code: i64) -> common::Answer {
    app.post(
        &format!("/api/jobs/{id}/complete"),
        Some(token),
        json!({"exitCode": exit_code}),
    )
    .await
}

async fn job(app: &TestApp, user: &Session, id: &str) -> Value {
    let answer = app.get(&format!("/api/jobs/{id}"), Some(&user.token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.body["job"].clone()
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_agent(app: &TestApp, token: &str, query: &str) -> Result<Socket, tungstenite::Error> {
    let mut request = format!("ws://{}/api/agent/ws{query}", app.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// The next text message on the socket, as JSON (pings skipped).
async fn next_message(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message in time")
            .expect("the socket stays open")
            .unwrap();
        if let tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test]
async fn an_operator_queues_a_job_with_its_script_rendered_now() {
    let (app, admin, _) = setup().await;
    let created = queue(&app, &admin, "world").await;
    assert_eq!(created["status"], "QUEUED");
    assert_eq!(created["nodeId"], "web-1");
    assert_eq!(created["presetName"], "hello");
    assert_eq!(
        created["variables"],
        json!({"who": "world", "times": 1, "note": ""})
    );
    assert_eq!(created["createdBy"], admin.id.as_str());
    for field in [
        "exitCode",
        "startedAt",
        "finishedAt",
        "cancelRequestedAt",
        "error",
    ] {
        assert!(created[field].is_null(), "{field}");
    }
    let detail = job(&app, &admin, created["id"].as_str().unwrap()).await;
    assert!(detail["script"].as_str().unwrap().contains("who='world'"));
    assert_eq!(detail["stdout"], "");
    assert_eq!(detail["stdoutTruncated"], false);
    let audit = app.get("/api/audit?action=job.create", Some(&admin.token)).await;
    assert_eq!(audit.body["events"][0]["resourceId"], created["id"]);
}

#[tokio::test]
async fn creating_a_job_checks_role_node_preset_and_variables() {
    let (app, admin, _) = setup().await;
    let viewer = app.user_with_role(&admin, "v@example.com", "VIEWER").await;
    let body = json!({"nodeId": "web-1", "presetName": "hello", "variables": {"who": "x"}});
    assert_eq!(
        app.post("/api/jobs", None, body.clone()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.post("/api/jobs", Some(&viewer.token), body).await.status,
        StatusCode::FORBIDDEN
    );
    for (body, status) in [
        (
            json!({"nodeId": "nowhere", "presetName": "hello", "variables": {"who": "x"}}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"nodeId": "web-1", "presetName": "nope"}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"nodeId": "bad id!", "presetName": "hello"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"nodeId": "web-1", "presetName": "hello", "variables": {}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"nodeId": "web-1", "presetName": "hello", "variables": {"who": "x", "times": 99}}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"presetName": "hello"}), StatusCode::BAD_REQUEST),
    ] {
        let answer = app.post("/api/jobs", Some(&admin.token), body.clone()).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.text);
        answer.error_tag();
    }
    let list = app.get("/api/jobs", Some(&admin.token)).await;
    assert_eq!(
        list.body["jobs"],
        json!([]),
        "nothing was created by a refused request"
    );
}

#[tokio::test]
async fn the_job_list_is_scoped_to_the_owner_filtered_and_clamped() {
    let (app, admin, token) = setup().await;
    let operator = app.user_with_role(&admin, "op@example.com", "OPERATOR").await;
    let viewer = app.user_with_role(&admin, "v@example.com", "VIEWER").await;
    let mine = queue(&app, &operator, "a").await;
    let theirs = queue(&app, &admin, "b").await;
    claim(&app, &token).await;

    let own = app.get("/api/jobs", Some(&operator.token)).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.body["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(own.body["jobs"][0]["id"], mine["id"]);
    let all = app.get("/api/jobs", Some(&admin.token)).await;
    let ids: Vec<&Value> = all.body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| &j["id"])
        .collect();
    assert_eq!(ids, vec![&theirs["id"], &mine["id"]], "newest first");
    assert_eq!(
        app.get("/api/jobs", Some(&viewer.token)).await.body["jobs"],
        json!([])
    );

    let running = app.get("/api/jobs?status=RUNNING", Some(&admin.token)).await;
    assert_eq!(
        running.body["jobs"][0]["id"], mine["id"],
        "the oldest job was claimed first"
    );
    assert_eq!(running.body["jobs"].as_array().unwrap().len(), 1);
    let by_node = app.get("/api/jobs?nodeId=other", Some(&admin.token)).await;
    assert_eq!(by_node.body["jobs"], json!([]));
    for large in ["5000", "99999999999999999999999"] {
        let clamped = app
            .get(&format!("/api/jobs?limit={large}"), Some(&admin.token))
            .await;
        assert_eq!(clamped.status, StatusCode::OK, "limit={large} is clamped");
    }
    assert_eq!(
        app.get("/api/jobs?limit=1", Some(&admin.token)).await.body["jobs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for bad in [
        "limit=0",
        "limit=-3",
        "limit=ten",
        "status=DONE",
        "nodeId=bad%20id",
    ] {
        let answer = app.get(&format!("/api/jobs?{bad}"), Some(&admin.token)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(app.get("/api/jobs", None).await.status, StatusCode::UNAUTHORIZED);

    let hidden = app
        .get(
            &format!("/api/jobs/{}", theirs["id"].as_str().unwrap()),
            Some(&operator.token),
        )
        .await;
    assert_eq!(
        hidden.status,
        StatusCode::NOT_FOUND,
        "another user's job is hidden"
    );
    assert_eq!(
        app.get("/api/jobs/not-a-job", Some(&admin.token)).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_job_list_clamps_its_limit_to_200_and_reads_leading_zeros_as_a_number() {
    let (app, admin, _) = setup_with(&[("HYPRBOX_RATE_LIMIT", "100000")]).await;
    for i in 0u8..201 {
        let who = format!("{}{}", char::from(b'a' + i / 26), char::from(b'a' + i % 26));
        queue(&app, &admin, &who).await;
    }
    let count = |limit: &'static str| {
        let app = &app;
        let admin = &admin;
        async move {
            let answer = app
                .get(&format!("/api/jobs?limit={limit}"), Some(&admin.token))
                .await;
            assert_eq!(answer.status, StatusCode::OK, "limit={limit}: {}", answer.text);
            answer.body["jobs"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("").await, 50, "the default");
    assert_eq!(count("200").await, 200);
    assert_eq!(count("201").await, 200);
    assert_eq!(count("99999999999999999999999").await, 200);
    assert_eq!(count("0003").await, 3);
    assert_eq!(count("000000000000000000000007").await, 7);
    let zeros = app.get("/api/jobs?limit=0000", Some(&admin.token)).await;
    assert_eq!(zeros.status, StatusCode::BAD_REQUEST, "{}", zeros.text);
}

#[tokio::test]
async fn a_pull_claims_the_oldest_job_once_and_then_finds_none() {
    let (app, admin, token) = setup().await;
    let first = queue(&app, &admin, "one").await;
    let claimed = claim(&app, &token).await;
    assert_eq!(claimed["id"], first["id"]);
    assert!(claimed["script"].as_str().unwrap().contains("who='one'"));
    assert_eq!(claimed["presetName"], "hello");
    assert_eq!(claimed["variables"]["who"], "one");
    assert_eq!(claim(&app, &token).await, Value::Null);
    let detail = job(&app, &admin, first["id"].as_str().unwrap()).await;
    assert_eq!(detail["status"], "RUNNING");
    assert!(detail["startedAt"].is_string());
    // A pinned token may leave nodeId out.
    queue(&app, &admin, "two").await;
    let answer = app.get("/api/jobs/pending", Some(&token)).await;
    assert_eq!(answer.body["job"]["variables"]["who"], "two");
}

#[tokio::test]
async fn every_claim_is_audited_with_its_token_and_the_script_goes_only_to_that_claim() {
    let (app, admin, token) = setup().await;
    let token_id = app.get("/api/tokens", Some(&admin.token)).await.body["tokens"][0]["id"].clone();
    let queued = queue(&app, &admin, "audited").await;
    let id = queued["id"].as_str().unwrap();
    let claimed = claim(&app, &token).await;
    assert_eq!(claimed["id"], id);
    assert_eq!(
        claim(&app, &token).await,
        Value::Null,
        "an empty pull claims nothing"
    );

    let audit = app.get("/api/audit?action=job.claim", Some(&admin.token)).await;
    let events = audit.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "one claim, one event: {}", audit.text);
    assert_eq!(events[0]["resourceType"], "job");
    assert_eq!(events[0]["resourceId"], id);
    assert_eq!(events[0]["metadata"]["tokenId"], token_id);
    assert_eq!(events[0]["metadata"]["nodeId"], "web-1");

    // Another token for the same node cannot read the script: it is not the claim, a node token
    // is no user, and completing or sending output for the job is refused.
    let (other, _) = app.mint_token(&admin, Some("web-1")).await;
    assert_eq!(claim(&app, &other).await, Value::Null);
    assert_eq!(
        app.get(&format!("/api/jobs/{id}"), Some(&other)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        output(&app, &other, id, json!({"stdout": "x"})).await.status,
        StatusCode::FORBIDDEN
    );
    let refused = complete(&app, &other, id, 0).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!refused.text.contains("audited"), "no script in a refusal");
    let done = complete(&app, &token, id, 0).await;
    assert_eq!(done.status, StatusCode::OK);
    assert!(
        done.body["job"].get("script").is_none(),
        "completion does not hand the script back"
    );
}

#[tokio::test]
async fn concurrent_pulls_hand_each_job_out_exactly_once() {
    let (app, admin, _) = setup().await;
    let (fleet_token, _) = app.mint_token(&admin, None).await;
    let mut queued = Vec::new();
    for i in 0..20 {
        queued.push(queue(&app, &admin, &"x".repeat(i % 3 + 1)).await["id"].clone());
    }
    let pulls = (0..8).map(|_| {
        let client = app.client.clone();
        let url = app.url("/api/jobs/pending?nodeId=web-1");
        let token = fleet_token.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let body: Value = client
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if body["job"].is_null() {
                    return got;
                }
                got.push(body["job"]["id"].clone());
            }
        })
    });
    let mut claimed = Vec::new();
    for pull in futures_util::future::join_all(pulls).await {
        claimed.extend(pull.unwrap());
    }
    let key = |v: &Value| v.as_str().unwrap().to_string();
    let mut claimed: Vec<String> = claimed.iter().map(key).collect();
    let count = claimed.len();
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), count, "a job was handed out twice");
    let mut queued: Vec<String> = queued.iter().map(key).collect();
    queued.sort();
    assert_eq!(claimed, queued);
}

#[tokio::test]
async fn pulls_need_a_node_token_that_may_act_for_the_node() {
    let (app, admin, token) = setup().await;
    let (fleet_token, _) = app.mint_token(&admin, None).await;
    let (other, _) = app.mint_token(&admin, Some("db-1")).await;
    assert_eq!(
        app.get("/api/jobs/pending?nodeId=web-1", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let user = app
        .get("/api/jobs/pending?nodeId=web-1", Some(&admin.token))
        .await;
    assert_eq!(
        user.status,
        StatusCode::UNAUTHORIZED,
        "a user's JWT is not a node token"
    );
    let pinned_elsewhere = app.get("/api/jobs/pending?nodeId=web-1", Some(&other)).await;
    assert_eq!(pinned_elsewhere.status, StatusCode::FORBIDDEN);
    let no_node = app.get("/api/jobs/pending", Some(&fleet_token)).await;
    assert_eq!(no_node.status, StatusCode::BAD_REQUEST);
    assert!(no_node.body["message"].as_str().unwrap().contains("nodeId"));
    let bad = app.get("/api/jobs/pending?nodeId=bad%20id", Some(&token)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(claim(&app, &fleet_token).await, Value::Null);
}

#[tokio::test]
async fn output_and_completion_follow_the_contract_order_of_checks() {
    let (app, admin, token) = setup().await;
    let (fleet_token, _) = app.mint_token(&admin, None).await;
    let (other, _) = app.mint_token(&admin, Some("db-1")).await;
    let queued = queue(&app, &admin, "a").await;
    let id = queued["id"].as_str().unwrap();
    let piece = json!({"stdout": "x"});

    assert_eq!(
        output(&app, &token, id, piece.clone()).await.status,
        StatusCode::CONFLICT,
        "QUEUED"
    );
    assert_eq!(complete(&app, &token, id, 0).await.status, StatusCode::CONFLICT);
    claim(&app, &token).await;
    assert_eq!(
        app.post(&format!("/api/jobs/{id}/output"), None, piece.clone())
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        output(&app, &admin.token, id, piece.clone()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        output(
            &app,
            &token,
            "0190a0a0-0000-7000-8000-000000000000",
            piece.clone()
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        output(&app, &other, id, piece.clone()).await.status,
        StatusCode::FORBIDDEN,
        "pinned elsewhere"
    );
    assert_eq!(
        output(&app, &fleet_token, id, piece.clone()).await.status,
        StatusCode::FORBIDDEN,
        "not the claimer"
    );
    assert_eq!(
        complete(&app, &fleet_token, id, 0).await.status,
        StatusCode::FORBIDDEN
    );
    let bad = output(&app, &token, id, json!({"stdout": 5})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let huge = output(&app, &token, id, json!({"stdout": "x".repeat(1_100_000)})).await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(
        output(&app, &token, id, json!({"stdout": "hello\n", "stderr": "warn\n"}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let done = app
        .post(
            &format!("/api/jobs/{id}/complete"),
            Some(&token),
            json!({"exitCode": 0, "stdout": "bye\n"}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    assert_eq!(done.body["job"]["status"], "SUCCEEDED");
    assert_eq!(done.body["job"]["exitCode"], 0);
    assert!(done.body["job"]["finishedAt"].is_string());
    assert_eq!(
        complete(&app, &token, id, 0).await.status,
        StatusCode::CONFLICT,
        "a second completion"
    );
    assert_eq!(
        output(&app, &token, id, piece).await.status,
        StatusCode::CONFLICT,
        "terminal"
    );
    let detail = job(&app, &admin, id).await;
    assert_eq!(detail["stdout"], "hello\nbye\n");
    assert_eq!(detail["stderr"], "warn\n");
}

#[tokio::test]
async fn completion_checks_the_token_the_job_and_its_state_in_the_contract_order() {
    let (app, admin, token) = setup().await;
    let (fleet_token, _) = app.mint_token(&admin, None).await;
    let (other, _) = app.mint_token(&admin, Some("db-1")).await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    let path = format!("/api/jobs/{id}/complete");
    assert_eq!(
        app.post(&path, None, json!({"exitCode": 0})).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        complete(&app, &admin.token, &id, 0).await.status,
        StatusCode::UNAUTHORIZED
    );
    let missing = complete(&app, &token, "0190a0a0-0000-7000-8000-000000000000", 0).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(complete(&app, &other, &id, 0).await.status, StatusCode::FORBIDDEN);
    let bad = app.post(&path, Some(&token), json!({"exitCode": "zero"})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(complete(&app, &token, &id, 0).await.status, StatusCode::OK);
    // On a finished job: pinned elsewhere is still 403 (checked before the state), while a
    // token that may act for the node but did not claim the job gets the state's 409 first.
    assert_eq!(complete(&app, &other, &id, 0).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        complete(&app, &fleet_token, &id, 0).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        output(&app, &fleet_token, &id, json!({"stdout": "x"}))
            .await
            .status,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn output_with_any_unicode_and_nul_comes_back_byte_for_byte() {
    let (app, admin, token) = setup().await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    let text = "nul\u{0}here, crlf\r\n, emoji 😀, quotes '\"\n";
    assert_eq!(
        output(&app, &token, &id, json!({"stdout": text})).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(job(&app, &admin, &id).await["stdout"], text);
    let raw = app
        .get(&format!("/api/jobs/{id}/output/raw"), Some(&admin.token))
        .await;
    assert_eq!(raw.text, text);
}

#[tokio::test]
async fn a_nonzero_exit_code_fails_the_job() {
    let (app, admin, token) = setup().await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    let done = complete(&app, &token, &id, 3).await;
    assert_eq!(done.body["job"]["status"], "FAILED");
    assert_eq!(done.body["job"]["exitCode"], 3);
}

#[tokio::test]
async fn output_past_the_cap_is_dropped_flagged_and_still_answered_204() {
    let (app, admin, token) = setup_with(&[("HYPRBOX_JOB_OUTPUT_MAX_BYTES", "10")]).await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    assert_eq!(
        output(&app, &token, &id, json!({"stdout": "12345678"}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        output(&app, &token, &id, json!({"stdout": "abcdef"}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        output(&app, &token, &id, json!({"stderr": "more"})).await.status,
        StatusCode::NO_CONTENT
    );
    let detail = job(&app, &admin, &id).await;
    assert_eq!(detail["stdout"], "12345678ab");
    assert_eq!(detail["stdoutTruncated"], true);
    assert_eq!(detail["stderrTruncated"], true);
    assert_eq!(detail["outputLimitReached"], true);
    assert_eq!(
        detail["status"], "RUNNING",
        "a chatty script does not fail its job"
    );
}

#[tokio::test]
async fn a_log_larger_than_the_tail_downloads_whole_as_an_attachment() {
    let (app, admin, token) = setup().await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    let mut expected = String::new();
    for i in 0..6 {
        let piece = format!("{i}").repeat(900_000);
        expected.push_str(&piece);
        assert_eq!(
            output(&app, &token, &id, json!({"stdout": piece})).await.status,
            StatusCode::NO_CONTENT
        );
    }
    output(&app, &token, &id, json!({"stderr": "err"})).await;
    let detail = job(&app, &admin, &id).await;
    let tail = detail["stdout"].as_str().unwrap();
    assert_eq!(tail.len(), 4 << 20);
    assert!(expected.ends_with(tail));
    assert_eq!(detail["stdoutTruncated"], true);
    assert_eq!(detail["outputLimitReached"], false);
    assert_eq!(detail["stdoutBytes"], 5_400_000);

    let response = get_streaming(
        &app,
        &format!("/api/jobs/{id}/output/raw?stream=stdout"),
        &admin.token,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(
        response.headers()["content-disposition"],
        format!("attachment; filename=\"job-{id}-stdout.log\"").as_str()
    );
    assert!(
        response.text().await.unwrap() == expected,
        "the whole log, in order"
    );
    let stderr = app
        .get(
            &format!("/api/jobs/{id}/output/raw?stream=stderr"),
            Some(&admin.token),
        )
        .await;
    assert_eq!(stderr.text, "err");
    let bad = app
        .get(
            &format!("/api/jobs/{id}/output/raw?stream=both"),
            Some(&admin.token),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let anonymous = app.get(&format!("/api/jobs/{id}/output/raw"), None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let operator = app.user_with_role(&admin, "op@example.com", "OPERATOR").await;
    let hidden = app
        .get(&format!("/api/jobs/{id}/output/raw"), Some(&operator.token))
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    let hidden_bad_query = app
        .get(
            &format!("/api/jobs/{id}/output/raw?stream=both"),
            Some(&operator.token),
        )
        .await;
    assert_eq!(
        hidden_bad_query.status,
        StatusCode::NOT_FOUND,
        "someone else's job is not found, whatever the query"
    );
}

#[tokio::test]
async fn cancelling_a_queued_job_ends_it_and_a_finished_one_is_a_conflict() {
    let (app, admin, token) = setup().await;
    let operator = app.user_with_role(&admin, "op@example.com", "OPERATOR").await;
    let viewer = app.user_with_role(&admin, "v@example.com", "VIEWER").await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    let path = format!("/api/jobs/{id}/cancel");
    assert_eq!(
        app.post(&path, None, json!({})).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.post(&path, Some(&viewer.token), json!({})).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post(&path, Some(&operator.token), json!({})).await.status,
        StatusCode::NOT_FOUND
    );
    let cancelled = app.post(&path, Some(&admin.token), json!({})).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    assert_eq!(cancelled.body["job"]["status"], "CANCELLED");
    assert!(cancelled.body["job"]["cancelRequestedAt"].is_string());
    assert_eq!(
        claim(&app, &token).await,
        Value::Null,
        "a cancelled job is never handed out"
    );
    let again = app.post(&path, Some(&admin.token), json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let audit = app.get("/api/audit?action=job.cancel", Some(&admin.token)).await;
    assert_eq!(audit.body["events"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn cancelling_a_running_job_without_its_agent_connected_is_a_conflict() {
    let (app, admin, token) = setup().await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    let answer = app
        .post(&format!("/api/jobs/{id}/cancel"), Some(&admin.token), json!({}))
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert!(answer.body["message"].as_str().unwrap().contains("not connected"));
    assert_eq!(job(&app, &admin, &id).await["cancelRequestedAt"], Value::Null);
}

#[tokio::test]
async fn cancelling_a_running_job_tells_its_connected_agent_and_ends_cancelled() {
    let (app, admin, token) = setup().await;
    let mut socket = connect_agent(&app, &token, "?nodeId=web-1").await.unwrap();
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    assert_eq!(next_message(&mut socket).await, json!({"type": "wakeup"}));
    claim(&app, &token).await;
    let answer = app
        .post(&format!("/api/jobs/{id}/cancel"), Some(&admin.token), json!({}))
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    assert_eq!(answer.body["job"]["status"], "RUNNING");
    assert_eq!(
        next_message(&mut socket).await,
        json!({"type": "cancel", "jobId": id})
    );
    let done = complete(&app, &token, &id, 143).await;
    assert_eq!(done.body["job"]["status"], "CANCELLED");
    assert_eq!(done.body["job"]["exitCode"], 143);
}

#[tokio::test]
async fn a_cancel_requested_while_the_agent_was_away_reaches_it_when_it_connects() {
    let (app, admin, token) = setup().await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    {
        let mut conn = app.state.store.conn().await.unwrap();
        hyprbox_store::jobs::request_cancel(&mut conn, &id, hyprbox_store::now_ms())
            .await
            .unwrap()
            .unwrap();
    }
    let mut socket = connect_agent(&app, &token, "").await.unwrap();
    assert_eq!(
        next_message(&mut socket).await,
        json!({"type": "cancel", "jobId": id})
    );
}

#[tokio::test]
async fn a_connected_agent_is_woken_within_100_ms_of_job_creation() {
    let (app, admin, token) = setup().await;
    let mut socket = connect_agent(&app, &token, "").await.unwrap();
    // The socket is registered once the upgrade completes; wait until a job's wake-up proves it.
    queue(&app, &admin, "warm up").await;
    assert_eq!(next_message(&mut socket).await["type"], "wakeup");
    let started = tokio::time::Instant::now();
    let creating = queue(&app, &admin, "b");
    let (_, message) = tokio::join!(creating, next_message(&mut socket));
    assert_eq!(message, json!({"type": "wakeup"}));
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "woken after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_agent_socket_needs_a_pinned_token_for_the_named_node() {
    let (app, admin, token) = setup().await;
    let (fleet_token, _) = app.mint_token(&admin, None).await;
    let status = |err: tungstenite::Error| match err {
        tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("{other}"),
    };
    assert_eq!(
        status(connect_agent(&app, "hbnt_nope", "").await.unwrap_err()),
        401
    );
    assert_eq!(
        status(connect_agent(&app, &admin.token, "").await.unwrap_err()),
        401
    );
    assert_eq!(
        status(connect_agent(&app, &fleet_token, "").await.unwrap_err()),
        403
    );
    assert_eq!(
        status(connect_agent(&app, &token, "?nodeId=db-1").await.unwrap_err()),
        403
    );
    // The token travels in the header: one in the query string is ignored.
    let query_only = connect_agent(&app, "", &format!("?token={token}"))
        .await
        .unwrap_err();
    assert_eq!(status(query_only), 401);
    // An empty `nodeId` is no claim at all, as on the other agent routes.
    let mut empty = connect_agent(&app, &token, "?nodeId=").await.unwrap();
    empty.close(None).await.unwrap();
    let plain = app.get("/api/agent/ws", Some(&token)).await;
    assert_eq!(plain.status, StatusCode::BAD_REQUEST, "{}", plain.text);
}

#[tokio::test]
async fn a_node_holds_at_most_four_agent_links_and_an_oversized_message_ends_its_link() {
    let (app, _admin, token) = setup().await;
    let mut links = Vec::new();
    for _ in 0..4 {
        links.push(
            connect_agent(&app, &token, "")
                .await
                .expect("a link within the cap"),
        );
    }
    match connect_agent(&app, &token, "").await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("a fifth link is refused with 429, got {:?}", other.map(|_| ())),
    }
    // A message over 64 KiB is not read into memory: the link ends.
    let mut big = links.pop().unwrap();
    let _ = big
        .send(tungstenite::Message::Text("x".repeat(100 * 1024).into()))
        .await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match big.next().await {
                None | Some(Err(_)) | Some(Ok(tungstenite::Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the server ends a link that sends an oversized message"
    );
    // Its place is free again once the server has let it go.
    drop(big);
    app.eventually("the oversized link's place to be free", || async {
        connect_agent(&app, &token, "").await.is_ok()
    })
    .await;
    drop(links);
}

#[tokio::test]
async fn revoking_a_token_closes_its_agent_socket() {
    let (app, admin, token) = setup().await;
    let mut socket = connect_agent(&app, &token, "").await.unwrap();
    queue(&app, &admin, "a").await;
    assert_eq!(next_message(&mut socket).await["type"], "wakeup");
    let tokens = app.get("/api/tokens", Some(&admin.token)).await;
    let id = tokens.body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["nodeId"] == "web-1")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/tokens/{id}"),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                Some(Ok(tungstenite::Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return None,
            }
        }
    })
    .await
    .expect("the socket closes");
    assert_eq!(closed, Some(1008));
    let _ = socket.send(tungstenite::Message::Close(None)).await;
}

#[tokio::test]
async fn the_job_stream_replays_stored_output_then_follows_live_until_done() {
    let (app, admin, token) = setup().await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    output(&app, &token, &id, json!({"stdout": "first\n"})).await;
    let mut stream = get_streaming(&app, &format!("/api/jobs/{id}/stream"), &admin.token).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let replay = read_sse(&mut stream, |t| t.contains("event: status")).await;
    assert!(replay.contains("event: stdout\nid: 0\ndata: first"), "{replay}");
    assert!(replay.contains(r#"data: {"status":"RUNNING"}"#), "{replay}");
    output(&app, &token, &id, json!({"stderr": "second\n"})).await;
    let live = read_sse(&mut stream, |t| t.contains("second")).await;
    assert!(live.contains("event: stderr\nid: 1\ndata: second"), "{live}");
    complete(&app, &token, &id, 0).await;
    let end = read_sse(&mut stream, |t| t.contains("event: done")).await;
    assert!(end.contains(r#"{"status":"SUCCEEDED"}"#), "{end}");
    let rest = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
        .await
        .expect("the stream closes");
    assert!(matches!(rest, Ok(None)), "the stream ends after done: {rest:?}");

    // A reconnecting client resumes after the last id it saw, with nothing repeated.
    let first_id = replay
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("output events carry ids")
        .to_string();
    let mut resumed = get_streaming_with(
        &app,
        &format!("/api/jobs/{id}/stream"),
        &admin.token,
        &[("last-event-id", &first_id)],
    )
    .await;
    let again = read_sse(&mut resumed, |t| t.contains("event: done")).await;
    assert!(!again.contains("first"), "{again}");
    assert!(again.contains("second"), "{again}");

    let anonymous = app.get(&format!("/api/jobs/{id}/stream"), None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let operator = app.user_with_role(&admin, "op@example.com", "OPERATOR").await;
    let hidden = app
        .get(&format!("/api/jobs/{id}/stream"), Some(&operator.token))
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_job_stream_is_gzip_compressed_for_a_client_that_accepts_it_and_ends_as_a_whole_gzip_file() {
    use std::io::Read;
    let (app, admin, token) = setup().await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    let line = "building the world, one line at a time\n".repeat(200);
    output(&app, &token, &id, json!({"stdout": line})).await;
    let mut stream = get_streaming_with(
        &app,
        &format!("/api/jobs/{id}/stream"),
        &admin.token,
        &[("accept-encoding", "gzip, deflate, br")],
    )
    .await;
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-encoding"], "gzip");
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    // The replay arrives before the job ends, readable as it comes.
    let (mut compressed, _) = read_gzip_sse(&mut stream, |t| t.contains("event: status")).await;
    complete(&app, &token, &id, 0).await;
    compressed.extend_from_slice(read_to_end_bytes(&mut stream).await.as_slice());
    assert!(compressed.len() < line.len() / 4, "{} bytes", compressed.len());
    let mut whole = String::new();
    flate2::read::GzDecoder::new(compressed.as_slice())
        .read_to_string(&mut whole)
        .expect("a whole gzip file, trailer and all");
    assert!(
        whole.contains(&format!("event: stdout\nid: 0\ndata: {}", &line[..39])),
        "{whole:.300}"
    );
    assert!(whole.contains("event: done"), "{whole:.300}");
}

async fn read_to_end_bytes(stream: &mut reqwest::Response) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(15), async {
        let mut seen = Vec::new();
        while let Ok(Some(chunk)) = stream.chunk().await {
            seen.extend_from_slice(&chunk);
        }
        seen
    })
    .await
    .expect("the job stream ends")
}

/// Reads an open stream until it ends (or fails the test after 15 s); returns what it carried.
async fn read_to_end(stream: &mut reqwest::Response) -> String {
    tokio::time::timeout(Duration::from_secs(15), async {
        let mut seen = String::new();
        while let Ok(Some(chunk)) = stream.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        seen
    })
    .await
    .expect("the job stream ends with its session")
}

#[tokio::test]
async fn a_job_stream_past_the_users_stream_cap_is_refused_with_429() {
    let (app, admin, _) = setup_with(&[("HYPRBOX_MAX_STREAMS_PER_USER", "1")]).await;
    let id = queue(&app, &admin, "cap").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let fleet = get_streaming(&app, "/api/stream/nodes", &admin.token).await;
    assert_eq!(fleet.status(), StatusCode::OK);
    let refused = app
        .get(&format!("/api/jobs/{id}/stream"), Some(&admin.token))
        .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.text);
    assert_eq!(refused.error_tag(), "too_many_requests");
    drop(fleet);
}

#[tokio::test]
async fn the_job_stream_ends_on_logout_role_change_and_user_deletion() {
    let (app, admin, token) = setup().await;
    let ops = [
        app.user_with_role(&admin, "op1@example.com", "OPERATOR").await,
        app.user_with_role(&admin, "op2@example.com", "OPERATOR").await,
        app.user_with_role(&admin, "op3@example.com", "OPERATOR").await,
    ];
    let mut streams = Vec::new();
    for op in &ops {
        let id = queue(&app, op, "stream").await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let stream = get_streaming(&app, &format!("/api/jobs/{id}/stream"), &op.token).await;
        assert_eq!(stream.status(), StatusCode::OK);
        streams.push((id, stream));
    }
    app.post("/api/auth/logout", Some(&ops[0].token), json!({})).await;
    let demoted = app
        .call(
            reqwest::Method::PATCH,
            &format!("/api/users/{}/role", ops[1].id),
            Some(&admin.token),
            Some(json!({"role": "VIEWER"})),
        )
        .await;
    assert_eq!(demoted.status, StatusCode::OK);
    let deleted = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/users/{}", ops[2].id),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    // Output that arrives after the session ended reaches none of the three.
    for (id, _) in &streams {
        let claimed = claim(&app, &token).await;
        assert_eq!(claimed["id"], id.as_str());
        let sent = output(&app, &token, id, json!({"stdout": "after-the-session\n"})).await;
        assert_eq!(sent.status, StatusCode::NO_CONTENT);
    }
    for (_, stream) in &mut streams {
        let rest = read_to_end(stream).await;
        assert!(!rest.contains("after-the-session"), "{rest}");
    }
}

#[tokio::test]
async fn the_job_stream_shows_every_flip_even_when_the_job_ends_at_once() {
    let (app, admin, token) = setup().await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    let mut stream = get_streaming(&app, &format!("/api/jobs/{id}/stream"), &admin.token).await;
    let opened = read_sse(&mut stream, |t| t.contains("event: status")).await;
    assert!(opened.contains(r#"{"status":"QUEUED"}"#), "{opened}");
    claim(&app, &token).await;
    complete(&app, &token, &id, 0).await;
    let rest = read_sse(&mut stream, |t| t.contains("event: done")).await;
    let flips: Vec<&str> = rest
        .split("\n\n")
        .filter(|e| e.starts_with("event: status"))
        .map(|e| e.rsplit("\"status\":\"").next().unwrap().trim_end_matches("\"}"))
        .collect();
    assert_eq!(flips, ["RUNNING", "SUCCEEDED"], "{rest}");
}

#[tokio::test]
async fn a_last_event_id_past_the_stored_log_does_not_mute_the_output_to_come() {
    let (app, admin, token) = setup().await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    output(&app, &token, &id, json!({"stdout": "first\n"})).await;
    let mut stream = get_streaming_with(
        &app,
        &format!("/api/jobs/{id}/stream"),
        &admin.token,
        &[("last-event-id", "999")],
    )
    .await;
    let opened = read_sse(&mut stream, |t| t.contains("event: status")).await;
    assert!(!opened.contains("first"), "{opened}");
    output(&app, &token, &id, json!({"stdout": "later\n"})).await;
    let live = read_sse(&mut stream, |t| t.contains("later")).await;
    assert!(live.contains("id: 1\ndata: later"), "{live}");
}

#[tokio::test]
async fn crlf_output_streams_as_plain_lines_and_downloads_byte_for_byte() {
    let (app, admin, token) = setup().await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    output(&app, &token, &id, json!({"stdout": "one\r\ntwo\r\n"})).await;
    complete(&app, &token, &id, 0).await;
    let mut stream = get_streaming(&app, &format!("/api/jobs/{id}/stream"), &admin.token).await;
    let text = read_sse(&mut stream, |t| t.contains("event: done")).await;
    assert!(
        text.contains("event: stdout\nid: 0\ndata: one\ndata: two\ndata: \n\n"),
        "{text:?}"
    );
    let raw = app
        .client
        .get(app.url(&format!("/api/jobs/{id}/output/raw")))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.text().await.unwrap(), "one\r\ntwo\r\n");
}

#[tokio::test]
async fn status_flips_show_on_the_fleet_stream_and_in_the_node_activity() {
    let (app, admin, token) = setup().await;
    let mut stream = get_streaming(&app, "/api/stream/nodes", &admin.token).await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    complete(&app, &token, &id, 2).await;
    let text = read_sse(&mut stream, |t| t.contains(r#""status":"FAILED""#)).await;
    for status in ["QUEUED", "RUNNING", "FAILED"] {
        let event = format!(
            r#"event: job{}data: {{"id":"{id}","nodeId":"web-1","status":"{status}"}}"#,
            '\n'
        );
        assert!(text.contains(&event), "{status} missing from {text}");
    }
    app.eventually("job events in the node's activity", || async {
        let activity = app.get("/api/nodes/web-1/activity", Some(&admin.token)).await;
        let types: Vec<String> = activity.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect();
        ["job.started", "job.failed"]
            .iter()
            .all(|t| types.iter().any(|x| x == t))
            && !types.iter().any(|t| t == "job.queued" || t == "job.running")
    })
    .await;
    let activity = app.get("/api/nodes/web-1/activity", Some(&admin.token)).await;
    let severity_of = |kind: &str| {
        activity.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == kind)
            .map(|e| e["severity"].clone())
    };
    assert_eq!(severity_of("job.failed"), Some(json!("WARN")));
    assert_eq!(severity_of("job.started"), Some(json!("INFO")));
}

#[tokio::test]
async fn the_reaper_fails_a_job_past_its_timeout_and_gives_nodes_time_to_report_after_a_start() {
    let (app, admin, token) = setup().await;
    let slow = app
        .post(
            "/api/jobs",
            Some(&admin.token),
            json!({"nodeId": "web-1", "presetName": "slow"}),
        )
        .await;
    assert_eq!(slow.body["job"]["timeoutSeconds"], 1);
    let slow_id = slow.body["job"]["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    let now = hyprbox_store::now_ms();
    assert_eq!(
        hyprbox_server::jobs::reaper::reap(&app.state, now).await.unwrap(),
        0,
        "not yet"
    );
    assert_eq!(
        hyprbox_server::jobs::reaper::reap(&app.state, now + 2_000)
            .await
            .unwrap(),
        1
    );
    let failed = job(&app, &admin, &slow_id).await;
    assert_eq!(failed["status"], "FAILED");
    assert!(
        failed["stderr"].as_str().unwrap().contains("timeout of 1s"),
        "{failed}"
    );
    assert!(failed["error"].as_str().unwrap().contains("timeout"));

    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    // Right after a start every node looks long silent (the outage): the OFFLINE rule waits.
    assert_eq!(
        hyprbox_server::jobs::reaper::reap(&app.state, now + 11 * 60_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(job(&app, &admin, &id).await["status"], "RUNNING");
}

#[tokio::test]
async fn the_reaper_writes_its_reason_to_stderr_even_past_the_output_cap() {
    let (app, admin, token) = setup_with(&[("HYPRBOX_JOB_OUTPUT_MAX_BYTES", "10")]).await;
    let id = queue_slow(&app, &admin).await;
    claim(&app, &token).await;
    let full = output(&app, &token, &id, json!({"stderr": "0123456789abcdef"})).await;
    assert_eq!(full.status, StatusCode::NO_CONTENT);
    let later = hyprbox_store::now_ms() + 2_000;
    assert_eq!(
        hyprbox_server::jobs::reaper::reap(&app.state, later)
            .await
            .unwrap(),
        1
    );
    let failed = job(&app, &admin, &id).await;
    assert_eq!(failed["status"], "FAILED");
    let stderr = failed["stderr"].as_str().unwrap();
    assert!(stderr.starts_with("0123456789"), "{stderr}");
    assert!(
        stderr.contains("[hyprbox]") && stderr.contains("timeout of 1s"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_job_its_operator_asked_to_stop_ends_cancelled_when_the_reaper_ends_it() {
    let (app, admin, token) = setup().await;
    let mut socket = connect_agent(&app, &token, "").await.unwrap();
    let id = queue_slow(&app, &admin).await;
    assert_eq!(next_message(&mut socket).await["type"], "wakeup");
    claim(&app, &token).await;
    let cancel = app
        .post(&format!("/api/jobs/{id}/cancel"), Some(&admin.token), json!({}))
        .await;
    assert_eq!(cancel.status, StatusCode::ACCEPTED, "{}", cancel.text);
    assert_eq!(next_message(&mut socket).await["type"], "cancel");
    // The agent never answers: the timeout ends the job, as the operator wanted.
    let later = hyprbox_store::now_ms() + 2_000;
    assert_eq!(
        hyprbox_server::jobs::reaper::reap(&app.state, later)
            .await
            .unwrap(),
        1
    );
    let ended = job(&app, &admin, &id).await;
    assert_eq!(ended["status"], "CANCELLED", "{ended}");
    assert!(ended["error"].as_str().unwrap().contains("timeout"), "{ended}");
}

#[tokio::test]
async fn a_job_presumed_lost_when_its_node_went_offline_takes_its_agents_real_outcome_when_it_comes_back() {
    let (app, admin, token) = setup_with(&[("HYPRBOX_NODE_OFFLINE_AFTER", "1s")]).await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    app.eventually("the server up for longer than the OFFLINE delay", || async {
        app.state.started_at.elapsed() >= Duration::from_secs(1)
    })
    .await;
    let later = hyprbox_store::now_ms() + 5_000;
    assert_eq!(
        hyprbox_server::jobs::reaper::reap(&app.state, later)
            .await
            .unwrap(),
        1
    );
    let failed = job(&app, &admin, &id).await;
    assert_eq!(failed["status"], "FAILED");
    assert!(failed["stderr"].as_str().unwrap().contains("OFFLINE"), "{failed}");
    // The partition heals: the agent, which kept the job running, reports its output and outcome.
    let late = output(&app, &token, &id, json!({"stdout": "still here\n"})).await;
    assert_eq!(late.status, StatusCode::NO_CONTENT, "{}", late.text);
    let revived = job(&app, &admin, &id).await;
    assert_eq!(revived["status"], "RUNNING");
    assert!(revived["finishedAt"].is_null());
    let done = complete(&app, &token, &id, 0).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    let ended = job(&app, &admin, &id).await;
    assert_eq!(ended["status"], "SUCCEEDED");
    assert_eq!(ended["exitCode"], 0);
    assert!(
        ended["error"].as_str().unwrap().contains("presumed lost"),
        "{ended}"
    );
    assert!(
        ended["stdout"].as_str().unwrap().ends_with("still here\n"),
        "{ended}"
    );
    assert_eq!(
        complete(&app, &token, &id, 0).await.status,
        StatusCode::CONFLICT,
        "a completed job takes no second completion"
    );
}

#[tokio::test]
async fn a_job_presumed_lost_may_be_completed_without_more_output_and_keeps_a_failure_once() {
    let (app, admin, token) = setup_with(&[("HYPRBOX_NODE_OFFLINE_AFTER", "1s")]).await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    app.eventually("the server up for longer than the OFFLINE delay", || async {
        app.state.started_at.elapsed() >= Duration::from_secs(1)
    })
    .await;
    let later = hyprbox_store::now_ms() + 5_000;
    hyprbox_server::jobs::reaper::reap(&app.state, later)
        .await
        .unwrap();
    assert_eq!(job(&app, &admin, &id).await["status"], "FAILED");
    assert_eq!(complete(&app, &token, &id, 3).await.status, StatusCode::OK);
    let ended = job(&app, &admin, &id).await;
    assert_eq!(ended["status"], "FAILED");
    assert_eq!(ended["exitCode"], 3);
    assert_eq!(
        complete(&app, &token, &id, 0).await.status,
        StatusCode::CONFLICT,
        "a real failure is final: no second completion revives it"
    );
    assert_eq!(
        output(&app, &token, &id, json!({"stdout": "x"})).await.status,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn the_reaper_ends_the_jobs_of_a_node_that_is_gone() {
    let (app, admin, token) = setup().await;
    let running = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    let queued = queue(&app, &admin, "b").await["id"].as_str().unwrap().to_string();
    app.state.fleet.remove("web-1");
    assert_eq!(
        hyprbox_server::jobs::reaper::reap(&app.state, hyprbox_store::now_ms())
            .await
            .unwrap(),
        2
    );
    let failed = job(&app, &admin, &running).await;
    assert_eq!(failed["status"], "FAILED");
    assert!(failed["stderr"].as_str().unwrap().contains("deleted"), "{failed}");
    assert_eq!(job(&app, &admin, &queued).await["status"], "CANCELLED");
}

#[tokio::test]
async fn deleting_a_node_cancels_its_queued_jobs() {
    let (app, admin, _) = setup().await;
    let id = queue(&app, &admin, "a").await["id"].as_str().unwrap().to_string();
    let deleted = app
        .call(
            reqwest::Method::DELETE,
            "/api/nodes/web-1",
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let cancelled = job(&app, &admin, &id).await;
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(cancelled["error"], "the node was deleted");
    // The cancel is no activity of the node any more: nothing of it comes back.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut conn = app.state.store.conn().await.unwrap();
    let events = hyprbox_store::nodes::events(&mut conn, "web-1", 100)
        .await
        .unwrap();
    assert!(events.is_empty(), "{events:?}");
}

#[tokio::test]
async fn finished_jobs_past_their_retention_go_with_their_output_but_each_node_keeps_its_newest() {
    let (app, admin, token) = setup_with(&[("HYPRBOX_JOBS_KEPT_PER_NODE", "1")]).await;
    let mut ids = Vec::new();
    for who in ["a", "b", "c"] {
        let id = queue(&app, &admin, who).await["id"].as_str().unwrap().to_string();
        claim(&app, &token).await;
        output(&app, &token, &id, json!({"stdout": format!("{who}\n")})).await;
        assert_eq!(complete(&app, &token, &id, 0).await.status, StatusCode::OK);
        ids.push(id);
    }
    let running = queue(&app, &admin, "d").await["id"].as_str().unwrap().to_string();
    claim(&app, &token).await;
    let day = 86_400_000;
    let now = hyprbox_store::now_ms();
    assert_eq!(
        hyprbox_server::jobs::retention::prune_jobs(&app.state, now + 30 * day)
            .await
            .unwrap(),
        0,
        "younger than the 90-day default"
    );
    // The running job counts as the node's newest, so all three finished ones may go but…
    let gone = hyprbox_server::jobs::retention::prune_jobs(&app.state, now + 91 * day)
        .await
        .unwrap();
    assert_eq!(gone, 3);
    for id in &ids {
        let answer = app.get(&format!("/api/jobs/{id}"), Some(&admin.token)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        let raw = app
            .get(&format!("/api/jobs/{id}/output/raw"), Some(&admin.token))
            .await;
        assert_eq!(raw.status, StatusCode::NOT_FOUND);
    }
    // …an unfinished job is never pruned, whatever its age.
    assert_eq!(job(&app, &admin, &running).await["status"], "RUNNING");
}

#[tokio::test]
async fn the_newest_finished_jobs_of_a_node_are_kept_whatever_their_age() {
    let (app, admin, token) = setup_with(&[("HYPRBOX_JOBS_KEPT_PER_NODE", "2")]).await;
    let mut ids = Vec::new();
    for who in ["a", "b", "c"] {
        let id = queue(&app, &admin, who).await["id"].as_str().unwrap().to_string();
        claim(&app, &token).await;
        assert_eq!(complete(&app, &token, &id, 1).await.status, StatusCode::OK);
        ids.push(id);
    }
    let later = hyprbox_store::now_ms() + 91 * 86_400_000;
    assert_eq!(
        hyprbox_server::jobs::retention::prune_jobs(&app.state, later)
            .await
            .unwrap(),
        1
    );
    let mut statuses = Vec::new();
    for id in &ids {
        statuses.push(
            app.get(&format!("/api/jobs/{id}"), Some(&admin.token))
                .await
                .status,
        );
    }
    assert_eq!(
        statuses,
        [StatusCode::NOT_FOUND, StatusCode::OK, StatusCode::OK],
        "the oldest went, the newest two stay"
    );
}
