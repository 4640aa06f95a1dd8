//! The HyprBox agent: runs on every managed machine, reports heartbeats (real measurements and the
//! machine's inventory), keeps a WebSocket to the server for wakeups and cancels, and runs jobs —
//! bash scripts in their own process group — streaming their output back.
//!
//! It speaks to the server only over HTTP and WebSocket with the wire types of `hyprbox-proto`; it
//! must not depend on the server, the store or the CLI crates, so it stays a small static binary.
//!
//! Entry points: [`run`] (the daemon, until SIGTERM/SIGINT), [`run_until`] (the same with a
//! caller's shutdown token, for tests) and [`once`] (one heartbeat, for `--once`).

pub mod backoff;
pub mod backup;
pub mod client;
pub mod config;
pub mod heartbeat;
pub mod inventory;
pub mod jobs;
pub mod metrics;
pub mod scan;
pub mod spool;
pub mod ws;

#[cfg(test)]
mod testutil;

use std::os::unix::fs::DirBuilderExt;

use anyhow::Context;
use hyprbox_proto::nodes::NodeConfig;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use config::Config;
/// The cgroup reader lives in `hyprbox-host`, shared with the server.
pub use hyprbox_host::cgroup;

/// The agent's version, sent as `agent_version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs the agent until SIGTERM or SIGINT. A job running at that moment keeps running and is
/// picked up by the next start.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping");
        on_signal.cancel();
    });
    run_until(config, shutdown).await
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run_until(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let jobs_root = config.state_dir.join("jobs");
    // 0700: job scripts and their output may hold secrets.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&jobs_root)
        .with_context(|| format!("creating the state directory {}", jobs_root.display()))?;
    tracing::info!(
        version = VERSION,
        server = %config.server,
        node_id = %config.node_id,
        state_dir = %config.state_dir.display(),
        interval = ?config.interval,
        poll_interval = ?config.poll_interval,
        "hyprbox-agent starting"
    );
    let client = client::connect(&config.server, &config.token)?;
    let (events_tx, events_rx) = mpsc::channel(64);

    // The node's config as the server last gave it: pulled by the heartbeat loop, pushed over the
    // socket when an operator changes it; the heartbeat and scan loops follow it.
    let (node_config, node_config_rx) = watch::channel(NodeConfig::default());
    let heartbeats = tokio::spawn(heartbeat::run(
        config.clone(),
        client.clone(),
        node_config.clone(),
        shutdown.child_token(),
    ));
    let socket = tokio::spawn(ws::run(
        config.server.clone(),
        config.token.clone(),
        config.node_id.clone(),
        events_tx,
        node_config,
        shutdown.child_token(),
    ));
    let scanner = tokio::spawn(scan::run(
        client.clone(),
        config.node_id.clone(),
        node_config_rx,
        config.docker_socket.clone(),
        shutdown.child_token(),
    ));
    let jobs = jobs::Jobs {
        client,
        node_id: config.node_id.clone(),
        jobs_root,
        kill_grace: config.kill_grace,
        poll_interval: config.poll_interval,
        output_max: config.output_max,
    };
    jobs.run(events_rx, shutdown.child_token()).await;
    shutdown.cancel();
    // Both loops watch the token; an HTTP request in flight may still take its time, and a stop
    // (systemctl restart) should not wait for it.
    for task in [heartbeats, socket, scanner] {
        let abort = task.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(2), task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    Ok(())
}

/// One heartbeat with the full inventory; prints the server's answer. `Ok(true)` when accepted.
pub async fn once(config: &Config) -> bool {
    match heartbeat::once(config).await {
        Ok(answer) => {
            println!("heartbeat accepted for {}: {answer}", config.node_id);
            true
        }
        Err(e) => {
            eprintln!("heartbeat to {} failed: {}", config.server, client::describe(&e));
            false
        }
    }
}
