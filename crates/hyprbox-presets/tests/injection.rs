//! No value can become code: render a preset with hostile values, run it with bash, and check
//! each variable holds exactly its input and no injected command ran.

mod common;

use std::process::Command;

use common::{TempDir, vars};
use hyprbox_presets::{Preset, parse, shell_quote};
use proptest::prelude::*;
use serde_json::json;

/// One string and one list variable; the steps write them back out byte for byte (the list
/// NUL-separated, which no value can contain) and `set -u` trips on any mistake.
const ECHO: &str = r#"
name: echo
version: 1.0.0
description: Writes its variables back out
risk: low
variables:
  value: { type: string }
  items: { type: list }
steps:
  - name: Write the value
    run: printf '%s' "$value" > "$OUT_DIR/value"
  - name: Write the items
    run: printf '%s\0' "${items[@]}" > "$OUT_DIR/items"
"#;

fn echo_preset() -> Preset {
    parse(ECHO, "echo.yaml").unwrap()
}

/// Runs the rendering for `value` and `items` and returns what bash saw, after checking that the
/// canary file, which every injection attempt tries to create, does not exist.
fn round_trip(preset: &Preset, value: &str, items: &[String]) -> (String, Vec<String>) {
    let dir = TempDir::new("injection");
    let canary = dir.0.join("canary");
    let rendered = preset
        .render(&vars(&[("value", json!(value)), ("items", json!(items))]))
        .expect("render");
    let syntax = common::run_with_stdin("bash", &["-n"], &rendered.script).expect("bash -n");
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&rendered.script)
        .env("OUT_DIR", &dir.0)
        .env("CANARY", &canary)
        // Bytes as bytes: no locale may reinterpret a multibyte character.
        .env("LC_ALL", "C")
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !canary.exists(),
        "an injected command ran for {value:?} / {items:?}"
    );
    let seen = std::fs::read_to_string(dir.0.join("value")).expect("value written");
    let raw_items = std::fs::read_to_string(dir.0.join("items")).expect("items written");
    let mut seen_items: Vec<String> = raw_items.split('\0').map(str::to_owned).collect();
    // printf '%s\0' with an empty array still prints one (empty) item: compare like for like.
    seen_items.pop();
    if items.is_empty() {
        seen_items.clear();
    }
    (seen, seen_items)
}

/// Values that have broken naive quoting somewhere.
const NASTY: &[&str] = &[
    "",
    "'",
    "''",
    "'\\''",
    "\\",
    "\\'",
    "'; touch \"$CANARY\"; '",
    "$(touch \"$CANARY\")",
    "`touch \"$CANARY\"`",
    "${CANARY}",
    "$CANARY",
    "\"; touch \"$CANARY\"; \"",
    "a\nb\n",
    "\ntouch \"$CANARY\"\n",
    "' \n touch \"$CANARY\" \n '",
    "$'\\x27'",
    "!!",
    "*",
    "~",
    "-e",
    "--",
    "%s%n",
    "\t\r\u{7}\u{1b}[31m",
    "é ü 漢字 🦀",
    "x' ; touch $CANARY #",
    "$((1+1))",
    "<(touch \"$CANARY\")",
    "a\\\nb",
];

#[test]
fn nasty_values_reach_bash_unchanged_and_never_run() {
    let preset = echo_preset();
    let items: Vec<String> = NASTY.iter().map(|s| (*s).to_owned()).collect();
    for value in NASTY {
        let (seen, seen_items) = round_trip(&preset, value, &items);
        assert_eq!(seen, *value);
        assert_eq!(seen_items, items);
    }
}

#[test]
fn quoting_agrees_with_shlex() {
    for value in NASTY {
        let words = shlex::split(&shell_quote(value)).expect("shlex parses our quoting");
        assert_eq!(words, [(*value).to_owned()]);
    }
}

/// Strings rich in shell metacharacters, of any length up to 10k, with injection attempts
/// mixed in; never NUL, which bash cannot hold (the crate refuses it).
fn hostile() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        4 => "[\\x01-\\x7f]{0,8}",
        2 => prop::sample::select(vec![
            "'", "\"", "\\", "$", "`", "$(", ")", "${", "}", ";", "&", "|", "\n", "!", "*", "?",
            "'\\''", "touch \"$CANARY\"", "$(touch \"$CANARY\")", "`touch $CANARY`", "é", "🦀",
        ])
        .prop_map(str::to_owned),
        1 => any::<String>().prop_map(|s| s.replace('\0', "")),
    ];
    prop_oneof![
        8 => prop::collection::vec(pieces, 0..40).prop_map(|p| p.concat()),
        1 => ("[\\x01-\\x7f]", 1000usize..10_000).prop_map(|(c, n)| c.repeat(n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_value_round_trips_through_bash_and_nothing_runs(
        value in hostile(),
        items in prop::collection::vec(hostile(), 0..4),
    ) {
        let (seen, seen_items) = round_trip(&echo_preset(), &value, &items);
        prop_assert_eq!(seen, value);
        prop_assert_eq!(seen_items, items);
    }

    #[test]
    fn shlex_reads_any_quoted_value_back(value in hostile()) {
        let words = shlex::split(&shell_quote(&value));
        prop_assert_eq!(words, Some(vec![value]));
    }
}

#[test]
fn a_value_with_a_nul_byte_is_refused_not_truncated() {
    let e = echo_preset()
        .render(&vars(&[("value", json!("safe\0; touch $CANARY"))]))
        .unwrap_err();
    assert_eq!(e.variable, "value");
    assert_eq!(e.message, "value must not contain a NUL byte");
}
