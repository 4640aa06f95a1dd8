//! The `hyprbox-agent` binary itself: `--once` against a mock server, and its configuration errors.

use std::process::Command;

use serde_json::Value;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn agent() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hyprbox-agent"));
    // Never pick up an agent.env installed on the machine running the tests.
    command
        .args(["--config", "/dev/null"])
        .env_remove("HYPRBOX_SERVER")
        .env_remove("HYPRBOX_URL")
        .env_remove("HYPRBOX_TOKEN")
        .env_remove("HYPRBOX_NODE_ID");
    command
}

#[tokio::test]
async fn once_sends_one_heartbeat_with_the_inventory_and_prints_the_answer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/nodes/heartbeat"))
        .and(header("authorization", "Bearer hbnt_once"))
        .respond_with(
            ResponseTemplate::new(202).set_body_json(hyprbox_proto::HeartbeatAck {
                received: true,
                node_id: "once-1".into(),
            }),
        )
        .expect(1)
        .mount(&server)
        .await;
    let uri = server.uri();
    let output = tokio::task::spawn_blocking(move || {
        agent()
            .arg("--once")
            .env("HYPRBOX_SERVER", uri)
            .env("HYPRBOX_TOKEN", "hbnt_once")
            .env("HYPRBOX_NODE_ID", "once-1")
            .env("HYPRBOX_REGION", "lab")
            .env(
                "HYPRBOX_STATE_DIR",
                std::env::temp_dir().join("hyprbox-agent-once-state"),
            )
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("\"received\":true"), "{stdout}");
    assert!(!stdout.contains("hbnt_once") && !String::from_utf8_lossy(&output.stderr).contains("hbnt_once"));

    let requests = server.received_requests().await.unwrap();
    let body: Value = requests[0].body_json().unwrap();
    assert_eq!(body["node_id"], "once-1");
    assert_eq!(body["region"], "lab");
    assert_eq!(body["status"], "ok");
    for field in [
        "hostname",
        "os",
        "kernel",
        "architecture",
        "agent_version",
        "ip",
        "cpu_percent",
        "ram_percent",
        "disk_percent",
        "load_avg",
        "uptime_seconds",
        "mem_total_bytes",
        "disk_total_bytes",
    ] {
        assert!(!body[field].is_null(), "{field} missing from {body}");
    }
    let hb: hyprbox_proto::Heartbeat = serde_json::from_value(body).unwrap();
    hb.validate().unwrap();
}

#[tokio::test]
async fn once_exits_1_when_the_token_is_refused() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/nodes/heartbeat"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let uri = server.uri();
    let output = tokio::task::spawn_blocking(move || {
        agent()
            .arg("--once")
            .env("HYPRBOX_SERVER", uri)
            .env("HYPRBOX_TOKEN", "hbnt_revoked")
            .env("HYPRBOX_NODE_ID", "n1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("401"), "{stderr}");
}

#[test]
fn a_missing_server_is_a_configuration_error() {
    let output = agent().env("HYPRBOX_TOKEN", "t").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("HYPRBOX_SERVER"));
}

#[test]
fn help_lists_every_setting_the_agent_reads() {
    let output = agent().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let source = include_str!("../src/config.rs");
    // Every "HYPRBOX_…" literal in the configuration code is documented.
    let mut keys: Vec<&str> = source
        .split('"')
        .filter(|t| t.starts_with("HYPRBOX_") && t.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for key in &keys {
        assert!(help.contains(key), "{key} is missing from --help:\n{help}");
    }
    let read = keys.len();
    assert!(read >= 10, "found only {read} settings in config.rs: {keys:?}");
}
