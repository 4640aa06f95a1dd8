//! The backup scheduler: every few seconds it queues the backup job of each policy whose cron tick
//! has come, and raises `backup.stale` for policies without a recent success.
//!
//! A policy keeps its next tick (`next_run_at`). A tick takes the due policies in chunks, and for
//! each moves the next tick past now (so ticks missed while the server was down run once, at
//! start) and queues a job unless the policy already has one QUEUED or RUNNING. Moving the tick is
//! a compare-and-set on the old value, inside the transaction that queues the job: two schedulers
//! (replicas) cannot both take the same tick. [`tick`] takes the time as an argument, so tests
//! drive it with any clock.

use std::collections::HashSet;
use std::time::Duration;

use hyprbox_store::backups;
use hyprbox_store::findings::{self, Reported, WARN};
use hyprbox_store::now_ms;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::schedule::Schedule;
use super::{PRESET, STALE_FINDING, announce, finding_key, finding_metadata, render};
use crate::http::error::ApiError;
use crate::state::AppState;

/// How often the scheduler looks for due policies (cron's granularity is a minute).
pub const TICK_EVERY: Duration = Duration::from_secs(15);
/// Due policies handled per transaction.
const CHUNK: i64 = 500;

/// What one tick did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ticked {
    /// Backup jobs queued.
    pub queued: usize,
    /// Due policies whose previous backup was still QUEUED or RUNNING (no second one).
    pub already_active: usize,
    /// Due policies whose node is gone or that no longer render.
    pub skipped: usize,
    /// `backup.stale` findings opened.
    pub stale: usize,
}

/// Runs one tick as of `now` (Unix milliseconds).
pub async fn tick(state: &AppState, now: i64) -> Result<Ticked, ApiError> {
    let preset = state
        .presets
        .get(PRESET)
        .ok_or_else(|| ApiError::Unavailable(format!("the {PRESET} preset is not loaded")))?;
    let mut ticked = Ticked::default();
    loop {
        let due = {
            let mut conn = state.store.conn().await?;
            backups::due(&mut conn, now, CHUNK).await?
        };
        let last_chunk = i64::try_from(due.len()).unwrap_or(i64::MAX) < CHUNK;
        let mut work = Vec::with_capacity(due.len());
        for policy in due {
            let Some(expected) = policy.next_run_at else {
                continue;
            };
            let next = policy
                .schedule
                .as_deref()
                .and_then(|s| Schedule::parse(s).ok())
                .and_then(|s| s.next_after(now));
            let job = if state.fleet.contains(&policy.node_id) {
                render(preset, &policy, &policy.created_by)
                    .inspect_err(|e| tracing::warn!(policy_id = %policy.id, error = %e, "a scheduled backup does not render"))
                    .ok()
            } else {
                None
            };
            if job.is_none() {
                ticked.skipped += 1;
            }
            work.push((policy.id, expected, next, job));
        }
        if work.is_empty() {
            break;
        }
        let (queued, already_active) = state
            .store
            .write(move |tx| {
                Box::pin(async move {
                    let ticks: Vec<backups::Tick<'_>> = work
                        .iter()
                        .map(|(id, expected, next, job)| backups::Tick {
                            policy_id: id,
                            expected: *expected,
                            next: *next,
                            job: job.as_ref().map(super::BackupJob::new_job),
                        })
                        .collect();
                    backups::take_ticks(tx, &ticks).await
                })
            })
            .await?;
        ticked.queued += queued.len();
        ticked.already_active += already_active;
        for job in &queued {
            announce(state, job).await;
        }
        if last_chunk {
            break;
        }
    }
    ticked.stale = raise_stale(state, now).await?;
    Ok(ticked)
}

/// Opens `backup.stale` for each policy without a success within its window whose finding is not
/// open yet; returns how many opened.
async fn raise_stale(state: &AppState, now: i64) -> Result<usize, ApiError> {
    let (stale, open) = {
        let mut conn = state.store.conn().await?;
        let stale = backups::stale(&mut conn, now).await?;
        if stale.is_empty() {
            return Ok(0);
        }
        let open: HashSet<(String, String)> = findings::unresolved_of_type(&mut conn, STALE_FINDING)
            .await?
            .into_iter()
            .collect();
        (stale, open)
    };
    let mut raised = 0;
    for policy in stale {
        let key = finding_key(&policy.id);
        if open.contains(&(policy.node_id.clone(), key.clone())) || !state.fleet.contains(&policy.node_id) {
            continue;
        }
        let hours = policy.stale_after_ms / 3_600_000;
        let since = policy.last_success_at.map_or_else(
            || "has never succeeded".to_owned(),
            |at| format!("last succeeded at {}", crate::http::time::rfc3339(at)),
        );
        let finding = Reported {
            kind: STALE_FINDING.into(),
            key,
            severity: WARN.into(),
            title: format!("Backup \"{}\" is stale", policy.name),
            message: format!(
                "The backup policy \"{}\" {since}: no successful run within {hours} hours.",
                policy.name
            ),
            related_entities: json!([{ "type": "backup", "id": policy.id }]).to_string(),
            metadata: finding_metadata(
                &policy,
                json!({
                    "policyId": policy.id,
                    "policyName": policy.name,
                    "lastSuccessAt": policy.last_success_at.map(crate::http::time::rfc3339),
                    "staleAfterHours": hours,
                }),
            ),
        };
        crate::findings::raise(state, &policy.node_id, finding).await?;
        raised += 1;
    }
    Ok(raised)
}

/// Ticks until shutdown; the first tick runs at once, so a tick missed while the server was down
/// runs at start.
pub async fn run_loop(state: AppState, shutdown: CancellationToken) {
    loop {
        match tick(&state, now_ms()).await {
            Ok(ticked) if ticked.queued + ticked.stale > 0 => {
                tracing::info!(
                    queued = ticked.queued,
                    stale = ticked.stale,
                    "backup scheduler tick"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "the backup scheduler failed; will retry"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(TICK_EVERY) => {}
        }
    }
}
