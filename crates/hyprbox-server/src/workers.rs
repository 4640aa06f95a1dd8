//! Background loops. Each takes a child of the shutdown token and returns when it is cancelled.

use std::time::Duration;

use hyprbox_store::{StoreError, now_ms, resets, sessions};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How often expired revoked-token ids and reset tokens are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Rows deleted per statement, so a prune never holds the database for long.
const PRUNE_BATCH: i64 = 1000;

pub struct Workers(JoinSet<()>);

impl Workers {
    pub async fn wait(mut self) {
        while self.0.join_next().await.is_some() {}
    }
}

pub fn spawn(state: &AppState, shutdown: CancellationToken) -> Workers {
    let mut set = JoinSet::new();
    set.spawn(prune_loop(state.clone(), shutdown));
    Workers(set)
}

async fn prune_loop(state: AppState, shutdown: CancellationToken) {
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
    let mut conn = state.store.conn().await?;
    while sessions::prune(&mut conn, now, PRUNE_BATCH).await? == PRUNE_BATCH as u64 {}
    while resets::prune(&mut conn, now, PRUNE_BATCH).await? == PRUNE_BATCH as u64 {}
    Ok(())
}
