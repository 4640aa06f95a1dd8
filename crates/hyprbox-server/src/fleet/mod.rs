//! The fleet: nodes' heartbeats, their live state in memory, the batch writer that persists it,
//! shared renderings of fleet-wide answers, the agents' WebSocket links and history retention; and
//! the handlers of `/api/nodes`, the live stream `/api/stream/nodes` and the agent socket
//! `/api/agent/ws`.

pub mod agent_links;
pub mod agent_socket;
pub mod memory;
pub mod nodes;
pub mod query;
pub(crate) mod render_cache;
pub mod retention;
pub mod stream;
pub mod writer;
