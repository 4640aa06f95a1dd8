//! A backup policy's cron expression: parsed, and its next runs computed, without a panic; each
//! next run is after the time asked about.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(schedule) = hyprbox_server::backups::schedule::Schedule::parse(text) else {
        return;
    };
    let mut at: i64 = 1_780_000_000_000;
    for _ in 0..5 {
        match schedule.next_after(at) {
            Some(next) => {
                assert!(next > at, "{text:?}: {next} is not after {at}");
                at = next;
            }
            None => break,
        }
    }
    let _ = schedule.period_ms(at);
});
