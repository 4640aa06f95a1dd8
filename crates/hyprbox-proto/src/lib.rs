//! Every message that crosses the wire between the server, the agent, the CLI and the simulator,
//! defined once: request and answer bodies, the agent WebSocket's messages, the payloads of the
//! server-sent event streams, the error body and the header names. The server serialises these
//! types, the clients deserialise the same ones, and the OpenAPI schemas are derived from them.
//!
//! Pure data and checks: no I/O, no HTTP, no database.

pub mod agent;
pub mod auth;
pub mod backups;
pub mod error;
pub mod findings;
pub mod headers;
pub mod jobs;
pub mod nodes;
pub mod tokens;

pub use error::ErrorBody;
pub use nodes::{Heartbeat, HeartbeatAck, MAX_TEXT, RESERVED_NODE_IDS, validate_node_id};

/// Kept at the crate root for the agent and older imports: see [`headers::INVENTORY_WANTED`].
pub const INVENTORY_WANTED_HEADER: &str = headers::INVENTORY_WANTED;
