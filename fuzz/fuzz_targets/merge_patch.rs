//! Node config merge-patch (RFC 7386) of any two JSON documents: no panic, and applying the same
//! patch twice changes nothing more (a merge patch is idempotent).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Some((target, patch)) = text.split_once('\0') else {
        return;
    };
    let (Ok(mut target), Ok(patch)) = (
        serde_json::from_str::<serde_json::Value>(target),
        serde_json::from_str::<serde_json::Value>(patch),
    ) else {
        return;
    };
    hyprbox_server::fleet::nodes::merge_patch(&mut target, &patch);
    let once = target.clone();
    hyprbox_server::fleet::nodes::merge_patch(&mut target, &patch);
    assert_eq!(once, target);
});
