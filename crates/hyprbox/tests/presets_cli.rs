//! `hyprbox presets list|render|check`, run as the real binary.

use std::path::PathBuf;
use std::process::{Command, Output};

fn hyprbox(args: &[&str], dir: &PathBuf) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hyprbox"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hyprbox-presets-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const HELLO: &str = "name: hello\nversion: 1.0.0\ndescription: Greets\nrisk: low\nvariables:\n  who: { type: string, required: true }\nsteps:\n  - name: Greet\n    run: echo \"hello $who\"\n";

#[test]
fn list_shows_the_built_ins_and_the_directory_as_a_table_or_json() {
    let dir = temp_dir("list");
    std::fs::create_dir_all(dir.join("presets")).unwrap();
    std::fs::write(dir.join("presets/hello.yaml"), HELLO).unwrap();
    let table = hyprbox(&["presets", "list"], &dir);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.starts_with("NAME"), "{text}");
    assert!(text.contains("server-light") && text.contains("hello"), "{text}");
    let json = hyprbox(&["presets", "list", "--json"], &dir);
    let body: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        body["presets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "hypervault-restic")
    );
}

#[test]
fn render_prints_the_script_and_a_bad_variable_fails_naming_it() {
    let dir = temp_dir("render");
    std::fs::write(dir.join("hello.yaml"), HELLO).unwrap();
    let dir_arg = dir.to_str().unwrap();
    let ok = hyprbox(
        &[
            "presets",
            "render",
            "hello",
            "--var",
            "who=it's me",
            "--dir",
            dir_arg,
        ],
        &dir,
    );
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let script = String::from_utf8(ok.stdout).unwrap();
    assert!(script.starts_with("#!/usr/bin/env bash\n"));
    assert!(script.contains(r"who='it'\''s me'"), "{script}");
    let missing = hyprbox(&["presets", "render", "hello", "--dir", dir_arg], &dir);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("who"));
    let unknown = hyprbox(&["presets", "render", "nope", "--dir", dir_arg], &dir);
    assert_eq!(unknown.status.code(), Some(1));
    let malformed = hyprbox(
        &["presets", "render", "hello", "--var", "who", "--dir", dir_arg],
        &dir,
    );
    assert_eq!(malformed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&malformed.stderr).contains("NAME=VALUE"));
}

#[test]
fn check_passes_a_valid_directory_and_names_each_invalid_file() {
    let dir = temp_dir("check");
    std::fs::write(dir.join("hello.yaml"), HELLO).unwrap();
    let ok = hyprbox(&["presets", "check", dir.to_str().unwrap()], &dir);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("hello"));
    std::fs::write(dir.join("bad.yaml"), "name: bad\nversion: 1.0.0\nstpes: []\n").unwrap();
    std::fs::write(dir.join("worse.yml"), "name: Worse!\nversion: 1\nsteps: []\n").unwrap();
    let bad = hyprbox(&["presets", "check", dir.to_str().unwrap()], &dir);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("worse.yml"),
        "{stderr}"
    );
    assert!(stderr.contains("2 invalid preset file(s)"), "{stderr}");
    let usage = hyprbox(&["presets", "check"], &dir);
    assert_eq!(usage.status.code(), Some(2), "a usage error");
}
