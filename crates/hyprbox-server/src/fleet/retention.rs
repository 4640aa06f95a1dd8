//! History retention: every ten minutes heartbeats older than `HYPRBOX_HISTORY_RETENTION` are
//! deleted node by node, a short window of data per statement, and activity events as old (each
//! node keeping its newest few whatever their age).

use std::time::Duration;

use hyprbox_store::{StoreError, nodes, now_ms};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How often old heartbeat history and activity are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// A node's heartbeat history is deleted an hour of data at a time (3,600 rows at one heartbeat
/// a second), so each statement stays short.
const HISTORY_WINDOW_MS: i64 = 3_600_000;
/// Activity events each node keeps past the retention: more than the activity view shows (8).
const EVENTS_KEPT: i64 = 20;

pub async fn prune_loop(state: AppState, shutdown: CancellationToken) {
    loop {
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
            // Deletes go through the writer, one short statement at a time, so the heartbeat
            // batches queue behind at most one of them.
            let mut writer = state.store.write_conn().await?;
            total += nodes::prune_history(&mut writer, &node_id, oldest, to).await?;
        }
        let mut writer = state.store.write_conn().await?;
        total += nodes::prune_events(&mut writer, &node_id, cutoff, EVENTS_KEPT).await?;
        drop(writer);
        // Let heartbeats and reads through between nodes.
        tokio::task::yield_now().await;
    }
    Ok(total)
}
