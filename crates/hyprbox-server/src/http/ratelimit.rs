//! Fixed one-minute windows per client, in memory, sharded so concurrent requests rarely contend.
//!
//! Each request costs one hash, one short mutex hold on one of 64 shards and one map update. A shard
//! forgets last minute's counters the first time it is touched in a new minute.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 64;

pub struct RateLimiter {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    epoch: Instant,
    window: Duration,
}

#[derive(Default)]
struct Shard {
    window: u64,
    counts: HashMap<u64, u32>,
}

/// The outcome of one request against its limit; written into the `X-RateLimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window rolls over.
    pub reset_secs: u64,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new(Duration::from_secs(60))
    }
}

impl RateLimiter {
    pub fn new(window: Duration) -> RateLimiter {
        RateLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            window,
        }
    }

    /// Counts one request for `key` and says whether it is within `limit` for this window.
    pub fn check(&self, key: impl Hash, limit: u32) -> Decision {
        let hash = self.hasher.hash_one(key);
        let elapsed = self.epoch.elapsed();
        let window_ms = self.window.as_millis().max(1);
        let window = u64::try_from(elapsed.as_millis() / window_ms).unwrap_or(u64::MAX);
        let into_window = u64::try_from(elapsed.as_millis() % window_ms).unwrap_or(0);
        let reset_secs = (u64::try_from(window_ms).unwrap_or(u64::MAX) - into_window).div_ceil(1000);

        let shard_index = usize::try_from(hash % SHARDS as u64).unwrap_or(0);
        let mut shard = self.shards[shard_index].lock().unwrap_or_else(|e| e.into_inner());
        if shard.window != window {
            shard.window = window;
            shard.counts.clear();
        }
        let count = shard.counts.entry(hash).or_insert(0);
        *count = count.saturating_add(1);
        let used = *count;
        Decision {
            allowed: used <= limit,
            limit,
            remaining: limit.saturating_sub(used),
            reset_secs,
        }
    }
}

impl RateLimiter {
    /// Whether `key` has used up `limit` in this window, without counting a request.
    pub fn exhausted(&self, key: impl Hash, limit: u32) -> bool {
        let hash = self.hasher.hash_one(key);
        let window_ms = self.window.as_millis().max(1);
        let window = u64::try_from(self.epoch.elapsed().as_millis() / window_ms).unwrap_or(u64::MAX);
        let shard_index = usize::try_from(hash % SHARDS as u64).unwrap_or(0);
        let shard = self.shards[shard_index].lock().unwrap_or_else(|e| e.into_inner());
        shard.window == window && shard.counts.get(&hash).is_some_and(|used| *used >= limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_past_the_limit_is_refused_and_others_are_unaffected() {
        let limiter = RateLimiter::default();
        for i in 0..3 {
            let d = limiter.check("a", 3);
            assert!(d.allowed);
            assert_eq!(d.remaining, 2 - i);
            assert!(d.reset_secs >= 1 && d.reset_secs <= 60);
        }
        assert!(!limiter.check("a", 3).allowed);
        assert!(limiter.check("b", 3).allowed);
    }

    #[test]
    fn exhausted_looks_without_counting() {
        let limiter = RateLimiter::default();
        assert!(!limiter.exhausted("a", 2));
        limiter.check("a", 2);
        assert!(!limiter.exhausted("a", 2));
        assert!(!limiter.exhausted("a", 2), "looking does not count");
        limiter.check("a", 2);
        assert!(limiter.exhausted("a", 2));
        assert!(!limiter.exhausted("b", 2));
    }

    #[test]
    fn a_new_window_starts_a_new_count() {
        let limiter = RateLimiter::new(Duration::from_millis(50));
        assert!(limiter.check("a", 1).allowed);
        assert!(!limiter.check("a", 1).allowed);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !limiter.check("a", 1).allowed {
            assert!(Instant::now() < deadline, "the window never rolled over");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
