//! Every message of the protocol through the real server routes: the typed client
//! (`hyprbox-client`) sends `hyprbox-proto`'s requests to a server launched in this process and
//! decodes its answers into `hyprbox-proto`'s types, so a field renamed on either side fails here.
//! The agent's WebSocket messages are read with the same enum the agent uses.

mod common;

use std::time::Duration;

use common::Server;
use futures_util::StreamExt;
use hyprbox_client::{Client, Error, FindingQuery, JobQuery};
use hyprbox_proto::agent::AgentMessage;
use hyprbox_proto::auth::{CreateUserRequest, LoginRequest, RegisterRequest, RoleRequest};
use hyprbox_proto::findings::{ReportBody, ReportedFinding, SnoozeBody};
use hyprbox_proto::jobs::events::{self, DoneEvent, StatusEvent};
use hyprbox_proto::jobs::{CompleteJob, CreateJob, OutputPiece};
use hyprbox_proto::tokens::CreateTokenRequest;
use hyprbox_proto::{ErrorBody, Heartbeat, headers};
use serde_json::json;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

const PASSWORD: &str = "correct horse battery";

/// An admin's client and a node token pinned to `node_id`.
async fn signed_in(server: &Server, node_id: &str) -> (Client, String) {
    let anonymous = Client::new(&server.url, None).unwrap();
    let registered = anonymous
        .register(&RegisterRequest {
            email: "ops@example.com".into(),
            password: PASSWORD.into(),
            name: Some("Ops".into()),
        })
        .await
        .unwrap();
    assert_eq!(registered.user.role, "ADMIN");
    let session = anonymous
        .login(&LoginRequest {
            email: "ops@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
    assert_eq!(session.user.id, registered.user.id);
    let admin = Client::new(&server.url, Some(&session.token)).unwrap();
    let minted = admin
        .create_token(&CreateTokenRequest {
            name: "protocol".into(),
            node_id: Some(node_id.into()),
        })
        .await
        .unwrap();
    assert!(minted.token.starts_with("hbnt_"));
    assert_eq!(minted.meta.node_id.as_deref(), Some(node_id));
    (admin, minted.token)
}

async fn next_message(
    socket: &mut (
             impl futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin
         ),
) -> AgentMessage {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket stays open")
            .unwrap();
        if let Message::Text(text) = frame {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn accounts_tokens_heartbeats_and_node_config_round_trip_through_the_routes() {
    let server = common::launch().await;
    let (admin, node_token) = signed_in(&server, "proto-1").await;

    let viewer = admin
        .create_user(&CreateUserRequest {
            email: "viewer@example.com".into(),
            name: Some("Viewer".into()),
            role: "VIEWER".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
    assert_eq!(viewer.user.full_name, "Viewer");
    let promoted = admin
        .set_role(
            &viewer.user.id,
            &RoleRequest {
                role: "OPERATOR".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(promoted.user.role, "OPERATOR");
    assert_eq!(admin.users().await.unwrap().users.len(), 2);
    admin.delete_user(&viewer.user.id).await.unwrap();
    assert!(matches!(
        admin.delete_user(&viewer.user.id).await,
        Err(Error::NotFound { .. })
    ));

    let agent = Client::new(&server.url, Some(&node_token)).unwrap();
    // A node the server has no inventory for is asked for it.
    let bare = agent
        .heartbeat(&Heartbeat {
            node_id: "proto-1".into(),
            cpu_percent: Some(12.5),
            ..Heartbeat::default()
        })
        .await
        .unwrap();
    assert!(bare.ack.received);
    assert_eq!(bare.ack.node_id, "proto-1");
    assert!(bare.inventory_wanted, "the server has no inventory yet");
    let full = agent
        .heartbeat(&Heartbeat {
            node_id: "proto-1".into(),
            hostname: Some("proto-1.example".into()),
            os: Some("Debian 12".into()),
            cpu_percent: Some(20.0),
            ram_percent: Some(30.0),
            disk_percent: Some(40.0),
            load_avg: Some([0.5, 0.4, 0.3]),
            mem_total_bytes: Some(8 << 30),
            ..Heartbeat::default()
        })
        .await
        .unwrap();
    assert!(!full.inventory_wanted);
    let nodes = admin.nodes().await.unwrap().nodes;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].node_id, "proto-1");
    assert_eq!(nodes[0].hostname.as_deref(), Some("proto-1.example"));
    assert_eq!(nodes[0].status, "ONLINE");
    assert_eq!(nodes[0].cpu_percent, Some(20.0));

    let mut patch = serde_json::Map::new();
    patch.insert("heartbeat_interval".into(), json!(15));
    patch.insert("tls_paths".into(), json!(["/etc/ssl/site.pem"]));
    patch.insert("log_level".into(), json!("debug"));
    // The node's row reaches the database with the writer's next batch: until then, 409.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let patched = loop {
        match admin.patch_node_config("proto-1", &patch).await {
            Err(Error::Conflict { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answer => break answer.unwrap(),
        }
    };
    assert_eq!(patched.config.heartbeat_interval, Some(15));
    let mine = agent.my_config().await.unwrap().config;
    assert_eq!(mine.heartbeat_interval, Some(15));
    assert_eq!(mine.tls_paths, Some(vec!["/etc/ssl/site.pem".to_string()]));
    assert_eq!(
        mine.other.get("log_level"),
        Some(&json!("debug")),
        "unknown keys as given"
    );

    let tokens = admin.tokens().await.unwrap().tokens;
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].last_used_at.is_some());
    admin.revoke_token(&tokens[0].id).await.unwrap();
    let refused = agent
        .heartbeat(&Heartbeat {
            node_id: "proto-1".into(),
            ..Heartbeat::default()
        })
        .await;
    assert!(matches!(refused, Err(Error::Unauthorized { .. })), "{refused:?}");
}

#[tokio::test]
async fn a_job_round_trips_from_dispatch_through_the_socket_claim_output_cancel_and_completion() {
    let server = common::launch().await;
    let (admin, node_token) = signed_in(&server, "proto-2").await;
    let agent = Client::new(&server.url, Some(&node_token)).unwrap();
    agent
        .heartbeat(&Heartbeat {
            node_id: "proto-2".into(),
            hostname: Some("proto-2".into()),
            ..Heartbeat::default()
        })
        .await
        .unwrap();

    let ws_url = format!(
        "{}/api/agent/ws?nodeId=proto-2",
        server.url.replace("http://", "ws://")
    );
    let mut request = ws_url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {node_token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let created = admin
        .create_job(&CreateJob {
            node_id: "proto-2".into(),
            preset_name: "disk-cleanup".into(),
            variables: serde_json::Map::new(),
        })
        .await
        .unwrap()
        .job;
    assert_eq!(created.status, "QUEUED");
    assert_eq!(next_message(&mut socket).await, AgentMessage::Wakeup);
    let listed = admin
        .jobs(&JobQuery {
            node_id: Some("proto-2"),
            status: Some("QUEUED"),
            limit: Some(10),
        })
        .await
        .unwrap();
    assert_eq!(listed.jobs, vec![created.clone()]);

    let claimed = agent
        .pending(Some("proto-2"))
        .await
        .unwrap()
        .expect("the queued job");
    assert_eq!(claimed.id, created.id);
    assert!(claimed.script.starts_with("#!"), "{}", claimed.script);
    assert!(claimed.timeout_seconds > 0);
    assert_eq!(
        agent.pending(None).await.unwrap(),
        None,
        "a pinned token needs no nodeId"
    );

    agent
        .output(
            &claimed.id,
            &OutputPiece {
                stdout: Some("cleaning\n".into()),
                stderr: Some("warning\n".into()),
            },
        )
        .await
        .unwrap();
    let mut stream = admin.job_events(&claimed.id);
    let mut output = Vec::new();
    while output.len() < 2 {
        let event = stream.next().await.unwrap();
        match event.name.as_str() {
            events::STATUS => assert_eq!(event.json::<StatusEvent>().unwrap().status, "RUNNING"),
            events::STDOUT | events::STDERR => {
                assert!(event.id.is_some(), "output events carry their sequence number");
                output.push((event.name.clone(), event.data.clone()));
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(
        output,
        [
            ("stdout".to_string(), "cleaning\n".to_string()),
            ("stderr".to_string(), "warning\n".to_string())
        ]
    );

    let cancelling = admin.cancel_job(&claimed.id).await.unwrap().job;
    assert_eq!(cancelling.status, "RUNNING");
    assert!(cancelling.cancel_requested_at.is_some());
    assert_eq!(
        next_message(&mut socket).await,
        AgentMessage::Cancel {
            job_id: claimed.id.clone()
        }
    );
    let completed = agent
        .complete(
            &claimed.id,
            &CompleteJob {
                exit_code: 143,
                output: OutputPiece {
                    stdout: Some("stopped\n".into()),
                    stderr: None,
                },
            },
        )
        .await
        .unwrap()
        .job;
    assert_eq!(completed.status, "CANCELLED");
    assert_eq!(completed.exit_code, Some(143));
    let done = loop {
        let event = stream.next().await.unwrap();
        if event.name == events::DONE {
            break event.json::<DoneEvent>().unwrap();
        }
    };
    assert_eq!(done.status, "CANCELLED");
    assert_eq!(done.exit_code, Some(143));
    let again = agent.complete(&claimed.id, &CompleteJob::default()).await;
    assert!(matches!(again, Err(Error::Conflict { .. })), "{again:?}");

    let detail = admin.job(&claimed.id).await.unwrap().job;
    assert_eq!(detail.job.status, "CANCELLED");
    assert_eq!(detail.stdout, "cleaning\nstopped\n");
    assert_eq!(detail.stderr, "warning\n");
    assert_eq!(detail.stdout_bytes, 17);
    assert!(!detail.stdout_truncated);
    let raw = admin.raw_output(&claimed.id, "stdout").await.unwrap();
    assert_eq!(raw.bytes().await.unwrap(), "cleaning\nstopped\n");
}

#[tokio::test]
async fn findings_round_trip_from_the_agent_report_to_snooze_resolve_and_the_summary() {
    let server = common::launch().await;
    let (admin, node_token) = signed_in(&server, "proto-3").await;
    let agent = Client::new(&server.url, Some(&node_token)).unwrap();
    let accepted = agent
        .report_findings(&ReportBody {
            node_id: "proto-3".into(),
            findings: vec![ReportedFinding {
                kind: "disk.full".into(),
                key: "/".into(),
                severity: "CRITICAL".into(),
                title: "/ is 97% full".into(),
                message: "3 GiB left".into(),
                related_entities: None,
                metadata: Some(json!({"mount": "/"})),
            }],
            complete: vec![],
        })
        .await
        .unwrap();
    assert!(accepted.received);
    assert_eq!(accepted.upserted, 1);

    let open = admin.findings(&FindingQuery::default()).await.unwrap().findings;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].kind, "disk.full");
    assert_eq!(open[0].status, "OPEN");
    let detail = admin.finding(&open[0].id).await.unwrap();
    let fix = detail.recommendation.expect("disk-cleanup fixes disk.full");
    assert_eq!(fix.preset_name, "disk-cleanup");
    let summary = admin.findings_summary().await.unwrap().summary;
    assert_eq!(summary[0].bucket, "AT_RISK");
    assert_eq!(summary[0].counts.critical, 1);

    let snoozed = admin
        .snooze_finding(&open[0].id, &SnoozeBody { hours: Some(2) })
        .await
        .unwrap()
        .finding;
    assert_eq!(snoozed.status, "SNOOZED");
    assert!(snoozed.snoozed_until.is_some());
    let resolved = admin.resolve_finding(&open[0].id).await.unwrap().finding;
    assert_eq!(resolved.status, "RESOLVED");
    let all = admin
        .findings(&FindingQuery {
            include: Some("all"),
            ..FindingQuery::default()
        })
        .await
        .unwrap()
        .findings;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, "RESOLVED");
    assert!(all[0].resolved_by_user_id.is_some() && all[0].resolved_at.is_some());
}

#[tokio::test]
async fn refusals_carry_the_error_body_and_the_rate_limit_headers() {
    let server = common::launch().await;
    let (admin, _) = signed_in(&server, "proto-4").await;
    let missing = admin.job("0190c6a2-0000-7000-8000-000000000000").await;
    match missing {
        Err(Error::NotFound { message }) => assert_eq!(message, "job not found"),
        other => panic!("expected a 404, got {other:?}"),
    }
    let response = reqwest::get(format!("{}/api/nodes", server.url)).await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key(headers::RATE_LIMIT_LIMIT));
    assert!(response.headers().contains_key(headers::RATE_LIMIT_REMAINING));
    assert!(response.headers().contains_key(headers::RATE_LIMIT_RESET));
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error, "unauthorized");
    let anonymous = Client::new(&server.url, None).unwrap();
    assert!(matches!(anonymous.nodes().await, Err(Error::NotSignedIn { .. })));
}
