//! `hyprbox simulate` against a real server: it mints a token, fills the fleet and reports.

use std::process::Command;

use hyprbox_server::{Application, Settings};
use hyprbox_store::testing::TestDatabase;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "correct horse battery";

async fn server() -> (String, TestDatabase, CancellationToken, hyprbox_server::AppState) {
    let db = TestDatabase::new().await;
    let url = db.url.clone();
    let settings = Settings::from_lookup(|k| match k {
        "SECRET_KEY" => Some("simulate-test-secret".into()),
        "DATABASE_URL" => Some(url.clone()),
        _ => None,
    })
    .unwrap();
    let app = Application::build(settings).await.unwrap();
    let state = app.state().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(app.serve(listener, stop.clone()));
    let client = reqwest::Client::new();
    let registered = client
        .post(format!("{base}/api/auth/register"))
        .json(&serde_json::json!({"email": "ops@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert!(registered.status().is_success());
    (base, db, stop, state)
}

#[tokio::test]
async fn simulated_agents_register_and_the_summary_counts_every_heartbeat() {
    let (base, _db, stop, app) = server().await;
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_hyprbox"))
            .args([
                "simulate",
                "--server",
                &base,
                "--agents",
                "20",
                "--interval",
                "0.2",
                "--duration",
                "2",
                "--json",
            ])
            .env("HYPRBOX_EMAIL", "ops@example.com")
            .env("HYPRBOX_PASSWORD", PASSWORD)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["agents"], 20);
    assert_eq!(summary["errors"], 0);
    let accepted = summary["accepted"].as_u64().unwrap();
    assert_eq!(summary["sent"].as_u64().unwrap(), accepted);
    assert!(accepted >= 100, "about 20 agents x 10 beats: {summary}");
    assert!(summary["latencyMs"]["p99"].as_f64().unwrap() > 0.0);
    assert!(summary["ratePerSec"].as_f64().unwrap() > 0.0);

    let nodes = app
        .fleet
        .map_sorted(|s| (s.node.architecture.clone(), s.sparks.len()));
    assert_eq!(nodes.len(), 20);
    assert_eq!(nodes[0].0, "sim-00001");
    assert_eq!(nodes[0].1.0.as_deref(), Some("x86_64"));
    assert!(nodes.iter().all(|(_, (_, sparks))| *sparks >= 5));
    stop.cancel();
}

#[tokio::test]
async fn simulate_without_credentials_says_what_it_needs() {
    let output = Command::new(env!("CARGO_BIN_EXE_hyprbox"))
        .args([
            "simulate",
            "--server",
            "http://127.0.0.1:9",
            "--agents",
            "1",
            "--duration",
            "1",
        ])
        .env_remove("HYPRBOX_TOKEN")
        .env_remove("HYPRBOX_EMAIL")
        .env_remove("HYPRBOX_PASSWORD")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--token"));
}

#[tokio::test]
async fn with_jobs_simulated_agents_claim_a_queued_job_stream_its_steps_and_complete_it() {
    let (base, _db, stop, _app) = server().await;
    let client = reqwest::Client::new();
    let login: serde_json::Value = client
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({"email": "ops@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwt = login["token"].as_str().unwrap().to_string();
    // The node must exist before a job can be queued for it: one short run registers the fleet.
    let run = |seconds: &'static str| {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_hyprbox"))
                .args([
                    "simulate",
                    "--server",
                    &base,
                    "--agents",
                    "2",
                    "--interval",
                    "0.2",
                ])
                .args(["--duration", seconds, "--jobs", "--json", "--prefix", "demo"])
                .env("HYPRBOX_EMAIL", "ops@example.com")
                .env("HYPRBOX_PASSWORD", PASSWORD)
                .output()
                .unwrap()
        })
    };
    assert!(run("1").await.unwrap().status.success());
    let created: serde_json::Value = client
        .post(format!("{base}/api/jobs"))
        .bearer_auth(&jwt)
        .json(&serde_json::json!({"nodeId": "demo-00001", "presetName": "disk-cleanup"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["job"]["id"].as_str().unwrap().to_string();
    let output = run("12").await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["jobsRun"], 1);
    let job: serde_json::Value = client
        .get(format!("{base}/api/jobs/{id}"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["job"]["status"], "SUCCEEDED");
    let stdout = job["job"]["stdout"].as_str().unwrap();
    assert!(stdout.contains("==> step 1/"), "{stdout}");
    assert!(stdout.contains("done (simulated)"), "{stdout}");
    stop.cancel();
}
