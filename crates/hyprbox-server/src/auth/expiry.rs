//! Expired credentials leave: every ten minutes, revoked-token ids past their expiry (from the
//! session cache and the database) and expired password-reset tokens are deleted in bounded batches.

use std::time::Duration;

use hyprbox_store::{StoreError, now_ms, resets, sessions};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How often expired revoked-token ids and reset tokens are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Rows deleted per statement, so a prune never holds the database for long.
const PRUNE_BATCH: i64 = 1000;

pub async fn prune_loop(state: AppState, shutdown: CancellationToken) {
    loop {
        if let Err(err) = prune_once(&state).await {
            tracing::warn!(error = %err, "pruning expired sessions failed; will retry");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

/// Deletes expired revoked-token ids and expired reset tokens in bounded batches.
pub async fn prune_once(state: &AppState) -> Result<(), StoreError> {
    let now = now_ms();
    state.sessions.prune_revoked(now / 1000);
    // Through the writer, one batch per acquisition, so heartbeat batches interleave.
    while sessions::prune(&mut *state.store.write_conn().await?, now, PRUNE_BATCH).await?
        == PRUNE_BATCH as u64
    {}
    while resets::prune(&mut *state.store.write_conn().await?, now, PRUNE_BATCH).await? == PRUNE_BATCH as u64
    {
    }
    Ok(())
}
