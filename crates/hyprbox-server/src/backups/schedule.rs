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
        // Plain cron only: croner's extensions (`L`, `W`, `#`, `?`, `+`) can describe days that
        // almost never come, and croner searches for them year by year up to year 5000 — seconds of
        // CPU for one request (found by fuzzing).
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let mut days = None;
        let mut months = None;
        for (index, field) in fields.iter().enumerate() {
            let values = field_values(index, field)?;
            match index {
                2 => days = Some(values),
                3 => months = Some(values),
                _ => {}
            }
        }
        // A day of month that no listed month has (31 February), with any weekday: it never fires.
        // Checked here, because croner would search millennia to say so.
        let (days, months) = (days.unwrap_or_default(), months.unwrap_or_default());
        let weekday_restricted = fields[4] != "*";
        let some_day_exists = months.iter().any(|month| {
            days.iter()
                .any(|day| *day <= DAYS_IN_MONTH[(*month - 1) as usize])
        });
        if !weekday_restricted && !some_day_exists {
            return Err("schedule never fires: none of its months has that day".into());
        }
        let normalized = fields.join(" ");
        let cron = Cron::from_str(&normalized)
            .map_err(|e| format!("schedule is not a valid cron expression: {e}"))?;
        let schedule = Schedule(cron);
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

/// The most days each month can have (February: 29, in leap years).
const DAYS_IN_MONTH: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const FIELD_NAMES: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];

/// The values field `index` (0 = minute … 4 = day of week) allows, from plain cron syntax only:
/// `*`, numbers, ranges `a-b`, steps `/n` and lists, with month and weekday names.
fn field_values(index: usize, field: &str) -> Result<Vec<u32>, String> {
    let (min, max) = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)][index];
    let name = FIELD_NAMES[index];
    let bad = || {
        format!(
            "schedule's {name} field {field:?} is not plain cron (numbers {min}-{max}, *, a-b, /n and lists)"
        )
    };
    let atom = |text: &str| -> Result<u32, String> {
        let named = match index {
            3 => MONTH_NAMES
                .iter()
                .position(|n| n.eq_ignore_ascii_case(text))
                .map(|i| i as u32 + 1),
            4 => DAY_NAMES
                .iter()
                .position(|n| n.eq_ignore_ascii_case(text))
                .map(|i| i as u32),
            _ => None,
        };
        let value = match named {
            Some(value) => value,
            None if !text.is_empty() && text.len() <= 2 && text.bytes().all(|b| b.is_ascii_digit()) => {
                text.parse().map_err(|_| bad())?
            }
            None => return Err(bad()),
        };
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(bad())
        }
    };
    let mut values = Vec::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| (1..=max.max(1)).contains(s))
                    .ok_or_else(bad)?;
                (range, step)
            }
            None => (part, 1),
        };
        let (from, to) = match range {
            "*" => (min, max),
            _ => match range.split_once('-') {
                Some((a, b)) => (atom(a)?, atom(b)?),
                None => {
                    let a = atom(range)?;
                    (a, if step > 1 { max } else { a })
                }
            },
        };
        if from > to {
            return Err(bad());
        }
        values.extend((from..=to).step_by(step as usize));
    }
    Ok(values)
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
    fn a_schedule_that_croner_would_search_for_millennia_is_refused_at_once() {
        // Found by fuzzing: croner's `+` weekday modifier (fields separated by form feeds) made
        // one parse take seconds. Such input is refused by the grammar, and a day no month has by
        // the day check, both before croner is asked.
        let grammar = Schedule::parse("2\x0c3\x0c8\x0c1\x0c+").unwrap_err();
        assert!(
            grammar.contains("day of week field \"+\" is not plain cron"),
            "{grammar}"
        );
        for never in ["0 0 30 2 *", "0 0 31 2,4 *"] {
            let refused = Schedule::parse(never).unwrap_err();
            assert!(
                refused.contains("none of its months has that day"),
                "{never}: {refused}"
            );
        }
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
            "0 0 30 2 *",
            "0 0 31 4,6,9,11 *",
            "2 3 8 1 +",
            "0 0 L * *",
            "0 0 15W * *",
            "0 0 * * 5#2",
            "0 0 ? * 1",
            "0 0 * * +1",
            "5-1 * * * *",
            "*/0 * * * *",
            "0 0 * 13 *",
            "0 0 * * 8",
            "0 0 * jun-jan *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} was accepted");
        }
        for good in [
            "*/15 * * * *",
            "0 3 * * *",
            "0 0 1 * *",
            "5 4 * * sun",
            "0 22 * * 1-5",
            "0 0 29 2 *",
            "0 0 31 1-12 *",
            "0 0 30 2 1",
            "0,30 8-18/2 1,15 jan,Jul mon-fri",
            "0 0 * * 7",
        ] {
            assert!(Schedule::parse(good).is_ok(), "{good:?} was refused");
        }
    }
}
