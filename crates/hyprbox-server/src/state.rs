//! The application state: built once at start, passed to every handler with `with_state`.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use hyprbox_store::Store;

use crate::agents::Agents;
use crate::auth::cache::SessionCache;
use crate::auth::node_tokens::NodeTokens;
use crate::auth::password::Passwords;
use crate::auth::tokens::JwtKeys;
use crate::config::Settings;
use crate::events::EventHub;
use crate::fleet::Fleet;
use crate::jobs::Feeds;
use crate::mail::Mailer;
use crate::ratelimit::RateLimiter;
use crate::views::Rendered;
use crate::writer::BatchWriter;
use tokio_util::sync::CancellationToken;

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
    pub node_tokens: NodeTokens,
    pub fleet: Fleet,
    pub hub: EventHub,
    pub views: Rendered,
    pub writer: BatchWriter,
    /// The preset catalogue, loaded once at start.
    pub presets: hyprbox_presets::Catalog,
    /// Connected agents' WebSockets, by node.
    pub agents: Agents,
    /// Live output of jobs someone is watching.
    pub feeds: Feeds,
    /// The AI worker fleet's in-memory view, cached queue depth and dispatch bell.
    pub ai: crate::ai::AiFleet,
    /// The server's own health samples, for the dashboard.
    pub health: crate::health::Health,
    /// Request timings and active users, for the dashboard.
    pub ux: crate::ux::Ux,
    /// Cancelled when a graceful shutdown starts: long-lived streams end on it.
    pub shutdown: CancellationToken,
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
