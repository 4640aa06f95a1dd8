//! The HyprBox server as a library: configuration, application state, authentication, the HTTP
//! routes and the background loops. [`launch`] is the one entry point, used by the `hyprbox serve`
//! binary and by every HTTP test.
//!
//! Depends on `hyprbox-store` for all SQL; must not depend on the CLI or the agent.

pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod mail;
mod middleware;
pub mod ratelimit;
pub mod routes;
pub mod state;
mod workers;

use std::net::SocketAddr;
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

        let sessions = auth::cache::SessionCache::default();
        {
            let mut conn = store.conn().await?;
            for (jti, expires_at_ms) in hyprbox_store::sessions::active(&mut conn, now_ms()).await? {
                sessions.revoke(&jti, expires_at_ms / 1000);
            }
        }
        let mailer = mail::Mailer::from_settings(&settings)?;
        let keys = auth::tokens::JwtKeys::new(settings.secret_key.expose().as_bytes(), settings.session_ttl);
        let passwords = tokio::task::spawn_blocking(auth::password::Passwords::new).await?;
        let state = AppState::new(state::Inner {
            store,
            keys,
            sessions,
            limiter: ratelimit::RateLimiter::default(),
            mailer,
            passwords,
            started_at: Instant::now(),
            settings,
        });
        let router = middleware::apply(routes::router(state.clone()), &state);
        Ok(Application { state, router })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish and stops the
    /// background loops.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let workers = workers::spawn(&self.state, shutdown.child_token());
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("the HTTP server failed")?;
        shutdown.cancel();
        workers.wait().await;
        self.state.store.close().await;
        Ok(())
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
