//! The event hub: fleet events (heartbeats, activity, job status flips, from the fleet, jobs and
//! findings) fanned out to every live-stream subscriber.
//!
//! A `tokio::sync::broadcast` channel: publishing never waits for a subscriber, each subscriber has a
//! bounded backlog, and one that falls behind is told how many events it missed (`lagged`) and
//! carries on from the newest. Each event's JSON is made once, at publish time, however many
//! subscribers there are.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

/// Events a subscriber may hold before it starts missing some.
const BACKLOG: usize = 4096;

#[derive(Clone, Debug)]
pub struct HubEvent {
    /// The SSE event name: `heartbeat`, `activity` or `job`.
    pub kind: &'static str,
    /// The event's JSON payload.
    pub data: Arc<str>,
}

pub struct EventHub {
    sender: broadcast::Sender<HubEvent>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::with_backlog(BACKLOG)
    }
}

impl EventHub {
    /// A hub whose subscribers may each fall `backlog` events behind before missing some.
    pub fn with_backlog(backlog: usize) -> EventHub {
        EventHub {
            sender: broadcast::channel(backlog).0,
        }
    }

    /// Whether anyone listens; callers skip building an event's payload when nobody does.
    pub fn has_subscribers(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn publish(&self, kind: &'static str, payload: &impl Serialize) {
        // Nobody listening is the common case and not an error.
        if !self.has_subscribers() {
            return;
        }
        if let Ok(json) = serde_json::to_string(payload) {
            let _ = self.sender.send(HubEvent {
                kind,
                data: Arc::from(json),
            });
        }
    }

    /// An `activity` event: a node event as the live stream shows it.
    pub fn publish_activity(&self, event: &hyprbox_store::nodes::NodeEvent) {
        self.publish(
            "activity",
            &serde_json::json!({
                "nodeId": event.node_id,
                "type": event.kind,
                "severity": event.severity,
                "message": event.message,
                "at": crate::http::time::rfc3339(event.at),
            }),
        );
    }

    pub fn subscribe(&self) -> broadcast::Receiver<HubEvent> {
        self.sender.subscribe()
    }
}
