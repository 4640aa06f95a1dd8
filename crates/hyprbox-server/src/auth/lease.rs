//! How long a long-lived answer (an SSE stream) may go on: no longer than the session that opened
//! it. A stream checks its session when it opens, like any request, and then again before every
//! event and every few seconds, so logout, token-version bumps (role or password change, reset),
//! user deletion and the token's expiry end it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Identity;
use super::jwt::Claims;
use super::session_cache::Cached;
use crate::state::AppState;

/// How often a stream re-checks that its session is still valid, even when no event flows.
pub const RECHECK_EVERY: Duration = Duration::from_secs(5);

/// A session's hold on an open stream.
pub struct SessionLease {
    pub expires_at: Instant,
    alive: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Server shutdown: a graceful stop must not wait on streams that never end by themselves.
    pub stop: CancellationToken,
    /// The user's place among their open streams, given back when the stream ends.
    _slot: Option<StreamSlot>,
}

/// How many live streams each user holds open.
#[derive(Default)]
pub struct StreamSlots {
    open: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// One open stream of a user; dropping it frees the place.
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    user_id: String,
}

impl StreamSlots {
    /// A place for one more stream of `user_id`, unless they hold `max` already.
    pub fn take(self: &Arc<Self>, user_id: &str, max: usize) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(user_id.to_string()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            slots: Arc::clone(self),
            user_id: user_id.to_string(),
        })
    }

    pub fn open_for(&self, user_id: &str) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user_id)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.user_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user_id);
            }
        }
    }
}

/// When a live stream ends, in seconds since the epoch. A cookie session's stream ends just past
/// the token's half-life: the browser's EventSource reconnects at once with the cookie, which is
/// then renewed (sliding sessions), so a dashboard that only watches the stream stays signed in.
/// Ending at the expiry would leave it reconnecting with an expired cookie.
///
/// Opened past half-life, the answer renewed the cookie, but the gate read its own clock: at the
/// boundary second it may not have. Such a stream ends within a few seconds, and its reconnect is
/// surely past half-life.
pub fn stream_end(claims: &Claims, via_cookie: bool, now: i64) -> i64 {
    if !via_cookie {
        return claims.exp;
    }
    let half_life = claims.iat + (claims.exp - claims.iat) / 2 + 1;
    half_life.max(now + 5).min(claims.exp)
}

impl SessionLease {
    /// The lease of `identity`'s session for a new stream: 429 when the user already holds
    /// `HYPRBOX_MAX_STREAMS_PER_USER` open (each costs a connection and a subscription).
    pub fn open(state: &AppState, identity: &Identity) -> Result<SessionLease, crate::http::error::ApiError> {
        let slot = state
            .stream_slots
            .take(&identity.user.id, state.settings.max_streams_per_user)
            .ok_or(crate::http::error::ApiError::TooManyRequests {
                retry_after_secs: RECHECK_EVERY.as_secs(),
            })?;
        let mut lease = SessionLease::of(state, identity);
        lease._slot = Some(slot);
        Ok(lease)
    }

    /// The lease of `identity`'s session, as the session cache sees it now and later.
    fn of(state: &AppState, identity: &Identity) -> SessionLease {
        let now = chrono::Utc::now().timestamp();
        let left = stream_end(&identity.claims, identity.via_cookie, now)
            .saturating_sub(now)
            .max(0);
        let expires_at = Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0));
        let sessions = state.clone();
        let (user_id, tv, jti) = (
            identity.user.id.clone(),
            identity.claims.tv,
            identity.claims.jti.clone(),
        );
        let alive = move || {
            let current = match sessions.sessions.user(&user_id) {
                Cached::Present(user) => user.token_version == tv,
                Cached::Deleted => false,
                Cached::Unknown => true,
            };
            current && !sessions.sessions.is_revoked(&jti)
        };
        SessionLease {
            expires_at,
            alive: Arc::new(alive),
            stop: state.shutdown.clone(),
            _slot: None,
        }
    }

    /// A lease from its parts (tests).
    pub fn new(
        expires_at: Instant,
        stop: CancellationToken,
        alive: impl Fn() -> bool + Send + Sync + 'static,
    ) -> SessionLease {
        SessionLease {
            expires_at,
            alive: Arc::new(alive),
            stop,
            _slot: None,
        }
    }

    pub fn alive(&self) -> bool {
        (self.alive)()
    }

    /// `items` for as long as the lease holds: it ends at shutdown, at the expiry, or as soon as the
    /// session is gone (checked before every item and every [`RECHECK_EVERY`]).
    pub fn guard<S>(self, items: S) -> impl Stream<Item = S::Item> + Send + use<S>
    where
        S: Stream + Send + 'static,
        S::Item: Send,
    {
        futures_util::stream::unfold((items.boxed(), self), |(mut items, lease)| async move {
            loop {
                let item = tokio::select! {
                    () = lease.stop.cancelled() => return None,
                    () = tokio::time::sleep_until(lease.expires_at) => return None,
                    () = tokio::time::sleep(RECHECK_EVERY) => {
                        if lease.alive() { continue } else { return None }
                    }
                    next = items.next() => next?,
                };
                if !lease.alive() {
                    return None;
                }
                return Some((item, (items, lease)));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test]
    async fn a_guarded_stream_ends_when_its_session_does_even_mid_stream() {
        let valid = Arc::new(AtomicBool::new(true));
        let check = Arc::clone(&valid);
        let lease = SessionLease::new(far(), CancellationToken::new(), move || {
            check.load(Ordering::SeqCst)
        });
        let guarded = lease.guard(futures_util::stream::iter(0..10));
        tokio::pin!(guarded);
        assert_eq!(guarded.next().await, Some(0));
        assert_eq!(guarded.next().await, Some(1));
        valid.store(false, Ordering::SeqCst);
        assert_eq!(guarded.next().await, None, "no item after the session ended");
    }

    #[tokio::test]
    async fn a_guarded_stream_ends_at_its_expiry_even_when_idle() {
        let lease = SessionLease::new(
            Instant::now() + Duration::from_millis(50),
            CancellationToken::new(),
            || true,
        );
        let idle = lease.guard(futures_util::stream::pending::<u8>());
        tokio::pin!(idle);
        let ended = tokio::time::timeout(Duration::from_secs(5), idle.next()).await;
        assert_eq!(ended, Ok(None), "ends at the expiry");
    }

    #[test]
    fn a_user_holds_at_most_max_streams_and_a_closed_one_frees_its_place() {
        let slots = Arc::new(StreamSlots::default());
        let first = slots.take("u", 2).unwrap();
        let _second = slots.take("u", 2).unwrap();
        assert!(slots.take("u", 2).is_none());
        assert!(slots.take("other", 2).is_some(), "per user");
        drop(first);
        assert_eq!(slots.open_for("u"), 1);
        assert!(slots.take("u", 2).is_some());
    }

    #[tokio::test]
    async fn a_guarded_stream_ends_on_shutdown() {
        let stop = CancellationToken::new();
        let lease = SessionLease::new(far(), stop.clone(), || true);
        let idle = lease.guard(futures_util::stream::pending::<u8>());
        tokio::pin!(idle);
        stop.cancel();
        assert_eq!(idle.next().await, None);
    }
}
