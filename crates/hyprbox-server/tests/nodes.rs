//! `/api/nodes` and `/api/stream/nodes`: heartbeats in, the fleet out.

mod common;

use std::time::Duration;

use common::{TestApp, get_streaming, get_streaming_with, read_gzip_sse, read_sse};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn beat(node: &str, cpu: f64) -> Value {
    json!({"node_id": node, "cpu_percent": cpu, "ram_percent": 40.0, "disk_percent": 50.0})
}

async fn node_list(app: &TestApp, token: &str) -> Vec<Value> {
    app.get("/api/nodes", Some(token)).await.body["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn the_first_heartbeat_registers_the_node() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let (token, _) = app.mint_token(&admin, None).await;
    let body = json!({
        "node_id": "prod-eu-1", "hostname": "prod-eu-1", "os": "Debian 12", "cpu_percent": 12.5,
        "ram_percent": 40, "disk_percent": 71.2, "status": "ok", "agent_version": "0.1.0",
        "ip": "10.0.0.5", "region": "eu-west", "kernel": "6.1.0", "architecture": "x86_64",
        "uptime_seconds": 3600, "load_avg": [0.5, 0.4, 0.3], "mem_total_bytes": 8_000_000_000u64,
        "disk_total_bytes": 100_000_000_000u64, "unknown_field": "ignored"
    });
    let answer = app.heartbeat(Some(&token), body).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    assert_eq!(answer.body, json!({"received": true, "nodeId": "prod-eu-1"}));
    assert!(answer.headers.contains_key("x-ratelimit-remaining"));

    let nodes = node_list(&app, &admin.token).await;
    assert_eq!(nodes.len(), 1);
    let node = &nodes[0];
    assert_eq!(node["nodeId"], "prod-eu-1");
    assert_eq!(node["status"], "ONLINE");
    assert_eq!(node["cpuPercent"], 12.5);
    assert_eq!(node["os"], "Debian 12");
    assert_eq!(node["architecture"], "x86_64");
    for field in [
        "hostname",
        "lastSeenAt",
        "ramPercent",
        "diskPercent",
        "agentVersion",
        "ip",
        "region",
        "kernel",
        "createdAt",
    ] {
        assert!(!node[field].is_null(), "{field}");
    }
    let status = app.get("/api/nodes/prod-eu-1/status", Some(&admin.token)).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.body["node"]["uptimeSeconds"], 3600);
    assert_eq!(status.body["node"]["loadAvg"], json!([0.5, 0.4, 0.3]));
    assert_eq!(status.body["lastHeartbeat"]["cpuPercent"], 12.5);
    assert!(status.body["lastHeartbeat"]["receivedAt"].is_string());
    assert_eq!(status.body["config"], json!({}));
}

#[tokio::test]
async fn inventory_is_kept_unless_sent_and_survives_a_restart() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    app.heartbeat(
        None,
        json!({"node_id": "n1", "hostname": "web-1", "os": "Debian"}),
    )
    .await;
    app.heartbeat(None, json!({"node_id": "n1", "os": "Ubuntu", "cpu_percent": 3}))
        .await;
    let node = &node_list(&app, &admin.token).await[0];
    assert_eq!(
        (node["hostname"].as_str(), node["os"].as_str()),
        (Some("web-1"), Some("Ubuntu"))
    );

    let settings = app.state.settings.clone();
    let (stopped, db) = app.stop_keeping_database().await;
    stopped.unwrap();
    let again = hyprbox_server::Application::build(settings).await.unwrap();
    let state = again
        .state()
        .fleet
        .get("n1")
        .expect("the node was written before the stop");
    assert_eq!(state.node.hostname.as_deref(), Some("web-1"));
    assert_eq!(state.node.os.as_deref(), Some("Ubuntu"));
    assert_eq!(state.sparks.iter().copied().collect::<Vec<_>>(), [3.0]);
    let last = state
        .last
        .expect("the last heartbeat is known again after a restart");
    assert_eq!(last.cpu_percent, Some(3.0));
    assert_eq!(state.node.last_seen_at, last.at);
    drop(db);
}

#[tokio::test]
async fn the_answer_asks_for_the_inventory_while_the_server_has_none() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let wanted = |answer: &common::Answer| {
        answer
            .headers
            .get("x-hyprbox-inventory-wanted")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let bare = app
        .heartbeat(None, json!({"node_id": "n1", "cpu_percent": 3}))
        .await;
    assert_eq!(bare.status, StatusCode::ACCEPTED);
    assert_eq!(
        bare.body,
        json!({"received": true, "nodeId": "n1"}),
        "the body is the contract's"
    );
    assert_eq!(wanted(&bare).as_deref(), Some("true"));
    let full = app
        .heartbeat(
            None,
            json!({"node_id": "n1", "hostname": "web-1", "agent_version": "1.0"}),
        )
        .await;
    assert_eq!(wanted(&full), None);
    let later = app
        .heartbeat(None, json!({"node_id": "n1", "cpu_percent": 4}))
        .await;
    assert_eq!(wanted(&later), None, "the server has it now");
    // Deleted and back with a bare heartbeat: the server asks again.
    let deleted = app
        .call(Method::DELETE, "/api/nodes/n1", Some(&admin.token), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    let back = app
        .heartbeat(None, json!({"node_id": "n1", "cpu_percent": 5}))
        .await;
    assert_eq!(wanted(&back).as_deref(), Some("true"));
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_when_the_server_stops_gracefully() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let (token, _) = app.mint_token(&admin, None).await;
    let mut sent = 0;
    for i in 0..300 {
        let answer = app
            .heartbeat(Some(&token), beat(&format!("n{}", i % 30), 1.0))
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        sent += 1;
    }
    let settings = app.state.settings.clone();
    // Stop at once: most of these are still queued for the writer.
    let (stopped, db) = app.stop_keeping_database().await;
    stopped.unwrap();
    let store = hyprbox_store::Store::connect(settings.database_url.expose(), &Default::default())
        .await
        .unwrap();
    let mut conn = store.conn().await.unwrap();
    let mut written = 0;
    for n in 0..30 {
        written += hyprbox_store::nodes::history(&mut conn, &format!("n{n}"), 1000)
            .await
            .unwrap()
            .len();
    }
    assert_eq!(written, sent);
    drop(conn);
    store.close().await;
    drop(db);
}

#[tokio::test]
async fn anonymous_heartbeats_follow_the_require_node_token_setting() {
    let open = TestApp::spawn().await;
    assert_eq!(
        open.heartbeat(None, beat("n1", 1.0)).await.status,
        StatusCode::ACCEPTED
    );
    let closed = TestApp::with(&[("HYPRBOX_REQUIRE_NODE_TOKEN", "true")]).await;
    let refused = closed.heartbeat(None, beat("n1", 1.0)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.error_tag(), "unauthorized");
    let production = TestApp::with(&[("HYPRBOX_ENV", "production")]).await;
    assert_eq!(
        production.heartbeat(None, beat("n1", 1.0)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_user_token_or_a_bad_node_token_is_refused_on_the_heartbeat() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let with_jwt = app.heartbeat(Some(&admin.token), beat("n1", 1.0)).await;
    assert_eq!(with_jwt.status, StatusCode::UNAUTHORIZED);
    let bogus = app
        .heartbeat(
            Some("hbnt_abcdefgh0123456789012345678901234567890123"),
            beat("n1", 1.0),
        )
        .await;
    assert_eq!(bogus.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_pinned_token_may_only_speak_for_its_own_node() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let (pinned, _) = app.mint_token(&admin, Some("web-1")).await;
    assert_eq!(
        app.heartbeat(Some(&pinned), beat("web-1", 1.0)).await.status,
        StatusCode::ACCEPTED
    );
    let other = app.heartbeat(Some(&pinned), beat("web-2", 1.0)).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert_eq!(other.error_tag(), "forbidden");
    let (fleet_wide, _) = app.mint_token(&admin, None).await;
    for node in ["web-2", "web-3"] {
        assert_eq!(
            app.heartbeat(Some(&fleet_wide), beat(node, 1.0)).await.status,
            StatusCode::ACCEPTED
        );
    }
    assert_eq!(node_list(&app, &admin.token).await.len(), 3);
}

#[tokio::test]
async fn every_invalid_heartbeat_field_is_a_400_naming_it_and_registers_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let cases = [
        (json!({"cpu_percent": 1}), "node_id"),
        (json!({"node_id": ""}), "node_id"),
        (json!({"node_id": "bad/id"}), "node_id"),
        (json!({"node_id": "x".repeat(65)}), "node_id"),
        (json!({"node_id": "n1", "cpu_percent": 100.1}), "cpu_percent"),
        (json!({"node_id": "n1", "ram_percent": -1}), "ram_percent"),
        (json!({"node_id": "n1", "disk_percent": "full"}), "disk_percent"),
        (json!({"node_id": "n1", "load_avg": [1, 2]}), "load_avg"),
        (json!({"node_id": "n1", "uptime_seconds": -5}), "uptime_seconds"),
        (json!({"node_id": "n1", "status": "on fire"}), "status"),
        (json!({"node_id": "n1", "hostname": "h".repeat(300)}), "hostname"),
        (json!({"node_id": 7}), "node_id"),
    ];
    for (body, field) in cases {
        let answer = app.heartbeat(None, body.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}: {}", answer.text);
        assert!(
            answer.body["message"].as_str().unwrap().contains(field),
            "{body}: {}",
            answer.text
        );
    }
    assert!(node_list(&app, &admin.token).await.is_empty());
}

#[tokio::test]
async fn nodes_go_offline_past_the_threshold_and_degraded_when_they_say_so() {
    let app = TestApp::with(&[("HYPRBOX_NODE_OFFLINE_AFTER", "1s")]).await;
    let admin = app.register_admin().await;
    app.heartbeat(None, json!({"node_id": "sick", "status": "degraded"}))
        .await;
    app.heartbeat(None, json!({"node_id": "fine", "status": "ok"}))
        .await;
    let nodes = node_list(&app, &admin.token).await;
    let status_of =
        |nodes: &[Value], id: &str| nodes.iter().find(|n| n["nodeId"] == id).unwrap()["status"].clone();
    assert_eq!(status_of(&nodes, "sick"), "DEGRADED");
    assert_eq!(status_of(&nodes, "fine"), "ONLINE");
    app.eventually("OFFLINE", || async {
        let nodes = node_list(&app, &admin.token).await;
        status_of(&nodes, "sick") == "OFFLINE" && status_of(&nodes, "fine") == "OFFLINE"
    })
    .await;
    app.heartbeat(None, json!({"node_id": "fine"})).await;
    assert_eq!(status_of(&node_list(&app, &admin.token).await, "fine"), "ONLINE");
}

#[tokio::test]
async fn sparks_give_every_node_its_last_values_oldest_first() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    for i in 0..30 {
        app.heartbeat(None, beat("a", f64::from(i))).await;
    }
    app.heartbeat(None, beat("b", 99.0)).await;
    let sparks = app.get("/api/nodes/sparks", Some(&admin.token)).await;
    assert_eq!(sparks.status, StatusCode::OK);
    let a: Vec<f64> = serde_json::from_value(sparks.body["sparks"]["a"].clone()).unwrap();
    assert_eq!(
        a,
        (6..30).map(f64::from).collect::<Vec<_>>(),
        "the default 24, oldest first"
    );
    assert_eq!(sparks.body["sparks"]["b"], json!([99.0]));
    let three = app.get("/api/nodes/sparks?limit=3", Some(&admin.token)).await;
    assert_eq!(three.body["sparks"]["a"], json!([27.0, 28.0, 29.0]));
    for bad in ["0", "101", "x"] {
        let answer = app
            .get(&format!("/api/nodes/sparks?limit={bad}"), Some(&admin.token))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(
        app.get("/api/nodes/sparks", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn history_returns_the_last_heartbeats_oldest_first_within_its_limits() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    for i in 0..60 {
        app.heartbeat(None, beat("n1", f64::from(i))).await;
    }
    app.eventually("history written", || async {
        app.get("/api/nodes/n1/history?limit=1000", Some(&admin.token))
            .await
            .body["history"]
            .as_array()
            .is_some_and(|h| h.len() == 60)
    })
    .await;
    let history = app.get("/api/nodes/n1/history", Some(&admin.token)).await;
    let cpu: Vec<f64> = history.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["cpuPercent"].as_f64().unwrap())
        .collect();
    assert_eq!(
        cpu,
        (10..60).map(f64::from).collect::<Vec<_>>(),
        "the default 50, oldest first"
    );
    assert!(history.body["history"][0]["at"].is_string());
    let five = app.get("/api/nodes/n1/history?limit=5", Some(&admin.token)).await;
    assert_eq!(five.body["history"].as_array().unwrap().len(), 5);
    assert_eq!(
        app.get("/api/nodes/n1/history?limit=1001", Some(&admin.token))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.get("/api/nodes/nobody/history", Some(&admin.token))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/nodes/bad%20id/history", Some(&admin.token))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.get("/api/nodes/nobody/status", Some(&admin.token))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn activity_shows_threshold_crossings_newest_first() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    for (cpu, ram) in [(10.0, 10.0), (85.0, 10.0), (10.0, 10.0), (10.0, 95.0)] {
        app.heartbeat(
            None,
            json!({"node_id": "n1", "cpu_percent": cpu, "ram_percent": ram}),
        )
        .await;
    }
    app.eventually("two events", || async {
        app.get("/api/nodes/n1/activity", Some(&admin.token)).await.body["events"]
            .as_array()
            .is_some_and(|e| e.len() == 2)
    })
    .await;
    let events = app.get("/api/nodes/n1/activity", Some(&admin.token)).await;
    let kinds: Vec<&str> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ram.high", "cpu.high"]);
    let event = &events.body["events"][1];
    assert_eq!(event["severity"], "WARN");
    assert!(event["message"].as_str().unwrap().contains("85"));
    assert!(event["at"].is_string());
    assert_eq!(
        app.get("/api/nodes/nobody/activity", Some(&admin.token))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_pinned_agent_reads_its_config_and_a_fleet_wide_one_gets_400() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let (pinned, _) = app.mint_token(&admin, Some("n1")).await;
    let (fleet_wide, _) = app.mint_token(&admin, None).await;
    app.heartbeat(Some(&pinned), beat("n1", 1.0)).await;
    app.eventually("the node on disk", || async {
        app.get("/api/nodes/n1/history", Some(&admin.token)).await.body["history"]
            .as_array()
            .is_some_and(|h| h.len() == 1)
    })
    .await;
    let patched = app
        .call(
            Method::PATCH,
            "/api/nodes/n1/config",
            Some(&admin.token),
            Some(json!({"scan_interval": 60})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    let mine = app.get("/api/nodes/me/config", Some(&pinned)).await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.body, json!({"config": {"scan_interval": 60}}));
    let fleet = app.get("/api/nodes/me/config", Some(&fleet_wide)).await;
    assert_eq!(fleet.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.get("/api/nodes/me/config", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/api/nodes/me/config", Some(&admin.token)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn config_is_a_merge_patch_validated_before_anything_changes() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let viewer = app.user_with_role(&admin, "v@example.com", "VIEWER").await;
    app.heartbeat(None, beat("n1", 1.0)).await;
    app.eventually("the node on disk", || async {
        app.get("/api/nodes/n1/history", Some(&admin.token)).await.body["history"]
            .as_array()
            .is_some_and(|h| h.len() == 1)
    })
    .await;
    let patch = |body: Value| {
        app.call(
            Method::PATCH,
            "/api/nodes/n1/config",
            Some(&admin.token),
            Some(body),
        )
    };
    let first = patch(json!({"tls_paths": ["/etc/ssl/site.pem"], "scan_interval": 300})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let second = patch(json!({"scan_interval": null, "heartbeat_interval": 30})).await;
    assert_eq!(
        second.body,
        json!({"config": {"tls_paths": ["/etc/ssl/site.pem"], "heartbeat_interval": 30}})
    );
    for bad in [
        json!({"scan_interval": 5}),
        json!({"heartbeat_interval": 100_000}),
        json!({"tls_paths": ["relative/path.pem"]}),
        json!({"colour": "blue", "scan_interval": 1}),
        json!(["not", "an", "object"]),
    ] {
        let answer = patch(bad.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        answer.error_tag();
    }
    let status = app.get("/api/nodes/n1/status", Some(&admin.token)).await;
    assert_eq!(
        status.body["config"],
        json!({"tls_paths": ["/etc/ssl/site.pem"], "heartbeat_interval": 30})
    );
    // Keys the server does not know are kept as given (a newer agent may read them), and cleared
    // like any other.
    let extra = patch(json!({"log_level": "debug"})).await;
    assert_eq!(extra.status, StatusCode::OK, "{}", extra.text);
    assert_eq!(extra.body["config"]["log_level"], "debug");
    let cleared = patch(json!({"log_level": null})).await;
    assert_eq!(
        cleared.body["config"],
        json!({"tls_paths": ["/etc/ssl/site.pem"], "heartbeat_interval": 30})
    );
    let denied = app
        .call(
            Method::PATCH,
            "/api/nodes/n1/config",
            Some(&viewer.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let unknown = app
        .call(
            Method::PATCH,
            "/api/nodes/nobody/config",
            Some(&admin.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let audit = app.get("/api/audit?action=node.config", Some(&admin.token)).await;
    assert_eq!(audit.body["total"], 4, "the four patches that changed something");
    assert_eq!(audit.body["events"][0]["resourceId"], "n1");
}

#[tokio::test]
async fn deleting_a_node_removes_it_and_its_history() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let viewer = app.user_with_role(&admin, "v@example.com", "VIEWER").await;
    for _ in 0..3 {
        app.heartbeat(None, beat("old", 1.0)).await;
    }
    app.heartbeat(None, beat("keep", 1.0)).await;
    app.eventually("history written", || async {
        app.get("/api/nodes/old/history", Some(&admin.token)).await.body["history"]
            .as_array()
            .is_some_and(|h| h.len() == 3)
    })
    .await;
    assert_eq!(
        app.call(Method::DELETE, "/api/nodes/old", Some(&viewer.token), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call(Method::DELETE, "/api/nodes/old", Some(&admin.token), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let ids: Vec<Value> = node_list(&app, &admin.token)
        .await
        .iter()
        .map(|n| n["nodeId"].clone())
        .collect();
    assert_eq!(ids, [json!("keep")]);
    assert_eq!(
        app.get("/api/nodes/old/history", Some(&admin.token)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call(Method::DELETE, "/api/nodes/old", Some(&admin.token), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let mut conn = app.state.store.conn().await.unwrap();
    assert!(
        hyprbox_store::nodes::history(&mut conn, "old", 10)
            .await
            .unwrap()
            .is_empty()
    );
    let audit = app.get("/api/audit?action=node.delete", Some(&admin.token)).await;
    assert_eq!(audit.body["total"], 1);
}

#[tokio::test]
async fn history_past_its_retention_is_pruned() {
    let app = TestApp::with(&[("HYPRBOX_HISTORY_RETENTION", "1s")]).await;
    let admin = app.register_admin().await;
    for _ in 0..5 {
        app.heartbeat(None, beat("n1", 1.0)).await;
    }
    app.eventually("history written", || async {
        app.get("/api/nodes/n1/history", Some(&admin.token)).await.body["history"]
            .as_array()
            .is_some_and(|h| h.len() == 5)
    })
    .await;
    app.eventually("history pruned", || async {
        hyprbox_server::fleet::retention::prune_history(&app.state)
            .await
            .unwrap();
        app.get("/api/nodes/n1/history", Some(&admin.token)).await.body["history"] == json!([])
    })
    .await;
    // The node itself stays.
    assert_eq!(node_list(&app, &admin.token).await.len(), 1);
}

#[tokio::test]
async fn anonymous_heartbeats_are_limited_per_address_whatever_node_they_name() {
    let app = TestApp::with(&[("HYPRBOX_RATE_LIMIT", "2")]).await;
    assert_eq!(
        app.heartbeat(None, beat("a", 1.0)).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.heartbeat(None, beat("b", 1.0)).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.heartbeat(None, beat("c", 1.0)).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn reserved_and_malformed_node_ids_are_400s_on_every_node_route() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    for reserved in ["me", "sparks", "heartbeat", "inventory"] {
        let answer = app.heartbeat(None, beat(reserved, 1.0)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{reserved}");
        assert!(answer.body["message"].as_str().unwrap().contains("reserved"));
    }
    for path in ["/api/nodes/bad%20id/status", "/api/nodes/bad%20id/activity"] {
        assert_eq!(
            app.get(path, Some(&admin.token)).await.status,
            StatusCode::BAD_REQUEST,
            "{path}"
        );
    }
    let patch = app
        .call(
            Method::PATCH,
            "/api/nodes/bad%20id/config",
            Some(&admin.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(patch.status, StatusCode::BAD_REQUEST);
    let delete = app
        .call(Method::DELETE, "/api/nodes/bad%20id", Some(&admin.token), None)
        .await;
    assert_eq!(delete.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_oversized_heartbeat_is_a_413() {
    let app = TestApp::spawn().await;
    let body = json!({"node_id": "n1", "hostname": "h".repeat(1024 * 1024 + 1)});
    let answer = app.heartbeat(None, body).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    answer.error_tag();
}

#[tokio::test]
async fn a_deleted_node_does_not_come_back_from_rows_still_queued() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let (token, _) = app.mint_token(&admin, None).await;
    for _ in 0..20 {
        app.heartbeat(Some(&token), beat("gone", 1.0)).await;
    }
    // Deleted while its rows are most likely still queued for the writer.
    let deleted = app
        .call(Method::DELETE, "/api/nodes/gone", Some(&admin.token), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let settings = app.state.settings.clone();
    let (stopped, db) = app.stop_keeping_database().await;
    stopped.unwrap();
    let again = hyprbox_server::Application::build(settings).await.unwrap();
    assert!(again.state().fleet.get("gone").is_none());
    let mut conn = again.state().store.conn().await.unwrap();
    assert!(
        hyprbox_store::nodes::history(&mut conn, "gone", 100)
            .await
            .unwrap()
            .is_empty()
    );
    drop(conn);
    drop(db);
}

#[tokio::test]
async fn a_fleet_behind_one_token_is_limited_per_node_not_per_token() {
    let app = TestApp::with(&[("HYPRBOX_RATE_LIMIT", "2")]).await;
    let admin = app.register_admin().await;
    let (token, _) = app.mint_token(&admin, None).await;
    for _ in 0..2 {
        assert_eq!(
            app.heartbeat(Some(&token), beat("a", 1.0)).await.status,
            StatusCode::ACCEPTED
        );
    }
    let limited = app.heartbeat(Some(&token), beat("a", 1.0)).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key("retry-after"));
    assert_eq!(limited.headers["x-ratelimit-remaining"], "0");
    assert_eq!(
        app.heartbeat(Some(&token), beat("b", 1.0)).await.status,
        StatusCode::ACCEPTED
    );
}

/// Reads server-sent events until `done` holds for the text read so far (it is shown only the
/// new chunk and a little before it, so long streams stay cheap to scan).
#[tokio::test]
async fn the_stream_carries_heartbeats_posted_by_another_client() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let mut stream = get_streaming(&app, "/api/stream/nodes", &admin.token).await;
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    app.heartbeat(
        None,
        json!({"node_id": "n1", "cpu_percent": 10, "ram_percent": 10}),
    )
    .await;
    app.heartbeat(
        None,
        json!({"node_id": "n1", "cpu_percent": 90, "ram_percent": 10}),
    )
    .await;
    let text = read_sse(&mut stream, |t| t.contains("event: activity")).await;
    assert!(text.contains("event: heartbeat"), "{text}");
    let data = text
        .lines()
        .skip_while(|l| *l != "event: heartbeat")
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let event: Value = serde_json::from_str(data).unwrap();
    assert_eq!(event["nodeId"], "n1");
    assert_eq!(event["status"], "ONLINE");
    assert!(event["at"].is_string() && event["cpuPercent"].is_number());
    assert!(text.contains("cpu.high"));
    assert_eq!(
        app.get("/api/stream/nodes", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_fleet_stream_is_gzip_compressed_for_a_client_that_accepts_it_and_readable_frame_by_frame() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let mut stream = get_streaming_with(
        &app,
        "/api/stream/nodes",
        &admin.token,
        &[("accept-encoding", "gzip, deflate, br, zstd")],
    )
    .await;
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-encoding"], "gzip");
    assert_eq!(stream.headers()["vary"], "accept-encoding");
    for i in 0..40 {
        app.heartbeat(
            None,
            json!({"node_id": format!("gz-{i}"), "hostname": "web", "cpu_percent": 10, "ram_percent": 10}),
        )
        .await;
    }
    let (compressed, text) = read_gzip_sse(&mut stream, |t| t.contains("\"nodeId\":\"gz-39\"")).await;
    assert!(text.ends_with("\n\n"), "only whole events: {text}");
    assert_eq!(text.matches("event: heartbeat").count(), 40, "{text}");
    assert!(
        compressed.len() < text.len() / 3,
        "{} of {}",
        compressed.len(),
        text.len()
    );
}

#[tokio::test]
async fn a_stream_that_follows_some_nodes_gets_only_their_events() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let mut stream = get_streaming(&app, "/api/stream/nodes?nodes=f-1,%20f-2,", &admin.token).await;
    assert_eq!(stream.status(), StatusCode::OK);
    for node in ["f-1", "other-1", "other-2", "f-2"] {
        app.heartbeat(
            None,
            json!({"node_id": node, "cpu_percent": 10, "ram_percent": 10}),
        )
        .await;
    }
    let text = read_sse(&mut stream, |t| t.contains("\"nodeId\":\"f-2\"")).await;
    assert!(text.contains("\"nodeId\":\"f-1\""), "{text}");
    assert!(!text.contains("other-"), "{text}");
    // The events about followed nodes come whole: each heartbeat and activity event, nothing else.
    assert!(
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .all(|e| e.starts_with("event: heartbeat\n") || e.starts_with("event: activity\n")),
        "{text}"
    );
}

#[tokio::test]
async fn a_stream_refuses_a_bad_or_too_long_list_of_nodes_with_400() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let bad = app
        .get("/api/stream/nodes?nodes=web-1,no%20spaces", Some(&admin.token))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body["message"].as_str().unwrap().contains("nodes"),
        "{:?}",
        bad.body
    );
    let many = (0..201).map(|i| format!("n-{i}")).collect::<Vec<_>>().join(",");
    let long = app
        .get(&format!("/api/stream/nodes?nodes={many}"), Some(&admin.token))
        .await;
    assert_eq!(long.status, StatusCode::BAD_REQUEST);
    assert!(
        long.body["message"].as_str().unwrap().contains("200"),
        "{:?}",
        long.body
    );
    assert_eq!(
        app.get("/api/stream/nodes?nodes=web-1", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_subscriber_that_never_reads_does_not_slow_heartbeats() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let (token, _) = app.mint_token(&admin, None).await;
    let mut stuck = get_streaming(&app, "/api/stream/nodes", &admin.token).await;
    let posts: Vec<_> = (0..8)
        .map(|worker| {
            let client = app.client.clone();
            let url = app.url("/api/nodes/heartbeat");
            let token = token.clone();
            tokio::spawn(async move {
                for i in 0..1000 {
                    let body = json!({"node_id": format!("n{worker}-{}", i % 50), "cpu_percent": 1.0});
                    let status = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await
                        .unwrap()
                        .status();
                    assert_eq!(status, StatusCode::ACCEPTED);
                }
            })
        })
        .collect();
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        for post in posts {
            post.await.unwrap();
        }
    })
    .await;
    assert!(
        all.is_ok(),
        "8,000 heartbeats must go through while a subscriber reads nothing"
    );
    // The stuck subscriber is still served once it reads again.
    let text = read_sse(&mut stuck, |t| t.contains("event: heartbeat")).await;
    assert!(text.contains("\"nodeId\":\"n"), "{text}");
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let mut stream = get_streaming(&app, "/api/stream/nodes", &admin.token).await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), app.stop()).await;
    assert!(stopped.expect("shutdown does not wait on a live stream").is_ok());
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(end.is_ok());
}

#[tokio::test]
async fn a_stream_ends_when_its_session_is_logged_out() {
    let app = TestApp::spawn().await;
    app.register_admin().await;
    let watcher = app.login("admin@example.com", common::PASSWORD).await;
    let mut stream = get_streaming(&app, "/api/stream/nodes", &watcher.token).await;
    assert_eq!(stream.status(), StatusCode::OK);
    app.post("/api/auth/logout", Some(&watcher.token), json!({}))
        .await;
    app.heartbeat(None, beat("n1", 1.0)).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = String::new();
        while let Ok(Some(chunk)) = stream.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        seen
    })
    .await
    .expect("the stream ends after logout");
    assert!(
        !ended.contains("event: heartbeat"),
        "no fleet data after logout: {ended}"
    );
}

#[tokio::test]
async fn what_a_heartbeat_acknowledged_is_readable_and_configurable_at_once() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    for i in 0..3 {
        let answer = app.heartbeat(None, beat("fresh-1", f64::from(i))).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
    }
    // No waiting: the history shows every acknowledged heartbeat…
    let history = app.get("/api/nodes/fresh-1/history", Some(&admin.token)).await;
    assert_eq!(history.status, StatusCode::OK);
    assert_eq!(
        history.body["history"].as_array().unwrap().len(),
        3,
        "{}",
        history.text
    );
    // …and the node the list shows can be configured at once.
    assert_eq!(node_list(&app, &admin.token).await.len(), 1);
    app.heartbeat(None, beat("fresh-2", 1.0)).await;
    let patched = app
        .call(
            Method::PATCH,
            "/api/nodes/fresh-2/config",
            Some(&admin.token),
            Some(json!({"scan_interval": 300})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(patched.body["config"]["scan_interval"], 300);
}

#[tokio::test]
async fn text_with_a_nul_character_is_a_400_before_anything_is_written() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let bad = app
        .heartbeat(None, json!({"node_id": "n1", "hostname": "web\u{0}1"}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    assert!(
        bad.body["message"].as_str().unwrap().contains("NUL"),
        "{}",
        bad.text
    );
    assert!(node_list(&app, &admin.token).await.is_empty());
    let query = app.get("/api/audit?user=a%00b", Some(&admin.token)).await;
    assert_eq!(query.status, StatusCode::BAD_REQUEST, "{}", query.text);
}

#[tokio::test]
async fn a_database_stall_under_heartbeats_and_output_loses_nothing_acknowledged_and_ends_in_5_s() {
    use hyprbox_store::{Dialect, Store};
    use sqlx::Executor;
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let (token, _) = app.mint_token(&admin, Some("stall-1")).await;
    app.heartbeat(Some(&token), beat("stall-1", 1.0)).await;
    let queued = app
        .post(
            "/api/jobs",
            Some(&admin.token),
            json!({"nodeId": "stall-1", "presetName": "disk-cleanup"}),
        )
        .await;
    assert_eq!(queued.status, StatusCode::CREATED, "{}", queued.text);
    let job_id = queued.body["job"]["id"].as_str().unwrap().to_string();
    let claimed = app.get("/api/jobs/pending?nodeId=stall-1", Some(&token)).await;
    assert_eq!(claimed.body["job"]["id"], job_id.as_str());
    let path = format!("/api/jobs/{job_id}/output");
    let output = |text: &'static str| app.post(&path, Some(&token), json!({"stdout": text}));
    assert_eq!(output("before\n").await.status, StatusCode::NO_CONTENT);

    // The stall, 6 s. SQLite: another connection holds the write lock past the busy timeout.
    // Postgres: the database refuses new connections and the server's are terminated.
    let url = app.database_url();
    let blocker = Store::connect(&url, &Default::default()).await.unwrap();
    let (stall, end): (Vec<String>, Vec<String>) = match blocker.dialect() {
        Dialect::Sqlite => (vec!["BEGIN EXCLUSIVE".into()], vec!["COMMIT".into()]),
        Dialect::Postgres => {
            let name = url
                .rsplit('/')
                .next()
                .unwrap()
                .split('?')
                .next()
                .unwrap()
                .to_string();
            (
                vec![
                    format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
                    format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                    ),
                ],
                vec![format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")],
            )
        }
    };
    let maintenance = match blocker.dialect() {
        Dialect::Sqlite => blocker,
        // The blocker must not be one of the connections the stall terminates.
        Dialect::Postgres => {
            let base = url.rsplit_once('/').unwrap().0;
            Store::connect(&format!("{base}/postgres"), &Default::default())
                .await
                .unwrap()
        }
    };
    let mut conn = maintenance.conn().await.unwrap();
    for statement in &stall {
        conn.execute(sqlx::AssertSqlSafe(statement.clone()))
            .await
            .unwrap();
    }
    let stalled_at = std::time::Instant::now();
    for i in 0..40 {
        let answer = app.heartbeat(Some(&token), beat("stall-1", f64::from(i))).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    }
    // Output during the stall waits or is refused as unavailable (the agent keeps it and
    // retries), never a 500; meanwhile the liveness probe says the writer cannot commit (its first
    // attempt fails after SQLite's 5-s busy timeout, at once on Postgres); the stall ends at 6 s.
    let watch = async {
        let mut degraded = false;
        while stalled_at.elapsed() < Duration::from_secs(6) {
            let probe = app.get("/health", None).await;
            if probe.body["status"] == "degraded" {
                assert_eq!(probe.body["heartbeat_writer"], "failing");
                degraded = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        degraded
    };
    let release = async {
        tokio::time::sleep(Duration::from_secs(6).saturating_sub(stalled_at.elapsed())).await;
        for statement in &end {
            conn.execute(sqlx::AssertSqlSafe(statement.clone()))
                .await
                .unwrap();
        }
        std::time::Instant::now()
    };
    let (during, degraded, recovered) = tokio::join!(output("during\n"), watch, release);
    assert!(degraded, "/health never said the writer was failing");
    assert!(
        during.status == StatusCode::NO_CONTENT || during.status == StatusCode::SERVICE_UNAVAILABLE,
        "{} {}",
        during.status,
        during.text
    );
    if during.status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(during.headers.contains_key("retry-after"));
    }
    drop(conn);
    // New writes are taken within 5 s of the recovery.
    loop {
        let after = output("after\n").await;
        if after.status == StatusCode::NO_CONTENT {
            break;
        }
        assert_eq!(after.status, StatusCode::SERVICE_UNAVAILABLE, "{}", after.text);
        assert!(
            recovered.elapsed() < Duration::from_secs(5),
            "no write taken 5 s after the recovery"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.eventually("every acknowledged heartbeat in the history", || async {
        let history = app
            .get("/api/nodes/stall-1/history?limit=1000", Some(&admin.token))
            .await;
        history.body["history"].as_array().is_some_and(|h| h.len() == 41)
    })
    .await;
    let raw = app
        .get(&format!("/api/jobs/{job_id}/output/raw"), Some(&admin.token))
        .await;
    let expected = if during.status == StatusCode::NO_CONTENT {
        "before\nduring\nafter\n"
    } else {
        "before\nafter\n"
    };
    assert_eq!(raw.text, expected, "each acknowledged piece once");
    let health = app.get("/api/health", None).await;
    assert_eq!(
        health.status,
        StatusCode::OK,
        "the writer caught up: {}",
        health.text
    );
    assert_eq!(health.body["components"]["heartbeat_writer"], "up");
}

#[tokio::test]
async fn the_stream_sends_a_nodes_latest_heartbeat_a_few_times_a_second_not_every_heartbeat() {
    let app = TestApp::spawn().await;
    let admin = app.register_admin().await;
    let mut stream = get_streaming(&app, "/api/stream/nodes", &admin.token).await;
    assert_eq!(stream.status(), StatusCode::OK);
    // Fewer than the 200 a minute one address may send without a token.
    for i in 0..150 {
        let answer = app.heartbeat(None, beat("busy", f64::from(i) / 2.0)).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
    }
    app.heartbeat(None, beat("last", 1.0)).await;
    let text = read_sse(&mut stream, |t| t.contains("\"nodeId\":\"last\"")).await;
    let busy: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["nodeId"] == "busy")
        .collect();
    // 150 heartbeats take a fraction of a second here; the stream carried a handful of frames.
    assert!(
        !busy.is_empty() && busy.len() < 40,
        "{} heartbeat events for 150 heartbeats",
        busy.len()
    );
    assert_eq!(
        busy.last().unwrap()["cpuPercent"],
        74.5,
        "the latest state is the one sent"
    );
    app.stop().await.unwrap();
}
