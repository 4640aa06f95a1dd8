//! The reaper: every ten seconds it ends the jobs that can no longer finish (RUNNING past their
//! timeout or on a node gone OFFLINE or deleted; QUEUED for a deleted node), so nothing stays
//! RUNNING forever.

use std::time::Duration;

use hyprbox_store::jobs::{self, Ending};
use hyprbox_store::{StoreError, now_ms};
use tokio_util::sync::CancellationToken;

use super::feeds::{publish_output, publish_status};
use crate::fleet::agent_links::AgentMessage;
use crate::fleet::memory::status as node_status;
use crate::state::AppState;

/// How often the reaper looks for RUNNING jobs past their timeout or on an OFFLINE node.
pub const REAP_EVERY: Duration = Duration::from_secs(10);

/// One pass of the reaper: fails RUNNING jobs past their timeout or whose node is OFFLINE (or
/// gone), and cancels QUEUED jobs of deleted nodes. Returns how many jobs it ended.
///
/// Right after a start the fleet's `lastSeenAt` values are as old as the outage, so the OFFLINE rule
/// waits until the server has been up for `HYPRBOX_NODE_OFFLINE_AFTER`: agents get the time to
/// report before their jobs are given up on.
pub async fn reap(state: &AppState, now: i64) -> Result<usize, StoreError> {
    let offline_after = i64::try_from(state.settings.node_offline_after.as_millis()).unwrap_or(i64::MAX);
    let judge_offline = state.started_at.elapsed() >= state.settings.node_offline_after;
    let cap = state.settings.job_output_max_bytes;
    let unfinished = {
        let mut conn = state.store.conn().await?;
        jobs::unfinished(&mut conn).await?
    };
    let mut ended = 0;
    for job in unfinished {
        let node = state.fleet.get(&job.node_id);
        if job.status == jobs::QUEUED {
            if node.is_none() {
                ended += cancel_for_deleted_node(state, &job.id, now).await?;
            }
            continue;
        }
        let started = job.started_at.unwrap_or(job.created_at);
        let timed_out = now - started > job.timeout_seconds.saturating_mul(1000);
        let ending = if timed_out {
            Some((
                format!(
                    "the job did not finish within its timeout of {}",
                    humanize(job.timeout_seconds)
                ),
                Ending::Failed,
            ))
        } else {
            match node {
                None => Some((
                    "the node was deleted while the job ran".to_string(),
                    Ending::Failed,
                )),
                // Presumed lost, not killed: should the agent come back, its real outcome wins.
                Some(node) if judge_offline && node_status(&node.node, now, offline_after) == "OFFLINE" => {
                    Some((
                        "the node went OFFLINE (no heartbeat) while the job ran; its outcome is unknown \
                     unless its agent reports again"
                            .to_string(),
                        Ending::PresumedLost,
                    ))
                }
                Some(_) => None,
            }
        };
        if let Some((reason, ending)) = ending
            && let Some((job, chunks)) = jobs::fail(&state.store, &job.id, &reason, ending, cap, now).await?
        {
            if timed_out {
                // The agent may still be running it: ask it to stop.
                state.agents.send(
                    &job.node_id,
                    &AgentMessage::Cancel {
                        job_id: job.id.clone(),
                    },
                );
            }
            publish_output(state, &job.id, chunks);
            publish_status(state, &job).await;
            ended += 1;
        }
    }
    Ok(ended)
}

/// Cancels a QUEUED job whose node was deleted.
pub async fn cancel_for_deleted_node(state: &AppState, job_id: &str, now: i64) -> Result<usize, StoreError> {
    // A write: on SQLite it must go through the one writer connection.
    let mut conn = state.store.write_conn().await?;
    let cancelled = jobs::cancel_queued(&mut conn, job_id, Some("the node was deleted"), now).await?;
    drop(conn);
    Ok(match cancelled {
        Some(job) => {
            publish_status(state, &job).await;
            1
        }
        None => 0,
    })
}

fn humanize(seconds: i64) -> String {
    match seconds {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

pub async fn reap_loop(state: AppState, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(REAP_EVERY) => {}
        }
        match reap(&state, now_ms()).await {
            Ok(0) => {}
            Ok(jobs) => tracing::info!(jobs, "reaper ended jobs that could not finish"),
            Err(err) => tracing::warn!(error = %err, "the job reaper failed; will retry"),
        }
    }
}
