//! The files in `dist/`: the install script into a staging directory, and the systemd unit through
//! `systemd-analyze verify` where that exists.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hyprbox-agent-dist-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn install_sh_stages_the_binary_a_0600_env_file_and_the_unit() {
    let destdir = temp_dir("install");
    let output = Command::new("sh")
        .arg(dist().join("install.sh"))
        .args(["--server", "https://hb.example.com", "--node-id", "web-1"])
        .args([
            "--prefix",
            "/opt/hb",
            "--binary",
            env!("CARGO_BIN_EXE_hyprbox-agent"),
        ])
        .arg(format!("--destdir={}", destdir.display()))
        .env("HYPRBOX_TOKEN", "hbnt_abc123")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("systemctl not run"), "{stdout}");

    let binary = destdir.join("opt/hb/bin/hyprbox-agent");
    assert_eq!(mode(&binary), 0o755);
    let env_file = destdir.join("etc/hyprbox/agent.env");
    assert_eq!(mode(&env_file), 0o600, "the env file holds the token");
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.contains("\nHYPRBOX_SERVER=https://hb.example.com\n"), "{env}");
    assert!(env.contains("\nHYPRBOX_TOKEN=hbnt_abc123\n"), "{env}");
    assert!(env.contains("\nHYPRBOX_NODE_ID=web-1\n"), "{env}");
    // The agent reads the file it was given.
    let parsed = hyprbox_agent::config::parse_env_file(&env).unwrap();
    assert_eq!(parsed["HYPRBOX_TOKEN"], "hbnt_abc123");

    let unit = std::fs::read_to_string(destdir.join("etc/systemd/system/hyprbox-agent.service")).unwrap();
    assert!(
        unit.contains("\nExecStart=/opt/hb/bin/hyprbox-agent\n"),
        "follows --prefix"
    );
    assert!(unit.contains("\nKillMode=process\n"));

    let version = Command::new(&binary).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("hyprbox-agent {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn install_sh_refuses_missing_or_unsafe_values() {
    let destdir = temp_dir("refuse");
    let run = |args: &[&str]| {
        Command::new("sh")
            .arg(dist().join("install.sh"))
            .args(args)
            .args(["--binary", env!("CARGO_BIN_EXE_hyprbox-agent")])
            .arg(format!("--destdir={}", destdir.display()))
            .env_remove("HYPRBOX_TOKEN")
            .output()
            .unwrap()
    };
    for (args, message) in [
        (&["--token", "hbnt_x"][..], "--server"),
        (&["--server", "http://x"][..], "--token"),
        (&["--server", "ftp://x", "--token", "t"][..], "http://"),
        (&["--server", "https://x", "--token", "a b"][..], "--token"),
        (
            &["--server", "https://x", "--token", "t", "--node-id", "a/b"][..],
            "--node-id",
        ),
        (
            &["--server", "https://x", "--token", "t", "--bogus", "1"][..],
            "unknown option",
        ),
        (
            &["--server", "http://hb.example.com", "--token", "t"][..],
            "HYPRBOX_ALLOW_INSECURE_HTTP",
        ),
        (
            &["--server", "http://127.0.0.1@evil.example:80", "--token", "t"][..],
            "HYPRBOX_ALLOW_INSECURE_HTTP",
        ),
        (
            &["--server", "http://127.0.0.1.evil.example", "--token", "t"][..],
            "HYPRBOX_ALLOW_INSECURE_HTTP",
        ),
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    assert!(!destdir.join("etc/hyprbox/agent.env").exists());
}

#[test]
fn install_sh_accepts_loopback_http_and_remote_http_only_when_explicitly_allowed() {
    let run = |name: &str, server: &str, allow: Option<&str>| {
        let destdir = temp_dir(name);
        let mut command = Command::new("sh");
        command
            .arg(dist().join("install.sh"))
            .args(["--server", server, "--token", "hbnt_t"])
            .args(["--binary", env!("CARGO_BIN_EXE_hyprbox-agent")])
            .arg(format!("--destdir={}", destdir.display()))
            .env_remove("HYPRBOX_ALLOW_INSECURE_HTTP");
        if let Some(allow) = allow {
            command.env("HYPRBOX_ALLOW_INSECURE_HTTP", allow);
        }
        let output = command.output().unwrap();
        let env = std::fs::read_to_string(destdir.join("etc/hyprbox/agent.env")).unwrap_or_default();
        (output, env)
    };
    for local in ["http://127.0.0.1:4000", "http://localhost/", "http://[::1]:4000"] {
        let (output, env) = run("loopback", local, None);
        assert!(
            output.status.success(),
            "{local}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!env.contains("HYPRBOX_ALLOW_INSECURE_HTTP"), "{env}");
    }
    let (output, env) = run("insecure", "http://10.1.2.3:4000", Some("true"));
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("WARNING"));
    assert!(
        env.contains("\nHYPRBOX_ALLOW_INSECURE_HTTP=true\n"),
        "the agent is told too: {env}"
    );
    let parsed = hyprbox_agent::config::parse_env_file(&env).unwrap();
    assert_eq!(parsed["HYPRBOX_SERVER"], "http://10.1.2.3:4000");
    let (output, _) = run("insecure-no", "http://10.1.2.3:4000", Some("false"));
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("note: systemd-analyze is not installed; the unit was not verified");
        return;
    }
    let dir = temp_dir("unit");
    let unit = std::fs::read_to_string(dist().join("hyprbox-agent.service")).unwrap();
    // verify checks that ExecStart exists: point it at the binary just built.
    let unit = unit.replace(
        "ExecStart=/usr/local/bin/hyprbox-agent",
        &format!("ExecStart={}", env!("CARGO_BIN_EXE_hyprbox-agent")),
    );
    let path = dir.join("hyprbox-agent.service");
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // verify exits 0 even when it ignores a line it cannot parse: any remark about the unit fails.
    let remarks: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("hyprbox-agent.service"))
        .collect();
    assert!(output.status.success() && remarks.is_empty(), "{stderr}");
}
