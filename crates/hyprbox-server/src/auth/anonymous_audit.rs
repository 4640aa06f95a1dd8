//! Audit events that anyone can cause without signing in (failed sign-ins, password-reset
//! requests): the audit table is append-only, so each one written would let an anonymous client
//! grow it without bound. Per (action, client address) and ten-minute window the first few are
//! written as they happen; the rest are counted and written as one summary event when the window
//! ends (`metadata: {"repeats": n, "windowStart": …}`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use hyprbox_store::audit::{self, NewAuditEvent};
use hyprbox_store::{StoreError, now_ms};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// The window events are counted in.
pub const WINDOW_MS: i64 = 10 * 60 * 1000;
/// Events per (action, address) and window written one by one.
pub const WRITTEN_PER_WINDOW: u32 = 3;

#[derive(Default)]
pub struct AnonymousAudit {
    windows: Mutex<HashMap<(String, IpAddr), Window>>,
}

struct Window {
    start: i64,
    seen: u32,
    /// The last event not written, kept as the summary's template.
    last: Option<NewAuditEvent>,
}

impl AnonymousAudit {
    /// Whether `event` (from `ip`, at `now`) is to be written now; otherwise it was counted.
    /// A window that already ended is taken out and returned as its summary, to write too.
    pub fn admit(&self, event: &NewAuditEvent, ip: IpAddr, now: i64) -> (bool, Option<NewAuditEvent>) {
        let start = now - now.rem_euclid(WINDOW_MS);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows.entry((event.action.clone(), ip)).or_insert(Window {
            start,
            seen: 0,
            last: None,
        });
        let mut ended = None;
        if window.start != start {
            ended = summary(window);
            *window = Window {
                start,
                seen: 0,
                last: None,
            };
        }
        window.seen += 1;
        if window.seen <= WRITTEN_PER_WINDOW {
            return (true, ended);
        }
        window.last = Some(event.clone());
        (false, ended)
    }

    /// Takes out every window that ended before `now`, as summary events to write.
    pub fn ended(&self, now: i64) -> Vec<NewAuditEvent> {
        let start = now - now.rem_euclid(WINDOW_MS);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        windows.retain(|_, window| {
            if window.start == start {
                return true;
            }
            out.extend(summary(window));
            false
        });
        out
    }
}

/// The event that stands for a window's unwritten repeats, if it had any.
fn summary(window: &mut Window) -> Option<NewAuditEvent> {
    let repeats = window.seen.saturating_sub(WRITTEN_PER_WINDOW);
    let mut event = window.last.take()?;
    event.metadata = Some(
        serde_json::json!({
            "repeats": repeats,
            "windowStart": crate::http::time::rfc3339(window.start),
            "windowMinutes": WINDOW_MS / 60_000,
        })
        .to_string(),
    );
    Some(event)
}

/// Records an anonymous-caused event: written now when within the window's allowance, else
/// counted for the window's summary.
pub async fn record(state: &AppState, event: NewAuditEvent, ip: IpAddr) -> Result<(), StoreError> {
    let (write_now, ended) = state.anonymous_audit.admit(&event, ip, now_ms());
    let events: Vec<NewAuditEvent> = ended.into_iter().chain(write_now.then_some(event)).collect();
    if events.is_empty() {
        return Ok(());
    }
    let mut conn = state.store.write_conn().await?;
    for event in &events {
        audit::record(&mut conn, event).await?;
    }
    Ok(())
}

/// Writes the summaries of ended windows once a minute (and at shutdown).
pub async fn flush_loop(state: AppState, shutdown: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            () = tokio::time::sleep(Duration::from_secs(60)) => false,
        };
        // At shutdown every window counts as ended: its repeats are written, not lost.
        let now = if stopping { now_ms() + WINDOW_MS } else { now_ms() };
        let ended = state.anonymous_audit.ended(now);
        if !ended.is_empty() {
            match state.store.write_conn().await {
                Ok(mut conn) => {
                    for event in &ended {
                        if let Err(err) = audit::record(&mut conn, event).await {
                            tracing::warn!(error = %err, "writing an audit summary failed");
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "writing audit summaries failed"),
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(email: &str) -> NewAuditEvent {
        NewAuditEvent {
            user_id: None,
            user_email: Some(email.into()),
            action: "user.login_failed".into(),
            resource_type: None,
            resource_id: None,
            ip: Some("203.0.113.1".into()),
            metadata: None,
        }
    }

    #[test]
    fn the_first_few_are_written_and_the_rest_become_one_summary_per_window() {
        let audit = AnonymousAudit::default();
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        let other: IpAddr = "203.0.113.2".parse().unwrap();
        let t0 = 5 * WINDOW_MS + 1;
        for n in 0..WRITTEN_PER_WINDOW {
            assert!(audit.admit(&failed("a@x"), ip, t0 + i64::from(n)).0);
        }
        for n in 0..50 {
            let (now, ended) = audit.admit(&failed(&format!("{n}@x")), ip, t0 + 100);
            assert!(!now && ended.is_none());
        }
        assert!(
            audit.admit(&failed("b@x"), other, t0).0,
            "another address has its own allowance"
        );
        assert!(
            audit.ended(t0 + 1000).is_empty(),
            "nothing ends inside the window"
        );
        let summaries = audit.ended(t0 + WINDOW_MS);
        assert_eq!(summaries.len(), 1, "one summary, for the address with repeats");
        let meta: serde_json::Value =
            serde_json::from_str(summaries[0].metadata.as_deref().unwrap()).unwrap();
        assert_eq!(meta["repeats"], 50);
        assert_eq!(
            summaries[0].user_email.as_deref(),
            Some("49@x"),
            "the last email tried"
        );
        assert!(
            audit.admit(&failed("c@x"), ip, t0 + WINDOW_MS).0,
            "a new window, a new allowance"
        );
    }

    #[test]
    fn an_ended_window_is_summarised_by_the_next_event_too() {
        let audit = AnonymousAudit::default();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..(WRITTEN_PER_WINDOW + 2) {
            audit.admit(&failed("a@x"), ip, 10);
        }
        let (now, ended) = audit.admit(&failed("a@x"), ip, WINDOW_MS + 10);
        assert!(now);
        let meta: serde_json::Value =
            serde_json::from_str(ended.unwrap().metadata.as_deref().unwrap()).unwrap();
        assert_eq!(meta["repeats"], 2);
    }
}
