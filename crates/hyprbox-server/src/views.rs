//! Rendered fleet-wide answers shared by concurrent readers.
//!
//! `GET /api/nodes` and `/api/nodes/sparks` cover every node: for a fleet of 10,000 that is a few
//! megabytes of JSON and tens of milliseconds to render, which sixteen dashboards polling at once
//! would redo for each request. For large fleets the rendered bytes are shared for up to a second
//! (statuses and values are then at most two seconds old); small fleets are rendered fresh every time.
//! Removing a node or changing its config drops what was rendered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;

/// Fleets smaller than this are rendered on every request.
pub const SHARE_FROM_NODES: usize = 1_000;
/// How long a rendered answer is served before it is rendered again.
pub const SHARE_FOR: Duration = Duration::from_secs(1);
/// Past this age a rendering is not served at all, even while the next is on its way: after a
/// quiet hour the first reader waits for a fresh one rather than seeing hour-old statuses.
pub const SERVE_STALE_FOR: Duration = Duration::from_secs(2);

struct Slot {
    at: Instant,
    bytes: Bytes,
    rendering: bool,
}

#[derive(Default)]
pub struct Rendered {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

impl Rendered {
    /// The answer for `key`. An answer a little stale (up to [`SERVE_STALE_FOR`]) is still served
    /// while one background task renders the next, so under steady polling no reader waits;
    /// otherwise the reader waits for a fresh rendering.
    pub async fn get(
        &self,
        key: &str,
        nodes: usize,
        render: impl FnOnce() -> Vec<u8> + Send + 'static,
    ) -> Bytes {
        if nodes < SHARE_FROM_NODES {
            return Bytes::from(render());
        }
        let stale = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get_mut(key) {
                Some(slot) if slot.at.elapsed() < SHARE_FOR => return slot.bytes.clone(),
                Some(slot) if slot.at.elapsed() < SERVE_STALE_FOR => {
                    if slot.rendering {
                        return slot.bytes.clone();
                    }
                    slot.rendering = true;
                    Some(slot.bytes.clone())
                }
                // Too old to serve (a rendering may be on its way; this reader makes its own).
                Some(_) | None => None,
            }
        };
        // Tens of milliseconds of work: off the async workers, so heartbeats keep flowing.
        let rendering = tokio::task::spawn_blocking(render);
        let slots = Arc::clone(&self.slots);
        let key = key.to_string();
        let store = async move {
            let bytes = match rendering.await {
                Ok(bytes) => Bytes::from(bytes),
                // A rendering that panicked is not shared: the next reader tries again.
                Err(e) => {
                    slots.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                    std::panic::resume_unwind(e.into_panic());
                }
            };
            let mut slots = slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.insert(
                key,
                Slot {
                    at: Instant::now(),
                    bytes: bytes.clone(),
                    rendering: false,
                },
            );
            bytes
        };
        match stale {
            Some(bytes) => {
                tokio::spawn(store);
                bytes
            }
            None => store.await,
        }
    }

    /// Drops every rendering: the next reader renders afresh.
    pub fn invalidate(&self) {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counting(
        renders: &Arc<AtomicUsize>,
        body: &'static [u8],
    ) -> impl FnOnce() -> Vec<u8> + Send + 'static {
        let renders = Arc::clone(renders);
        move || {
            renders.fetch_add(1, Ordering::SeqCst);
            body.to_vec()
        }
    }

    #[tokio::test]
    async fn large_fleets_share_a_rendering_small_ones_do_not() {
        let rendered = Rendered::default();
        let renders = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            rendered.get("small", 10, counting(&renders, b"x")).await;
        }
        assert_eq!(renders.swap(0, Ordering::SeqCst), 3);
        for _ in 0..3 {
            rendered
                .get("large", SHARE_FROM_NODES, counting(&renders, b"x"))
                .await;
        }
        assert_eq!(renders.load(Ordering::SeqCst), 1);
        rendered.invalidate();
        let again = rendered
            .get("large", SHARE_FROM_NODES, counting(&renders, b"y"))
            .await;
        assert_eq!(&again[..], b"y");
    }

    #[tokio::test]
    async fn a_rendering_too_old_is_not_served_and_a_slightly_stale_one_is_while_the_next_renders() {
        let rendered = Rendered::default();
        let renders = Arc::new(AtomicUsize::new(0));
        rendered
            .get("k", SHARE_FROM_NODES, counting(&renders, b"1"))
            .await;
        // Slightly stale: served at once, the next rendering made in the background.
        std::thread::sleep(SHARE_FOR + Duration::from_millis(50));
        let quick = rendered
            .get("k", SHARE_FROM_NODES, counting(&renders, b"2"))
            .await;
        assert_eq!(&quick[..], b"1");
        // Too old: the reader waits for a fresh rendering.
        std::thread::sleep(SERVE_STALE_FOR + Duration::from_millis(300));
        let fresh = rendered
            .get("k", SHARE_FROM_NODES, counting(&renders, b"3"))
            .await;
        assert_eq!(&fresh[..], b"3");
    }
}
