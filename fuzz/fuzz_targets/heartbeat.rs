//! A heartbeat body from the network: decoded and validated without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(beat) = serde_json::from_slice::<hyprbox_proto::nodes::Heartbeat>(data) {
        let _ = beat.validate();
    }
});
