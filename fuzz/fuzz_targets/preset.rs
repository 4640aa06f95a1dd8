//! A preset file from anywhere (the presets directory is operator-controlled, but a parser must
//! never panic), then rendered with values from the same input: errors are fine, panics are not,
//! and a rendering is the same bytes twice.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The YAML first, then (after a NUL, when there is one) the JSON values to render with.
    let (yaml, values) = text.split_once('\0').unwrap_or((&text, "{}"));
    let Ok(preset) = hyprbox_presets::parse(yaml, "fuzz.yaml") else {
        return;
    };
    let values = match serde_json::from_str::<serde_json::Value>(values) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    if let Ok(first) = preset.render(&values) {
        let second = preset
            .render(&values)
            .expect("a rendering that worked works again");
        assert_eq!(first.script, second.script);
    }
});
