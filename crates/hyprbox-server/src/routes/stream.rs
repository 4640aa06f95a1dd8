//! `GET /api/stream/nodes`: the live fleet as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::auth::CurrentUser;
use crate::events::EventHub;
use crate::state::AppState;

/// The comment line that keeps idle connections (and proxies) alive.
pub const PING_EVERY: Duration = Duration::from_secs(25);

/// What a subscriber receives: an event, or word that it fell behind and missed some.
#[derive(Debug, PartialEq)]
pub enum Item {
    Event { kind: &'static str, data: Arc<str> },
    Lagged { missed: u64 },
}

/// A subscription to the hub that ends when `stop` is cancelled (a graceful shutdown must not wait
/// on streams that never end by themselves).
pub fn subscribe(hub: &EventHub, stop: CancellationToken) -> impl Stream<Item = Item> + Send + use<> {
    futures_util::stream::unfold((hub.subscribe(), stop), |(mut receiver, stop)| async move {
        let item = tokio::select! {
            () = stop.cancelled() => return None,
            next = receiver.recv() => match next {
                Ok(event) => Item::Event { kind: event.kind, data: event.data },
                // This subscriber fell behind: say how much it missed and go on from the oldest kept.
                Err(RecvError::Lagged(missed)) => Item::Lagged { missed },
                Err(RecvError::Closed) => return None,
            },
        };
        Some((item, (receiver, stop)))
    })
}

#[utoipa::path(get, path = "/api/stream/nodes", tag = "nodes", security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "text/event-stream: `heartbeat`, `activity`, `job` and `lagged` events, `: ping` every 25 s", content_type = "text/event-stream"),
        (status = 401, description = "Not signed in", body = crate::error::ErrorBody)))]
pub async fn nodes(
    State(state): State<AppState>,
    _: CurrentUser,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = subscribe(&state.hub, state.shutdown.clone()).map(|item| {
        Ok(match item {
            Item::Event { kind, data } => Event::default().event(kind).data(&*data),
            Item::Lagged { missed } => Event::default()
                .event("lagged")
                .data(serde_json::json!({ "missed": missed }).to_string()),
        })
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(PING_EVERY).text("ping"))
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_how_many_it_missed_and_goes_on() {
        let hub = EventHub::with_backlog(4);
        let stop = CancellationToken::new();
        let stream = subscribe(&hub, stop.clone());
        tokio::pin!(stream);
        for i in 0..10 {
            hub.publish("heartbeat", &serde_json::json!({ "n": i }));
        }
        assert_eq!(stream.next().await, Some(Item::Lagged { missed: 6 }));
        for i in 6..10 {
            let Some(Item::Event { kind, data }) = stream.next().await else {
                panic!("an event");
            };
            assert_eq!((kind, &*data), ("heartbeat", format!("{{\"n\":{i}}}").as_str()));
        }
        stop.cancel();
        assert_eq!(stream.next().await, None, "the stream ends on shutdown");
    }

    #[tokio::test]
    async fn publishing_never_waits_for_subscribers() {
        let hub = EventHub::with_backlog(2);
        let _stuck = subscribe(&hub, CancellationToken::new());
        let _also_stuck = hub.subscribe();
        for i in 0..100_000 {
            hub.publish("heartbeat", &i);
        }
    }
}
