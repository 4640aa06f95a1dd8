//! The ceiling HyprBox's HTTP numbers are read against: bare axum routes on the same runtime and
//! machine, doing only what the protocol itself costs — parse and validate a heartbeat, answer
//! 202 with its acknowledgement; answer a small JSON body to a GET — with no gate, no state, no
//! database. `bench/ceiling.sh` runs it and HyprBox back to back and records the ratio.
//!
//! ```sh
//! cargo run --release -p hyprbox --example ceiling -- 127.0.0.1:4199
//! ```

use axum::Json;
use axum::http::StatusCode;
use axum::routing::{get, post};
use hyprbox_proto::{Heartbeat, HeartbeatAck};
use serde_json::{Value, json};

async fn heartbeat(Json(heartbeat): Json<Heartbeat>) -> Result<(StatusCode, Json<HeartbeatAck>), StatusCode> {
    heartbeat.validate().map_err(|_| StatusCode::BAD_REQUEST)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(HeartbeatAck {
            received: true,
            node_id: heartbeat.node_id,
        }),
    ))
}

async fn small_json() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bind = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:4199".into());
    let router = axum::Router::new()
        .route("/api/nodes/heartbeat", post(heartbeat))
        .route("/health", get(small_json))
        .route("/api/auth/me", get(small_json));
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    eprintln!("ceiling listening on http://{bind}");
    axum::serve(listener, router).await?;
    Ok(())
}
