//! Jobs: presets rendered for a node, run by its agent, followed live. The operators' routes, the
//! agents' routes, the preset catalogue's routes, the per-job live feeds and the reaper.

pub mod agent_api;
pub mod feeds;
pub mod operator;
pub mod presets;
pub mod reaper;
pub mod retention;
