//! Header names of the protocol, lower-case as HTTP/2 sends them.

/// Response header of a heartbeat's 202 (value `true`) when the server holds none of the node's
/// inventory (it was deleted and registered again, say): the agent then sends its inventory with
/// the next heartbeat. A header, so the answer's body stays the contract's `{received, nodeId}`.
pub const INVENTORY_WANTED: &str = "x-hyprbox-inventory-wanted";

/// The request budget of the current window, on every rate-limited answer.
pub const RATE_LIMIT_LIMIT: &str = "x-ratelimit-limit";
/// Requests left in the current window.
pub const RATE_LIMIT_REMAINING: &str = "x-ratelimit-remaining";
/// Seconds until the window resets.
pub const RATE_LIMIT_RESET: &str = "x-ratelimit-reset";

/// Sent by a client reopening an event stream: the `id` of the last event it received.
pub const LAST_EVENT_ID: &str = "last-event-id";

/// The session cookie a browser signs in with.
pub const SESSION_COOKIE: &str = "hb_token";
