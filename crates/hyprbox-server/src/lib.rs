//! The HyprBox server as a library, grouped by what it does: `http` (the middleware stack and its
//! gate, extractors, errors, probes), `auth`, `fleet`, `jobs`, `findings` and `hyperion` (the
//! dashboard), each owning its state, handlers and background loop; `routes` lists the whole API in
//! one place, `background` starts the loops, `config` and `state` hold what everything shares.
//! [`launch`] is the one entry point, used by the `hyprbox serve` binary and by every HTTP test.
//!
//! Depends on `hyprbox-store` for all SQL; must not depend on the CLI or the agent.

pub mod auth;
pub mod background;
pub mod backups;
pub mod config;
pub mod dashboard;
pub mod events;
pub mod findings;
pub mod fleet;
pub mod http;
pub mod hyperion;
pub mod jobs;
pub mod routes;
pub mod state;

use std::time::Instant;

use anyhow::Context;
use axum::Router;
use hyprbox_store::{ConnectOptions, Store, now_ms};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Settings;
pub use state::AppState;

/// A built server: state ready, database migrated, not yet serving.
pub struct Application {
    state: AppState,
    router: Router,
    queue: tokio::sync::mpsc::Receiver<fleet::writer::Pending>,
}

impl Application {
    /// Connects and migrates the database, loads the session caches and builds the router.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let options = ConnectOptions {
            max_connections: settings.db_max_connections,
            ..ConnectOptions::default()
        };
        let store = Store::connect(settings.database_url.expose(), &options)
            .await
            .with_context(|| format!("cannot open the database {}", settings.database_display()))?;
        store.migrate().await.context("cannot migrate the database")?;

        let sessions = auth::session_cache::SessionCache::default();
        {
            let mut conn = store.conn().await?;
            for (jti, expires_at_ms) in hyprbox_store::sessions::active(&mut conn, now_ms()).await? {
                sessions.revoke(&jti, expires_at_ms / 1000);
            }
        }
        let fleet = fleet::memory::Fleet::default();
        {
            let mut conn = store.conn().await?;
            let nodes = hyprbox_store::nodes::all(&mut conn).await?;
            // Node by node through the history's primary key: a window over the whole table would
            // read every stored heartbeat.
            let mut recent = Vec::new();
            for node in &nodes {
                recent.extend(
                    hyprbox_store::nodes::history(&mut conn, &node.node_id, fleet::memory::SPARK_LEN as i64)
                        .await?,
                );
            }
            fleet.load(nodes, recent);
        }
        // An invalid preset file stops the start, naming the file, the line and the problem.
        let presets = hyprbox_presets::Catalog::load(settings.presets_dir.as_deref())
            .map_err(|e| anyhow::anyhow!("invalid preset: {e}"))?;
        let (writer, queue) = fleet::writer::BatchWriter::new();
        let mailer = auth::mail::Mailer::from_settings(&settings)?;
        let keys = auth::jwt::JwtKeys::new(settings.secret_key.expose().as_bytes(), settings.session_ttl);
        let passwords = tokio::task::spawn_blocking(auth::password::Passwords::new).await?;
        let state = AppState::new(state::Inner {
            store,
            keys,
            sessions,
            limiter: http::ratelimit::RateLimiter::default(),
            mailer,
            passwords,
            node_tokens: auth::node_tokens::NodeTokens::default(),
            fleet,
            hub: events::EventHub::default(),
            render_cache: fleet::render_cache::Rendered::default(),
            writer,
            presets,
            agents: fleet::agent_links::Agents::default(),
            feeds: jobs::feeds::Feeds::default(),
            ai: hyperion::ai_fleet::AiFleet::new(settings.ai_workers.clone()),
            server_health: hyperion::server_health::Health::default(),
            ux: hyperion::ux::Ux::default(),
            stream_slots: Default::default(),
            anonymous_audit: Default::default(),
            shutdown: CancellationToken::new(),
            started_at: Instant::now(),
            settings,
        });
        let router = http::stack::apply(routes::router(state.clone()), &state);
        Ok(Application { state, router, queue })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish (live streams
    /// end), flushes the heartbeat queue and stops the background loops.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application { state, router, queue } = self;
        let stopping = state.shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            stopping.cancel();
        });
        // The background loops stop only after the last request is answered, so the writer
        // still takes what in-flight heartbeats queue.
        let background = CancellationToken::new();
        let writer = tokio::spawn(fleet::writer::run(
            state.store.clone(),
            queue,
            state.writer.health.clone(),
            background.clone(),
        ));
        let workers = crate::background::spawn(&state, background.clone());
        let limits = http::listener::ConnectionLimits {
            max_connections: state.settings.max_connections,
            header_timeout: state.settings.header_timeout,
        };
        let served = http::listener::serve(listener, router, limits, state.shutdown.clone())
            .await
            .context("the HTTP server failed");
        // Node rows not yet rewritten since their last heartbeat go out with the final flush.
        for node in state.fleet.unpersisted() {
            state.writer.queue(fleet::writer::Pending::Node(node)).await;
        }
        background.cancel();
        workers.wait().await;
        writer.await.context("the heartbeat writer failed")?;
        state.store.close().await;
        served
    }
}

/// Builds the application and serves it on `listener` until `shutdown` is cancelled.
pub async fn launch(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Application::build(settings)
        .await?
        .serve(listener, shutdown)
        .await
}
