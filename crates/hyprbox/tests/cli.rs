//! The operator CLI as a user runs it: the real `hyprbox` binary against a real server (in this
//! process, on a free port, over a fresh database), with its session in a temporary config dir.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::Server;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// A server with its first account (ADMIN) registered.
async fn server() -> Server {
    let server = common::launch().await;
    let url = &server.url;
    let client = reqwest::Client::new();
    let registered = client
        .post(format!("{url}/api/auth/register"))
        .json(&json!({"email": "ops@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    server
}

fn config_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hyprbox-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `hyprbox <args>` with `config` as its config dir (off the async runtime's threads).
async fn hyprbox(config: &Path, args: &[&str]) -> Output {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| (*a).to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hyprbox"))
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HYPRBOX_CONFIG_DIR", &config)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn login(server: &Server, config: &Path) {
    let out = hyprbox(
        config,
        &[
            "login",
            "--server",
            &server.url,
            "--email",
            "ops@example.com",
            "--password",
            PASSWORD,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn login_saves_a_private_session_that_the_other_commands_use() {
    let server = server().await;
    let config = config_dir("login");
    let out = hyprbox(&config, &["nodes", "--server", &server.url]).await;
    assert_eq!(out.status.code(), Some(3), "not signed in: {}", stderr(&out));
    assert!(stderr(&out).contains("hyprbox login"));

    let wrong = hyprbox(
        &config,
        &[
            "login",
            "--server",
            &server.url,
            "--email",
            "ops@example.com",
            "--password",
            "nope nope nope",
        ],
    )
    .await;
    assert_eq!(wrong.status.code(), Some(3));
    assert_eq!(
        stderr(&wrong).lines().count(),
        1,
        "one clear line: {}",
        stderr(&wrong)
    );

    login(&server, &config).await;
    let session = config.join("session.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&session).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&session).unwrap()).unwrap();
    assert_eq!(saved["server"], server.url.as_str());

    let table = hyprbox(&config, &["nodes"]).await;
    assert!(table.status.success(), "{}", stderr(&table));
    assert!(stdout(&table).starts_with("NODE"));
    let json = hyprbox(&config, &["nodes", "--json"]).await;
    let body: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(body["nodes"], json!([]));
}

#[tokio::test]
async fn an_unreachable_server_is_exit_code_6() {
    let config = config_dir("unreachable");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = hyprbox(
        &config,
        &["login", "--server", &url, "--email", "a@b.c", "--password", "x"],
    )
    .await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach"));
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked() {
    let server = server().await;
    let config = config_dir("tokens");
    login(&server, &config).await;
    let created = hyprbox(
        &config,
        &["tokens", "create", "--name", "web", "--node", "web-1", "--json"],
    )
    .await;
    assert!(created.status.success(), "{}", stderr(&created));
    let body: Value = serde_json::from_slice(&created.stdout).unwrap();
    assert!(body["token"].as_str().unwrap().starts_with("hbnt_"));
    let id = body["meta"]["id"].as_str().unwrap().to_string();
    let list = hyprbox(&config, &["tokens", "list"]).await;
    assert!(
        stdout(&list).contains(&id) && stdout(&list).contains("web-1"),
        "{}",
        stdout(&list)
    );
    let revoked = hyprbox(&config, &["tokens", "revoke", &id]).await;
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let unknown = hyprbox(
        &config,
        &["tokens", "revoke", "0190a0a0-0000-7000-8000-000000000000"],
    )
    .await;
    assert_eq!(unknown.status.code(), Some(4));
}

#[tokio::test]
async fn users_are_managed_by_an_admin() {
    let server = server().await;
    let config = config_dir("users");
    login(&server, &config).await;
    let created = hyprbox(
        &config,
        &[
            "users",
            "create",
            "--email",
            "vic@example.com",
            "--role",
            "viewer",
            "--password",
            "another good password",
        ],
    )
    .await;
    assert!(created.status.success(), "{}", stderr(&created));
    let list = hyprbox(&config, &["users", "list", "--json"]).await;
    let body: Value = serde_json::from_slice(&list.stdout).unwrap();
    let vic = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "vic@example.com")
        .unwrap();
    let id = vic["id"].as_str().unwrap().to_string();
    let promoted = hyprbox(&config, &["users", "role", &id, "operator", "--json"]).await;
    assert!(promoted.status.success(), "{}", stderr(&promoted));
    let promoted: Value = serde_json::from_slice(&promoted.stdout).unwrap();
    assert_eq!(promoted["user"]["role"], "OPERATOR", "{promoted}");
    let scripted = hyprbox(
        &config,
        &[
            "users",
            "create",
            "--email",
            "bot@example.com",
            "--password",
            "another good password",
            "--json",
        ],
    )
    .await;
    let scripted: Value = serde_json::from_slice(&scripted.stdout).unwrap();
    assert_eq!(scripted["user"]["email"], "bot@example.com", "{scripted}");
    let bad_role = hyprbox(&config, &["users", "role", &id, "king"]).await;
    assert_eq!(
        bad_role.status.code(),
        Some(1),
        "a 400 is a failure: {}",
        stderr(&bad_role)
    );
    assert!(hyprbox(&config, &["users", "delete", &id]).await.status.success());
    let gone = hyprbox(&config, &["users", "delete", &id]).await;
    assert_eq!(gone.status.code(), Some(4));
}

/// Mints a token pinned to `node` with the CLI and registers the node with one heartbeat.
async fn agent_node(server: &Server, config: &Path, node: &str) -> String {
    let minted = hyprbox(
        config,
        &["tokens", "create", "--name", "agent", "--node", node, "--json"],
    )
    .await;
    let token = serde_json::from_slice::<Value>(&minted.stdout).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let beat = reqwest::Client::new()
        .post(format!("{}/api/nodes/heartbeat", server.url))
        .bearer_auth(&token)
        .json(&json!({"node_id": node, "cpu_percent": 1, "ram_percent": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(beat.status(), 202);
    token
}

/// Plays the agent of `node` for one job: claims it, sends output, completes with `exit_code`.
async fn fake_agent(url: &str, token: &str, node: &str, exit_code: i64) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let job = loop {
        let pending: Value = client
            .get(format!("{url}/api/jobs/pending?nodeId={node}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !pending["job"].is_null() {
            break pending["job"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no job to claim");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let id = job["id"].as_str().unwrap();
    for piece in [
        json!({"stdout": "line one\n"}),
        json!({"stderr": "a warning\n"}),
        json!({"stdout": "line two\n"}),
    ] {
        let answer = client
            .post(format!("{url}/api/jobs/{id}/output"))
            .bearer_auth(token)
            .json(&piece)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 204);
    }
    let done = client
        .post(format!("{url}/api/jobs/{id}/complete"))
        .bearer_auth(token)
        .json(&json!({"exitCode": exit_code}))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
}

#[tokio::test]
async fn jobs_run_follow_streams_the_output_and_exits_with_the_job_exit_code() {
    let server = server().await;
    let config = config_dir("follow");
    login(&server, &config).await;
    let token = agent_node(&server, &config, "web-1").await;

    for (exit_code, expected) in [(0, Some(0)), (3, Some(3))] {
        let agent = tokio::spawn({
            let (url, token) = (server.url.clone(), token.clone());
            async move { fake_agent(&url, &token, "web-1", exit_code).await }
        });
        let run = hyprbox(
            &config,
            &[
                "jobs",
                "run",
                "web-1",
                "disk-cleanup",
                "--var",
                "dry_run=true",
                "--follow",
            ],
        )
        .await;
        agent.await.unwrap();
        assert_eq!(run.status.code(), expected, "{}", stderr(&run));
        assert_eq!(stdout(&run), "line one\nline two\n");
        assert!(stderr(&run).contains("a warning"), "{}", stderr(&run));
    }

    let list = hyprbox(&config, &["jobs", "list", "--json"]).await;
    let jobs: Value = serde_json::from_slice(&list.stdout).unwrap();
    let jobs = jobs["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["status"], "FAILED");
    let id = jobs[0]["id"].as_str().unwrap();
    let logs = hyprbox(&config, &["jobs", "logs", id]).await;
    assert_eq!(stdout(&logs), "line one\nline two\n");
    let show = hyprbox(&config, &["jobs", "show", id]).await;
    assert!(
        stdout(&show).contains("FAILED") && stdout(&show).contains("a warning"),
        "{}",
        stdout(&show)
    );
    let cancel = hyprbox(&config, &["jobs", "cancel", id]).await;
    assert_eq!(
        cancel.status.code(),
        Some(5),
        "a finished job: {}",
        stderr(&cancel)
    );
    let queued = hyprbox(&config, &["jobs", "run", "web-1", "disk-cleanup"]).await;
    assert!(stdout(&queued).contains("queued"), "{}", stdout(&queued));
    let unknown_preset = hyprbox(&config, &["jobs", "run", "web-1", "nope"]).await;
    assert_eq!(unknown_preset.status.code(), Some(4));
    let missing = hyprbox(&config, &["jobs", "show", "0190a0a0-0000-7000-8000-000000000000"]).await;
    assert_eq!(missing.status.code(), Some(4));
    let usage = hyprbox(&config, &["jobs", "run", "web-1"]).await;
    assert_eq!(usage.status.code(), Some(2));
}

#[tokio::test]
async fn findings_are_listed_worst_first_shown_with_a_fix_snoozed_resolved_and_summarised() {
    let server = server().await;
    let config = config_dir("findings");
    login(&server, &config).await;
    let token = agent_node(&server, &config, "db-1").await;
    let client = reqwest::Client::new();
    let posted = client
        .post(format!("{}/api/findings", server.url))
        .bearer_auth(&token)
        .json(&json!({"nodeId": "db-1", "findings": [
            {"type": "disk.full", "key": "/", "severity": "CRITICAL", "title": "Disk / is 97% full", "message": "97% used"},
            {"type": "tls.expiring", "key": "/etc/ssl/a.pem", "severity": "WARN", "title": "Certificate expires in 20 days", "message": "a.pem"}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202);

    let table = hyprbox(&config, &["findings"]).await;
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    let critical = text.find("CRITICAL").expect("the critical finding");
    let warn = text.find("WARN ").expect("the warning");
    assert!(critical < warn, "worst first: {text}");
    let listed = hyprbox(&config, &["findings", "--json", "--severity", "critical"]).await;
    let body: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let findings = body["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1);
    let id = findings[0]["id"].as_str().unwrap().to_string();

    let show = hyprbox(&config, &["findings", "show", &id]).await;
    assert!(show.status.success(), "{}", stderr(&show));
    assert!(
        stdout(&show).contains("hyprbox jobs run db-1 disk-cleanup"),
        "{}",
        stdout(&show)
    );
    let summary = hyprbox(&config, &["findings", "summary"]).await;
    assert!(stdout(&summary).contains("AT_RISK"), "{}", stdout(&summary));

    let snoozed = hyprbox(&config, &["findings", "snooze", &id, "--hours", "2"]).await;
    assert!(snoozed.status.success(), "{}", stderr(&snoozed));
    let bad = hyprbox(&config, &["findings", "snooze", &id, "--hours", "9999"]).await;
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    let resolved = hyprbox(&config, &["findings", "resolve", &id, "--json"]).await;
    assert!(resolved.status.success(), "{}", stderr(&resolved));
    let resolved: Value = serde_json::from_slice(&resolved.stdout).unwrap();
    assert_eq!(resolved["finding"]["status"], "RESOLVED", "{resolved}");
    let missing = hyprbox(
        &config,
        &["findings", "show", "0190a0a0-0000-7000-8000-000000000000"],
    )
    .await;
    assert_eq!(missing.status.code(), Some(4));
    let after = hyprbox(&config, &["findings", "summary", "--json"]).await;
    let after: Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(after["summary"][0]["bucket"], "ATTENTION", "{after}");
}
