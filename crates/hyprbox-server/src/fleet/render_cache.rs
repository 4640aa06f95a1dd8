//! Rendered fleet-wide answers shared by concurrent readers.
//!
//! `GET /api/nodes` and `/api/nodes/sparks` cover every node: for a fleet of 10,000 that is a few
//! megabytes of JSON and tens of milliseconds to render, which sixteen dashboards polling at once
//! would redo for each request. For large fleets the rendered bytes are shared for up to a second
//! (statuses and values are then at most two seconds old), and readers needing a fresh rendering
//! wait for one made for all of them; small fleets are rendered fresh every time. Removing a node
//! or changing its config drops what was rendered, and a rendering begun before is not kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Bumped by [`Rendered::invalidate`]: a rendering begun before it is not kept.
    generation: Arc<AtomicU64>,
    /// One fresh rendering at a time: readers who need one wait for it rather than each making
    /// their own (after a quiet spell, every dashboard asks at once).
    fresh: tokio::sync::Mutex<()>,
}

impl Rendered {
    /// The answer for `key`. An answer a little stale (up to [`SERVE_STALE_FOR`]) is still served
    /// while one background task renders the next, so under steady polling no reader waits;
    /// otherwise the reader waits for a fresh rendering, made once for all who wait.
    pub async fn get(
        &self,
        key: &str,
        nodes: usize,
        render: impl FnOnce() -> Vec<u8> + Send + 'static,
    ) -> Bytes {
        if nodes < SHARE_FROM_NODES {
            return Bytes::from(render());
        }
        {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get_mut(key) {
                Some(slot) if slot.at.elapsed() < SHARE_FOR => return slot.bytes.clone(),
                Some(slot) if slot.at.elapsed() < SERVE_STALE_FOR => {
                    if !slot.rendering {
                        slot.rendering = true;
                        tokio::spawn(self.render_and_keep(key, render));
                    }
                    return slot.bytes.clone();
                }
                // Too old to serve, or none yet.
                Some(_) | None => {}
            }
        }
        let _one = self.fresh.lock().await;
        // Rendered by the reader this one waited for?
        if let Some(slot) = self.slots.lock().unwrap_or_else(|e| e.into_inner()).get(key)
            && slot.at.elapsed() < SHARE_FOR
        {
            return slot.bytes.clone();
        }
        self.render_and_keep(key, render).await
    }

    /// Renders off the async workers (tens of milliseconds of work: heartbeats keep flowing) and
    /// keeps the result, unless the fleet changed meanwhile or a newer rendering is already kept.
    fn render_and_keep(
        &self,
        key: &str,
        render: impl FnOnce() -> Vec<u8> + Send + 'static,
    ) -> impl std::future::Future<Output = Bytes> + Send + 'static {
        let started = Instant::now();
        let generation = self.generation.load(Ordering::SeqCst);
        let rendering = tokio::task::spawn_blocking(render);
        let slots = Arc::clone(&self.slots);
        let generations = Arc::clone(&self.generation);
        let key = key.to_string();
        async move {
            let bytes = match rendering.await {
                Ok(bytes) => Bytes::from(bytes),
                // A rendering that failed is not shared: the next reader tries again.
                Err(e) => {
                    slots.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                    if e.is_panic() {
                        std::panic::resume_unwind(e.into_panic());
                    }
                    panic!("the rendering of {key} was cancelled");
                }
            };
            let mut slots = slots.lock().unwrap_or_else(|e| e.into_inner());
            let newer_kept = slots.get(&key).is_some_and(|slot| slot.at > started);
            if generations.load(Ordering::SeqCst) == generation && !newer_kept {
                slots.insert(
                    key,
                    Slot {
                        at: Instant::now(),
                        bytes: bytes.clone(),
                        rendering: false,
                    },
                );
            } else if let Some(slot) = slots.get_mut(&key) {
                slot.rendering = false;
            }
            bytes
        }
    }

    /// Drops every rendering: the next reader renders afresh.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_who_need_a_fresh_rendering_share_one() {
        let rendered = Arc::new(Rendered::default());
        let renders = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..5)
            .map(|_| {
                let rendered = Arc::clone(&rendered);
                let renders = Arc::clone(&renders);
                tokio::spawn(async move {
                    rendered
                        .get("k", SHARE_FROM_NODES, move || {
                            renders.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(100));
                            b"x".to_vec()
                        })
                        .await
                })
            })
            .collect();
        for reader in readers {
            assert_eq!(&reader.await.unwrap()[..], b"x");
        }
        assert_eq!(renders.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_rendering_begun_before_an_invalidation_is_not_kept() {
        let rendered = Rendered::default();
        let renders = Arc::new(AtomicUsize::new(0));
        rendered
            .get("k", SHARE_FROM_NODES, counting(&renders, b"old"))
            .await;
        std::thread::sleep(SHARE_FOR + Duration::from_millis(50));
        // Slightly stale: a background rendering starts, slow; the fleet changes meanwhile.
        let slow = move || {
            std::thread::sleep(Duration::from_millis(300));
            b"before".to_vec()
        };
        assert_eq!(&rendered.get("k", SHARE_FROM_NODES, slow).await[..], b"old");
        rendered.invalidate();
        // The slow rendering ends now, after the invalidation: it must not be kept.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rendered
            .get("k", SHARE_FROM_NODES, counting(&renders, b"after"))
            .await;
        assert_eq!(&after[..], b"after", "rendered afresh, not the one begun before");
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
