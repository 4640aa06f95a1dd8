//! The application state: built once at start, passed to every handler with `with_state`.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use hyprbox_store::Store;

use crate::auth::cache::SessionCache;
use crate::auth::password::Passwords;
use crate::auth::tokens::JwtKeys;
use crate::config::Settings;
use crate::mail::Mailer;
use crate::ratelimit::RateLimiter;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub store: Store,
    pub keys: JwtKeys,
    pub sessions: SessionCache,
    pub limiter: RateLimiter,
    pub mailer: Mailer,
    pub passwords: Passwords,
    pub started_at: Instant,
}

impl AppState {
    pub fn new(inner: Inner) -> AppState {
        AppState(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
