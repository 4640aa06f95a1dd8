//! `GET /api/stream/nodes`: the live fleet as server-sent events.

use std::collections::HashSet;
use std::sync::Arc;

use crate::auth::CurrentUser;
use crate::auth::lease::SessionLease;
use crate::events::{EventHub, Frame};
use crate::http::error::ApiError;
use crate::http::extract::Query;
use crate::http::sse::{self, Chunk};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use hyprbox_proto::validate_node_id;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

/// How many nodes one stream may follow (`?nodes=`): two pages of the fleet.
const MAX_FOLLOWED: usize = 200;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Comma-separated node ids (at most 200): only events about these nodes (and `lagged`) are
    /// sent. Absent or empty: every node's.
    pub nodes: Option<String>,
}

/// The node ids of `?nodes=`, checked; `None` when the stream follows every node.
fn followed(query: &StreamQuery) -> Result<Option<HashSet<String>>, ApiError> {
    let Some(list) = query.nodes.as_deref().map(str::trim).filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let mut nodes = HashSet::new();
    for id in list.split(',').map(str::trim).filter(|id| !id.is_empty()) {
        validate_node_id("nodes", id).map_err(ApiError::BadRequest)?;
        nodes.insert(id.to_string());
        if nodes.len() > MAX_FOLLOWED {
            return Err(ApiError::BadRequest(format!(
                "nodes lists at most {MAX_FOLLOWED} node ids"
            )));
        }
    }
    Ok(Some(nodes))
}

/// What a subscriber receives: a frame of events (shared by every subscriber), or word that it fell
/// behind and missed some frames.
#[derive(Debug)]
pub enum Item {
    Frame(Frame),
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

#[utoipa::path(get, path = "/api/stream/nodes", tag = "nodes", params(StreamQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "text/event-stream: `heartbeat`, `activity`, `job` and `lagged` events, `: ping` every 25 s; gzip-compressed when the request accepts gzip", content_type = "text/event-stream"),
        (status = 400, description = "`nodes` holds an invalid node id, or more than 200", body = crate::http::error::ErrorBody),
        (status = 401, description = "Not signed in", body = crate::http::error::ErrorBody),
        (status = 429, description = "The user already holds HYPRBOX_MAX_STREAMS_PER_USER streams open", body = crate::http::error::ErrorBody)))]
pub async fn nodes(
    State(state): State<AppState>,
    CurrentUser(identity): CurrentUser,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Response {
    let nodes = match followed(&query) {
        Ok(nodes) => nodes.map(Arc::new),
        Err(refused) => return refused.into_response(),
    };
    // The stream lives no longer than the session that opened it: it ends at the token's expiry
    // (or earlier, see `stream_end`), on logout, and when the user's token version changes or the
    // user is deleted.
    let lease = match SessionLease::open(&state, &identity) {
        Ok(lease) => lease,
        Err(refused) => return refused.into_response(),
    };
    // Frames are shared: a subscriber of the whole fleet costs no copy of them, nor their
    // compression. One that follows some nodes takes their events out of each frame (a look-up per
    // event, a few hundred a frame at most) and compresses that little itself; a frame without
    // them sends nothing.
    let chunks = subscribe(&state.hub, lease).filter_map(move |item| {
        let chunk = match item {
            Item::Frame(frame) => match &nodes {
                None => Some(Chunk::Shared {
                    text: frame.text,
                    gzip: frame.gzip,
                }),
                Some(nodes) => frame.only(nodes).map(Chunk::Own),
            },
            Item::Lagged { missed } => Some(Chunk::Own(Bytes::from(format!(
                "event: lagged\ndata: {{\"missed\":{missed}}}\n\n"
            )))),
        };
        futures_util::future::ready(chunk)
    });
    sse::response(sse::accepts_gzip(&headers), chunks)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

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
            hub.publish("heartbeat", "n", &serde_json::json!({ "n": i }));
            hub.flush();
        }
        assert!(matches!(stream.next().await, Some(Item::Lagged { missed: 6 })));
        for i in 6..10 {
            let Some(Item::Frame(frame)) = stream.next().await else {
                panic!("a frame");
            };
            assert_eq!(
                &frame.text[..],
                format!("event: heartbeat\ndata: {{\"n\":{i}}}\n\n").as_bytes()
            );
        }
        stop.cancel();
        assert!(stream.next().await.is_none(), "the stream ends on shutdown");
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
        hub.publish("heartbeat", "n", &1);
        hub.flush();
        assert!(matches!(stream.next().await, Some(Item::Frame(_))));
        valid.store(false, Ordering::SeqCst);
        hub.publish("heartbeat", "n", &2);
        hub.flush();
        assert!(stream.next().await.is_none(), "no event after the session ended");

        let expired = subscribe(
            &hub,
            SessionLease::new(tokio::time::Instant::now(), CancellationToken::new(), || true),
        );
        tokio::pin!(expired);
        assert!(
            expired.next().await.is_none(),
            "a stream ends at its token's expiry"
        );
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
