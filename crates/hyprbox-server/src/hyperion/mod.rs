//! The Hyperion dashboard's server side: the simulated AI worker fleet and its routes, the server's
//! own health figures (CPU and memory, sampled), the user-experience metrics, and the
//! `/api/dashboard/system-health` and `/user-experience` routes.

pub mod ai_fleet;
pub mod ai_routes;
pub mod dashboard;
pub mod server_health;
pub mod ux;
