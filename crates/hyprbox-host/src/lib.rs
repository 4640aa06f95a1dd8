//! What a process can learn about the machine or container it runs on, read straight from the
//! kernel's files: cgroup limits and usage, and the host's CPU and memory figures from `/proc`.
//! Shared by the agent (its heartbeats) and the server (its own system health).
//!
//! Only `std` and file reads: no async, no HTTP, no database.

pub mod cgroup;
pub mod host;
