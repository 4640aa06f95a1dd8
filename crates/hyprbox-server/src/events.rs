//! The event hub: fleet events (heartbeats, activity, job status flips, backup runs, from the
//! fleet, jobs, findings and backups) fanned out to every live-stream subscriber, in frames.
//!
//! Publishing only notes the event: heartbeats by node (a newer one replaces the older one not yet
//! sent), everything else in order. A few times a second [`EventHub::flush`] renders what was noted
//! into one frame of SSE text, once, and hands that frame to every subscriber through a
//! `tokio::sync::broadcast` channel. So what a subscriber costs does not grow with the heartbeat
//! rate: at most a few wake-ups a second and a shared buffer, never a wake-up and a copy per
//! heartbeat (which is what made 500 open dashboards cost the server 97 % of its ingest). A frame
//! holds at most [`FRAME_BYTES`]; what does not fit waits for the next one, so a stream's bandwidth
//! is bounded (128 KiB/s of heartbeats) however large and busy the fleet. Each frame is also
//! compressed once, as a gzip piece every subscriber that accepts gzip sends as it is (`http::sse`). Publishing never
//! waits for a subscriber; one that falls behind is told how many frames it missed (`lagged`) and
//! carries on from the oldest kept.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::http::sse::GzipPiece;

/// Frames a subscriber may hold before it starts missing some (16 s of frames at the usual pace).
const BACKLOG: usize = 64;
/// How often noted events are sent: often enough to look live, rarely enough that a subscriber
/// costs next to nothing however fast heartbeats arrive.
pub const FRAME_EVERY: Duration = Duration::from_millis(250);
/// What one frame carries at most in heartbeats (a quarter second of a stream's 128 KiB/s). When more is noted
/// (a huge fleet that all beat within the frame) the rest waits for the next frames, oldest first,
/// still replaced by newer heartbeats of the same node; so each stream's bandwidth stays bounded,
/// and so does the work a browser does per frame, however large the fleet and however fast it beats.
pub const FRAME_BYTES: usize = 32 * 1024;
/// Events other than heartbeats one frame carries at most. Past it (a flood of threshold crossings
/// from thousands of nodes at once) the rest are dropped from the stream and the frame says how
/// many with `lagged`; they stay in each node's activity.
pub const EVENTS_PER_FRAME: usize = 500;

/// How hard a frame is compressed: it is done once for every subscriber, so it may be thorough.
const FRAME_GZIP_LEVEL: u32 = 6;

/// One frame as every subscriber gets it: SSE text, and the same text compressed; and where each
/// event lies in the text with the node it is about, for streams that follow only some nodes.
#[derive(Clone, Debug)]
pub struct Frame {
    pub text: Bytes,
    pub gzip: GzipPiece,
    pub events: Arc<[Placed]>,
}

/// An event's bytes in [`Frame::text`] and its node (`None` for `lagged`, which every stream gets).
#[derive(Debug)]
pub struct Placed {
    pub start: usize,
    pub end: usize,
    pub node_id: Option<Arc<str>>,
}

impl Frame {
    /// The frame's events about `nodes` (and any `lagged`), as SSE text; `None` when there are none.
    pub fn only(&self, nodes: &HashSet<String>) -> Option<Bytes> {
        let mut text = Vec::new();
        for placed in self.events.iter() {
            if placed.node_id.as_deref().is_none_or(|id| nodes.contains(id)) {
                text.extend_from_slice(&self.text[placed.start..placed.end]);
            }
        }
        (!text.is_empty()).then(|| Bytes::from(text))
    }
}

/// Events noted and not sent yet.
#[derive(Default)]
struct Pending {
    /// Everything but heartbeats, in order, with the node each is about: sent first in the next
    /// frame, so a busy fleet's heartbeats never hold a job's or an activity's event back.
    events: Vec<(&'static str, Arc<str>, String)>,
    /// `(node id, JSON)` of heartbeats, oldest first; a newer heartbeat of the same node takes its
    /// place.
    heartbeats: Vec<(Arc<str>, String)>,
    /// Node id → its place in `heartbeats`.
    keyed: HashMap<Arc<str>, usize>,
    /// Events past [`EVENTS_PER_FRAME`], dropped from this frame.
    dropped: u64,
}

pub struct EventHub {
    sender: broadcast::Sender<Frame>,
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

    fn json(&self, payload: &impl Serialize) -> Option<String> {
        // Nobody listening is the common case and not an error.
        if !self.has_subscribers() {
            return None;
        }
        serde_json::to_string(payload).ok()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An event about `node_id` for the next frame.
    pub fn publish(&self, kind: &'static str, node_id: &str, payload: &impl Serialize) {
        let Some(json) = self.json(payload) else {
            return;
        };
        let mut pending = self.pending();
        if pending.events.len() >= EVENTS_PER_FRAME {
            pending.dropped += 1;
        } else {
            pending.events.push((kind, Arc::from(node_id), json));
        }
    }

    /// A node's heartbeat for the next frame, replacing one of the same node not yet sent.
    pub fn publish_heartbeat(&self, node_id: &str, payload: &impl Serialize) {
        let Some(json) = self.json(payload) else {
            return;
        };
        let mut pending = self.pending();
        let Pending {
            heartbeats, keyed, ..
        } = &mut *pending;
        match keyed.get(node_id) {
            Some(&at) => heartbeats[at].1 = json,
            None => {
                let node_id: Arc<str> = Arc::from(node_id);
                keyed.insert(node_id.clone(), heartbeats.len());
                heartbeats.push((node_id, json));
            }
        }
    }

    /// An `activity` event: a node event as the live stream shows it.
    pub fn publish_activity(&self, event: &hyprbox_store::nodes::NodeEvent) {
        self.publish(
            "activity",
            &event.node_id,
            &serde_json::json!({
                "nodeId": event.node_id,
                "type": event.kind,
                "severity": event.severity,
                "message": event.message,
                "at": crate::http::time::rfc3339(event.at),
            }),
        );
    }

    /// Sends what was noted as one frame of SSE text and returns its size (0: nothing noted):
    /// every event but heartbeats, then heartbeats oldest first up to [`FRAME_BYTES`]; the other
    /// heartbeats wait for the next frame. Compact JSON holds no line break, so each event is one
    /// `data:` line.
    pub fn flush(&self) -> usize {
        let (events, heartbeats, dropped) = {
            let mut pending = self.pending();
            let Pending {
                events,
                heartbeats,
                keyed,
                dropped,
            } = &mut *pending;
            let mut size: usize = events.iter().map(|(k, _, j)| k.len() + j.len() + 16).sum();
            let take = heartbeats
                .iter()
                .position(|(_, json)| {
                    size += json.len() + 25;
                    size > FRAME_BYTES
                })
                .unwrap_or(heartbeats.len())
                .max(1)
                .min(heartbeats.len());
            let rest = heartbeats.split_off(take);
            let sent = std::mem::replace(heartbeats, rest);
            keyed.clear();
            for (at, (node_id, _)) in heartbeats.iter().enumerate() {
                keyed.insert(node_id.clone(), at);
            }
            (std::mem::take(events), sent, std::mem::take(dropped))
        };
        if events.is_empty() && heartbeats.is_empty() && dropped == 0 {
            return 0;
        }
        let lagged = (dropped > 0).then(|| format!("{{\"missed\":{dropped}}}"));
        let all = events
            .iter()
            .map(|(kind, node, json)| (*kind, Some(node.clone()), json.as_str()))
            .chain(lagged.as_deref().map(|json| ("lagged", None, json)))
            .chain(
                heartbeats
                    .iter()
                    .map(|(node, json)| ("heartbeat", Some(node.clone()), json.as_str())),
            );
        let mut frame = String::with_capacity(FRAME_BYTES + 1024);
        let mut placed = Vec::with_capacity(events.len() + heartbeats.len() + 1);
        for (kind, node_id, json) in all {
            let start = frame.len();
            frame.push_str("event: ");
            frame.push_str(kind);
            frame.push_str("\ndata: ");
            frame.push_str(json);
            frame.push_str("\n\n");
            placed.push(Placed {
                start,
                end: frame.len(),
                node_id,
            });
        }
        let size = frame.len();
        let frame = Frame {
            gzip: GzipPiece::of(frame.as_bytes(), FRAME_GZIP_LEVEL),
            text: Bytes::from(frame),
            events: placed.into(),
        };
        // No subscriber left since the events were noted: the frame has no audience.
        let _ = self.sender.send(frame);
        size
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Frame> {
        self.sender.subscribe()
    }

    /// Sends a frame every [`FRAME_EVERY`] until shutdown, then the last one.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(FRAME_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => { self.flush(); }
            }
        }
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(frame: &Frame) -> &str {
        std::str::from_utf8(&frame.text).unwrap()
    }

    #[test]
    fn a_frame_holds_every_other_event_in_order_then_each_nodes_latest_heartbeat() {
        let hub = EventHub::with_backlog(4);
        let mut receiver = hub.subscribe();
        hub.publish_heartbeat("a", &serde_json::json!({"cpu": 1}));
        hub.publish("activity", "a", &serde_json::json!({"n": 1}));
        hub.publish_heartbeat("b", &serde_json::json!({"cpu": 2}));
        hub.publish_heartbeat("a", &serde_json::json!({"cpu": 3}));
        hub.publish("activity", "b", &serde_json::json!({"n": 2}));
        hub.flush();
        let frame = receiver.try_recv().unwrap();
        // Other events first, in order, then each node's latest heartbeat, oldest node first.
        assert_eq!(
            text(&frame),
            "event: activity\ndata: {\"n\":1}\n\n\
             event: activity\ndata: {\"n\":2}\n\n\
             event: heartbeat\ndata: {\"cpu\":3}\n\n\
             event: heartbeat\ndata: {\"cpu\":2}\n\n"
        );
        assert_eq!(hub.flush(), 0);
        assert!(receiver.try_recv().is_err(), "nothing noted, no frame");
    }

    #[test]
    fn a_frame_stays_within_its_size_and_what_is_left_goes_out_next_still_updated() {
        let hub = EventHub::with_backlog(8);
        let mut receiver = hub.subscribe();
        let big = "x".repeat(1000);
        for i in 0..200 {
            hub.publish_heartbeat(&format!("n{i}"), &serde_json::json!({"n": i, "pad": big}));
        }
        let first = hub.flush();
        assert!(first <= FRAME_BYTES, "{first}");
        let frame = receiver.try_recv().unwrap();
        let sent = text(&frame).matches("event: heartbeat").count();
        assert!(sent > 0 && sent < 200);
        // A node still waiting gets its newer state, in its old place in the queue.
        hub.publish_heartbeat("n199", &serde_json::json!({"n": "newest"}));
        let mut rest = String::new();
        while hub.flush() > 0 {
            rest.push_str(text(&receiver.try_recv().unwrap()));
        }
        assert_eq!(rest.matches("event: heartbeat").count(), 200 - sent);
        assert!(rest.ends_with("data: {\"n\":\"newest\"}\n\n"));
    }

    #[test]
    fn events_past_the_frames_share_are_dropped_and_counted_but_heartbeats_never_are() {
        let hub = EventHub::with_backlog(4);
        let mut receiver = hub.subscribe();
        for i in 0..EVENTS_PER_FRAME + 7 {
            hub.publish("activity", "a", &i);
        }
        hub.publish_heartbeat("a", &1);
        hub.flush();
        let frame = receiver.try_recv().unwrap();
        let text = text(&frame);
        assert_eq!(text.matches("event: activity").count(), EVENTS_PER_FRAME);
        assert!(
            text.ends_with("event: lagged\ndata: {\"missed\":7}\n\nevent: heartbeat\ndata: 1\n\n"),
            "{}",
            &text[text.len() - 80..]
        );
    }

    #[test]
    fn a_frame_read_for_some_nodes_keeps_their_events_and_any_lagged() {
        let hub = EventHub::with_backlog(4);
        let mut receiver = hub.subscribe();
        for i in 0..=EVENTS_PER_FRAME {
            hub.publish("activity", if i == 0 { "a" } else { "b" }, &i);
        }
        hub.publish_heartbeat("a", &7);
        hub.publish_heartbeat("c", &8);
        hub.flush();
        let frame = receiver.try_recv().unwrap();
        let only = |ids: &[&str]| {
            let ids: HashSet<String> = ids.iter().map(|id| id.to_string()).collect();
            frame
                .only(&ids)
                .map(|text| String::from_utf8(text.to_vec()).unwrap())
        };
        let lagged = "event: lagged\ndata: {\"missed\":1}\n\n";
        assert_eq!(
            only(&["a"]).unwrap(),
            format!("event: activity\ndata: 0\n\n{lagged}event: heartbeat\ndata: 7\n\n")
        );
        assert_eq!(
            only(&["z"]).unwrap(),
            lagged,
            "a dropped event may concern anyone"
        );

        hub.publish_heartbeat("c", &9);
        hub.flush();
        let quiet = receiver.try_recv().unwrap();
        assert_eq!(quiet.only(&HashSet::from(["a".to_string()])), None);
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
