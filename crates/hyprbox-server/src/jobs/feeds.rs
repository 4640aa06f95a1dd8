//! What happens around a job besides its rows: its live output feed for `/api/jobs/:id/stream`,
//! and its status flips on that feed, on the fleet stream and in the node's activity.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hyprbox_store::jobs::{self, Chunk, Job};
use hyprbox_store::nodes::NodeEvent;
use hyprbox_store::{new_id, now_ms};
use tokio::sync::broadcast;

use crate::fleet::writer::Pending;
use crate::state::AppState;

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
            &job.node_id,
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
