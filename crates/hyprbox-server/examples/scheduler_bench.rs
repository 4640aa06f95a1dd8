//! The backup scheduler's tick over 10,000 policies (100 nodes × 100 policies each), in process:
//! a tick with nothing due (the usual case), then one where every policy is due at once (each
//! renders and queues its job).
//!
//! ```sh
//! cargo run --release -p hyprbox-server --example scheduler_bench                       # SQLite, a temporary file
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/hyprbox_bench cargo run --release -p hyprbox-server --example scheduler_bench
//! ```

use std::collections::HashMap;
use std::time::Instant;

use hyprbox_server::backups::scheduler;
use hyprbox_server::{Application, Settings};
use hyprbox_store::backups::{self, Policy};
use hyprbox_store::{new_id, now_ms};
use tokio_util::sync::CancellationToken;

const NODES: usize = 100;
const PER_NODE: usize = 100;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("hyprbox-scheduler-bench-{}", std::process::id()));
    let database_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| format!("sqlite://{}/bench.db", dir.display()));
    let vars = HashMap::from([
        (
            "SECRET_KEY",
            "scheduler-bench-secret-key-of-32-bytes!".to_string(),
        ),
        ("DATABASE_URL", database_url.clone()),
        ("HYPRBOX_RATE_LIMIT", "100000000".to_string()),
    ]);
    let settings = Settings::from_lookup(|k| vars.get(k).cloned())?;
    let app = Application::build(settings).await?;
    let state = app.state().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    tokio::spawn(app.serve(listener, shutdown.clone()));

    // The nodes, known through a heartbeat each (anonymous heartbeats: the development default).
    let http = reqwest::Client::new();
    for node in 0..NODES {
        let answer = http
            .post(format!("{url}/api/nodes/heartbeat"))
            .json(&serde_json::json!({"node_id": format!("sched-{node:03}"), "cpu_percent": 1}))
            .send()
            .await?;
        anyhow::ensure!(answer.status().is_success(), "heartbeat: {}", answer.status());
    }
    while !(0..NODES).all(|n| state.fleet.contains(&format!("sched-{n:03}"))) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let now = now_ms();
    let next = now + 3_600_000;
    let policies: Vec<Policy> = (0..NODES * PER_NODE)
        .map(|i| Policy {
            id: new_id(),
            name: format!("policy {i}"),
            node_id: format!("sched-{:03}", i % NODES),
            paths: r#"["/srv/data","/etc"]"#.into(),
            schedule: Some("0 3 * * *".into()),
            repo_url: "sftp:backup@vault.example:/srv/restic".into(),
            password_ref: "file:/etc/hyprbox/restic.pass".into(),
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            created_by: "bench".into(),
            created_at: now,
            updated_at: now,
            next_run_at: Some(next),
            stale_after_ms: 48 * 3_600_000,
            last_success_at: Some(now),
        })
        .collect();
    for chunk in policies.chunks(1000) {
        let chunk = chunk.to_vec();
        state
            .store
            .write(move |tx| {
                Box::pin(async move {
                    for policy in &chunk {
                        backups::save(tx, policy).await?;
                    }
                    Ok(())
                })
            })
            .await?;
    }
    println!(
        "{} policies on {NODES} nodes, database {}",
        NODES * PER_NODE,
        state.store.dialect().as_str()
    );

    for round in 1..=3 {
        let started = Instant::now();
        let ticked = scheduler::tick(&state, now + round).await?;
        println!(
            "tick with nothing due: {:.2} ms ({ticked:?})",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    let started = Instant::now();
    let ticked = scheduler::tick(&state, next).await?;
    println!(
        "tick with all {} due: {:.0} ms, {} jobs queued ({ticked:?})",
        NODES * PER_NODE,
        started.elapsed().as_secs_f64() * 1e3,
        ticked.queued
    );
    let started = Instant::now();
    let ticked = scheduler::tick(&state, next + 1).await?;
    println!(
        "the tick after: {:.2} ms ({ticked:?})",
        started.elapsed().as_secs_f64() * 1e3
    );
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
