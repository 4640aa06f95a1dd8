//! `GET /api/stream/nodes`: the live fleet as server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use crate::auth::CurrentUser;
use crate::auth::lease::SessionLease;
use crate::events::EventHub;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

/// The comment line that keeps idle connections (and proxies) alive.
pub const PING_EVERY: Duration = Duration::from_secs(25);

/// What a subscriber receives: a frame of events (SSE text, shared by every subscriber), or word
/// that it fell behind and missed some frames.
#[derive(Debug, PartialEq)]
pub enum Item {
    Frame(Bytes),
    Lagged { missed: u64 },
}

/// A subscription to the hub for as long as `lease` holds (see [`SessionLease::guard`]).
pub fn subscribe(hub: &EventHub, lease: SessionLease) -> impl Stream<Item = Item> + Send + use<> {
    let frames = futures_util::stream::unfold(hub.subscribe(), |mut receiver| async move {
        let item = match receiver.recv().await {
            Ok(frame) => Item::Frame(frame),
            // This subscriber fell behind: say how much it missed and go on from the oldest kept.
            Err(RecvError::Lagged(missed)) => Item::Lagged { missed },
            Err(RecvError::Closed) => return None,
        };
        Some((item, receiver))
    });
    lease.guard(frames)
}

#[utoipa::path(get, path = "/api/stream/nodes", tag = "nodes", security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "text/event-stream: `heartbeat`, `activity`, `job` and `lagged` events, `: ping` every 25 s", content_type = "text/event-stream"),
        (status = 401, description = "Not signed in", body = crate::http::error::ErrorBody),
        (status = 429, description = "The user already holds HYPRBOX_MAX_STREAMS_PER_USER streams open", body = crate::http::error::ErrorBody)))]
pub async fn nodes(State(state): State<AppState>, CurrentUser(identity): CurrentUser) -> Response {
    // The stream lives no longer than the session that opened it: it ends at the token's expiry
    // (or earlier, see `stream_end`), on logout, and when the user's token version changes or the
    // user is deleted.
    let lease = match SessionLease::open(&state, &identity) {
        Ok(lease) => lease,
        Err(refused) => return refused.into_response(),
    };
    let frames = subscribe(&state.hub, lease).map(|item| match item {
        Item::Frame(frame) => frame,
        Item::Lagged { missed } => Bytes::from(format!("event: lagged\ndata: {{\"missed\":{missed}}}\n\n")),
    });
    sse_body(frames)
}

/// A `text/event-stream` answer of ready-made SSE text, with a `: ping` comment whenever nothing
/// else was sent for [`PING_EVERY`]. The frames are shared: a subscriber costs no copy of them.
fn sse_body(frames: impl Stream<Item = Bytes> + Send + 'static) -> Response {
    let pings = futures_util::stream::unfold(frames.boxed(), |mut frames| async move {
        let next = match tokio::time::timeout(PING_EVERY, frames.next()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return None,
            Err(_) => Bytes::from_static(b": ping\n\n"),
        };
        Some((Ok::<_, Infallible>(next), frames))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(pings),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::StreamExt;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::auth::lease::stream_end;

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_how_many_it_missed_and_goes_on() {
        let hub = EventHub::with_backlog(4);
        let stop = CancellationToken::new();
        let stream = subscribe(&hub, SessionLease::new(far(), stop.clone(), || true));
        tokio::pin!(stream);
        for i in 0..10 {
            hub.publish("heartbeat", &serde_json::json!({ "n": i }));
            hub.flush();
        }
        assert_eq!(stream.next().await, Some(Item::Lagged { missed: 6 }));
        for i in 6..10 {
            let Some(Item::Frame(frame)) = stream.next().await else {
                panic!("a frame");
            };
            assert_eq!(
                &frame[..],
                format!("event: heartbeat\ndata: {{\"n\":{i}}}\n\n").as_bytes()
            );
        }
        stop.cancel();
        assert_eq!(stream.next().await, None, "the stream ends on shutdown");
    }

    #[test]
    fn a_cookie_session_stream_ends_past_half_life_so_its_reconnect_renews_the_cookie() {
        let claims = crate::auth::jwt::Claims {
            sub: "u".into(),
            tv: 0,
            jti: "j".into(),
            iat: 1_000,
            exp: 2_800,
        };
        assert_eq!(stream_end(&claims, true, 1_000), 1_901, "just past half-life");
        assert_eq!(stream_end(&claims, true, 1_950), 1_955, "past it: reconnect soon");
        assert_eq!(stream_end(&claims, true, 2_798), 2_800, "never past the expiry");
        assert_eq!(
            stream_end(&claims, false, 1_000),
            2_800,
            "a bearer token cannot be renewed"
        );
    }

    fn far() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test]
    async fn a_stream_ends_when_its_session_does() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let hub = EventHub::with_backlog(8);
        let valid = Arc::new(AtomicBool::new(true));
        let check = Arc::clone(&valid);
        let stream = subscribe(
            &hub,
            SessionLease::new(far(), CancellationToken::new(), move || {
                check.load(Ordering::SeqCst)
            }),
        );
        tokio::pin!(stream);
        hub.publish("heartbeat", &1);
        hub.flush();
        assert!(matches!(stream.next().await, Some(Item::Frame(_))));
        valid.store(false, Ordering::SeqCst);
        hub.publish("heartbeat", &2);
        hub.flush();
        assert_eq!(stream.next().await, None, "no event after the session ended");

        let expired = subscribe(
            &hub,
            SessionLease::new(tokio::time::Instant::now(), CancellationToken::new(), || true),
        );
        tokio::pin!(expired);
        assert_eq!(expired.next().await, None, "a stream ends at its token's expiry");
    }

    #[tokio::test]
    async fn publishing_never_waits_for_subscribers() {
        let hub = EventHub::with_backlog(2);
        let _stuck = subscribe(&hub, SessionLease::new(far(), CancellationToken::new(), || true));
        let _also_stuck = hub.subscribe();
        for i in 0..100_000 {
            hub.publish_heartbeat(&format!("n{}", i % 100), &i);
            if i % 1000 == 0 {
                hub.flush();
            }
        }
    }
}
