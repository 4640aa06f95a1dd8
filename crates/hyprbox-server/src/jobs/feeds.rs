//! What happens around a job besides its rows: its live output feed for `/api/jobs/:id/stream`,
//! its status flips on the fleet stream and in the node's activity, and the reaper that makes sure
//! nothing stays RUNNING forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyprbox_store::jobs::{self, Chunk, Job};
use hyprbox_store::nodes::NodeEvent;
use hyprbox_store::{StoreError, new_id, now_ms};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::fleet::writer::Pending;
use crate::state::AppState;

/// How often the reaper looks for RUNNING jobs past their timeout or on an OFFLINE node.
pub const REAP_EVERY: Duration = Duration::from_secs(10);
/// Live events one job-stream subscriber may hold before it re-reads from the database (a piece
/// of output is at most 1 MiB, so a stalled watcher holds at most this many MiB).
const FEED_BACKLOG: usize = 32;

/// One live event of a job.
#[derive(Clone, Debug)]
pub enum FeedEvent {
    Output(Arc<Chunk>),
    Status(Arc<str>),
}

/// Per-job broadcast channels, present only while someone watches the job.
#[derive(Default)]
pub struct Feeds {
    channels: Mutex<HashMap<String, broadcast::Sender<FeedEvent>>>,
}

impl Feeds {
    pub fn subscribe(&self, job_id: &str) -> broadcast::Receiver<FeedEvent> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.retain(|_, sender| sender.receiver_count() > 0);
        channels
            .entry(job_id.to_string())
            .or_insert_with(|| broadcast::channel(FEED_BACKLOG).0)
            .subscribe()
    }

    /// Sends to the job's watchers; costs one map lookup when there are none. A channel whose
    /// watchers are all gone is dropped here.
    pub fn publish(&self, job_id: &str, event: FeedEvent) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = channels.get(job_id)
            && sender.send(event).is_err()
        {
            channels.remove(job_id);
        }
    }
}

/// Hands freshly stored output to the job's live watchers.
pub fn publish_output(state: &AppState, job_id: &str, chunks: Vec<Chunk>) {
    for chunk in chunks {
        state.feeds.publish(job_id, FeedEvent::Output(Arc::new(chunk)));
    }
}

/// The node activity a status flip makes, as the contract names it (`None`: queued is not an event
/// of the node yet).
fn activity(status: &str) -> Option<(&'static str, &'static str)> {
    match status {
        jobs::RUNNING => Some(("job.started", "INFO")),
        jobs::SUCCEEDED => Some(("job.succeeded", "INFO")),
        jobs::FAILED => Some(("job.failed", "WARN")),
        jobs::CANCELLED => Some(("job.cancelled", "INFO")),
        _ => None,
    }
}

/// A job's status flip, everywhere it shows: the job's own stream, the fleet stream (`job`) and,
/// from its start on, the node's activity (`job.started`, `job.succeeded`…), which is also stored.
pub async fn publish_status(state: &AppState, job: &Job) {
    state
        .feeds
        .publish(&job.id, FeedEvent::Status(Arc::from(job.status.as_str())));
    if state.hub.has_subscribers() {
        state.hub.publish(
            "job",
            &serde_json::json!({ "id": job.id, "nodeId": job.node_id, "status": job.status }),
        );
    }
    let Some((kind, severity)) = activity(&job.status) else {
        return;
    };
    // A deleted node's jobs end without it: its activity is gone and must not come back.
    if !state.fleet.contains(&job.node_id) {
        return;
    }
    let now = now_ms();
    let event = NodeEvent {
        id: new_id(),
        node_id: job.node_id.clone(),
        at: now,
        kind: kind.into(),
        severity: severity.into(),
        message: match (&job.status[..], &job.error, job.exit_code) {
            (_, Some(error), _) => format!("Job {} ({}): {error}", job.id, job.preset_name),
            (jobs::SUCCEEDED | jobs::FAILED, None, Some(code)) => {
                format!(
                    "Job {} ({}) {} with exit code {code}",
                    job.id, job.preset_name, job.status
                )
            }
            _ => format!("Job {} ({}) {}", job.id, job.preset_name, job.status),
        },
        metadata: serde_json::json!({ "jobId": job.id, "presetName": job.preset_name }).to_string(),
    };
    if state.hub.has_subscribers() {
        state.hub.publish_activity(&event);
    }
    state.writer.queue(Pending::Event(event)).await;
}

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
        let reason = if timed_out {
            Some(format!(
                "the job did not finish within its timeout of {}",
                humanize(job.timeout_seconds)
            ))
        } else {
            match node {
                None => Some("the node was deleted while the job ran".to_string()),
                Some(node)
                    if judge_offline
                        && crate::fleet::memory::status(&node.node, now, offline_after) == "OFFLINE" =>
                {
                    Some(
                        "the node went OFFLINE (no heartbeat) while the job ran; its outcome is unknown"
                            .to_string(),
                    )
                }
                Some(_) => None,
            }
        };
        if let Some(reason) = reason
            && let Some((job, chunks)) = jobs::fail(&state.store, &job.id, &reason, cap, now).await?
        {
            if timed_out {
                // The agent may still be running it: ask it to stop.
                state.agents.send(
                    &job.node_id,
                    &crate::fleet::agent_links::AgentMessage::Cancel {
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
