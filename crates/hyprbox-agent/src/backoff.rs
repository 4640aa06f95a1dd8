//! Exponential backoff with jitter, shared by every loop that talks to the server, so an agent never
//! hammers a server that is down and a fleet restarting together does not retry in lockstep.

use std::time::Duration;

use rand::RngExt;

/// First delay after a failure.
pub const START: Duration = Duration::from_secs(1);
/// Longest delay between two attempts; also the delay used while the token is rejected.
pub const CAP: Duration = Duration::from_secs(60);

/// The delay before attempt `failures + 1` without jitter: `START · 2^(failures-1)`, capped at [`CAP`].
pub fn base_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let exp = (failures - 1).min(16);
    START.saturating_mul(1 << exp).min(CAP)
}

/// "Equal jitter": half the base delay plus a random share of the other half. Never below half
/// (so it does grow) and never above the cap.
pub fn jittered(base: Duration, unit_random: f64) -> Duration {
    let half = base / 2;
    half + half.mul_f64(unit_random.clamp(0.0, 1.0))
}

/// The failure count of one loop and the delay it has earned.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        jittered(base_delay(self.failures), rand::rng().random_range(0.0..=1.0))
    }

    /// Records a failure that will not heal by retrying soon (a revoked token): wait the cap.
    pub fn fail_at_cap(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        CAP
    }

    /// A failure the server told us how to pace (`429` with `Retry-After`): at least that long.
    pub fn fail_at_least(&mut self, at_least: Duration) -> Duration {
        self.fail().max(at_least)
    }

    pub fn succeed(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_from_one_second_and_stops_at_the_cap() {
        let secs: Vec<u64> = (0..10).map(|n| base_delay(n).as_secs()).collect();
        assert_eq!(secs, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(base_delay(u32::MAX), CAP);
    }

    #[test]
    fn jitter_stays_between_half_the_delay_and_the_delay() {
        let base = Duration::from_secs(8);
        assert_eq!(jittered(base, 0.0), Duration::from_secs(4));
        assert_eq!(jittered(base, 1.0), base);
        assert_eq!(jittered(base, 7.0), base, "out-of-range randomness is clamped");
        let mut backoff = Backoff::new();
        for n in 1..50 {
            let delay = backoff.fail();
            assert!(delay <= CAP, "attempt {n}: {delay:?}");
            assert!(delay >= base_delay(n) / 2, "attempt {n}: {delay:?}");
        }
        backoff.succeed();
        assert!(backoff.fail() <= START);
    }

    #[test]
    fn retry_after_is_a_floor_and_a_revoked_token_waits_the_cap() {
        let mut backoff = Backoff::new();
        assert!(backoff.fail_at_least(Duration::from_secs(30)) >= Duration::from_secs(30));
        assert_eq!(backoff.fail_at_cap(), CAP);
        assert_eq!(backoff.failures(), 2);
    }
}
