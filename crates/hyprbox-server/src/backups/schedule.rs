//! A policy's schedule: a 5-field cron expression (minute, hour, day of month, month, day of week),
//! evaluated in UTC, parsed by `croner`.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;

/// Without a schedule, a policy with no successful run for this long is stale.
pub const UNSCHEDULED_STALE_AFTER_MS: i64 = 48 * 3600 * 1000;
/// How many upcoming gaps between ticks decide a schedule's period (weekday-only or monthly
/// schedules have uneven gaps; the longest one counts).
const GAPS_CONSIDERED: usize = 8;

#[derive(Clone, Debug)]
pub struct Schedule(Cron);

impl Schedule {
    /// Parses `expr`; the message says what is wrong, for a 400.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let fields = expr.split_whitespace().count();
        if fields != 5 || expr.len() > 200 {
            return Err(format!(
                "schedule must be a 5-field cron expression (minute hour day-of-month month day-of-week), got {fields} field(s)"
            ));
        }
        let cron =
            Cron::from_str(expr).map_err(|e| format!("schedule is not a valid cron expression: {e}"))?;
        let schedule = Schedule(cron);
        // A pattern that never fires (31 February) is as useless as an invalid one.
        if schedule.next_after(0).is_none() {
            return Err("schedule never fires".into());
        }
        Ok(schedule)
    }

    /// The first tick strictly after `ms` (Unix milliseconds).
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        // Whole seconds in and out: croner carries the sub-second part of its input over to the
        // tick it finds, and a tick is on the minute.
        let at = DateTime::<Utc>::from_timestamp(ms.div_euclid(1000), 0)?;
        self.0
            .find_next_occurrence(&at, false)
            .ok()
            .map(|next| next.timestamp() * 1000)
    }

    /// The longest gap between the upcoming ticks after `ms`.
    pub fn period_ms(&self, ms: i64) -> Option<i64> {
        let mut at = self.next_after(ms)?;
        let mut longest = 0;
        for _ in 0..GAPS_CONSIDERED {
            let next = self.next_after(at)?;
            longest = longest.max(next - at);
            at = next;
        }
        Some(longest)
    }
}

/// How long a policy may go without a successful run before it is stale: twice its schedule's
/// period, or 48 hours without a schedule.
pub fn stale_after_ms(schedule: Option<&Schedule>, now: i64) -> i64 {
    schedule
        .and_then(|s| s.period_ms(now))
        .map_or(UNSCHEDULED_STALE_AFTER_MS, |period| period.saturating_mul(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600 * 1000;
    /// 2026-12-07T00:00:00Z, a Monday.
    const MONDAY: i64 = 1_796_601_600_000;

    #[test]
    fn a_daily_schedule_fires_at_its_minute_in_utc() {
        let daily = Schedule::parse("30 3 * * *").unwrap();
        assert_eq!(daily.next_after(MONDAY), Some(MONDAY + 3 * HOUR + 30 * 60 * 1000));
        let tick = MONDAY + 3 * HOUR + 30 * 60 * 1000;
        assert_eq!(daily.next_after(tick), Some(tick + 24 * HOUR), "strictly after");
        assert_eq!(
            daily.next_after(MONDAY + 743),
            Some(MONDAY + 3 * HOUR + 30 * 60 * 1000),
            "on the minute"
        );
        assert_eq!(daily.next_after(tick + 1), Some(tick + 24 * HOUR));
        assert_eq!(stale_after_ms(Some(&daily), MONDAY), 48 * HOUR);
    }

    #[test]
    fn a_weekday_schedule_counts_its_longest_gap_for_staleness() {
        let weekdays = Schedule::parse("0 2 * * 1-5").unwrap();
        // Friday 02:00 to Monday 02:00 is three days.
        assert_eq!(stale_after_ms(Some(&weekdays), MONDAY), 2 * 72 * HOUR);
        assert_eq!(stale_after_ms(None, MONDAY), 48 * HOUR);
    }

    #[test]
    fn anything_but_five_valid_fields_is_refused_with_a_reason() {
        for bad in [
            "",
            "* * * *",
            "0 0 * * * *",
            "61 * * * *",
            "* 25 * * *",
            "not a cron",
            "0 0 31 2 *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} was accepted");
        }
        for good in [
            "*/15 * * * *",
            "0 3 * * *",
            "0 0 1 * *",
            "5 4 * * sun",
            "0 22 * * 1-5",
        ] {
            assert!(Schedule::parse(good).is_ok(), "{good:?} was refused");
        }
    }
}
