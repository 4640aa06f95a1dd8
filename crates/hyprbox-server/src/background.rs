//! Background loops. Each takes a child of the shutdown token and returns when it is cancelled.

use std::time::Duration;

use hyprbox_store::{StoreError, nodes, now_ms, resets, sessions};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How often expired revoked-token ids, reset tokens and old heartbeat history are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Rows deleted per statement, so a prune never holds the database for long.
const PRUNE_BATCH: i64 = 1000;
/// A node's heartbeat history is deleted an hour of data at a time (3,600 rows at one heartbeat
/// a second), so each statement stays short.
const HISTORY_WINDOW_MS: i64 = 3_600_000;
/// Activity events each node keeps past the retention: more than the activity view shows (8).
const EVENTS_KEPT: i64 = 20;

pub struct Workers(JoinSet<()>);

impl Workers {
    pub async fn wait(mut self) {
        while self.0.join_next().await.is_some() {}
    }
}

pub fn spawn(state: &AppState, shutdown: CancellationToken) -> Workers {
    let mut set = JoinSet::new();
    set.spawn(prune_loop(state.clone(), shutdown.clone()));
    set.spawn(crate::jobs::feeds::reap_loop(state.clone(), shutdown.clone()));
    // The AI worker fleet must run in exactly one place: with several replicas, a leader lock
    // would gate this spawn (see `crate::hyperion::ai_fleet::run`).
    set.spawn(crate::hyperion::ai_fleet::run(state.clone(), shutdown.clone()));
    set.spawn(crate::hyperion::server_health::sample_loop(
        state.clone(),
        shutdown.clone(),
    ));
    set.spawn(crate::hyperion::ux::tick_loop(state.clone(), shutdown));
    Workers(set)
}

async fn prune_loop(state: AppState, shutdown: CancellationToken) {
    loop {
        if let Err(err) = prune_once(&state).await {
            tracing::warn!(error = %err, "pruning expired sessions failed; will retry");
        }
        match prune_history(&state).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "pruned heartbeat history and activity past their retention"),
            Err(err) => tracing::warn!(error = %err, "pruning heartbeat history failed; will retry"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

/// Deletes heartbeats older than `HYPRBOX_HISTORY_RETENTION`, node by node, oldest first, a short
/// window of data per statement, and activity events as old (each node keeps its newest
/// [`EVENTS_KEPT`] whatever their age); returns how many rows went.
pub async fn prune_history(state: &AppState) -> Result<u64, StoreError> {
    let retention = i64::try_from(state.settings.history_retention.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now_ms().saturating_sub(retention);
    let mut conn = state.store.conn().await?;
    let mut total = 0;
    for node_id in state.fleet.ids() {
        while let Some(oldest) = nodes::oldest_heartbeat(&mut conn, &node_id).await? {
            if oldest >= cutoff {
                break;
            }
            let to = oldest.saturating_add(HISTORY_WINDOW_MS).min(cutoff);
            total += nodes::prune_history(&mut conn, &node_id, oldest, to).await?;
        }
        total += nodes::prune_events(&mut conn, &node_id, cutoff, EVENTS_KEPT).await?;
        // Let heartbeats and reads through between nodes.
        tokio::task::yield_now().await;
    }
    Ok(total)
}

/// Deletes expired revoked-token ids and expired reset tokens in bounded batches.
pub async fn prune_once(state: &AppState) -> Result<(), StoreError> {
    let now = now_ms();
    state.sessions.prune_revoked(now / 1000);
    let mut conn = state.store.conn().await?;
    while sessions::prune(&mut conn, now, PRUNE_BATCH).await? == PRUNE_BATCH as u64 {}
    while resets::prune(&mut conn, now, PRUNE_BATCH).await? == PRUNE_BATCH as u64 {}
    Ok(())
}
