//! The whole agent against a mock server: heartbeats with the inventory on first contact only, a
//! job pulled and completed, and the WebSocket's wakeups and cancels.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use hyprbox_agent::Config;
use hyprbox_agent::jobs::Event;
use hyprbox_proto::jobs::{ClaimedJob, PendingBody};
use hyprbox_proto::nodes::{NodeConfig, NodeConfigBody};
use hyprbox_proto::{HeartbeatAck, headers};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The whole agent running against a mock server, with a fresh state directory.
struct Agent {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Agent {
    fn start(server: &MockServer, token: &str, node_id: &str, poll_interval: Duration) -> Agent {
        let state_dir = std::env::temp_dir().join(format!("hyprbox-agent-{node_id}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state_dir);
        let config = Config {
            server: server.uri(),
            token: token.into(),
            node_id: node_id.into(),
            region: None,
            interval: Duration::from_secs(30),
            poll_interval,
            state_dir,
            kill_grace: Duration::from_secs(2),
            output_max: hyprbox_agent::spool::DEFAULT_OUTPUT_MAX,
            docker_socket: "/nonexistent/hyprbox-test/docker.sock".into(),
            insecure_http: false,
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(hyprbox_agent::run_until(config, shutdown.clone()));
        Agent { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the agent stops on shutdown")
            .unwrap()
            .unwrap();
    }
}

// The mock's answers are the protocol's own types, so a renamed field fails here too.
fn ack(node_id: &str) -> HeartbeatAck {
    HeartbeatAck {
        received: true,
        node_id: node_id.into(),
    }
}

fn every_5_s() -> NodeConfigBody {
    NodeConfigBody {
        config: NodeConfig {
            heartbeat_interval: Some(5),
            ..NodeConfig::default()
        },
    }
}

async fn bodies(server: &MockServer, route: &str) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == route)
        .map(|r| r.body_json().unwrap_or(Value::Null))
        .collect()
}

#[tokio::test]
async fn the_agent_beats_pulls_a_job_and_sends_its_inventory_only_on_first_contact() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/nodes/heartbeat"))
        .respond_with(ResponseTemplate::new(202).set_body_json(ack("agent-1")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/nodes/me/config"))
        .respond_with(ResponseTemplate::new(200).set_body_json(every_5_s()))
        .mount(&server)
        .await;
    // A fleet-wide token: no WebSocket, the agent polls.
    Mock::given(method("GET"))
        .and(path("/api/agent/ws"))
        .respond_with(ResponseTemplate::new(403))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/jobs/pending"))
        .and(query_param("nodeId", "agent-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(PendingBody {
            job: Some(ClaimedJob {
                id: "job-1".into(),
                preset_name: "hello".into(),
                script: "echo hello from $HYPRBOX_JOB_ID".into(),
                variables: json!({}),
                timeout_seconds: 60,
            }),
        }))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/jobs/pending"))
        .respond_with(ResponseTemplate::new(200).set_body_json(PendingBody { job: None }))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/jobs/job-1/output"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/jobs/job-1/complete"))
        .respond_with(ResponseTemplate::new(200).set_body_json(common::completed("job-1", "agent-1")))
        .mount(&server)
        .await;

    let agent = Agent::start(&server, "hbnt_fleet", "agent-1", Duration::from_secs(1));

    wait_for("the job's completion", Duration::from_secs(15), async || {
        !bodies(&server, "/api/jobs/job-1/complete").await.is_empty()
    })
    .await;
    // The server's heartbeat_interval (5 s) replaces HYPRBOX_INTERVAL (30 s).
    wait_for("a second heartbeat", Duration::from_secs(12), async || {
        bodies(&server, "/api/nodes/heartbeat").await.len() >= 2
    })
    .await;
    agent.stop().await;

    let beats = bodies(&server, "/api/nodes/heartbeat").await;
    assert_eq!(beats[0]["node_id"], "agent-1");
    assert!(beats[0]["hostname"].is_string() && beats[0]["agent_version"].is_string());
    assert!(
        beats[1]["hostname"].is_null(),
        "unchanged inventory is not resent: {}",
        beats[1]
    );
    assert!(beats[1]["cpu_percent"].is_number() && beats[1]["load_avg"].is_array());

    let output: String = bodies(&server, "/api/jobs/job-1/output")
        .await
        .iter()
        .chain(bodies(&server, "/api/jobs/job-1/complete").await.iter())
        .filter_map(|b| b["stdout"].as_str().map(str::to_string))
        .collect();
    assert_eq!(output, "hello from job-1\n");
    assert_eq!(
        bodies(&server, "/api/jobs/job-1/complete").await[0]["exitCode"],
        0
    );
}

#[tokio::test]
async fn the_agent_sends_its_inventory_again_when_the_server_asks_for_it() {
    let server = MockServer::start().await;
    // The first answer says the server has no inventory for the node (it was deleted, say).
    Mock::given(method("POST"))
        .and(path("/api/nodes/heartbeat"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header(headers::INVENTORY_WANTED, "true")
                .set_body_json(ack("agent-2")),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/nodes/heartbeat"))
        .respond_with(ResponseTemplate::new(202).set_body_json(ack("agent-2")))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/nodes/me/config"))
        .respond_with(ResponseTemplate::new(200).set_body_json(every_5_s()))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/jobs/pending"))
        .respond_with(ResponseTemplate::new(200).set_body_json(PendingBody { job: None }))
        .mount(&server)
        .await;
    let agent = Agent::start(&server, "hbnt_pinned", "agent-2", Duration::from_secs(30));
    wait_for("a second heartbeat", Duration::from_secs(12), async || {
        bodies(&server, "/api/nodes/heartbeat").await.len() >= 2
    })
    .await;
    agent.stop().await;
    let beats = bodies(&server, "/api/nodes/heartbeat").await;
    assert!(beats[0]["hostname"].is_string(), "{}", beats[0]);
    assert!(
        beats[1]["hostname"].is_string() && beats[1]["agent_version"].is_string(),
        "the inventory again: {}",
        beats[1]
    );
}

// tungstenite's handshake callback returns its (large) error response type by value.
#[allow(clippy::result_large_err)]
#[tokio::test]
async fn the_websocket_delivers_wakeups_and_cancels_with_the_token_in_the_header() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(None::<(String, String)>));
    let server = tokio::spawn({
        let seen = seen.clone();
        async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut socket = tokio_tungstenite::accept_hdr_async(
                stream,
                |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
                    let auth = request.headers()["authorization"].to_str().unwrap().to_string();
                    *seen.lock().unwrap() = Some((auth, request.uri().to_string()));
                    Ok(response)
                },
            )
            .await
            .unwrap();
            socket
                .send(Message::text(r#"{"type":"cancel","jobId":"j9"}"#))
                .await
                .unwrap();
            socket.send(Message::text(r#"{"type":"wakeup"}"#)).await.unwrap();
            socket
                .send(Message::text(r#"{"type":"later-feature"}"#))
                .await
                .unwrap();
            socket
                .send(Message::text(
                    r#"{"type":"config","config":{"tls_paths":["/etc/ssl/a.pem"],"scan_interval":60}}"#,
                ))
                .await
                .unwrap();
            // Keep the socket open until the agent goes.
            while futures_util::StreamExt::next(&mut socket).await.is_some() {}
        }
    });
    let (tx, mut rx) = mpsc::channel(8);
    let (node_config, mut node_config_rx) = tokio::sync::watch::channel(NodeConfig::default());
    let shutdown = CancellationToken::new();
    let ws = tokio::spawn(hyprbox_agent::ws::run(
        format!("http://{address}"),
        "hbnt_pinned".into(),
        "n-1".into(),
        tx,
        node_config,
        shutdown.clone(),
    ));
    let mut events = Vec::new();
    while events.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("events from the socket")
            .unwrap();
        events.push(event);
    }
    assert_eq!(
        events,
        [Event::Wakeup, Event::Cancel("j9".into()), Event::Wakeup],
        "a wakeup on connect (jobs queued while away), then what the server sent"
    );
    tokio::time::timeout(Duration::from_secs(10), node_config_rx.changed())
        .await
        .expect("the pushed config")
        .unwrap();
    let pushed = node_config_rx.borrow().clone();
    assert_eq!(pushed.tls_paths, Some(vec!["/etc/ssl/a.pem".to_string()]));
    assert_eq!(pushed.scan_interval, Some(60));
    let (auth, uri) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(auth, "Bearer hbnt_pinned");
    assert_eq!(uri, "/api/agent/ws?nodeId=n-1");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), ws)
        .await
        .expect("the socket task stops on shutdown")
        .unwrap();
    server.abort();
}

#[tokio::test]
async fn a_fleet_wide_token_refused_the_websocket_leaves_the_agent_polling() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/agent/ws"))
        .respond_with(ResponseTemplate::new(403))
        .expect(1)
        .mount(&server)
        .await;
    let (tx, _rx) = mpsc::channel(8);
    let (node_config, _) = tokio::sync::watch::channel(NodeConfig::default());
    let ws = hyprbox_agent::ws::run(
        server.uri(),
        "hbnt_fleet".into(),
        "n".into(),
        tx,
        node_config,
        CancellationToken::new(),
    );
    tokio::time::timeout(Duration::from_secs(5), ws)
        .await
        .expect("a 403 is final: no reconnect loop");
}
