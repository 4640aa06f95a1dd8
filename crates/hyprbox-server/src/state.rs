//! The application state: built once at start, passed to every handler with `with_state`.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use hyprbox_store::Store;

use crate::auth::jwt::JwtKeys;
use crate::auth::mail::Mailer;
use crate::auth::node_tokens::NodeTokens;
use crate::auth::password::Passwords;
use crate::auth::session_cache::SessionCache;
use crate::config::Settings;
use crate::events::EventHub;
use crate::fleet::agent_links::Agents;
use crate::fleet::memory::Fleet;
use crate::fleet::render_cache::Rendered;
use crate::fleet::writer::BatchWriter;
use crate::http::ratelimit::RateLimiter;
use crate::jobs::feeds::Feeds;
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
    pub render_cache: Rendered,
    pub writer: BatchWriter,
    /// The preset catalogue, loaded once at start.
    pub presets: hyprbox_presets::Catalog,
    /// Connected agents' WebSockets, by node.
    pub agents: Agents,
    /// Live output of jobs someone is watching.
    pub feeds: Feeds,
    /// The AI worker fleet's in-memory view, cached queue depth and dispatch bell.
    pub ai: crate::hyperion::ai_fleet::AiFleet,
    /// The server's own health samples, for the dashboard.
    pub server_health: crate::hyperion::server_health::Health,
    /// Request timings and active users, for the dashboard.
    pub ux: crate::hyperion::ux::Ux,
    /// Failed sign-ins and reset requests, counted per address so anonymous callers cannot grow
    /// the audit log without bound.
    pub anonymous_audit: crate::auth::anonymous_audit::AnonymousAudit,
    /// Live streams open per user, to cap them.
    pub stream_slots: Arc<crate::auth::lease::StreamSlots>,
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
