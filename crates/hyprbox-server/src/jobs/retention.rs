//! Job retention: every ten minutes finished jobs older than `HYPRBOX_JOB_RETENTION` go with their
//! output, a batch per transaction, except each node's newest `HYPRBOX_JOBS_KEPT_PER_NODE` jobs.

use std::time::Duration;

use hyprbox_store::{StoreError, jobs, now_ms};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How often old jobs are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Jobs deleted per transaction (each with all its output chunks).
const PRUNE_BATCH: i64 = 100;

pub async fn prune_loop(state: AppState, shutdown: CancellationToken) {
    loop {
        match prune_jobs(&state, now_ms()).await {
            Ok(0) => {}
            Ok(jobs) => tracing::info!(jobs, "pruned finished jobs past their retention"),
            Err(err) => tracing::warn!(error = %err, "pruning jobs failed; will retry"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

/// Deletes finished jobs (and their output) that ended before `now - HYPRBOX_JOB_RETENTION`,
/// keeping each node's newest `HYPRBOX_JOBS_KEPT_PER_NODE`; returns how many went.
pub async fn prune_jobs(state: &AppState, now: i64) -> Result<u64, StoreError> {
    let retention = i64::try_from(state.settings.job_retention.as_millis()).unwrap_or(i64::MAX);
    let before = now.saturating_sub(retention);
    let mut total = 0;
    loop {
        let gone = jobs::prune_finished(
            &state.store,
            before,
            state.settings.jobs_kept_per_node,
            PRUNE_BATCH,
        )
        .await?;
        total += gone;
        if gone < u64::try_from(PRUNE_BATCH).unwrap_or(u64::MAX) {
            return Ok(total);
        }
        // Let heartbeat batches and requests through between batches.
        tokio::task::yield_now().await;
    }
}
