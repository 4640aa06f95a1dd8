//! The HTTP edge shared by every route: the middleware stack and its gate, the extractors, the
//! error shape, the rate limiter, the liveness and readiness probes, and time as the API writes it.

pub mod error;
pub mod extract;
pub(crate) mod gate;
pub mod listener;
pub mod probes;
pub mod ratelimit;
pub mod sse;
pub(crate) mod stack;
pub mod time;
