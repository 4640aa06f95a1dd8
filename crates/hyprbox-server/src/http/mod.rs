//! The HTTP edge shared by every route: the middleware stack and its gate, the extractors, the
//! error shape, the rate limiter, and the liveness and readiness probes.

pub mod error;
pub mod extract;
pub(crate) mod gate;
pub mod probes;
pub mod ratelimit;
