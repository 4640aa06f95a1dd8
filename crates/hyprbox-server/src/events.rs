//! The event hub: fleet events (heartbeats, activity, job status flips, backup runs, from the
//! fleet, jobs, findings and backups) fanned out to every live-stream subscriber, in frames.
//!
//! Publishing only notes the event: heartbeats by node (a newer one replaces the older one not yet
//! sent), everything else in order. A few times a second [`EventHub::flush`] renders what was noted
//! into one frame of SSE text, once, and hands that frame to every subscriber through a
//! `tokio::sync::broadcast` channel. So what a subscriber costs does not grow with the heartbeat
//! rate: at most a few wake-ups a second and a shared buffer, never a wake-up and a copy per
//! heartbeat (which is what made 500 open dashboards cost the server 97 % of its ingest), and a
//! stream's bandwidth is bounded by the fleet's size, not its heartbeat rate. Publishing never
//! waits for a subscriber; one that falls behind is told how many frames it missed (`lagged`) and
//! carries on from the oldest kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Frames a subscriber may hold before it starts missing some (16 s of frames at the usual pace).
const BACKLOG: usize = 64;
/// How often noted events are sent: often enough to look live, rarely enough that a subscriber
/// costs next to nothing however fast heartbeats arrive.
pub const FRAME_EVERY: Duration = Duration::from_millis(250);
/// What one stream may carry a second. A frame larger than a quarter of it (a huge fleet whose
/// every node beat within the frame) delays the next frame until the stream is back under it, so
/// each stream's bandwidth stays bounded however large the fleet and however fast it beats.
pub const STREAM_BYTES_PER_SEC: usize = 256 * 1024;
/// Events other than heartbeats one frame carries at most. Past it (a flood of threshold crossings
/// from thousands of nodes at once) the rest are dropped from the stream and the frame says how
/// many with `lagged`; they stay in each node's activity.
pub const EVENTS_PER_FRAME: usize = 500;

/// Events noted since the last frame.
#[derive(Default)]
struct Pending {
    /// `(event name, JSON)`, in the order they were first noted.
    events: Vec<(&'static str, String)>,
    /// Key (a node id) → its place in `events`, so a newer heartbeat takes the older one's place.
    keyed: HashMap<String, usize>,
    /// Events past [`EVENTS_PER_FRAME`], dropped from this frame.
    dropped: u64,
}

pub struct EventHub {
    sender: broadcast::Sender<Bytes>,
    pending: Mutex<Pending>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::with_backlog(BACKLOG)
    }
}

impl EventHub {
    /// A hub whose subscribers may each fall `backlog` frames behind before missing some.
    pub fn with_backlog(backlog: usize) -> EventHub {
        EventHub {
            sender: broadcast::channel(backlog).0,
            pending: Mutex::new(Pending::default()),
        }
    }

    /// Whether anyone listens; callers skip building an event's payload when nobody does.
    pub fn has_subscribers(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    fn note(&self, kind: &'static str, key: Option<&str>, payload: &impl Serialize) {
        // Nobody listening is the common case and not an error.
        if !self.has_subscribers() {
            return;
        }
        let Ok(json) = serde_json::to_string(payload) else {
            return;
        };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Pending {
            events,
            keyed,
            dropped,
        } = &mut *pending;
        match key {
            Some(key) => {
                if let Some(&at) = keyed.get(key) {
                    events[at] = (kind, json);
                    return;
                }
                keyed.insert(key.to_string(), events.len());
            }
            None if events.len() - keyed.len() >= EVENTS_PER_FRAME => {
                *dropped += 1;
                return;
            }
            None => {}
        }
        events.push((kind, json));
    }

    /// An event for the next frame.
    pub fn publish(&self, kind: &'static str, payload: &impl Serialize) {
        self.note(kind, None, payload);
    }

    /// A node's heartbeat for the next frame, replacing one of the same node not yet sent.
    pub fn publish_heartbeat(&self, node_id: &str, payload: &impl Serialize) {
        self.note("heartbeat", Some(node_id), payload);
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

    /// Sends what was noted since the last frame as one frame of SSE text (nothing when nothing
    /// was noted) and returns its size. Compact JSON holds no line break, so each event is one
    /// `data:` line.
    pub fn flush(&self) -> usize {
        let (mut events, dropped) = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.keyed.clear();
            (
                std::mem::take(&mut pending.events),
                std::mem::take(&mut pending.dropped),
            )
        };
        if dropped > 0 {
            events.push(("lagged", format!("{{\"missed\":{dropped}}}")));
        }
        if events.is_empty() {
            return 0;
        }
        let size = events.iter().map(|(k, j)| k.len() + j.len() + 16).sum();
        let mut frame = String::with_capacity(size);
        for (kind, json) in events {
            frame.push_str("event: ");
            frame.push_str(kind);
            frame.push_str("\ndata: ");
            frame.push_str(&json);
            frame.push_str("\n\n");
        }
        let size = frame.len();
        // No subscriber left since the events were noted: the frame has no audience.
        let _ = self.sender.send(Bytes::from(frame));
        size
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Bytes> {
        self.sender.subscribe()
    }

    /// Sends a frame every [`FRAME_EVERY`] (or less often, see [`frame_pause`]) until shutdown,
    /// then the last one.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut pause = FRAME_EVERY;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(pause) => pause = frame_pause(self.flush()),
            }
        }
        self.flush();
    }
}

/// How long to wait after a frame of `size` bytes: [`FRAME_EVERY`], or as long as the frame takes
/// at [`STREAM_BYTES_PER_SEC`] when that is longer.
pub fn frame_pause(size: usize) -> Duration {
    let at_budget = Duration::from_secs_f64(size as f64 / STREAM_BYTES_PER_SEC as f64);
    at_budget.max(FRAME_EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(frame: &Bytes) -> &str {
        std::str::from_utf8(frame).unwrap()
    }

    #[test]
    fn a_frame_holds_each_nodes_latest_heartbeat_and_every_other_event_in_order() {
        let hub = EventHub::with_backlog(4);
        let mut receiver = hub.subscribe();
        hub.publish_heartbeat("a", &serde_json::json!({"cpu": 1}));
        hub.publish("activity", &serde_json::json!({"n": 1}));
        hub.publish_heartbeat("b", &serde_json::json!({"cpu": 2}));
        hub.publish_heartbeat("a", &serde_json::json!({"cpu": 3}));
        hub.publish("activity", &serde_json::json!({"n": 2}));
        hub.flush();
        let frame = receiver.try_recv().unwrap();
        assert_eq!(
            text(&frame),
            "event: heartbeat\ndata: {\"cpu\":3}\n\n\
             event: activity\ndata: {\"n\":1}\n\n\
             event: heartbeat\ndata: {\"cpu\":2}\n\n\
             event: activity\ndata: {\"n\":2}\n\n"
        );
        assert_eq!(hub.flush(), 0);
        assert!(receiver.try_recv().is_err(), "nothing noted, no frame");
    }

    #[test]
    fn a_large_frame_delays_the_next_so_a_stream_stays_within_its_bandwidth() {
        assert_eq!(frame_pause(0), FRAME_EVERY);
        assert_eq!(frame_pause(STREAM_BYTES_PER_SEC / 8), FRAME_EVERY);
        assert_eq!(frame_pause(STREAM_BYTES_PER_SEC * 3), Duration::from_secs(3));
    }

    #[test]
    fn events_past_the_frames_share_are_dropped_and_counted_but_heartbeats_never_are() {
        let hub = EventHub::with_backlog(4);
        let mut receiver = hub.subscribe();
        for i in 0..EVENTS_PER_FRAME + 7 {
            hub.publish("activity", &i);
        }
        hub.publish_heartbeat("a", &1);
        hub.flush();
        let frame = receiver.try_recv().unwrap();
        let text = text(&frame);
        assert_eq!(text.matches("event: activity").count(), EVENTS_PER_FRAME);
        assert!(text.contains("event: heartbeat\ndata: 1\n\n"));
        assert!(
            text.ends_with("event: lagged\ndata: {\"missed\":7}\n\n"),
            "{}",
            &text[text.len() - 80..]
        );
    }

    #[test]
    fn nothing_is_noted_while_nobody_listens() {
        let hub = EventHub::with_backlog(4);
        hub.publish_heartbeat("a", &1);
        let mut receiver = hub.subscribe();
        assert_eq!(hub.flush(), 0);
        assert!(receiver.try_recv().is_err());
    }
}
