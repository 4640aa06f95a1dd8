//! The server the in-process tests of the `hyprbox` crate talk to: the real application on a free
//! port over a fresh database, stopped when dropped.

use std::collections::HashMap;

use hyprbox_store::testing::TestDatabase;
use tokio_util::sync::CancellationToken;

pub struct Server {
    pub url: String,
    shutdown: CancellationToken,
    _db: TestDatabase,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Builds and serves the application; nobody is registered yet.
pub async fn launch() -> Server {
    let db = TestDatabase::new().await;
    let vars = HashMap::from([
        ("SECRET_KEY", "test-secret-key-for-the-hyprbox-tests".to_string()),
        ("DATABASE_URL", db.url.clone()),
        ("HYPRBOX_DB_MAX_CONNECTIONS", "4".to_string()),
    ]);
    let settings = hyprbox_server::Settings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let app = hyprbox_server::Application::build(settings).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.serve(listener, shutdown.clone()));
    Server {
        url,
        shutdown,
        _db: db,
    }
}
