//! User-experience metrics for the Hyperion dashboard: every request's duration (long-lived SSE
//! and WebSocket connections excluded) and who made it, kept in memory; a background loop samples
//! the active users once a minute and writes the day's distinct users to the database, so the
//! request path never waits on a write.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use hyprbox_store::{StoreError, metrics, now_ms};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::http::time::rfc3339;
use crate::state::AppState;

/// Request durations kept for the averages.
const WINDOW: usize = 1000;
/// A user is "active now" with a request in the last five minutes.
const ACTIVE_MS: i64 = 5 * 60_000;
const DAY_MS: i64 = 86_400_000;
/// How long a rendered answer is served before it is made again.
const RENDER_EVERY: Duration = Duration::from_secs(1);
const SHARDS: usize = 16;

pub struct Ux {
    /// The last [`WINDOW`] durations in microseconds, written round-robin without a lock.
    durations: Vec<AtomicU32>,
    next: AtomicUsize,
    /// user id → time of their last request (ms), sharded to keep the lock short and uncontended.
    seen: Vec<Mutex<HashMap<String, i64>>>,
    /// (UTC day, user) pairs already written to the database, for the days still being seen.
    written: Mutex<HashSet<(i64, String)>>,
    /// `active_now` sampled once a minute, oldest first, at most seven.
    trend: Mutex<Vec<usize>>,
    /// Distinct users of the last seven days (from the database), oldest first.
    daily: Mutex<[i64; 7]>,
    rendered: Mutex<Option<(Instant, Bytes)>>,
}

impl Default for Ux {
    fn default() -> Self {
        Ux {
            durations: (0..WINDOW).map(|_| AtomicU32::new(u32::MAX)).collect(),
            next: AtomicUsize::new(0),
            seen: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            written: Mutex::new(HashSet::new()),
            trend: Mutex::new(Vec::new()),
            daily: Mutex::new([0; 7]),
            rendered: Mutex::new(None),
        }
    }
}

fn shard(user: &str) -> usize {
    user.bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)))
        % SHARDS
}

/// The answer of `GET /api/dashboard/user-experience`.
#[derive(Serialize, Debug, PartialEq)]
pub struct UserExperience {
    pub active_now: usize,
    pub active_trend: Vec<usize>,
    pub avg_response_time: f64,
    pub p95_response_time: f64,
    pub daily_activity: [i64; 7],
    pub last_updated: String,
}

/// Average and 95th percentile (nearest rank) of durations in microseconds, in milliseconds.
pub fn averages(mut micros: Vec<u32>) -> (f64, f64) {
    if micros.is_empty() {
        return (0.0, 0.0);
    }
    micros.sort_unstable();
    let avg = micros.iter().map(|&m| f64::from(m)).sum::<f64>() / micros.len() as f64;
    let rank = (0.95 * micros.len() as f64).ceil() as usize;
    let p95 = f64::from(micros[rank.clamp(1, micros.len()) - 1]);
    let ms = |us: f64| (us / 10.0).round() / 100.0;
    (ms(avg), ms(p95))
}

/// Distinct users per day for the seven UTC days ending on `today`, oldest first.
pub fn daily_activity(counts: &[(i64, i64)], today: i64) -> [i64; 7] {
    let mut days = [0; 7];
    for &(day, users) in counts {
        let age = today - day;
        if (0..7).contains(&age) {
            days[6 - age as usize] = users;
        }
    }
    days
}

impl Ux {
    /// Notes one request: how long it took and who made it (when signed in).
    pub fn record(&self, elapsed: Duration, user: Option<&str>, now: i64) {
        let micros = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX - 1);
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % WINDOW;
        self.durations[slot].store(micros, Ordering::Relaxed);
        if let Some(user) = user {
            let mut seen = self.seen[shard(user)].lock().unwrap_or_else(|e| e.into_inner());
            match seen.get_mut(user) {
                Some(last) => *last = now,
                None => {
                    seen.insert(user.to_string(), now);
                }
            }
        }
    }

    /// Distinct users with a request in the five minutes before `now`; forgets older ones.
    pub fn active_now(&self, now: i64) -> usize {
        self.seen
            .iter()
            .map(|shard| {
                let mut seen = shard.lock().unwrap_or_else(|e| e.into_inner());
                seen.retain(|_, last| now - *last <= ACTIVE_MS);
                seen.len()
            })
            .sum()
    }

    /// The active users with the time of their last request; forgets the others.
    fn active_users(&self, now: i64) -> Vec<(String, i64)> {
        self.seen
            .iter()
            .flat_map(|shard| {
                let mut seen = shard.lock().unwrap_or_else(|e| e.into_inner());
                seen.retain(|_, last| now - *last <= ACTIVE_MS);
                seen.iter()
                    .map(|(user, last)| (user.clone(), *last))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn durations(&self) -> Vec<u32> {
        self.durations
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .filter(|&d| d != u32::MAX)
            .collect()
    }

    /// The answer at `now`, made at most once a second.
    pub fn rendered(&self, now: i64) -> Bytes {
        let mut rendered = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, bytes)) = rendered.as_ref()
            && at.elapsed() < RENDER_EVERY
        {
            return bytes.clone();
        }
        let bytes = Bytes::from(serde_json::to_vec(&self.snapshot(now)).unwrap_or_default());
        *rendered = Some((Instant::now(), bytes.clone()));
        bytes
    }

    pub fn snapshot(&self, now: i64) -> UserExperience {
        let (avg, p95) = averages(self.durations());
        let active = self.active_users(now);
        let today = now.div_euclid(DAY_MS);
        let mut daily = *self.daily.lock().unwrap_or_else(|e| e.into_inner());
        // Users seen today whom the minute's tick has not written yet count at once, so today's
        // activity never trails what `active_now` shows.
        let unwritten = {
            let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            active
                .iter()
                .filter(|(user, last)| {
                    last.div_euclid(DAY_MS) == today && !written.contains(&(today, user.clone()))
                })
                .count()
        };
        daily[6] += i64::try_from(unwritten).unwrap_or(i64::MAX);
        UserExperience {
            active_now: active.len(),
            active_trend: {
                // Seven points, oldest first: the last six minute samples (zeros before the first
                // ones after a start), then now.
                let trend = self.trend.lock().unwrap_or_else(|e| e.into_inner());
                let sampled = &trend[trend.len().saturating_sub(6)..];
                let mut points = vec![0; 6 - sampled.len()];
                points.extend(sampled.iter().copied());
                points.push(active.len());
                points
            },
            avg_response_time: avg,
            p95_response_time: p95,
            daily_activity: daily,
            last_updated: rfc3339(now),
        }
    }
}

/// The minute's work: sample `active_now` into the trend, write today's users, refresh the daily
/// counts from the database.
pub async fn tick(state: &AppState, now: i64) -> Result<(), StoreError> {
    let ux = &state.ux;
    let active = ux.active_users(now);
    {
        let mut trend = ux.trend.lock().unwrap_or_else(|e| e.into_inner());
        trend.push(active.len());
        let excess = trend.len().saturating_sub(7);
        trend.drain(..excess);
    }
    let today = now.div_euclid(DAY_MS);
    // Each user counts on the UTC day of their last request, so one seen at 23:59 counts for that
    // day even when the tick runs after midnight.
    let new_pairs: Vec<(i64, String)> = {
        let mut written = ux.written.lock().unwrap_or_else(|e| e.into_inner());
        written.retain(|(day, _)| today - day <= 1);
        active
            .into_iter()
            .map(|(user, last)| (last.div_euclid(DAY_MS), user))
            .filter(|pair| written.insert(pair.clone()))
            .collect()
    };
    let mut conn = state.store.write_conn().await?;
    for (day, user) in &new_pairs {
        if let Err(err) = metrics::record_daily_users(&mut conn, *day, std::slice::from_ref(user)).await {
            // Written again at the next tick.
            let mut written = ux.written.lock().unwrap_or_else(|e| e.into_inner());
            for pair in &new_pairs {
                written.remove(pair);
            }
            return Err(err);
        }
    }
    metrics::prune_daily_users(&mut conn, today - 8).await?;
    let counts = metrics::daily_user_counts(&mut conn, today - 6).await?;
    *ux.daily.lock().unwrap_or_else(|e| e.into_inner()) = daily_activity(&counts, today);
    Ok(())
}

pub async fn tick_loop(state: AppState, shutdown: CancellationToken) {
    // The daily counts are read at once, so a restart shows its history straight away.
    let mut every = tokio::time::interval(Duration::from_secs(60));
    // After a stall, one sample, not a burst of them: the trend is one point a minute.
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Err(err) = tick(&state, now_ms()).await {
            tracing::warn!(error = %err, "user-experience metrics could not be saved; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_are_in_milliseconds_with_a_nearest_rank_p95() {
        assert_eq!(averages(vec![]), (0.0, 0.0));
        let micros: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(averages(micros), (50.5, 95.0));
        assert_eq!(averages(vec![1500]), (1.5, 1.5));
    }

    #[test]
    fn only_the_last_thousand_requests_count() {
        let ux = Ux::default();
        for _ in 0..WINDOW {
            ux.record(Duration::from_millis(100), None, 0);
        }
        for _ in 0..WINDOW {
            ux.record(Duration::from_millis(2), None, 0);
        }
        assert_eq!(ux.snapshot(0).avg_response_time, 2.0);
    }

    #[test]
    fn a_user_is_active_for_five_minutes_after_their_last_request() {
        let ux = Ux::default();
        ux.record(Duration::from_millis(1), Some("a"), 0);
        ux.record(Duration::from_millis(1), Some("b"), 60_000);
        ux.record(Duration::from_millis(1), Some("a"), 120_000);
        ux.record(Duration::from_millis(1), None, 120_000);
        assert_eq!(ux.active_now(120_000), 2);
        assert_eq!(ux.active_now(60_000 + ACTIVE_MS), 2);
        assert_eq!(ux.active_now(60_000 + ACTIVE_MS + 1), 1);
        assert_eq!(ux.active_now(120_000 + ACTIVE_MS + 1), 0);
    }

    #[test]
    fn the_trend_always_has_seven_points_oldest_first_ending_with_now() {
        let ux = Ux::default();
        ux.trend.lock().unwrap().extend([3, 4]);
        assert_eq!(ux.snapshot(0).active_trend, vec![0, 0, 0, 0, 3, 4, 0]);
        ux.trend.lock().unwrap().extend([5, 6, 7, 8, 9, 10]);
        ux.record(Duration::from_millis(1), Some("u1"), 0);
        assert_eq!(ux.snapshot(0).active_trend, vec![5, 6, 7, 8, 9, 10, 1]);
    }

    #[test]
    fn a_user_active_now_counts_in_today_at_once_and_only_once() {
        let ux = Ux::default();
        let now = 10 * DAY_MS + 5_000;
        ux.record(Duration::from_millis(1), Some("u1"), now);
        let first = ux.snapshot(now);
        assert_eq!(first.active_now, 1);
        assert_eq!(
            first.active_trend[6], 1,
            "the first answer already shows who is active"
        );
        assert_eq!(first.daily_activity[6], 1);
        // Once the tick wrote the pair, the database's count includes it: not counted twice.
        ux.written.lock().unwrap().insert((10, "u1".into()));
        ux.daily.lock().unwrap()[6] = 1;
        assert_eq!(ux.snapshot(now).daily_activity[6], 1);
    }

    #[test]
    fn daily_activity_places_each_day_oldest_first_across_boundaries() {
        assert_eq!(
            daily_activity(&[(3, 9), (94, 1), (98, 4), (100, 2)], 100),
            [1, 0, 0, 0, 4, 0, 2]
        );
    }
}
