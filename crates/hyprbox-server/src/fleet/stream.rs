//! `GET /api/stream/nodes`: the live fleet as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::auth::CurrentUser;
use crate::auth::session_cache::Cached;
use crate::events::EventHub;
use crate::state::AppState;

/// The comment line that keeps idle connections (and proxies) alive.
pub const PING_EVERY: Duration = Duration::from_secs(25);

/// What a subscriber receives: a frame of events (SSE text, shared by every subscriber), or word
/// that it fell behind and missed some frames.
#[derive(Debug, PartialEq)]
pub enum Item {
    Frame(Bytes),
    Lagged { missed: u64 },
}

/// How often a stream re-checks that its session is still valid, even when no event flows.
const RECHECK_EVERY: Duration = Duration::from_secs(5);

/// A subscription to the hub. It ends when `stop` is cancelled (a graceful shutdown must not wait on
/// streams that never end by themselves), at `expires_at`, or as soon as `alive` says no (checked
/// before every frame and every few seconds).
pub fn subscribe<F>(
    hub: &EventHub,
    stop: CancellationToken,
    expires_at: tokio::time::Instant,
    alive: F,
) -> impl Stream<Item = Item> + Send + use<F>
where
    F: Fn() -> bool + Send + Sync + 'static,
{
    let alive = Arc::new(alive);
    futures_util::stream::unfold(
        (hub.subscribe(), stop, alive),
        move |(mut receiver, stop, alive)| async move {
            loop {
                let item = tokio::select! {
                    () = stop.cancelled() => return None,
                    () = tokio::time::sleep_until(expires_at) => return None,
                    () = tokio::time::sleep(RECHECK_EVERY) => {
                        if alive() { continue } else { return None }
                    }
                    next = receiver.recv() => match next {
                        Ok(frame) => Item::Frame(frame),
                        // This subscriber fell behind: say how much it missed and go on from the oldest kept.
                        Err(RecvError::Lagged(missed)) => Item::Lagged { missed },
                        Err(RecvError::Closed) => return None,
                    },
                };
                if !alive() {
                    return None;
                }
                return Some((item, (receiver, stop, alive)));
            }
        },
    )
}

/// When a live stream ends, in seconds since the epoch. A cookie session's stream ends just past
/// the token's half-life: the browser's EventSource reconnects at once with the cookie, which is
/// then renewed (sliding sessions), so a dashboard that only watches the stream stays signed in.
/// Ending at the expiry would leave it reconnecting with an expired cookie.
///
/// Opened past half-life, the answer renewed the cookie, but the gate read its own clock: at the
/// boundary second it may not have. Such a stream ends within a few seconds, and its reconnect is
/// surely past half-life.
fn stream_end(claims: &crate::auth::jwt::Claims, via_cookie: bool, now: i64) -> i64 {
    if !via_cookie {
        return claims.exp;
    }
    let half_life = claims.iat + (claims.exp - claims.iat) / 2 + 1;
    half_life.max(now + 5).min(claims.exp)
}

#[utoipa::path(get, path = "/api/stream/nodes", tag = "nodes", security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "text/event-stream: `heartbeat`, `activity`, `job` and `lagged` events, `: ping` every 25 s", content_type = "text/event-stream"),
        (status = 401, description = "Not signed in", body = crate::http::error::ErrorBody)))]
pub async fn nodes(State(state): State<AppState>, CurrentUser(identity): CurrentUser) -> Response {
    // The stream lives no longer than the session that opened it: it ends at the token's expiry
    // (or earlier, see `stream_end`), on logout, and when the user's token version changes or the
    // user is deleted.
    let now = chrono::Utc::now().timestamp();
    let left = stream_end(&identity.claims, identity.via_cookie, now)
        .saturating_sub(now)
        .max(0);
    let expires_at = tokio::time::Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0));
    let sessions = state.clone();
    let alive = move || {
        let current = match sessions.sessions.user(&identity.user.id) {
            Cached::Present(user) => user.token_version == identity.claims.tv,
            Cached::Deleted => false,
            Cached::Unknown => true,
        };
        current && !sessions.sessions.is_revoked(&identity.claims.jti)
    };
    let frames = subscribe(&state.hub, state.shutdown.clone(), expires_at, alive).map(|item| match item {
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
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_how_many_it_missed_and_goes_on() {
        let hub = EventHub::with_backlog(4);
        let stop = CancellationToken::new();
        let stream = subscribe(&hub, stop.clone(), far(), || true);
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
        let stream = subscribe(&hub, CancellationToken::new(), far(), move || {
            check.load(Ordering::SeqCst)
        });
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
            CancellationToken::new(),
            tokio::time::Instant::now(),
            || true,
        );
        tokio::pin!(expired);
        assert_eq!(expired.next().await, None, "a stream ends at its token's expiry");
    }

    #[tokio::test]
    async fn publishing_never_waits_for_subscribers() {
        let hub = EventHub::with_backlog(2);
        let _stuck = subscribe(&hub, CancellationToken::new(), far(), || true);
        let _also_stuck = hub.subscribe();
        for i in 0..100_000 {
            hub.publish_heartbeat(&format!("n{}", i % 100), &i);
            if i % 1000 == 0 {
                hub.flush();
            }
        }
    }
}
